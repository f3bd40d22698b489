"""Loss modules delegate to the fused engine losses; L2 penalty."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine, nn

rng = np.random.default_rng(0)


def test_cross_entropy_with_labels_one_hot_and_smoothing():
    z = engine.Tensor(rng.standard_normal((6, 4)), requires_grad=True)
    y = rng.integers(0, 4, 6)
    onehot = np.eye(4)[y]
    a = nn.CrossEntropyLoss()(z, y)
    b = nn.CrossEntropyLoss()(z, onehot)
    assert a.item() == pytest.approx(b.item(), rel=1e-12)
    a.backward()
    p = np.exp(z.data) / np.exp(z.data).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(z.grad, (p - onehot) / 6, rtol=1e-12)
    smooth = nn.CrossEntropyLoss(label_smoothing=0.1)(z, y).item()
    expected = engine.softmax_cross_entropy(z, 0.9 * onehot + 0.1 / 4).item()
    assert smooth == pytest.approx(expected, rel=1e-12)


def test_bce_with_logits_multilabel_and_mse():
    z = engine.Tensor(rng.standard_normal((5, 3)), requires_grad=True)
    y = (rng.random((5, 3)) > 0.5).astype(np.float64)
    loss = nn.BCEWithLogitsLoss()(z, y)
    loss.backward()
    s = 1 / (1 + np.exp(-z.data))
    np.testing.assert_allclose(z.grad, (s - y) / 15, rtol=1e-12)
    assert nn.BCEWithLogitsLoss(reduction="batchmean")(z, y).item() == pytest.approx(loss.item() * 3)
    pred = engine.Tensor(np.array([1.0, 2.0]))
    assert nn.MSELoss()(pred, np.array([0.0, 0.0])).item() == pytest.approx(2.5)
    assert nn.MSELoss(reduction="sum")(pred, np.array([0.0, 0.0])).item() == pytest.approx(5.0)


@pytest.mark.parametrize("bad", [np.nan, -np.nan, 1.5, -np.inf])
def test_bce_with_logits_refuses_nan_targets_as_it_refuses_those_outside_0_1(bad):
    """``y.min() < 0 or y.max() > 1`` is False when y holds a NaN: the loss came out NaN.
    Refused in the eager call and in a compiled step's replay alike."""
    z = engine.Tensor(np.zeros((2, 2), np.float32))
    y = np.array([[0.0, bad], [1.0, 0.5]])
    got = "NaN" if np.isnan(bad) else "values from"
    with pytest.raises(ValueError, match=rf"targets must lie in \[0, 1\], got {got}"):
        nn.BCEWithLogitsLoss()(z, y)
    with pytest.raises(ValueError, match=rf"targets must lie in \[0, 1\], got {got}"):
        engine.sigmoid_binary_cross_entropy(z, y)
    model = nn.MLP([2, 3, 2], seed=0)
    step = nn.compile_step(model, nn.BCEWithLogitsLoss(), nn.optim.SGD(model, lr=0.1))
    x, good = np.ones((2, 2)), np.array([[0.0, 1.0], [1.0, 0.5]])
    step(x, good)
    step(x, good)                                   # replayed
    before = [p.numpy(copy=True) for p in model.parameters()]
    with pytest.raises(ValueError, match=rf"targets must lie in \[0, 1\], got {got}"):
        step(x, y)
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before, strict=True))


def test_l2_penalty_skips_biases_and_has_gradient_wd_times_w():
    model = nn.MLP([3, 4, 2], seed=0)
    penalty = nn.l2_penalty(model, 0.1)
    weights = [p.data for p in model.parameters() if p.ndim > 1]
    expected = 0.05 * sum(float((w.astype(np.float64) ** 2).sum()) for w in weights)
    assert penalty.item() == pytest.approx(expected, rel=1e-5)
    penalty.backward()
    for p in model.parameters():
        if p.ndim > 1:
            np.testing.assert_allclose(p.grad, 0.1 * p.data, rtol=1e-5)
        else:
            assert p.grad is None
    with pytest.raises(ValueError, match="no parameters"):
        nn.l2_penalty([], 0.1)
