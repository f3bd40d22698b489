"""Samples that see realistic bugs (issue 22): the property suite runs on generic samples
(every entry drawn on its own, all distinct) in at least half of each property's examples,
and each realistic bug below, which passed the suite before, is now caught by ``check_op``
with the op's own spec (or, for a user's op, a spec written from the default strategies).

Also the bug those samples hid: forward mode through ``pow`` with a negative base and a
constant exponent returned NaN (0 * log(a) for the exponent's term)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.ops.activation import LeakyReLU, Tanh
from handgrad.engine.ops.elementwise import Clip, Pow
from handgrad.engine.ops.loss import SoftmaxCrossEntropy
from handgrad.engine.ops.reduce import Sum
from handgrad.engine.testing import SPECS, OpCheckError, OpSpec, check_op, numpy_rule, run_op, unary
from handgrad.engine.testing import strategies as strategies
from handgrad.engine.testing.properties import memory_layout_changes_nothing


def caught(op, spec, match, max_examples=40):
    """check_op fails ``op`` against ``spec`` (a name: the registered spec) with ``match``."""
    spec = SPECS[spec] if isinstance(spec, str) else spec
    with pytest.raises(OpCheckError, match="(?s)" + match) as info:
        check_op(op, spec=spec, max_examples=max_examples)
    return str(info.value)


# --- forward mode through pow at a negative base --------------------------------------------

NEGATIVE = np.array([-2.0, 3.0])
EXPONENT = np.array([3.0, 2.0])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_pow_jvp_with_a_negative_base_and_a_constant_exponent_is_finite(dtype):
    a = NEGATIVE.astype(dtype)
    _, tangent = engine.jvp(lambda x: engine.pow(x, EXPONENT.astype(dtype)), (a,),
                            (np.ones(2, dtype=dtype),))
    leaf = engine.Tensor(a, requires_grad=True)
    engine.pow(leaf, EXPONENT.astype(dtype)).sum().backward()
    np.testing.assert_array_equal(tangent, [12.0, 6.0])
    np.testing.assert_array_equal(leaf.grad, [12.0, 6.0])      # both modes agree
    assert tangent.dtype == dtype


def test_pow_jvp_drops_only_the_terms_whose_tangent_is_zero():
    """Where the exponent moves at a negative base, d/db is undefined (NaN) in both modes;
    where it does not, the base's term stands alone."""
    _, tangent = engine.jvp(engine.pow, (NEGATIVE, EXPONENT), (np.ones(2), np.array([1.0, 0.0])))
    base, exponent = engine.Tensor(NEGATIVE, requires_grad=True), engine.Tensor(EXPONENT, requires_grad=True)
    engine.pow(base, exponent).sum().backward()
    assert np.isnan(tangent[0]) and np.isnan(exponent.grad[0])   # (-2)^b: not real off integers
    assert tangent[1] == 6.0
    np.testing.assert_array_equal(base.grad, [12.0, 6.0])


class NaNJvpPow(Pow):
    """The JVP before the fix: ta * d/da + tb * d/db, 0 * NaN for a constant exponent."""

    def jvp(self, ctx, ta, tb):
        da, db = self.partials(ctx)
        return np.broadcast_to(ta * da + tb * db, np.broadcast_shapes(ta.shape, tb.shape))


class AbsPow(Pow):
    """d/da with |a| "to silence the warnings": wrong sign wherever a^(b-1) < 0."""

    def partials(self, ctx):
        a, b, out = ctx.saved
        d_a, db = super().partials(ctx)
        with np.errstate(divide="ignore", invalid="ignore"):   # 0^-1 where b == 0, a == 0
            wrong = b * np.abs(a) ** (b - 1)
        return np.where(b == 0, d_a, wrong), db      # only the |a| bug, not a^0's kink


@pytest.mark.parametrize("op, match", [
    (NaNJvpPow(), "jvp_matches_finite_differences"),
    (AbsPow(), "vjp_matches_finite_differences"),
], ids=["jvp NaN at a negative base", "|a| in d/da"])
def test_pow_at_negative_bases_with_integer_exponents_is_checked(op, match):
    caught(op, "pow", match)


# --- the samples are generic in at least half of each property's examples -------------------

def _generic(sample, nondiff=()):
    """Every differentiable float input has all entries distinct (targets, labels and
    masks, ``nondiff``, repeat values by nature: the 0s of one-hot rows)."""
    args, _ = sample
    floats = [np.asarray(a) for i, a in enumerate(args)
              if np.asarray(a).dtype.kind == "f" and i not in nondiff]
    return all(np.unique(a).size == a.size for a in floats)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_at_least_half_of_each_specs_samples_are_generic(name):
    """Drawn as the suite draws them (a sample and a seed, 25 derandomized examples)."""
    found = []

    @settings(max_examples=25, derandomize=True, database=None, phases=[Phase.generate],
              deadline=None)
    @given(data=st.data(), seed=st.integers(0, 2**31 - 1))
    def draw(data, seed):
        found.append(_generic(data.draw(SPECS[name].sample), engine.REGISTRY[name].nondiff))

    draw()
    assert sum(found) >= len(found) / 2, f"{name}: {sum(found)} of {len(found)} samples generic"


def test_values_draws_structured_arrays_too():
    """Repeated entries (a constant array among them) still come up, by construction."""
    kinds = []

    @settings(max_examples=100, derandomize=True, database=None, phases=[Phase.generate])
    @given(strategies.values((4, 3)))
    def draw(x):
        kinds.append(np.unique(x).size)

    draw()
    assert 1 in kinds and any(1 < k < 12 for k in kinds) and kinds.count(12) >= 50


def test_the_constants_hypothesis_finds_in_loaded_code_do_not_tip_the_share():
    """hypothesis favours small integers and the integer constants of the code a run has
    imported (round numbers: 10, 100, 1000, ...): they must pick generic arrays, or a full
    test run draws fewer generic samples than a file run alone (46 of 100 once, when every
    multiple of 10 picked a structured array). 0, where shrinking ends, picks structured."""
    favoured = [*range(1, 100), 128, 200, 255, 256, 500, 512, 1000, 1024, 2048, 4096, 9999]
    assert not any(strategies._is_structured(c) for c in favoured)
    assert strategies._is_structured(0)
    share = sum(strategies._is_structured(c) for c in range(10000)) / 10000
    assert 0.04 < share < 0.06                  # 1 in 20, nominally


@pytest.mark.parametrize("lo, hi, avoid, margin", [(-3.0, 3.0, (), 0.1), (0.2, 3.0, (), 0.1),
                                                  (-3.0, 3.0, (0.0,), 0.3),
                                                  (-3.0, 3.0, (-1.0, 1.0), 0.1)])
def test_generic_arrays_keep_the_domain_and_their_spacing(lo, hi, avoid, margin):
    @settings(max_examples=30, derandomize=True, database=None)
    @given(st.sampled_from([(), (1,), (3,), (4, 4), (4, 4, 4)]).flatmap(
        lambda shape: strategies.generic(shape, lo, hi, avoid, margin)))
    def check(x):
        assert np.all((x >= lo) & (x <= hi))
        for k in avoid:
            assert np.all(np.abs(x - k) >= margin)
        gaps = np.diff(np.sort(x.ravel()))
        assert gaps.size == 0 or gaps.min() >= min(strategies.MAX_SPACING, 0.2 / x.size) * 0.999

    check()


# --- a user's batch norm with a dropped factor, checked from the default strategies ---------

class BatchNorm(engine.Op):
    """batch_norm(x, gamma, beta) over axis 0 (a user's op, CS231n style)."""

    name = "planted_batch_norm"
    rule = "dx = gamma / (N std) (N g - sum g - xhat sum(g xhat))"
    EPS = 1e-5

    def forward(self, ctx, x, gamma, beta):
        mu = x.mean(axis=0)
        inv = 1 / np.sqrt(x.var(axis=0) + self.EPS)
        xhat = (x - mu) * inv
        ctx.save(xhat, inv, gamma)
        return gamma * xhat + beta

    def dxhat_terms(self, g, gamma):
        """What multiplies xhat in the last term (g * gamma)."""
        return g * gamma

    def backward(self, ctx, g):
        xhat, inv, gamma = ctx.saved
        n = xhat.shape[0]
        dxhat = g * gamma
        dx = inv / n * (n * dxhat - dxhat.sum(axis=0)
                        - xhat * (self.dxhat_terms(g, gamma) * xhat).sum(axis=0))
        return dx, (g * xhat).sum(axis=0), g.sum(axis=0)

    def jvp(self, ctx, dx, dgamma, dbeta):
        xhat, inv, gamma = ctx.saved
        dxc = dx - dx.mean(axis=0)
        dxhat = inv * (dxc - xhat * (xhat * dxc).mean(axis=0))
        return gamma * dxhat + dgamma * xhat + dbeta


class ForgottenGammaBatchNorm(BatchNorm):
    """The last term uses g instead of g * gamma: it vanishes where a column is constant."""

    def dxhat_terms(self, g, gamma):
        return g


def _batch_norm_reference(x, gamma, beta):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + BatchNorm.EPS) + beta


@st.composite
def _batch_norm_sample(draw):
    """Written as a user would, from the default strategies."""
    n, c = draw(st.integers(2, 4)), draw(st.integers(1, 4))
    reals = engine.testing.strategies.reals
    return (draw(reals((n, c))), draw(reals((c,))), draw(reals((c,)))), {}


BATCH_NORM = OpSpec("planted_batch_norm", _batch_norm_sample(), _batch_norm_reference,
                    accurate_to=None, why="a user's spec: the VJP property is what matters")


def test_a_correct_batch_norm_passes_its_spec():
    assert check_op(BatchNorm(), spec=BATCH_NORM)


def test_batch_norm_with_g_for_g_gamma_in_its_last_term_fails_the_vjp_property():
    caught(ForgottenGammaBatchNorm(), BATCH_NORM, "property vjp_matches_finite_differences")


# --- the survivors of the mutation testing of the built-in ops ------------------------------

class InPlaceSmoothingSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """Label smoothing applied in place to the caller's probability targets."""

    def forward(self, ctx, z, y, *, reduction="mean", label_smoothing=0.0):
        if y.dtype.kind == "f" and label_smoothing:
            y *= 1 - label_smoothing
            y += label_smoothing / z.shape[-1]
            return super().forward(ctx, z, y, reduction=reduction)
        return super().forward(ctx, z, y, reduction=reduction, label_smoothing=label_smoothing)


class FalsyAxisSum(Sum):
    """``if not axis``: axis=() (numpy's no-op reduction) taken for axis=None."""

    def check(self, x, *, axis=None, keepdims=False):
        params = super().check(x, axis=axis, keepdims=keepdims)
        return {**params, "axis": None if not axis else params["axis"]}


class OneSidedClip(Clip):
    """max only: a separate path with a strict mask at the bound."""

    def derivative(self, ctx):
        (x,) = ctx.saved
        if ctx.params["min"] is None:
            return (x < ctx.params["max"]).astype(x.dtype)
        return super().derivative(ctx)


class SelfSlopeLeakyReLU(LeakyReLU):
    """The forward keeps the slope on the op object; the rule reads it from there (ops are
    singletons: the last call's slope wins)."""

    def forward(self, ctx, x, *, negative_slope=0.01):
        self.slope = negative_slope
        return super().forward(ctx, x, negative_slope=negative_slope)

    def derivative(self, ctx):
        (positive,) = ctx.saved
        dtype = ctx.inputs[0].dtype
        return np.where(positive, np.ones((), dtype), np.asarray(self.slope, dtype))


class FlatSavedSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """The shipped bug: the delta p - y made by writing through ``p.reshape(-1, C)`` and
    saving ``p``, which the reshape copied for logits not in C order (a transposed
    (T, N, C) tensor): backward got p alone."""

    def forward(self, ctx, z, y, *, reduction="mean", label_smoothing=0.0):
        if y.dtype.kind not in "iu" or label_smoothing or z.ndim < 2:
            return super().forward(ctx, z, y, reduction=reduction, label_smoothing=label_smoothing)
        shifted = z - z.max(axis=-1, keepdims=True)
        p = np.exp(shifted)
        norm = p.sum(axis=-1, keepdims=True)
        p /= norm
        rows, C = np.arange(y.size), z.shape[-1]
        per_row = np.log(norm).reshape(-1) - shifted.reshape(-1, C)[rows, y.reshape(-1)]
        p.reshape(-1, C)[rows, y.reshape(-1)] -= 1
        ctx.save(p, per_row.size)
        return per_row.mean() if reduction == "mean" else per_row.sum() \
            if reduction == "sum" else per_row.reshape(y.shape)


def test_a_delta_written_through_a_reshape_that_copied_fails_the_layout_property():
    """On (T, N, C) logits with integer labels: the shipped op's bug fails the property,
    the fixed op passes it. (A sample, not a search: which samples a search draws varies
    with hypothesis's version, and this one needs two leading axes longer than 1.)"""
    rng = np.random.default_rng(0)
    sample = ((rng.standard_normal((3, 2, 4)), rng.integers(0, 4, (3, 2))),
              {"reduction": "mean", "label_smoothing": 0.0})
    spec = SPECS["softmax_cross_entropy"]
    with pytest.raises(AssertionError, match="changes with the inputs' memory layout"):
        memory_layout_changes_nothing(FlatSavedSoftmaxCrossEntropy(), spec, sample)
    assert memory_layout_changes_nothing(engine.REGISTRY["softmax_cross_entropy"], spec,
                                         sample) is not None


class SelfSavedTanh(Tanh):
    """The forward keeps tanh(x) on the op object, not the node (``self.t``, as a torch
    Function's class attribute or a numpy rule's module-level cache): right for one call,
    wrong for tanh(tanh(x)). An op without parameters: the re-entrancy property ran only
    for calls with different parameters, so every checker passed it."""

    def forward(self, ctx, x):
        self.t = super().forward(ctx, x)
        return self.t

    def derivative(self, ctx):
        return 1 - self.t * self.t


class UnplacedAxesSum(Sum):
    """The gradient broadcast back without the reduced axes put in place (keepdims=False):
    right when the reduced axes lead, as numpy aligns trailing axes. The reduction samples
    showed it in 7% of draws: check_op passed it with 50 examples."""

    def backward(self, ctx, grad):
        return (np.broadcast_to(grad, ctx.inputs[0].shape).copy(),)


class InputReadingTanh(Tanh):
    """The backward reads the input's values from ``ctx.inputs`` instead of saving them:
    eagerly a write to x after the forward went unnoticed, and a replayed plan crashed
    (its context holds shapes alone). Every other property passed it."""

    def forward(self, ctx, x):
        return np.tanh(x)

    def derivative(self, ctx):
        return 1 - np.tanh(ctx.inputs[0].data) ** 2


class CheckKeptSlopeLeakyReLU(LeakyReLU):
    """``check`` leaves the slope on the op object for the forward: right in every eager
    call (check runs just before), wrong in a replayed plan (no check, another call's
    slope), which gave a silently wrong loss and gradient."""

    def check(self, x, *, negative_slope=0.01):
        self.slope = negative_slope
        return super().check(x, negative_slope=negative_slope)

    def forward(self, ctx, x, *, negative_slope=0.01):
        return super().forward(ctx, x, negative_slope=self.slope)


@pytest.mark.parametrize("op, spec, match", [
    (UnplacedAxesSum(), "sum", "vjp_matches_finite_differences"),
    (InputReadingTanh(), dataclasses.replace(SPECS["tanh"], complex_step=False),
     "rules_run_as_a_plan_runs_them.*never from ctx.inputs"),
    (CheckKeptSlopeLeakyReLU(), "leaky_relu",
     "rules_run_as_a_plan_runs_them.*the forward gives another value"),
], ids=["reduced axes not put back", "input values read from ctx.inputs",
        "a setting check kept on the op"])
def test_a_bug_of_a_users_op_found_by_a_hunt_is_caught_with_check_ops_defaults(op, spec, match):
    caught(op, spec, match, max_examples=25)


class OffByAFactorTanh(Tanh):
    """A constant typed wrong: every rule 1.001 times the right one."""

    def derivative(self, ctx):
        return 1.001 * super().derivative(ctx)


def test_a_complex_step_failure_reports_the_error_it_measured():
    """handgrad check showed ``complex inf`` for it (its tolerance was fixed, and the
    failure's error is measured with the tolerances lifted): inf is for a failure that
    measures nothing, such as a crash."""
    found = run_op(OffByAFactorTanh(), SPECS["tanh"], max_examples=10)
    assert found.failure is not None
    assert 1e-4 < found.worst["complex_step_matches"] < 1e-2


@pytest.mark.parametrize("op, spec, match", [
    (SelfSlopeLeakyReLU(), "leaky_relu", "rules_read_their_own_parameters.*after a call with params"),
    (SelfSavedTanh(), dataclasses.replace(SPECS["tanh"], complex_step=False),  # as a torch rule's
     "rules_read_their_own_parameters.*after a call on other inputs: a rule reads a value the "
     "forward saved"),
    (InPlaceSmoothingSoftmaxCrossEntropy(), "softmax_cross_entropy",
     "rules_leave_their_arguments_alone.*its forward wrote into input 1"),
    (FalsyAxisSum(), "sum", r"axis.: \(\)"),
    (OneSidedClip(), "clip", "convention at a kink"),
], ids=["slope read from the op object", "tanh(x) kept on the op object",
        "forward writes into its inputs", "axis=() as None", "clip with max only"])
def test_a_survivor_of_the_mutation_testing_is_caught(op, spec, match):
    caught(op, spec, match)


def _square_forward(x):
    return x * x, x


def _square_backward_reading_the_buffer(dout, x):
    """Reads dout's memory in C order (as a kernel handed its pointer does): right for a
    C-contiguous gradient, scrambled for one that arrives transposed."""
    flat = np.lib.stride_tricks.as_strided(dout, (dout.size,), (dout.itemsize,))
    return (flat * 2 * x.ravel()).reshape(x.shape)


def test_a_rule_reading_the_incoming_gradients_buffer_fails_the_layout_property():
    """Every property handed rules a fresh C-contiguous gradient, so this rule passed 200
    examples; in use, sum(square(x).T * w) gets x's gradient scrambled. The layout property
    lays the incoming gradient out otherwise too."""
    from handgrad.engine.testing import numpy_rule, unary
    rule = numpy_rule(_square_forward, _square_backward_reading_the_buffer,
                      sample=unary(strategies.reals), style="cache")
    sample = ((np.arange(1.0, 7.0).reshape(2, 3),), {})
    with pytest.raises(AssertionError, match="incoming gradient's"):
        memory_layout_changes_nothing(rule.op, rule.spec, sample)
    x = engine.Tensor(sample[0][0], requires_grad=True)
    (rule.op.apply(x).T * engine.Tensor(np.arange(6.0).reshape(3, 2))).sum().backward()
    assert not np.allclose(x.grad, 2 * sample[0][0] * np.arange(6.0).reshape(3, 2).T)


# --- wrong rules whose mistake lies where the samples never went (a hunt) ----------------------

def _sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


def _kinked(*kinks):
    return unary(lambda shape: strategies.values(shape, avoid=list(kinks)))


WRONG_OUTSIDE_THE_BOX = {
    # relu6 without its cap: right on [-3, 3], where values() drew even with kink 6 declared
    "relu6": (lambda x: (np.clip(x, 0.0, 6.0), x), lambda g, x: g * (x > 0), _kinked(0.0, 6.0)),
    # hardswish with its middle piece's derivative everywhere: wrong beyond the kinks at ±3
    "hardswish": (lambda x: (x * np.clip(x + 3, 0, 6) / 6, x), lambda g, x: g * (2 * x + 3) / 6,
                  _kinked(-3.0, 3.0)),
    # a sigmoid rule that rounds the saturated derivative to 0 beyond |x| = 6: wide() drew
    # |x| <= 5 or >= 100, nothing between (sigmoid'(8) = 3e-4 there)
    "sigmoid_cut": (lambda x: (_sigmoid(x), x),
                    lambda g, x: g * np.where(np.abs(x) > 6, 0.0, _sigmoid(x) * (1 - _sigmoid(x))),
                    unary(lambda shape: strategies.wide(shape, 5.0))),
    # Huber with beta 0.1, its inner derivative x for x / beta: the kinks' margins of 0.1
    # removed the whole inner piece
    "smooth_l1": (lambda x: (np.where(np.abs(x) < 0.1, 5 * x * x, np.abs(x) - 0.05), x),
                  lambda g, x: g * np.where(np.abs(x) < 0.1, x, np.sign(x)), _kinked(-0.1, 0.1)),
}


@pytest.mark.parametrize("name", list(WRONG_OUTSIDE_THE_BOX))
def test_a_rule_wrong_only_beyond_3_or_between_close_kinks_is_caught(name):
    """Each passed check_rule's defaults, the ci and the dev profiles: values() drew on
    [-3, 3] whatever kinks were declared, wide() nothing in (bound, 100), and two kinks
    0.2 apart left nothing between them. Caught with the ci profile's 25 examples."""
    forward, backward, sample = WRONG_OUTSIDE_THE_BOX[name]
    rule = numpy_rule(forward, backward, sample=sample, style="cache", name=name)
    found = run_op(rule.op, rule.spec, max_examples=25,
                   profile=settings(database=None, derandomize=True, deadline=None), shrink=False)
    assert found.failure is not None
    assert found.failed_property in ("vjp_matches_finite_differences", "derivatives_are_accurate")


def test_the_default_range_reaches_beyond_every_kink():
    assert strategies.default_range([0.0, 6.0], None, None) == (-3.0, 9.0)
    assert strategies.default_range([-3.0, 3.0], None, None) == (-6.0, 6.0)
    assert strategies.default_range([0.0, 6.0], -1.0, 2.0) == (-1.0, 2.0)     # as given
    assert strategies.intervals_avoiding([-0.1, 0.1], -3.0, 3.0)[1] == pytest.approx((-0.05, 0.05))


def _draws(strategy, n=200):
    """``n`` derandomized draws of ``strategy``."""
    out = []

    @settings(max_examples=n, database=None, derandomize=True, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(x):
        out.append(x)
    collect()
    return out


def test_shapes_and_flatten_samples_are_mostly_not_degenerate():
    """hypothesis favours sides of 1: 70-82% of flatten's samples flattened nothing
    (start_dim == end_dim), and most shapes had a side of 1 (a sum over a size-1 axis, a
    batch of one). Part of the shapes now have every side >= 2, and flatten's end follows
    its start wherever the shape allows."""
    shapes = _draws(strategies.shapes())
    assert sum(len(sh) >= 1 and min(sh) >= 2 for sh in shapes) >= 0.3 * len(shapes)
    flattens = _draws(SPECS["flatten"].sample)
    noop = sum(p["start_dim"] == p["end_dim"] + x.ndim for (x,), p in flattens)
    assert noop <= 0.25 * len(flattens)


def test_the_forward_of_a_float32_sample_is_compared_in_float32_ulps():
    """A sample drawn in float32 is computed in float32; the reference may compute in
    float64. The tolerance was 1e-12 whatever the dtype: a correct float32 exp failed by
    one ulp. (float64 samples keep 1e-12.)"""
    from handgrad.engine.testing.properties import forward_matches_reference
    spec = OpSpec("exp", unary(strategies.reals), lambda x: np.exp(np.asarray(x, np.float64)))
    x = np.linspace(-3, 3, 7).astype(np.float32)
    assert forward_matches_reference(engine.exp, spec, ((x,), {})) < 1e-6
    with pytest.raises(AssertionError):                    # float64: still 1e-12
        forward_matches_reference(engine.exp, OpSpec("exp", unary(strategies.reals),
                                                     lambda x: np.exp(x) * (1 + 1e-10)),
                                  ((x.astype(np.float64),), {}))


def test_wide_with_a_bound_of_100_or_more_has_no_band_and_still_draws():
    """The saturating band (bound, 100) is empty then: drawing it failed (an IndexError)."""
    for x in _draws(strategies.wide((3,), 150.0), n=20):
        assert np.all((np.abs(x) <= 150.0) | (np.abs(x) >= strategies.HUGE))
