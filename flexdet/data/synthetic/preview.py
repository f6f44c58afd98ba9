"""A picture of one synthetic instant: the RGB frame, the next 50 ms of events, and the labelled boxes."""

from __future__ import annotations

import os

import numpy as np

from flexdet.data.events import time_slice
from flexdet.data.synthetic.simulate import SyntheticSequence


def save_preview(sequence: SyntheticSequence, path: os.PathLike[str] | str, frame_index: int | None = None,
                 window_us: int = 50_000) -> None:
    """Save a two-panel PNG (frame | events in red ON / blue OFF) with boxes and class names drawn on both.

    Without `frame_index`, the frame with the most labelled boxes is shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexdet.atomic import atomic_path

    if frame_index is None:
        counts = [(sequence.labels["t"] == t).sum() for t in sequence.frame_times]
        frame_index = int(np.argmax(counts))
    t0 = int(sequence.frame_times[frame_index])
    events = time_slice(sequence.events, t0, t0 + window_us)
    picture = np.full((sequence.height, sequence.width, 3), 255, np.uint8)
    picture[events["y"][events["p"] == 1], events["x"][events["p"] == 1]] = (220, 30, 30)
    picture[events["y"][events["p"] == 0], events["x"][events["p"] == 0]] = (30, 60, 220)
    boxes = sequence.dense_labels[sequence.dense_labels["t"] == t0]
    figure, axes = plt.subplots(1, 2, figsize=(10, 10 * sequence.height / sequence.width / 2 + 0.6))
    for axis, image, title in ((axes[0], sequence.frames[frame_index], f"RGB frame at {t0 / 1e3:.0f} ms"),
                               (axes[1], picture, f"events {t0 / 1e3:.0f}-{(t0 + window_us) / 1e3:.0f} ms")):
        axis.imshow(image)
        axis.set_title(title)
        axis.axis("off")
        for box in boxes:
            axis.add_patch(plt.Rectangle((box["x"], box["y"]), box["w"], box["h"], fill=False, color="lime", lw=1.5))
            axis.text(box["x"], box["y"] - 2, sequence.class_names[box["class_id"]], color="lime", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
