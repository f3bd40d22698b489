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
largest magnitude any value computed by the update can reach (``peak``), and the bounds
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

What this trusts, besides the arithmetic: the optimizer's state arrays are written only by
the optimizer (``load_state_dict`` replaces them, and a replaced array has no bound).
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from handgrad import engine

from .finite import square_norm_raw

HEADROOM = 64.0     # a proven update's values stay below finfo(dtype).max / HEADROOM
GROWTH = 1 + 2.0 ** -20   # rounding of a carried bound: above (1 + u)^8 for float32 and float64
# For each dtype proofs are made for: (the largest value allowed, the unit roundoff u).
LIMITS = {np.dtype(t): (float(np.finfo(t).max) / HEADROOM, float(np.finfo(t).eps) / 2)
          for t in (np.float32, np.float64)}


def max_bound(square_norm: float, size: int, dtype: np.dtype) -> float | None:
    """A bound on the largest |element| of a real array whose dot product with itself came
    out as ``square_norm``, or None. A float dot product of n terms is within a factor
    1 ± n·u/(1 - n·u) of the true sum (u: unit roundoff), at most 1/3 for n·u ≤ 1/4, so the
    true sum is below twice the computed one; ``+ 1`` covers squares that underflowed to 0
    (of elements below 1)."""
    limits = LIMITS.get(dtype)
    if limits is None or not math.isfinite(square_norm) or size * limits[1] > 0.25:
        return None
    return math.sqrt(2.0 * square_norm) + 1.0


def measure(a: np.ndarray) -> float | None:
    """``max_bound`` of an array, with its own dot product (after a checked update)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return max_bound(square_norm_raw(a), a.size, a.dtype)


class Bounded(Protocol):
    """An optimizer as seen here (nn/optim.py ``Optimizer.update_bound``)."""

    def update_bound(self, group: dict[str, Any], state: dict[str, Any], w: float, g: float,
                     moments: dict[str, float]) -> tuple[float, float, dict[str, float]] | None: ...


@dataclass
class ParamBounds:
    """What is proven about one parameter after its last update."""

    stamp: Any                  # engine.write_stamp(p) then
    w: float                    # ≥ the largest |weight|
    moments: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    # state key -> (its array then, ≥ its largest |element|)


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
            kept = known.moments.get(key)
            if kept is None or kept[0] is not value or not isinstance(reference.get(key), np.ndarray):
                return False
            arrays += 1
        elif key not in reference or reference[key] != value:
            return False
    return arrays == len(known.moments)


Proof = Optional[tuple[ParamBounds, float, dict[str, float]]]   # bounds, w after, moments after


class UpdateBounds:
    """The bounds an optimizer carries between checked steps (a cache, not state)."""

    def __init__(self) -> None:
        self.params: dict[int, ParamBounds] = {}
        self.proven = 0         # updates run with no copy and no check (for tests, benchmarks)

    def clear(self) -> None:
        self.params.clear()

    def prove(self, opt: Bounded, todo: list[tuple[Any, dict[str, Any]]],
              states: dict[int, dict[str, Any]], grad_bounds: dict[int, float]) -> list[Proof]:
        """For each (parameter, group) of the coming step, the bounds after its update when
        that update provably stays finite, else None (``carry`` keeps them afterwards).
        ``todo`` lists the parameters group by group; each group is proven at once."""
        if not self.params or not grad_bounds or not _defined_in_optim(type(opt)):
            return [None] * len(todo)
        proofs: list[Proof] = []
        for _, members in itertools.groupby(todo, key=lambda entry: id(entry[1])):
            proofs += self._prove_group(opt, list(members), states, grad_bounds)
        return proofs

    def _prove_group(self, opt: Bounded, members: list[tuple[Any, dict[str, Any]]],
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
        for k, (p, _) in enumerate(members):
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
            if known.w > w:
                w = known.w
            if grad_bound > g:
                g = grad_bound
            for key, (_, moment) in known.moments.items():
                if moment > moments.get(key, 0.0):
                    moments[key] = moment
            top = LIMITS[p.dtype][0]
            if top < limit:
                limit = top
        if reference is None or not chosen:
            return proofs
        bound = opt.update_bound(members[0][1], reference, w, g, moments)
        if bound is None:
            return proofs
        peak, w_after, after = bound
        if not peak < limit:                     # also False for NaN and Inf
            return proofs
        w_after *= GROWTH
        after = {key: v * GROWTH for key, v in after.items()}
        for k, known in chosen:
            proofs[k] = (known, w_after, after)
        return proofs

    def carry(self, p: Any, state: dict[str, Any], proof: Proof) -> None:
        """After a proven update: the bounds its proof gave."""
        assert proof is not None
        known, w, after = proof
        known.w = w
        known.stamp = engine.write_stamp(p)      # this update's own write
        known.moments = {k: (state[k], v) for k, v in after.items()}
        self.proven += 1

    def measured(self, p: Any, state: dict[str, Any], w_square_norm: float) -> None:
        """After a checked update: the weight bound from its check's dot product, the
        moments measured."""
        w = max_bound(w_square_norm, p.size, p.dtype)
        if w is None:
            self.params.pop(id(p), None)
            return
        moments = {}
        for key, value in state.items():
            if isinstance(value, np.ndarray):
                b = measure(value)
                if b is None:
                    self.params.pop(id(p), None)
                    return
                moments[key] = (value, b)
        self.params[id(p)] = ParamBounds(engine.write_stamp(p), w, moments)
