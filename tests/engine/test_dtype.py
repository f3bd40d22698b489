"""dtype preservation: float32 in, float32 out, for every registered op, its forward, its
VJP and JVP rules and the gradients that land in ``.grad``; the same for float64.

``graph.backward`` casts whatever a backward rule returns to the input's dtype, which would
hide a rule that silently computes in float64 (twice the memory and time for a float32
model). So the rules themselves are called on the node and their results checked too.

EXAMPLES holds at least one small valid call per op name; a test asserts it covers all of
``engine.REGISTRY``, so a new op without an entry fails here.
"""
from __future__ import annotations

import re

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor

_rng = np.random.default_rng(0)
M = _rng.normal(size=(2, 3))            # a generic matrix
N = _rng.normal(size=(2, 3))
V = _rng.normal(size=3)                 # broadcasts against M
POS = _rng.uniform(0.5, 2.0, (2, 3))    # inside the domain of log, sqrt, a ** b
T3 = _rng.normal(size=(2, 3, 4))
LABELS = np.array([2, 0])               # class labels for (2, 3) logits
COND = np.array([[True, False, True], [False, False, True]])

# op name -> list of (float inputs, function of the leaf tensors whose output comes from that op).
EXAMPLES = {
    "abs": [([M], engine.abs)],
    "add": [([M, N], lambda a, b: a + b), ([M, V], lambda a, b: a + b)],
    "broadcast_to": [([V], lambda x: engine.broadcast_to(x, (2, 3)))],
    "clip": [([M], lambda x: x.clip(-0.5, 0.5)),
             ([M], lambda x: engine.clip(x, -0.5, 0.5))],  # positional bounds are parameters
    "concat": [([M, N], lambda a, b: engine.concat([a, b], axis=1))],
    "div": [([M, POS], lambda a, b: a / b)],
    "dropout": [([M], lambda x: engine.dropout(x, p=0.5, rng=np.random.default_rng(0)))],
    "elu": [([M], lambda x: engine.elu(x, alpha=0.5))],
    "exp": [([M], engine.exp)],
    "flatten": [([T3], lambda x: engine.flatten(x, start_dim=1))],
    "gelu": [([M], engine.gelu), ([M], lambda x: engine.gelu(x, approximate="none"))],
    "getitem": [([M], lambda x: x[1:, ::2]), ([M], lambda x: x[np.array([0, 0, 1])])],
    "leaky_relu": [([M], lambda x: engine.leaky_relu(x, negative_slope=0.1))],
    "linear": [([M, N.T, V[:2]], engine.linear), ([M, N.T], engine.linear)],
    "log": [([POS], engine.log)],
    "log_softmax": [([M], lambda x: engine.log_softmax(x, axis=0))],
    "logsumexp": [([M], lambda x: engine.logsumexp(x, axis=1))],
    "matmul": [([M, N.T], lambda a, b: a @ b), ([T3, _rng.normal(size=4)], lambda a, b: a @ b)],
    "max": [([M], lambda x: x.max(axis=1)), ([np.array([[1.0, 3.0, 3.0]])], lambda x: x.max())],
    "maximum": [([M, V], engine.maximum)],
    "mean": [([M], lambda x: x.mean(axis=0))],
    "min": [([M], lambda x: x.min())],
    "minimum": [([M, N], engine.minimum)],
    "mse": [([M, N], engine.mse), ([M, N], lambda a, b: engine.mse(a, b, reduction="none"))],
    "mul": [([M, V], lambda a, b: a * b)],
    "neg": [([M], lambda x: -x)],
    "pow": [([POS, M], lambda a, b: a ** b)],
    "pow_scalar": [([M], lambda x: x ** 3), ([POS], lambda x: x ** 0.5)],
    "relu": [([M], engine.relu)],
    "reshape": [([M], lambda x: x.reshape(3, 2))],
    "sigmoid": [([M], engine.sigmoid)],
    "sigmoid_binary_cross_entropy": [
        ([M], lambda z: engine.sigmoid_binary_cross_entropy(z, (N > 0).astype(np.float64))),
        ([M], lambda z: engine.sigmoid_binary_cross_entropy(z, (N > 0).astype(np.int64),
                                                            reduction="batchmean"))],
    "softmax": [([M], engine.softmax)],
    "softmax_cross_entropy": [
        ([M], lambda z: engine.softmax_cross_entropy(z, LABELS)),
        ([M], lambda z: engine.softmax_cross_entropy(z, LABELS, reduction="none", label_smoothing=0.1)),
        ([M], lambda z: engine.softmax_cross_entropy(z, np.full((2, 3), 1 / 3)))],  # float64 probs
    "softplus": [([M], engine.softplus)],
    "sqrt": [([POS], engine.sqrt)],
    "stack": [([M, N], lambda a, b: engine.stack([a, b], axis=1))],
    "sub": [([M, V], lambda a, b: a - b)],
    "sum": [([M], lambda x: x.sum(axis=1, keepdims=True))],
    "tanh": [([M], engine.tanh)],
    "transpose": [([T3], lambda x: x.transpose(2, 0, 1))],
    "var": [([M], lambda x: x.var(axis=1, ddof=1))],
    "where": [([M, N], lambda a, b: engine.where(COND, a, b))],
}

CASES = [(name, i) for name in sorted(EXAMPLES) for i in range(len(EXAMPLES[name]))]


def test_examples_cover_every_registered_op():
    missing = sorted(set(engine.REGISTRY) - set(EXAMPLES))
    assert not missing, f"ops without a dtype example in tests/engine/test_dtype.py: {missing}"
    assert not set(EXAMPLES) - set(engine.REGISTRY), "an example names an op that is not registered"


def check_rules_keep_dtype(out: Tensor, dtype) -> None:
    """Call the output node's backward and jvp rules directly and check their dtypes."""
    node = out.node
    grads = node.op.backward(node, np.ones(out.shape, dtype))
    for i, g in enumerate(grads):
        if g is not None:
            assert np.asarray(g).dtype == dtype, f"{node.op.name}: backward gives {np.asarray(g).dtype} for input {i}"
    tangents = [None if i in node.op.nondiff else np.ones(t.shape, t.dtype)
                for i, t in enumerate(node.inputs)]
    jvp_out = np.asarray(node.op.jvp(node, *tangents))
    assert jvp_out.dtype == dtype, f"{node.op.name}: jvp gives {jvp_out.dtype}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, i", CASES)
def test_op_keeps_the_float_dtype(name, i, dtype):
    inputs, fn = EXAMPLES[name][i]
    leaves = [Tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in inputs]
    out = fn(*leaves)
    assert out.node is not None and out.node.op.name == name, "the example must end in its op"
    assert out.dtype == dtype
    for k, t in enumerate(out.node.inputs):
        if k not in out.node.op.nondiff:
            assert t.dtype == dtype, f"differentiable input {k} has dtype {t.dtype}"
    check_rules_keep_dtype(out, dtype)
    out.backward(np.ones(out.shape, dtype))
    for k, leaf in enumerate(leaves):
        assert leaf.grad is not None, f"input {k} got no gradient"
        assert leaf.grad.dtype == dtype


# --- constants mixed with float32 tensors -------------------------------------------------
# Numbers, numpy scalars and float64/int arrays are constants: they take the tensor's dtype
# instead of promoting it. Each case is one op applied to x (float32, shape (3,), positive).

MIXED = {
    "x * 2.0": lambda x: x * 2.0,
    "2.0 * x": lambda x: 2.0 * x,
    "x + 1 (int)": lambda x: x + 1,
    "x + float64 array": lambda x: x + np.ones(3),
    "float64 array - x": lambda x: np.ones(3) - x,
    "x * int array": lambda x: x * np.arange(3),
    "np.float64(2) * x": lambda x: np.float64(2) * x,
    "x / np.float64(3)": lambda x: x / np.float64(3),
    "x ** 2": lambda x: x ** 2,
    "x ** 0.5": lambda x: x ** 0.5,
    "x ** np.float64(2)": lambda x: x ** np.float64(2),
    "x ** np.int64(3)": lambda x: x ** np.int64(3),
    "2.0 ** x": lambda x: 2.0 ** x,
    "float64 array ** x": lambda x: np.full(3, 2.0) ** x,
    "maximum(x, 0.5)": lambda x: engine.maximum(x, 0.5),
    "where(cond, x, 0.0)": lambda x: engine.where(np.array([True, False, True]), x, 0.0),
    "where(cond, float64 array, x)": lambda x: engine.where(np.array([True, False, True]), np.zeros(3), x),
    "clip(x, np.float64 bounds)": lambda x: engine.clip(x, min=np.float64(0.6), max=np.float64(1.5)),
    "leaky_relu(x, np.float64 slope)": lambda x: engine.leaky_relu(x, negative_slope=np.float64(0.2)),
    "elu(x, np.float64 alpha)": lambda x: engine.elu(x, alpha=np.float64(0.5)),
    "var(x, ddof=np.int64(1))": lambda x: engine.var(x, ddof=np.int64(1)),
    "concat([x, float64 array])": lambda x: engine.concat([x, np.ones(2)]),
    "x @ float64 matrix": lambda x: x @ np.ones((3, 2)),
    "linear(x, float64 W, float64 b)": lambda x: engine.linear(x, np.ones((3, 2)), np.ones(2)),
    "mse(x, float64 target)": lambda x: engine.mse(x, np.zeros(3)),
    "cross-entropy, float64 probabilities": lambda x: engine.softmax_cross_entropy(x, np.full(3, 1 / 3)),
    "cross-entropy, np.float64 smoothing": lambda x: engine.softmax_cross_entropy(
        x, np.array(1), label_smoothing=np.float64(0.1)),
    "bce, float64 targets": lambda x: engine.sigmoid_binary_cross_entropy(x, np.array([0.0, 0.5, 1.0])),
    # Integer tensors too, as integer arrays (and as in PyTorch): an integer operand never
    # widens a float one. Bool tensors (masks) keep a float's dtype in numpy already.
    "x * int64 Tensor": lambda x: x * Tensor(np.arange(3)),
    "int64 Tensor - x": lambda x: Tensor(np.arange(3)) - x,
    "x + int32 Tensor": lambda x: x + Tensor(np.arange(3, dtype=np.int32)),
    "x / uint64 Tensor": lambda x: x / Tensor(np.arange(1, 4, dtype=np.uint64)),
    "x ** int64 Tensor": lambda x: x ** Tensor(np.arange(3)),
    "int64 Tensor ** x": lambda x: Tensor(np.arange(1, 4)) ** x,
    "maximum(x, int64 Tensor)": lambda x: engine.maximum(x, Tensor(np.arange(3))),
    "where(cond, x, int64 Tensor)": lambda x: engine.where(np.array([True, False, True]), x,
                                                           Tensor(np.arange(3))),
    "concat([x, int64 Tensor])": lambda x: engine.concat([x, Tensor(np.arange(2))]),
    "x @ int64 Tensor": lambda x: x @ Tensor(np.ones((3, 2), np.int64)),
    "linear(x, int64 W, int64 b Tensors)": lambda x: engine.linear(
        x, Tensor(np.ones((3, 2), np.int64)), Tensor(np.ones(2, np.int64))),
    "mse(x, int64 Tensor target)": lambda x: engine.mse(x, Tensor(np.arange(3))),
    "mse(mask, x)": lambda x: engine.mse(x > 1, x),
    "x * mask": lambda x: x * (x > 1),
    "x - mask": lambda x: x - (x > 1),
}


@pytest.mark.parametrize("case", sorted(MIXED))
def test_constants_do_not_promote_float32(case):
    x = Tensor(np.array([0.5, 1.0, 2.0], np.float32), requires_grad=True)
    out = MIXED[case](x)
    assert out.dtype == np.float32
    check_rules_keep_dtype(out, np.float32)
    out.backward(np.ones(out.shape, np.float32))
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("float_dtype", [np.float16, np.float32])
@pytest.mark.parametrize("int_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
                                       np.int64, np.uint64])
def test_an_integer_tensor_keeps_the_float_operands_dtype_as_an_integer_array_does(
        float_dtype, int_dtype):
    x = Tensor(np.array([0.5, 1.0, 2.0], float_dtype))
    ints = np.array([1, 2, 3], int_dtype)
    for out in (x * ints, x * Tensor(ints), Tensor(ints) * x, engine.add(x, Tensor(ints)),
                Tensor(ints) * np.ones(3, float_dtype), Tensor(ints) * float_dtype(2)):
        assert out.dtype == float_dtype
    np.testing.assert_array_equal((x * Tensor(ints)).data, (x * ints).data)
    # A Python float is float64, as in numpy: no float32 operand, nothing to keep.
    assert (Tensor(ints) * 2.5).dtype == np.float64


def test_integer_and_bool_tensors_in_label_and_condition_positions_keep_their_dtype():
    z = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    loss = engine.softmax_cross_entropy(z, Tensor(np.array([2, 0])))
    assert loss.node.inputs[1].dtype == np.int64 and loss.dtype == np.float32
    out = engine.where(Tensor(np.array([True, False, True])), z[0], Tensor(np.arange(3)))
    assert out.node.inputs[0].dtype == np.bool_ and out.dtype == np.float32
    with pytest.raises(ValueError, match="^softmax_cross_entropy: logits must be a floating-point"):
        engine.softmax_cross_entropy(Tensor(np.zeros((2, 3), np.int64)), np.full((2, 3), 1 / 3))


def test_float64_tensor_with_python_numbers_stays_float64():
    x = Tensor(np.array([0.5, 2.0]), requires_grad=True)
    out = (x * 2 + 1.5) ** 2
    out.sum().backward()
    assert out.dtype == np.float64 and x.grad.dtype == np.float64


# --- integer and boolean inputs -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_labels_stay_integer(dtype):
    """Labels are not differentiable inputs, so they are never cast to the logits' dtype."""
    z = Tensor(np.zeros((2, 3), dtype), requires_grad=True)
    loss = engine.softmax_cross_entropy(z, np.array([2, 0], np.int64))
    assert loss.node.inputs[1].dtype == np.int64
    assert loss.dtype == dtype
    loss = engine.sigmoid_binary_cross_entropy(z, np.ones((2, 3), np.int32))
    assert loss.node.inputs[1].dtype == np.int32
    assert loss.dtype == dtype


@pytest.mark.parametrize("labels", [np.array([2, 0], np.uint8), np.array([2, 0], np.int32),
                                    np.array([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])])
def test_label_arrays_are_copied_with_their_dtype_as_label_tensors_are_kept(labels):
    """A loss's labels given as a numpy array (the common call, which op.py's
    ``_labels_alone`` serves in one pass) are a private copy in the label position, with the
    array's dtype, and give the loss and the gradient the same labels given as a tensor do."""
    z = Tensor(np.array([[0.1, -0.2, 0.3], [0.4, 0.0, -0.5]], np.float32), requires_grad=True)
    loss = engine.softmax_cross_entropy(z, labels)
    loss.backward()
    kept, grad = loss.node.inputs[1], z.grad
    assert kept.dtype == labels.dtype and not np.shares_memory(kept.data, labels)
    before = labels.copy()
    labels[...] = 0                       # the caller's array, changed after the call
    np.testing.assert_array_equal(kept.data, before)
    z.grad = None
    again = engine.softmax_cross_entropy(z, Tensor(before))
    again.backward()
    assert again.item() == loss.item() and np.array_equal(z.grad, grad)


def test_where_condition_stays_boolean_and_dropout_mask_takes_the_input_dtype():
    x = Tensor(np.ones(4, np.float32), requires_grad=True)
    out = engine.where(np.array([True, False, True, False]), x, 0.0)
    assert out.node.inputs[0].dtype == np.bool_
    out = engine.dropout(x, p=0.5, rng=np.random.default_rng(0))
    (mask,) = out.node.saved
    assert mask.dtype == np.float32 and out.dtype == np.float32


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="^only floating-point tensors can require grad, got dtype int64"):
        Tensor(np.arange(3), requires_grad=True)
    t = Tensor(np.arange(3))
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        t.requires_grad = True                   # setting the flag later is checked too
    assert not t.requires_grad


def test_integer_tensors_compute_in_integers_without_a_graph():
    a = Tensor(np.arange(4))
    out = a * 2 + 1
    assert out.dtype.kind == "i" and out.node is None
    np.testing.assert_array_equal(out.data, [1, 3, 5, 7])


def test_a_python_int_beyond_int64_takes_the_float_operands_dtype_or_is_refused_plainly():
    """np.array(2**70) is an object array, so `x + 2**70` said "input 1 must be a Tensor, an
    array or a number, got int". Next to a float operand it is a float of that dtype, as a
    Python number is in numpy and PyTorch; with integers only (or beyond float64) it is an
    OverflowError that says the integer is too large, as numpy and PyTorch refuse it too."""
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = x + 2**70
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y.data, np.float32(2.0**70) + x.data)
    (x * -2**70 + y).sum().backward()
    np.testing.assert_array_equal(x.grad, np.float32(1 - 2.0**70) * np.ones(2, np.float32))
    with engine.no_grad():
        x += 2**70                                     # in place: the same rule
    np.testing.assert_array_equal(x.data, np.float32(2.0**70) + np.float32([1, 2]))
    i = Tensor([1, 2])
    too_large = r"the integer 1180591620717411303424, is too large for int64"
    with pytest.raises(OverflowError, match=r"^add: input 1, " + too_large + r".*t\.astype\(np\.float64\)"):
        i + 2**70
    with pytest.raises(OverflowError, match=r"^mul: input 0, the integer -1180591620717411303424, "
                                            r"is too large for int64"):
        -2**70 * i
    with pytest.raises(OverflowError, match=r"^add: input 1, the integer of 2001 bits, is too "
                                            r"large even for float64"):
        x + 2**2000
    with pytest.raises(OverflowError, match=r"^\+=: the integer 1180591620717411303424 is too "
                                            r"large for int64"):
        i += 2**70
    np.testing.assert_array_equal(i.data, [1, 2])
    with pytest.raises(OverflowError, match=r"^Tensor: the integer 1180591620717411303424 is "
                                            r"too large for int64.*as a float \(1\.18059e\+21\)"):
        Tensor(2**70)


def test_a_python_int_from_2_to_the_63_is_refused_with_integer_operands_unless_uint64():
    """np.array(2**63) is uint64, so `int64_tensor + 2**63` slipped past the huge-int rule
    (threshold 2**64) and came out float64, the +1 and +2 lost. As in numpy 2, a Python int
    takes the other operands' dtype: it must fit int64 there, fits uint64 next to uint64
    operands, and takes a float operand's dtype."""
    i = Tensor([1, 2])
    too_large = r"the integer 9223372036854775808, is too large for int64 \(it fits uint64 alone"
    with pytest.raises(OverflowError, match=r"^add: input 1, " + too_large):
        i + 2**63
    with pytest.raises(OverflowError, match=r"^mul: input 0, the integer 18446744073709551615, "
                                            r"is too large for int64"):
        (2**64 - 1) * i
    with pytest.raises(OverflowError, match=r"^add: input 1, " + too_large):
        Tensor([True, False]) + 2**63
    u = Tensor(np.array([1, 2], np.uint64))
    for y in (u + 2**63, 2**63 + u):
        assert y.dtype == np.uint64
        np.testing.assert_array_equal(y.data, np.array([2**63 + 1, 2**63 + 2], np.uint64))
    x = Tensor(np.array([1.0, 2.0], np.float32))
    assert (x + 2**63).dtype == np.float32
    np.testing.assert_array_equal((i + (-2**63)).data,
                                  [1 - 2**63, 2 - 2**63])     # -2**63 fits int64
    assert Tensor(2**63).dtype == np.uint64                 # alone it is numpy's uint64


def test_a_python_int_beside_uint64_operands_is_uint64():
    """An int64 constant made `uint64_tensor + 1` float64, rounding 2**63 + 2 to a float
    silently; as in numpy 2 the int takes uint64 (a negative one is refused). Other integer
    dtypes keep their int64 constant (uint8 - 1 is -1, never a wrapped 255)."""
    u = Tensor(np.array([2**63 + 1], np.uint64))
    for y in (u + 1, 1 + u):
        assert y.dtype == np.uint64 and int(y.data[0]) == 2**63 + 2
    with pytest.raises(OverflowError, match=r"^sub: input 1, the integer -1, is outside uint64"):
        u - (-1)
    small = Tensor(np.array([0], np.uint8)) - 1
    assert small.dtype == np.int64 and small.data[0] == -1


# --- constants taking a narrower dtype ---------------------------------------------------------

F16 = Tensor(np.array([1e4], np.float16))
F32 = Tensor(np.array([1e4], np.float32))


@pytest.mark.parametrize("compute, op, value, becomes", [
    (lambda: F16 / 70000.0, "div", "70000.0", "inf"),            # was 1e4 / inf = 0
    (lambda: F16 * 5e-9, "mul", "5e-09", "0.0"),                  # was 0 (torch: 5e-05)
    (lambda: F16 * 3e-8, "mul", "3e-08", "5.96"),                 # a subnormal twice the value
    (lambda: F16 + np.array([1.0, -7e4]), "add", "-70000.0", "inf"),
    (lambda: F32 * 1e39, "mul", "1e+39", "inf"),
    (lambda: F32 * 1e-50, "mul", "1e-50", "0.0"),
    (lambda: F16 * Tensor(np.array([70000])), "int64", "70000", "inf"),   # an integer tensor
])
def test_a_constant_the_ops_dtype_cannot_hold_is_an_error_not_a_silent_inf_or_zero(compute, op, value,
                                                                                   becomes):
    with pytest.raises(ValueError, match=rf"{op}.* holds {re.escape(value)}, which is {becomes}.*in float(16|32)"):
        compute()


def test_constants_the_dtype_holds_are_rounded_as_before():
    assert (Tensor(np.float16(1.0)) * 65519.0).item() == 65504   # rounds to 65504, not past it
    assert (F16 / 2049).item() == np.float16(1e4) / np.float16(2049)     # 2049 rounds to 2048
    assert (F16 * 6e-5).item() == np.float16(1e4) * np.float16(6e-5)     # subnormal, within eps
    np.testing.assert_array_equal((F16 * np.array([np.inf, 0.0])).numpy(), [np.inf, 0.0])
    assert np.isnan((F16 * np.nan).item())                       # Inf and NaN stay what they are
    assert (F32 * 0.1).item() == np.float32(1e4) * np.float32(0.1)


def test_a_float16_model_given_a_float32_array_it_cannot_hold_says_so():
    """model(X) casts an array X to the weights' dtype (model(Tensor(X)) computes in X's);
    70000 became Inf in float16 and the scores -inf, with numpy's warning alone."""
    from handgrad import nn
    model = nn.MLP([2, 3, 2], seed=0, dtype=np.float16)
    with pytest.raises(ValueError, match="linear: input 0 holds 70000.0, which is inf in float16"):
        model(np.array([[70000.0, 1.0]], np.float32))
    with pytest.raises(ValueError, match="mul: input 1 holds 5e-09, which is 0.0 in float16"):
        nn.l2_penalty(model, weight_decay=1e-8)          # was exactly 0, its gradient too


def test_a_constant_the_dtype_cannot_hold_is_named_whatever_the_tensors_name():
    """The message was a template formatted after the tensor's description went in: a
    tensor named "{n}" raised KeyError('n') instead of the error."""
    with pytest.raises(ValueError, match=r"Tensor '\{n\}' .* holds 70000, which is inf in float16"):
        F16 * Tensor(np.array([70000]), name="{n}")
