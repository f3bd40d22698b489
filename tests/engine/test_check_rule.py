"""``check_rule`` (issue 22): hand-written numpy derivatives, CS231n style or given the
inputs, checked with every property of the built-in ops through an unregistered Op."""
from __future__ import annotations

import collections
import functools
import re

import numpy as np
import pytest
from hypothesis import find, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.testing import OpCheckError, binary, check_rule, numpy_rule, run_op, strategies, unary
from handgrad.engine.testing import strategies as S
from handgrad.engine.testing.check import SampleError
from handgrad.engine.testing.properties import _rounded_once, rules_leave_their_arguments_alone
from handgrad.engine.testing.rules import Rule, check, detect_style

EXAMPLES = 25
PROFILE = settings(database=None, derandomize=True, deadline=None)


def report(rule, shrink=True, **options):
    """What the property suite finds for ``rule`` (derandomized, as check_rule)."""
    return run_op(rule.op, rule.spec, max_examples=EXAMPLES, profile=PROFILE, shrink=shrink,
                  **options)


def caught(forward, backward, match, properties=None, **options):
    """The properties (all, or those given) fail the rule with a message matching ``match``;
    the first failing sample is reported (shrinking it would take most of the test's time:
    ``check_rule`` itself shrinks, see the batch-norm test)."""
    found = report(numpy_rule(forward, backward, **options), shrink=False,
                   **({} if properties is None else {"properties": properties}))
    assert found.failure is not None, "the rule passed"
    assert re.search("(?s)" + match, found.failure), found.failure
    return found


# --- an affine layer, CS231n style -------------------------------------------------------

def affine_forward(x, w, b):
    out = x.reshape(x.shape[0], -1) @ w + b
    return out, (x, w, b)


def affine_backward(dout, cache):
    x, w, b = cache
    dx = (dout @ w.T).reshape(x.shape)
    dw = x.reshape(x.shape[0], -1).T @ dout
    return dx, dw, dout.sum(axis=0)


@st.composite
def affine_sample(draw, square=False):
    """x of shape (N, d1[, d2]), w (d1 d2, M), b (M,), from the default strategies."""
    n = draw(st.integers(1, 4))
    dims = draw(st.lists(st.integers(1, 3), min_size=1, max_size=1 if square else 2))
    d = int(np.prod(dims))
    m = d if square else draw(st.integers(1, 4))
    return (draw(S.values((n, *dims))), draw(S.values((d, m))), draw(S.values((m,)))), {}


def test_a_correct_affine_layer_passes():
    assert check_rule(affine_forward, affine_backward, sample=affine_sample(),
                      max_examples=EXAMPLES)


def test_a_transposed_dw_fails():
    def backward(dout, cache):
        dx, dw, db = affine_backward(dout, cache)
        return dx, dw.T, db                       # w square: the shapes still match
    found = caught(affine_forward, backward, "^affine: property vjp_matches_finite_differences",
                   sample=affine_sample(square=True))
    assert found.failed_property == "vjp_matches_finite_differences"
    assert found.diagnosis is not None and found.diagnosis.startswith("transposed: input 1")


# --- batch norm (train mode, gamma and beta), CS231n style ----------------------------------

EPS = 1e-5


def batchnorm_forward(x, gamma, beta):
    mu, var = x.mean(axis=0), x.var(axis=0)
    std = np.sqrt(var + EPS)
    xhat = (x - mu) / std
    return gamma * xhat + beta, (xhat, gamma, std)


def batchnorm_backward(dout, cache):
    xhat, gamma, std = cache
    n = dout.shape[0]
    dxhat = dout * gamma
    dx = (n * dxhat - dxhat.sum(axis=0) - xhat * (dxhat * xhat).sum(axis=0)) / (n * std)
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def forgotten_gamma_backward(dout, cache):
    """The bug of issue 22: g instead of g * gamma in the last term (which vanishes where a
    column of x is constant)."""
    xhat, gamma, std = cache
    n = dout.shape[0]
    dxhat = dout * gamma
    dx = (n * dxhat - dxhat.sum(axis=0) - xhat * (dout * xhat).sum(axis=0)) / (n * std)
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def batchnorm_reference(x, gamma, beta):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(x.var(axis=0) + EPS) + beta


@st.composite
def batchnorm_sample(draw, values=S.values):
    n, c = draw(st.integers(2, 4)), draw(st.integers(1, 4))
    return (draw(values((n, c))), draw(values((c,))), draw(values((c,)))), {}


def test_a_correct_batch_norm_passes_with_generic_samples_to_1e_9():
    rule = numpy_rule(batchnorm_forward, batchnorm_backward, reference=batchnorm_reference,
                      sample=batchnorm_sample(S.generic))
    found = report(rule)
    assert found.passed, found.failure
    assert found.worst["derivatives_are_accurate"] is not None      # the 1e-9 check ran


# A column drawn constant makes the batch norm not smooth within the accuracy check's 0.01
# (std = sqrt(eps)): a spec from the default strategies leaves that check out, as a user's.
DEFAULT_BATCHNORM = dict(sample=batchnorm_sample(), reference=batchnorm_reference,
                         accurate_to=None, why="constant columns: std = sqrt(eps)")


def test_the_batch_norm_spec_from_the_default_strategies_passes_the_correct_rule():
    assert check_rule(batchnorm_forward, batchnorm_backward, max_examples=EXAMPLES,
                      **DEFAULT_BATCHNORM)


Cache = collections.namedtuple("Cache", "xhat gamma std")


def test_a_correct_rule_whose_cache_is_a_namedtuple_passes():
    """The float32 property rounds the cache's arrays and rebuilt every tuple as
    type(cache)(generator): a namedtuple takes its fields one by one, so the correct batch
    norm with its cache as a namedtuple failed with "Cache.__new__() missing 2 required
    positional arguments" on an ill-conditioned sample."""
    def forward(x, gamma, beta):
        out, cache = batchnorm_forward(x, gamma, beta)
        return out, Cache(*cache)

    assert check_rule(forward, batchnorm_backward, max_examples=EXAMPLES, **DEFAULT_BATCHNORM)
    # what the property does to the cache on an ill-conditioned sample (two rows 0.05 apart)
    cache = Cache(np.array([[-1.0], [1.0]]), np.full(1, -3.0), np.full(1, 0.025))
    moved = _rounded_once(cache, np.random.default_rng(0))
    assert type(moved) is Cache and moved.xhat.shape == (2, 1) and moved.std[0] != 0.025


def test_batch_norm_with_g_for_g_gamma_fails_with_the_default_strategies():
    with pytest.raises(OpCheckError, match="^numpy rule batchnorm: property "
                                           "vjp_matches_finite_differences fails for sample"):
        check_rule(batchnorm_forward, forgotten_gamma_backward, max_examples=EXAMPLES,
                   **DEFAULT_BATCHNORM)


# --- the same layers given the inputs --------------------------------------------------------

def affine(x, w, b):
    return x.reshape(x.shape[0], -1) @ w + b


def affine_grads(dout, x, w, b):
    return affine_backward(dout, (x, w, b))


def batchnorm(x, gamma, beta):
    return batchnorm_forward(x, gamma, beta)[0]


def batchnorm_grads(dout, x, gamma, beta):
    return batchnorm_backward(dout, batchnorm_forward(x, gamma, beta)[1])


def test_the_same_layers_given_the_inputs_pass():
    assert check_rule(affine, affine_grads, sample=affine_sample(), max_examples=EXAMPLES)
    assert check_rule(batchnorm, batchnorm_grads, sample=batchnorm_sample(S.generic),
                      max_examples=EXAMPLES)


def test_parameters_reach_forward_and_backward_by_keyword():
    def scale(x, *, alpha=2.0):
        return alpha * x

    def scale_grad(dout, x, *, alpha=2.0):
        return dout * alpha

    sample = unary(S.reals, alpha=st.floats(-2, 2))
    rule = numpy_rule(scale, scale_grad, sample=sample)
    assert rule.op.signature.inputs == ["x"] and rule.op.signature.params == ["alpha"]
    assert check(rule, max_examples=EXAMPLES)
    assert report(rule).worst["rules_read_their_own_parameters"] is not None  # re-entrancy ran


def test_a_dict_argument_becomes_a_parameter_through_partial():
    def forward(x, gamma, beta, bn_param):
        return batchnorm_forward(x, gamma, beta)[0] * bn_param["scale"], (x, gamma, beta, bn_param)

    def backward(dout, cache):
        x, gamma, beta, bn_param = cache
        return batchnorm_grads(dout * bn_param["scale"], x, gamma, beta)

    rule = numpy_rule(functools.partial(forward, bn_param={"scale": 3.0}), backward,
                      sample=batchnorm_sample(S.generic), name="scaled_batchnorm")
    assert rule.op.signature.inputs == ["x", "gamma", "beta"]
    assert check(rule, max_examples=EXAMPLES)


# --- the style: detected or given -------------------------------------------------------------

def test_the_style_is_detected_from_backward():
    assert detect_style("f", affine_backward, ["x", "w", "b"]) == "cache"
    assert detect_style("f", affine_grads, ["x", "w", "b"]) == "inputs"
    assert detect_style("f", lambda dout, cache: dout, ["x"]) == "cache"
    assert detect_style("f", lambda dout, x: dout, ["x"]) == "inputs"          # forward's name
    assert detect_style("f", lambda g, a, b, c: g, ["x", "w", "b"]) == "inputs"  # one per input
    assert detect_style("f", lambda g, saved: g, ["x", "w"]) == "cache"
    assert numpy_rule(affine_forward, affine_backward, sample=affine_sample()).op.style == "cache"
    assert numpy_rule(affine, affine_grads, sample=affine_sample()).op.style == "inputs"


def test_an_ambiguous_backward_asks_for_style_and_an_explicit_style_is_used():
    def square(x):
        return x * x, x

    def square_grad(dout, saved):                 # (dout, cache)? (dout, x)? cannot tell
        return 2 * saved * dout

    with pytest.raises(TypeError, match=r"square: cannot tell the style of backward\(dout, saved\) "
                                        r"for forward's inputs \(x\): pass style='cache'"):
        numpy_rule(square, square_grad, sample=unary(S.reals))
    assert check_rule(square, square_grad, sample=unary(S.reals), style="cache",
                      max_examples=EXAMPLES)
    # The same functions in the other style: forward returns a tuple, which is named.
    caught(square, square_grad, "forward returned a tuple of 2; in the inputs style it returns "
           "out alone", sample=unary(S.reals), style="inputs")
    with pytest.raises(ValueError, match="square: style must be 'cache' or 'inputs', got 'cs231n'"):
        numpy_rule(square, square_grad, sample=unary(S.reals), style="cs231n")


def test_a_cache_style_forward_must_return_out_and_cache():
    caught(lambda x: x * 2, lambda dout, cache: dout * 2, "double: forward returned an? [a-z]"
           r".*; in the cache style it returns \(out, cache\)", sample=unary(S.reals), name="double")


# --- rules that write into their arguments ------------------------------------------------------

def test_a_backward_that_writes_into_dout_fails():
    def backward(dout, cache):
        grads = affine_backward(dout.copy(), cache)
        dout *= 0.5                               # the results are right; dout is not
        return grads
    caught(affine_forward, backward, "property", sample=affine_sample())   # some property
    caught(affine_forward, backward, "rules_leave_their_arguments_alone.*its backward rule "
           ".*wrote into the incoming gradient", sample=affine_sample(),
           properties=[rules_leave_their_arguments_alone])


def test_a_backward_that_writes_into_its_cache_fails():
    def backward(dout, cache):
        grads = batchnorm_backward(dout, tuple(np.copy(c) for c in cache))
        cache[0][...] = 0.0                       # xhat zeroed after use
        return grads
    caught(batchnorm_forward, backward, "rules_leave_their_arguments_alone.*wrote into saved value",
           sample=batchnorm_sample(S.generic), properties=[rules_leave_their_arguments_alone])


def test_a_backward_that_returns_dout_itself_fails():
    def relu_forward(x):
        return np.maximum(x, 0), x

    def relu_backward(dout, cache):
        dout[cache <= 0] = 0                      # the classic: dx = dout, modified in place
        return dout
    caught(relu_forward, relu_backward, "property", sample=unary(lambda s: S.values(s, avoid=(0.0,))))


# --- what backward returns: count, shapes, types ----------------------------------------------

def test_a_wrong_number_of_gradients_names_the_rule_and_the_inputs():
    caught(affine_forward, lambda dout, cache: affine_backward(dout, cache)[:2],
           r"^affine: .*backward returned 2 gradients for 3 inputs \(x \(\d, \d+(, \d)?\), "
           r"w \(\d+, \d\), b \(\d,\)\); return one per input", sample=affine_sample())


def test_a_gradient_of_the_wrong_shape_names_the_rule_and_the_shapes():
    def backward(dout, cache):
        dx, dw, db = affine_backward(dout, cache)
        return dx, dw, db[None]                   # (1, M) for b of shape (M,)
    caught(affine_forward, backward,
           r"^affine: .*backward returned the gradient of b with shape \(1, (\d)\), but b "
           r"has shape \(\1,\) \(returned shapes .*; inputs x .*, w .*, b \(\1,\)\)",
           sample=affine_sample())


def test_a_gradient_that_is_not_an_array_is_named():
    caught(affine_forward, lambda dout, cache: (*affine_backward(dout, cache)[:2], [0.0]),
           "backward returned a list for the gradient of b; return numpy arrays",
           sample=affine_sample())


def test_one_input_may_return_a_bare_array():
    assert check_rule(lambda x: (np.sin(x), x), lambda dout, x: dout * np.cos(x),
                      sample=unary(S.reals), style="cache", name="sine", max_examples=EXAMPLES)


# --- forward mode -----------------------------------------------------------------------------

def affine_jvp(cache, dx, dw, db):
    x, w, b = cache
    n = x.shape[0]
    return dx.reshape(n, -1) @ w + x.reshape(n, -1) @ dw + db


def test_without_jvp_the_forward_mode_properties_do_not_apply():
    found = report(numpy_rule(affine_forward, affine_backward, sample=affine_sample()))
    assert found.passed, found.failure
    assert found.worst["jvp_matches_finite_differences"] is None
    assert found.worst["jvp_vjp_transpose"] is None
    assert found.worst["derivatives_are_accurate"] is not None      # the VJP part still runs


def test_a_jvp_is_checked_in_forward_mode():
    rule = numpy_rule(affine_forward, affine_backward, jvp=affine_jvp, sample=affine_sample())
    found = report(rule)
    assert found.passed, found.failure
    assert found.worst["jvp_matches_finite_differences"] is not None
    assert found.worst["jvp_vjp_transpose"] is not None


def test_a_wrong_jvp_fails():
    def jvp(cache, dx, dw, db):
        return affine_jvp(cache, dx, dw, np.zeros_like(db))          # b's tangent ignored
    caught(affine_forward, affine_backward, "jvp_matches_finite_differences", jvp=jvp,
           sample=affine_sample())


def test_a_jvp_given_the_inputs():
    def jvp(x, w, b, dx, dw, db):
        return affine_jvp((x, w, b), dx, dw, db)
    rule = numpy_rule(affine, affine_grads, jvp=jvp, sample=affine_sample())
    found = report(rule)
    assert found.passed, found.failure
    assert found.worst["jvp_matches_finite_differences"] is not None


# --- kinks --------------------------------------------------------------------------------------

def relu_forward(x):
    return np.maximum(x, 0), x


RELU = dict(sample=unary(lambda s: S.values(s, avoid=(0.0,))),
            kink_examples=[((np.array([-1.0, 0.0, 2.0]),), {}, (np.array([0.0, 0.0, 1.0]),))])


def test_the_kink_convention_is_checked():
    assert check_rule(relu_forward, lambda dout, cache: dout * (cache > 0), max_examples=EXAMPLES,
                      **RELU)
    caught(relu_forward, lambda dout, cache: dout * (cache >= 0), "convention at a kink", **RELU)


# --- not registered -----------------------------------------------------------------------------

def test_a_rule_is_an_unregistered_op():
    before = (dict(engine.REGISTRY), set(vars(engine.Tensor)))
    rule = numpy_rule(affine_forward, affine_backward, sample=affine_sample())
    assert isinstance(rule, Rule) and isinstance(rule.op, engine.Op)
    assert (rule.name, rule.kind, rule.spec.name) == ("affine", "numpy", "affine")
    assert check(rule, max_examples=5)
    assert "affine" not in engine.REGISTRY and not hasattr(engine, "affine")
    assert (dict(engine.REGISTRY), set(vars(engine.Tensor))) == before


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="affine: sample must be a hypothesis strategy"):
        numpy_rule(affine_forward, affine_backward, sample=[1, 2])
    with pytest.raises(TypeError, match=r"f: forward takes \*\*kw"):
        numpy_rule(lambda x, **kw: x, lambda d, c: d, sample=unary(S.reals), name="f")
    with pytest.raises(TypeError, match="f: forward takes no input"):
        numpy_rule(lambda *, a=1: a, lambda d, c: d, sample=unary(S.reals), name="f")


def test_a_rule_that_calls_exit_fails_instead_of_ending_the_program():
    """exit() in a rule (forward, backward or jvp) raises OpCheckError naming it, from
    check_rule as from the command: it ended the caller's program, with no verdict."""
    def square(x):
        return x * x, x

    def backward(dout, x):
        return 2 * dout * x

    def jvp(x, dx):
        return 2 * x * dx

    def square_exits(x):
        exit()

    def backward_exits(dout, x):
        exit()

    def jvp_exits(x, dx):
        exit()

    for forward, back, tangent in ((square_exits, backward, jvp), (square, backward_exits, jvp),
                                   (square, backward, jvp_exits)):
        with pytest.raises(OpCheckError, match=r"RuleExit: the rule called exit\(\)"):
            check_rule(forward, back, jvp=tangent, sample=unary(S.reals), name="square",
                       style="cache", max_examples=5)


# --- samples that cannot check the rule ----------------------------------------------------------

def square_forward(x):
    return x * x, x


def square_backward_wrong(dout, cache):
    return -7 * dout * cache                   # d/dx x^2 = 2 x


def test_samples_with_nothing_to_compare_fail_instead_of_passing():
    """Arrays of shape (0, 3) only: no sample has a derivative to compare, so a wrong rule
    would pass every property; the check refuses it, as engine.gradcheck does."""
    empty = st.tuples(st.tuples(st.just(np.zeros((0, 3)))), st.just({}))
    with pytest.raises(OpCheckError, match="square: no sample had a derivative to compare: "
                                           "every sample drawn had empty"):
        check_rule(square_forward, square_backward_wrong, sample=empty, max_examples=5)


# --- None for an input with no gradient ----------------------------------------------------------

def gate_forward(x, y):
    return x * (y > 0.5), y > 0.5                  # y only selects


def gate_backward(dout, cache):
    return dout * cache, None                      # right: d/dy = 0 away from the kink


def test_none_for_an_input_with_no_gradient_passes_in_float32_too():
    """None is a zero gradient for every property: float32_agrees_with_float64 failed with
    "gradient of float32 input 1 is None" where the float64 ones passed."""
    sample = st.tuples(st.tuples(S.values((2, 2)), S.values((2, 2), avoid=[0.5])), st.just({}))
    assert check_rule(gate_forward, gate_backward, sample=sample, max_examples=EXAMPLES)


# --- what a failure reports ------------------------------------------------------------------------

def mul(a, b):
    return a * b


def mul_backward_cropped(dout, a, b):
    """Crops where it should sum over the broadcast axes: right for inputs of one shape."""
    ga, gb = dout * b, dout * a
    return ga.reshape(-1)[:a.size].reshape(a.shape), gb.reshape(-1)[:b.size].reshape(b.shape)


def test_a_failure_reports_its_own_error_and_only_the_samples_drawn():
    """The failed property's worst error includes the failing sample's (it showed the passing
    samples' 1e-10), and hypothesis's re-runs while shrinking are not samples drawn (47 of
    25 were reported)."""
    rule = numpy_rule(mul, mul_backward_cropped, sample=binary(S.reals, S.reals), style="inputs")
    found = report(rule)
    assert found.failed_property == "vjp_matches_finite_differences"
    assert found.worst["vjp_matches_finite_differences"] > 1e-3     # beyond the tolerance
    assert 1 <= found.examples <= EXAMPLES


def test_a_sample_that_is_not_args_and_params_is_one_clear_error():
    """The params dict forgotten: one line saying what a sample is (it was a bare ValueError
    from unpacking the sample again while reporting the failure)."""
    forgot_params = st.tuples(st.tuples(S.values((2, 3))))
    with pytest.raises(SampleError, match=r"^numpy rule square: its sample strategy drew a "
                                          r"tuple of 1 item; a sample is \(args, params\)"):
        check_rule(square_forward, square_backward_wrong, sample=forgot_params, max_examples=5)


def test_a_strategy_that_never_gives_a_sample_is_one_clear_error():
    """A .filter() no draw meets (rows >= 8 where unary draws at most 4): hypothesis's
    Unsatisfiable escaped the check, and `handgrad check --module` stopped there, leaving
    the module's other rules unchecked."""
    never = unary(S.reals).filter(lambda sample: sample[0][0].ndim == 2
                                  and sample[0][0].shape[0] >= 8)
    with pytest.raises(SampleError, match="^numpy rule square: its sample strategy "
                                          "gave no sample: hypothesis rejected every draw"):
        check_rule(square_forward, square_backward_wrong, sample=never, max_examples=5)


def test_zero_size_shapes_draw_empty_arrays_and_a_raising_strategy_is_one_error():
    """values((0, 3)) raised ZeroDivisionError; a strategy that raises (here in a map) is a
    SampleError naming the rule, not a traceback escaping the check."""
    for strategy in (S.values, S.reals, S.positive, S.nonzero, S.wide):
        assert find(strategy((0, 3)), lambda a: True, settings=PROFILE).shape == (0, 3)
    broken = unary(S.reals).map(lambda sample: 1 / 0)
    with pytest.raises(SampleError, match="^numpy rule square: its sample strategy raised "
                                          "ZeroDivisionError: division by zero$"):
        check_rule(square_forward, square_backward_wrong, sample=broken, max_examples=5)


def test_a_kink_example_with_the_wrong_number_of_gradients_names_it_and_the_counts():
    two = [((np.array([-1.0, 0.0]),), {}, (np.array([0.0, 0.0]), np.array([1.0, 1.0])))]
    caught(relu_forward, lambda dout, cache: dout * (cache > 0),
           r"kink example 0 gives 2 expected gradients for 1 differentiable inputs \[0\]",
           sample=RELU["sample"], kink_examples=two)


def test_a_rule_that_changes_between_calls_is_one_clear_failure():
    """A backward wrong at its first call only: hypothesis's FlakyFailure escaped check_rule,
    handgrad check --module (a 60-line traceback, the module's other rules unreported) and
    the pytest plugin."""
    calls = [0]

    def forward(x):
        return x ** 3, x

    def backward(dout, x):
        calls[0] += 1
        return dout * (3 * x ** 2 + (1.0 if calls[0] == 1 else 0.0))
    with pytest.raises(OpCheckError, match=r"does not give the same result twice on the same sample"):
        check_rule(forward, backward, sample=unary(S.reals), style="cache")


@st.composite
def _gather_sample(draw):
    n = draw(st.integers(2, 5))
    idx = np.array(draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4)), np.int64)
    return (draw(S.values((n,))), idx), {}


def test_an_integer_index_input_reaches_the_rule_as_an_index():
    """The checker handed the rule its int64 index as float64 (x[idx] then raised an
    IndexError in a correct rule), as the engine's ops promote integer operands; a rule
    written elsewhere gets its inputs as drawn."""
    seen = []

    def forward(x, idx):
        seen.append(idx.dtype)
        return x[idx], (x.shape[0], idx)

    def backward(dout, cache):
        n, idx = cache
        dx = np.zeros(n, dout.dtype)
        np.add.at(dx, idx, dout)
        return dx, None
    assert check_rule(forward, backward, sample=_gather_sample(), style="cache",
                      reference=lambda x, idx: x[idx], max_examples=EXAMPLES)
    assert set(seen) == {np.dtype(np.int64)}


def _softmax_loss_forward(x, y):
    s = x - x.max(axis=1, keepdims=True)
    logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    n = x.shape[0]
    return -logp[np.arange(n), y].sum() / n, (np.exp(logp), y)


def _softmax_loss_backward_writing_its_cache(dout, cache):
    p, y = cache
    n = p.shape[0]
    p[np.arange(n), y] -= 1               # the classic slip: no p.copy()
    return p / n * dout, None


def test_a_backward_writing_into_its_cache_is_named_as_such():
    """It was reported as "a rule draws random numbers ... or keeps state between calls"."""
    @st.composite
    def scores_labels(draw):
        n, c = draw(st.integers(1, 4)), draw(st.integers(2, 5))
        y = np.array(draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)))
        return (draw(strategies.values((n, c))), y), {}

    with pytest.raises(OpCheckError, match="the backward rule of op '_softmax_loss' wrote into the "
                                           r"values its forward saved \(a cache changed in place"):
        check_rule(_softmax_loss_forward, _softmax_loss_backward_writing_its_cache,
                   sample=scores_labels(), max_examples=10)


def _cs231n_batchnorm_forward(x, gamma, beta, bn_param):
    """CS231n's train-mode forward: it writes the running statistics into bn_param (its
    backward is batchnorm_backward above)."""
    eps, momentum = bn_param.get("eps", 1e-5), bn_param.get("momentum", 0.9)
    d = x.shape[1]
    running_mean = bn_param.get("running_mean", np.zeros(d))
    running_var = bn_param.get("running_var", np.zeros(d))
    mu, var = x.mean(axis=0), x.var(axis=0)
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    bn_param["running_mean"] = momentum * running_mean + (1 - momentum) * mu
    bn_param["running_var"] = momentum * running_var + (1 - momentum) * var
    return gamma * xhat + beta, (xhat, gamma, std)


def test_a_forward_writing_into_a_dict_given_through_partial_passes_as_it_is_correct():
    """The README's functools.partial(batchnorm_forward, bn_param={...}) shared one dict
    between samples: the running mean of width 3 met a sample of width 2 (a broadcast error
    in a correct forward). Each call gets its own copy; the rule takes the function's name."""
    @st.composite
    def batchnorm_inputs(draw):
        n, d = draw(st.integers(2, 4)), draw(st.integers(1, 4))
        return tuple(draw(strategies.values(shape)) for shape in ((n, d), (d,), (d,))), {}

    forward = functools.partial(_cs231n_batchnorm_forward, bn_param={"mode": "train"})
    rule = numpy_rule(forward, batchnorm_backward, sample=batchnorm_inputs(),
                      accurate_to=None, why="columns of equal values")
    assert rule.name == "_cs231n_batchnorm"
    assert check_rule(forward, batchnorm_backward, sample=batchnorm_inputs(),
                      accurate_to=None, why="columns of equal values", max_examples=15)
    assert forward.keywords["bn_param"] == {"mode": "train"}


def test_a_failure_at_a_kink_names_the_kink_and_guesses_no_other_cause():
    """A correct two-input rule hit at relu's kink inside it was told "likely: a factor
    missing in one term" beside the right note that the input lies at a kink."""
    def forward(x, w):
        return np.maximum(x * w, 0), (x, w)

    def backward(dout, cache):
        x, w = cache
        mask = x * w > 0
        return dout * mask * w, dout * mask * x

    at_the_kink = st.just(((np.array([0.0, 1.0]), np.array([2.0, 3.0])), {}))
    with pytest.raises(OpCheckError, match="of a kink of the function") as info:
        check_rule(forward, backward, sample=at_the_kink, max_examples=1, accurate_to=None,
                   why="a kink")
    assert "likely:" not in str(info.value)


def test_a_rule_drawing_random_numbers_is_named_and_given_no_guessed_pattern():
    """Beside the right "differs between two backward passes", the diagnosis said "off by a
    constant factor 0.8917", another number at every run."""
    rng = np.random.default_rng()

    def forward(x):
        return x * x, x

    def backward(dout, cache):
        return dout * cache * (2 + 0.1 * rng.standard_normal())

    with pytest.raises(OpCheckError, match="differs between two backward passes") as info:
        check_rule(forward, backward, sample=unary(strategies.reals), max_examples=5)
    assert "likely:" not in str(info.value)


@pytest.mark.parametrize("name", ["", "  ", "a::b", "relu[0]"])
def test_a_rule_name_that_no_report_or_test_id_can_show_is_refused(name):
    """name="" gave a report line with no name; "a::b" a pytest id that cannot be selected."""
    with pytest.raises(ValueError, match="numpy_rule: name must be a non-empty string"):
        numpy_rule(lambda x: (x * x, x), lambda dout, cache: 2 * dout * cache,
                   sample=unary(strategies.reals), name=name)
