"""Shared pytest setup: import flexdet before any test module imports torch or Numba.

flexdet sets a passive OpenMP wait policy on import; it only takes effect if it runs before torch and Numba
start their thread pools (see flexdet/__init__.py).
"""

import flexdet  # noqa: F401
