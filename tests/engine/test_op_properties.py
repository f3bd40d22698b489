"""Every registered op, on inputs hypothesis draws from its spec (engine/testing/specs/),
has every property of engine/testing/properties.py: forward equals a numpy reference,
VJP and JVP equal float64 central differences (and the complex step for analytic ops),
both to 1e-9 against an extrapolated difference, the two modes are transposes, backward
is linear in its gradient, constant inputs change no other input's gradient, float32
agrees with float64 and the rules themselves compute in float32, and no rule writes into
its arguments or returns saved memory. Plus the documented convention at each kink, in
both modes. 25 examples per property (at least the profile's: 1,000 on ``thorough``)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.testing import PROPERTIES, SPECS, profiles, spec_for
from engine.testing.properties import kink_examples_hold

OPS = sorted(engine.REGISTRY)


def test_every_registered_op_has_a_spec():
    missing = [name for name in OPS if name not in SPECS]
    assert not missing, f"ops without a test spec in engine/testing/specs/: {missing}"


def test_every_spec_names_a_registered_op():
    assert not set(SPECS) - set(OPS)


@pytest.mark.parametrize("prop", PROPERTIES, ids=lambda p: p.__name__)
@pytest.mark.parametrize("name", OPS)
@settings(max_examples=profiles.examples(25))
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_op_property(name, prop, data, seed):
    op, spec = engine.REGISTRY[name], spec_for(name)
    prop(op, spec, data.draw(spec.sample), seed)


@pytest.mark.parametrize("name", [n for n in OPS if SPECS[n].kink_examples])
def test_convention_at_kinks(name):
    kink_examples_hold(engine.REGISTRY[name], SPECS[name])


def test_ops_with_kinks_document_their_convention():
    """An op whose spec names a kink carries explicit examples at it (relu'(0), ties...)."""
    for name in ("abs", "relu", "leaky_relu", "elu", "clip", "max", "min", "maximum", "minimum"):
        assert SPECS[name].kink_examples, name


@pytest.mark.parametrize("name", ["pow", "dropout", "leaky_relu", "clip", "getitem"])
def test_check_op_works_on_the_public_op_itself(name):
    """engine.<name> is the registered op, so check_op takes it directly (these were plain
    functions wrapping an op, or took their parameters as phantom inputs, before)."""
    from engine.testing import check_op
    assert check_op(getattr(engine, name), max_examples=10)
