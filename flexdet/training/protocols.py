"""Former name of flexdet.training.benchmarks ("protocol" now names only the evaluation schedule); kept
so that code written against it still imports."""

from flexdet.training.benchmarks import Benchmark as Protocol  # noqa: F401 (re-exported)
from flexdet.training.benchmarks import get_benchmark as get_protocol  # noqa: F401 (re-exported)
