"""flexdet.training."""
