"""Finite-difference checks of the derivative rules, in float64.

``gradcheck`` compares the reverse-mode gradient (every op's VJP rule along the graph)
with central differences; ``jvpcheck`` does the same for forward mode (JVP rules).

Why these numbers: the central difference (f(x+h) - f(x-h)) / 2h has truncation error
~h^2 |f'''| / 6 and rounding error ~eps_mach |f| / h. In float64 (eps_mach ~ 2.2e-16) the
sum is smallest near h = cbrt(eps_mach) ~ 6e-6, giving a relative error ~1e-10; the
defaults (h = 1e-6, atol = 1e-5, rtol = 1e-3, PyTorch's) leave a wide margin for curvature
while still catching any wrong rule (wrong rules are off by O(1), not by 1e-6). In float32
the same estimate cannot beat ~3e-7 relative, which is why every check runs in float64.

Modes:
  * "full": the whole Jacobian, column by column (2 forward runs per input element) against
    one backward run per output element (jvpcheck: one JVP pass per input element). Exact
    location of a mismatch; for small inputs. The basis vectors move one element of one
    input at a time (and a basis cotangent is never negative), which a rule that is not
    linear (a JVP written as f(a + da, b + db) - f(a, b), a backward taking |grad|) passes;
    so full mode also compares one random cotangent (tangent) with mixed signs, all
    outputs (inputs) at once, with the same combination of the numerical Jacobian: one more
    backward (JVP) pass, no more calls of the function.
  * "directional": three random projections v^T J u, cost independent of size (PyTorch's
    fast mode, Chainer's check_backward). u (over all inputs together) and v are random
    unit vectors. The numerical side is the derivative of ONE scalar function
    g(t) = v . f(x + t u), so its error is that of a single central difference (as above),
    whatever the number of elements: atol and rtol apply unscaled. (PyTorch scales atol by
    ||v||_1 ||u||_1, the worst case of elementwise errors all aligned; for 400 elements
    that lets a 1% error in a rule pass, which this check must not.)
  * "complex": the complex-step derivative Im f(x + i h e_j) / h with h = 1e-20, exact to
    rounding for analytic functions (no abs, max, comparisons); use atol = rtol ~ 1e-12.

``accuracycheck`` checks any op (analytic or not) to ~1e-9 relative along one random
projection, with Richardson extrapolation of the same central difference (its docstring
has the error analysis).
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Sequence

import numpy as np

from . import graph
from .modes import no_grad
from .plain import plain_repr
from .tensor import Tensor
from .transforms import gradients

Fn = Callable[..., Tensor]


def central_difference(f: Callable[[float], Any], eps: float) -> np.ndarray:
    """(f(eps) - f(-eps)) / (2 eps): the derivative at t = 0 of a function of one real
    number t. Every numerical derivative in handgrad is this one, with f(t) = F(x + t u)
    for some direction u (gradcheck, jvpcheck, the numeric overlay of the pictures)."""
    return (np.asarray(f(eps), dtype=np.float64) - np.asarray(f(-eps), dtype=np.float64)) / (2 * eps)


# One-sided derivatives further apart than this, relative to the larger (at least 1): a
# kink lies between them. Relative: a smooth function's one-sided derivatives differ by
# about |f''| h, which for exp at 7 (h = 1e-6) is 1.1e-3, and an absolute 1e-3 called it
# a kink (a picture then said a wrong rule there was "a convention: both are right").
KINK_JUMP = 1e-3


def one_sided_derivatives(f: Callable[[np.ndarray], float], x: np.ndarray, step: float
                          ) -> tuple[np.ndarray, np.ndarray]:
    """For each entry j of ``x``, the derivative of ``f`` from the left, (f(x) − f(x − h
    e_j))/h, and from the right, (f(x + h e_j) − f(x))/h, h = ``step``: central
    differences of half the step around x ∓ h/2. Where they differ by more than KINK_JUMP
    relative to the larger (``at_kink``) the derivative jumps within h of x: a kink, where
    a derivative rule takes a convention and a central difference of step h straddles both
    sides. The op checker's kink diagnosis and the pictures' numeric check both read kinks
    so."""
    left, right = np.zeros(x.shape), np.zeros(x.shape)
    for j in range(x.size):
        e = np.zeros(x.shape)
        e.flat[j] = 1
        for out, centre in ((left, -step / 2), (right, step / 2)):
            def g(t: float, centre: float = centre, e: np.ndarray = e) -> float:
                return f(x + (centre + t) * e)
            out.flat[j] = float(central_difference(g, step / 2))
    return left, right


def at_kink(left: Any, right: Any) -> np.ndarray:
    """Where the one-sided derivatives (``one_sided_derivatives``) differ by more than
    KINK_JUMP relative to the larger (at least 1): a kink within the step."""
    left, right = np.asarray(left, dtype=np.float64), np.asarray(right, dtype=np.float64)
    jump = np.abs(left - right) / np.maximum(np.maximum(np.abs(left), np.abs(right)), 1.0)
    return np.asarray(jump > KINK_JUMP)


class GradcheckError(AssertionError):
    """A derivative rule disagrees with finite differences."""


def _holds_float(x: Any) -> bool:
    """Whether a (nested) list or tuple holds a float: a number, a float array or Tensor."""
    if isinstance(x, (list, tuple)):
        return any(_holds_float(e) for e in x)
    if isinstance(x, Tensor):
        x = x.data
    return isinstance(x, (float, np.floating)) or (isinstance(x, np.ndarray) and x.dtype.kind == "f")


def _list_array(x: list[Any] | tuple[Any, ...], i: int, what: str) -> np.ndarray | None:
    """A list or tuple input as an array: a float one is differentiated as an ndarray of
    the same values would be (the function then receives a Tensor in its place); one that
    is no array of numbers (an index such as ``(slice(0, 2), 1)``, strings) is passed
    through as given, unless it holds a float, which is never silently left unchecked."""
    try:
        arr = np.asarray(x)
    except ValueError:                  # ragged: no array at all
        arr = None
    if arr is not None and arr.dtype.kind != "O":
        return arr
    if _holds_float(x):
        raise ValueError(f"{what}: input {i} is a {type(x).__name__} holding floats that is not "
                         f"an array of numbers, so it cannot be differentiated: pass an ndarray "
                         f"(or, for a constant, a Tensor with requires_grad=False)")
    return None


class _Problem:
    """The inputs of a check: float64 copies of the differentiable ones (in the machine's
    byte order, whatever the input's), the rest as given."""

    def __init__(self, fn: Fn, inputs: Sequence[Any], what: str):
        self.fn = fn
        self.what = what
        self.values: list[Any] = []
        self.diff: list[int] = []           # positions of inputs that are perturbed
        self.missing: set[int] = set()      # those the VJP rules gave no gradient (None)
        for i, x in enumerate(inputs):
            is_tensor = isinstance(x, Tensor)
            data = x.data if is_tensor else x
            arr = np.asarray(data) if isinstance(data, (np.ndarray, float, int, np.generic)) \
                else _list_array(data, i, what) if isinstance(data, (list, tuple)) else None
            if arr is not None and arr.dtype.kind == "f" and (
                    x.requires_grad if is_tensor else True):         # differentiable
                precision = arr.dtype.newbyteorder("=")   # byte order changes no value
                if precision != np.float64:
                    warnings.warn(f"{what}: input {i} is {precision}; checking in float64 "
                                  f"(finite differences in {precision} are too coarse)",
                                  stacklevel=3)
                self.values.append(np.array(arr, dtype=np.float64, order="C", copy=True))
                self.diff.append(i)
            else:
                self.values.append(x)
        if not self.diff:
            raise ValueError(f"{what}: no floating-point input to differentiate")

    def call(self, values: Sequence[Any], leaves: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Run fn; differentiable inputs become Tensors (leaves requiring grad if ``leaves``)."""
        args = list(values)
        made = []
        for i in self.diff:
            t = Tensor(values[i], requires_grad=leaves and np.asarray(values[i]).dtype.kind == "f")
            args[i] = t
            made.append(t)
        out = self.fn(*args)
        if not isinstance(out, Tensor):
            raise TypeError(f"{self.what}: fn must return a Tensor, got {type(out).__name__}")
        return out, made

    def entries(self, out: Tensor) -> int:
        """The number of Jacobian entries a check compares: output size times the size of
        every differentiable input. Which inputs are differentiable is decided here, from
        the inputs alone (every float input, unless a Tensor with requires_grad=False),
        never by the rule under test: a rule that returns no gradient (None) for one is
        compared as returning zeros, and fails where the true derivative is not zero. A
        check with nothing to compare (an empty output or inputs) is an error, not a pass."""
        n = out.size * sum(int(np.size(self.values[k])) for k in self.diff)
        if n == 0:
            raise ValueError(f"{self.what}: nothing to compare: the output has shape "
                             f"{out.shape}, the differentiable inputs shapes "
                             f"{[np.shape(self.values[k]) for k in self.diff]}")
        return n

    def pullback(self, out: Tensor, leaves: list[Tensor], v: np.ndarray) -> dict[int, np.ndarray]:
        """J^T v for every differentiable input, by position: the VJP rules' gradients,
        zeros where a rule returned none (None means zero, as the engine takes it)."""
        grads = gradients([out], [v], leaves, retain_graph=True)
        self.missing.update(k for k, g in zip(self.diff, grads, strict=True) if g is None)
        return {k: np.zeros(np.shape(self.values[k])) if g is None else np.asarray(g)
                for k, g in zip(self.diff, grads, strict=True)}

    def hint(self, k: int) -> str:
        """What to say when input ``k``'s gradient is wrong and the rules gave it none."""
        return (" (the rules return no gradient for it, compared as zeros; pass an input not "
                "to be differentiated as a Tensor with requires_grad=False)"
                if k in self.missing else "")

    def evaluate(self, values: Sequence[Any]) -> np.ndarray:
        with no_grad():
            return np.asarray(self.call(values)[0].data)

    def along(self, directions: dict[int, np.ndarray]) -> Callable[[float], np.ndarray]:
        """t -> f(x + t d), d given per input (the others unmoved)."""
        def f(t: float) -> np.ndarray:
            values = list(self.values)
            for k, d in directions.items():
                values[k] = self.values[k] + t * d
            return self.evaluate(values)
        return f

    def complex_step(self, k: int, j: int, h: float) -> np.ndarray:
        values = list(self.values)
        z = self.values[k].astype(np.complex128)
        z.flat[j] += 1j * h
        values[k] = z
        with no_grad():
            return np.imag(np.asarray(self.call(values)[0].data)) / h


def _kink_note(problem: _Problem, k: int, idx: tuple[int, ...], eps: float) -> str:
    """For the entry ``idx`` = (output, element) of input ``k``'s Jacobian that failed: a
    note when that element sits within eps of a kink of the function (relu at 0), where
    the one-sided derivatives differ, a rule takes a convention and a central difference
    averages both sides; "" otherwise (a right relu failed at 0 with a message blaming its
    rule)."""
    i, j = idx
    e = np.zeros(problem.values[k].shape)
    e.flat[j] = 1.0
    g = problem.along({k: e})
    with np.errstate(all="ignore"):              # at a pole: no kink to name (the pole note)
        left = float(central_difference(lambda t: np.ravel(g(t - eps / 2))[i], eps / 2))
        right = float(central_difference(lambda t: np.ravel(g(t + eps / 2))[i], eps / 2))
    if not (np.isfinite(left) and np.isfinite(right) and at_kink(left, right)):
        return ""
    return (f"; that input lies within eps = {eps:g} {AT_A_KINK} (one-sided "
            f"derivatives {plain_repr(left)} from the left, {plain_repr(right)} from the right): "
            f"a rule takes a convention there, which a central difference cannot check; "
            f"check at inputs away from the kink")


AT_A_KINK = "of a kink of the function"     # in a failure's message: its cause, named
NOT_REPEATABLE = "differs between two backward passes"     # so is this one


def _deterministic(problem: _Problem, out: Tensor, leaves: list[Tensor]) -> None:
    """The same cotangent (ones: every output) through the same graph gives the same
    gradients: a rule that draws random numbers (a dropout mask drawn again in backward)
    or keeps state between calls passed a check by luck (a quarter to half of the time);
    a GradcheckError, which names the op whose backward changed what its forward saved
    (a cache written in place) when one did."""
    nodes = [t.node for t in graph.topological_order([out]) if t.node is not None]
    saved = [[a.copy() for a in graph.saved_arrays(node.saved)] for node in nodes]
    v = np.ones(out.shape)
    jtv = problem.pullback(out, leaves, v)
    runs = [problem.pullback(out, leaves, v) for _ in range(2)]
    for k in problem.diff:
        if not all(np.array_equal(run[k], jtv[k], equal_nan=True) for run in runs):
            what = f"{NOT_REPEATABLE} with the same cotangent through the same graph"
            for node, before in zip(nodes, saved, strict=True):
                now = list(graph.saved_arrays(node.saved))
                if len(now) != len(before) or not all(
                        np.array_equal(a, b, equal_nan=True) for a, b in zip(now, before, strict=True)):
                    raise GradcheckError(
                        f"gradcheck: input {k}'s gradient {what}: the backward rule of op "
                        f"'{node.op.name}' wrote into the values its forward saved (a cache "
                        f"changed in place, as p[range(N), y] -= 1 without a copy); copy them "
                        f"before changing them")
            raise GradcheckError(
                f"gradcheck: input {k}'s gradient {what}: a rule draws random numbers (a "
                f"mask drawn in backward instead of saved in forward) or keeps state between "
                f"calls, and no check can hold")


def _analytic_here(problem: _Problem, complex_jacobian: dict[int, np.ndarray],
                   rng: np.random.Generator, out_shape: tuple[int, ...]) -> None:
    """The complex step is the derivative only where f is analytic: abs, max, comparisons
    and branches on a sign see the real part alone (Im|x + ih| / h = 0), so a rule that
    forgets the chain through |x| matched it, and a right sigmoid written with -|x| failed.
    One real central difference along a random direction (two calls of f) must agree with
    the complex-step Jacobian to the central difference's own tolerance; otherwise a
    GradcheckError says the mode does not apply here."""
    u = _unit_directions({k: _random_like(rng, problem.values[k].shape) for k in problem.diff})
    real = np.asarray(central_difference(problem.along(u), 1e-6)).ravel()
    via_complex = sum(complex_jacobian[k] @ u[k].ravel() for k in problem.diff)
    tolerance = _tolerance(real, 1e-5, 1e-3)
    bad = ~(np.abs(via_complex - real) <= tolerance)
    if bad.any():
        i = int(np.argmax(bad))
        raise GradcheckError(
            f"gradcheck (complex): the function is not analytic at these inputs: the "
            f"derivative of output{_index(i, out_shape)} along a random direction is "
            f"{plain_repr(float(real[i]))} by a real central difference and "
            f"{plain_repr(float(via_complex[i]))} by the complex step (abs, max, comparisons "
            f"and branches on a sign see only the real part of a complex input); use "
            f"mode='full'")


def relative_error(analytic: Any, reference: Any) -> float:
    """The largest |analytic - reference| / max(|reference|, 1): the error a check reports
    (relative for big values, absolute for small ones; NaN for NaN)."""
    a, r = np.asarray(analytic, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - r) / np.maximum(np.abs(r), 1.0)))


def _compare(what: str, analytic: np.ndarray, numerical: np.ndarray, tolerance: np.ndarray,
             describe: Callable[[tuple[int, ...]], str], explain: str,
             note: Callable[[tuple[int, ...]], str] | None = None) -> float:
    """Entry by entry, |analytic - numerical| <= tolerance (NaN fails); GradcheckError
    naming the first entry that is not, the values, the error and its tolerance
    (``explain`` says how the tolerance is made)."""
    analytic, numerical = np.asarray(analytic), np.asarray(numerical)
    with np.errstate(invalid="ignore"):       # inf - inf: NaN, a failure unless equal below
        err = np.abs(analytic - numerical)
    tolerance = np.broadcast_to(tolerance, err.shape)
    # NaN counts as bad. A numerical value that is Inf or NaN (f overflowed at x ± eps, or
    # a pole) makes its own tolerance Inf: only an analytic value equal to it passes there.
    same = analytic == numerical
    bad = ~((err <= tolerance) & np.isfinite(numerical) | same)
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        pole = "" if np.isfinite(numerical[idx]) else \
            ("; the numerical derivative is not finite: f overflows or meets a pole within eps "
             "of this point, where nothing can be checked (choose other inputs)")
        raise GradcheckError(
            f"{what}: {describe(idx)}: analytic {plain_repr(analytic[idx])} vs numerical "
            f"{plain_repr(numerical[idx])}, error {err[idx]:.3g} > tolerance {tolerance[idx]:.3g} "
            f"({explain}) ({int(bad.sum())} of {bad.size} entries disagree){pole}"
            f"{note(idx) if note is not None else ''}")
    return relative_error(analytic, numerical)


def _tolerance(numerical: np.ndarray, atol: float, rtol: float) -> np.ndarray:
    """How far an analytic derivative may be from ``numerical``, entry by entry."""
    return atol + rtol * np.abs(numerical)


def _explain(atol: float, rtol: float) -> str:
    return f"atol {atol:g} + rtol {rtol:g} * |numerical|"


# The random combinations of full mode compare a rule's result with the same combination
# of the numerical Jacobian's entries; each entry is within its tolerance, so the
# combination is within the same combination of the tolerances (weights |v_i|), plus
# the rounding of the rule's own sum over the products (as in the transpose property).
COMBINATION_ROUNDING = 1e-10


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


PROJECTIONS = 3      # directional mode's independent random projections


def _unit(x: np.ndarray) -> np.ndarray:
    return x / max(float(np.linalg.norm(x)), 1e-300)


def _unit_directions(u: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """Scale the directions of all inputs together to one unit vector."""
    norm = float(np.sqrt(sum(np.sum(d * d) for d in u.values())))
    return {k: d / max(norm, 1e-300) for k, d in u.items()}


def _random_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape)


def gradcheck(fn: Fn, inputs: Sequence[Any], *, eps: float = 1e-6, atol: float = 1e-5,
              rtol: float = 1e-3, mode: str = "full", check_forward_mode: bool = False,
              seed: int = 0, raise_exception: bool = True) -> bool:
    """Check the backward (VJP) rules behind ``fn(*inputs)`` against float64 differences.

    Floating-point arrays, numbers, lists and tuples of them (differentiated as the
    ndarray they make, passed to ``fn`` as a Tensor) and Tensors with requires_grad=True are
    differentiated; integer arrays (labels), boolean masks, lists that hold no float (an
    index) and Tensors with requires_grad=False are passed through unperturbed; a list
    holding floats that makes no array is a ValueError, never skipped. Every differentiated
    input is compared, whatever the rules return: no gradient (None) counts as zeros,
    against the finite difference (a float target not to be differentiated is passed as a
    Tensor with requires_grad=False). Nothing to compare (an empty output or inputs) is a
    ValueError, never a pass. Returns True, or raises GradcheckError naming the input, the
    element, the analytic and numerical values and the error; with
    ``raise_exception=False`` (as PyTorch's gradcheck) a mismatch returns False instead.
    Errors in the call itself (bad arguments, a function that raises) always raise.
    """
    try:
        gradcheck_error(fn, inputs, eps=eps, atol=atol, rtol=rtol, mode=mode,
                        check_forward_mode=check_forward_mode, seed=seed)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def gradcheck_error(fn: Fn, inputs: Sequence[Any], *, eps: float = 1e-6, atol: float = 1e-5,
                    rtol: float = 1e-3, mode: str = "full", check_forward_mode: bool = False,
                    seed: int = 0) -> float:
    """``gradcheck``, returning the worst error it saw (see ``relative_error``)."""
    if mode not in ("full", "directional", "complex"):
        raise ValueError(f"gradcheck: mode must be 'full', 'directional' or 'complex', "
                         f"got {plain_repr(mode)}")
    problem = _Problem(fn, inputs, "gradcheck")
    rng = np.random.default_rng(seed)
    out, leaves = problem.call(problem.values, leaves=True)
    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any differentiable input")
    out_shape = out.shape

    worst = 0.0
    problem.entries(out)
    if mode == "directional":
        # Several independent projections: one would let an error confined to a few
        # entries pass whenever u and v happen to weigh them little (an off-by-one at one
        # index of 400 passed seed 0 every time); each costs one VJP and two calls of fn.
        _deterministic(problem, out, leaves)
        for p in range(PROJECTIONS):
            label = f"projection {p + 1} of {PROJECTIONS}, v^T J u (unit v, u)"

            def named(_: tuple[int, ...], label: str = label) -> str:
                return label

            v = _unit(_random_like(rng, out_shape))
            u = _unit_directions({k: _random_like(rng, problem.values[k].shape) for k in problem.diff})
            jtv = problem.pullback(out, leaves, v)
            projected = sum(float(np.sum(jtv[k] * u[k])) for k in problem.diff)
            difference = float(np.sum(v * central_difference(problem.along(u), eps)))
            worst = max(worst, _compare(
                "gradcheck (directional)", np.array(projected), np.array(difference),
                _tolerance(np.array(difference), atol, rtol),
                named,
                _explain(atol, rtol)))
    else:
        # Analytic Jacobian row by row: backward with each output basis vector.
        n_out = int(np.prod(out_shape))
        rows = {k: np.zeros((n_out, problem.values[k].size)) for k in problem.diff}
        for i in range(n_out):
            e = np.zeros(n_out)
            e[i] = 1
            for k, g in problem.pullback(out, leaves, e.reshape(out_shape)).items():
                rows[k][i] = g.ravel()
        _deterministic(problem, out, leaves)    # before any comparison: luck passed one
        numerical: dict[int, np.ndarray] = {}
        for k in problem.diff:
            x = problem.values[k]
            numerical[k] = np.zeros((n_out, x.size))
            for j in range(x.size):
                if mode == "complex":
                    numerical[k][:, j] = problem.complex_step(k, j, 1e-20).ravel()
                else:
                    d = np.zeros(x.size)
                    d[j] = 1
                    numerical[k][:, j] = central_difference(
                        problem.along({k: d.reshape(x.shape)}), eps).ravel()
        if mode == "complex":
            _analytic_here(problem, numerical, rng, out_shape)
        tolerances = {k: _tolerance(numerical[k], atol, rtol) for k in problem.diff}
        for k in problem.diff:
            def describe(idx: tuple[int, ...], k: int = k,
                         shape: tuple[int, ...] = problem.values[k].shape) -> str:
                return (f"input {k}{problem.hint(k)}, d output{_index(idx[0], out_shape)}"
                        f" / d input{_index(idx[1], shape)}")
            def kink(idx: tuple[int, ...], k: int = k) -> str:
                return _kink_note(problem, k, idx, eps)
            worst = max(worst, _compare(f"gradcheck ({mode})", rows[k], numerical[k],
                                        tolerances[k], describe, _explain(atol, rtol), kink))
        # The basis vectors e_i above are never negative and move one output at a time:
        # a rule that is not linear in its incoming gradient (|grad|, a grad that is
        # squared, a branch on its sign) agrees with every one of them. One random
        # cotangent with mixed signs, over all outputs at once, must give the same
        # combination of the Jacobian's rows (an extra backward pass, no extra calls of fn).
        v = _random_like(rng, out_shape).ravel()
        jtv = problem.pullback(out, leaves, v.reshape(out_shape))
        for k in problem.diff:
            def where(idx: tuple[int, ...], k: int = k,
                      shape: tuple[int, ...] = problem.values[k].shape) -> str:
                return (f"input {k}{problem.hint(k)}, d input{_index(idx[0], shape)} of J^T v "
                        f"for a random cotangent v with mixed signs (the basis cotangents "
                        f"agree: is the rule linear in its incoming gradient?)")
            _compare(f"gradcheck ({mode})", jtv[k].ravel(), numerical[k].T @ v,
                     tolerances[k].T @ np.abs(v)
                     + COMBINATION_ROUNDING * (np.abs(rows[k]).T @ np.abs(v)),
                     where, "the same combination of the entries' tolerances")

    if check_forward_mode:
        worst = max(worst, jvpcheck_error(
            fn, inputs, eps=eps, atol=atol, rtol=rtol,
            mode="directional" if mode == "directional" else "full", seed=seed))
    return worst


def jvpcheck(fn: Fn, inputs: Sequence[Any], *, eps: float = 1e-6, atol: float = 1e-5,
             rtol: float = 1e-3, mode: str = "full", seed: int = 0,
             raise_exception: bool = True) -> bool:
    """Check the forward-mode (JVP) rules behind ``fn(*inputs)`` against float64 differences.

    "full": J e_j for every input element j (one JVP pass each over the recorded graph),
    then J u for one random tangent u moving all inputs at once (mixed signs), against the
    same combination of the columns; "directional": J u for one random unit tangent u. ``raise_exception=False``
    returns False on a mismatch instead of raising GradcheckError.
    """
    try:
        jvpcheck_error(fn, inputs, eps=eps, atol=atol, rtol=rtol, mode=mode, seed=seed)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def jvpcheck_error(fn: Fn, inputs: Sequence[Any], *, eps: float = 1e-6, atol: float = 1e-5,
                   rtol: float = 1e-3, mode: str = "full", seed: int = 0) -> float:
    """``jvpcheck``, returning the worst error it saw (see ``relative_error``)."""
    if mode not in ("full", "directional"):
        raise ValueError(f"jvpcheck: mode must be 'full' or 'directional', got {plain_repr(mode)}")
    problem = _Problem(fn, inputs, "jvpcheck")
    rng = np.random.default_rng(seed + 1)
    out, leaves = problem.call(problem.values, leaves=True)
    if not out.requires_grad:
        raise GradcheckError("jvpcheck: the output does not depend on any differentiable input")

    def tangent(directions: dict[int, np.ndarray]) -> np.ndarray:
        seeds = {id(leaves[problem.diff.index(k)]): d for k, d in directions.items()}
        (analytic,) = graph.forward_tangents([out], seeds)
        return np.asarray(analytic)

    problem.entries(out)
    if mode == "directional":
        u = _unit_directions({k: _random_like(rng, problem.values[k].shape) for k in problem.diff})
        numerical = central_difference(problem.along(u), eps)
        return _compare("jvpcheck", tangent(u), numerical, _tolerance(numerical, atol, rtol),
                        lambda idx: f"random unit tangent, output{idx}", _explain(atol, rtol))
    # The Jacobian column by column: J e_j from the JVP rules and from differences.
    out_shape, n_out = out.shape, out.size
    analytic: dict[int, np.ndarray] = {}
    columns: dict[int, np.ndarray] = {}
    for k in problem.diff:
        x = problem.values[k]
        analytic[k], columns[k] = np.zeros((n_out, x.size)), np.zeros((n_out, x.size))
        for j in range(x.size):
            d = np.zeros(x.size)
            d[j] = 1
            analytic[k][:, j] = tangent({k: d.reshape(x.shape)}).ravel()
            columns[k][:, j] = central_difference(problem.along({k: d.reshape(x.shape)}), eps).ravel()
    tolerances = {k: _tolerance(columns[k], atol, rtol) for k in problem.diff}
    worst = 0.0
    for k in problem.diff:
        def describe(idx: tuple[int, ...], k: int = k,
                     shape: tuple[int, ...] = problem.values[k].shape) -> str:
            return f"tangent e_{_index(idx[1], shape)} of input {k}, output{_index(idx[0], out_shape)}"
        worst = max(worst, _compare("jvpcheck", analytic[k], columns[k], tolerances[k], describe,
                                    _explain(atol, rtol)))
    # Each e_j moves one element of one input: a rule that is not linear in the tangents
    # (a JVP written as f(a + da, b + db) - f(a, b), one that handles only one moving
    # input) agrees with every one of them. One random tangent with mixed signs, all
    # inputs moving at once, must give the same combination of the columns (one more JVP
    # pass, no extra calls of fn).
    u = {k: _random_like(rng, problem.values[k].shape) for k in problem.diff}
    _compare("jvpcheck", tangent(u).ravel(),
             sum(columns[k] @ u[k].ravel() for k in problem.diff),
             sum(tolerances[k] @ np.abs(u[k].ravel())
                 + COMBINATION_ROUNDING * (np.abs(analytic[k]) @ np.abs(u[k].ravel()))
                 for k in problem.diff),
             lambda idx: (f"a random tangent with mixed signs over all inputs at once, output"
                          f"{_index(idx[0], out_shape)} (the basis tangents agree: is the rule "
                          f"linear in the tangents?)"),
             "the same combination of the entries' tolerances")
    return worst


# --- the accurate check ------------------------------------------------------------------

def extrapolated_difference(f: Callable[[float], float], h: float, levels: int = 5,
                            shrink: float = 2.0) -> tuple[float, float]:
    """f'(0) for a scalar function of one real number; returns (estimate, smallest step).

    The central difference D(h) = (f(h) - f(-h)) / 2h equals f'(0) + c1 h^2 + c2 h^4 + ...
    (only even powers: the odd terms of the two Taylor series cancel). Richardson's idea:
    D at steps h, h/s, h/s^2, ... and combinations that cancel c1, then c2, ...:

        R[k][j] = R[k][j-1] + (R[k][j-1] - R[k-1][j-1]) / (s^(2j) - 1),  R[k][0] = D(h / s^k)

    Column j is accurate to order h^(2j+2). Each new entry's distance to its two parents
    estimates its error; the entry with the smallest estimate is returned. Shrinking h
    stops once that estimate grows (rounding, ~eps |f| / h, has taken over), and after
    ``levels`` steps in any case (the smallest step bounds the rounding error).
    """
    table: list[list[float]] = []
    best, best_error, smallest = float(central_difference(f, h)), float("inf"), h
    for k in range(levels):
        smallest = h / shrink ** k
        row = [float(central_difference(f, smallest))]
        for j in range(1, k + 1):
            row.append(row[j - 1] + (row[j - 1] - table[k - 1][j - 1]) / (shrink ** (2 * j) - 1))
            error = max(abs(row[j] - row[j - 1]), abs(row[j] - table[k - 1][j - 1]))
            if error <= best_error:
                best, best_error = row[j], error
        if k and abs(row[k] - table[k - 1][k - 1]) >= 2 * best_error:
            break
        table.append(row)
    return best, smallest


EPS = float(np.finfo(np.float64).eps)


def accuracycheck(fn: Fn, inputs: Sequence[Any], *, rtol: float = 1e-9, h: float = 0.01,
                  seed: int = 0, forward_mode: bool = True) -> float:
    """Check the VJP and the JVP behind ``fn(*inputs)`` to ``rtol`` (default 1e-9) along
    one random projection, against the extrapolated difference above. Returns the error
    relative to the projection's scale; raises GradcheckError beyond the tolerance.

    What it catches that ``gradcheck`` cannot: a derivative constant typed with 4 digits,
    or computed through a float32 copy, is off by 1e-7 to 1e-5 relative, inside the
    central difference's tolerance (1e-3) but far outside this one.

    The numbers. g(t) = v . f(x + t u), u a random unit vector over all inputs, v a random
    unit vector over the output. Analytic: ``g'(0) = <J^T v, u>`` (VJP) ``= <v, J u>`` (JVP).
    Scale: |g'(0)| <= S = ||J^T v|| (||u|| = 1; also ||J u||, and at least 1e-6 so that a
    zero derivative is compared absolutely), and a relative error d in the rule's entries
    shows as about d S / sqrt(n) for n input elements.

    Truncation: the extrapolation starts at h = 0.01, a tenth of the 0.1 the strategies
    keep from every kink, and a twentieth of the 0.2 they keep from the poles (log, div):
    no element moves by more than |t| <= h (||u|| = 1). With 5 levels it reaches order
    h^10: for the ops' functions on those domains, where (h / distance to the nearest
    singularity)^2 <= 0.0025, the truncation error is <= 1e-12 relative. (Starting at
    h = 0.05 is not enough: log near 0.25 was then off by 3e-8, found by the thorough
    profile.)

    Rounding: each g(t) is off by a few ulps of the outputs, sum_i |v_i| |f_i|, and by the
    inputs' own rounding (eps |x| each) moved through the Jacobian, at most
    max|x| ||J^T v||_1: M = sum_i |v_i| |f_i| + max|x| ||J^T v||_1. Each central difference
    at step h_k turns that into <= 4 eps M / h_k, and the extrapolation at most doubles it
    (its weights sum in absolute value to < 2). So the tolerance is rtol S + 8 eps M /
    h_min, h_min = h / 16 the smallest step taken. For inputs of size ~3 the second term
    is ~1e-10 S: the check resolves 1e-9, a hundred times below the 1e-7 of a float32 step
    or a 4-digit constant. (An earlier M took max|x| once per output, as if every output
    moved 1:1 with the inputs: at x ~ 1e6, log's derivative 2/x passed.)

    The extrapolation assumes f is smooth (many times differentiable) within h of x: a
    function whose derivative has a kink there (softsign, a Huber loss at its threshold)
    must be sampled at least h away from it, as the strategies keep 0.1 from kinks.

    ``forward_mode=False`` checks the VJP alone (for rules without a JVP rule).
    """
    problem = _Problem(fn, inputs, "accuracycheck")
    rng = np.random.default_rng(seed + 2)
    out, leaves = problem.call(problem.values, leaves=True)
    if not out.requires_grad:
        raise GradcheckError("accuracycheck: the output does not depend on any differentiable input")
    problem.entries(out)
    v = _unit(_random_like(rng, out.shape))
    u = _unit_directions({k: _random_like(rng, problem.values[k].shape) for k in problem.diff})
    jtv = problem.pullback(out, leaves, v)
    via_vjp = sum(float(np.sum(jtv[k] * u[k])) for k in jtv)
    checked = [("VJP <J^T v, u>", via_vjp)]
    ju = np.zeros(0)
    if forward_mode:
        (ju,) = graph.forward_tangents([out], {id(leaves[problem.diff.index(k)]): d
                                              for k, d in u.items()})
        checked.append(("JVP <v, J u>", float(np.sum(v * ju))))
    along = problem.along(u)
    # Rounding of g: a few ulps of each output, and of each input moved through the
    # Jacobian: |x| times ||J^T v||_1, not |x| per output (as if every output moved 1:1
    # with the inputs, which let log's 2/x pass at x ~ 1e6, where it is below 3e-6).
    inputs_size = max(float(np.max(np.abs(problem.values[k]), initial=0.0)) for k in u)
    moved = sum(float(np.sum(np.abs(g))) for g in jtv.values())
    magnitude = float(np.sum(np.abs(v) * np.abs(along(0.0)))) + inputs_size * moved
    numerical, h_min = extrapolated_difference(lambda t: float(np.sum(v * along(t))), h)
    scale = max(float(np.sqrt(sum(np.sum(g * g) for g in jtv.values()))),
                float(np.linalg.norm(ju)), 1e-6)
    rounding = 8 * EPS * magnitude / h_min
    worst = 0.0
    for what, analytic in checked:
        err = abs(analytic - numerical)
        if not err <= rtol * scale + rounding:
            raise GradcheckError(
                f"accuracycheck: {what} = {plain_repr(analytic)}, extrapolated difference "
                f"{plain_repr(numerical)}: error {err:.3g} > rtol {rtol:g} * scale {scale:.3g} + "
                f"rounding {rounding:.2g} (a constant with too few digits? a step computed "
                f"in float32? or a kink of the derivative itself within {h:g} of the "
                f"sample, which the samples must avoid)")
        worst = max(worst, err / scale)
    return worst
