"""The documentation: every public name has a docstring, the site builds with warnings as
errors (``mkdocs build --strict``), every public name has an entry in its API reference,
and every guide of the README is a page of it.

The build and the reference need the docs extra (``pip install -e ".[docs]"``); without
mkdocs those tests skip. The docstring test needs nothing but the test extra.
"""
from __future__ import annotations

import html
import importlib
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# The modules the API reference documents (docs/api/*.md). Public names: a module's
# __all__, or, without one, the classes and functions it defines whose names do not start
# with "_". For a class, also its public methods and properties.
DOCUMENTED = [
    "handgrad.engine", "handgrad.engine.viz", "handgrad.engine.testing",
    "handgrad.engine.testing.strategies", "handgrad.engine.testing.profiles",
    "handgrad.nn", "handgrad.nn.optim", "handgrad.nn.data", "handgrad.nn.init",
    "handgrad.nn.metrics", "handgrad.nn.plots", "handgrad.nn.demos",
]


def public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and value.__module__ == module.__name__]


def public_objects() -> Iterator[tuple[str, Any]]:
    """(public path, object) of every public name of the documented modules."""
    for module_name in DOCUMENTED:
        module = importlib.import_module(module_name)
        yield module_name, module
        for name in public_names(module):
            yield f"{module_name}.{name}", getattr(module, name)


def where(obj: Any) -> str:
    """The repository file that defines ``obj`` (for the message), or its module's name."""
    try:
        return str(Path(inspect.getsourcefile(obj) or "").resolve().relative_to(ROOT))
    except (TypeError, ValueError):
        return getattr(obj, "__module__", "?")


def own_doc(obj: Any) -> str:
    """A docstring ``obj`` has itself: a class's own (not inherited), a registered op's
    (its class's), a function's or a module's."""
    if inspect.isclass(obj):
        return obj.__dict__.get("__doc__") or ""
    if inspect.ismodule(obj) or inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return obj.__doc__ or ""
    if callable(obj):
        return type(obj).__doc__ or ""
    return "(data)"          # a constant (REGISTRY, INSTALL) has no docstring of its own


def public_members(cls: type) -> Iterator[tuple[str, Any]]:
    """The public methods and properties a class defines itself."""
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod, property)) or inspect.isfunction(value):
            yield name, value


def member_doc(cls: type, name: str, value: Any) -> str:
    """A method's docstring, or the one of the method it overrides (as ``help()`` shows it
    and as the API reference renders it, with griffe_inherited_docstrings)."""
    if isinstance(value, property):
        return value.__doc__ or ""
    return inspect.getdoc(getattr(cls, name)) or ""


def missing_docstrings() -> list[str]:
    """``file: name`` of every public name (and public method) without a docstring."""
    missing, seen = set(), set()
    for path, obj in public_objects():
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if not own_doc(obj).strip():
            missing.add(f"{where(obj)}: {getattr(obj, '__qualname__', path)}")
        if inspect.isclass(obj):
            for name, value in public_members(obj):
                if not member_doc(obj, name, value).strip():
                    missing.add(f"{where(obj)}: {obj.__qualname__}.{name}")
    return sorted(missing)


def test_every_name_in_all_exists():
    for module_name in DOCUMENTED:
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", ()):
            assert hasattr(module, name), f"{module_name}.__all__ lists {name!r}, which it has not"


def test_every_public_name_has_a_docstring():
    missing = missing_docstrings()
    assert not missing, f"{len(missing)} public names without a docstring:\n" + "\n".join(missing)


class _Documented:
    """A class with a docstring (module level: inspect.getdoc finds a method's base class
    by its qualified name, which a class local to a function does not resolve)."""

    def method(self):
        pass

    @property
    def value(self):
        return 1


class _Child(_Documented):
    def method(self):           # an override: help() shows the base's docstring, if any
        pass


def test_the_docstring_check_sees_a_missing_one(monkeypatch):
    assert own_doc(_Documented) and not own_doc(_Child)
    assert [n for n, v in public_members(_Documented) if not member_doc(_Documented, n, v)] == \
        ["method", "value"]
    monkeypatch.setattr(_Documented.method, "__doc__", "Documented once, on the base.")
    assert member_doc(_Child, "method", vars(_Child)["method"]) == "Documented once, on the base."


# --- the site ------------------------------------------------------------------------------

def _mkdocs() -> None:
    for name in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers.python", "griffe_inherited_docstrings"):
        pytest.importorskip(name, reason='the docs extra is not installed: pip install -e ".[docs]"')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _mkdocs()
    out = tmp_path_factory.mktemp("site")
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                          "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    return out


def test_docs_build_strict(site):
    assert (site / "index.html").is_file()
    assert (site / "api" / "engine" / "index.html").is_file()


def anchors(site: Path) -> set[str]:
    found: set[str] = set()
    for page in (site / "api").rglob("*.html"):
        found.update(html.unescape(a) for a in re.findall(r'id="([^"]+)"', page.read_text("utf-8")))
    return found


def test_every_public_name_is_in_the_api_reference(site):
    """Under its public path (handgrad.nn.Linear) or under a submodule of that module
    (handgrad.engine.testing.check.check_op, for names loaded on first use)."""
    ids = anchors(site)
    absent = []
    for path, obj in public_objects():
        module, _, name = path.rpartition(".")
        if path in ids or inspect.ismodule(obj) and obj.__name__ in ids:
            continue
        inside = [i for i in ids if i.startswith(module + ".") and i.endswith("." + name)
                  and i[:-len(name) - 1] in sys.modules]
        if not inside:
            absent.append(path)
    assert not absent, "public names missing from docs/api/*.md:\n" + "\n".join(absent)


def test_the_api_reference_shows_docstrings(site):
    page = (site / "api" / "ops" / "index.html").read_text("utf-8")
    from handgrad import engine
    assert engine.REGISTRY["exp"].__doc__.strip() in page               # exp(x) = e^x.
    nn_page = (site / "api" / "nn" / "index.html").read_text("utf-8")
    assert "Softmax + cross-entropy in one node" in nn_page


# --- the README's guides -------------------------------------------------------------------

def _hooks() -> types.ModuleType:
    pytest.importorskip("mkdocs", reason='the docs extra is not installed: pip install -e ".[docs]"')
    spec = importlib.util.spec_from_file_location("handgrad_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_readme_guide_is_one_docs_page():
    hooks = _hooks()
    sections = hooks.readme_sections((ROOT / "README.md").read_text("utf-8"))
    used: dict[str, list[str]] = {}
    for page in DOCS.rglob("*.md"):
        for m in hooks.MARKER.finditer(page.read_text("utf-8")):
            used.setdefault(m.group("name").strip(), []).append(str(page.relative_to(DOCS)))
    assert set(used) == set(sections), (f"README sections without a docs page: "
                                        f"{sorted(set(sections) - set(used))}; markers naming no "
                                        f"section: {sorted(set(used) - set(sections))}")
    twice = {name: pages for name, pages in used.items() if len(pages) > 1}
    assert not twice, f"README sections on several pages: {twice}"


def test_a_marker_naming_no_readme_section_stops_the_build():
    hooks = _hooks()
    readme = "# t\n\nintro\n\n## Set up\n\n```bash\n## not a heading\n```\n\n### Sub\n\ntext\n"
    page = hooks.expand("<!-- readme: Set up -->\n", readme)
    assert page.splitlines()[0] == "# Set up"
    assert "## not a heading" in page and "## Sub" in page       # code untouched, levels raised
    with pytest.raises(Exception, match="README.md has no section '## Nope'"):
        hooks.expand("<!-- readme: Nope -->\n", readme)


def test_each_op_family_marker_lists_its_ops():
    hooks = _hooks()
    from handgrad import engine
    families = {type(op).__module__.rsplit(".", 1)[-1] for op in engine.REGISTRY.values()
                if type(op).__module__.startswith("handgrad.engine.ops.")}
    page = (DOCS / "api" / "ops.md").read_text("utf-8")
    assert {m.group("family") for m in hooks.OPS.finditer(page)} == families
    assert "::: handgrad.engine.exp" in hooks.expand("<!-- ops: elementwise -->\n", "")


def test_ci_runs_the_test_command_the_readme_gives():
    """README's set-up block names the suite's command; `.ci/run` must run exactly it (in
    its own environment), so that the front door and CI cannot drift apart."""
    ci = ROOT / ".ci" / "run"
    if not ci.exists():
        pytest.skip("no .ci/run here (an sdist)")
    block = (ROOT / "README.md").read_text("utf-8").split("## Set up", 1)[1].split("```")[1]
    command = next(line.split("#", 1)[0].strip() for line in block.splitlines()
                   if "the test suite" in line)
    assert command.startswith("python -m pytest")
    assert command in [line.strip() for line in ci.read_text("utf-8").splitlines()]
