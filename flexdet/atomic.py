"""Atomic file writes: a file either appears complete under its final name or not at all.

Checkpoints, converted datasets, label files and index caches go through here so a crash or a full disk
mid-write never leaves a half-written file that a later run would trust. Temporaries carry the writing
process's host and pid (`.<name>.pid<pid>@<host>.<random>.tmp...`), so what a killed process left behind is
recognisable: the next atomic write to the same target, or `clean_stale_temporaries(folder)`, removes the
temporaries whose process no longer runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from flexdet.errors import ConfigError


def _default_mode() -> int:
    """The mode open() would give a new file (0o666 minus the umask); mkstemp's 0o600 would hide exports."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_MODE = _default_mode()
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"
_TEMPORARY = re.compile(r"^\..+\.pid(\d+)@([A-Za-z0-9-]+)\.[^.]+\.tmp")
# Temporaries of flexdet versions that did not mark the pid (mkstemp's 8 random characters): removed
# once they are a day old, as no write takes that long.
_LEGACY_TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]+)?$")
LEGACY_STALE_S = 24 * 3600


def temporary_prefix(name: str) -> str:
    """The name prefix of a temporary standing for `name`, marked with this process's pid and host."""
    return f".{name}.pid{os.getpid()}@{_HOST}."


def _process_gone(pid: int) -> bool:
    """Whether no live process has this pid (a zombie, never reaped where no init reaps, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def is_stale_temporary(path: Path) -> bool:
    """Whether `path` is a temporary of an atomic write (file or staging folder) whose process is gone.

    Only temporaries written on this host are judged; a pid from another host says nothing here. Unmarked
    ones of older flexdet versions count as stale a day after they were last written.
    """
    match = _TEMPORARY.match(path.name)
    if match:
        return match.group(2) == _HOST and _process_gone(int(match.group(1)))
    if _LEGACY_TEMPORARY.match(path.name) and ".pid" not in path.name:
        try:
            return time.time() - path.lstat().st_mtime > LEGACY_STALE_S
        except OSError:
            return False
    return False


def clean_stale_temporaries(folder: os.PathLike[str] | str, name: str | None = None) -> list[Path]:
    """Remove what interrupted atomic writes left in `folder` (only temporaries of `name`, if given);
    returns the paths removed. Temporaries of running processes are kept."""
    folder = Path(folder)
    prefix = None if name is None else f".{name}."
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if prefix is not None and not entry.name.startswith(prefix):
            continue
        if not is_stale_temporary(entry):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        removed.append(entry)
    return removed


def staging_dir(parent: os.PathLike[str] | str, name: str) -> Path:
    """A new hidden folder in `parent` to build `name` in before renaming it into place; marked like the
    temporaries of atomic_path, so clean_stale_temporaries removes it if this process dies first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=temporary_prefix(name), suffix=".tmpdir", dir=parent))


@contextlib.contextmanager
def atomic_path(path: os.PathLike[str] | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    The temporary file keeps the final suffix, so libraries that choose a format by suffix (numpy's
    `.npy`, h5py, OpenCV) write the right thing. On any exception the temporary file is removed; the
    temporaries of earlier writes to `path` whose process was killed are removed first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(final.parent, final.name)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(final.name), suffix=f".tmp{final.suffix}",
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _DEFAULT_MODE)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: os.PathLike[str] | str, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: os.PathLike[str] | str, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


LOCK_NAME = ".flexdet-lock"


@contextlib.contextmanager
def folder_lock(folder: os.PathLike[str] | str, option: str = "--out") -> Iterator[Path]:
    """Hold `folder/.flexdet-lock` (this process's pid@host) while writing the folder: a folder locked by a
    running process is a ConfigError; a lock whose process is gone (same host) is taken over with a note on
    stderr. The lock is removed on exit."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock, mine = folder / LOCK_NAME, f"{os.getpid()}@{_HOST}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _DEFAULT_MODE)
        except FileExistsError:
            _take_stale_lock(lock, option)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(mine + "\n")
        break
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text().strip() == mine:
                lock.unlink()


def _take_stale_lock(lock: Path, option: str) -> None:
    """Remove `lock` when the process it names is gone (noting it on stderr); a ConfigError when it runs."""
    try:
        holder = lock.read_text().strip()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(f"{option} {lock.parent}: cannot read its lock {lock} ({exc.strerror})") from None
    match = re.fullmatch(r"(\d+)@([A-Za-z0-9-]+)", holder)
    if match and not (match.group(2) == _HOST and _process_gone(int(match.group(1)))):
        raise ConfigError(f"{option} {lock.parent} is being written by process {match.group(1)} on "
                          f"{match.group(2)} (lock {lock}); wait for it to finish or choose another {option}")
    with contextlib.suppress(FileNotFoundError):
        if lock.read_text().strip() == holder:  # not a lock another process took over meanwhile
            lock.unlink()
            print(f"note: took over {lock}: the process that held it ({holder or 'unnamed'}) is gone",
                  file=sys.stderr)


def folder_writable(folder: Path) -> bool:
    """Whether `folder` may be written: the OS allows it and its mode has a write bit.

    The mode check keeps root (for whom `os.access` is always true) out of read-only data folders.
    """
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return os.access(folder, os.W_OK) and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def require_output_dir(path: os.PathLike[str] | str, option: str = "--out") -> Path:
    """`path` checked, before any long work, to be a folder this process can create or write into: a
    ConfigError naming the option and the path otherwise."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder}: exists and is not a folder")
    _require_writable_parent(folder, option)
    return folder


def require_output_file(path: os.PathLike[str] | str, option: str) -> Path:
    """`path` checked, before any long work, to be a file this process can create or replace: a ConfigError
    naming the option and the path otherwise."""
    file = Path(path)
    if file.is_dir():
        raise ConfigError(f"{option} {file}: is a folder, not a file")
    _require_writable_parent(file.parent, option, file)
    return file


def _require_writable_parent(folder: Path, option: str, target: Path | None = None) -> None:
    """The nearest existing folder at or above `folder` must be a writable folder."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    named = target or folder
    if not existing.is_dir():
        raise ConfigError(f"{option} {named}: {existing} is a file, not a folder")
    if not folder_writable(existing):
        raise ConfigError(f"{option} {named}: {existing} is not writable")
