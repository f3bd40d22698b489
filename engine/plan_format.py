"""The plan format: the instructions ``engine.capture`` records and a replay runs.

A plan (``capture.Plan``) is a program over numbered slots, each holding one array: the
plan's inputs, the outside tensors it reads, constants, then one slot per op output. Its
forward pass is a list of ``ForwardInstruction`` (one op application each) and
``ValueInstruction`` (a value made without an op: a comparison, a detach); its backward
pass, the walk the capture recorded, a list of ``BackwardInstruction`` (one backward rule
call) and ``LeafGradient`` (a leaf's gradient is final). ``engine/replay.py`` writes these
records out twice: as the Python code a replay runs, and as the listing ``Plan.source()``
shows.

The rules of a replayed op run with a ``ReplayContext``: the op's parameters, its inputs'
shapes and dtypes, which inputs need a gradient, and what its forward saved. It implements
the same ``op.RuleContext`` protocol as the graph's ``Node``, without the graph (and without
memory to protect: ``save_input`` and ``save_output`` keep their arrays as ``save`` does).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .op import InputSpec, Op


@dataclass(frozen=True, slots=True)
class ArraySpec:
    """An input as a replayed rule sees it in ``ctx.inputs``: shape and dtype, no values."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @classmethod
    def of(cls, array: np.ndarray) -> "ArraySpec":
        return cls(array.shape, array.dtype)


class ReplayContext:
    """The rule context (``op.RuleContext``) of one op application outside the graph: a
    plan keeps one per op, which its forward rule saves into and its backward rule reads
    from at every replay; a linear op's JVP re-runs its forward with a fresh one."""

    __slots__ = ("inputs", "params", "needs_input_grad", "saved")

    def __init__(self, inputs: Sequence["InputSpec"], params: Mapping[str, Any],
                 needs_input_grad: tuple[bool, ...]):
        self.inputs = inputs
        self.params = params
        self.needs_input_grad = needs_input_grad
        self.saved: Any = ()

    def save(self, *values: Any) -> None:
        """Keep ``values`` for the backward rule, after what was saved before (the replay
        empties ``saved`` before the forward rule runs and after the backward rule ran)."""
        self.saved = self.saved + values if self.saved else values

    def save_input(self, *arrays: np.ndarray) -> None:
        """Keep input arrays of the forward. A replay protects no memory (it holds no
        tensors), so this is ``save``."""
        self.saved = self.saved + arrays if self.saved else arrays

    def save_output(self, array: np.ndarray) -> None:
        """Keep the array the forward returns; as ``save`` in a replay."""
        self.saved = self.saved + (array,) if self.saved else (array,)

    def __repr__(self) -> str:
        shapes = ", ".join(str(x.shape) for x in self.inputs)
        return f"<replay context ({shapes})>"


@dataclass(frozen=True, slots=True)
class ForwardInstruction:
    """``slot[output] = op(*slot[inputs], **context.params)``: the op's forward rule with
    ``context`` (emptied first: saves add to it); first, if ``validate``, the op's value
    validation (``Op.validate``)."""

    op: "Op"
    context: ReplayContext
    inputs: tuple[int, ...]
    output: int
    validate: bool


@dataclass(frozen=True, slots=True)
class ValueInstruction:
    """``slot[output] = function(*slot[inputs])``: a value made without an op, which carries
    no gradient (a comparison such as ``h > 0``, ``detach()``): no rule and no context,
    replayed as the same numpy call on the new arrays. ``name`` names the function in the
    generated code; ``text`` is the listing's right-hand side, with ``{0}``, ``{1}``
    standing for the inputs."""

    function: Callable[..., Any]
    name: str
    inputs: tuple[int, ...]
    output: int
    text: str


Instruction = Union[ForwardInstruction, ValueInstruction]
"""One step of the forward program."""


@dataclass(frozen=True, slots=True)
class GradientTarget:
    """Where one input's gradient goes: summed into the gradient of ``slot``, cast to
    ``dtype`` (the input's)."""

    slot: int
    dtype: np.dtype


@dataclass(frozen=True, slots=True)
class BackwardInstruction:
    """The gradient of ``slot`` is complete: run ``op``'s backward rule with ``context``
    on it and sum what it returns for input i into ``targets[i]`` (None: no gradient
    flows to that input). The context's saved values are released after."""

    op: "Op"
    context: ReplayContext
    slot: int
    targets: tuple[GradientTarget | None, ...]


@dataclass(frozen=True, slots=True)
class LeafGradient:
    """The gradient of ``slot`` is final: hand it over as the gradient of the plan's
    ``leaves[leaf]`` (an outside tensor that requires grad)."""

    slot: int
    leaf: int


BackwardStep = Union[BackwardInstruction, LeafGradient]
"""One step of the recorded backward walk."""
