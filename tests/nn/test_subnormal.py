"""nn/subnormal.py: the momentum update with subnormal values computed apart gives exactly
the bits of the optimizer's own plain kernels (nn.optim.HEAVY_BALL.plain, ADAM.plain),
whichever positions are listed; the optimizers reach it through one dispatch
(``Optimizer.run_kernel``) that ``exact_subnormals=False`` turns off."""
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import nn
from handgrad.nn import subnormal

TINY = np.finfo(np.float32).tiny          # 2^-126, the smallest normal float32


def bits(a):
    return a.view(np.uint32)


def plain(w, buf, g, mu, lr):
    """The reference: what SGD with momentum wrote before, three numpy lines."""
    buf *= mu
    buf += g
    w -= lr * buf


# float32 values from every range that matters: zeros of both signs, subnormals (exponent
# field 0), the edge 2^-126, small and ordinary normals; no overflow within one update.
_subnormal_bits = st.integers(1, 0x007FFFFF)
_value = st.one_of(
    st.sampled_from([0.0, -0.0, float(TINY), -float(TINY), 1e-45, -1e-45]),
    st.builds(lambda m, neg: np.uint32(m | (0x80000000 if neg else 0)).view(np.float32).item(),
              _subnormal_bits, st.booleans()),
    st.floats(-2.0 ** -100, 2.0 ** -100, allow_subnormal=False, width=32),
    st.floats(-1024.0, 1024.0, allow_subnormal=False, width=32),
)


@st.composite
def updates(draw):
    n = draw(st.integers(1, 40))
    arrays = [np.array(draw(st.lists(_value, min_size=n, max_size=n)), dtype=np.float32)
              for _ in range(3)]
    zero_g = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    arrays[2][np.array(zero_g)] = 0.0      # dead units: the gradient is exactly 0
    positions = np.array(sorted(draw(st.sets(st.integers(0, n - 1)))), dtype=np.intp)
    mu = draw(st.floats(0.0, 0.999))
    lr = draw(st.one_of(st.floats(0.0, 10.0), st.sampled_from([0.05, 1, 3])))
    return (*arrays, mu, lr, positions)


@settings(deadline=None)
@given(updates())
def test_the_update_has_the_bits_of_the_plain_lines_for_any_positions(case):
    w, buf, g, mu, lr, positions = case
    kernel = nn.optim.HEAVY_BALL                 # what SGD and RMSprop run
    w1, b1 = w.copy(), buf.copy()
    kernel.plain(w1, b1, g, mu, lr)
    w2, b2 = w.copy(), buf.copy()
    kernel.exact(w2, b2, g, mu, lr, positions)
    assert np.array_equal(bits(b1), bits(b2)), (buf, g, mu, positions)
    assert np.array_equal(bits(w1), bits(w2)), (w, buf, g, mu, lr, positions)


def test_the_scan_finds_the_subnormals_and_nothing_else():
    a = np.array([0.0, -0.0, 1e-45, -1e-45, TINY, -TINY, np.nextafter(TINY, 0), 1.0, -3e-39,
                  np.inf, -np.inf], dtype=np.float32).reshape(11, 1)
    assert subnormal.subnormal_positions(a).tolist() == [2, 3, 6, 8]
    rng = np.random.default_rng(0)
    b = (rng.standard_normal(10_000) * 10.0 ** rng.integers(-45, 3, 10_000)).astype(np.float32)
    expected = np.flatnonzero((np.abs(b) < TINY) & (b != 0))
    assert expected.size > 100
    assert np.array_equal(subnormal.subnormal_positions(b), expected)


def test_hints_rescan_every_few_updates_and_follow_a_replaced_buffer():
    hints = subnormal.Hints(every=3)
    buf = np.array([1e-40, 1.0, 0.0], dtype=np.float32)
    assert [hints.positions(buf).tolist() for _ in range(4)] == [[], [], [0], [0]]
    other = buf.copy()
    assert hints.positions(other).tolist() == []          # a new buffer starts over
    wide = np.array([1e-40, 1e-310], dtype=np.float64)    # only float32 is scanned
    assert [hints.positions(wide).tolist() for _ in range(4)] == [[], [], [], []]


def test_sgd_with_dead_units_trains_exactly_like_the_plain_update_and_uses_the_hints(monkeypatch):
    """Half the units never get a gradient: their momentum decays into subnormals, the
    optimizer finds them, and the weights stay bit for bit those of the plain loop."""
    monkeypatch.setattr(subnormal, "slow_here", lambda: True)     # the path under test
    rng = np.random.default_rng(0)
    p = nn.Parameter(rng.standard_normal((20, 8)).astype(np.float32))
    opt = nn.optim.SGD([p], lr=0.05, momentum=0.9, weight_decay=0.0)
    w_ref = p.data.copy()
    buf_ref = None
    for step in range(1200):
        g = (rng.standard_normal((20, 8)) * 1e-2).astype(np.float32)
        g[:, 4:] = 0.0 if step > 5 else g[:, 4:]          # units 4..7 die after 6 steps
        p.grad = g.copy()
        opt.step()
        if buf_ref is None:
            buf_ref = g.copy()
        else:
            buf_ref *= 0.9
            buf_ref += g
        w_ref -= 0.05 * buf_ref
    buf = opt.state[id(p)]["momentum"]
    assert np.array_equal(bits(buf), bits(buf_ref)) and np.array_equal(bits(p.data), bits(w_ref))
    dead = subnormal.subnormal_positions(buf)
    assert dead.size == 80                                  # every dead unit is subnormal
    assert np.array_equal(opt.subnormal_hints.positions(buf), dead)


def test_other_momentum_forms_and_dtypes_keep_the_general_update():
    for kw, dtype in [(dict(nesterov=True), np.float32), (dict(dampening=0.5), np.float32),
                      ({}, np.float64)]:
        p = nn.Parameter(np.full((3,), 1.0, dtype))
        opt = nn.optim.SGD([p], lr=0.1, momentum=0.9, **kw)
        w = p.data.copy()
        buf = None
        for _ in range(3):
            g = np.full((3,), 0.5, dtype)
            p.grad = g.copy()
            opt.step()
            if buf is None:
                buf = g.copy()
            else:
                buf = 0.9 * buf + (1 - kw.get("dampening", 0)) * g
            w = w - 0.1 * ((g + 0.9 * buf) if kw.get("nesterov") else buf)
        np.testing.assert_allclose(p.data, w, rtol=1e-6)
    z = np.zeros(2, np.float32)
    assert subnormal.applies((z, z, z), (0.9, 0.1))
    assert not subnormal.applies((z, z, z), (np.float64(0.9), 0.1))
    assert not subnormal.applies((z, z, z.astype(np.float64)), (0.9, 0.1))
    square = np.zeros((2, 2), np.float32)
    assert not subnormal.applies((square.T, square, square), (0.9, 0.1))


def plain_adam(w, m, v, g, b1, b2, step, bias2, eps):
    """The reference: Adam's lines as the optimizer wrote them before."""
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    denom = np.sqrt(v / bias2)
    denom += eps
    w -= step * (m / denom)


@settings(deadline=None)
@given(updates(), st.floats(0.0, 0.999), st.floats(0.5, 0.9999), st.integers(1, 50),
       st.sampled_from([1e-8, 1e-3, 1.0]))
def test_adam_has_the_bits_of_the_plain_lines_for_any_positions(case, b1, b2, t, eps):
    w, m, g, mu, lr, positions = case
    v = np.abs(m[::-1]).copy()                 # second moments are >= 0
    step, bias2 = lr / (1 - b1 ** t), 1 - b2 ** t
    kernel = nn.optim.ADAM                       # what Adam and AdamW run
    expected = [w.copy(), m.copy(), v.copy()]
    kernel.plain(*expected, g, b1, b2, step, bias2, eps)
    got = [w.copy(), m.copy(), v.copy()]
    kernel.exact(*got, g, b1, b2, step, bias2, eps, positions)
    for name, a, b in zip("wmv", expected, got):
        assert np.array_equal(bits(a), bits(b)), (name, w, m, v, g, positions)


def test_adam_with_dead_units_trains_exactly_like_the_plain_update_and_uses_the_hints(monkeypatch):
    monkeypatch.setattr(subnormal, "slow_here", lambda: True)     # the path under test
    rng = np.random.default_rng(1)
    for cls in (nn.optim.Adam, nn.optim.AdamW):
        p = nn.Parameter(rng.standard_normal((16, 8)).astype(np.float32))
        opt = cls([p], lr=1e-3)
        wd = opt.param_groups[0]["weight_decay"]
        w_ref, m_ref, v_ref = p.data.copy(), np.zeros_like(p.data), np.zeros_like(p.data)
        for t in range(1, 1001):
            g = (rng.standard_normal((16, 8)) * 1e-2).astype(np.float32)
            if t > 5:
                g[:, 4:] = 0.0                                  # units 4..7 die
            p.grad = g.copy()
            opt.step()
            if cls is nn.optim.AdamW:
                w_ref *= 1 - 1e-3 * wd
            plain_adam(w_ref, m_ref, v_ref, g, 0.9, 0.999, 1e-3 / (1 - 0.9 ** t),
                       1 - 0.999 ** t, 1e-8)
        state = opt.state[id(p)]
        assert np.array_equal(bits(p.data), bits(w_ref)), cls.__name__
        assert np.array_equal(bits(state["m"]), bits(m_ref)) and np.array_equal(bits(state["v"]), bits(v_ref))
        dead = subnormal.subnormal_positions(state["m"])
        assert dead.size == 64
        assert np.array_equal(opt.subnormal_hints.positions(state["m"]), dead)


def test_the_optimizers_own_kernels_are_the_textbook_lines():
    """The plain kernels the property tests compare with are the update rules themselves."""
    rng = np.random.default_rng(3)
    w, buf, g = (rng.standard_normal(7).astype(np.float32) for _ in range(3))
    expected = [w.copy(), buf.copy()]
    plain(*expected, g, 0.9, 0.1)
    got = [w.copy(), buf.copy()]
    nn.optim.HEAVY_BALL.plain(*got, g, 0.9, 0.1)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(expected, got, strict=True))
    v = np.abs(buf).copy()
    expected = [w.copy(), buf.copy(), v.copy()]
    plain_adam(*expected, g, 0.9, 0.999, 0.01, 0.5, 1e-8)
    got = [w.copy(), buf.copy(), v.copy()]
    nn.optim.ADAM.plain(*got, g, 0.9, 0.999, 0.01, 0.5, 1e-8)
    assert all(np.array_equal(bits(a), bits(b)) for a, b in zip(expected, got, strict=True))


def _dead_unit_run(make, steps=1000):
    """Train one parameter whose last columns stop getting gradient; count the calls of the
    subnormal-exact kernels."""
    rng = np.random.default_rng(2)
    p = nn.Parameter(rng.standard_normal((8, 8)).astype(np.float32))
    opt = make([p])
    calls = []
    for kernel in (nn.optim.HEAVY_BALL, nn.optim.ADAM):
        object.__setattr__(kernel, "exact", _counting(kernel.exact, calls))
    try:
        for t in range(steps):
            g = (rng.standard_normal((8, 8)) * 1e-2).astype(np.float32)
            if t > 3:
                g[:, 4:] = 0.0
            p.grad = g
            opt.step()
    finally:
        object.__setattr__(nn.optim.HEAVY_BALL, "exact", subnormal.heavy_ball)
        object.__setattr__(nn.optim.ADAM, "exact", subnormal.adam)
    return p.data.copy(), len(calls)


def _counting(fn, calls):
    def counted(*args):
        calls.append(1)
        return fn(*args)
    return counted


@pytest.mark.parametrize("make", [
    lambda ps, **kw: nn.optim.SGD(ps, lr=0.1, momentum=0.9, **kw),
    lambda ps, **kw: nn.optim.Adam(ps, lr=1e-3, **kw),
    lambda ps, **kw: nn.optim.AdamW(ps, lr=1e-3, **kw),
    lambda ps, **kw: nn.optim.RMSprop(ps, lr=1e-3, momentum=0.9, **kw),
], ids=["SGD", "Adam", "AdamW", "RMSprop"])
def test_every_optimizer_with_a_moment_shares_the_dispatch_and_the_flag_turns_it_off(make, monkeypatch):
    monkeypatch.setattr(subnormal, "slow_here", lambda: True)     # as on an Intel CPU
    fast, fast_calls = _dead_unit_run(lambda ps: make(ps))
    slow, slow_calls = _dead_unit_run(lambda ps: make(ps, exact_subnormals=False))
    assert fast_calls > 0 and slow_calls == 0
    assert np.array_equal(bits(fast), bits(slow))        # the same numbers either way


def test_exact_subnormals_must_be_a_bool():
    p = nn.Parameter(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="SGD: exact_subnormals must be True or False, got 1"):
        nn.optim.SGD([p], exact_subnormals=1)


def test_where_subnormals_are_fast_the_plain_lines_run(monkeypatch):
    monkeypatch.setattr(subnormal, "slow_here", lambda: False)    # as on this AMD EPYC
    _, calls = _dead_unit_run(lambda ps: nn.optim.SGD(ps, lr=0.1, momentum=0.9))
    assert calls == 0


def test_the_probe_answers_once_and_quickly():
    subnormal.slow_here.cache_clear()
    start = time.perf_counter()
    answer = subnormal.slow_here()
    assert isinstance(answer, bool) and time.perf_counter() - start < 1.0
    assert subnormal.slow_here() is answer
