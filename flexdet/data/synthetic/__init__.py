"""Event + RGB simulator: procedural scenes, an ESIM-style sensor, exact boxes at any time, dataset writers,
and video-to-events conversion."""

from flexdet.data.synthetic.config import SynthConfig, load_preset
from flexdet.data.synthetic.dataset import generate_dataset
from flexdet.data.synthetic.scene import Scene
from flexdet.data.synthetic.sensor import EventSensor
from flexdet.data.synthetic.simulate import SyntheticSequence, simulate_sequence
from flexdet.data.synthetic.video import VideoToEvents, read_video_frames, video_file_to_events

__all__ = ["EventSensor", "Scene", "SynthConfig", "SyntheticSequence", "VideoToEvents", "generate_dataset",
           "load_preset", "read_video_frames", "simulate_sequence", "video_file_to_events"]
