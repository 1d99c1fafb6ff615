"""Stages: the only code that reads config, writes Delta tables and reports progress."""
