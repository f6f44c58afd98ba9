"""flexdet: real-time object detection with event cameras, fused with an RGB camera when there is one."""

import os

# One flexdet process holds two OpenMP pools: torch's and Numba's. With OpenMP's default active wait, the
# idle workers of one pool spin and starve the other; on a 2-core machine that made torch steps ~100x
# slower after any Numba kernel ran. Passive waiting (and Numba's workqueue layer) avoids it. These must
# be set before torch / Numba start their pools, hence here; a user's own setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("NUMBA_THREADING_LAYER", "workqueue")

from flexdet.errors import FlexdetError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["FlexdetError", "__version__"]
