"""Checkpoints: a model's parameters and architecture (and, optionally, its optimizer's
state) in one ``.npz`` file.

The file holds one array per parameter (by its dotted name), one per array of optimizer
state (``__optimizer__/<parameter index>/<name>``) and ``__handgrad__``, a JSON string with
the architecture (class and constructor config), the rest of the optimizer state and any
metadata you add. Every file is treated as untrusted:

* it must be a regular file (a FIFO or a device would block or never end);
* the zip directory and every array header are read first: no object arrays (loading
  never unpickles), each array no bigger than its member, and all members together at
  most ``MAX_EXPANSION`` times the file (+1 MiB), so a small file can never make a load
  allocate much more than its own size;
* corrupt members (bad CRC, broken deflate data, truncation) are a CheckpointError;
* the architecture config is checked against the stored arrays before any layer is
  built; every array is checked before any parameter changes (a failed load leaves the
  model and the optimizer as they were).

Saving writes a temporary file beside the target and renames it over it, so a save that
fails halfway leaves the previous checkpoint intact. The new file gets the usual
permissions (0o666 minus the umask); a symlink is followed (its target is replaced, the
link stays); a read-only checkpoint is refused, not replaced.
"""
from __future__ import annotations

import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .init import INITIALIZERS
from .layers import ACTIVATIONS, MLP
from .module import Module

FORMAT = "handgrad-checkpoint"
VERSION = 1
META_KEY = "__handgrad__"
OPTIMIZER_PREFIX = "__optimizer__/"
# np.savez stores members uncompressed: what a member declares is about what the file
# holds. 4x leaves room for compressed files written by other tools; beyond that a file
# is asking for memory it does not contain.
MAX_EXPANSION = 4
SLACK = 1 << 20

MLP_CONFIG = {"sizes", "activation", "dropout", "init", "bias", "dtype"}
# Models that a checkpoint can rebuild from their config alone.
BUILDERS: dict[str, type[Module]] = {"MLP": MLP}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, validated."""

    meta: dict[str, Any]                               # format, class, config, metadata
    params: dict[str, np.ndarray]                      # by dotted name
    optimizer_state: dict[str, Any] | None = None      # Optimizer.state_dict() structure
    path: Path = field(default_factory=Path)


# --- writing -------------------------------------------------------------------------------

def save(model: Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
         optimizer: Any = None, optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (parameters + architecture + ``metadata``, and the state of
    ``optimizer`` or the ``optimizer_state`` dict) to ``path`` atomically."""
    if optimizer is not None:
        optimizer_state = optimizer.state_dict()
    opt_meta, opt_arrays = _split_optimizer_state(optimizer_state)
    meta = {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
            "config": getattr(model, "config", None), "metadata": metadata or {},
            "optimizer": opt_meta}
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save: metadata must be JSON-serializable: {e}") from None
    arrays = dict(model.state_dict())
    reserved = [k for k in arrays if k == META_KEY or k.startswith(OPTIMIZER_PREFIX)]
    if reserved:
        raise ValueError(f"save: parameter names {reserved} are reserved by the format")
    arrays.update(opt_arrays)
    arrays[META_KEY] = np.array(meta_text)
    target = _writable_target(Path(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(path)


def _writable_target(path: Path) -> Path:
    """The file to replace: a symlink's target; refused if it exists read-only."""
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise CheckpointError(f"{path}: is a directory; give a file name")
    if target.exists():
        mode = target.stat().st_mode
        if not stat.S_ISREG(mode):
            raise CheckpointError(f"{path}: exists and is not a regular file")
        # Checked by the mode bits too: as root, os.access says yes to everything.
        if not mode & 0o222 or not os.access(target, os.W_OK):
            raise PermissionError(f"{path}: the existing checkpoint is read-only; it was not "
                                  f"replaced (make it writable or save elsewhere)")
    if not os.access(target.parent, os.W_OK):
        raise PermissionError(f"{path}: cannot write in the directory {target.parent}")
    return target


def _file_mode(target: Path) -> int:
    """An existing file's permissions, or 0o666 less the umask for a new one."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _split_optimizer_state(state: dict[str, Any] | None) -> tuple[Any, dict[str, np.ndarray]]:
    """The JSON part (arrays replaced by the names of their npz members) and the arrays."""
    if state is None:
        return None, {}
    arrays: dict[str, np.ndarray] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for i, entry in state.get("state", {}).items():
        per_param[str(int(i))] = {}
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                member = f"{OPTIMIZER_PREFIX}{int(i)}/{key}"
                arrays[member] = value
                per_param[str(int(i))][key] = {"array": member}
            else:
                per_param[str(int(i))][key] = value
    return {**{k: v for k, v in state.items() if k != "state"}, "state": per_param}, arrays


# --- reading -------------------------------------------------------------------------------

def _regular_file(path: Path) -> int:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not stat.S_ISREG(info.st_mode):
        raise CheckpointError(f"{path}: is not a regular file (a FIFO, socket or device)")
    return info.st_size


def _read_arrays(path: Path, size: int) -> dict[str, np.ndarray]:
    """Every member, after checking the directory and every header against the limits."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            declared = sum(i.file_size for i in infos)
            if declared > MAX_EXPANSION * size + SLACK:
                raise CheckpointError(f"{path}: its members declare {declared} bytes, more "
                                      f"than {MAX_EXPANSION}x the {size}-byte file")
            for info in infos:
                if not info.filename.endswith(".npy"):
                    raise CheckpointError(f"{path}: unexpected member {info.filename!r}")
                with zf.open(info) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise CheckpointError(f"{path}: {info.filename}: unsupported .npy "
                                              f"version {version}")
                if dtype.hasobject:
                    raise CheckpointError(f"{path}: {info.filename} holds Python objects")
                nbytes = math.prod(shape) * dtype.itemsize     # Python ints: no overflow
                if nbytes > info.file_size:
                    raise CheckpointError(f"{path}: {info.filename} declares shape {shape} "
                                          f"({nbytes} bytes) in a {info.file_size}-byte member")
            arrays = {}
            for info in infos:
                with zf.open(info) as f:
                    arrays[info.filename[:-4]] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable handgrad checkpoint ({e})") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file (not applied to anything yet)."""
    path = Path(path)
    arrays = _read_arrays(path, _regular_file(path))
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a handgrad checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported format "
                              f"{meta.get('format') if isinstance(meta, dict) else meta!r}")
    opt_arrays = {k: arrays.pop(k) for k in list(arrays) if k.startswith(OPTIMIZER_PREFIX)}
    optimizer_state = _join_optimizer_state(path, meta.get("optimizer"), opt_arrays)
    for name, a in arrays.items():
        if a.dtype.kind not in "iuf":
            raise CheckpointError(f"{path}: parameter {name} holds {a.dtype} values")
    return Checkpoint(meta, arrays, optimizer_state, path)


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and the parameter arrays of a checkpoint file."""
    ck = read_checkpoint(path)
    return ck.meta, ck.params


def _join_optimizer_state(path: Path, meta: Any, arrays: dict[str, np.ndarray]) -> dict[str, Any] | None:
    if meta is None:
        if arrays:
            raise CheckpointError(f"{path}: optimizer arrays without optimizer metadata")
        return None
    try:
        state = {}
        for i, entry in meta["state"].items():
            state[int(i)] = {key: arrays.pop(value["array"]) if isinstance(value, dict) else value
                             for key, value in entry.items()}
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: corrupt optimizer state ({e!r})") from None
    if arrays:
        raise CheckpointError(f"{path}: optimizer arrays {sorted(arrays)} that nothing refers to")
    return {**meta, "state": state}


def _expected_mlp_shapes(path: Path, config: Any) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes an MLP config implies (computed, nothing built)."""
    if not isinstance(config, dict) or not set(config) <= MLP_CONFIG:
        raise CheckpointError(f"{path}: invalid MLP config {config!r}")
    sizes, activation = config.get("sizes"), config.get("activation")
    dropout, bias = config.get("dropout", 0.0), config.get("bias", True)
    ok = isinstance(sizes, list) and len(sizes) >= 2 and all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes) \
        and activation in ACTIVATIONS and isinstance(dropout, (int, float)) \
        and 0 <= dropout < 1 and isinstance(bias, bool) \
        and (config.get("init") is None or config.get("init") in INITIALIZERS)
    try:
        ok = ok and np.dtype(config.get("dtype", "float32")).kind == "f"
    except TypeError:
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: invalid MLP config {config!r}")
    shapes: dict[str, tuple[int, ...]] = {}
    index = 0
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        shapes[f"layers.{index}.weight"] = (n_in, n_out)
        if bias:
            shapes[f"layers.{index}.bias"] = (n_out,)
        index += 1
        if j < len(sizes) - 2:
            index += 2 if dropout else 1          # the activation, and dropout if any
    return shapes


def _build(ck: Checkpoint) -> Module:
    """Rebuild the model the file describes, once its config fits the stored arrays."""
    meta, path = ck.meta, ck.path
    cls = BUILDERS.get(meta.get("class"))
    if cls is None or meta.get("config") is None:
        raise CheckpointError(f"{path}: a {meta.get('class')} cannot be rebuilt from the file; "
                              f"create the model and call load(path, model)")
    expected = _expected_mlp_shapes(path, meta["config"])
    stored = {k: v.shape for k, v in ck.params.items()}
    if stored != expected:
        raise CheckpointError(f"{path}: the config {meta['config']} implies parameters "
                              f"{expected}, but the file holds {stored}")
    return cls(**meta["config"])


def load(path: str | os.PathLike, model: Module | None = None, optimizer: Any = None,
         check_finite: bool = False) -> Module:
    """Load a checkpoint. Without ``model``, rebuild it from the saved architecture (MLP);
    with ``model``, load the parameters into it (its architecture must match). With
    ``optimizer``, also restore its state from the file. Everything is validated before
    anything changes; ``check_finite`` also refuses NaN and Inf parameters."""
    ck = read_checkpoint(path)
    meta = ck.meta
    if model is None:
        model = _build(ck)
    elif meta.get("config") is not None and getattr(model, "config", None) not in (None, meta["config"]):
        raise CheckpointError(f"{path}: saved architecture {meta['class']}{meta['config']} does "
                              f"not match the model {type(model).__name__}{model.config}")
    try:
        model.check_state_dict(ck.params, check_finite=check_finite)   # changes nothing
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    if optimizer is not None:
        if ck.optimizer_state is None:
            raise CheckpointError(f"{path}: holds no optimizer state")
        try:
            optimizer.load_state_dict(ck.optimizer_state)
        except (KeyError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: optimizer state: {e}") from None
    model.load_state_dict(ck.params, check_finite=check_finite)       # checked above
    object.__setattr__(model, "checkpoint_metadata", meta.get("metadata", {}))
    return model
