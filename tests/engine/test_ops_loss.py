"""The loss ops one by one: the fused softmax_cross_entropy and sigmoid_binary_cross_entropy
against their unfused textbook definitions, their output delta (p - y)/N, every reduction
and target form, and mse.

All in float64. "Exact" comparisons use rtol = 1e-12: the fused op and the reference round
differently (log-sum-exp shifted by the max, p computed as exp(log p)), a few ulps apart.
Gradients are compared with atol = 1e-16 as well, because an entry p - y may be a small
difference of numbers of size ~1 whose last-ulp error is ~1e-16 in absolute terms.
"""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor

RTOL = 1e-12
ATOL_GRAD = 1e-16


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_log_softmax(z):
    s = z - z.max(axis=-1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=-1, keepdims=True))


def np_sigmoid(z):
    return 1 / (1 + np.exp(-z))


def one_hot(labels, C):
    return np.eye(C)[labels]


def logits_and_labels(shape, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=3.0, size=shape)
    return z, rng.integers(0, shape[-1], size=shape[:-1])


def probability_rows(shape, seed=1):
    """Random targets whose rows (last axis) are probability vectors."""
    y = np.random.default_rng(seed).random(shape) + 0.05
    return y / y.sum(axis=-1, keepdims=True)


def unfused_cross_entropy(z, y):
    """-mean over rows of sum_c y_c log_softmax(z)_c, built from engine ops: the same loss
    taken apart, so its gradient comes from log_softmax, mul, sum and mean's rules."""
    return -(Tensor(y) * engine.log_softmax(z, axis=-1)).sum(axis=-1).mean()


def fused_grad(z, targets, **params):
    zt = Tensor(z, requires_grad=True)
    loss = engine.softmax_cross_entropy(zt, targets, **params)
    loss.backward()
    return loss, zt.grad


# --- softmax_cross_entropy ----------------------------------------------------------------

@pytest.mark.parametrize("shape", [(5, 4), (1, 3), (8, 2)])
def test_cross_entropy_with_labels_equals_unfused_definition(shape):
    z, labels = logits_and_labels(shape)
    y = one_hot(labels, shape[-1])
    loss, grad = fused_grad(z, labels)
    reference = -np.mean(np.sum(y * np_log_softmax(z), axis=-1))
    np.testing.assert_allclose(loss.item(), reference, rtol=RTOL)

    N = shape[0]
    np.testing.assert_allclose(grad, (np_softmax(z) - y) / N, rtol=RTOL, atol=ATOL_GRAD)

    zt = Tensor(z, requires_grad=True)
    unfused = unfused_cross_entropy(zt, y)
    unfused.backward()
    np.testing.assert_allclose(loss.item(), unfused.item(), rtol=RTOL)
    # The unfused gradient goes through four rules and is rounded at each: 1e-10.
    np.testing.assert_allclose(grad, zt.grad, rtol=1e-10, atol=1e-15)


def test_cross_entropy_one_hot_float_targets_equal_integer_labels():
    z, labels = logits_and_labels((6, 5))
    loss_int, grad_int = fused_grad(z, labels)
    loss_hot, grad_hot = fused_grad(z, one_hot(labels, 5))
    assert loss_hot.item() == pytest.approx(loss_int.item(), rel=RTOL)
    np.testing.assert_allclose(grad_hot, grad_int, rtol=RTOL, atol=ATOL_GRAD)
    np.testing.assert_allclose(grad_hot, (np_softmax(z) - one_hot(labels, 5)) / 6, rtol=RTOL,
                               atol=ATOL_GRAD)


def test_cross_entropy_with_probability_targets():
    z, _ = logits_and_labels((6, 5))
    y = probability_rows((6, 5))
    loss, grad = fused_grad(z, y)
    np.testing.assert_allclose(loss.item(), -np.mean(np.sum(y * np_log_softmax(z), axis=-1)), rtol=RTOL)
    np.testing.assert_allclose(grad, (np_softmax(z) - y) / 6, rtol=RTOL, atol=ATOL_GRAD)
    zt = Tensor(z, requires_grad=True)
    unfused_cross_entropy(zt, y).backward()
    np.testing.assert_allclose(grad, zt.grad, rtol=1e-10, atol=1e-15)


def test_cross_entropy_targets_may_be_a_tensor():
    z, labels = logits_and_labels((4, 3))
    a = engine.softmax_cross_entropy(Tensor(z), labels).item()
    b = engine.softmax_cross_entropy(Tensor(z), Tensor(labels)).item()
    assert a == b


def test_cross_entropy_targets_not_summing_to_one_use_the_general_delta():
    """For targets of row sum s the derivative is (p s - y)/N (the docstring's general form)."""
    z, _ = logits_and_labels((3, 4))
    y = 2.0 * probability_rows((3, 4))
    _, grad = fused_grad(z, y)
    np.testing.assert_allclose(grad, (np_softmax(z) * 2.0 - y) / 3, rtol=RTOL, atol=ATOL_GRAD)
    zt = Tensor(z, requires_grad=True)
    unfused_cross_entropy(zt, y).backward()
    np.testing.assert_allclose(grad, zt.grad, rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("eps", [0.1, 0.25, 1.0])
@pytest.mark.parametrize("target_kind", ["labels", "one_hot"])
def test_cross_entropy_label_smoothing(eps, target_kind):
    """label_smoothing = eps is cross-entropy against (1 - eps) onehot + eps / C."""
    C = 5
    z, labels = logits_and_labels((6, C))
    smoothed = (1 - eps) * one_hot(labels, C) + eps / C
    targets = labels if target_kind == "labels" else one_hot(labels, C)
    loss, grad = fused_grad(z, targets, label_smoothing=eps)
    np.testing.assert_allclose(loss.item(), -np.mean(np.sum(smoothed * np_log_softmax(z), axis=-1)),
                               rtol=RTOL)
    np.testing.assert_allclose(grad, (np_softmax(z) - smoothed) / 6, rtol=RTOL, atol=ATOL_GRAD)
    zt = Tensor(z, requires_grad=True)
    unfused_cross_entropy(zt, smoothed).backward()
    np.testing.assert_allclose(grad, zt.grad, rtol=1e-10, atol=1e-15)


def test_cross_entropy_reduction_sum():
    z, labels = logits_and_labels((6, 5))
    y = one_hot(labels, 5)
    loss, grad = fused_grad(z, labels, reduction="sum")
    np.testing.assert_allclose(loss.item(), -np.sum(y * np_log_softmax(z)), rtol=RTOL)
    np.testing.assert_allclose(grad, np_softmax(z) - y, rtol=RTOL, atol=ATOL_GRAD)


@pytest.mark.parametrize("targets_kind", ["labels", "probabilities"])
def test_cross_entropy_reduction_none_returns_per_row_losses(targets_kind):
    z, labels = logits_and_labels((6, 5))
    y = one_hot(labels, 5) if targets_kind == "labels" else probability_rows((6, 5))
    targets = labels if targets_kind == "labels" else y
    zt = Tensor(z, requires_grad=True)
    losses = engine.softmax_cross_entropy(zt, targets, reduction="none")
    assert losses.shape == (6,)
    np.testing.assert_allclose(losses.data, -np.sum(y * np_log_softmax(z), axis=-1), rtol=RTOL)
    g = np.random.default_rng(5).normal(size=6)
    losses.backward(g)
    np.testing.assert_allclose(zt.grad, g[:, None] * (np_softmax(z) - y), rtol=RTOL, atol=ATOL_GRAD)


def test_cross_entropy_of_a_single_row_of_shape_C():
    """Logits of shape (C,) with a scalar label: one row, N = 1."""
    z = np.array([0.5, -1.0, 2.0, 0.0])
    for label in (2, np.int64(2), np.array(2)):
        loss, grad = fused_grad(z, label)
        assert loss.shape == ()
        np.testing.assert_allclose(loss.item(), -np_log_softmax(z)[2], rtol=RTOL)
        np.testing.assert_allclose(grad, np_softmax(z) - one_hot(2, 4), rtol=RTOL, atol=ATOL_GRAD)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_leading_batch_axes(reduction):
    """Logits (A, B, C) with labels (A, B): every (a, b) is a row; mean divides by N = A B."""
    A, B, C = 2, 3, 4
    z, labels = logits_and_labels((A, B, C), seed=3)
    y = one_hot(labels, C)
    per_row = -np.sum(y * np_log_softmax(z), axis=-1)
    zt = Tensor(z, requires_grad=True)
    loss = engine.softmax_cross_entropy(zt, labels, reduction=reduction)
    if reduction == "none":
        assert loss.shape == (A, B)
        np.testing.assert_allclose(loss.data, per_row, rtol=RTOL)
        g = np.random.default_rng(6).normal(size=(A, B))
        loss.backward(g)
        expected = g[..., None] * (np_softmax(z) - y)
    else:
        scale = A * B if reduction == "mean" else 1
        np.testing.assert_allclose(loss.item(), per_row.sum() / scale, rtol=RTOL)
        loss.backward()
        expected = (np_softmax(z) - y) / scale
    np.testing.assert_allclose(zt.grad, expected, rtol=RTOL, atol=ATOL_GRAD)
    # Same as flattening the batch axes into one.
    flat = engine.softmax_cross_entropy(Tensor(z.reshape(-1, C)), labels.reshape(-1), reduction=reduction)
    np.testing.assert_allclose(loss.data.reshape(-1) if reduction == "none" else loss.data,
                               flat.data, rtol=RTOL)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_of_non_contiguous_logits_with_leading_axes(eps):
    """Logits (N, T, C) that are a transposed view of (T, N, C): the flattening reshape
    copies, and the delta saved for backward and jvp used to be p without the 1 taken off
    at the true class (a silently wrong gradient)."""
    z, labels = logits_and_labels((3, 2, 4), seed=5)        # z: (T, N, C)
    labels = labels.T                                       # (N, T)
    leaf = Tensor(z, requires_grad=True)
    view = leaf.transpose(1, 0, 2)
    assert not view.data.flags.c_contiguous
    loss = engine.softmax_cross_entropy(view, labels, label_smoothing=eps)
    loss.backward()
    copy = Tensor(np.ascontiguousarray(z.transpose(1, 0, 2)), requires_grad=True)
    expected = engine.softmax_cross_entropy(copy, labels, label_smoothing=eps)
    expected.backward()
    assert loss.item() == expected.item()
    np.testing.assert_array_equal(leaf.grad, copy.grad.transpose(1, 0, 2))
    d = np.random.default_rng(7).normal(size=z.shape)
    _, tangent = engine.jvp(lambda a: engine.softmax_cross_entropy(
        a.transpose(1, 0, 2), labels, label_smoothing=eps), (z,), (d,))
    np.testing.assert_allclose(tangent, np.sum(leaf.grad * d), rtol=1e-12)


@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_loss_targets_that_require_grad_are_refused(loss):
    """Targets are not differentiated (PyTorch's are): soft targets computed from the model
    without detach (distillation) gave the shared weight part of its gradient, silently.
    An error now; detached, or under no_grad, they are taken."""
    z, _ = logits_and_labels((3, 4))
    w = Tensor(np.ones((4,)), requires_grad=True)
    logits = Tensor(z) * w
    targets = engine.softmax(logits) if loss == "softmax_cross_entropy" else logits.sigmoid()
    fn = getattr(engine, loss)
    with pytest.raises(ValueError, match=rf"{loss}: input 1 \(y\) requires grad.*detach"):
        fn(logits, targets)
    fn(logits, targets.detach()).backward()
    assert w.grad is not None
    with engine.no_grad():
        fn(logits, targets)


@pytest.mark.parametrize("targets, params, message", [
    (np.array([0, 4]), {}, "class label 4 is outside"),
    (np.array([-1, 0]), {}, "class label -1 is outside"),
    (np.array([0.0, 1.0]), {}, "float labels"),
    (np.array([0, 1, 2]), {}, "integer labels must have shape"),
    (np.array([0, 1]), {"reduction": "avg"}, "reduction must be one of"),
    (np.array([0, 1]), {"label_smoothing": 1.5}, "label_smoothing must be in"),
    # A negative target made a negative loss (-0.17 for a row [-1, 0, 0]); NaN one too.
    (np.array([[-1.0, 0, 0, 0], [0, 1, 0, 0]]), {}, "targets must not be negative .*got -1.0"),
    (np.array([[np.nan, 0, 0, 1], [0, 1, 0, 0]]), {}, "targets must not be negative .*got nan"),
])
def test_cross_entropy_rejects_bad_arguments(targets, params, message):
    with pytest.raises(ValueError, match=f"^softmax_cross_entropy: .*{message}"):
        engine.softmax_cross_entropy(Tensor(np.zeros((2, 4))), targets, **params)


# --- sigmoid_binary_cross_entropy ----------------------------------------------------------

def bce_reference(z, y):
    s = np_sigmoid(z)
    return -(y * np.log(s) + (1 - y) * np.log(1 - s))


def logits_and_binary_targets(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=shape), rng.integers(0, 2, size=shape).astype(float)


def bce_grad(z, y, **params):
    zt = Tensor(z, requires_grad=True)
    loss = engine.sigmoid_binary_cross_entropy(zt, y, **params)
    loss.backward()
    return loss, zt.grad


@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4)])
def test_bce_mean_over_all_elements(shape):
    z, y = logits_and_binary_targets(shape)
    loss, grad = bce_grad(z, y)
    np.testing.assert_allclose(loss.item(), bce_reference(z, y).mean(), rtol=RTOL)
    np.testing.assert_allclose(grad, (np_sigmoid(z) - y) / z.size, rtol=RTOL, atol=ATOL_GRAD)


@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 4)])
def test_bce_batchmean_divides_by_the_batch_size(shape):
    z, y = logits_and_binary_targets(shape)
    loss, grad = bce_grad(z, y, reduction="batchmean")
    N = shape[0]
    np.testing.assert_allclose(loss.item(), bce_reference(z, y).sum() / N, rtol=RTOL)
    np.testing.assert_allclose(grad, (np_sigmoid(z) - y) / N, rtol=RTOL, atol=ATOL_GRAD)


def test_bce_sum_and_none():
    z, y = logits_and_binary_targets((5, 3))
    loss, grad = bce_grad(z, y, reduction="sum")
    np.testing.assert_allclose(loss.item(), bce_reference(z, y).sum(), rtol=RTOL)
    np.testing.assert_allclose(grad, np_sigmoid(z) - y, rtol=RTOL, atol=ATOL_GRAD)

    zt = Tensor(z, requires_grad=True)
    losses = engine.sigmoid_binary_cross_entropy(zt, y, reduction="none")
    assert losses.shape == (5, 3)
    np.testing.assert_allclose(losses.data, bce_reference(z, y), rtol=RTOL)
    g = np.random.default_rng(2).normal(size=(5, 3))
    losses.backward(g)
    np.testing.assert_allclose(zt.grad, g * (np_sigmoid(z) - y), rtol=RTOL, atol=ATOL_GRAD)


def test_bce_multi_label_and_soft_targets():
    """Several independent labels per row (any number of ones) and soft targets in [0, 1]."""
    z, _ = logits_and_binary_targets((4, 6))
    multi = np.array([[1, 1, 0, 1, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 0]],
                     dtype=float)
    soft = np.random.default_rng(9).random((4, 6))
    for y in (multi, soft):
        loss, grad = bce_grad(z, y, reduction="batchmean")
        np.testing.assert_allclose(loss.item(), bce_reference(z, y).sum() / 4, rtol=RTOL)
        np.testing.assert_allclose(grad, (np_sigmoid(z) - y) / 4, rtol=RTOL, atol=ATOL_GRAD)


@pytest.mark.parametrize("int_dtype", [np.int64, np.int32, np.uint8, np.bool_])
def test_bce_accepts_integer_and_boolean_targets(int_dtype):
    z, y = logits_and_binary_targets((5, 3))
    loss_f, grad_f = bce_grad(z, y)
    loss_i, grad_i = bce_grad(z, y.astype(int_dtype))
    assert loss_i.item() == loss_f.item()
    np.testing.assert_array_equal(grad_i, grad_f)


def test_bce_equals_softplus_form_for_moderate_logits():
    """-[y log s + (1-y) log(1-s)] = softplus(z) - z y, another way to write the same loss."""
    z, y = logits_and_binary_targets((10,))
    np.testing.assert_allclose(engine.sigmoid_binary_cross_entropy(Tensor(z), y, reduction="none").data,
                               np.logaddexp(0, z) - z * y, rtol=RTOL)


@pytest.mark.parametrize("targets, params, message", [
    (np.array([0.0, 1.5]), {}, "targets must lie in"),
    (np.array([0.0, 1.0, 1.0]), {}, "targets shape"),
    (np.array([0.0, 1.0]), {"reduction": "avg"}, "reduction must be one of"),
])
def test_bce_rejects_bad_arguments(targets, params, message):
    with pytest.raises(ValueError, match=f"^sigmoid_binary_cross_entropy: {message}"):
        engine.sigmoid_binary_cross_entropy(Tensor(np.zeros(2)), targets, **params)


# --- mse --------------------------------------------------------------------------------

def pred_and_target(shape=(4, 3)):
    rng = np.random.default_rng(0)
    return rng.normal(size=shape), rng.normal(size=shape)


@pytest.mark.parametrize("reduction, n", [("mean", 12), ("sum", 1)])
def test_mse_value_and_gradients_of_both_inputs(reduction, n):
    p, t = pred_and_target()
    pt, tt = Tensor(p, requires_grad=True), Tensor(t, requires_grad=True)
    loss = engine.mse(pt, tt, reduction=reduction)
    np.testing.assert_allclose(loss.item(), ((p - t) ** 2).sum() / n, rtol=RTOL)
    loss.backward()
    np.testing.assert_allclose(pt.grad, 2 * (p - t) / n, rtol=RTOL)
    np.testing.assert_allclose(tt.grad, -2 * (p - t) / n, rtol=RTOL)


def test_mse_default_reduction_is_mean():
    p, t = pred_and_target()
    assert engine.mse(Tensor(p), Tensor(t)).item() == engine.mse(Tensor(p), Tensor(t), reduction="mean").item()


def test_mse_reduction_none():
    p, t = pred_and_target()
    pt, tt = Tensor(p, requires_grad=True), Tensor(t, requires_grad=True)
    losses = engine.mse(pt, tt, reduction="none")
    assert losses.shape == p.shape
    np.testing.assert_allclose(losses.data, (p - t) ** 2, rtol=RTOL)
    g = np.random.default_rng(1).normal(size=p.shape)
    losses.backward(g)
    np.testing.assert_allclose(pt.grad, 2 * g * (p - t), rtol=RTOL)
    np.testing.assert_allclose(tt.grad, -2 * g * (p - t), rtol=RTOL)


def test_mse_with_a_constant_target_array():
    p, t = pred_and_target()
    pt = Tensor(p, requires_grad=True)
    engine.mse(pt, t).backward()
    np.testing.assert_allclose(pt.grad, 2 * (p - t) / p.size, rtol=RTOL)


def test_mse_zero_at_the_target_with_zero_gradient():
    p, _ = pred_and_target()
    pt = Tensor(p, requires_grad=True)
    loss = engine.mse(pt, p.copy())
    loss.backward()
    assert loss.item() == 0.0
    np.testing.assert_array_equal(pt.grad, 0.0)


@pytest.mark.parametrize("target, params, message", [
    (np.zeros((3, 4)), {}, "prediction shape"),
    (np.zeros(3), {}, "prediction shape"),      # would broadcast, but a loss does not
    (np.zeros((4, 3)), {"reduction": "avg"}, "reduction must be one of"),
])
def test_mse_rejects_bad_arguments(target, params, message):
    with pytest.raises(ValueError, match=f"^mse: {message}"):
        engine.mse(Tensor(np.zeros((4, 3))), target, **params)
