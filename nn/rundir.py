"""The run directory of ``handgrad train --out DIR``: its files change together, as one unit.

A save writes every file of one epoch (``model.npz``, ``resume.npz``, ``history.json``, the
curves) under a staged name beside its final one (``.model.pending.npz``), flushed to disk,
then commits them by replacing ``run.json``, a manifest that names each file with its
SHA-256 and size, in one atomic rename. Only then are the staged files renamed into place.
Whatever stops the process (a kill, a full disk, a power cut after the flushes), the
directory holds either the previous epoch's files and manifest, or the new manifest with
each of its files either in place or still staged:

* ``verify`` (``--resume``) accepts the directory only if every file the manifest names
  is there, in place or staged, with exactly the fingerprint the manifest records;
* ``settle`` (the start of every save) finishes the renames of a committed save and
  removes the staged files of a save that never committed.

A directory without ``run.json`` (an older handgrad, or a first save that never committed)
is not resumed from.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import UserInputError
from .files import nearest_existing, probe_write

MANIFEST = "run.json"
FORMAT = "handgrad-run"
VERSION = 1
# Every file a save may write; nothing else in the directory is touched.
FILES = ("model.npz", "resume.npz", "history.json", "curves.png", "grad_norms.png")
MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 20


class RunDirError(UserInputError):
    """A run directory that cannot be written, or whose files do not form one saved epoch."""


def holds_files(directory: Path) -> bool:
    """Whether ``directory`` has a manifest or any file a save would write there, committed
    or staged (a run an older handgrad saved has no manifest; a model.npz may be the
    user's own)."""
    names = (MANIFEST, *FILES, *(staged(directory, name).name for name in FILES))
    return any(os.path.lexists(directory / name) for name in names)


def staged(directory: Path, name: str) -> Path:
    """Where a save writes ``name`` before the commit (same extension: savefig reads it)."""
    stem, dot, suffix = name.rpartition(".")
    return directory / f".{stem}.pending{dot}{suffix}"


# --- before training ----------------------------------------------------------------------

def check_writable(directory: Path, needed_bytes: int = 0, option: str = "--out",
                   files: tuple[str, ...] = FILES) -> None:
    """Everything about ``directory`` that a save needs, checked before any training: it is
    (or can be made) a writable directory, each file a save replaces is a writable regular
    file (a read-only one would be silently replaced by the rename), and the file system
    has at least ``needed_bytes`` free. Nothing is created: a directory that does not exist
    yet is made by the save (``make``), so a run that fails first leaves no empty folders."""
    if directory.exists() and not directory.is_dir():
        raise RunDirError(f"{option} {directory} is an existing file; give a directory")
    existing = nearest_existing(directory)
    if not existing.is_dir():
        raise RunDirError(f"{option} {directory}: cannot create the directory ({existing} is "
                          f"not a directory)")
    if existing != directory:
        _probe(existing, f"{option} {directory}: cannot create the directory")
        _check_free(existing, directory, needed_bytes, option)
        return
    for name in files:
        for path in (directory / name, staged(directory, name)):
            _check_replaceable(path, option)
    if files:
        _check_replaceable(directory / MANIFEST, option)
    _probe(directory, f"{option} {directory}: cannot write in the directory")
    _check_free(directory, directory, needed_bytes, option)


def make(directory: Path, option: str = "--out") -> None:
    """Create ``directory`` (and its parents) for the files about to be written."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"{option} {directory}: cannot create the directory "
                          f"({e.strerror or e})") from None


def _probe(folder: Path, failure: str) -> None:
    """A real write in ``folder`` (``files.probe_write``), or a RunDirError ``failure``."""
    try:
        probe_write(folder)
    except OSError as e:
        raise RunDirError(f"{failure} ({e.strerror or e})") from None


def _check_free(folder: Path, directory: Path, needed_bytes: int, option: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise RunDirError(f"{option} {directory}: the run's files need at least "
                          f"{_size(needed_bytes)}, but only {_size(free)} is free")


def _check_replaceable(path: Path, option: str) -> None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise RunDirError(f"{option}: cannot inspect {path} ({e.strerror or e})") from None
    if stat.S_ISLNK(info.st_mode):
        raise RunDirError(f"{option}: {path} is a symbolic link; the run's files are replaced "
                          f"together, so they must be regular files in {path.parent}")
    if not stat.S_ISREG(info.st_mode):
        raise RunDirError(f"{option}: {path} exists and is not a regular file")
    if not info.st_mode & 0o222:
        raise RunDirError(f"{option}: {path} is read-only; it was not replaced (make it "
                          f"writable or choose another {option})")


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


# --- fingerprints and the manifest ---------------------------------------------------------

def fingerprint(path: Path) -> dict[str, Any]:
    """The SHA-256 and size of a regular file's bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise RunDirError(f"{path}: is not a regular file")
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "bytes": size}


def _matches(path: Path, expected: dict[str, Any]) -> bool:
    """Whether ``path`` is a regular file holding exactly the fingerprinted bytes."""
    try:
        info = os.lstat(path)
        if not stat.S_ISREG(info.st_mode) or info.st_size != expected["bytes"]:
            return False
        return fingerprint(path) == expected
    except OSError:
        return False


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of ``directory``, validated; None if there is none."""
    path = directory / MANIFEST
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"{path}: cannot read ({e.strerror or e})") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_MANIFEST_BYTES:
        raise RunDirError(f"{path}: not a handgrad run manifest (not a small regular file)")
    try:
        manifest = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path}: not a readable run manifest ({e})") from None
    if not _valid(manifest):
        raise RunDirError(f"{path}: not a handgrad run manifest (format "
                          f"{manifest.get('format') if isinstance(manifest, dict) else None!r})")
    return manifest


def _valid(manifest: Any) -> bool:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or manifest.get("version") != VERSION:
        return False
    epochs, files = manifest.get("epochs_done"), manifest.get("files")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        return False
    if not isinstance(files, dict) or not set(files) <= set(FILES):
        return False
    return all(isinstance(e, dict) and set(e) == {"sha256", "bytes"}
               and isinstance(e["sha256"], str) and len(e["sha256"]) == 64
               and isinstance(e["bytes"], int) and not isinstance(e["bytes"], bool)
               and e["bytes"] >= 0 for e in files.values())


# --- resuming ----------------------------------------------------------------------------

def verify(directory: Path, required: tuple[str, ...] = ("resume.npz",),
           option: str = "--resume") -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest of the saved epoch in ``directory`` and, for each file it names, where
    its verified bytes are (in place, or staged by a save that committed but did not finish
    its renames). Anything else is a RunDirError naming the file."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise RunDirError(f"{option} {directory}: {what} (give the --out folder of the run)")
    manifest = read_manifest(directory)
    if manifest is None:
        raise RunDirError(f"{option} {directory}: no {MANIFEST}, so no complete epoch was saved "
                          f"there (a first save that was interrupted, or a directory not "
                          f"written by this version of handgrad train --out)")
    files = manifest["files"]
    missing = [name for name in required if name not in files]
    if missing:
        raise RunDirError(f"{option} {directory}: {MANIFEST} names no {missing[0]}")
    where: dict[str, Path] = {}
    for name, expected in files.items():
        for candidate in (directory / name, staged(directory, name)):
            if _matches(candidate, expected):
                where[name] = candidate
                break
        else:
            raise RunDirError(f"{option} {directory}: {name} is not the file saved with epoch "
                              f"{manifest['epochs_done']} ({MANIFEST} records other bytes); "
                              f"the directory mixes files of different saves")
    return manifest, where


# --- saving ------------------------------------------------------------------------------

def settle(directory: Path) -> None:
    """Bring ``directory`` to a clean state before a save: finish the renames of a committed
    save, remove the staged files of one that never committed. A directory whose files do
    not match its manifest is left as it is (the save that follows replaces them)."""
    try:
        manifest = read_manifest(directory)
    except RunDirError:
        manifest = None
    files = manifest["files"] if manifest is not None else {}
    for name in FILES:
        pending = staged(directory, name)
        if not pending.exists():
            continue
        if name in files and not _matches(directory / name, files[name]) \
                and _matches(pending, files[name]):
            os.replace(pending, directory / name)
        else:
            pending.unlink()
    _fsync_dir(directory)


def commit(directory: Path, writers: dict[str, Callable[[Path], Path | None]],
           epochs_done: int) -> list[Path]:
    """Write one epoch's files as a unit. ``writers[name](path)`` writes the file ``name``
    to ``path`` (or returns None when it has nothing to write). Returns the final paths.
    On any error, or a kill, the directory keeps its previous epoch."""
    make(directory)
    settle(directory)
    entries: dict[str, dict[str, Any]] = {}
    manifest_bytes = b""
    try:
        for name, write in writers.items():
            if name not in FILES:
                raise ValueError(f"commit: {name!r} is not one of the run's files {FILES}")
            target = staged(directory, name)
            if write(target) is None:
                continue
            _fsync_file(target)
            entries[name] = fingerprint(target)
        _fsync_dir(directory)
        manifest = {"format": FORMAT, "version": VERSION, "epochs_done": int(epochs_done),
                    "files": entries}
        manifest_bytes = json.dumps(manifest, indent=1).encode()
        _write_atomically(directory / MANIFEST, manifest_bytes)
    except BaseException:
        if not _holds(directory / MANIFEST, manifest_bytes):   # not committed after all
            for name in writers:
                staged(directory, name).unlink(missing_ok=True)
        raise
    # Committed: from here on, a kill leaves files that settle() or verify() finish.
    for name in entries:
        os.replace(staged(directory, name), directory / name)
    for name in set(FILES) - set(entries):
        (directory / name).unlink(missing_ok=True)      # an older save's file, not this epoch's
    _fsync_dir(directory)
    return [directory / name for name in entries]


def _holds(path: Path, data: bytes) -> bool:
    try:
        return bool(data) and path.read_bytes() == data
    except OSError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Make the renames in ``directory`` durable (where the platform allows it)."""
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
