"""Saved arrays stay as they were in the forward pass, or backward raises.

A node's rules read arrays saved in the forward pass, and those are often the very arrays
of tensors the user can reach: ``x.data``, a parameter's data, an op's output. If one of
them changed before the backward pass, the rules would compute a wrong gradient without
any error. Four guards prevent that:

1. **Copy on wrap.** ``Tensor(array)``, arrays passed to ops as constants, and array
   parameters (the index of ``x[idx]``) are copied: no array the user made is ever saved.
2. **Read-only while saved.** When a recorded node saves an array that is (a view of) a
   tensor's memory, that memory is made read-only until the node is freed (by backward,
   or when the graph is garbage). A write from numpy, ``t.data[...] = v`` or ``w -= 0.1``
   through a reference kept from earlier, raises numpy's "assignment destination is
   read-only" at the line that writes.
3. **Versions.** handgrad's own in-place writes (``t += 1`` under ``no_grad``, optimizer
   updates, ``load_state_dict``) go through ``modifying(...)``: saved memory is unlocked
   for the write and its version bumped. A backward through a node that saved an older
   version raises ``RuntimeError`` naming the op and the tensor, as PyTorch does.
4. **Checksums** under ``detect_anomaly()``: a checksum of every saved tensor array,
   compared before its node's backward rule runs. It also catches what flags cannot: a
   write through a numpy *view* taken before the forward pass (a view made earlier keeps
   its own writeable flag).

Memory is identified by the ndarray that owns it (``owner``): views of one array share
one record, so a write through any of them is seen.
"""
from __future__ import annotations

import threading
import zlib
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .graph import Node

OUTPUT = -1  # position of a node's output in a guard record


def owner(array: np.ndarray) -> np.ndarray:
    """The ndarray that owns ``array``'s memory (``array`` itself unless it is a view)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


class _Memory:
    """One block of saved memory: how many live nodes saved it, its version, and the
    arrays whose writeable flag was turned off (to turn back on when nobody saves it)."""

    __slots__ = ("count", "version", "locked")

    def __init__(self) -> None:
        self.count = 0
        self.version = 0
        self.locked: list[np.ndarray] = []


# id(owner array) -> its record, for memory saved by at least one live node. A live node
# holds its owner arrays, so an id in here cannot be reused by another array.
_MEMORY: dict[int, _Memory] = {}
_LOCK = threading.Lock()
_DEFERRED: list["Guard"] = []   # guards released by the garbage collector while _LOCK was held


class _Critical:
    """``with _CRITICAL:`` holds the lock; on the way out it also releases the guards that
    the garbage collector handed over while the lock was busy."""

    def __enter__(self) -> None:
        _LOCK.acquire()

    def __exit__(self, *exc: object) -> None:
        try:
            while _DEFERRED:
                _release(_DEFERRED.pop())
        finally:
            _LOCK.release()


_CRITICAL = _Critical()


def in_use() -> bool:
    """True when some live node saved tensor memory (the fast path is: nothing to guard)."""
    return bool(_MEMORY)


class Guard:
    """What one node saved from tensor memory: for each block, the position it came from
    (input index, or OUTPUT), its record and the version at save time; checksums under
    detect_anomaly. Released when the node is freed or garbage collected."""

    __slots__ = ("entries", "checksums", "released")

    def __init__(self, entries: list[tuple[int, np.ndarray, _Memory, int]], checksums: list[int] | None):
        self.entries = entries
        self.checksums = checksums
        self.released = False

    def release(self) -> None:
        """Forget this node's claim on its memory; unlock blocks nobody else saved."""
        if self.released:
            return
        if _LOCK.acquire(blocking=False):
            try:
                _release(self)
            finally:
                _CRITICAL.__exit__()      # drains deferred releases, then unlocks
        else:  # the lock is busy (another thread, or a collection inside our own section)
            _DEFERRED.append(self)

    def __del__(self) -> None:  # the graph was dropped without a backward pass
        try:
            self.release()
        except Exception:  # pragma: no cover  (interpreter shutdown)
            pass


def _release(guard: Guard) -> None:
    if guard.released:
        return
    guard.released = True
    for _, own, memory, _ in guard.entries:
        memory.count -= 1
        if memory.count == 0:
            for array in memory.locked:       # the owner first: a view can be made
                array.flags.writeable = True  # writeable again only after its base
            del _MEMORY[id(own)]


def guard(node: "Node", saved: Sequence[Any], output: np.ndarray, anomaly: bool) -> Guard | None:
    """Claim and lock the tensor memory among a recorded node's saved values."""
    sources = [(i, owner(t.data)) for i, t in enumerate(node.inputs)]
    sources.append((OUTPUT, owner(output)))
    found: list[tuple[int, np.ndarray, np.ndarray]] = []   # (position, owner, saved array)
    for value in saved:
        if not isinstance(value, np.ndarray):
            continue
        own = owner(value)
        for position, source in sources:
            if own is source:
                found.append((position, own, value))
                break
    if not found:
        return None
    entries: list[tuple[int, np.ndarray, _Memory, int]] = []
    with _CRITICAL:
        for position, own, value in found:
            memory = _MEMORY.get(id(own))
            if memory is None:
                memory = _MEMORY[id(own)] = _Memory()
            if not any(e[1] is own for e in entries):
                memory.count += 1
                entries.append((position, own, memory, memory.version))
            for array in (own, value):
                if array.flags.writeable:
                    array.flags.writeable = False
                    memory.locked.append(array)
    checksums = [checksum(e[1]) for e in entries] if anomaly else None
    return Guard(entries, checksums)


def checksum(array: np.ndarray) -> int:
    """A CRC-32 of the array's bytes (and its shape): any change of a value changes it
    with probability 1 - 2^-32."""
    return zlib.crc32(np.ascontiguousarray(array).view(np.uint8), hash(array.shape) & 0xFFFFFFFF)


def verify(node: "Node") -> None:
    """Raise if memory this node saved changed since its forward pass."""
    g = node.guard
    for k, (position, own, memory, version) in enumerate(g.entries):
        if memory.version != version:
            raise RuntimeError(
                f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
                f"({node!r}), was modified by an in-place operation after the forward pass: "
                f"it is at version {memory.version}, expected version {version}. "
                f"Run backward() before changing it (e.g. before optimizer.step()), "
                f"or compute the graph again.")
        if g.checksums is not None and checksum(own) != g.checksums[k]:
            raise RuntimeError(
                f"detect_anomaly: {_what(node, position)}, saved for the backward of op "
                f"'{node.op.name}' ({node!r}), changed after the forward pass (its checksum "
                f"differs): something wrote into its memory, e.g. through a numpy view "
                f"taken before the forward pass.")


def _what(node: "Node", position: int) -> str:
    if position == OUTPUT:
        return f"the output of op '{node.op.name}'"
    t = node.inputs[position]
    name = f" {t.name!r}" if t.name else ""
    return f"input {position} ({type(t).__name__}{name} of shape {t.shape}, dtype {t.dtype})"


class modifying:
    """``with modifying(a, b, ...):`` around handgrad's own in-place writes into tensor
    arrays: saved memory among them is writeable inside the block, and its version is
    bumped so that a backward through a node that saved the old values raises.

    Costs one dict lookup when no live node saved anything (the usual case: after
    backward)."""

    __slots__ = ("arrays", "unlocked")

    def __init__(self, *arrays: np.ndarray):
        self.arrays = arrays
        self.unlocked: list[_Memory] = []

    def __enter__(self) -> None:
        if not _MEMORY:
            return
        with _CRITICAL:
            for array in self.arrays:
                memory = _MEMORY.get(id(owner(array)))
                if memory is None or memory in self.unlocked:
                    continue
                memory.version += 1
                for a in memory.locked:         # the owner first
                    a.flags.writeable = True
                self.unlocked.append(memory)

    def __exit__(self, *exc: object) -> None:
        if not self.unlocked:
            return
        with _CRITICAL:
            for memory in self.unlocked:
                if memory.count:                # still saved by a live node: lock again
                    for a in memory.locked:
                        a.flags.writeable = False
        self.unlocked = []


def lock_count() -> int:
    """How many blocks of memory live nodes have saved (for tests)."""
    return len(_MEMORY)
