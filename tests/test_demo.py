"""flexdet demo: step timing, window cutting, the bounded queue under a slow model, sources, drawing, and
headless runs on real recordings and a synthetic sequence whose MP4 frames and JSON lines are checked."""

from __future__ import annotations

import json
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

from flexdet.cli import main as cli_main
from flexdet.data.clock import StepClock, step_ends
from flexdet.data.events import EVENT_DTYPE, make_events
from flexdet.data.input_spec import identity_spec
from flexdet.demo.pipeline import StepInput, WindowAssembler, WindowQueue
from flexdet.demo.render import OFF_COLOUR, ON_COLOUR, RenderOptions, box_colour, display_scale, render_frame
from flexdet.demo.sources import Pacer, RecordingSource, SourceChunk, SourceEnded, VideoSource, open_source
from flexdet.errors import ConfigError, FlexdetError, MissingDependencyError

REAL = Path(__file__).parents[1] / ".." / "shared" / "data" / "real"


def real_file(name: str) -> Path:
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real recording {path} is not available (../shared/data/real next to the checkout)")
    return path


def random_events(n: int, width: int, height: int, t_span: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return make_events(np.sort(rng.integers(0, t_span, n)), rng.integers(0, width, n), rng.integers(0, height, n),
                       rng.integers(0, 2, n))


def chunks_of(events: np.ndarray, t_stop: int, seed: int = 1):
    """Chunks of random lengths tiling [0, t_stop), as a source would deliver them."""
    rng = np.random.default_rng(seed)
    t = 0
    while t < t_stop:
        t_next = min(t + int(rng.integers(1, 7000)), t_stop)
        chosen = events[(events["t"] >= t) & (events["t"] < t_next)]
        frames = [(f, np.full((4, 4, 3), f % 255, np.uint8)) for f in range(0, t_stop, 33_333) if t <= f < t_next]
        yield SourceChunk(chosen, t_next, frames)
        t = t_next


# ---------------------------------------------------------------- step times and windows
@pytest.mark.parametrize("rate", ["20", "180", "25.7", "1000", "7"])
def test_step_clock_matches_the_evaluation_step_times(rate):
    clock = StepClock(1_000_003, rate)
    reference = step_ends(1_000_003, 1_000_003 + 3_000_000, rate)
    assert [clock.advance() for _ in range(len(reference))] == reference.tolist()


def test_rate_change_reanchors_at_the_last_step():
    clock = StepClock(0, "20")
    assert [clock.advance() for _ in range(3)] == [50_000, 100_000, 150_000]
    clock.set_rate("180")
    got = [clock.advance() for _ in range(4)]
    assert got == (150_000 + step_ends(0, 30_000, Fraction(180))[:4]).tolist()


@pytest.mark.parametrize("window_us,rate", [(50_000, "20"), (50_000, "180"), (10_000, "30")])
def test_windows_hold_exactly_the_events_of_their_span(window_us, rate):
    events = random_events(20_000, 64, 48, 1_000_000)
    assembler = WindowAssembler(window_us, StepClock(0, rate))
    steps = [s for chunk in chunks_of(events, 1_000_000) for s in assembler.feed(chunk)]
    ends = step_ends(0, 1_000_000, rate)
    assert [s.t_end for s in steps] == ends.tolist()
    for s in steps:
        expected = events[(events["t"] >= s.t_end - window_us) & (events["t"] < s.t_end)]
        assert s.t_start == s.t_end - window_us
        assert np.array_equal(s.events, expected)
        frame_times = np.arange(0, 1_000_000, 33_333)
        at_start = frame_times[frame_times <= s.t_start]
        before_end = frame_times[frame_times < s.t_end]
        assert (s.model_frame[0] if s.model_frame else None) == (int(at_start[-1]) if len(at_start) else None)
        assert s.display_frame[0] == int(before_end[-1])
    # Memory stays bounded: only the events still needed by the next window are kept.
    assert len(assembler._events) == np.count_nonzero(events["t"] >= assembler.clock.next_end - window_us)


def test_the_model_frame_follows_the_specification_frame_rule():
    events = random_events(2_000, 64, 48, 400_000)
    frame_times = np.arange(0, 400_000, 33_333)
    spec = identity_spec(48, 64, frame_rule="latest_before_end")
    assembler = WindowAssembler(50_000, StepClock(0, "180"), frame_rule=spec.frame_rule)
    steps = [s for chunk in chunks_of(events, 400_000) for s in assembler.feed(chunk)]
    assert len(steps) > 60
    for s in steps:
        assert s.model_frame[0] == int(frame_times[spec.frame_index(frame_times, s.t_start, s.t_end)])
        assert s.model_frame[0] == s.display_frame[0]
    with pytest.raises(ConfigError, match="frame_rule"):
        WindowAssembler(50_000, StepClock(0, "20"), frame_rule="nearest")


def test_duration_limits_the_number_of_steps():
    events = random_events(2000, 32, 32, 1_000_000)
    assembler = WindowAssembler(50_000, StepClock(0, "90"), stop_at=500_000)
    steps = [s for chunk in chunks_of(events, 1_000_000) for s in assembler.feed(chunk)]
    assert len(steps) == 45 and assembler.finished


# ---------------------------------------------------------------- bounded queue under pressure
def _step(index: int, t_end: int, events: np.ndarray) -> StepInput:
    return StepInput(index, t_end - 10_000, t_end, events, None, None, time.perf_counter())


@pytest.mark.parametrize("policy", ["drop", "merge"])
def test_slow_consumer_never_lets_the_queue_grow(policy):
    events = random_events(5000, 32, 32, 2_000_000)
    queue = WindowQueue(maxsize=3, policy=policy)
    produced, lengths = 200, []
    consumed: list[StepInput] = []

    def consume():
        while True:
            step = queue.get(timeout=1.0)
            if step is None:
                return
            consumed.append(step)
            time.sleep(0.004)  # a model much slower than the producer

    consumer = threading.Thread(target=consume)
    consumer.start()
    for k in range(produced):
        t_end = (k + 1) * 10_000  # windows tile time: [t_end - 10 ms, t_end)
        queue.put(_step(k, t_end, events[(events["t"] >= t_end - 10_000) & (events["t"] < t_end)]))
        lengths.append(len(queue))
    queue.close("done")
    consumer.join()
    assert max(lengths) <= 3 and queue.max_length <= 3
    if policy == "drop":
        assert queue.dropped > 0 and queue.merged == 0
        assert queue.dropped + len(consumed) == produced
        assert [s.index for s in consumed] == sorted(s.index for s in consumed)
    else:
        assert queue.merged > 0 and queue.dropped == 0
        assert sum(1 + s.merged for s in consumed) == produced
        # Merging loses no event: the consumed windows together hold every event exactly once.
        assert np.array_equal(np.concatenate([s.events for s in consumed]), events[events["t"] < produced * 10_000])
    assert consumed[-1].index == produced - 1  # the newest window always reaches the model


def test_blocking_put_is_lossless():
    queue = WindowQueue(maxsize=1)
    got = []
    consumer = threading.Thread(target=lambda: [got.append(s) for s in iter(lambda: queue.get(1.0), None)])
    consumer.start()
    for k in range(30):
        queue.put(_step(k, (k + 1) * 1000, np.zeros(0, EVENT_DTYPE)), block=True)
        assert len(queue) <= 1
    queue.close("done")
    consumer.join()
    assert [s.index for s in got] == list(range(30)) and queue.dropped == queue.merged == 0


# ---------------------------------------------------------------- sources
def test_recording_replay_delivers_every_event_in_order():
    path = real_file("evt2_gen3_640x480.raw")
    reference = np.load(path.with_suffix(".reference.npz"))
    source = RecordingSource(path, chunk_us=3000)
    chunks = []
    with pytest.raises(SourceEnded, match="end of"):
        for chunk in source.chunks(Pacer(0)):
            chunks.append(chunk)
    events = np.concatenate([c.events for c in chunks])
    for name in "txyp":
        assert np.array_equal(events[name], reference[name])
    assert all(np.all(c.events["t"] < c.t_end) for c in chunks)


def test_real_time_pacing_follows_stream_time():
    path = real_file("ncars_obj_004397_td.dat")
    source = RecordingSource(path, width=64, height=64, chunk_us=10_000)
    start = time.perf_counter()
    with pytest.raises(SourceEnded):
        for _ in source.chunks(Pacer(speed=0.5)):
            pass
    elapsed = time.perf_counter() - start
    # 100 ms of events at half speed: ~0.2 s (the first chunk starts the clock, so ~0.18 s at least).
    assert 0.17 <= elapsed < 1.5


def moving_square_video(path: Path, frames: int = 12, fps: float = 30.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (96, 64))
    for k in range(frames):
        image = np.full((64, 96, 3), 30, np.uint8)
        image[20:40, 10 + 5 * k:30 + 5 * k] = 220
        writer.write(image)
    writer.release()


def test_video_file_source_produces_events_where_the_square_moves(tmp_path):
    path = tmp_path / "square.mp4"
    moving_square_video(path)
    source = open_source(str(path))
    assert isinstance(source, VideoSource) and (source.width, source.height) == (96, 64)
    chunks = []
    with pytest.raises(SourceEnded, match="end of video"):
        for chunk in source.chunks(Pacer(0)):
            chunks.append(chunk)
    assert len(chunks) == 12 and all(len(c.frames) == 1 for c in chunks)
    events = np.concatenate([c.events for c in chunks])
    assert len(events) > 200
    # The square spans rows 20..39 and moves right: ON events at its leading edge, OFF at its trailing edge.
    assert np.mean((events["y"] >= 18) & (events["y"] <= 41)) > 0.95
    on, off = events[events["p"] == 1], events[events["p"] == 0]
    assert len(on) and len(off) and on["x"].mean() > off["x"].mean() + 10


@pytest.mark.parametrize("spec,package", [("dv:", "dv-processing"), ("prophesee:", "metavision_core")])
def test_camera_sources_without_their_sdk_raise_missing_dependency(spec, package):
    module = {"dv-processing": "dv_processing", "metavision_core": "metavision_core"}[package]
    try:
        __import__(module)
        pytest.skip(f"{module} is installed; this test checks the message when it is not")
    except ImportError:
        pass
    with pytest.raises(MissingDependencyError, match=package):
        open_source(spec)


def test_missing_and_unreadable_sources_are_clear_errors(tmp_path):
    with pytest.raises(FlexdetError, match="no such"):
        open_source(str(tmp_path / "nothing.raw"))
    with pytest.raises(FlexdetError, match="no such video"):
        open_source(str(tmp_path / "nothing.mp4"))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(FlexdetError, match="cannot open"):
        open_source(str(bad))
    with pytest.raises(FlexdetError, match="webcam:N"):
        open_source("webcam:front")


# ---------------------------------------------------------------- drawing
def test_render_draws_events_and_boxes_in_their_colours():
    events = make_events([0, 1, 2], [5, 40, 70], [5, 30, 50], [1, 0, 1])
    boxes = np.array([[10.0, 12.0, 50.0, 44.0], [60.0, 5.0, 90.0, 25.0]])
    image = render_frame(100, 80, events, boxes, np.array([0.9, 0.5]), np.array([0, 1]), "status",
                         options=RenderOptions(class_names=["car", "pedestrian"]))
    s = display_scale(80)
    assert s == 5 and image.shape[:2][1] == 100 * s
    assert tuple(image[5 * s + 2, 5 * s + 2]) == ON_COLOUR
    assert tuple(image[30 * s + 2, 40 * s + 2]) == OFF_COLOUR
    for (x1, y1, x2, y2), label in zip(boxes * s, (0, 1)):
        for y in range(int(y1) + 15, int(y2) - 2, 7):  # left and right edges below the label tag
            assert tuple(image[y, int(x1)]) == box_colour(label)
            assert tuple(image[y, int(x2)]) == box_colour(label)
        assert tuple(image[int(y2), int((x1 + x2) / 2)]) == box_colour(label)


# ---------------------------------------------------------------- headless end to end
def headless(tmp_path: Path, source: str, rate: str, duration: float, *extra: str) -> tuple[Path, list[dict]]:
    out, log = tmp_path / "demo.mp4", tmp_path / "detections.jsonl"
    code = cli_main(["demo", "--source", source, "--model", "nano", "--backend", "torch", "--rate", rate,
                     "--duration", str(duration), "--speed", "0", "--headless", "--out", str(out), "--log", str(log),
                     "--score-thresh", "0", *extra])
    assert code == 0
    return out, [json.loads(line) for line in log.read_text().splitlines()]


def video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames


def assert_top_box_drawn(frame: np.ndarray, record: dict, height: int) -> None:
    """The highest-scoring logged box is drawn (last, on top) in its class colour along its edges."""
    assert record["boxes"], "the random-weight model at --score-thresh 0 should propose boxes"
    i = int(np.argmax(record["scores"]))
    s = display_scale(height)
    x1, y1, x2, y2 = (int(round(v * s)) for v in record["boxes"][i])
    colour = np.array(box_colour(record["labels"][i]), float)
    pixels = [frame[y, x] for x in (x1, x2) for y in range(y1 + 14, y2 - 1)
              if 0 <= x < frame.shape[1] and 0 <= y < frame.shape[0]]
    pixels += [frame[y2, x] for x in range(x1 + 2, x2 - 1) if 0 <= y2 < frame.shape[0]]
    assert len(pixels) >= 4, f"box {record['boxes'][i]} too small to check"
    close = np.linalg.norm(np.asarray(pixels, float) - colour, axis=1) < 90
    assert close.mean() > 0.7, f"only {close.mean():.2f} of the edge pixels have the box colour {colour}"


@pytest.mark.parametrize("name,rate,duration,height", [
    ("evt2_gen3_640x480.raw", "100", 0.03, 480),
    ("evt3_gen41_1280x720_pedestrians.raw", "50", 0.04, 720),
    ("dvxplorer_320x240.aedat4", "20", 0.2, 240),
])
def test_headless_on_real_recordings(tmp_path, name, rate, duration, height):
    video, records = headless(tmp_path, str(real_file(name)), rate, duration)
    frames = video_frames(video)
    expected = round(duration * float(rate))
    assert len(frames) == expected == len(records)
    assert [r["step"] for r in records] == list(range(expected))
    for frame, record in zip(frames, records):
        assert_top_box_drawn(frame, record, height)


@pytest.fixture(scope="module")
def synthetic_sequence(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    assert cli_main(["synth", "--out", str(out), "--sequences", "1", "--duration", "0.6", "--size", "160x128",
                     "--workers", "1", "--split", "1,0,0", "--seed", "3"]) == 0
    return next((out / "train").iterdir())


def test_headless_on_a_synthetic_sequence_with_frames(tmp_path, synthetic_sequence):
    video, records = headless(tmp_path, str(synthetic_sequence), "40", 0.15)
    frames = video_frames(video)
    assert len(frames) == 6 == len(records)
    # Step k ends at t0 + k / 40 s exactly, t0 = the first frame time.
    t0 = int((synthetic_sequence / "images" / "timestamps.txt").read_text().split()[0])
    assert [r["t"] for r in records] == [t0 + 25_000 * (k + 1) for k in range(6)]
    for frame, record in zip(frames, records):
        assert_top_box_drawn(frame, record, 128)


def test_window_mode_without_gui_support_is_a_clear_error(tmp_path, synthetic_sequence, capsys, monkeypatch):
    if "GUI:                           NONE" not in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GUI support")
    monkeypatch.setenv("DISPLAY", ":0")  # past the no-display check, to the OpenCV build's own
    code = cli_main(["demo", "--source", str(synthetic_sequence), "--model", "nano", "--backend", "torch"])
    assert code == 2
    assert "GUI support" in capsys.readouterr().err


def test_missing_source_is_a_one_line_error(tmp_path, capsys):
    code = cli_main(["demo", "--source", str(tmp_path / "none.raw"), "--model", "nano", "--headless", "--log",
                     str(tmp_path / "x.jsonl")])
    assert code == 2
    err = capsys.readouterr().err
    assert "none.raw" in err and "Traceback" not in err


# ---------------------------------------------------------------- keys and live rate changes
def test_keys_change_rate_overlay_pause_and_quit():
    from flexdet.demo.runner import Controls

    controls = Controls("20")
    assert controls.handle_key(ord("+")) and controls.rate == 25
    assert controls.handle_key(ord("-")) and controls.handle_key(ord("-")) and controls.rate == 16
    assert controls.handle_key(ord("o")) and controls.overlay is False
    assert controls.handle_key(ord(" ")) and controls.paused.is_set()
    assert controls.handle_key(ord(" ")) and not controls.paused.is_set()
    assert not controls.handle_key(ord("q")) and not controls.handle_key(27)


def test_rate_change_mid_stream_moves_only_later_steps(tmp_path):
    from flexdet.data.writers import write_npz
    from flexdet.demo.pipeline import Producer

    path = tmp_path / "events.npz"
    write_npz(path, random_events(3000, 32, 32, 600_000), width=32, height=32)
    source = RecordingSource(path, chunk_us=1000)
    queue = WindowQueue(maxsize=1000)
    producer = Producer(source, queue, 50_000, "20", Pacer(0), lossless=True,
                        current_rate=lambda: Fraction(20) if queue.max_length < 4 else Fraction(40))
    producer.run()
    ends = [step.t_end - source.t_start for step in iter(lambda: queue.get(0.1), None)]
    # Four steps at 20 Hz, then 40 Hz steps counted from the fourth step's end.
    assert ends[:4] == [50_000, 100_000, 150_000, 200_000]
    assert ends[4:] == list(range(225_000, 600_000, 25_000))[:len(ends) - 4] and len(ends) > 10


def test_the_detector_runs_the_chains_schedule_at_its_rate():
    """Above the trained rate the demo steps chain_count(rate) states in turn (the schedule evaluation scores),
    one state at the trained rate or with --schedule stream; a dropped step leaves its chain for the next."""
    from flexdet.demo import load_detector
    from flexdet.demo.pipeline import StepInput

    detector = load_detector("nano", "torch", 304, 240, 0.0, rate_hz=60)
    assert detector._stepper.count == 3
    detector.reset()
    events = random_events(500, 304, 240, 200_000)
    for index in (0, 1, 3):  # step 2 dropped
        t_end = 50_000 + index * 16_667
        detector(StepInput(index, t_end - 50_000, t_end, events[(events["t"] >= t_end - 50_000)
                                                                 & (events["t"] < t_end)], None, None, 0.0))
    stepped = [all(float(a.abs().sum()) > 0 for a in state) for state in detector._stepper._states]
    assert stepped == [True, True, False]  # chains 0 (step 0) and 1 (step 1); chain 0 again at step 3
    detector.set_rate(20)
    assert detector._stepper.count == 1
    assert load_detector("nano", "torch", 304, 240, 0.0, schedule="stream", rate_hz=180)._stepper is not None
    with pytest.raises(ConfigError, match="schedule"):
        load_detector("nano", "torch", 304, 240, 0.0, schedule="global")


@pytest.mark.parametrize("policy", ["drop", "merge"])
def test_real_time_replay_with_a_model_that_cannot_keep_up(tmp_path, policy):
    from flexdet.demo import DemoConfig, load_detector, run_demo

    path = real_file("dvxplorer_320x240.aedat4")
    config = DemoConfig(source=str(path), model="nano", rate_hz="400", backend="torch", speed=1.0, headless=True,
                        log=str(tmp_path / "log.jsonl"), duration_s=0.05, queue_size=2, overload=policy)
    source = open_source(config.source)
    detector = load_detector("nano", "torch", source.width, source.height, 0.3)
    summary = run_demo(config, source, detector)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    # 20 windows arrive in 50 ms; a CPU model takes far longer per step, so most are dropped or merged.
    assert summary.max_queue_length <= 2 and len(lines) == summary.steps
    lost = summary.dropped if policy == "drop" else summary.merged
    assert summary.steps + lost == 20 and lost > 0
    merged_in_log = sum(json.loads(line)["merged"] for line in lines)
    assert merged_in_log == summary.merged


def test_real_time_replay_warms_the_model_up_and_drops_no_window_at_the_start(tmp_path, synthetic_sequence):
    """At --speed 1 the replay clock starts only after the model's warm-up steps, so the first window is run, not
    dropped (a fresh process used to drop its first 4-7 windows of 10 while the model and its kernels
    initialised). Later drops depend on the machine's speed (a loaded CPU takes longer than 50 ms a step), so
    only the start is checked, and that run + dropped windows cover the recording. A subprocess, since this
    process has warmed everything up already."""
    import json
    import re
    import subprocess
    import sys

    out, log = tmp_path / "replay.mp4", tmp_path / "replay.jsonl"
    done = subprocess.run([sys.executable, "-m", "flexdet.cli", "demo", "--source", str(synthetic_sequence),
                           "--model", "nano", "--backend", "torch", "--rate", "20", "--duration", "0.5",
                           "--speed", "1", "--headless", "--out", str(out), "--log", str(log)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps[0] == 0, f"the first windows were dropped: {steps}"
    dropped = int(re.search(r"(\d+) windows dropped", done.stderr).group(1))
    assert len(steps) + dropped == 10 and len(video_frames(out)) == len(steps)


def test_without_a_display_the_demo_runs_headless_or_says_how(tmp_path, synthetic_sequence, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if sys.platform.startswith("linux"):
        log = tmp_path / "d.jsonl"
        assert cli_main(["demo", "--source", str(synthetic_sequence), "--model", "nano", "--backend", "torch",
                         "--speed", "0", "--duration", "0.1", "--log", str(log)]) == 0
        assert "running headless" in capsys.readouterr().out and len(log.read_text().splitlines()) == 2
        assert cli_main(["demo", "--source", str(synthetic_sequence), "--model", "nano"]) == 2
        assert "--headless --out" in capsys.readouterr().err


def test_the_live_window_shows_under_a_virtual_display(tmp_path, synthetic_sequence):
    """The demo without --headless opens its OpenCV window on an X display (Xvfb) and draws into it."""
    import window_screenshot as script

    if script.missing_tools():
        pytest.skip(f"needs {', '.join(script.missing_tools())} (apt-get install xvfb x11-utils x11-apps)")
    if "GUI:                           NONE" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has no GUI support (opencv-python-headless instead of opencv-python)")
    png = tmp_path / "window.png"
    titles = script.capture_demo_window(synthetic_sequence, "nano", png, after_s=1.0, display=":93",
                                        extra=("--backend", "torch"))
    assert titles and titles[0].startswith("flexdet demo: ")
    image = cv2.imread(str(png))
    assert image is not None and image.shape[0] >= 128 and image.shape[1] >= 160  # the window, not an empty screen
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # events, frame and status text drawn


def test_headless_writing_a_file_processes_every_window_unless_speed_says_otherwise(tmp_path, synthetic_sequence,
                                                                                    capsys):
    """Headless, the demo replayed in real time by default and dropped the windows a CPU model could not keep up
    with (24 of 35 steps in the MP4); a file now gets every window, and --speed 1 still asks for real time."""
    out, log = tmp_path / "x.mp4", tmp_path / "x.jsonl"
    assert cli_main(["demo", "--source", str(synthetic_sequence), "--model", "nano", "--backend", "torch",
                     "--rate", "400", "--duration", "0.1", "--headless", "--out", str(out), "--log", str(log)]) == 0
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(40)) and len(video_frames(out)) == 40
    err = capsys.readouterr().err
    assert "40 steps" in err and "0 windows dropped" in err
    # a preset name is random weights, said once on stderr
    notes = [line for line in err.splitlines() if line.startswith("note: --model nano")]
    assert len(notes) == 1 and "random weights" in notes[0]


def test_a_fused_model_on_a_source_without_frames_is_said(tmp_path, synthetic_sequence, capsys):
    import torch

    from flexdet.data.writers import write_npz
    from flexdet.models import build_model
    from flexdet.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True).eval()
    spec = identity_spec(128, 160, bins=model.config.bins, window_us=50_000)
    checkpoint = save_model(tmp_path / "fused.pt", model, spec, ["pedestrian", "car"])
    events_only = tmp_path / "events.npz"
    write_npz(events_only, random_events(20_000, 160, 128, 200_000), 160, 128)
    for source, said in ((events_only, True), (synthetic_sequence, False)):  # no frames; frames
        assert cli_main(["demo", "--source", str(source), "--model", str(checkpoint), "--backend", "torch",
                         "--rate", "20", "--duration", "0.1", "--headless", "--log", str(tmp_path / "d.jsonl")]) == 0
        err = capsys.readouterr().err
        notes = [line for line in err.splitlines() if "fuses events with RGB frames" in line]
        assert len(notes) == int(said), err
        assert not said or (source.name in notes[0] and "has none" in notes[0])
        assert "random weights" not in err  # a checkpoint, not a preset name
