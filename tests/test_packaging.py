"""The package as a user installs it: one ``handgrad`` namespace (no top-level ``engine`` or
``nn`` module, nothing a user's own ``engine.py`` can shadow), one version source, and
every piece of the repository written against the new import paths."""
from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import handgrad

ROOT = Path(__file__).resolve().parents[1]
OLD_TOP_LEVEL = ("engine", "nn")


def old_style_imports(code: str) -> list[str]:
    """The ``import engine`` / ``from nn import ...`` statements in some Python code."""
    found = []
    for node in ast.walk(ast.parse(code)):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0
                 and node.module else [])
        found += [n for n in names if n.split(".")[0] in OLD_TOP_LEVEL]
    return found


def python_files() -> list[Path]:
    folders = ("engine", "nn", "tests", "benchmarks", "src", "examples", "docs")
    return [p for f in folders if (ROOT / f).exists() for p in (ROOT / f).rglob("*.py")]


def test_nothing_in_the_repository_imports_a_top_level_engine_or_nn():
    offenders = {str(p.relative_to(ROOT)): old_style_imports(p.read_text())
                 for p in python_files()}
    readme_blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    offenders.update({f"README block {i}": old_style_imports(code)
                      for i, code in enumerate(readme_blocks)})
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_commands_in_the_readme_use_the_new_paths():
    text = (ROOT / "README.md").read_text()
    assert not re.search(r"python -m (engine|nn)\b", text)


def test_one_version_source():
    assert handgrad.__version__ == importlib.metadata.version("handgrad")
    from handgrad import engine
    assert engine.__version__ is handgrad.__version__
    run = subprocess.run(["handgrad", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout == f"handgrad {handgrad.__version__}\n"
    assert f"## [{handgrad.__version__}]" in (ROOT / "CHANGELOG.md").read_text()


def run_in(folder: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    """Python code run in a fresh interpreter from ``folder`` (which is on sys.path first)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=folder, env={**_environ(), **env}, timeout=120)


def _environ() -> dict[str, str]:
    import os
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


IMPORTS = """
import handgrad
from handgrad import engine, nn
import handgrad.engine.testing
print(handgrad.__version__, engine.Tensor.__module__, nn.MLP.__module__)
print(callable(nn.plots.plot_activations), callable(engine.viz.draw))
"""


def shadowing_files(folder: Path) -> None:
    for name in OLD_TOP_LEVEL:
        (folder / f"{name}.py").write_text(f"raise SystemExit('the user\\'s own {name}.py "
                                           f"was imported')\n")


def test_a_users_own_engine_py_and_nn_py_do_not_shadow_handgrad(tmp_path):
    shadowing_files(tmp_path)
    run = run_in(tmp_path, IMPORTS)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split("\n")[0].split() == [handgrad.__version__, "handgrad.engine.tensor",
                                                 "handgrad.nn.layers"]
    assert run.stdout.split("\n")[1] == "True True"


# --- the built wheel and sdist ------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """The wheel and the sdist, built from this checkout (setuptools of the test extra)."""
    out = tmp_path_factory.mktemp("dist")
    for what in ("--wheel", "--sdist"):
        run = subprocess.run([sys.executable, "-m", "build", what, "--no-isolation",
                              "--outdir", str(out), str(ROOT)],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    wheel, = out.glob("handgrad-*.whl")
    sdist, = out.glob("handgrad-*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


def test_the_wheel_installs_handgrad_only(built):
    names = zipfile.ZipFile(built["wheel"]).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"handgrad"}
    for needed in ("handgrad/__init__.py", "handgrad/py.typed", "handgrad/engine/__init__.py",
                   "handgrad/engine/ops/elementwise.py", "handgrad/engine/testing/specs/loss.py",
                   "handgrad/engine/viz/player.py", "handgrad/nn/cli.py"):
        assert needed in names
    meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(built["wheel"]).read(meta).decode()
    assert "License-Expression: MIT" in text and "Requires-Dist: numpy>=2.0" in text
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_wheel_works_from_a_folder_with_its_own_engine_py(built, tmp_path):
    target = tmp_path / "site"
    run = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                          "--target", str(target), str(built["wheel"])],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    work = tmp_path / "work"
    work.mkdir()
    shadowing_files(work)
    # The installed copy, not this checkout: only the target folder is added to the path.
    code = "import sys; sys.path.insert(1, %r)\n" % str(target) + IMPORTS + \
        "assert handgrad.__file__.startswith(%r), handgrad.__file__\n" % str(target)
    run = run_in(work, code)
    assert run.returncode == 0, run.stderr


def test_the_sdist_holds_the_tests_benchmarks_and_license(built):
    import tarfile
    with tarfile.open(built["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tests = {n for n in names if n.startswith("tests/") and n.endswith(".py")}
    assert tests == {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py")}
    for needed in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml",
                   "benchmarks/train_throughput.py", "benchmarks/results/train_throughput.json",
                   "tests/engine/golden/small_mlp.svg", "src/handgrad/__init__.py"):
        assert needed in names


def test_readme_images_render_off_site():
    """A package index shows README.md without the repository's files: images need
    absolute addresses."""
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (ROOT / "README.md").read_text())
    assert images and all(src.startswith("https://") for src in images), images


def test_declared_lower_bounds_are_the_ones_ci_installs():
    """CI installs exactly these lowest versions (.ci/lowest_pins.py) and runs the sdist's
    suite on them: a bound raised or lowered here is what gets tested."""
    run = subprocess.run([sys.executable, str(ROOT / ".ci" / "lowest_pins.py")],
                         capture_output=True, text=True)
    pins = dict(p.split("==") for p in run.stdout.split())
    assert pins["numpy"] == "2.0" and pins["hypothesis"] == "6.116"
    assert "lowest_pins.py" in (ROOT / ".ci" / "run").read_text()
