"""Elementwise, reduction, shape and matrix ops at points whose gradients are worked out
by hand (the property suite checks the same rules against finite differences)."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine

T = engine.Tensor


def leaf(values, dtype=np.float64):
    return T(np.array(values, dtype=dtype), requires_grad=True)


def test_product_rule_with_broadcasting_sums_back():
    a = leaf([[1.0], [2.0]])             # (2, 1)
    b = leaf([10.0, 20.0, 30.0])         # (3,)
    (a * b).sum().backward()
    np.testing.assert_array_equal(a.grad, [[60.0], [60.0]])     # d/da = sum of b over the copies
    np.testing.assert_array_equal(b.grad, [3.0, 3.0, 3.0])      # d/db = sum of a over the copies


def test_quotient_power_exp_log_sqrt_abs():
    x = leaf([1.0, 2.0, 4.0])
    (x ** 3).sum().backward()
    np.testing.assert_allclose(x.grad, 3 * x.data ** 2)
    x.zero_grad()
    (1 / x).sum().backward()
    np.testing.assert_allclose(x.grad, -1 / x.data ** 2)
    x.zero_grad()
    (x.log() + x.sqrt() + x.exp()).sum().backward()
    np.testing.assert_allclose(x.grad, 1 / x.data + 0.5 / np.sqrt(x.data) + np.exp(x.data))
    b, e = leaf([2.0, 3.0]), leaf([3.0, 0.5])
    (b ** e).sum().backward()
    np.testing.assert_allclose(b.grad, e.data * b.data ** (e.data - 1))
    np.testing.assert_allclose(e.grad, b.data ** e.data * np.log(b.data))
    z = leaf([-2.0, 0.0, 3.0])
    z.abs().sum().backward()
    np.testing.assert_array_equal(z.grad, [-1.0, 0.0, 1.0])    # abs'(0) = 0


def test_maximum_minimum_clip_where():
    a, b = leaf([1.0, 2.0, 3.0]), leaf([2.0, 2.0, 2.0])
    engine.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 1.0])      # the tie is shared
    np.testing.assert_array_equal(b.grad, [1.0, 0.5, 0.0])
    x = leaf([-2.0, -1.0, 0.5, 1.0, 3.0])
    x.clip(-1.0, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 0])     # the bounds pass the gradient
    c = np.array([True, False])
    p, q = leaf([1.0, 2.0]), leaf([5.0])
    (engine.where(c, p, q) * 3).sum().backward()
    np.testing.assert_array_equal(p.grad, [3.0, 0.0])
    np.testing.assert_array_equal(q.grad, [3.0])


def test_reductions_over_axes_with_keepdims():
    x = leaf(np.arange(6.0).reshape(2, 3))
    y = x.sum(axis=1, keepdims=True)
    assert y.shape == (2, 1) and y.data.ravel().tolist() == [3.0, 12.0]
    (y * np.array([[1.0], [2.0]])).sum().backward()
    np.testing.assert_array_equal(x.grad, [[1, 1, 1], [2, 2, 2]])
    x.zero_grad()
    x.mean(axis=(0, 1)).backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), 1 / 6))
    x.zero_grad()
    x.var(axis=0).sum().backward()                              # d var/dx = 2 (x - mean) / n
    np.testing.assert_allclose(x.grad, 2 * (x.data - x.data.mean(0)) / 2)


def test_max_ties_split_the_gradient_evenly():
    x = leaf([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    x.zero_grad()
    x.min().backward()
    np.testing.assert_allclose(x.grad, [[1, 0, 0], [0, 0, 0]])


def test_logsumexp_gradient_is_softmax():
    x = leaf([[0.0, 1.0, 2.0]])
    engine.logsumexp(x, axis=1).sum().backward()
    e = np.exp(x.data)
    np.testing.assert_allclose(x.grad, e / e.sum())


def test_getitem_scatters_and_accumulates_repeated_indices():
    x = leaf([10.0, 20.0, 30.0, 40.0])
    x[[0, 0, 1]].sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 1.0, 0.0, 0.0])
    x.zero_grad()
    x[1:3].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0, 0.0])
    x.zero_grad()
    x[np.array([True, False, True, False])].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 1.0, 0.0])
    m = leaf(np.arange(6.0).reshape(2, 3))
    m[T(np.array([1, 1])), ::2].sum().backward()
    np.testing.assert_array_equal(m.grad, [[0, 0, 0], [2, 0, 2]])


def test_getitem_with_an_empty_list_selects_nothing_and_gives_a_zero_gradient():
    """x[[]] and x[:, []] are empty selections in numpy and PyTorch (np.asarray([]) alone
    is float64, which no index may be)."""
    x = leaf(np.arange(6.0).reshape(2, 3))
    assert x[[]].shape == (0, 3) and x[:, []].shape == (2, 0)
    assert x[[], []].shape == (0,) and x[[[], []]].shape == (2, 0, 3)
    x[[]].backward(np.zeros((0, 3)))
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    x.zero_grad()
    engine.concat([x[:, []], x[:, [2]]], axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0, 1], [0, 0, 1]])
    with pytest.raises(IndexError, match=r"^getitem: index \[\[1\], \[\]\] is invalid for shape"):
        x[[[1], []]]                                    # ragged: invalid in numpy too


def test_shape_ops_move_the_gradient_back():
    x = leaf(np.arange(6.0).reshape(2, 3))
    w = np.arange(6.0).reshape(3, 2)
    (x.T * w).sum().backward()
    np.testing.assert_array_equal(x.grad, w.T)
    x.zero_grad()
    (x.reshape(3, 2) * w).sum().backward()
    np.testing.assert_array_equal(x.grad, w.reshape(2, 3))
    a, b = leaf([1.0, 2.0]), leaf([[3.0, 4.0, 5.0]])
    (engine.concat([a[None], b[:, :2]], axis=0) * np.array([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 2.0])
    np.testing.assert_array_equal(b.grad, [[3.0, 4.0, 0.0]])
    s = engine.stack([a, a * 2], axis=1)
    assert s.shape == (2, 2)
    c = leaf([1.0, 2.0, 3.0])
    (engine.broadcast_to(c, (4, 3)) * 1.0).sum().backward()
    np.testing.assert_array_equal(c.grad, [4.0, 4.0, 4.0])
    f = leaf(np.zeros((2, 3, 4)))
    assert engine.flatten(f, start_dim=1).shape == (2, 12)
    assert f.permute(2, 0, 1).shape == (4, 2, 3)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 2)), ((4,), (4, 2)), ((3, 4), (4,)), ((4,), (4,)),
                                   ((5, 3, 4), (4, 2)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_gradients_follow_numpy_shapes(sa, sb):
    rng = np.random.default_rng(0)
    a, b = leaf(rng.standard_normal(sa)), leaf(rng.standard_normal(sb))
    out = a @ b
    assert out.shape == np.matmul(a.data, b.data).shape
    g = rng.standard_normal(out.shape)
    out.backward(g)
    assert a.grad.shape == sa and b.grad.shape == sb
    if len(sa) == 2 and len(sb) == 2:
        np.testing.assert_allclose(a.grad, g @ b.data.T)
        np.testing.assert_allclose(b.grad, a.data.T @ g)


def test_linear_is_x_w_plus_b_with_the_classic_gradients():
    rng = np.random.default_rng(1)
    x, W, b = leaf(rng.standard_normal((5, 3))), leaf(rng.standard_normal((3, 2))), leaf([0.5, -0.5])
    out = engine.linear(x, W, b)
    np.testing.assert_allclose(out.data, x.data @ W.data + b.data)
    delta = rng.standard_normal((5, 2))
    out.backward(delta)
    np.testing.assert_allclose(W.grad, x.data.T @ delta)
    np.testing.assert_allclose(b.grad, delta.sum(axis=0))
    np.testing.assert_allclose(x.grad, delta @ W.data.T)
    x3 = leaf(rng.standard_normal((2, 4, 3)))
    engine.linear(x3, W).sum().backward()
    np.testing.assert_allclose(W.grad, x.data.T @ delta + x3.data.reshape(-1, 3).T @ np.ones((8, 2)))


@pytest.mark.parametrize("x_shape, w_shape", [((2, 3, 0), (0, 2)), ((0,), (0, 4)),
                                               ((2, 3, 4), (4, 0)), ((4,), (4, 0))])
def test_linear_with_no_input_or_no_output_features_has_gradients_of_its_inputs_shapes(
        x_shape, w_shape):
    """numpy cannot infer -1 next to an axis of length 0: backward raised a bare
    "cannot reshape array of size 0" for a batched or 1-D input (PyTorch gives these)."""
    x, W, b = leaf(np.ones(x_shape)), leaf(np.ones(w_shape)), leaf(np.ones(w_shape[1]))
    out = engine.linear(x, W, b)
    out.backward(np.ones(out.shape))           # (a sum over no elements is refused)
    assert x.grad.shape == x_shape and W.grad.shape == w_shape
    np.testing.assert_array_equal(b.grad, np.full(w_shape[1], np.prod(x_shape[:-1])))
    assert not x.grad.any() and not W.grad.any()


def test_forward_mode_by_hand():
    x = np.array([1.0, 2.0])
    _, tangent = engine.jvp(lambda x: (x * x).sum(), (x,), (np.array([1.0, 0.0]),))
    assert tangent == pytest.approx(2.0)
    _, tangent = engine.jvp(lambda x: x.exp(), (x,), (np.array([1.0, 1.0]),))
    np.testing.assert_allclose(tangent, np.exp(x))
