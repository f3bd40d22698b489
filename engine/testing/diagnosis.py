"""Say what is wrong, not only that it is wrong: when a derivative property fails, compare
the rule's result with the numeric gradient on the failing sample and name the most likely
bug class, with the evidence (``run_op`` appends it to the failure as a line "likely: ...").

The comparison is of vector-Jacobian products: one random cotangent v (seeded), the rule's
J^T v per input against the numeric one, each entry a float64 central difference
(``engine.gradcheck.central_difference``) of ``<v, f(x + t e_j)>``. The classes, tried in this
order for each input whose gradient disagrees (relative error above ``TOL``):

* no gradient: the rule returns None where the numeric gradient is not zero;
* not summed back: a broadcast input's gradient came back in the output's shape (summing it
  over the broadcast axes gives the numeric gradient, or not: both are said);
* swapped: input a's gradient is input b's numeric gradient and the other way round;
* computed in float32: the error is float32 rounding and every value returned is exactly a
  float32 (the true values are not);
* sign flipped; transposed (the last two axes swapped); off by a constant factor (named
  when it is 2, 1/2, N or 1/N for a dimension N of an input or the output);
* a term missing along an axis: the difference is constant along that axis (a sum or mean
  over it dropped, or taken over the wrong axis);

and, when the rule can be re-run on modified samples (``rerun``):

* transposed operand: re-run with another input transposed, the rule gives the numeric
  gradient of the actual sample (``W`` where ``W.T`` belongs);
* a factor of another input missing in one term: re-run with that input set to ones the
  rule agrees, and with (input - 1) doubled the difference doubles (the batch norm whose
  last term uses g for g * gamma: the difference is proportional to gamma - 1, column by
  column);
* correct only where the sample's entries coincide (a cross term dropped): re-run with
  two inputs made equal, or every input made constant, it agrees (non-trivially);

else "unclassified", with where it differs: no class is claimed without its evidence.
A failing kink example is diagnosed apart (``kink_diagnosis``): wrong only at a kink when
every entry that breaks the convention sits at a kink (the one-sided derivatives differ)
and the rule's value lies between them (it took the other side: the convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

from ..broadcast import sum_to
from ..gradcheck import at_kink, central_difference, one_sided_derivatives, relative_error
from ..modes import no_grad
from ..op import Op
from ..plain import plain_repr
from .properties import RULE_FAILURES, _leaves, differentiable_positions
from .specs import OpSpec, Sample

# Two gradients agree when relative_error (|a - b| / max(|b|, 1)) is at most this: far
# above the numeric VJP's own error (~1e-9 with a step relative to each entry), far below
# any bug a property reports.
TOL = 1e-6
FLOAT32_EPS = float(np.finfo(np.float32).eps)
FLOAT32_MAX_ERROR = 1e-4      # float32 rounding of a few dozen terms, relative
STEP = 1e-6                   # the central difference's step, relative to each entry
MAX_ELEMENTS = 512            # larger samples get no diagnosis (its cost is ~2 runs each)

# The properties that compare derivatives with numbers: a failure of one is diagnosed.
DERIVATIVE_PROPERTIES = frozenset({
    "vjp_matches_finite_differences", "jvp_matches_finite_differences",
    "complex_step_matches", "derivatives_are_accurate", "jvp_vjp_transpose"})

TRANSPOSED = "transposed"
SIGN = "sign flipped"
FACTOR = "off by a constant factor"
NOT_SUMMED = "broadcast gradient not summed back"
SWAPPED = "gradients swapped"
AXIS = "a term missing along an axis"
MISSING_FACTOR = "a factor missing in one term"
COINCIDE = "correct only where the sample's entries coincide"
KINK = "wrong only at a kink"
FLOAT32 = "computed in float32"
NO_GRADIENT = "no gradient"
UNCLASSIFIED = "unclassified"

Arrays = list[np.ndarray]
# rerun(inputs) -> (the rule's gradients, the numeric ones) at the modified inputs.
Rerun = Callable[[Arrays], tuple[list["np.ndarray | None"], Arrays]]


@dataclass(frozen=True)
class Diagnosis:
    """The most likely bug class (one of the constants above) and the evidence for it."""

    kind: str
    evidence: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.evidence}"


def _num(x: float) -> str:
    return f"{x:.4g}"


def close(a: Any, b: Any) -> bool:
    """Whether gradient ``a`` equals ``b`` (same shape, relative_error <= TOL, finite; no
    gradient, None, equals a zero one)."""
    if a is None or b is None:
        other = b if a is None else a
        return other is not None and _negligible(np.asarray(other, dtype=np.float64))
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.isfinite(a))) and relative_error(a, b) <= TOL


def _negligible(x: np.ndarray) -> bool:
    return float(np.max(np.abs(x), initial=0.0)) <= TOL


# --- the classes, each a pure function of arrays -------------------------------------------

def factor_name(r: float, sizes: dict[int, str]) -> str | None:
    """``r`` as the factor a reader looks for: 2, 1/2, N or 1/N (``sizes``: N -> what it is
    the size of), else a small fraction (3/4), else None. A 2 where a size is 2 too names
    both: a forgotten 1/N on a sample shrunk to N = 2 is a factor 2 as well."""
    sign = "-" if r < 0 else ""
    m = abs(r)
    for n, what in [(2, ""), *sorted((k, v) for k, v in sizes.items() if k > 2)]:
        for value, text in ((n, f"{n}"), (1 / n, f"1/{n}")):
            if abs(m - value) <= 1e-6 * value:
                which = "N" if text == str(n) else "1/N"
                if what:
                    return f"{sign}{text} = {which}, N = {n} {what}"
                also = f" (or {which}, N = 2 {sizes[2]})" if 2 in sizes else ""
                return f"{sign}{text}{also}"
    frac = Fraction(m).limit_denominator(16)
    if abs(m - float(frac)) <= 1e-9 * m:
        return f"{sign}{frac}" + (f" ({_num(r)})" if frac.denominator > 1 else "")
    return None


def dimension_names(inputs: Sequence[np.ndarray], output_shape: tuple[int, ...],
                    names: Sequence[str]) -> dict[int, str]:
    """Sizes N >= 2 of an axis (or the whole) of an input or the output, with what each is
    (the first one found keeps the name)."""
    found: dict[int, str] = {}
    shapes = [(name, np.shape(x)) for name, x in zip(names, inputs, strict=True)] + [("the output", output_shape)]
    for name, shape in shapes:
        for ax, n in enumerate(shape):
            found.setdefault(int(n), f"(the size of axis {ax} of {name})")
        if len(shape) > 1:
            found.setdefault(int(np.prod(shape)), f"(the number of entries of {name})")
    return {n: w for n, w in found.items() if n >= 2}


def not_summed(a: np.ndarray, n: np.ndarray, shape: tuple[int, ...], output_shape: tuple[int, ...],
               name: str) -> Diagnosis | None:
    """The rule returned a gradient of another shape than its input's (``shape``)."""
    if a.shape == shape:
        return None
    try:
        summed: np.ndarray | None = sum_to(a, shape)
    except ValueError:
        summed = None
    what = "the output's shape" if a.shape == tuple(output_shape) else "not its input's shape"
    head = f"{name}'s gradient has shape {a.shape} ({what}), its input has shape {shape}"
    if summed is not None and close(summed, n):
        return Diagnosis(NOT_SUMMED, f"{head}; summed over the broadcast axes it equals the "
                                     f"numeric gradient (sum it back: engine.sum_to)")
    if a.shape == tuple(output_shape):
        return Diagnosis(NOT_SUMMED, f"{head}; summed back it still differs from the numeric "
                                     f"gradient (error {_num(relative_error(summed, n))})"
                         if summed is not None else head)
    return Diagnosis(UNCLASSIFIED, f"{head} (a gradient must have its input's shape)")


def swapped(analytic: Sequence[np.ndarray | None], numeric: Sequence[np.ndarray],
            names: Sequence[str]) -> tuple[int, int, Diagnosis] | None:
    """Two inputs whose gradients are each other's numeric gradients."""
    for i in range(len(numeric)):
        for k in range(i + 1, len(numeric)):
            if close(analytic[i], numeric[k]) and close(analytic[k], numeric[i]) \
                    and not close(numeric[i], numeric[k]):
                return i, k, Diagnosis(SWAPPED, f"{names[i]}'s gradient equals {names[k]}'s "
                                                f"numeric gradient and the other way round")
    return None


def float32_computed(a: np.ndarray, n: np.ndarray, name: str) -> Diagnosis | None:
    """The rule's values are float32 numbers (the true ones are not) and it is off by about
    float32 rounding."""
    finite = bool(np.all(np.isfinite(a)))
    if not finite or a.shape != n.shape or _negligible(n):
        return None
    error = relative_error(a, n)
    exact = bool(np.all(a.astype(np.float32).astype(np.float64) == a))
    # float32 spacing is ~1.2e-7 relative: a true value this far from every float32 is not one.
    off_grid = np.abs(n - n.astype(np.float32).astype(np.float64)) > 1e-9 * np.maximum(np.abs(n), 1e-2)
    if not (exact and off_grid.any() and 0 < error <= FLOAT32_MAX_ERROR):
        return None
    returned = " (it returned a float32 array for float64 inputs)" if a.dtype == np.float32 else ""
    return Diagnosis(FLOAT32, f"{name}'s gradient is off by {error:.2g} relative, about "
                              f"{error / FLOAT32_EPS:.2g} float32 epsilons, and every value it "
                              f"returned is exactly a float32 number{returned}: a cast to "
                              f"float32 (or a float32 constant) inside the rule")


def sign_flipped(a: np.ndarray, n: np.ndarray, name: str) -> Diagnosis | None:
    if _negligible(n) or not close(-a, n):
        return None
    return Diagnosis(SIGN, f"{name}'s gradient is minus the numeric gradient in every entry")


def transposed(a: np.ndarray, n: np.ndarray, name: str) -> Diagnosis | None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or not close(np.swapaxes(a, -1, -2), n):
        return None
    return Diagnosis(TRANSPOSED, f"{name}'s gradient is transposed: with its last two axes "
                                 f"swapped it equals the numeric gradient")


def constant_factor(a: np.ndarray, n: np.ndarray, name: str, sizes: dict[int, str],
                    named_only: bool = False) -> Diagnosis | None:
    """a = r n for one constant r (least squares, then checked entry by entry); with
    ``named_only``, only a factor ``factor_name`` names."""
    nn = float(np.sum(n * n))
    if _negligible(n) or nn == 0:
        return None
    r = float(np.sum(a * n)) / nn
    if not np.isfinite(r) or abs(r) < 1e-12 or not close(a / r, n):
        return None
    named = factor_name(r, sizes)
    # Any two numbers are a factor apart: an unnamed factor needs two nonzero entries.
    if named is None and (named_only or np.count_nonzero(np.abs(n) > TOL) < 2):
        return None
    return Diagnosis(FACTOR, f"{name}'s gradient is the numeric gradient times a constant "
                             f"factor {named or _num(r)} in every entry")


def constant_along(a: np.ndarray, n: np.ndarray, name: str) -> Diagnosis | None:
    """The difference a - n does not change along one axis (or more) of size > 1."""
    d = a - n
    scale = TOL * max(float(np.max(np.abs(n), initial=0.0)), 1.0)
    axes = [ax for ax in range(d.ndim) if d.shape[ax] > 1
            and float(np.max(np.ptp(d, axis=ax))) <= scale]
    if not axes:
        return None
    if len(axes) == d.ndim:
        return Diagnosis(AXIS, f"{name}'s gradient is off by the same amount "
                               f"{_num(float(d.flat[0]))} in every entry (constant along "
                               f"{_axes(axes)}: a term like a sum or mean of the incoming "
                               f"gradient is dropped)")
    return Diagnosis(AXIS, f"{name}'s gradient minus the numeric one is constant along "
                           f"{_axes(axes)} (it varies only along the other axes): a term "
                           f"reduced over {_axes(axes)} (a sum or mean over it) is missing, "
                           f"or taken over the wrong axis")


def _axes(axes: Sequence[int]) -> str:
    return f"axis {axes[0]}" if len(axes) == 1 else "axes " + ", ".join(map(str, axes))


def broadcast_axes(small: tuple[int, ...], big: tuple[int, ...]) -> list[int]:
    """The axes of ``big`` along which an array of shape ``small`` (right-aligned, numpy
    broadcasting) varies."""
    offset = len(big) - len(small)
    return [offset + j for j, n in enumerate(small)
            if n > 1 and 0 <= offset + j < len(big) and big[offset + j] == n]


# --- experiments: the rule re-run on modified samples --------------------------------------

def _try(rerun: Rerun, inputs: Arrays) -> tuple[list[np.ndarray | None], Arrays] | None:
    """``rerun(inputs)``, or None when the modified sample leaves the op's domain."""
    try:
        with np.errstate(all="ignore"):
            return rerun(inputs)
    except RULE_FAILURES:    # outside the domain (a check, a NaN): no evidence either way
        return None


def _replace(inputs: Arrays, k: int, value: np.ndarray) -> Arrays:
    out = list(inputs)
    out[k] = value
    return out


def transposed_operand(k: int, inputs: Arrays, numeric: Arrays, names: Sequence[str],
                       rerun: Rerun) -> Diagnosis | None:
    """Re-run with input m transposed, the rule gives input k's numeric gradient."""
    for m, x in enumerate(inputs):
        if x.ndim < 2 or x.shape[-1] != x.shape[-2] or close(np.swapaxes(x, -1, -2), x):
            continue
        got = _try(rerun, _replace(inputs, m, np.ascontiguousarray(np.swapaxes(x, -1, -2))))
        if got is not None and close(got[0][k], numeric[k]):
            return Diagnosis(TRANSPOSED, f"{names[k]}'s gradient uses {names[m]} transposed: "
                                         f"re-run with {names[m]}'s last two axes swapped, the "
                                         f"rule gives the numeric gradient of the actual sample "
                                         f"(a W where W.T belongs)")
    return None


def missing_factor(k: int, inputs: Arrays, analytic: Sequence[np.ndarray | None], numeric: Arrays,
                   names: Sequence[str], rerun: Rerun) -> Diagnosis | None:
    """Input k's error vanishes where another input m is 1, and grows with m - 1."""
    d = np.asarray(analytic[k]) - numeric[k]
    for m, x in enumerate(inputs):
        if m == k or close(x, np.ones_like(x)):
            continue
        at_ones = _try(rerun, _replace(inputs, m, np.ones_like(x)))
        if at_ones is None or not close(at_ones[0][k], at_ones[1][k]):
            continue
        doubled = _try(rerun, _replace(inputs, m, 1 + 2 * (x - 1)))
        proportional = doubled is not None and doubled[0][k] is not None and \
            _proportional(np.asarray(doubled[0][k]) - doubled[1][k], d, 2.0)
        if not proportional and _negligible(at_ones[1][k]):
            continue                  # agreeing where both are zero proves nothing
        axes = broadcast_axes(x.shape, d.shape)
        where = ("entry by entry" if x.shape == d.shape else
                 f"{names[m]} running along {_axes(axes)} of {names[k]}" if axes else "")
        how = (f"; the difference is proportional to ({names[m]} - 1)"
               f"{', ' + where if where else ''}" if proportional else "")
        return Diagnosis(MISSING_FACTOR, f"{names[k]}'s gradient misses a factor of {names[m]} "
                                         f"in one term: re-run with {names[m]} set to ones, the "
                                         f"rule agrees with the numeric gradient{how} (a g where "
                                         f"g * {names[m]} belongs)")
    return None


def _proportional(d2: np.ndarray, d: np.ndarray, factor: float) -> bool:
    want = factor * d
    size = float(np.max(np.abs(want), initial=0.0))
    return d2.shape == d.shape and size > TOL and bool(np.all(np.isfinite(d2))) and \
        float(np.max(np.abs(d2 - want))) <= 1e-2 * size


def coinciding(k: int, inputs: Arrays, analytic: Sequence[np.ndarray | None], numeric: Arrays,
               names: Sequence[str], rerun: Rerun) -> Diagnosis | None:
    """Re-run on the sample with its entries made equal, the rule agrees (non-trivially)."""
    trials: list[tuple[str, Arrays]] = []
    same = [m for m, x in enumerate(inputs) if m != k and x.shape == inputs[k].shape]
    if same:
        trials.append((f"{' and '.join(names[m] for m in [k, *same])} made equal (set to "
                       f"{names[k]})", [inputs[k].copy() if m in same else x
                                         for m, x in enumerate(inputs)]))
    trials.append(("every input made constant (each entry set to its input's mean)",
                   [np.full_like(x, x.mean()) for x in inputs]))
    if len(inputs) > 1:
        common = float(np.mean([x.mean() for x in inputs]))
        trials.append((f"every entry of every input set to one value ({_num(common)})",
                       [np.full_like(x, common) for x in inputs]))
    size = max(float(np.max(np.abs(numeric[k]), initial=0.0)),
               float(np.max(np.abs(np.asarray(analytic[k])), initial=0.0)))
    for what, modified in trials:
        got = _try(rerun, modified)
        if got is None or not close(got[0][k], got[1][k]) or \
                float(np.max(np.abs(got[1][k]), initial=0.0)) <= 1e-3 * size:
            continue
        return Diagnosis(COINCIDE, f"{names[k]}'s gradient is right only where the sample's "
                                   f"entries coincide: re-run with {what}, the rule agrees with "
                                   f"the numeric gradient, on the sample it is off by "
                                   f"{_num(relative_error(analytic[k], numeric[k]))}: a cross "
                                   f"term dropped (one in x - mean(x) or a - b), or one input "
                                   f"used where another belongs")
    return None


def unclassified(a: np.ndarray, n: np.ndarray, name: str) -> Diagnosis:
    err = np.abs(a - n)
    bad = ~(err <= TOL * np.maximum(np.abs(n), 1.0))
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.where(bad, err, -1.0))), a.shape))
    return Diagnosis(UNCLASSIFIED, f"{name}'s gradient differs from the numeric one in "
                                   f"{int(bad.sum())} of {bad.size} entries, most at {idx}: "
                                   f"{_num(float(a[idx]))} vs {_num(float(n[idx]))}; no known "
                                   f"pattern (sign, factor, transpose, swap, broadcast, a "
                                   f"term along an axis, coinciding entries) fits")


# --- putting them together -----------------------------------------------------------------

def diagnose(analytic: Sequence[np.ndarray | None], numeric: Sequence[np.ndarray],
             inputs: Sequence[np.ndarray], output_shape: tuple[int, ...],
             rerun: Rerun | None = None, names: Sequence[str] | None = None) -> Diagnosis | None:
    """The most likely bug class, given per differentiable input the rule's gradient (as it
    returned it, None for none), the numeric one, the input itself, and the output's shape;
    ``rerun`` (optional) re-runs the rule and the numeric gradient on modified inputs.
    None when every gradient agrees and no float32 trace is found."""
    inputs = [np.asarray(x, dtype=np.float64) for x in inputs]
    numeric = [np.asarray(n, dtype=np.float64) for n in numeric]
    names = list(names) if names is not None else [f"input {k}" for k in range(len(inputs))]
    raw = [None if a is None else np.asarray(a) for a in analytic]
    found: list[Diagnosis] = []
    wrong = [k for k in range(len(inputs)) if not close(raw[k], numeric[k])]
    misshapen = []
    for k in wrong:
        a = raw[k]
        if a is not None and a.shape != inputs[k].shape:
            misshapen.append(k)
            d = not_summed(a.astype(np.float64), numeric[k], inputs[k].shape, output_shape,
                           names[k])
            if d is not None:
                found.append(d)
    wrong = [k for k in wrong if k not in misshapen]
    if not wrong and not found:
        for k, a in enumerate(raw):
            d = None if a is None else float32_computed(a, numeric[k], names[k])
            if d is not None:
                return d
        return None
    pair = swapped(raw, numeric, names)
    if pair is not None:
        found.append(pair[2])
        wrong = [k for k in wrong if k not in pair[:2]]
    sizes = dimension_names(inputs, output_shape, names)
    for k in wrong:
        found.append(_one(k, raw, numeric, inputs, names, sizes, rerun))
    found.sort(key=lambda d: d.kind == UNCLASSIFIED)
    if len(found) == 1:
        return found[0]
    return Diagnosis(found[0].kind, "; ".join([found[0].evidence] + [str(d) for d in found[1:]]))


def _one(k: int, raw: Sequence[np.ndarray | None], numeric: Arrays, inputs: Arrays,
         names: Sequence[str], sizes: dict[int, str], rerun: Rerun | None) -> Diagnosis:
    """The class of input k's wrong gradient."""
    n, name = numeric[k], names[k]
    if raw[k] is None:
        return Diagnosis(NO_GRADIENT, f"the rule returns no gradient (None) for {name}, whose "
                                      f"numeric gradient is not zero")
    original = np.asarray(raw[k])
    a = original.astype(np.float64)
    d = float32_computed(original, n, name)
    if d is None:
        d = sign_flipped(a, n, name) or transposed(a, n, name)
    if d is None:
        d = _again(constant_factor(a, n, name, sizes, named_only=True), k, inputs, rerun,
                   lambda a2, n2: constant_factor(a2, n2, name, sizes, named_only=True))
    if d is None:
        d = _again(constant_along(a, n, name), k, inputs, rerun,
                   lambda a2, n2: constant_along(a2, n2, name))
    # A factor with no name (84.3, not 2 or 1/N), as on a sample whose gradients all lie
    # along one direction, says less than an experiment that explains the error.
    if d is None and rerun is not None:
        d = _experiments(k, inputs, raw, numeric, names, rerun)
    if d is None:
        d = _again(constant_factor(a, n, name, sizes), k, inputs, rerun,
                   lambda a2, n2: constant_factor(a2, n2, name, sizes))
    return d or unclassified(a, n, name)


def _again(d: Diagnosis | None, k: int, inputs: Arrays, rerun: Rerun | None,
           classify: Callable[[np.ndarray, np.ndarray], Diagnosis | None]) -> Diagnosis | None:
    """``d`` (a factor, or an error constant along axes) if ``classify`` finds it again on
    a re-run with the inputs moved (``_moved``: as a forgotten 2, a 1/N or a dropped mean
    term does); None if it does not: it came from the sample's values. ``g * y`` where
    ``g / y`` belongs, on a shrunk sample whose y is -2 everywhere, is off by "a factor
    4 = N" and by "the same amount in every entry". Without a re-run in the op's domain,
    ``d`` is kept."""
    if d is None or rerun is None:
        return d
    again = _try(rerun, _moved(inputs))
    if again is None or again[0][k] is None:
        return d
    found = classify(np.asarray(again[0][k]).astype(np.float64), again[1][k])
    if found is None or found.kind != d.kind:
        return None
    # A factor must be the same number (a forgotten 2 stays 2; exp(x) for softmax(x) was
    # "factor 2" at x = [0, 0], and is 2.33 at the moved sample).
    return d if d.kind != FACTOR or found.evidence == d.evidence else None


def _moved(inputs: Arrays) -> Arrays:
    """The float inputs scaled entry by entry by 1.3 to 1.5, and their zeros moved to 0.1
    to 0.3: a sample shrunk to all zeros stays all zeros when scaled, and on it any two
    rules of one shape are a constant factor apart (s(1+s) and s(1-s) at s = 1/2: 3)."""
    out = []
    for x in inputs:
        if x.dtype.kind == "f":
            pattern = (np.arange(x.size) % 3).reshape(x.shape)
            x = np.where(x == 0, 0.1 + 0.1 * pattern, x * (1.3 + 0.1 * pattern))
        out.append(x)
    return out


def _experiments(k: int, inputs: Arrays, raw: Sequence[np.ndarray | None], numeric: Arrays,
                 names: Sequence[str], rerun: Rerun) -> Diagnosis | None:
    return transposed_operand(k, inputs, numeric, names, rerun) or \
        missing_factor(k, inputs, raw, numeric, names, rerun) or \
        coinciding(k, inputs, raw, numeric, names, rerun)


def kink_diagnosis(got: np.ndarray, expected: np.ndarray, left: np.ndarray, right: np.ndarray,
                   where: str) -> Diagnosis:
    """A kink example failed: ``got`` is the rule's gradient of sum(output), ``expected`` the
    documented convention, ``left``/``right`` the one-sided derivatives, entry by entry.
    Wrong only at a kink when every entry that breaks the convention is at a kink (the two
    one-sided derivatives differ) and the rule's value lies between them."""
    got, expected = np.asarray(got, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    bad = np.argwhere(~(np.abs(got - expected) <= 1e-12)).tolist()
    kinks: list[bool] = []           # each bad entry: at a kink, the rule between its sides
    for idx in map(tuple, bad):
        lo, hi = sorted((float(left[idx]), float(right[idx])))
        slack = 1e-4 * max(1.0, abs(lo), abs(hi))
        kinks.append(bool(at_kink(lo, hi)) and lo - slack <= float(got[idx]) <= hi + slack)
    if not bad:
        return Diagnosis(UNCLASSIFIED, f"{where}: no entry breaks the convention")
    idx = tuple(bad[0])
    values = (f"the rule gives {_num(float(got[idx]))}, the convention is "
              f"{_num(float(expected[idx]))}; one-sided derivatives there: "
              f"{_num(float(left[idx]))} from the left, {_num(float(right[idx]))} from the right")
    if not all(kinks):
        idx = tuple(bad[kinks.index(False)])
        return Diagnosis(UNCLASSIFIED, f"{where}, entry {idx}: wrong where the op is smooth "
                                       f"too: the rule gives {_num(float(got[idx]))}, the "
                                       f"derivative is {_num(float(left[idx]))}")
    side = ("the left-hand one" if abs(got[idx] - left[idx]) <= 1e-4 else
            "the right-hand one" if abs(got[idx] - right[idx]) <= 1e-4 else "between them")
    return Diagnosis(KINK, f"{where}, entry {idx} sits at a kink: {values}; the rule's value "
                           f"is {side}, a valid one-sided choice but not the documented "
                           f"convention ({len(bad)} such entr{'y' if len(bad) == 1 else 'ies'}, "
                           f"all at kinks): check > vs >= (or < vs <=) in the rule's mask")


# --- an op on a sample: the rule's gradients, the numeric ones, re-runs ------------------

class Probe:
    """Gradients of ``op`` with ``params`` at samples like ``args``: the rule's (its backward
    called directly, so a wrong shape or dtype shows; or, with ``mode="jvp"``, J^T v
    assembled from the JVP rule's columns) and the numeric ones, for one seeded cotangent v."""

    def __init__(self, op: Op, args: tuple[Any, ...], params: dict[str, Any], seed: int,
                 mode: str = "vjp"):
        self.op, self.args, self.params, self.mode = op, args, params, mode
        self.diff = differentiable_positions(op, args)
        self.inputs = [np.array(args[i], dtype=np.float64) for i in self.diff]
        self.output_shape = tuple(self._forward(self.inputs).shape)
        self.v = np.random.default_rng(seed).standard_normal(self.output_shape)
        self.names = [f"input {i}" for i in self.diff]

    def _args(self, inputs: Arrays) -> tuple[Any, ...]:
        args = list(self.args)
        for i, x in zip(self.diff, inputs, strict=True):
            args[i] = x
        return tuple(args)

    def _forward(self, inputs: Arrays) -> np.ndarray:
        with no_grad():
            return np.asarray(self.op.apply(*self._args(inputs), **self.params).data)

    def numeric(self, inputs: Arrays) -> Arrays:
        """``<v, f>`` differentiated entry by entry (step STEP relative to each entry)."""
        out = []
        for k, x in enumerate(inputs):
            g = np.zeros(x.shape)
            for j in range(x.size):
                e = np.zeros(x.size)
                e[j] = 1
                d = e.reshape(x.shape)

                def f(t: float, k: int = k, d: np.ndarray = d) -> float:
                    return float(np.sum(self.v * self._forward(_replace(inputs, k, inputs[k] + t * d))))
                g.flat[j] = float(central_difference(f, STEP * max(1.0, abs(float(x.flat[j])))))
            out.append(g)
        return out

    def analytic(self, inputs: Arrays) -> list[np.ndarray | None]:
        leaves, _ = _leaves(self.op, self._args(inputs))
        out = self.op.apply(*leaves, **self.params)
        node = out.node
        if node is None:
            raise ValueError(f"{self.op.name}: no node recorded")
        if self.mode == "vjp":
            result = self.op.backward(node, self.v.copy())
            return [None if result[i] is None else np.asarray(result[i]) for i in self.diff]
        grads: list[np.ndarray | None] = []
        for k, x in zip(self.diff, inputs, strict=True):
            g = np.zeros(x.shape)
            for j in range(x.size):
                tangents: list[np.ndarray | None] = [
                    None if i in self.op.nondiff else np.zeros(t.shape, dtype=t.dtype)
                    for i, t in enumerate(leaves)]
                e = np.zeros(x.shape)
                e.flat[j] = 1
                tangents[k] = e
                g.flat[j] = float(np.sum(self.v * np.asarray(self.op.jvp(node, *tangents))))
            grads.append(g)
        return grads

    def __call__(self, inputs: Arrays) -> tuple[list[np.ndarray | None], Arrays]:
        return self.analytic(inputs), self.numeric(inputs)

    def diagnose(self) -> Diagnosis | None:
        analytic, numeric = self(self.inputs)
        found = diagnose(analytic, numeric, self.inputs, self.output_shape, rerun=self,
                         names=self.names)
        if found is None or self.mode == "vjp":
            return found
        return Diagnosis(found.kind, f"in forward mode (the JVP rule): {found.evidence}")


def diagnose_failure(op: Op, prop: str | None, sample: Sample, seed: int) -> Diagnosis | None:
    """The diagnosis of ``op`` failing property ``prop`` on ``sample``: None for a property
    that does not compare derivatives with numbers, a sample too large, a rule that crashes
    (the failure already shows the crash) or when the rules agree with the numbers here.
    The backward rule is examined first (the JVP rule first for the JVP property)."""
    if prop not in DERIVATIVE_PROPERTIES:
        return None
    args, params = sample
    if sum(np.size(args[i]) for i in differentiable_positions(op, args)) > MAX_ELEMENTS:
        return None
    modes = ("jvp", "vjp") if prop == "jvp_matches_finite_differences" else ("vjp", "jvp")
    for mode in modes:
        try:
            with np.errstate(all="ignore"):
                found = Probe(op, args, params, seed, mode).diagnose()
        except RULE_FAILURES:        # the rule crashes (or exits) here: the failure says so already
            found = None
        if found is not None:
            return found
    return None


def diagnose_kinks(op: Op, spec: OpSpec, step: float = 1e-6) -> Diagnosis | None:
    """The diagnosis of a failing kink example: the first example where the backward rule
    (then the JVP rule's columns) breaks the convention, against the one-sided derivatives
    of sum(output) there (each a central difference around x +- step/2)."""
    for n, (args, params, expected) in enumerate(spec.kink_examples):
        try:
            probe = Probe(op, args, params, seed=0)
        except RULE_FAILURES:        # the forward crashes (or exits) here: the failure says so already
            return None
        probe.v = np.ones(probe.output_shape)          # the convention is for sum(output)
        for mode in ("vjp", "jvp"):
            probe.mode = mode
            try:
                got = probe.analytic(probe.inputs)
            except RULE_FAILURES:
                return None
            if len(got) != len(expected):
                return None
            for k, (g, want) in enumerate(zip(got, expected, strict=True)):
                want = np.asarray(want, dtype=np.float64)
                if g is None or np.shape(g) != want.shape:
                    return None
                if np.all(np.abs(np.asarray(g, dtype=np.float64) - want) <= 1e-15):
                    continue
                left, right = _one_sided(probe, k, step)
                rule = "backward rule" if mode == "vjp" else "JVP rule (forward mode)"
                where = (f"the {rule} at kink example {n} (args {plain_repr(args)}, params "
                         f"{plain_repr(params)}), {probe.names[k]}")
                return kink_diagnosis(np.asarray(g), want, left, right, where)
    return None


def _one_sided(probe: Probe, k: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """(sum(f(x)) - sum(f(x - h e_j))) / h and (sum(f(x + h e_j)) - sum(f(x))) / h for each
    entry j of input k (``gradcheck.one_sided_derivatives``)."""
    def f(x: np.ndarray) -> float:
        return float(np.sum(probe._forward(_replace(probe.inputs, k, x))))
    return one_sided_derivatives(f, probe.inputs[k], step)
