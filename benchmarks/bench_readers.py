"""Reader throughput (M events/s) for DAT, EVT 2.0, EVT 3.0 and DSEC h5 next to same-run baselines, and
the latency of a 50 ms window read from a ~1 GB EVT 3.0 file with its index built.

    python benchmarks/bench_readers.py            # 10 M events, 1 GB window file
    python benchmarks/bench_readers.py --quick    # 2 M events, 128 MB window file

Baselines: numpy fromfile + bit ops (DAT), h5py reading the four DSEC columns, expelliarmus / evlib for
RAW when importable. Files are generated under a temp folder and deleted afterwards.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from flexdet.data.readers import open_recording
from flexdet.data.readers.evt_encode import encode_evt3, raw_header, write_raw
from flexdet.data.writers import write_dat, write_dsec_h5
from flexdet.export.benchmark import uniform_events


def camera_like_events(n: int, width: int, height: int, duration_us: int, seed: int = 0) -> np.ndarray:
    """`n` uniform events (`uniform_events`) in row-wise readout order within each microsecond (what a sensor
    emits)."""
    events = uniform_events(height, width, n * 1e6 / duration_us, duration_us, seed)
    return events[np.lexsort((events["x"], events["y"], events["t"]))]


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def dat_numpy_baseline(path: Path, body_offset: int) -> np.ndarray:
    records = np.fromfile(path, dtype=[("t", "<u4"), ("data", "<u4")], offset=body_offset)
    data = records["data"]
    return records["t"].astype(np.int64), data & 0x3FFF, (data >> 14) & 0x3FFF, (data >> 28) & 1


def dsec_h5py_baseline(path: Path):
    import h5py
    import hdf5plugin  # noqa: F401

    with h5py.File(path, "r") as f:
        return [f["events"][k][()] for k in "txyp"]


def optional_raw_baseline(path: Path):
    """A third-party RAW decoder's full read, when one is installed."""
    try:
        import evlib
        return lambda: evlib.load_events(str(path))
    except ImportError:
        pass
    try:
        from expelliarmus import Wizard
        encoding = "evt3" if "evt3" in path.name else "evt2"
        return lambda: Wizard(encoding=encoding, fpath=str(path)).read()
    except ImportError:
        return None


def throughput_table(n: int, folder: Path) -> None:
    events = camera_like_events(n, 640, 480, 2_000_000)
    files = {"DAT": folder / "bench_td.dat", "EVT2": folder / "bench2.raw", "EVT3": folder / "bench3.raw",
             "DSEC h5": folder / "events.h5"}
    write_dat(files["DAT"], events, 640, 480)
    write_raw(files["EVT2"], events, 640, 480, evt="2.0")
    write_raw(files["EVT3"], events, 640, 480, evt="3.0")
    write_dsec_h5(files["DSEC h5"], events, width=640, height=480)
    dat_body = files["DAT"].read_bytes()[:200].index(b"% end\n") + 6 + 2
    print(f"\nFull decode of {n / 1e6:.1f} M events (640x480, 2 s); best of 3; M events/s")
    print(f"{'format':<9}{'size MB':>9}{'index s':>9}{'flexdet':>10}{'baseline':>10}{'ratio':>8}  baseline")
    for name, path in files.items():
        start = time.perf_counter()
        recording = open_recording(path)
        index_s = time.perf_counter() - start
        ours = best_of(lambda: recording.read())
        if name == "DAT":
            base, label = best_of(lambda: dat_numpy_baseline(path, dat_body)), "numpy fromfile + bit ops"
        elif name == "DSEC h5":
            base, label = best_of(lambda: dsec_h5py_baseline(path)), "h5py column reads"
        else:
            third_party = optional_raw_baseline(path)
            base, label = (best_of(third_party), "evlib/expelliarmus") if third_party else (None, "none installed")
        recording.close()
        base_rate = f"{n / base / 1e6:10.1f}" if base else f"{'n/a':>10}"
        ratio = f"{base / ours:8.2f}" if base else f"{'n/a':>8}"
        print(f"{name:<9}{path.stat().st_size / 1e6:9.1f}{index_s:9.2f}{n / ours / 1e6:10.1f}{base_rate}{ratio}  "
              f"{label}")


def window_latency(target_bytes: int, folder: Path) -> None:
    path = folder / "big.raw"
    block_us = 1_000_000
    block = camera_like_events(4_000_000, 1280, 720, block_us, seed=1)
    written, blocks = 0, 0
    with open(path, "wb") as handle:
        handle.write(raw_header("3.0", 1280, 720))
        while written < target_bytes:
            shifted = block.copy()
            start = blocks * block_us
            shifted["t"] += start - ((start >> 24) << 24)
            words = encode_evt3(shifted)
            handle.write(words.tobytes())
            written += words.nbytes
            blocks += 1
    start = time.perf_counter()
    recording = open_recording(path)
    index_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    starts = rng.integers(recording.t_start, recording.t_end - 50_000, 30)
    latencies, counts = [], []
    for t0 in starts:
        t0 = int(t0)
        begin = time.perf_counter()
        window = recording.read(t0, t0 + 50_000)
        latencies.append(time.perf_counter() - begin)
        counts.append(len(window))
    recording.close()
    median_ms = statistics.median(latencies) * 1e3
    print(f"\n50 ms window reads from a {path.stat().st_size / 1e9:.2f} GB EVT3 file ({blocks} s, "
          f"{recording.num_events / 1e6:.0f} M events); index built in {index_s:.1f} s")
    print(f"median {median_ms:.2f} ms, max {max(latencies) * 1e3:.2f} ms for ~{statistics.median(counts) / 1e3:.0f} k "
          f"events; target 10 ms -> ratio target/median = {10 / median_ms:.2f}")
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 M events and a 128 MB window file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flexdet-bench-", dir="/tmp") as folder:
        throughput_table(2_000_000 if args.quick else 10_000_000, Path(folder))
        window_latency((128 << 20) if args.quick else (1 << 30), Path(folder))


if __name__ == "__main__":
    main()
