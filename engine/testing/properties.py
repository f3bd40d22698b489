"""The properties every op must have. Each takes the op, its spec and one sample
``(args, params)`` and raises AssertionError (GradcheckError for derivative mismatches)
when the property fails. The test suite runs them for every registered op; ``check_op``
runs them for one op (yours) under hypothesis."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .. import graph
from ..gradcheck import gradcheck, jvpcheck
from ..transforms import gradients
from ..op import Op
from ..tensor import Tensor
from .specs import OpSpec, Sample

# A full Jacobian costs 2 forward runs per input element; above this many elements the
# checks switch to one random projection (directional mode).
FULL_JACOBIAN_MAX_SIZE = 64


def differentiable_positions(op: Op, args: tuple[Any, ...]) -> list[int]:
    """The float inputs in positions the op differentiates."""
    return [i for i, a in enumerate(args)
            if i not in op.nondiff and np.asarray(a).dtype.kind == "f"]


def _tolerances(spec: OpSpec) -> dict[str, float]:
    return {k: v for k, v in (("atol", spec.atol), ("rtol", spec.rtol)) if v is not None}


def _mode(args: tuple[Any, ...]) -> str:
    size = sum(np.size(a) for a in args if np.asarray(a).dtype.kind == "f")
    return "full" if size <= FULL_JACOBIAN_MAX_SIZE else "directional"


def _leaves(op: Op, args: tuple[Any, ...], dtype: Any = None) -> tuple[list[Tensor], list[int]]:
    diff = differentiable_positions(op, args)
    leaves = []
    for i, a in enumerate(args):
        if i in diff:
            leaves.append(Tensor(np.asarray(a, dtype=dtype), requires_grad=True))
        else:
            leaves.append(Tensor(a))
    return leaves, diff


def forward_matches_reference(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """The forward equals the spec's numpy reference (float64, to a few ulps)."""
    args, params = sample
    out = op.apply(*args, **params)
    expected = np.asarray(spec.reference(*args, **params))
    assert out.shape == expected.shape, f"{op.name}: shape {out.shape}, reference {expected.shape}"
    # The same math in float64, in another order of operations: a few ulps apart.
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12,
                               err_msg=f"{op.name}: forward differs from the numpy reference")


def vjp_matches_finite_differences(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """The backward rule equals float64 central differences (full Jacobian on small inputs)."""
    args, params = sample
    gradcheck(lambda *xs: op.apply(*xs, **params), args, mode=_mode(args), seed=seed,
              **_tolerances(spec))


def jvp_matches_finite_differences(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """The forward-mode rule equals float64 central differences."""
    args, params = sample
    jvpcheck(lambda *xs: op.apply(*xs, **params), args, mode=_mode(args), seed=seed,
             **_tolerances(spec))


def complex_step_matches(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """For analytic ops: the backward rule equals the complex-step derivative to ~1e-12."""
    if not spec.complex_step:
        return
    args, params = sample
    # The complex step has no subtraction, so no cancellation: agreement to rounding.
    gradcheck(lambda *xs: op.apply(*xs, **params), args, mode="complex", atol=1e-12, rtol=1e-12)


def _vjp(op: Op, args: tuple[Any, ...], params: dict[str, Any]) -> tuple[Tensor, Callable[[np.ndarray], list[np.ndarray]], list[Tensor], list[int]]:
    leaves, diff = _leaves(op, args)
    out = op.apply(*leaves, **params)

    def pullback(v: np.ndarray) -> list[np.ndarray]:
        grads = gradients([out], [v], [leaves[i] for i in diff], retain_graph=True)
        return [np.zeros(np.shape(args[i])) if g is None else g for g, i in zip(grads, diff)]

    return out, pullback, leaves, diff


def jvp_vjp_transpose(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """<v, J u> from the JVP rule equals <J^T v, u> from the VJP rule, to rounding."""
    args, params = sample
    out, pullback, leaves, diff = _vjp(op, args, params)
    rng = np.random.default_rng(seed)
    u = {i: rng.standard_normal(np.shape(args[i])) for i in diff}
    v = rng.standard_normal(out.shape)
    (ju,) = graph.forward_tangents([out], {id(leaves[i]): u[i] for i in diff})
    jtv = pullback(v)
    lhs = float(np.sum(v * ju))
    rhs = float(sum(np.sum(g * u[i]) for g, i in zip(jtv, diff)))
    # Both sides add the same products in different orders; rounding is bounded by
    # ~n eps (sum of |terms|), orders of magnitude below 1e-10 of it for these sizes.
    scale = float(np.sum(np.abs(v * ju))) + float(sum(np.sum(np.abs(g * u[i])) for g, i in zip(jtv, diff)))
    assert abs(lhs - rhs) <= 1e-10 * max(scale, 1.0), \
        f"{op.name}: <v, J u> = {lhs!r} but <J^T v, u> = {rhs!r}"


def backward_is_linear(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """VJP(a v1 + b v2) = a VJP(v1) + b VJP(v2): a backward rule must be linear in its grad."""
    args, params = sample
    out, pullback, _, diff = _vjp(op, args, params)
    rng = np.random.default_rng(seed)
    v1, v2 = rng.standard_normal(out.shape), rng.standard_normal(out.shape)
    a, b = 1.7, -0.6
    combined = pullback(a * v1 + b * v2)
    for g, g1, g2, i in zip(combined, pullback(v1), pullback(v2), diff):
        np.testing.assert_allclose(g, a * g1 + b * g2, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{op.name}: backward is not linear in grad (input {i})")


def float32_agrees_with_float64(op: Op, spec: OpSpec, sample: Sample, seed: int = 0) -> None:
    """In float32 the op computes in float32 (output and gradients) and agrees with float64
    within float32 precision."""
    args, params = sample
    diff = differentiable_positions(op, args)
    args32 = tuple(np.asarray(a, dtype=np.float32) if i in diff else a for i, a in enumerate(args))
    out64 = op.apply(*args, **params).data
    leaves, _ = _leaves(op, args32, np.float32)
    out32 = op.apply(*leaves, **params)
    assert out32.dtype == np.float32, f"{op.name}: float32 inputs gave a {out32.dtype} output"
    # float32 keeps ~7 digits (eps 1.2e-7); these ops combine at most a few dozen terms of
    # magnitude <~ 30, so 1e-4 relative (with the same absolute floor) is a safe bound
    # that still catches a computation silently done in float16 or with a wrong constant.
    magnitude = max([1.0] + [float(np.max(np.abs(a), initial=0)) for a in args32 if np.asarray(a).dtype.kind == "f"])
    np.testing.assert_allclose(out32.data, out64, rtol=1e-4, atol=1e-4 * magnitude,
                               err_msg=f"{op.name}: float32 forward disagrees with float64")
    out32.backward(np.ones(out32.shape, dtype=np.float32))
    for i in diff:
        g = leaves[i].grad
        assert g is not None and g.dtype == np.float32 and g.shape == np.shape(args[i]), \
            f"{op.name}: gradient of float32 input {i} is {None if g is None else (g.dtype, g.shape)}"


PROPERTIES: tuple[Callable[[Op, OpSpec, Sample, int], None], ...] = (
    forward_matches_reference,
    vjp_matches_finite_differences,
    jvp_matches_finite_differences,
    complex_step_matches,
    jvp_vjp_transpose,
    backward_is_linear,
    float32_agrees_with_float64,
)


def kink_examples_hold(op: Op, spec: OpSpec) -> None:
    """At the kinks themselves, the gradient follows the documented convention."""
    for args, params, expected in spec.kink_examples:
        leaves, diff = _leaves(op, args)
        out = op.apply(*leaves, **params)
        out.backward(np.ones(out.shape))
        for i, want in zip(diff, expected):
            np.testing.assert_allclose(leaves[i].grad, want, rtol=0, atol=1e-15,
                                       err_msg=f"{op.name}: gradient at the kink, input {i}, "
                                               f"args {args}, params {params}")
