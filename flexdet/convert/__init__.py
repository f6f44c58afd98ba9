"""Published checkpoints of other event-detection projects as flexdet models (read without running pickled code)."""
