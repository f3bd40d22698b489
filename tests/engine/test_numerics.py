"""Numerical stability: ops that involve exp or log give finite, correct values and
gradients for inputs of magnitude 1e4, in float32 and in float64.

e^10000 overflows every float type, so a naive formula returns inf or nan (and numpy
signals it). Each check runs under ``np.errstate(over=, divide=, invalid="raise")``, so an
overflow, a log(0) or an inf - inf anywhere inside the op fails the test even if the
final result happened to be finite. Underflow is not trapped: e^-10000 = 0 is the
correctly rounded answer that stable formulas rely on.

Limits are compared exactly where the stable formula is exact, and otherwise to a few
ulps of the dtype.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor

DTYPES = [np.float32, np.float64]
BIG = [-1e4, -50.0, 0.0, 50.0, 1e4]


@pytest.fixture(autouse=True)
def trap_floating_point_errors():
    with np.errstate(over="raise", divide="raise", invalid="raise", under="ignore"):
        yield


def value_and_grad(f, x, dtype, grad=None):
    """f(x) and the gradient of <grad, f(x)> (grad = ones by default), both checked finite
    and of the input's dtype."""
    t = Tensor(np.asarray(x, dtype=dtype), requires_grad=True)
    y = f(t)
    y.backward(np.ones(y.shape, dtype) if grad is None else np.asarray(grad, dtype))
    assert y.dtype == dtype and t.grad.dtype == dtype
    assert np.isfinite(y.data).all(), y.data
    assert np.isfinite(t.grad).all(), t.grad
    return y.data, t.grad


def tangent(f, x, dtype):
    """The forward-mode derivative along ones, checked finite (exercises the JVP rules too)."""
    _, dy = engine.jvp(f, (np.asarray(x, dtype=dtype),), (np.ones(len(x), dtype),))
    assert np.isfinite(dy).all(), dy
    return dy


def ulps(dtype, n=4):
    return n * np.finfo(dtype).eps


# --- elementwise activations --------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_saturates_without_overflow(dtype):
    y, g = value_and_grad(engine.sigmoid, BIG, dtype)
    assert y[0] == 0 and y[2] == 0.5 and y[3] == 1 and y[4] == 1
    # sigmoid(-50) = e^-50 / (1 + e^-50) ~ e^-50: tiny but relative-accurate, not flushed to 0.
    np.testing.assert_allclose(y[1], math.exp(-50), rtol=ulps(dtype))
    np.testing.assert_allclose(g, [0, math.exp(-50), 0.25, 0, 0], rtol=ulps(dtype), atol=0)
    np.testing.assert_array_equal(tangent(engine.sigmoid, BIG, dtype), g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_is_exact_at_large_magnitude(dtype):
    y, g = value_and_grad(engine.softplus, BIG, dtype)
    assert y[4] == 1e4          # log(1 + e^10000) = 10000 + log(1 + e^-10000)
    assert y[3] == 50           # 50 + log1p(e^-50), and e^-50 is below half an ulp of 50
    assert y[0] == 0
    np.testing.assert_allclose(y[1], math.exp(-50), rtol=ulps(dtype))
    np.testing.assert_allclose(y[2], math.log(2), rtol=ulps(dtype))
    np.testing.assert_allclose(g, [0, math.exp(-50), 0.5, 1, 1], rtol=ulps(dtype), atol=0)
    np.testing.assert_array_equal(tangent(engine.softplus, BIG, dtype), g)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_saturates(dtype):
    y, g = value_and_grad(engine.tanh, BIG, dtype)
    np.testing.assert_array_equal(y, [-1, -1, 0, 1, 1])
    np.testing.assert_array_equal(g, [0, 0, 1, 0, 0])


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
def test_elu_never_exponentiates_large_positives(dtype, alpha):
    """elu computes alpha e^x only on min(x, 0): e^10000 is never formed."""
    f = lambda t: engine.elu(t, alpha=alpha)  # noqa: E731
    y, g = value_and_grad(f, BIG, dtype)
    np.testing.assert_array_equal(y[[0, 2, 3, 4]], [-alpha, 0, 50, 1e4])
    np.testing.assert_allclose(y[1], -alpha, rtol=ulps(dtype))          # alpha (e^-50 - 1)
    np.testing.assert_array_equal(g[[0, 2, 3, 4]], [0, alpha, 1, 1])     # elu'(0) = alpha
    np.testing.assert_allclose(g[1], alpha * math.exp(-50), rtol=ulps(dtype))
    np.testing.assert_array_equal(tangent(f, BIG, dtype), g)


@pytest.mark.parametrize("approximate", ["tanh", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_limits(dtype, approximate):
    """gelu(x) -> x and gelu'(x) -> 1 for large x; gelu(x) -> 0, gelu'(x) -> 0 for very negative x.
    The tanh form cubes x (1e12, fine even in float32)."""
    f = lambda t: engine.gelu(t, approximate=approximate)  # noqa: E731
    y, g = value_and_grad(f, BIG, dtype)
    np.testing.assert_array_equal(y, [0, 0, 0, 50, 1e4])
    np.testing.assert_array_equal(g, [0, 0, 0.5, 1, 1])
    np.testing.assert_array_equal(tangent(f, BIG, dtype), g)


def test_gelu_in_float16_saturates_without_nan():
    """float16 tops out at 65504: the tanh form's u'(x) ~ 0.107 x^2 overflows from |x| ~ 700
    where 1 - tanh(u)^2 is 0, and 0 * inf made the gradient NaN. It is 0 and 1, as the
    limits say (and as PyTorch's float16 gelu gives), computed in float16."""
    x = Tensor(np.array([-1000, -300, 100, 300, 1000, 60000], np.float16), requires_grad=True)
    engine.gelu(x).sum().backward()
    assert x.grad.dtype == np.float16
    np.testing.assert_array_equal(x.grad, [0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_and_leaky_relu_at_large_magnitude(dtype):
    y, g = value_and_grad(engine.relu, BIG, dtype)
    np.testing.assert_array_equal(y, [0, 0, 0, 50, 1e4])
    np.testing.assert_array_equal(g, [0, 0, 0, 1, 1])
    y, g = value_and_grad(lambda t: engine.leaky_relu(t, negative_slope=0.5), BIG, dtype)
    np.testing.assert_array_equal(y, [-5e3, -25, 0, 50, 1e4])
    np.testing.assert_array_equal(g, [0.5, 0.5, 0.5, 1, 1])


# --- softmax, log_softmax, logsumexp -------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_of_huge_logits(dtype):
    g = np.array([0.3, -1.0, 2.0, 0.5, 4.0])
    y, grad = value_and_grad(engine.softmax, BIG, dtype, grad=g)
    np.testing.assert_array_equal(y, [0, 0, 0, 0, 1])
    # p is one-hot, so p * (g - <g, p>) = 0 exactly.
    np.testing.assert_array_equal(grad, 0)
    y, grad = value_and_grad(engine.softmax, [1e4, 1e4, -1e4], dtype, grad=[1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y, [0.5, 0.5, 0])
    np.testing.assert_array_equal(grad, [0.25, -0.25, 0])   # p1 (1 - p1), -p1 p2
    tangent(engine.softmax, BIG, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_log_softmax_of_huge_logits(dtype):
    y, grad = value_and_grad(engine.log_softmax, BIG, dtype)
    # x - logsumexp(x) with logsumexp(x) = 1e4 exactly (e^-9950 and smaller vanish).
    np.testing.assert_array_equal(y, [-2e4, -10050, -1e4, -9950, 0])
    # g - p sum(g) with g = ones and p = one-hot at the last entry.
    np.testing.assert_array_equal(grad, [1, 1, 1, 1, -4])
    tangent(engine.log_softmax, BIG, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_of_huge_values(dtype):
    lse = lambda t: engine.logsumexp(t)  # noqa: E731
    y, grad = value_and_grad(lse, BIG, dtype)
    assert y == 1e4
    np.testing.assert_array_equal(grad, [0, 0, 0, 0, 1])   # d logsumexp = softmax

    y, grad = value_and_grad(lse, [1e4, 1e4], dtype)
    np.testing.assert_allclose(y, 1e4 + math.log(2), rtol=ulps(dtype, 1))
    np.testing.assert_array_equal(grad, [0.5, 0.5])
    y, _ = value_and_grad(lse, [-1e4, -1e4], dtype)
    np.testing.assert_allclose(y, -1e4 + math.log(2), rtol=ulps(dtype, 1))
    tangent(lse, BIG, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_logsumexp_over_an_axis_of_huge_rows(dtype):
    x = Tensor(np.array([[1e4, 0.0], [-1e4, -1e4]], dtype), requires_grad=True)
    y = engine.logsumexp(x, axis=1)
    y.sum().backward()
    np.testing.assert_allclose(y.data, [1e4, -1e4 + math.log(2)], rtol=ulps(dtype, 1))
    np.testing.assert_array_equal(x.grad, [[1, 0], [0.5, 0.5]])


# --- fused losses -------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_of_a_confidently_wrong_row(dtype):
    """logits [1e4, 0] with label 1: loss = 1e4 exactly, gradient = softmax - onehot = [1, -1]."""
    ce = lambda t: engine.softmax_cross_entropy(t, np.array(1))  # noqa: E731
    y, grad = value_and_grad(ce, [1e4, 0.0], dtype)
    assert y == 1e4
    np.testing.assert_array_equal(grad, [1, -1])
    tangent(ce, [1e4, 0.0], dtype)


@pytest.mark.parametrize("reduction, scale", [("mean", 3), ("sum", 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_batch_with_huge_logits(dtype, reduction, scale):
    z = np.array([[1e4, 0.0], [0.0, 1e4], [-1e4, 1e4]], dtype)
    labels = np.array([1, 1, 0])     # wrong by 1e4, right, wrong by 2e4
    zt = Tensor(z, requires_grad=True)
    loss = engine.softmax_cross_entropy(zt, labels, reduction=reduction)
    loss.backward()
    assert loss.item() == 3e4 / scale
    np.testing.assert_array_equal(zt.grad, np.array([[1, -1], [0, 0], [-1, 1]], dtype) / scale)

    losses = engine.softmax_cross_entropy(Tensor(z), labels, reduction="none")
    np.testing.assert_array_equal(losses.data, [1e4, 0, 2e4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_smoothing_and_probabilities_at_huge_logits(dtype):
    """Soft targets put weight on classes whose log-probability is -1e4: the loss is large
    but finite, and the gradient is still p - y."""
    z = np.array([[1e4, 0.0, -1e4]], dtype)
    zt = Tensor(z, requires_grad=True)
    loss = engine.softmax_cross_entropy(zt, np.array([0]), label_smoothing=0.3)
    loss.backward()
    # Smoothed targets (1 - 0.3) onehot + 0.3 / 3 = [0.8, 0.1, 0.1]; log p = [0, -1e4, -2e4].
    np.testing.assert_allclose(loss.item(), 0.1 * 1e4 + 0.1 * 2e4, rtol=ulps(dtype))
    np.testing.assert_allclose(zt.grad, [[1 - 0.8, 0 - 0.1, 0 - 0.1]], rtol=ulps(dtype))

    zt = Tensor(z, requires_grad=True)
    probs = np.array([[0.5, 0.25, 0.25]], dtype)
    loss = engine.softmax_cross_entropy(zt, probs)
    loss.backward()
    assert loss.item() == 0.25 * 1e4 + 0.25 * 2e4
    np.testing.assert_array_equal(zt.grad, [[0.5, -0.25, -0.25]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_at_huge_logits(dtype):
    """loss = max(z, 0) - z y + log(1 + e^-|z|): z = 1e4 with y = 0 costs 1e4, as does
    z = -1e4 with y = 1; a confident right answer costs 0. Gradient (s - y)/N."""
    z = [1e4, -1e4, 1e4, -1e4, 0.0]
    y = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    losses, grad = value_and_grad(
        lambda t: engine.sigmoid_binary_cross_entropy(t, y, reduction="none"), z, dtype)
    np.testing.assert_array_equal(losses[:4], [1e4, 1e4, 0, 0])
    np.testing.assert_allclose(losses[4], math.log(2), rtol=ulps(dtype))
    np.testing.assert_array_equal(grad, [1, -1, 0, 0, -0.5])

    mean, grad = value_and_grad(lambda t: engine.sigmoid_binary_cross_entropy(t, y), z, dtype)
    np.testing.assert_allclose(mean, (2e4 + math.log(2)) / 5, rtol=ulps(dtype))
    np.testing.assert_allclose(grad, np.array([1, -1, 0, 0, -0.5]) / 5, rtol=ulps(dtype, 1))

    # A soft target 0.5 at z = 1e4: 1e4 - 0.5e4 + 0.
    soft, grad = value_and_grad(
        lambda t: engine.sigmoid_binary_cross_entropy(t, np.array([0.5]), reduction="sum"), [1e4], dtype)
    assert soft == 5e3
    np.testing.assert_array_equal(grad, [0.5])
    tangent(lambda t: engine.sigmoid_binary_cross_entropy(t, y), z, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_detect_anomaly_stays_quiet_on_stable_ops(dtype):
    """detect_anomaly raises on the first NaN/Inf; none of the stable ops produces one."""
    x = Tensor(np.array(BIG, dtype), requires_grad=True)
    with engine.detect_anomaly():
        parts = [engine.softmax(x), engine.log_softmax(x), engine.sigmoid(x), engine.softplus(x),
                 engine.tanh(x), engine.elu(x), engine.gelu(x), engine.gelu(x, approximate="none"),
                 engine.logsumexp(x).reshape(1),
                 engine.softmax_cross_entropy(x, np.array(0)).reshape(1),
                 engine.sigmoid_binary_cross_entropy(x, np.ones(5)).reshape(1)]
        engine.concat(parts).sum().backward()
    assert np.isfinite(x.grad).all()


# --- float16 reductions: summed in float32 ---------------------------------------------------
# A float16 sum overflows at 65504 where the mean, the variance or the log of the sum fits,
# and a sum along a strided axis stalls at 2048 (2048 + 1 rounds to 2048). Reductions
# accumulate float16 in float32 and cast back, as PyTorch does: each case matches its float64
# reference to float16 rounding, value, gradient and tangent alike, in float16.
_SPREAD = np.r_[np.zeros(99), 2000.0]        # var 39600; squares of 1980 overflow float16
_WIDE = np.zeros((2, 70000))                 # 70000 classes: a normaliser beyond 65504
FLOAT16_SUMS = {
    "var": (lambda t: t.var(), np.array([0.0, 400.0])),        # 40000 (PyTorch: 40000)
    "var of a spread": (lambda t: t.var(), _SPREAD),
    "var ddof=1": (lambda t: t.var(axis=0, ddof=1), _SPREAD.reshape(-1, 1)),
    "mse": (lambda t: engine.mse(t, np.zeros(4)), np.full(4, 200.0)),          # 40000
    "bce": (lambda t: engine.sigmoid_binary_cross_entropy(t, np.zeros(3000)),
            np.full(3000, 30.0)),                                               # 30
    "cross entropy": (lambda t: engine.softmax_cross_entropy(t, np.array([0, 1])), _WIDE),
    "cross entropy, smoothed": (lambda t: engine.softmax_cross_entropy(
        t, np.array([0, 1]), label_smoothing=0.1), _WIDE),
    "cross entropy over 70000 rows": (lambda t: engine.softmax_cross_entropy(
        t, np.zeros(70000, np.int64)), np.zeros((70000, 3))),        # a total of 76903
    "cross entropy, probabilities": (lambda t: engine.softmax_cross_entropy(
        t, np.eye(3, dtype=np.float16)[np.zeros(70000, np.int64)]), np.zeros((70000, 3))),
    "logsumexp": (lambda t: t.logsumexp(axis=1), _WIDE),
    "log_softmax": (lambda t: engine.log_softmax(t)[:, :3], _WIDE),
    "softmax": (lambda t: engine.softmax(t)[:, :3], _WIDE),
    "mean of 70000": (lambda t: t.mean(axis=1), _WIDE + 1),     # gradient 1 / 70000, not 1 / inf
    "var of 70000": (lambda t: t.var(axis=1), np.r_[[0.0], [1.0]].repeat(35000)[None]),
    "sum along a strided axis": (lambda t: t.sum(axis=0), np.ones((5000, 3))),
    "broadcast bias": (lambda t: (Tensor(np.ones((5000, 3), np.float16)) + t).sum(axis=0) * (1 / 5000),
                       np.ones(3)),
    "linear bias": (lambda t: engine.linear(Tensor(np.ones((5000, 2), np.float16)),
                                            Tensor(np.ones((2, 3), np.float16)), t)
                    .sum(axis=0) * (1 / 5000), np.ones(3)),
    "max of 3000 ties": (lambda t: t.max(axis=0), np.zeros((3000, 2))),    # each 1/3000
}


@pytest.mark.parametrize("case", FLOAT16_SUMS)
def test_float16_reductions_accumulate_in_float32(case):
    f, x = FLOAT16_SUMS[case]
    rng = np.random.default_rng(0)
    dx = rng.uniform(-1, 1, x.shape).astype(np.float16)
    results = {}
    for dtype in (np.float16, np.float64):
        t = Tensor(x.astype(dtype), requires_grad=True)
        y = f(t)
        seed = np.linspace(0.5, 1.5, y.size).reshape(y.shape).astype(dtype)
        y.backward(seed)
        _, dy = engine.jvp(f, (x.astype(dtype),), (dx.astype(dtype),))
        assert y.dtype == t.grad.dtype == np.asarray(dy).dtype == dtype
        results[dtype] = y.data, t.grad, dy
    for got, want in zip(results[np.float16], results[np.float64], strict=True):
        scale = np.abs(want).max() + 1e-4
        np.testing.assert_allclose(got.astype(np.float64), want, rtol=4e-3, atol=4e-3 * scale)


@pytest.mark.parametrize("dtype, a, b, expected", [
    (np.float16, 1.0, 300.0, -1 / 90000),          # b * b = inf in float16: d/db was -0
    (np.float16, 300.0, 300.0, -1 / 300),
    (np.float32, 1e20, 1e20, -1e-20),              # b * b = inf in float32
    (np.float64, 1e200, 1e200, -1e-200),
    (np.float64, 0.0, 1e-300, -0.0),               # b * b = 0: 0 / 0 was NaN
    (np.float64, 1e-300, 1e-300, -1e300),          # b * b = 0: was -inf
])
def test_div_gradient_with_respect_to_the_denominator_where_b_squared_does_not_fit(dtype, a, b, expected):
    """d(a/b)/db = -a/b² was computed as -a / (b * b), which overflows or underflows where
    the derivative fits; -(a / b) / b does not (as PyTorch computes it)."""
    # Two roundings of the dtype; float16's -1.11e-5 is subnormal, whose spacing (6e-8) is
    # 0.54% of it: one spacing allowed there.
    rtol = 6e-3 if dtype == np.float16 else 4 * float(np.finfo(dtype).eps)
    ta = engine.Tensor(np.array([a], dtype), requires_grad=True)
    tb = engine.Tensor(np.array([b], dtype), requires_grad=True)
    (ta / tb).sum().backward()
    np.testing.assert_allclose(tb.grad.astype(np.float64), [expected], rtol=rtol)
    _, tangent = engine.jvp(lambda u: ta.detach() / u, (np.array([b], dtype),), (np.ones(1, dtype),))
    np.testing.assert_allclose(tangent.astype(np.float64), [expected], rtol=rtol)
