"""MkDocs hooks for handgrad's documentation (``hooks:`` in mkdocs.yml).

Two jobs:

* **The package, as installed, for the API reference.** In the repository the packages are
  the folders ``engine/`` and ``nn/`` beside ``src/handgrad/``; pyproject.toml maps them into
  ``handgrad`` at install time. mkdocstrings reads source files (it does not import them),
  so before it runs, ``on_config`` lays out ``handgrad/`` in a temporary folder with
  symbolic links to those three folders and points mkdocstrings' python handler there.
* **The README's guides, one page each, with no copy.** A docs page may hold the line
  ``<!-- readme: NAME -->``: it is replaced by the README's section ``## NAME`` (down to
  the next ``##``), its headings raised so that ``## NAME`` becomes the page title
  (``<!-- readme: NAME | h2 -->`` keeps it at level 2). ``<!-- readme: _intro -->`` is the
  text before the first ``##``. ``<!-- include: FILE -->`` inserts a whole file of the
  repository (CONTRIBUTING.md). A name the README does not have stops the build.
* **One entry per registered op.** ``<!-- ops: FAMILY -->`` becomes a ``::: handgrad.engine.<name>``
  line for every op registered by ``engine/ops/FAMILY.py``, so a new op is in the API
  reference without editing a page.
"""
from __future__ import annotations

import importlib.util
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
INTRO = "_intro"
MARKER = re.compile(r"^<!-- readme: (?P<name>[^|>]+?)(?:\s*\|\s*h(?P<level>[1-6]))? -->[ \t]*$", re.M)
INCLUDE = re.compile(r"^<!-- include: (?P<path>[^>]+?) -->[ \t]*$", re.M)
OPS = re.compile(r"^<!-- ops: (?P<family>\w+) -->[ \t]*$", re.M)
FENCE = re.compile(r"^\s*(```|~~~)")

_views: list[Path] = []


def _load_package_view() -> Any:
    """``package_view`` of .ci/package_view.py: the one place that knows the installed layout."""
    spec = importlib.util.spec_from_file_location("handgrad_package_view",
                                                  ROOT / ".ci" / "package_view.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.package_view


package_view = _load_package_view()


@event_priority(100)          # before mkdocstrings reads its handler's configuration
def on_config(config: Any) -> Any:
    view = Path(tempfile.mkdtemp(prefix="handgrad-docs-"))
    _views.append(view)
    package_view(view)
    handlers = config.plugins["mkdocstrings"].config.handlers
    python = handlers.setdefault("python", {})
    python["paths"] = [str(view)]
    return config


def on_shutdown() -> None:
    while _views:
        shutil.rmtree(_views.pop(), ignore_errors=True)


def _headings(lines: list[str]) -> list[tuple[int, int, str]]:
    """(line index, level, title) of every Markdown heading outside fenced code."""
    found, fenced = [], False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
            continue
        m = re.match(r"^(#{1,6}) (.+?)\s*$", line)
        if m and not fenced:
            found.append((i, len(m.group(1)), m.group(2)))
    return found


def readme_sections(text: str) -> dict[str, str]:
    """The README's ``##`` sections by title (each with its heading line), and the text
    before the first one under ``_intro``."""
    lines = text.splitlines()
    starts = [(i, title) for i, level, title in _headings(lines) if level == 2]
    sections = {INTRO: "\n".join(lines[:starts[0][0]] if starts else lines).strip() + "\n"}
    for k, (i, title) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        sections[title] = "\n".join(lines[i:end]).strip() + "\n"
    return sections


def shift_headings(text: str, by: int) -> str:
    """Every heading outside fenced code moved ``by`` levels (negative: up), kept in 1..6."""
    lines = text.splitlines()
    for i, level, title in _headings(lines):
        lines[i] = "#" * min(6, max(1, level + by)) + " " + title
    return "\n".join(lines) + "\n"


def expand(markdown: str, readme: str, root: Path = ROOT) -> str:
    """A page's markdown with its ``readme:`` and ``include:`` markers replaced."""
    sections = readme_sections(readme)

    def section(m: re.Match[str]) -> str:
        name = m.group("name").strip()
        if name not in sections:
            raise PluginError(f"docs: README.md has no section '## {name}' "
                              f"(it has: {', '.join(sorted(sections))})")
        if name == INTRO:
            return sections[name]
        return shift_headings(sections[name], int(m.group("level") or 1) - 2)

    def include(m: re.Match[str]) -> str:
        path = root / m.group("path").strip()
        if not path.is_file():
            raise PluginError(f"docs: include: no file {path}")
        return path.read_text(encoding="utf-8")

    def ops(m: re.Match[str]) -> str:
        names = op_names(m.group("family"))
        if not names:
            raise PluginError(f"docs: no registered op comes from engine/ops/{m.group('family')}.py")
        return "\n".join(f"::: handgrad.engine.{name}" for name in names) + "\n"

    return OPS.sub(ops, INCLUDE.sub(include, MARKER.sub(section, markdown)))


def op_names(family: str) -> list[str]:
    """The names of the built-in ops that ``engine/ops/<family>.py`` registers, sorted."""
    from handgrad import engine

    module = f"handgrad.engine.ops.{family}"
    return sorted(name for name, op in engine.REGISTRY.items() if type(op).__module__ == module)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, (ROOT / "README.md").read_text(encoding="utf-8"))
