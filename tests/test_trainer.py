"""Trainer: a short run (finite loss, atomic weights_only checkpoint), and exact resume after a stop."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_datasets import tiny_dataset

from flexdet.models.checkpoint import load_model
from flexdet.models.checkpoint import read_training_checkpoint as load_checkpoint
from flexdet.training.config import load_train_config
from flexdet.training.trainer import Trainer, train, train_or_reuse

TINY = ["model.inputs=events", "data.downsample=2", "data.batch_size=2", "data.clip_steps=2",
        "data.stream_fraction=0.5", "optim.lr=0.001", "run.progress=false", "run.threads=1", "run.log_every=1"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return tiny_dataset(tmp_path_factory.mktemp("train_data"))


def test_two_steps_finite_loss_checkpoint_and_resume(data_root, tmp_path):
    config = load_train_config(preset="quickstart", overrides=TINY + ["optim.steps=3", "run.checkpoint_every=2"])
    result = train(config, data_root, tmp_path / "run", stop_after=2)
    assert result.step == 2 and torch.isfinite(torch.tensor(result.losses["total"]))
    payload = load_checkpoint(result.checkpoint)  # torch.load(weights_only=True) inside
    assert payload["step"] == 2 and payload["sampler"]["step"] == 2
    assert (tmp_path / "run" / "config.yaml").is_file() and any((tmp_path / "run" / "tb").iterdir())
    loaded = load_model(result.checkpoint)
    assert loaded.train_config["model"]["inputs"] == "events" and loaded.classes == ["pedestrian", "car"]
    assert loaded.spec.size == (48, 32) and loaded.spec.window_us == 50_000 and loaded.spec.bins == 10
    resumed = train(config, data_root, tmp_path / "run", resume=True)
    assert resumed.step == 3


def test_resume_after_stop_gives_the_same_weights(data_root, tmp_path):
    """4 steps straight vs. 2 steps in a separate process that stops there, then 2 resumed steps."""
    overrides = TINY + ["model.inputs=fusion", "optim.steps=4", "run.checkpoint_every=2"]
    config = load_train_config(preset="quickstart", overrides=overrides)
    straight = train(config, data_root, tmp_path / "straight")
    command = [sys.executable, "-m", "flexdet.cli", "train", "--preset", "quickstart", "--data", str(data_root),
               "--out", str(tmp_path / "split"), "--stop-after", "2", *overrides]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["step"] == 2
    resumed = train(config, data_root, tmp_path / "split", resume=True)
    a = load_checkpoint(straight.checkpoint)
    b = load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 4
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    for left, right in zip(a["stream_state"], b["stream_state"]):
        assert torch.equal(left, right)


def test_resume_refuses_a_foreign_file(data_root, tmp_path):
    from flexdet.errors import CheckpointError

    config = load_train_config(preset="quickstart", overrides=TINY + ["optim.steps=1"])
    trainer = Trainer(config, data_root, tmp_path / "run")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        trainer.resume(bad)
    trainer.close()


def test_train_or_reuse_finishes_a_stopped_run_and_reuses_a_finished_one(data_root, tmp_path):
    config = load_train_config(preset="quickstart", overrides=TINY + ["optim.steps=3", "run.checkpoint_every=1"])
    train(config, data_root, tmp_path / "run", stop_after=1)
    checkpoint = train_or_reuse(config, data_root, tmp_path / "run")
    assert load_checkpoint(checkpoint)["step"] == 3
    finished = checkpoint.stat().st_mtime_ns
    assert train_or_reuse(config, data_root, tmp_path / "run") == checkpoint
    assert checkpoint.stat().st_mtime_ns == finished, "a finished run was trained again instead of reused"


def test_resume_before_the_first_checkpoint_starts_fresh_and_clears_leftovers(data_root, tmp_path, capsys):
    config = load_train_config(preset="quickstart", overrides=TINY + ["optim.steps=1"])
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    leftover = folder / ".last.pt.k3j9x2qa.tmp.pt"  # an unmarked temporary of an older flexdet, a day old
    leftover.write_bytes(b"partial")
    old = time.time() - 2 * 86_400
    os.utime(leftover, (old, old))
    result = train(config, data_root, tmp_path / "run", resume=True)
    assert result.step == 1 and "starting from step 0" in capsys.readouterr().out
    assert not leftover.exists()


@pytest.mark.parametrize("steps", [1, 2, 20])
def test_any_step_count_trains(data_root, tmp_path, steps):
    """20 steps x 5 % warm-up is one warm-up step, where torch's one-cycle divided by zero."""
    config = load_train_config(preset="quickstart", overrides=TINY + [f"optim.steps={steps}", "optim.warmup_pct=0.05",
                                                                      "data.clip_steps=1"])
    trainer = Trainer(config, data_root, tmp_path / "run")
    try:
        lrs = []
        for _ in range(steps):
            trainer.train_step()
            lrs.append(trainer.scheduler.get_last_lr()[0])
    finally:
        trainer.close()
    assert len(lrs) == steps and all(lr > 0 for lr in lrs)


def test_sigint_saves_a_checkpoint_and_resume_continues(data_root, tmp_path):
    import signal

    out = tmp_path / "run"
    command = [sys.executable, "-m", "flexdet.cli", "train", "--preset", "quickstart", "--data", str(data_root),
               "--out", str(out), *TINY, "optim.steps=10000", "run.checkpoint_every=10000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (out / "config.yaml").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(3.0)  # a few steps into fit
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=240)
    assert process.returncode == 130, err[-2000:]
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert step >= 1 and f"SIGINT: stopped after step {step}" in err


def test_cli_resume_uses_the_saved_configuration_and_refuses_changes(data_root, tmp_path, capsys):
    from flexdet.cli import main

    out = str(tmp_path / "run")
    base = ["train", "--preset", "quickstart", "--data", str(data_root), "--out", out]
    assert main([*base, "--stop-after", "1", *TINY, "optim.steps=3"]) == 0
    assert main(base) == 2 and "already holds a run" in capsys.readouterr().err  # no silent overwrite
    assert main([*base, "--resume", "optim.steps=5", "optim.lr=0.5"]) == 2
    assert "would change it: optim.lr, optim.steps" in capsys.readouterr().err
    assert main([*base, "--resume", "run.log_every=2"]) == 0  # the preset's 250 steps are not taken
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 3
    assert "saved configuration" in capsys.readouterr().out


def test_multi_rate_clips_end_on_labels_and_s5_steps_follow_each_window(data_root, tmp_path, monkeypatch):
    """Multi-rate recipe with sparse labels: every random clip ends on a label instant at every rate, and the S5
    timestep of each batch column is its own window / s5_train_window_us."""
    from flexdet.models.s5 import S5

    overrides = TINY + ["model.preset=nano-s5", "data.rates_hz=[20,40,60]", "data.labels=sparse",
                        "data.clip_end=labelled", "data.batch_size=6", "data.stream_fraction=0", "optim.steps=2"]
    trainer = Trainer(load_train_config(preset="quickstart", overrides=overrides), data_root, tmp_path / "run")
    seen = []
    original = S5.discretize

    def record(layer):
        seen.append(layer.step_scale)
        return original(layer)

    monkeypatch.setattr(S5, "discretize", record)
    try:
        clips = trainer.sampler.next_batch()
        trainer.sampler.step -= 1  # replay the same plan in train_step
        for clip in clips:
            sequence = trainer.dataset.sequences[clip.sequence]
            ends = trainer.cache.windows(sequence, trainer.loader.rates[clip.rate_index])[1]
            assert sequence.labels["t"].tolist().count(int(ends[clip.start + clip.steps - 1])) > 0
        assert len({clip.rate_index for clip in clips}) > 1
        trainer.train_step()
    finally:
        trainer.close()
    expected = torch.tensor([50_000 / (1e6 / [20, 40, 60][clip.rate_index]) for clip in clips]).reciprocal()
    assert torch.is_tensor(seen[0]) and torch.allclose(seen[0], expected, rtol=1e-6)


def test_a_run_folder_is_its_last_checkpoint_and_resume_knows_its_data(data_root, tmp_path, capsys):
    """`flexdet eval RUN` means RUN/checkpoints/last.pt, and `flexdet train --out RUN --resume` trains on the data the
    run was started with (newcomer issue, item 4); a new run still needs --data."""
    from flexdet.cli import main

    run = tmp_path / "run"
    assert main(["train", "--preset", "quickstart", "--data", str(data_root), "--out", str(run), *TINY,
                 "optim.steps=2", "--stop-after", "1"]) == 0
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert "resuming" in capsys.readouterr().out and load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    loaded = load_model(run)
    assert loaded.path == run / "checkpoints" / "last.pt" and loaded.train_config["optim"]["steps"] == 2
    assert main(["train", "--preset", "quickstart", "--out", str(tmp_path / "new")]) == 2
    assert "--data" in capsys.readouterr().err
