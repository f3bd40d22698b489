"""The architecture the engine promises, checked: dependencies point one way, one walker
serves every backward pass, one central difference serves every numerical derivative, and
the op contract keeps an op in one class with one spec in the matching family file."""
from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine import graph

ROOT = Path(__file__).resolve().parents[1]
ENGINE = ROOT / "engine"


def imports_of(path: Path) -> set[str]:
    """The packages a file imports (absolute imports only): the top-level name, and for
    handgrad's own packages the subpackage (``handgrad.nn``), so that layers can be told apart."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {_package(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(_package(node.module))
            if node.module == "handgrad":
                found |= {f"handgrad.{a.name}" for a in node.names}
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "handgrad" and len(parts) > 1 else parts[0]


# --- dependencies point one way -------------------------------------------------------------

def test_nothing_under_engine_imports_nn():
    offenders = [str(p.relative_to(ROOT)) for p in ENGINE.rglob("*.py") if "handgrad.nn" in imports_of(p)]
    assert offenders == []


def test_only_the_viz_and_testing_layers_import_graphviz_and_hypothesis():
    for p in ENGINE.rglob("*.py"):
        layer = p.relative_to(ENGINE).parts[0]
        if layer not in ("viz", "testing"):
            assert not imports_of(p) & {"graphviz", "hypothesis", "tqdm", "matplotlib"}, p


def test_import_engine_works_with_numpy_alone():
    """In a fresh interpreter where graphviz, hypothesis, tqdm and matplotlib cannot be
    imported, the whole core works: ops, backward, forward mode, gradcheck."""
    code = """
import sys
for name in ("graphviz", "hypothesis", "tqdm", "matplotlib"):
    sys.modules[name] = None            # any import of them now fails
import numpy as np
from handgrad import engine
x = engine.Tensor(np.array([0.5, -1.0]), requires_grad=True)
(x.tanh() * x).sum().backward()
engine.jvp(lambda a: a.exp(), (np.ones(2),), (np.ones(2),))
assert engine.gradcheck(lambda a: (a * a).sum(), [np.array([1.0, 2.0])])
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("graphviz", "hypothesis") or m.startswith("handgrad.nn"))
print("ok", loaded)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok ['graphviz', 'hypothesis']"   # the None placeholders only


def test_the_draw_command_lives_in_nn():
    assert not (ENGINE / "viz" / "cli.py").exists()
    from handgrad.nn.draw_command import draw_command
    assert callable(draw_command)


# --- one walker -----------------------------------------------------------------------------

@pytest.fixture
def walker_calls(monkeypatch):
    calls = []
    original = graph.backward_steps

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(graph, "backward_steps", counting)
    return calls


def small_loss():
    x = engine.Tensor(np.array([[0.5, -1.0]]), requires_grad=True)
    w = engine.Tensor(np.array([[1.0], [2.0]]), requires_grad=True)
    return x, (x @ w).tanh().sum()


def test_backward_grad_and_vjp_all_run_the_one_walker(walker_calls):
    x, loss = small_loss()
    engine.grad(loss, x, retain_graph=True)
    _, vjp_fn = engine.vjp(lambda a: a.exp(), np.ones(2))
    vjp_fn(np.ones(2))
    loss.backward()
    assert len(walker_calls) == 3


def test_the_pictures_run_the_one_walker(walker_calls):
    pytest.importorskip("graphviz")
    from handgrad.engine.viz import backward_frames, draw
    _, loss = small_loss()
    draw(loss, backward_order=True)
    assert len(walker_calls) == 1
    frames = list(backward_frames(loss))
    assert len(walker_calls) == 2 and len(frames) == 3    # sum, tanh, matmul: one per rule


def test_the_viz_package_has_no_backward_pass_topological_sort_or_difference_of_its_own():
    for p in (ENGINE / "viz").glob("*.py"):
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr not in ("backward", "jvp"), f"{p.name} runs a rule itself"
            if isinstance(node, ast.FunctionDef):
                assert not any(w in node.name for w in ("topolog", "central", "all_tensors")), \
                    f"{p.name} defines {node.name}"
    assert "central_difference" in (ENGINE / "viz" / "numeric.py").read_text()


def test_the_backward_loop_reads_in_about_twenty_lines():
    body = inspect.getsource(graph.backward_steps).split('"""')[-1]
    code = [line for line in body.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(code) <= 22, len(code)


# --- one class, one spec --------------------------------------------------------------------

def test_every_op_is_defined_in_its_family_file_and_specified_in_the_mirroring_spec_file():
    pytest.importorskip("hypothesis")
    from handgrad.engine.testing import spec_for
    for name, op in engine.REGISTRY.items():
        family = type(op).__module__.rsplit(".", 1)[-1]
        assert type(op).__module__ == f"handgrad.engine.ops.{family}", name
        assert spec_for(name).module == f"handgrad.engine.testing.specs.{family}", name
    families = {p.stem for p in (ENGINE / "ops").glob("*.py") if not p.stem.startswith("_")}
    specs = {p.stem for p in (ENGINE / "testing" / "specs").glob("*.py") if not p.stem.startswith("_")}
    assert families == specs


def test_nn_uses_only_the_public_engine_api():
    for p in (ROOT / "nn").glob("*.py"):
        text = p.read_text()
        assert "engine.graph" not in text and "engine.saved" not in text and "._data" not in text, p
    assert nn.Parameter.__mro__[1] is engine.Tensor
