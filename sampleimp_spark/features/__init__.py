"""Pure transforms of one window's events: samples, labels, shards, features, class frequencies and item text.

Nothing here reads config, writes tables or reports progress (the features stage does); see
``docs/features.md`` for the definitions.
"""
