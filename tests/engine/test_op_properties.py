"""Every registered op, on inputs hypothesis draws from its spec (engine/testing/specs/),
has every property of engine/testing/properties.py: forward equals a numpy reference,
VJP and JVP equal float64 central differences (and the complex step for analytic ops),
both to 1e-9 against an extrapolated difference, the two modes are transposes, backward
is linear in its gradient, constant inputs change no other input's gradient, float32
agrees with float64 and the rules themselves compute in float32, and no rule writes into
its arguments (nor its forward into its inputs) or returns saved memory, every op is
re-entrant (two calls' rules run in the other order: a second sample is drawn, or the
inputs reversed) and runs as a captured plan runs it (no check, inputs without values).
Samples are generic (all entries distinct) in most examples, structured in the
rest (engine/testing/strategies.py). Plus the documented convention at each kink, in
both modes. 25 examples per property (at least the profile's: 1,000 on ``thorough``)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import Phase, find, given, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.testing import PROPERTIES, SPECS, profiles, spec_for
from handgrad.engine.testing.properties import kink_examples_hold, needs_second_sample

OPS = sorted(engine.REGISTRY)


def test_every_registered_op_has_a_spec():
    missing = [name for name in OPS if name not in SPECS]
    assert not missing, f"ops without a test spec in engine/testing/specs/: {missing}"


def test_every_spec_names_a_registered_op():
    assert not set(SPECS) - set(OPS)


def _cases():
    """(op, property) pairs: every property for every op (those taking a second sample
    call the op on its inputs reversed when it has no parameters)."""
    return [(name, prop) for prop in PROPERTIES for name in OPS]


@pytest.mark.parametrize("name, prop", _cases(), ids=lambda x: getattr(x, "__name__", x))
@settings(max_examples=profiles.examples(25))
@given(data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_op_property(name, prop, data, seed):
    op, spec = engine.REGISTRY[name], spec_for(name)
    sample = data.draw(spec.sample)
    if needs_second_sample(prop):           # re-entrancy: a second call of the op
        prop(op, spec, sample, seed, other=data.draw(spec.sample) if sample[1] else None)
    else:
        prop(op, spec, sample, seed)


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
    from handgrad.engine.testing import check_op
    assert check_op(getattr(engine, name), max_examples=10)


# --- the samples cover each op's documented domain --------------------------------------------

def _arrays_in(index):
    parts = index if isinstance(index, tuple) else (index,)
    return [p for p in parts if isinstance(p, np.ndarray) and p.dtype.kind in "iu"]


def _has_repeats(x, index):
    arrays = _arrays_in(index)
    if not isinstance(index, tuple) or not arrays:
        return False
    picked = np.zeros(x.shape, dtype=int)
    np.add.at(picked, index, 1)
    return picked.max() > 1


def _negative(axis):
    return axis is not None and any(a < 0 for a in np.atleast_1d(axis))


COVERAGE = [
    ("clip", "a bound of exactly 0", lambda s: 0.0 in (s[1]["min"], s[1]["max"])),
    ("clip", "relu6: clip(x, 0, 6)", lambda s: (s[1]["min"], s[1]["max"]) == (0.0, 6.0)),
    ("transpose", "negative axes", lambda s: _negative(s[1]["axes"])),
    ("sum", "an axis tuple with a negative entry",
     lambda s: isinstance(s[1]["axis"], tuple) and len(s[1]["axis"]) > 1 and _negative(s[1]["axis"])),
    ("max", "an axis tuple with a negative entry and keepdims",
     lambda s: isinstance(s[1]["axis"], tuple) and _negative(s[1]["axis"]) and s[1]["keepdims"]),
    ("getitem", "x[:, [i, i, ...]]: a repeated index array inside a tuple",
     lambda s: isinstance(s[1]["index"], tuple) and isinstance(s[1]["index"][0], slice)
     and _has_repeats(s[0][0], s[1]["index"])),
    ("getitem", "x[rows, cols] with a repeated pair",
     lambda s: len(_arrays_in(s[1]["index"])) == 2 and _has_repeats(s[0][0], s[1]["index"])),
    ("softmax_cross_entropy", "soft targets whose rows do not sum to 1",
     lambda s: s[0][1].dtype.kind == "f" and s[0][1].ndim > 1
     and not np.allclose(s[0][1].sum(axis=-1), 1)),
    ("softmax_cross_entropy", "soft targets with a zero row",
     lambda s: s[0][1].dtype.kind == "f" and s[0][1].ndim > 1
     and (s[0][1].sum(axis=-1) == 0).any() and s[0][1].any()),
    ("pow", "a negative base with an odd integer exponent (constant)",
     lambda s: s[0][1].dtype.kind == "i" and bool(np.any((np.broadcast_arrays(*s[0])[0] < 0)
                                                         & (np.broadcast_arrays(*s[0])[1] % 2 == 1)))),
    ("pow", "a negative base with an even integer exponent (constant)",
     lambda s: s[0][1].dtype.kind == "i" and bool(np.any((np.broadcast_arrays(*s[0])[0] < 0)
                                                         & (np.broadcast_arrays(*s[0])[1] % 2 == 0)))),
    *[(name, "axis=() (no axis reduced)", lambda s: s[1]["axis"] == ())
      for name in ("sum", "mean", "max", "var", "logsumexp")],
    *[(name, "|x| >= 1e3", lambda s: np.max(np.abs(s[0][0]), initial=0) >= 1e3)
      for name in ("sigmoid", "tanh", "softplus", "softmax", "log_softmax", "logsumexp",
                   "softmax_cross_entropy", "sigmoid_binary_cross_entropy")],
    *[(name, "a square matrix (a transposed gradient differs)",
       lambda s: np.ndim(s[0][0]) >= 2 and np.shape(s[0][0])[-1] == np.shape(s[0][0])[-2] >= 2)
      for name in ("exp", "add", "mse", "logsumexp")],
]


@pytest.mark.parametrize("name, what, holds", COVERAGE, ids=[f"{c[0]}: {c[1]}" for c in COVERAGE])
def test_samples_cover_the_documented_domain(name, what, holds):
    """The spec's strategy draws such a sample (hypothesis finds one within 500 tries)."""
    found = find(SPECS[name].sample, holds,
                 settings=settings(max_examples=500, database=None, derandomize=True,
                                   phases=[Phase.generate]))
    assert holds(found)


def test_kink_examples_cover_keepdims_and_zero_bases():
    assert any(p.get("keepdims") for _, p, _ in SPECS["max"].kink_examples)
    assert any(p.get("keepdims") for _, p, _ in SPECS["min"].kink_examples)
    assert any((np.asarray(args[0]) == 0).any() for args, _, _ in SPECS["pow"].kink_examples)
    assert any((np.asarray(args[0]) == 0).any() for args, _, _ in SPECS["pow_scalar"].kink_examples)
    assert any(p == {"min": 0.0, "max": 6.0} for _, p, _ in SPECS["clip"].kink_examples)
    assert any(p.get("min") is None and p.get("max") is not None
               for _, p, _ in SPECS["clip"].kink_examples)             # max only
