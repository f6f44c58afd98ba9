"""flexdet's inputs against FlexEvent's own DSEC data pipeline, bit for bit (tests/fixtures/flexevent_pipeline: a
small synthetic DSEC sequence, the events_2x.h5 FlexEvent's scripts/downsample_events.py made from it and what its
DSEC class returned, all by the official code, DylanOrange/flexevent 11471d3; the script that made it is beside
it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (Blosc filter of FlexEvent's file)
import numpy as np
import pytest

from flexdet.convert.flexevent import input_spec
from flexdet.data.geometry import Geometry
from flexdet.data.input_spec import InputSpec
from flexdet.datasets.sequences import open_dataset

FIXTURE = Path(__file__).parent / "fixtures" / "flexevent_pipeline"
LEFT = Path("train") / "synth_000" / "events" / "left"
HALVED = FIXTURE / "dsec" / LEFT / "events_2x.h5"


def flexevent_spec(**changes) -> InputSpec:
    """The specification `flexdet convert` gives a FlexEvent model (its geometry, RVT histograms binned by the
    window's events over [start, end), the hashed sub-window of ratio 0.5 and seed 42, FlexEvent's millisecond
    read grid), with `changes`."""
    return input_spec().replace(**changes)


@pytest.fixture(scope="module")
def official():
    return dict(np.load(FIXTURE / "flexevent_dsec_sample.npz"))


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A copy of the fixture's dataset without FlexEvent's events_2x.h5 (flexdet writes its own on the first read
    for an "integrate_fire" geometry) and its one sequence."""
    root = tmp_path_factory.mktemp("flexevent_pipeline") / "dsec"
    shutil.copytree(FIXTURE / "dsec", root, ignore=shutil.ignore_patterns("events_2x.h5"))
    dataset = open_dataset(root, "train")
    yield root, dataset.sequences[0]
    dataset.close()


def _inputs(sequence, official, spec) -> np.ndarray:
    """flexdet's model inputs of FlexEvent's windows [start, end) (its EV_WINDOW_A)."""
    windows = official["ev_window_a"]
    return sequence.model_inputs(spec, windows[:, 0], windows[:, 1])


def _readable(official) -> np.ndarray:
    """Windows FlexEvent reads: one starting before the halved file's first event asks ms_to_idx for a negative
    millisecond, which numpy takes from the end of the index, so FlexEvent reads no event for it."""
    return official["ev_window_a"][:, 0] >= official["halved_t_offset"]


def test_flexdet_writes_flexevents_events_2x(written, official):
    root, sequence = written
    spec = flexevent_spec()
    _inputs(sequence, official, spec)
    ours = root / LEFT / "events_2x.h5"
    assert ours.is_file() and sequence.recording(spec.geometry).path == ours
    assert sequence.recording().path.name == "events.h5"  # without a geometry: the recording itself
    with h5py.File(ours, "r") as mine, h5py.File(HALVED, "r") as theirs:
        for name in ("x", "y", "p", "t"):
            assert mine[f"events/{name}"].dtype == theirs[f"events/{name}"].dtype
            np.testing.assert_array_equal(mine[f"events/{name}"][()], theirs[f"events/{name}"][()], err_msg=name)
        assert int(mine["t_offset"][()]) == int(theirs["t_offset"][()]) == int(official["halved_t_offset"])
        index, their_index = mine["ms_to_idx"][()], theirs["ms_to_idx"][()]
        # FlexEvent's index stops at the last event's millisecond; DSEC's (flexdet's) adds one entry, the total
        np.testing.assert_array_equal(index[:len(their_index)], their_index)
        assert len(index) == len(their_index) + 1 and index[-1] == len(mine["events/t"])
        assert len(their_index) > 100 and len(mine["events/t"]) > 10_000


def test_model_inputs_equal_flexevents(written, official):
    _, sequence = written
    spec = flexevent_spec()
    windows = official["ev_window_a"]
    sub_starts, sub_ends = spec.sub_windows(windows[:, 0], windows[:, 1], sequence=sequence.name)
    np.testing.assert_array_equal(np.stack([sub_starts, sub_ends], 1), official["ev_window_b"])
    inputs = _inputs(sequence, official, spec)
    assert inputs.shape == (len(windows), 40, 215, 320) and inputs.dtype == np.uint8
    readable = _readable(official)
    assert readable.sum() >= 2 and official["ev_repr_a"][readable].any() and official["ev_repr_b"][readable].any()
    np.testing.assert_array_equal(inputs[readable, :20], official["ev_repr_a"][readable])
    np.testing.assert_array_equal(inputs[readable, 20:], official["ev_repr_b"][readable])
    # The one difference: the window before the halved file's first event, which FlexEvent reads empty.
    assert not official["ev_repr_a"][~readable].any() and inputs[~readable].any()


def test_flexevents_own_events_2x_gives_the_same_inputs(official):
    dataset = open_dataset(FIXTURE / "dsec", "train")
    try:
        sequence = dataset.sequences[0]
        spec = flexevent_spec()
        assert sequence.recording(spec.geometry).path == HALVED
        inputs = _inputs(sequence, official, spec)
    finally:
        dataset.close()
    readable = _readable(official)
    np.testing.assert_array_equal(inputs[readable], np.concatenate([official["ev_repr_a"], official["ev_repr_b"]],
                                                                   1)[readable])


def test_frames_equal_flexevents(written, official):
    _, sequence = written
    spec = flexevent_spec()
    for k, (start, end) in enumerate(official["ev_window_a"]):
        index = spec.frame_index(sequence.frame_times, int(start), int(end))
        frame = sequence.frame(index, spec)
        np.testing.assert_array_equal(frame, official["image"][k].transpose(1, 2, 0)[..., ::-1])


@pytest.mark.parametrize("changes, view", [
    ({"sub_window": "last_half"}, slice(20, 40)),
    ({"geometry": Geometry(640, 480, 430, 2, frame_resize="cubic", event_downscale="bin")}, slice(0, 40)),
    ({"end_grid_us": 0}, slice(0, 20)),
])
def test_each_rule_matters(written, official, changes, view):
    """The comparison can fail: FlexEvent's sub-window, its integrate-and-fire halving and its millisecond read grid
    each change the inputs of this fixture."""
    _, sequence = written
    inputs = _inputs(sequence, official, flexevent_spec(**changes))
    expected = np.concatenate([official["ev_repr_a"], official["ev_repr_b"]], 1)
    readable = _readable(official)
    assert not np.array_equal(inputs[readable][:, view], expected[readable][:, view])


def test_a_read_only_dataset_gets_its_halved_file_in_the_user_cache(tmp_path, monkeypatch, official):
    """Shared datasets are often read-only: the halved file then goes to $XDG_CACHE_HOME/flexdet/halved/, and the
    inputs are FlexEvent's all the same."""
    import os
    import stat

    from flexdet.data.halved_events import events_file

    root = tmp_path / "dsec"
    shutil.copytree(FIXTURE / "dsec", root, ignore=shutil.ignore_patterns("events_2x.h5"))
    left = root / LEFT
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    os.chmod(left, stat.S_IRUSR | stat.S_IXUSR)
    try:
        spec = flexevent_spec()
        path = events_file(left / "events.h5", spec.geometry)
        assert path.is_relative_to(tmp_path / "cache" / "flexdet" / "halved") and not (left / "events_2x.h5").exists()
        with h5py.File(path, "r") as mine, h5py.File(HALVED, "r") as theirs:
            np.testing.assert_array_equal(mine["events/t"][()], theirs["events/t"][()])
        assert events_file(left / "events.h5", spec.geometry) == path  # found again, not rewritten
    finally:
        os.chmod(left, stat.S_IRWXU)
