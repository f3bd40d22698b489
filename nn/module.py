"""Module and Parameter: the containers that hold a network's trainable tensors.

A Module registers every Parameter and sub-Module assigned to it as an attribute, so
``model.parameters()`` finds them all, ``model.state_dict()`` names them
(``layers.0.weight``) and ``model(x)`` runs ``forward`` inside a name scope that tags the
graph nodes with the module's name (the graph pictures group them by layer).

Train/eval mode has two levels. ``model.train()`` / ``model.eval()`` set each module's own
flag, seen by every thread. ``with model.eval_mode():`` (what ``nn.predict`` and
``nn.evaluate`` use) overrides it for the current thread only, for the length of the block:
a monitoring thread predicting with the model that another thread trains never switches
that thread's dropout off. ``module.training`` reads the override first.

Nothing here recurses on the depth of the tree: walking, naming, ``repr``, ``deepcopy`` and
the forward of nested ``Sequential``s work thousands of levels deep.
"""
from __future__ import annotations

import contextlib
import copy
import threading
import weakref
from collections import OrderedDict
from typing import Any, Iterator, NamedTuple, TypeVar, overload

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.modes import STATE as _THREAD
from handgrad.engine.plain import plain_repr

_M = TypeVar("_M", bound="Module")      # train() and eval() return the module itself


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict`` returns: the model's keys the state lacked, and the state's
    keys the model has no parameter for."""

    missing_keys: list[str]
    unexpected_keys: list[str]


class Parameter(Tensor):
    """A Tensor a Module trains: a leaf that requires grad, of the dtype its data has
    (``Tensor``'s rules: a numpy array keeps its dtype, a Python list or number of floats
    is float64, and integer data is a TypeError, as only floating-point tensors require
    grad; the layers make theirs float32 unless given another dtype)."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, name: str | None = None):
        super().__init__(data, requires_grad=requires_grad, name=name)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor"):]


# How many times a module was attached or removed anywhere: a root names its tree again
# when it changed (or when another root renamed one of its modules). Counted under a lock
# (two threads attaching modules at once would otherwise both add 1 to the same value, and
# a cache keyed on the version could miss a change); read without one.
_module_tree_edits = 0
_TREE_EDITS = threading.Lock()


def _tree_changed() -> None:
    global _module_tree_edits
    with _TREE_EDITS:
        _module_tree_edits += 1


def _counted(module: "Module", tree_edit: bool) -> None:
    """Count an assignment to ``module`` (and a change of the tree), once it is made: a
    compiled step keys its plans on the counts (nn/step.py), so a capture that read a
    count saw every change it counts (counted before it was made, a capture running in
    another thread meanwhile would file the old value under the new count, and replay it
    after)."""
    with _TREE_EDITS:
        object.__setattr__(module, "_assignments", module._assignments + 1)
    if tree_edit:
        _tree_changed()


def tree_version() -> int:
    """Changes whenever a module is attached or removed anywhere (caches of module lists
    compare it)."""
    return _module_tree_edits


# The modules called in each thread while a compiled step records a plan (by thread id;
# empty the rest of the time, so a module call pays one test of it).
_CALLS: dict[int, list[tuple["Module", int]]] = {}


@contextlib.contextmanager
def calls_recorded() -> Iterator[list[tuple["Module", int]]]:
    """The modules called in this thread inside the block, in call order, whether or not
    they belong to a model's tree (a loss module inside a plain function, a layer kept in a
    list), each with its settings count (``_assignments``) when called: a compiled step
    keys its plans on their settings too (nn/step.py), as they were before the call."""
    key = threading.get_ident()
    calls = _CALLS[key] = []
    try:
        yield calls
    finally:
        del _CALLS[key]


class _ThreadModes(threading.local):
    """This thread's train/eval overrides: ``id(module) -> training``, set by
    ``Module.train_mode`` / ``eval_mode`` blocks (empty outside them)."""

    def __init__(self) -> None:
        # the names in the tree of the root module this thread is running (id(module) ->
        # dotted name; None outside a root's call): a module shared by several roots
        # finds its name there (Module.__call__)
        self.paths: dict[int, str] | None = None
        self.overrides: dict[int, bool] = {}
        # what each open block replaced: (its modules, kept alive so that their ids stay
        # theirs, and the override each had before), innermost last
        self.blocks: list[tuple[list["Module"], list[bool | None]]] = []


_MODES = _ThreadModes()
_NAMING = threading.Lock()      # roots naming their trees (Module._resolve_paths), one at a time


def training_flags(modules: "list[Module]") -> tuple[bool, ...]:
    """``tuple(m.training for m in modules)`` in this thread, at a fraction of the cost
    (compiled steps read it at every call)."""
    overrides = _MODES.overrides
    if not overrides:
        return tuple([m._training for m in modules])
    return tuple([overrides.get(id(m), m._training) for m in modules])


def _mode(where: str, mode: Any) -> bool:
    """``mode`` as a bool: True or False (a numpy bool too), else a TypeError naming
    ``where`` (``train("no")`` would otherwise turn training on)."""
    if not isinstance(mode, (bool, np.bool_)):
        raise TypeError(f"{where}: mode must be True or False, got {plain_repr(mode)}")
    return bool(mode)


class _ModeBlock:
    """``with model.eval_mode():`` (``model.train_mode(False)``): ``model`` and every
    sub-module run in eval mode (``True``: train mode) in this thread, until the block ends.
    Other threads, and the flags that ``train()`` / ``eval()`` set, are untouched. Blocks
    nest; each restores what was there before it. Modules attached inside the block are
    not covered."""

    def __init__(self, module: "Module", mode: bool = True):
        if not isinstance(module, Module):
            raise TypeError(f"train_mode: expected an nn.Module, got {type(module).__name__}")
        self.module, self.mode = module, _mode("train_mode", mode)

    def __enter__(self) -> "Module":
        overrides = _MODES.overrides
        modules = list(self.module.modules())
        _MODES.blocks.append((modules, [overrides.get(id(m)) for m in modules]))
        for m in modules:
            overrides[id(m)] = self.mode
        return self.module

    def __exit__(self, *exc: object) -> None:
        overrides = _MODES.overrides
        modules, previous = _MODES.blocks.pop()
        for m, before in zip(modules, previous, strict=True):
            if before is None:
                overrides.pop(id(m), None)
            else:
                overrides[id(m)] = before


def _slots(module: "Module") -> dict[str, str]:
    """Every parameter and submodule name the module has registered, with its kind, in
    registration order, including those set to None since (their places are kept)."""
    slots = module.__dict__.get("_slots")
    if slots is None:                         # a module pickled before slots were kept
        slots = {**{n: "parameter" for n in module._parameters},
                 **{n: "module" for n in module._modules}}
        object.__setattr__(module, "_slots", slots)
    return slots


def _put(registry: "OrderedDict[str, Any]", name: str, value: Any, slots: dict[str, str]) -> None:
    """``registry[name] = value`` at the name's place in ``slots`` (it may have been set to
    None, and left the registry, since it was registered)."""
    back = name in slots and name not in registry
    registry[name] = value
    if back:
        for key in [k for k in slots if k in registry]:
            registry.move_to_end(key)


class Module:
    """Base class of layers and models. Subclasses set attributes in ``__init__`` and
    define ``forward``; call the module itself (``model(x)``), not ``forward``."""

    _parameters: "OrderedDict[str, Parameter]"
    _modules: "OrderedDict[str, Module]"
    _path: str | None
    _paths: dict[int, str] | None
    _paths_for: int | None
    _named_by: "weakref.ReferenceType[Module] | None"
    _shared: bool
    _training: bool
    _assignments: int

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_slots", {})           # see _slots
        # dotted name in the tree it runs in; None if it has none, or a name in each of
        # several roots' trees (then: ``_shared``, and the running root's ``_paths`` tell)
        object.__setattr__(self, "_path", None)
        object.__setattr__(self, "_paths", None)      # as a root: id(module) -> its name
        object.__setattr__(self, "_paths_for", None)  # the tree version this root named
        object.__setattr__(self, "_named_by", None)   # weakref to the root that named it
        object.__setattr__(self, "_shared", False)    # named by two roots: no one _path
        object.__setattr__(self, "_training", True)
        # Counts assignments to this module's attributes (a dropout's p, a loss's
        # label_smoothing, a replaced parameter): compiled steps key their plans on it, so
        # a plan is never replayed with settings it was not captured with.
        object.__setattr__(self, "_assignments", 0)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 f"before assigning attributes")
        slots = _slots(self)
        kind = slots.get(name)
        where = f"cannot assign a {type(value).__name__} to {type(self).__name__}.{name}"
        if value is not None and kind == "parameter" and not isinstance(value, Parameter):
            holds = "which holds a Parameter" if name in self._parameters else \
                "a parameter of the module (None now)"
            raise TypeError(
                f"{where}, {holds}: assign an nn.Parameter (or None), or change the values in "
                f"place (load_state_dict, or `with engine.no_grad(): {name}[...] = ...` on the "
                f"parameter); to make it a plain attribute, delete it first")
        if value is not None and kind == "module" and not isinstance(value, Module):
            raise TypeError(f"{where}, a submodule of the module: assign an nn.Module (or "
                            f"None); to make it a plain attribute, delete it first")
        if isinstance(value, (Parameter, Module)) and (not name or "." in name):
            # setattr(m, "a.b", p): its dotted name would be that of a submodule a's b, and
            # state_dict would keep one of the two (PyTorch refuses these names too)
            raise KeyError(f"{type(self).__name__}: a parameter or submodule name can contain "
                           f"no '.' and cannot be empty, got {name!r}")
        # A parameter or submodule keeps its place in the order when replaced, also through
        # None (as in PyTorch): parameters() stays aligned with an optimizer's state, and a
        # Sequential runs its layers in their order.
        if not isinstance(value, Parameter):
            self._parameters.pop(name, None)
        tree_edit = isinstance(self._modules.get(name), Module) or isinstance(value, Module)
        if not isinstance(value, Module):
            self._modules.pop(name, None)
        if isinstance(value, Parameter):
            if value.name is None:
                value.name = name
            _put(self._parameters, name, value, slots)
            slots.setdefault(name, "parameter")
        elif isinstance(value, Module):
            _put(self._modules, name, value, slots)
            slots.setdefault(name, "module")
        object.__setattr__(self, name, value)
        _counted(self, tree_edit)

    def __delattr__(self, name: str) -> None:
        self._parameters.pop(name, None)
        _slots(self).pop(name, None)
        tree_edit = self._modules.pop(name, None) is not None
        object.__delattr__(self, name)
        _counted(self, tree_edit)

    # --- running ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's computation, defined by every subclass. Call the module
        (``model(x)``) rather than ``forward`` so that its nodes carry its name scope."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``forward`` in this module's name scope: the nodes it creates carry its
        dotted name, the same name ``state_dict`` uses (a module used in two places keeps
        the first), whichever parent calls it. A module shared by two models takes its
        name in the tree of the model this thread is running (name scopes are per thread)."""
        if _CALLS:
            calls = _CALLS.get(threading.get_ident())
            if calls is not None:
                calls.append((self, self._assignments))
        # engine.push_scope(path, nested=False) and pop_scope, inlined on this thread's
        # engine state: every module call enters a scope, and the two calls were a tenth of
        # a tiny model's Python time per step.
        state = _THREAD
        outer = state.scope
        if outer is None:                             # called as the root of a model
            return self._call_as_root(args, kwargs)
        path = self._path
        if path is None:              # shared by several roots, or in no tree being run
            paths = _MODES.paths
            path = paths.get(id(self)) if paths is not None else None
            if path is None:                          # not part of the tree being run
                return self.forward(*args, **kwargs)
        state.scope = path                            # the full dotted name, not nested
        try:
            return self.forward(*args, **kwargs)
        finally:
            state.scope = outer

    def _call_as_root(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """``__call__`` of the root of a model: its tree named (again, if it changed), and
        its names this thread's for the call (``_MODES.paths``, for shared modules)."""
        if self._paths_for != _module_tree_edits:
            self._resolve_paths()
        modes = _MODES
        running = modes.paths
        modes.paths = self._paths
        state = _THREAD                       # push_scope("", False) and pop_scope, inlined
        state.scope = ""
        try:
            return self.forward(*args, **kwargs)
        finally:
            state.scope = None
            modes.paths = running

    def _resolve_paths(self) -> None:
        """Give every module under this root its name in this root's tree: in this root's
        map (``_paths``), and as the module's own ``_path`` while no other root has named
        it. A module two roots named (one shared by two models) keeps no ``_path`` of its
        own: its calls look their name up in the map of the root their thread is running,
        so a thread running one model never takes the other's name for it, whatever
        another thread runs meanwhile. Roots with trees of their own (a model and its
        loss, called in turn) name them once."""
        me = weakref.ref(self)
        paths: dict[int, str] = {}
        # The version before the walk: a module another thread attaches during it makes the
        # next call name the tree again (read after, that change would count as named).
        version = _module_tree_edits
        with _NAMING:                 # two roots naming a shared module at once agree
            for path, module in self.named_modules():
                paths[id(module)] = path
                other = module._named_by() if module._named_by is not None else None
                if module._shared or (other is not None and other is not self):
                    object.__setattr__(module, "_shared", True)
                    object.__setattr__(module, "_path", None)
                else:
                    object.__setattr__(module, "_path", path)
                    object.__setattr__(module, "_named_by", me)
            object.__setattr__(self, "_paths", paths)
            object.__setattr__(self, "_paths_for", version)

    @property
    def training(self) -> bool:
        """Whether this module runs in training mode in the current thread: a
        ``train_mode``/``eval_mode`` block of this thread first, else the module's flag."""
        overrides = _MODES.overrides
        if overrides:
            mode = overrides.get(id(self))
            if mode is not None:
                return mode
        return self._training

    @training.setter
    def training(self, mode: bool) -> None:
        object.__setattr__(self, "_training", _mode("training", mode))

    def train(self: _M, mode: bool = True) -> _M:
        """Training mode (dropout active) for this module and every sub-module, in every
        thread (a thread's ``eval_mode()`` block still wins in that thread). ``mode`` is
        True or False (a numpy bool too); anything else is a TypeError. A sub-module whose
        class overrides ``train`` gets that method called, as in PyTorch (a layer kept in
        eval mode whatever its model's)."""
        mode = _mode("train", mode)
        pending: list[Module] = [self]
        seen: set[int] = set()
        while pending:                          # a loop: 2,000 nested Sequentials are fine
            m = pending.pop()
            if id(m) in seen:
                continue
            seen.add(id(m))
            if m is not self and type(m).train is not Module.train:
                m.train(mode)       # its own train() decides for its tree (as in PyTorch)
                continue
            object.__setattr__(m, "_training", mode)
            pending.extend(c for c in m._modules.values() if c is not None)
        return self

    def eval(self: _M) -> _M:
        """Evaluation mode (dropout off), in every thread; see ``eval_mode`` for one thread."""
        return self.train(False)

    def train_mode(self, mode: bool = True) -> _ModeBlock:
        """A ``with`` block in which this module and its sub-modules run in ``mode`` in the
        current thread only; the flags ``train()``/``eval()`` set stay as they are."""
        return _ModeBlock(self, mode)

    def eval_mode(self) -> _ModeBlock:
        """``with model.eval_mode():`` eval mode in this thread, for the block (predict and
        evaluate use it: a training thread's dropout is never switched off)."""
        return _ModeBlock(self, False)

    # --- walking the tree ------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        """The direct sub-modules, each once (one registered under two names too, as in
        PyTorch), in registration order (not their descendants: see ``modules``)."""
        seen: set[int] = set()
        for m in self._modules.values():
            if id(m) not in seen:
                seen.add(id(m))
                yield m

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
        """This module and every descendant, each once, in the order of
        ``named_modules`` (without the names)."""
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
        """Every parameter of this module and its descendants, each once (a shared one is
        listed once), in the order of ``named_parameters``."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """The number of scalar values in all parameters: the sum of ``p.size`` over
        ``parameters()`` (a shared parameter counts once)."""
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        """Forget every parameter's accumulated gradient (each ``grad`` becomes None, as
        ``torch.nn.Module.zero_grad()`` with ``set_to_none=True``)."""
        for p in self.parameters():
            p.zero_grad()

    # --- state -----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """A copy of every parameter's array, by dotted name."""
        return OrderedDict((name, p.numpy(copy=True)) for name, p in self.named_parameters())

    def load_state_dict(self, state: dict[str, Any], strict: bool = True,
                        check_finite: bool = False) -> "IncompatibleKeys":
        """Copy arrays into the parameters, in place. Every array is checked first: with
        ``strict`` the keys must match exactly; shapes must match; values must be real
        numbers (no object, string, complex or boolean arrays); with ``check_finite`` no
        NaN or Inf; every parameter written must be on writeable memory. If any check
        fails, nothing has changed. Returns the keys that did not match (``missing_keys``,
        ``unexpected_keys``: what ``strict=False`` let pass), as PyTorch does. A parameter
        shared by two layers (tied weights) has one key, its first name."""
        updates = self.check_state_dict(state, strict, check_finite)
        with engine.writing(*(p for p, _ in updates)) as arrays:
            for w, (_, value) in zip(arrays, updates, strict=True):
                w[...] = value
        names = [name for name, _ in self.named_parameters()]
        return IncompatibleKeys([k for k in names if k not in state],
                                [k for k in state if k not in set(names)])

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
            _check_writeable(where, name, p)
            updates.append((p, stored_in_dtype(where, name, value, p.dtype)))
        return updates

    # --- display ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text ``repr`` shows between the parentheses after the class name (for
        example ``in_features=784, out_features=10``); "" here, overridden by layers."""
        return ""

    def __repr__(self) -> str:
        """The tree, one module a line: ``MLP(...`` then ``  (layers): Sequential(`` and so
        on, each level indented two more spaces. Written without recursion (any depth); a
        sub-module with its own ``__repr__`` is shown by it."""
        out: list[str] = []
        # (module, or the id of one whose closing ")" comes now; the "(name): " label; depth)
        stack: list[tuple[Any, str, int]] = [(self, "", 0)]
        open_: set[int] = set()     # the modules being shown: the current one's ancestors
        while stack:
            item, label, depth = stack.pop()
            indent = "  " * depth
            if isinstance(item, int):
                open_.discard(item)
                out.append(indent + ")")
                continue
            if id(item) in open_:   # a module holding one of its ancestors: not again
                out.append(f"{indent}{label}<{type(item).__name__}: a cycle, shown above>")
                continue
            own = type(item).__repr__ is Module.__repr__  # type: ignore[comparison-overlap]
            text = f"{type(item).__name__}({item.extra_repr()}" if own else repr(item)
            if own and not item._modules:
                text += ")"
            out.append(indent + label + text.replace("\n", "\n" + indent))
            if own and item._modules:
                open_.add(id(item))
                stack.append((id(item), "", depth))
                for name, child in reversed(item._modules.items()):
                    stack.append((child, f"({name}): ", depth + 1))
        return "\n".join(out)

    def __deepcopy__(self, memo: dict[int, Any]) -> "Module":
        """A deep copy of the whole tree, without recursion over its depth: every module of
        the tree gets its (empty) copy first, so that copying each one's attributes finds
        its sub-modules already made (shared modules stay shared). A sub-module with its
        own ``__deepcopy__`` is copied by it. Each module's state goes through its
        ``__getstate__`` and ``__setstate__``, as in pickle (and PyTorch's deepcopy): a
        subclass that leaves out a lock or a cache there has it left out of copies too. The
        copy names its tree again at its first call."""
        plain = [m for _, m in self.named_modules() if id(m) not in memo and
                 (m is self or type(m).__deepcopy__ is Module.__deepcopy__)]
        for m in plain:
            memo[id(m)] = type(m).__new__(type(m))
        for m in plain:
            memo[id(m)].__setstate__(copy.deepcopy(m.__getstate__(), memo))
        return memo[id(self)]

    def __copy__(self) -> "Module":
        """``copy.copy``: the same parameters and submodules, in registries of its own, so
        that assigning one on the copy leaves the original as it was."""
        new = type(self).__new__(type(self))
        state = self.__getstate__()
        for key in ("_parameters", "_modules", "_slots"):
            if key in state:
                state[key] = type(state[key])(state[key])
        new.__setstate__(state)
        return new

    def __getstate__(self) -> dict[str, Any]:
        """What ``pickle`` (and ``copy.copy``) keep: the attributes without the naming
        caches (a weak reference to the root that named the module, a root's map keyed by
        ``id()``, which would name nothing in another process). The copy names its tree
        again at its first call, as a deep copy does."""
        state = self.__dict__.copy()
        state.update(_UNNAMED)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy's attributes (``pickle``, ``copy.copy``, ``copy.deepcopy``) from ``state``."""
        self.__dict__.update(state)


# A module's naming caches as a new module has them (copies start from these: see
# Module.__deepcopy__ and Module.__getstate__).
_UNNAMED: dict[str, Any] = {"_path": None, "_paths": None, "_paths_for": None,
                            "_named_by": None, "_shared": False}


def stored_in_dtype(where: str, name: str, value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """A stored ``value`` (a parameter's, or its optimizer state's) in the parameter's dtype
    (``value`` itself when it has it, else a new array), checked before anything is
    written: a finite value beyond that dtype's range (1e300 into float32, Adam's v of 1e5
    into float16) would become Inf, silently (and past ``check_finite``, which saw the
    value before the cast)."""
    if value.dtype == dtype:
        return value
    with np.errstate(over="ignore", invalid="ignore"):    # found below, as an error
        converted = value.astype(dtype)
    if dtype.kind == "f":
        overflow = np.isfinite(value) & ~np.isfinite(converted)
        if overflow.any():
            first = value.ravel()[np.flatnonzero(overflow.ravel())[0]]
            raise ValueError(f"{where}: {name} holds {first.item()!r}, beyond the range of the "
                             f"parameter's {dtype} (it would become Inf). Nothing was loaded")
    return converted


def _check_writeable(where: str, name: str, p: Parameter) -> None:
    """A parameter on read-only memory cannot be loaded into: found before any parameter is
    written (the write would raise numpy's "assignment destination is read-only" halfway,
    leaving the parameters before it overwritten). Read-only because a live graph locked
    it is fine: the tracked write unlocks it."""
    if not engine.can_write(p):
        raise ValueError(f"{where}: {name} (shape {p.shape}) is read-only: its numpy array is "
                         f"not writeable (memory such as np.frombuffer of bytes, or a "
                         f"broadcast view); give it writeable memory first "
                         f"(p.data = p.data.copy()). Nothing was loaded")


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(Linear(2, 8), ReLU(), Linear(8, 3))``."""

    def __init__(self, *modules: Module):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: item {i} is a {type(m).__name__}, not a Module")
            setattr(self, str(i), m)

    def forward(self, x: Any) -> Any:
        """Each module in turn. A nested plain ``Sequential`` is walked in place rather
        than called (the same modules, in the same order, each in its own name scope), so
        chains thousands of levels deep run without RecursionError."""
        pending = [iter(self._modules.values())]
        walking: list[Module] = [self]  # the Sequentials whose modules ``pending`` walks
        inside = {id(self)}
        while pending:
            for m in pending[-1]:
                kind = type(m)
                if kind.forward is Sequential.forward and kind.__call__ is Module.__call__ \
                        and "forward" not in m.__dict__:     # not a forward set on the instance
                    if id(m) in inside:
                        raise RecursionError("Sequential: a Sequential contains itself "
                                             "(a cycle in the module tree); its forward "
                                             "would never end")
                    pending.append(iter(m._modules.values()))
                    walking.append(m)
                    inside.add(id(m))
                    break
                x = m(x)
            else:
                pending.pop()
                inside.discard(id(walking.pop()))
        return x

    @overload
    def __getitem__(self, i: int) -> Module: ...

    @overload
    def __getitem__(self, i: slice) -> "Sequential": ...

    def __getitem__(self, i: int | slice) -> "Module | Sequential":
        """The module at position ``i``; a slice is a Sequential of those modules (the same
        objects, under their names here, as ``torch.nn.Sequential``), callable as a model."""
        if isinstance(i, slice):
            part = Sequential()
            for name, m in list(self._modules.items())[i]:
                setattr(part, name, m)
            return part
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
