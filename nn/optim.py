"""Optimizers, learning-rate schedules and gradient clipping.

Each ``step`` follows the published update rule (as PyTorch implements it), written with
in-place numpy operations on buffers allocated once per parameter. ``g`` is a parameter's
gradient, ``lr`` the learning rate, ``t`` the step count starting at 1.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from . import subnormal
from .finite import all_finite, first_non_finite, l2_norm, square_norm
from .module import Module, Parameter, stored_in_dtype
from .update_bounds import UpdateBounds, state_held_outside

ParamsArg = Union[Module, Iterable[Any]]


def _number(owner: str, name: str, value: Any, lo: float = 0.0, hi: float = math.inf,
            lo_open: bool = False, hi_open: bool = False) -> float:
    """A finite real number in [lo, hi] (ends open as asked), or a ValueError naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(value) and (lo < value if lo_open else lo <= value) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise ValueError(f"{owner}: {name} must be a finite number in {interval}, got {plain_repr(value)}")
    return float(value)


def _keep(state: dict[str, Any], saved: dict[str, Any]) -> None:
    """Copy one parameter's optimizer state into ``saved``, its arrays into buffers kept
    from step to step (allocated once, as the checked update's copies of the weights)."""
    for key in [k for k in saved if k not in state]:
        del saved[key]
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            _copy_into(saved, key, value)
        else:
            saved[key] = value


def _copy_into(buffers: dict[Any, Any], key: Any, array: np.ndarray) -> None:
    """``array``'s values into ``buffers[key]``, a buffer kept from step to step (made
    again only when the shape or dtype changed)."""
    buf = buffers.get(key)
    if not isinstance(buf, np.ndarray) or buf.shape != array.shape or buf.dtype != array.dtype:
        buf = buffers[key] = np.empty_like(array)
    np.copyto(buf, array)


def _put_back(state: dict[str, Any], saved: dict[str, Any]) -> None:
    """The state ``_keep`` saved, back in ``state``: arrays written into the state's own
    arrays where they match, entries the step created removed."""
    for key in [k for k in state if k not in saved]:
        del state[key]
    for key, value in saved.items():
        now = state.get(key)
        if isinstance(value, np.ndarray) and isinstance(now, np.ndarray) \
                and now.shape == value.shape and now.dtype == value.dtype:
            np.copyto(now, value)
        else:
            state[key] = value.copy() if isinstance(value, np.ndarray) else value


def _plain_number(value: Any) -> Any:
    """A numpy number hyperparameter as the Python number it holds (others as they are):
    an ``np.float64`` lr computed the update in float64 before rounding to a float32
    weight, a Python float in float32, and a checkpoint gives it back as a Python float,
    so a resumed run took other steps (and an ``np.float32`` could not be saved)."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, tuple):                         # Adam's betas
        return tuple(_plain_number(v) for v in value)
    return value


class ParamGroup(dict[str, Any]):
    """A parameter group: a dict, as in PyTorch, whose numbers stay Python numbers when set
    by item (``group["lr"] = 0.1 * np.exp(-0.1 * epoch)``, a schedule of one's own),
    through ``_plain_number``: an ``np.float64`` rate made the update compute in float64, a
    checkpoint gave it back as a Python float, and the resumed run took other steps."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, _plain_number(value))

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {plain_repr(value)}")
    return int(value)


class NonFiniteUpdate(FloatingPointError):
    """An optimizer step (with ``check_finite`` on) would have left a parameter, or its
    state in the optimizer (a moment buffer: Adam's ``v`` holds g², Inf for a float32
    gradient beyond 1.8e19), NaN or Inf. Every parameter holds its value from before the
    step, and so does the optimizer's own state (the moment buffers, Adam's step counts,
    ``steps``): the step can be tried again (with a lower learning rate) as if it had never
    run. ``index`` is the parameter that failed; ``state_key`` the state entry that did
    (None: the parameter itself)."""

    def __init__(self, message: str, index: int, value: float, state_key: str | None = None):
        super().__init__(message)
        self.index, self.value, self.state_key = index, value, state_key


@dataclass(frozen=True)
class Kernel:
    """An optimizer's update lines as one function of arrays and numbers (``plain``), and
    where a moment buffer can decay into subnormal numbers the same lines with those values
    computed apart (``exact``, from nn/subnormal.py: the same bits, without the slow
    microcode path of subnormal arithmetic; it takes ``plain``'s arguments and the flat
    positions of the subnormal values). ``moment`` is the argument whose subnormal values
    are tracked."""

    plain: Callable[..., None]
    exact: Callable[..., None]
    moment: int = 1


def heavy_ball_lines(w: np.ndarray, buf: np.ndarray, g: np.ndarray, mu: float, lr: float) -> None:
    """SGD's heavy-ball momentum, in place: ``buf <- mu buf + g; w <- w - lr buf``."""
    buf *= mu
    buf += g
    w -= lr * buf


def adam_lines(w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, b1: float, b2: float,
               step: float, bias2: float, eps: float) -> None:
    """Adam's update, in place (``step = lr / (1 - b1^t)``, ``bias2 = 1 - b2^t``)."""
    m *= b1
    m += (1 - b1) * g
    v *= b2
    v += (1 - b2) * (g * g)
    denom = np.sqrt(v / bias2)
    denom += eps
    w -= step * (m / denom)


HEAVY_BALL = Kernel(heavy_ball_lines, subnormal.heavy_ball)
ADAM = Kernel(adam_lines, subnormal.adam)


class Optimizer:
    """Holds parameter groups and a per-parameter state dict; subclasses define ``update``
    and ``check_group`` (the validation of their hyperparameters).

    ``params`` is a Module, an iterable of parameters, or a list of groups
    ``{"params": [...], "lr": ..., <other hyperparameters>}`` (missing ones take the
    constructor's values), as in PyTorch; ``add_param_group`` adds one later. A frozen
    Parameter (``requires_grad = False``, fine-tuning) is taken as PyTorch takes it: it has
    no gradient, and ``step`` skips every parameter without one. ``opt.params``
    lists every parameter, group by group; ``opt.lr`` reads the first group's learning rate
    and sets every group's.

    ``opt.check_finite = True`` (``fit`` sets it while it trains) makes ``step`` keep each
    parameter's values until its update is known finite: an update giving NaN or Inf is
    undone for every parameter and the optimizer's state, and raises ``NonFiniteUpdate``. A
    checked update costs a copy of the parameter and of its state, and a dot product of it
    with itself (nn/finite.py; the copies' buffers are allocated once). Inside ``fit`` (and
    any ``nn.step`` step) most updates of SGD, Adam and AdamW need neither: bounds from the
    last check and the gradient check prove them finite (``update_bound``,
    nn/update_bounds.py); the rest are checked.

    ``exact_subnormals`` (SGD with momentum, Adam, AdamW, RMSprop with momentum): a moment
    buffer of a unit that stops getting gradient decays by its factor every step into the
    subnormal range, where many x86 CPUs compute several times slower
    (benchmarks/results/subnormal.json). With True, the default, on a CPU where that is so
    (``nn.subnormal.slow_here()``, probed once) those values are updated apart, in float64
    rounded once, which gives exactly the bits of the plain lines (nn/subnormal.py explains
    why); False runs only the plain lines. The numbers are the same either way. Every
    update goes through ``run_kernel``.
    """

    STATE_KEYS: tuple[str, ...] = ()      # what ``update`` keeps per parameter
    STATE_COUNTS: tuple[str, ...] = ()    # of which step counts (ints >= 0); the rest are
    #                                       arrays of the parameter's shape
    STATE_TOGETHER: tuple[str, ...] = ()  # what every non-empty state holds: the first
    #                                       update creates them together, and later ones
    #                                       read each (load_state_dict requires them)
    # Group entries that are not hyperparameters of the update: the learning rate the
    # group had when the first schedule was made on it (set by LRScheduler, as in PyTorch).
    GROUP_EXTRAS: tuple[str, ...] = ("initial_lr",)

    def __init__(self, params: ParamsArg, defaults: dict[str, Any], *, exact_subnormals: bool = True):
        name = type(self).__name__
        if not isinstance(exact_subnormals, bool):
            raise ValueError(f"{name}: exact_subnormals must be True or False, got "
                             f"{plain_repr(exact_subnormals)}")
        self.exact_subnormals = exact_subnormals
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self.params: list[Parameter] = []
        self._state: dict[int, dict[str, Any]] = {}     # the ``state`` property
        self.steps = 0
        # Where moment buffers hold subnormal values (nn/subnormal.py): a cache, not state.
        self.subnormal_hints = subnormal.Hints()
        # The parameters' values before the running step (check_finite): a cache, not state.
        self._last_good: dict[int, np.ndarray] = {}
        self._state_before: dict[int, dict[str, Any]] = {}     # and their state's
        self._check_finite = False
        # What proves an update finite with no copy (nn/update_bounds.py): a cache, not state.
        self.update_bounds = UpdateBounds()
        seen: set[int] = set()
        groups = [self._new_group(name, raw, seen) for raw in self._groups(params)]
        duplicates = sum(dropped for _, dropped in groups)
        if duplicates:
            warnings.warn(f"{name}: {duplicates} parameter(s) given more than once were kept once",
                          UserWarning, stacklevel=3)
        if not any(group["params"] for group, _ in groups):
            raise ValueError(f"{name}: got an empty list of parameters")
        for group, _ in groups:
            self._append(group)

    def _groups(self, params: ParamsArg) -> list[dict[str, Any]]:
        name = type(self).__name__
        if isinstance(params, Module):
            return [{"params": params.parameters()}]
        if isinstance(params, Tensor):
            raise TypeError(f"{name}: got a single tensor; pass a list ([p]) or a Module")
        if isinstance(params, dict):
            raise TypeError(f"{name}: a parameter group must be inside a list: [{{...}}]")
        items = list(params)
        if items and all(isinstance(g, dict) for g in items):
            return [self._raw_group(name, g) for g in items]
        return [{"params": items}]

    @staticmethod
    def _raw_group(owner: str, g: dict[str, Any]) -> dict[str, Any]:
        """A group dict with its 'params' as a list (checked to be there and not one tensor)."""
        if "params" not in g:
            raise ValueError(f"{owner}: a parameter group needs a 'params' entry")
        if isinstance(g["params"], Tensor):
            raise TypeError(f"{owner}: a group's params must be a list, not one tensor")
        try:
            return {**g, "params": list(g["params"])}
        except TypeError:
            raise TypeError(f"{owner}: a group's params must be a list of parameters, got "
                            f"{plain_repr(g['params']):.60}") from None

    def _new_group(self, owner: str, raw: dict[str, Any],
                   seen: set[int]) -> tuple[dict[str, Any], int]:
        """A validated group (defaults filled in, hyperparameters checked, parameters
        checked by ``_check_param``) and how many of its parameters were dropped as already
        in ``seen`` (which it extends)."""
        group = {**self.defaults, **{k: v for k, v in raw.items() if k != "params"}}
        unknown = set(group) - set(self.defaults) - set(self.GROUP_EXTRAS)
        if unknown:
            raise ValueError(f"{owner}: unknown hyperparameters {sorted(unknown)} in a "
                             f"parameter group (known: {sorted(self.defaults)})")
        self.check_group(group)
        group = ParamGroup({k: _plain_number(v) for k, v in group.items()})
        kept, dropped = [], 0
        for p in raw["params"]:
            self._check_param(owner, p)
            if id(p) in seen:
                dropped += 1
                continue
            seen.add(id(p))
            kept.append(p)
        group["params"] = kept
        return group, dropped

    @staticmethod
    def _check_param(owner: str, p: Any) -> None:
        """A parameter is a tensor that requires grad, or a Module's ``Parameter`` frozen
        (``requires_grad = False``), as PyTorch takes it: it gets no gradient, so ``step``
        skips it until it is unfrozen. A plain Tensor that does not require grad is an error
        (a forgotten ``requires_grad=True``: it would never be trained), as is anything
        else."""
        if not isinstance(p, Tensor) or not (p.requires_grad or isinstance(p, Parameter)):
            raise TypeError(f"{owner}: parameters must be tensors that require grad (or a "
                            f"Module's Parameters, frozen ones included), got {plain_repr(p):.60}")

    def _append(self, group: dict[str, Any]) -> None:
        self.param_groups.append(group)
        self.params.extend(group["params"])
        for p in group["params"]:
            self._state[id(p)] = {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{"params": [...], <hyperparameters>}`` (missing hyperparameters
        take the constructor's values), as ``torch.optim.Optimizer.add_param_group`` does:
        e.g. layers unfrozen while fine-tuning. Checked first, nothing changes on an error:
        a dict with a non-empty 'params' list, known and valid hyperparameters, and no
        parameter the optimizer already holds. A schedule made before must be made again
        (it has a base learning rate per group)."""
        owner = f"{type(self).__name__}.add_param_group"
        if not isinstance(param_group, dict):
            raise TypeError(f"{owner}: a parameter group is a dict {{'params': [...], ...}}, "
                            f"got {type(param_group).__name__}")
        raw = self._raw_group(owner, param_group)
        where = {id(p): k for k, g in enumerate(self.param_groups) for p in g["params"]}
        for i, p in enumerate(raw["params"]):
            if id(p) in where:
                raise ValueError(f"{owner}: parameter {i} of the new group (shape "
                                 f"{getattr(p, 'shape', '?')}) is already in group "
                                 f"{where[id(p)]}; a parameter belongs to one group")
        group, duplicates = self._new_group(owner, raw, set())
        if not group["params"]:
            raise ValueError(f"{owner}: the new group has no parameters")
        if duplicates:
            warnings.warn(f"{owner}: {duplicates} parameter(s) given more than once were kept "
                          f"once", UserWarning, stacklevel=2)
        self._append(group)

    def check_group(self, group: dict[str, Any]) -> None:
        """Validate one group's hyperparameters (raising ValueError naming the value)."""
        name = type(self).__name__
        self._check_lr(group.get("lr"))
        _number(name, "weight_decay", group.get("weight_decay", 0.0))
        if "initial_lr" in group:
            _number(name, "initial_lr", group["initial_lr"])

    def _check_lr(self, lr: Any) -> None:
        """A learning rate (a group's, or one given to the ``lr`` setter): a finite real
        number >= 0, or a ValueError naming the optimizer."""
        if not isinstance(lr, (int, float, np.integer, np.floating)) or isinstance(lr, bool) \
                or not math.isfinite(lr) or lr < 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be finite and >= 0, "
                             f"got {plain_repr(lr)}")

    @property
    def check_finite(self) -> bool:
        """Whether ``step`` undoes and reports an update giving NaN or Inf (see the class)."""
        return self._check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"{type(self).__name__}.check_finite must be True or False, "
                            f"got {plain_repr(value)}")
        self._check_finite = value
        if not value:
            self._last_good = {}             # the copies' memory goes with the check
            self._state_before = {}
            self.update_bounds.clear()

    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Each parameter's state by ``id(p)``: its moment buffers (``"momentum"``, Adam's
        ``"m"`` and ``"v"``) and counters (Adam's ``"t"``), created at its first update.
        Yours to read and change, in place or by assigning new arrays, as in PyTorch.
        Reading it hands the state out: the bounds that prove updates finite without a copy
        (nn/update_bounds.py) are not trusted after it. The next checked step measures them
        again, and proofs resume once nothing outside the optimizer holds the state (the
        dict, a parameter's state, or a moment array or a view of one)."""
        self.update_bounds.handed_out = True
        return self._state

    def _take_state_back(self) -> None:
        """After ``state`` was read: no bound carried on the moments holds (they may have been
        written through it); while anything outside still holds them, none will."""
        states, probe = self._state, object()    # reach state_held_outside alike: see there
        self.update_bounds.clear()
        self.update_bounds.handed_out = state_held_outside(states, probe)

    @property
    def lr(self) -> float:
        """The learning rate of the first parameter group; setting it sets every group's
        (a schedule that should keep groups apart sets ``param_groups[k]["lr"]``)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self._check_lr(value)                   # before any group changes
        for group in self.param_groups:
            group["lr"] = _plain_number(value)

    def zero_grad(self) -> None:
        """Forget the gradient of every parameter the optimizer holds (each ``grad``
        becomes None, as ``torch.optim.Optimizer.zero_grad()`` with ``set_to_none=True``)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place. The update is tracked
        (``engine.writing``): a graph computed before it and not backpropagated yet raises
        in backward() instead of using the new weights. A gradient that is not a real
        numpy array of its parameter's shape, and a read-only parameter, are errors before
        anything changes; with ``check_finite``, so is an update giving NaN or Inf
        (``NonFiniteUpdate``, every parameter as before the step)."""
        self._step({})

    def _step(self, grad_bounds: dict[int, float]) -> None:
        """``step``, given bounds on the largest |gradient element| of the parameters (by
        ``id``) that the caller measured (``nn.step.Step``): with ``check_finite`` they let
        the update of those parameters be proven finite (nn/update_bounds.py)."""
        if self._check_finite:      # proofs before the step's own writes (nn/update_bounds.py)
            groups = [(group, [p for p in group["params"] if p.grad is not None])
                      for group in self.param_groups]
            todo = [(p, group) for group, members in groups for p in members]
            self._check_gradients(todo)
            if self.update_bounds.handed_out:
                self._take_state_back()
            proofs = self.update_bounds.prove(self, groups, self._state, grad_bounds)
        else:
            todo = [(p, group) for group in self.param_groups for p in group["params"]
                    if p.grad is not None]
            self._check_gradients(todo)
        # Tracked, kept by nobody; stamped again when the block ends, so the write stamps
        # that settle takes below are the ones the parameters keep after the step.
        with engine.writing(*[p for p, _ in todo]) as arrays:
            self._check_writeable(todo, arrays)
            self.steps += 1
            state = self._state
            if not self._check_finite:
                for (p, group), w in zip(todo, arrays, strict=True):
                    self.update(w, _gradient(p, w), state[id(p)], group)
                return
            if None in proofs:
                checked = [k for k, proof in enumerate(proofs) if proof is None]
                self._checked_update([todo[k] for k in checked], [arrays[k] for k in checked])
            for (p, group), w, proof in zip(todo, arrays, proofs, strict=True):
                if proof is not None:                 # cannot overflow: no copy, no check
                    self.update(w, _gradient(p, w), state[id(p)], group)
        self.update_bounds.settle(groups, proofs, state)

    def _checked_update(self, todo: list[tuple[Any, dict[str, Any]]],
                        arrays: list[np.ndarray]) -> None:
        """``step`` with ``check_finite``, for the parameters whose update is not proven
        finite (all of them at the first step; they run before the proven ones, so a
        failure leaves nothing updated that has no copy): each parameter's values are
        copied into a buffer kept from step to step (``_last_good``: allocated once,
        rewritten with ``np.copyto``), then updated, then checked while still in cache; the
        first parameter found NaN or Inf is undone together with every one updated before
        it (``_undo``). The check's dot product also gives the bound on the weights that
        proves later updates (nn/update_bounds.py).

        Why this is exact: the undo copies the saved bits back (never ``w + u``, which is
        not ``w`` in floating point), and every parameter updated by this step has its copy.
        Why no NaN or Inf can pass: every updated array is checked (nn/finite.py: the dot
        product of the flattened array with itself, whose terms are squared magnitudes, so
        any NaN or Inf element makes it NaN or Inf, and an elementwise test decides when it
        is not finite), under one ``np.errstate`` for the whole step rather than one per
        array.
        """
        state, last_good, before = self._state, self._last_good, self._state_before
        with np.errstate(over="ignore", invalid="ignore"):       # reported below, as an error
            for k, ((p, group), w) in enumerate(zip(todo, arrays, strict=True)):
                # Copies by position, not by parameter: a parameter listed twice (or two
                # sharing memory) has one per update, and _restore puts them back last first.
                _copy_into(last_good, k, w)       # each copy and check while w is in cache
                _keep(state[id(p)], before.setdefault(k, {}))
                try:
                    self.update(w, _gradient(p, w), state[id(p)], group)
                except BaseException:            # (a hyperparameter set out of range by hand)
                    self._restore(todo[:k + 1], arrays[:k + 1])
                    raise
                norm = square_norm(w)
                if not (math.isfinite(norm) or np.isfinite(w).all()):   # nn/finite.py
                    self._undo(todo[:k + 1], arrays[:k + 1], p, w, None)
                for key, value in state[id(p)].items():  # g² of a finite float32 gradient beyond
                    if isinstance(value, np.ndarray) and not all_finite(value):   # 1.8e19 is Inf
                        self._undo(todo[:k + 1], arrays[:k + 1], p, value, key)
                self.update_bounds.measured(p, state[id(p)], norm)

    def _restore(self, todo: list[tuple[Tensor, dict[str, Any]]], arrays: list[np.ndarray]) -> None:
        """Put back the values and the optimizer's state from before the step (its moment
        arrays written in place: the same arrays, as ``optimizer.state`` handed them out),
        last update first, and the step count."""
        for k in reversed(range(len(todo))):
            np.copyto(arrays[k], self._last_good[k])
            _put_back(self._state[id(todo[k][0])], self._state_before[k])
        self.steps -= 1
        self.update_bounds.clear()          # bounds measured on the updates just undone

    def _position(self, p: Tensor) -> int:
        """``p``'s position in ``params``: how the errors name a parameter."""
        return next(j for j, q in enumerate(self.params) if q is p)

    def _check_half_eps(self, p: Tensor, group: dict[str, Any]) -> None:
        """A float16 parameter's update computes in float16, where an ``eps`` below 6e-8 is
        0: where the second moment is 0 too (a small gradient's square underflows) the
        update divides by 0 and writes Inf and NaN (PyTorch's Adam on float16 CPU tensors
        does). An error naming the cause, before anything changes, rather than "lower the
        learning rate"."""
        eps = group.get("eps")
        if eps is not None and eps > 0 and np.float16(eps) == 0:
            raise ValueError(f"{type(self).__name__}.step: eps = {plain_repr(eps)} is 0 in "
                             f"float16, the dtype of parameter {self._position(p)} (shape "
                             f"{p.shape}): where a gradient squares to 0 there the update would "
                             f"divide by 0. Train in float32, or give an eps float16 holds (at "
                             f"least 6e-8). Nothing was updated")

    def _undo(self, todo: list[tuple[Tensor, dict[str, Any]]], arrays: list[np.ndarray],
              p: Tensor, bad: np.ndarray, key: str | None) -> None:
        """``_restore``, then NonFiniteUpdate for ``p`` (``bad``: its new values, or its state
        entry ``key``'s)."""
        value = first_non_finite(bad)
        self._restore(todo, arrays)
        i = self._position(p)
        where = "" if key is None else f" in its optimizer state {key!r}"
        raise NonFiniteUpdate(
            f"{type(self).__name__}.step: the update of parameter {i} (shape {p.shape}) gives "
            f"{value}{where}; every parameter and the optimizer's state keep their values from "
            f"before the step", i, value, key)

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None:
        """Bounds for the coming update of one parameter (nn/update_bounds.py), given
        bounds on the largest |element| of the weights (``w``), of the gradient (``g``) and
        of each moment array in ``state`` (``moments``): ``(peak, w_after, moments_after)``,
        ``peak`` bounding every value the update computes, and every number it turns into
        the parameter's dtype (a learning rate of 1e40 is Inf in float32 even where lr times
        the gradient would not be). None: no bound is known (an
        optimizer without one always copies and checks), or the group's hyperparameters
        are outside the ranges the bound was derived for (``check_group``'s: a group can be
        changed after it was checked, ``group["lr"] = -1``). The results must not decrease
        when any bound given grows: one call serves a whole group, on its largest bounds."""
        return None

    def _check_gradients(self, todo: list[tuple[Tensor, dict[str, Any]]]) -> None:
        """Each gradient is a numpy array of its parameter's shape and of a real dtype,
        or an error before anything changes: numpy would broadcast another shape silently
        (a (4,) gradient moves every row of a (3, 4) weight alike, a scalar every element,
        and SGD's momentum buffer takes the gradient's shape), and a complex, object or
        string gradient fails halfway through an update, its state partly changed (SGD
        keeps the real part of a complex one). A gradient of another real dtype (float64
        for a float32 parameter, float16, integers) is taken: the update casts it to the
        parameter's dtype first (``_gradient``). O(1) per parameter: no element is read."""
        for p, group in todo:
            g = p.grad
            if "eps" in group and p.dtype.char == "e":
                self._check_half_eps(p, group)
            if type(g) is np.ndarray and g.shape == p.shape and g.dtype.kind in "fiub":
                continue
            i = self._position(p)
            where = f"{type(self).__name__}.step: the gradient of parameter {i} (shape {p.shape})"
            if not isinstance(g, (np.ndarray, np.generic)):
                raise TypeError(f"{where} is a {type(g).__name__}, not a numpy array; nothing "
                                f"was updated")
            if g.shape != p.shape:
                raise ValueError(f"{where} has shape {g.shape}; a gradient must have its "
                                 f"parameter's shape (numpy would broadcast it). Nothing was "
                                 f"updated")
            if g.dtype.kind not in "fiub":
                raise ValueError(f"{where} has dtype {g.dtype}; a gradient must hold real "
                                 f"numbers. Nothing was updated")

    def _check_writeable(self, todo: list[tuple[Tensor, dict[str, Any]]],
                         arrays: list[np.ndarray]) -> None:
        for (p, _), w in zip(todo, arrays, strict=True):
            if not w.flags.writeable:
                i = self._position(p)
                raise ValueError(
                    f"{type(self).__name__}.step: parameter {i} (shape {w.shape}) is read-only "
                    f"(its numpy array is not writeable: a tensor made with copy=False from a "
                    f"read-only array or a broadcast view); give the optimizer parameters "
                    f"that own writeable memory. Nothing was updated")

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        """One parameter's step, in place: write the new values into ``w`` given its
        gradient ``g``, its per-parameter ``state`` (buffers, created at the first call,
        updated in place) and its group's hyperparameters (the rule in the class docstring).
        ``step`` calls it for every parameter that has a gradient."""
        raise NotImplementedError

    def run_kernel(self, kernel: Kernel, *args: Any) -> None:
        """Run ``kernel`` on ``args`` (its arrays, then its numbers): the subnormal-exact
        form when ``exact_subnormals`` is on, this CPU is slow on subnormal values, the
        moment holds some (a hint
        rescanned every few steps) and the arrays are ones it reproduces numpy's
        arithmetic on; the plain lines otherwise. Both give the same bits."""
        if self.exact_subnormals and subnormal.slow_here():
            positions = self.subnormal_hints.positions(args[kernel.moment])
            if positions.size:
                arrays = tuple(a for a in args if isinstance(a, np.ndarray))
                numbers = args[len(arrays):]
                if subnormal.applies(arrays, numbers):
                    kernel.exact(*args, positions)
                    return
        kernel.plain(*args)

    # --- copies ----------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """What ``pickle`` and ``copy.deepcopy`` keep: the per-parameter state in the order
        of ``params`` (it is keyed by ``id(p)``, which names nothing in a copy: a deep-copied
        optimizer raised KeyError at its first step), and none of the caches (subnormal
        hints, values kept for an undo, update bounds), which a copy builds afresh."""
        state = self.__dict__.copy()
        state["_state"] = [self._state[id(p)] for p in self.params]
        state["_last_good"], state["_state_before"] = {}, {}
        state["subnormal_hints"] = subnormal.Hints(self.subnormal_hints.every)
        state["update_bounds"] = UpdateBounds()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A copy's attributes, its per-parameter state keyed by its own parameters."""
        per_parameter = state.pop("_state")
        self.__dict__.update(state)
        self._state = {id(p): s for p, s in zip(self.params, per_parameter, strict=True)}

    # --- resuming --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: JSON-serialisable apart from the numpy
        arrays of the per-parameter state (copies). Parameters are numbered by their
        position in ``opt.params``."""
        index = {id(p): i for i, p in enumerate(self.params)}
        groups = [{**{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()
                      if k != "params"},
                   "params": [index[id(p)] for p in g["params"]]} for g in self.param_groups]
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else v)
                     for k, v in self._state[id(p)].items()}
                 for i, p in enumerate(self.params) if self._state[id(p)]}
        return {"type": type(self).__name__, "steps": self.steps, "param_groups": groups,
                "state": state}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore ``state_dict()``. Everything is checked first (type, groups and their
        sizes, hyperparameters, each state array's shape and dtype against its parameter);
        on any error nothing has changed."""
        self.prepare_state_dict(d)()

    def prepare_state_dict(self, d: dict[str, Any]) -> Callable[[], None]:
        """The checks of ``load_state_dict``, changing nothing: returns the function that
        restores ``d`` (it cannot fail). ``nn.load`` checks the model's state and the
        optimizer's before it changes either, and restores the optimizer only once the
        model's parameters are written."""
        name = type(self).__name__
        if not isinstance(d, dict) or d.get("type") != name:
            raise ValueError(f"{name}.load_state_dict: the state is for "
                             f"{plain_repr(d.get('type') if isinstance(d, dict) else d)}, not {name}")
        groups = d.get("param_groups")
        if not isinstance(groups, list) or len(groups) != len(self.param_groups):
            count = len(groups) if isinstance(groups, list) else groups
            raise ValueError(f"{name}.load_state_dict: {plain_repr(count)} "
                             f"parameter groups for {len(self.param_groups)}")
        new_groups = []
        start = 0
        for k, (saved, mine) in enumerate(zip(groups, self.param_groups, strict=True)):
            expected = list(range(start, start + len(mine["params"])))
            start += len(mine["params"])
            if not isinstance(saved, dict) or saved.get("params") != expected:
                raise ValueError(f"{name}.load_state_dict: group {k} holds parameters "
                                 f"{plain_repr(saved.get('params') if isinstance(saved, dict) else saved)}, "
                                 f"expected {expected}")
            hyper = {h: tuple(v) if isinstance(self.defaults.get(h), tuple) else v
                     for h, v in saved.items() if h != "params"}
            if set(hyper) - set(self.GROUP_EXTRAS) != set(self.defaults):
                raise ValueError(f"{name}.load_state_dict: group {k} has hyperparameters "
                                 f"{sorted(hyper)}, expected {sorted(self.defaults)} (and "
                                 f"optionally {list(self.GROUP_EXTRAS)})")
            self.check_group(hyper)
            new_groups.append(hyper)
        state = d.get("state")
        steps = d.get("steps")
        if not isinstance(state, dict) or isinstance(steps, bool) or not isinstance(steps, int) \
                or steps < 0:
            raise ValueError(f"{name}.load_state_dict: malformed state (steps {plain_repr(steps)})")
        new_state: dict[int, dict[str, Any]] = {id(p): {} for p in self.params}
        for i, entry in state.items():
            i = int(i)
            if not 0 <= i < len(self.params) or not isinstance(entry, dict):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, which does "
                                 f"not exist ({len(self.params)} parameters)")
            p = self.params[i]
            missing = [key for key in self.STATE_TOGETHER if key not in entry]
            if entry and missing:
                raise ValueError(f"{name}.load_state_dict: the state of parameter {i} lacks "
                                 f"{missing} (it holds {sorted(map(str, entry))}; every "
                                 f"non-empty state of {name} holds {list(self.STATE_TOGETHER)})")
            for key, value in entry.items():
                if key not in self.STATE_KEYS:
                    raise ValueError(f"{name}.load_state_dict: unknown state {plain_repr(key)} for "
                                     f"parameter {i} (known: {list(self.STATE_KEYS)})")
                if key in self.STATE_COUNTS:
                    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                            or value < 0:
                        raise ValueError(f"{name}.load_state_dict: state {plain_repr(key)} of "
                                         f"parameter {i} is {plain_repr(value):.60}, not a step "
                                         f"count (an integer >= 0)")
                    new_state[id(p)][key] = int(value)
                elif not isinstance(value, np.ndarray):
                    raise ValueError(f"{name}.load_state_dict: state {plain_repr(key)} of parameter {i} "
                                     f"is {plain_repr(value):.60}, not an array")
                elif value.shape != p.shape or value.dtype.kind != "f":
                    raise ValueError(f"{name}.load_state_dict: state {plain_repr(key)} of parameter "
                                     f"{i} has shape {value.shape} dtype {value.dtype}; the "
                                     f"parameter has shape {p.shape} dtype {p.dtype}")
                else:
                    own = stored_in_dtype(f"{name}.load_state_dict",
                                          f"state {key!r} of parameter {i}", value, p.dtype)
                    new_state[id(p)][key] = own.copy() if own is value else own   # the optimizer's own

        def restore() -> None:
            for group, hyper in zip(self.param_groups, new_groups, strict=True):
                for extra in self.GROUP_EXTRAS:    # as saved: absent if it was
                    group.pop(extra, None)
                group.update(hyper)
            self._state, self.steps = new_state, steps
            self.update_bounds.clear()
        return restore


def _gradient(p: Any, w: np.ndarray) -> np.ndarray:
    """``p``'s gradient in the dtype of its values ``w``: the update lines combine it with
    Python numbers (``lr * g``, ``g * g``), which numpy computes in the gradient's own dtype,
    where a float16 gradient underflows or overflows and an int8 one wraps around."""
    g = p.grad
    return g if g.dtype == w.dtype else g.astype(w.dtype)


def _with_weight_decay(w: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
    """g + wd * w (L2 regularization folded into the gradient); g itself when wd = 0."""
    return g + weight_decay * w if weight_decay else g


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (heavy ball or Nesterov).

        g <- g + wd w
        b <- mu b + (1 - dampening) g      (b = g at the first step)
        g <- g + mu b  (Nesterov)  or  b
        w <- w - lr g

    The default ``lr=0.01`` is Keras's; ``torch.optim.SGD``'s is 1e-3, so code ported
    from PyTorch that leaves ``lr`` out takes steps ten times larger here.
    """

    STATE_KEYS = STATE_TOGETHER = ("momentum",)

    def __init__(self, params: ParamsArg, lr: float = 0.01, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 *, exact_subnormals: bool = True):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      nesterov=nesterov, weight_decay=weight_decay),
                         exact_subnormals=exact_subnormals)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        _number("SGD", "momentum", group["momentum"], 0, 1, hi_open=True)
        _number("SGD", "dampening", group["dampening"], 0, 1)
        if not isinstance(group["nesterov"], bool):
            raise ValueError(f"SGD: nesterov must be True or False, got {plain_repr(group['nesterov'])}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        momentum, dampening = group["momentum"], group["dampening"]
        g = _with_weight_decay(w, g, group["weight_decay"])
        if momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = np.array(g, dtype=w.dtype, copy=True)
            elif not dampening and not group["nesterov"]:
                self.run_kernel(HEAVY_BALL, w, buf, g, momentum, group["lr"])
                return
            else:
                buf *= momentum
                buf += (1 - dampening) * g if dampening else g
            g = g + momentum * buf if group["nesterov"] else buf
        w -= group["lr"] * g

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None:
        """The class docstring's lines, on bounds of the largest |element|. The numbers
        the lines turn into the parameter's dtype (lr, mu, 1 - dampening, wd) are in the
        peak too: ``lr * b`` can stay small while lr itself overflows float32."""
        mu, lr, decay, dampening = group["momentum"], group["lr"], group["weight_decay"], group["dampening"]
        if not (0 <= lr < math.inf and 0 <= mu < math.inf and 0 <= decay < math.inf
                and 0 <= dampening <= 1):
            return None         # what the lines below assume (False for NaN too)
        g = g + decay * w
        peak, after = max(g, lr, mu, decay), {}     # 1 - dampening is in [0, 1]
        if mu:
            b = moments.get("momentum")
            b = g if b is None else mu * b + (1 - dampening) * g
            after["momentum"] = b
            g = g + mu * b if group["nesterov"] else b
            peak = max(peak, b, g)
        step = lr * g
        return max(peak, step, w + step), w + step, after


def _check_betas(owner: str, betas: Any) -> None:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{owner}: betas must be a pair (beta1, beta2), got {plain_repr(betas)}")
    _number(owner, "beta1", betas[0], 0, 1, hi_open=True)
    _number(owner, "beta2", betas[1], 0, 1, hi_open=True)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

        g <- g + wd w                  (L2, coupled; see AdamW for the decoupled form)
        m <- b1 m + (1 - b1) g
        v <- b2 v + (1 - b2) g^2
        w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    STATE_KEYS = STATE_TOGETHER = ("m", "v", "t")
    STATE_COUNTS = ("t",)

    def __init__(self, params: ParamsArg, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, *, exact_subnormals: bool = True):
        super().__init__(params, dict(lr=lr, betas=tuple(betas) if isinstance(betas, list) else betas,
                                      eps=eps, weight_decay=weight_decay),
                         exact_subnormals=exact_subnormals)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        name = type(self).__name__
        _check_betas(name, group["betas"])
        _number(name, "eps", group["eps"], 0, lo_open=True)

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        self.adam_update(w, _with_weight_decay(w, g, group["weight_decay"]), state, group)

    def adam_update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
                    group: dict[str, Any]) -> None:
        """The Adam step of the class docstring on ``g`` as given (any weight decay already
        applied or decoupled by the caller): updates ``m``, ``v`` and ``t`` in ``state`` and
        ``w`` in place."""
        b1, b2 = group["betas"]
        if "m" not in state:
            state["m"], state["v"], state["t"] = np.zeros_like(w), np.zeros_like(w), 0
        m, v = state["m"], state["v"]
        state["t"] += 1
        t = state["t"]
        step, bias2 = group["lr"] / (1 - b1 ** t), 1 - b2 ** t
        self.run_kernel(ADAM, w, m, v, g, b1, b2, step, bias2, group["eps"])

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None:
        """The class docstring's lines, on bounds of the largest |element|."""
        decay = group["weight_decay"]
        if not 0 <= decay < math.inf:
            return None
        bound = adam_bound(group, state, w, g + decay * w, moments)
        if bound is None:
            return None
        peak, w_after, after = bound
        return max(peak, decay), w_after, after     # wd is turned into the dtype too


def adam_bound(group: dict[str, Any], state: dict[str, Any], w: float, g: float,
               moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None:
    """Adam's lines (``adam_lines``) on bounds of the largest |element| (``g``: the
    gradient as the step sees it). The quotient m / (sqrt(v / bias2) + eps) is at most
    |m| / eps: its denominator is at least eps > 0, so it is never 0/0 either. The peak
    covers the numbers the lines turn into the parameter's dtype as well as the arrays
    they compute: ``step = lr / (1 - b1^t)`` (the update multiplies by it in that dtype,
    so a step beyond float32's range is Inf there however small m / denom is), eps through
    the denominator, and 1 / eps, which keeps eps a normal number of the dtype (never
    rounded to 0, nor far from itself); b1, 1 - b1, b2, 1 - b2 and bias2 lie in [0, 1].
    None for hyperparameters outside the ranges this assumes."""
    b1, b2 = group["betas"]
    lr, eps = group["lr"], group["eps"]
    if not (0 <= lr < math.inf and 0 < eps < math.inf and 0 <= b1 < 1 and 0 <= b2 < 1):
        return None             # False for NaN too
    t = state.get("t", 0) + 1
    m = b1 * moments.get("m", 0.0) + (1 - b1) * g
    square = g * g
    v = b2 * moments.get("v", 0.0) + (1 - b2) * square
    v_hat = v / (1 - b2 ** t)
    denom = math.sqrt(v_hat) + eps
    ratio = m / eps
    step = lr / (1 - b1 ** t)
    update = step * ratio
    return max(g, m, square, v, v_hat, denom, 1 / eps, ratio, step, update, w + update), \
        w + update, {"m": m, "v": v}


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019):
    w <- w - lr wd w, then the Adam step on the plain gradient."""

    def __init__(self, params: ParamsArg, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, *, exact_subnormals: bool = True):
        super().__init__(params, lr, betas, eps, weight_decay, exact_subnormals=exact_subnormals)

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        if group["weight_decay"]:
            w *= 1 - group["lr"] * group["weight_decay"]
        self.adam_update(w, g, state, group)

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None:
        """The decay (a factor of magnitude |1 - lr wd|, turned into the dtype), then
        Adam's bound."""
        if not 0 <= group["weight_decay"] < math.inf:
            return None
        factor = abs(1 - group["lr"] * group["weight_decay"])
        decayed = w * factor
        bound = adam_bound(group, state, decayed, g, moments)
        if bound is None:
            return None
        peak, w_after, after = bound
        return max(peak, w, factor), w_after, after


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012).

        v <- alpha v + (1 - alpha) g^2
        d <- sqrt(max(v - mean_g^2, 0)) + eps  (centered)  or  sqrt(v) + eps
        b <- mu b + g / d ;  w <- w - lr b     (momentum)   or   w <- w - lr g / d
    """

    STATE_KEYS = ("v", "mean_g", "momentum")
    # mean_g and momentum are made (zeros) at the first update that is centered or has
    # momentum: a state may lack them (those switched on during training, and saved before
    # an update); never v.
    STATE_TOGETHER = ("v",)

    def __init__(self, params: ParamsArg, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0,
                 *, exact_subnormals: bool = True):
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      centered=centered, weight_decay=weight_decay),
                         exact_subnormals=exact_subnormals)

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        _number("RMSprop", "alpha", group["alpha"], 0, 1)
        _number("RMSprop", "eps", group["eps"], 0, lo_open=True)
        _number("RMSprop", "momentum", group["momentum"], 0, 1, hi_open=True)
        if not isinstance(group["centered"], bool):
            raise ValueError(f"RMSprop: centered must be True or False, got {plain_repr(group['centered'])}")

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        alpha, momentum = group["alpha"], group["momentum"]
        g = _with_weight_decay(w, g, group["weight_decay"])
        if "v" not in state:
            state["v"] = np.zeros_like(w)
        v = state["v"]
        v *= alpha
        v += (1 - alpha) * (g * g)
        if group["centered"]:
            mean_g = state.setdefault("mean_g", np.zeros_like(w))
            mean_g *= alpha
            mean_g += (1 - alpha) * g
            # v - mean_g² is a variance, never negative, but with a steady gradient it
            # rounds below 0 (-1e-17 after a thousand steps): clamped, not a NaN weight
            denom = np.sqrt(np.maximum(v - mean_g * mean_g, 0))
        else:
            denom = np.sqrt(v)
        denom += group["eps"]
        if momentum:
            buf = state.setdefault("momentum", np.zeros_like(w))
            self.run_kernel(HEAVY_BALL, w, buf, g / denom, momentum, group["lr"])
        else:
            w -= group["lr"] * (g / denom)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011): s <- s + g^2;  w <- w - lr g / (sqrt(s) + eps)."""

    STATE_KEYS = STATE_TOGETHER = ("sum",)

    def __init__(self, params: ParamsArg, lr: float = 1e-2, eps: float = 1e-10,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay,
                                      initial_accumulator_value=initial_accumulator_value))

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        _number("Adagrad", "eps", group["eps"], 0, lo_open=True)
        _number("Adagrad", "initial_accumulator_value", group["initial_accumulator_value"])

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        g = _with_weight_decay(w, g, group["weight_decay"])
        s = state.setdefault("sum", np.full_like(w, group["initial_accumulator_value"]))
        s += g * g
        denom = np.sqrt(s)
        denom += group["eps"]
        w -= group["lr"] * (g / denom)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012).

        v <- rho v + (1 - rho) g^2
        d <- sqrt(u + eps) / sqrt(v + eps) * g
        u <- rho u + (1 - rho) d^2
        w <- w - lr d
    """

    STATE_KEYS = STATE_TOGETHER = ("v", "u")

    def __init__(self, params: ParamsArg, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def check_group(self, group: dict[str, Any]) -> None:
        super().check_group(group)
        _number("Adadelta", "rho", group["rho"], 0, 1)
        _number("Adadelta", "eps", group["eps"], 0, lo_open=True)

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any],
               group: dict[str, Any]) -> None:
        rho, eps = group["rho"], group["eps"]
        g = _with_weight_decay(w, g, group["weight_decay"])
        if "v" not in state:
            state["v"], state["u"] = np.zeros_like(w), np.zeros_like(w)
        v, u = state["v"], state["u"]
        v *= rho
        v += (1 - rho) * (g * g)
        delta = np.sqrt(u + eps) / np.sqrt(v + eps) * g
        u *= rho
        u += (1 - rho) * (delta * delta)
        w -= group["lr"] * delta


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
    "adadelta": Adadelta,
}


_F64_TINY = float(np.finfo(np.float64).tiny)


def clip_grad_norm_(params: Iterable[Tensor] | Module | Tensor, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.
    ``params`` is a Module, an iterable of parameters, or one parameter (as in PyTorch).
    Returns the norm before clipping."""
    _number("clip_grad_norm_", "max_norm", max_norm, 0, lo_open=True)
    tensors: Sequence[Tensor] = params.parameters() if isinstance(params, Module) else \
        [params] if isinstance(params, Tensor) else list(params)     # one tensor: not its rows
    grads = [p.grad for p in tensors if p.grad is not None]
    with np.errstate(over="ignore"):        # an overflow is measured again below
        square = sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)
    total = math.sqrt(square)
    # As nn.finite.l2_norm decides: a sum of squares beyond float64's range, or below its
    # smallest normal number (squares of elements below ~1e-154 round or flush to 0), is
    # measured again, each gradient on l2_norm's scaled path; one pass otherwise.
    if not (math.isfinite(square) and square >= _F64_TINY) and all(all_finite(g) for g in grads):
        total = math.hypot(*(l2_norm(g) for g in grads))
    scale = clip_scale(total, max_norm)
    if scale != 1.0:
        for g in grads:
            g *= scale
    return total


def clip_scale(total: float, max_norm: float) -> float:
    """The factor ``clip_grad_norm_`` scales gradients of global norm ``total`` by: 1 when
    ``total`` is at most ``max_norm``."""
    return max_norm / (total + 1e-6) if total > max_norm else 1.0


# --- learning-rate schedules -----------------------------------------------------------------

class LRScheduler:
    """Sets each parameter group's ``lr = lr_at(base, t)``, t being the number of ``step()``
    calls (once per epoch, or once per batch for per-step schedules) and ``base`` the
    group's learning rate when the schedule was made (a ``LinearWarmup``'s: its ``then``
    schedule's). ``lr_at`` is ``base * factor(t)`` unless a schedule needs the base itself
    (cosine annealing); it is affine in the base for every schedule here.

    A learning rate changed outside the schedule since it last set one (by hand,
    ``opt.lr = 1e-3``, or by another schedule of the same optimizer) is kept, as PyTorch's
    chainable schedules keep it: ``step`` first takes as that group's base the one whose
    ``lr_at`` at the current t is the rate it finds, then advances from there. Two schedules
    stepping one optimizer therefore multiply, as in PyTorch. Where the schedule cannot
    continue from the rate it finds (its ``lr_at`` does not depend on the base there, as a
    warm-up from 0 at its start, or the base would be negative) ``step`` raises instead.
    A step whose rate would not be a finite number >= 0 is refused, every group unchanged.

    As in PyTorch, the first schedule made on a group records its learning rate as
    ``group["initial_lr"]`` (a record: no schedule reads it). A subclass checks its own
    arguments before it calls ``LRScheduler.__init__``, so that a schedule refused leaves
    no ``initial_lr`` behind."""

    SETTINGS: tuple[str, ...] = ()     # the constructor's numbers, kept in ``state_dict``

    def __init__(self, optimizer: Optimizer, base_lrs: list[float] | None = None):
        name = type(self).__name__
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{name}: expected an Optimizer, got {type(optimizer).__name__}")
        groups = optimizer.param_groups
        for group in groups:            # checked before any group is given one
            if "initial_lr" in group:
                _number(name, "initial_lr", group["initial_lr"])
        for group in groups:
            group.setdefault("initial_lr", group["lr"])
        self.optimizer = optimizer
        self.base_lrs = [float(g["lr"]) for g in groups] if base_lrs is None else list(base_lrs)
        self.t = 0
        # The rate this schedule last set in (or found at its making in) each group: a
        # group whose rate differs at the next step was changed outside the schedule.
        self._set = [g["lr"] for g in groups]

    @property
    def base_lr(self) -> float:
        """The first group's base (``base_lrs[0]``): its rate when the schedule was made, or
        the one it continued from after a rate changed outside it (class docstring)."""
        return self.base_lrs[0]

    def factor(self, t: int) -> float:
        """The multiplier of the base learning rate after ``t`` steps: ``lr_at(base_lr, t) /
        base_lr`` (1 at t = 0 for schedules without warm-up)."""
        raise NotImplementedError

    def lr_at(self, base: float, t: int) -> float:
        """The learning rate after ``t`` steps of a group whose base learning rate is
        ``base``: ``base * factor(t)`` here; overridden by schedules that need ``base``."""
        return base * self.factor(t)

    def _check_groups(self) -> None:
        """A group added to the optimizer since has no base learning rate here: an error,
        never a group left off the schedule."""
        n = len(self.optimizer.param_groups)
        if n != len(self.base_lrs):
            raise ValueError(f"{type(self).__name__}: the optimizer has {n} parameter groups, "
                             f"the schedule was made for {len(self.base_lrs)} (a group added "
                             f"since); make the schedule after add_param_group")

    def _apply(self) -> None:
        """Every group's rate to ``lr_at(its base, t)``, each checked first (a ``gamma``
        of 10 overflows in time): finite and >= 0, or a ValueError and no group changed."""
        self._check_groups()
        rates = [self._rate(base, self.t) for base in self.base_lrs]
        for i, rate in enumerate(rates):
            if not (math.isfinite(rate) and rate >= 0):
                raise ValueError(f"{type(self).__name__}: the learning rate of parameter group "
                                 f"{i} at step {self.t} would be {plain_repr(rate)} (base "
                                 f"{plain_repr(self.base_lrs[i])}); a learning rate must be "
                                 f"finite and >= 0")
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        self._set = rates

    def _rate(self, base: float, t: int) -> float:
        """``lr_at(base, t)``, inf where it overflows (``gamma ** t`` raises OverflowError)."""
        try:
            return self.lr_at(base, t)
        except OverflowError:
            return math.inf

    def _take_changed_rates(self) -> list[float]:
        """The bases ``step`` continues from: for a group whose rate was changed outside the
        schedule since it last set one, the base whose ``lr_at`` at the current t is that
        rate (class docstring); the others' unchanged."""
        bases = list(self.base_lrs)
        for i, (group, mine) in enumerate(zip(self.optimizer.param_groups, self._set, strict=True)):
            found = group["lr"]
            if found == mine:
                continue
            offset = self._rate(0.0, self.t)
            slope = self._rate(1.0, self.t) - offset
            base = (found - offset) / slope if slope > 0 else math.nan
            # lr_at is affine in the base for every schedule here; a subclass's that is not
            # fails the round trip, and gets the error rather than a wrong base (as does a
            # rate that overflows here: no base to continue from).
            if not (math.isfinite(base) and base >= 0 and
                    math.isclose(self._rate(base, self.t), found, rel_tol=1e-9, abs_tol=1e-300)):
                raise ValueError(
                    f"{type(self).__name__}.step: the learning rate of parameter group {i} is "
                    f"{plain_repr(found)}, not the {plain_repr(mine)} this schedule set (it was "
                    f"changed by hand or by another schedule), and at step {self.t} this "
                    f"schedule cannot continue from it (its rate there is {plain_repr(offset)} "
                    f"+ {plain_repr(slope)} x base); make a new schedule after changing the rate")
            bases[i] = base
        return bases

    def step(self) -> float:
        """Advance the schedule one step (``t += 1``), set every group's learning rate to
        ``lr_at(its base, t)`` and return the first group's (a rate changed outside the
        schedule first becomes the base it continues from: class docstring)."""
        self._check_groups()
        bases, kept = self._take_changed_rates(), self.base_lrs
        self.base_lrs = bases
        self.t += 1
        try:
            self._apply()
        except ValueError:
            self.t -= 1
            self.base_lrs = kept
            raise
        return self.optimizer.lr

    def get_lr(self) -> float:
        """The first group's current learning rate (``optimizer.lr``), as set by the last
        ``step``."""
        return self.optimizer.lr

    def settings(self) -> dict[str, Any]:
        """The numbers the schedule was made with (``StepLR``: step_size, gamma), by name."""
        return {key: getattr(self, key) for key in self.SETTINGS}

    def state_dict(self) -> dict[str, Any]:
        """What ``load_state_dict`` needs to continue the schedule: its type name, the step
        count ``t``, the base learning rates, its ``settings()``, and each group's rate now
        and the one the schedule last set (``lrs``, ``set``: a rate changed by hand since
        differs, and the next step continues from it) (JSON-serialisable)."""
        return {"type": type(self).__name__, "t": self.t, "base_lrs": list(self.base_lrs),
                "settings": self.settings(),
                "lrs": [float(g["lr"]) for g in self.optimizer.param_groups],
                "set": [float(r) for r in self._set]}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Continue the schedule where ``state_dict()`` left it (checked first). The state
        of a schedule made with other settings is refused (PyTorch would take the saved
        ones over; here the schedule is made with them): a StepLR(10, 0.5) continued as
        StepLR(3, 0.1) would follow another learning rate from its first step. Each group
        gets the rate it had when the state was saved, and the schedule the rates it had set
        then, whether the optimizer's state is loaded before or after: a rate changed by
        hand before the save is kept, and continued from, as in the run that saved it. A
        state without settings (handgrad 0.3) is taken as it was then, and one without the
        rates gives the groups the schedule's own."""
        name = type(self).__name__
        self._check_groups()
        if not isinstance(d, dict) or d.get("type") != name:
            raise ValueError(f"{name}.load_state_dict: the state is for "
                             f"{plain_repr(d.get('type') if isinstance(d, dict) else d)}")
        t, bases = d.get("t"), d.get("base_lrs")
        if isinstance(t, bool) or not isinstance(t, int) or t < 0 or not isinstance(bases, list) \
                or len(bases) != len(self.base_lrs):
            raise ValueError(f"{name}.load_state_dict: malformed state {plain_repr(d)}")
        for b in bases:
            _number(name, "base lr", b)
        saved = d.get("settings")
        if saved is not None and saved != self.settings():
            raise ValueError(f"{name}.load_state_dict: the state is of a schedule made with "
                             f"{plain_repr(saved)}, this one has {plain_repr(self.settings())}; "
                             f"make the schedule with the saved settings")
        rates = [d.get(key) for key in ("lrs", "set")]
        for found in rates:
            if found is not None and (not isinstance(found, list) or len(found) != len(bases)):
                raise ValueError(f"{name}.load_state_dict: malformed state {plain_repr(d)}")
            for r in found or ():
                _number(name, "learning rate", r)
        self.t, self.base_lrs = t, [float(b) for b in bases]
        lrs, set_ = rates
        if lrs is None or set_ is None:
            self._apply()
            return
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = float(lr)
        self._set = [float(r) for r in set_]


def _base_factor(schedule: LRScheduler, t: int) -> float:
    """``factor`` of a schedule whose ``lr_at`` needs the base: its first group's rate
    over its base, which a base of 0 leaves undefined (a ValueError, not a division by 0)."""
    base = schedule.base_lr
    if base == 0:
        raise ValueError(f"{type(schedule).__name__}.factor: the base learning rate is 0, and "
                         f"this schedule's rate is not a multiple of its base; use lr_at(base, t)")
    return schedule.lr_at(base, t) / base


class StepLR(LRScheduler):
    """lr = base * gamma ** (t // step_size)."""

    SETTINGS = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        self.step_size = _positive_int("StepLR", "step_size", step_size)
        self.gamma = _number("StepLR", "gamma", gamma, 0, lo_open=True)
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base * gamma ** t."""

    SETTINGS = ("gamma",)

    def __init__(self, optimizer: Optimizer, gamma: float):
        self.gamma = _number("ExponentialLR", "gamma", gamma, 0, lo_open=True)
        super().__init__(optimizer)

    def factor(self, t: int) -> float:
        return self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2, constant after T_max."""

    SETTINGS = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        self.T_max = _positive_int("CosineAnnealingLR", "T_max", T_max)
        self.eta_min = _number("CosineAnnealingLR", "eta_min", eta_min)
        super().__init__(optimizer)

    def lr_at(self, base: float, t: int) -> float:
        t = min(t, self.T_max)
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2

    def factor(self, t: int) -> float:
        return _base_factor(self, t)


class LinearWarmup(LRScheduler):
    """lr rises linearly from start_factor * base to base over ``warmup_steps`` steps, then
    follows ``then`` (another schedule on the same optimizer, counted from the end of the
    warm-up) or stays at base."""

    SETTINGS = ("warmup_steps", "start_factor")

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.1,
                 then: LRScheduler | None = None):
        self.warmup_steps = _positive_int("LinearWarmup", "warmup_steps", warmup_steps)
        self.start_factor = _number("LinearWarmup", "start_factor", start_factor, 0, 1)
        if then is not None and not isinstance(then, LRScheduler):
            raise TypeError(f"LinearWarmup: then must be a schedule (an nn.optim LRScheduler) "
                            f"or None, got {plain_repr(then)}")
        if then is not None and then.optimizer is not optimizer:
            raise ValueError("LinearWarmup: `then` must schedule the same optimizer")
        self.then = then
        # ``then`` was made first, on the rates this warm-up rises to: its bases are ours.
        super().__init__(optimizer, None if then is None else then.base_lrs)
        self._apply()

    def lr_at(self, base: float, t: int) -> float:
        if t < self.warmup_steps:
            return base * (self.start_factor + (1 - self.start_factor) * t / self.warmup_steps)
        return self.then.lr_at(base, t - self.warmup_steps) if self.then is not None else base

    def factor(self, t: int) -> float:
        return _base_factor(self, t)

    def settings(self) -> dict[str, Any]:
        """Its own numbers, and the ``then`` schedule's type and settings (or None)."""
        then = None if self.then is None else {"type": type(self.then).__name__,
                                               **self.then.settings()}
        return {**super().settings(), "then": then}
