"""Training data: sequences of every layout, clips, augmentation, the cache of stream inputs."""

from flexdet.training.datasets.augment import ClipAugment, augment_boxes, augment_images, draw_augment
from flexdet.training.datasets.cache import WindowCache, stream_windows
from flexdet.training.datasets.clips import Batch, Clip, ClipLoader, ClipSampler
from flexdet.training.datasets.sequences import Dataset, Sequence, detect_layout, open_dataset

__all__ = ["Batch", "Clip", "ClipAugment", "ClipLoader", "ClipSampler", "Dataset", "Sequence", "WindowCache",
           "augment_boxes", "augment_images", "detect_layout", "draw_augment", "open_dataset", "stream_windows"]
