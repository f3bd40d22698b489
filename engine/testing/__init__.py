"""Testing tools: hypothesis strategies for op inputs, one test spec per op, the
properties every op must have, ``check_op`` to run them on an op of your own, mutation
testing of a spec (``mutants``) and the command line (``python -m handgrad.engine.testing``, also
``handgrad check``).

Everything here needs hypothesis: ``pip install "handgrad[check]"``. The names below are
loaded on first use, so that ``import engine.testing`` (and the command line) can say
that instead of failing with a bare ImportError.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

INSTALL = 'pip install "handgrad[check]"'
PROFILE_NAMES = ("dev", "ci", "thorough")   # hypothesis profiles: see profiles.py

_WHERE = {
    "check_op": "check", "run_op": "check", "OpCheckError": "check", "OpReport": "check",
    "PROPERTIES": "properties",
    "SPECS": "specs", "OpSpec": "specs", "spec": "specs", "spec_for": "specs",
    "unary": "specs", "binary": "specs", "reduction": "specs",
    "run_mutants": "mutants",
    # Rules written elsewhere (rules.py). Its ``check(rule)`` is not exported here: the name
    # ``check`` is the submodule check.py, which the import system rebinds on first import.
    "Rule": "rules", "numpy_rule": "rules", "check_rule": "rules",
    "check_torch": "frameworks", "torch_rule": "frameworks", "check_jax": "frameworks",
    "jax_rule": "frameworks", "FrameworkMissing": "frameworks",
}

__all__ = ["strategies", "profiles", "SPECS", "OpSpec", "spec", "spec_for", "unary", "binary",
           "reduction", "PROPERTIES", "check_op", "run_op", "OpCheckError", "OpReport",
           "run_mutants", "Rule", "numpy_rule", "check_rule", "INSTALL", "check_torch",
           "torch_rule", "check_jax", "jax_rule",
           "FrameworkMissing"]


class HypothesisMissing(ModuleNotFoundError):
    """engine.testing was used without hypothesis installed."""


def require_hypothesis() -> None:
    """Raise HypothesisMissing, saying what to install, if hypothesis cannot be imported."""
    try:
        import_module("hypothesis")
    except ModuleNotFoundError as e:
        if e.name != "hypothesis":
            raise
        raise HypothesisMissing(f"checking ops needs hypothesis, which is not installed: "
                                f"{INSTALL}", name="hypothesis") from None


_SUBMODULES = ("strategies", "profiles")   # in __all__: engine.testing.strategies works too


if TYPE_CHECKING:    # the names loaded on first use, for type checkers (a misspelt one is an error)
    from . import profiles, strategies
    from .check import OpCheckError, OpReport, check_op, run_op
    from .frameworks import FrameworkMissing, check_jax, check_torch, jax_rule, torch_rule
    from .mutants import run_mutants
    from .properties import PROPERTIES
    from .rules import Rule, check_rule, numpy_rule
    from .specs import SPECS, OpSpec, binary, reduction, spec, spec_for, unary


if not TYPE_CHECKING:   # hidden from type checkers: a misspelt name is their error
    def __getattr__(name: str) -> Any:
        if name not in _WHERE and name not in _SUBMODULES:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        require_hypothesis()
        if name in _SUBMODULES:
            return import_module(f".{name}", __name__)
        value = getattr(import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value            # the next lookup finds it directly
        return value
