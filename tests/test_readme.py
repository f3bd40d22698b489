"""Every ```python example in README.md runs as printed, and prints what its comments say.

A comment after ``print(...)`` in the README is that line's exact output. Each example runs
in a fresh interpreter so that ops it registers do not leak into the test session."""
from __future__ import annotations

import re

import pytest

from .readme_examples import README, run_as_printed

BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_as_printed(index, tmp_path):
    run_as_printed(BLOCKS[index], tmp_path, f"README example {index}")
