"""The mutants only generic samples reveal (engine/testing/mutants.py): a spec that draws
nearly constant arrays lets them through and ``run_mutants`` says so; the default
strategies catch them."""
import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.testing import OpSpec, run_mutants, strategies, unary
from handgrad.engine.testing.mutants import mutants_for

PROFILE = settings(max_examples=15, derandomize=True, database=None, deadline=None)
GENERIC_ONLY = ("cross term dropped x", "sum over wrong axis x")


class Scale(engine.Op):
    """scale(x) = 2 x (not registered)."""

    name = "scale_for_mutants"
    rule = "d/dx = 2"

    def forward(self, ctx, x):
        return 2 * x

    def backward(self, ctx, grad):
        return (2 * grad,)

    def jvp(self, ctx, dx):
        return 2 * dx


def constant_squares(shape_side: int = 3) -> st.SearchStrategy:
    """Square arrays whose entries are all one value: the weak sampling the issue measured."""
    return st.floats(-3, 3, allow_nan=False).map(lambda v: np.full((shape_side, shape_side), v))


def spec_from(arrays: st.SearchStrategy) -> OpSpec:
    return OpSpec(name="scale_for_mutants", sample=st.tuples(st.tuples(arrays), st.just({})), reference=lambda x: 2 * x)


def results(spec: OpSpec) -> dict:
    report = run_mutants(Scale(), spec, profile=PROFILE, only=list(GENERIC_ONLY))
    assert report.failure is None, report.failure
    return {r.mutant.name: r for r in report.results}


def test_a_spec_of_constant_arrays_misses_the_generic_only_mutants_and_says_why():
    found = results(spec_from(constant_squares()))
    for name in GENERIC_ONLY:
        assert not found[name].caught, name
        assert found[name].changed == 0
    assert "constant" in found["cross term dropped x"].reason
    assert "generic square matrices" in found["sum over wrong axis x"].reason


def test_the_default_strategies_catch_them():
    found = results(spec_from(strategies.values((3, 3))))
    for name in GENERIC_ONLY:
        assert found[name].caught, (name, found[name].reason)


def test_two_input_ops_get_the_only_where_equal_mutant():
    names = [m.name for m in mutants_for(engine.REGISTRY["add"])]
    assert "only where equal a, b" in names
    names = [m.name for m in mutants_for(engine.REGISTRY["exp"])]
    assert not any(n.startswith("only where equal") for n in names)


def test_the_spec_building_block_users_start_from_catches_them():
    spec = OpSpec(name="scale_for_mutants", sample=unary(strategies.values), reference=lambda x: 2 * x)
    assert results(spec)["cross term dropped x"].caught


def test_a_mutant_that_cannot_exist_on_the_samples_is_left_out_not_missed():
    """linear's bias is 1-D by nature: a statistic over its wrong axis does not exist."""
    report = run_mutants(engine.REGISTRY["linear"], profile=settings(PROFILE, max_examples=40),
                         check_original=False,
                         only=["sum over wrong axis b", "sum over wrong axis x"])
    assert report.inapplicable == ["sum over wrong axis b"]
    assert [r.mutant.name for r in report.results] == ["sum over wrong axis x"]
    assert report.results[0].caught


def test_a_mutant_of_an_input_the_rule_gives_no_gradient_is_left_out_not_missed():
    """A gate x * [y > 0.5] whose rule returns None for y (its derivative is 0 off the
    kink) has no gradient of y to drop or plant a term in: those mutants cannot exist, and
    were reported missed, one of them because "y was constant" (it was not)."""
    from handgrad.engine.testing import numpy_rule

    def gate(x, y):
        return x * (y > 0.5), y > 0.5

    def gate_backward(dout, cache):
        return dout * cache, None

    pairs = st.sampled_from([(3,), (2, 2)]).flatmap(lambda shape: st.tuples(
        st.tuples(strategies.values(shape), strategies.values(shape, avoid=[0.5])), st.just({})))
    rule = numpy_rule(gate, gate_backward, sample=pairs)
    on_y = ["drop y", "cross term dropped y", "sum over wrong axis y"]
    report = run_mutants(rule.op, rule.spec, profile=PROFILE, only=on_y + ["drop x"])
    assert sorted(report.inapplicable) == sorted(on_y)
    assert [(r.mutant.name, r.caught) for r in report.results] == [("drop x", True)]
