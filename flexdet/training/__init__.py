"""Training: the loop (single process or DDP), its configuration, clips and augmentation, checkpoints and the label source each FAL recipe hands the trainer."""
