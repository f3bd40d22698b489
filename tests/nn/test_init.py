"""Weight initializers: shapes, the variances they promise, and reproducibility from a seed.

handgrad stores a Linear weight as (in_features, out_features), so for a weight of shape
(400, 300) fan_in = 400 and fan_out = 300 (PyTorch's (out, in) layout would swap them).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import init

FAN_IN, FAN_OUT = 400, 300
N = FAN_IN * FAN_OUT          # 120,000 samples


@pytest.mark.parametrize("name", sorted(init.INITIALIZERS))
@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 5)])
def test_every_initializer_returns_the_requested_shape(name, shape):
    out = init.INITIALIZERS[name](shape, np.random.default_rng(0))
    assert isinstance(out, np.ndarray) and out.shape == shape
    assert np.all(np.isfinite(out))
    # through initialize(), which layers use: float32 unless asked otherwise
    assert init.initialize(name, shape, np.random.default_rng(0)).dtype == np.float32
    assert init.initialize(name, shape, np.random.default_rng(0), np.float64).dtype == np.float64


def test_fan_based_initializers_need_two_dimensions():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        init.kaiming_normal((5,), np.random.default_rng(0))


def _sample(name):
    return init.INITIALIZERS[name]((FAN_IN, FAN_OUT), np.random.default_rng(1))


# Tolerances from the sample size n = 120,000 (a fixed seed makes each check deterministic;
# these say how far from the truth a correct implementation can land):
# - normal law: the sample std has a relative standard error sqrt(1 / (2n)) = 0.20%, so 1.5%
#   is ~7 standard errors;
# - uniform law on [-a, a]: Var(x^2) = 4a^4/45, the sample std has a relative standard error
#   (3/2) sqrt(4 / (45 n)) = 0.13%, so 1% is ~7.7 standard errors;
# - the sample mean has a standard error std / sqrt(n) = 0.0029 std: bound it by 0.015 std.
# The alternatives these catch are far away: swapping fan_in and fan_out changes the std of
# kaiming by 15%; kaiming vs xavier differ by 32%; a uniform law on [-std, std] has 42% less std.
NORMAL_RTOL, UNIFORM_RTOL, MEAN_TOL = 0.015, 0.01, 0.015

KAIMING_STD = math.sqrt(2 / FAN_IN)
XAVIER_STD = math.sqrt(2 / (FAN_IN + FAN_OUT))


@pytest.mark.parametrize("name,std", [
    ("kaiming_normal", KAIMING_STD), ("he", KAIMING_STD), ("kaiming", KAIMING_STD),
    ("xavier_normal", XAVIER_STD), ("xavier", XAVIER_STD), ("glorot", XAVIER_STD),
    ("small_normal", 0.1), ("normal", 0.1),
])
def test_normal_initializers_have_the_promised_std(name, std):
    w = _sample(name)
    assert w.dtype == np.float64
    assert abs(w.mean()) < MEAN_TOL * std
    assert w.std() == pytest.approx(std, rel=NORMAL_RTOL)
    # normal, not uniform: about 4.55% of the draws lie beyond 2 std (standard error 0.06%)
    assert np.mean(np.abs(w) > 2 * std) == pytest.approx(0.0455, abs=0.003)


@pytest.mark.parametrize("name,std", [
    ("kaiming_uniform", KAIMING_STD), ("he_uniform", KAIMING_STD),
    ("xavier_uniform", XAVIER_STD), ("glorot_uniform", XAVIER_STD),
])
def test_uniform_initializers_have_the_right_bounds_and_variance(name, std):
    """U(-a, a) has variance a^2 / 3, so the bound for a given std is a = sqrt(3) std:
    sqrt(6 / fan_in) for kaiming, sqrt(6 / (fan_in + fan_out)) for xavier."""
    bound = math.sqrt(3) * std
    w = _sample(name)
    assert w.dtype == np.float64
    assert np.all(np.abs(w) <= bound)
    # the bounds are reached: P(all 120,000 draws inside 0.99 a) = 0.99^120000, about e^-1200
    assert w.max() > 0.99 * bound and w.min() < -0.99 * bound
    assert abs(w.mean()) < MEAN_TOL * std
    assert w.std() == pytest.approx(std, rel=UNIFORM_RTOL)
    # uniform, not normal: the fraction below a / 2 in absolute value is 1/2
    assert np.mean(np.abs(w) < bound / 2) == pytest.approx(0.5, abs=0.01)


def test_gain_scales_the_std():
    rng = np.random.default_rng(1)
    w = init.kaiming_normal((FAN_IN, FAN_OUT), rng, gain=1.0)      # LeCun normal
    assert w.std() == pytest.approx(math.sqrt(1 / FAN_IN), rel=NORMAL_RTOL)


def test_zeros_and_ones():
    np.testing.assert_array_equal(init.zeros((2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(init.ones((2, 3), np.random.default_rng(0)), np.ones((2, 3)))


# --- reproducibility -------------------------------------------------------------------------

RANDOM = sorted(name for name in init.INITIALIZERS if name not in ("zeros", "ones"))


@pytest.mark.parametrize("name", RANDOM)
def test_same_seed_same_weights_bit_for_bit(name):
    fn = init.INITIALIZERS[name]
    a = fn((6, 5), np.random.default_rng(42))
    b = fn((6, 5), np.random.default_rng(42))
    c = fn((6, 5), np.random.default_rng(43))
    np.testing.assert_array_equal(a, b)
    assert not np.any(a == c)


def test_mlp_seed_reproduces_the_state_dict():
    sizes = [4, 8, 8, 3]
    a = nn.MLP(sizes, seed=7).state_dict()
    b = nn.MLP(sizes, seed=7).state_dict()
    c = nn.MLP(sizes, seed=8).state_dict()
    assert list(a) == list(b) == list(c) == [
        "layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
        "layers.4.weight", "layers.4.bias"]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert a[key].dtype == b[key].dtype == np.float32
        if key.endswith("weight"):
            assert not np.array_equal(a[key], c[key]), key
        else:
            np.testing.assert_array_equal(a[key], 0)


def test_manual_seed_resets_the_default_generator(monkeypatch):
    # a generator of this test's own (manual_seed reseeds it in place), the other tests'
    # put back once it is done
    monkeypatch.setattr(init, "_default_rng", np.random.default_rng())
    init.manual_seed(5)
    first = [nn.Linear(4, 3).weight.data for _ in range(2)]
    init.manual_seed(5)
    again = [nn.Linear(4, 3).weight.data for _ in range(2)]
    init.manual_seed(6)
    other = nn.Linear(4, 3).weight.data
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1])       # the generator advances between layers
    assert not np.array_equal(first[0], other)
    # the default generator is the one a seeded generator would be
    np.testing.assert_array_equal(
        first[0], init.kaiming_normal((4, 3), np.random.default_rng(5)).astype(np.float32))


def test_linear_uses_the_given_generator():
    lin = nn.Linear(5, 4, init="xavier_uniform", rng=np.random.default_rng(3))
    expected = init.xavier_uniform((5, 4), np.random.default_rng(3)).astype(np.float32)
    np.testing.assert_array_equal(lin.weight.data, expected)


# --- names, callables, dtypes ----------------------------------------------------------------

def test_unknown_initializer_lists_the_choices():
    with pytest.raises(ValueError, match="unknown initializer 'bogus'") as info:
        init.get("bogus")
    for name in init.INITIALIZERS:
        assert repr(name) in str(info.value)
    with pytest.raises(ValueError, match="unknown initializer 'kaiming_normall'"):
        nn.Linear(3, 2, init="kaiming_normall")


def test_linear_accepts_an_initializer_callable():
    calls = []

    def my_init(shape, rng):
        calls.append((shape, rng))
        return np.arange(np.prod(shape), dtype=np.float64).reshape(shape)

    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2, init=my_init, rng=rng)
    assert calls == [((3, 2), rng)]
    np.testing.assert_array_equal(lin.weight.data, np.arange(6).reshape(3, 2))
    assert lin.weight.dtype == np.float32
    assert init.get(my_init) is my_init


def test_initializer_returning_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"returned shape \(2, 3\), expected \(3, 2\)"):
        nn.Linear(3, 2, init=lambda shape, rng: np.zeros((2, 3)))


def test_linear_defaults_float32_weights_and_zero_biases():
    lin = nn.Linear(6, 4)
    assert lin.weight.shape == (6, 4) and lin.bias.shape == (4,)
    assert lin.weight.dtype == np.float32 and lin.bias.dtype == np.float32
    np.testing.assert_array_equal(lin.bias.data, np.zeros(4))
    assert np.any(lin.weight.data != 0)
    lin64 = nn.Linear(6, 4, dtype=np.float64)
    assert lin64.weight.dtype == np.float64 and lin64.bias.dtype == np.float64
    np.testing.assert_array_equal(lin64.bias.data, np.zeros(4))


def test_manual_seed_makes_dropout_masks_repeat_in_layers_built_before(monkeypatch):
    """As torch.manual_seed: the generator is reseeded in place, so a Dropout built earlier
    without an rng draws the same masks after the same seed (it kept the generator that
    manual_seed used to replace)."""
    monkeypatch.setattr(init, "_default_rng", np.random.default_rng())
    drop = nn.Dropout(0.5)
    x = engine.Tensor(np.ones((4, 6)))
    init.manual_seed(0)
    first = drop(x).numpy(copy=True)
    init.manual_seed(0)
    np.testing.assert_array_equal(drop(x).numpy(copy=True), first)


def test_mlp_refuses_options_that_would_be_ignored():
    with pytest.raises(ValueError, match="give seed or rng, not both"):
        nn.MLP([4, 3, 2], seed=1, rng=np.random.default_rng(2))
    with pytest.raises(ValueError, match=r"dropout=0.9 applies after hidden layers, and sizes "
                                         r"\[50, 10\] have none"):
        nn.MLP([50, 10], dropout=0.9)
