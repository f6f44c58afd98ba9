"""Workflows that chain data, training and evaluation: the quick start, the experiments and the FAL chain."""
