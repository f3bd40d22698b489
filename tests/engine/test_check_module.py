"""``handgrad check --module`` on rules (engine/testing/targets.py): a module declares them
by binding them to names or listing them in ``HANDGRAD_RULES``; one line per rule as for
ops, ``--mutants`` on them, ``--json`` for grading scripts, and a student's module that
does not import is one line naming the file and the line.

Each student module is written to a temporary directory and checked by the command in a
fresh interpreter, as a teacher runs it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from handgrad.engine.testing import cli, profiles

from . import student_layers

README = Path(__file__).resolve().parents[2] / "README.md"

LAYERS = textwrap.dedent('''
    import numpy as np
    from hypothesis import strategies as st

    from handgrad import engine
    from handgrad.engine.testing import spec, strategies, unary
    from handgrad.engine.testing.rules import numpy_rule
''') + student_layers.LAYERS + textwrap.dedent('''


    @engine.register
    class Cube(engine.Op):
        """cube(x) = x^3, elementwise."""

        name = "cube"
        rule = "d/dx = 3 x^2"

        def forward(self, ctx, x):
            ctx.save(x)
            return x ** 3

        def backward(self, ctx, grad):
            return (grad * 3 * ctx.saved[0] ** 2,)

        def jvp(self, ctx, dx):
            return dx * 3 * ctx.saved[0] ** 2


    spec("cube", sample=unary(strategies.reals), reference=lambda x: x ** 3)
    scalar = st.tuples(st.tuples(strategies.values(())), st.just({}))
    affine = numpy_rule(affine_forward, affine_backward, name="affine", sample=st.tuples(
        st.tuples(strategies.values((3, 4)), strategies.values((4, 2)), strategies.values((2,))),
        st.just({})))
''')


def check(tmp_path: Path, source: str, *args: str, name: str = "student_layers.py",
          cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Write ``source`` to ``name`` in tmp_path and run ``handgrad check --module`` on it."""
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if k != profiles.ENV}
    env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "handgrad.engine.testing", "--module", name,
                           "--profile", "dev", *args], capture_output=True, text=True,
                          cwd=cwd or tmp_path, env=env, timeout=600)


def lines_for(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if re.match(rf"(PASS|FAIL)\s+{name}\s", line)]


def test_a_module_declares_rules_by_name_and_in_handgrad_rules(tmp_path):
    run = check(tmp_path, LAYERS + "HANDGRAD_RULES = [numpy_rule(sigmoid, sigmoid_backward, "
                                   "sample=scalar)]\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checking 1 op and 2 rules on profile dev (10 examples per property)" in run.stdout
    for name in ("cube", "affine", "sigmoid"):
        (line,) = lines_for(run.stdout, name)
        assert line.startswith("PASS") and "10 examples" in line and "vjp" in line, line
    assert run.stdout.index("PASS  cube") < run.stdout.index("PASS  affine")   # ops first
    assert "3 passed, 0 failed" in run.stdout


def test_op_narrows_to_a_rule(tmp_path):
    run = check(tmp_path, LAYERS, "--op", "affine")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "checking 1 rule on profile dev" in run.stdout
    assert lines_for(run.stdout, "affine") and not lines_for(run.stdout, "cube")
    run = check(tmp_path, LAYERS, "--op", "relu")
    assert run.returncode == 2
    assert run.stderr.startswith("python -m handgrad.engine.testing: error: --op relu: no such "
                                 "op or rule in the modules given; choose from affine, cube")


def test_a_failing_rule_prints_its_smallest_input_and_exits_1(tmp_path):
    run = check(tmp_path, LAYERS + "buggy = numpy_rule(sigmoid, sigmoid_backward_buggy, "
                                   "sample=scalar, name='sigmoid')\n")
    assert run.returncode == 1
    (line,) = lines_for(run.stdout, "sigmoid")
    assert line.startswith("FAIL")
    assert re.search(r"\n      sigmoid: property vjp_matches_finite_differences fails for sample "
                     r"args=\(array\(-?[\d.]+\),\), params=\{\} \(seed \d+\):\n      GradcheckError",
                     run.stdout), run.stdout
    assert "2 passed, 1 failed" in run.stdout


def test_json_for_grading_scripts(tmp_path):
    run = check(tmp_path, LAYERS + "buggy = numpy_rule(sigmoid, sigmoid_backward_buggy, "
                                   "sample=scalar, name='sigmoid')\n", "--json")
    assert run.returncode == 1
    records = {r["name"]: r for r in json.loads(run.stdout)}       # nothing else on stdout
    assert set(records) == {"cube", "affine", "sigmoid"}
    keys = {"name", "kind", "passed", "failed_property", "diagnosis", "input", "seed", "failure",
            "examples", "worst"}
    assert all(set(r) == keys for r in records.values())
    cube, affine, sigmoid = records["cube"], records["affine"], records["sigmoid"]
    assert (cube["kind"], affine["kind"], sigmoid["kind"]) == ("op", "numpy", "numpy")
    assert cube["passed"] and affine["passed"] and not sigmoid["passed"]
    assert affine["examples"] == 10 and affine["failure"] is None and affine["input"] is None
    assert affine["worst"]["vjp_matches_finite_differences"] < 1e-6
    assert affine["worst"]["jvp_matches_finite_differences"] is None     # no jvp: does not apply
    assert sigmoid["failed_property"] == "vjp_matches_finite_differences"
    assert re.fullmatch(r"args=\(array\(-?[\d.]+\),\), params=\{\}", sigmoid["input"])
    assert isinstance(sigmoid["seed"], int)
    assert sigmoid["failure"].startswith("sigmoid: property vjp_matches_finite_differences fails")
    assert sigmoid["diagnosis"] is None or isinstance(sigmoid["diagnosis"], str)


EXITING = textwrap.dedent('''

    import sys


    def square_forward(x):
        return x * x


    def square_backward(dout, x):
        sys.exit(0)                 # a leftover debugging stop, with a "success" status
        return dout * x             # (and the 2 of 2 x forgotten)


    square = numpy_rule(square_forward, square_backward, sample=scalar)
''')


@pytest.mark.parametrize("as_json", [False, True])
def test_a_rule_that_calls_exit_fails_and_the_others_are_still_checked(tmp_path, as_json):
    """sys.exit() inside a checked rule is a failure of that rule (it ended the check with
    the student's status, 0 here, and no verdict)."""
    run = check(tmp_path, LAYERS + EXITING, "--op", "square", "--op", "affine",
                *(["--json"] if as_json else []))
    assert run.returncode == 1, run.stdout + run.stderr
    if as_json:
        records = {r["name"]: r for r in json.loads(run.stdout)}
        assert records["affine"]["passed"] and not records["square"]["passed"]
        assert "RuleExit: the rule called exit() or sys.exit() (code 0)" in \
            records["square"]["failure"]
    else:
        (line,) = lines_for(run.stdout, "square")
        assert line.startswith("FAIL") and lines_for(run.stdout, "affine")[0].startswith("PASS")
        assert "RuleExit: the rule called exit() or sys.exit()" in run.stdout
        assert "1 passed, 1 failed" in run.stdout

PRINTING = textwrap.dedent('''

    print("loading my layers")      # a student's debugging prints, at import and in a rule


    def noisy_cube_forward(x):
        return x ** 3


    def noisy_cube_backward(dout, x):
        print("backward called")
        return dout * 3 * x ** 2


    noisy_cube = numpy_rule(noisy_cube_forward, noisy_cube_backward, sample=scalar, name="noisy_cube")
''')


BAD_SAMPLE = textwrap.dedent('''

    def square_forward(x):
        return x * x, x


    def square_backward(dout, cache):
        return dout * cache


    square = numpy_rule(square_forward, square_backward,          # the params dict forgotten
                        sample=st.tuples(st.tuples(strategies.values((2, 3)))))
''')


@pytest.mark.parametrize("as_json", [False, True])
def test_a_sample_strategy_that_cannot_check_its_rule_is_an_error_the_others_are_checked(
        tmp_path, as_json):
    """A sample that is not (args, params): that rule is one clear ERROR, the others are
    still checked, and the exit status is 2 (it was a bare traceback, and no JSON)."""
    run = check(tmp_path, LAYERS + BAD_SAMPLE, "--op", "square", "--op", "affine",
                *(["--json"] if as_json else []))
    assert run.returncode == 2, run.stdout + run.stderr
    message = ("square: its sample strategy drew a tuple of 1 item; a sample is (args, params): "
               "a tuple of the inputs and a dict of keyword parameters")
    if as_json:
        records = {r["name"]: r for r in json.loads(run.stdout)}
        assert records["affine"]["passed"]
        square = records["square"]
        assert not square["passed"] and square["failed_property"] is None
        assert square["failure"].startswith(message)
    else:
        assert lines_for(run.stdout, "affine")[0].startswith("PASS")
        assert re.search(r"^ERROR  square ", run.stdout, re.M), run.stdout
        assert message in run.stdout and "Traceback" not in run.stdout + run.stderr
        assert "1 passed, 1 failed (1 could not be checked)" in run.stdout


@pytest.mark.parametrize("mutants", [False, True], ids=["check", "mutants"])
def test_with_json_what_the_checked_code_prints_goes_to_stderr(tmp_path, mutants):
    """stdout holds the JSON alone, so a grading script can parse it (a student's prints
    came first and broke it)."""
    run = check(tmp_path, LAYERS + PRINTING, "--op", "noisy_cube", "--json",
                *(["--mutants"] if mutants else []))
    (record,) = json.loads(run.stdout)
    assert record["name"] == "noisy_cube"
    assert "loading my layers" in run.stderr and "backward called" in run.stderr


def test_mutants_are_planted_in_rules_too(tmp_path):
    source = LAYERS + "sig = numpy_rule(sigmoid, sigmoid_backward, sample=scalar, name='sig')\n"
    run = check(tmp_path, source, "--mutants", "--op", "sig")
    assert "checking 1 rule on profile dev (10 examples per property), planting mutants" in run.stdout
    assert re.search(r"^sig: \d+ of \d+ mutants caught$", run.stdout, flags=re.M), run.stdout
    assert re.search(r"caught  vjp negated\s+by \w+", run.stdout)
    run = check(tmp_path, source, "--mutants", "--op", "sig", "--json")
    (record,) = json.loads(run.stdout)
    assert (record["name"], record["kind"], record["failure"]) == ("sig", "numpy", None)
    assert any(r["name"] == "vjp negated" and r["caught"] and r["caught_by"] for r in record["mutants"])
    assert record["passed"] == all(r["caught"] for r in record["mutants"]) == (run.returncode == 0)


@pytest.mark.parametrize("source, message", [
    ("import numpy as np\n\nx = np.zeros(3)\ny = undefined_name + 1\n",
     "importing it failed at line 4: NameError: name 'undefined_name' is not defined"),
    ("def layer(x)\n    return x\n",
     "importing it failed at line 1: SyntaxError: expected ':'"),
    ("import sys\nsys.exit('no grading here')\n",
     "importing it failed at line 2: SystemExit: no grading here"),
    ("import cs231n_helpers\n",
     "importing it failed at line 1: ModuleNotFoundError: No module named 'cs231n_helpers'"),
    ("x = 1\n",
     "it registers no op (decorate the op classes with @engine.register) and declares no rule"),
    ("HANDGRAD_RULES = [print]\n",
     "student_layers.HANDGRAD_RULES[0] is <built-in function print>, not a rule"),
])
def test_a_student_module_that_cannot_be_checked_is_one_line(tmp_path, source, message):
    run = check(tmp_path, source)
    assert run.returncode == 2, run.stdout
    assert run.stderr.startswith("python -m handgrad.engine.testing: error: --module "
                                 "student_layers.py: " + message), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_two_rules_with_one_name_are_a_usage_error(tmp_path):
    run = check(tmp_path, LAYERS + "other = numpy_rule(sigmoid, sigmoid_backward, sample=scalar, "
                                   "name='affine')\n")
    assert run.returncode == 2
    assert "two rules are named 'affine' (give each rule its own name=)" in run.stderr


def test_a_module_in_another_folder_imports_its_neighbours(tmp_path):
    """``--module hw2/student_layers.py`` run from elsewhere: its folder is on the path."""
    (tmp_path / "hw2").mkdir()
    (tmp_path / "hw2" / "helpers.py").write_text(
        "def affine_forward(x, w, b):\n    return x @ w + b, (x, w, b)\n")
    source = LAYERS.replace("def affine_forward", "from helpers import affine_forward\n\n\n"
                                                  "def _unused_affine_forward")
    run = check(tmp_path, source, "--op", "affine", name="hw2/student_layers.py")
    assert run.returncode == 0, run.stdout + run.stderr
    assert lines_for(run.stdout, "affine")[0].startswith("PASS")


def test_a_file_named_like_a_module_already_imported_does_not_replace_it(tmp_path):
    (tmp_path / "json.py").write_text("ANSWER = 42\n")
    try:
        mod = cli._load_file(tmp_path / "json.py")
        assert mod.ANSWER == 42 and mod.__name__ == "_handgrad_check_json"
        assert sys.modules["json"] is json
    finally:
        sys.modules.pop("_handgrad_check_json", None)


def test_the_readme_student_module_is_graded_as_printed(tmp_path):
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
                if b.startswith("# student_layers.py")]
    run = check(tmp_path, block)
    assert run.returncode == 1, run.stdout + run.stderr
    assert lines_for(run.stdout, "affine")[0].startswith("PASS")
    assert lines_for(run.stdout, "square")[0].startswith("FAIL")
    assert "likely: off by a constant factor" in run.stdout
    assert "square: property vjp_matches_finite_differences fails for sample" in run.stdout
