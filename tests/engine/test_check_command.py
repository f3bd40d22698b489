"""The gradient-check suite as a command: ``python -m handgrad.engine.testing`` and ``handgrad check``
over the registry or a user's module (``--module``, ``--op``), its profiles, mutation
testing of a spec (``--mutants``), and the message when hypothesis is missing.

The commands run in a fresh interpreter from tests/engine/fixtures, as a user runs them
next to their module, so the ops they register never reach this test session."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from handgrad import engine
from handgrad.engine.testing import profiles, run_mutants

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def command(*args: str, module: str = "handgrad.engine.testing", env: dict | None = None,
            code: str | None = None) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != profiles.ENV}
    environment.update(CI="true", **(env or {}))
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", module, *args]
    return subprocess.run(argv, capture_output=True, text=True, cwd=FIXTURES, env=environment,
                          timeout=600)


def lines_for(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(rf"(PASS|FAIL)\s+{name}\s", line)]


# --- checking ops ----------------------------------------------------------------------------

def test_a_module_given_twice_is_checked_once_and_a_folder_is_named_as_one(tmp_path):
    """op.py and ./op.py were "two ops named cube (give each rule its own name=)"; a folder
    named like a .py file was "no such file"."""
    run = command("--module", "myops.py", "--module", "./myops.py", "--op", "cube",
                  "--profile", "dev")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(lines_for(run.stdout, "cube")) == 1
    folder = tmp_path / "ops.py"
    folder.mkdir()
    run = command("--module", str(folder))
    assert run.returncode == 2 and f"--module {folder}: a directory, not a .py file" in run.stderr


def test_a_user_module_is_checked_one_line_per_op():
    run = command("--module", "myops")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checking 3 ops on profile ci (25 examples per property)" in run.stdout
    for name in ("average", "cube", "softsign"):
        (line,) = lines_for(run.stdout, name)
        assert line.startswith("PASS") and "25 examples" in line
        for label in ("forward", "vjp", "jvp", "accuracy", "transpose", "dtypes ok", "no-writes ok"):
            assert label in line, (label, line)
    assert not lines_for(run.stdout, "exp")             # only the module's ops
    assert "3 passed, 0 failed" in run.stdout


def test_handgrad_check_takes_op_and_profile():
    run = command("check", "--module", "myops", "--op", "cube", "--profile", "dev",
                  module="handgrad.nn.cli")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "profile dev (10 examples per property)" in run.stdout
    (line,) = lines_for(run.stdout, "cube")
    assert "10 examples" in line
    assert not lines_for(run.stdout, "average")


def test_a_failure_prints_the_shrunk_counterexample_and_exits_1():
    run = command("--module", "broken_ops.py")          # a file path works too
    assert run.returncode == 1
    (line,) = lines_for(run.stdout, "ramp")
    assert line.startswith("FAIL")
    # shrunk to a simple scalar (which one depends on hypothesis's version: -1 or -3)
    assert re.search(r"property rules_leave_their_arguments_alone fails for sample "
                     r"args=\(array\(-?\d+\.\),\)", run.stdout), run.stdout
    assert "wrote into the incoming gradient" in run.stdout
    assert "0 passed, 1 failed" in run.stdout


def test_the_registry_is_the_default_and_handgrad_profile_is_read():
    run = command("--op", "neg", "--op", "exp", env={"HANDGRAD_PROFILE": "dev"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checking 2 ops on profile dev (10 examples per property)" in run.stdout
    assert len(lines_for(run.stdout, "neg")) == len(lines_for(run.stdout, "exp")) == 1


def test_the_thorough_profile_runs_1000_examples_per_property():
    run = command("check", "--op", "neg", "--profile", "thorough", module="handgrad.nn.cli")
    assert run.returncode == 0, run.stdout + run.stderr
    (line,) = lines_for(run.stdout, "neg")
    assert "1000 examples" in line


@pytest.mark.parametrize("args, message", [
    (["--module", "no_such_module"], "--module no_such_module: no module named 'no_such_module'"),
    (["--module", "missing.py"], "--module missing.py: no such file"),
    (["--op", "nope"], "--op nope: no such op; choose from abs, add"),
    (["--module", "myops", "--op", "exp"], "--op exp: no such op in the modules given"),
])
def test_usage_errors_are_one_line_and_exit_2(args, message):
    run = command(*args)
    assert run.returncode == 2
    assert run.stderr.startswith("python -m handgrad.engine.testing: error: " + message), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_a_bad_handgrad_profile_variable_is_a_usage_error():
    run = command("check", "--op", "neg", module="handgrad.nn.cli", env={"HANDGRAD_PROFILE": "fast"})
    assert run.returncode == 2
    assert run.stderr == ("handgrad: error: HANDGRAD_PROFILE=fast: unknown hypothesis profile "
                          "'fast': choose one of dev, ci, thorough\n")


def test_a_projects_own_hypothesis_profile_variable_is_ignored():
    """A project that sets HYPOTHESIS_PROFILE for profiles of its own (names handgrad does
    not know) still runs handgrad check, on handgrad's profile."""
    run = command("check", "--op", "neg", module="handgrad.nn.cli",
                  env={"HYPOTHESIS_PROFILE": "myproject-nightly"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checking 1 op on profile ci (25 examples per property)" in run.stdout


@pytest.mark.parametrize("how", ["handgrad check", "python -m handgrad.engine.testing"])
def test_without_hypothesis_the_command_says_what_to_install(how):
    """hypothesis made unimportable, as in an environment without the check extra."""
    start = ("from handgrad.nn.cli import main; sys.exit(main(['check']))" if how == "handgrad check"
             else "import runpy; sys.argv = ['x']; "
                  "runpy.run_module('handgrad.engine.testing', run_name='__main__')")
    run = command(code="import sys\nsys.modules['hypothesis'] = None\n" + start)
    assert run.returncode == 2
    prog = "handgrad" if how == "handgrad check" else "python -m handgrad.engine.testing"
    assert run.stderr == (f"{prog}: error: checking ops needs hypothesis, which is not "
                          f"installed: pip install \"handgrad[check]\"\n")


def test_handgrad_train_does_not_need_hypothesis():
    run = command(code="import sys\nsys.modules['hypothesis'] = None\n"
                       "from handgrad.nn.cli import build_parser\n"
                       "print(build_parser().parse_args(['check', '--op', 'exp']).op)")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "['exp']"


def test_the_check_extra_installs_hypothesis():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^check = \["hypothesis>=[\d.]+"\]$', text, flags=re.M)


# --- profiles ---------------------------------------------------------------------------------

def test_profiles(monkeypatch):
    assert profiles.NAMES == ("dev", "ci", "thorough")
    assert settings.get_profile(profiles.full_name("thorough")).max_examples >= 1000
    assert settings.get_profile("handgrad-ci").derandomize      # built on hypothesis's ci
    monkeypatch.setenv("HANDGRAD_PROFILE", "thorough")
    assert profiles.default_name() == "handgrad-thorough"
    monkeypatch.setenv("HANDGRAD_PROFILE", "handgrad-dev")
    assert profiles.default_name() == "handgrad-dev"
    monkeypatch.delenv("HANDGRAD_PROFILE")
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("HYPOTHESIS_PROFILE", "thorough")      # not handgrad's variable
    assert profiles.default_name() == "handgrad-ci"
    with pytest.raises(ValueError, match="choose one of dev, ci, thorough"):
        profiles.full_name("fast")
    monkeypatch.setenv("HANDGRAD_PROFILE", "fast")
    with pytest.raises(ValueError, match="^HANDGRAD_PROFILE=fast: unknown hypothesis profile"):
        profiles.default_name()


def test_examples_scale_with_the_profile(pytestconfig):
    try:
        settings.load_profile("handgrad-ci")
        assert profiles.examples(25) == 25 and profiles.examples(60) == 60
        settings.load_profile("handgrad-thorough")
        assert profiles.examples(25) == profiles.examples(60) == 1000
    finally:       # the session's profile, as tests/conftest.py chose it
        profiles.load(pytestconfig.getoption("--handgrad-profile"))


# --- mutants -------------------------------------------------------------------------------

def test_mutants_report_what_a_weak_spec_misses_and_why():
    run = command("--mutants", "--module", "myops")
    assert run.returncode == 1
    out = run.stdout
    assert "cube: 8 of 8 mutants caught" in out
    assert "average: 13 of 14 mutants caught" in out
    assert "softsign: 6 of 7 mutants caught" in out    # 1-D only: no wrong axis to sum over
    missed = [line for line in out.splitlines() if "MISSED" in line]
    assert len(missed) == 2
    (swap,) = [m for m in missed if "swap a, b" in m]
    assert "same gradient on every sample drawn" in swap and "a broadcast second input" in swap
    (transposed,) = [m for m in missed if "vjp transposed" in m]
    assert "draw square matrices" in transposed
    assert "2 mutants not caught" in out
    for name in ("vjp x1.01", "vjp negated", "drop x", "jvp ignores x", "writes into grad"):
        assert re.search(rf"caught  {re.escape(name)}\s+by \w+", out), name


def test_every_built_in_op_catches_every_mutant():
    """All generic mutants of all built-in ops, on the ci profile with 40 examples (the ops
    themselves are checked by test_op_properties). Draws are derandomized from the checker's
    own source: with 25, one hypothesis version drew add's square inputs as zeros only (the
    structured share of ``values``), so whether a spec "catches" a mutant turned on luck."""
    profile = settings(settings.get_profile("handgrad-ci"), max_examples=40)
    missed = {}
    for name, op in sorted(engine.REGISTRY.items()):
        report = run_mutants(op, profile=profile, check_original=False)
        assert report.results, name
        if report.missed:
            missed[name] = [(r.mutant.name, r.reason) for r in report.missed]
    assert not missed


@pytest.mark.parametrize("how", [["--handgrad-profile", "thorough"], []])
def test_the_test_suite_takes_the_thorough_profile(how):
    """``python -m pytest --handgrad-profile thorough`` (or HANDGRAD_PROFILE=thorough) gives
    each per-op property 1,000 examples; HYPOTHESIS_PROFILE (set to a name handgrad does not
    know, as a project's own) changes nothing."""
    env = {"HYPOTHESIS_PROFILE": "myproject"} if how else {"HANDGRAD_PROFILE": "thorough"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *how,
         "--hypothesis-show-statistics", "tests/engine/test_op_properties.py",
         "-k", "test_op_property and neg and forward_matches_reference"],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != profiles.ENV},
             "CI": "true", **env})
    assert run.returncode == 0, run.stdout[-2000:]
    assert "- 1000 passing" in run.stdout


_STUDENT = '''
import numpy as np
from hypothesis import strategies as st
from handgrad.engine.testing import numpy_rule, strategies

def sq_f(x):
    return x * x, x

def sq_b(dout, cache):
    np.seterr(under="raise")               # a rule's own numpy settings
    return 2 * dout * cache

def exp_f(x):
    return np.exp(x), np.exp(x)

def exp_b(dout, cache):
    return dout * cache

@st.composite
def bad_inputs(draw):
    n = draw(st.integers(3, 1))            # min > max: hypothesis's InvalidArgument
    return (draw(strategies.values((n, 2))),), {}

a_broken = numpy_rule(sq_f, sq_b, sample=bad_inputs(), name="a_broken")
b_square = numpy_rule(sq_f, sq_b, name="b_square",
                      sample=st.tuples(st.tuples(strategies.values((2, 3), 1, 2)), st.just({})))
c_exp = numpy_rule(exp_f, exp_b, name="c_exp",
                   sample=st.tuples(st.tuples(strategies.values((2, 3), -800, 1)), st.just({})))
'''


def test_one_rules_invalid_strategy_is_its_error_and_numpy_settings_stay_with_a_rule(tmp_path):
    """st.integers(3, 1) in one rule's strategy ended the run in a traceback, exit 1, with
    no JSON for the others; np.seterr(under="raise") in b_square's backward made c_exp,
    checked next, fail on an underflow it passes alone."""
    import json
    (tmp_path / "student.py").write_text(_STUDENT)
    run = command("--module", str(tmp_path / "student.py"), "--json")
    assert run.returncode == 2, run.stderr
    records = {r["name"]: r for r in json.loads(run.stdout)}
    assert set(records) == {"a_broken", "b_square", "c_exp"}
    assert "sample strategy is invalid" in records["a_broken"]["failure"]
    assert records["b_square"]["failure"] is None and records["c_exp"]["failure"] is None


def test_mutants_of_an_op_without_a_spec_fail_as_without_mutants():
    """It was a KeyError traceback (no JSON, exit 1) instead of the op's failure."""
    class Quad(engine.Op):
        """quad(x) = x^4."""
        name = "quad_without_spec"
        rule = "d/dx = 4x^3"

        def forward(self, ctx, x):
            ctx.save_input(x)
            return x ** 4

        def backward(self, ctx, grad):
            return (grad * 4 * ctx.saved[0] ** 3,)

        def jvp(self, ctx, dx):
            return dx * 4 * ctx.saved[0] ** 3

    report = run_mutants(Quad())
    assert report.failure is not None and "has no test specification" in report.failure


def test_a_profile_without_the_generate_phase_is_refused():
    """The plugin took any registered hypothesis profile: one with phases=[explicit, reuse]
    skipped every test of a wrong rule, and pytest exited 0."""
    from hypothesis import Phase
    settings.register_profile("no-generate-for-the-test", phases=[Phase.explicit, Phase.reuse])
    with pytest.raises(ValueError, match="has no generate phase"):
        profiles.full_name("no-generate-for-the-test")


def test_a_module_importing_a_rule_from_another_one_checked_too(tmp_path):
    """--module layers.py --module losses.py, where layers.py does `from losses import
    square`: losses.py ran a second time, its rule a new object of the same name, and the
    check was refused ("two rules are named 'square'"); the other order worked."""
    (tmp_path / "losses.py").write_text(
        "from hypothesis import strategies as st\n"
        "from handgrad.engine.testing import numpy_rule, strategies\n"
        "def square_forward(x): return x * x, x\n"
        "def square_backward(dout, cache): return 2 * dout * cache\n"
        "square = numpy_rule(square_forward, square_backward,\n"
        "                    sample=st.tuples(st.tuples(strategies.values((2, 3))), st.just({})))\n")
    (tmp_path / "layers.py").write_text(
        "from losses import square\n"
        "from hypothesis import strategies as st\n"
        "from handgrad.engine.testing import numpy_rule, strategies\n"
        "def cube_forward(x): return x ** 3, x\n"
        "def cube_backward(dout, cache): return 3 * dout * cache ** 2\n"
        "cube = numpy_rule(cube_forward, cube_backward,\n"
        "                  sample=st.tuples(st.tuples(strategies.values((2, 3))), st.just({})))\n")
    for order in (["layers.py", "losses.py"], ["losses.py", "layers.py"]):
        args = [a for name in order for a in ("--module", str(tmp_path / name))]
        run = command(*args, env={"PYTHONPATH": str(tmp_path)})
        assert run.returncode == 0, run.stdout + run.stderr
        assert lines_for(run.stdout, "square") and lines_for(run.stdout, "cube")


def test_mutants_of_a_rule_its_spec_cannot_check_are_an_error_as_without_mutants(tmp_path):
    """An unusable sample strategy (x, {} instead of (x,), {}): ERROR and exit 2 without
    --mutants, but "fails its own spec" and exit 1 with it."""
    (tmp_path / "student.py").write_text(
        "from hypothesis import strategies as st\n"
        "from handgrad.engine.testing import numpy_rule, strategies\n"
        "def square_forward(x): return x * x, x\n"
        "def square_backward(dout, cache): return 2 * dout * cache\n"
        "broken = numpy_rule(square_forward, square_backward,\n"
        "                    sample=st.tuples(strategies.values((2, 3)), st.just({})))\n")
    plain = command("--module", str(tmp_path / "student.py"))
    mutants = command("--module", str(tmp_path / "student.py"), "--mutants")
    assert plain.returncode == 2 and mutants.returncode == 2, mutants.stdout + mutants.stderr
