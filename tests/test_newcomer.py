"""The newcomer's usual mistakes end in one line naming what to change (issue: the newcomer's path)."""

from __future__ import annotations

import pytest
import torch

from flexdet.cli import main as cli_main


def test_a_text_file_renamed_dat_is_not_a_dat_file(tmp_path, capsys):
    for name, text in (("notes.dat", "hello world, this is plain text\n" * 20),
                       ("README.dat", "# flexdet\n\nReal-time object detection with event cameras.\n" * 5)):
        path = tmp_path / name
        path.write_text(text)
        assert cli_main(["info", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "not a DAT file" in err[0] and name in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["bench", "--model", "nano", "--backend", "onnxruntime", "--device", "cuda", "--steps", "1"]) == 2
    assert "no usable CUDA device" in capsys.readouterr().err
    from flexdet.errors import ConfigError
    from flexdet.training.distributed import setup_distributed

    with pytest.raises(ConfigError, match="run.device=cuda"):
        setup_distributed("cuda")
    with pytest.raises(ConfigError, match="auto, cpu or cuda"):
        setup_distributed("gpu")


def test_bad_optimiser_values_are_named(capsys):
    from flexdet.errors import ConfigError
    from flexdet.training.config import load_train_config

    with pytest.raises(ConfigError, match=r"optim.lr must be positive, got -1"):
        load_train_config(preset="quickstart", overrides=["optim.lr=-1"])
    with pytest.raises(ConfigError, match=r"optim.steps must be >= 1, got 0"):
        load_train_config(preset="quickstart", overrides=["optim.steps=0"])


def test_synth_refuses_empty_splits_and_zero_sequences(tmp_path, capsys):
    assert cli_main(["synth", "--out", str(tmp_path / "a"), "--sequences", "0"]) == 2
    assert "dataset.sequences must be >= 1" in capsys.readouterr().err
    assert cli_main(["synth", "--out", str(tmp_path / "b"), "--sequences", "2", "--split", "0.8,0.1,0.1"]) == 2
    err = capsys.readouterr().err
    assert "empty" in err and not (tmp_path / "b" / "dataset.yaml").exists()
