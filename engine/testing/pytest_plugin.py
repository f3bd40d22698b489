"""The work of handgrad's pytest plugin (its entry point, handgrad/pytest_plugin.py, loads
this module only for a test module that defines ``HANDGRAD_RULES``): one pytest test per
rule and property for the rules a test file lists.

    # test_my_rules.py
    from handgrad.engine.testing.rules import numpy_rule
    affine = numpy_rule(affine_forward, affine_backward, sample=...)
    HANDGRAD_RULES = [affine, engine.cube]      # rules (numpy, torch, jax) and ops

gives ``test_my_rules.py::affine[vjp_matches_finite_differences]`` and so on: one test per
property of ``engine.testing.properties`` (and ``kink_examples_hold`` when the spec has
kink examples), each on its own hypothesis samples. A property that does not apply (no jvp
rule, one input) is skipped with the reason. The number of examples per property is the
profile's: ``--handgrad-profile thorough`` or ``HANDGRAD_PROFILE=thorough`` (default: ci
under ``CI``, else dev). Disable the plugin with ``-p no:handgrad``.

The profile is passed to each check, never loaded into hypothesis's global settings.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from handgrad.pytest_plugin import DECLARED, OPTION

KINKS = "kink_examples_hold"


def profile_name(config: pytest.Config) -> str:
    """The full name of the profile the option or ``HANDGRAD_PROFILE`` chooses."""
    from . import profiles
    chosen = config.getoption(OPTION, default=None)
    try:
        return profiles.full_name(chosen) if chosen else profiles.default_name()
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


class RuleCheckFailed(Exception):
    """A rule failed a property: the message is the report (no traceback to read)."""


class RuleProperty(pytest.Item):
    """One property of one rule or op, on the samples of its spec."""

    def __init__(self, *, target: Any, prop: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.prop = prop              # a property function, or None for the kink examples

    def runtest(self) -> None:
        from hypothesis import settings

        from . import report as fmt
        from .check import run_op
        from .properties import exits_fail, kink_examples_hold
        from .specs import spec_for

        t = self.target
        spec = t.spec if t.spec is not None else spec_for(t.op.name)
        if self.prop is None:
            try:
                exits_fail(kink_examples_hold)(t.op, spec)
            except Exception as e:
                raise RuleCheckFailed(f"{t.name}: convention at a kink: {type(e).__name__}: "
                                      f"{e}") from None
            return
        profile = settings.get_profile(profile_name(self.config))
        report = run_op(t.op, replace(spec, kink_examples=()), properties=[self.prop],
                        profile=profile)
        if not report.passed:
            raise RuleCheckFailed(fmt.failure_message(report))
        name = self.prop.__name__
        if report.worst.get(name, 0.0) is None and name not in fmt.YES_NO:
            pytest.skip(f"{name} does not apply to {t.name} (it measured nothing on the "
                        f"{report.examples} samples drawn)")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if isinstance(excinfo.value, RuleCheckFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, self.name


def items_for(collector: pytest.Collector, rules: Any) -> list[RuleProperty]:
    """The tests of the rules and ops in ``rules``: one per property (and one for the kink
    examples of a spec that has them)."""
    from .properties import PROPERTIES
    from .specs import spec_for
    from .targets import targets_of

    try:
        targets = targets_of(rules, f"{collector.name}: {DECLARED}")
    except ValueError as e:
        raise collector.CollectError(str(e)) from None
    items = []
    for t in targets:
        try:
            spec = t.spec if t.spec is not None else spec_for(t.op.name)
        except KeyError as e:
            raise collector.CollectError(f"{collector.name}: {DECLARED}: {e.args[0]}") from None
        props = ([None] if spec.kink_examples else []) + list(PROPERTIES)
        items += [RuleProperty.from_parent(collector, name=f"{t.name}[{p.__name__ if p else KINKS}]",
                                           target=t, prop=p) for p in props]
    return items


def collect(collector: pytest.Collector, obj: Any) -> list[RuleProperty]:
    """The items for a test module's ``HANDGRAD_RULES`` (``obj``), or one clear collection
    error (hypothesis missing, a bad profile, a bad entry)."""
    from . import HypothesisMissing, require_hypothesis
    try:
        require_hypothesis()
        profile_name(collector.config)          # a bad HANDGRAD_PROFILE: one clear error
    except (HypothesisMissing, pytest.UsageError) as e:
        raise collector.CollectError(f"{collector.name}: {DECLARED}: {e}") from None
    return items_for(collector, obj)
