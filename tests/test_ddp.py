"""DistributedDataParallel with 2 gloo processes gives the gradients one process gets on the same global batch
(the global loss is the mean of the shard losses)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from test_datasets import tiny_dataset

from flexdet.training.config import load_train_config
from flexdet.training.distributed import DistContext, shard
from flexdet.training.trainer import LossModule, Trainer

OVERRIDES = ["model.inputs=events", "data.downsample=2", "data.batch_size=4", "data.clip_steps=2",
             "optim.steps=2", "run.progress=false", "run.threads=1", "optim.grad_clip=0"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        config = load_train_config(preset="quickstart", overrides=OVERRIDES)
        trainer = Trainer(config, data, out, DistContext(rank, world, rank, torch.device("cpu")))
        torch.manual_seed(0)
        trainer.detector.load_state_dict(torch.load(Path(out) / "init.pt", weights_only=True))
        batch = trainer.loader.load(shard(trainer.sampler.next_batch(), trainer.context))
        state = trainer.detector.init_state(batch.events.shape[1], *batch.events.shape[-2:])
        losses, _ = trainer.module(batch.events, batch.frames, batch.targets, state)
        losses["total"].backward()
        if rank == 0:
            grads = {n: p.grad.clone() for n, p in trainer.detector.named_parameters() if p.grad is not None}
            torch.save(grads, Path(out) / "ddp_grads.pt")
        trainer.close()
    finally:
        dist.destroy_process_group()


def test_ddp_two_gloo_processes_match_single_process_gradients(tmp_path):
    data = tiny_dataset(tmp_path / "data")
    config = load_train_config(preset="quickstart", overrides=OVERRIDES)
    single = Trainer(config, data, tmp_path / "single", DistContext())
    torch.save(single.detector.state_dict(), tmp_path / "init.pt")
    batch_clips = single.sampler.next_batch()
    single.detector.train()
    total = 0.0
    for rank in range(2):  # the same two shards, each its own loss, averaged
        part = single.loader.load(shard(batch_clips, DistContext(rank, 2)))
        state = single.detector.init_state(part.events.shape[1], *part.events.shape[-2:])
        losses, _ = LossModule(single.detector)(part.events, part.frames, part.targets, state)
        total = total + losses["total"] / 2
    total.backward()
    expected = {n: p.grad.clone() for n, p in single.detector.named_parameters() if p.grad is not None}
    single.detector.zero_grad()
    whole = single.loader.load(batch_clips)  # the unsharded batch: one loss normalised over all 4 clips
    state = single.detector.init_state(whole.events.shape[1], *whole.events.shape[-2:])
    LossModule(single.detector)(whole.events, whole.frames, whole.targets, state)[0]["total"].backward()
    unsharded = {n: p.grad.clone() for n, p in single.detector.named_parameters() if p.grad is not None}
    single.close()

    mp.spawn(_worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    got = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    assert got.keys() == expected.keys() and len(got) > 10
    flat = lambda grads: torch.cat([grads[n].flatten() for n in sorted(expected)])  # noqa: E731
    reference = flat(expected)
    error = float((flat(got) - reference).norm() / reference.norm())
    assert error < 1e-4  # float32 sums in another order only
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=0, atol=1e-3 * float(grad.abs().max()) + 1e-8)
    # The comparison can fail: the unsharded batch's gradient is a different objective.
    assert float((flat(unsharded) - reference).norm() / reference.norm()) > 100 * max(error, 1e-6)
