"""Serving without a server: the repository for Triton's container (onnxruntime backend, implicit state) runs in
onnxruntime as Triton would drive it and steps like the in-process runtime; the state store's limits."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from test_runtime import _exported_bundle

from flexdet.cli import main as cli_main
from flexdet.export import load_runtime, read_onnx_metadata
from flexdet.export.benchmark import step_windows, uniform_events
from flexdet.serving import ServerError
from flexdet.serving.states import StreamStates

HEIGHT, WIDTH = 64, 96


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return _exported_bundle(tmp_path_factory.mktemp("repo_events"), 31, use_frames=False)


def test_container_repository_steps_like_the_in_process_runtime(export, tmp_path, capsys):
    """Triton's implicit state feeds each out_X back as in_X and sets START on a stream's first request: the
    written graph (re-exported with a dynamic batch axis from the one-stream export), driven so, gives the
    in-process raw output at every step, whatever state START meets."""
    assert cli_main(["serve", str(export), "--write-repository", str(tmp_path), "--max-streams", "4"]) == 0
    assert "tritonserver --model-repository=/models" in capsys.readouterr().out
    config = (tmp_path / "flexdet" / "config.pbtxt").read_text()
    local = load_runtime(export, backend="onnxruntime", intra_op_num_threads=1)
    names = local.metadata.state_names
    assert all(f'input_name: "in_{name}" output_name: "out_{name}"' in config for name in names)
    assert config.count("zero_data: true") == len(names) and 'backend: "onnxruntime"' in config
    graph = tmp_path / "flexdet" / "1" / "model.onnx"
    assert not local.metadata.dynamic_batch and read_onnx_metadata(graph).dynamic_batch  # re-exported from model.pt
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    shapes = {i.name: [1, *i.shape[1:]] for i in session.get_inputs()}
    state = {f"in_{n}": np.random.default_rng(0).normal(size=shapes[f"in_{n}"]).astype(np.float32) for n in names}
    events = uniform_events(HEIGHT, WIDTH, 4e5, 150_000, seed=4)
    for k, (chunk, t_end) in enumerate(step_windows(events, 5, 20_000, 50_000)):
        expected = local.step(chunk, t_end)
        histogram = local.spec.model_inputs(chunk, [t_end - 50_000], [t_end]).astype(np.float32)
        controls = {"START": np.array([[int(k == 0)]], np.int32), "READY": np.array([[1]], np.int32),
                    "CORRID": np.array([[5]], np.uint64)}
        outputs = session.run(None, {"events": histogram, **state, **controls})
        result = dict(zip([o.name for o in session.get_outputs()], outputs))
        np.testing.assert_allclose(result["raw"][0], expected["raw"], rtol=1e-4, atol=1e-4)
        state = {f"in_{n}": result[f"out_{n}"] for n in names}


def test_bad_limits_are_refused_before_any_work(export, tmp_path, capsys):
    assert cli_main(["serve", str(export), "--write-repository", str(tmp_path), "--max-streams", "0"]) == 2
    assert "--max-streams must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "flexdet").exists()


def test_stream_states_refuse_past_the_limit_and_free_idle_streams():
    now = [0.0]
    states = StreamStates(max_streams=2, idle_timeout_s=5.0, clock=lambda: now[0])
    zero = {"h": np.zeros((1, 2), np.float32)}
    states.start(1, zero)
    states.start(2, zero)
    states.start(2, zero)  # a restart of a live stream is not a new stream
    with pytest.raises(ServerError, match="refused: the server already serves 2 streams"):
        states.start(3, zero)
    now[0] = 4.0
    states.put(2, {"h": np.ones((1, 2), np.float32)})
    now[0] = 6.0
    assert states.evict_idle() == [1]
    with pytest.raises(ServerError, match="no state for stream 1"):
        states.get(1)
    states.start(3, zero)
    assert states.get(2)["h"].sum() == 2 and len(states) == 2
    states.end(2)
    assert len(states) == 1
