"""Atomic writes: the final file appears complete or not at all, with ordinary permissions."""

import os
import stat

import pytest

from flexdet.atomic import atomic_path, atomic_write_text


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "model.pt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_written_file_has_umask_permissions_and_suffix(tmp_path):
    umask = os.umask(0o022)
    os.umask(umask)
    target = tmp_path / "sub" / "labels.npy"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npy" and tmp.parent == target.parent
        tmp.write_bytes(b"x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
