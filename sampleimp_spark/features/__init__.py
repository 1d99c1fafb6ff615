"""Samples, labels, shards and behavior features (DESIGN §3-§4)."""
