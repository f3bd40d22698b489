"""An update proven finite (nn/update_bounds.py) runs with no copy and no check; the proof
must hold, give the same bits, and never trust weights or moments that changed unseen."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handgrad import engine
from handgrad.nn import optim
from handgrad.nn.module import Parameter
from handgrad.nn.step import gradient_bounds
from handgrad.nn.update_bounds import max_bound, measure

F32_MAX = float(np.finfo(np.float32).max)

PROVEN = {
    "sgd": lambda ps: optim.SGD(ps, lr=0.05),
    "heavy ball": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    "nesterov, decay": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "dampening": lambda ps: optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, weight_decay=0.01),
    "adamw": lambda ps: optim.AdamW(ps, lr=0.01),
}


def _params(dtype: type = np.float32) -> list[Parameter]:
    rng = np.random.default_rng(0)
    return [Parameter(rng.standard_normal(s).astype(dtype)) for s in [(7, 5), (5,), (5, 3)]]


def _grads(params: list[Parameter], step: int, scale: float = 1.0) -> None:
    rng = np.random.default_rng(step)
    for p in params:
        p.grad = (scale * rng.standard_normal(p.shape)).astype(p.dtype)


def _train(make, steps: int, with_bounds: bool, dtype: type = np.float32):
    params = _params(dtype)
    opt = make(params)
    opt.check_finite = True
    for k in range(steps):
        _grads(params, k)
        opt._step(gradient_bounds(params) if with_bounds else {})
    return params, opt


@pytest.mark.parametrize("name", PROVEN)
def test_a_proven_update_gives_the_bits_of_the_checked_one(name):
    proven, opt = _train(PROVEN[name], 12, with_bounds=True)
    checked, other = _train(PROVEN[name], 12, with_bounds=False)
    if name.startswith("adam"):    # its bound, |m| / eps, is loose: a check now and then
        assert opt.update_bounds.proven >= 11 * 3 // 2
    else:
        assert opt.update_bounds.proven == 11 * 3     # every step after the first
        assert opt.update_bounds.at_once == 10 * 3    # and after the second, at once
    assert other.update_bounds.proven == 0
    for a, b in zip(proven, checked, strict=True):
        assert a.numpy().tobytes() == b.numpy().tobytes()
    for pa, pb in zip(proven, checked, strict=True):
        for key, value in opt.state[id(pa)].items():
            assert np.array_equal(value, other.state[id(pb)][key]), key


@pytest.mark.parametrize("name", PROVEN)
@given(scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e4, 1e12]), steps=st.integers(2, 8),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_the_carried_bounds_hold(name, scale, steps, dtype):
    """After every proven step the bound on the weights and on each moment is at least the
    largest |element| it bounds, for gradients from tiny to huge."""
    params = _params(dtype)
    opt = PROVEN[name](params)
    opt.check_finite = True
    for k in range(steps):
        _grads(params, k, scale)
        opt._step(gradient_bounds(params))
        for p in params:
            known = opt.update_bounds.known(p)
            if known is None:
                continue
            assert known.w >= np.abs(p.numpy()).max()
            for key, (array, bound) in known.moments.items():
                assert array is opt.state[id(p)][key] and bound >= np.abs(array).max(), key


@given(st.integers(1, 400), st.floats(1e-30, 1e30), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**32 - 1))
def test_max_bound_bounds_the_largest_element(n, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    a = (scale * rng.standard_normal(n)).astype(dtype)
    a[rng.integers(n)] *= 1e3                       # one element far above the rest
    bound = measure(a)
    if bound is not None:
        assert bound >= float(np.abs(a).max())


def test_max_bound_declines_what_it_cannot_bound():
    assert max_bound(math.inf, 4, np.dtype(np.float32)) is None
    assert max_bound(1.0, 4, np.dtype(np.float16)) is None             # no proof for float16
    assert max_bound(1.0, 2**23, np.dtype(np.float32)) is None         # n·u > 1/4
    assert max_bound(0.0, 3, np.dtype(np.float64)) == 1.0              # underflowed squares


def _write_by_numpy(p: Parameter) -> None:
    p.data[0, 0] = F32_MAX


def _write_by_inplace(p: Parameter) -> None:
    (w,) = engine.inplace(p)
    w[0, 0] = F32_MAX


def _write_by_assignment(p: Parameter) -> None:
    new = p.numpy(copy=True)
    new[0, 0] = F32_MAX
    p.data = new


def _write_by_assigning_a_tensor(p: Parameter) -> None:
    new = p.numpy(copy=True)
    new[0, 0] = F32_MAX
    p.data = engine.Tensor(new)                     # shares that tensor's memory: no hand-out


def _write_through_a_kept_view(p: Parameter) -> None:
    _write_through_a_kept_view.view[0, 0] = F32_MAX


@pytest.mark.parametrize("write", [_write_by_numpy, _write_by_inplace, _write_by_assignment,
                                   _write_by_assigning_a_tensor, _write_through_a_kept_view],
                         ids=lambda f: f.__name__[1:])
def test_weights_written_outside_the_optimizer_are_not_trusted(write):
    """After a write the optimizer did not make, its bound on the weights is stale: an update
    that overflows from the new values must be checked and undone, not proven."""
    params = _params()
    kept = write is _write_through_a_kept_view
    if kept:
        _write_through_a_kept_view.view = params[0].data    # held since before the steps
    opt = optim.SGD(params, lr=1e32)
    opt.check_finite = True
    for k in range(4):
        _grads(params, k, 1e-40)                    # lr * g ~ 1e-8: proven
        opt._step(gradient_bounds(params))
    if kept:    # never trusted while the view is held; the other two proven one by one
        assert opt.update_bounds.proven == 3 * 2 and opt.update_bounds.at_once == 0
    else:       # step 2 proven member by member, steps 3 and 4 by the one comparison
        assert opt.update_bounds.proven == 3 * 3 and opt.update_bounds.at_once == 2 * 3
    write(params[0])
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    params[0].grad[0, 0] = -1.0                     # F32_MAX + 1e32 overflows
    before = [p.numpy(copy=True) for p in params]
    with pytest.raises(optim.NonFiniteUpdate, match="parameter 0"):
        opt._step(gradient_bounds(params))
    for p, b in zip(params, before, strict=True):
        assert p.numpy().tobytes() == b.tobytes()


def _momentum_sgd_after_three_steps() -> tuple[list[Parameter], optim.SGD]:
    params = _params()
    opt = optim.SGD(params, lr=1e-3, momentum=0.9)
    opt.check_finite = True
    for k in range(3):
        _grads(params, k)
        opt._step(gradient_bounds(params))
    return params, opt


def test_moments_replaced_by_load_state_dict_are_measured_again():
    params, opt = _momentum_sgd_after_three_steps()
    state = opt.state_dict()
    state["state"][0]["momentum"][0, 0] = F32_MAX / 2          # 0.9 * that + g: fine; then
    opt.load_state_dict(state)
    before = [p.numpy(copy=True) for p in params]
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    opt.param_groups[0]["lr"] = 1e10                            # lr * buf overflows
    with pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def test_an_optimizer_with_its_own_update_is_never_proven():
    class Signed(optim.SGD):
        def update(self, w, g, state, group):
            w -= group["lr"] * np.sign(g)

    _, opt = _train(lambda ps: Signed(ps, lr=0.1), 4, with_bounds=True)
    assert opt.update_bounds.proven == 0
    _, opt = _train(lambda ps: optim.RMSprop(ps), 4, with_bounds=True)   # no bound written
    assert opt.update_bounds.proven == 0


def test_a_large_step_is_checked_not_proven():
    """A learning rate that could overflow is checked (and undone when it does)."""
    params = _params()
    opt = optim.SGD(params, lr=1e-3)
    opt.check_finite = True
    _grads(params, 0)
    opt._step(gradient_bounds(params))
    opt.lr = 1e37
    _grads(params, 1)
    params[0].grad[0, 0] = 100.0                    # 1e39: beyond float32
    before = [p.numpy(copy=True) for p in params]
    with pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == 0
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def test_the_global_write_stamp_changes_with_every_way_to_write():
    """It changes whenever any tensor's memory may have been written or may be written
    unseen from now on; reading values, metadata and running graphs leave it alone."""
    p = Parameter(np.ones((3, 2)))
    other = Parameter(np.ones(4))
    stamp = engine.global_write_stamp()
    assert p.shape == (3, 2) and float(p.sum().item()) == 6.0
    (p * 2).sum().backward()
    assert p.numpy(copy=True).shape == (3, 2)
    assert engine.global_write_stamp() == stamp
    changes = [lambda: engine.inplace(other, keep=False),  # a tracked write, to any tensor
               lambda: other.data,                         # handed out: unseen writes possible
               lambda: engine.inplace(Parameter(np.ones(2))),  # arrays the caller may keep
               lambda: setattr(p, "data", np.zeros((3, 2))),   # an array replaced
               lambda: setattr(p, "data", engine.Tensor(np.ones((3, 2)))),   # by a tensor's
               lambda: engine.Tensor(np.ones(2), copy=False),  # memory the caller keeps
               lambda: np.asarray(Parameter(np.ones(2)))]
    for change in changes:
        change()
        assert engine.global_write_stamp() != stamp
        stamp = engine.global_write_stamp()
    q = Parameter(np.ones(3))
    before = engine.write_stamp(q)
    engine.inplace(q, keep=False)
    engine.inplace(q, keep=False)                   # what write_stamp_after derives
    assert engine.write_stamp_after(before, engine.global_write_stamp()) == engine.write_stamp(q)
    assert engine.write_stamp_after(None, engine.global_write_stamp()) is None


def test_the_write_stamp_changes_with_every_way_to_write():
    p = Parameter(np.ones((3, 2)))
    engine.inplace(p, keep=False)
    stamp = engine.write_stamp(p)
    assert stamp is not None
    assert p.shape == (3, 2) and engine.write_stamp(p) == stamp   # reading metadata: no change
    (p * 2).sum().backward()                                      # a graph: no change
    assert engine.write_stamp(p) == stamp
    engine.inplace(p, keep=False)
    assert engine.write_stamp(p) != stamp
    stamp = engine.write_stamp(p)
    assert engine.write_stamp(Parameter(np.ones(2))) is not None
    kept = Parameter(np.ones(2))
    engine.inplace(kept)                 # arrays the caller may keep: writes could go unseen
    assert engine.write_stamp(kept) is None
    p.data += 0                          # handed out: writes could go unseen from now on
    assert engine.write_stamp(p) is None
    shared = engine.Tensor(np.ones(3), copy=False)                  # the caller keeps it
    assert engine.write_stamp(shared) is None


def test_a_moment_array_replaced_by_hand_is_measured_again():
    params, opt = _momentum_sgd_after_three_steps()
    huge = np.zeros((7, 5), np.float32)
    huge[0, 0] = F32_MAX / 2
    opt.state[id(params[0])]["momentum"] = huge       # not the array the bound is for
    opt.param_groups[0]["lr"] = 1e10
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    before = [p.numpy(copy=True) for p in params]
    with pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


FUZZ_MAKERS = [
    lambda ps, lr: optim.SGD(ps, lr=lr),
    lambda ps, lr: optim.SGD(ps, lr=lr, momentum=0.9, nesterov=True, weight_decay=0.1),
    lambda ps, lr: optim.SGD(ps, lr=lr, momentum=0.5, dampening=0.5),
    lambda ps, lr: optim.Adam(ps, lr=lr, weight_decay=0.1),
    lambda ps, lr: optim.AdamW(ps, lr=lr, weight_decay=0.5),
    lambda ps, lr: optim.Adam(ps, lr=lr, eps=1e-30),
]


def _fuzz_run(trial: int, with_bounds: bool) -> tuple[list[Any], int]:
    """Twelve steps with gradients and learning rates from tiny to overflowing and, now and
    then, a weight set near the dtype's largest number through ``.data``."""
    rng = np.random.default_rng(trial)
    dtype = (np.float32, np.float64)[trial % 2]
    top = 18 if dtype == np.float32 else 40
    params = [Parameter((rng.standard_normal(s) * 10.0 ** rng.integers(-5, 5)).astype(dtype))
              for s in [(3, 4), (4,)]]
    opt = FUZZ_MAKERS[trial % len(FUZZ_MAKERS)](params, 10.0 ** rng.integers(-4, 2))
    opt.check_finite = True
    seen: list[Any] = []
    for _ in range(12):
        for p in params:
            p.grad = (rng.standard_normal(p.shape) * 10.0 ** rng.integers(-10, top)).astype(dtype)
        if rng.random() < 0.1:
            opt.lr = 10.0 ** rng.integers(0, 37 if dtype == np.float32 else 300)
        if rng.random() < 0.1:
            params[0].data[0, 0] = float(np.finfo(dtype).max) * rng.random()
        bounds = gradient_bounds(params)
        if bounds is None:
            seen.append("a gradient overflowed")
            break
        try:
            opt._step(bounds if with_bounds else {})
        except optim.NonFiniteUpdate:
            seen.append(("undone", [p.numpy(copy=True).tobytes() for p in params]))
            break
        assert all(np.isfinite(p.numpy(copy=True)).all() for p in params)
        seen.append([p.numpy(copy=True).tobytes() for p in params])
    return seen, opt.update_bounds.proven


def test_proven_and_checked_steps_agree_even_near_overflow():
    """The same random runs, with and without proofs: the same bits at every step, the same
    step undone, never a NaN or Inf left in a weight; and many updates proven."""
    proven = 0
    for trial in range(60):
        with np.errstate(over="ignore", invalid="ignore"):
            a, n = _fuzz_run(trial, with_bounds=True)
            b, _ = _fuzz_run(trial, with_bounds=False)
        assert a == b, trial
        proven += n
    assert proven > 300


def test_a_group_is_proven_at_once_but_a_stale_member_alone_is_checked():
    """One bound serves the group (the largest of its members' bounds); a member whose
    weights were written from outside is checked while the others stay proven."""
    params, opt = _momentum_sgd_after_three_steps()
    proven = opt.update_bounds.proven
    params[1].data[0] = 2.0                         # handed out: its writes could go unseen
    _grads(params, 3)
    opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven + 2
    assert id(params[1]) in opt.update_bounds.params     # measured again by its check
    for p in params:                                # the group's bound holds for each
        assert opt.update_bounds.known(p).w >= np.abs(p.numpy()).max()


def test_a_buffer_kept_through_a_step_without_momentum_is_measured_again():
    """With momentum 0 for a step, SGD carries no bound on the buffer it keeps; when the
    momentum comes back, that buffer must not be taken for a fresh one (its bound: g)."""
    params = _params()
    opt = optim.SGD(params, lr=1e-3, momentum=0.9)
    opt.check_finite = True
    for k in range(3):
        _grads(params, k, 1e15)                             # buffers ~1e15, weights ~1e12
        opt._step(gradient_bounds(params))
    opt.param_groups[0]["momentum"] = 0.0
    _grads(params, 3, 1e-30)
    opt._step(gradient_bounds(params))
    assert opt.update_bounds.at_once == 2 * 3
    opt.param_groups[0].update(momentum=0.9, lr=1e25)       # lr * buffer overflows float32,
    _grads(params, 4, 1e-30)                                # lr * g does not
    before = [p.numpy(copy=True) for p in params]
    with pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def test_a_gradient_without_a_bound_sends_its_group_back_to_the_member_checks():
    """Proven at once needs a bound on every member's gradient: a finite gradient whose
    squares overflow has none, so its update is checked, and undone when it overflows."""
    params, opt = _momentum_sgd_after_three_steps()
    assert opt.update_bounds.at_once == 3
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    params[0].grad[0, 0] = F32_MAX                  # unbounded: lr * buffer overflows
    opt.param_groups[0]["lr"] = 10.0
    bounds = gradient_bounds(params)
    assert bounds is not None and id(params[0]) not in bounds and id(params[1]) in bounds
    before = [p.numpy(copy=True) for p in params]
    with pytest.raises(optim.NonFiniteUpdate, match="parameter 0"):
        opt._step(bounds)
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def test_a_member_whose_step_count_differs_is_not_proven_with_the_others():
    """Adam's bound reads the step count t: members behind the first one (a parameter that
    had no gradient at some step) are checked rather than bounded with the wrong t."""
    params = _params()
    opt = optim.Adam(params, lr=0.01)
    opt.check_finite = True
    for k in range(3):
        _grads(params, k)
        if k == 1:
            params[2].grad = None                   # its t falls one behind
        opt._step(gradient_bounds(params))
    proven = opt.update_bounds.proven
    _grads(params, 3)
    opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven + 2
    assert opt.state[id(params[2])]["t"] == opt.state[id(params[0])]["t"] - 1


def _adam_after_three_steps() -> tuple[list[Parameter], optim.Adam]:
    params = _params()
    opt = optim.Adam(params, lr=1e-3)
    opt.check_finite = True
    for k in range(3):
        _grads(params, k)
        opt._step(gradient_bounds(params))
    return params, opt


def _scale_momentum_in_place(params, opt) -> None:
    opt.state[id(params[0])]["momentum"][0, 0] = F32_MAX / 2


def _scale_adam_m_in_place(params, opt) -> None:
    np.copyto(opt.state[id(params[0])]["m"], F32_MAX / 4)     # |m| / eps overflows


@pytest.mark.parametrize("setup, write", [(_momentum_sgd_after_three_steps, _scale_momentum_in_place),
                                          (_adam_after_three_steps, _scale_adam_m_in_place)],
                         ids=["sgd momentum", "adam m"])
def test_a_moment_array_written_in_place_is_measured_again(setup, write):
    """The optimizer's state is the user's to change, as in PyTorch: a moment buffer
    written in place (not replaced) must not keep the bound carried for its old values."""
    params, opt = setup()
    assert opt.update_bounds.at_once > 0
    write(params, opt)
    opt.param_groups[0]["lr"] = 1e10 if isinstance(opt, optim.SGD) else 1.0   # proven on the old bounds
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    before = [p.numpy(copy=True) for p in params]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy().tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def _hold_the_array(params, opt):
    return opt.state[id(params[0])]["momentum"]


def _hold_a_view(params, opt):
    return opt.state[id(params[0])]["momentum"][1:]


def _hold_the_parameters_state(params, opt):
    return opt.state[id(params[0])]


def _hold_every_state(params, opt):
    return opt.state


def _write_held(held, params, opt) -> None:
    if isinstance(held, np.ndarray):
        held[-1, 0] = F32_MAX / 2
    else:
        states = held if id(params[0]) in held else {id(params[0]): held}
        states[id(params[0])]["momentum"][-1, 0] = F32_MAX / 2


@pytest.mark.parametrize("hold", [_hold_the_array, _hold_a_view, _hold_the_parameters_state,
                                  _hold_every_state], ids=lambda f: f.__name__[1:])
def test_while_the_state_is_held_outside_no_update_is_proven(hold):
    """A reference kept into the state (the dict of states, one parameter's, a moment array
    or a view of it) lets later writes go unseen: while it is held every update is checked;
    once it is dropped, updates are proven again."""
    params, opt = _momentum_sgd_after_three_steps()
    held = hold(params, opt)
    proven = opt.update_bounds.proven
    for k in range(3, 6):
        _grads(params, k)
        opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven                   # all checked
    _write_held(held, params, opt)
    opt.param_groups[0]["lr"] = 1e10
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    before = [p.numpy(copy=True) for p in params]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy(copy=True).tobytes() == b.tobytes()    # a copy: nothing handed out
               for p, b in zip(params, before, strict=True))
    del held
    opt.param_groups[0]["lr"] = 1e-3
    opt.state[id(params[0])]["momentum"][-1, 0] = 0.0           # a read, then nothing held
    for k in range(6, 9):
        _grads(params, k)
        opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven + 2 * 3            # checked once, then proven


def test_a_moment_array_that_views_someone_elses_memory_is_never_trusted():
    params, opt = _momentum_sgd_after_three_steps()
    big = np.zeros((2, 7, 5), np.float32)
    opt.state[id(params[0])]["momentum"] = big[0]                # its owner can write it
    proven = opt.update_bounds.proven
    for k in range(3, 6):
        _grads(params, k, 1e-30)
        opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven
    big[0, 0, 0] = F32_MAX / 2
    opt.param_groups[0]["lr"] = 1e10
    for p in params:
        p.grad = np.zeros(p.shape, np.float32)
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))


def test_fit_never_leaves_a_weight_inf_after_a_callback_writes_the_momentum_in_place():
    """End to end: a callback scales a momentum buffer in place between two steps proven
    finite; the next update would overflow, and fit stops with the last good weights."""
    from handgrad import nn
    rng = np.random.default_rng(0)
    X = rng.standard_normal((256, 4)).astype(np.float32)
    Y = (X[:, 0] > 0).astype(np.int64)
    model = nn.MLP([4, 8, 2], seed=0)
    opt = optim.SGD(model, lr=100.0, momentum=0.9)     # lr * momentum ~ 1e40 overflows float32

    class Meddle(nn.callbacks.Callback):
        def on_step_end(self, epoch, step, loss, scores, targets):
            if step == 5:
                assert opt.update_bounds.at_once > 0        # the steps so far were proven
                opt.state[id(opt.params[0])]["momentum"][0, 0] = F32_MAX / 2
                self.before = [p.numpy(copy=True) for p in opt.params]

    meddle = Meddle()
    with np.errstate(over="ignore", invalid="ignore"), \
            pytest.raises(nn.TrainingError, match="after the optimizer's update") as info:
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, batch_size=16,
               shuffle=False, verbose=0, callbacks=[meddle])
    assert info.value.step == 6
    for p, b in zip(opt.params, meddle.before, strict=True):
        assert p.numpy(copy=True).tobytes() == b.tobytes()


OUT_OF_RANGE = {     # a group changed after check_group saw it: each makes the update overflow
    "sgd, negative lr": (lambda ps: optim.SGD(ps, lr=1e-3, momentum=0.9), {"lr": -1e38}),
    "sgd, infinite lr": (lambda ps: optim.SGD(ps, lr=1e-3, momentum=0.9), {"lr": math.inf}),
    "sgd, negative momentum": (lambda ps: optim.SGD(ps, lr=1e-3, momentum=0.9), {"momentum": -1e38}),
    "sgd, dampening above 1": (lambda ps: optim.SGD(ps, lr=1e-3, momentum=0.9,
                                                    dampening=0.1), {"dampening": 1e39}),
    "sgd, negative decay": (lambda ps: optim.SGD(ps, lr=1e-3), {"weight_decay": -1e39}),
    "adam, negative lr": (lambda ps: optim.Adam(ps, lr=1e-3), {"lr": -1e39}),
    "adam, NaN decay": (lambda ps: optim.Adam(ps, lr=1e-3), {"weight_decay": math.nan}),
    "adamw, NaN decay": (lambda ps: optim.AdamW(ps, lr=1e-3), {"weight_decay": math.nan}),
}


@pytest.mark.parametrize("name", OUT_OF_RANGE)
def test_hyperparameters_changed_out_of_range_are_checked_not_proven(name):
    """The bounds are derived for check_group's ranges (lr >= 0, finite, ...); a group set
    outside them later (``group["lr"] = -1e38``) must send the update to the check."""
    make, change = OUT_OF_RANGE[name]
    params, opt = _train(make, 3, with_bounds=True)
    assert opt.update_bounds.proven > 0
    opt.param_groups[0].update(change)
    _grads(params, 3)
    params[0].grad[0, 0] = 0.0                      # inf * 0 for the infinite lr
    before = [p.numpy(copy=True) for p in params]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert all(p.numpy(copy=True).tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


CAST_OVERFLOW = {
    # Adam's step = lr / (1 - b1^t) is turned into float32 by the update: Inf for lr = 1e40
    # although step * m / denom is far below the limit (a huge eps makes the quotient tiny)
    "adam": (lambda ps: optim.Adam(ps, lr=1e-3, eps=1e10), 1e40),
    "adamw without decay": (lambda ps: optim.AdamW(ps, lr=1e-3, eps=1e10, weight_decay=0.0), 1e40),
    # with dampening 1 the buffer decays by mu: lr * buffer stays small, lr itself is Inf
    "sgd, dampening 1": (lambda ps: optim.SGD(ps, lr=1e-3, momentum=1e-4, dampening=1.0), 1e39),
}


@pytest.mark.parametrize("name", CAST_OVERFLOW)
def test_a_number_that_overflows_the_dtype_is_checked_not_proven(name):
    """The peak covers the numbers an update turns into the parameter's dtype: a learning
    rate (or Adam's lr / (1 - b1^t)) beyond float32's range raises NonFiniteUpdate, every
    weight as it was, even when the bound on the product it multiplies stays small."""
    make, lr = CAST_OVERFLOW[name]
    params, opt = _train(make, 5, with_bounds=True)
    assert opt.update_bounds.proven > 0
    opt.lr = lr
    _grads(params, 5)
    before = [p.numpy(copy=True) for p in params]
    proven = opt.update_bounds.proven
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        opt._step(gradient_bounds(params))
    assert opt.update_bounds.proven == proven
    assert all(p.numpy(copy=True).tobytes() == b.tobytes() for p, b in zip(params, before, strict=True))


def test_adam_in_a_step_with_a_learning_rate_beyond_float32_raises():
    """The reproducer: fit-like steps (nn.step.EagerStep, check_finite on) of a float32
    model with Adam, then lr = 1e40 (finite, accepted): NonFiniteUpdate, weights kept."""
    from handgrad import nn
    from handgrad.nn.step import EagerStep

    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(4, 3, rng=rng))
    opt = optim.Adam(model, lr=1e-3, eps=1e10)
    opt.check_finite = True
    step = EagerStep(model, nn.MSELoss(), opt)
    X = rng.standard_normal((8, 4)).astype(np.float32)
    Y = rng.standard_normal((8, 3)).astype(np.float32)
    for _ in range(5):
        step(X, Y)
    opt.param_groups[0]["lr"] = 1e40
    before = [p.numpy(copy=True) for p in model.parameters()]
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(optim.NonFiniteUpdate):
        step(X, Y)
    for p, b in zip(model.parameters(), before, strict=True):
        assert p.numpy(copy=True).tobytes() == b.tobytes()
