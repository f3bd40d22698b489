"""Print the lowest versions pyproject.toml declares for the package and its test extra
(``numpy>=2.0`` becomes ``numpy==2.0``): CI installs exactly these, so every declared
lower bound is one the test suite has passed on."""
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:       # Python 3.10: pytest's own dependency
    import tomli as tomllib

project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
requirements = project["dependencies"] + project["optional-dependencies"]["test"]
print(" ".join(re.sub(r">=", "==", r) for r in requirements))
