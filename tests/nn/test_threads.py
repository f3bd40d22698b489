"""nn/threads.py: one BLAS thread for a small model, the thread count left alone for a big
one, restored afterwards; the same numbers either way."""
import importlib

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn import threads

threadpoolctl = pytest.importorskip("threadpoolctl")


def blas_threads_now() -> list[int]:
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_a_small_model_runs_on_one_thread_and_the_count_comes_back():
    small = nn.MLP([2, 8, 2])
    before = blas_threads_now()
    with threads.blas_threads(threads.threads_for(small, 4)) as limit:
        assert limit == 1
        assert set(blas_threads_now()) == {1}
    assert blas_threads_now() == before


def test_the_blas_libraries_are_found_once_not_at_every_fit(monkeypatch):
    """Finding the BLAS libraries scans the process's shared objects (0.2 ms, a few steps of
    a tiny model): done at the first block, not at each fit's."""
    made = []

    class Counted(threadpoolctl.ThreadpoolController):
        def __init__(self) -> None:
            made.append(self)
            super().__init__()

    monkeypatch.setattr(threadpoolctl, "ThreadpoolController", Counted)
    monkeypatch.setattr(threads, "_CONTROLLER", None, raising=False)
    for _ in range(3):
        with threads.blas_threads(1):
            pass
    assert len(made) == 1


def test_a_big_model_keeps_its_threads():
    big = nn.MLP([784, 256, 10])
    assert threads.matmul_work(big, 128) == 128 * 784 * 256 > threads.SMALL_WORK
    before = blas_threads_now()
    with threads.blas_threads(threads.threads_for(big, 128)) as limit:
        assert limit is None
        assert blas_threads_now() == before


@pytest.mark.parametrize("given, expected", [(None, None), (2, 2), (1, 1)])
def test_an_explicit_choice_wins(given, expected):
    assert threads.threads_for(nn.MLP([2, 8, 2]), 4, given) == expected


@pytest.mark.parametrize("given", [np.int64(2), np.int32(1), np.uint16(3)])
def test_a_numpy_integer_thread_count_is_the_same_int(given):
    # it was refused: "threads must be 'auto', None or a positive int, got np.int64(2)"
    limit = threads.threads_for(nn.MLP([2, 8, 2]), 4, given, owner="fit")
    assert limit == int(given) and type(limit) is int
    x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
    model = nn.MLP([2, 8, 2])
    history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model.parameters()), (x, y),
                     epochs=1, threads=given, verbose=0)
    assert len(history.epochs) == 1


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True, np.int64(0), np.bool_(True)])
def test_a_bad_thread_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"^fit: threads must be 'auto', None or a positive int, got"):
        threads.threads_for(nn.MLP([2, 8, 2]), 4, bad, owner="fit")
    with pytest.raises(ValueError, match=r"^fit: threads must be"):
        x, y = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
        nn.fit(nn.MLP([2, 8, 2]), nn.CrossEntropyLoss(), nn.optim.SGD(nn.MLP([2, 8, 2]).parameters()),
               (x, y), epochs=1, threads=bad, verbose=0)


def test_without_threadpoolctl_the_body_runs_unchanged(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_threadpoolctl(name, *args, **kwargs):
        if name == "threadpoolctl":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_threadpoolctl)
    with threads.blas_threads(1) as limit:
        assert limit is None


def test_under_the_threshold_one_thread_gives_the_same_bits():
    """Where the limit changes nothing but speed: below 5e5 multiply-adds OpenBLAS
    computes on one thread anyway."""
    rng = np.random.default_rng(0)
    for n, k, m in [(64, 64, 64), (32, 784, 16), (4, 2, 8), (100, 40, 100)]:
        assert n * k * m < 5e5
        for dtype in (np.float32, np.float64):
            a, b = rng.standard_normal((n, k)).astype(dtype), rng.standard_normal((k, m)).astype(dtype)
            g = rng.standard_normal((n, m)).astype(dtype)
            with threadpoolctl.threadpool_limits(1, user_api="blas"):
                one = (a @ b, a.T @ g, g @ b.T)
            with threadpoolctl.threadpool_limits(2, user_api="blas"):
                two = (a @ b, a.T @ g, g @ b.T)
            assert all(np.array_equal(x, y) for x, y in zip(one, two, strict=True))


def test_fit_trains_a_small_model_on_one_thread_and_gives_the_same_numbers(monkeypatch):
    seen = []
    real = threads.blas_threads

    def spy(limit):
        seen.append((limit, blas_threads_now()))
        return real(limit)

    monkeypatch.setattr("handgrad.nn.train.blas_threads", spy)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 2)).astype(np.float32), rng.integers(0, 2, 64)
    weights = []
    for choice in ("auto", None):
        model = nn.MLP([2, 8, 2], seed=0)
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model.parameters(), lr=0.1), (x, y),
               epochs=2, batch_size=16, verbose=0, threads=choice)
        weights.append([p.data.copy() for p in model.parameters()])
    assert [limit for limit, _ in seen] == [1, None]
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_the_command_line_takes_a_thread_choice(monkeypatch, capsys):
    from handgrad.nn import cli
    chosen = []
    real = threads.blas_threads
    monkeypatch.setattr("handgrad.nn.train.blas_threads", lambda limit: chosen.append(limit) or real(limit))
    assert cli.main(["train", "--epochs", "1", "--quiet", "--threads", "2"]) == 0
    assert cli.main(["train", "--epochs", "1", "--quiet"]) == 0          # auto: a tiny model
    assert chosen == [2, 1]
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--threads", "many"])
    assert e.value.code == 2
    assert "argument --threads: must be auto, none or a positive integer, got 'many'" in capsys.readouterr().err


def test_overlapping_blocks_in_two_threads_share_one_count_and_restore_it():
    """BLAS threads are one setting of the process: two fits in two threads overlap. The
    latest block to begin sets the count; when the first one ends before it, the latest
    one's count stays (it used to put back what it saw on entry, under the other block's
    feet); the count from before comes back when the last one ends (it used to be the
    count the second block saw on entry, the first block's)."""
    import threading

    before = blas_threads_now()
    if not before:
        pytest.skip("threadpoolctl sees no BLAS library")
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def first():
        with threads.blas_threads(2):
            first_in.set()
            assert second_in.wait(10)
        first_out.set()

    worker = threading.Thread(target=first)
    worker.start()
    assert first_in.wait(10)
    with threads.blas_threads(1):
        seen["second began"] = blas_threads_now()
        second_in.set()
        assert first_out.wait(10)
        seen["first ended"] = blas_threads_now()
    worker.join(10)
    assert set(seen["second began"]) == {1}
    assert set(seen["first ended"]) == {1}
    assert blas_threads_now() == before


def test_a_block_in_the_main_thread_ending_before_a_workers_is_undone():
    """A block in the main thread, then one in a worker; the main one ends first. It used
    to re-apply the worker's count in the main thread, and the worker's final restore
    (made in the worker) never reached the main thread, where OpenBLAS had taken the
    count for every thread: the process stayed on one BLAS thread for good."""
    import threading

    before = blas_threads_now()
    if not before:
        pytest.skip("threadpoolctl sees no BLAS library")
    started, main_done = threading.Event(), threading.Event()

    def worker():
        with threads.blas_threads(1):
            started.set()
            assert main_done.wait(10)

    thread = threading.Thread(target=worker)
    with threads.blas_threads(1):
        thread.start()
        assert started.wait(10)
    main_done.set()
    thread.join(10)
    assert blas_threads_now() == before and not threads._ACTIVE


def test_fit_decides_auto_from_the_batch_size_of_the_dataloader_it_trains_on(monkeypatch):
    # it used fit's batch_size argument (default 32), which a DataLoader ignores: a loader
    # of 4096-example batches on a 500x500 model (far above SMALL_WORK) ran on one thread
    train = importlib.import_module("handgrad.nn.train")
    limits = []

    def spy(limit):
        limits.append(limit)
        return threads.blas_threads(limit)

    monkeypatch.setattr(train, "blas_threads", spy)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4096, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    big = nn.MLP([2, 500, 500, 2], seed=0)
    small = nn.MLP([2, 8, 2], seed=0)
    assert threads.threads_for(big, 4096) is None and threads.threads_for(big, 32) == 1
    for model, batch in ((big, 4096), (small, 4096), (big, 16)):
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.01),
               nn.DataLoader(X[:batch], y[:batch], batch_size=batch), epochs=1, verbose=0)
    assert limits == [None, 1, 1]
