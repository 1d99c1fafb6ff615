"""Splits, weighted ALS and GBT, and metrics (DESIGN §6)."""
