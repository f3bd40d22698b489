"""Test-wide settings. Hypothesis profiles come from engine/testing/profiles.py: with
CI=true the ``handgrad-ci`` profile (built on hypothesis's ``ci``: derandomized, no
database), otherwise ``handgrad-dev``; ``--handgrad-profile thorough`` or
HANDGRAD_PROFILE=thorough runs at least 1,000 examples per property (HYPOTHESIS_PROFILE is
not read; the option is not ``--profile``, which pytest-profiling owns; it is handgrad's
pytest plugin's, src/handgrad/pytest_plugin.py, which loads no profile itself). All have
deadline=None: numpy-heavy examples on 2 cores have no stable timing."""
import pytest

from handgrad.engine.testing import profiles


def pytest_addoption(parser, pluginmanager):
    """``--handgrad-profile`` comes from handgrad's pytest plugin (loaded when handgrad is
    installed); without it (``-p no:handgrad``, autoloading off) the suite adds it."""
    if not pluginmanager.has_plugin("handgrad"):
        from handgrad.pytest_plugin import add_options
        add_options(parser)


def pytest_configure(config):
    try:
        profiles.load(config.getoption("--handgrad-profile"))
    except ValueError as e:
        raise pytest.UsageError(str(e)) from None


# --- which derivative rules ran --------------------------------------------------------
# Every registered op's backward and jvp are wrapped to record that they ran. When the
# whole suite runs, the session fails if a rule never ran: a rule no test executes is a
# rule nobody checked.
from handgrad import engine  # noqa: E402

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


# Under pytest-xdist (``-n``) the tests run in worker processes: each worker hands what it
# ran to the controller (``workeroutput``), which checks the union.
_WORKERS_COLLECTED = [0]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    output = getattr(node, "workeroutput", {})
    for kind, names in output.get("rules_ran", {}).items():
        RULES_RAN[kind].update(names)
    _WORKERS_COLLECTED[0] = max(_WORKERS_COLLECTED[0], output.get("collected", 0))


def pytest_sessionfinish(session, exitstatus):
    output = getattr(session.config, "workeroutput", None)
    if output is not None:                       # an xdist worker: the controller checks
        output["rules_ran"] = {kind: sorted(ran) for kind, ran in RULES_RAN.items()}
        output["collected"] = session.testscollected
        return
    collected = session.testscollected or _WORKERS_COLLECTED[0]
    if exitstatus != 0 or not _whole_suite(session.config) or collected == 0:
        return
    never = {kind: sorted(set(engine.REGISTRY) - ran) for kind, ran in RULES_RAN.items()}
    never = {k: v for k, v in never.items() if v}
    if never:
        session.config.get_terminal_writer().line(
            f"derivative rules that no test ran: {never}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_collection_modifyitems(session, config, items):
    """JAX's tests run last: once JAX has started its threads, a test that forks a process
    (the checkpoint fault tests do) makes JAX warn that the child may deadlock."""
    items.sort(key=lambda item: "test_check_jax" in item.nodeid)
