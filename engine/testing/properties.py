"""The properties every op must have. Each takes the op, its spec and one sample
``(args, params)`` and raises AssertionError (GradcheckError for derivative mismatches)
when the property fails; otherwise it returns the worst error it measured
(``engine.gradcheck.relative_error``: |a - b| / max(|b|, 1)), 0.0 for a property that
is exact (yes or no), or None when it does not apply to the sample. The test suite runs
them for every registered op; ``check_op`` and ``handgrad check`` run them for any op.

Besides agreeing with finite differences, a rule must behave as the engine assumes:

* it computes in its inputs' precision (the engine casts what a rule returns, which
  would hide a float32 rule that silently works in float64);
* it leaves its arguments alone: the incoming gradient, the tangents, the saved values,
  the inputs and the output are never written, and nothing it returns shares memory
  with the saved values, the inputs or the output (a leaf may adopt a returned array as
  its ``.grad`` and later add to it in place);
* each input's gradient does not depend on which other inputs need one
  (``ctx.needs_input_grad`` read in the right order), nor on how the inputs are laid out
  in memory (Fortran order, strided views);
* the forward leaves the caller's inputs alone too;
* it is re-entrant: a call's rules read its parameters from its node, so another call
  with other parameters in between changes nothing (``rules_read_their_own_parameters``
  takes a second sample of the spec: ``check_op`` and the suite draw one for it);
* it runs as a captured plan runs it: without ``check``, from a context whose inputs hold
  shapes and dtypes only (``rules_run_as_a_plan_runs_them``).
"""
from __future__ import annotations

import functools
import math
from itertools import combinations
from typing import Any, Callable, Iterator, TypedDict

import numpy as np

from .. import graph
from ..gradcheck import accuracycheck, gradcheck_error, jvpcheck_error, relative_error
from ..modes import no_grad
from ..op import Op
from ..plain import plain_repr
from ..plan_format import ArraySpec, ReplayContext
from ..tensor import Tensor
from ..transforms import gradients
from .specs import OpSpec, Sample

# A full Jacobian costs 2 forward runs per input element; above this many elements the
# checks switch to one random projection (directional mode).
FULL_JACOBIAN_MAX_SIZE = 64

# What a rule under check may raise that counts as a failure of that rule: any Exception,
# and SystemExit (a leftover exit() or sys.exit() in a student's rule must fail that rule,
# not end the whole check, or an autograder, with the student's status). KeyboardInterrupt
# still stops everything.
RULE_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit)


class RuleExit(Exception):
    """A rule under check called exit() or sys.exit(): a failure of that rule."""


def exits_fail(check: Callable[..., Any]) -> Callable[..., Any]:
    """``check`` (a property, or the kink examples) with a SystemExit raised inside it
    turned into RuleExit, which fails the rule as any other exception does."""
    @functools.wraps(check)               # keeps __name__ and needs_second_sample
    def checked(*args: Any, **kwargs: Any) -> Any:
        try:
            return check(*args, **kwargs)
        except SystemExit as e:
            raise RuleExit(f"the rule called exit() or sys.exit() (code {e.code!r})") from None
    return checked


# prop(op, spec, sample, seed) -> worst error or None; a property that mixes two calls of
# the op (needs_second_sample) also takes other=(args, params), a second sample.
Property = Callable[..., "float | None"]


def has_jvp(op: Op) -> bool:
    """Whether ``op`` has a forward-mode rule (its own ``jvp``, or ``linear``). Only a rule
    checked from outside (``engine.testing.rules``) may lack one: the forward-mode
    properties, and the forward-mode parts of the others, then do not apply."""
    return op.linear or type(op).jvp is not Op.jvp


def differentiable_positions(op: Op, args: tuple[Any, ...]) -> list[int]:
    """The float inputs in positions the op differentiates."""
    return [i for i, a in enumerate(args)
            if i not in op.nondiff and np.asarray(a).dtype.kind == "f"]


class _Tolerances(TypedDict, total=False):
    """The finite-difference tolerances a spec overrides (keyword arguments of gradcheck)."""

    atol: float
    rtol: float


def _tolerances(spec: OpSpec) -> _Tolerances:
    tolerances: _Tolerances = {}
    if spec.atol is not None:
        tolerances["atol"] = spec.atol
    if spec.rtol is not None:
        tolerances["rtol"] = spec.rtol
    return tolerances


def _checked(op: Op, args: tuple[Any, ...], params: dict[str, Any]
             ) -> tuple[Callable[..., Tensor], tuple[Any, ...]]:
    """``(fn, inputs)`` for the finite-difference checks, which differentiate every float
    input: a float input in a position the op does not differentiate (``nondiff``: a
    probability target) is given as a constant Tensor (requires_grad=False), which they do
    not perturb, and ``fn`` passes the op a fresh copy of it at each call (as the other
    inputs get one: an op that writes into it must fail on the property about writes)."""
    fixed = {i for i, a in enumerate(args) if i in op.nondiff and np.asarray(a).dtype.kind == "f"}

    def fn(*xs: Any) -> Tensor:
        return op.apply(*[np.array(args[i], copy=True) if i in fixed else x
                          for i, x in enumerate(xs)], **params)
    return fn, tuple(Tensor(a) if i in fixed else a for i, a in enumerate(args))


def _compares_nothing(op: Op, args: tuple[Any, ...], params: dict[str, Any]) -> bool:
    """Whether a sample has no derivative to compare (an empty output, or empty
    differentiable inputs: a getitem that selects nothing); the checks refuse it."""
    if not any(np.size(args[i]) for i in differentiable_positions(op, args)):
        return True
    with no_grad():
        return op.apply(*args, **params).size == 0


def _mode(args: tuple[Any, ...]) -> str:
    size = sum(np.size(a) for a in args if np.asarray(a).dtype.kind == "f")
    return "full" if size <= FULL_JACOBIAN_MAX_SIZE else "directional"


def _leaves(op: Op, args: tuple[Any, ...], dtype: Any = None,
            requires: Any = None) -> tuple[list[Tensor], list[int]]:
    """Tensors for ``args``: the differentiable ones require grad (only those in
    ``requires``, if given), in ``dtype`` if given; the rest are constants."""
    diff = differentiable_positions(op, args)
    leaves = []
    for i, a in enumerate(args):
        if i in diff:
            leaves.append(Tensor(np.asarray(a, dtype=dtype),
                                 requires_grad=requires is None or i in requires))
        else:
            leaves.append(Tensor(a))
    return leaves, diff


# --- against references ------------------------------------------------------------------

def forward_matches_reference(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float:
    """The forward equals the spec's numpy reference (float64, to a few ulps)."""
    args, params = sample
    out = op.apply(*args, **params)
    expected = np.asarray(spec.reference(*args, **params))
    assert out.shape == expected.shape, f"{op.name}: shape {out.shape}, reference {expected.shape}"
    # The same math in another order of operations: a few ulps of the op's dtype apart
    # (1e-12 for float64; a sample drawn in float32 is computed in float32, the reference
    # maybe not: a float32 cube is one float32 ulp from numpy's, 8 of them allowed).
    ulps = 8 * float(np.finfo(out.dtype).eps) if out.dtype.kind in "fc" else 0.0
    tol = max(1e-12, ulps)
    np.testing.assert_allclose(out.data, expected, rtol=tol, atol=tol,
                               err_msg=f"{op.name}: forward differs from the numpy reference")
    return relative_error(out.data, expected)


def vjp_matches_finite_differences(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """The backward rule equals float64 central differences (full Jacobian on small inputs)."""
    args, params = sample
    if _compares_nothing(op, args, params):
        return None
    return gradcheck_error(*_checked(op, args, params), mode=_mode(args),
                           seed=seed, **_tolerances(spec))


def jvp_matches_finite_differences(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """The forward-mode rule equals float64 central differences."""
    if not has_jvp(op):
        return None
    args, params = sample
    if _compares_nothing(op, args, params):
        return None
    return jvpcheck_error(*_checked(op, args, params), mode=_mode(args),
                          seed=seed, **_tolerances(spec))


def complex_step_matches(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """For analytic ops: the backward rule equals the complex-step derivative to ~1e-12."""
    if not spec.complex_step:
        return None
    args, params = sample
    # The complex step has no subtraction, so no cancellation: agreement to rounding. The
    # tolerance is fixed, but lifted with the spec's (check._failing_error measures the
    # error of a failure so, which a fixed one would report as inf).
    if _compares_nothing(op, args, params):
        return None
    tolerance = math.inf if spec.atol == math.inf else 1e-12
    return gradcheck_error(*_checked(op, args, params), mode="complex",
                           atol=tolerance, rtol=0.0 if tolerance == math.inf else 1e-12)


def derivatives_are_accurate(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """VJP and JVP agree with an extrapolated difference to 1e-9 relative (the spec's
    ``accurate_to``): a constant typed with too few digits or a float32 step fails here
    although it passes the central difference's 1e-3 (analysis in
    ``engine.gradcheck.accuracycheck``)."""
    if spec.accurate_to is None:
        return None
    args, params = sample
    if _compares_nothing(op, args, params):
        return None
    return accuracycheck(*_checked(op, args, params), rtol=spec.accurate_to,
                         seed=seed, forward_mode=has_jvp(op))


# --- the two modes and the rules' algebra --------------------------------------------------

def _pullback(out: Tensor, leaves: list[Tensor], diff: list[int]) -> Callable[[np.ndarray], list[np.ndarray]]:
    """v -> J^T v for the differentiable leaves (zeros of the leaf's dtype where no gradient
    arrives: a rule returns None for an input that gets none)."""
    def pullback(v: np.ndarray) -> list[np.ndarray]:
        grads = gradients([out], [v], [leaves[i] for i in diff], retain_graph=True)
        return [np.zeros(leaves[i].shape, leaves[i].dtype) if g is None else g
                for g, i in zip(grads, diff, strict=True)]
    return pullback


def _tangent(out: Tensor, leaves: list[Tensor], tangents: dict[int, np.ndarray]) -> np.ndarray:
    """J u for the tangents of some leaves (position -> array; the others constant)."""
    (t,) = graph.forward_tangents([out], {id(leaves[i]): u for i, u in tangents.items()})
    return t


def _same_math(got: Any, want: Any, message: str) -> float:
    """``got`` equals ``want`` as two runs of the same math do (to 1e-12: numpy and BLAS
    may sum in another order); their relative error. AssertionError with ``message``."""
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=message)
    return relative_error(got, want)


def _vjp(op: Op, args: tuple[Any, ...], params: dict[str, Any]
         ) -> tuple[Tensor, Callable[[np.ndarray], list[np.ndarray]], list[Tensor], list[int]]:
    leaves, diff = _leaves(op, args)
    out = op.apply(*leaves, **params)
    return out, _pullback(out, leaves, diff), leaves, diff


def _transposes(op: Op, out: Tensor, pullback: Callable[[np.ndarray], list[np.ndarray]],
                leaves: list[Tensor], diff: list[int], rng: np.random.Generator,
                where: str = "") -> float:
    """``|<v, J u> - <J^T v, u>|`` relative to the size of the products, for random u, v."""
    u = {i: rng.standard_normal(leaves[i].shape) for i in diff}
    v = rng.standard_normal(out.shape)
    (ju,) = graph.forward_tangents([out], {id(leaves[i]): u[i] for i in diff})
    jtv = pullback(v)
    lhs = float(np.sum(v * ju))
    rhs = float(sum(np.sum(g * u[i]) for g, i in zip(jtv, diff, strict=True)))
    # Both sides add the same products in different orders; rounding is bounded by
    # ~n eps (sum of |terms|), orders of magnitude below 1e-10 of it for these sizes.
    scale = max(float(np.sum(np.abs(v * ju))) +
                float(sum(np.sum(np.abs(g * u[i])) for g, i in zip(jtv, diff, strict=True))), 1.0)
    assert abs(lhs - rhs) <= 1e-10 * scale, \
        f"{op.name}: <v, J u> = {plain_repr(lhs)} but <J^T v, u> = {plain_repr(rhs)}{where}"
    return abs(lhs - rhs) / scale


def jvp_vjp_transpose(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """``<v, J u>`` from the JVP rule equals ``<J^T v, u>`` from the VJP rule, to rounding."""
    if not has_jvp(op):
        return None
    args, params = sample
    out, pullback, leaves, diff = _vjp(op, args, params)
    return _transposes(op, out, pullback, leaves, diff, np.random.default_rng(seed))


def backward_is_linear(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float:
    """VJP(a v1 + b v2) = a VJP(v1) + b VJP(v2): a backward rule must be linear in its grad."""
    args, params = sample
    out, pullback, _, diff = _vjp(op, args, params)
    rng = np.random.default_rng(seed)
    v1, v2 = rng.standard_normal(out.shape), rng.standard_normal(out.shape)
    a, b = 1.7, -0.6
    combined = pullback(a * v1 + b * v2)
    worst = 0.0
    for g, g1, g2, i in zip(combined, pullback(v1), pullback(v2), diff, strict=True):
        np.testing.assert_allclose(g, a * g1 + b * g2, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{op.name}: backward is not linear in grad (input {i})")
        worst = max(worst, relative_error(g, a * g1 + b * g2))
    return worst


def constant_inputs_change_nothing(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float | None:
    """Each input's gradient (and forward-mode tangent) is the same whether or not the
    other inputs require grad: a rule that reads ``ctx.needs_input_grad`` in the wrong
    order, or sends a gradient to a constant, fails."""
    args, params = sample
    diff = differentiable_positions(op, args)
    if len(diff) < 2:
        return None
    rng = np.random.default_rng(seed)
    leaves, _ = _leaves(op, args)
    out = op.apply(*leaves, **params)
    v = rng.standard_normal(out.shape)
    full = dict(zip(diff, gradients([out], [v], [leaves[i] for i in diff], retain_graph=True), strict=True))
    tangents = {i: rng.standard_normal(np.shape(args[i])) for i in diff}
    subsets = [s for k in range(1, len(diff)) for s in combinations(diff, k)] \
        if len(diff) <= 3 else [(i,) for i in diff]
    worst = 0.0
    for subset in subsets:
        part, _ = _leaves(op, args, requires=subset)
        out_part = op.apply(*part, **params)
        got = gradients([out_part], [v], [part[i] for i in subset], retain_graph=True)
        for i, g in zip(subset, got, strict=True):
            want = full[i]
            assert (g is None) == (want is None), (
                f"{op.name}: input {i} gets {'no' if g is None else 'a'} gradient when only "
                f"inputs {list(subset)} require grad, but {'no' if want is None else 'a'} "
                f"gradient when all do (needs_input_grad read in the wrong order?)")
            if g is not None and want is not None:          # both or neither (asserted above)
                worst = max(worst, _same_math(g, want, f"{op.name}: the gradient of input {i} "
                                                       f"changes when only inputs {list(subset)} "
                                                       f"require grad"))
        if not has_jvp(op):
            continue
        some = {i: tangents[i] for i in subset}
        worst = max(worst, _same_math(_tangent(out_part, part, some), _tangent(out, leaves, some),
                                      f"{op.name}: the JVP changes when only inputs "
                                      f"{list(subset)} require grad"))
    return worst


def _laid_out_otherwise(a: Any) -> Any:
    """The same values in other memory: Fortran order from two axes up (a reshape that
    merges axes then copies instead of making a view), every other element of a buffer
    twice the size for one axis; anything else as it is."""
    if not isinstance(a, np.ndarray) or a.size < 2:
        return a
    if a.ndim >= 2:
        return np.asfortranarray(a)
    buffer = np.empty(2 * a.size, dtype=a.dtype)
    buffer[::2] = a
    return buffer[::2]


def memory_layout_changes_nothing(op: Op, spec: OpSpec, sample: Sample,
                                  seed: int = 0) -> float | None:
    """The output, each input's gradient and the JVP are the same for inputs laid out
    otherwise in memory (Fortran order, a strided view) as for C-contiguous ones, and so
    are the gradients and the JVP for an incoming gradient and tangents laid out otherwise
    (a gradient arrives transposed when the output is transposed downstream): a rule that
    writes into a reshape of an array (a view of contiguous memory, a copy of other
    memory) and keeps the original fails, as does one that reads an array's buffer in C
    order or needs it contiguous (torch's ``grad.view(-1)``). Same values, another order of
    summation inside numpy and BLAS: equal to rounding, the 1e-12 of the other same-math
    comparisons."""
    args, params = sample
    other = tuple(_laid_out_otherwise(a) for a in args)
    if all(o is a for o, a in zip(other, args, strict=True)):
        return None
    rng = np.random.default_rng(seed)
    diff = differentiable_positions(op, args)
    runs = []
    for given in (args, other):
        # copy=False: Tensor() would copy a strided view into contiguous memory
        leaves = [Tensor(a, requires_grad=i in diff, copy=False) for i, a in enumerate(given)]
        runs.append((leaves, op.apply(*leaves, **params)))
    (leaves, out), (leaves_o, out_o) = runs
    layout = "with the inputs' memory layout"
    worst = _same_math(out_o.data, out.data, f"{op.name}: the forward changes {layout}")
    v = rng.standard_normal(out.shape)
    for g, want, i in zip(_pullback(out_o, leaves_o, diff)(_laid_out_otherwise(v)),
                          _pullback(out, leaves, diff)(v), diff, strict=True):
        worst = max(worst, _same_math(g, want, f"{op.name}: the gradient of input {i} "
                                               f"changes {layout} and the incoming gradient's"))
    if has_jvp(op) and diff:
        u = {i: rng.standard_normal(np.shape(args[i])) for i in diff}
        u_o = {i: _laid_out_otherwise(t) for i, t in u.items()}
        worst = max(worst, _same_math(_tangent(out_o, leaves_o, u_o), _tangent(out, leaves, u),
                                      f"{op.name}: the JVP changes {layout} and the tangents'"))
    return worst


# --- precision and dtypes ------------------------------------------------------------------

def float32_agrees_with_float64(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float:
    """In float32 the op computes in float32 (output and gradients) and agrees with float64
    within float32 precision: the forward, and the VJP of a random gradient and the JVP of
    random tangents, each compared with float64 at the same float32-rounded inputs (a
    rule wrong only for float32 inputs, the dtype ``nn`` trains in, fails)."""
    args, params = sample
    diff = differentiable_positions(op, args)
    args32 = tuple(np.asarray(a, dtype=np.float32) if i in diff else a for i, a in enumerate(args))
    out64 = op.apply(*args, **params).data
    leaves, _ = _leaves(op, args32, np.float32)
    out32 = op.apply(*leaves, **params)
    assert out32.dtype == np.float32, f"{op.name}: float32 inputs gave a {out32.dtype} output"
    magnitude = _float32_magnitude(args32)
    np.testing.assert_allclose(out32.data, out64, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * magnitude,
                               err_msg=f"{op.name}: float32 forward disagrees with float64")
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(out32.shape).astype(np.float32)
    u = {i: rng.standard_normal(np.shape(args[i])).astype(np.float32) for i in diff}
    what = [f"the float32 gradient of input {i} (VJP)" for i in diff]
    got: list[np.ndarray] = []
    if has_jvp(op):
        got += graph.forward_tangents([out32], {id(leaves[i]): u[i] for i in diff})
        what = ["the float32 JVP"] + what
    grads = _pullback(out32, leaves, diff)(v)       # None (no gradient) as zeros
    for i, g in zip(diff, grads, strict=True):
        assert g.dtype == np.float32 and g.shape == np.shape(args[i]), \
            f"{op.name}: gradient of float32 input {i} is {(g.dtype, g.shape)}"
    got += grads
    rounded = tuple(np.asarray(a, dtype=np.float64) if i in diff else a for i, a in enumerate(args32))
    want = _float64_derivatives(op, rounded, params, diff, v, u)
    # The spread (conditioning) term only widens the tolerance: it is measured (five more
    # float64 calls) only for a sample that the tolerance without it does not pass.
    plain = all(bool(np.all(_float32_within(g, w, 0.0, magnitude))) for g, w in zip(got, want, strict=True))
    spread = None if plain else _float64_spread(op, rounded, params, diff, v, u, want, rng)
    worst = relative_error(out32.data, out64) / magnitude
    for k, (g, w, text) in enumerate(zip(got, want, what, strict=True)):
        worst = max(worst, _float32_close(op, g, w, 0.0 if spread is None else spread[k],
                                          magnitude, text))
    return worst


# float32 keeps ~7 digits (eps 1.2e-7); these ops combine at most a few dozen terms of
# moderate size, so 1e-4 relative (~800 eps), with an absolute floor of 1e-4 times the
# magnitude of the values involved, is a safe bound that still catches a computation
# silently done in float16, a wrong constant, or a rule wrong only for float32 (O(1) off).
FLOAT32_RTOL = 1e-4
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _float32_magnitude(arrays: Any) -> float:
    """max(1, the largest |entry| of the float arrays): the size of the values a float32
    computation rounds, which sets its absolute error."""
    return max([1.0] + [float(np.max(np.abs(a), initial=0)) for a in arrays
                        if np.asarray(a).dtype.kind == "f"])


def _float64_derivatives(op: Op, args: tuple[Any, ...], params: dict[str, Any], diff: list[int],
                         v: np.ndarray, u: dict[int, np.ndarray]) -> list[np.ndarray]:
    """In float64 at ``args``: the JVP along ``u`` (with a JVP rule), then J^T v for each
    input in ``diff`` (zeros where none arrives)."""
    leaves, _ = _leaves(op, args)
    out = op.apply(*leaves, **params)
    tangents = graph.forward_tangents([out], {id(leaves[i]): u[i].astype(np.float64) for i in diff}) \
        if has_jvp(op) else []
    return list(tangents) + _pullback(out, leaves, diff)(v.astype(np.float64))


def _float64_spread(op: Op, args: tuple[Any, ...], params: dict[str, Any], diff: list[int],
                    v: np.ndarray, u: dict[int, np.ndarray], want: list[np.ndarray],
                    rng: np.random.Generator) -> list[np.ndarray]:
    """How much one float32 rounding moves ``want``, the float64 derivatives D at the
    float32-rounded inputs ``args``, entry by entry: the largest change of D when every input
    is multiplied by 1 + eps32 s (random signs s), or every float array the forward saved
    for the rules is (the rules called directly on them), over two draws each. That is
    the op's conditioning, and its rules', at this sample: a float32 computation rounds
    its inputs and its intermediates by about eps32 relative each, so its error is about
    this spread times the roundings it makes. (A batch norm of two clustered rows: its
    gradient is a multiple of 1 - xhat^2 ~ 0.016, a cancellation of the saved xhat, and
    is off by ~1e-3 in float32 however it is written.)"""
    spread = [np.zeros(np.shape(w)) for w in want]

    def widen(moved: list[np.ndarray]) -> None:
        for k, d in enumerate(moved):
            spread[k] = np.maximum(spread[k], np.abs(np.asarray(d, dtype=np.float64) - want[k]))

    out, node, leaves, _ = _node(op, args, params)
    saved = node.saved
    rules = _called_rules(op, node, leaves, diff, v, u)
    for _ in range(2):
        widen(_float64_derivatives(op, tuple(_rounded_once(a, rng) if i in diff else a
                                             for i, a in enumerate(args)), params, diff, v, u))
        node.saved = _rounded_once(saved, rng)
        widen([w + (m - r) for w, m, r in zip(want, _called_rules(op, node, leaves, diff, v, u),
                                               rules, strict=True)])
    node.saved = saved
    return spread


def _rounded_once(value: Any, rng: np.random.Generator) -> Any:
    """A copy of ``value`` with every float array in it (tuples, lists, dicts searched)
    multiplied by 1 + eps32 s, random signs s: one float32 rounding's worth of change."""
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        moved = value.copy()                       # an array still when 0-d
        moved *= 1 + FLOAT32_EPS * rng.choice([-1.0, 1.0], value.shape)
        return moved
    if isinstance(value, (tuple, list)):
        items = [_rounded_once(x, rng) for x in value]
        if hasattr(value, "_fields"):      # a namedtuple cache takes its fields one by one
            return type(value)(*items)
        return type(value)(items)
    if isinstance(value, dict):
        return {k: _rounded_once(x, rng) for k, x in value.items()}
    return value


def _called_rules(op: Op, node: graph.Node, leaves: list[Tensor], diff: list[int],
                  v: np.ndarray, u: dict[int, np.ndarray]) -> list[np.ndarray]:
    """``_float64_derivatives``'s values from the rules called directly on ``node``."""
    tangents = [None if i in op.nondiff else u[i].astype(np.float64) if i in diff
                else np.zeros(t.shape, dtype=t.dtype) for i, t in enumerate(leaves)]
    out = [np.asarray(op.jvp(node, *tangents), dtype=np.float64)] if has_jvp(op) else []
    grads = op.backward(node, v.astype(np.float64))
    grads = grads if isinstance(grads, tuple) else (grads,)
    return out + [np.zeros(leaves[i].shape) if grads[i] is None
                  else np.asarray(grads[i], dtype=np.float64) for i in diff]


def _float32_tolerance(want: np.ndarray, spread: np.ndarray | float, magnitude: float) -> np.ndarray:
    """How far a float32 derivative may be from ``want`` (float64, at the same float32
    inputs): rtol FLOAT32_RTOL, and atol FLOAT32_RTOL times the magnitude of the inputs
    and of ``want`` (a derivative's terms are products of those: x^3's gradient 3 x^2 is
    rounded at its own size) plus FLOAT32_RTOL / eps32 (~840, the same margin counted in
    roundings) times ``spread``, the change one rounding makes (the op's conditioning)."""
    scale = max(magnitude, _float32_magnitude([want]))
    return FLOAT32_RTOL * (np.abs(want) + scale) + FLOAT32_RTOL / FLOAT32_EPS * np.asarray(spread)


def _float32_within(got: np.ndarray, want: np.ndarray, spread: np.ndarray | float,
                    magnitude: float) -> np.ndarray:
    """Entry by entry, whether ``got`` is within ``_float32_tolerance`` (NaN is not)."""
    return np.abs(np.asarray(got, dtype=np.float64) - want) <= _float32_tolerance(want, spread, magnitude)


def _float32_close(op: Op, got: np.ndarray, want: np.ndarray, spread: np.ndarray | float,
                   magnitude: float, what: str) -> float:
    """Assert ``_float32_within``; returns the error relative to the magnitude."""
    bad = ~_float32_within(got, want, spread, magnitude)
    if bad.any():
        tolerance = _float32_tolerance(want, spread, magnitude) * np.ones(np.shape(want))
        raise AssertionError(
            f"{op.name}: {what} disagrees with float64 beyond float32 rounding: "
            f"{plain_repr(np.asarray(got, dtype=np.float64)[bad][:4])} vs "
            f"{plain_repr(np.asarray(want)[bad][:4])} (tolerance {plain_repr(tolerance[bad][:4])}; "
            f"{int(bad.sum())} of {bad.size} entries)")
    return relative_error(got, want) / max(magnitude, _float32_magnitude([want]))


def _node(op: Op, args: tuple[Any, ...], params: dict[str, Any],
          dtype: Any = None) -> tuple[Tensor, graph.Node, list[Tensor], list[int]]:
    leaves, diff = _leaves(op, args, dtype)
    out = op.apply(*leaves, **params)
    assert out.node is not None, f"{op.name}: no node was recorded for inputs that require grad"
    return out, out.node, leaves, diff


def _tangent_args(op: Op, leaves: list[Tensor],
                  make: Callable[[tuple[int, ...], Any], np.ndarray]) -> list[np.ndarray | None]:
    """What forward mode passes a JVP rule: None for a non-differentiable position, an
    array of the input's shape for every other one (made by ``make`` for a float input;
    zeros of its own dtype for an integer one, a constant, as ``graph.forward_tangents``
    passes it)."""
    out: list[np.ndarray | None] = []
    for i, t in enumerate(leaves):
        if i in op.nondiff:
            out.append(None)
        elif t.dtype.kind == "f":
            out.append(make(t.shape, t.dtype))
        else:
            out.append(np.zeros(t.shape, dtype=t.dtype))
    return out


def _seeds(rng: np.random.Generator) -> Iterator[tuple[str, Callable[[tuple[int, ...], Any], np.ndarray]]]:
    yield "random", lambda shape, dtype: rng.standard_normal(shape).astype(dtype)
    yield "all-ones", lambda shape, dtype: np.ones(shape, dtype=dtype)


def _returned(result: Any) -> list[tuple[int, Any]]:
    """What a rule returned, as (position, value) pairs (a JVP returns one value)."""
    if isinstance(result, tuple):
        return [(i, g) for i, g in enumerate(result) if g is not None]
    return [] if result is None else [(0, result)]


def rules_compute_in_float32(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float:
    """Called directly on float32 inputs, gradient and tangents, the backward and JVP rules
    return float32 arrays themselves (the engine would cast a float64 result back, hiding
    twice the time and memory)."""
    args, params = sample
    diff = differentiable_positions(op, args)
    args32 = tuple(np.asarray(a, dtype=np.float32) if i in diff else a for i, a in enumerate(args))
    out, node, leaves, diff = _node(op, args32, params, np.float32)
    rng = np.random.default_rng(seed)
    grad = rng.standard_normal(out.shape).astype(np.float32)
    results: list[tuple[str, Any]] = [("backward", op.backward(node, grad))]
    if has_jvp(op):
        results.append(("jvp", op.jvp(node, *_tangent_args(
            op, leaves, lambda s, d: rng.standard_normal(s).astype(d)))))
    for what, result in results:
        for i, g in _returned(result):
            dtype = getattr(g, "dtype", type(g).__name__)
            assert dtype == np.float32, (
                f"{op.name}: on float32 inputs its {what} rule returned {dtype} "
                f"{'for input ' + str(i) if what == 'backward' else ''}".rstrip()
                + " (the rule computes in another precision; the engine only hides it by casting)")
    return 0.0


def _snapshot(arrays: list[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray, bytes]]:
    return [(name, a, a.tobytes()) for name, a in arrays]


def _changed(snapshot: list[tuple[str, np.ndarray, bytes]]) -> list[str]:
    return [name for name, a, before in snapshot if a.tobytes() != before]


# (which rule, the rule, its arguments, the named arrays among them it must leave alone)
_RuleCall = tuple[str, Callable[..., object], tuple[Any, ...], list[tuple[str, np.ndarray]]]


def rules_leave_their_arguments_alone(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> float:
    """The forward writes into none of its inputs (label smoothing applied in place to the
    caller's target array fails here). Called directly with a writeable gradient (random,
    then all ones) and writeable tangents, the rules change nothing they were given or can
    reach (gradient, tangents, inputs, saved values, output) and return no array that
    shares memory with the saved values, the inputs or the output."""
    args, params = sample
    leaves, _ = _leaves(op, args)
    held = [(f"input {i}", t._data) for i, t in enumerate(leaves)]
    before = _snapshot(held)
    out = op.apply(*leaves, **params)
    changed = _changed(before)
    assert not changed, (f"{op.name}: its forward wrote into {', '.join(changed)} (the "
                         f"caller's arrays must stay as given)")
    assert out.node is not None, f"{op.name}: no node was recorded for inputs that require grad"
    node = out.node
    rng = np.random.default_rng(seed)
    held += [(f"saved value {k}", a) for k, a in enumerate(graph.saved_arrays(node.saved))]
    held.append(("the output", out._data))
    for seed_name, make in _seeds(rng):
        grad = make(out.shape, out.dtype)
        tangents = _tangent_args(op, leaves, make)
        calls: tuple[_RuleCall, ...] = (
            ("backward", op.backward, (node, grad), [("the incoming gradient", grad)]),
            ("jvp", op.jvp, (node, *tangents),
             [(f"the tangent of input {i}", t) for i, t in enumerate(tangents) if t is not None]))
        for what, rule, arguments, given in calls[:2 if has_jvp(op) else 1]:
            before = _snapshot(held + given)
            result = rule(*arguments)
            changed = _changed(before)
            assert not changed, (f"{op.name}: its {what} rule (called with a {seed_name} "
                                 f"{'gradient' if what == 'backward' else 'tangent'}) wrote into "
                                 f"{', '.join(changed)}")
            for i, g in _returned(result):
                if not isinstance(g, np.ndarray):
                    continue
                shared = [name for name, a in held
                          if np.may_share_memory(g, a) and np.shares_memory(g, a)]
                assert not shared, (
                    f"{op.name}: its {what} rule returned an array "
                    f"{'for input ' + str(i) + ' ' if what == 'backward' else ''}that shares "
                    f"memory with {', '.join(shared)} (return a new array: a leaf may adopt "
                    f"it as .grad and add to it in place)")
    return 0.0


def _alone(op: Op, args: tuple[Any, ...], params: dict[str, Any], v: np.ndarray,
           u: dict[int, np.ndarray]) -> tuple[Tensor, list[Tensor], list[int], list[np.ndarray], np.ndarray | None]:
    """One call, its VJP of ``v`` and its JVP along ``u`` (None without a JVP rule), with
    nothing in between."""
    leaves, diff = _leaves(op, args)
    out = op.apply(*leaves, **params)
    return out, leaves, diff, _pullback(out, leaves, diff)(v), \
        graph.forward_tangents([out], {id(leaves[i]): u[i] for i in diff})[0] if has_jvp(op) else None


def rules_read_their_own_parameters(op: Op, spec: OpSpec, sample: Sample, seed: int = 0,
                                    other: Sample | None = None) -> float | None:
    """Re-entrancy: two calls, their rules run in the other order (the second call's
    backward and JVP first), each give what they give alone. The second call has other
    parameters (``other``, a second sample of the spec) when the sample has parameters and
    they differ, else the same parameters on other inputs: every input array reversed
    along each of its axes (``_reversed``: the same values, so in the spec's domain, and
    elementwise relations between inputs kept, broadcasting included). A rule that reads
    a parameter or a saved value from the op object (ops are singletons: ``self.slope`` or
    ``self.t = tanh(x)`` set by the last forward; a torch Function's class attribute; a
    numpy rule's module-level cache) instead of its node fails. None when the second call
    would be the first one again (symmetric inputs, no other parameters)."""
    second = _another_call(sample, other)
    if second is None:
        return None
    other, reads = second
    rng = np.random.default_rng(seed)
    calls = []
    for args, params in (sample, other):
        leaves, diff = _leaves(op, args)
        probe = op.apply(*leaves, **params)       # shapes for v and u
        v = rng.standard_normal(probe.shape)
        u = {i: rng.standard_normal(np.shape(args[i])) for i in diff}
        calls.append((args, params, v, u, _alone(op, args, params, v, u)))
    # Both forwards first, then the rules of the second call, then those of the first.
    live = [(c, *_leaves(op, c[0])) for c in calls]
    outs = [op.apply(*leaves, **c[1]) for c, leaves, _ in live]
    worst = 0.0
    for k in (1, 0):
        (args, params, v, u, alone), (leaves, diff), out = calls[k], live[k][1:], outs[k]
        grads = _pullback(out, leaves, diff)(v)
        after = (f"a call with params {plain_repr(calls[1 - k][1])}" if reads == "a parameter"
                 else "a call on other inputs")
        where = (f" (call with params {plain_repr(params)}, after {after}: a rule reads "
                 f"{reads} from the op object or a class, not its node?)")
        for g, want, i in zip(grads, alone[3], diff, strict=True):
            worst = max(worst, _same_math(g, want, f"{op.name}: the gradient of input {i} "
                                                   f"changes{where}"))
        if alone[4] is None:
            continue
        worst = max(worst, _same_math(_tangent(out, leaves, {i: u[i] for i in diff}), alone[4],
                                      f"{op.name}: the JVP changes{where}"))
    return worst


rules_read_their_own_parameters.needs_second_sample = True  # type: ignore[attr-defined]


def _another_call(sample: Sample, other: Sample | None) -> tuple[Sample, str] | None:
    """The call to make between a call and its rules, and what a rule that changes under it
    reads: ``other`` (a second sample of the spec) when the sample has parameters and they
    differ ("a parameter"), else the sample's inputs reversed along every axis ("a value
    the forward saved"); None when that would be the sample again."""
    if other is not None and sample[1] and plain_repr(sample[1]) != plain_repr(other[1]):
        return other, "a parameter"
    reversed_ = (_reversed(sample[0]), sample[1])
    if all(_same_array(a, b) for a, b in zip(sample[0], reversed_[0], strict=True)):
        return None
    return reversed_, "a value the forward saved"


def rules_run_as_a_plan_runs_them(op: Op, spec: OpSpec, sample: Sample, seed: int = 0,
                                  other: Sample | None = None) -> float | None:
    """Replay: a captured plan (``engine.capture``, ``compile_step``) runs the forward rule
    without ``check`` (the capture ran it), with a context whose ``ctx.inputs`` hold shapes
    and dtypes only (``plan_format.ReplayContext``), then the backward rule on that
    context; each must give what the eager call gave. Between the eager call and the
    replay another call runs (``_another_call``). A rule that reads the values of
    ``ctx.inputs`` (values it did not save: eagerly, a write to the input after the
    forward then goes unnoticed) or state ``check`` left on the op object fails."""
    args, params = sample
    rng = np.random.default_rng(seed)
    leaves, diff = _leaves(op, args)
    out = op.apply(*leaves, **params)
    node = out.node
    if node is None:
        return None
    arrays = [t._data for t in node.inputs]
    v = rng.standard_normal(out.shape)
    eager = _pullback(out, leaves, diff)(v)
    second = _another_call(sample, other)
    if second is not None:
        between, _ = _leaves(op, second[0][0])
        op.apply(*between, **second[0][1])
    ctx = ReplayContext(tuple(ArraySpec.of(a) for a in arrays), node.params, node.needs_input_grad)
    where = f"{op.name}: run as a replayed plan runs it (no check, ctx.inputs without values)"
    try:
        replayed = op.forward(ctx, *arrays, **node.params)
        grads = op.backward(ctx, v.astype(out.dtype))
    except AttributeError as e:
        raise AssertionError(f"{where}, a rule failed: {e}. Rules read values from what the "
                             f"forward saved (ctx.save_input), never from ctx.inputs") from None
    worst = _same_math(np.asarray(replayed), out._data, f"{where}, the forward gives another "
                                                          f"value (a setting check left on the op?)")
    for g, want, i in zip([grads[i] for i in diff], eager, diff, strict=True):
        got = np.zeros_like(arrays[i]) if g is None else np.asarray(g).astype(arrays[i].dtype)
        worst = max(worst, _same_math(got, want, f"{where}, the gradient of input {i} differs"))
    return worst


rules_run_as_a_plan_runs_them.needs_second_sample = True  # type: ignore[attr-defined]


def _reversed(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The inputs with every array reversed along each of its axes (numbers as they are)."""
    return tuple(np.flip(a).copy() if isinstance(a, np.ndarray) and a.ndim else a for a in args)


def _same_array(a: Any, b: Any) -> bool:
    """Whether two inputs are the same values (NaN equal to NaN), arrays or not."""
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))
    return a is b


def needs_second_sample(prop: Property) -> bool:
    """Whether ``prop`` takes a second sample of the spec (``other=``)."""
    return bool(getattr(prop, "needs_second_sample", False))


PROPERTIES: tuple[Property, ...] = (
    forward_matches_reference,
    vjp_matches_finite_differences,
    jvp_matches_finite_differences,
    complex_step_matches,
    derivatives_are_accurate,
    jvp_vjp_transpose,
    backward_is_linear,
    constant_inputs_change_nothing,
    memory_layout_changes_nothing,
    float32_agrees_with_float64,
    rules_compute_in_float32,
    rules_leave_their_arguments_alone,
    rules_read_their_own_parameters,
    rules_run_as_a_plan_runs_them,
)


# --- at the kinks --------------------------------------------------------------------------

def kink_examples_hold(op: Op, spec: OpSpec) -> float:
    """At the kinks themselves, both modes follow the documented convention: the gradient
    of sum(output) is the expected one, and forward mode agrees with it column by column
    (sum(J e_j) = the expected gradient's entry j: a JVP that takes relu'(0) = 1, or a's
    tangent at a tie of maximum, fails), and the two modes are transposes there too."""
    worst = 0.0
    for n, (args, params, expected) in enumerate(spec.kink_examples):
        where = f" (kink example {n}: args {plain_repr(args)}, params {plain_repr(params)})"
        leaves, diff = _leaves(op, args)
        if len(expected) != len(diff):
            raise ValueError(f"{op.name}: kink example {n} gives {len(expected)} expected "
                             f"gradients for {len(diff)} differentiable inputs {diff}{where}")
        out = op.apply(*leaves, **params)
        for i, want in zip(diff, expected, strict=True) if has_jvp(op) else ():
            want = np.asarray(want, dtype=np.float64)
            columns = np.zeros(want.size)
            for j in range(want.size):
                e = np.zeros(want.size)
                e[j] = 1
                (t,) = graph.forward_tangents([out], {id(leaves[i]): e.reshape(want.shape)})
                columns[j] = np.sum(t)
            np.testing.assert_allclose(columns.reshape(want.shape), want, rtol=0, atol=1e-15,
                                       err_msg=f"{op.name}: forward mode (JVP) at the kink, "
                                               f"input {i}{where}")
        if has_jvp(op):
            worst = max(worst, _transposes(op, out, _pullback(out, leaves, diff), leaves, diff,
                                           np.random.default_rng(n), where))
        out.backward(np.ones(out.shape))
        for i, want in zip(diff, expected, strict=True):
            g = leaves[i].grad
            assert g is not None, f"{op.name}: no gradient at the kink, input {i}{where}"
            np.testing.assert_allclose(g, want, rtol=0, atol=1e-15,
                                       err_msg=f"{op.name}: gradient at the kink, input {i}"
                                               f"{where}")
    return worst
