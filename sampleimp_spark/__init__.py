"""sampleimp_spark: weighted training tables from e-commerce behavior logs, on Spark + Delta.

The public API is the set of stage functions and the config/session helpers re-exported
by the sub-modules; see README.md for the flow.
"""

from __future__ import annotations

__version__ = "0.1.0"
