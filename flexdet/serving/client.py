"""Client of a flexdet model on Triton: each stream is flexdet's StreamingRuntime over a backend that runs the
network on the server.

>>> client = Client("grpc://127.0.0.1:8001")
>>> stream = client.stream(7)                       # correlation id 7; the first step starts the sequence
>>> out = stream.step(events, t_end, frame=None)    # what the in-process runtime's step returns
>>> stream.close()                                  # ends the sequence: the server frees the stream's state

The runtime builds the histograms on the client (through the model's InputSpec), sends them and the frame
encoder's input, and post-processes the raw head output it gets back, exactly as in process. The model's input
specification, classes and thresholds come from the server (the `flexdet_metadata` parameter of its config).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from flexdet.errors import ConfigError, MissingDependencyError
from flexdet.export.metadata import DeployMetadata
from flexdet.export.onnx_export import EVENTS_INPUT, FRAMES_INPUT, RAW_OUTPUT
from flexdet.export.runtime.streaming import StreamingRuntime
from flexdet.serving.errors import ServerError, StreamLostError, UnreachableError
from flexdet.serving.repository import METADATA_PARAMETER, MODEL_NAME
from flexdet.serving.states import UNKNOWN_STREAM

# flexdet runs Numba on its workqueue layer, which aborts the process when two threads run parallel kernels at
# once: streams stepped from several threads build their inputs one at a time and overlap on the network only.
_KERNELS = threading.Lock()
_NUMPY = {"TYPE_UINT8": np.uint8, "TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
_WIRE = {np.uint8: "UINT8", np.float32: "FP32", np.float16: "FP16"}


class Client:
    """A flexdet model served by Triton at `url` (http://host:port or grpc://host:port)."""

    def __init__(self, url: str, model: str = MODEL_NAME, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "grpc") or not parts.hostname or not parts.port:
            raise ConfigError(f"server URL {url!r}: expected http://HOST:PORT or grpc://HOST:PORT")
        self.url, self.transport, self.address = url, parts.scheme, f"{parts.hostname}:{parts.port}"
        self.model, self.timeout_s = model, float(timeout_s)
        config = self._config()
        try:
            parameter = config["parameters"][METADATA_PARAMETER]["string_value"]
        except KeyError:
            raise ServerError(f"model {model!r} at {url} is not a flexdet model (no {METADATA_PARAMETER} "
                              "parameter in its config)") from None
        self.metadata = DeployMetadata.from_json(parameter, source=f"{url} model {model}")
        inputs = {entry["name"]: entry["data_type"] for entry in config["input"]}
        self.events_dtype = _NUMPY[inputs[EVENTS_INPUT]]

    def stream(self, stream_id: int, sequence: str = "", **runtime_options: Any) -> RemoteStream:
        """A StreamingRuntime for stream `stream_id` (an integer >= 1, Triton's correlation id) whose next step
        starts a new sequence on the server; `close()` ends it. `sequence` names the stream for the input
        specification; runtime_options: conf_thresh, nms_thresh, max_detections."""
        if isinstance(stream_id, bool) or not isinstance(stream_id, (int, np.integer)) or not 1 <= stream_id < 2**64:
            raise ConfigError(f"stream id must be an integer in [1, 2**64), got {stream_id!r}")
        backend = RemoteBackend(self, int(stream_id))
        runtime = RemoteStream(backend, self.metadata, **runtime_options)
        runtime.reset(sequence=sequence)
        runtime._resources.append(backend)  # runtime.close() ends the sequence
        return runtime

    def connect(self) -> Any:
        """A new tritonclient connection (one per stream: the HTTP client must not be shared between threads)."""
        try:
            if self.transport == "grpc":
                import tritonclient.grpc as triton
                return triton.InferenceServerClient(self.address)
            import tritonclient.http as triton
            return triton.InferenceServerClient(self.address, connection_timeout=self.timeout_s,
                                                network_timeout=self.timeout_s)
        except ImportError:
            raise MissingDependencyError("tritonclient", "flexdet.serving.Client",
                                         'pip install -c constraints.txt -e ".[serve]"') from None

    def statistics(self) -> dict:
        """The server's inference statistics of the model (inference_count, execution_count, ...)."""
        connection = self.connect()
        with translate_errors(self.url):
            if self.transport == "grpc":
                stats = connection.get_inference_statistics(self.model, as_json=True)
            else:
                stats = connection.get_inference_statistics(self.model)
        entry = stats["model_stats"][0]
        return {key: int(entry.get(key, 0)) for key in ("inference_count", "execution_count")}

    def _config(self) -> dict:
        connection = self.connect()
        with translate_errors(self.url):
            if self.transport == "grpc":
                return connection.get_model_config(self.model, as_json=True)["config"]
            return connection.get_model_config(self.model)


class RemoteStream(StreamingRuntime):
    """The StreamingRuntime of a served stream; `step` may be called from many threads, one stream per thread."""

    def step(self, events: np.ndarray, t_end: int | None = None, frame: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """The in-process `step`, its input built under the process's kernel lock (released for the request)."""
        _KERNELS.acquire()
        self.backend.holding = True
        try:
            return super().step(events, t_end, frame)
        finally:
            self.backend.release()


class RemoteBackend:
    """The StreamingRuntime backend of one stream: each step is one request of the stream's sequence; a frame
    handed over is sent with the next step, and the server keeps the recurrent state."""

    name = "triton"

    def __init__(self, client: Client, stream_id: int) -> None:
        self.client = client
        self.stream_id = stream_id
        self.connection = client.connect()
        self._start = True
        self._live = False
        self._closed = False
        self._frame: np.ndarray | None = None
        self.holding = False  # whether this stream's step holds the kernel lock (RemoteStream.step)

    def release(self) -> None:
        """Let other threads build their inputs (the request goes out without the lock)."""
        if self.holding:
            self.holding = False
            _KERNELS.release()

    def reset(self, batch_size: int = 1) -> None:
        """The next step starts a new sequence (zero state on the server); one stream per backend."""
        if batch_size != 1:
            raise ConfigError(f"a served stream runs one sequence; open {batch_size} streams instead")
        self._start, self._frame = True, None

    def encode_frame(self, frame: np.ndarray) -> None:
        """Send this frame (float32 (1, 3, H, W) in [0, 1]) with the next step."""
        self._frame = frame

    def run(self, events: np.ndarray):
        """One step on the server: the raw head output (torch tensor, as the local backends return it)."""
        import torch

        self.release()
        if self._closed:
            raise ServerError(f"stream {self.stream_id} was closed (its sequence ended); open it again with "
                              f"client.stream({self.stream_id})")
        inputs = [self._input(EVENTS_INPUT, events.astype(self.client.events_dtype, copy=False))]
        if self._frame is not None:
            inputs.append(self._input(FRAMES_INPUT, np.ascontiguousarray(self._frame, np.float32)))
        result = self._infer(inputs, start=self._start, end=False)
        self._start, self._live, self._frame = False, True, None
        return torch.from_numpy(np.array(result.as_numpy(RAW_OUTPUT), np.float32))

    def cleanup(self) -> None:
        """End the sequence so the server frees the stream's state now (nothing to free if it lost it already)."""
        if self._closed:
            return
        self._closed = True
        if not self._live:
            self.connection.close()
            return
        spec = self.client.metadata.input
        zeros = np.zeros((1, spec.channels, self.client.metadata.height, self.client.metadata.width),
                         self.client.events_dtype)
        try:
            self._infer([self._input(EVENTS_INPUT, zeros)], start=False, end=True)
        except (StreamLostError, UnreachableError):
            pass
        self.connection.close()

    def _input(self, name: str, value: np.ndarray) -> Any:
        module = _module(self.client.transport)
        tensor = module.InferInput(name, list(value.shape), _WIRE[value.dtype.type])
        tensor.set_data_from_numpy(np.ascontiguousarray(value))
        return tensor

    def _infer(self, inputs: list, start: bool, end: bool) -> Any:
        outputs = [_module(self.client.transport).InferRequestedOutput(RAW_OUTPUT)]
        try:
            with translate_errors(self.client.url, self.stream_id):
                return self.connection.infer(self.client.model, inputs, outputs=outputs, sequence_id=self.stream_id,
                                             sequence_start=start, sequence_end=end)
        except UnreachableError:
            self.connection.close()  # a new connection for the next request: gRPC's would wait in reconnect backoff
            self.connection = self.client.connect()
            raise


def _module(transport: str) -> Any:
    if transport == "grpc":
        import tritonclient.grpc as module
    else:
        import tritonclient.http as module
    return module


@contextmanager
def translate_errors(url: str, stream_id: int | None = None) -> Iterator[None]:
    """Turn tritonclient's and the network's exceptions into ServerError / StreamLostError / UnreachableError with
    one-line messages naming the server and the stream."""
    from tritonclient.utils import InferenceServerException

    where = f"server {url}" + (f", stream {stream_id}" if stream_id is not None else "")
    try:
        yield
    except InferenceServerException as exc:
        message = " ".join(str(exc.message() or exc).split())
        if "START flag" in message or UNKNOWN_STREAM in message:
            raise StreamLostError(f"{where}: the server holds no state for this stream (it restarted, or the "
                                  "stream was silent past the idle timeout); start a new sequence") from None
        if "UNAVAILABLE" in str(exc.status()) or "failed to connect" in message.lower():
            raise UnreachableError(f"{where}: cannot reach the server ({message})") from None
        raise ServerError(f"{where}: {message}") from None
    except OSError as exc:
        raise UnreachableError(f"{where}: cannot reach the server ({type(exc).__name__}: {exc})") from None
