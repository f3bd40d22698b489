"""Checkpoints: a model's parameters and architecture in one ``.npz`` file.

The file holds one array per parameter (by its dotted name) and ``__handgrad__``, a JSON
string with the architecture (class and constructor config) and any metadata you add.
It is read with ``allow_pickle=False``: loading a checkpoint never runs code. Saving
writes a temporary file in the same directory and renames it over the target, so a save
that fails halfway leaves the previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .layers import MLP
from .module import Module

FORMAT = "handgrad-checkpoint"
VERSION = 1
META_KEY = "__handgrad__"

# Models that a checkpoint can rebuild from their config alone.
BUILDERS: dict[str, type[Module]] = {"MLP": MLP}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def save(model: Module, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (parameters + architecture + ``metadata``) to ``path`` atomically."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, "class": type(model).__name__,
            "config": getattr(model, "config", None), "metadata": metadata or {}}
    try:
        meta_text = json.dumps(meta)
    except TypeError as e:
        raise TypeError(f"save: metadata must be JSON-serializable: {e}") from None
    arrays = dict(model.state_dict())
    if META_KEY in arrays:
        raise ValueError(f"save: a parameter is named {META_KEY!r}, which the format reserves")
    arrays[META_KEY] = np.array(meta_text)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The metadata and the parameter arrays of a checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{path}: not a readable handgrad checkpoint ({e})") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not a handgrad checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: corrupt metadata ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r} "
                              f"version {meta.get('version')!r}")
    return meta, arrays


def load(path: str | os.PathLike, model: Module | None = None) -> Module:
    """Load a checkpoint. Without ``model``, rebuild it from the saved architecture (MLP);
    with ``model``, load the parameters into it (its architecture must match)."""
    meta, arrays = read(path)
    if model is None:
        cls = BUILDERS.get(meta["class"])
        if cls is None or meta.get("config") is None:
            raise CheckpointError(f"{path}: a {meta['class']} cannot be rebuilt from the file; "
                                  f"create the model and call load(path, model)")
        model = cls(**meta["config"])
    elif meta.get("config") is not None and getattr(model, "config", None) not in (None, meta["config"]):
        raise CheckpointError(f"{path}: saved architecture {meta['class']}{meta['config']} does "
                              f"not match the model {type(model).__name__}{model.config}")
    try:
        model.load_state_dict(arrays)
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{path}: {e}") from None
    object.__setattr__(model, "checkpoint_metadata", meta.get("metadata", {}))
    return model
