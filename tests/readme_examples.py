"""The README's code examples and how they are run: in a fresh interpreter, and a comment
after ``print(...)`` is that line's exact output (tests/test_readme.py; the PyTorch and JAX
examples, which need those libraries, from tests/engine/test_check_torch.py and _jax.py)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
FRAMEWORK_SECTION = "### PyTorch autograd.Function and JAX custom rules\n"


def expected_output(code: str) -> list[str]:
    """The lines the example's ``print(...)  # ...`` comments say it prints."""
    lines = []
    for line in code.splitlines():
        m = re.match(r"\s*print\(.*\)\s+#\s?(.*)$", line)
        if m:
            lines.append(m.group(1).strip())
    return lines


def run_as_printed(code: str, cwd: Path, what: str) -> None:
    """Run ``code`` in a fresh interpreter in ``cwd``: it succeeds and prints every line
    its comments promise."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=cwd, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = [line.strip() for line in run.stdout.splitlines()]
    for want in expected_output(code):
        assert want in printed, f"{what}: expected a line {want!r}, got {printed}"


def framework_example(framework: str) -> str:
    """The README's example for ``framework`` (a ```py block of the section on PyTorch and
    JAX rules: the ```python blocks all run in test_readme.py, which cannot skip one)."""
    section = README.read_text().split(FRAMEWORK_SECTION)[1].split("\n### ")[0]
    blocks = [b for b in re.findall(r"```py\n(.*?)```", section, flags=re.S)
              if f"import {framework}\n" in b]
    assert len(blocks) == 1, f"one README example imports {framework}"
    return blocks[0]
