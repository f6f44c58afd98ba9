"""Evaluation: the stream driver that runs a model over a dataset at any rate, the schedules, COCO scoring and
each benchmark's result files."""
