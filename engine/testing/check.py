"""``check_op``: every property of ``engine.testing.properties`` for one op, under hypothesis.

    from handgrad import engine

    import handgrad.engine.testing as T
    T.spec("cube", sample=T.unary(T.strategies.reals), reference=lambda x: x ** 3)
    T.check_op(cube)            # raises OpCheckError with the shrunk counterexample

``run_op`` does the same work and returns an ``OpReport`` instead of raising: how many
examples ran, the worst error each property measured, and the failure if there was one
(what ``handgrad check`` prints).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky, HypothesisException, InvalidArgument, Unsatisfiable

from ..gradcheck import AT_A_KINK, NOT_REPEATABLE
from ..op import Op
from ..plain import plain_repr
from .diagnosis import Diagnosis, diagnose_failure, diagnose_kinks
from .properties import PROPERTIES, RULE_FAILURES, Property, exits_fail, kink_examples_hold, needs_second_sample
from .specs import OpSpec, Sample, spec_for

KINKS = "kink_examples_hold"
VJP = "vjp_matches_finite_differences"      # compares derivatives on every sample that has any


class OpCheckError(AssertionError):
    """An op failed one of its properties; the message names the property and the sample."""


class SampleError(ValueError):
    """A spec's sample strategy cannot check its op (it draws something that is not a
    sample): the message, one line, says what a sample must be."""


SAMPLE = ("a sample is (args, params): a tuple of the inputs and a dict of keyword "
          "parameters, as st.tuples(st.tuples(x, y), st.just({}))")


@dataclass
class OpReport:
    """What checking one op found."""

    name: str
    examples: int = 0                         # samples drawn (not hypothesis's re-runs)
    # property -> worst error, over the samples drawn and (failed property) the failing one
    worst: dict[str, float | None] = field(default_factory=dict)
    failure: str | None = None                # the message of the (shrunk) failure
    failed_property: str | None = None        # the property that failed (or KINKS)
    diagnosis: str | None = None              # what is most likely wrong (diagnosis.py)
    unusable: bool = False                    # the spec cannot check it (failure says why)

    @property
    def passed(self) -> bool:
        """True when no property failed."""
        return self.failure is None

    def record(self, prop: str, error: float | None) -> None:
        """Keep the worst error seen for property ``prop`` (None: the property ran but
        measures no error, a yes-or-no check)."""
        if error is None:
            self.worst.setdefault(prop, None)
        else:
            old = self.worst.get(prop)
            self.worst[prop] = error if old is None else max(old, error)


def run_op(op: Op, spec: OpSpec | None = None, *, max_examples: int | None = None,
           properties: Sequence[Property] = PROPERTIES, profile: settings | None = None,
           shrink: bool = True,
           before: Callable[[Sample, int], bool] | None = None) -> OpReport:
    """Check ``op`` against its spec (the registered one unless given): the kink examples,
    then every property on hypothesis samples. ``profile`` (a hypothesis settings object,
    default: the loaded profile) sets the number of examples unless ``max_examples`` does;
    ``shrink=False`` stops at the first failing sample instead of looking for a smaller
    one (hypothesis's explain phase never runs). ``before(sample, seed)``, if given, runs
    first on every sample; when it returns False the properties are skipped for that sample
    (mutation testing uses this)."""
    report = OpReport(op.name)
    try:
        spec = spec if spec is not None else spec_for(op.name)
    except KeyError as e:
        report.failure = str(e.args[0])
        return report
    try:
        report.record(KINKS, exits_fail(kink_examples_hold)(op, spec) if spec.kink_examples else None)
    except Exception as e:
        report.failure = f"{op.name}: convention at a kink: {type(e).__name__}: {e}"
        report.failed_property = KINKS
        _diagnose(report, lambda: diagnose_kinks(op, spec))
        return report

    base = profile if profile is not None else settings.default
    assert base is not None                 # hypothesis loads its default profile on import
    # No explain phase: the report names the (shrunk) sample already, and explaining it
    # re-runs the properties on hundreds of variations of it (seconds per failing rule).
    phases = tuple(p for p in base.phases
                   if (shrink or p is not Phase.shrink) and p is not Phase.explain)
    chosen = settings(base, max_examples=max_examples or base.max_examples, deadline=None,
                      report_multiple_bugs=False, phases=phases, verbosity=Verbosity.quiet,
                      suppress_health_check=list(HealthCheck))
    failing: list[tuple[Property, Sample, int]] = []    # the last one is the shrunk sample
    # A rule's exit() fails it like any exception (run's own source stays as it was: its
    # text seeds hypothesis's derandomized draws, the samples every check sees).
    properties = [exits_fail(prop) for prop in properties]

    @chosen
    @given(data=st.data(), seed=st.integers(0, 2**31 - 1))
    def run(data: st.DataObject, seed: int) -> None:
        drawn = not failing         # after a failure, hypothesis re-runs samples to shrink it
        sample = _draw(data, spec, "sample (args, params)")
        report.examples += drawn
        if before is not None and before(sample, seed) is False:
            return
        for prop in properties:
            try:
                if needs_second_sample(prop):       # re-entrancy: two calls of the op
                    other = _draw(data, spec, "second sample (args, params)") \
                        if sample[1] else None      # no parameters: nothing to mix up
                    error = prop(op, spec, sample, seed, other=other)
                else:
                    error = prop(op, spec, sample, seed)
            except Exception as e:  # a crash (shape, dtype) is as much a failure as a mismatch
                report.failed_property = prop.__name__
                failing.append((prop, sample, seed))
                raise OpCheckError(f"{op.name}: property {prop.__name__} fails for sample "
                                   f"{_show(sample)} (seed {seed}):\n{type(e).__name__}: {e}") from None
            if drawn:
                report.record(prop.__name__, error)

    try:
        with np.errstate():     # a rule's np.seterr stays with it, not the next rule checked
            run()
    except OpCheckError as e:
        report.failure = str(e)
        if failing:
            prop, sample, seed = failing[-1]
            report.record(prop.__name__, _failing_error(op, spec, prop, sample, seed))
            named = AT_A_KINK in report.failure or NOT_REPEATABLE in report.failure
            if not named:                # a failure whose cause is named: no pattern guessed
                _diagnose(report, lambda: diagnose_failure(op, prop.__name__, sample, seed))
    except SampleError as e:
        report.failure = str(e)
        report.unusable = True
    except Flaky as e:             # failed once, passed when hypothesis ran it again
        first = next((str(x) for x in getattr(e, "exceptions", ()) if isinstance(x, OpCheckError)), "")
        report.failure = (f"{op.name}: its rule does not give the same result twice on the same "
                          f"sample (it depends on a global, a call count or randomness?): a "
                          f"property failed, then passed when run again"
                          + (f". The first failure:\n{first}" if first else ""))
        report.failed_property = report.failed_property or "deterministic"
    except Unsatisfiable:          # every draw rejected (a .filter() or assume() never met)
        report.failure = (f"{op.name}: its sample strategy gave no sample: hypothesis rejected "
                          f"every draw (a .filter() or assume() that the drawn values never "
                          f"meet); construct valid samples instead of filtering them")
        report.unusable = True
    _refuse_comparing_nothing(report)
    return report


def _refuse_comparing_nothing(report: OpReport) -> None:
    """Fail a report whose samples had no derivative to compare (``VJP`` ran, and measured
    nothing on any of them): a check that compared nothing cannot pass, as
    ``engine.gradcheck`` refuses one."""
    if report.passed and VJP in report.worst and report.worst[VJP] is None:
        report.failed_property = VJP
        report.failure = (f"{report.name}: no sample had a derivative to compare: every sample "
                          f"drawn had empty differentiable inputs or an empty output, so "
                          f"{VJP} compared nothing (engine.gradcheck refuses such a check "
                          f"too); draw samples with non-empty float arrays")


def _draw(data: st.DataObject, spec: OpSpec, label: str) -> Sample:
    """A sample of ``spec``; SampleError when its strategy raises or draws anything else
    than (args, params)."""
    try:
        sample = data.draw(spec.sample, label=label)
    except InvalidArgument as e:        # the strategy is built wrong (st.integers(3, 1))
        raise SampleError(f"{spec.name}: its sample strategy is invalid: {e}") from None
    except HypothesisException:         # hypothesis's own: a rejected draw
        raise
    except Exception as e:
        raise SampleError(f"{spec.name}: its sample strategy raised {type(e).__name__}: {e}") from None
    if not (isinstance(sample, tuple) and len(sample) == 2
            and isinstance(sample[0], (tuple, list)) and isinstance(sample[1], dict)):
        raise SampleError(f"{spec.name}: its sample strategy drew {_kind(sample)}; {SAMPLE}")
    return sample


def _kind(value: object) -> str:
    """``a tuple of 1 item``, ``a list of 3 items``, ``a ndarray``: what a strategy drew."""
    kind = type(value).__name__
    if isinstance(value, (tuple, list)):
        return f"a {kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {kind}"


def _failing_error(op: Op, spec: OpSpec, prop: Property, sample: Sample, seed: int) -> float:
    """The error ``prop`` finds on the failing sample: measured again with the spec's
    tolerances lifted (the finite-difference and accuracy checks then return it instead of
    raising); inf where the failure has no such number (a crash, a fixed tolerance)."""
    lifted = replace(spec, atol=math.inf, rtol=0.0, accurate_to=math.inf)
    try:
        error = prop(op, lifted, sample, seed)
    except RULE_FAILURES:
        return math.inf
    return math.inf if error is None else error


def _diagnose(report: OpReport, find: Callable[[], Diagnosis | None]) -> None:
    """Add what is most likely wrong to a failure: ``report.diagnosis`` and a last line
    "likely: ..." of the message."""
    found = find()
    if found is not None:
        report.diagnosis = str(found)
        report.failure = f"{report.failure}\nlikely: {found}"


def _show(sample: Sample) -> str:
    args, params = sample
    return f"args={plain_repr(args)}, params={plain_repr(params)}"


def check_op(op: Op, spec: OpSpec | None = None, max_examples: int = 50) -> bool:
    """Run every property on ``max_examples`` hypothesis samples of ``op``'s spec (the
    registered one unless ``spec`` is given), plus the spec's kink examples. Returns True
    or raises OpCheckError for the smallest failing sample hypothesis finds."""
    spec = spec if spec is not None else spec_for(op.name)
    profile = settings(database=None, derandomize=True, deadline=None)
    report = run_op(op, spec, max_examples=max_examples, profile=profile)
    raise_for(report)
    return True


def raise_for(report: OpReport, prefix: str = "") -> None:
    """Raise for a report that did not pass (``prefix`` before its message): SampleError
    when the spec cannot check the op, else OpCheckError."""
    if report.failure is not None:
        raise (SampleError if report.unusable else OpCheckError)(prefix + report.failure)
