"""BLAS threads chosen by the work: a small model runs on one thread.

numpy's matrix products run on OpenBLAS (or MKL) threads. For a big product two threads
halve the time; for a small one they gain nothing, and between products OpenBLAS keeps
its idle threads spinning. On a busy machine those spinning threads compete with the
work itself: `handgrad train` on the default tiny model took 3-15 s instead of 0.6 s on a
loaded 2-core machine, and 0.8 s with one thread (benchmarks/busy_machine.py).

``threads_for(model, batch_size)`` gives one thread when the largest matrix product of a
step is small (``SMALL_WORK`` multiply-adds) and None (the thread count left alone)
otherwise; ``blas_threads(limit)`` is a context manager that applies it. Overlapping
blocks (two fits in two threads) each set and put back the count in their own thread,
and the last to end puts back the counts from before the first (``blas_threads`` says
how OpenBLAS takes a count set in one thread). ``fit(threads=...)``
and ``handgrad train --threads`` use them; ``"auto"`` is the default, an int sets the count,
``None`` leaves BLAS alone.
It needs the small pure-Python package threadpoolctl (scikit-learn's choice for this;
``pip install handgrad[threads]``); without it the thread count is left alone.

The numbers: below about 5e5 multiply-adds OpenBLAS computes a product on one thread
anyway (1 vs 2 threads gave bit-identical ``a @ b``, ``a.T @ g`` and ``g @ b.T`` in 192
random float32/float64 shapes), so the limit changes nothing but speed. Between that and
``SMALL_WORK``, float32 products split over two threads round differently in the last bits
(float64 ones did not, in the shapes tried), as they do between machines with different
core counts. The choice depends only on the model and the batch size, so a run, its
resume and its compiled twin choose alike and stay bit for bit the same.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import numpy as np

# Multiply-adds in the largest matrix product of one step below which one thread is used.
# On an idle machine two threads gain a few tens of µs per product at 1e6-1e7 multiply-adds
# (benchmarks/subnormal.py, "blas_threads" in its results JSON: (64, 784) @ (784, 32), 1.6e6,
# 34 µs on one thread); on a busy one the same product took 19 ms on two. The default
# `handgrad train` (spirals, full batch: 480 x 64 x 64 = 2e6) ran in 1.1-2.2 s on one thread
# and 8 s on two while other jobs ran. MNIST's MLP at batch 128 (2.6e7) keeps its threads.
SMALL_WORK = 1e7

Threads = int | str | None


def matmul_work(model: Any, batch_size: int) -> int:
    """Multiply-adds in the largest matrix product of one step: the batch size times the
    size of the largest 2-D parameter (a Linear layer's weight)."""
    sizes = [p.size for p in model.parameters() if p.ndim == 2]   # no p.data: nothing handed out
    return batch_size * max(sizes, default=0)


def threads_for(model: Any, batch_size: int, threads: Threads = "auto", owner: str = "threads_for") -> int | None:
    """The BLAS thread limit for training ``model`` on batches of ``batch_size``: 1 for a
    small model under ``"auto"``, ``threads`` itself if it is an int, None (no limit)
    otherwise. A bad ``threads`` is a ValueError naming ``owner``."""
    if threads is None:
        return None
    if isinstance(threads, str) and threads == "auto":
        return 1 if matmul_work(model, batch_size) < SMALL_WORK else None
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
        raise ValueError(f"{owner}: threads must be 'auto', None or a positive int, got {threads!r}")
    return int(threads)                         # a numpy integer too, as a Python int


# The blocks in force (two fits in two threads overlap), in the order they began: each
# sets and restores its own thread's count (per thread or for the whole process, as the
# OpenBLAS in use keeps it: blas_threads); a worker's block ending while others run applies
# the latest one's limit again, and the counts from before the first come back when the
# last one ends.
_BLOCKS = threading.Lock()
_ACTIVE: list[tuple[object, int]] = []   # (a token of its own, limit) per block in force
_ORIGINAL: Any = None               # threadpoolctl's limiter from the first block, to restore
# threadpoolctl's controller, made once: it finds the loaded BLAS libraries by scanning the
# process's shared objects (0.2 ms, as much as a few steps of a tiny model); the BLAS that
# numpy computes with is loaded with numpy, before any fit.
_CONTROLLER: Any = None


@contextlib.contextmanager
def blas_threads(limit: int | None) -> Iterator[int | None]:
    """Run the body with BLAS limited to ``limit`` threads (None: left alone); yields the
    limit in force. Without threadpoolctl the body runs unchanged.

    Each block sets the count in its own thread and puts back, when it ends, the counts
    its thread had when it began; when the last block ends, the counts from before the
    first one come back. OpenBLAS versions differ (numpy 2.4's takes a count set in the
    main thread for every thread and one set in another thread for that thread alone;
    numpy 2.0's keeps one count for the whole process, where the latest block to begin
    wins), so a main-thread block's count may hold in other threads' fits too while it
    runs: two overlapping fits with different ``threads`` may each run part of their steps
    on the other's count, and their float32 results may then differ in the last bits from
    a run alone (nn/threads.py's numbers); fits that choose the same count (``"auto"`` for
    two small models) are unaffected. After the last block, every thread that ran one and
    the main thread compute on the counts from before; not always with a thread pool's
    workers: with numpy 2.4.6's OpenBLAS (0.3.31), two overlapping blocks in two workers,
    the first to begin ending first, left the process on the blocks' count (README)."""
    if limit is None:
        yield None
        return
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:        # a speed matter only: the results are the same
        yield None
        return
    global _ORIGINAL, _CONTROLLER
    entry = (object(), limit)          # equal to no other block's entry
    with _BLOCKS:
        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
        limiter = _CONTROLLER.limit(limits=limit, user_api="blas")
        if not _ACTIVE:
            _ORIGINAL = limiter            # it remembers the counts from before the first
        _ACTIVE.append(entry)
    try:
        yield limit
    finally:
        with _BLOCKS:
            _ACTIVE.remove(entry)
            # OpenBLAS versions differ: numpy 2.0's takes a count set in any thread for the
            # whole process; numpy 2.4's takes one set in the main thread for every thread
            # and one set in another thread for that thread alone, so only the thread that
            # set a count can undo it. What holds under both: each block puts back, in its
            # own thread, the counts that thread had when it began; a block ending in
            # another thread than the main one, while blocks are still running, applies
            # the latest one's count again (in one process-wide count its restore undid
            # it; otherwise it touches its own thread alone); and the last block puts back
            # the counts from before the first one.
            limiter.restore_original_limits()
            if _ACTIVE and threading.current_thread() is not threading.main_thread():
                _CONTROLLER.limit(limits=_ACTIVE[-1][1], user_api="blas")
            if not _ACTIVE:
                _ORIGINAL.restore_original_limits()
                _ORIGINAL = None
