"""The package as a wheel lays it out (handgrad/, handgrad/engine, handgrad/nn), made of
symbolic links to the repository's folders, for tools that read source files and cannot
follow setuptools' editable-install finder: mypy (.ci/typecheck, tests/engine/test_stubs.py)
and the docs build (docs/hooks.py). The mapping is pyproject.toml's package-dir.

    python .ci/package_view.py DIR     # lays out DIR/handgrad
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"__root__": ROOT / "src" / "handgrad", "engine": ROOT / "engine", "nn": ROOT / "nn"}


def package_view(where: Path) -> Path:
    """``where/handgrad``: the installed layout, made of symbolic links to the repository's
    folders (src/handgrad's files, engine/, nn/). Returns ``where``."""
    pkg = where / "handgrad"
    pkg.mkdir()
    for item in PACKAGE_DIRS["__root__"].iterdir():
        if item.suffix in (".py", ".pyi", ".typed"):
            (pkg / item.name).symlink_to(item)
    for name in ("engine", "nn"):
        (pkg / name).symlink_to(PACKAGE_DIRS[name], target_is_directory=True)
    return where


if __name__ == "__main__":
    package_view(Path(sys.argv[1]))
