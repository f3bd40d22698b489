"""Activation ops one by one: forward against textbook formulas, derivatives at chosen
points against hand-derived formulas (by the VJP and the JVP), the documented convention
at each kink, softmax/log_softmax facts, and dropout's mask contract.

Tolerances: float64 everywhere. The engine and the references evaluate the same function
in a different order (stable sigmoid, logaddexp, ...), and a few points lose digits to
cancellation (1 + erf(x) near x = -3, e^x - 1 near 0), so values agree to a few hundred
ulps: RTOL = 1e-12.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor

RTOL = 1e-12
# Away from every kink (0), both signs, small and large-ish magnitudes.
POINTS = np.array([-3.0, -1.0, -0.25, 0.3, 1.0, 2.5])


def elementwise_derivative(f, x):
    """f'(x) of an elementwise f, twice: by the VJP (backward of sum(f(x))) and by the JVP
    (tangent of ones). Both equal the diagonal of the Jacobian."""
    t = Tensor(x, requires_grad=True)
    f(t).sum().backward()
    _, tangent = engine.jvp(f, (x,), (np.ones_like(x),))
    return t.grad, tangent


def np_sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def erf(x):
    return np.vectorize(math.erf)(x)


def gelu_tanh_ref(x):
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    return 0.5 * x * (1 + np.tanh(u))


def gelu_tanh_derivative_ref(x):
    # d/dx [x (1 + tanh u) / 2] = (1 + tanh u) / 2 + x (1 - tanh^2 u) u' / 2
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    du = math.sqrt(2 / math.pi) * (1 + 3 * 0.044715 * x ** 2)
    return 0.5 * (1 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * du


def normal_cdf(x):
    return 0.5 * (1 + erf(x / math.sqrt(2)))


def normal_pdf(x):
    return np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


# name -> (engine function, forward reference, derivative reference)
ELEMENTWISE = {
    "sigmoid": (engine.sigmoid, np_sigmoid, lambda x: np_sigmoid(x) * (1 - np_sigmoid(x))),
    "tanh": (engine.tanh, np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "relu": (engine.relu, lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(float)),
    "leaky_relu_default": (engine.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x),
                           lambda x: np.where(x > 0, 1.0, 0.01)),
    "leaky_relu_0.2": (lambda t: engine.leaky_relu(t, negative_slope=0.2),
                       lambda x: np.where(x > 0, x, 0.2 * x), lambda x: np.where(x > 0, 1.0, 0.2)),
    "elu_default": (engine.elu, lambda x: np.where(x > 0, x, np.expm1(x)),
                    lambda x: np.where(x > 0, 1.0, np.exp(x))),
    "elu_alpha2": (lambda t: engine.elu(t, alpha=2.0), lambda x: np.where(x > 0, x, 2 * np.expm1(x)),
                   lambda x: np.where(x > 0, 1.0, 2 * np.exp(x))),
    "softplus": (engine.softplus, lambda x: np.log1p(np.exp(x)), np_sigmoid),
    "gelu_tanh": (lambda t: engine.gelu(t, approximate="tanh"), gelu_tanh_ref, gelu_tanh_derivative_ref),
    "gelu_none": (lambda t: engine.gelu(t, approximate="none"), lambda x: x * normal_cdf(x),
                  lambda x: normal_cdf(x) + x * normal_pdf(x)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_forward_matches_formula(name):
    f, ref, _ = ELEMENTWISE[name]
    np.testing.assert_allclose(f(Tensor(POINTS)).data, ref(POINTS), rtol=RTOL, atol=0)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_derivative_matches_hand_formula(name):
    f, _, dref = ELEMENTWISE[name]
    by_vjp, by_jvp = elementwise_derivative(f, POINTS)
    np.testing.assert_allclose(by_vjp, dref(POINTS), rtol=RTOL, atol=0)
    np.testing.assert_allclose(by_jvp, dref(POINTS), rtol=RTOL, atol=0)


def test_gelu_default_is_the_tanh_approximation():
    np.testing.assert_array_equal(engine.gelu(Tensor(POINTS)).data, gelu_tanh_ref(POINTS))
    np.testing.assert_array_equal(Tensor(POINTS).gelu().data,
                                  engine.gelu(Tensor(POINTS), approximate="tanh").data)


def test_gelu_none_uses_the_exact_normal_cdf():
    """gelu(x) = x Phi(x) exactly: at x = 1, Phi(1) = (1 + erf(1/sqrt 2)) / 2 = 0.8413447460685429."""
    assert engine.gelu(Tensor(1.0), approximate="none").item() == pytest.approx(0.8413447460685429,
                                                                                rel=1e-15)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="^gelu: approximate"):
        engine.gelu(Tensor(POINTS), approximate="erf")


# --- kinks ------------------------------------------------------------------------------
# At x = 0 the left and right derivatives differ; the engine documents which value it uses.
# Slopes are chosen different from 1 so that the left value is distinguishable from the right one.

@pytest.mark.parametrize("f, expected", [
    (engine.relu, 0.0),
    (lambda t: engine.leaky_relu(t, negative_slope=0.2), 0.2),
    (engine.leaky_relu, 0.01),
    (lambda t: engine.elu(t, alpha=2.0), 2.0),
    (lambda t: engine.elu(t, alpha=0.5), 0.5),
], ids=["relu", "leaky_relu_0.2", "leaky_relu_default", "elu_alpha2", "elu_alpha0.5"])
def test_derivative_at_the_kink(f, expected):
    by_vjp, by_jvp = elementwise_derivative(f, np.zeros(3))
    np.testing.assert_array_equal(by_vjp, expected)
    np.testing.assert_array_equal(by_jvp, expected)


@pytest.mark.parametrize("f", [engine.relu, engine.leaky_relu, engine.elu])
def test_value_at_the_kink_is_zero(f):
    np.testing.assert_array_equal(f(Tensor(np.zeros(2))).data, 0.0)


def test_parameters_can_be_passed_positionally():
    """leaky_relu(x, 0.2), elu(x, 2.0), gelu(x, "none") mean what the methods mean: the
    number is a parameter, not a second input (which broke backward)."""
    x = np.array([-2.0, 3.0])
    for positional, keyword in [
        (lambda t: engine.leaky_relu(t, 0.2), lambda t: engine.leaky_relu(t, negative_slope=0.2)),
        (lambda t: engine.elu(t, 2.0), lambda t: engine.elu(t, alpha=2.0)),
        (lambda t: engine.gelu(t, "none"), lambda t: engine.gelu(t, approximate="none")),
    ]:
        np.testing.assert_array_equal(positional(Tensor(x)).data, keyword(Tensor(x)).data)
        np.testing.assert_array_equal(elementwise_derivative(positional, x)[0],
                                      elementwise_derivative(keyword, x)[0])


# --- softmax and log_softmax -------------------------------------------------------------

X = np.random.default_rng(0).normal(scale=2.0, size=(4, 5))
G = np.random.default_rng(1).normal(size=(4, 5))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_forward_and_normalization(axis):
    p = engine.softmax(Tensor(X), axis=axis).data
    np.testing.assert_allclose(p, np_softmax(X, axis=axis), rtol=RTOL)
    assert (p > 0).all()
    # Each sum has at most 5 terms of size <= 1: a few ulps of 1.
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=0, atol=4e-16)


def test_softmax_axis_0_is_softmax_of_the_transpose():
    np.testing.assert_allclose(engine.softmax(Tensor(X), axis=0).data,
                               engine.softmax(Tensor(X.T), axis=-1).data.T, rtol=1e-15)
    assert not np.allclose(engine.softmax(Tensor(X), axis=0).data,
                           engine.softmax(Tensor(X), axis=-1).data)


def test_softmax_default_axis_is_last():
    np.testing.assert_array_equal(engine.softmax(Tensor(X)).data,
                                  engine.softmax(Tensor(X), axis=-1).data)


def test_softmax_is_invariant_to_a_shift_of_each_row():
    shifted = X + np.array([[-7.0], [0.5], [30.0], [100.0]])
    np.testing.assert_allclose(engine.softmax(Tensor(shifted)).data, engine.softmax(Tensor(X)).data,
                               rtol=1e-12)


@pytest.mark.parametrize("axis", [0, -1])
def test_softmax_gradient_is_p_times_g_minus_weighted_mean(axis):
    """d softmax: J^T g = p * (g - sum(g p)) along the axis (the Jacobian diag(p) - p p^T)."""
    x = Tensor(X, requires_grad=True)
    engine.softmax(x, axis=axis).backward(G)
    p = np_softmax(X, axis=axis)
    expected = p * (G - (G * p).sum(axis=axis, keepdims=True))
    np.testing.assert_allclose(x.grad, expected, rtol=1e-10, atol=1e-15)
    # Softmax is shift invariant, so the gradient sums to zero along the axis.
    np.testing.assert_allclose(x.grad.sum(axis=axis), 0.0, atol=1e-15)


@pytest.mark.parametrize("axis", [0, -1])
def test_log_softmax_equals_log_of_softmax(axis):
    """For moderate inputs log(softmax) loses nothing, so the two agree to rounding."""
    np.testing.assert_allclose(engine.log_softmax(Tensor(X), axis=axis).data,
                               np.log(np_softmax(X, axis=axis)), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(engine.log_softmax(Tensor(X), axis=axis).data,
                               engine.log(engine.softmax(Tensor(X), axis=axis)).data,
                               rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("axis", [0, -1])
def test_log_softmax_gradient_is_g_minus_p_sum_g(axis):
    x = Tensor(X, requires_grad=True)
    engine.log_softmax(x, axis=axis).backward(G)
    p = np_softmax(X, axis=axis)
    np.testing.assert_allclose(x.grad, G - p * G.sum(axis=axis, keepdims=True), rtol=1e-12, atol=1e-15)


def test_softmax_rejects_an_axis_out_of_range():
    with pytest.raises(ValueError, match="^softmax: axis 2"):
        engine.softmax(Tensor(X), axis=2)
    with pytest.raises(ValueError, match="^log_softmax: axis -3"):
        engine.log_softmax(Tensor(X), axis=-3)


# --- dropout -----------------------------------------------------------------------------

def test_dropout_is_the_identity_when_not_training_or_p_is_zero():
    x = Tensor(np.arange(6.0), requires_grad=True)
    for out in (engine.dropout(x, p=0.5, training=False), engine.dropout(x, p=0.0),
                engine.dropout(x, p=0.0, training=True, rng=np.random.default_rng(0))):
        np.testing.assert_array_equal(out.data, x.data)
        out.backward(np.full(6, 2.0))
    np.testing.assert_array_equal(x.grad, np.full(6, 6.0))   # three identities, gradient 2 each


def test_dropout_of_an_array_when_not_training_keeps_its_values():
    a = np.arange(6.0)
    out = engine.dropout(a, p=0.5, training=False)
    assert isinstance(out, Tensor) and out.node is None
    np.testing.assert_array_equal(out.data, a)


def test_dropout_with_an_int_seed_draws_the_same_mask_every_call():
    x = Tensor(np.ones((20, 30)))
    np.testing.assert_array_equal(engine.dropout(x, p=0.4, rng=5).data,
                                  engine.dropout(x, p=0.4, rng=5).data)
    np.testing.assert_array_equal(engine.dropout(x, p=0.4, rng=5).data,
                                  engine.dropout(x, p=0.4, rng=np.random.default_rng(5)).data)


def test_dropout_positional_p_binds_by_the_signature():
    x = Tensor(np.ones((20, 30)))
    np.testing.assert_array_equal(engine.dropout(x, 0.4, True, 5).data,
                                  engine.dropout(x, p=0.4, rng=5).data)


def test_dropout_refuses_integer_input_instead_of_truncating_the_scale():
    with pytest.raises(TypeError, match="^dropout: needs a floating-point input, got dtype int64"):
        engine.dropout(Tensor(np.arange(6)), p=0.3)


def test_dropout_mask_is_reproducible_with_a_seeded_generator():
    x = Tensor(np.ones((20, 30)))
    a = engine.dropout(x, p=0.4, rng=np.random.default_rng(7)).data
    b = engine.dropout(x, p=0.4, rng=np.random.default_rng(7)).data
    c = engine.dropout(x, p=0.4, rng=np.random.default_rng(8)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_zeroes_and_scales_by_one_over_one_minus_p(p):
    x = np.random.default_rng(0).normal(size=(200, 100))
    y = engine.dropout(Tensor(x), p=p, rng=np.random.default_rng(1)).data
    kept = y != 0
    # Survivors are x / (1 - p); the engine multiplies by the rounded 1/(1-p): one rounding apart.
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=4e-16, atol=0)
    # The dropped fraction is p. With 20,000 draws its standard deviation is at most
    # sqrt(0.25 / 20000) ~ 0.0035; 0.02 is over 5 standard deviations (and the seed is fixed).
    assert abs((~kept).mean() - p) < 0.02


def test_dropout_saves_the_mask_on_the_node_and_its_gradient_is_the_mask():
    x = Tensor(np.random.default_rng(0).normal(size=(6, 7)), requires_grad=True)
    p = 0.3
    y = engine.dropout(x, p=p, rng=np.random.default_rng(3))
    assert y.node.op.name == "dropout" and len(y.node.inputs) == 1
    (mask,) = y.node.saved
    assert set(np.unique(mask)) <= {0.0, 1 / (1 - p)}
    np.testing.assert_array_equal(y.data, x.data * mask)
    g = np.random.default_rng(4).normal(size=(6, 7))
    y.backward(g)
    np.testing.assert_array_equal(x.grad, g * mask)


def test_dropout_mask_matches_an_identically_seeded_draw():
    """The mask keeps element i when rng.random() >= p, so a reader can reproduce it."""
    p = 0.25
    y = engine.dropout(Tensor(np.ones((5, 8)), requires_grad=True), p=p, rng=np.random.default_rng(11))
    keep = np.random.default_rng(11).random((5, 8)) >= p
    np.testing.assert_array_equal(y.node.saved[0] != 0, keep)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_dropout_rejects_p_outside_0_1(p):
    with pytest.raises(ValueError, match="^dropout: p must be in"):
        engine.dropout(Tensor(np.ones(3)), p=p)
    with pytest.raises(ValueError, match="^dropout: p must be in"):
        engine.dropout(Tensor(np.ones(3)), p=p, training=False)


def test_dropout_rejects_a_bad_rng():
    with pytest.raises(TypeError, match="^dropout: rng must be a numpy Generator, an int seed or None"):
        engine.dropout(Tensor(np.ones(3)), p=0.5, rng="seed")


@pytest.mark.parametrize("dtype, x", [(np.float32, -1e-6), (np.float32, -1e-8),
                                      (np.float64, -1e-12)])
def test_elu_keeps_its_digits_near_zero(dtype, x):
    """alpha (e^x - 1) cancels near 0: elu(-1e-8) was 0 in float32 and elu(-1e-6) 4.6% off;
    expm1 keeps every digit, as torch's ELU."""
    got = engine.elu(engine.Tensor(np.array([x], dtype=dtype))).numpy(copy=True)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, np.expm1(np.float64(x)), rtol=np.finfo(dtype).eps)


def test_dropout_whose_one_minus_p_is_zero_in_float16_is_an_error_not_nan():
    """p = 1 - 1e-8 is allowed, and 1 - p is 0 in float16: every output was 0/0 = NaN,
    dropped ones included, with numpy's warning alone."""
    x = engine.Tensor(np.ones(1000, np.float16))
    with pytest.raises(ValueError, match="dropout: p = 0.99999999 leaves 1 - p = 0 in float16"):
        engine.dropout(x, p=1 - 1e-8, rng=0)
    assert np.isfinite(engine.dropout(x, p=0.9, rng=0).numpy()).all()
