"""Test-wide settings. Hypothesis: with CI=true, hypothesis loads its built-in ``ci``
profile (derandomized, no database); our profiles build on it with ``deadline=None``
because numpy-heavy examples on 2 cores have no stable timing."""
import os

from hypothesis import settings

settings.register_profile("handgrad-ci", parent=settings.get_profile("ci"), deadline=None)
settings.register_profile("handgrad-dev", deadline=None, max_examples=50)
settings.load_profile("handgrad-ci" if os.environ.get("CI") else "handgrad-dev")


# --- which derivative rules ran --------------------------------------------------------
# Every registered op's backward and jvp are wrapped to record that they ran. When the
# whole suite runs, the session fails if a rule never ran: a rule no test executes is a
# rule nobody checked.
import pytest  # noqa: E402

import engine  # noqa: E402

RULES_RAN: dict[str, set[str]] = {"backward": set(), "jvp": set()}


def _recording(op, kind):
    rule = getattr(op, kind)

    def wrapper(*args, **kwargs):
        RULES_RAN[kind].add(op.name)
        return rule(*args, **kwargs)

    wrapper.__wrapped__ = rule
    return wrapper


def pytest_sessionstart(session):
    for op in engine.REGISTRY.values():
        for kind in RULES_RAN:
            setattr(op, kind, _recording(op, kind))


def _whole_suite(config) -> bool:
    opt = config.option
    return not (opt.keyword or opt.markexpr or getattr(opt, "lf", False)) and \
        all(a in ("tests", "tests/", str(config.rootpath / "tests")) for a in config.args)


def pytest_sessionfinish(session, exitstatus):
    if exitstatus != 0 or not _whole_suite(session.config) or session.testscollected == 0:
        return
    never = {kind: sorted(set(engine.REGISTRY) - ran) for kind, ran in RULES_RAN.items()}
    never = {k: v for k, v in never.items() if v}
    if never:
        session.config.get_terminal_writer().line(
            f"derivative rules that no test ran: {never}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
