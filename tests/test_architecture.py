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
    # One walk of the graph drawn, plus one of a one-node graph for tanh′(z) in its caption
    # (engine.grad: the same walker); frames: step 0, sum, tanh, matmul, the closing frame.
    assert len(walker_calls) == 3 and len(frames) == 5


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
        assert "engine.graph" not in text and "engine.memory" not in text and "._data" not in text, p
        tree = ast.parse(text)
        for node in ast.walk(tree):           # nor `from handgrad.engine import memory`
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("engine"):
                assert not {a.name for a in node.names} & {"memory", "graph"}, p
    assert nn.Parameter.__mro__[1] is engine.Tensor


# --- capture does not leak into the op contract --------------------------------------------

def _op_classes(cls: type = engine.Op) -> list[type]:
    return [cls] + [c for sub in cls.__subclasses__() for c in _op_classes(sub)]


def test_no_op_class_carries_a_check_values_flag():
    """check reads shapes and parameters only; an op whose validation reads values says so
    with validate(). No op, base class or engine.Op itself keeps the old flag (test-made
    classes aside: register refuses one that sets it)."""
    classes = [c for c in _op_classes() if c.__module__.startswith("handgrad.engine")]
    assert {type(op) for op in engine.REGISTRY.values()} <= set(classes)
    assert [c.__qualname__ for c in classes if hasattr(c, "check_values")] == []


def test_the_graph_node_and_the_replay_context_implement_the_rule_context_protocol():
    from handgrad.engine.op import RuleContext
    from handgrad.engine.plan_format import ArraySpec, ReplayContext
    x = engine.Tensor(np.ones(2), requires_grad=True)
    assert isinstance(engine.tanh(x).node, RuleContext)
    assert isinstance(ReplayContext((ArraySpec((2,), np.dtype(np.float64)),), {}, (True,)),
                      RuleContext)


# --- nn: no import cycle --------------------------------------------------------------------

def nn_imports_of(path: Path, modules: set[str]) -> set[str]:
    """The modules of nn that a file of nn imports, anywhere in it (an import inside a
    function counts: a lazy import is how a cycle hides)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module or ""
            elif node.level == 0 and node.module and node.module.split(".")[:2] == ["handgrad", "nn"]:
                base = node.module.removeprefix("handgrad.nn").lstrip(".")
            else:
                continue
            names = [base] if base else [a.name for a in node.names]
            found |= {n.split(".")[0] for n in names} & modules
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names
                      if a.name.startswith("handgrad.nn.")} & modules
    return found


def import_cycle(folder: Path) -> list[str] | None:
    """A cycle among the modules of ``folder`` (the package's __init__ aside), if any."""
    files = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    edges = {name: sorted(nn_imports_of(p, set(files)) - {name}) for name, p in files.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for other in edges[name]:
            cycle = visit(other, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return None
    return next((c for c in (visit(n, []) for n in sorted(edges)) if c), None)


def test_nn_has_no_import_cycle(tmp_path):
    assert import_cycle(ROOT / "nn") is None
    # The check sees a lazy import inside a function (how the train <-> compile cycle hid).
    (tmp_path / "a.py").write_text("from .b import f\n")
    (tmp_path / "b.py").write_text("def f():\n    from handgrad.nn.a import g\n")
    assert import_cycle(tmp_path) == ["a", "b", "a"]


# --- one owner for array memory -------------------------------------------------------------

def _engine_modules():
    return [p for p in ENGINE.rglob("*.py") if p.name != "memory.py"]


def test_array_memory_has_one_owner_module():
    assert not (ENGINE / "saved.py").exists() and not (ENGINE / "accumulate.py").exists()
    for p in _engine_modules():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("memory"):
                assert not any(a.name.startswith("_") for a in node.names), p
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id == "memory":
                assert not node.attr.startswith("_"), f"{p.name} uses memory.{node.attr}"
            if isinstance(node, ast.Name):
                assert node.id not in ("EPOCH", "Guard"), f"{p.name}: the old name {node.id}"


def test_only_memory_touches_a_tensors_array_record():
    """The tensor's record slot: tensor.py only starts it, empty or with what memory.wrap
    returned; nothing outside engine/memory.py reads it."""
    for p in _engine_modules():
        tree = ast.parse(p.read_text())
        for node in ast.walk(tree):
            targets = node.targets if isinstance(node, ast.Assign) else \
                [node.target] if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Attribute) and t.attr == "_memory" for t in targets):
                assert p.name == "tensor.py" and isinstance(node.value, (ast.Constant, ast.Name)) \
                    and ast.unparse(node.value) in ("None", "record"), f"{p.name}:{node.lineno}"
        uses = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "_memory"
                and isinstance(n.ctx, ast.Load)]
        assert uses == [], f"{p.name}:{uses[0].lineno} reads a tensor's memory record"


def test_the_core_only_compares_a_nodes_memory_slot_with_the_write_clock():
    """Outside engine/memory.py, ``node.memory`` is set to the write clock's tick (a new
    node) and compared with it by identity (the walker's fast path), nothing else."""
    tick = "memory.write_tick"
    for p in _engine_modules():
        tree = ast.parse(p.read_text())
        allowed: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and len(node.ops) == 1 \
                    and isinstance(node.ops[0], (ast.Is, ast.IsNot)) \
                    and ast.unparse(node.comparators[0]) == tick:
                allowed.add(id(node.left))
            if isinstance(node, ast.AnnAssign) and node.value is not None \
                    and ast.unparse(node.value) == tick:
                allowed.add(id(node.target))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "memory" \
                    and not (isinstance(node.value, ast.Name) and node.value.id == "memory"):
                assert id(node) in allowed, f"{p.name}:{node.lineno}: {ast.unparse(node)}"
                assert p.name == "graph.py", p


def test_the_core_reaches_memory_through_three_seams():
    """Building tensors and handing their arrays out (tensor.py), an op's call (op.py:
    freezing array parameters, after its forward), before a rule runs (graph.py), and the
    same two for a replayed plan (capture.py: after its forward pass, before its backward);
    elsewhere only the gradient store, the public write clock and the in-place helper."""
    for p in _engine_modules():
        used = {n.attr for n in ast.walk(ast.parse(p.read_text()))
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                and n.value.id == "memory"}
        seam = {"tensor.py": {"wrap", "hand_out", "replace", "alias", "adopt", "writable",
                              "writing", "write_stamp", "global_write_stamp", "write_stamp_after", "can_write",
                              "MemoryRecord"},
                "op.py": {"frozen_copy", "after_forward", "share_view"},
                "graph.py": {"write_tick", "writes_now", "before_rule", "after_rule", "release"},
                "capture.py": {"replay_holds", "replay_check"}}.get(p.name, set())
        assert used <= seam, f"{p.name} uses memory.{sorted(used - seam)}"
