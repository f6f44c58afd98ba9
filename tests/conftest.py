"""Shared pytest setup: import flexdet before any test module imports torch or Numba.

flexdet sets a passive OpenMP wait policy on import; it only takes effect if it runs before torch and Numba
start their thread pools (see flexdet/__init__.py).
"""

import flexdet  # noqa: F401


def pytest_addoption(parser):
    """--fuzz-long: the reader fuzzing reads 2,000 mutated files per format instead of CI's few dozen."""
    parser.addoption("--fuzz-long", action="store_true", default=False,
                     help="fuzz the readers with 2,000 mutated files per format (minutes)")
