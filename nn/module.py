"""Module and Parameter: the containers that hold a network's trainable tensors.

A Module registers every Parameter and sub-Module assigned to it as an attribute, so
``model.parameters()`` finds them all, ``model.state_dict()`` names them
(``layers.0.weight``) and ``model(x)`` runs ``forward`` inside a name scope that tags the
graph nodes with the module's name (the graph pictures group them by layer).
"""
from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any, Iterator

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor


class Parameter(Tensor):
    """A Tensor a Module trains: a leaf that requires grad (float32 unless given otherwise)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, name: str | None = None):
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


# A counter bumped whenever a module is attached or removed anywhere: a root names its
# tree again when it changed (or when another root renamed one of its modules).
_TREE = [0]


def _tree_changed() -> None:
    _TREE[0] += 1


def tree_version() -> int:
    """Changes whenever a module is attached or removed anywhere (caches of module lists
    compare it)."""
    return _TREE[0]



class Module:
    """Base class of layers and models. Subclasses set attributes in ``__init__`` and
    define ``forward``; call the module itself (``model(x)``), not ``forward``."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_path", None)       # dotted name in the tree it runs in
        object.__setattr__(self, "_paths_for", None)  # the tree version this root named
        object.__setattr__(self, "_named_by", None)   # weakref to the root that named it
        object.__setattr__(self, "training", True)
        # Counts assignments to this module's attributes (a dropout's p, a loss's
        # label_smoothing, a replaced parameter): compiled steps key their plans on it, so
        # a plan is never replayed with settings it was not captured with.
        object.__setattr__(self, "_settings", 0)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes")
        object.__setattr__(self, "_settings", self._settings + 1)
        current = self._parameters.get(name)
        if current is not None and value is not None and not isinstance(value, Parameter):
            raise TypeError(
                f"cannot assign a {type(value).__name__} to {type(self).__name__}.{name}, which "
                f"holds a Parameter: assign an nn.Parameter (or None), or change the values in "
                f"place (load_state_dict, or `with engine.no_grad(): {name}[...] = ...` on the "
                f"parameter)")
        # Replacing a parameter (or a submodule) keeps its place in the order, as dict
        # assignment does: parameters() stays aligned with an optimizer's state.
        if not isinstance(value, Parameter):
            self._parameters.pop(name, None)
        if isinstance(self._modules.get(name), Module) or isinstance(value, Module):
            _tree_changed()
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            if value.name is None:
                value.name = name
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        object.__setattr__(self, "_settings", self._settings + 1)
        self._parameters.pop(name, None)
        if self._modules.pop(name, None) is not None:
            _tree_changed()
        object.__delattr__(self, name)

    # --- running ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` in this module's name scope: the nodes it creates carry its
        dotted name, the same name ``state_dict`` uses (a module used in two places keeps
        the first), whichever parent calls it."""
        if engine.current_scope() is None:            # called as the root of a model
            if self._paths_for != _TREE[0]:
                self._resolve_paths()
            path = ""
        else:
            path = self._path
            if path is None:                          # not part of the tree being run
                return self.forward(*args, **kwargs)
        outer = engine.push_scope(path, nested=False)
        try:
            return self.forward(*args, **kwargs)
        finally:
            engine.pop_scope(outer)

    def _resolve_paths(self) -> None:
        """Give every module under this root its name in this root's tree. A module that
        another root had named (one shared by two models) makes that root name its tree
        again at its next call; roots with trees of their own (a model and its loss,
        called in turn) name them once."""
        me = weakref.ref(self)
        for path, module in self.named_modules():
            other = module._named_by() if module._named_by is not None else None
            if other is not None and other is not self:
                object.__setattr__(other, "_paths_for", None)
            object.__setattr__(module, "_path", path)
            object.__setattr__(module, "_named_by", me)
        object.__setattr__(self, "_paths_for", _TREE[0])

    def train(self, mode: bool = True) -> "Module":
        """Training mode (dropout active) for this module and every sub-module."""
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        """Evaluation mode (dropout off)."""
        return self.train(False)

    # --- walking the tree ------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        yield from self._modules.values()

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        """This module and every descendant, each once, with dotted names ("" for this
        one); a module used in two places is named by the first, in registration order."""
        stack = [(prefix, self)]
        seen: set[int] = set()
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            for child_name, child in reversed(module._modules.items()):
                stack.append((f"{name}.{child_name}" if name else child_name, child))

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """Every parameter with its dotted name, each parameter once."""
        seen: set[int] = set()
        out = []
        for prefix, module in self.named_modules():
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append((f"{prefix}.{name}" if prefix else name, p))
        return out

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.zero_grad()

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """A copy of every parameter's array, by dotted name."""
        return OrderedDict((name, p.numpy(copy=True)) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict[str, Any], strict: bool = True,
                        check_finite: bool = False) -> None:
        """Copy arrays into the parameters, in place. Every array is checked first: with
        ``strict`` the keys must match exactly; shapes must match; values must be real
        numbers (no object, string, complex or boolean arrays); with ``check_finite`` no
        NaN or Inf. If any check fails, nothing has changed."""
        updates = self.check_state_dict(state, strict, check_finite)
        for w, (_, value) in zip(engine.inplace(*(p for p, _ in updates)), updates):
            w[...] = value

    def check_state_dict(self, state: dict[str, Any], strict: bool = True,
                         check_finite: bool = False) -> list[tuple[Parameter, np.ndarray]]:
        """The checks of ``load_state_dict``, changing nothing: (parameter, array) pairs."""
        where = f"load_state_dict for {type(self).__name__}"
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"{where}: " + "; ".join(parts))
        updates = []
        for name, value in state.items():
            if name not in params:
                continue
            value = np.asarray(value)
            p = params[name]
            if value.shape != p.shape:
                raise ValueError(f"{where}: {name} has shape {p.shape} in the model but "
                                 f"{value.shape} in the state")
            if value.dtype.kind not in "iuf":
                raise ValueError(f"{where}: {name} holds {value.dtype} values; the parameter "
                                 f"is {p.dtype}")
            if check_finite and not np.isfinite(value).all():
                raise ValueError(f"{where}: {name} holds NaN or Inf")
            updates.append((p, value))
        return updates

    # --- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        return "\n".join(lines) + ("\n)" if self._modules else ")")


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(Linear(2, 8), ReLU(), Linear(8, 3))``."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
