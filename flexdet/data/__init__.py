"""Event data: the event array, readers and writers for every format, representations, datasets, simulator.

Names are imported lazily (PEP 562) so `import flexdet.data` stays cheap: Numba kernels, h5py and the
simulator load only when first used.
"""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "EVENT_DTYPE": "flexdet.data.events",
    "make_events": "flexdet.data.events",
    "check_events": "flexdet.data.events",
    "time_slice": "flexdet.data.events",
    "BOX_DTYPE": "flexdet.data.boxes",
    "clip_boxes": "flexdet.data.boxes",
    "read_events": "flexdet.data.readers",
    "open_recording": "flexdet.data.readers",
    "Recording": "flexdet.data.readers",
    "write_raw": "flexdet.data.readers.evt_encode",
    "read_boxes": "flexdet.data.labels",
    "write_dsec_h5": "flexdet.data.writers",
    "write_dat": "flexdet.data.writers",
    "write_npz": "flexdet.data.writers",
    "write_boxes": "flexdet.data.writers",
    "simulate_sequence": "flexdet.data.synthetic",
    "generate_dataset": "flexdet.data.synthetic",
    "VideoToEvents": "flexdet.data.synthetic",
    "stacked_histogram": "flexdet.data.representations",
    "voxel_grid": "flexdet.data.representations",
    "time_surface": "flexdet.data.representations",
    "event_frame": "flexdet.data.representations",
    "RepresentationConfig": "flexdet.data.representations",
    "build_windows": "flexdet.data.representations",
    "make_representation": "flexdet.data.representations",
    "Window": "flexdet.data.representations",
    "iter_windows": "flexdet.data.representations",
    "window_bounds": "flexdet.data.representations",
    "downsample_events": "flexdet.data.representations",
    "InputSpec": "flexdet.data.input_spec",
    "Geometry": "flexdet.data.geometry",
    "StepClock": "flexdet.data.clock",
    "step_ends": "flexdet.data.clock",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
