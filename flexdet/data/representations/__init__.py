"""Event representations (stacked histogram, voxel grid, time surface, event frame), windowing at any rate,
a batched builder for dataset preprocessing, 2x integrate-and-fire downsampling, and torch versions.

Every function takes a time-sorted event array (or a mapping of t, x, y, p columns), validates the
events it uses, and runs a Numba kernel; names load lazily so importing this package stays cheap.
"""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "stacked_histogram": "flexdet.data.representations.histogram",
    "event_frame": "flexdet.data.representations.histogram",
    "voxel_grid": "flexdet.data.representations.voxel",
    "time_surface": "flexdet.data.representations.surface",
    "RepresentationConfig": "flexdet.data.representations.batch",
    "build_windows": "flexdet.data.representations.batch",
    "make_representation": "flexdet.data.representations.batch",
    "Window": "flexdet.data.representations.windows",
    "iter_windows": "flexdet.data.representations.windows",
    "window_bounds": "flexdet.data.representations.windows",
    "reverse_histogram": "flexdet.data.representations.reverse",
    "reverse_events": "flexdet.data.representations.reverse",
    "downsample_events": "flexdet.data.representations.downsample",
    "downsampled_size": "flexdet.data.representations.downsample",
    "events_to_tensors": "flexdet.data.representations.torch_ops",
    "stacked_histogram_torch": "flexdet.data.representations.torch_ops",
    "voxel_grid_torch": "flexdet.data.representations.torch_ops",
    "time_surface_torch": "flexdet.data.representations.torch_ops",
    "event_frame_torch": "flexdet.data.representations.torch_ops",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
