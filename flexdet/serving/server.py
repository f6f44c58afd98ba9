"""Start and stop a Triton Inference Server process over a model repository.

The binary is an installed `tritonserver` (on PATH or /opt/tritonserver) when there is one, else the one the
`nvidia-pytriton` wheel ships (x86-64 Linux). Its python backend needs a stub built for the running Python: the
server gets a backend folder holding the wheel's python backend with that stub beside it, and the environment of
this interpreter (its libpython, stdlib and site-packages), so model.py imports flexdet and onnxruntime from here.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from flexdet.errors import ConfigError, MissingDependencyError
from flexdet.serving.errors import ServerError

INSTALLED = (Path("/opt/tritonserver"),)
READY_TIMEOUT_S = 120.0


@dataclass
class TritonInstall:
    """Where a tritonserver binary and its backends live."""

    binary: Path
    backends: Path
    stub: Path | None  # the python backend stub for this Python (wheel installs only)
    libraries: Path | None = None  # the wheel's shared libraries, which the stub finds relative to its own place


def platform_problem() -> str | None:
    """Why the packaged tritonserver cannot run on this machine (None: it can)."""
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        return f"the tritonserver binary runs on x86-64 Linux only (this is {sys.platform} {platform.machine()})"
    return None


def find_tritonserver() -> TritonInstall:
    """The tritonserver to run: an installed one first, else the nvidia-pytriton wheel's."""
    on_path = shutil.which("tritonserver")
    roots = ([Path(on_path).resolve().parent.parent] if on_path else []) + list(INSTALLED)
    for root in roots:
        if (root / "bin" / "tritonserver").is_file() and (root / "backends").is_dir():
            return TritonInstall(root / "bin" / "tritonserver", root / "backends", None)
    problem = platform_problem()
    if problem:
        raise MissingDependencyError("nvidia-pytriton", f"flexdet serve ({problem})")
    try:
        import pytriton
    except ImportError:
        raise MissingDependencyError("nvidia-pytriton", "flexdet serve",
                                     'pip install -c constraints.txt -e ".[serve]"') from None
    root = Path(pytriton.__file__).parent / "tritonserver"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError("nvidia-pytriton", f"flexdet serve on Python {python} (the wheel has no python "
                                     "backend stub for it)")
    return TritonInstall(root / "bin" / "tritonserver", root / "backends", stub,
                         root.parent.parent / "nvidia_pytriton.libs")


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at `address` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class TritonServer:
    """One tritonserver process over `repository`, bound to `address`; a context manager that waits until the
    server is ready on entry and stops it on exit."""

    def __init__(self, repository: os.PathLike[str] | str, address: str = "127.0.0.1", http_port: int = 8000,
                 grpc_port: int = 8001, metrics_port: int | None = None, log: os.PathLike[str] | str | None = None,
                 ) -> None:
        self.repository = Path(repository)
        self.address = address
        self.http_port, self.grpc_port = int(http_port), int(grpc_port)
        self.metrics_port = int(metrics_port) if metrics_port is not None else free_port(address)
        self.log = Path(log) if log is not None else None
        self.process: subprocess.Popen | None = None
        self._backends: tempfile.TemporaryDirectory | None = None
        self._log_file = None

    @property
    def http_url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.address}:{self.grpc_port}"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> TritonServer:
        """Launch the process and wait until its HTTP endpoint says ready; ServerError with the log if it exits."""
        install = find_tritonserver()
        backends = install.backends
        if install.stub is not None:
            self._backends = tempfile.TemporaryDirectory(prefix="flexdet-triton-backends-")
            backends = Path(self._backends.name)
            shutil.copytree(install.backends / "python", backends / "python")
            shutil.copy2(install.stub, backends / "python" / "triton_python_backend_stub")
        command = [str(install.binary), f"--model-repository={self.repository}", f"--backend-directory={backends}",
                   f"--http-address={self.address}", f"--http-port={self.http_port}",
                   f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
                   "--allow-metrics=false", "--allow-gpu-metrics=false", "--allow-cpu-metrics=false",
                   "--strict-readiness=true", "--exit-timeout-secs=5", "--exit-on-error=true", "--log-verbose=0",
                   "--backend-config=python,stub-timeout-seconds=300"]  # a busy CPU imports torch slowly
        self._log_file = open(self.log, "w+b") if self.log is not None else tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        env=_server_environment(install.libraries), start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log_text()
                self.stop()
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while starting: "
                                  f"{_last_error(log)}")
            if self._ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"tritonserver did not become ready within {timeout_s:.0f} s")

    def log_text(self) -> str:
        """Everything the server printed so far."""
        if self._log_file is None:
            return ""
        self._log_file.flush()
        self._log_file.seek(0)
        text = self._log_file.read().decode(errors="replace")
        self._log_file.seek(0, os.SEEK_END)
        return text

    def stop(self, timeout_s: float = 20.0) -> None:
        """Ask the server to shut down (SIGTERM, unload models), kill it if it takes longer than `timeout_s`."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._backends is not None:
            self._backends.cleanup()
            self._backends = None

    def wait(self) -> int:
        """Block until the server process ends; its exit code."""
        if self.process is None:
            raise ConfigError("the server was not started")
        return self.process.wait()

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _server_environment(libraries: Path | None) -> dict[str, str]:
    """This interpreter for the python backend stub: its libpython, stdlib (PYTHONHOME) and import path; the
    wheel's libraries for the stub copied out of the wheel."""
    env = dict(os.environ)
    folders = (str(libraries) if libraries else "", sysconfig.get_config_var("LIBDIR") or "",
               env.get("LD_LIBRARY_PATH", ""))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in folders if p)
    env["PYTHONHOME"] = sys.base_prefix
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _last_error(log: str) -> str:
    """The server log's last error line (the one that says why it stopped), else its last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("E") and "CudaDriverHelper" not in line]
    return (errors or lines or ["(no output)"])[-1]
