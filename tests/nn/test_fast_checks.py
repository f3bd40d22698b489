"""The cheap forms of fit's per-step work keep their answers: the optimizer's checked step
(one np.errstate per step, buffers kept from step to step, an exact undo), the finite test
with no errstate, and the accuracy count through preallocated buffers."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn import metrics, optim
from handgrad.nn.finite import all_finite, l2_norm, square_norm
from handgrad.nn.module import Parameter
from handgrad.nn.train import _Tally


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.complex64])
def test_the_finite_test_never_warns_and_answers_right(dtype):
    """No np.errstate around it: finite values whose squares overflow, NaN and Inf give the
    right answer and not a single warning (they are errors here)."""
    big = np.finfo(np.float32 if dtype == np.complex64 else dtype).max / 4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = np.full((3, 5), big, dtype)                 # finite values whose squares overflow
        assert all_finite(a) and not np.isfinite(square_norm(a))
        for bad in (np.nan, np.inf, -np.inf):
            b = np.ones((3, 5), dtype)
            b[2, 4] = bad
            assert not all_finite(b) and not np.isfinite(square_norm(b))
        assert all_finite(np.array([1, 2], np.int64))


def test_the_checked_step_reuses_its_copies_and_undoes_bit_for_bit_after_good_steps():
    rng = np.random.default_rng(0)
    w = Parameter(rng.standard_normal((6, 4)).astype(np.float32))
    b = Parameter(rng.standard_normal(4).astype(np.float32))
    opt = optim.SGD([w, b], lr=0.1, momentum=0.9)
    opt.check_finite = True
    for _ in range(3):
        w.grad, b.grad = np.ones((6, 4), np.float32), np.ones(4, np.float32)
        opt.step()
    buffers = {k: v for k, v in opt._last_good.items()}
    before = [w.data.copy(), b.data.copy()]
    opt.lr = 2e9                                    # lr * b's momentum overflows
    w.grad, b.grad = np.ones((6, 4), np.float32), np.full(4, -3e38, np.float32)
    with pytest.raises(optim.NonFiniteUpdate) as info, np.errstate(over="ignore"):
        opt.step()
    assert info.value.index == 1
    assert all(opt._last_good[k] is v for k, v in buffers.items())     # no new copies
    np.testing.assert_array_equal(w.data, before[0])
    np.testing.assert_array_equal(b.data, before[1])


def test_the_checked_step_makes_a_new_copy_when_a_parameter_changes_dtype():
    p = Parameter(np.ones(3, np.float32))
    opt = optim.SGD([p], lr=1.0)
    opt.check_finite = True
    p.grad = np.zeros(3, np.float32)
    opt.step()
    p.data = np.full(3, 1e300)                      # now float64
    p.grad = np.full(3, -np.finfo(np.float64).max)
    with pytest.raises(optim.NonFiniteUpdate), np.errstate(over="ignore"):
        opt.step()
    np.testing.assert_array_equal(p.data, np.full(3, 1e300))


def _scores(n, rng):
    s = rng.standard_normal((n, 4)).astype(np.float32)
    s[0] = 1.0                                      # a tie: argmax takes the first
    return s


def test_the_accuracy_count_uses_buffers_and_matches_metrics_accuracy():
    rng = np.random.default_rng(0)
    tally = _Tally(nn.CrossEntropyLoss())
    seen = {}
    for n in (32, 32, 7):
        scores, labels = _scores(n, rng), rng.integers(0, 4, n)
        expected = int(round(metrics.accuracy(scores, labels) * n))
        assert tally._count_correct(scores, labels) == expected
        buffers = tally._buffers[n]
        assert seen.setdefault(n, buffers) is buffers       # kept per batch size
    one_hot = np.eye(4)[rng.integers(0, 4, 9)]
    scores = _scores(9, rng)
    assert tally._count_correct(scores, one_hot) == int(round(metrics.accuracy(scores, one_hot) * 9))


def test_fit_records_the_same_train_accuracy_as_metrics_accuracy_on_its_steps():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((70, 3)).astype(np.float32)
    Y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)
    model = nn.MLP([3, 6, 3], seed=0)
    counted = []

    class Count(nn.callbacks.Callback):
        def on_step_end(self, epoch, step, loss, scores, targets):
            counted.append(metrics.accuracy(scores, targets) * len(targets))

    history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y),
                     epochs=1, batch_size=32, verbose=0, callbacks=[Count()])
    assert history.epochs[0]["train_accuracy"] == round(sum(counted)) / 70


@pytest.mark.parametrize("dtype, scale", [(np.float32, 1.0), (np.float32, 1e20), (np.float32, 1e-30),
                                          (np.float64, 1e200), (np.float64, 1e-200),
                                          (np.float64, 1e-300)])
def test_l2_norm_is_right_where_the_squares_overflow_or_underflow(dtype, scale):
    a = (np.random.default_rng(0).standard_normal((7, 5)) * scale).astype(dtype)
    exact = float(np.abs(a.astype(np.float64)).max()) * \
        float(np.linalg.norm(a.astype(np.float64) / np.abs(a.astype(np.float64)).max()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # float32's dot: ~35 roundings; no absolute floor (the default 1e-12 took 0 for a
        # norm of 1e-29, the squares flushed to 0)
        assert l2_norm(a) == pytest.approx(exact, rel=1e-6, abs=0)
    a[1, 1] = np.nan
    assert math.isnan(l2_norm(a))
    a[1, 1] = np.inf
    assert l2_norm(a) == math.inf
    assert l2_norm(np.zeros(3, dtype)) == 0.0


def test_gradient_norms_recorded_for_huge_float32_gradients_are_finite():
    """Exploding gradients are when the recorded norms are read: a float32 gradient of
    1e20s has a norm of ~1e21, not Inf (its float32 squares overflow)."""
    model = nn.MLP([2, 3], seed=0)
    recorder = nn.callbacks.GradNormRecorder(model)
    for p in model.parameters():
        p.grad = np.full(p.shape, 1e20, np.float32)
    recorder.on_step_end(1, 1, 0.0, np.zeros((1, 3)), np.zeros(1))
    assert recorder.norms["layers.0.weight"][0] == pytest.approx(float(np.float32(1e20)) * math.sqrt(6), rel=1e-6)


def test_clip_grad_norm_scales_gradients_whose_squares_overflow_float64():
    p = Parameter(np.zeros(3))
    p.grad = np.full(3, 1e200)
    assert optim.clip_grad_norm_([p], 1.0) == pytest.approx(1e200 * math.sqrt(3))
    np.testing.assert_allclose(p.grad, np.full(3, 1 / math.sqrt(3)))    # not zeroed


def test_clip_grad_norm_measures_gradients_whose_squares_underflow_float64():
    """Float64 gradients below ~1e-154 have squares that round or flush to 0: their norm is
    measured on l2_norm's scaled path, not returned as 0, and a smaller max_norm clips them."""
    p = Parameter(np.zeros(4))
    p.grad = np.full(4, 1e-170)
    assert optim.clip_grad_norm_([p], 1.0) == pytest.approx(2e-170, rel=1e-12, abs=0)
    np.testing.assert_array_equal(p.grad, np.full(4, 1e-170))           # below max_norm
    assert optim.clip_grad_norm_(p, 1e-171) == pytest.approx(2e-170, rel=1e-12, abs=0)
    assert l2_norm(p.grad) <= 1e-171
    q, r, s = Parameter(np.zeros(2)), Parameter(np.zeros(3, np.float32)), Parameter(np.zeros(1))
    q.grad, r.grad, s.grad = np.full(2, 3e-200), np.zeros(3, np.float32), np.array([4e-200])
    assert optim.clip_grad_norm_([q, r, s], 1.0) == pytest.approx(math.sqrt(34) * 1e-200, rel=1e-12, abs=0)
    r.grad = np.zeros(3, np.float32)
    q.grad, s.grad = np.zeros(2), np.zeros(1)
    assert optim.clip_grad_norm_([q, r, s], 1.0) == 0.0                # zero gradients: 0
