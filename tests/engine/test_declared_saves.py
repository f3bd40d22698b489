"""Declared saves: ``ctx.save_input(x)`` and ``ctx.save_output(y)`` tell handgrad which saved
values are tensors' memory, so engine/memory.py protects them without searching for them.

* a declared input or output is protected exactly like one found by the identity search
  (the fallback for a user op's plain ``ctx.save(x)``): the same errors, the same locks;
* saves keep the order of the calls, in the graph and in a replayed plan, and a compiled
  step replays ops with declared saves bit for bit;
* no built-in op leaves its inputs or output to the search (``memory.inferred_saves``).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine import Tensor, memory
from handgrad.engine.testing import spec_for
from handgrad.engine.testing.properties import differentiable_positions

MODIFIED = r"was modified by an in-place operation after the forward pass"


def _square_op(style: str) -> type:
    """square(x) = x^2, saving its input declared (save_input) or plainly (save)."""

    class Square(engine.Op):
        """square(x) = x^2."""

        name = "declared_square"
        rule = "d/dx = 2 x"

        def forward(self, ctx, x):
            if style == "declared":
                ctx.save_input(x)
            else:
                ctx.save(x)
            return x * x

        def backward(self, ctx, grad):
            (x,) = ctx.saved
            return (2 * x * grad,)

        def jvp(self, ctx, dx):
            (x,) = ctx.saved
            return 2 * x * dx

    return Square


def _exp_op(style: str) -> type:
    """exp(x), saving its output declared (save_output) or plainly (save)."""

    class Exp(engine.Op):
        """declared_exp(x) = e^x."""

        name = "declared_exp"
        rule = "d/dx = e^x"

        def forward(self, ctx, x):
            y = np.exp(x)
            if style == "declared":
                ctx.save_output(y)
            else:
                ctx.save(y)
            return y

        def backward(self, ctx, grad):
            (y,) = ctx.saved
            return (grad * y,)

        def jvp(self, ctx, dx):
            (y,) = ctx.saved
            return dx * ctx.saved[0]

    return Exp


@pytest.fixture
def registered():
    """Register test ops by class; unregister them after the test."""
    names = []

    def register(cls):
        engine.register(cls)
        names.append(cls.name)
        return engine.REGISTRY[cls.name]

    yield register
    for name in names:
        engine.unregister(name)


def leaf(values):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# Each way to change a saved input between the forward and the backward pass, and what it gets.
def _write_with_inplace(x, y):
    w, = engine.inplace(x)
    w += 1.0
    y.backward()


def _write_data_after_forward(x, y):
    x.data[0] = 5.0                      # handed out only now: checked by checksum
    y.backward()


def _write_array_held_from_before(x, y, held):
    held[0] = 5.0                        # read-only while the graph lives


def _write_view_under_anomaly(x, y, view):
    view[0] = 5.0                        # a view keeps its own flag: only the checksum sees it
    y.backward()


def _outcome(style: str, scenario: str, registered) -> tuple[str, str, int]:
    """(exception type, message, how many saves the search found) for one scenario."""
    op = registered(_square_op(style))
    x = leaf([1.0, 2.0, 3.0])
    before = memory.inferred_saves
    try:
        if scenario == "inplace":
            _write_with_inplace(x, op(x).sum())
        elif scenario == "data after":
            _write_data_after_forward(x, op(x).sum())
        elif scenario == "held before":
            held = x.data
            y = op(x).sum()
            _write_array_held_from_before(x, y, held)
        else:
            view = x.data[1:]
            with engine.detect_anomaly():
                _write_view_under_anomaly(x, op(x).sum(), view)
    except (RuntimeError, ValueError) as e:
        return type(e).__name__, re.sub(r"#\d+", "#N", str(e)), memory.inferred_saves - before
    return "no error", "", memory.inferred_saves - before


@pytest.mark.parametrize("scenario", ["inplace", "data after", "held before", "anomaly view"])
def test_a_declared_input_is_protected_exactly_like_one_found_by_the_search(scenario, registered):
    declared = _outcome("declared", scenario, registered)
    engine.unregister("declared_square")
    inferred = _outcome("plain", scenario, registered)
    assert declared[:2] == inferred[:2]
    assert declared[0] in ("RuntimeError", "ValueError"), declared
    assert "declared_square" in declared[1] or "read-only" in declared[1]
    assert declared[2] == 0 < inferred[2]       # only the plain save needed the search


@pytest.mark.parametrize("style", ["declared", "plain"])
def test_a_declared_output_is_protected_like_one_found_by_the_search(style, registered):
    op = registered(_exp_op(style))
    x = leaf([0.5, 1.0])
    before = memory.inferred_saves
    e = op(x)
    loss = e.sum()
    e.data[0] = 0.0                                  # the output, written after the forward
    with pytest.raises(RuntimeError, match=r"the output of op 'declared_exp'.*written through"):
        loss.backward()
    assert (memory.inferred_saves > before) is (style == "plain")

    e = op(x)
    loss = e.sum()
    w, = engine.inplace(e)
    w *= 2.0
    with pytest.raises(RuntimeError, match=r"the output of op 'declared_exp'.*" + MODIFIED):
        loss.backward()


def test_a_declared_input_held_from_before_is_read_only_until_backward(registered):
    op = registered(_square_op("declared"))
    x = leaf([1.0, 2.0])
    held = x.data
    y = op(x).sum()
    assert memory.is_locked(x)
    with pytest.raises(ValueError, match="read-only"):
        held[0] = 5.0
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    held[0] = 5.0                                    # the graph is freed: writable again


def test_a_save_input_of_an_array_that_is_no_input_is_still_protected(registered):
    """A wrong declaration (a view of the input, not the input) falls back to the search."""

    class Reversed(engine.Op):
        """declared_rev(x) = x[::-1] * 1."""

        name = "declared_rev"
        rule = "d/dx = reversed grad"

        def forward(self, ctx, x):
            ctx.save_input(x[::-1])              # not what forward got: a view of it
            return x[::-1] * 1.0

        def backward(self, ctx, grad):
            (xr,) = ctx.saved
            return (grad[::-1] * np.ones_like(xr),)

        def jvp(self, ctx, dx):
            return dx[::-1] * 1.0

    op = registered(Reversed)
    x = leaf([1.0, 2.0])
    y = op(x).sum()
    w, = engine.inplace(x)
    w += 1.0
    with pytest.raises(RuntimeError, match=r"input 0 .*'declared_rev'.*" + MODIFIED):
        y.backward()


def test_saves_keep_the_order_of_the_calls(registered):
    seen = []

    class Mixed(engine.Op):
        """declared_mixed(x) = 2 x."""

        name = "declared_mixed"
        rule = "d/dx = 2"

        def forward(self, ctx, x):
            mask = x > 0
            y = 2 * x
            ctx.save(mask)
            ctx.save_input(x)
            ctx.save_output(y)
            ctx.save(x.shape)
            return y

        def backward(self, ctx, grad):
            seen.append(ctx.saved)
            return (2 * grad,)

        def jvp(self, ctx, dx):
            return 2 * dx

    op = registered(Mixed)
    x = leaf([-1.0, 3.0])
    y = op(x)
    mask, xs, ys, shape = y.node.saved
    assert xs is x._data and ys is y._data and shape == (2,)
    np.testing.assert_array_equal(mask, [False, True])
    assert (y.node.declared_inputs, y.node.declared_output) == ((1,), 2)

    plan = engine.capture(lambda v: (op(v * x)).sum(), np.ones(2))
    seen.clear()
    plan(np.array([1.0, -4.0]))
    (mask, xs, ys, shape), = seen
    np.testing.assert_array_equal(mask, [False, False])
    np.testing.assert_array_equal(xs, [-1.0, -12.0])
    np.testing.assert_array_equal(ys, [-2.0, -24.0])
    assert shape == (2,)


def test_a_0d_output_returned_as_a_numpy_scalar_needs_no_search():
    """tanh of a 0-d array returns a numpy scalar, which the node saves: nothing can write
    it, so there is nothing to protect and nothing to search."""
    x = Tensor(np.array(0.5), requires_grad=True)
    before = memory.inferred_saves
    with engine.detect_anomaly():
        x.tanh().backward()
    assert memory.inferred_saves == before
    assert x.grad == pytest.approx(1 - np.tanh(0.5) ** 2, rel=1e-15)


# --- compiled steps ------------------------------------------------------------------------

def _model(registered):
    square = registered(_square_op("declared"))
    exp = registered(_exp_op("declared"))
    rng = np.random.default_rng(0)
    W = Tensor(rng.normal(size=(3, 4)), requires_grad=True, name="W")
    b = Tensor(rng.normal(size=4), requires_grad=True, name="b")
    V = Tensor(rng.normal(size=(4, 2)), requires_grad=True, name="V")

    def fn(x):
        h = engine.linear(x, W, b).tanh()                        # input saves, output save
        h = engine.gelu(h) * engine.sigmoid(h) + square(h) / 4   # mixed, output, input
        h = exp(h * 0.1) ** engine.Tensor(np.float64(1.5))        # pow: inputs and output
        return (h @ V).softmax(axis=-1).log().sum()              # output, inputs, input

    return fn, (W, b, V)


def test_a_compiled_step_replays_declared_saves_bit_for_bit(registered):
    fn, params = _model(registered)
    rng = np.random.default_rng(1)
    plan = engine.capture(fn, rng.normal(size=(5, 3)))
    for _ in range(3):
        x = rng.normal(size=(5, 3))
        for p in params:
            p.grad = None
        eager = fn(Tensor(x))
        eager.backward()
        expected = [p.grad.copy() for p in params]
        for p in params:
            p.grad = None
        replayed = plan(x)
        assert replayed.tobytes() == eager.data.tobytes()
        for p, g in zip(params, expected):
            assert p.grad.tobytes() == g.tobytes()


def test_a_replay_starts_each_forward_from_empty_saves(registered):
    """Saves add to a context; a plan empties each one before its forward, so forward-only
    replays (evaluation) leave nothing behind for the next backward to misread."""
    fn, params = _model(registered)
    rng = np.random.default_rng(2)
    plan = engine.capture(fn, rng.normal(size=(5, 3)))
    x1, x2 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    plan.run_forward(x1)
    plan.run_forward(x1)
    out = plan.run_forward(x2)
    for p in params:
        p.grad = None
    plan.run_backward(plan.accumulator())
    replayed = [p.grad.copy() for p in params]
    for p in params:
        p.grad = None
    eager = fn(Tensor(x2))
    eager.backward()
    assert out[0].tobytes() == eager.data.tobytes()
    for p, g in zip(params, replayed):
        assert g.tobytes() == p.grad.tobytes()


# --- no built-in op relies on the search ---------------------------------------------------

@pytest.mark.parametrize("name", sorted(engine.REGISTRY))
@settings(max_examples=8, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_no_built_in_op_leaves_its_saved_tensors_to_the_search(name, data):
    """Every registered op, on samples of its spec, with its inputs' arrays handed out before
    the forward (so the node decides what it holds) and a tracked write between the forward
    and the backward (so memory.py looks at every saved value before the rule): the search
    never finds a tensor's memory among values saved with ctx.save, so each built-in op
    declares what it saves of its inputs and output."""
    op = engine.REGISTRY[name]
    if op.__module__.split(".")[:2] != ["handgrad", "engine"]:
        pytest.skip(f"{name} is not a built-in op")
    args, params = data.draw(spec_for(name).sample)
    diff = differentiable_positions(op, args)
    leaves = [Tensor(np.asarray(a), requires_grad=i in diff) if i in diff else Tensor(a)
              for i, a in enumerate(args)]
    held = [t.data for t in leaves]                 # handed out: after_forward decides
    before = memory.inferred_saves
    out = op.apply(*leaves, **params)
    engine.inplace(Tensor(np.zeros(1)))             # moves the write clock: rules check
    if out.requires_grad:
        out.backward(np.ones(out.shape, out.dtype))
    assert memory.inferred_saves == before, f"{name}: a saved input or output was not declared"
    assert held


def test_the_search_still_finds_a_plainly_saved_input(registered):
    """The control for the test above: a user op's plain ctx.save(x) is found by it."""
    op = registered(_square_op("plain"))
    x = leaf([1.0, 2.0])
    held = x.data
    before = memory.inferred_saves
    y = op(x).sum()
    after_forward = memory.inferred_saves
    engine.inplace(Tensor(np.zeros(1)))
    y.backward()
    assert before < after_forward < memory.inferred_saves
    assert held is not None


def test_a_context_off_the_backward_walk_holds_one_forwards_saves():
    """An op no gradient flows through (here: on the data alone) saves at every replay;
    the plan empties its context first, so it never holds more than one forward's."""
    W = Tensor(np.array([0.5, -1.0]), requires_grad=True)
    plan = engine.capture(lambda x: ((x * W).sum(), x.exp()), np.ones(2))
    (exp_step,) = [s for s in plan.forward if s.op.name == "exp"]
    for k in range(3):
        plan(np.full(2, float(k)))
        (saved,) = exp_step.context.saved
        np.testing.assert_array_equal(saved, np.exp([float(k)] * 2))
