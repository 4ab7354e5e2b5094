"""Experiments: the embedded demo, result records and tables."""
