"""The notebooks of examples/ run, each in a fresh kernel of this interpreter, with no error
and nothing written to stderr, in well under a minute; and they are exactly what
examples/make_notebooks.py writes (no stored outputs, no hand edits that the script would
undo).

Needs the notebooks extra (``pip install -e ".[notebooks]"``: nbclient, nbformat, ipykernel);
without it these tests skip. The Fashion-MNIST notebook skips without the dataset's files,
the graph notebook without Graphviz's ``dot`` program.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import time
import types
from pathlib import Path

import pytest

MISSING = 'the notebooks extra is not installed: pip install -e ".[notebooks]"'
nbformat = pytest.importorskip("nbformat", reason=MISSING)
nbclient = pytest.importorskip("nbclient", reason=MISSING)
pytest.importorskip("ipykernel", reason=MISSING)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KERNEL = "handgrad-tests"          # a kernel spec of our own: this interpreter, whatever else is installed
BUDGET_S = 60.0


def generator() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebooks", EXAMPLES / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NAMES = sorted(generator().NOTEBOOKS)


def fashion_mnist_present() -> bool:
    from handgrad import nn
    try:
        nn.data.find_mnist_files("fashion-mnist")
    except nn.data.DatasetError:
        return False
    return True


def needs(name: str) -> str | None:
    """Why ``name`` cannot run here, or None."""
    if "fashion_mnist" in name and not fashion_mnist_present():
        return "the Fashion-MNIST files are not installed (apt-get install dataset-fashion-mnist)"
    if "graph" in name and shutil.which("dot") is None:
        return "Graphviz's dot program is not installed (apt-get install graphviz)"
    return None


@pytest.fixture
def kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A kernel spec that starts ipykernel on this very interpreter (not whatever 'python3'
    another Jupyter installation on the machine names)."""
    spec_dir = tmp_path / "jupyter" / "kernels" / KERNEL
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "handgrad tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return KERNEL


def test_there_are_three_notebooks_and_they_are_generated():
    make = generator()
    assert len(NAMES) == 3
    on_disk = sorted(p.name for p in EXAMPLES.glob("*.ipynb"))
    assert on_disk == NAMES, "examples/*.ipynb differ from make_notebooks.NOTEBOOKS"
    for name, cells in make.NOTEBOOKS.items():
        stored = (EXAMPLES / name).read_text(encoding="utf-8")
        assert stored == make.text(cells), f"{name} is not what make_notebooks.py writes: run it"
        nb = nbformat.reads(stored, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{name} stores outputs"
        assert any("from handgrad import engine, nn" in c.source or "from handgrad import engine" in c.source
                   for c in code)


def problems(nb: nbformat.NotebookNode) -> list[str]:
    """Every error output and every write to stderr, with the cell that made it."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {i}: {out.ename}: {out.evalue}\n{cell.source}")
            elif out.output_type == "stream" and out.name == "stderr":
                found.append(f"cell {i} wrote to stderr: {out.text}\n{cell.source}")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_in_a_fresh_kernel(name: str, kernel: str, tmp_path: Path):
    why = needs(name)
    if why:
        pytest.skip(why)
    nb = nbformat.read(EXAMPLES / name, as_version=4)
    work = tmp_path / "work"                       # the notebooks write their files here
    work.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name=kernel, timeout=int(BUDGET_S) * 2,
                                     allow_errors=True, resources={"metadata": {"path": str(work)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    assert not problems(nb), f"{name}:\n" + "\n\n".join(problems(nb))
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code"), "a cell did not run"
    assert elapsed < BUDGET_S, f"{name} took {elapsed:.0f} s (budget {BUDGET_S:.0f} s)"


def test_an_error_in_a_notebook_is_reported(kernel: str, tmp_path: Path):
    """The check above sees a failing cell and a warning (it does not pass vacuously)."""
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import warnings\nwarnings.warn('careful')"),
        nbformat.v4.new_code_cell("1 / 0")])
    nbclient.NotebookClient(nb, kernel_name=kernel, timeout=60, allow_errors=True,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    found = problems(nb)
    assert len(found) == 2
    assert "careful" in found[0] and "ZeroDivisionError" in found[1]
