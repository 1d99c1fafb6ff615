"""Reproducible randomness: draws are hashes of ``(seed, key columns, purpose)``.

:func:`uniform` is a uniform draw in [0, 1) from ``xxhash64(seed, salt, keys)``; :func:`poisson1`
a Poisson(1) count from one such draw (for bootstraps). Unlike ``rand()``, a draw does not depend on
how rows are partitioned or ordered, so the same seed gives the same samples, splits and bootstrap
replicates on a laptop and on a cluster. Where the pipeline uses them: ``docs/reproducibility.md``.
"""

from __future__ import annotations

import math

from pyspark.sql import Column
from pyspark.sql import functions as F


def uniform(seed: int, *keys: Column, salt: str = "") -> Column:
    """A uniform draw in [0, 1) determined only by ``seed``, the key values and ``salt``.

    Args:
        seed: the run's seed.
        *keys: columns identifying the row (e.g. user and item id); at least one.
        salt: names the purpose, so that draws for different purposes are independent.
    """
    if not keys:
        raise ValueError("uniform() needs at least one key column")
    h = F.xxhash64(F.lit(seed), F.lit(salt), *keys)
    return F.shiftrightunsigned(h, 11).cast("double") / float(1 << 53)


def poisson1(seed: int, *keys: Column, salt: str = "") -> Column:
    """A Poisson(1) draw (0, 1, 2, ...) from one uniform, by inverse CDF (for bootstraps)."""
    u = uniform(seed, *keys, salt=salt)
    # P(X <= k) for Poisson(1): cumulative sums of e^-1 / k!; 8 or more is lumped as 8.
    out = F.lit(8)
    cdf = 0.0
    bounds = []
    for k in range(8):
        cdf += math.exp(-1.0) / math.factorial(k)
        bounds.append((k, cdf))
    for k, c in reversed(bounds):
        out = F.when(u < c, F.lit(k)).otherwise(out)
    return out
