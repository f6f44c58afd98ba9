"""Every shell command the README shows runs, in the README's order, in a fresh folder on tiny data.

The README's commands are meant to be pasted as they are; here each one is run through SUBSTITUTIONS, an explicit
table from the README's command (comments stripped, spaces collapsed) to the commands actually run: the same verb
and options on a tiny synthetic dataset, with few steps, headless, and a duration limit. A README command missing
from the table fails the test, so a new command in the README needs its entry here; an entry of None says why the
command is not run (the test suite itself, hardware).

Placeholders in the substituted commands: {seq} a synthetic test sequence (the README's recording / sequence),
{video} a short MP4 (the README's webcam), {rvt_ckpt} and {gen1} RVT's published-format checkpoint and
preprocessed Gen1 sequences from ../shared/data/peers (commands needing them are skipped when they are absent).
"""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import numpy as np

from flexdet.cli import main as cli_main

README = Path(__file__).resolve().parents[1] / "README.md"
PEERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "peers"
TINY = ("optim.steps=2 data.batch_size=2 data.clip_steps=2 data.downsample=2 run.progress=false run.threads=1 "
        "fal.student.steps=2")
TINY_DATA = "--preset quickstart --sequences 3 --duration 0.6 --size 128x96 --split 0.34,0.33,0.33 --workers 1"
SHORT_DEMO = "--headless --log runs/demo_{n}.jsonl --duration 0.2 --speed 0"
RECIPE_TINY = "optim.steps=2 data.batch_size=2 data.clip_steps=2 run.progress=false run.threads=1"

SUBSTITUTIONS: dict[str, list[str] | None] = {
    "pip install -c constraints.txt -e . && flexdet quickstart --out runs/quickstart": [
        # the install is CI's own; the quickstart's data and fusion run, tiny (the whole quickstart: test_quickstart)
        f"flexdet synth --out runs/quickstart/data {TINY_DATA} --seed 0",
        f"flexdet train --preset quickstart --data runs/quickstart/data --out runs/quickstart/fusion {TINY}"],
    'pip install -c constraints.txt -e ".[dev]" && pytest': None,  # this suite itself, run by CI
    "flexdet synth --out data/synth --preset dsec --sequences 20 --duration 10 --size 320x240 --seed 0": [
        "flexdet synth --out data/synth --preset dsec --sequences 3 --duration 0.5 --size 96x64 --seed 0 --workers 1 "
        "--split 0.34,0.33,0.33"],
    "flexdet fal --data DIR --out runs/fal": [
        f"flexdet fal --data runs/quickstart/data --out runs/fal --rates 20 {TINY}"],
    "flexdet pseudo-label TEACHER.pt --data DIR --rule flextune": [  # the teacher the chain above trained
        "flexdet pseudo-label runs/fal/teacher/checkpoints/last.pt --data runs/quickstart/data --rule flextune "
        "--no-progress"],
    "flexdet experiment frequency --out runs/frequency": [
        f"flexdet experiment frequency --out runs/frequency --data runs/quickstart/data --models fusion --rates 20 "
        f"{TINY}"],
    "flexdet export runs/quickstart/fusion/checkpoints/last.pt --out runs/export": [
        "flexdet export runs/quickstart/fusion/checkpoints/last.pt --out runs/export"],
    "flexdet bench --model runs/export --backend onnxruntime --steps 200": [
        "flexdet bench --model runs/export --backend onnxruntime --steps 5"],
    "flexdet demo --source recording.raw --model runs/export --rate 60": [
        f"flexdet demo --source {{seq}} --model runs/export --rate 60 {SHORT_DEMO.format(n=1)}"],
    "flexdet demo --source webcam:0 --model runs/export --rate 30": [
        f"flexdet demo --source {{video}} --model runs/export --rate 30 {SHORT_DEMO.format(n=2)}"],
    "flexdet demo --source dv: --model runs/export --rate 100": None,  # needs an iniVation camera
    "flexdet demo --source seq/ --model runs/export --rate 20 --headless --out runs/demo.mp4 --log runs/demo.jsonl": [
        "flexdet demo --source {seq} --model runs/export --rate 20 --headless --out runs/demo.mp4 "
        "--log runs/demo.jsonl --duration 0.3"],
    "flexdet convert rvt-b-gen1.ckpt --out runs/rvt-b-gen1": [
        "flexdet convert {rvt_ckpt} --out runs/rvt-b-gen1"],
    "flexdet eval runs/rvt-b-gen1 --data /data/gen1 --rates 20 --benchmark gen1 --out runs/rvt-eval": [
        "flexdet eval runs/rvt-b-gen1 --data {gen1} --rates 20 --benchmark gen1 --out runs/rvt-eval"],
    "flexdet export runs/rvt-b-gen1 --out runs/rvt-export": [
        "flexdet export runs/rvt-b-gen1 --out runs/rvt-export"],
    "flexdet demo --source my_recording.raw --model runs/rvt-export --rate 50": [
        f"flexdet demo --source {{seq}} --model runs/rvt-export --rate 50 {SHORT_DEMO.format(n=3)}"],
    # Real datasets: Gen1 runs on RVT's preprocessed output of the peer fixture (beside {gen1}), two steps; the
    # other datasets are not here (their two-step runs on tiny data of each layout: tests/test_recipes.py).
    "flexdet train --preset gen1 --data /data/gen1_rvt --out runs/gen1": [
        f"flexdet train --preset gen1 --data {{gen1}}/../rvt_output --out runs/gen1 {RECIPE_TINY}"],
    "flexdet eval runs/gen1/checkpoints/last.pt --data /data/gen1_rvt --rates 20 --benchmark gen1 --out runs/gen1-eval": [
        "flexdet eval runs/gen1/checkpoints/last.pt --data {gen1}/../rvt_output --rates 20 --benchmark gen1 "
        "--out runs/gen1-eval"],
    "flexdet train --preset 1mpx --data /data/1mpx_rvt --out runs/1mpx": None,  # 1 Mpx data: test_recipes
    "flexdet eval runs/1mpx/checkpoints/last.pt --data /data/1mpx_rvt --rates 20 --benchmark 1mpx "
    "--out runs/1mpx-eval": None,  # needs the 1 Mpx run above
    "flexdet train --preset dsec-det --data /data/dsec-det --out runs/dsec-det": None,  # DSEC-Det: test_recipes
    "flexdet eval runs/dsec-det/checkpoints/last.pt --data /data/dsec-det --schedule global --rates 20 "
    "--benchmark dsec2 --out runs/dsec-eval": None,  # needs the DSEC-Det run above
}


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ```bash blocks in order: comments stripped, continuation lines joined,
    spaces collapsed."""
    commands = []
    for block in re.findall(r"```(?:bash|sh|shell)\n(.*?)```", text, flags=re.S):
        joined = re.sub(r"\\\n", " ", block)
        for line in joined.splitlines():
            command = " ".join(line.split("#", 1)[0].split()) if not line.lstrip().startswith("#") else ""
            if command:
                commands.append(command)
    return commands


def test_every_readme_command_is_in_the_table():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert commands, "no ```bash blocks found in the README"
    missing = [c for c in commands if c not in SUBSTITUTIONS]
    assert not missing, f"README commands without an entry in SUBSTITUTIONS: {missing}"
    stale = [c for c in SUBSTITUTIONS if c not in commands]
    assert not stale, f"SUBSTITUTIONS entries no longer in the README: {stale}"


def test_readme_commands_are_parsed_from_bash_blocks():
    text = "x\n```bash\nflexdet a --b 1   # note\n#   only a comment\nflexdet c \\\n  --d\n```\n```python\nno()\n```\n"
    assert readme_commands(text) == ["flexdet a --b 1", "flexdet c --d"]


def write_video(path: Path, frames: int = 12, size: tuple[int, int] = (96, 64)) -> Path:
    """A short MP4 of a bright square moving on grey: the stand-in for the README's webcam."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, size)
    for k in range(frames):
        image = np.full((size[1], size[0], 3), 90, np.uint8)
        image[20:40, 10 + 4 * k:30 + 4 * k] = 230
        writer.write(image)
    writer.release()
    return path


def test_readme_commands_run_in_order(tmp_path, monkeypatch, capsys):
    """Runs the table's commands in the README's order; a failing command fails the test with its output."""
    monkeypatch.chdir(tmp_path)
    places = {"video": str(write_video(tmp_path / "webcam.mp4")),
              "rvt_ckpt": str(PEERS / "rvt" / "rvt_random.ckpt"), "gen1": str(PEERS / "rvt_preprocessed_gen1" / "input")}
    timings = []
    for readme_command in readme_commands(README.read_text(encoding="utf-8")):
        for command in SUBSTITUTIONS.get(readme_command) or []:
            if "{seq}" in command:
                places["seq"] = str(sorted((tmp_path / "runs" / "quickstart" / "data" / "test").iterdir())[0])
            if ("{rvt_ckpt}" in command and not Path(places["rvt_ckpt"]).is_file()) or \
                    ("{gen1}" in command and not Path(places["gen1"]).is_dir()) or \
                    ("rvt-b-gen1" in command and not (tmp_path / "runs" / "rvt-b-gen1").exists()
                     and "convert" not in command):
                continue  # RVT's files are not next to this checkout
            argv = shlex.split(command.format(**places))
            assert argv[0] == "flexdet"
            start = time.perf_counter()
            code = cli_main(argv[1:])
            captured = capsys.readouterr()
            assert code == 0, f"{command} -> exit {code}\n{captured.out[-2000:]}\n{captured.err[-2000:]}"
            timings.append((time.perf_counter() - start, command))
    assert (tmp_path / "runs" / "export").is_dir() and (tmp_path / "runs" / "demo.mp4").is_file()
    with capsys.disabled():
        print("\n" + "\n".join(f"{t:6.1f} s  {c}" for t, c in timings))
