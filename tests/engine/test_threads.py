"""The memory guard (engine/memory.py) under threads: each test forces one interleaving of
two threads deterministically (a function made to pause at the critical point, events to
order the steps) and checks the single-thread answer still holds: a write after a forward
pass raises in its backward, never a silently wrong gradient, and valid use raises nothing.

Where the fixed code makes the second thread wait for a lock the first one holds, the test
gives it a short while (``BLOCKED``) to finish anyway: without the fix it does, and the bad
interleaving follows; with it, it waits, and the test then lets the first thread go on."""
from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor, memory

MODIFIED = "in-place operation after the forward pass|was replaced since"
BLOCKED = 0.2      # seconds a thread is given to run past a lock it should wait for
TIMEOUT = 10       # seconds before a test gives up waiting (a hang is a failure, not a wait)


class Worker(threading.Thread):
    """A daemon thread that keeps what its target raised (``finish`` raises it)."""

    def __init__(self, target: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work, self.error = target, None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:  # noqa: BLE001  (handed to the test by finish)
            self.error = e


class Pause:
    """Makes one thread stop at a chosen point and wait until the test lets it go on."""

    def __init__(self) -> None:
        self.reached, self.go_on = threading.Event(), threading.Event()
        self.thread: threading.Thread | None = None

    def here(self) -> None:
        """Called at the critical point: in the chosen thread, the first time, wait."""
        if threading.current_thread() is self.thread and not self.reached.is_set():
            self.reached.set()
            assert self.go_on.wait(TIMEOUT)

    def start(self, target: Callable[[], Any]) -> threading.Thread:
        """Run ``target`` in the chosen thread and return once it reached the point."""
        self.thread = Worker(target)
        self.thread.start()
        assert self.reached.wait(TIMEOUT), "the thread never reached the pause"
        return self.thread


def run_meanwhile(target: Callable[[], Any]) -> threading.Thread:
    """Start ``target`` in another thread and give it ``BLOCKED`` seconds to finish (it may
    be waiting for a lock instead: the caller joins it later)."""
    thread = Worker(target)
    thread.start()
    thread.join(BLOCKED)
    return thread


def finish(*threads: threading.Thread) -> None:
    """Wait for the threads; raise what one of them raised."""
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a thread hung"
        if isinstance(thread, Worker) and thread.error is not None:
            raise thread.error


# --- retired memory (t.data = new) --------------------------------------------------------

def test_a_retired_record_survives_another_thread_pruning_the_list(monkeypatch):
    """Thread A replaces its tensor's array and, while it prunes the retired records, the
    main thread's tensor x leaves memory a node saved, and thread B prunes too. Unlocked,
    A's filtered list (built before B shifted the list) dropped x's record, so a tracked
    write of that memory after the forward pass went unseen: a wrong gradient."""
    monkeypatch.setattr(memory, "_RETIRED", type(memory._RETIRED)())
    dead_soon = Tensor(np.zeros(2))
    holder = dead_soon.detach()
    first = memory.record_of(dead_soon)
    dead_soon.data = np.ones(2)                  # retired: `holder` keeps the old memory
    x = Tensor(np.full(3, 2.0))
    w = Tensor(np.ones(3), requires_grad=True)
    y = x * w                                    # saves x's array
    d = x.detach()
    x.data = np.zeros(3)                         # retired after `first`
    assert [r.owner.shape for r in memory._RETIRED] == [(2,), (3,)]
    del holder                                   # `first` is dead: the next prune drops it

    pause = Pause()
    real = memory._maybe_saved

    def pausing(record: memory.MemoryRecord, t: Tensor | None) -> bool:
        if record is first:
            pause.here()                         # A, pruning: it has read the list's start
        return real(record, t)

    monkeypatch.setattr(memory, "_maybe_saved", pausing)
    a, b = Tensor(np.zeros(2)), Tensor(np.zeros(2))
    thread_a = pause.start(lambda: setattr(a, "data", np.ones(2)))
    thread_b = run_meanwhile(lambda: setattr(b, "data", np.ones(2)))   # prunes `first`
    pause.go_on.set()
    finish(thread_a, thread_b)
    assert any(r.owner is y.node.saved[0] for r in memory._RETIRED)
    with engine.no_grad():
        d += 1.0                                 # a tracked write of the memory y saved
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


# --- the write clock ----------------------------------------------------------------------

class PausingTicks:
    """The write clock's counter, pausing the chosen thread right after it drew a tick
    (before ``_advance`` stores it: the point where a thread can be switched out)."""

    def __init__(self, pause: Pause) -> None:
        self.ticks, self.pause = memory._ticks, pause

    def __iter__(self) -> "PausingTicks":
        return self

    def __next__(self) -> int:
        tick = next(self.ticks)
        self.pause.here()
        return tick


def test_the_write_clock_never_moves_back(monkeypatch):
    """Thread A draws a tick and is switched out before it stores it; meanwhile thread B
    writes its own parameter (a newer tick). Unlocked, A's late store moved the clock
    back: B's next forward got a tick older than its parameter's write, and its backward
    raised a spurious "modified by an in-place operation" once the clock moved again."""
    pause = Pause()
    monkeypatch.setattr(memory, "_ticks", PausingTicks(pause))
    p = Tensor(np.ones(3), requires_grad=True)
    x = Tensor(np.full(3, 2.0))
    thread_a = pause.start(memory._advance)      # A: any tracked write, checkpoint, replacement

    def b_step() -> None:
        with engine.no_grad():
            p.__isub__(0.5)                      # B's optimizer step: a newer tick
    thread_b = run_meanwhile(b_step)
    pause.go_on.set()
    finish(thread_a, thread_b)
    assert memory.write_tick >= memory.record_of(p).written
    y = (p * x).sum()                            # B's forward, after its step
    with engine.no_grad():
        Tensor(np.zeros(2)).__iadd__(1.0)        # some write elsewhere: the clock moves
    y.backward()                                 # nothing y saved was written since
    assert np.array_equal(p.grad, [2.0, 2.0, 2.0])


# --- a write stamped only when it begins --------------------------------------------------

def pause_after_writable(monkeypatch, pause: Pause) -> None:
    """The chosen thread stops once its write is stamped, before numpy writes (where a
    big array's write lets other threads run)."""
    real = memory._writable          # behind writable() and engine.writing

    def stamped_then_paused(tensors, keep=False):
        stamped = real(tensors, keep)
        pause.here()
        return stamped

    monkeypatch.setattr(memory, "_writable", stamped_then_paused)


def test_a_forward_during_an_inplace_write_raises_in_its_backward(monkeypatch):
    """Thread A runs `x += 1` under no_grad; the main thread's forward y = x * w runs after
    the write was stamped but before numpy wrote. Stamped only before, the write looked
    older than the forward: the backward used the new x, a wrong gradient, with no error."""
    pause = Pause()
    pause_after_writable(monkeypatch, pause)
    x = Tensor(np.full(3, 2.0))
    w = Tensor(np.ones(3), requires_grad=True)

    def add() -> None:
        with engine.no_grad():
            x.__iadd__(1.0)
    thread = pause.start(add)
    y = x * w                                    # reads x = 2
    pause.go_on.set()
    finish(thread)                               # x = 3 now
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.sum().backward()


def test_a_write_while_a_rule_reads_raises(monkeypatch):
    """Thread A runs y.sum().backward(); the mul rule is paused once the walker's check
    before it passed (no write since the forward), and the main thread then writes x, which
    the rule reads for w's gradient. Checked only before the rule, the gradient was made
    of the new values with no error; the check after the rule sees the write."""
    pause = Pause()
    mul = engine.REGISTRY["mul"]
    real = mul.backward

    def paused_rule(node: Any, grad: np.ndarray) -> Any:
        pause.here()
        return real(node, grad)

    monkeypatch.setattr(mul, "backward", paused_rule)
    x = Tensor(np.full(3, 2.0))
    w = Tensor(np.ones(3), requires_grad=True)
    y = x * w
    thread = pause.start(lambda: y.sum().backward())
    with engine.no_grad():
        x += 1.0                                 # x = 3 while the rule is about to read it
    pause.go_on.set()
    with pytest.raises(RuntimeError, match=MODIFIED):
        finish(thread)
    assert w.grad is None


def test_a_forward_during_an_optimizer_step_raises_in_its_backward(monkeypatch):
    """The same with an optimizer's step in thread A (and load_state_dict, in thread B)."""
    from handgrad import nn

    model = nn.Linear(3, 2, dtype=np.float64)
    opt = nn.optim.SGD(model.parameters(), lr=0.1)
    x = Tensor(np.ones((4, 3)))
    model(x).sum().backward()
    for step in (opt.step, lambda: model.load_state_dict({k: v + 1 for k, v in model.state_dict().items()})):
        pause = Pause()
        pause_after_writable(monkeypatch, pause)
        thread = pause.start(step)
        y = model(x).sum()                       # reads the weights before the write
        pause.go_on.set()
        finish(thread)
        with pytest.raises(RuntimeError, match=MODIFIED):
            y.backward()


# --- locks given back by backward ---------------------------------------------------------

def test_backward_gives_the_lock_back_while_another_thread_holds_the_memory_lock(monkeypatch):
    """The main thread's graph saved t while its array `a` was held (so `a` is read-only
    while the node lives). Thread Y is inside a section of the memory lock (its own forward
    locking its own tensor) when thread X runs backward() and then writes `a`, which is
    valid once the node is freed. The release used to be deferred to Y's unlock, so the
    write raised "assignment destination is read-only"; now X waits for Y's section."""
    t = Tensor(np.ones(4), requires_grad=True)
    x = Tensor(np.ones(4))
    a = t.data
    y = (x * t).sum()
    assert memory.is_locked(t)
    pause = Pause()
    real = memory._lock

    def paused_lock(record: memory.MemoryRecord) -> None:
        pause.here()                             # Y, holding the memory lock
        real(record)

    monkeypatch.setattr(memory, "_lock", paused_lock)

    def y_forward() -> None:
        u = Tensor(np.ones(2), requires_grad=True)
        held = u.data                            # noqa: F841  (held: u's node locks it)
        (u * u).sum()

    def x_backward_then_write() -> None:
        y.backward()
        a[0] = 5.0

    thread_y = pause.start(y_forward)
    thread_x = run_meanwhile(x_backward_then_write)
    pause.go_on.set()
    finish(thread_y, thread_x)
    assert a[0] == 5.0 and not memory.is_locked(t)


def test_a_node_freed_inside_this_threads_own_section_is_released_at_its_end():
    """Waiting is for other threads' sections only: a node freed while this very thread
    holds the memory lock (the garbage collector inside a section) is released when the
    section ends, with no deadlock."""
    t = Tensor(np.ones(4), requires_grad=True)
    a = t.data                                   # noqa: F841  (held: the node locks t)
    y = (Tensor(np.ones(4)) * t).sum()
    assert memory.is_locked(t)
    memory._acquire()
    try:
        del y                                    # the node and its holds go now
        assert memory.is_locked(t)               # deferred: this thread holds the lock
    finally:
        memory._unlock()
    assert not memory.is_locked(t)


def test_a_whole_forward_and_backward_during_a_write_raises(monkeypatch):
    """numpy may let another thread run a whole forward and backward pass while it writes
    a big array (thread A's `x += 1`, paused here once the write began). No tick moves in
    between, so the walker used to skip its checks: the rule read x half written, with no
    error. While a write runs, the walker checks, and x counts as written."""
    pause = Pause()
    real = memory._begin_writes

    def begun_then_paused(records: Any) -> None:
        real(records)
        pause.here()

    monkeypatch.setattr(memory, "_begin_writes", begun_then_paused)
    x = Tensor(np.full(3, 2.0))
    w = Tensor(np.ones(3), requires_grad=True)

    def add() -> None:
        with engine.no_grad():
            x.__iadd__(1.0)
    thread = pause.start(add)
    try:
        y = x * w                                # all of it while A's write runs
        with pytest.raises(RuntimeError, match=MODIFIED):
            y.sum().backward()
    finally:
        pause.go_on.set()
        finish(thread)
    y = x * w                                    # after the write: no error
    y.sum().backward()
    assert np.array_equal(w.grad, [3.0, 3.0, 3.0])


def _plan_and_weights() -> tuple[Any, Tensor, Tensor]:
    w1, w2 = Tensor(np.ones((3, 3)), requires_grad=True), Tensor(np.ones((3, 3)), requires_grad=True)
    plan = engine.capture(lambda x: ((x @ w1).tanh() @ w2).sum(), np.ones((2, 3)))
    return plan, w1, w2


def test_a_plan_run_while_another_threads_write_runs_raises():
    """A replayed plan checked the clock alone before its backward: a tracked write another
    thread had begun (an optimizer step half done) had not moved it, and the plan's whole
    pass used w1 new and w2 old, with no error (eager raised)."""
    plan, w1, w2 = _plan_and_weights()
    inside, done = threading.Event(), threading.Event()

    def half_a_step() -> None:
        with engine.writing(w1, w2) as (a, b):
            a += 1.0
            inside.set()
            done.wait(10)
            b += 1.0
    thread = threading.Thread(target=half_a_step)
    thread.start()
    inside.wait(10)
    try:
        plan.run_forward(np.ones((2, 3)))
        with pytest.raises(RuntimeError, match="may have been written since run_forward"):
            plan.run_backward(lambda k, g: None)
    finally:
        done.set()
        finish(thread)
    plan(np.ones((2, 3)))                           # after the write: replayed as usual


def test_a_write_during_a_plans_backward_raises_after_it():
    """Another thread's tracked write begun and ended while the plan's backward rules ran:
    the plan checked before its backward only, and gave gradients of two points."""
    plan, w1, w2 = _plan_and_weights()

    def step() -> None:
        with engine.writing(w1, w2) as (a, b):
            a += 1.0
            b += 1.0

    def write_once(k: int, g: np.ndarray) -> None:
        if k == 0:                                 # the first leaf's gradient is final
            thread = threading.Thread(target=step)
            thread.start()
            finish(thread)
    plan.run_forward(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match="written while the backward pass ran"):
        plan.run_backward(write_once)


# --- gradients accumulated into a shared leaf ------------------------------------------------

def test_two_threads_accumulating_into_one_leaf_keep_both_gradients():
    """Two threads backpropagating into one leaf: each read .grad as None before either
    stored its gradient, and the second store won (one thread's gradient lost, silently;
    PyTorch accumulates under a lock). The first thread pauses between its read and its
    store; the second must wait for it, then add to what it stored."""
    w = Tensor(np.zeros(3), requires_grad=True)
    pause = Pause()

    class PausingSet(set):
        def add(self, key: object) -> None:       # between reading .grad and storing it
            pause.here()
            super().add(key)

    def accumulate(g: np.ndarray, pausing: bool = False) -> None:
        store = memory.GradientStore(())
        if pausing:
            store.handed_out = PausingSet()
        store.accumulate(w, g)
    first = pause.start(lambda: accumulate(np.full(3, 1.0), pausing=True))
    second = run_meanwhile(lambda: accumulate(np.full(3, 2.0)))
    pause.go_on.set()
    finish(first, second)
    np.testing.assert_array_equal(w.grad, [3.0, 3.0, 3.0])


# --- one plan, two threads ----------------------------------------------------------------

def test_a_plan_running_in_one_thread_is_refused_to_another():
    """Two threads replaying one plan shared its saved values: gradients mixed from both
    threads' inputs (off by up to 8.9 in a hunt), or unrelated errors. While one thread is
    inside the plan (its backward here), another thread's replay is refused."""
    plan, _, _ = _plan_and_weights()
    pause = Pause()

    def forward_and_backward() -> None:
        plan.run_forward(np.ones((2, 3)))
        plan.run_backward(lambda k, g: pause.here())
    first = pause.start(forward_and_backward)
    try:
        for run in (lambda: plan.run_forward(np.ones((2, 3))), lambda: plan(np.ones((2, 3))),
                    lambda: plan.run_backward(lambda k, g: None)):
            with pytest.raises(RuntimeError, match="another thread is running this plan"):
                run()
    finally:
        pause.go_on.set()
        finish(first)
    plan(np.ones((2, 3)))                           # the other thread done: replayed as usual


def test_a_plan_backward_of_another_threads_forward_is_refused():
    """Thread A's forward, then thread B's backward: B would use A's saved values."""
    plan, _, _ = _plan_and_weights()
    other = Worker(lambda: plan.run_forward(np.full((2, 3), 2.0)))
    other.start()
    finish(other)
    with pytest.raises(RuntimeError, match="the last run_forward ran in another thread"):
        plan.run_backward(lambda k, g: None)
    plan.run_forward(np.ones((2, 3)))
    plan.run_backward(lambda k, g: None)
