"""``check_op``: every property of ``engine.testing.properties`` for one op, under hypothesis.

    import engine, engine.testing as T
    T.spec("cube", sample=T.unary(T.strategies.reals), reference=lambda x: x ** 3)
    T.check_op(cube)            # raises OpCheckError with the shrunk counterexample
"""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ..op import Op
from .properties import PROPERTIES, kink_examples_hold
from .specs import OpSpec, spec_for


class OpCheckError(AssertionError):
    """An op failed one of its properties; the message names the property and the sample."""


def check_op(op: Op, spec: OpSpec | None = None, max_examples: int = 50) -> bool:
    """Run every property on ``max_examples`` hypothesis samples of ``op``'s spec (the
    registered one unless ``spec`` is given), plus the spec's kink examples. Returns True
    or raises OpCheckError for the smallest failing sample hypothesis finds."""
    spec = spec if spec is not None else spec_for(op.name)
    try:
        kink_examples_hold(op, spec)
    except AssertionError as e:
        raise OpCheckError(f"{op.name}: kink convention: {e}") from None

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=True,
              report_multiple_bugs=False, suppress_health_check=[HealthCheck.too_slow])
    @given(data=st.data(), seed=st.integers(0, 2**31 - 1))
    def run(data: st.DataObject, seed: int) -> None:
        sample = data.draw(spec.sample, label="sample (args, params)")
        for prop in PROPERTIES:
            try:
                prop(op, spec, sample, seed)
            except Exception as e:  # a crash (shape, dtype) is as much a failure as a mismatch
                raise OpCheckError(f"{op.name}: property {prop.__name__} fails for sample "
                                   f"{sample!r}:\n{type(e).__name__}: {e}") from None

    run()
    return True
