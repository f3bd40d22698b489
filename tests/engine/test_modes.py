"""Grad mode, anomaly mode and name scopes are per thread, and the mode decorators apply
inside generator functions while their code runs.

Threads are interleaved deterministically with events: one thread enters a mode and waits
while the other builds a graph, so each test fails if the mode leaked across threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from handgrad import engine


def leaf():
    return engine.Tensor(np.array([1.0, 2.0]), requires_grad=True)


def run_while(mode_factory, work):
    """Run ``work()`` in this thread while another thread sits inside ``mode_factory()``."""
    entered, done = threading.Event(), threading.Event()
    errors = []

    def other():
        try:
            with mode_factory():
                entered.set()
                done.wait(10)
        except Exception as e:  # pragma: no cover
            errors.append(e)

    thread = threading.Thread(target=other)
    thread.start()
    assert entered.wait(10)
    try:
        return work()
    finally:
        done.set()
        thread.join(10)
        assert not errors


def test_no_grad_in_another_thread_does_not_stop_this_one_recording():
    out = run_while(engine.no_grad, lambda: (leaf() * 2).sum())
    assert out.requires_grad and out.node is not None
    assert engine.is_grad_enabled()


def test_no_grad_here_does_not_stop_another_thread_recording():
    results = []

    def other():
        results.append((leaf() * 2).sum())

    with engine.no_grad():
        thread = threading.Thread(target=other)
        thread.start()
        thread.join(10)
        assert not engine.is_grad_enabled()
    assert results[0].requires_grad and results[0].node is not None


def test_detect_anomaly_is_per_thread():
    x = engine.Tensor(np.array([0.0]), requires_grad=True)

    def work():
        with np.errstate(divide="ignore"):
            return engine.log(x)       # -inf: raises only under detect_anomaly, in this thread
    out = run_while(engine.detect_anomaly, work)
    assert np.isneginf(out.data).all()
    assert not engine.is_anomaly_enabled()


def test_name_scopes_are_per_thread():
    def scoped():
        return engine.name_scope("other_thread")
    out = run_while(scoped, lambda: leaf() * 2)
    assert out.node.scope is None
    with engine.name_scope("layers"), engine.name_scope("0"):
        assert engine.current_scope() == "layers.0"
        assert (leaf() * 2).node.scope == "layers.0"
    assert engine.current_scope() is None


def test_a_decorated_function_used_by_two_threads_keeps_each_threads_mode():
    barrier = threading.Barrier(2, timeout=10)
    seen = {}

    @engine.no_grad()
    def evaluate(name):
        barrier.wait()             # both threads inside the decorated call at once
        seen[name] = engine.is_grad_enabled()
        barrier.wait()

    def other():
        evaluate("other")

    thread = threading.Thread(target=other)
    thread.start()
    evaluate("main")
    thread.join(10)
    assert seen == {"main": False, "other": False}
    assert engine.is_grad_enabled()                # restored in this thread


def test_no_grad_on_a_generator_applies_inside_it_not_to_its_consumer():
    x = leaf()

    @engine.no_grad()
    def outputs():
        for k in range(3):
            yield (x * k).sum()          # computed under no_grad

    for out in outputs():
        assert out.node is None and not out.requires_grad
        assert engine.is_grad_enabled()              # the consumer records as usual
        assert (x * 2).sum().node is not None


def test_a_decorated_generator_gets_sent_values_thrown_exceptions_and_its_return_value():
    @engine.no_grad()
    def echo():
        received = yield engine.is_grad_enabled()
        try:
            yield (received, engine.is_grad_enabled())
        except KeyError:
            yield "caught"
        return "finished"

    gen = echo()
    assert next(gen) is False
    assert gen.send("hello") == ("hello", False)
    assert gen.throw(KeyError()) == "caught"
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "finished"
    assert engine.is_grad_enabled()


def test_enable_grad_and_set_grad_enabled_decorate_generators_too():
    @engine.enable_grad()
    def inner():
        yield engine.is_grad_enabled()

    with engine.no_grad():
        assert list(inner()) == [True]
        assert not engine.is_grad_enabled()
    with engine.set_grad_enabled(False):
        assert not engine.is_grad_enabled()
    assert engine.is_grad_enabled()


def test_a_scope_can_be_set_by_its_full_name():
    outer = engine.push_scope("model")
    inner = engine.push_scope("layers.0", nested=False)
    assert engine.current_scope() == "layers.0"
    engine.pop_scope(inner)
    assert engine.current_scope() == "model"
    engine.pop_scope(outer)
    assert engine.current_scope() is None


def _interleaved(context, inner_outer):
    """Thread A enters ``context``; thread B, inside ``inner_outer`` (its own block), enters
    the same object; A leaves first, then B. What each thread's state is after."""
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with context:
            a_in.set()
            assert b_in.wait(10)
        seen["a"] = (engine.is_grad_enabled(), engine.current_scope())
        a_out.set()

    def b():
        with inner_outer:
            assert a_in.wait(10)
            with context:
                b_in.set()
                assert a_out.wait(10)
            seen["b"] = (engine.is_grad_enabled(), engine.current_scope())

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return seen


def test_one_no_grad_object_entered_by_two_threads_restores_each_threads_own_mode():
    """``NO_GRAD = engine.no_grad()`` used by two threads kept one stack of previous modes:
    each thread was restored to the other's (the training thread left its block with
    gradients off, the evaluation thread with them on)."""
    seen = _interleaved(engine.no_grad(), engine.no_grad())
    assert seen["a"][0] is True and seen["b"][0] is False


def test_one_name_scope_object_entered_twice_restores_each_scope():
    """A shared name_scope left a thread inside a scope it never entered (its nodes then
    carried another thread's name), and ``with S: with S:`` in one thread left 'blk'."""
    seen = _interleaved(engine.name_scope("stats"), engine.name_scope("validation"))
    assert seen["a"][1] is None and seen["b"][1] == "validation"
    scope = engine.name_scope("blk")
    with scope:
        with scope:
            assert engine.current_scope() == "blk.blk"
        assert engine.current_scope() == "blk"
    assert engine.current_scope() is None


def test_set_grad_enabled_called_plainly_sets_the_mode_as_in_pytorch():
    """``engine.set_grad_enabled(False)`` as a plain call built an object and changed
    nothing: graphs kept recording (torch.set_grad_enabled(False) turns them off)."""
    x = engine.Tensor(np.ones(2), requires_grad=True)
    try:
        engine.set_grad_enabled(False)
        assert not engine.is_grad_enabled() and (x * 2).node is None
        engine.set_grad_enabled(True)
        assert (x * 2).node is not None
        with engine.set_grad_enabled(False):          # the block puts back the mode before it
            assert not engine.is_grad_enabled()
        assert engine.is_grad_enabled()

        @engine.set_grad_enabled(False)               # a decorator leaves the mode alone
        def inside() -> bool:
            return engine.is_grad_enabled()
        assert engine.is_grad_enabled() and not inside() and engine.is_grad_enabled()
        with engine.no_grad():
            with engine.set_grad_enabled(True):
                assert engine.is_grad_enabled()
            assert not engine.is_grad_enabled()
    finally:
        engine.set_grad_enabled(True)
