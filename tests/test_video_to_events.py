"""VideoToEvents: frames of a moving pattern become events where (and with the polarity that) it moves."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from flexdet.data.synthetic import VideoToEvents, video_file_to_events
from flexdet.data.synthetic.config import SensorConfig
from flexdet.errors import FlexdetError, FormatError

WIDTH, HEIGHT = 80, 60


def bar_frame(left: int) -> np.ndarray:
    """Dark RGB frame with a bright vertical bar 10 px wide starting at column `left`."""
    frame = np.full((HEIGHT, WIDTH, 3), 40, np.uint8)
    frame[:, left:left + 10] = 200
    return frame


def test_moving_bar_gives_on_events_at_its_front_and_off_at_its_back():
    converter = VideoToEvents(WIDTH, HEIGHT, SensorConfig(noise_rate_hz=0.0))
    assert len(converter.feed(bar_frame(10), 0)) == 0  # first frame only adapts the pixels
    for step in range(1, 6):
        events = converter.feed(bar_frame(10 + 4 * step), step * 33_333)
        left = 10 + 4 * (step - 1)
        on, off = events[events["p"] == 1], events[events["p"] == 0]
        # Bar moved right by 4 px: columns [left+10, left+14) brightened, [left, left+4) darkened.
        assert set(np.unique(on["x"])) == set(range(left + 10, left + 14))
        assert set(np.unique(off["x"])) == set(range(left, left + 4))
        assert np.all((events["t"] > (step - 1) * 33_333) & (events["t"] <= step * 33_333))
        assert np.all(np.diff(events["t"]) >= 0)


def test_static_frames_give_no_events_and_state_carries_across_calls():
    converter = VideoToEvents(WIDTH, HEIGHT, SensorConfig(noise_rate_hz=0.0))
    converter.feed(bar_frame(20), 0)
    assert len(converter.feed(bar_frame(20), 10_000)) == 0
    split = [converter.feed(bar_frame(22), 20_000), converter.feed(bar_frame(24), 30_000)]
    whole = VideoToEvents(WIDTH, HEIGHT, SensorConfig(noise_rate_hz=0.0))
    whole.feed(bar_frame(20), 0)
    jump = whole.feed(bar_frame(24), 30_000)
    # Two small steps and one big step cross the same thresholds at the same pixels.
    step_pixels = np.concatenate(split)[["x", "y", "p"]]
    assert np.array_equal(np.sort(step_pixels), np.sort(jump[["x", "y", "p"]]))


def test_bad_frames_raise_clear_errors():
    converter = VideoToEvents(WIDTH, HEIGHT)
    with pytest.raises(FlexdetError, match="80x60"):
        converter.feed(np.zeros((10, 10, 3), np.uint8), 0)
    converter.feed(bar_frame(0), 0)
    with pytest.raises(FlexdetError, match="not after"):
        converter.feed(bar_frame(4), 0)


def test_video_file_is_converted_where_the_pattern_moves(tmp_path):
    path = tmp_path / "bar.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(8):
        writer.write(bar_frame(10 + 5 * i)[..., ::-1].copy())
    writer.release()
    events = video_file_to_events(path, SensorConfig(noise_rate_hz=0.0))
    assert len(events) > 100
    assert events["t"].max() <= 7 * 40_000 and np.all(np.diff(events["t"]) >= 0)
    # The bar swept columns 10..55; compression noise aside, events stay in its path.
    inside = (events["x"] >= 8) & (events["x"] < 58)
    assert inside.mean() > 0.95


def test_unreadable_video_raises_format_error(tmp_path):
    path = tmp_path / "not_a_video.mp4"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(FormatError, match="not_a_video"):
        video_file_to_events(path)
