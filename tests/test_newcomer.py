"""The newcomer's usual mistakes end in one line naming what to change (issue: the newcomer's path)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flexdet.cli import main as cli_main


def fused_nano_model(path, root, split: str):
    """A seeded fused nano model saved with the input specification of `split` of the dataset at `root`."""
    from flexdet.datasets import open_dataset
    from flexdet.models import build_model
    from flexdet.models.checkpoint import save_model

    torch.manual_seed(0)
    model = build_model("nano", num_classes=2, use_frames=True).eval()
    dataset = open_dataset(root, split)
    spec = dataset.input_spec(bins=model.config.bins)
    dataset.close()
    return save_model(path, model, spec, ["pedestrian", "car"])

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


@pytest.fixture(scope="module")
def train_only_dataset(tmp_path_factory):
    """A tiny synthetic dataset whose only split is train (its test split is empty)."""
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic import generate_dataset, load_preset

    root = tmp_path_factory.mktemp("train_only")
    config = apply_overrides(load_preset("quickstart"), {
        "scene.width": 96, "scene.height": 64, "scene.duration_s": 0.5, "frames.blur_subframes": 2,
        "dataset.sequences": 1, "dataset.split": [1.0, 0.0, 0.0], "dataset.workers": 1})
    return generate_dataset(root, config)


def test_fal_checks_the_evaluation_split_and_rates_before_training(train_only_dataset, tmp_path, capsys):
    out = tmp_path / "fal"
    steps = ["optim.steps=1", "fal.student.steps=1", "run.progress=false", "data.batch_size=1", "data.clip_steps=2"]
    assert cli_main(["fal", "--data", str(train_only_dataset), "--out", str(out), *steps]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "split 'test'" in err[0] and "--split" in err[0]
    assert not (out / "teacher").exists()  # nothing was trained
    assert cli_main(["fal", "--data", str(train_only_dataset), "--out", str(out), "--rates", "20,0", *steps]) == 2
    assert "--rates '20,0'" in capsys.readouterr().err and not (out / "teacher").exists()


def one_error_line(capsys, command: str) -> str:
    """The single stderr line of a failed command (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"flexdet {command}: error: "), err
    return err[0]


def test_a_demo_video_faster_than_mp4_allows_names_the_rate(train_only_dataset, tmp_path, capsys):
    sequence = next((train_only_dataset / "train").iterdir())
    out = tmp_path / "x.mp4"
    assert cli_main(["demo", "--source", str(sequence), "--model", "nano", "--backend", "torch", "--rate", "100000",
                     "--speed", "0", "--duration", "0.05", "--headless", "--out", str(out)]) == 2
    line = one_error_line(capsys, "demo")
    assert "--rate 100000" in line and "65535" in line and "FFMPEG" not in line and not out.exists()


def test_experiment_takes_overrides_after_its_options_as_train_does(tmp_path, capsys):
    # optim.steps=0 is refused by name, which shows the override reached the recipe (argparse used to reject it).
    assert cli_main(["experiment", "frequency", "--out", str(tmp_path / "x"), "optim.steps=0"]) == 2
    assert "optim.steps must be >= 1, got 0" in one_error_line(capsys, "experiment")
    assert cli_main(["experiment", "frequency", "optim.lr=0.001", "--out", str(tmp_path / "x"), "optim.steps=0"]) == 2
    assert "optim.steps must be >= 1" in one_error_line(capsys, "experiment")
    with pytest.raises(SystemExit):  # a misspelt option is still an error, not an override
        cli_main(["experiment", "frequency", "--outt", str(tmp_path / "x")])
    assert "unrecognized arguments: --outt" in capsys.readouterr().err


def test_a_file_that_is_not_a_checkpoint_is_named_in_one_line(train_only_dataset, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# flexdet\n\nReal-time object detection with event cameras.\n")
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    for path in (readme, tensor):
        for argv in (["eval", str(path), "--data", str(train_only_dataset), "--split", "train"],
                     ["export", str(path), "--out", str(tmp_path / "export")]):
            assert cli_main(argv) == 2
            line = one_error_line(capsys, argv[0])
            assert f"{path} is not a flexdet/RVT checkpoint" in line and "weights_only" not in line
    from flexdet.errors import CheckpointError

    with pytest.raises(CheckpointError, match="is not a flexdet/RVT checkpoint"):  # --debug: the traceback
        cli_main(["eval", str(readme), "--data", str(train_only_dataset), "--debug"])


def test_interframe_evaluation_honours_rates_and_explains_its_rows(train_only_dataset, tmp_path, capsys):
    from flexdet.evaluation.evaluate import interframe_schedule

    assert [d.delta_us for d in interframe_schedule([180, 20, 40])] == [5555, 50_000, 25_000]  # DAGr's own deltas
    assert len(interframe_schedule(None)) == 10 and interframe_schedule(None)[0].rate_hz is None
    with pytest.raises(Exception, match="at most 50 ms"):
        interframe_schedule([10])
    checkpoint = fused_nano_model(tmp_path / "model.pt", train_only_dataset, "train")
    assert cli_main(["eval", str(checkpoint), "--data", str(train_only_dataset), "--split", "train",
                     "--schedule", "interframe", "--rates", "20,90", "--out", str(tmp_path / "eval")]) == 0
    out = capsys.readouterr().out
    import json

    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert [(r["rate_hz"], r["delta_ms"]) for r in saved] == [(20.0, 50.0), (90.0, 11.111)]
    assert "interframe: each row scores" in out and "delta_ms" in out


def test_the_readme_names_every_extra_and_what_each_installs():
    """The README's extras sentence lists exactly setup.py's extras, and says what the dependency lists say (it
    once promised onnxruntime-gpu from `gpu`, which installs TensorRT only)."""
    import ast
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tree = ast.parse((root / "setup.py").read_text())
    extras = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", None) == "EXTRAS" for t in node.targets))
    names = {key.value for key in extras.keys}
    readme = (root / "README.md").read_text()
    sentence = readme[readme.index("Extras:"):readme.index(".\n", readme.index("Extras:"))]
    assert set(re.findall(r"`(\w+)` \(", sentence)) == names
    gpu = next(value for key, value in zip(extras.keys, extras.values) if key.value == "gpu")
    assert [ast.literal_eval(e) for e in gpu.elts] == ["tensorrt>=10.0"] and "`gpu` (TensorRT;" in sentence


RVT_GEN1 = Path("../shared/data/peers/rvt_preprocessed_gen1")


@pytest.fixture(scope="module")
def fused_run(train_only_dataset, tmp_path_factory):
    """A one-step fused (events + RGB) quickstart run on the synthetic data: data.downsample 2, 48x32 inputs."""
    run = tmp_path_factory.mktemp("fused") / "run"
    assert cli_main(["train", "--preset", "quickstart", "--data", str(train_only_dataset), "--out", str(run),
                     "data.val_split=train", "optim.steps=1", "data.batch_size=1", "data.clip_steps=2",
                     "run.progress=false", "run.threads=1"]) == 0
    return run


@pytest.mark.skipif(not RVT_GEN1.is_dir(), reason="RVT's Gen1 fixture (../shared/data/peers) is not available")
def test_eval_of_a_fused_model_on_gen1_says_what_to_do_and_that_frames_are_missing(fused_run, tmp_path, capsys):
    """The quickstart's model on RVT's Gen1 fixture used to say "(data.downsample?)", an override eval does not
    take, and said nothing of the RGB frames the fused model needs and Gen1 lacks."""
    for data in (RVT_GEN1 / "input", RVT_GEN1 / "rvt_output"):  # Gen1's DAT files; RVT's stored histograms
        assert cli_main(["eval", str(fused_run), "--data", str(data), "--rates", "20",
                         "--out", str(tmp_path / data.name)]) == 2
        line = one_error_line(capsys, "eval")
        assert "takes no key=value overrides" in line and "(data.downsample?)" not in line
        assert f"flexdet train --preset quickstart --data {data}" in line and "model.inputs=events" in line
        assert "48x32" in line and "RGB frames" in line
    # the DAT files open at the model's downsample and are refused for both reasons
    assert cli_main(["eval", str(fused_run), "--data", str(RVT_GEN1 / "input"), "--rates", "20",
                     "--out", str(tmp_path / "again")]) == 2
    line = one_error_line(capsys, "eval")
    assert "takes 48x32 inputs but this data gives 152x120 (304x240 / 2)" in line
    assert "the model expects RGB frames, which this data lacks (events only)" in line


def test_eval_of_a_fused_model_on_event_only_data_of_its_size_names_the_missing_frames(tmp_path, capsys):
    """Same size, no frames: eval crashed in the frame branch (TypeError on the missing frame times)."""
    from flexdet.config import apply_overrides
    from flexdet.data.synthetic import generate_dataset, load_preset

    config = apply_overrides(load_preset("gen1"), {
        "scene.width": 96, "scene.height": 64, "scene.duration_s": 0.3, "dataset.sequences": 1,
        "dataset.split": [0.0, 0.0, 1.0], "dataset.workers": 1})
    data = generate_dataset(tmp_path / "gen1", config)
    checkpoint = fused_nano_model(tmp_path / "model.pt", data, "test")
    assert cli_main(["eval", str(checkpoint), "--data", str(data), "--rates", "20", "--out", str(tmp_path / "e")]) == 2
    line = one_error_line(capsys, "eval")
    assert "the model expects RGB frames, which this data lacks" in line and "inputs but" not in line


def test_info_on_a_run_folder_describes_its_training_checkpoint(fused_run, train_only_dataset, capsys):
    import json

    assert cli_main(["info", str(fused_run), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["path"] == str(fused_run / "checkpoints" / "last.pt")
    assert (facts["kind"], facts["inputs"], facts["step"], facts["steps"]) == \
           ("flexdet training checkpoint", "fusion", 1, 1)
    assert (facts["data"], facts["downsample"], facts["benchmark"]) == (str(train_only_dataset), 2, "synthetic")
    assert (facts["input"]["width"], facts["input"]["height"]) == (48, 32)
    assert cli_main(["info", str(fused_run / "checkpoints" / "last.pt")]) == 0
    out = capsys.readouterr().out
    assert "step        1 of 1\n" in out and f"trained on  {train_only_dataset} (" in out
