"""Pseudo-label quality against the dense ground truth: perfect labels score 1, and each kind of error (a missed
box, a box moved off its object, a wrong class) moves precision, recall and IoU by what it should."""

from __future__ import annotations

import numpy as np
import pytest
from test_datasets import tiny_dataset

from flexdet.data.clock import fine_grid
from flexdet.data.labels import BOX_DTYPE
from flexdet.data.writers import write_boxes
from flexdet.datasets.sequences import open_dataset
from flexdet.fal.generate import base_times, pseudo_label_path
from flexdet.fal.quality import match_boxes, pseudo_label_quality


def _between(sequence) -> np.ndarray:
    base = base_times(sequence)
    grid = fine_grid(base, 2)
    return grid[~np.isin(grid, base)]


def _write(root, edit) -> tuple[int, int]:
    """Pseudo files = label rows + dense truth at the in-between instants, changed by `edit`; (true, kept)."""
    dataset = open_dataset(root, "train")
    true = kept = 0
    for sequence in dataset.sequences:
        rows = [sequence.ground_truth(int(t)).astype(BOX_DTYPE) for t in _between(sequence)]
        true += sum(len(r) for r in rows)
        pseudo = edit(np.concatenate(rows))
        kept += len(pseudo)
        merged = np.concatenate([sequence.labels.astype(BOX_DTYPE), pseudo])
        write_boxes(pseudo_label_path(sequence), merged[np.argsort(merged["t"], kind="stable")])
    dataset.close()
    return true, kept


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("quality"))


def test_perfect_pseudo_labels_score_one(root):
    true, _ = _write(root, lambda rows: rows)
    quality = pseudo_label_quality(root, "train")
    assert true > 10 and quality["true_boxes"] == true and quality["matched"] == true
    assert quality["precision"] == 1.0 and quality["recall"] == 1.0 and quality["mean_iou"] == pytest.approx(1.0)


def test_missed_and_moved_boxes_count_as_errors(root):
    """Per instant, row 0 of each three moved a full width (a false positive and a miss), row 1 kept, row 2
    dropped (a miss): precision = kept-intact / written, recall = kept-intact / true, matched IoU 1."""
    intact = []

    def damage(rows):
        rows = rows.copy()
        index = np.arange(len(rows)) % 3
        rows["x"][index == 0] += rows["w"][index == 0] + 1
        intact.append(int(np.sum(index == 1)))
        return rows[index != 2]

    true, kept = _write(root, damage)
    quality = pseudo_label_quality(root, "train")
    assert quality["pseudo_boxes"] == kept and quality["true_boxes"] == true
    assert quality["matched"] == sum(intact) > 0
    assert quality["precision"] == pytest.approx(sum(intact) / kept)
    assert quality["recall"] == pytest.approx(sum(intact) / true)
    assert quality["mean_iou"] == pytest.approx(1.0)


def test_match_boxes_is_greedy_by_score_and_class_aware():
    truth = np.zeros(2, BOX_DTYPE)
    truth["x"], truth["y"], truth["w"], truth["h"], truth["class_id"] = [0, 100], [0, 0], [10, 10], [10, 10], [0, 0]
    pseudo = np.zeros(3, BOX_DTYPE)
    pseudo["x"], pseudo["y"], pseudo["w"], pseudo["h"] = [1, 0, 100], [0, 0, 0], [10, 10, 10], [10, 10, 10]
    pseudo["class_id"] = [0, 0, 1]
    pseudo["class_confidence"] = [0.9, 0.5, 0.8]
    # The higher-scored shifted box takes truth 0 (IoU 9/11); the exact one finds it taken; class 1 matches none.
    np.testing.assert_allclose(match_boxes(pseudo, truth), [90 / 110])
