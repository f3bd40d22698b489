"""nn/step.py: the eager and the compiled step behind one interface, one exception type for
a non-finite loss or gradient, and the one-reduction gradient check."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import compile as compile_
from handgrad.nn.step import EagerStep, ReplayStep, gradient_bounds

X = np.random.default_rng(0).standard_normal((96, 5))
Y = (X[:, 0] > X[:, 1]).astype(np.int64)


def _setup(seed=0):
    model = nn.MLP([5, 8, 3], seed=seed)
    return model, nn.optim.SGD(model, lr=0.1, momentum=0.9)


@pytest.mark.parametrize("make", [EagerStep, ReplayStep])
def test_a_step_returns_the_loss_and_the_scores(make):
    model, opt = _setup()
    loss, scores = make(model, nn.CrossEntropyLoss(), opt)(X[:32], Y[:32])
    assert isinstance(loss, float) and scores.shape == (32, 3)


def test_eager_and_replayed_steps_agree_bit_for_bit():
    runs = []
    for make in (EagerStep, ReplayStep):
        model, opt = _setup()
        step = make(model, nn.CrossEntropyLoss(), opt, clip_grad_norm=1.0,
                    regularizer=lambda m=model: nn.l2_penalty(m, 1e-3))
        out = [step(X[i:i + 32], Y[i:i + 32]) for i in range(0, 96, 32)]
        runs.append((out, model.state_dict(), step.last_penalty))
    (a, wa, pa), (b, wb, pb) = runs
    assert [loss for loss, _ in a] == [loss for loss, _ in b] and pa == pb
    assert all(np.array_equal(s, t) for (_, s), (_, t) in zip(a, b))
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)



class _WeightRows(nn.Module):
    """Scores that are a view of the weight: the update changes them in place."""

    def __init__(self):
        super().__init__()
        self.W = nn.Parameter(np.arange(12, dtype=np.float32).reshape(4, 3) / 10)

    def forward(self, x):
        return self.W[:x.shape[0]]


@pytest.mark.parametrize("make", [EagerStep, ReplayStep])
def test_the_scores_are_copied_before_the_update_even_when_they_share_a_weights_memory(make):
    """The scores were copied after the optimizer's update: a model whose output is a view
    of a parameter returned the updated values, not the ones its loss was computed on."""
    model = _WeightRows()
    before = model.W.numpy(copy=True)
    step = make(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=1.0))
    for _ in range(2):                               # the capture, then a replay
        _, scores = step(np.zeros((4, 2), np.float32), np.array([0, 1, 2, 0]))
        assert np.array_equal(scores, before)
        before = model.W.numpy(copy=True)


@pytest.mark.parametrize("make", [EagerStep, ReplayStep, nn.compile_step])
@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_one_exception_type_for_a_non_finite_loss_or_gradient(make, where):
    model, opt = _setup()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    w = model.layers[0].weight
    xb = X[:8].copy()
    if where == "loss":
        xb[3] = np.nan
    # sqrt(0 * w) is 0 (the loss stays finite) but its gradient is infinite.
    regularizer = (lambda: engine.sqrt(w * 0.0).sum()) if where == "gradient" else None
    step = make(model, nn.CrossEntropyLoss(), opt, regularizer=regularizer)
    with pytest.raises(nn.TrainingError) as info, np.errstate(all="ignore"):
        step(xb, Y[:8])
    e = info.value
    assert (e.what, str(e)) == (("the loss", "the loss became nan") if where == "loss"
                                else ("the gradient of layers.0.weight",
                                      "the gradient of layers.0.weight became nan"))
    assert e.history is None and e.epoch is None and e.step is None
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())
    assert not hasattr(compile_, "NonFinite")       # one type, no second name


def test_the_gradient_check_is_one_sum_of_squares_that_any_nan_or_inf_makes_non_finite():
    model, opt = _setup()
    params = opt.params
    for p in params:
        p.grad = np.ones_like(p.numpy())
    assert gradient_bounds(params) is not None
    for bad in (np.nan, np.inf, -np.inf):
        params[2].grad[0] = bad
        assert gradient_bounds(params) is None
        params[2].grad[0] = 1.0
    huge = np.full((4, 4), 1e30, np.float32)        # the squares overflow, the values do not
    assert np.isinf(np.vdot(huge.ravel(), huge.ravel()))
    params[0].grad = np.zeros_like(params[0].numpy())
    params[0].grad[:4, :4] = huge
    assert gradient_bounds(params) is not None
    params[1].grad = None                               # a parameter without gradient
    assert gradient_bounds(params) is not None


def test_a_batch_that_is_a_view_of_the_callers_array_stays_tracked():
    """as_batch adopts fresh arrays only: a slice of the caller's X (what a
    DataLoader(shuffle=False) yields) is shared and tracked, so a write to X between the
    forward and the backward is an error, never a silently wrong gradient."""
    from handgrad.nn.step import as_batch
    X = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
    w = engine.Tensor(np.ones((3, 2)), requires_grad=True)
    loss = (as_batch(X[0:2]) @ w).tanh().sum()
    with pytest.raises((ValueError, RuntimeError)):  # X locked (read-only), or backward refuses
        X[0, 0] = 5.0                               # the caller writes into its own array
        loss.backward()
    fresh = X[[0, 1]]                               # gathered rows: a new array, adopted
    assert fresh.base is None
    (as_batch(fresh) @ w).tanh().sum().backward()


@pytest.mark.parametrize("make", [EagerStep, ReplayStep])
def test_every_parameter_of_the_model_holds_the_gradient_of_the_last_step_alone(make):
    # the optimizer holds the last layer only: the other layers' gradients are still the
    # step's own (fit(record_grad_norms=True) reads them), not a running sum over steps
    model, twin = nn.MLP([5, 8, 3], seed=0), nn.MLP([5, 8, 3], seed=0)
    step = make(model, nn.CrossEntropyLoss(), nn.optim.SGD(model.layers[2].parameters(), lr=0.1))
    twin_opt = nn.optim.SGD(twin.layers[2].parameters(), lr=0.1)
    for i in range(0, 96, 32):
        if i == 32:                          # a parameter replaced: listed again
            model.layers[0].bias = nn.Parameter(np.zeros(8, np.float32))
            twin.layers[0].bias = nn.Parameter(np.zeros(8, np.float32))
        step(X[i:i + 32], Y[i:i + 32])
        twin.zero_grad()
        nn.CrossEntropyLoss()(twin(engine.Tensor(X[i:i + 32])), Y[i:i + 32]).backward()
        twin_opt.step()
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("make", [EagerStep, ReplayStep])
def test_a_replaced_optimizer_has_its_own_tensors_gradients_cleared_at_every_step(make):
    """``step.optimizer = new``, where ``new`` also trains a tensor outside the model (read
    by the regularizer): its gradient was never cleared (the step kept clearing the old
    optimizer's), so it summed over steps: 0.1, 0.2, 0.296 instead of 0.1, 0.098."""
    def run(use_step):
        model = nn.MLP([5, 8, 3], seed=0)
        scale = engine.Tensor(np.full(3, 0.5, np.float32), requires_grad=True)

        def penalty():
            return (scale * scale).sum() * 0.1

        opt = nn.optim.SGD(model, lr=0.1)
        step = make(model, nn.CrossEntropyLoss(), opt, regularizer=penalty) if use_step else None
        for k in range(3):
            if k == 1:
                opt = nn.optim.SGD([*model.parameters(), scale], lr=0.1)
                if step is not None:
                    step.optimizer = opt
            xb, yb = X[32 * k:32 * k + 32], Y[32 * k:32 * k + 32]
            if step is not None:
                step(xb, yb)
            else:                    # the README's loop
                loss = nn.CrossEntropyLoss()(model(engine.Tensor(xb)), yb) + penalty()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return scale.numpy(copy=True), scale.grad.copy()

    (value, grad), (loop_value, loop_grad) = run(True), run(False)
    np.testing.assert_allclose(grad, loop_grad, rtol=1e-6)
    np.testing.assert_allclose(value, loop_value, rtol=1e-6)


@pytest.mark.parametrize("kind", [np.array, list], ids=["array", "list"])
def test_a_compiled_step_captures_again_when_an_array_parameter_was_changed_in_place(kind):
    """A module indexing its input with an array (or a list) it keeps (``x[:, self.cols]``),
    changed in place between steps: the replay kept gathering the capture's columns (losses
    and weights differed from eager's, silently; a list went unwatched until a hunt)."""
    class Select(nn.Module):
        def __init__(self):
            super().__init__()
            self.cols = kind([0, 1, 2])
            self.lin = nn.Linear(3, 3, rng=np.random.default_rng(0))

        def forward(self, x):
            return self.lin(x[:, self.cols])

    results = []
    for make in (EagerStep, ReplayStep):
        model = Select()
        step = make(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1))
        losses = []
        for k in range(3):
            if k == 1:
                model.cols[:] = [2, 3, 4]
            losses.append(step(X[32 * k:32 * k + 32], Y[32 * k:32 * k + 32])[0])
        results.append((losses, model.lin.weight.numpy(copy=True)))
    (eager_losses, eager_w), (replay_losses, replay_w) = results
    assert replay_losses == eager_losses
    np.testing.assert_array_equal(replay_w, eager_w)


def test_a_compiled_step_keeps_a_bounded_number_of_plans(monkeypatch):
    """A dropout's p annealed every step captures a plan per step; they were all kept (16 MB
    after 600 steps of a 7-op model). The oldest now go beyond MAX_PLANS, and the steps are
    the eager ones all the same."""
    monkeypatch.setattr(ReplayStep, "MAX_PLANS", 3)
    results = []
    for make in (EagerStep, ReplayStep):
        model = nn.MLP([5, 8, 3], dropout=0.5, seed=0)
        step = make(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1))
        losses = []
        for k in range(6):
            model.layers[2].p = 0.5 - 0.05 * k
            losses.append(step(X[16 * k:16 * k + 16], Y[16 * k:16 * k + 16])[0])
            if make is ReplayStep:
                assert len(step.plans) == min(k + 1, 3)
        results.append(losses)
    assert results[0] == results[1]


@pytest.mark.parametrize("targets", [lambda y: y * 0.5, lambda y: y - 1.0, lambda y: -y,
                                     lambda y: (y.T * 2).T],
                         ids=["scaled", "shifted", "negated", "transposed"])
def test_targets_transformed_in_the_loss_stay_arrays_in_a_plan(targets):
    """mse(out, y * 0.5): eager computes y * 0.5 in numpy and the op casts it to the output's
    float32; a plan took the result for a float64 tensor and computed the loss in float64
    (0.6326193118 for 0.6326192617 from the first step)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 4)).astype(np.float32)
    Y = rng.standard_normal((16, 2))                        # float64 targets
    runs = []
    for make in (EagerStep, ReplayStep):
        model = nn.MLP([4, 8, 2], seed=0)
        step = make(model, lambda out, y: engine.mse(out, targets(y)),
                    nn.optim.SGD(model, lr=0.1, momentum=0.9))
        losses = [step(X, Y)[0] for _ in range(3)]
        runs.append((losses, [p.numpy(copy=True) for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(a, b)
