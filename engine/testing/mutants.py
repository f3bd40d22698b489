"""Mutation testing of an op's spec: plant a generic bug in the op's rules and see whether
the spec's samples and the properties catch it.

A spec can be too weak to find a bug: a strategy that never draws a square matrix cannot
tell a gradient from its transpose; one that never draws a broadcast second input cannot
tell two inputs' gradients apart. ``run_mutants`` makes each mutant of an op (its class
with one rule changed), runs the op's spec on it, and reports the mutants nobody caught,
each with the reason: either the mutant never changed what a rule returns on the samples
drawn (the samples are too narrow: which kind of sample would show it), or it did and no
property failed (the tolerances are too loose).

The mutants (each needs only the op's signature, so they apply to any op):

    vjp x1.01            every gradient scaled by 1.01
    vjp negated          every gradient negated
    vjp transposed       each gradient with its last two axes swapped (where they are equal)
    drop <input>         no gradient for one input (None)
    swap <a>, <b>        two inputs' gradients exchanged
    jvp ignores <input>  the JVP run with that input's tangent set to zero
    writes into grad     the backward rule multiplies its incoming gradient in place

Three more plant the bugs only generic samples (distinct entries) reveal, the kind a spec
drawing nearly constant arrays lets through:

    cross term dropped <input>     a term proportional to (x - mean(x)) missing from x's
                                   gradient, as when a batch-norm rule drops a factor
                                   from the term that vanishes on a constant column
    only where equal <a>, <b>      a's gradient off by a term proportional to a - b (right
                                   only where the two inputs coincide)
    sum over wrong axis <input>    x's gradient off by the gap between x's row and column
                                   means (a statistic taken over the wrong axis of a square)
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import settings

from ..broadcast import sum_to
from ..graph import Node
from ..op import Op
from .check import run_op
from .properties import _leaves, _tangent_args, differentiable_positions, has_jvp
from .specs import OpSpec, Sample, spec_for

Rule = Callable[..., Any]


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``backward(original, ctx, grad)`` and/or ``jvp(original, ctx,
    *tangents)`` replace the op's rules; ``unseen`` says which samples would show it."""

    name: str
    unseen: str
    backward: Rule | None = None
    jvp: Rule | None = None
    side_effect: bool = False          # always differs (it writes), no need to compare
    # Which samples the bug can exist on at all (None: every sample). A mutant that never
    # applied is left out of the report: a bias is 1-D by nature, not by a weak spec.
    applies: Callable[[Sample], bool] | None = None
    # The input whose gradient the mutant changes (dropped, or a term planted in it; None:
    # every input's). It can exist only on samples where the rule gives that input a
    # gradient (not None: a rule returning None for an input has nothing there to change).
    planted_on: int | None = None


def _each(result: tuple[Any, ...], change: Callable[[int, Any], Any]) -> tuple[Any, ...]:
    return tuple(None if g is None else change(i, g) for i, g in enumerate(result))


def _transpose(g: Any) -> Any:
    g = np.asarray(g)
    return np.swapaxes(g, -1, -2) if g.ndim >= 2 and g.shape[-1] == g.shape[-2] else g


def _input_names(op: Op) -> list[tuple[int, str]]:
    """(position, name) of the inputs a gradient can flow to (for ``*xs``: the first two)."""
    sig = op.signature
    names = [f"{sig.inputs[0] if sig.inputs else 'xs'}[{i}]" for i in range(2)] \
        if sig.varargs else list(sig.inputs)
    return [(i, n) for i, n in enumerate(names) if i not in op.nondiff]


def mutants_for(op: Op) -> list[Mutant]:
    """The generic mutants that apply to ``op`` (its inputs decide drop/swap/jvp ones)."""
    found = [
        Mutant("vjp x1.01", "every gradient on the samples drawn was zero",
               backward=lambda rule, ctx, grad: _each(rule(ctx, grad), lambda i, g: g * 1.01)),
        Mutant("vjp negated", "every gradient on the samples drawn was zero",
               backward=lambda rule, ctx, grad: _each(rule(ctx, grad), lambda i, g: -g)),
        Mutant("vjp transposed",
               "no sample gave an input a gradient whose last two axes are equal and not "
               "symmetric: draw square matrices (2-D inputs with equal sides)",
               backward=lambda rule, ctx, grad: _each(rule(ctx, grad), lambda i, g: _transpose(g))),
    ]
    inputs = _input_names(op)
    for k, name in inputs:
        found.append(Mutant(
            f"drop {name}",
            f"{name} never got a nonzero gradient on the samples drawn (an optional input "
            f"the strategy never draws, or a derivative that is always 0 there)",
            backward=lambda rule, ctx, grad, k=k: _each(
                rule(ctx, grad), lambda i, g: None if i == k else g), planted_on=k))
    for (k, a), (m, b) in zip(inputs, inputs[1:], strict=False):
        found.append(Mutant(
            f"swap {a}, {b}",
            f"{a} and {b} got the same gradient on every sample drawn (same shape, same "
            f"values): draw inputs of different shapes (a broadcast second input) or "
            f"values that give them different gradients",
            backward=lambda rule, ctx, grad, k=k, m=m: _swapped(rule(ctx, grad), k, m)))
    for k, name in inputs:
        if not has_jvp(op):                 # a rule checked without a JVP has no JVP mutant
            break
        found.append(Mutant(
            f"jvp ignores {name}",
            f"the tangent of {name} never changed the JVP on the samples drawn ({name} "
            f"never drawn, or its derivative always 0)",
            jvp=lambda rule, ctx, *ts, k=k: rule(ctx, *[
                np.zeros_like(t) if i == k and t is not None else t for i, t in enumerate(ts)])))
    found.append(Mutant("writes into grad", "its backward rule never ran",
                        backward=_writes_into_grad, side_effect=True))
    return found + _generic_only_mutants(inputs)


# How big a planted term is, relative to the gradient's own scale: far above any spec's
# tolerance, so a mutant that survives was unseen, not tolerated.
_PLANTED = 0.25


def _scale(g: np.ndarray, grad: np.ndarray) -> float:
    """A size for a planted term: the gradient's mean magnitude (1 if it is zero), so the
    term is visible next to the true gradient on any sample where it is nonzero."""
    size = float(np.mean(np.abs(g))) if g.size else 0.0
    return size if size > 0 else float(np.mean(np.abs(grad))) or 1.0


def _input_value(ctx: Node, k: int) -> np.ndarray:
    return np.asarray(ctx.inputs[k].data, dtype=np.float64)


Term = Callable[[Node], "np.ndarray | None"]


def _planted(k: int, term: Term) -> Rule:
    """A backward mutant that adds ``term(ctx)`` (an array of input k's shape; None: no
    term on this call) to input k's gradient, scaled to the gradient's size."""
    def backward(rule: Rule, ctx: Node, grad: np.ndarray) -> tuple[Any, ...]:
        def change(i: int, g: Any) -> Any:
            g = np.asarray(g)
            if i != k or k >= len(ctx.inputs) or g.shape != ctx.inputs[k].shape:
                return g                            # *xs with fewer inputs, a wrong shape
            t = term(ctx)
            return g if t is None else (g + _PLANTED * _scale(g, grad) * t).astype(g.dtype)
        return _each(rule(ctx, grad), change)
    return backward


def _centred(k: int) -> Term:
    """x - mean(x): the term a dropped cross term leaves out, zero exactly where x is
    constant (x - mean(x) can leave rounding there)."""
    def term(ctx: Node) -> np.ndarray:
        x = _input_value(ctx, k)
        return np.zeros_like(x) if np.all(x == x.flat[0]) else x - x.mean()
    return term


def _broadcastable(*shapes: tuple[int, ...]) -> bool:
    try:
        np.broadcast_shapes(*shapes)
    except ValueError:
        return False
    return True


def _gap(k: int, m: int) -> Term:
    """a - b summed back to a's shape: zero only where the two inputs are equal (None for
    inputs that do not line up, as matmul's)."""
    def term(ctx: Node) -> np.ndarray | None:
        if m >= len(ctx.inputs):
            return None
        a, b = _input_value(ctx, k), _input_value(ctx, m)
        if not _broadcastable(a.shape, b.shape):
            return None
        return sum_to(np.broadcast_to(a - b, np.broadcast_shapes(a.shape, b.shape)), a.shape)
    return term


def _wrong_axis(k: int) -> Term:
    """A statistic of x taken over the wrong axis (a row mean where the column mean was
    meant): the gap between the two, zero unless x is a square whose row and column means
    differ."""
    def term(ctx: Node) -> np.ndarray | None:
        x = _input_value(ctx, k)
        if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
            return None
        gap = x.mean(axis=-1, keepdims=True) - np.swapaxes(x.mean(axis=-2, keepdims=True), -1, -2)
        return np.broadcast_to(gap, x.shape)
    return term


def _square_float(x: Any) -> bool:
    """A differentiable stack of square matrices: what a statistic can be taken over the
    wrong axis of (an integer exponent gets no gradient at all)."""
    x = np.asarray(x)
    return x.dtype.kind == "f" and x.ndim >= 2 and x.shape[-1] == x.shape[-2] > 1


def _generic_only_mutants(inputs: list[tuple[int, str]]) -> list[Mutant]:
    found = []
    for k, name in inputs:
        found.append(Mutant(
            f"cross term dropped {name}",
            f"{name} was constant (all entries equal) on every sample drawn: draw generic "
            f"samples (distinct entries, engine.testing.strategies.generic)",
            backward=_planted(k, _centred(k)),
            applies=functools.partial(_has_several_entries, k=k), planted_on=k))
    for (k, a), (m, b) in zip(inputs, inputs[1:], strict=False):
        found.append(Mutant(
            f"only where equal {a}, {b}",
            f"{a} and {b} were equal on every sample drawn: draw them independently",
            backward=_planted(k, _gap(k, m)), planted_on=k))
    for k, name in inputs:
        found.append(Mutant(
            f"sum over wrong axis {name}",
            f"{name} was never a square matrix whose row means differ from its column "
            f"means: draw generic square matrices",
            backward=_planted(k, _wrong_axis(k)),
            applies=functools.partial(_has_square_input, k=k), planted_on=k))
    return found


def _has_several_entries(sample: Sample, k: int) -> bool:
    """A float input of two entries or more: a scalar has no x - mean(x) to drop."""
    return k < len(sample[0]) and np.asarray(sample[0][k]).dtype.kind == "f" \
        and np.size(sample[0][k]) >= 2


def _has_square_input(sample: Sample, k: int) -> bool:
    return k < len(sample[0]) and _square_float(sample[0][k])


def _swapped(result: tuple[Any, ...], k: int, m: int) -> tuple[Any, ...]:
    out = list(result)
    if max(k, m) < len(out):
        out[k], out[m] = out[m], out[k]
    return tuple(out)


def _writes_into_grad(rule: Rule, ctx: Node, grad: np.ndarray) -> tuple[Any, ...]:
    result = rule(ctx, np.array(grad))      # computed from a copy: the results stay right
    grad *= 0.5                              # ...but the caller's gradient is changed
    return result


def mutate(op: Op, mutant: Mutant) -> Op:
    """An op of a subclass of ``op``'s class with the mutant's rules (not registered)."""
    cls = type(op)
    body: dict[str, Any] = {"__doc__": cls.__doc__}
    if mutant.backward is not None:
        body["backward"] = lambda self, ctx, grad: mutant.backward(
            lambda c, g: cls.backward(self, c, g), ctx, grad)
    if mutant.jvp is not None:
        body["jvp"] = lambda self, ctx, *ts: mutant.jvp(
            lambda c, *t: cls.jvp(self, c, *t), ctx, *ts)
    return type(f"{cls.__name__}Mutant", (cls,), body)()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if a is None or b is None:
        return a is None and b is None
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def gets_gradient(op: Op, sample: Sample, k: int, seed: int) -> bool:
    """Whether the op's own backward rule gives input ``k`` a gradient (not None) on this
    sample: a term planted in a gradient the rule never returns cannot exist (``_each``
    leaves a None alone)."""
    args, params = sample
    if k not in differentiable_positions(op, args):
        return False
    leaves, _ = _leaves(op, args)
    out = op.apply(*leaves, **params)
    if out.node is None:
        return False
    grad = np.random.default_rng(seed).standard_normal(out.shape)
    result = type(op).backward(op, out.node, grad)
    return k < len(result) and result[k] is not None


def changes_something(op: Op, mutated: Op, mutant: Mutant, sample: Sample, seed: int) -> bool:
    """Whether the mutant's rules return something else than the op's on this sample
    (for a random gradient and random tangents): if not, every property sees the same op."""
    if mutant.side_effect:
        return True
    args, params = sample
    if not differentiable_positions(op, args):
        return False
    leaves, _ = _leaves(op, args)
    out = mutated.apply(*leaves, **params)
    node = out.node
    if node is None:
        return False
    rng = np.random.default_rng(seed)
    if mutant.backward is not None:
        grad = rng.standard_normal(out.shape)
        return not _same(type(op).backward(mutated, node, grad.copy()), mutated.backward(node, grad.copy()))
    tangents = _tangent_args(op, leaves, lambda shape, dtype: rng.standard_normal(shape))
    return not _same(type(op).jvp(mutated, node, *tangents), mutated.jvp(node, *tangents))


@dataclass
class MutantResult:
    """What happened to one mutant."""

    mutant: Mutant
    caught_by: str | None = None     # the property that failed (None: not caught)
    examples: int = 0                # samples drawn
    applicable: int = 0              # samples the bug could exist on (Mutant.applies)
    changed: int = 0                 # samples on which the mutant changed a rule's result
    reason: str = ""                 # why it was not caught

    @property
    def caught(self) -> bool:
        return self.caught_by is not None


@dataclass
class MutationReport:
    name: str
    results: list[MutantResult] = field(default_factory=list)
    failure: str | None = None       # the op fails its own spec: mutants are meaningless
    unusable: bool = False           # its spec cannot check it at all (run_op's ``unusable``)
    inapplicable: list[str] = field(default_factory=list)   # never applied to a sample

    @property
    def missed(self) -> list[MutantResult]:
        return [r for r in self.results if not r.caught]


def run_mutants(op: Op, spec: OpSpec | None = None, *, profile: settings | None = None,
                max_examples: int | None = None, check_original: bool = True,
                only: list[str] | None = None) -> MutationReport:
    """Plant each mutant of ``op`` (those named in ``only``, if given) and run the op's spec
    on it; see the module docstring. With ``check_original`` the op itself is checked
    first (a spec the op fails cannot judge mutants)."""
    report = MutationReport(op.name)
    try:
        spec = spec if spec is not None else spec_for(op.name)
    except KeyError as e:                # no spec: the same failure as without --mutants
        report.failure = str(e.args[0])
        return report
    if check_original:
        original = run_op(op, spec, profile=profile, max_examples=max_examples)
        if original.failure is not None:
            report.failure, report.unusable = original.failure, original.unusable
            return report
    for mutant in mutants_for(op):
        if only is not None and mutant.name not in only:
            continue
        result = MutantResult(mutant)
        mutated = mutate(op, mutant)

        def before(sample: Sample, seed: int, result: MutantResult = result,
                   mutated: Op = mutated, mutant: Mutant = mutant) -> bool:
            result.examples += 1
            if mutant.applies is not None and not mutant.applies(sample):
                return False
            if mutant.planted_on is not None and not gets_gradient(op, sample, mutant.planted_on, seed):
                return False
            result.applicable += 1
            changed = changes_something(op, mutated, mutant, sample, seed)
            result.changed += changed
            return changed

        run = run_op(mutated, spec, profile=profile, max_examples=max_examples, shrink=False,
                     before=before)
        result.caught_by = run.failed_property
        if result.applicable == 0 and not result.caught:
            report.inapplicable.append(mutant.name)
            continue
        if not result.caught:
            result.reason = _reason(spec, result)
        report.results.append(result)
    return report


def _reason(spec: OpSpec, result: MutantResult) -> str:
    if result.changed == 0:
        return (f"it never changed what a rule returns on the {result.examples} samples "
                f"drawn: {result.mutant.unseen}")
    loose = [f"{k}={v}" for k, v in (("atol", spec.atol), ("rtol", spec.rtol),
                                      ("accurate_to", spec.accurate_to)) if v is not None]
    return (f"it changed a rule's result on {result.changed} of {result.examples} samples, "
            f"yet no property failed: the spec's tolerances ({', '.join(loose) or 'defaults'})"
            f"{'; accurate_to=None skips the 1e-9 accuracy check' if spec.accurate_to is None else ''}"
            f" let it pass")
