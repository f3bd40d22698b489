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
        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        assert self.reached.wait(TIMEOUT), "the thread never reached the pause"
        return self.thread


def run_meanwhile(target: Callable[[], Any]) -> threading.Thread:
    """Start ``target`` in another thread and give it ``BLOCKED`` seconds to finish (it may
    be waiting for a lock instead: the caller joins it later)."""
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BLOCKED)
    return thread


def finish(*threads: threading.Thread) -> None:
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a thread hung"


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
