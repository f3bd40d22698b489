"""Proving that an optimizer's update cannot overflow, so that its check needs no copy.

With ``optimizer.check_finite`` (on during ``fit``) an update that would leave a weight NaN
or Inf is undone exactly, which needs the values from before it: the checked step copies
each parameter, updates it and checks it (``Optimizer._checked_update``), about 4% of a
big-MLP epoch. But most updates provably cannot overflow, and a few numbers prove it:

- ``w``, a bound on the largest |weight|: measured by the dot product that checked an
  update, then carried from step to step (below). It is trusted only while
  ``engine.write_stamp`` says nothing else can have written the weights since.
- ``g``, a bound on the largest |gradient element|, from the caller's gradient check
  (``nn.step.Step``: the same dot products, no extra pass).
- one bound per moment buffer (momentum, Adam's m and v), carried from step to step by the
  update rule, and measured afresh after every checked update.

An optimizer whose rule is known gives ``update_bound(group, state, w, g, moments)``: the
largest magnitude any value computed by the update can reach (``peak``: the arrays it
computes and the numbers it turns into the parameter's dtype, such as Adam's
``lr / (1 - b1^t)``, which overflows float32 on its own for lr = 1e40), and the bounds
after it. All its operations are elementwise, so bounds on the largest element compose by
the triangle inequality. When ``peak`` is below 1/64 of the dtype's largest number (each
operation rounds by a factor of at most 1 + 2^-24, and an update has a handful), no element
can overflow and none can be NaN (no 0/0: every division is by at least ``eps`` > 0; no
Inf to multiply by 0): the update runs with no copy and no check. Otherwise (the first step,
weights written from outside, a learning rate of 1e30, an optimizer without a bound, a
subclass with its own update) it is copied and checked as before.

The parameters of a group are proven together, with one ``update_bound`` on the largest of
their bounds: a bound is made of sums and products of magnitudes, so it grows with each
bound it is given, and what bounds the largest bounds every member. A member whose bounds
are stale is checked alone.

The common case takes one comparison: when the last step proved every member of a group
and ``engine.global_write_stamp()`` is what it was at the end of that step (no memory was
written, handed out or replaced since, anywhere), each member's write stamp is as that
step left it, and the group's bounds are the ones it carried. What remains to check per
member is that its state holds the very values the step left (the moment arrays, Adam's
step count) and that its gradient was bounded.

The moment arrays are the optimizer's own, but ``optimizer.state`` gives them to the user,
who may write them in place. So reading ``state`` hands them out (``handed_out``): the next
checked step drops every carried bound and measures again, and while anything outside the
optimizer still references the state (``state_held_outside``) every step is checked. A
replaced array (``load_state_dict``, or assigned by hand) is not the one a bound was taken
for, so it is measured again too.
"""
from __future__ import annotations

import functools
import itertools
import math
import operator
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from handgrad import engine

from .finite import square_norm

HEADROOM = 64.0     # a proven update's values stay below finfo(dtype).max / HEADROOM
GROWTH = 1 + 2.0 ** -20   # rounding of a carried bound: above (1 + u)^8 for float32 and float64
# For each dtype proofs are made for: (the largest value allowed, the unit roundoff u).
LIMITS = {np.dtype(t): (float(np.finfo(t).max) / HEADROOM, float(np.finfo(t).eps) / 2)
          for t in (np.float32, np.float64)}


def max_bound(norm: float, size: int, dtype: np.dtype) -> float | None:
    """A bound on the largest |element| of a real array whose dot product with itself came
    out as ``norm``, or None. A float dot product of n terms is within a factor
    1 ± n·u/(1 - n·u) of the true sum (u: unit roundoff), at most 1/3 for n·u ≤ 1/4, so the
    true sum is below twice the computed one; ``+ 1`` covers squares that underflowed to 0
    (of elements below 1)."""
    limits = LIMITS.get(dtype)
    if limits is None or not math.isfinite(norm) or size * limits[1] > 0.25:
        return None
    return math.sqrt(2.0 * norm) + 1.0


def measure(a: np.ndarray) -> float | None:
    """``max_bound`` of an array, with its own dot product (after a checked update)."""
    return max_bound(square_norm(a), a.size, a.dtype)


class Bounded(Protocol):
    """An optimizer as seen here (nn/optim.py ``Optimizer.update_bound``)."""

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None: ...


@dataclass
class ParamBounds:
    """What is proven about one parameter after its last update."""

    stamp: Any                  # engine.write_stamp(p) then
    w: float                    # ≥ the largest |weight|
    arrays: dict[str, np.ndarray] = field(default_factory=dict)   # state key -> its moment array then
    bounds: dict[str, float] = field(default_factory=dict)        # state key -> ≥ its largest |element|

    @property
    def moments(self) -> dict[str, tuple[np.ndarray, float]]:
        """State key -> (its array then, ≥ its largest |element|)."""
        return {key: (array, self.bounds[key]) for key, array in self.arrays.items()}


@dataclass
class GroupBounds:
    """A group whose every member the last step proved: the bounds it carried for all of
    them (the same for each), and what must be unchanged for them to hold now. After a step
    proven by the one comparison only this is brought up to date; the members' own
    ``ParamBounds`` are written from it when needed (``pending``)."""

    ids: tuple[int, ...]        # id of each member, in order
    values: list[Any]           # every value of the members' states after that step
    known: list[ParamBounds]    # each member's bounds
    w: float
    bounds: dict[str, float]
    limit: float                # the smallest of the members' dtype limits
    arrays_only: bool           # the states hold arrays alone: an update leaves ``values``
    pending: Any = None         # global write stamp after the steps the members' bounds lag behind

    def write_back(self) -> None:
        """Give each member's ParamBounds the group's bounds and its write stamp after
        those steps: the one it had, moved past their writes, and nothing else (the global
        stamp was unchanged between them)."""
        if self.pending is not None:
            for known in self.known:
                known.stamp = engine.write_stamp_after(known.stamp, self.pending)
                known.w, known.bounds = self.w, self.bounds
            self.pending = None


@functools.cache
def _defined_in_optim(cls: type) -> bool:
    """Whether the update and its bound are both the built-in ones (a subclass that changes
    ``update``, ``adam_update`` or ``run_kernel`` has a rule no bound was written for)."""
    names = ("update", "adam_update", "run_kernel", "update_bound")
    owners = [next((c for c in cls.__mro__ if n in c.__dict__), None) for n in names]
    return all(c is None or c.__module__ == __name__.rsplit(".", 1)[0] + ".optim" for c in owners)


def _same_layout(state: dict[str, Any], reference: dict[str, Any], known: ParamBounds) -> bool:
    """Whether ``known`` still describes ``state`` (each moment array is the very one its
    bound was taken for) and ``state`` has the reference state's entries: the same moment
    keys, the same other values (Adam's step count)."""
    if len(state) != len(reference):
        return False
    arrays = 0
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            if known.arrays.get(key) is not value or not isinstance(reference.get(key), np.ndarray):
                return False
            arrays += 1
        elif key not in reference or reference[key] != value:
            return False
    return arrays == len(known.arrays)


def _state_values(states: dict[int, dict[str, Any]], ids: tuple[int, ...]) -> list[Any]:
    """Every value of the states of the parameters ``ids``, in order (through ``map``: it
    runs at every step)."""
    return list(itertools.chain.from_iterable(map(dict.values, map(states.__getitem__, ids))))


def _covers(bounds: dict[str, float], state: dict[str, Any]) -> bool:
    """Whether ``bounds`` bound every moment array of ``state`` (SGD with its momentum set
    to 0 for a step carries no bound on the buffer it keeps)."""
    return all(key in bounds for key, value in state.items() if isinstance(value, np.ndarray))


def _others(one: tuple[Any]) -> int:
    """How many references the object in the one-tuple ``one`` has besides that tuple."""
    return sys.getrefcount(one[0]) - _ONE


_ONE = 0
_ONE = _others((object(),))           # the tuple's and the call's own references


def state_held_outside(states: dict[int, dict[str, Any]], probe: object) -> bool:
    """Whether anything besides the optimizer references its dict of ``states``, a
    parameter's state, or a moment array (a view of one references it too), or a moment
    array is a view of memory someone else owns. ``probe``, an object held by one local
    variable of the caller, as ``states`` is, came here the same way: whatever references the
    call itself adds (they differ between Python versions) are in both counts, and
    ``states`` has one more of its own, the optimizer's attribute."""
    if _others((states,)) - _others((probe,)) > 1:
        return True
    for state in states.values():         # referenced by the dict of states and ``state``
        if _others((state,)) > 2:
            return True
        for value in state.values():      # by the parameter's state and ``value``
            if isinstance(value, np.ndarray) and (value.base is not None or _others((value,)) > 2):
                return True
    return False


Proof = Optional[tuple[Optional[ParamBounds], float, dict[str, float]]]
# (the member's bounds, or None when its group was proven at once; w after; moments after)


class UpdateBounds:
    """The bounds an optimizer carries between checked steps (a cache, not state)."""

    def __init__(self) -> None:
        self.params: dict[int, ParamBounds] = {}
        self.groups: dict[int, GroupBounds] = {}    # by id of the param group
        self.stamp: Any = None      # engine.global_write_stamp() at the end of the last step
        self.handed_out = False  # optimizer.state was read since the last step that checked it
        self.proven = 0         # updates run with no copy and no check (for tests, benchmarks)
        self.at_once = 0        # of which proven by the one comparison (the module docstring)
        # parameters measured by this step's checked updates, whose write stamps settle takes
        # (the step's writes are stamped again when they end, after measured ran)
        self.measured_now: list[Any] = []

    def clear(self) -> None:
        self.params.clear()
        self.groups.clear()
        self.measured_now.clear()
        self.stamp = None

    def prove(self, opt: Bounded, groups: list[tuple[dict[str, Any], list[Any]]],
              states: dict[int, dict[str, Any]], grad_bounds: dict[int, float]) -> list[Proof]:
        """For each parameter of the coming step (``groups``: each parameter group with its
        members that have a gradient), the bounds after its update when that update
        provably stays finite, else None (``settle`` keeps them afterwards). Each group is
        proven at once."""
        quiet = self.stamp is not None and self.stamp == engine.global_write_stamp()
        self.stamp = None               # until settle: a step that fails leaves nothing trusted
        self.measured_now.clear()       # (nor the stamps its measured bounds were taken with)
        if not self.params or not grad_bounds or not _defined_in_optim(type(opt)):
            return [None] * sum(len(members) for _, members in groups)
        proofs: list[Proof] = []
        for group, members in groups:
            cell = self.groups.get(id(group))
            fast = None if cell is None or not quiet else \
                self._prove_unchanged(opt, cell, group, members, states, grad_bounds)
            if fast is None:
                if cell is not None:
                    cell.write_back()
                fast = self._prove_group(opt, group, members, states, grad_bounds)
            proofs += fast
        return proofs

    def known(self, p: Any) -> ParamBounds | None:
        """What is proven about ``p`` now, its bounds brought up to date (for tests)."""
        for cell in self.groups.values():
            cell.write_back()
        return self.params.get(id(p))

    def _prove_unchanged(self, opt: Bounded, cell: GroupBounds, group: dict[str, Any], members: list[Any],
                         states: dict[int, dict[str, Any]], grad_bounds: dict[int, float]) -> list[Proof] | None:
        """The group's proof when nothing was written since the last step proved it all
        (the caller compared the global write stamp): the same members, their states
        holding the very values that step left, every gradient bounded. None otherwise.
        (The loops are ``map``s: this runs at every step, and they keep it to a few µs.)"""
        ids = tuple(map(id, members))
        if ids != cell.ids:
            return None
        values = _state_values(states, ids)
        if len(values) != len(cell.values) or not all(map(operator.is_, values, cell.values)):
            return None
        gradients = list(map(grad_bounds.get, ids))
        if None in gradients:
            return None
        g: float = max(gradients)  # type: ignore[type-var, assignment]   # no None left
        result = self._bound(opt, group, states[ids[0]], cell.w, g, cell.bounds, cell.limit)
        if result is None:
            return None
        self.at_once += len(ids)
        return [(None, *result)] * len(ids)

    def _prove_group(self, opt: Bounded, group: dict[str, Any], members: list[Any],
                     states: dict[int, dict[str, Any]], grad_bounds: dict[int, float]) -> list[Proof]:
        """One ``update_bound`` for the parameters of one group whose bounds are still
        good: on the largest weight, gradient and moment bounds among them. A bound is a
        sum of products of magnitudes, so it grows with each of them: what bounds the
        update of the largest bounds every member's. Members whose bounds are stale, or
        whose other state (Adam's step count) differs from the first one's, get None."""
        proofs: list[Proof] = [None] * len(members)
        chosen: list[tuple[int, ParamBounds]] = []
        reference: dict[str, Any] | None = None
        w = g = 0.0
        moments: dict[str, float] = {}
        limit = math.inf
        for k, p in enumerate(members):
            known = self.params.get(id(p))
            grad_bound = grad_bounds.get(id(p))
            if known is None or grad_bound is None:
                continue
            stamp = engine.write_stamp(p)
            if stamp is None or stamp != known.stamp:     # None: writes could go unseen
                continue
            state = states[id(p)]
            if not _same_layout(state, state if reference is None else reference, known):
                continue
            if reference is None:
                reference = state
            chosen.append((k, known))
            w = max(w, known.w)
            g = max(g, grad_bound)
            for key, moment in known.bounds.items():
                moments[key] = max(moment, moments.get(key, 0.0))
            limit = min(limit, LIMITS[p.dtype][0])
        if reference is None:
            return proofs
        result = self._bound(opt, group, reference, w, g, moments, limit)
        if result is not None:
            for k, known in chosen:
                proofs[k] = (known, *result)
        return proofs

    @staticmethod
    def _bound(opt: Bounded, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
               moments: dict[str, float], limit: float) -> tuple[float, dict[str, float]] | None:
        """The optimizer's ``update_bound`` on these bounds: the bounds after the update
        (widened by ``GROWTH`` for their own rounding), or None unless its peak stays
        below ``limit``."""
        bound = opt.update_bound(group, state, w, g, moments)
        if bound is None:
            return None
        peak, w_after, after = bound
        if not peak < limit:                     # also False for NaN and Inf
            return None
        return w_after * GROWTH, {key: v * GROWTH for key, v in after.items()}

    def settle(self, groups: list[tuple[dict[str, Any], list[Any]]], proofs: list[Proof],
               states: dict[int, dict[str, Any]]) -> None:
        """After the step's updates (``groups`` and ``proofs`` as ``prove`` had them): each
        proven parameter keeps the bounds its proof gave and its new write stamp; each one
        measured by a checked update its new write stamp too (the step's writes were
        stamped again when they ended, after ``measured``); a group proven whole is kept
        for the one-comparison proof next time; and the global write stamp is taken, after
        every write of the step."""
        for p in self.measured_now:
            known = self.params.get(id(p))
            if known is not None:
                known.stamp = engine.write_stamp(p)
        self.measured_now.clear()
        cells, self.groups = self.groups, {}
        pending: list[GroupBounds] = []
        start = 0
        for group, members in groups:
            mine = proofs[start:start + len(members)]
            start += len(members)
            if not members:
                continue
            first = mine[0]
            covered = first is not None and _covers(first[2], states[id(members[0])])
            if first is not None and first[0] is None:       # proven at once: all of them
                self.proven += len(members)
                if covered:     # else the members' bounds lag behind, stale: checked next time
                    cell = self.groups[id(group)] = cells[id(group)]
                    cell.w, cell.bounds = first[1], first[2]
                    if not cell.arrays_only:     # Adam's step count: a new number each step
                        cell.values = _state_values(states, cell.ids)
                    pending.append(cell)
                continue
            known_list = []
            for p, proof in zip(members, mine, strict=True):
                if proof is not None:
                    known, w, after = proof
                    assert known is not None
                    known.stamp = engine.write_stamp(p)       # this update's own write
                    known.w, known.bounds = w, after          # one dict shared by the group
                    known.arrays = {k: states[id(p)][k] for k in after}
                    known_list.append(known)
            self.proven += len(known_list)
            if covered and len(known_list) == len(members):
                assert first is not None
                ids = tuple(map(id, members))
                values = _state_values(states, ids)
                self.groups[id(group)] = GroupBounds(
                    ids, values, known_list, first[1], first[2],
                    min(LIMITS[p.dtype][0] for p in members),
                    all(isinstance(value, np.ndarray) for value in values))
        self.stamp = engine.global_write_stamp()
        for cell in pending:
            cell.pending = self.stamp

    def measured(self, p: Any, state: dict[str, Any], w_square_norm: float) -> None:
        """After a checked update: the weight bound from its check's dot product, the
        moments measured."""
        w = max_bound(w_square_norm, p.size, p.dtype)
        if w is None:
            self.params.pop(id(p), None)
            return
        arrays, bounds = {}, {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                b = measure(value)
                if b is None:
                    self.params.pop(id(p), None)
                    return
                arrays[key], bounds[key] = value, b
        self.params[id(p)] = ParamBounds(engine.write_stamp(p), w, arrays, bounds)
        self.measured_now.append(p)
