"""handgrad's pytest plugin (entry point ``pytest11``: src/handgrad/pytest_plugin.py, the rest
in engine/testing/pytest_plugin.py): a
user's test file lists rules and ops in ``HANDGRAD_RULES`` and gets one test per rule and
property. Each user file runs in-process under pytester, with the plugin loaded by its
entry-point name (``-p handgrad``, a no-op when autoloading already loaded it)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from handgrad import pytest_plugin as plugin
from handgrad.engine.testing import PROFILE_NAMES, PROPERTIES, profiles

from . import student_layers

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

RULES = textwrap.dedent('''
    import numpy as np
    from hypothesis import strategies as st

    from handgrad import engine
    from handgrad.engine.testing import strategies
    from handgrad.engine.testing.rules import numpy_rule
''') + student_layers.LAYERS + textwrap.dedent('''


    def relu(x):
        return np.maximum(x, 0)


    def relu_backward(dout, x):
        return dout * (x > 0)


    def relu_backward_other_convention(dout, x):
        return dout * (x >= 0)                    # relu'(0) = 1, not the 0 the kink example says


    affine = numpy_rule(affine_forward, affine_backward, name="affine", sample=st.tuples(
        st.tuples(strategies.values((3, 4)), strategies.values((4, 2)), strategies.values((2,))),
        st.just({})))
    vector = st.tuples(st.tuples(strategies.values((3,))), st.just({}))
    sigmoid_rule = numpy_rule(sigmoid, sigmoid_backward, sample=vector, name="sigmoid")
    scalar = st.tuples(st.tuples(strategies.values(())), st.just({}))     # quick to shrink
    buggy_sigmoid = numpy_rule(sigmoid, sigmoid_backward_buggy, sample=scalar, name="buggy_sigmoid")
    at_zero = [((np.array([-1.0, 0.0, 2.0]),), {}, (np.array([0.0, 0.0, 1.0]),))]
    relu_rule = numpy_rule(relu, relu_backward, name="relu", kink_examples=at_zero,
                           sample=st.tuples(st.tuples(strategies.values((3,), avoid=[0.0])), st.just({})))
    other_relu = numpy_rule(relu, relu_backward_other_convention, name="other_relu",
                            kink_examples=at_zero,
                            sample=st.tuples(st.tuples(strategies.values((3,), avoid=[0.0])), st.just({})))
''')


def run(pytester: pytest.Pytester, rules: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_layers=RULES + f"\nHANDGRAD_RULES = [{rules}]\n")
    return pytester.runpytest_inprocess("-p", "handgrad", "-p", "no:cacheprovider", *args)


def outcomes(result: pytest.RunResult) -> dict[str, str]:
    """test id -> PASSED / FAILED / SKIPPED, from ``-v`` output."""
    found = re.findall(r"test_layers\.py::(\S+) (PASSED|FAILED|SKIPPED)", result.stdout.str())
    return dict(found)


PROPERTY_NAMES = [p.__name__ for p in PROPERTIES]


def test_correct_rules_and_ops_pass_one_test_per_rule_and_property(pytester):
    result = run(pytester, "affine, sigmoid_rule, engine.tanh", "-v", "--handgrad-profile", "dev")
    result.assert_outcomes(failed=0, passed=result.parseoutcomes()["passed"],
                           skipped=result.parseoutcomes().get("skipped", 0))
    got = outcomes(result)
    assert set(got) == {f"{name}[{p}]" for name in ("affine", "sigmoid", "tanh")
                        for p in PROPERTY_NAMES}
    assert got["affine[vjp_matches_finite_differences]"] == "PASSED"
    assert got["tanh[jvp_matches_finite_differences]"] == "PASSED"     # an op has a jvp
    assert got["affine[jvp_matches_finite_differences]"] == "SKIPPED"  # no jvp given


def test_a_buggy_rule_fails_one_test_per_failing_property(pytester):
    result = run(pytester, "buggy_sigmoid", "-v", "--handgrad-profile", "dev")
    failed = {k for k, v in outcomes(result).items() if v == "FAILED"}
    assert failed == {"buggy_sigmoid[vjp_matches_finite_differences]",
                      "buggy_sigmoid[derivatives_are_accurate]"}
    out = result.stdout.str()
    assert re.search(r"buggy_sigmoid: property vjp_matches_finite_differences fails for "
                     r"sample args=\(array\(-?[\d.]+\),\), params=\{\} \(seed \d+\):", out), out
    assert "Traceback" not in out and "def runtest" not in out     # the report, not the plugin's code
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_kink_examples_are_a_test_of_their_own(pytester):
    result = run(pytester, "relu_rule, other_relu", "-v", "--handgrad-profile", "dev")
    got = outcomes(result)
    assert got["relu[kink_examples_hold]"] == "PASSED"
    assert got["other_relu[kink_examples_hold]"] == "FAILED"
    assert got["other_relu[vjp_matches_finite_differences]"] == "PASSED"   # away from the kink
    assert "other_relu: convention at a kink:" in result.stdout.str()
    assert "sigmoid[kink_examples_hold]" not in run(pytester, "sigmoid_rule", "--collect-only",
                                                    "-q").stdout.str()


@pytest.mark.parametrize("option, variable, examples", [
    (None, None, 10), ("ci", None, 25), (None, "ci", 25), ("ci", "dev", 25)])
def test_the_profile_sets_the_examples(pytester, monkeypatch, option, variable, examples):
    """``--handgrad-profile``, else ``HANDGRAD_PROFILE``, else dev (outside CI). The skip
    reason of a property that does not apply counts the samples drawn."""
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(profiles.ENV, raising=False)
    if variable:
        monkeypatch.setenv(profiles.ENV, variable)
    result = run(pytester, "sigmoid_rule", "-rs", "-k", "complex_step",
                 *(["--handgrad-profile", option] if option else []))
    result.assert_outcomes(skipped=1)
    assert (f"complex_step_matches does not apply to sigmoid (it measured nothing on the "
            f"{examples} samples drawn)") in result.stdout.str()


def test_a_projects_own_hypothesis_profiles_do_not_change_the_check(pytester, monkeypatch):
    """A conftest that loads a profile without Phase.generate (and registers hypothesis's
    "ci" again without it) before handgrad's profiles are registered: the wrong rule still
    fails (it was skipped, "told to run no test cases"). A fresh interpreter, as handgrad's
    profiles are registered once per process."""
    monkeypatch.delenv(profiles.ENV, raising=False)
    pytester.makeconftest("""
        from hypothesis import Phase, settings
        settings.register_profile("quick", phases=[Phase.explicit])
        settings.register_profile("ci", phases=[Phase.explicit])
        settings.load_profile("quick")
    """)
    pytester.makepyfile(test_layers=RULES + textwrap.dedent("""
        HANDGRAD_RULES = [buggy_sigmoid]


        def test_every_handgrad_profile_generates():
            from hypothesis import Phase, settings
            for name in ("handgrad-dev", "handgrad-ci", "handgrad-thorough"):
                assert Phase.generate in settings.get_profile(name).phases, name
    """))
    result = pytester.runpytest_subprocess("-p", "handgrad", "-p", "no:cacheprovider", "-v",
                                           "-k", "vjp_matches or generates")
    assert outcomes(result) == {"buggy_sigmoid[vjp_matches_finite_differences]": "FAILED",
                                "test_every_handgrad_profile_generates": "PASSED"}, \
        result.stdout.str()


def test_a_bad_entry_is_one_collection_error(pytester):
    result = run(pytester, "affine, 42")
    result.assert_outcomes(errors=1)
    assert ("test_layers.py: HANDGRAD_RULES[1] is 42, not a rule (numpy_rule(...), "
            "torch_rule(...), jax_rule(...)) or an op (engine.<name>)") in result.stdout.str()


def test_two_rules_with_one_name_are_a_collection_error(pytester):
    result = run(pytester, "sigmoid_rule, numpy_rule(relu, relu_backward, sample=vector, name='sigmoid')")
    result.assert_outcomes(errors=1)
    assert "two rules are named 'sigmoid' (give each rule its own name=)" in result.stdout.str()


def test_a_bad_handgrad_profile_variable_is_a_collection_error(pytester, monkeypatch):
    monkeypatch.setenv(profiles.ENV, "fast")
    result = run(pytester, "sigmoid_rule")
    result.assert_outcomes(errors=1)
    assert "HANDGRAD_PROFILE=fast: unknown hypothesis profile 'fast'" in result.stdout.str()


def test_without_the_plugin_the_list_is_ignored(pytester):
    pytester.makepyfile(test_layers=RULES + "\nHANDGRAD_RULES = [affine]\n")
    result = pytester.runpytest_inprocess("-p", "no:handgrad", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


def test_the_plugin_is_installed_as_an_entry_point():
    (ep,) = [ep for ep in entry_points(group="pytest11") if ep.name == "handgrad"]
    assert ep.value == "handgrad.pytest_plugin"
    assert '[project.entry-points.pytest11]\nhandgrad = "handgrad.pytest_plugin"' \
        in (ROOT / "pyproject.toml").read_text()
    assert plugin.PROFILES == PROFILE_NAMES


def test_loading_the_plugin_imports_no_hypothesis_numpy_or_engine():
    """Another project's pytest run with handgrad installed pays for this module only."""
    code = ("import sys; import handgrad.pytest_plugin; "
            "print(sorted(m for m in ('hypothesis', 'numpy', 'handgrad.engine', "
            "'handgrad.engine.testing.check') if m in sys.modules))")
    run_ = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run_.returncode == 0, run_.stderr
    assert run_.stdout.strip() == "[]"


def test_the_suite_runs_without_the_plugin():
    """With ``-p no:handgrad`` tests/conftest.py adds ``--handgrad-profile`` itself."""
    env = {k: v for k, v in os.environ.items() if k != profiles.ENV}
    run_ = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:handgrad",
         "--handgrad-profile", "thorough", "tests/engine/test_check_command.py", "-k",
         "examples_scale"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run_.returncode == 0, run_.stdout[-2000:] + run_.stderr
    assert "1 passed" in run_.stdout


def test_the_readme_example_runs_under_the_plugin(pytester):
    """The README's test file, as a user saves it: its rules pass every test."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
                if b.startswith("# test_layers.py")]
    pytester.makepyfile(test_layers=block)
    result = pytester.runpytest_inprocess("-p", "handgrad", "-p", "no:cacheprovider", "-v",
                                          "--handgrad-profile", "dev")
    got = outcomes(result)
    assert got and "FAILED" not in got.values(), result.stdout.str()
    assert got["affine[vjp_matches_finite_differences]"] == "PASSED"
