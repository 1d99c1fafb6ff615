"""Evaluation of weighted vs unweighted models: metrics, paired bootstrap intervals and tests."""
