"""Every ```python example in README.md runs as printed, and prints what its comments say.

A comment after ``print(...)`` in the README is that line's exact output. Each example runs
in a fresh interpreter so that ops it registers do not leak into the test session."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def expected_output(code: str) -> list[str]:
    lines = []
    for line in code.splitlines():
        m = re.match(r"\s*print\(.*\)\s+#\s?(.*)$", line)
        if m:
            lines.append(m.group(1).strip())
    return lines


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_as_printed(index, tmp_path):
    code = BLOCKS[index]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr
    printed = [line.strip() for line in run.stdout.splitlines()]
    for want in expected_output(code):
        assert want in printed, f"README example {index}: expected a line {want!r}, got {printed}"
