"""The one owner of array memory: what handgrad copies, shares, hands out, locks and checks.

A node's rules read arrays saved in the forward pass, and those are often the very arrays
of tensors: an input's data, a parameter's data, the op's own output. If one of them
changed before the backward pass, the rules would compute a wrong gradient and nothing
would say so. This module knows every way an array can change and answers each one. The
core reaches it at three places only: building a tensor and handing its array out
(``tensor.py``: ``wrap``, ``hand_out``, ``replace``, ``alias``, ``writable``, ``writing``),
after an op's forward (``op.py``: ``after_forward``, ``share_view``), and around a rule in
the walker (``graph.py``: ``before_rule``, ``after_rule``, ``release``). A ``Node`` keeps one slot for it,
``node.memory``, which the core only compares with ``write_tick``.

1. **Arrays you pass in** are copied (``Tensor(array)``, op constants, array parameters
   such as the index of ``x[idx]``), so an array you keep writing to is never one a node
   saved. ``copy=False`` and ``from_numpy`` share on purpose (see 3); ``engine.adopt``
   takes an array its caller gives away, with no copy and no sharing to watch.
2. **handgrad's own in-place writes** (``t += 1`` under ``no_grad``, optimizer steps,
   ``load_state_dict``) go through ``writing``: each one is a new tick of the *write
   clock* (``write_tick``) and stamps the memory it writes, when it begins (``writable``)
   and again when it ends (a forward pass another thread runs while numpy writes is then
   older than the write). Every node remembers the tick
   of its forward pass; its backward compares, and raises ``RuntimeError`` naming the op
   and the tensor if memory it saved was written after it. ``write_stamp(t)`` tells a
   caller whether ``t`` may have been written since; ``global_write_stamp()`` the same for
   all memory at once (it also counts hand-outs and replaced arrays, point 3);
   ``forward_change(node, t)`` a picture whether a tensor a node read changed after that
   node's forward pass (its graph alive or freed).
3. **numpy writes** need an array, so this module watches who may hold one. Memory is
   *handed out* when its array leaves handgrad (``t.data``, ``t.numpy()``,
   ``np.asarray(t)``) or came from the caller (``copy=False``): O(1), no clock. A node
   (one that saves something) given handed-out memory asks Python's reference count
   whether anything outside handgrad still holds one of its arrays: if not, nobody can
   write them, and the memory stops counting as handed out, whether the node saved it or
   not (a bias); if so and the node saved it, the arrays are read-only while the node
   lives (a write raises numpy's "assignment destination is read-only" at the line that
   writes). So a step's cost never depends on what was read in earlier steps, only on
   arrays still held.
   The one case that needs more: an array handed out while a live node saved it without
   a lock (read ``y.data`` between the forward and the backward). Its values are then
   checksummed once (a *checkpoint*) and the clock ticks; that node's backward compares.
   This is decided by reference count too, so reading an array no live graph saved costs
   nothing proportional to its size.
   *Foreign* memory, which numpy does not own (a ``np.memmap``'s file, the bytearray
   under ``np.frombuffer``, another library's buffer, ``as_strided``), can be written with
   no numpy array at all: a node that saves an array on it keeps a checksum of that array
   (and ticks the clock), which its backward compares.
   Memory a tensor leaves (``t.data = new``) while something still references it (a node
   that saved it, an array kept from ``t.data``, a ``t.detach()``) keeps its record in
   ``_RETIRED``, where a backward finds it from the arrays its node saved.
   Replacing a tensor's array ticks the write clock, and the tensor's tick is kept
   (``_REPLACED``), so that ``forward_change`` tells which graphs read the old values.
4. **Under ``detect_anomaly()``** every node also keeps a checksum of each saved tensor
   array and compares it before its rule runs. That catches the one write the flags
   cannot stop: through a numpy *view* taken before the forward pass (a view keeps its
   own writeable flag).

So the walker only looks closer when the clock moved since a node's forward pass, which
in a training loop (forward, backward, then the optimizer) it never has, or while a tracked
write runs in another thread (``writes_now``, ``Writing``).

Which saved values are tensors' memory, a node knows from its op's rules: they declare
the input arrays and the output they save (``ctx.save_input``, ``ctx.save_output``;
``Node.declared_inputs``, ``Node.declared_output``). What a rule keeps with ``ctx.save`` is its own by contract; a user
op may still pass an input there, so those values are searched by identity and numpy
``.base`` chains (``inferred_saves`` counts the finds; no built-in op needs it).

A ``MemoryRecord`` describes one block of memory and is shared by every tensor that views
it (op outputs that are numpy views of an input, ``detach()``, tensors made with
``copy=False`` from the same array). Records are made only when needed: for views, for
tracked writes, for handing out. The gradient store (``GradientStore``) decides when a
tensor may keep a gradient array the backward pass computed instead of a copy.
"""
from __future__ import annotations

import itertools
import sys
import threading
import weakref
import zlib
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from .modes import SEQUENCE

if TYPE_CHECKING:  # pragma: no cover
    from .graph import Node
    from .tensor import Tensor

OUTPUT = -1  # position of a node's output among the tensors it saved

inferred_saves = 0
"""How many times a value saved with ``ctx.save`` turned out to be an input's or the
output's memory, found by identity (undeclared saves of user ops; no built-in op)."""

_ticks = itertools.count(1)
write_tick = 0  # the write clock: the tick of the latest tracked write or checkpoint
_CLOCK = threading.Lock()   # draws and stores of write_tick, one thread at a time (_advance)
writes_now = 0  # tracked writes running now (``Writing`` blocks, in any thread)
WRITING = sys.maxsize   # a record's ``written`` while a write of it runs: newer than any tick
_exits = itertools.count(1)
exit_count = 0  # changes when memory is handed out or a tensor's array replaced (see global_write_stamp)


def _advance() -> int:
    """Advance the write clock (a tracked write or a checkpoint happens now) and return
    the new tick. Drawing a tick and storing it are two steps, and a thread can be
    switched out between them: unlocked, a late store would put an older tick over a newer
    one and move the clock backwards, so that a node made then would get a tick older than
    a write it came after (a spurious error in its backward) or than a write that comes
    after it (a missed one). Nodes only read ``write_tick``, with no lock: the lock is on
    this rare path alone (writes, checkpoints, replacements), never on an op's."""
    global write_tick
    with _CLOCK:
        tick = write_tick = next(_ticks)
    return tick


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


class MemoryRecord:
    """One block of memory behind one or more tensors."""

    __slots__ = ("owner", "views", "written", "handed_out", "hand_outs", "handed_at",
                 "checkpoints", "holders", "locked", "foreign", "__weakref__")

    def __init__(self, array: np.ndarray) -> None:
        own = array if array.base is None else owner(array)
        self.owner = own
        self.foreign = foreign(own)     # flags cannot stop writes: nodes checksum it
        # views tensors hold, besides the owner
        self.views: tuple[np.ndarray, ...] = () if array is own else (array,)
        self.written = 0                # tick of the latest tracked write
        self.handed_out = False         # an array on it may be held outside handgrad
        self.hand_outs = 0              # how many times handed_out turned True
        self.handed_at = -1             # ``SEQUENCE`` at its latest hand_out (t.data), if any
        # (tick, checksum) taken when handed out while a live node saved it unlocked
        self.checkpoints: list[tuple[int, int]] | None = None
        self.holders = 0                # live nodes that keep it read-only
        self.locked: list[np.ndarray] | None = None  # arrays made read-only meanwhile


_LOCK = threading.Lock()                # guards `holders` and the writeable flags
# The thread holding _LOCK (threading.get_ident()), set just after it acquires and cleared
# just before it releases; 0 in between, and in those two short windows.
_owner = 0
# Releases that could not wait for _LOCK: made by the garbage collector (NodeHolds.__del__)
# while this thread held it, in one of its own sections, where waiting would deadlock.
_DEFERRED: list["NodeHolds"] = []
_SHARED: "weakref.WeakValueDictionary[int, MemoryRecord]" = weakref.WeakValueDictionary()
# Records of memory a tensor no longer has (``t.data = new``) that something still references
# (a node that saved it, an array kept from ``t.data``, a ``t.detach()``): a backward finds
# them from the arrays its node saved (``before_rule``). Pruned at each ``replace``.
# Threads replace arrays at the same time, so the tuple is never changed in place: a new one
# is made and bound under _RETIRING (a read-filter-write of a shared list would drop the
# records other threads add meanwhile), and a reader iterates whichever tuple it got.
_RETIRED: tuple[MemoryRecord, ...] = ()
_RETIRING = threading.Lock()
_ACCUMULATING = threading.Lock()   # GradientStore.accumulate, one thread at a time
# Tensors whose array was replaced (``t.data = new``): id(t) -> (a weak reference to t, the
# write clock's tick of its latest replacement), for ``forward_change``. An entry leaves
# with its tensor.
_REPLACED: "dict[int, tuple[weakref.ref[Tensor], int]]" = {}


def _acquire() -> None:
    """Acquire _LOCK and note this thread as its holder (see NodeHolds.release)."""
    global _owner
    _LOCK.acquire()
    _owner = threading.get_ident()


def _unlock() -> None:
    """Release _LOCK, first finishing the releases that had to wait for it. One deferred by
    another thread after this one's last look (it found the lock busy in a window where it
    cannot tell whose it is) is done just after, here, unless another thread holds the lock
    by then: that one's _unlock does it."""
    global _owner
    while True:
        try:
            while _DEFERRED:
                _DEFERRED.pop()._release()
        finally:
            _owner = 0
            _LOCK.release()
        if not _DEFERRED or not _LOCK.acquire(blocking=False):
            return
        _owner = threading.get_ident()


def _references(one: tuple[Any]) -> int:
    """How many references the object in the one-tuple ``one`` has besides that tuple. A
    weak reference (``weakref.ref(t.data)``) gives the array back whenever its owner asks,
    so an array with one counts as held by a reference more than it has (handgrad keeps
    none to tensors' arrays)."""
    obj = one[0]
    return sys.getrefcount(obj) - _ONE + (weakref.getweakrefcount(obj) > 0)


_ONE = 0
_ONE = _references((object(),))         # the tuple's and the call's own references


def record_of(t: "Tensor") -> MemoryRecord:
    """The tensor's memory record (made on first use)."""
    record = t._memory
    if record is None:
        record = t._memory = MemoryRecord(t._data)
    return record


def _add_view(record: MemoryRecord, array: np.ndarray) -> None:
    if array is not record.owner and not any(a is array for a in record.views):
        _acquire()
        try:
            record.views += (array,)
            if record.locked is not None:
                _lock(record)
                locked = record.locked
                if locked is not None and _read_only_by_lock(locked, array):
                    locked.append(array)            # made writeable again with its base
        finally:
            _unlock()


def _read_only_by_lock(locked: list[np.ndarray], array: np.ndarray) -> bool:   # with _LOCK held
    """Whether a view tensors hold is read-only only because numpy made it so from a base
    its record locked (in ``locked``) (``x.T`` or ``x.detach()[0]`` while a graph holds x): unlocking must
    make it writeable again, or a safe write after backward is refused. A broadcast view
    (a stride of 0) is read-only by its nature and stays so."""
    shape = zip(array.strides, array.shape, strict=True)
    if array.flags.writeable or any(stride == 0 and n > 1 for stride, n in shape):
        return False
    base = array.base
    return isinstance(base, np.ndarray) and any(base is a for a in locked)


# --- building tensors and handing their arrays out (tensor.py) --------------------------------

def wrap(value: Any, dtype: Any, copy: bool,
         tensor: "Tensor | None" = None) -> tuple[np.ndarray, MemoryRecord | None]:
    """The array and record of a new tensor made from ``value`` (``tensor`` if the value
    is that tensor's array): a private copy, or with ``copy=False`` the very memory,
    recorded as shared with the caller, when no conversion is needed."""
    if copy:
        return np.array(value, dtype=dtype, copy=True), None
    array = np.asarray(value, dtype=dtype)
    if not isinstance(value, np.ndarray) or owner(array) is not owner(value):
        return array, None                       # converted: a new array nobody else has
    if tensor is not None:                       # another tensor's memory: one record for both
        record = record_of(tensor)
        _add_view(record, array)
        return array, record
    return array, share(array)


def share(array: np.ndarray) -> MemoryRecord:
    """The record for an array the caller keeps (``copy=False``, ``t.data = array``):
    handed out from the start, one record for every tensor on that memory."""
    own = owner(array)
    record = _SHARED.get(id(own))
    if record is None or record.owner is not own:
        record = MemoryRecord(array)
        _SHARED[id(own)] = record
    else:
        _add_view(record, array)
    _mark_handed_out(record)
    return record


def adopt(t: "Tensor") -> None:
    """``t``'s array was given away by its caller (``engine.adopt``): handgrad's alone, no
    record. Memory numpy does not own, and memory another tensor has handed out, is
    recorded as shared instead (a write through the other owner must still be seen)."""
    own = owner(t._data)
    record = _SHARED.get(id(own))
    if record is not None and record.owner is own:
        _add_view(record, t._data)
        t._memory = record
    elif foreign(own):
        t._memory = share(t._data)


def alias(t: "Tensor", source: "Tensor") -> None:
    """``t`` holds ``source``'s very array (``detach()``): one record for both."""
    t._memory = record_of(source)


def replace(t: "Tensor", array: np.ndarray, source: "Tensor | None" = None) -> None:
    """``t.data = array`` (``source``: the tensor it came from): ``t`` now shares that
    memory. The tensor's own array given back (``p.data -= x``) changes nothing."""
    global exit_count
    if array is t._data:
        return
    _retire(t)
    t._data = array
    t._memory = record_of(source) if source is not None else share(array)
    exit_count = next(_exits)
    _note_replaced(t)


def _note_replaced(t: "Tensor") -> None:
    """Remember the tick of ``t``'s replacement, a new tick of the write clock: nodes made
    before it have an older one, nodes made after it this one or a later one."""
    key = id(t)
    entry = _REPLACED.get(key)
    ref = entry[0] if entry is not None and entry[0]() is t else \
        weakref.ref(t, lambda dead: _forget_replaced(key, dead))
    _REPLACED[key] = (ref, _advance())


def _forget_replaced(key: int, dead: "weakref.ref[Tensor]") -> None:
    """A replaced tensor is gone: drop its entry (not a newer tensor's with the same id)."""
    entry = _REPLACED.get(key)
    if entry is not None and entry[0] is dead:
        del _REPLACED[key]


def _retire(t: "Tensor") -> None:
    """``t`` leaves its memory: keep its record where a backward looks for the arrays its
    node saved, if anything but ``t`` references that memory; drop the retired records
    nothing references any more (no node can have saved them, nobody can write them)."""
    global _RETIRED
    old = t._memory
    if old is not None and not _maybe_saved(old, t):
        old = None
    if old is None and not _RETIRED:
        return
    with _RETIRING:            # one thread at a time builds the next tuple from the last
        kept = tuple([r for r in _RETIRED if _maybe_saved(r, None)])
        if old is not None and not any(r is old for r in kept):
            kept += (old,)
        _RETIRED = kept


def hand_out(t: "Tensor") -> np.ndarray:
    """``t``'s array, leaving handgrad (``t.data``). No work proportional to its size: the
    memory is marked handed out, so that nodes saving it later lock it while the array is
    held. Only if a live node may have saved it unlocked (something besides ``t`` and
    handgrad's views references its arrays) is a checkpoint taken for that node."""
    record = t._memory
    if record is None:
        record = t._memory = MemoryRecord(t._data)
    elif record.handed_out:
        record.handed_at = next(SEQUENCE)
        return t._data
    record.handed_at = next(SEQUENCE)
    if record.locked is None and _maybe_saved(record, t):
        crc = checksum(record.owner)
        tick = _advance()
        points = record.checkpoints
        if points is None:
            record.checkpoints = [(tick, crc)]
        elif points[-1][1] == crc:               # unchanged since the last checkpoint
            points[-1] = (tick, crc)
        else:
            points.append((tick, crc))
    _hand_out_record(record)
    return t._data


def _hand_out_record(record: MemoryRecord) -> None:
    """An array of ``record``'s memory leaves handgrad: marked handed out, and findable by
    its owner array (``share``, ``adopt``) for tensors made later on the same memory."""
    _mark_handed_out(record)
    _SHARED[id(record.owner)] = record


def _mark_handed_out(record: MemoryRecord) -> None:
    global exit_count
    if not record.handed_out:
        record.handed_out = True
        record.hand_outs += 1
        exit_count = next(_exits)   # unique values: a late store never repeats one read before


def write_stamp(t: "Tensor") -> tuple[MemoryRecord, int, int] | None:
    """Something that changes whenever ``t``'s memory may have been written since it was
    taken (compare with ``==``): a tracked write moves its tick, handing an array of it out
    its count, replacing ``t.data`` its record. None when a write could go unseen from now
    on (an array of it may be held outside handgrad, or the memory is foreign). The
    optimizer uses it to trust a bound on the weights it measured at its last step."""
    record = record_of(t)
    if record.handed_out or record.foreign:
        return None
    return record, record.written, record.hand_outs


def global_write_stamp() -> tuple[int, int]:
    """``write_stamp`` of every tensor at once: equal (``==``) to an earlier value only if
    no tensor's memory can have been written since, by handgrad (a tracked write or a
    checkpoint moves the write clock) or by anyone else (nothing was handed out, no
    tensor's array replaced). Whoever took ``write_stamp(t)`` of some tensors and then this
    knows, while this stays the same, that theirs are unchanged too, without asking each
    (the optimizer's proofs, nn/update_bounds.py)."""
    return write_tick, exit_count


Stamp = tuple[MemoryRecord, int, int]


def write_stamp_after(stamp: Stamp | None, global_stamp: tuple[int, int]) -> Stamp | None:
    """The ``write_stamp`` a tensor whose stamp was ``stamp`` has after tracked writes of
    its memory (``writable``), the last of which left ``global_write_stamp()`` at
    ``global_stamp``, and nothing else since ``stamp`` was taken: its record and hand-out
    count as they were, that write's tick (None stays None). It spares a caller that knows
    this (an optimizer whose steps left the global stamp unchanged between them) asking
    each tensor again."""
    if stamp is None:
        return None
    record, _, hand_outs = stamp
    return record, global_stamp[0], hand_outs


def _maybe_saved(record: MemoryRecord, t: "Tensor | None") -> bool:
    """Whether anything besides ``record``, ``t`` (if given) and the views in the record
    references the memory's arrays: then a live node may hold them."""
    # (t's array is compared where it is, never kept in a local: that would be a reference
    # of its own in the count)
    views = record.views
    known = 1 + (t is not None and t._data is record.owner) + \
        sum(v.base is record.owner for v in views)
    if _references((record.owner,)) > known:
        return True
    for i in range(len(views)):
        if _references((views[i],)) > 1 + (t is not None and t._data is views[i]):
            return True
    return False


def writable(*tensors: "Tensor", keep: bool = False) -> list[np.ndarray]:
    """The tensors' arrays, for in-place writes made now (``t += 1``, optimizer steps,
    ``load_state_dict``): the writes are stamped on the write clock, so a backward
    through a node that saved the old values raises; memory kept read-only for such a node
    is made writeable (it stays so: that node can no longer run its backward anyway).
    ``keep=True`` (``engine.inplace``'s default): the caller may keep the arrays and write
    them later, with no stamp, so the memory counts as handed out, as after ``t.data``."""
    return _writable(tensors, keep)[0]


def _writable(tensors: Sequence["Tensor"], keep: bool = False
              ) -> tuple[list[np.ndarray], list[MemoryRecord]]:
    """``writable``'s arrays, and the tensors' records it stamped."""
    now = _advance()
    arrays, records = [], []
    for t in tensors:
        record = t._memory
        if record is None:
            record = record_of(t)
        if keep:
            _hand_out_record(record)
        record.written = now
        record.checkpoints = None     # every node older than this write raises anyway
        if record.locked is not None:
            _acquire()
            try:
                _unlock_arrays(record)
            finally:
                _unlock()
        arrays.append(t._data)
        records.append(record)
    return arrays, records


def _begin_writes(records: Sequence[MemoryRecord]) -> None:
    """Writes of these records' memory begin (``Writing``): counted in ``writes_now``, and
    the records' ``written`` is ``WRITING`` until they end, newer than any node's tick."""
    global writes_now
    with _CLOCK:
        writes_now += 1
        for record in records:
            record.written = WRITING


def _end_writes(records: Sequence[MemoryRecord]) -> None:
    """The writes ``_begin_writes`` counted are complete: the records are stamped with a
    new tick, then the clock shows it, then the count drops, in this order (a walker that
    reads the count and then the clock sees one or the other; see ``Writing``)."""
    global write_tick, writes_now
    with _CLOCK:
        tick = next(_ticks)
        for record in records:
            record.written = tick
        write_tick = tick
        writes_now -= 1


class Writing:
    """``with writing(*tensors) as arrays:``: the tensors' arrays for in-place writes made
    in the block, stamped on the write clock when it begins (``writable``) and again when
    it ends, whether the writes completed or raised.

    numpy lets other threads run while it writes a big array, so another thread's forward
    pass, or even its whole forward and backward, can run during the write and read the
    memory half written. So while the block runs, the records count as written at
    ``WRITING`` (newer than every tick) and ``writes_now`` is not 0, which makes the walker
    check nodes even when the clock has not moved since their forward pass (graph.py:
    ``writes_now or node.memory is not write_tick``, before and after each rule). At the
    end the records get a new tick, newer than that of any node made before the write
    completed, so such a node's backward raises; a node made after it has that tick or a
    later one. A walker reads ``writes_now`` before ``write_tick``: if the count it saw is
    already down, the clock it reads next shows the end's tick. The records stamped are
    those the tensors had when the block began (not memory a ``t.data = new`` gave them
    since). Two threads writing the same tensor at once are not ordered: that is a race in
    the caller's program."""

    __slots__ = ("tensors", "records")

    def __init__(self, tensors: tuple["Tensor", ...]) -> None:
        self.tensors = tensors
        self.records: list[MemoryRecord] = []

    def __enter__(self) -> list[np.ndarray]:
        arrays, self.records = _writable(self.tensors)
        _begin_writes(self.records)
        return arrays

    def __exit__(self, *exc: object) -> None:
        _end_writes(self.records)


def writing(*tensors: "Tensor") -> Writing:
    """The tracked write every handgrad write goes through (``t += x`` under no_grad,
    optimizer steps, ``load_state_dict``): see ``Writing``. The arrays are for the block
    alone (kept by nobody, as ``writable(keep=False)``)."""
    return Writing(tensors)


def can_write(t: "Tensor") -> bool:
    """Whether ``writable(t)`` gives an array numpy lets handgrad write: the tensor's array
    is writeable, or read-only only because a live node locked it (``writable`` unlocks
    it). Read-only memory of the caller's (``np.frombuffer`` of bytes, a broadcast view)
    is not. Changes nothing, so a caller writing several tensors (``load_state_dict``)
    checks them all before it writes any."""
    array = t._data
    _acquire()                   # a node released meanwhile unlocks: flags and list agree
    try:
        if array.flags.writeable:
            return True
        record = t._memory
        return record is not None and any(a is array for a in record.locked or ())
    finally:
        _unlock()


def frozen_copy(array: np.ndarray) -> np.ndarray:
    """A private read-only copy of an array parameter (an index, a mask), as a node keeps
    it: the caller may change theirs later."""
    array = array.copy()
    array.flags.writeable = False
    return array


# --- after an op's forward (op.py) ---------------------------------------------------------------

def share_view(out: "Tensor", inputs: Sequence["Tensor"]) -> None:
    """If the op's output array is an input's memory (a numpy view, or the very array),
    the output shares that input's record: a write through one is a write to both."""
    data = out._data
    own = owner(data)
    for t in inputs:
        if own is owner(t._data):
            record = record_of(t)
            _add_view(record, data)
            out._memory = record
            return


def after_forward(node: "Node", out: "Tensor", inputs: Sequence["Tensor"],
                  arrays: Sequence[np.ndarray], anomaly: bool) -> None:
    """What ``node`` (which saved something) holds of handed-out memory: locked while
    something outside handgrad holds its arrays; an input's memory nothing outside holds
    is no longer handed out (saved by the node or not); saved
    arrays on foreign memory checksummed; under detect_anomaly, every saved tensor array
    checksummed too."""
    locks: list[MemoryRecord] | None = None
    for t in inputs:
        record = t._memory
        if record is None or not record.handed_out:
            continue
        if not (record.foreign or _held_outside(record, node, inputs, arrays)):
            # Nothing outside holds it, so nobody can write it: saved or not (a bias the
            # node does not save), it stops counting as handed out, and later steps skip it.
            record.handed_out = False
        elif _saves_memory_of(node, t, out):
            if locks is None:
                locks = [record]
            elif record not in locks:
                locks.append(record)
    if locks is None and not anomaly:
        return
    locks = locks or []
    held = list(_held_tensors(node, out))
    if anomaly:
        for _, t in held:
            record = t._memory
            if record is not None and record.handed_out and record not in locks:
                locks.append(record)
    if locks:
        _acquire()
        try:
            for record in locks:
                record.holders += 1
                if record.locked is None:
                    _lock(record)
        finally:
            _unlock()
    foreign_sums = None
    if any(record.foreign for record in locks):
        foreign_sums = [(position, t._data, checksum(t._data)) for position, t in held
                        if t._memory is not None and t._memory.foreign]
        if foreign_sums:
            _advance()
    anomaly_sums = [(p, t._data, checksum(t._data)) for p, t in held] if anomaly else None
    node.memory = NodeHolds(node.memory, locks, anomaly_sums, foreign_sums)


def _held_outside(record: MemoryRecord, node: "Node", inputs: Sequence["Tensor"],
                  arrays: Sequence[np.ndarray]) -> bool:
    """Whether something besides handgrad (this record, these inputs, the forward's array
    list, what the node saved, the record's views) references an array of the memory.
    Other live nodes and tensors count as outside: that errs on the side of a lock."""
    saved = node.saved
    seen: list["Tensor"] = []
    for t in inputs:
        if not any(t is s for s in seen):
            seen.append(t)

    def known(i: int) -> int:                  # i == -1: the owner, else views[i]
        array = record.owner if i < 0 else record.views[i]
        count = sum(t._data is array for t in seen) + sum(a is array for a in arrays)
        count += sum(v is array for v in saved)
        if i < 0:
            return 1 + count + sum(v.base is array for v in record.views)
        return 1 + count

    if _references((record.owner,)) > known(-1):
        return True
    views = record.views
    for i in range(len(views)):
        if _references((views[i],)) > known(i):
            return True
    return False


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


def _lock(record: MemoryRecord) -> None:   # with _LOCK held
    """Make the arrays tensors hold on this memory read-only (the owner first). An owner
    that numpy would not make writeable again stays as it is: it is foreign memory, which
    the nodes checksum anyway."""
    locked = record.locked if record.locked is not None else []
    skip = record.owner if record.foreign and not _reversible(record.owner) else None
    for array in (record.owner, *record.views):
        if array.flags.writeable and array is not skip:
            array.flags.writeable = False
            locked.append(array)
    record.locked = locked or None


def _unlock_arrays(record: MemoryRecord) -> None:   # with _LOCK held
    for array in record.locked or ():    # the owner first: a view can be made writeable
        array.flags.writeable = True     # again only after its base
    record.locked = None


# --- what a node saved ---------------------------------------------------------------------
#
# A rule declares the tensors' arrays it saves (``ctx.save_input``, ``ctx.save_output``):
# those are found by identity with the node's inputs and output, nothing more. Values saved
# with ``ctx.save`` are the rule's own arrays by contract, but a user op may pass an input or
# its output there too, so they are searched (identity, then numpy ``.base`` chains): the
# fallback that keeps such an op protected. ``inferred_saves`` counts what it finds.

def _held_tensors(node: "Node", out: "Tensor") -> Iterator[tuple[int, "Tensor"]]:
    """(position, tensor) for each saved value that is a tensor's memory: an input's (its
    index) or the output's (OUTPUT)."""
    inputs = node.inputs
    declared_inputs, declared_output = _declarations(node)
    seen: list[int] = []
    for k, value in enumerate(node.saved):
        if type(value) is not np.ndarray:          # shapes, counts, None, numpy scalars
            continue
        position = _declared(value, k, declared_inputs, declared_output, inputs, out)
        if position is None:
            position = _inferred(value, inputs, out)
            if position is None:
                continue
        if position not in seen:
            seen.append(position)
            yield position, out if position == OUTPUT else inputs[position]


def _declarations(node: "Node") -> tuple[tuple[int, ...], int]:
    """The indices in ``node.saved`` of the values its rule declared: the inputs
    (``ctx.save_input``) and the output (``ctx.save_output``; -1 if none)."""
    return getattr(node, "declared_inputs", ()), getattr(node, "declared_output", -1)


def _declared(value: np.ndarray, k: int, declared_inputs: tuple[int, ...],
              declared_output: int, inputs: Sequence["Tensor"], out: "Tensor") -> int | None:
    """The position of the input (or OUTPUT) whose very array ``value``, saved k-th, was
    declared to be; None if it was not declared, or is not that array (an array given
    back by ``t.data = ...`` since, or not an input at all: then it is searched as if
    saved with ``ctx.save``)."""
    if k == declared_output:
        return OUTPUT if value is out._data else None
    if k in declared_inputs:
        for i, t in enumerate(inputs):
            if value is t._data:
                return i
    return None


def _inferred(value: np.ndarray, inputs: Sequence["Tensor"], out: "Tensor") -> int | None:
    """The fallback for a value saved with ``ctx.save``: the position of the input (or
    OUTPUT) whose memory it is, the very array or a numpy view of it, or None."""
    global inferred_saves
    if value is out._data:
        position: int | None = OUTPUT
    else:
        for i, t in enumerate(inputs):
            if value is t._data:
                position = i
                break
        else:
            if value.base is None:                 # an array the rule made
                return None
            position = _view_position(value, inputs, out)
            if position is None:
                return None
    inferred_saves += 1
    return position


def _view_position(value: np.ndarray, inputs: Sequence["Tensor"], out: "Tensor") -> int | None:
    own = owner(value)
    if own is owner(out._data):
        return OUTPUT
    for i, t in enumerate(inputs):
        if own is owner(t._data):
            return i
    return None


def _saves_memory_of(node: "Node", t: "Tensor", out: "Tensor") -> bool:
    """Whether ``node`` (just run, ``out`` its output) saved ``t``'s memory: a declared
    input on the same memory record as ``t``, a declared output on ``t``'s memory (an op
    returning a view of its input), or a value saved with ``ctx.save`` on it."""
    declared_inputs, declared_output = _declarations(node)
    if not declared_inputs and declared_output < 0:
        return _inferred_holds(node.saved, t)
    record = t._memory
    inputs = node.inputs
    for k, value in enumerate(node.saved):
        if type(value) is not np.ndarray:
            continue
        position = _declared(value, k, declared_inputs, declared_output, inputs, out)
        if position is None:
            if _inferred_holds((value,), t):
                return True
        elif position == OUTPUT:
            data = out._data
            if data is t._data or data.base is not None and owner(data) is owner(t._data):
                return True
        else:
            held = inputs[position]
            if held is t or held._memory is record:
                return True
    return False


def _inferred_holds(values: Sequence[object], t: "Tensor") -> bool:
    """The fallback of ``_saves_memory_of``: whether values saved with ``ctx.save``
    include ``t``'s memory (its array, or a view of it)."""
    global inferred_saves
    data = t._data
    for value in values:
        if value is data:
            inferred_saves += 1
            return True
    own = None
    for value in values:
        if type(value) is np.ndarray and value.base is not None:
            if own is None:
                own = owner(data)
            if owner(value) is own:
                inferred_saves += 1
                return True
    return False


Checksums = list[tuple[int, np.ndarray, int]]   # (position, saved array, its checksum)


class NodeHolds:
    """What a node holds beyond its forward tick (its ``node.memory`` slot then): records
    it keeps read-only until released (when the node is freed by backward, or garbage
    collected without one); checksums of its saved arrays on foreign memory (flags cannot
    protect it); under detect_anomaly, checksums of every saved tensor array."""

    __slots__ = ("tick", "locks", "anomaly_sums", "foreign_sums", "released")

    def __init__(self, tick: int, locks: list[MemoryRecord], anomaly_sums: Checksums | None,
                 foreign_sums: Checksums | None):
        self.tick = tick
        self.locks = locks
        self.anomaly_sums = anomaly_sums
        self.foreign_sums = foreign_sums
        self.released = not locks

    def release(self, wait: bool = True) -> None:
        """Give back the records' locks: done when this returns (a write the caller makes
        next is not refused as read-only), waiting for _LOCK while another thread holds it.
        Only where waiting could deadlock is the release deferred (to the holder's
        ``_unlock``): from ``__del__`` (``wait=False``: the garbage collector freed the node,
        perhaps inside one of this thread's own sections), when ``_LOCK`` is held by this
        very thread, or by a thread that has not noted itself yet (``_owner`` 0: it may be
        this one). The walker's release (``wait=True``) never runs inside a section."""
        global _owner
        if self.released:
            return
        if not _LOCK.acquire(blocking=False):
            holder = _owner
            if holder == threading.get_ident() or (holder == 0 and not wait):
                _DEFERRED.append(self)
                return
            _LOCK.acquire()                  # another thread's section: wait for its end
        _owner = threading.get_ident()
        try:
            self._release()
        finally:
            _unlock()

    def _release(self) -> None:   # with _LOCK held
        if self.released:
            return
        self.released = True
        for record in self.locks:
            record.holders -= 1
            if record.holders == 0 and record.locked is not None:
                _unlock_arrays(record)

    def __del__(self) -> None:
        if not self.released:
            try:
                self.release(wait=False)
            except Exception:  # pragma: no cover  (interpreter shutdown)
                pass


def holds_anything(node: "Node") -> bool:
    """Whether ``node`` holds locks or checksums (for tests: a plain step holds nothing)."""
    return type(node.memory) is NodeHolds


def release(node: "Node") -> None:
    """The node is freed: give back what it kept read-only (its slot keeps its tick)."""
    holds = node.memory
    if type(holds) is NodeHolds:
        holds.release()
        node.memory = holds.tick


def is_locked(t: "Tensor") -> bool:
    """Whether ``t``'s memory is read-only now because a live node saved it (for tests)."""
    return t._memory is not None and t._memory.locked is not None


# --- before a rule runs (graph.py) ---------------------------------------------------------

def checksum(array: np.ndarray) -> int:
    """A CRC-32 of the array's bytes (and its shape): a change of any value changes it
    except with probability 2^-32."""
    data = np.ascontiguousarray(array).view(np.uint8)
    # An ndarray has the buffer protocol; numpy's stubs declare __buffer__ only for
    # Python >= 3.12, and mypy checks for 3.10.
    return zlib.crc32(data, hash(array.shape) & 0xFFFFFFFF)  # type: ignore[arg-type]


def before_rule(node: "Node", out: "Tensor") -> None:
    """Raise if memory the node saved was written after its forward pass (the walker calls
    this when the write clock moved since then, when the node holds something, and under
    detect_anomaly)."""
    holds = node.memory
    tick = forward_tick(node)
    for position, t in _held_tensors(node, out):
        record = t._memory
        if record is None:
            continue
        if record.written > tick:
            _raise_written(node, position)
        crc = _checkpoint_after(record, tick)
        if crc is not None and checksum(record.owner) != crc:
            raise RuntimeError(
                f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
                f"({node!r}), was written through its numpy array after the forward pass "
                f"(the array was handed out after that pass, and its values changed since).")
    if _RETIRED:
        _check_retired(node, tick)
    if type(holds) is not NodeHolds:
        return
    changed = _first_changed(holds.foreign_sums)
    if changed is not None:
        position, array = changed
        raise RuntimeError(
            f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
            f"({node!r}), changed after the forward pass (its checksum differs). Its "
            f"memory is not numpy's ({_buffer(array)}), so it could not be made "
            f"read-only: something wrote into it. Call backward() before changing "
            f"it, or give handgrad a copy (Tensor(array) rather than copy=False).")
    changed = _first_changed(holds.anomaly_sums)
    if changed is not None:
        raise RuntimeError(
            f"detect_anomaly: {_what(node, changed[0])}, saved for the backward of op "
            f"'{node.op.name}' ({node!r}), changed after the forward pass (its "
            f"checksum differs): something wrote into its memory, e.g. through a "
            f"numpy view taken before the forward pass.")


def _raise_written(node: "Node", position: int) -> None:
    raise RuntimeError(
        f"{_what(node, position)}, saved for the backward of op '{node.op.name}' "
        f"({node!r}), was modified by an in-place operation after the forward "
        f"pass. Call backward() before changing it (e.g. before optimizer.step()), "
        f"or compute the graph again.")


def after_rule(node: "Node", out: "Tensor") -> None:
    """Raise if a tracked write of memory the node saved began after its forward pass,
    asked again once its rule has run (the walker calls this when the write clock moved
    since that pass, or a write is running: ``writes_now``). ``before_rule`` asked before
    the rule read the memory; another thread may have begun writing it since, and then
    the rule's gradient is made of values written after the forward pass. Every tracked
    write is stamped before numpy writes (``writable``, ``Writing``), so a write that
    overlapped the rule's reads is seen here."""
    tick = forward_tick(node)
    if not writes_now and tick is write_tick:   # (in this order: see Writing)
        return                         # a node that holds something, with no write since
    for position, t in _held_tensors(node, out):
        record = t._memory
        if record is not None and record.written > tick:
            _raise_written(node, position)
    if _RETIRED:
        _check_retired(node, tick)


def replay_holds(tensors: Sequence["Tensor"]) -> tuple[int, list[tuple[MemoryRecord, int]]]:
    """What a replayed plan's forward pass (``capture.Plan.run_forward``) keeps to check
    its backward against (``replay_check``): the write clock now, and a checksum of each
    read tensor's memory that an array held outside handgrad could write with no tick
    (handed out and still referenced, or foreign: a pass over it, as a checkpoint costs).
    Handed-out memory nothing outside holds any more stops counting as handed out, as
    after an op's forward."""
    sums = []
    for t in tensors:
        record = t._memory
        if record is None or not (record.handed_out or record.foreign):
            continue
        if not record.foreign and not _maybe_saved(record, t):
            record.handed_out = False
            continue
        sums.append((record, checksum(record.owner)))
    return write_tick, sums


def replay_check(tensors: Sequence["Tensor"], holds: tuple[int, list[tuple[MemoryRecord, int]]]
                 ) -> "Tensor | None":
    """The first of ``tensors`` (a plan's outside tensors) whose memory may have changed
    since ``replay_holds`` gave ``holds``, or None: a tracked write since (its tick), a
    write through an array handed out since (the checkpoint that hand-out took), a write
    through one held since before (the checksum then)."""
    tick, sums = holds
    for record, crc in sums:
        if checksum(record.owner) != crc:
            return next(t for t in tensors if t._memory is record)
    # writes_now first, then the clock (``Writing`` says why this order): a write another
    # thread is running has not moved the clock yet, but its records count as written.
    if not writes_now and write_tick == tick:
        return None
    for t in tensors:
        held = t._memory
        if held is not None and _changed_since(held, tick):
            return t
    return None


def _check_retired(node: "Node", tick: int) -> None:
    """Raise if an array ``node`` saved is memory a tensor has left (``t.data = new``) and
    it was written after the node's forward pass: a tracked write (``t.detach()`` still on
    it), or a write through an array handed out (a checkpoint's checksum differs)."""
    for value in node.saved:                 # a live node's (the walker checked)
        if type(value) is not np.ndarray:
            continue
        own = owner(value)
        for record in _RETIRED:
            if record.owner is own and _changed_since(record, tick):
                raise RuntimeError(
                    f"an array saved for the backward of op '{node.op.name}' ({node!r}) was "
                    f"the memory of a tensor whose .data was replaced since, and it was "
                    f"written after the forward pass. Call backward() before changing it, "
                    f"or compute the graph again.")


def forward_tick(node: "Node") -> int:
    """The write clock's tick at ``node``'s forward pass."""
    holds = node.memory
    return holds.tick if type(holds) is NodeHolds else holds


def forward_change(node: "Node", t: "Tensor") -> str | None:
    """How ``t`` (an input or the output of ``node``) changed after ``node``'s forward pass,
    in words for an error message, or None when nothing the write clock can see changed
    it: its ``.data`` replaced, its memory written by handgrad (an optimizer step, ``t += x`` under no_grad,
    ``load_state_dict``), or written through an array handed out after that pass while a
    live node saved it (the checkpoint's checksum differs). The tests of a backward
    (``before_rule``), for every tensor a node read, saved or not, its graph alive or
    freed: what a picture needs to draw one point. A write through an array no checkpoint
    covers (``p.data -= lr * p.grad`` once backward() freed the graph) leaves no trace, so
    a leaf whose array was handed out after the node was made, with no checkpoint since, counts as
    changed."""
    tick = forward_tick(node)
    entry = _REPLACED.get(id(t))
    if entry is not None and entry[0]() is t and entry[1] > tick:
        return "its .data was replaced (t.data = new array)"
    record = t._memory
    if record is None:
        return None
    if record.written > tick:
        return ("it was written in place by handgrad (optimizer.step(), t += x under "
                "no_grad, load_state_dict)")
    if _changed_since(record, tick):
        return "it was written through its numpy array (t.data -= x, t.data[i] = v)"
    if t.node is None and record.handed_at > node.index and _checkpoint_after(record, tick) is None:
        # A leaf's array left handgrad after this node was made and no checkpoint recorded
        # its values (no live node saved it then: backward() had freed the graph, or the
        # node never saved it): a write through that array leaves no trace, so it cannot
        # be ruled out. (Outputs are not asked: reading activations, .numpy() for a metric,
        # is common, and writing into them is not.)
        return ("its array was handed out after that pass (t.data, t.numpy(), "
                "np.asarray(t)) with nothing recording its values, so a write through it "
                "(p.data -= lr * p.grad) cannot be ruled out; to look at values without "
                "handing the array out, print(t) or use t.numpy(copy=True)")
    return None


def unwatched(node: "Node", t: "Tensor") -> str | None:
    """Why ``t`` (a tensor ``node`` read) may hold other values now than at ``node``'s
    forward pass with nothing able to tell, in words for a caption, or None when every
    write since would have left a trace ``forward_change`` sees. A freed graph's nodes no
    longer lock or checksum what they read, so memory an array outside handgrad can write
    is unwatched from ``backward()`` on: foreign memory (``np.frombuffer``, a memmap), and
    memory still counting as handed out (``from_numpy`` or ``copy=False`` memory its caller
    held at the forward pass, an array handed out since) unless a checkpoint taken after
    that pass, which ``forward_change`` compares, vouches for its values. What a picture
    asks before it re-runs a freed graph on its leaves' values now."""
    record = t._memory
    if record is None:
        return None
    if record.foreign:
        return (f"its memory is not numpy's ({_buffer(record.owner)}: np.frombuffer, "
                f"np.memmap), which can be written with no numpy array, so nothing records "
                f"whether it changed after the forward pass")
    if record.handed_out and _checkpoint_after(record, forward_tick(node)) is None:
        return ("its memory is shared with an array outside handgrad (from_numpy, "
                "Tensor(x, copy=False), t.data = array), and a write through that array "
                "once backward() freed the graph (the next batch loaded into the same "
                "buffer) leaves no trace")
    return None


def _changed_since(record: MemoryRecord, tick: int) -> bool:
    """Whether the memory was written after ``tick``: a tracked write, or a write through
    an array handed out after it (the checksum of the checkpoint that hand-out took)."""
    if record.written > tick:
        return True
    then = _checkpoint_after(record, tick)
    return then is not None and checksum(record.owner) != then


def _checkpoint_after(record: MemoryRecord, tick: int) -> int | None:
    """The checksum of the first checkpoint taken after ``tick`` (the values a node of
    that tick saw, if nothing wrote them since), or None."""
    for when, crc in record.checkpoints or ():
        if when > tick:
            return crc
    return None


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


# --- gradients handed to .grad ------------------------------------------------------------

class GradientStore:
    """The copy-or-keep decisions of one backward pass, for the gradients it hands out.

    A training step's parameter gradients are big, and copying each one would cost about
    as much as the optimizer's update. So a tensor may keep the very array the backward
    pass computed as its ``.grad``, but only when nobody else can hold that array, because
    ``.grad`` is later changed in place (accumulation ``+=``, gradient clipping): not an
    array the caller passed in (``loss.backward(grad)``), not one already handed to another
    tensor in this pass (``add`` sends the same array to both inputs), not a view (its base
    may be another tensor's gradient), writeable (a broadcast view is not), and of the
    tensor's dtype. Anything else is copied. ``engine.grad`` hands out its results by the
    same rule."""

    __slots__ = ("handed_out", "given")

    def __init__(self, given: Iterable[np.ndarray]):
        self.given = list(given)
        self.handed_out = {id(g) for g in self.given}

    def own(self, g: np.ndarray, dtype: np.dtype) -> np.ndarray:
        """``g`` itself if its receiver may keep it, otherwise a copy."""
        key = id(g)
        if key not in self.handed_out and g.base is None and g.dtype == dtype \
                and g.flags.writeable:
            self.handed_out.add(key)
            return g
        return np.array(g, dtype=dtype, copy=True)

    def accumulate(self, tensor: "Tensor", g: np.ndarray) -> None:
        """Add ``g`` to ``tensor.grad`` (set it, if it has none). One thread at a time
        (``_ACCUMULATING``): two threads backpropagating into a shared leaf each read
        ``.grad`` as None and the second store won, and two ``+=`` on a large array (numpy
        lets go of the GIL) interleaved, losing part of both gradients."""
        with _ACCUMULATING:
            current = tensor.grad
            if current is None:
                dtype = tensor._data.dtype
                key = id(g)
                if key not in self.handed_out and g.base is None and g.dtype == dtype \
                        and g.flags.writeable:             # own(g), inlined: once per leaf
                    self.handed_out.add(key)
                    tensor.grad = g
                else:
                    tensor.grad = np.array(g, dtype=dtype, copy=True)
                return
            if type(current) is not np.ndarray or current.shape != g.shape:
                raise RuntimeError(
                    f"backward: {tensor.describe()} has a stale .grad of shape "
                    f"{np.shape(current)}, but its new gradient has shape {g.shape} (its data "
                    f"changed shape?). Set .grad = None (zero_grad()) before backward().")
            if self.given and any(np.may_share_memory(current, a) for a in self.given):
                # The .grad is (part of) an array the caller gave, such as the seed of
                # y.backward(x.grad), which other branches of this pass may still read.
                tensor.grad = current + g
                return
            current += g
