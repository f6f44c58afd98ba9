"""flexdet.export."""
