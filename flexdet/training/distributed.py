"""Multi-GPU / multi-node training through torchrun: process-group set-up from the environment (gloo on CPU,
nccl on GPU), each rank's slice of the global batch, and the rank-0-only side effects."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from flexdet.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT); a plain
    process gets a world of one. `device`: auto (cuda when available), cpu or cuda."""
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"run.device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("run.device=cuda but this machine has no usable CUDA device; use run.device=auto or cpu")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    target = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world_size)
    return DistContext(rank, world_size, local_rank, target)


def shard(items: list, context: DistContext) -> list:
    """This rank's contiguous share of a global batch (the batch size must divide by the world size)."""
    if len(items) % context.world_size:
        raise ValueError(f"global batch of {len(items)} does not split over {context.world_size} processes")
    size = len(items) // context.world_size
    return items[context.rank * size:(context.rank + 1) * size]


def mean_across(value: float, context: DistContext) -> float:
    """The mean of a scalar over all ranks (for logging)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def cleanup() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
