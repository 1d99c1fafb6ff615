"""Sample-importance weights per shard, one module per component (formulas: ``docs/weighting.md``).

Pure transforms: nothing here reads config, writes tables or reports progress (the weights stage does).
"""
