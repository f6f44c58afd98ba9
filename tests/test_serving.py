"""Serving many cameras: a real tritonserver on free loopback ports running tiny exports. Every stream served
reproduces its in-process detections while 8 run at once; malformed requests, too many streams, dead clients
and a server restart give clear errors and disturb no other stream."""

from __future__ import annotations

import json
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from test_runtime import _sorted, build

from flexdet.cli import main as cli_main
from flexdet.data.input_spec import identity_spec
from flexdet.errors import ConfigError, FlexdetError
from flexdet.export import export_bundle, load_runtime, metadata_for_model
from flexdet.export.benchmark import step_windows, uniform_events
from flexdet.serving import (
    Client,
    ServeOptions,
    ServerError,
    StreamLostError,
    TritonServer,
    UnreachableError,
    write_onnx_repository,
    write_python_repository,
)
from flexdet.serving.server import free_port, platform_problem

pytestmark = pytest.mark.slow  # a tritonserver starts twice (~30-50 s each on a busy 2-core CPU)
if platform_problem():
    pytest.skip(platform_problem(), allow_module_level=True)

HEIGHT, WIDTH = 64, 96
WINDOW, STEP_US = 50_000, 10_000
MAX_STREAMS, IDLE_S = 9, 4.0


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """An event-only, a fused and a voxel-grid event-only nano model exported with a dynamic batch axis (random
    weights with spread-out scores; re-exporting a one-stream export is tested in test_serving_repository.py)."""
    folders = {}
    for seed, kind in ((21, "events"), (22, "fused"), (23, "voxel")):
        torch.manual_seed(seed)
        voxel = {"representation": "voxel_grid", "bins": 5} if kind == "voxel" else {}
        model = build("nano", use_frames=kind == "fused", **({"in_channels": 5} if voxel else {}))
        folders[kind] = tmp_path_factory.mktemp(f"serve_{kind}")
        export_bundle(model, metadata_for_model(model, identity_spec(HEIGHT, WIDTH, window_us=WINDOW, **voxel)),
                      folders[kind], dynamic_batch=True)
    return folders


@pytest.fixture(scope="module")
def server(exports, tmp_path_factory):
    """One server for the module with both models."""
    repository = tmp_path_factory.mktemp("repository")
    options = ServeOptions(max_streams=MAX_STREAMS, idle_timeout_s=IDLE_S, max_batch=8)
    write_python_repository(exports["events"], repository, options)
    write_python_repository(exports["fused"], repository, options, name="fused")
    write_python_repository(exports["voxel"], repository, options, name="voxel")
    server = TritonServer(repository, http_port=free_port(), grpc_port=free_port())
    with server:
        yield server


def stream_windows(seed: int, steps: int) -> list[tuple[np.ndarray, int]]:
    events = uniform_events(HEIGHT, WIDTH, 4e5, WINDOW + steps * STEP_US, seed=seed)
    return list(step_windows(events, steps, STEP_US, WINDOW))


def assert_same(served: dict, local: dict) -> None:
    """The served step equals the in-process one: raw head output, then boxes, scores and labels."""
    np.testing.assert_allclose(served["raw"], local["raw"], rtol=1e-4, atol=1e-4)
    served, local = _sorted(served), _sorted(local)
    np.testing.assert_array_equal(served["labels"], local["labels"])
    np.testing.assert_allclose(served["boxes"], local["boxes"], atol=1e-3)
    np.testing.assert_allclose(served["scores"], local["scores"], atol=1e-4)


def test_eight_concurrent_streams_each_reproduce_their_in_process_detections(server, exports):
    client = Client(server.grpc_url)
    before = client.statistics()
    steps, outputs, errors = 8, {}, []

    def run(k: int) -> None:
        try:
            stream = client.stream(100 + k)
            outputs[k] = [stream.step(chunk, t_end) for chunk, t_end in stream_windows(k, steps)]
            stream.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    after = client.statistics()
    calls = after["execution_count"] - before["execution_count"]
    assert calls < after["inference_count"] - before["inference_count"], "the server never batched two streams"
    for k in range(8):
        local = load_runtime(exports["events"], backend="onnxruntime", intra_op_num_threads=1)
        expected = [local.step(chunk, t_end) for chunk, t_end in stream_windows(k, steps)]
        assert sum(len(out["boxes"]) for out in expected) > 0
        for served, wanted in zip(outputs[k], expected):
            assert_same(served, wanted)


def test_fused_stream_over_http_sends_frames_and_keeps_the_latest(server, exports):
    client = Client(server.http_url, model="fused")
    stream = client.stream(7)
    local = load_runtime(exports["fused"], backend="onnxruntime", intra_op_num_threads=1)
    frames = np.random.default_rng(5).integers(0, 256, (3, HEIGHT, WIDTH, 3), dtype=np.uint8)
    for k, (chunk, t_end) in enumerate(stream_windows(7, 6)):
        frame = frames[k // 2] if k % 2 == 0 else None
        assert_same(stream.step(chunk, t_end, frame=frame), local.step(chunk, t_end, frame=frame))
    stream.close()


def test_a_voxel_grid_model_is_served_float32_inputs_and_reproduces_its_in_process_detections(server, exports):
    assert "TYPE_FP32" in (server.repository / "voxel" / "config.pbtxt").read_text().split("input")[1]
    stream = Client(server.http_url, model="voxel").stream(8)
    local = load_runtime(exports["voxel"], backend="onnxruntime", intra_op_num_threads=1)
    outputs = [(stream.step(chunk, t_end), local.step(chunk, t_end)) for chunk, t_end in stream_windows(8, 5)]
    assert sum(len(wanted["boxes"]) for _, wanted in outputs) > 0
    for served, wanted in outputs:
        assert_same(served, wanted)
    stream.close()


def test_malformed_requests_get_clear_errors_and_disturb_no_other_stream(server, exports):
    import tritonclient.grpc as grpc

    client = Client(server.grpc_url)
    good = client.stream(200)
    local = load_runtime(exports["events"], backend="onnxruntime", intra_op_num_threads=1)
    windows = stream_windows(3, 4)
    assert_same(good.step(*windows[0]), local.step(*windows[0]))
    raw = grpc.InferenceServerClient(server.grpc_url.removeprefix("grpc://"))

    def send(array: np.ndarray, wire: str, sequence: int, start: bool) -> str:
        tensor = grpc.InferInput("events", list(array.shape), wire)
        tensor.set_data_from_numpy(array)
        with pytest.raises(Exception) as caught:
            raw.infer("flexdet", [tensor], sequence_id=sequence, sequence_start=start)
        return str(caught.value)

    shape = np.zeros((1, 20, HEIGHT, WIDTH - 1), np.uint8)
    assert "unexpected shape for input 'events'" in send(shape, "UINT8", 200, False)
    assert "data-type" in send(np.zeros((1, 20, HEIGHT, WIDTH), np.float32), "FP32", 200, False)
    batch = np.zeros((2, 20, HEIGHT, WIDTH), np.uint8)
    assert "must specify batch-size 1" in send(batch, "UINT8", 201, True)
    assert "START" in send(np.zeros((1, 20, HEIGHT, WIDTH), np.uint8), "UINT8", 999, False)  # never started
    with pytest.raises(FlexdetError, match="no frame branch"):  # checked on the client
        good.step(*windows[1], frame=np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    for window in windows[1:]:  # the good stream carried on undisturbed
        assert_same(good.step(*window), local.step(*window))
    good.close()
    assert "START" in send(np.zeros((1, 20, HEIGHT, WIDTH), np.uint8), "UINT8", 200, False)  # ended on the server
    with pytest.raises(ServerError, match="stream 200 was closed"):  # and refused on the client
        good.step(*windows[0])
    with pytest.raises(FlexdetError, match="stream id must be an integer"):
        client.stream(0)


def test_more_streams_than_max_are_refused_and_a_dead_clients_state_frees_after_the_idle_timeout(server):
    client = Client(server.grpc_url)
    window = stream_windows(1, 1)[0]
    streams = [client.stream(300 + k) for k in range(MAX_STREAMS)]
    for stream in streams:
        stream.step(*window)
    extra = client.stream(399)
    with pytest.raises(ServerError, match=f"refused: the server already serves {MAX_STREAMS} streams"):
        extra.step(*window)
    dead = streams.pop()  # its client "dies": no END, no more steps
    deadline = time.monotonic() + IDLE_S
    while time.monotonic() < deadline:  # the others stay alive by stepping
        for stream in streams:
            stream.step(*window)
        time.sleep(0.5)
    time.sleep(1.5)
    extra.reset()
    extra.step(*window)  # the dead stream's slot is free again
    with pytest.raises(StreamLostError, match="holds no state for this stream"):
        dead.step(*window)
    for stream in [*streams, extra]:
        stream.close()


def test_demo_against_the_server_logs_the_in_process_detections(server, exports, tmp_path):
    from flexdet.data.writers import write_npz

    source = tmp_path / "camera.npz"
    write_npz(source, uniform_events(HEIGHT, WIDTH, 4e5, 300_000, seed=11), WIDTH, HEIGHT)
    logs = {}
    for name, target in (("served", ["--server", server.grpc_url, "--stream-id", "900"]),
                         ("local", ["--model", str(exports["events"]), "--backend", "onnxruntime"])):
        logs[name] = tmp_path / f"{name}.jsonl"
        assert cli_main(["demo", "--source", str(source), *target, "--rate", "20", "--duration", "0.25",
                         "--speed", "0", "--headless", "--log", str(logs[name]), "--score-thresh", "0.01"]) == 0
    served, local = ([json.loads(line) for line in logs[name].read_text().splitlines()] for name in logs)
    assert len(served) == len(local) == 5 and sum(len(r["boxes"]) for r in local) > 0
    for a, b in zip(served, local):
        assert a["labels"] == b["labels"]
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=1e-2)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-4)


def test_container_repository_refuses_a_fused_model(exports, tmp_path):
    with pytest.raises(ConfigError, match="event-only models"):
        write_onnx_repository(exports["fused"], tmp_path, ServeOptions())


def test_bench_against_the_server_reports_batched_unbatched_and_in_process(server, exports, capsys):
    code = cli_main(["bench", "--server", server.grpc_url, "--model", str(exports["events"]), "--streams", "2",
                     "--steps", "3", "--warmup", "1", "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [row["mode"] for row in rows] == ["server batched", "server unbatched", "in-process"]
    assert all(row["steps"] == 6 and row["steps_per_s"] > 0 for row in rows)
    assert rows[1]["mean_batch"] == 1.0


def test_server_restart_gives_a_clear_error_then_a_new_sequence_works(server, exports, tmp_path):
    client = Client(server.grpc_url)
    stream = client.stream(500)
    windows = stream_windows(9, 3)
    stream.step(*windows[0])
    server.stop()
    with pytest.raises(UnreachableError, match="cannot reach the server"):
        stream.step(*windows[1])
    shutil.copytree(server.repository / "flexdet", tmp_path / "flexdet")  # back with this model only: a faster start
    server.repository = tmp_path
    server.start()
    with pytest.raises(StreamLostError, match="start a new sequence"):
        stream.step(*windows[1])
    stream.reset()
    local = load_runtime(exports["events"], backend="onnxruntime", intra_op_num_threads=1)
    for window in windows:
        assert_same(stream.step(*window), local.step(*window))
    stream.close()
