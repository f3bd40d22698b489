"""Checking paths before they are used: that a path names a regular file before opening
it, for every reader in nn (IDX datasets, checkpoints: a directory, a FIFO or a device gets
a clear error instead of an IsADirectoryError or a read that waits for a writer forever),
and that a folder can be written before a command does work whose results go there."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path


def regular_file_size(path: Path, what: str, error: type[Exception],
                      missing: type[Exception] | None = None) -> int:
    """The size of ``path`` if it is a regular file. Otherwise ``error`` (``missing`` for a
    path that does not exist, if given) with a message naming ``path`` and ``what`` it
    should have been."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise (missing or error)(f"{path}: no such {what}") from None
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path}: is a directory, not a {what}")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: is not a regular file (a FIFO, socket or device)")
    return info.st_size


def nearest_existing(path: Path) -> Path:
    """``path`` if it exists, else its nearest ancestor that does: where a folder that is
    still to be made would be created."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def probe_write(folder: Path) -> None:
    """Make and remove a file in ``folder``, or raise the OSError that says why it cannot
    be done (as root os.access says yes to everything: only a real write tells)."""
    fd, probe = tempfile.mkstemp(prefix=".handgrad-probe.", dir=folder)
    os.close(fd)
    os.unlink(probe)
