"""Read checkpoints written by other projects' training code (PyTorch Lightning, omegaconf) without running
any pickled code.

A torch zip checkpoint is a pickle (`<archive>/data.pkl`) whose tensors live in `<archive>/data/<key>`. The
unpickler below rebuilds tensors itself from those bytes, keeps plain Python containers, turns classes of
known record-keeping libraries (omegaconf, Lightning, optimiser/scheduler state) into inert `ForeignObject`
records that only store what they were given, and refuses every other global (os.system, builtins.eval, ...)
with CheckpointError before anything is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from flexdet.errors import CheckpointError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}
# Libraries whose pickled objects are configuration/bookkeeping records: kept as inert ForeignObjects.
_RECORD_MODULES = ("omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "torch.optim",
                   "numpy", "enum", "pathlib", "typing", "functools", "collections")
_PLAIN_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex,
                   "bytearray": bytearray, "list": list, "dict": dict, "tuple": tuple, "object": object,
                   "int": int, "long": int, "float": float, "str": str, "unicode": str, "bool": bool,
                   "bytes": bytes}


class ForeignObject:
    """An inert stand-in for an object of a class flexdet does not import: it records the constructor
    arguments, the pickled state and any items/elements, and never runs code of the original class."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs, self.state, self.items, self.elements = args, kwargs, None, {}, []

    def __new__(cls, *args: Any, **kwargs: Any) -> ForeignObject:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state, obj.items, obj.elements = args, kwargs, None, {}, []
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __repr__(self) -> str:
        return f"<foreign {self.qualname}>"


class _RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """The pure-Python unpickler (the C one allocates a length a corrupt opcode declares before reading it),
    with every global and persistent id checked."""

    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, prefix: str, source: str) -> None:
        super().__init__(file)
        self.archive, self.prefix, self.source = archive, prefix, source
        self.records: dict[str, type] = {}
        # Tensors are copied out of their storages: at most twice the bytes the file holds (shared storages).
        self.copy_budget = 2 * os.path.getsize(source) + 2**20

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return self._rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS:
            return _PLAIN_BUILTINS[name]
        if module in ("builtins", "__builtin__") and name == "getattr":  # bound methods of records
            return self._record("builtins", "getattr")
        if module.split(".")[0] in _RECORD_MODULES or module.startswith("torch.optim"):
            return self._record(module, name)
        raise CheckpointError(f"{self.source}: refusing to load: the checkpoint references {module}.{name}, "
                              "which could run code; only tensors, containers and omegaconf/Lightning records "
                              "are read")

    def _record(self, module: str, name: str) -> type:
        qualname = f"{module}.{name}"
        if qualname not in self.records:
            self.records[qualname] = type(name, (ForeignObject,), {"qualname": qualname, "__module__": __name__})
        return self.records[qualname]

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage":
            raise CheckpointError(f"{self.source}: unknown persistent id (a {type(pid).__name__}) in the checkpoint")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype):
            raise CheckpointError(f"{self.source}: storage {key} has no known element type ({dtype!r})")
        try:
            info = self.archive.getinfo(f"{self.prefix}/data/{key}")
        except KeyError:
            raise CheckpointError(f"{self.source}: storage {key} is missing from the archive") from None
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if not _is_int(numel) or info.file_size != numel * itemsize:
            raise CheckpointError(f"{self.source}: storage {key} declares {numel!r} values of {itemsize} bytes "
                                  f"but its archive member holds {info.file_size} bytes")
        raw = self.archive.read(info)
        return torch.frombuffer(bytearray(raw), dtype=dtype) if raw else torch.empty(0, dtype=dtype)

    def _rebuild_tensor(self, storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> torch.Tensor:
        """A tensor view of a flat storage, checked to lie inside it without overlapping itself (so no view
        holds more values than its storage: stride-0 expansions are refused), copied to compact memory."""
        if not isinstance(storage, torch.Tensor) or not _is_int(offset) or not _int_tuple(size) \
                or not _int_tuple(stride) or len(size) != len(stride) or offset < 0 \
                or min((*size, *stride, 0)) < 0:
            raise CheckpointError(f"{self.source}: a tensor record has no valid storage, offset, size and stride")
        numel = 1
        for length in size:
            numel *= length
        extent = offset + sum((length - 1) * step for length, step in zip(size, stride)) + 1
        if numel and (numel > storage.numel() or extent > storage.numel()
                      or _overlapping(size, stride)):
            raise CheckpointError(f"{self.source}: a tensor of size {tuple(size)} and stride {tuple(stride)} at "
                                  f"offset {offset} does not fit its storage of {storage.numel()} values")
        self.copy_budget -= numel * storage.element_size()
        if self.copy_budget < 0:
            raise CheckpointError(f"{self.source}: the checkpoint's tensors add up to more than twice the file "
                                  "size (views repeating the same storage)")
        return torch.as_strided(storage, tuple(size), tuple(stride), offset).clone()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and len(value) <= 16 and all(_is_int(v) for v in value)


def _overlapping(size: tuple, stride: tuple) -> bool:
    """Whether a strided view addresses some storage element twice (a dimension of length > 1 whose stride is
    not larger than the span of the smaller-stride dimensions)."""
    span = 1
    for length, step in sorted((pair for pair in zip(size, stride) if pair[0] > 1), key=lambda pair: pair[1]):
        if step < span:
            return True
        span = step * (length - 1) + span
    return False


def _rebuild_parameter(data: torch.Tensor, *_: Any) -> torch.Tensor:
    return data


def load_foreign_checkpoint(path: os.PathLike[str] | str) -> dict:
    """The top-level dict of a torch zip checkpoint written by any training code, read without executing
    pickled code: tensors as tensors, unknown record classes as ForeignObject (see `to_plain`)."""
    source = os.fspath(path)
    if not Path(source).is_file():
        raise CheckpointError(f"{source}: checkpoint file not found")
    try:
        archive = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:  # names, versions
        raise CheckpointError(f"{source}: not a torch zip checkpoint (saved by torch >= 1.6): {error}") from error
    with archive:
        check_members(archive, source)
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError(f"{source}: expected one <archive>/data.pkl in the zip, found {len(pickles)}")
        prefix = pickles[0].split("/")[0]
        order = f"{prefix}/byteorder"
        try:
            byteorder = archive.read(order).strip() if order in archive.namelist() else b""
            pickled = archive.read(pickles[0])
        except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as error:  # CRC, inflate
            raise CheckpointError(f"{source}: damaged zip member ({error})") from None
        if byteorder not in (b"little", b""):
            raise CheckpointError(f"{source}: big-endian checkpoints are not supported")
        unpickler = _RestrictedUnpickler(io.BytesIO(pickled), archive, prefix, source)
        try:
            payload = unpickler.load()
        except CheckpointError:
            raise
        except Exception as error:  # a damaged pickle stream: any unpickling failure
            raise CheckpointError(f"{source}: cannot read the checkpoint's pickle: {error}") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{source}: expected a dict at the top of the checkpoint, got {type(payload).__name__}")
    return payload


def check_members(archive: zipfile.ZipFile, source: str) -> None:
    """Refuse a zip whose members declare more bytes than the whole file holds (torch stores members
    uncompressed, so only a compressed or forged member can): nothing is read or allocated first."""
    size = os.path.getsize(source)
    for info in archive.infolist():
        if info.file_size > size:
            raise CheckpointError(f"{source}: zip member {info.filename!r} declares {info.file_size} bytes, more "
                                  f"than the whole file ({size} bytes): a compressed or forged member")


def to_plain(obj: Any, source: str = "checkpoint") -> Any:
    """omegaconf records (DictConfig, ListConfig, value nodes) as plain dicts/lists/values; other records as
    their pickled state; containers recursively (a cycle or nesting deeper than MAX_DEPTH is a CheckpointError)."""
    return _plain(obj, source, [])


MAX_DEPTH = 64


def _plain(obj: Any, source: str, path: list[int]) -> Any:
    if not isinstance(obj, (ForeignObject, dict, list, tuple)):
        return obj
    if id(obj) in path or len(path) >= MAX_DEPTH:
        raise CheckpointError(f"{source}: the stored configuration is cyclic or nested more than {MAX_DEPTH} deep")
    path.append(id(obj))
    try:
        if isinstance(obj, ForeignObject):
            name = obj.qualname.rsplit(".", 1)[-1]
            state = obj.state if isinstance(obj.state, dict) else {}
            if name == "DictConfig":
                content = state.get("_content")
                items = content.items() if isinstance(content, dict) else ()
                return {key: _plain(value, source, path) for key, value in items}
            if name == "ListConfig":
                content = state.get("_content")
                return [_plain(value, source, path) for value in (content if isinstance(content, list) else ())]
            if obj.qualname.startswith("omegaconf.nodes."):
                return _plain(state.get("_val"), source, path)
            return _plain(obj.state if obj.state is not None else list(obj.args), source, path)
        if isinstance(obj, dict):
            return {key: _plain(value, source, path) for key, value in obj.items()}
        return type(obj)(_plain(value, source, path) for value in obj)
    finally:
        path.pop()
