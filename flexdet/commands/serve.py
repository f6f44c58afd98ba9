"""Serve an exported model to many cameras with NVIDIA Triton Inference Server: each stream's recurrent state
is kept on the server by correlation id, and the steps of different streams run as one batched call.

`flexdet serve EXPORT_DIR` writes a model repository (python backend running flexdet's onnxruntime backend) and
runs tritonserver in the foreground until Ctrl-C. `--write-repository DIR` only writes a repository for Triton's
container (onnxruntime backend, implicit state management, no Python in the loop). Clients:
`flexdet.serving.Client(URL).stream(ID).step(events, t_end)`, `flexdet demo --server URL`,
`flexdet bench --server URL --streams N`.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `flexdet serve`."""
    parser.add_argument("export_dir", help="folder written by `flexdet export` (re-exported with a dynamic batch "
                                           "axis from its model.pt when it was exported for one stream)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--http-port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (default 8001)")
    parser.add_argument("--max-streams", type=int, default=64, help="streams served at once; more are refused")
    parser.add_argument("--idle-timeout", type=float, default=30.0,
                        help="seconds without a step after which a stream's state is freed (its client died)")
    parser.add_argument("--max-batch", type=int, default=8, help="steps of different streams run in one call")
    parser.add_argument("--queue-delay-us", type=int, default=2000,
                        help="how long the batcher waits for other streams' steps (microseconds)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads on the server")
    parser.add_argument("--repository", help="write the model repository here (default: a temporary folder)")
    parser.add_argument("--write-repository", metavar="DIR",
                        help="only write a repository for Triton's container (onnxruntime backend, implicit state)")
    parser.add_argument("--accelerator", choices=("onnxruntime", "tensorrt"), default="onnxruntime",
                        help="--write-repository: plain onnxruntime or its TensorRT execution provider")


def run(args: argparse.Namespace) -> int:
    """Write the repository, then (unless --write-repository) run the server until Ctrl-C."""
    import signal
    import sys
    import tempfile

    from flexdet.serving.repository import ServeOptions, write_onnx_repository, write_python_repository
    from flexdet.serving.server import TritonServer

    options = ServeOptions(max_streams=args.max_streams, idle_timeout_s=args.idle_timeout, max_batch=args.max_batch,
                           queue_delay_us=args.queue_delay_us, threads=args.threads)
    if args.write_repository:
        model = write_onnx_repository(args.export_dir, args.write_repository, options, args.accelerator)
        print(f"repository: {model.parent} (model {model.name}); on a GPU machine:")
        print(f"  docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -v {model.parent.resolve()}:/models "
              "nvcr.io/nvidia/tritonserver:<yy.mm>-py3 tritonserver --model-repository=/models")
        return 0
    # SIGTERM (a service manager, `kill`) unwinds like Ctrl-C, so the server process is stopped, not orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with tempfile.TemporaryDirectory(prefix="flexdet-repository-") as scratch:
        write_python_repository(args.export_dir, args.repository or scratch, options)
        server = TritonServer(args.repository or scratch, args.address, args.http_port, args.grpc_port)
        with server:
            print(f"serving {args.export_dir} at {server.http_url} and {server.grpc_url} (max {args.max_streams} "
                  f"streams, idle timeout {args.idle_timeout:g} s); Ctrl-C stops", flush=True)
            code = server.wait()
        return 0 if code in (0, -15) else code
