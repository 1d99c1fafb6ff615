"""Sample-importance weights per shard (DESIGN §5): one module per component."""
