"""``python -m sampleimp_spark`` is the ``sampleimp`` command."""

import sys

from sampleimp_spark.cli import main

sys.exit(main())
