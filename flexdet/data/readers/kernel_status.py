"""Status codes the decoding kernels return, so the Python side can turn them into precise errors."""

STATUS_DONE = 0
STATUS_OUTPUT_FULL = 1
STATUS_BAD_WORD = 2
STATUS_BAD_COORD = 3
STATUS_CHECKPOINTS_FULL = 4
