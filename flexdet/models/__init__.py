"""flexdet.models."""
