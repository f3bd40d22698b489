"""engine.capture: a plan replays exactly what the eager run computes, and refuses what it
could not replay."""
from __future__ import annotations

import copy
import dataclasses
import gc
import operator
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine import CaptureError, Tensor
from handgrad.engine.op import RuleContext
from handgrad.engine.plan_format import ArraySpec, BackwardInstruction, ForwardInstruction, LeafGradient, ReplayContext
from handgrad.engine.testing import SPECS

OPS = sorted(engine.REGISTRY)


def _eager(fn, leaves, *arrays):
    """fn on fresh leaves with the same values: (output, gradients)."""
    fresh = [Tensor(t.numpy(copy=True), requires_grad=True) for t in leaves]
    out = fn(fresh, *[Tensor(a) for a in arrays])
    out.backward()
    return out.numpy(copy=True), [t.grad for t in fresh]


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=8)
@given(data=st.data())
def test_every_op_replays_bit_for_bit(name, data):
    """For every registered op: capture sum(w * op(...)), change the differentiable inputs
    in place, replay with new weights w, and compare with an eager run on the same values."""
    spec, op = SPECS[name], engine.REGISTRY[name]
    args, params = data.draw(spec.sample)
    diff = [i for i, a in enumerate(args) if i not in op.nondiff and isinstance(a, np.ndarray)
            and a.dtype.kind == "f"]
    if not diff or op.apply(*args, **params).size == 0:
        return                                 # nothing to differentiate
    leaves = [Tensor(np.array(args[i], copy=True), requires_grad=True) for i in diff]
    data_args = [i for i, a in enumerate(args) if i not in diff and isinstance(a, np.ndarray)]

    def fn(leaves, w, *others):       # labels, masks, conditions: inputs of the plan
        full = list(args)
        for i, t in zip(diff, leaves):
            full[i] = t
        for i, t in zip(data_args, others):
            full[i] = t
        out = op.apply(*full, **params)
        return (out * w).sum()

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    out_shape = op.apply(*args, **params).shape
    w0 = rng.standard_normal(out_shape)
    others = [args[i] for i in data_args]
    plan = engine.capture(lambda w, *o: fn(leaves, w, *o), w0, *others)
    for t in leaves:                                        # new values, written in place
        (a,) = engine.inplace(t)
        a *= rng.uniform(0.9, 1.1, a.shape) if name not in ("floor", "round") else 1
        t.grad = None
    w1 = rng.standard_normal(out_shape)
    out = plan(w1, *others)
    want_out, want_grads = _eager(fn, leaves, w1, *others)
    np.testing.assert_array_equal(out, want_out)
    for t, g in zip(leaves, want_grads):
        np.testing.assert_array_equal(t.grad, g)


def _mlp_like(params, x, y):
    W1, b1, W2 = params
    h = engine.tanh(engine.linear(x, W1, b1))
    z = h @ W2 + h.sum(axis=1, keepdims=True) * 0.5          # fan-out of h, broadcasting
    return engine.softmax_cross_entropy(z, y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_plan_replays_a_composite_function_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    params = [Tensor(rng.standard_normal(s).astype(dtype), requires_grad=True)
              for s in [(5, 7), (7,), (7, 3)]]
    x0, y0 = rng.standard_normal((4, 5)).astype(dtype), rng.integers(0, 3, 4)
    plan = engine.capture(lambda x, y: _mlp_like(params, x, y), x0, y0)
    for _ in range(3):
        x, y = rng.standard_normal((4, 5)).astype(dtype), rng.integers(0, 3, 4)
        for p in params:
            p.grad = None
        loss = plan(x, y)
        got = [p.grad.copy() for p in params]
        for p in params:
            p.grad = None
        want = _mlp_like(params, Tensor(x), y)
        want.backward()
        assert loss.dtype == dtype and np.array_equal(loss, want.numpy())
        for g, p in zip(got, params):
            assert np.array_equal(g, p.grad)


def test_gradients_accumulate_across_replays_like_backward():
    """Without zero_grad, .grad accumulates; the replay must not overwrite a gradient the
    leaf still holds from the last replay (it lives in the plan's buffers)."""
    rng = np.random.default_rng(1)
    W = Tensor(rng.standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    xs = [rng.standard_normal((3, 6)).astype(np.float32) for _ in range(3)]
    plan = engine.capture(lambda x: engine.relu(engine.linear(x, W)).sum(), xs[0])
    plan(xs[1])
    plan(xs[2])
    got = W.grad.copy()
    W.grad = None
    for x in xs:
        engine.relu(engine.linear(Tensor(x), W)).sum().backward()
    np.testing.assert_array_equal(got, W.grad)


def test_outputs_are_new_arrays_not_overwritten_by_the_next_replay():
    W = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    plan = engine.capture(lambda x: (engine.linear(x, W).sum(), engine.linear(x, W)),
                          np.ones((1, 2), np.float32))
    _, first = plan(np.ones((1, 2), np.float32))
    plan(np.full((1, 2), 5, np.float32))
    np.testing.assert_array_equal(first, [[2, 2]])


def test_outside_tensors_are_read_live_and_a_changed_shape_is_an_error():
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    plan = engine.capture(lambda x: (x @ W).sum(), np.ones((1, 2)))
    (w,) = engine.inplace(W)
    w *= 3
    assert plan(np.ones((1, 2))) == 12.0
    W.data = np.ones((3, 2))
    W.name = "W"
    with pytest.raises(ValueError, match=r"^plan: Tensor 'W' now has shape \(3, 2\) dtype float64; "
                                         r"it was captured with shape \(2, 2\) dtype float64"):
        plan(np.ones((1, 2)))


def test_a_plan_refuses_other_shapes_and_dtypes():
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    plan = engine.capture(lambda x: (x @ W).sum(), np.ones((1, 2)))
    with pytest.raises(ValueError, match=r"input 0 has shape \(3, 2\).*captured for shape \(1, 2\)"):
        plan(np.ones((3, 2)))
    with pytest.raises(ValueError, match="dtype float32"):
        plan(np.ones((1, 2), np.float32))
    with pytest.raises(TypeError, match="takes 1 input arrays, got 2"):
        plan(np.ones((1, 2)), np.ones((1, 2)))


@pytest.mark.parametrize("read", [
    lambda t: t.sum().item(), lambda t: float(t.sum()), lambda t: bool(t.sum() > 0),
    lambda t: t.numpy(), lambda t: t.data, lambda t: np.asarray(t),
    # a copy of the values (frozen at the capture's), and tensors the plan never sees (a
    # copy.copy(x) of the input kept the captured batch: every replay trained on it)
    lambda t: t.numpy(copy=True), lambda t: copy.copy(t), lambda t: copy.deepcopy(t.detach()),
])
def test_reading_values_inside_the_function_is_refused(read):
    W = Tensor(np.ones((2, 2)), requires_grad=True)

    def fn(x):
        y = x @ W
        if read(y) is not None:                # data-dependent Python
            y = y * 2
        return y.sum()

    with pytest.raises(CaptureError, match="cannot follow Python decisions made on values"):
        engine.capture(fn, np.ones((1, 2)))
    assert engine.modes.STATE.tape is None     # the tape is gone after a refusal


@pytest.mark.parametrize("make", [lambda h: engine.where(h > 0, h, h * 0.1),
                                  lambda h: h * (h >= 0), lambda h: h - h.detach().mean(axis=0),
                                  lambda h: h * (h == h), lambda h: h * (h != 0),
                                  lambda h: h * (h < 1), lambda h: h * (h <= 1),
                                  lambda h: engine.where(h > h.detach().mean(), h, 0.0 * h),
                                  lambda h: h * (h > np.float32(0.5))],
                         ids=["where mask", "mask", "detach", "==", "!=", "<", "<=",
                              "against a tensor", "numpy scalar"])
def test_a_tensor_made_without_an_op_is_made_again_at_every_replay(make):
    """A comparison's mask or a detached tensor is made again from each replay's arrays: a
    plan that kept the first call's values (a mask of the first batch) would give other
    outputs and gradients than eager runs, silently."""
    W = Tensor(np.ones((2, 2), np.float32), requires_grad=True)
    plan = engine.capture(lambda x: make(x @ W).sum(), np.ones((3, 2), np.float32))
    for seed in range(4):
        x = np.random.default_rng(seed).standard_normal((3, 2)).astype(np.float32)
        W.grad = None
        replayed = plan(x)
        replayed_grad = W.grad
        W.grad = None
        eager = make(Tensor(x) @ W).sum()
        eager.backward()
        assert replayed == eager.item()
        np.testing.assert_array_equal(replayed_grad, W.grad)


def test_an_integer_input_is_converted_to_the_float_operands_dtype_at_every_replay():
    """x32 * counts is float32 with an integer tensor as with an integer array: the plan
    converts each replay's new integers (a plan that kept the first call's converted copy
    would give the first batch's values)."""
    W = Tensor(np.ones(3, np.float32), requires_grad=True)
    plan = engine.capture(lambda c: (W * c).sum(), np.arange(3))
    for seed in range(3):
        counts = np.random.default_rng(seed).integers(0, 100, 3)
        W.grad = None
        replayed = plan(counts)
        assert replayed.dtype == np.float32 and replayed == counts.sum()
        np.testing.assert_array_equal(W.grad, counts.astype(np.float32))
    assert "astype(float32)" in plan.source()


def test_an_input_captured_as_an_array_is_converted_as_an_array_operand_at_every_replay():
    """``as_arrays``: fn's eager caller passes that input as an array, which an op converts
    to its float dtype (float64 targets, float32 outputs: the loss in float32)."""
    W = Tensor(np.full(3, 0.1, np.float32), requires_grad=True)

    def fn(x, t):
        return engine.mse(x * W, t)

    plan = engine.capture(fn, np.ones(3, np.float32), np.zeros(3), as_arrays=(1,))
    for seed in range(3):
        x, t = np.random.default_rng(seed).normal(size=(2, 3))
        x = x.astype(np.float32)
        W.grad = None
        replayed = plan(x, t)
        replayed_grad = W.grad
        W.grad = None
        eager = fn(Tensor(x), t)
        eager.backward()
        assert replayed.dtype == np.float32 and replayed == eager.item()
        np.testing.assert_array_equal(replayed_grad, W.grad)
    assert engine.capture(fn, np.ones(3, np.float32), np.zeros(3)).root_spec[1] == np.float64


def test_a_comparison_with_a_number_compares_as_eagerly_in_float32():
    """numpy compares a float32 array with the number 0.1 in float32 but with an array
    holding 0.1 in float64: float32(0.1) > 0.1 is False one way and True the other. The
    plan keeps the number a number."""
    W = Tensor(np.ones((1, 1), np.float32), requires_grad=True)
    plan = engine.capture(lambda x: (x @ W) > 0.1, np.zeros((1, 1), np.float32))
    x = np.full((1, 1), 0.1, np.float32)
    assert not (Tensor(x) @ W > 0.1).numpy().any()
    assert not plan(x).any()


@pytest.mark.parametrize("shape", [(1, 2), (1,), ()])
def test_a_comparison_with_an_array_from_outside_is_refused_as_ops_refuse_it(shape):
    """Of any size: a one-element array was kept with its value at the capture, and a
    replay after its owner changed it compared with the old value, silently."""
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    outside = np.zeros(shape)
    with pytest.raises(CaptureError, match=rf"a comparison \(>\) with an array of shape {re.escape(str(shape))}"):
        engine.capture(lambda x: (x @ W > outside).sum(), np.ones((1, 2)))
    assert engine.modes.STATE.tape is None


def test_the_listing_names_each_value_once():
    """A constant reads as its value and an unnamed outside tensor as outside<slot>: the
    listing used to call them t<slot>, the name of another line's result
    (``t1 = matmul(x, t1)``)."""
    W = Tensor(np.ones((3, 2)), requires_grad=True)
    plan = engine.capture(lambda x: engine.where(x @ W > 0, 0.1 * (x @ W), x @ W).sum(),
                          np.ones((1, 3)))
    lines = [line.split(None, 1)[1] for line in plan.source().splitlines()]
    assert lines[:6] == ["t1 = matmul(x, outside1)", "t2 = t1 > 0",
                         "t3 = matmul(x, outside1)", "t4 = mul(0.1, t3)",
                         "t5 = matmul(x, outside1)", "t6 = where(t2, t4, t5)"]
    assert lines[-1] == "grad[outside1] = g_outside1"
    made = [line.split(" = ")[0] for line in lines if line.startswith("t")]
    assert made == [f"t{k}" for k in range(1, len(made) + 1)]


def test_arrays_from_outside_the_function_are_refused_numbers_are_fine():
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    outside = np.ones((1, 2))
    with pytest.raises(CaptureError, match="op 'mul' got an array of shape \\(1, 2\\) as input 1"):
        engine.capture(lambda x: (x @ W * outside).sum(), np.ones((1, 2)))
    with pytest.raises(CaptureError, match=r"Tensor\(...\) of shape \(1, 2\) created inside"):
        engine.capture(lambda x: (x @ W * Tensor(outside)).sum(), np.ones((1, 2)))
    plan = engine.capture(lambda x: (x @ W * 3.0).sum(), np.ones((1, 2)))
    assert plan(np.ones((1, 2))) == 12.0


@pytest.mark.parametrize("shape", [(1,), (), (1, 1)])
def test_a_one_element_array_from_outside_is_refused_too(shape):
    """``x / temperature`` with ``temperature = np.array([2.0])`` from outside kept the
    value at the capture: after ``temperature[0] = 0.5`` a replay gave 1.5, eager 6.0."""
    W = Tensor(np.ones(3), requires_grad=True)
    temperature = np.full(shape, 2.0)
    with pytest.raises(CaptureError, match=rf"op 'div' got an array of shape {re.escape(str(shape))} as input 1"):
        engine.capture(lambda x: (x * W / temperature).sum(), np.ones(3))
    with pytest.raises(CaptureError, match=r"Tensor\(...\) of shape .* created inside"):
        engine.capture(lambda x: (x * W / Tensor(temperature)).sum(), np.ones(3))
    with pytest.raises(CaptureError, match=r"Tensor\(...\) of shape .* created inside"):
        engine.capture(lambda x: (x * W / engine.adopt(temperature.copy())).sum(), np.ones(3))
    assert engine.modes.STATE.tape is None


@pytest.mark.parametrize("number", [2.0, 2, np.float64(2.0), np.float32(2.0), np.int64(2)])
def test_numbers_and_numpy_scalars_stay_constants(number):
    W = Tensor(np.ones(3), requires_grad=True)
    plan = engine.capture(lambda x: (x * W / number + Tensor(number)).sum(), np.ones(3))
    assert plan(np.full(3, 4.0)) == 12.0



@pytest.mark.parametrize(("symbol", "write"), [("+=", operator.iadd), ("-=", operator.isub),
                                               ("*=", operator.imul), ("/=", operator.itruediv),
                                               ("**=", operator.ipow)])
def test_in_place_arithmetic_inside_the_function_is_refused(symbol, write):
    """``h += 10`` writes h's array with no op: it ran at the capture and a replay skipped
    it, silently (a replay gave 3.0 where eager gave 33.0)."""
    W = Tensor(np.ones(3), requires_grad=True)

    def fn(x):
        h = x * 1.0                            # outside the graph: x requires no grad
        h = write(h, 2.0)
        return (h * W).sum()

    with pytest.raises(CaptureError, match=f"in-place {re.escape(symbol)} on .*Write t = t"):
        engine.capture(fn, np.ones(3))
    assert engine.modes.STATE.tape is None


def _replace_data(t, value):
    t.data = np.full(t.shape, value)


def _through_writing(t, value):
    with engine.writing(t) as (a,):
        a += value


def _through_inplace(t, value):
    (a,) = engine.inplace(t)
    a += value


@pytest.mark.parametrize(("symbol", "write"), [("t.data =", _replace_data),
                                               ("engine.writing", _through_writing),
                                               ("engine.inplace", _through_inplace)])
def test_writes_without_an_op_inside_the_function_are_refused(symbol, write):
    """A running statistic kept with ``t.data = ...`` or written through engine.writing in
    the captured forward: the capture ran the write once and every replay skipped it, so a
    compiled step's running mean stopped moving (a count of examples stayed at 32)."""
    W = Tensor(np.ones(3), requires_grad=True)
    running = Tensor(np.zeros(3))

    def fn(x):
        h = x * W
        with engine.no_grad():
            write(running, 1.0)
        return h.sum()

    with pytest.raises(CaptureError, match=f"in-place {re.escape(symbol)} on .*Write the new "
                                           f"values as an output of the function"):
        engine.capture(fn, np.ones(3))
    assert engine.modes.STATE.tape is None
    write(running, 1.0)                          # outside a capture: a plain write
    assert running.numpy().tolist() == [1.0, 1.0, 1.0]


def test_a_replay_after_an_array_parameter_changed_in_place_is_refused():
    """``x[:, cols]`` with ``cols`` an array kept outside (a module's): the plan kept the
    capture's copy of it, so after ``cols[:] = ...`` every replay gathered the old columns,
    silently, where eager code reads the new ones."""
    W = Tensor(np.ones(3), requires_grad=True)
    cols = np.array([0, 1, 2])
    plan = engine.capture(lambda x: (x[:, cols] * W).sum(), np.arange(12.0).reshape(2, 6))
    x = np.arange(12.0).reshape(2, 6)
    assert plan(x) == 24.0 and plan.changed_parameter() is None
    cols[:] = [3, 4, 5]
    assert "parameter 'index'" in plan.changed_parameter()
    with pytest.raises(CaptureError, match=r"plan: the numpy array op 'getitem' took as its "
                                           r"parameter 'index' at the capture has changed since"):
        plan(x)
    cols[:] = [0, 1, 2]                        # the values of the capture again: replayed
    assert plan(x) == 24.0


def test_a_tensor_computed_by_ops_outside_the_function_is_refused_before_any_gradient():
    """``h = W * 2`` outside, ``(x * h).sum()`` captured: the capture crashed with a bare
    KeyError in the middle of its backward pass, with W's gradient half accumulated. Its
    gradient would flow on into W eagerly, which a plan (reading h as a leaf) cannot do."""
    W = Tensor(np.ones(3), requires_grad=True)
    h = W * 2.0
    with pytest.raises(CaptureError, match=r"op 'mul' reads Tensor of shape \(3,\).*computed by "
                                           r"op 'mul' outside the captured function"):
        engine.capture(lambda x: (x * h).sum() + (x * W).sum(), np.arange(3.0))
    assert W.grad is None and engine.modes.STATE.tape is None
    plan = engine.capture(lambda x: (x * h.detach()).sum() + (x * W).sum(), np.arange(3.0))
    assert plan(np.arange(3.0)) == 9.0                   # detached: read live, as a value


@pytest.mark.parametrize("index", [lambda x, i: (np.arange(2), i), lambda x, i: i,
                                   lambda x, i: x > 2, lambda x, i: [i, i]],
                         ids=["labels in a tuple", "tensor", "mask", "in a list"])
def test_a_tensor_in_an_ops_parameter_is_refused(index):
    """``x[rows, y]`` copied the index tensor into getitem's parameters at the capture: a
    replay with other labels (or another mask) gathered the first call's elements, silently
    (6.0 where eager gave 24.0)."""
    W = Tensor(np.ones(3), requires_grad=True)

    def fn(x, i):
        return (x * W)[index(x, i)].sum()

    x, i = np.arange(6.0).reshape(2, 3), np.array([0, 0])
    assert fn(Tensor(x), Tensor(i)).item() > 0            # eagerly, a tensor index is fine
    with pytest.raises(CaptureError, match="op 'getitem' got a Tensor in its parameter 'index'"):
        engine.capture(fn, x, i)
    assert W.grad is None and engine.modes.STATE.tape is None
    plan = engine.capture(lambda x: (x * W)[np.arange(2), [1, 2]].sum(), x)   # arrays: fixed
    assert plan(x) == 6.0                                 # x[0, 1] + x[1, 2]


def test_a_check_that_reads_values_still_runs_on_every_replay():
    """softmax_cross_entropy checks the labels' range: a replay with a bad label is still
    an error, never a silently wrong loss (numpy would wrap a negative index around)."""
    W = Tensor(np.ones((2, 3)), requires_grad=True)
    plan = engine.capture(lambda x, y: engine.softmax_cross_entropy(x @ W, y),
                          np.ones((2, 2)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"class label -1 is outside \[0, 3\)"):
        plan(np.ones((2, 2)), np.array([0, -1]))
    assert engine.REGISTRY["softmax_cross_entropy"].validate is not None
    assert engine.REGISTRY["linear"].validate is None


def test_inputs_must_be_data():
    W = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(CaptureError, match="input 0 requires grad"):
        engine.capture(lambda w: (w * 2).sum(), W)


def test_source_lists_the_forward_and_the_backward_program():
    W = Tensor(np.ones((2, 3)), requires_grad=True, name="W")
    plan = engine.capture(lambda x, y: engine.softmax_cross_entropy(engine.relu(x @ W), y),
                          np.ones((4, 2)), np.zeros(4, np.int64))
    lines = plan.source().splitlines()
    assert lines == [
        "1  t1 = matmul(x, W)",
        "2  t2 = relu(t1)",
        "3  t3 = softmax_cross_entropy(t2, y, reduction='mean', label_smoothing=0.0)",
        "4  g_t3 = 1",
        "5  g_t2, _ = softmax_cross_entropy.backward(g_t3)",
        "6  g_t1 = relu.backward(g_t2)",
        "7  _, g_W = matmul.backward(g_t1)",
        "8  grad[W] = g_W",
    ]


def test_two_leaves_never_share_one_gradient_array():
    """add sends the same array to both inputs: as in backward(), the second leaf gets a
    copy, so scaling one gradient in place (clipping) leaves the other alone."""
    W1 = Tensor(np.ones(3), requires_grad=True)
    W2 = Tensor(np.ones(3), requires_grad=True)
    plan = engine.capture(lambda x: ((W1 + W2) * x).sum(), np.ones(3))
    for _ in range(2):
        W1.grad = W2.grad = None
        plan(np.full(3, 2.0))
        assert W1.grad is not W2.grad
        W1.grad *= 10
        np.testing.assert_array_equal(W2.grad, [2, 2, 2])


class _CountedSquare(engine.Op):
    """y = x^2, counting its rule calls (an unregistered op: any name is allowed)."""
    name = "counted-square"
    rule = "dy/dx = 2x"

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def forward(self, ctx, x):
        self.calls.append("forward")
        ctx.save(x)
        return x * x

    def backward(self, ctx, grad):
        self.calls.append("backward")
        (x,) = ctx.saved
        return (2 * x * grad,)

    def jvp(self, ctx, tangent):
        (x,) = ctx.saved
        return 2 * x * tangent


def test_a_replay_runs_generated_code_that_calls_the_ops_own_rules():
    """The plan is written out as Python (plan.code()): one call of each op's own forward
    and backward rule per recorded step, and a replay runs exactly those calls."""
    W = Tensor(np.ones((2, 3)), requires_grad=True, name="W")
    plan = engine.capture(lambda x, y: engine.softmax_cross_entropy(engine.relu(x @ W), y),
                          np.ones((4, 2)), np.zeros(4, np.int64))
    code = plan.code()
    for call in ["matmul_forward(", "relu_forward(", "softmax_cross_entropy_forward(",
                 "softmax_cross_entropy_backward(", "relu_backward(", "matmul_backward(",
                 "softmax_cross_entropy_validate(", "on_grad(0, "]:
        assert code.count(call) == 1, call
    assert "_check(" not in code                 # shape-only checks the capture proved

    square = _CountedSquare()                    # its name is no Python identifier
    V = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    plan = engine.capture(lambda x: square(V * x).sum(), np.ones(2))
    assert "counted_square_forward(node" in plan.code()
    square.calls.clear()
    V.grad = None
    plan(np.full(2, 3.0))
    assert square.calls == ["forward", "backward"]
    np.testing.assert_array_equal(V.grad, [2 * 3.0 * 3, 2 * 6.0 * 3])


def test_run_backward_needs_a_forward_pass_each_time():
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    plan = engine.capture(lambda x: (x @ W).sum(), np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="needs a run_forward first"):
        plan.run_backward(plan.accumulator())
    plan.run_forward(np.ones((1, 2)))
    plan.run_backward(plan.accumulator())
    with pytest.raises(RuntimeError, match="needs a run_forward first"):
        plan.run_backward(plan.accumulator())
    plan.run_forward(np.ones((1, 2)))
    with pytest.raises(ValueError, match="input 0 has shape"):
        plan.run_forward(np.ones((5, 2)))            # a failed forward: nothing to backprop
    with pytest.raises(RuntimeError, match="needs a run_forward first"):
        plan.run_backward(plan.accumulator())


def test_a_plan_refuses_a_tensor_frozen_or_unfrozen_since_the_capture():
    """requires_grad decided which gradients the plan computes: a replay after it changed
    would keep filling .grad of a frozen tensor (and an optimizer would update it)."""
    W = Tensor(np.ones((2, 2)), requires_grad=True, name="W")
    B = Tensor(np.ones(2), name="B")
    plan = engine.capture(lambda x: (x @ W + B).sum(), np.ones((1, 2)))
    W.requires_grad = False
    with pytest.raises(ValueError, match="'W'.*requires_grad=False; it was captured with "
                                         "requires_grad=True"):
        plan(np.ones((1, 2)))
    W.requires_grad = True
    B.requires_grad = True
    with pytest.raises(ValueError, match="'B'.*requires_grad=True; it was captured with "
                                         "requires_grad=False"):
        plan(np.ones((1, 2)))
    B.requires_grad = False
    W.grad = None
    plan(np.ones((1, 2)))
    np.testing.assert_array_equal(W.grad, np.ones((2, 2)))


def _long_program(ws, x):
    """A program longer than a generated function's chunk, whose tensors cross chunks:
    every leaf is read all along the chain, and an early value is added back at the end."""
    t = engine.tanh(x * ws[0])
    early = t
    for k in range(1, 700):
        t = engine.tanh(t * ws[k % len(ws)] + 0.01 * k)
    return (t + early * ws[1]).sum()


def test_a_long_program_replays_bit_for_bit_across_its_generated_chunks():
    rng = np.random.default_rng(4)
    ws = [Tensor(rng.uniform(0.5, 1.5, 8), requires_grad=True) for _ in range(3)]
    plan = engine.capture(lambda x: _long_program(ws, x), rng.standard_normal(8))
    assert plan.code().count("def forward_") > 3 and plan.code().count("def backward_") > 3
    x = rng.standard_normal(8)
    for w in ws:
        w.grad = None
    out = plan(x)
    got = [w.grad.copy() for w in ws]
    fresh = [Tensor(w.numpy(copy=True), requires_grad=True) for w in ws]
    want = _long_program(fresh, Tensor(x))
    want.backward()
    assert out.tobytes() == want.numpy().tobytes()
    for g, w in zip(got, fresh):
        assert g.tobytes() == w.grad.tobytes()


def test_capture_memory_is_a_few_kilobytes_per_op():
    """Compiling the generated program in one piece took about 43 KB per op at its peak
    (100,000 ops: MemoryError); a function at a time, after the eager graph is gone, it
    is about 4-6 KB here, of which about 2 KB stay with the plan."""
    n = 2000
    w = Tensor(np.ones(4), requires_grad=True)

    def chain(x):
        t = x * w
        for _ in range(n):
            t = engine.tanh(t)
        return t.sum()

    gc.collect()
    tracemalloc.start()
    try:
        plan = engine.capture(chain, np.ones(4))
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / n < 10_000, f"{peak / n:.0f} bytes per op at the peak"
    assert kept / n < 4_000, f"{kept / n:.0f} bytes per op kept"
    assert len(plan.forward) == n + 2


# --- the plan format: named records, written out twice --------------------------------------

def test_the_listing_and_the_code_show_every_instruction_of_the_plans_records():
    """Plan.source() and plan.code() are both written from plan.forward and plan.backward:
    every record has its line in each, and a record changed by hand changes both."""
    W = Tensor(np.ones((2, 3)), requires_grad=True, name="W")
    b = Tensor(np.zeros(3), requires_grad=True, name="b")
    plan = engine.capture(lambda x: ((x @ W + b).relu() * (x @ W)).sum(), np.ones((4, 2)))
    listing, code = plan.source().splitlines(), plan.code()
    assert len(listing) == len(plan.forward) + 1 + len(plan.backward)
    for line, step in zip(listing, plan.forward):
        assert isinstance(step, ForwardInstruction)
        assert f"= {step.op.name}(" in line
        assert f"v{step.output} = {step.op.name}_forward(node{step.output}, " in code
    kinds = set()
    for line, step in zip(listing[len(plan.forward) + 1:], plan.backward):
        kinds.add(type(step))
        if isinstance(step, LeafGradient):
            assert line.endswith(f"grad[{plan.leaves[step.leaf].name}] = g_{plan.leaves[step.leaf].name}")
            assert f"on_grad({step.leaf}, g{step.slot})" in code
        else:
            assert f"= {step.op.name}.backward(g_" in line
            assert f"{step.op.name}_backward(node{step.slot}, g{step.slot})" in code
    assert kinds == {BackwardInstruction, LeafGradient}
    assert "g_W +=" in plan.source()              # W's gradient is summed from two uses

    k = next(i for i, s in enumerate(plan.forward) if s.op.name == "relu")
    plan.forward[k] = dataclasses.replace(plan.forward[k], op=engine.REGISTRY["tanh"])
    assert "= tanh(" in plan.source() and "= relu(" not in plan.source()
    assert "tanh_forward(" in plan.code() and "relu_forward(" not in plan.code()


class _Checked(engine.Op):
    """y = x, counting its check and validate calls; validate refuses x > 100."""
    name = "checked"
    rule = "dy/dx = 1"
    linear = True

    def __init__(self, validates: bool) -> None:
        super().__init__()
        self.counts = {"check": 0, "validate": 0}
        if not validates:
            self.validate = None

    def check(self, x):
        self.counts["check"] += 1

    def validate(self, x):
        self.counts["validate"] += 1
        if x.max() > 100:
            raise self.error(f"values must be at most 100, got {x.max()}")

    def forward(self, ctx, x):
        return x.copy()

    def backward(self, ctx, grad):
        return (grad,)


def test_an_ops_check_runs_at_the_capture_only_and_its_validate_at_every_replay():
    """check reads shapes and parameters, which the capture proved: a replay does not run
    it again. validate reads values: every replay runs it, so a bad batch is an error."""
    W = Tensor(np.ones(2), requires_grad=True)
    op = _Checked(validates=True)
    plan = engine.capture(lambda x: op(x * W).sum(), np.ones(2))
    assert op.counts == {"check": 1, "validate": 1}
    for _ in range(3):
        plan(np.ones(2))
    assert op.counts == {"check": 1, "validate": 4}
    with pytest.raises(ValueError, match=r"^checked: values must be at most 100, got 101.0"):
        plan(np.array([1.0, 101.0]))


def test_an_op_without_validate_pays_for_no_check_at_replay():
    op = _Checked(validates=False)
    plan = engine.capture(lambda x: op(x).sum(), np.ones(2))
    for _ in range(3):
        plan(np.array([1.0, 101.0]))
    assert op.counts == {"check": 1, "validate": 0}
    assert "checked_check" not in plan.code() and "validate" not in plan.code()


def test_binary_cross_entropy_targets_are_validated_at_every_replay():
    W = Tensor(np.ones((2, 2)), requires_grad=True)
    plan = engine.capture(lambda x, y: engine.sigmoid_binary_cross_entropy(x @ W, y),
                          np.ones((3, 2)), np.zeros((3, 2)))
    plan(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 1\], got values from 0.0 to 2.0"):
        plan(np.ones((3, 2)), np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]))


def test_the_graph_node_and_the_replay_context_are_rule_contexts():
    W = Tensor(np.ones(2), requires_grad=True)
    y = engine.tanh(W)
    plan = engine.capture(lambda x: engine.tanh(x * W).sum(), np.ones(2))
    assert isinstance(y.node, RuleContext)
    for step in plan.forward:
        assert isinstance(step.context, ReplayContext) and isinstance(step.context, RuleContext)
        assert all(isinstance(spec, ArraySpec) for spec in step.context.inputs)
    assert not isinstance(object(), RuleContext)


def _split_plan():
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True, name="w")
    plan = engine.capture(lambda x: (x * w * w).sum(), np.ones(3))
    w.grad = None
    return w, plan


def _write_tracked(w):
    with engine.no_grad():
        w += 10.0


def _write_after_a_hand_out(w):
    w.data[0] = 10.0


@pytest.mark.parametrize("write", [_write_tracked, _write_after_a_hand_out])
def test_a_plan_split_in_two_refuses_a_write_between_its_passes(write):
    """run_forward then run_backward: a tensor the forward read, written in between, would
    give a gradient of mixed values (eagerly the backward raises too)."""
    w, plan = _split_plan()
    plan.run_forward(np.array([1.0, 2.0, 3.0]))
    write(w)
    with pytest.raises(RuntimeError, match="'w' .* may have been written since run_forward"):
        plan.run_backward(plan.accumulator())


def test_a_plan_split_in_two_refuses_a_write_through_an_array_held_from_before():
    w, plan = _split_plan()
    held = w.data                              # handed out before the forward
    plan.run_forward(np.array([1.0, 2.0, 3.0]))
    held[1] = 10.0
    with pytest.raises(RuntimeError, match="may have been written since run_forward"):
        plan.run_backward(plan.accumulator())


def test_a_plan_split_in_two_takes_a_read_between_its_passes():
    w, plan = _split_plan()
    plan.run_forward(np.array([1.0, 2.0, 3.0]))
    assert w.data[0] == 0.5                     # read, not written
    plan.run_backward(plan.accumulator())
    np.testing.assert_array_equal(w.grad, [1.0, -4.0, 12.0])


def test_a_plan_split_in_two_returns_outputs_a_write_cannot_reach_the_gradient_through():
    """exp saves its output for its backward: the output run_forward returns is a copy, so
    writing it (reusing the buffer) leaves the gradient that of the values used."""
    w = Tensor(np.array([0.5, 1.0, 1.5]), requires_grad=True)

    def fn(x):
        e = engine.exp(x * w)
        return e.sum(), e

    x = np.array([1.0, 2.0, 3.0])
    plan = engine.capture(fn, x)
    w.grad = None
    _, e = plan.run_forward(x)
    e[...] = 0.0
    plan.run_backward(plan.accumulator())
    np.testing.assert_allclose(w.grad, x * np.exp(x * np.array([0.5, 1.0, 1.5])), rtol=1e-15)


@pytest.mark.parametrize("run", ["call", "run_forward", "last_outputs"])
def test_a_plan_output_on_an_outside_tensors_memory_is_a_copy(run):
    """An output that is an outside tensor's memory (w.reshape(3)) comes back as a new
    array: a write through it would change w unseen by the graphs that saved w."""
    w = Tensor(np.array([0.5, 1.0, 1.5]), requires_grad=True)
    plan = engine.capture(lambda x: ((x * w).sum(), w.reshape(3)), np.ones(3))
    if run == "call":
        _, r = plan(np.ones(3))
    elif run == "run_forward":
        _, r = plan.run_forward(np.ones(3))
        plan.run_backward(plan.accumulator())
    else:
        r = plan.last_outputs[1]
    assert not np.shares_memory(r, w.numpy(copy=True))
    w.grad = None
    y = (w * w).sum()
    r[0] = 100.0
    y.backward()
    np.testing.assert_array_equal(w.grad, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(w.numpy(copy=True), [0.5, 1.0, 1.5])


def test_run_forward_without_copy_gives_the_programs_own_arrays():
    """copy=False (compile_step's reading) returns what the program computed, uncopied."""
    w = Tensor(np.array([0.5, 1.0, 1.5]), requires_grad=True)
    plan = engine.capture(lambda x: ((x * w).sum(), w.reshape(3)), np.ones(3))
    _, r = plan.run_forward(np.ones(3), copy=False)
    plan.run_backward(plan.accumulator())
    assert np.shares_memory(r, w.numpy())


def test_a_backward_inside_the_captured_function_is_refused():
    """It ran at the capture and never again: eagerly W.grad took two backward passes per
    call, a replay one."""
    W = Tensor(np.array([[0.5, -1.0]]), requires_grad=True)

    def fn(x):
        loss = (x @ W).sum()
        loss.backward(retain_graph=True)
        return loss

    with pytest.raises(CaptureError, match="runs a backward pass"):
        engine.capture(fn, np.ones((1, 1)))
    with pytest.raises(CaptureError, match="runs a backward pass"):
        engine.capture(lambda x: (x * engine.grad((x @ W).sum(), W)[0]).sum(), np.ones((1, 1)))


def test_a_plan_refuses_what_eager_would_check_or_refuse():
    """Under detect_anomaly eager raises at the op making NaN, a plan returned NaN; under
    no_grad eager has no graph to backpropagate, a plan wrote W.grad; an input requiring
    grad got no gradient from a replay, unseen (the capture refuses one)."""
    W = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    plan = engine.capture(lambda x: engine.log(x * W).sum(), np.array([1.0, 1.0]))
    with engine.detect_anomaly(), pytest.raises(RuntimeError, match="detect_anomaly"):
        plan(np.array([-1.0, 1.0]))
    W.grad = None
    with engine.no_grad(), pytest.raises(RuntimeError, match="gradients are off"):
        plan(np.array([1.0, 1.0]))
    assert W.grad is None
    with pytest.raises(ValueError, match="requires grad; plan inputs are data"):
        plan(Tensor(np.array([1.0, 1.0]), requires_grad=True))
    plan(np.array([1.0, 1.0]))                      # as before
    np.testing.assert_array_equal(W.grad, [1.0, 0.5])
