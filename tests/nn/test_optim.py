"""Optimizers, learning-rate schedules and gradient clipping.

Each optimizer is checked step by step against a reference written here, independently of
nn/optim.py, from the algorithm boxes of the PyTorch documentation
(https://pytorch.org/docs/stable/optim.html, one page per optimizer), which follow the papers:
SGD with momentum (Sutskever et al., 2013), Adam (Kingma & Ba, 2015), AdamW (Loshchilov &
Hutter, 2019), RMSprop (Hinton, 2012, lecture 6e), Adagrad (Duchi et al., 2011), Adadelta
(Zeiler, 2012). The references are plain float64 numpy, written for clarity, not speed, in the
notation of those boxes: theta the parameter, g its gradient, gamma the learning rate,
lambda the weight decay, t the step count starting at 1.
"""
from __future__ import annotations

import copy
import math
import pickle
import re

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import optim
from handgrad.nn.module import Parameter

# --- independent references ------------------------------------------------------------------
# Each takes the initial parameter and the list of gradients fed at steps 1, 2, ..., and returns
# the parameter after each step. Everything is float64.


def sgd_reference(theta, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """torch.optim.SGD: momentum mu, dampening tau, buffer b."""
    theta, b, out = theta.astype(np.float64), None, []
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if weight_decay != 0:
            g = g + weight_decay * theta
        if momentum != 0:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr * g
        out.append(theta)
    return out


def adam_reference(theta, grads, lr, betas, eps, weight_decay=0.0, decoupled=False):
    """torch.optim.Adam (decoupled=False: L2 added to the gradient) and torch.optim.AdamW
    (decoupled=True: theta <- theta - gamma lambda theta before the Adam step)."""
    beta1, beta2 = betas
    theta, out = theta.astype(np.float64), []
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if decoupled:
            theta = theta - lr * weight_decay * theta
        elif weight_decay != 0:
            g = g + weight_decay * theta
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g ** 2
        m_hat = m / (1 - beta1 ** t)
        v_hat = v / (1 - beta2 ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(theta)
    return out


def rmsprop_reference(theta, grads, lr, alpha, eps, momentum=0.0, centered=False, weight_decay=0.0):
    """torch.optim.RMSprop: square average v, gradient average g_ave, buffer b."""
    theta, out = theta.astype(np.float64), []
    v = np.zeros_like(theta)
    g_ave = np.zeros_like(theta)
    b = np.zeros_like(theta)
    for g in grads:
        g = g.astype(np.float64)
        if weight_decay != 0:
            g = g + weight_decay * theta
        v = alpha * v + (1 - alpha) * g ** 2
        v_tilde = v
        if centered:
            g_ave = alpha * g_ave + (1 - alpha) * g
            v_tilde = v_tilde - g_ave ** 2
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(v_tilde) + eps)
            theta = theta - lr * b
        else:
            theta = theta - lr * g / (np.sqrt(v_tilde) + eps)
        out.append(theta)
    return out


def adagrad_reference(theta, grads, lr, eps, weight_decay=0.0, initial_accumulator_value=0.0):
    """torch.optim.Adagrad with lr_decay = 0: running sum of squared gradients."""
    theta, out = theta.astype(np.float64), []
    state_sum = np.full_like(theta, initial_accumulator_value)
    for g in grads:
        g = g.astype(np.float64)
        if weight_decay != 0:
            g = g + weight_decay * theta
        state_sum = state_sum + g ** 2
        theta = theta - lr * g / (np.sqrt(state_sum) + eps)
        out.append(theta)
    return out


def adadelta_reference(theta, grads, lr, rho, eps, weight_decay=0.0):
    """torch.optim.Adadelta: square average v, accumulated squared updates u."""
    theta, out = theta.astype(np.float64), []
    v = np.zeros_like(theta)
    u = np.zeros_like(theta)
    for g in grads:
        g = g.astype(np.float64)
        if weight_decay != 0:
            g = g + weight_decay * theta
        v = rho * v + (1 - rho) * g ** 2
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta ** 2
        theta = theta - lr * delta
        out.append(theta)
    return out


# Hyper-parameters are chosen away from the defaults so that every term matters: a large eps
# tells apart "eps outside the square root of the bias-corrected v" from other placements,
# small betas make the bias correction large, and so on.
ADAM = dict(lr=0.1, betas=(0.8, 0.95), eps=1e-3)
RMS = dict(lr=0.01, alpha=0.9, eps=1e-3)
CASES = {
    # name: (optimizer class, keyword arguments, reference)
    "sgd": (optim.SGD, dict(lr=0.1), sgd_reference),
    "sgd_weight_decay": (optim.SGD, dict(lr=0.1, weight_decay=0.1), sgd_reference),
    "sgd_momentum": (optim.SGD, dict(lr=0.1, momentum=0.9), sgd_reference),
    "sgd_dampening": (optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.3), sgd_reference),
    "sgd_nesterov": (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True), sgd_reference),
    "sgd_nesterov_weight_decay": (optim.SGD, dict(lr=0.1, momentum=0.8, nesterov=True,
                                                  weight_decay=0.1), sgd_reference),
    "adam": (optim.Adam, ADAM, adam_reference),
    "adam_weight_decay": (optim.Adam, dict(ADAM, weight_decay=0.1), adam_reference),
    "adamw": (optim.AdamW, dict(ADAM, weight_decay=0.1),
              lambda theta, grads, **kw: adam_reference(theta, grads, decoupled=True, **kw)),
    "rmsprop": (optim.RMSprop, RMS, rmsprop_reference),
    "rmsprop_weight_decay": (optim.RMSprop, dict(RMS, weight_decay=0.1), rmsprop_reference),
    "rmsprop_momentum": (optim.RMSprop, dict(RMS, momentum=0.8), rmsprop_reference),
    "rmsprop_centered": (optim.RMSprop, dict(RMS, centered=True), rmsprop_reference),
    "rmsprop_centered_momentum_weight_decay": (
        optim.RMSprop, dict(RMS, centered=True, momentum=0.8, weight_decay=0.1), rmsprop_reference),
    "adagrad": (optim.Adagrad, dict(lr=0.1, eps=1e-3), adagrad_reference),
    "adagrad_initial_accumulator_weight_decay": (
        optim.Adagrad, dict(lr=0.1, eps=1e-3, initial_accumulator_value=0.5, weight_decay=0.1),
        adagrad_reference),
    "adadelta": (optim.Adadelta, dict(lr=1.0, rho=0.8, eps=1e-3), adadelta_reference),
    "adadelta_weight_decay": (optim.Adadelta, dict(lr=0.5, rho=0.8, eps=1e-3, weight_decay=0.1),
                              adadelta_reference),
}

SHAPES = [(3, 4), (5,)]       # two parameters of different shapes
N_STEPS = 4


def make_problem(dtype, seed=0):
    """Initial values for the two parameters and a different gradient for each step,
    rounded to ``dtype`` (the float64 reference then starts from the very same numbers)."""
    rng = np.random.default_rng(seed)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(N_STEPS)]
    return init, grads


def state_arrays(opt, p):
    return {k: v for k, v in opt.state[id(p)].items() if isinstance(v, np.ndarray)}


# float64: the optimizer and the reference do the same arithmetic up to the order of a few
# operations, so they agree to a few ulps (1e-12 leaves a margin of ~1e3 on O(1) values).
# float32: the parameters and gradients are float32 (eps = 1.2e-7) and O(1); the rounding of
# the few tens of float32 operations of 4 steps measures ~1e-7 here, so 2e-6 leaves a margin
# of ~20. A wrong rule moves the parameters by ~lr * O(1) >= 1e-3.
TOLERANCES = {np.float64: 1e-12, np.float32: 2e-6}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(CASES))
def test_steps_match_the_published_update_rule(case, dtype):
    cls, kwargs, reference = CASES[case]
    init, grads = make_problem(dtype)
    params = [Parameter(w.copy()) for w in init]
    opt = cls(params, **kwargs)
    expected = [reference(w, [g[i] for g in grads], **kwargs) for i, w in enumerate(init)]
    data_ids = [id(p.data) for p in params]
    buffer_ids = None
    tol = TOLERANCES[dtype]
    for step in range(N_STEPS):
        for p, g in zip(params, grads[step]):
            p.grad = g.copy()
        opt.step()
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.data, expected[i][step], rtol=tol, atol=tol,
                                       err_msg=f"{case}, parameter {i}, step {step + 1}")
            assert p.data.dtype == dtype
            # the gradient is read, never modified
            np.testing.assert_array_equal(p.grad, grads[step][i])
            for name, buf in state_arrays(opt, p).items():
                assert buf.dtype == dtype and buf.shape == p.shape, name
        # updated in place: the same array objects, and the buffers are allocated once
        assert [id(p.data) for p in params] == data_ids
        ids = [{k: id(v) for k, v in state_arrays(opt, p).items()} for p in params]
        if buffer_ids is None:
            buffer_ids = ids
        assert ids == buffer_ids
        for p in params:
            for buf in state_arrays(opt, p).values():
                assert buf is not p.grad and not np.shares_memory(buf, p.data)
    assert opt.steps == N_STEPS


def test_state_buffers_exist_for_stateful_optimizers():
    """Guards the identity check above against optimizers that keep no arrays at all."""
    expected_keys = {
        "sgd_momentum": {"momentum"}, "adam": {"m", "v"}, "adamw": {"m", "v"},
        "rmsprop_centered_momentum_weight_decay": {"v", "mean_g", "momentum"},
        "adagrad": {"sum"}, "adadelta": {"v", "u"},
    }
    for case, keys in expected_keys.items():
        cls, kwargs, _ = CASES[case]
        p = Parameter(np.ones(3))
        opt = cls([p], **kwargs)
        p.grad = np.ones(3)
        opt.step()
        assert set(state_arrays(opt, p)) == keys, case


@pytest.mark.parametrize("case", ["sgd_momentum", "adam", "adamw", "rmsprop_centered",
                                  "adagrad", "adadelta"])
def test_parameters_without_gradient_are_skipped(case):
    cls, kwargs, reference = CASES[case]
    init, grads = make_problem(np.float64)
    a, b = (Parameter(w.copy()) for w in init)
    opt = cls([a, b], **kwargs)
    a.grad = grads[0][0]
    opt.step()                                    # b has no gradient: untouched, no state
    np.testing.assert_array_equal(b.data, init[1])
    assert opt.state[id(b)] == {}
    b.grad = grads[1][1]
    opt.step()                                    # a steps again with the same gradient
    np.testing.assert_allclose(a.data, reference(init[0], [grads[0][0]] * 2, **kwargs)[-1],
                               rtol=1e-12, atol=1e-12)
    # b's first step is a first step (e.g. Adam's bias correction uses its own t = 1)
    np.testing.assert_allclose(b.data, reference(init[1], [grads[1][1]], **kwargs)[-1],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01)],
                         ids=["sgd_momentum", "adam"])
def test_a_model_with_a_frozen_parameter_is_taken_and_the_parameter_skipped(make, compile):
    """PyTorch's fine-tuning pattern, torch.optim.SGD(model.parameters()) with a layer
    frozen, was a TypeError. The frozen Parameter is held, skipped while it has no
    gradient (the same bits as leaving it out), has no state, and trains once unfrozen."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((48, 4)).astype(np.float32), rng.integers(0, 3, 48)

    def frozen_model():
        model = nn.MLP([4, 8, 3], seed=0)
        model.layers[0].weight.requires_grad = False
        return model

    model, filtered = frozen_model(), frozen_model()
    frozen = model.layers[0].weight.numpy(copy=True)
    opt = make(model)
    assert opt.params == model.parameters()
    by_hand = make([p for p in filtered.parameters() if p.requires_grad])
    for m, o in ((model, opt), (filtered, by_hand)):
        nn.fit(m, nn.CrossEntropyLoss(), o, (X, Y), epochs=2, batch_size=16, verbose=0,
               compile=compile)
    assert np.array_equal(model.layers[0].weight.numpy(), frozen)
    for (name, p), q in zip(model.named_parameters(), filtered.parameters(), strict=True):
        assert np.array_equal(p.numpy(), q.numpy()), name
    state = opt.state_dict()
    assert 0 not in state["state"] and len(state["state"]) == len(opt.params) - 1
    again = make(model)
    again.load_state_dict(state)
    model.layers[0].weight.requires_grad = True                   # unfrozen: trained
    nn.fit(model, nn.CrossEntropyLoss(), again, (X, Y), epochs=1, batch_size=16, verbose=0,
           compile=compile)
    assert not np.array_equal(model.layers[0].weight.numpy(), frozen)
    with pytest.raises(TypeError, match=r"parameters must be tensors that require grad \(or a "
                                        r"Module's Parameters, frozen ones included\), got Tensor"):
        make([engine.Tensor(np.ones(3))])                         # requires_grad forgotten


def test_zero_grad_sets_gradients_to_none():
    model = nn.Linear(3, 2)
    opt = optim.SGD(model, lr=0.1)
    assert opt.params == model.parameters()
    for p in opt.params:
        p.grad = np.ones_like(p.data)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_schedule_changes_the_learning_rate_used_by_step():
    p = Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=1.0)
    optim.StepLR(opt, step_size=1, gamma=0.5).step()
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(p.data, [-0.5, -0.5])


ALL = [optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop, optim.Adagrad, optim.Adadelta]


def _one_param():
    return [Parameter(np.zeros(2))]


@pytest.mark.parametrize("cls", ALL)
def test_invalid_common_arguments(cls):
    with pytest.raises(ValueError, match="empty"):
        cls([], lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        cls(iter([]), lr=0.1)
    with pytest.raises(ValueError, match="learning rate"):
        cls(_one_param(), lr=-0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        cls(_one_param(), lr=0.1, weight_decay=-0.1)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("bad, shown", [(-0.1, "-0.1"), (float("nan"), "nan"),
                                        (float("inf"), "inf"), ("0.1", "'0.1'"),
                                        (None, "None"), (True, "True")])
def test_the_lr_setter_checks_like_the_constructor(cls, bad, shown):
    # it took them all: a negative rate ascended, NaN wrote NaN weights, "0.1" failed in step()
    opt = cls([{"params": [Parameter(np.zeros(2))]}, {"params": [Parameter(np.zeros(2))], "lr": 0.2}],
              lr=0.1)
    with pytest.raises(ValueError, match=f"^{cls.__name__}: learning rate must be finite and "
                                         f">= 0, got {re.escape(shown)}$"):
        opt.lr = bad
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2]      # no group changed


@pytest.mark.parametrize("good", [0, 0.5, np.float32(0.25), np.int64(1)])
def test_the_lr_setter_takes_any_finite_non_negative_number(good):
    opt = optim.SGD(_one_param(), lr=0.1)
    opt.lr = good
    assert opt.lr == good


@pytest.mark.parametrize("cls,kwargs,name", [
    (optim.SGD, dict(momentum=1.0), "momentum"),
    (optim.SGD, dict(momentum=1.5), "momentum"),
    (optim.SGD, dict(momentum=-0.1), "momentum"),
    (optim.SGD, dict(nesterov=True), "Nesterov"),                           # momentum = 0
    (optim.SGD, dict(nesterov=True, momentum=0.9, dampening=0.1), "Nesterov"),
    (optim.RMSprop, dict(momentum=1.0), "momentum"),
    (optim.RMSprop, dict(alpha=-0.1), "alpha"),
    (optim.RMSprop, dict(eps=-1e-8), "eps"),
    (optim.Adam, dict(betas=(1.0, 0.999)), "beta1"),
    (optim.Adam, dict(betas=(-0.1, 0.999)), "beta1"),
    (optim.Adam, dict(betas=(0.9, 1.0)), "beta2"),
    (optim.Adam, dict(betas=(0.9, -0.5)), "beta2"),
    (optim.Adam, dict(eps=-1e-8), "eps"),
    (optim.AdamW, dict(betas=(1.2, 0.999)), "beta1"),
    (optim.AdamW, dict(betas=(0.9, 1.0)), "beta2"),
    (optim.Adagrad, dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (optim.Adagrad, dict(eps=-1e-10), "eps"),
    (optim.Adadelta, dict(rho=1.5), "rho"),
    (optim.Adadelta, dict(rho=-0.1), "rho"),
])
def test_invalid_hyper_parameters(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(_one_param(), lr=0.1, **kwargs)


# --- against PyTorch, when it is installed (not in CI) ---------------------------------------

def _torch_optimizer(torch, case, params):
    cls, kwargs, _ = CASES[case]
    torch_cls = getattr(torch.optim, cls.__name__)         # same class names as torch.optim
    return torch_cls(params, **kwargs)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torch_optim(case):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in SHAPES]
    ours = [Parameter(w.copy()) for w in init]
    theirs = [torch.tensor(w.copy(), requires_grad=True) for w in init]
    cls, kwargs, _ = CASES[case]
    opt, topt = cls(ours, **kwargs), _torch_optimizer(torch, case, theirs)
    for step in range(5):
        for p, tp in zip(ours, theirs):
            g = rng.standard_normal(p.shape)
            p.grad, tp.grad = g.copy(), torch.tensor(g.copy())
        opt.step()
        topt.step()
        for p, tp in zip(ours, theirs):
            np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{case}, step {step + 1}")


# --- behaviour: minimizing a convex quadratic ------------------------------------------------

def _least_squares_problem():
    rng = np.random.default_rng(2)
    A = rng.standard_normal((8, 3))
    b = rng.standard_normal((8, 1))
    w_star = np.linalg.lstsq(A, b, rcond=None)[0]
    loss_star = 0.5 * float(np.sum((A @ w_star - b) ** 2))
    return A, b, loss_star


# Learning rates a practitioner would pick for this small problem (the eigenvalues of the
# Hessian A^T A lie between 0.67 and 12.5, so gradient descent needs lr < 2 / 12.5 = 0.16).
# Adadelta: near the optimum sqrt(u + eps) / sqrt(v + eps) -> 1, so it behaves like gradient
# descent with step lr and needs that same bound; its first steps are ~lr sqrt(eps), hence a
# large eps. RMSprop and Adam settle at a distance that shrinks with lr.
BEHAVIOUR = {
    "sgd": (optim.SGD, dict(lr=0.05)),
    "sgd_momentum": (optim.SGD, dict(lr=0.02, momentum=0.9)),
    "sgd_nesterov": (optim.SGD, dict(lr=0.02, momentum=0.9, nesterov=True)),
    "adam": (optim.Adam, dict(lr=0.05)),
    "adamw": (optim.AdamW, dict(lr=0.05, weight_decay=1e-4)),
    "rmsprop": (optim.RMSprop, dict(lr=0.02)),
    "rmsprop_centered_momentum": (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    "adagrad": (optim.Adagrad, dict(lr=0.5)),
    "adadelta": (optim.Adadelta, dict(lr=0.1, eps=1e-2)),
}


@pytest.mark.parametrize("case", sorted(BEHAVIOUR))
def test_minimizes_a_convex_quadratic(case):
    """0.5 ||A w - b||^2, gradients from the engine; 200 steps close 99.99% of the gap to
    the least-squares optimum (all of these settings reach 1e-6 of it or better)."""
    cls, kwargs = BEHAVIOUR[case]
    A, b, loss_star = _least_squares_problem()
    w = Parameter(np.zeros((3, 1)))
    opt = cls([w], **kwargs)

    def loss():
        r = engine.Tensor(A) @ w - b
        return 0.5 * (r * r).sum()

    initial = float(loss().data)
    for _ in range(200):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    final = float(loss().data)
    assert final - loss_star < 1e-4 * (initial - loss_star), (initial, final, loss_star)


# --- learning-rate schedules -----------------------------------------------------------------

BASE_LR = 0.5


def _lrs(make_schedule, n):
    """The learning rate before any step, then after each of n calls to step()."""
    opt = optim.SGD(_one_param(), lr=BASE_LR)
    schedule = make_schedule(opt)
    lrs = [opt.lr]
    for _ in range(n):
        returned = schedule.step()
        assert returned == opt.lr == schedule.get_lr()
        lrs.append(opt.lr)
    return lrs


def _cosine(t, T_max, eta_min, base=BASE_LR):
    t = min(t, T_max)
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / T_max)) / 2


def test_step_lr():
    lrs = _lrs(lambda opt: optim.StepLR(opt, step_size=3, gamma=0.5), 10)
    np.testing.assert_allclose(lrs, [BASE_LR * 0.5 ** (t // 3) for t in range(11)], rtol=1e-15)
    assert lrs[:4] == [0.5, 0.5, 0.5, 0.25]


def test_exponential_lr():
    lrs = _lrs(lambda opt: optim.ExponentialLR(opt, gamma=0.9), 10)
    np.testing.assert_allclose(lrs, [BASE_LR * 0.9 ** t for t in range(11)], rtol=1e-14)


def test_cosine_annealing_lr():
    lrs = _lrs(lambda opt: optim.CosineAnnealingLR(opt, T_max=8, eta_min=0.01), 12)
    np.testing.assert_allclose(lrs, [_cosine(t, 8, 0.01) for t in range(13)], rtol=1e-14)
    assert lrs[0] == BASE_LR
    np.testing.assert_allclose(lrs[4], (BASE_LR + 0.01) / 2, rtol=1e-14)   # half-way
    np.testing.assert_allclose(lrs[8:], 0.01, rtol=1e-14)                 # stays at eta_min


def test_linear_warmup_alone():
    lrs = _lrs(lambda opt: optim.LinearWarmup(opt, warmup_steps=4, start_factor=0.25), 7)
    expected = [BASE_LR * (0.25 + 0.75 * t / 4) for t in range(4)] + [BASE_LR] * 4
    np.testing.assert_allclose(lrs, expected, rtol=1e-15)
    assert lrs[0] == BASE_LR * 0.25


def test_linear_warmup_then_cosine():
    lrs = _lrs(lambda opt: optim.LinearWarmup(
        opt, warmup_steps=4, start_factor=0.1,
        then=optim.CosineAnnealingLR(opt, T_max=6, eta_min=0.02)), 12)
    expected = ([BASE_LR * (0.1 + 0.9 * t / 4) for t in range(4)]
                + [_cosine(t - 4, 6, 0.02) for t in range(4, 13)])
    np.testing.assert_allclose(lrs, expected, rtol=1e-14)
    assert lrs[4] == BASE_LR and lrs[10:] == pytest.approx([0.02] * 3, rel=1e-14)


@pytest.mark.parametrize("make", [
    lambda opt: optim.StepLR(opt, step_size=0),
    lambda opt: optim.StepLR(opt, step_size=-2),
    lambda opt: optim.StepLR(opt, step_size=2, gamma=0.0),
    lambda opt: optim.ExponentialLR(opt, gamma=-0.9),
    lambda opt: optim.CosineAnnealingLR(opt, T_max=0),
    lambda opt: optim.CosineAnnealingLR(opt, T_max=5, eta_min=-0.1),
    lambda opt: optim.LinearWarmup(opt, warmup_steps=0),
    lambda opt: optim.LinearWarmup(opt, warmup_steps=3, start_factor=1.5),
    lambda opt: optim.LinearWarmup(opt, warmup_steps=3, start_factor=-0.1),
])
def test_invalid_schedule_arguments(make):
    opt = optim.SGD(_one_param(), lr=BASE_LR)
    with pytest.raises(ValueError):
        make(opt)
    assert opt.lr == BASE_LR
    assert "initial_lr" not in opt.param_groups[0]          # a refused schedule left no trace


def test_a_warmup_then_a_warmup_starts_from_the_original_learning_rate():
    """The ``then`` schedule is made first and lowers the lr; the outer warm-up must take
    the group's original lr (``initial_lr``) as its base, as torch's SequentialLR of two
    LinearLR does (these values are torch 2's), not the lowered one (which halved every
    later lr: 0.25, 0.375, ..., 0.5)."""
    opt = optim.SGD(_one_param(), lr=1.0)
    schedule = optim.LinearWarmup(opt, 2, 0.5, then=optim.LinearWarmup(opt, 2, 0.5))
    lrs = [opt.lr] + [schedule.step() for _ in range(6)]
    assert lrs == pytest.approx([0.5, 0.75, 0.5, 0.75, 1.0, 1.0, 1.0], rel=1e-15)
    assert schedule.base_lrs == [1.0] and opt.param_groups[0]["initial_lr"] == 1.0


def test_a_schedule_made_after_another_lowered_the_rate_continues_from_that_rate():
    """As torch 2's chainable schedules (these values are torch's LinearLR then StepLR): a
    schedule's base is the group's rate when it is made. The first schedule made on a group
    records its rate as ``initial_lr`` (a record, as in torch). Before: the StepLR took
    initial_lr 1.0 as its base and stepped to 0.5, twice the rate torch gives."""
    opt = optim.SGD([{"params": _one_param(), "lr": 1.0}, {"params": _one_param(), "lr": 0.1}])
    optim.LinearWarmup(opt, warmup_steps=4, start_factor=0.25)
    assert [g["lr"] for g in opt.param_groups] == [0.25, 0.025]
    later = optim.StepLR(opt, step_size=1, gamma=0.5)
    assert later.base_lrs == [0.25, 0.025]
    assert [g["initial_lr"] for g in opt.param_groups] == [1.0, 0.1]
    later.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.125, 0.0125], rel=1e-15)


# torch 2.x's lr sequences for the same runs (torch.optim.lr_scheduler, chainable form)
_TORCH_AFTER_HAND_SET = {
    # StepLR(2, 0.5) for 4 steps from 0.1, then lr = 1e-3 by hand, then ExponentialLR(0.9)
    "new schedule": [0.0009, 0.00081, 0.000729],
    # StepLR(10, 0.5) from 0.1: one step, lr = 0.01 by hand, then 11 more steps
    "mid-run": [0.01] * 8 + [0.005] * 3,
}


def test_a_rate_set_by_hand_is_kept_by_the_schedules_next_steps():
    """A rate changed outside the schedule is where it continues from, as in torch. Before,
    the next step recomputed the rate from the original one: 0.09 for 9e-4 (100x the rate
    the user set), and 0.1 back from a hand-set 0.01."""
    opt = optim.SGD(_one_param(), lr=0.1)
    first = optim.StepLR(opt, 2, 0.5)
    for _ in range(4):
        first.step()
    opt.lr = 1e-3
    second = optim.ExponentialLR(opt, 0.9)
    assert [second.step() for _ in range(3)] == pytest.approx(_TORCH_AFTER_HAND_SET["new schedule"], rel=1e-12)
    opt = optim.SGD(_one_param(), lr=0.1)
    schedule = optim.StepLR(opt, 10, 0.5)
    schedule.step()
    opt.lr = 0.01
    assert [schedule.step() for _ in range(11)] == pytest.approx(_TORCH_AFTER_HAND_SET["mid-run"], rel=1e-12)
    again = optim.StepLR(optim.SGD(_one_param(), lr=0.1), 10, 0.5)   # a resumed run:
    again.load_state_dict(schedule.state_dict())     # the base it continued from is its state
    assert [again.step() for _ in range(10)] == [schedule.step() for _ in range(10)]


def test_two_schedules_of_one_optimizer_multiply_as_in_torch():
    """ExponentialLR(0.9) and StepLR(3, 0.5) both stepping: torch gives 0.9^t 0.5^(t//3).
    Before, the last one to step set its own rate alone (0.5 at t = 3 for 0.3645)."""
    opt = optim.SGD(_one_param(), lr=1.0)
    a, b = optim.ExponentialLR(opt, 0.9), optim.StepLR(opt, 3, 0.5)
    rates = []
    for _ in range(7):
        a.step()
        rates.append(b.step())
    assert rates == pytest.approx([0.9 ** t * 0.5 ** (t // 3) for t in range(1, 8)], rel=1e-12)


def test_a_schedule_refuses_to_continue_from_a_rate_it_cannot_reach_or_an_overflowing_one():
    """A warm-up from 0 gives 0 at its start whatever its base: a rate set by hand there
    cannot be continued (an error, not a guess). A rate that overflows is refused with the
    group unchanged (gamma 10 on 1e300 made the lr inf, and the optimizer then refused its
    own state_dict); a base of 0 has no factor (it was a ZeroDivisionError)."""
    opt = optim.SGD(_one_param(), lr=0.1)
    warmup = optim.LinearWarmup(opt, warmup_steps=4, start_factor=0.0)
    opt.lr = 0.05
    with pytest.raises(ValueError, match=r"LinearWarmup.step: the learning rate of parameter "
                                         r"group 0 is 0.05, not the 0.0 this schedule set"):
        warmup.step()
    assert warmup.t == 0 and opt.lr == 0.05
    opt = optim.SGD(_one_param(), lr=1e308)
    schedule = optim.StepLR(opt, 1, gamma=10.0)
    with pytest.raises(ValueError, match=r"StepLR: the learning rate of parameter group 0 at "
                                         r"step 1 would be inf"):
        schedule.step()
    assert schedule.t == 0 and opt.lr == 1e308
    opt.load_state_dict(opt.state_dict())
    opt = optim.SGD(_one_param(), lr=0.1)
    schedule = optim.ExponentialLR(opt, gamma=10.0)       # 10.0 ** 309: an OverflowError
    for _ in range(308):
        schedule.step()
    for _ in range(2):                                    # refused, and refused again
        with pytest.raises(ValueError, match=r"ExponentialLR: the learning rate of parameter "
                                             r"group 0 at step 309 would be inf"):
            schedule.step()
        assert schedule.t == 308
    opt = optim.SGD(_one_param(), lr=0.1)
    schedule = optim.ExponentialLR(opt, gamma=10.0)
    schedule.t = 400                                      # 10.0 ** 400 overflows
    opt.lr = 0.5
    with pytest.raises(ValueError, match=r"ExponentialLR.step: the learning rate of parameter "
                                         r"group 0 is 0.5, not the 0.1 this schedule set"):
        schedule.step()                                   # (an OverflowError before)
    opt = optim.SGD([{"params": _one_param(), "lr": 0.0}])
    with pytest.raises(ValueError, match=r"CosineAnnealingLR.factor: the base learning rate is 0"):
        optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1).factor(1)
    with pytest.raises(TypeError, match=r"LinearWarmup: then must be a schedule"):
        optim.LinearWarmup(optim.SGD(_one_param(), lr=0.1), 2, then=0.5)


def test_initial_lr_goes_through_the_optimizer_state_dict():
    """``initial_lr`` is part of a group (as in torch) and of the optimizer's state_dict;
    a state from before it existed, without it, still loads (and leaves none)."""
    p, q = _one_param(), _one_param()
    opt = optim.Adam(p, lr=0.5)
    optim.ExponentialLR(opt, gamma=0.5).step()
    state = opt.state_dict()
    assert state["param_groups"][0]["initial_lr"] == 0.5
    fresh = optim.Adam(q, lr=0.01)                                  # no schedule made on it
    fresh.load_state_dict(state)
    assert fresh.param_groups[0]["initial_lr"] == 0.5 and fresh.lr == 0.25
    assert optim.StepLR(fresh, step_size=1).base_lrs == [0.25]       # the rate it has now
    del state["param_groups"][0]["initial_lr"]                      # an older state
    fresh.load_state_dict(state)
    assert "initial_lr" not in fresh.param_groups[0] and fresh.lr == 0.25
    state["param_groups"][0]["initial_lr"] = -1.0
    with pytest.raises(ValueError, match=r"Adam: initial_lr must be a finite number"):
        fresh.load_state_dict(state)
    assert "initial_lr" not in fresh.param_groups[0]
    with pytest.raises(ValueError, match=r"unknown hyperparameters \['initial_learning_rate'\]"):
        optim.Adam([{"params": q, "initial_learning_rate": 0.1}])
    assert optim.Adam([{"params": q, "initial_lr": 0.1}], lr=0.2).param_groups[0]["initial_lr"] == 0.1


# --- gradient clipping -----------------------------------------------------------------------

def _params_with_grads(grads):
    params = []
    for g in grads:
        p = Parameter(np.zeros(g.shape, dtype=g.dtype))
        p.grad = g.copy()
        params.append(p)
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_grad_norm_scales_all_gradients_together(dtype):
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal(s).astype(dtype) * 3 for s in SHAPES]
    params = _params_with_grads(grads)
    params.append(Parameter(np.zeros(2, dtype=dtype)))           # no gradient: ignored
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    assert norm > 5
    returned = optim.clip_grad_norm_(params, max_norm=1.0)
    assert returned == pytest.approx(norm, rel=1e-12)              # the norm before clipping
    clipped = [p.grad for p in params[:2]]
    new_norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in clipped))
    # within 1e-6 relative in float64; float32 rounding of ~17 products adds well under 1e-6
    assert new_norm == pytest.approx(1.0, rel=1e-6)
    scale = 1.0 / norm                                             # one common factor
    for g, c in zip(grads, clipped):
        assert c.dtype == dtype
        np.testing.assert_allclose(c, g * scale, rtol=1e-5 if dtype == np.float32 else 1e-6)
    assert params[2].grad is None


def test_clip_grad_norm_leaves_small_gradients_untouched():
    grads = [np.array([[0.3, -0.4]]), np.array([0.0, 0.5])]        # norm sqrt(0.5) ~ 0.707
    model_params = _params_with_grads(grads)
    objects = [p.grad for p in model_params]
    assert optim.clip_grad_norm_(model_params, max_norm=1.0) == pytest.approx(math.sqrt(0.5))
    for p, g, obj in zip(model_params, grads, objects):
        assert p.grad is obj
        np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_accepts_a_module():
    model = nn.Linear(2, 2, dtype=np.float64)
    model.weight.grad = np.full((2, 2), 3.0)
    model.bias.grad = np.full(2, 4.0)                                 # norm sqrt(36 + 32)
    assert optim.clip_grad_norm_(model, max_norm=2.0) == pytest.approx(math.sqrt(68))
    total = math.sqrt(np.sum(model.weight.grad ** 2) + np.sum(model.bias.grad ** 2))
    assert total == pytest.approx(2.0, rel=1e-6)


@pytest.mark.parametrize("max_norm", [0.0, -1.0])
def test_clip_grad_norm_rejects_non_positive_max_norm(max_norm):
    params = _params_with_grads([np.ones(3)])
    with pytest.raises(ValueError, match="max_norm"):
        optim.clip_grad_norm_(params, max_norm)
    np.testing.assert_array_equal(params[0].grad, np.ones(3))


def test_clip_grad_norm_accepts_a_single_parameter():
    """One tensor is clipped as a whole (as torch.nn.utils.clip_grad_norm_ takes it), not
    iterated row by row (whose rows have no gradient: nothing was clipped, 0 returned)."""
    p = Parameter(np.ones((3, 4)))
    p.grad = np.full((3, 4), 10.0)
    assert optim.clip_grad_norm_(p, 1.0) == pytest.approx(math.sqrt(12) * 10, rel=1e-12)
    np.testing.assert_allclose(p.grad, np.full((3, 4), 1 / math.sqrt(12)), rtol=1e-6)


@pytest.mark.parametrize(("saved", "other", "message"), [
    (lambda o: optim.StepLR(o, step_size=10, gamma=0.5), lambda o: optim.StepLR(o, step_size=3, gamma=0.1),
     r"made with \{'step_size': 10, 'gamma': 0.5\}, this one has \{'step_size': 3, 'gamma': 0.1\}"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=10), lambda o: optim.CosineAnnealingLR(o, T_max=100),
     r"'T_max': 10"),
    (lambda o: optim.LinearWarmup(o, 2, then=optim.StepLR(o, 3)),
     lambda o: optim.LinearWarmup(o, 2, then=optim.StepLR(o, 4)), r"'then': \{'type': 'StepLR'"),
])
def test_a_schedule_state_is_refused_by_a_schedule_made_with_other_settings(saved, other, message):
    """state_dict kept only t and the base rates: a StepLR(10, 0.5)'s state loaded into a
    StepLR(3, 0.1) continued with 0.1, 0.01, ... where the run had 1.0 for six more steps."""
    first = saved(optim.SGD(_one_param(), lr=1.0))
    for _ in range(4):
        first.step()
    state = first.state_dict()
    again = saved(optim.SGD(_one_param(), lr=1.0))
    again.load_state_dict(state)                              # the same settings: continues
    assert [again.step() for _ in range(6)] == [first.step() for _ in range(6)]
    different = other(optim.SGD(_one_param(), lr=1.0))
    with pytest.raises(ValueError, match=message):
        different.load_state_dict(state)
    assert different.t == 0
    del state["settings"]                                     # a state saved by handgrad 0.3
    different.load_state_dict(state)
    assert different.t == 4


@pytest.mark.parametrize("make", [
    lambda p: optim.SGD(p, lr=1e-4), lambda p: optim.SGD(p, lr=1e-4, momentum=0.9),
    lambda p: optim.Adam(p, lr=1e-3), lambda p: optim.AdamW(p, lr=1e-3),
    lambda p: optim.RMSprop(p, lr=1e-3), lambda p: optim.Adagrad(p, lr=0.1),
    lambda p: optim.Adadelta(p)])
@pytest.mark.parametrize("grad", [np.array([1e-4, 3e-3, 0.5, 300.0], np.float16),
                                  np.array([100, -100, 3, 1], np.int8)], ids=["float16", "int8"])
def test_a_gradient_of_a_narrower_dtype_updates_as_its_values_in_the_parameters_dtype(make, grad):
    """A float16 or int8 gradient was combined with Python numbers in its own dtype: lr * g
    underflowed to 0 (SGD), g * g to 0 or inf (Adam moved a weight by -100 for a gradient
    of 1e-3), and int8's 100² wrapped to 16 (Adagrad)."""
    results = []
    for g in (grad, grad.astype(np.float32)):
        p = nn.Parameter(np.zeros(4, np.float32))
        opt = make([p])
        for _ in range(2):
            p.grad = g.copy()
            opt.step()
        results.append(p.numpy(copy=True))
    np.testing.assert_array_equal(results[0], results[1])


def _hand_changed_run(resume_at=None, order="optimizer first", fresh_lr=0.1):
    """8 epochs of SGD + ExponentialLR(0.9) on a small problem, the rate halved by hand
    after epoch 4 (the schedule continues from it); with ``resume_at``, the optimizer and
    schedule states are taken there into a new model, optimizer and schedule, loaded in
    ``order``. Returns the rates of each epoch and the final weights."""
    X = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)

    def make():
        m = nn.MLP([4, 16, 3], seed=0)
        o = optim.SGD(m, lr=fresh_lr, momentum=0.9)
        return m, o, optim.ExponentialLR(o, gamma=0.9)

    m, o, s = make()
    rates = []
    for e in range(1, 9):
        loss = nn.CrossEntropyLoss()(m(engine.Tensor(X)), y)
        o.zero_grad()
        loss.backward()
        o.step()
        s.step()
        if e == 4:
            o.lr = o.lr * 0.5
        if e == resume_at:
            weights, opt_state, schedule_state = m.state_dict(), o.state_dict(), s.state_dict()
            m, o, s = make()
            m.load_state_dict(weights)
            loads = [(o, opt_state), (s, schedule_state)]
            for owner, state in loads if order == "optimizer first" else loads[::-1]:
                owner.load_state_dict(state)
        rates.append(o.lr)
    return rates, [p.numpy(copy=True) for p in m.parameters()]


@pytest.mark.parametrize("order", ["optimizer first", "schedule first"])
@pytest.mark.parametrize("resume_at", [3, 4, 6])
def test_a_resumed_schedule_keeps_a_rate_changed_by_hand_as_the_run_did(order, resume_at):
    """load_state_dict set every group to the schedule's own rate: after a hand change the
    resumed run trained at twice the rate (0.059 for 0.030), with no message."""
    rates, weights = _hand_changed_run()
    resumed_rates, resumed_weights = _hand_changed_run(resume_at, order)
    assert resumed_rates == rates
    for a, b in zip(weights, resumed_weights, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_schedule_loaded_into_a_fresh_optimizer_gives_it_the_saved_rate():
    """The schedule's state carries the rates: loaded alone, into an optimizer made with
    another rate, it continues as the run that saved it."""
    rates, _ = _hand_changed_run()
    resumed, _ = _hand_changed_run(6, "schedule first", fresh_lr=0.1)
    assert resumed == rates
    m = nn.MLP([4, 3], seed=0)
    o = optim.SGD(m, lr=0.5)
    s = optim.ExponentialLR(o, gamma=0.9)
    s.step()
    o2 = optim.SGD(nn.MLP([4, 3], seed=0), lr=7.0)
    s2 = optim.ExponentialLR(o2, gamma=0.9)
    s2.load_state_dict(s.state_dict())
    assert o2.lr == o.lr == 0.45
    s.step()
    s2.step()
    assert o2.lr == o.lr


@pytest.mark.parametrize("make", [lambda m: optim.Adam(m, lr=1e-3), lambda m: optim.AdamW(m, lr=1e-3),
                                  lambda m: optim.RMSprop(m, lr=1e-3, eps=1e-10)])
def test_an_eps_float16_cannot_hold_is_named_before_a_float16_step_divides_by_zero(make):
    """eps = 1e-8 is 0 in float16: one Adam step wrote [-inf, nan, 0.999] for weights
    [0.5, -0.25, 1.0] and gradient [1e-3, 0, 1], and fit said to lower the learning rate."""
    model = nn.Linear(3, 1, dtype=np.float16)
    opt = make(model)
    for p in model.parameters():
        p.grad = np.full(p.shape, 1e-3, np.float16)
    before = [p.numpy(copy=True) for p in model.parameters()]
    with pytest.raises(ValueError, match=r"\.step: eps = 1e-(08|10) is 0 in float16, the dtype of "
                                         r"parameter 0 .*Nothing was updated"):
        opt.step()
    for p, w in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.numpy(copy=True), w)
    X = np.ones((4, 3), np.float16)
    with pytest.raises(ValueError, match="eps = 1e-(08|10) is 0 in float16"):
        nn.fit(model, nn.MSELoss(), make(model), (X, np.zeros((4, 1), np.float16)), epochs=1,
               verbose=0)


def test_an_eps_float16_holds_trains_a_float16_model():
    model = nn.Linear(3, 1, dtype=np.float16)
    opt = optim.Adam(model, lr=1e-3, eps=1e-4)
    for p in model.parameters():
        p.grad = np.full(p.shape, 1e-3, np.float16)
    opt.step()
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_model_and_optimizer_train_as_the_originals(how):
    """copy.deepcopy((model, opt)), an in-memory checkpoint: the optimizer's state was keyed
    by the original parameters' ids, so the copy raised a bare KeyError (an address) at its
    first step; pickling one failed on its subnormal hints' weak references."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = nn.optim.Adam(model, lr=0.01)
    opt.check_finite = True
    x, y = np.random.default_rng(0).standard_normal((8, 3)), np.arange(8) % 2

    def step(m, o):
        o.zero_grad()
        nn.CrossEntropyLoss()(m(engine.Tensor(x)), y).backward()
        o.step()
    step(model, opt)
    model2, opt2 = copy.deepcopy((model, opt)) if how == "deepcopy" else \
        pickle.loads(pickle.dumps((model, opt)))
    assert all(a is b for a, b in zip(opt2.params, model2.parameters()))
    for _ in range(3):
        step(model, opt)
        step(model2, opt2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert np.array_equal(a.data, b.data)
    assert opt2.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
