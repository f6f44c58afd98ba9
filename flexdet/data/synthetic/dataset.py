"""Write simulated sequences as a DSEC-Det or Gen1 dataset, one sequence at a time, crash-safe.

Each sequence is written into a hidden temporary directory and renamed into `<split>/` when complete; a
rerun with the same configuration skips sequences already there (generation is deterministic).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import yaml

from flexdet.atomic import atomic_path, atomic_write_text, clean_stale_temporaries, staging_dir
from flexdet.config import from_dict, to_dict
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.synthetic.config import CLASS_NAMES, SynthConfig
from flexdet.errors import ConfigError

DSEC_CLASS_IDS = {"pedestrian": 0, "car": 2}  # DSEC-Det ids, so its 2-class benchmark applies unchanged
GEN1_CLASS_IDS = {"car": 0, "pedestrian": 1}
GEN1_BOX_DTYPE = np.dtype([("ts", "<u8"), ("x", "<f4"), ("y", "<f4"), ("w", "<f4"), ("h", "<f4"),
                           ("class_id", "u1"), ("confidence", "<f4"), ("track_id", "<u4")])
DSEC_T_OFFSET_US = 1_600_000_000_000_000  # DSEC-like absolute clock; code that ignores t_offset breaks
SPLITS = ("train", "val", "test")
CONFIG_STAMP = ".synth-config.yaml"


@dataclass
class SequencePlan:
    """Where and how one sequence is generated."""

    index: int
    name: str
    split: str
    seed: int
    t_offset: int
    folder: str  # where the split lives: DSEC-Det keeps val sequences in train/ (dsec-det's split file)


def split_sizes(count: int, split) -> np.ndarray:
    """Sequences per split (train, val, test) for `count` sequences and the split fractions: the largest
    remainders round up."""
    fractions = np.asarray(split, np.float64) / sum(split)
    sizes = np.floor(fractions * count).astype(int)
    for i in np.argsort(-(fractions * count - sizes), kind="stable")[:count - sizes.sum()]:
        sizes[i] += 1
    return sizes


SAMPLE_ORDER = ("train", "test", "val")  # who gets a sequence first when there are too few for every split


def filled_split(count: int, split) -> list[float] | None:
    """A split for `count` sequences that leaves no split of a non-zero fraction empty where that can be done
    (each such split gets one, the rest follows the fractions), or, for fewer sequences than those splits,
    one each to train, then test, then val (train first: `flexdet train` reads it as is, and a second sequence
    in test is what `flexdet eval` scores by default). None when `split` already fills every split."""
    sizes = split_sizes(count, split)
    wanted = [name for name, fraction in zip(SPLITS, split) if fraction > 0]
    if count < 1 or all(size > 0 for name, size in zip(SPLITS, sizes) if name in wanted):
        return None
    if count < len(wanted):
        chosen = [name for name in SAMPLE_ORDER if name in wanted][:count]
        return [float(name in chosen) for name in SPLITS]
    ones = np.array([int(name in wanted) for name in SPLITS])
    return [float(v) for v in ones + split_sizes(count - len(wanted), split)]


def plan_sequences(config: SynthConfig) -> list[SequencePlan]:
    """Sequence names, splits, seeds and clock offsets; sequence i's seed derives from (seed, i)."""
    count = config.dataset.sequences
    if count < 1:
        raise ConfigError(f"dataset.sequences must be >= 1, got {count}")
    fractions = np.asarray(config.dataset.split, np.float64) / sum(config.dataset.split)
    sizes = split_sizes(count, config.dataset.split)
    empty = [name for name, fraction, size in zip(SPLITS, fractions, sizes) if fraction > 0 and size == 0]
    if empty:
        raise ConfigError(f"{count} sequence(s) leave the {', '.join(empty)} split(s) empty (split fractions "
                          f"{[round(float(f), 3) for f in fractions]}); generate more sequences or set that "
                          "fraction to 0")
    splits = np.repeat(SPLITS, sizes)
    plans = []
    for i in range(count):
        seed = int(np.random.SeedSequence([config.dataset.seed, i]).generate_state(1)[0])
        offset = DSEC_T_OFFSET_US + i * 3_600_000_000 if config.dataset.layout == "dsec" else 0
        folder = "train" if config.dataset.layout == "dsec" and splits[i] == "val" else str(splits[i])
        plans.append(SequencePlan(i, f"synth_{i:03d}", str(splits[i]), seed, offset, folder))
    return plans


def generate_dataset(out: os.PathLike[str] | str, config: SynthConfig,
                     progress: Callable[[SequencePlan], None] | None = None) -> Path:
    """Simulate and write every sequence of `config` under `out`, then `out/dataset.yaml`; returns `out`."""
    out = Path(out)
    plans = plan_sequences(config)  # a configuration that cannot be planned fails before anything is written
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / CONFIG_STAMP
    wanted = yaml.safe_dump(to_dict(config), sort_keys=False)
    clean_stale_temporaries(out)
    written = [entry for entry in out.iterdir() if entry.name != CONFIG_STAMP]
    if stamp.exists() and stamp.read_text() != wanted and written:
        raise ConfigError(f"{out}: holds a synthetic dataset made with a different configuration; "
                          "choose another --out or delete it")
    atomic_write_text(stamp, wanted)  # a stamp with nothing written beside it (a failed run) is replaced
    todo = [p for p in plans if not sequence_done(out, config, p)]
    for plan in plans:
        if plan not in todo and progress:
            progress(plan)
    workers = max(1, min(config.dataset.workers, len(todo)))
    if workers == 1:
        for plan in todo:
            write_sequence(out, config, plan)
            if progress:
                progress(plan)
    else:
        context = get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_parent,
                                 initargs=(os.getpid(),)) as pool:
            futures = [pool.submit(_write_sequence_from_dict, str(out), to_dict(config), plan) for plan in todo]
            for plan, future in zip(todo, futures):
                future.result()
                if progress:
                    progress(plan)
    write_manifest(out, config, plans)
    return out


def sequence_done(out: Path, config: SynthConfig, plan: SequencePlan) -> bool:
    """Whether a sequence is complete on disk (its directory, or for Gen1 its label file, written last)."""
    if config.dataset.layout == "dsec":
        return (out / plan.folder / plan.name).is_dir()
    return (out / plan.folder / f"{plan.name}_bbox.npy").is_file()


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker as soon as the generating process dies (even by SIGKILL), so no
    worker keeps writing into a dataset nobody is generating any more."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _write_sequence_from_dict(out: str, config: dict, plan: SequencePlan) -> None:
    write_sequence(Path(out), from_dict(SynthConfig, config), plan)


def write_sequence(out: Path, config: SynthConfig, plan: SequencePlan) -> Path:
    """Simulate one sequence into a temporary directory, then rename it into `out/<folder>/`: the directory
    `<name>` (DSEC), or the files `<name>_*` with the label file last (Gen1; its dense labels go to
    `out/dense_labels/<split>/`, since RVT's preprocessing takes every .npy of a split folder for labels)."""
    from flexdet.data.synthetic.simulate import simulate_sequence

    sequence = simulate_sequence(config, plan.seed)
    final = out / plan.folder / plan.name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out, plan.name)
    try:
        if config.dataset.layout == "dsec":
            _write_dsec(staging, sequence, plan.t_offset)
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
            return final
        _write_gen1(staging, sequence, plan.name)
        dense = out / "dense_labels" / plan.split
        dense.mkdir(parents=True, exist_ok=True)
        for suffix in ("_dense.npy", "_dense_visibility.npy", "_td.dat", "_bbox.npy"):
            target = dense if "_dense" in suffix else final.parent
            os.replace(staging / f"{plan.name}{suffix}", target / f"{plan.name}{suffix}")
        return final.parent / f"{plan.name}_td.dat"
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remap(boxes: np.ndarray, class_ids: dict, t_offset: int) -> np.ndarray:
    out = boxes.copy()
    lookup = np.array([class_ids[name] for name in CLASS_NAMES], np.uint8)
    out["class_id"] = lookup[boxes["class_id"]]
    out["t"] = boxes["t"] + t_offset
    return out


def _write_dsec(root: Path, sequence, t_offset: int) -> None:
    import cv2

    from flexdet.data.writers import write_boxes, write_dsec_h5

    events = sequence.events.copy()
    events["t"] += t_offset
    write_dsec_h5(root / "events" / "left" / "events.h5", events, t_offset=t_offset, width=sequence.width,
                  height=sequence.height)
    image_dir = root / "images" / "left" / "distorted"
    image_dir.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(sequence.frames):
        with atomic_path(image_dir / f"{i:06d}.png") as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)):
                raise OSError(f"{tmp}: OpenCV could not write the frame")
    atomic_write_text(root / "images" / "timestamps.txt",
                      "".join(f"{int(t) + t_offset}\n" for t in sequence.frame_times))
    labels_dir = root / "object_detections" / "left"
    write_boxes(labels_dir / "tracks.npy", _remap(sequence.labels, DSEC_CLASS_IDS, t_offset))
    write_boxes(labels_dir / "dense_tracks.npy", _remap(sequence.dense_labels, DSEC_CLASS_IDS, t_offset))
    _save_npy(labels_dir / "dense_visibility.npy", sequence.dense_visibility)


def _write_gen1(root: Path, sequence, name: str) -> None:
    from flexdet.data.writers import write_dat

    write_dat(root / f"{name}_td.dat", sequence.events, sequence.width, sequence.height)
    _save_npy(root / f"{name}_bbox.npy", gen1_boxes(_remap(sequence.labels, GEN1_CLASS_IDS, 0)))
    _save_npy(root / f"{name}_dense.npy", gen1_boxes(_remap(sequence.dense_labels, GEN1_CLASS_IDS, 0)))
    _save_npy(root / f"{name}_dense_visibility.npy", sequence.dense_visibility)


def gen1_boxes(boxes: np.ndarray) -> np.ndarray:
    """BOX_DTYPE rows as a Gen1 `_bbox.npy` array (fields `ts`, `confidence`)."""
    if boxes.dtype != BOX_DTYPE:
        raise ValueError(f"gen1_boxes expects BOX_DTYPE rows, got {boxes.dtype}")
    out = np.zeros(len(boxes), GEN1_BOX_DTYPE)
    for src, dst in zip(BOX_DTYPE.names, GEN1_BOX_DTYPE.names):
        out[dst] = boxes[src]
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def write_manifest(out: Path, config: SynthConfig, plans: list[SequencePlan]) -> None:
    """`out/dataset.yaml`: layout, classes, geometry, rates, splits, seed, full config, flexdet version."""
    from flexdet import __version__

    ids = DSEC_CLASS_IDS if config.dataset.layout == "dsec" else GEN1_CLASS_IDS
    manifest = {
        "layout": config.dataset.layout,
        "classes": {ids[name]: name for name in CLASS_NAMES if name in config.scene.objects.classes},
        "width": config.scene.width,
        "height": config.scene.height,
        "label_rate_hz": config.labels.rate_hz,
        "frame_rate_hz": config.frames.rate_hz if config.dataset.layout == "dsec" else None,
        "dense_period_us": config.labels.dense_period_us,
        "dense_visibility": "sibling float32 .npy, one value per dense box row (visible fraction)",
        "splits": {split: [p.name for p in plans if p.split == split] for split in SPLITS},
        "t_offsets": {p.name: p.t_offset for p in plans},
        "seed": config.dataset.seed,
        "config": to_dict(config),
        "flexdet_version": __version__,
    }
    atomic_write_text(out / "dataset.yaml", yaml.safe_dump(manifest, sort_keys=False))
