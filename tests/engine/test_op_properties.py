"""Properties every registered op must have, checked on inputs hypothesis draws from the
op's spec (engine/testing/specs.py): forward equals a numpy reference, VJP and JVP equal
float64 central differences, and the two modes are transposes of each other."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.gradcheck import gradcheck, jvpcheck
from engine.testing import SPECS, spec_for

OPS = sorted(engine.REGISTRY)


def test_every_registered_op_has_a_spec():
    missing = [name for name in OPS if name not in SPECS]
    assert not missing, f"ops without a test spec in engine/testing/specs.py: {missing}"


def _differentiable(op, args):
    """Positions of the float inputs the op differentiates."""
    return [i for i, a in enumerate(args)
            if i not in op.nondiff and np.asarray(a).dtype.kind == "f"]


@pytest.mark.parametrize("name", OPS)
@given(data=st.data())
def test_forward_matches_numpy_reference(name, data):
    op, spec = engine.REGISTRY[name], spec_for(name)
    args, params = data.draw(spec.sample)
    out = op.apply(*args, **params)
    expected = np.asarray(spec.reference(*args, **params))
    assert out.shape == expected.shape
    # Same math in float64, possibly in another order of operations: a few ulps of drift.
    np.testing.assert_allclose(out.data, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=40)
@given(data=st.data())
def test_vjp_matches_central_differences(name, data):
    op, spec = engine.REGISTRY[name], spec_for(name)
    args, params = data.draw(spec.sample)
    tol = {k: v for k, v in (("atol", spec.atol), ("rtol", spec.rtol)) if v is not None}
    assert gradcheck(lambda *xs: op.apply(*xs, **params), args, mode="full", **tol)


@pytest.mark.parametrize("name", OPS)
@settings(max_examples=40)
@given(data=st.data())
def test_jvp_matches_central_differences(name, data):
    op, spec = engine.REGISTRY[name], spec_for(name)
    args, params = data.draw(spec.sample)
    tol = {k: v for k, v in (("atol", spec.atol), ("rtol", spec.rtol)) if v is not None}
    assert jvpcheck(lambda *xs: op.apply(*xs, **params), args, mode="full", **tol)


@pytest.mark.parametrize("name", OPS)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_jvp_and_vjp_are_transposes(name, data, seed):
    """<v, J u> from the JVP rule equals <J^T v, u> from the VJP rule, to rounding."""
    op, spec = engine.REGISTRY[name], spec_for(name)
    args, params = data.draw(spec.sample)
    diff = _differentiable(op, args)
    leaves = [engine.Tensor(a, requires_grad=i in diff) for i, a in enumerate(args)]
    out = op.apply(*leaves, **params)
    rng = np.random.default_rng(seed)
    u = {i: rng.standard_normal(np.shape(args[i])) for i in diff}
    v = rng.standard_normal(out.shape)

    (ju,) = engine.graph.forward_tangents([out], {id(leaves[i]): u[i] for i in diff})
    jtv = engine.grad(out, [leaves[i] for i in diff], grad_outputs=v, retain_graph=True)
    lhs = float(np.sum(v * ju))
    rhs = float(sum(np.sum(g * u[i]) for g, i in zip(jtv, diff)))
    # Both sides add the same products in different orders: rounding error is bounded by
    # ~n * eps * sum of |terms|, far below 1e-10 of that sum for these sizes.
    scale = float(np.sum(np.abs(v) * np.abs(ju))) + float(sum(np.sum(np.abs(g * u[i])) for g, i in zip(jtv, diff)))
    assert abs(lhs - rhs) <= 1e-10 * max(scale, 1.0), (lhs, rhs)
