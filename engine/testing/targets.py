"""What ``handgrad check --module`` and the pytest plugin check: ops and rules, as ``Target``s.

A *rule* is any object with a ``name``, an unregistered ``op`` (an ``engine.Op``) and the
``spec`` (an ``OpSpec``) that samples it: what ``numpy_rule``, ``torch_rule`` and
``jax_rule`` return (``engine.testing.rules.Rule``). A module declares its rules by
binding them to module-level names, or by listing them (and ops) in ``HANDGRAD_RULES``.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterable

from ..op import Op

DECLARED = "HANDGRAD_RULES"   # a module-level list of rules and ops to check


@dataclass(frozen=True)
class Target:
    """One thing to check: an op (its registered spec) or a rule (its own spec)."""

    name: str
    op: Op
    spec: Any = None          # an OpSpec; None: the op's registered spec
    kind: str = "op"          # "op" for an op, else the rule's kind ("numpy", "torch", "jax")


def is_rule(obj: Any) -> bool:
    """Whether ``obj`` is a rule: a name, an Op and an OpSpec (``Rule`` or any look-alike)."""
    from .specs import OpSpec
    return (not isinstance(obj, (Op, type)) and isinstance(getattr(obj, "name", None), str)
            and isinstance(getattr(obj, "op", None), Op)
            and isinstance(getattr(obj, "spec", None), OpSpec))


def as_target(obj: Any) -> Target | None:
    """The target for a rule or an op; None for anything else."""
    if isinstance(obj, Op):
        return Target(obj.name, obj)
    if is_rule(obj):
        return Target(obj.name, obj.op, obj.spec, str(getattr(obj, "kind", "rule")))
    return None


def targets_of(items: Iterable[Any], where: str) -> list[Target]:
    """Targets for a list of rules and ops (``HANDGRAD_RULES``). Raises ValueError, naming
    ``where``, for an entry that is neither, or for two different ones with the same name."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise ValueError(f"{where} must be a list of rules and ops, got {type(items).__name__}")
    found: list[Target] = []
    for k, item in enumerate(items):
        target = as_target(item)
        if target is None:
            raise ValueError(f"{where}[{k}] is {_short(item)}, not a rule (numpy_rule(...), "
                             f"torch_rule(...), jax_rule(...)) or an op (engine.<name>)")
        found.append(target)
    return unique(found, where)


def declared(module: ModuleType) -> list[Target]:
    """The rules a module declares: its module-level rules, then ``HANDGRAD_RULES``."""
    where = f"{module.__name__}.{DECLARED}"
    found = [t for t in map(as_target, vars(module).values())
             if t is not None and t.kind != "op"]
    if DECLARED in vars(module):
        found += targets_of(vars(module)[DECLARED], where)
    return unique(found, module.__name__)


def unique(targets: list[Target], where: str) -> list[Target]:
    """``targets`` without repeats (the same rule bound to two names); ValueError for two
    different ones with one name."""
    by_name: dict[str, Target] = {}
    for t in targets:
        old = by_name.get(t.name)
        if old is None:
            by_name[t.name] = t
        elif old.op is not t.op:
            raise ValueError(f"{where}: two {'rules' if t.kind != 'op' else 'ops'} are named "
                             f"{t.name!r} (give each rule its own name=)")
    return list(by_name.values())


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 60 else text[:57] + "..."
