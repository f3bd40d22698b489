"""Saved values stay as they were in the forward pass, or backward raises.

A node's rules read arrays saved in the forward pass, and those are often the very arrays
of tensors: an input's data, a parameter's data, the op's own output. If one of them
changed before the backward pass, the rules would compute a wrong gradient and nothing
would say so. handgrad knows every way an array can change and guards each one:

1. **Arrays you pass in** are copied (``Tensor(array)``, arrays given to ops as constants,
   array parameters such as the index of ``x[idx]``), so an array you keep writing to is
   never one a node saved. ``copy=False`` and ``from_numpy`` share on purpose: see 3.
2. **handgrad's own in-place writes** (``t += 1`` under ``no_grad``, optimizer steps,
   ``load_state_dict``) go through ``writable``: each one is a new tick of a global clock
   and stamps the memory it writes. Every node remembers the tick of its forward pass; its
   backward compares, and raises ``RuntimeError`` naming the op and the tensor if memory
   it saved was written after it (PyTorch's "modified by an inplace operation").
3. **numpy writes** need the array, so handgrad watches who gets one. Memory becomes
   *exposed* when its array is handed out (``t.data``, ``t.numpy()``, ``np.asarray(t)``)
   or shared (``copy=False``). While a live node has saved exposed memory, its arrays are
   read-only: a write (``t.data[...] = v``, ``w -= 0.1`` through a reference kept from
   earlier) raises numpy's "assignment destination is read-only" at the line that writes.
   Memory exposed only after a node's forward pass gets a checksum at that moment (and a
   tick), which that node's backward compares.
   Memory never handed out cannot be written from outside, so it needs no flag at all:
   a training step whose batches, activations and parameters nobody touches pays nothing.
   *Foreign* memory, which numpy does not own (a ``np.memmap``'s file, the bytearray
   under ``np.frombuffer``, another library's buffer, ``as_strided``), can be written
   with no numpy array at all, so no flag can stop it: a node that saves an array on it
   also keeps a checksum of that array (and ticks the clock), which its backward compares.
   That is one pass over those arrays per node, paid only by graphs on such memory.
4. **Under ``detect_anomaly()``** every node also keeps a checksum of each saved tensor
   array and compares it before its rule runs. That catches the one write the flags cannot
   stop: through a numpy *view* taken before the forward pass (a view made earlier keeps
   its own writeable flag).

So the backward pass only has to look closer when the clock moved since a node's forward
pass, which in a training loop (forward, backward, then the optimizer) it never has.

A ``Memory`` record describes one block of memory and is shared by every tensor that
views it (op outputs that are numpy views of an input, ``detach()``, tensors made with
``copy=False`` from the same array). Records are made only when needed: for views, for
tracked writes, for exposure.
"""
from __future__ import annotations

import itertools
import threading
import weakref
import zlib
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .graph import Node
    from .tensor import Tensor

OUTPUT = -1  # position of a node's output among the tensors it saved

_ticks = itertools.count(1)
EPOCH = 0  # the clock: the tick of the latest tracked write or first exposure


def tick() -> int:
    """Advance the clock (a tracked write or a first exposure happens now)."""
    global EPOCH
    EPOCH = next(_ticks)
    return EPOCH


def owner(array: np.ndarray) -> np.ndarray:
    """The ndarray that owns ``array``'s memory (``array`` itself unless it is a view)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array


def foreign(own: np.ndarray) -> bool:
    """Whether an owner array (see ``owner``) is a window on memory numpy does not own: a
    ``np.memmap`` (a file), ``np.frombuffer`` of a bytearray, ctypes or another library's
    buffer, ``as_strided``. Writes to that memory need no numpy array, so no writeable flag
    can stop them. Immutable ``bytes`` cannot be written and are not foreign."""
    base = own.base
    if base is None:
        return not own.flags.owndata
    return type(base) is not bytes


class Memory:
    """One block of memory behind one or more tensors."""

    __slots__ = ("owner", "arrays", "written", "exposed", "crc", "saves", "locked",
                 "foreign", "__weakref__")

    def __init__(self, array: np.ndarray) -> None:
        own = array if array.base is None else owner(array)
        self.owner = own
        self.foreign = foreign(own)     # flags cannot stop writes: nodes checksum it (lock)
        # views tensors hold, besides the owner
        self.arrays: tuple[np.ndarray, ...] = () if array is own else (array,)
        self.written = 0                # tick of the latest tracked write
        self.exposed: int | None = None  # tick it was handed out (0: shared from the start)
        self.crc: int | None = None     # checksum when handed out
        self.saves = 0                  # live nodes that saved it while exposed
        self.locked: list[np.ndarray] | None = None  # arrays made read-only meanwhile


_LOCK = threading.Lock()           # guards `saves` and the writeable flags
_DEFERRED: list["Guard"] = []      # releases the garbage collector made while _LOCK was held
_SHARED: "weakref.WeakValueDictionary[int, Memory]" = weakref.WeakValueDictionary()


def _unlock() -> None:
    """Release _LOCK, first finishing the releases that had to wait for it."""
    if _DEFERRED:
        try:
            while _DEFERRED:
                _DEFERRED.pop()._release()
        finally:
            _LOCK.release()
    else:
        _LOCK.release()


def memory(t: "Tensor") -> Memory:
    """The tensor's memory record (made on first use)."""
    mem = t._mem
    if mem is None:
        mem = t._mem = Memory(t._data)
    return mem


def _add_view(mem: Memory, array: np.ndarray) -> None:
    if array is not mem.owner and not any(a is array for a in mem.arrays):
        _LOCK.acquire()
        try:
            mem.arrays += (array,)
            if mem.locked is not None:
                _lock(mem)
        finally:
            _unlock()


def shared(array: np.ndarray) -> Memory:
    """The record for an array the caller keeps (``copy=False``, ``t.data = array``):
    exposed from the start, one record for every tensor on that memory."""
    own = owner(array)
    mem = _SHARED.get(id(own))
    if mem is None or mem.owner is not own:
        mem = Memory(array)
        mem.exposed = 0          # new to handgrad: no node saved it before
        _SHARED[id(own)] = mem
    else:
        _add_view(mem, array)
    return mem


def expose(t: "Tensor") -> None:
    """``t``'s array is being handed out. A node that saved it before now cannot rely on
    flags (it did not lock it), so take its checksum and tick the clock: such nodes
    compare in their backward. From now on, nodes that save it lock it."""
    mem = memory(t)
    if mem.exposed is None:
        mem.crc = checksum(mem.owner)
        mem.exposed = tick()
        _SHARED[id(mem.owner)] = mem


def view_of(out: "Tensor", inputs: Sequence["Tensor"]) -> None:
    """If the op's output array is an input's memory (a numpy view, or the very array),
    the output shares that input's record: a write through one is a write to both."""
    data = out._data
    own = owner(data)
    for t in inputs:
        if own is owner(t._data):
            mem = memory(t)
            _add_view(mem, data)
            out._mem = mem
            return


def _reversible(own: np.ndarray) -> bool:
    """Whether numpy lets an owner array be made writeable again after ``_lock``: only if
    it owns its memory or its base is a writable buffer (a memmap's mmap, a bytearray's
    memoryview; not ``as_strided``'s DummyArray). Views of it always can (after it)."""
    base: Any = own.base           # numpy types it as an ndarray; here it never is one
    if base is None:
        return True
    try:
        with memoryview(base) as view:
            return not view.readonly
    except TypeError:
        return False


def _lock(mem: Memory) -> None:   # with _LOCK held
    """Make the arrays tensors hold on this memory read-only (the owner first). An owner
    that numpy would not make writeable again stays as it is: it is foreign memory, which
    the nodes checksum anyway."""
    locked = mem.locked if mem.locked is not None else []
    skip = mem.owner if mem.foreign and not _reversible(mem.owner) else None
    for array in (mem.owner, *mem.arrays):
        if array.flags.writeable and array is not skip:
            array.flags.writeable = False
            locked.append(array)
    mem.locked = locked or None


def _unlock_arrays(mem: Memory) -> None:   # with _LOCK held
    for array in mem.locked or ():    # the owner first: a view can be made writeable
        array.flags.writeable = True  # again only after its base
    mem.locked = None


# --- what a node saved ---------------------------------------------------------------------

def saved_tensors(node: "Node", out: "Tensor") -> Iterator[tuple[int, "Tensor"]]:
    """(position, tensor) for each saved value that is a tensor's memory: an input's (its
    index) or the output's (OUTPUT). Rules save inputs, outputs, and arrays of their own."""
    inputs = node.inputs
    seen: list[int] = []
    for value in node.saved:
        if type(value) is not np.ndarray:          # shapes, counts, None
            continue
        if value is out._data:
            position = OUTPUT
        else:
            for position, t in enumerate(inputs):  # noqa: B007  (read after the break)
                if value is t._data:
                    break
            else:
                if value.base is None:             # an array the rule made
                    continue
                found = _view_position(value, inputs, out)
                if found is None:
                    continue
                position = found
        if position not in seen:
            seen.append(position)
            yield position, out if position == OUTPUT else inputs[position]


def _view_position(value: np.ndarray, inputs: Sequence["Tensor"], out: "Tensor") -> int | None:
    own = owner(value)
    if own is owner(out._data):
        return OUTPUT
    for i, t in enumerate(inputs):
        if own is owner(t._data):
            return i
    return None


Checksums = list[tuple[int, np.ndarray, int]]   # (position, saved array, its checksum)


class Guard:
    """What a node saved from exposed memory (kept read-only until the guard is released,
    when the node is freed by backward or garbage collected without one); checksums of
    the saved arrays on foreign memory (flags cannot protect it); and, under
    detect_anomaly, checksums of every saved tensor array."""

    __slots__ = ("locks", "checksums", "foreign", "released")

    def __init__(self, locks: list[Memory], checksums: Checksums | None,
                 foreign: Checksums | None = None):
        self.locks = locks
        self.checksums = checksums
        self.foreign = foreign
        self.released = not locks

    def release(self) -> None:
        if self.released:
            return
        if _LOCK.acquire(blocking=False):
            try:
                self._release()
            finally:
                _unlock()
        else:  # busy: another thread, or a garbage collection inside our own section
            _DEFERRED.append(self)

    def _release(self) -> None:   # with _LOCK held
        if self.released:
            return
        self.released = True
        for mem in self.locks:
            mem.saves -= 1
            if mem.saves == 0 and mem.locked is not None:
                _unlock_arrays(mem)

    def __del__(self) -> None:
        if not self.released:
            try:
                self.release()
            except Exception:  # pragma: no cover  (interpreter shutdown)
                pass


def holds(values: Sequence[object], t: "Tensor") -> bool:
    """Whether a node's saved values include ``t``'s memory (its array, or a view of it)."""
    data = t._data
    for value in values:
        if value is data:
            return True
    own = None
    for value in values:
        if type(value) is np.ndarray and value.base is not None:
            if own is None:
                own = owner(data)
            if owner(value) is own:
                return True
    return False


def lock(memories: list[Memory], node: "Node | None" = None, out: "Tensor | None" = None) -> Guard:
    """Exposed memory a live node saved: read-only until the returned guard is released.
    Saved arrays on foreign memory are also checksummed (``node`` and ``out`` say which
    arrays the node saved), and the clock ticks so that the node's backward compares."""
    _LOCK.acquire()
    try:
        for mem in memories:
            mem.saves += 1
            if mem.locked is None:
                _lock(mem)
    finally:
        _unlock()
    sums = None
    if node is not None and out is not None and any(mem.foreign for mem in memories):
        sums = [(position, t._data, checksum(t._data)) for position, t in saved_tensors(node, out)
                if t._mem is not None and t._mem.foreign]
        if sums:
            tick()
    return Guard(memories, None, sums)


def guard(node: "Node", out: "Tensor", anomaly: bool) -> Guard | None:
    """Under detect_anomaly: a checksum of every saved tensor array, and exposed memory
    locked as always."""
    locks = []
    checksums: Checksums | None = [] if anomaly else None
    for position, t in saved_tensors(node, out):
        mem = t._mem
        if mem is not None and mem.exposed is not None and mem not in locks:
            locks.append(mem)
        if checksums is not None:
            checksums.append((position, t._data, checksum(t._data)))
    if locks:
        _LOCK.acquire()
        try:
            for mem in locks:
                mem.saves += 1
                if mem.locked is None:
                    _lock(mem)
        finally:
            _unlock()
    return Guard(locks, checksums) if locks or checksums else None


def checksum(array: np.ndarray) -> int:
    """A CRC-32 of the array's bytes (and its shape): a change of any value changes it
    except with probability 2^-32."""
    data = np.ascontiguousarray(array).view(np.uint8)
    # An ndarray has the buffer protocol; numpy's stubs declare __buffer__ only for
    # Python >= 3.12, and mypy checks for 3.10.
    return zlib.crc32(data, hash(array.shape) & 0xFFFFFFFF)  # type: ignore[arg-type]


def verify(node: "Node", out: "Tensor") -> None:
    """Raise if memory the node saved was written after its forward pass (called when the
    clock moved since then, and under detect_anomaly)."""
    for position, t in saved_tensors(node, out):
        mem = t._mem
        if mem is None:
            continue
        if mem.written > node.epoch:
            raise RuntimeError(
                f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
                f"({node!r}), was modified by an in-place operation after the forward "
                f"pass. Call backward() before changing it (e.g. before optimizer.step()), "
                f"or compute the graph again.")
        if mem.crc is None:
            continue
        assert mem.exposed is not None            # expose() sets both, and neither goes back
        if mem.exposed > node.epoch and checksum(mem.owner) != mem.crc:
            raise RuntimeError(
                f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
                f"({node!r}), was written through its numpy array after the forward pass "
                f"(the array was handed out after that pass, and its values changed since).")
    g = node.guard
    if g is None:
        return
    changed = _first_changed(g.foreign)
    if changed is not None:
        position, array = changed
        raise RuntimeError(
            f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
            f"({node!r}), changed after the forward pass (its checksum differs). Its "
            f"memory is not numpy's ({_buffer(array)}), so it could not be made "
            f"read-only: something wrote into it. Call backward() before changing "
            f"it, or give handgrad a copy (Tensor(array) rather than copy=False).")
    changed = _first_changed(g.checksums)
    if changed is not None:
        raise RuntimeError(
            f"detect_anomaly: {_what(node, changed[0])}, saved for the backward of op "
            f"'{node.op.name}' ({node!r}), changed after the forward pass (its "
            f"checksum differs): something wrote into its memory, e.g. through a "
            f"numpy view taken before the forward pass.")


def _first_changed(entries: "Checksums | None") -> tuple[int, np.ndarray] | None:
    """The first ``(position, array)`` of ``(position, array, crc)`` entries whose array's
    checksum is no longer ``crc`` (None when all match, or there are no entries)."""
    for position, array, crc in entries or ():
        if checksum(array) != crc:
            return position, array
    return None


def _buffer(array: np.ndarray) -> str:
    """What holds a foreign array's memory, for the error message ("it belongs to a
    bytearray", "it is a np.memmap's file", ...)."""
    own = owner(array)
    if isinstance(own, np.memmap) or type(own.base).__name__ == "mmap":
        return "it is a np.memmap's file"
    base = own.base
    while isinstance(base, memoryview):
        base = base.obj
    if base is None:
        return "it was made outside numpy"
    return f"it belongs to a {type(base).__name__}"


def _what(node: "Node", position: int) -> str:
    if position == OUTPUT:
        return f"the output of op '{node.op.name}'"
    return f"input {position} ({node.inputs[position].describe()})"


def writable(*tensors: "Tensor") -> list[np.ndarray]:
    """The tensors' arrays, for handgrad's own in-place writes (``t += 1``, optimizer
    steps, ``load_state_dict``): the writes are stamped on the clock, so a backward through
    a node that saved the old values raises; memory kept read-only for such a node is made
    writeable (it stays so: that node can no longer run its backward anyway).
    ``engine.inplace`` is this function: ``w, = engine.inplace(p); w -= lr * p.grad``."""
    global EPOCH
    EPOCH = now = next(_ticks)
    arrays = []
    for t in tensors:
        mem = t._mem
        if mem is None:
            mem = memory(t)
        mem.written = now
        if mem.locked is not None:
            _LOCK.acquire()
            try:
                _unlock_arrays(mem)
            finally:
                _unlock()
        arrays.append(t._data)
    return arrays


def is_locked(t: "Tensor") -> bool:
    """Whether ``t``'s memory is read-only now because a live node saved it (for tests)."""
    return t._mem is not None and t._mem.locked is not None
