"""flexdet demo: live detection on a recording, a video or webcam, or an event camera, shown in a window or
written headless as MP4 + JSON lines. Names load lazily so `import flexdet.demo` stays cheap."""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "open_source": "flexdet.demo.sources",
    "EventSource": "flexdet.demo.sources",
    "RecordingSource": "flexdet.demo.sources",
    "VideoSource": "flexdet.demo.sources",
    "DvCameraSource": "flexdet.demo.sources",
    "MetavisionSource": "flexdet.demo.sources",
    "SourceChunk": "flexdet.demo.sources",
    "SourceEnded": "flexdet.demo.sources",
    "Pacer": "flexdet.demo.sources",
    "StepClock": "flexdet.data.clock",
    "StepInput": "flexdet.demo.pipeline",
    "WindowAssembler": "flexdet.demo.pipeline",
    "WindowQueue": "flexdet.demo.pipeline",
    "Producer": "flexdet.demo.pipeline",
    "render_frame": "flexdet.demo.render",
    "RenderOptions": "flexdet.demo.render",
    "box_colour": "flexdet.demo.render",
    "display_scale": "flexdet.demo.render",
    "VideoSink": "flexdet.demo.sinks",
    "JsonlSink": "flexdet.demo.sinks",
    "WindowSink": "flexdet.demo.sinks",
    "StepDetector": "flexdet.demo.detector",
    "Detections": "flexdet.demo.detector",
    "load_detector": "flexdet.demo.detector",
    "DemoConfig": "flexdet.demo.runner",
    "DemoSummary": "flexdet.demo.runner",
    "run_demo": "flexdet.demo.runner",
    "print_summary": "flexdet.demo.runner",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
