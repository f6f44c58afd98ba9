"""Labelled sequences of every layout flexdet trains on, behind one small interface.

Layouts: a synthetic dataset (dataset.yaml; DSEC or Gen1 files plus dense 1 ms ground truth), real
DSEC-Det (`<seq>/events/left/events.h5`, distorted images, tracks.npy), Gen1 / 1Mpx (`*_td.dat` +
`*_bbox.npy`, event-only) and RVT preprocessed sequences (stacked histograms only: streams step through
exactly the stored windows, from where RVT's evaluation starts a sequence).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flexdet.config import parse_yaml
from flexdet.data.boxes import BOX_DTYPE
from flexdet.data.geometry import Geometry, check_event_downscale
from flexdet.data.halved_events import events_file
from flexdet.data.input_spec import InputSpec
from flexdet.data.labels import read_boxes
from flexdet.data.readers import open_recording
from flexdet.data.readers.rvt import DOWNSCALE_RULE as RVT_DOWNSCALE
from flexdet.data.readers.rvt import LABELS_RELATIVE, RvtSequence, read_window_index
from flexdet.datasets.benchmarks import Benchmark, get_benchmark
from flexdet.datasets.dsec_split import TRACKS, dsec_folders, dsec_label_files, split_folder
from flexdet.datasets.ground_truth import dense_labels_at, labels_at
from flexdet.errors import ConfigError, FlexdetError, FormatError

# RVT's dataset.sequence_length (config/experiment/<dataset>/default.yaml): its streaming evaluation starts a
# sequence that many windows, minus one, before the window of the first label frame.
RVT_SEQUENCE_LENGTH = {"gen1": 21, "1mpx": 5}
# The rule of RVT's stored histograms (InputSpec fields): bins by the window's first/last event, end included.
RVT_INPUT_RULE = {"time_norm": "events", "end_inclusive": True}
# FAL's pseudo labels beside a Gen1 recording's labels: `<name>_pseudo_bbox.npy` (flexdet.fal.generate).
PSEUDO_SUFFIX = "_pseudo"


@dataclass
class StoredWindows:
    """The windows a dataset stores instead of events (RVT): a stream steps through exactly these.

    `starts`/`ends` (µs) from the first window RVT's evaluation runs; `end_labels` maps the end of each window
    that has a label frame to that frame's label instant; `label_steps` lists (label instant, step index).
    """

    starts: np.ndarray
    ends: np.ndarray
    window_us: int
    end_labels: dict[int, int]
    label_steps: list[tuple[int, int]]

    @property
    def rate_hz(self) -> float:
        """The one rate these windows stand for: 1 / window length."""
        return 1e6 / self.window_us


@dataclass
class DenseLabels:
    """A synthetic sequence's exact boxes every `period_us` (grid from `origin_us`)."""

    boxes: np.ndarray
    period_us: int
    origin_us: int


class Sequence:
    """One labelled recording: events (or stored histograms), optional RGB frames, labels, dense labels."""

    def __init__(self, name: str, path: Path, events_path: Path | None, labels: np.ndarray,
                 frame_times: np.ndarray | None = None, frame_dir: Path | None = None,
                 dense: DenseLabels | None = None, stored: StoredWindows | None = None) -> None:
        self.name = name
        self.path = path
        self.events_path = events_path
        self.labels = labels
        self.frame_times = frame_times
        self.frame_dir = frame_dir
        self.dense = dense
        self.stored = stored
        self._recordings: dict[Path, object] = {}
        self._frame_files: list[Path] | None = None

    @property
    def has_frames(self) -> bool:
        return self.frame_times is not None

    @property
    def start_us(self) -> int:
        """t0 of a stream: the first stored window's start, else the first frame time, else the first label time."""
        if self.stored is not None and len(self.stored.starts):
            return int(self.stored.starts[0])
        if self.frame_times is not None and len(self.frame_times):
            return int(self.frame_times[0])
        if len(self.labels):
            return int(self.labels["t"][0])
        raise FlexdetError(f"{self.path}: sequence has neither frames nor labels to start a stream from")

    @property
    def end_us(self) -> int:
        """Last instant a step may end at: the last stored window's end, else the last label or frame time."""
        if self.stored is not None and len(self.stored.ends):
            return int(self.stored.ends[-1])
        candidates = [int(self.labels["t"][-1])] if len(self.labels) else []
        if self.frame_times is not None and len(self.frame_times):
            candidates.append(int(self.frame_times[-1]))
        if self.dense is not None and len(self.dense.boxes):
            candidates.append(int(self.dense.boxes["t"][-1]))
        return max(candidates) if candidates else self.start_us

    def recording(self, geometry: Geometry | None = None):
        """The open event recording (opened once, closed by `close`); for a `geometry` whose events are reduced
        beforehand (event_downscale "integrate_fire"), the recording's reduced file instead, written on first use
        (`flexdet.data.halved_events`)."""
        source = self.events_path if self.events_path is not None else self.path
        if geometry is not None and self.stored is None:
            source = events_file(source, geometry)
        if source not in self._recordings:
            self._recordings[source] = open_recording(source)
        return self._recordings[source]

    def model_inputs(self, spec: InputSpec, starts: np.ndarray, ends: np.ndarray, backwards: bool = False
                     ) -> np.ndarray:
        """(N, spec.channels, H, W) model inputs (`spec.input_dtype`) of the windows [starts, ends)
        (`InputSpec.model_inputs` over the events read once; RVT sequences hand out their stored windows)."""
        starts = np.asarray(starts, dtype=np.int64).reshape(-1)
        ends = np.asarray(ends, dtype=np.int64).reshape(-1)
        recording = self.recording(spec.geometry)
        if isinstance(recording, RvtSequence):
            return _stored_histograms(recording, starts, ends, spec)
        width, height = spec.size
        if len(ends) == 0:
            return np.zeros((0, spec.channels, height, width), spec.input_dtype)
        events = recording.read(int(starts.min()), int(ends.max()) + (1 if spec.end_inclusive else 0))
        return spec.model_inputs(events, starts, ends, backwards, sequence=self.name, time_origin=recording.t_offset)

    def frame(self, index: int, spec: InputSpec) -> np.ndarray:
        """Frame `index` as an input-sized HxWx3 uint8 RGB image."""
        if self._frame_files is None:
            self._frame_files = sorted(self.frame_dir.glob("*.png"))
            if len(self._frame_files) != len(self.frame_times):
                raise FormatError(self.frame_dir, f"{len(self._frame_files)} images for {len(self.frame_times)} "
                                                  "timestamps")
        path = self._frame_files[index]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FormatError(path, "not a readable image")
        return spec.frame_input(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))

    def ground_truth(self, t: int) -> np.ndarray:
        """Label-frame boxes at `t`: dense labels (synthetic, interpolated on the 1 ms grid) or the labels
        of the instant `t` (empty when `t` is not labelled); with stored windows, `t` is a window end and the
        labels are those of the label frame RVT scores on that window."""
        if self.stored is not None:
            t = self.stored.end_labels.get(int(t), -1)
        if self.dense is not None:
            return dense_labels_at(self.dense.boxes, t, self.dense.period_us, self.dense.origin_us, interpolate=True)
        return labels_at(self.labels, t)

    def is_labelled(self, t: int) -> bool:
        """Whether ground truth exists at `t` (always inside a dense sequence's span; with stored windows, whether
        the window ending at `t` has a label frame)."""
        if self.stored is not None:
            return int(t) in self.stored.end_labels
        if self.dense is not None:
            return self.start_us <= t <= self.end_us
        index = np.searchsorted(self.labels["t"], t)
        return bool(index < len(self.labels) and self.labels["t"][index] == t)

    def close(self) -> None:
        for recording in self._recordings.values():
            recording.close()
        self._recordings.clear()


@dataclass
class Dataset:
    """A dataset root: layout, benchmark (with the training resolution), the sequences of one split and how events
    reach the input resolution (`event_downscale`, a `Geometry` rule)."""

    root: Path
    layout: str
    benchmark: Benchmark
    sequences: list[Sequence]
    event_downscale: str = "bin"

    @property
    def geometry(self) -> Geometry:
        """The benchmark's crop and scale of this dataset's sensor with the dataset's downscale rule: the input
        frame it is scored in."""
        return self.benchmark.geometry(self.event_downscale)

    @property
    def has_frames(self) -> bool:
        return bool(self.sequences) and all(s.has_frames for s in self.sequences)

    def input_spec(self, **fields) -> InputSpec:
        """An input specification in this dataset's geometry (`fields`: bins, window_us, dual_windows, ...); on
        RVT data the histogram rule is the stored one (RVT_INPUT_RULE, and the downscale rule the dataset was
        opened with), whatever `fields` say."""
        if self.layout == "rvt":
            check_stored_representation(self.root, fields.get("representation", "stacked_histogram"))
            fields.update(RVT_INPUT_RULE)
        return InputSpec(self.geometry, **fields)

    def stream_rates(self, rates_hz) -> list[float]:
        """The rates streams can run at: any asked, or only the stored windows' own (RVT data)."""
        stored = sorted({s.stored.rate_hz for s in self.sequences if s.stored is not None})
        return stored if stored else [float(r) for r in rates_hz]

    def close(self) -> None:
        for sequence in self.sequences:
            sequence.close()


def open_dataset(root: str | Path, split: str, layout: str = "auto", benchmark: str = "auto",
                 downsample: int = 1, event_downscale: str = "auto") -> Dataset:
    """The sequences of `split` under `root`, with the benchmark that scores them (scale x `downsample`) and the
    `event_downscale` rule ("auto": what RVT's stored windows were made with, else "bin")."""
    root = Path(root)
    check_event_downscale(event_downscale)
    if not root.is_dir():
        raise ConfigError(f"{root}: dataset folder not found")
    if layout == "auto":
        layout = detect_layout(root)
    manifest = _manifest(root) if layout == "synthetic" else None
    if layout == "synthetic":
        sequences = _synthetic_sequences(root, split, manifest)
        chosen = _synthetic_benchmark(manifest) if benchmark == "auto" else get_benchmark(benchmark)
    elif layout == "dsec":
        sequences = [_dsec_sequence(path) for path in _dsec_folders(root, split)]
        chosen = get_benchmark("dsec2" if benchmark == "auto" else benchmark)
    elif layout == "gen1":
        sequences = [_gen1_sequence(path) for path in sorted((root / split).glob("*_td.dat"))]
        chosen = get_benchmark(_prophesee_benchmark(sequences) if benchmark == "auto" else benchmark)
    elif layout == "rvt":
        folders = sorted(p for p in (root / split).iterdir() if p.is_dir()) if (root / split).is_dir() else []
        if not folders:
            raise ConfigError(f"{root}: no rvt sequences in split {split!r}")
        chosen, downsample = _rvt_benchmark(folders[0], benchmark, downsample)
        event_downscale = _rvt_downscale(folders[0], downsample, event_downscale)
        sequences = [_rvt_sequence(path, RVT_SEQUENCE_LENGTH.get(chosen.name, 1)) for path in folders]
    else:
        raise ConfigError(f"unknown dataset layout {layout!r}")
    if not sequences:
        raise ConfigError(f"{root}: no {layout} sequences in split {split!r}")
    chosen = chosen.downsampled(downsample)
    if layout == "rvt":  # RVT's label container clamps every box to [0, W-1] x [0, H-1] at the stored size
        chosen = dataclasses.replace(chosen, clip="last_pixel")
    return Dataset(root, layout, chosen, sequences, "bin" if event_downscale == "auto" else event_downscale)


def detect_layout(root: Path) -> str:
    """synthetic (dataset.yaml), rvt, dsec or gen1, from what the folder holds."""
    if (root / "dataset.yaml").is_file():
        return "synthetic"
    if any(root.glob("*/*/event_representations_v2")):
        return "rvt"
    if any(root.glob("*/events/left/events.h5")) or any(root.glob("*/*/events/left/events.h5")):
        return "dsec"
    if any(root.glob("*/*_td.dat")):
        return "gen1"
    raise ConfigError(f"{root}: cannot tell the dataset layout (no dataset.yaml, DSEC sequences, *_td.dat "
                      "files or RVT folders); pass data.layout")


@dataclass
class LabelFiles:
    """The label file of each labelled sequence of a split (by name) and the layout they were found in
    (synthetic, dsec, gen1 for Prophesee `<name>_bbox.npy` files, rvt); a synthetic dataset's own benchmark
    and the layout and size its dataset.yaml states."""

    layout: str
    files: dict[str, Path]
    synthetic: Benchmark | None = None
    synthetic_layout: str | None = None
    size: tuple[int, int] | None = None


def label_files(root: str | Path, split: str) -> LabelFiles:
    """Every labelled sequence of `split` under `root` (a dataset of any layout flexdet reads or writes, or a
    folder of `<name>_bbox.npy`), events or not; a sequence its split names but whose labels are missing is an
    error, never left out."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{root}: labels folder not found")
    if (root / "dataset.yaml").is_file():
        manifest = _manifest(root)
        names = manifest["splits"].get(split)
        if names is None:
            raise ConfigError(f"{root}: dataset.yaml has no split {split!r} (has {sorted(manifest['splits'])})")
        if manifest["layout"] == "dsec":
            files = {name: _synthetic_dsec_folder(root, split, name) / TRACKS for name in names}
        else:
            files = {name: root / split / f"{name}_bbox.npy" for name in names}
        missing = [name for name, path in files.items() if not path.is_file()]
        if missing:
            raise ConfigError(f"{root}: dataset.yaml names {len(files)} {split!r} sequences but {len(missing)} have "
                              f"no readable label file: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return LabelFiles("synthetic", dict(sorted(files.items())), _synthetic_benchmark(manifest), manifest["layout"],
                          (manifest["width"], manifest["height"]))
    for folder in (root / split, root):
        found = {p.parent.parent.name: p for p in sorted(folder.glob(f"*/{LABELS_RELATIVE}"))}
        if found:
            return LabelFiles("rvt", found)
    if any(root.glob(f"*/{TRACKS}")) or any(root.glob(f"*/*/{TRACKS}")):
        return LabelFiles("dsec", dsec_label_files(root, split))
    for folder in (root, root / split):
        found = {p.name[:-len("_bbox.npy")]: p for p in sorted(folder.glob("*_bbox.npy"))}
        found = {name: path for name, path in found.items()
                 if not (name.endswith(PSEUDO_SUFFIX) and name[:-len(PSEUDO_SUFFIX)] in found)}
        if found:
            return LabelFiles("gen1", found)
    raise ConfigError(f"{root}: no label files (dataset.yaml, DSEC-Det <seq>/{TRACKS.as_posix()}, RVT "
                      f"<seq>/{LABELS_RELATIVE}, <sequence>_bbox.npy) in it or in its {split!r} folder")


def _manifest(root: Path) -> dict:
    """dataset.yaml, its keys and their types checked (plain sequence names, integer class ids, positive size)."""
    path = root / "dataset.yaml"
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FormatError(path, f"not a readable text file ({exc})") from None
    manifest = parse_yaml(text, str(path))
    if not isinstance(manifest, dict):
        raise FormatError(path, "expected a mapping of keys")
    for key in ("layout", "classes", "width", "height", "splits"):
        if key not in manifest:
            raise FormatError(path, f"missing key {key!r}")
    if manifest["layout"] not in ("dsec", "gen1"):
        raise FormatError(path, "layout must be dsec or gen1")
    classes, splits = manifest["classes"], manifest["splits"]
    if not isinstance(classes, dict) or not classes or not all(
            type(k) is int and 0 <= k <= 255 and isinstance(v, str) for k, v in classes.items()):
        raise FormatError(path, "classes must map class ids 0-255 to names")
    if not all(type(manifest[k]) is int and 0 < manifest[k] <= 65535 for k in ("width", "height")):
        raise FormatError(path, "width and height must be positive integers up to 65535")
    if not isinstance(splits, dict) or not all(
            isinstance(names, list) and all(isinstance(n, str) and n and Path(n).name == n and n not in (".", "..")
                                            for n in names) for names in splits.values()):
        raise FormatError(path, "splits must map split names to lists of plain sequence names")
    return manifest


def _synthetic_benchmark(manifest: dict) -> Benchmark:
    """Identity-sized synthetic benchmark; the file's class ids (DSEC: 0, 2) map to 0..K-1 in id order."""
    ids = sorted(int(k) for k in manifest["classes"])
    names = [str(manifest["classes"][k]) for k in ids]
    base = get_benchmark("synthetic", class_names=names, width=int(manifest["width"]), height=int(manifest["height"]))
    return dataclasses.replace(base, class_map={source: i for i, source in enumerate(ids)})


def _synthetic_sequences(root: Path, split: str, manifest: dict) -> list[Sequence]:
    names = manifest["splits"].get(split)
    if names is None:
        raise ConfigError(f"{root}: dataset.yaml has no split {split!r} (has {sorted(manifest['splits'])})")
    period = int(manifest.get("dense_period_us") or 1000)
    sequences = []
    for name in names:
        if manifest["layout"] == "dsec":
            sequence = _dsec_sequence(_synthetic_dsec_folder(root, split, name), dense_name="dense_tracks.npy")
        else:
            sequence = _gen1_sequence(root / split / f"{name}_td.dat",
                                      dense_path=_synthetic_gen1_dense(root, split, name))
        if sequence.dense is not None:
            offset = int(manifest.get("t_offsets", {}).get(name, 0))
            sequence.dense.period_us, sequence.dense.origin_us = period, offset
        sequences.append(sequence)
    return sequences


def _synthetic_dsec_folder(root: Path, split: str, name: str) -> Path:
    """Where a synthetic DSEC sequence lives: the official layout keeps val in train/ (datasets written by
    earlier flexdet versions have a val/ folder)."""
    legacy = root / split / name
    return legacy if legacy.is_dir() else root / split_folder(split) / name


def _synthetic_gen1_dense(root: Path, split: str, name: str) -> Path:
    """A synthetic Gen1 sequence's dense labels: `dense_labels/<split>/` (outside the split folders, whose
    every .npy RVT's preprocessing takes for a label file), or beside the recording in older datasets."""
    moved = root / "dense_labels" / split / f"{name}_dense.npy"
    return moved if moved.is_file() else root / split / f"{name}_dense.npy"


def _dsec_folders(root: Path, split: str) -> list[Path]:
    """DSEC-Det's split as dsec-det applies it: named sequences of `root/train` (train, val) or `root/test`."""
    return dsec_folders(root, split)


def _dsec_sequence(folder: Path, dense_name: str | None = None) -> Sequence:
    tracks = folder / "object_detections" / "left" / "tracks.npy"
    labels = read_boxes(tracks) if tracks.is_file() else np.zeros(0, BOX_DTYPE)
    stamps = folder / "images" / "timestamps.txt"
    frame_dir = folder / "images" / "left" / "distorted"
    frame_times = None
    if stamps.is_file() and frame_dir.is_dir():
        try:
            frame_times = np.loadtxt(stamps, dtype=np.int64, ndmin=1)
        except ValueError as exc:
            raise FormatError(stamps, f"not a list of integer timestamps ({exc})") from None
    dense = None
    if dense_name is not None and (folder / "object_detections" / "left" / dense_name).is_file():
        dense = DenseLabels(read_boxes(folder / "object_detections" / "left" / dense_name), 1000, 0)
    return Sequence(folder.name, folder, folder / "events" / "left" / "events.h5", labels, frame_times,
                    frame_dir if frame_times is not None else None, dense)


def _gen1_sequence(dat: Path, dense_path: Path | None = None) -> Sequence:
    stem = dat.name[:-len("_td.dat")]
    label_path = dat.with_name(f"{stem}_bbox.npy")
    if not label_path.is_file():
        raise FormatError(dat, f"no label file {label_path.name} next to the recording")
    dense = None
    if dense_path is not None and dense_path.is_file():
        dense = DenseLabels(read_boxes(dense_path), 1000, 0)
    return Sequence(stem, dat, dat, read_boxes(label_path), dense=dense)


def _prophesee_benchmark(sequences: list[Sequence]) -> str:
    """gen1 or 1mpx for a Prophesee tree: the DAT header's sensor size, else the label classes (1Mpx has
    ids up to 6, Gen1 only car 0 / pedestrian 1)."""
    if not sequences:
        return "gen1"
    with open_recording(sequences[0].events_path) as recording:
        if recording.size_source == "header":
            return "1mpx" if (recording.width, recording.height) == (1280, 720) else "gen1"
    return "1mpx" if any(len(s.labels) and int(s.labels["class_id"].max()) > 1 for s in sequences) else "gen1"


def _rvt_benchmark(folder: Path, benchmark: str, downsample: int) -> tuple[Benchmark, int]:
    """The benchmark of RVT data (auto: gen1 at 304x240, 1mpx at 1280x720 or RVT's half size 640x360) and the
    downsampling its stored histograms already have (a `downsample` that contradicts it is refused)."""
    with RvtSequence(folder) as recording:
        stored = (recording.width, recording.height)
    if benchmark == "auto":
        benchmark = "gen1" if stored == (304, 240) else "1mpx" if stored in ((1280, 720), (640, 360)) else None
        if benchmark is None:
            raise ConfigError(f"{folder}: stored histograms are {stored[0]}x{stored[1]}, neither Gen1 (304x240) nor "
                              "1Mpx (1280x720, 640x360); pass data.benchmark")
    chosen = get_benchmark(benchmark)
    width, height = chosen.eval_size
    factor = width // stored[0]
    if factor < 1 or (width, height) != (stored[0] * factor, stored[1] * factor):
        raise ConfigError(f"{folder}: stored histograms are {stored[0]}x{stored[1]}, not the {chosen.name} frame "
                          f"{width}x{height} or an integer fraction of it")
    if downsample not in (1, factor):
        raise ConfigError(f"{folder}: the stored histograms are at 1/{factor} resolution; data.downsample "
                          f"{downsample} cannot change that")
    return chosen, factor


def _rvt_downscale(folder: Path, factor: int, event_downscale: str) -> str:
    """The downscale rule of RVT windows stored at 1/`factor` of the sensor: RVT's own (RVT_DOWNSCALE) when
    they are reduced, refusing another; at full resolution the rule changes nothing and stays as asked."""
    if factor == 1:
        return event_downscale
    if event_downscale not in ("auto", RVT_DOWNSCALE):
        raise ConfigError(f"{folder}: RVT's stored windows are halved by sampling (event_downscale "
                          f"{RVT_DOWNSCALE}); data.event_downscale {event_downscale!r} cannot change that")
    return RVT_DOWNSCALE


def _rvt_sequence(folder: Path, sequence_length: int) -> Sequence:
    """An RVT sequence whose stream runs its stored windows from `sequence_length` - 1 windows before the first
    label frame's (RVT's streaming evaluation start), each label frame scored on its own window."""
    index = read_window_index(folder)
    path = folder / LABELS_RELATIVE
    try:
        with np.load(path, allow_pickle=False) as archive:
            rows, first_rows = archive["labels"], archive["objframe_idx_2_label_idx"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise FormatError(path, f"not RVT labels with 'labels' and 'objframe_idx_2_label_idx' ({exc})") from None
    if len(first_rows) != len(index.label_windows) or (len(first_rows) and first_rows.max() >= len(rows)):
        raise FormatError(path, f"{len(first_rows)} label frames for {len(index.label_windows)} labelled windows")
    if len(first_rows) and (first_rows.min() < 0 or np.any(np.diff(first_rows) <= 0)):
        raise FormatError(path, "objframe_idx_2_label_idx must be increasing row indices from 0 (each label frame's "
                                "first row)")
    frame_times = np.asarray(rows["t"], np.int64)[first_rows]
    first = int(index.label_windows[0]) if len(index.label_windows) else 0
    offset = max(first - sequence_length + 1, 0)
    ends = index.ends[offset:]
    end_labels = {int(index.ends[w]): int(t) for w, t in zip(index.label_windows, frame_times)}
    steps = [(int(t), int(w) - offset) for w, t in zip(index.label_windows, frame_times)]
    stored = StoredWindows(ends - index.window_us, ends, index.window_us, end_labels, steps)
    return Sequence(folder.name, folder, None, read_boxes(path), stored=stored)


def check_stored_representation(path: Path, representation: str) -> None:
    """RVT's stored windows are stacked histograms: any other representation needs the raw recordings."""
    if representation != "stacked_histogram":
        raise ConfigError(f"{path}: RVT's stored windows are stacked histograms but this input specification asks "
                          f"for a {representation}: use the raw recordings")


def _stored_histograms(recording, starts: np.ndarray, ends: np.ndarray, spec: InputSpec) -> np.ndarray:
    """RVT's precomputed windows whose END times are `ends`; only its own window length and size exist."""
    width, height = spec.size
    check_stored_representation(recording.path, spec.representation)
    if any(getattr(spec, key) != value for key, value in RVT_INPUT_RULE.items()):
        raise ConfigError(f"{recording.path}: RVT's stored windows are RVT histograms (time_norm=events, "
                          f"end_inclusive) but this input specification asks for time_norm={spec.time_norm}, "
                          f"end_inclusive={spec.end_inclusive}: evaluate this model on the raw recordings")
    if spec.geometry.scale > 1 and spec.geometry.event_downscale != RVT_DOWNSCALE:
        raise ConfigError(f"{recording.path}: RVT's stored windows are reduced by sampling (event_downscale "
                          f"{RVT_DOWNSCALE}) but this model's inputs were binned ({spec.geometry.event_downscale}): "
                          "evaluate it on the raw recordings")
    if spec.dual_windows or np.any(ends - starts != recording.window_us):
        raise ConfigError(f"{recording.path}: RVT data stores {recording.window_us} µs windows only "
                          f"(rate {1e6 / recording.window_us:g} Hz, one view); other windows were asked for")
    index = np.searchsorted(recording.window_end_times, ends)
    valid = (index < recording.num_windows)
    if not np.all(valid) or not np.array_equal(recording.window_end_times[index], ends):
        raise ConfigError(f"{recording.path}: some asked windows do not end on a stored window end time")
    stored = np.stack([recording.histograms(int(i), int(i) + 1)[0] for i in index]) if len(index) else \
        np.zeros((0, spec.channels, height, width), np.uint8)
    if stored.shape[1:] != (spec.channels, height, width):
        raise ConfigError(f"{recording.path}: stored histograms are {stored.shape[1:]}, the input specification "
                          f"needs {(spec.channels, height, width)} (set data.downsample to match the stored "
                          "resolution)")
    return stored
