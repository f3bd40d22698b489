"""Checkpoints: a model's parameters and architecture (and, optionally, its optimizer's
state) in one ``.npz`` file.

The file holds one array per parameter (by its dotted name), one per array of optimizer
state (``__optimizer__/<parameter index>/<name>``) and ``__handgrad__``, a JSON string with
the architecture (class and constructor config), the rest of the optimizer state and any
metadata you add. Every file is treated as untrusted:

* it must be a regular file (a FIFO or a device would block or never end);
* the zip directory is checked first: all members together at most ``MAX_EXPANSION``
  times the file (+1 MiB), so a small file can never make a load allocate much more than
  its own size;
* every member is read whole, so zipfile verifies its CRC-32 (a member read only up to
  what a damaged header declares would never reach the check); its .npy header must
  declare plain numbers (no objects: loading never unpickles) and exactly as many bytes
  as the member holds. Every failure of the container or header parsers (including
  NotImplementedError for an unknown compression method, RuntimeError for an encryption
  flag, SyntaxError and tokenize errors from the header) is a CheckpointError naming the
  file: every single-bit flip of a file either loads the same data or is refused;
* the JSON entry is data: its nesting is measured before it is parsed (at most
  ``MAX_JSON_DEPTH``), its integers while it is (at most ``MAX_INT_DIGITS`` digits); the
  type of every field is checked, and so are the fields handgrad train records
  (``validate_metadata``, ``run_metadata``), including that a run's architecture is the
  one the file stores. ``save`` refuses metadata that ``load`` would refuse, or would not
  give back as it was (a tuple, a dict key that is not a string);
* an MLP config is checked against the stored arrays before any layer is built; every
  array, the optimizer state, and that every parameter's memory can be written, are
  checked before any parameter changes, and the optimizer is restored only once the
  parameters are written (a failed load leaves the model and the optimizer as they were);
* no value changes on the way in: an array stored in another dtype than its parameter's is
  converted only when the conversion is exact, and ``save`` refuses an MLP whose
  parameters are not in its config's dtype (the file would be rebuilt in another one).

Saving writes a temporary file beside the target and renames it over it, so a save that
fails halfway leaves the previous checkpoint intact. The new file gets the usual
permissions (0o666 minus the umask); a symlink is followed (its target is replaced, the
link stays); a read-only checkpoint is refused, not replaced.
"""
from __future__ import annotations

import io
import json
import lzma
import math
import os
import re
import stat
import struct
import tempfile
import tokenize
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import UserInputError
from .files import regular_file_size
from .init import INITIALIZERS
from .init import default_rng as init_default_rng
from .layers import ACTIVATIONS, MLP, Dropout, Linear, _Activation
from .module import Module
from .run_metadata import check_metadata

FORMAT = "handgrad-checkpoint"
VERSION = 1
META_KEY = "__handgrad__"
OPTIMIZER_PREFIX = "__optimizer__/"
# np.savez stores members uncompressed: what a member declares is about what the file
# holds. 4x leaves room for compressed files written by other tools; beyond that a file
# is asking for memory it does not contain.
MAX_EXPANSION = 4
SLACK = 1 << 20
# The metadata is JSON from an untrusted file: nesting and integers are bounded before any
# field is used (the deepest real entry nests 7 levels; generator states have 39 digits).
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 100
_DEPTH_STEP = np.zeros(256, np.int64)                    # +1 for [ and {, -1 for ] and }
_DEPTH_STEP[list(b"[{")], _DEPTH_STEP[list(b"]}")] = 1, -1
# What the zip container and .npy header parsers raise on damaged input: a bad CRC, broken
# deflate/bzip2/lzma data, truncation, a compression method or encryption flag zipfile does
# not support (NotImplementedError, RuntimeError), a header that is not a Python literal
# (SyntaxError, tokenize.TokenError), a field that does not unpack (struct.error).
PARSER_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError,
                 ValueError, OSError, EOFError, KeyError, IndexError, OverflowError,
                 struct.error, NotImplementedError, RuntimeError, SyntaxError,
                 tokenize.TokenError)

MLP_CONFIG = {"sizes", "activation", "dropout", "init", "bias", "dtype"}
# Models that a checkpoint can rebuild from their config alone.
BUILDERS: dict[str, type[Module]] = {"MLP": MLP}


class CheckpointError(UserInputError, ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds, validated."""

    meta: dict[str, Any]                               # format, class, config, metadata
    params: dict[str, np.ndarray]                      # by dotted name
    optimizer_state: dict[str, Any] | None = None      # Optimizer.state_dict() structure
    path: Path = field(default_factory=Path)


# --- writing -------------------------------------------------------------------------------

def _class_name(model: Module) -> str:
    """The model's class as the file names it: a class load can rebuild by its name alone
    (``BUILDERS``), else its module and name (``__main__.MLP``): a class of the user's own
    called MLP, stored as "MLP", was read as handgrad's MLP and refused at load."""
    cls = type(model)
    if BUILDERS.get(cls.__name__) is cls:
        return cls.__name__
    return f"{cls.__module__}.{cls.__qualname__}"


def save(model: Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
         optimizer: Any = None, optimizer_state: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (parameters + architecture + ``metadata``, and the state of
    ``optimizer`` or the ``optimizer_state`` dict) to ``path`` atomically. ``metadata`` is
    JSON: dicts with string keys, lists, strings, numbers, booleans and None (anything
    ``load`` would not give back as it was is an error before anything is written)."""
    if optimizer is not None:
        optimizer_state = optimizer.state_dict()
    opt_meta, opt_arrays = _split_optimizer_state(optimizer_state)
    meta = {"format": FORMAT, "version": VERSION, "class": _class_name(model),
            "config": getattr(model, "config", None), "metadata": metadata or {},
            "optimizer": opt_meta}
    try:
        check_metadata(meta["metadata"], meta["config"] if type(model) in BUILDERS.values() else None)
    except ValueError as e:
        raise ValueError(f"save: {e} (load would refuse the file)") from None
    try:
        meta_text = json.dumps(meta)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save: metadata must be JSON-serializable: {e}") from None
    try:
        _bounded_json(meta_text)
    except ValueError as e:
        raise ValueError(f"save: metadata: {e} (load would refuse the file)") from None
    _check_round_trip(meta["metadata"])
    arrays = dict(model.state_dict())
    if type(model) in BUILDERS.values():
        try:                           # the check load makes, before anything is written
            _check_config_fits(Path(path), meta["config"], arrays)
        except CheckpointError as e:
            raise ValueError(f"save: {e} (load would refuse the file); nothing was "
                             f"written") from None
        _check_dtypes_match_config(model, meta["config"])
        _check_modules_match_config(model, meta["config"])
    reserved = [k for k in arrays if k == META_KEY or k.startswith(OPTIMIZER_PREFIX)]
    if reserved:
        raise ValueError(f"save: parameter names {reserved} are reserved by the format")
    arrays.update(opt_arrays)
    arrays[META_KEY] = np.array(meta_text)
    target = _writable_target(Path(path))
    # The archive is built in memory and then written: a write that fails (a full disk)
    # then fails in one plain write, not inside numpy's half-written ZipFile, which on
    # Python 3.10 later prints "Exception ignored ... seek of closed file" when collected.
    archive = io.BytesIO()
    _write_npz(archive, arrays)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(archive.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode(target))
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return Path(path)


def _write_npz(archive: io.BytesIO, arrays: dict[str, np.ndarray]) -> None:
    """What ``np.savez(archive, **arrays)`` writes (one ``name.npy`` member per array, not
    compressed), without passing the names as keyword arguments: a parameter named
    ``file`` or ``allow_pickle`` would be taken as savez's own argument (``allow_pickle``
    silently left out of the file)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, array in arrays.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _settings(module: Module) -> Any:
    """What a module of an MLP computes with, besides its parameters' values."""
    if isinstance(module, Linear):
        return module.bias is not None
    if isinstance(module, _Activation):
        return module.kwargs
    if isinstance(module, Dropout):
        return module.p
    return None


def _check_modules_match_config(model: Module, config: dict[str, Any]) -> None:
    """A model rebuilt from its config (an MLP) must still be what its config builds:
    ``load`` would rebuild the config's modules, so an activation's setting changed since
    (``negative_slope``, ``approximate``, a dropout's ``p``) or a layer replaced would come
    back as it was built, computing something else. Checked on an MLP of the config's
    settings with one unit per layer; refused before anything is written."""
    reference = MLP([1] * len(config["sizes"]), activation=config["activation"],
                    dropout=config["dropout"], bias=config["bias"], dtype=config["dtype"], seed=0)
    built = [(name, type(m), _settings(m)) for name, m in reference.named_modules()]
    now = [(name, type(m), _settings(m)) for name, m in model.named_modules()]
    if now == built:
        return
    name = next((a[0] for a, b in zip(now, built, strict=False) if a[1:] != b[1:]), None)
    if name is None:                                  # one has modules the other has not
        longer = now if len(now) > len(built) else built
        name = longer[min(len(now), len(built))][0]
    shown = name or "the model"
    raise ValueError(f"save: module {shown} is not what the MLP's config builds "
                     f"({config['activation']}, dropout {config['dropout']}): load rebuilds "
                     f"the model from its config, so it would come back as it was built, "
                     f"computing something else. Restore the module, or keep the "
                     f"parameters alone (np.savez(path, **model.state_dict())) and load them "
                     f"into a model you build (load_state_dict); nothing was written")


def _check_dtypes_match_config(model: Module, config: Any) -> None:
    """A model rebuilt from its config (an MLP) must hold its parameters in the config's
    dtype: a parameter given another dtype (``p.data = a float64 array`` in a float32 MLP)
    would be stored as it is but rebuilt in the config's dtype, which ``load`` refuses
    when the values would change. Refused before anything is written."""
    dtype = config.get("dtype") if isinstance(config, dict) else None
    if not isinstance(dtype, str):
        return                         # the config check refuses it, naming the config
    for name, p in model.named_parameters():
        if p.dtype.name != dtype:
            raise ValueError(f"save: parameter {name} holds {p.dtype.name} values but the "
                             f"model's config says dtype {dtype}: load would rebuild it in "
                             f"{dtype}, not as it is. Convert it "
                             f"(p.data = p.data.astype({dtype!r})) or build the model with "
                             f"dtype={p.dtype.name!r}; nothing was written")


def _check_round_trip(metadata: Any) -> None:
    """Refuse the metadata JSON would not give back as it was: a tuple comes back a list,
    and a dict key that is not a string comes back a string (``1`` as ``'1'``, losing a
    value beside a ``'1'`` key; ``True`` as ``'true'``). ``load`` returns what ``save`` was
    given, or ``save`` fails (TypeError naming where). Called once ``json.dumps`` succeeded
    and the nesting was bounded (no cycles, at most MAX_JSON_DEPTH deep); walked with a
    stack, not recursion."""
    stack: list[tuple[str, Any]] = [("metadata", metadata)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, tuple):
            raise TypeError(f"save: {where} is a {type(value).__name__}, which load would "
                            f"give back as a list; save a list")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    as_text = next(iter(json.loads(json.dumps({key: None}))))
                    raise TypeError(f"save: {where} has the {type(key).__name__} key "
                                    f"{_short(key)}, which load would give back as the string "
                                    f"{_short(as_text)}; use string keys")
                stack.append((f"{where}[{_short(key)}]", item))
        elif isinstance(value, list):
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))


def _short(value: Any) -> str:
    """A repr of at most 60 characters (a key may be any length)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    if not target.parent.exists():
        raise FileNotFoundError(f"{path}: the directory {target.parent} does not exist "
                                f"(create it first)")
    if not target.parent.is_dir():
        raise NotADirectoryError(f"{path}: {target.parent} is not a directory")
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
    return regular_file_size(path, "checkpoint file", CheckpointError, missing=FileNotFoundError)


def _read_arrays(path: Path, size: int) -> dict[str, np.ndarray]:
    """Every member, after checking the directory against the limits; each member is read
    whole, so zipfile verifies its CRC-32, and its header is checked against its size."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            _check_directory(path, infos, size)
            return {info.filename[:-4]: _read_member(path, zf, info) for info in infos}
    except CheckpointError:
        raise
    except PARSER_ERRORS as e:
        raise CheckpointError(f"{path}: not a readable handgrad checkpoint "
                              f"({type(e).__name__}: {e})") from None


def _check_directory(path: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    declared = sum(i.file_size for i in infos)
    if declared > MAX_EXPANSION * size + SLACK:
        raise CheckpointError(f"{path}: its members declare {declared} bytes, more "
                              f"than {MAX_EXPANSION}x the {size}-byte file")
    names = [info.filename for info in infos]
    for name in names:
        if not name.endswith(".npy"):
            raise CheckpointError(f"{path}: unexpected member {name!r}")
    if len(set(names)) != len(names):
        raise CheckpointError(f"{path}: duplicate members "
                              f"{sorted({n for n in names if names.count(n) > 1})}")


def _read_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One .npy member: read whole (zipfile checks the CRC-32 at its end), header parsed and
    checked (dtype, shape, exactly as many data bytes as it declares), values copied out."""
    raw = zf.read(info)
    f = io.BytesIO(raw)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise CheckpointError(f"{path}: {info.filename}: unsupported .npy version {version}")
    name = info.filename[:-4]
    allowed = "U" if name == META_KEY else "biuf"
    if dtype.kind not in allowed or dtype.hasobject or dtype.shape or dtype.itemsize == 0:
        raise CheckpointError(f"{path}: {info.filename} holds {dtype} values")
    if name == META_KEY and shape != ():
        raise CheckpointError(f"{path}: {info.filename} has shape {shape}, not a single string")
    count = math.prod(shape)                                 # Python ints: no overflow
    offset = f.tell()
    if count * dtype.itemsize != len(raw) - offset:
        raise CheckpointError(f"{path}: {info.filename} declares shape {shape} "
                              f"({count * dtype.itemsize} bytes) but holds "
                              f"{len(raw) - offset} bytes of data")
    values = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return values.reshape(shape, order="F" if fortran_order else "C").copy()


def _bounded_int(text: str) -> int:
    """JSON integers: at most MAX_INT_DIGITS digits."""
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most "
                         f"{MAX_INT_DIGITS})")
    return int(text)


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def _json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings left out)."""
    structure = np.frombuffer(_JSON_STRING.sub("", text).encode("utf-8", "replace"), np.uint8)
    return int(np.cumsum(_DEPTH_STEP[structure]).max(initial=0))


def _bounded_json(text: str) -> Any:
    """``text`` parsed, once its nesting is known to be at most MAX_JSON_DEPTH; integers of
    more than MAX_INT_DIGITS digits are refused. ValueError for anything else."""
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON nested {depth} deep, at most {MAX_JSON_DEPTH}")
    return json.loads(text, parse_int=_bounded_int)


def _parse_meta(path: Path, value: np.ndarray) -> dict[str, Any]:
    """The JSON entry, parsed with bounded nesting and integers, its fields type-checked."""
    try:
        meta = _bounded_json(str(value[()]))
    except (ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        shown = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: unsupported format {shown!r}")
    fields = {"format", "version", "class", "config", "metadata", "optimizer"}
    if set(meta) != fields:
        raise CheckpointError(f"{path}: metadata fields {sorted(meta)}, expected {sorted(fields)}")
    for key, types in (("class", str), ("config", (dict, type(None))), ("metadata", dict),
                       ("optimizer", (dict, type(None)))):
        if not isinstance(meta[key], types):
            raise CheckpointError(f"{path}: the metadata's {key!r} must be "
                                  f"{'a string' if types is str else 'an object'}, got "
                                  f"{type(meta[key]).__name__}")
    return meta


def validate_metadata(path: str | os.PathLike, metadata: Any, config: Any = None) -> None:
    """Check the fields handgrad train writes in a checkpoint's metadata (dataset, seed, run,
    test, interrupted, resume: types and ranges), and that a run's architecture is the MLP
    ``config`` the file stores. ``load`` and ``read_checkpoint`` call it; raises a
    CheckpointError naming ``path`` and the field."""
    try:
        check_metadata(metadata, config)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate a checkpoint file (not applied to anything yet): every member's
    CRC, header and size; the metadata's types; an MLP config against the stored arrays;
    the fields handgrad train writes (validate_metadata)."""
    path = Path(path)
    arrays = _read_arrays(path, _regular_file(path))
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a handgrad checkpoint (no {META_KEY} entry)")
    meta = _parse_meta(path, arrays.pop(META_KEY))
    opt_arrays = {k: arrays.pop(k) for k in list(arrays) if k.startswith(OPTIMIZER_PREFIX)}
    optimizer_state = _join_optimizer_state(path, meta["optimizer"], opt_arrays)
    for name, a in arrays.items():
        if a.dtype.kind not in "iuf":
            raise CheckpointError(f"{path}: parameter {name} holds {a.dtype} values")
    mlp_config = None
    if meta["class"] in BUILDERS and meta["config"] is not None:
        _check_config_fits(path, meta["config"], arrays)
        mlp_config = meta["config"]
    validate_metadata(path, meta["metadata"], mlp_config)
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


FLOAT_DTYPES = {np.dtype(t).name for t in (np.float16, np.float32, np.float64, np.longdouble)}


def _check_mlp_config(path: Path, config: dict[str, Any]) -> None:
    """An MLP config as data: known keys, each of the type MLP takes (nothing hashed or
    parsed before its type is known)."""
    sizes, activation = config.get("sizes"), config.get("activation", "relu")
    dropout, bias = config.get("dropout", 0.0), config.get("bias", True)
    init, dtype = config.get("init"), config.get("dtype", "float32")
    ok = set(config) <= MLP_CONFIG and isinstance(sizes, list) and len(sizes) >= 2 \
        and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes) \
        and isinstance(activation, str) and activation in ACTIVATIONS \
        and isinstance(dropout, (int, float)) and not isinstance(dropout, bool) \
        and 0 <= dropout < 1 and isinstance(bias, bool) \
        and (init is None or isinstance(init, str) and init in INITIALIZERS) \
        and isinstance(dtype, str) and dtype in FLOAT_DTYPES
    if not ok:
        shown = repr(config)
        raise CheckpointError(f"{path}: invalid MLP config "
                              f"{shown if len(shown) <= 200 else shown[:197] + '...'}")


def _expected_mlp_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The parameter names and shapes of a checked MLP config (computed, nothing built)."""
    sizes, dropout, bias = config["sizes"], config.get("dropout", 0.0), config.get("bias", True)
    shapes: dict[str, tuple[int, ...]] = {}
    index = 0
    for j, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=False)):
        shapes[f"layers.{index}.weight"] = (n_in, n_out)
        if bias:
            shapes[f"layers.{index}.bias"] = (n_out,)
        index += 1
        if j < len(sizes) - 2:
            index += 2 if dropout else 1          # the activation, and dropout if any
    return shapes


def _check_config_fits(path: Path, config: Any, arrays: dict[str, np.ndarray]) -> None:
    """The MLP config is valid and implies exactly the stored arrays (so it asks for no
    more memory than the file holds)."""
    _check_mlp_config(path, config)
    expected = _expected_mlp_shapes(config)
    stored = {k: v.shape for k, v in arrays.items()}
    if stored != expected:
        raise CheckpointError(f"{path}: the config {config} implies parameters "
                              f"{expected}, but the file holds {stored}")


def _build(ck: Checkpoint) -> Module:
    """Rebuild the model the file describes (its config was checked against the arrays)."""
    meta, path = ck.meta, ck.path
    cls = BUILDERS.get(meta["class"])
    if cls is None or meta["config"] is None:
        raise CheckpointError(f"{path}: a {meta['class']} cannot be rebuilt from the file; "
                              f"create the model and call load(path, model)")
    # The weights are the file's: the ones the constructor draws are thrown away, so they
    # come from a generator of their own, and the global one (nn.init.manual_seed) is left
    # where it was. Dropout draws from the global one, as in a model built without a seed.
    build: Any = cls                     # MLP: its config and a generator
    model: Module = build(**meta["config"], rng=np.random.default_rng(0))
    for m in model.modules():
        if isinstance(m, Dropout):
            m.rng = init_default_rng()
    return model


def _architecture(config: dict[str, Any] | None) -> dict[str, Any] | None:
    """An MLP config without its initializer: the weights are the file's, however the
    model's were first drawn (he, kaiming or a callable, stored as None)."""
    return None if config is None else {k: v for k, v in config.items() if k != "init"}


def metadata_of(model: Module) -> dict[str, Any]:
    """The metadata saved with the checkpoint ``model`` was loaded from by ``load`` (empty
    for a model that was not loaded from a file)."""
    meta = model.__dict__.get("checkpoint_metadata")
    return meta if isinstance(meta, dict) else {}


def _refuse_detached_optimizer(path: str | os.PathLike, optimizer: Any) -> None:
    """``load(path, optimizer=opt)`` without ``model``: a rebuilt model has new parameters,
    and ``opt`` would keep updating the ones it was made with, so training the returned
    model with it would never change it, silently. Refused before the file is read (an
    optimizer cannot be moved to other parameters: its state is kept per parameter)."""
    raise ValueError(f"load({str(path)!r}, optimizer=...): optimizer= needs model=, the model "
                     f"{type(optimizer).__name__} updates: without model= the model is rebuilt "
                     f"from the file with new parameters, which the optimizer would never "
                     f"update. Call nn.load(path, model, optimizer=opt); nothing was loaded")


def _refuse_foreign_optimizer(path: str | os.PathLike, model: Module, optimizer: Any) -> None:
    """``load(path, model, optimizer=opt)`` where ``opt`` updates parameters that are not
    ``model``'s (by identity): training the loaded model with it would leave it as it
    was, silently (the case ``_refuse_detached_optimizer`` refuses without ``model``).
    Refused before the file is read. An optimizer over part of the model (frozen layers,
    groups added later with ``add_param_group``) is the model's."""
    mine = {id(p) for p in model.parameters()}
    for i, p in enumerate(getattr(optimizer, "params", [])):
        if id(p) not in mine:
            raise ValueError(f"load({str(path)!r}, model, optimizer=...): the "
                             f"{type(optimizer).__name__} updates parameters that are not the "
                             f"model's (its parameter {i}, of shape {getattr(p, 'shape', '?')}, "
                             f"is none of the {type(model).__name__}'s), so training the loaded "
                             f"model with it would never change it. Pass the model the "
                             f"optimizer was made for, or make the optimizer from this model; "
                             f"nothing was loaded")


def load(path: str | os.PathLike, model: Module | None = None, optimizer: Any = None,
         check_finite: bool = False) -> Module:
    """Load a checkpoint. Without ``model``, rebuild it from the saved architecture (MLP);
    with ``model``, load the parameters into it (its architecture must match). With
    ``optimizer``, also restore its state from the file; ``model`` must then be the model
    the optimizer updates (every parameter of the optimizer one of the model's, or a
    ValueError before the file is read). Everything is validated before anything changes;
    ``check_finite`` also refuses NaN and Inf parameters and optimizer state. Loading never changes a saved
    value: an array stored in another dtype than its parameter's is converted only when
    every value survives the conversion exactly, and is a CheckpointError otherwise."""
    if model is None and optimizer is not None:
        _refuse_detached_optimizer(path, optimizer)
    if model is not None and optimizer is not None:
        _refuse_foreign_optimizer(path, model, optimizer)
    ck = read_checkpoint(path)
    meta = ck.meta
    if model is None:
        model = _build(ck)
    elif meta.get("config") is not None and _architecture(getattr(model, "config", None)) \
            not in (None, _architecture(meta["config"])):
        raise CheckpointError(f"{path}: saved architecture {meta['class']}{meta['config']} does "
                              f"not match the model {type(model).__name__}"
                              f"{getattr(model, 'config', None)}")
    try:
        model.check_state_dict(ck.params, check_finite=check_finite)   # changes nothing
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    _check_exact_conversion(path, model, ck.params)
    restore_optimizer = None if optimizer is None else _prepare_optimizer(ck, optimizer, check_finite)
    model.load_state_dict(ck.params, check_finite=check_finite)       # checked above
    if restore_optimizer is not None:
        restore_optimizer()            # last: a failed write above leaves it as it was
    object.__setattr__(model, "checkpoint_metadata", meta["metadata"])
    return model


def _check_exact_conversion(path: str | os.PathLike, model: Module,
                            arrays: dict[str, np.ndarray]) -> None:
    """An array stored in another dtype than its parameter's is converted only when the
    conversion keeps every value (float32 weights into a float64 parameter); one that would
    change a value (float64 weights rounded to float32) is a CheckpointError naming the
    parameter and both dtypes, before anything changes: a load never alters the saved
    values silently."""
    params = dict(model.named_parameters())
    for name, value in arrays.items():
        p = params.get(name)
        if p is None or value.dtype == p.dtype:
            continue
        if not _survives(value, p.dtype):
            raise CheckpointError(f"{path}: {name} is stored as {value.dtype.name} but the "
                                  f"parameter is {p.dtype.name}, which cannot hold its values "
                                  f"exactly (converting would change them); load it into a "
                                  f"model whose parameter is {value.dtype.name}. Nothing was "
                                  f"loaded")


def _survives(value: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every value of ``value`` comes back unchanged from ``dtype`` (NaN as NaN)."""
    with np.errstate(all="ignore"):
        back = value.astype(dtype).astype(value.dtype)
    return bool(np.array_equal(back, value, equal_nan=value.dtype.kind == "f"))


def _check_exact_state(ck: Checkpoint, optimizer: Any) -> None:
    """The optimizer's state arrays, as the parameters (``_check_exact_conversion``): one
    stored in another dtype than its parameter's only when every value survives the
    conversion (a float32 Adam ``v`` of 1e5 became Inf in a float16 model)."""
    params = optimizer.params
    for i, entry in (ck.optimizer_state or {}).get("state", {}).items():
        k = int(i)
        if not 0 <= k < len(params) or not isinstance(entry, dict):
            continue                                  # prepare_state_dict says what is wrong
        dtype = params[k].dtype
        for key, value in entry.items():
            if not isinstance(value, np.ndarray) or value.dtype == dtype or value.dtype.kind != "f":
                continue
            if not _survives(value, dtype):
                raise CheckpointError(f"{ck.path}: optimizer state: parameter {k}'s {key!r} is "
                                      f"stored as {value.dtype.name} but the parameter is "
                                      f"{dtype.name}, which cannot hold its values exactly "
                                      f"(converting would change them). Nothing was loaded")


def _prepare_optimizer(ck: Checkpoint, optimizer: Any, check_finite: bool = False) -> Callable[[], None]:
    """The optimizer state of the file, checked against ``optimizer`` without changing it
    (with ``check_finite``, no NaN or Inf in its arrays: Adam's ``v`` holding one makes
    the next step write NaN into the weights): the function that restores it. ``load``
    calls it only after the model's parameters are written, so a load that fails leaves
    the optimizer as it was."""
    if ck.optimizer_state is None:
        raise CheckpointError(f"{ck.path}: holds no optimizer state")
    if check_finite:
        for i, entry in ck.optimizer_state.get("state", {}).items():
            for key, value in entry.items():
                if isinstance(value, np.ndarray) and value.dtype.kind in "fc" \
                        and not np.isfinite(value).all():
                    raise CheckpointError(f"{ck.path}: optimizer state: parameter {i}'s "
                                          f"{key!r} holds NaN or Inf (check_finite=True)")
    _check_exact_state(ck, optimizer)
    try:
        restore: Callable[[], None] = optimizer.prepare_state_dict(ck.optimizer_state)
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{ck.path}: optimizer state: {e}") from None
    return restore
