"""Capture a computation once, replay it as a plan: the same rules, none of the bookkeeping.

``plan = engine.capture(fn, *example_inputs)`` runs ``fn`` once, eagerly, on tensors made
from the examples, while a tape records every op it applies. If ``fn``'s first output is a
scalar that requires grad, the capture also runs its backward pass with the engine's one
walker (``graph.backward_steps``) and records the order of that walk: which rule ran when,
and in which order the gradients flowing into each tensor were summed.

``plan(*arrays)`` then replays that program on new arrays of the same shapes and dtypes:
each op's own ``forward`` and ``backward`` rules are called in the recorded order, on plain
arrays held in numbered slots, by Python code written out once at the end of the capture
(``engine/replay.py``; ``plan.code()`` shows it). There are no Tensor or Node objects, no
topological sort, no signature binding, no interpreting of an instruction list, and no
checks that the capture already proved (shapes, dtypes, each gradient's shape). Because it
is the same rules on the same arrays in the same order, a replay computes exactly the numbers
the eager run computes, bit for bit.

What a plan can and cannot follow:

* Its inputs are the arrays passed to it. Tensors that ``fn`` reads from outside
  (parameters, fixed tensors) are read live at every replay: in-place updates of their
  values are seen; a change of shape or dtype is an error, and so is a change of
  ``requires_grad`` in a plan with a backward pass (it decided which gradients the plan
  computes: a frozen parameter's gradient would still be filled in). A tensor computed
  by ops outside ``fn`` that a gradient would flow into is refused (``CaptureError``,
  before the backward runs): eagerly the gradient goes on into what made it.
* Python values are fixed at capture: numbers in ``fn``, ops' parameters (an ``axis``,
  ``training=True`` of dropout; a dropout's Generator is the same object, so its random
  stream continues exactly as it would eagerly). A tensor in a parameter (the index of
  ``x[rows, y]``, the mask of ``x[x > 2]``) would be fixed too: it is refused.
* Control flow that depends on values cannot be replayed, so the capture refuses it:
  reading a value (``.item()``, ``float(t)``, ``.numpy()``, ``.data``, ``if t:``) inside
  ``fn`` raises ``CaptureError`` naming what was read; so does an array from outside
  ``fn`` turned into a constant, in an op or a comparison, of any size (pass it as an
  input instead; Python numbers and numpy scalars are kept), and so does an in-place
  write (``h += 1``, ``x /= 2``: no op runs, so a replay would skip it; write
  ``h = h + 1``).
* Values computed without an op are made again at every replay from the replay's arrays:
  comparisons (a mask ``h > 0`` for ``where``, labels ``y >= 0`` of a masked loss) and
  ``detach()`` (``ValueInstruction``). No gradient flows through them, eagerly or replayed.
* An op's ``validate`` (value validation: class labels in range, targets in [0, 1]) runs
  on every replay, so a bad batch is still caught, never a silently wrong loss; its
  ``check`` reads only shapes, dtypes and parameters, which the capture proved, and does
  not run again.

The plan's instructions are the named records of ``plan_format.py``.
"""
from __future__ import annotations

import contextlib
import inspect
import threading
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, NamedTuple, Sequence

import numpy as np

from . import graph, memory, replay
from .memory import GradientStore
from .modes import STATE
from .plain import plain_repr
from .plan_format import (
    ArraySpec,
    BackwardInstruction,
    BackwardStep,
    ForwardInstruction,
    GradientTarget,
    Instruction,
    LeafGradient,
    ReplayContext,
    ValueInstruction,
)

if TYPE_CHECKING:  # pragma: no cover
    from .op import Op
    from .tensor import Tensor


class CaptureError(RuntimeError):
    """``fn`` does something a replayed plan could not reproduce."""


_COMPARISONS = {"==": "equal", "!=": "not_equal", "<": "less", "<=": "less_equal",
                ">": "greater", ">=": "greater_equal"}


class ValueRecord(NamedTuple):
    """A value the function made without an op (``Tape.value``)."""

    function: Callable[..., Any]
    name: str
    text: str
    tensors: tuple["Tensor", ...]
    result: "Tensor"


def _frozen_values(given: Any, size: int) -> bool:
    """Whether a constant made from ``given`` (``size`` elements) would freeze values that
    can change: an array or a tensor (of any size, even one number), or anything with more
    than one element. Python numbers and numpy scalars are values, not memory: kept."""
    from .tensor import Tensor
    return isinstance(given, (np.ndarray, Tensor)) or size > 1


def _arrays_in(value: Any) -> list[np.ndarray]:
    """The numpy arrays in an op parameter (in tuples and lists too), in order."""
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in _arrays_in(v)]
    return [value] if isinstance(value, np.ndarray) else []


def _holds_list(value: Any) -> bool:
    """Whether an op parameter holds a list (which its owner may change in place)."""
    return isinstance(value, list) or isinstance(value, tuple) and any(map(_holds_list, value))


def _differs(now: Any, kept: Any) -> bool:
    """Whether a parameter's value ``now`` differs from the copy ``kept`` a plan replays
    (containers item by item, arrays by shape and values, numbers by value)."""
    if isinstance(now, (list, tuple)):
        return not isinstance(kept, (list, tuple)) or len(now) != len(kept) or \
            any(_differs(a, b) for a, b in zip(now, kept, strict=True))
    if isinstance(now, np.ndarray) or isinstance(kept, np.ndarray):
        now, kept = np.asarray(now), np.asarray(kept)
        return now.shape != kept.shape or \
            not np.array_equal(now, kept, equal_nan=kept.dtype.kind in "fc")
    return bool(now != kept)


class WatchedParameter(NamedTuple):
    """A numpy array, or a parameter holding a list, that an op took at the capture
    (``original``, its owner's) and the copy the plan replays (``kept``)."""

    op: str
    key: str
    original: Any
    kept: Any

    def changed(self) -> bool:
        return _differs(self.original, self.kept)


def same(a: np.ndarray) -> np.ndarray:
    """``detach()`` in a plan: the same array (a detached tensor shares its memory)."""
    return a


# Ops a numpy array reaches through its operators (``y * 0.5``, ``abs(y)``, ``y[0]``) and
# methods (``y.sum()``): on the targets of a step, which its eager caller passes as an
# array, they give arrays eagerly (Tape._array_from_arrays).
_NUMPY_OPERATORS = frozenset({"add", "sub", "mul", "div", "neg", "pow", "pow_scalar", "matmul",
                              "abs", "getitem"})
_NUMPY_METHODS = frozenset({"clip", "sum", "mean", "max", "min", "var", "reshape", "flatten",
                            "transpose"})
# Of those, the one an engine call on targets is as likely as the method (engine.clip(y, 0,
# 1) for y.clip(0, 1)); the others are taken for the method (y.T, y.sum()).
_AMBIGUOUS = frozenset({"clip"})
_LAYOUT = frozenset({"getitem", "reshape", "flatten", "transpose"})     # values moved, not computed


class Tape:
    """What the engine records while ``STATE.tape`` is set: every op application."""

    def __init__(self) -> None:
        self.records: list[tuple["Op", tuple["Tensor", ...], dict[str, Any], Any, "Tensor"]
                           | ValueRecord] = []
        self.constants: set[int] = set()     # ids of constants made from Python numbers
        # ids of inputs that stand for arrays (``capture(..., as_arrays=)``): ops convert
        # them as they convert an array operand (Op._as_tensors)
        self.arrays: set[int] = set()
        # ids of values computed from them by clip: ``y.clip(0, 1)`` or ``engine.clip(y, 0,
        # 1)``, an array or a tensor eagerly (``_array_from_arrays``)
        self.ambiguous: set[int] = set()
        self.watched: list[WatchedParameter] = []    # numpy arrays in op parameters

    def array_parameter(self, op: "Op", key: str, given: Any, frozen: Any) -> None:
        """``op``'s parameter ``key`` was ``given`` and is kept as ``frozen`` (a copy): each
        numpy array in it is watched, since its owner may change it in place after the
        capture (``self.cols[:] = ...`` on a module) and the plan would replay the old
        values (``Plan.changed_parameter``). So is a parameter holding a list (an index
        ``x[:, self.cols]`` whose list the module changes in place), as a whole."""
        if _holds_list(given):
            self.watched.append(WatchedParameter(op.name, key, given, frozen))
            return
        for original, copy in zip(_arrays_in(given), _arrays_in(frozen), strict=True):
            self.watched.append(WatchedParameter(op.name, key, original, copy))

    def constant(self, t: "Tensor", given: Any, position: int, op: "Op") -> None:
        """A number or array (``given``) an op turned into a constant tensor ``t`` inside
        the function. A number is kept; an array of any size is refused: it may be one
        from outside, which its owner can change after the capture."""
        if _frozen_values(given, t._data.size):
            raise CaptureError(
                f"capture: op '{op.name}' got an array of shape {t.shape} as input {position} "
                f"that is not an input of the captured function; the plan would freeze its "
                f"values. Pass it as an input")
        self.constants.add(id(t))

    def created(self, t: "Tensor", given: Any) -> None:
        """``Tensor(given)`` (or ``adopt``) called inside the function: from a number it
        is fine; from an array or a tensor of any size it is refused, as ops refuse one."""
        if _frozen_values(given, t._data.size):
            raise CaptureError(
                f"capture: Tensor(...) of shape {t.shape} created inside the captured "
                f"function; the plan would freeze its values. Pass the array as an input")

    def record(self, op: "Op", tensors: tuple["Tensor", ...], params: dict[str, Any],
               ctx: Any, result: "Tensor") -> None:
        self.records.append((op, tensors, params, ctx, result))
        self._array_from_arrays(tensors, result, op.name)

    def value(self, function: Callable[..., Any], name: str, text: str,
              tensors: tuple["Tensor", ...], result: "Tensor") -> None:
        """``result = function(*arrays of tensors)`` was made without an op (no gradient
        flows through it): the plan makes it again the same way (``ValueInstruction``)."""
        self.records.append(ValueRecord(function, name, text, tensors, result))
        self._array_from_arrays(tensors, result)

    def _array_from_arrays(self, tensors: tuple["Tensor", ...], result: "Tensor",
                           op: str | None = None) -> None:
        """A result computed from inputs that stand for arrays alone, by a numpy operator
        (``y * 0.5`` of the targets; ``op`` None: a comparison, a detach), stands for an
        array too: the eager caller computes it in numpy, and an op then converts it to the
        other operands' dtype (as it converts ``y``); taken for a tensor it kept float64
        and made the loss float64 where eager computes float32. By an op a numpy array has
        no operator or method for (``engine.exp(y)``) it is a tensor, as it is eagerly. By
        one a numpy array has as a method it is taken for the method's array (``y.T``,
        ``y.sum()``), but ``y.clip(0, 1)`` and ``engine.clip(y, 0, 1)`` are as likely, an
        array and a tensor eagerly: that value is ``ambiguous``, and converting it is
        refused (``converting``). Integer arithmetic on them is refused: numpy's rules
        (uint8 wraps around, ``y - 128``) are not the engine's (it widens)."""
        inputs = [t for t in tensors if id(t) not in self.constants]     # numbers aside
        if not (self.arrays and inputs and all(id(t) in self.arrays for t in inputs)):
            return
        if op is not None and op not in _NUMPY_OPERATORS and op not in _NUMPY_METHODS:
            return                                  # engine.exp(y): a tensor, eagerly too
        narrow = [t for t in inputs if t.dtype.kind in "iu" and t.dtype.itemsize < 8]
        if op is not None and op not in _LAYOUT and result.dtype.kind in "iub" and narrow:
            raise CaptureError(
                f"capture: op '{op}' computes integers from {narrow[0].describe()}, which the "
                f"step's caller passes as a numpy array: numpy's integer rules (uint8 wraps "
                f"around) are not the engine's, so a plan could compute another value. "
                f"Convert it to floats first (y.astype(np.float32))")
        self.arrays.add(id(result))
        if op in _AMBIGUOUS or any(id(t) in self.ambiguous for t in inputs):
            self.ambiguous.add(id(result))

    def converting(self, t: "Tensor", op: "Op", dtype: np.dtype) -> None:
        """``op`` converts ``t``, which stands for an array, to ``dtype``: refused when ``t``
        is ``ambiguous`` (eagerly converted if the caller wrote ``y.clip(...)``, kept as a
        tensor of its own dtype if ``engine.clip(y, ...)``)."""
        if id(t) in self.ambiguous:
            raise CaptureError(
                f"capture: op '{op.name}' converts {t.describe()} to {dtype}; it was computed "
                f"from the step's targets by clip, and eagerly the result is an array "
                f"(y.clip(0, 1): converted) or a tensor "
                f"(engine.clip(y, 0, 1): kept {t.dtype}), which a plan cannot tell apart. "
                f"Pass the targets in the outputs' dtype (y.astype(np.float32))")

    def detached(self, t: "Tensor", result: "Tensor") -> None:
        """``result = t.detach()``: a plan hands on the same array (``same``)."""
        self.value(same, "detach", "detach({0})", (t,), result)

    def comparison(self, compare: Callable[[Any, Any], Any], symbol: str, t: "Tensor",
                   other: Any, result: "Tensor") -> None:
        """``result = t <symbol> other``. A tensor ``other`` is read from its slot; a number
        stays a Python number (numpy compares a float32 array with 0.1 in float32, but with
        an array holding 0.1 in float64); an array (of any size: it may be one from outside
        the function, changed after the capture) is refused, as ops refuse it."""
        from .tensor import Tensor
        name = _COMPARISONS[symbol]
        if isinstance(other, Tensor):
            self.value(compare, name, f"{{0}} {symbol} {{1}}", (t, other), result)
            return
        if not isinstance(other, (int, float, complex, np.generic)):
            given = other
            other = np.array(other)                   # a copy: the value at capture
            if _frozen_values(given, other.size):
                raise CaptureError(
                    f"capture: a comparison ({symbol}) with an array of shape {other.shape} "
                    f"that is not an input of the captured function; the plan would freeze "
                    f"its values. Pass it as an input")

        def against(a: np.ndarray, _other: Any = other) -> Any:
            return compare(a, _other)
        self.value(against, name, f"{{0}} {symbol} {plain_repr(other)}", (t,), result)

    @staticmethod
    def tensor_parameter(op: "Op", key: str) -> None:
        """A tensor in ``op``'s parameter ``key`` (``x[rows, y]``, ``x[x > 2]``): a
        parameter is fixed at the capture, so a replay would use this call's values
        (and a mask's count of True could change the shapes the capture proved); refused."""
        raise CaptureError(
            f"capture: op '{op.name}' got a Tensor in its parameter '{key}'; parameters "
            f"are fixed at the capture, so every replay would use this call's values. Use "
            f"ops that take it as an input (engine.where for a mask, a loss op such as "
            f"softmax_cross_entropy for class labels), or run eagerly")

    @staticmethod
    def in_place(t: "Tensor", symbol: str, instead: str) -> None:
        """``t <symbol> x`` (``t += x``, ``t[i] = x``): numpy writes t's array with no op,
        so a replay would skip the write; refused, saying what to write ``instead``."""
        raise CaptureError(
            f"capture: in-place {symbol} on {t.describe()} inside the captured function; a "
            f"replayed plan would not repeat it (an in-place write is not an op). Write "
            f"{instead} instead")

    @staticmethod
    def backward_inside() -> None:
        """A backward pass run by the captured function itself (``loss.backward()``,
        ``engine.grad``): a replay runs the backward of the first output alone."""
        raise CaptureError("capture: the captured function runs a backward pass (backward(), "
                           "engine.grad, vjp); a replayed plan runs only the backward of its "
                           "first output and would skip it. Return the loss instead")

    @staticmethod
    def refuse(what: str) -> None:
        raise CaptureError(
            f"capture: the captured function {what}; a replayed plan cannot follow Python "
            f"decisions made on values. Compute it outside the function, or return it as an "
            f"output")


class Plan:
    """A captured program: forward instructions, then the backward walk, over slots.

    Slots hold arrays: first the plan's inputs, then the outside tensors it reads (live),
    then constants, then one slot per op output. ``leaves`` are the outside tensors that
    receive gradients (in the order the backward walk finishes them). At the end of the
    capture the program is written out as Python code (``engine/replay.py``,
    ``plan.code()``) and a replay runs that code."""

    def __init__(self) -> None:
        self.n_slots = 0
        self.input_slots: list[int] = []
        self.input_specs: list[tuple[tuple[int, ...], np.dtype]] = []
        # (slot, tensor, shape, dtype, requires_grad): checked at every replay
        self.outside: list[tuple[int, "Tensor", tuple[int, ...], np.dtype, bool]] = []
        self.constants: list[tuple[int, np.ndarray]] = []
        self.forward: list[Instruction] = []
        self.backward: list[BackwardStep] = []
        self.output_slots: list[int] = []
        self.tuple_output = False
        self.root: int | None = None          # the differentiated output's slot
        self.leaves: list["Tensor"] = []      # outside tensors that receive a gradient
        self.names: dict[int, str] = {}       # slot -> name of inputs and outside tensors
        self.watched: list[WatchedParameter] = []   # checked before every replay
        self.root_spec: tuple[tuple[int, ...], np.dtype] = ((), np.dtype(np.float64))
        self.last_outputs: list[np.ndarray] = []   # of the capture run
        self._ready = False
        # A replay's saved values serve one thread's forward and backward: a second thread
        # running the plan meanwhile, or backpropagating the forward another ran, is refused.
        self._running = threading.RLock()
        self._forward_thread: int | None = None
        # Some contexts may hold saves no backward released (a forward-only replay, or a
        # backward that raised): the next forward empties them all first. The contexts
        # off the backward walk are emptied by the generated code itself.
        self._stale = False

    # --- running ---------------------------------------------------------------------------
    def finish(self) -> None:
        """Write the program out as two Python functions (``replay.build``); called once,
        at the end of the capture."""
        self._forward, self._backward = replay.build(self)
        self._read = [t for _, t, *_ in self.outside]    # what a write between the passes could change
        self._holds = memory.replay_holds(())

    def changed_parameter(self) -> str | None:
        """Which numpy array an op took as a parameter at the capture has changed since
        (its owner wrote it in place), described; None if none did. A plan keeps the values
        of the capture, so ``run_forward`` refuses to replay them (``compile_step`` captures
        again)."""
        for watched in self.watched:
            if watched.changed():
                what = "numpy array" if isinstance(watched.original, np.ndarray) else "list"
                return (f"the {what} op '{watched.op}' took as its parameter "
                        f"'{watched.key}' at the capture")
        return None

    def run_forward(self, *arrays: Any, copy: bool = True) -> list[np.ndarray]:
        """The forward program on ``arrays``; returns the outputs, as new arrays. What the
        backward pass needs stays in the nodes' saved values until ``run_backward``, which
        raises if a tensor the forward read may have been written in between. The input
        ``arrays`` are read where they are, with no copy: do not write them before
        ``run_backward``.

        ``copy=False`` returns the arrays the program computed, with no copy: an output
        may be a value a rule saved for the backward pass (exp's output) or an outside
        tensor's memory (``w.reshape(3)``), and a write into it would reach the gradient or
        the tensor unseen. For a caller that only reads them (``compile_step``)."""
        if self.watched:
            changed = self.changed_parameter()
            if changed is not None:
                raise CaptureError(f"plan: {changed} has changed since; the plan would replay "
                                   f"its old values. Capture again (compile_step does), or "
                                   f"pass values that change as inputs")
        if STATE.anomaly:
            raise RuntimeError("plan: detect_anomaly() checks every op as it runs, which a "
                               "replayed plan does not; find the op eagerly (call fn itself)")
        with self._alone():
            return self._run_forward(arrays, copy)

    def _run_forward(self, arrays: tuple[Any, ...], copy: bool) -> list[np.ndarray]:
        self._ready = False                  # a forward that raises leaves nothing to run
        if self._stale:
            for step in self.forward:        # saves add to a context: start from none
                if isinstance(step, ForwardInstruction):
                    step.context.saved = ()
        self._stale = True
        self._holds = memory.replay_holds(self._read)
        outputs = self._forward(arrays)
        self._ready = True
        self._forward_thread = threading.get_ident()
        return [np.array(o, copy=True) for o in outputs] if copy else outputs

    def run_backward(self, on_grad: Callable[[int, np.ndarray], None]) -> None:
        """The recorded backward walk, seeded with ones at the root. ``on_grad(k, g)`` gets
        the gradient of ``leaves[k]`` as soon as it is final."""
        backward = self._backward
        if self.root is None or backward is None:
            raise RuntimeError("plan: this plan has no backward pass (its first output was "
                               "not a scalar requiring grad)")
        if not STATE.grad_enabled:           # eagerly, no graph to backpropagate through
            raise RuntimeError("plan: gradients are off in this thread (inside "
                               "engine.no_grad()); run_forward alone gives the outputs")
        with self._alone():
            self._run_backward(backward, on_grad)

    def _run_backward(self, backward: Callable[..., None],
                      on_grad: Callable[[int, np.ndarray], None]) -> None:
        if not self._ready:
            raise RuntimeError("plan: run_backward needs a run_forward first (each forward "
                               "pass is backpropagated once)")
        if self._forward_thread != threading.get_ident():
            raise RuntimeError("plan: the last run_forward ran in another thread, whose "
                               "saved values this backward pass would use; give each thread "
                               "its own plan (capture again)")
        self._ready = False
        changed = memory.replay_check(self._read, self._holds)
        if changed is not None:
            raise RuntimeError(f"plan: {changed.describe()}, which the forward pass read, may "
                               f"have been written since run_forward: its gradient would "
                               f"mix old and new values. Call run_forward again")
        backward(on_grad)                    # empties each context on the walk
        self._stale = False
        # Again: another thread may have written while the rules ran (the eager walker
        # checks before and after each rule; a plan, around its whole backward pass).
        changed = memory.replay_check(self._read, self._holds)
        if changed is not None:
            raise RuntimeError(f"plan: {changed.describe()}, which the forward pass read, may "
                               f"have been written while the backward pass ran (another "
                               f"thread): the gradients just given mix old and new values")

    def code(self) -> str:
        """The Python source a replay runs (see ``engine/replay.py``)."""
        return replay.source(self)

    def __call__(self, *arrays: Any) -> Any:
        """Replay: the outputs (new arrays), and, if the plan has a backward pass, gradients
        accumulated into each leaf's ``.grad`` exactly as ``output.backward()`` would."""
        with self._alone():                  # no other thread between the two passes
            outputs = self.run_forward(*arrays)
            if self.root is not None:
                self.run_backward(self.accumulator())
        return tuple(outputs) if self.tuple_output else outputs[0]

    @contextlib.contextmanager
    def _alone(self) -> Iterator[None]:
        """Hold the plan's lock (this thread may hold it already), taken without waiting:
        a RuntimeError if another thread is running the plan."""
        if not self._running.acquire(blocking=False):
            raise RuntimeError("plan: another thread is running this plan; its saved values "
                               "serve one forward and backward at a time: give each thread "
                               "its own plan (capture again)")
        try:
            yield
        finally:
            self._running.release()

    def accumulator(self) -> Callable[[int, np.ndarray], None]:
        """``on_grad`` for run_backward that adds each gradient into its leaf's ``.grad``
        as ``backward()`` does (a leaf adopts an array only if no other leaf holds it)."""
        store, leaves = GradientStore(()), self.leaves
        return lambda k, g: store.accumulate(leaves[k], g)

    # --- reading ---------------------------------------------------------------------------
    def source(self, extra: Sequence[str] = ()) -> str:
        """The program, one numbered line per instruction: the forward pass, then the
        backward pass written out (``g_t3 = relu.backward(g_t4)``), then ``extra`` lines
        (see ``replay.listing``)."""
        return replay.listing(self, extra)

    def __repr__(self) -> str:
        return (f"<Plan: {len(self.forward)} forward, {len(self.backward)} backward steps, "
                f"inputs {[s for s, _ in self.input_specs]}>")


def _input_name(fn: Callable[..., Any], k: int) -> str:
    """The name of fn's k-th parameter (``x``, ``y``), for Plan.source()."""
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return params[k].name if k < len(params) else f"input{k}"


def capture(fn: Callable[..., Any], *example_inputs: Any,
            names: dict[int, str] | None = None, as_arrays: Collection[int] = ()) -> Plan:
    """Run ``fn(*tensors)`` once (eagerly: its effects, like gradients in ``.grad``, happen)
    and return the Plan that replays it. See the module docstring for what is captured.
    ``names`` maps ``id(tensor)`` of outside tensors to names shown by ``Plan.source()``.
    ``as_arrays``: positions of the inputs that ``fn``'s eager caller passes as numpy
    arrays, not tensors (a training step's targets). Ops convert those as they convert an
    array operand, at the capture and at every replay: a float64 target meets float32
    logits in float32, as it does eagerly (a float64 tensor would make the loss float64).

    The plan keeps what a replay needs (per op: its node for saved values, and its lines
    of generated code; about 2 KB on a chain of small ops). The eager graph is gone before
    the code is written and compiled, and the code is compiled a function at a time, so
    the peak stays within a few times that."""
    plan = _record(fn, example_inputs, names, as_arrays)   # the eager run's graph dies with its frame
    plan.finish()
    return plan


def _record(fn: Callable[..., Any], example_inputs: Sequence[Any],
            names: dict[int, str] | None, as_arrays: Collection[int] = ()) -> Plan:
    """Run ``fn`` eagerly under a tape (and its backward) and fill a Plan from the record,
    all but the generated code."""
    from .tensor import Tensor

    if STATE.tape is not None:
        raise CaptureError("capture: already capturing (captures do not nest)")
    inputs = [x if isinstance(x, Tensor) else Tensor(x, copy=False) for x in example_inputs]
    for i, t in enumerate(inputs):
        if t.requires_grad:
            raise CaptureError(f"capture: input {i} requires grad; plan inputs are data. "
                               f"Read parameters inside fn instead (they stay live)")
    tape = Tape()
    tape.arrays = {id(inputs[k]) for k in as_arrays}
    STATE.tape = tape
    try:
        result = fn(*inputs)
    finally:
        STATE.tape = None
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    for k, o in enumerate(outputs):
        if not isinstance(o, Tensor):
            raise CaptureError(f"capture: output {k} of fn is a {type(o).__name__}, not a Tensor")

    plan = Plan()
    plan.watched = tape.watched
    plan.tuple_output = isinstance(result, (tuple, list))
    slots: dict[int, int] = {}
    context_of: dict[int, ReplayContext] = {}   # id(output tensor) -> its op's context

    def new_slot(t: "Tensor") -> int:
        slots[id(t)] = plan.n_slots
        plan.n_slots += 1
        return slots[id(t)]

    for k, t in enumerate(inputs):
        slot = new_slot(t)
        plan.input_slots.append(slot)
        plan.input_specs.append((t.shape, t.dtype))
        plan.names[slot] = _input_name(fn, k)
    def slot_of(t: "Tensor") -> int:
        if id(t) not in slots:
            slot = new_slot(t)         # not made by a recorded op: records are in order
            if id(t) in tape.constants:
                plan.constants.append((slot, t._data))
            else:
                plan.outside.append((slot, t, t.shape, t.dtype, t.requires_grad))
                if names and id(t) in names:
                    plan.names[slot] = names[id(t)]
                elif t.name:
                    plan.names[slot] = t.name
        return slots[id(t)]

    root = outputs[0]
    differentiate = root.requires_grad and root.size == 1 and root.node is not None
    for record in tape.records:
        if isinstance(record, ValueRecord):
            plan.forward.append(ValueInstruction(record.function, record.name,
                                                 tuple([slot_of(t) for t in record.tensors]),
                                                 new_slot(record.result), record.text))
            continue
        op, tensors, _params, ctx, result_t = record
        if differentiate:
            _refuse_outside_graph(op, tensors, ctx.needs_input_grad, context_of)
        ins = [slot_of(t) for t in tensors]
        out = new_slot(result_t)
        context = ReplayContext(tuple(ArraySpec.of(t._data) for t in tensors), ctx.params,
                                ctx.needs_input_grad)
        context_of[id(result_t)] = context
        plan.forward.append(ForwardInstruction(op, context, tuple(ins), out,
                                               op.validate is not None))
    for o in outputs:
        if id(o) not in slots:
            raise CaptureError("capture: fn returned a tensor that no captured op made (an "
                               "input or an outside tensor); return computed values only")
        plan.output_slots.append(slots[id(o)])

    # Copies: an output may be an outside tensor's memory (``w.reshape(3)``), to be written
    # only through the tensor, where the write is seen.
    plan.last_outputs = [np.array(o._data, copy=True) for o in outputs]
    if differentiate:
        _capture_backward(plan, root, slots, context_of)
    return plan


def _refuse_outside_graph(op: "Op", tensors: Sequence["Tensor"], needs: tuple[bool, ...],
                          made: dict[int, ReplayContext]) -> None:
    """Refuse, before the backward runs (no gradient lands anywhere), a gradient that would
    flow into a tensor made by ops outside the function: eagerly it goes on into what made
    that tensor, but a plan reads outside tensors as leaves. ``made``: the function's
    own op results, by id (the only tensors with a node that a plan makes)."""
    for t, need in zip(tensors, needs, strict=True):
        if need and t.node is not None and id(t) not in made:
            raise CaptureError(
                f"capture: op '{op.name}' reads {t.describe()}, computed by op "
                f"'{t.node.op.name}' outside the captured function; the plan would not carry "
                f"its gradient back into what made it. Compute it inside the function, or "
                f"pass it as an input (detached)")


def _capture_backward(plan: Plan, root: "Tensor", slots: dict[int, int],
                      context_of: dict[int, ReplayContext]) -> None:
    """Run the eager backward of ``root`` (filling ``.grad`` as ``root.backward()`` does)
    and record the walk: which rule, in which order, sending to which slots."""
    plan.root = slots[id(root)]
    plan.root_spec = (root.shape, root.dtype)
    g0 = np.ones_like(root._data)
    store = GradientStore([g0])
    for tensor, g, node, _ in graph.backward_steps([root], [g0]):
        slot = slots[id(tensor)]
        if node is None:
            plan.backward.append(LeafGradient(slot, len(plan.leaves)))
            plan.leaves.append(tensor)
            store.accumulate(tensor, g)
            continue
        targets = tuple(GradientTarget(slots[id(inp)], inp.dtype) if need else None
                        for inp, need in zip(node.inputs, node.needs_input_grad, strict=True))
        plan.backward.append(BackwardInstruction(node.op, context_of[id(tensor)], slot, targets))
        if tensor._retains_grad:
            raise CaptureError("capture: retain_grad() on an intermediate tensor is not "
                               "replayed; return the tensor as an output instead")
