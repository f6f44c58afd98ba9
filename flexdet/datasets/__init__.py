"""Datasets: every folder layout flexdet reads as sequences, each benchmark's rules, labels at any instant and the
cache of stream inputs. Below evaluation and training; names load lazily so `flexdet score` stays light."""

from __future__ import annotations

from flexdet.lazy import lazy_exports

_EXPORTS = {
    "Benchmark": "flexdet.datasets.benchmarks",
    "get_benchmark": "flexdet.datasets.benchmarks",
    "Dataset": "flexdet.datasets.sequences",
    "Sequence": "flexdet.datasets.sequences",
    "detect_layout": "flexdet.datasets.sequences",
    "open_dataset": "flexdet.datasets.sequences",
    "WindowCache": "flexdet.datasets.cache",
    "stream_windows": "flexdet.datasets.cache",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
