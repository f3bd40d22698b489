"""Hypothesis profiles for checking ops: how many examples each property gets.

    dev        10 examples per property: a quick look while writing an op.
    ci         25 examples per property, derandomized (the suite's setting under CI=true).
    thorough   1,000 examples per property: before a release, or after changing a rule.

Each is registered as ``handgrad-<name>``, with every setting stated: none is inherited
from the profile a project loads or registers (its own, or its own ``default`` or ``ci``).
``ci`` and ``thorough`` have the settings of hypothesis's own ``ci`` profile
(derandomized: the same examples every run, no example database, reproduction blobs
printed); every profile has ``deadline=None`` because numpy-heavy
examples on a loaded 2-core machine have no stable timing. ``handgrad check --profile``
and the environment variable ``HANDGRAD_PROFILE`` choose one (``thorough`` or
``handgrad-thorough``); handgrad's test suite reads the variable too, and takes
``--handgrad-profile`` (tests/conftest.py).

``HYPOTHESIS_PROFILE`` is not read: a project that sets it for its own hypothesis
profiles (names handgrad does not know) still runs ``handgrad check`` unchanged.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, Verbosity, settings

from . import PROFILE_NAMES

PER_PROPERTY = dict(zip(PROFILE_NAMES, (10, 25, 1000), strict=True))
NAMES = PROFILE_NAMES
ENV = "HANDGRAD_PROFILE"    # the environment variable that chooses a profile

# Every setting is given: a profile built on settings() would inherit the profile loaded
# when this module is first imported (a project's own, or a project's "default" or "ci"
# registered again), and that profile would change the check (no Phase.generate: every
# property passes on no sample).
_DEV = settings(max_examples=PER_PROPERTY["dev"], derandomize=False, database=None,
                verbosity=Verbosity.normal, phases=tuple(Phase), stateful_step_count=50,
                report_multiple_bugs=True, suppress_health_check=(), deadline=None,
                print_blob=False, backend="hypothesis")
_CI = settings(_DEV, derandomize=True, print_blob=True,     # as hypothesis's own ci profile
               suppress_health_check=[HealthCheck.too_slow])

settings.register_profile("handgrad-dev", _DEV)
settings.register_profile("handgrad-ci", _CI, max_examples=PER_PROPERTY["ci"])
settings.register_profile("handgrad-thorough", _CI, max_examples=PER_PROPERTY["thorough"])


def full_name(name: str) -> str:
    """``thorough`` -> ``handgrad-thorough``; a full name (or hypothesis's own) as given.
    Raises ValueError listing the choices for a name hypothesis does not know."""
    full = f"handgrad-{name}" if name in PER_PROPERTY else name
    try:
        profile = settings.get_profile(full)
    except Exception:
        raise ValueError(f"unknown hypothesis profile {name!r}: choose one of "
                         f"{', '.join(NAMES)}") from None
    if Phase.generate not in profile.phases:      # every property would pass on no sample
        raise ValueError(f"hypothesis profile {name!r} has no generate phase: the rules would "
                         f"be checked on no sample, and pass; choose one of {', '.join(NAMES)}")
    return full


def default_name() -> str:
    """The profile to use when none is given: $HANDGRAD_PROFILE, else ``ci`` when the
    CI environment variable is set (as hypothesis itself decides), else ``dev``.
    Raises ValueError naming the variable for a profile it does not know."""
    chosen = os.environ.get(ENV)
    if chosen:
        try:
            return full_name(chosen)
        except ValueError as e:
            raise ValueError(f"{ENV}={chosen}: {e}") from None
    return "handgrad-ci" if os.environ.get("CI") else "handgrad-dev"


def load(name: str | None = None) -> str:
    """Load a profile (the default one for None); returns its full name."""
    full = full_name(name) if name else default_name()
    settings.load_profile(full)
    return full


def examples(at_least: int = 0) -> int:
    """Examples per property under the loaded profile (never fewer than ``at_least``)."""
    return max(at_least, settings().max_examples)   # settings(): the loaded profile
