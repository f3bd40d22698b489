"""The op contract and the registry of every op handgrad knows.

An op is ONE class holding everything about one mathematical function::

    @register(method=True)                     # also attach Tensor.cube
    class Cube(Op):
        \"\"\"cube(x) = x^3, elementwise.\"\"\"   # the math, for readers

        name = "cube"                          # engine.cube, REGISTRY["cube"]
        rule = "d/dx = 3 x^2"                  # the derivative, as pictures show it

        def forward(self, ctx, x):             # numpy in, numpy out
            ctx.save_input(x)                  # what the rules below need: the input x
            return x ** 3

        def backward(self, ctx, grad):         # VJP: one gradient per input
            (x,) = ctx.saved
            return (grad * 3 * x ** 2,)

        def jvp(self, ctx, dx):                # JVP: the output's tangent
            (x,) = ctx.saved
            return dx * 3 * x ** 2

* ``forward(self, ctx, *inputs, *, params...)``: the positional arguments after ``ctx`` are
  the op's inputs (arrays; an input with default ``None`` is optional; ``*xs`` takes any
  number); the keyword-only arguments are its parameters (``axis``, ``negative_slope``).
  Calls are bound once from this signature: ``leaky_relu(x, 0.2)`` passes 0.2 as
  ``negative_slope``; anything that does not fit raises ``TypeError`` naming the op.
* ``check(self, *inputs, **params)``, optional: validation before ``forward`` (errors name
  the op) that reads shapes, dtypes and parameters only, never values: a replayed plan
  (``engine.capture``) proved it at the capture and does not run it again. It may return
  the parameters in a normal form (``axis`` as a tuple), which forward and the rules then
  see in ``ctx.params``.
* ``validate(self, *inputs, **params)``, optional: validation that reads values (class
  labels in range, targets in [0, 1]); runs after ``check`` (with its normal parameters)
  on every call and on every replay of a plan.
* ``ctx`` is a ``RuleContext``: the three saves below, ``ctx.saved``, ``ctx.params``,
  ``ctx.needs_input_grad`` and ``ctx.inputs`` (each input's shape, dtype and ndim), and
  nothing else. The graph's ``Node`` is one; a replayed plan's ``ReplayContext`` another.
* Saving, in ``forward``, what the rules need: ``ctx.save_input(x, ...)`` for input arrays
  as ``forward`` got them, ``ctx.save_output(y)`` for the very array ``forward`` returns,
  ``ctx.save(...)`` for anything the rule makes itself (a mask, a centered copy) and for
  shapes and numbers. ``ctx.saved`` is everything saved, in the order of the calls. The
  first two are declarations: an input's or the output's array belongs to a tensor that
  the caller may change in place before ``backward``, so handgrad protects it (raises
  rather than compute from changed values, see ``engine/memory.py``), and a declaration
  tells it which values to protect. An input or output array passed to ``save`` is still
  found (by identity, a slower fallback) and protected; declare it instead.
* ``backward(self, ctx, grad)``: the vector-Jacobian product, one gradient per input (None
  where ``ctx.needs_input_grad[i]`` is False or the input is not differentiable).
* ``jvp(self, ctx, *tangents)``: the Jacobian-vector product (None for a non-differentiable
  input's tangent). An op with ``linear = True`` needs none: for a linear function the
  JVP is the function itself applied to the tangents (``sum(dx)``, ``dx[index]``).
* ``nondiff``: positions of inputs that are not differentiable (labels, masks, conditions).
  Among them, ``refuses_grad``: positions where an input that requires grad is an error
  rather than a gradient silently left out (the losses' targets).
* ``rule``: the derivative in one line, shown in pictures. The docstring states the math.

``@register`` instantiates the class, puts the instance in ``REGISTRY`` and makes it
``engine.<name>``; with ``method=True`` (or a method name) also a Tensor method. The test
suite walks ``REGISTRY`` and fails for an op without a test specification.
"""
from __future__ import annotations

import inspect
import math
import sys
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from . import memory, stubs
from .graph import Node, check_finite
from .modes import STATE
from .plain import plain_repr
from .plan_format import ReplayContext
from .tensor import NUMERIC_KINDS, Tensor, check_dtype, huge_int, huge_int_text, int_as_float


class InputSpec(Protocol):
    """What a rule may read of an input in ``ctx.inputs``: its shape and dtype (a Tensor
    in the graph, an ``ArraySpec`` in a replayed plan), never its values."""

    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def ndim(self) -> int: ...


@runtime_checkable
class RuleContext(Protocol):
    """The ``ctx`` an op's forward, backward and jvp rules get, and all they may use of it.
    ``graph.Node`` implements it (an eager call), and so does ``plan_format.ReplayContext``
    (a replayed plan, which has no graph)."""

    saved: Any
    """Everything the saves kept, as a tuple, in the order of the calls."""

    def save(self, *values: Any) -> None:
        """Keep ``values`` the rule made itself (arrays, shapes, numbers) for the backward
        and JVP rules."""

    def save_input(self, *arrays: np.ndarray) -> None:
        """Keep input arrays of the forward, as it got them (``ctx.save_input(x, W)``)."""

    def save_output(self, array: np.ndarray) -> None:
        """Keep the array the forward returns (``y = np.tanh(x); ctx.save_output(y)``)."""

    @property
    def params(self) -> Mapping[str, Any]:
        """The op's parameters (in ``check``'s normal form)."""

    @property
    def inputs(self) -> Sequence[InputSpec]:
        """The inputs' shapes and dtypes, one per input."""

    @property
    def needs_input_grad(self) -> tuple[bool, ...]:
        """Per input, whether the backward rule must return its gradient."""


class Signature:
    """How a call of an op maps onto its forward: inputs, then parameters."""

    def __init__(self, op: "Op"):
        where = f"{type(op).__name__}.forward"
        params = list(inspect.signature(type(op).forward).parameters.values())[2:]  # self, ctx
        self.inputs: list[str] = []      # positional inputs, in order
        self.optional = 0                # how many trailing inputs default to None
        self.varargs = False             # forward(self, ctx, *xs, ...)
        self.params: list[str] = []      # keyword-only parameters, in order
        defaults: dict[str, Any] = {}
        for p in params:
            if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.POSITIONAL_ONLY:
                if self.varargs:
                    raise TypeError(f"{where}: no input may follow *{p.name}")
                if p.default is not p.empty:
                    if p.default is not None:
                        raise TypeError(f"{where}: input {p.name!r} may default only to None "
                                        f"(an optional input); make it keyword-only if it "
                                        f"is a parameter")
                    self.optional += 1
                elif self.optional:
                    raise TypeError(f"{where}: required input {p.name!r} follows an optional one")
                self.inputs.append(p.name)
            elif p.kind is p.VAR_POSITIONAL:
                if self.inputs:
                    raise TypeError(f"{where}: *{p.name} must be the only input")
                self.varargs = True
            elif p.kind is p.KEYWORD_ONLY:
                self.params.append(p.name)
                if p.default is not p.empty:
                    defaults[p.name] = p.default
            else:
                raise TypeError(f"{where}: **{p.name} is not allowed: list every parameter "
                                f"as a keyword-only argument")
        if not self.inputs and not self.varargs:
            raise TypeError(f"{where}: an op needs at least one input")
        self.required = len(self.inputs) - self.optional
        # How many positional arguments the common call takes (none for *inputs: bind them).
        self.counts: frozenset[int] = frozenset() if self.varargs else \
            frozenset(range(self.required, len(self.inputs) + 1))
        self.defaults: dict[str, Any] = defaults   # never changed: calls get copies
        self.required_params = [p for p in self.params if p not in defaults]
        self.names = frozenset(self.params)

    def bind(self, op: "Op", args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """(inputs, params) for ``op(*args, **kwargs)``, or TypeError naming the op."""
        if self.varargs:
            inputs, extra = list(args), ()
        else:
            inputs, extra = list(args[:len(self.inputs)]), args[len(self.inputs):]
        if len(extra) > len(self.params):
            raise op.error(f"takes {self._describe()}, got {len(args)} positional arguments",
                           TypeError)
        params = dict(self.defaults)
        params.update(zip(self.params, extra, strict=False))      # extra positionals: parameters, in order
        for key, value in kwargs.items():
            if key in self.params:
                if key in self.params[:len(extra)]:
                    raise op.error(f"got two values for parameter {key!r}", TypeError)
                params[key] = value
            elif key in self.inputs:
                i = self.inputs.index(key)
                if i < len(inputs) and inputs[i] is not _MISSING:
                    raise op.error(f"got two values for input {key!r}", TypeError)
                inputs += [_MISSING] * (i + 1 - len(inputs))
                inputs[i] = value
            else:
                raise op.error(f"unexpected keyword argument {key!r}; it takes "
                               f"{self._describe()}", TypeError)
        missing = [n for n, v in zip(self.inputs[:self.required],
                                     inputs + [_MISSING] * self.required, strict=False) if v is _MISSING]
        missing += [p for p in self.required_params if p not in params]
        if missing:
            raise op.error(f"missing {', '.join(repr(m) for m in missing)}; it takes "
                           f"{self._describe()}", TypeError)
        while len(inputs) > self.required and (inputs[-1] is None or inputs[-1] is _MISSING):
            inputs.pop()                              # optional inputs left out
        if any(x is _MISSING or (x is None and i >= self.required) for i, x in enumerate(inputs)):
            raise op.error("an optional input may be left out only at the end", TypeError)
        return tuple(inputs), {k: frozen_param(op, k, v) for k, v in params.items()}

    def _describe(self) -> str:
        ins = "any number of tensors" if self.varargs else (
            ", ".join(self.inputs[:self.required]
                      + [f"{n}=None" for n in self.inputs[self.required:]]))
        ps = ", ".join(f"{p}={plain_repr(self.defaults[p])}" if p in self.defaults else p
                       for p in self.params)
        return f"inputs ({ins})" + (f" and parameters ({ps})" if ps else "")


_MISSING = object()
_PLAIN = (int, float, bool, str, type(None))   # parameter values kept as they are


def freeze(value: Any) -> Any:
    """A parameter as the node keeps it: numpy scalars become Python numbers (they would
    promote float32 math to float64), arrays and tensors become private read-only copies
    (the caller may change theirs later), containers are rebuilt around frozen items."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Tensor):
        value = value._data
    if isinstance(value, np.ndarray):
        return memory.frozen_copy(value)
    if isinstance(value, tuple):
        return tuple(freeze(v) for v in value)
    if isinstance(value, list):
        return [freeze(v) for v in value]
    return value


def frozen_param(op: "Op", key: str, value: Any) -> Any:
    """``freeze(value)`` for ``op``'s parameter ``key``. A tensor in it (an index, a mask)
    is copied like an array, so a plan being captured would replay this call's values:
    refused then (``Tape.tensor_parameter``). A numpy array in it is watched instead
    (``Tape.array_parameter``): a replay after its owner changed it is refused."""
    if STATE.tape is not None and _holds_tensor(value):
        STATE.tape.tensor_parameter(op, key)
    frozen = freeze(value)
    if STATE.tape is not None:
        STATE.tape.array_parameter(op, key, value, frozen)
    return frozen


def _holds_tensor(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return any(_holds_tensor(v) for v in value)
    return isinstance(value, Tensor)


class Op:
    """Base class of every op: set ``name`` and ``rule``, write ``forward``, ``backward``
    and (unless ``linear``) ``jvp``; decorate the class with ``@register``."""

    name: str = ""
    rule: str = ""
    nondiff: tuple[int, ...] = ()
    # Non-differentiable positions where an input that requires grad is an error instead
    # of a gradient silently cut off: a loss's targets, which PyTorch differentiates.
    refuses_grad: tuple[int, ...] = ()
    linear: bool = False
    # Integer operands take the float operands' dtype (float32 * int64 is float32, as in
    # PyTorch). A rule written elsewhere (engine.testing's RuleOp) gets its inputs as they
    # were drawn instead: an int64 index stays an index, a bool mask a mask.
    promotes_integers: bool = True

    def __init__(self) -> None:
        self.signature = Signature(self)
        # What help(), IDEs and inspect.signature show for engine.<name>(...).
        self.__signature__ = stubs.call_signature(self)

    # forward and jvp are declared (*args: Any, **kwargs: Any): every op's own take its own
    # inputs and parameters, (ctx, x, *, axis), and a type checker accepts any narrower
    # signature in place of this one. The contract is enforced when the op is registered
    # (Signature), not by subclass compatibility.
    def forward(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """``forward(ctx, *inputs, **params)``: the op's value, numpy in and numpy out:
        inputs positional, parameters keyword-only. Saves what the rules need with
        ``ctx.save_input``, ``ctx.save_output`` and ``ctx.save`` (see the module
        docstring). Every op must define it."""
        raise NotImplementedError(f"op {self.name!r} has no forward rule")

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """The vector-Jacobian product: given the gradient of the output, one gradient per
        input, each of its input's shape (None where ``ctx.needs_input_grad[i]`` is False or
        the input is not differentiable). Every op must define it."""
        raise NotImplementedError(f"op {self.name!r} has no backward (VJP) rule")

    def jvp(self, *args: Any, **kwargs: Any) -> np.ndarray:
        """``jvp(ctx, *tangents)``. For a linear op, J u = f(u): the forward applied to the
        tangents (inputs that are not differentiable, like a condition, keep their values).
        Forward mode runs on graph nodes only; the forward re-run gets a fresh context of
        its own, so what it saves leaves the node's saved values alone."""
        ctx: Node = args[0]
        tangents: tuple[np.ndarray | None, ...] = args[1:]
        if not self.linear:
            raise NotImplementedError(f"op {self.name!r} has no forward-mode (JVP) rule")
        values = [ctx.inputs[i]._data if t is None else t for i, t in enumerate(tangents)]
        rerun = ReplayContext(ctx.inputs, ctx.params, (False,) * len(values))
        return self.forward(rerun, *values, **ctx.params)

    # Validation of shapes, dtypes and parameters (never values): see the module docstring.
    check: Callable[..., Mapping[str, Any] | None] | None = None
    # Validation that reads values, run on every call and every replay.
    validate: Callable[..., None] | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        """Apply the op: ``engine.leaky_relu(x, negative_slope=0.2)``."""
        sig = self.signature
        if len(args) in sig.counts:
            # The common calls: inputs positionally, parameters (if any) by keyword.
            while len(args) > sig.required and args[-1] is None:
                args = args[:-1]                     # an optional input left out
            if not kwargs:
                if not sig.required_params:
                    return self._apply(args, sig.defaults.copy() if sig.defaults else {})
            elif sig.names.issuperset(kwargs) and (
                    not sig.required_params or all(p in kwargs for p in sig.required_params)):
                params = {**sig.defaults}
                for key, value in kwargs.items():
                    params[key] = value if type(value) in _PLAIN else frozen_param(self, key, value)
                return self._apply(args, params)
        inputs, params = sig.bind(self, args, kwargs)
        return self._apply(inputs, params)

    def apply(self, *inputs: Any, **params: Any) -> Tensor:
        """Apply the op to exactly these inputs and parameters (no positional binding)."""
        sig = self.signature
        if not sig.varargs and not sig.required <= len(inputs) <= len(sig.inputs) \
                or sig.varargs and not inputs:
            raise self.error(f"takes {sig._describe()}, got {len(inputs)} inputs", TypeError)
        unknown = set(params) - sig.names
        if unknown:
            raise self.error(f"unexpected parameters {sorted(unknown)}", TypeError)
        missing = [p for p in sig.required_params if p not in params]
        if missing:
            raise self.error(f"missing parameters {missing}", TypeError)
        return self._apply(inputs, {**sig.defaults,
                                    **{k: frozen_param(self, k, v) for k, v in params.items()}})

    def _apply(self, inputs: tuple[Any, ...], params: Mapping[str, Any]) -> Tensor:
        """Run the forward on the inputs' arrays and, if a gradient can flow, record a node."""
        tensors = inputs
        for x in inputs:
            # Numbers and arrays become constant tensors; an integer tensor may take a float
            # operand's dtype. An integer tensor never requires grad: parameters and the
            # activations of a training step skip the dtype test.
            if not isinstance(x, Tensor) or (not x._requires_grad and x._data.dtype.kind in "iu"):
                tensors = self._as_tensors(inputs)
                break
        else:
            if STATE.tape is not None and STATE.tape.arrays:    # inputs standing for arrays
                tensors = self._as_tensors(inputs)
        arrays: list[np.ndarray] = []
        flags: list[bool] = []                 # each input's requires_grad
        for t in tensors:                      # one loop: cheaper than two comprehensions
            arrays.append(t._data)
            flags.append(t._requires_grad)
        if self.check is not None:
            normal = self.check(*arrays, **params)
            if normal is not None:
                params = normal
        if self.validate is not None:
            self.validate(*arrays, **params)
        state = STATE
        nondiff = self.nondiff
        if not state.grad_enabled:
            needs = (False,) * len(flags)
        elif nondiff:
            needs = tuple([f and i not in nondiff for i, f in enumerate(flags)])
            if self.refuses_grad and True in flags:
                self._refuse_grad(flags)
        else:
            needs = tuple(flags)
        ctx = Node(self, tensors, params, needs)   # type: ignore[arg-type]
        out = self.forward(ctx, *arrays, **params)
        if type(out) is not np.ndarray:
            out = np.asarray(out)  # reductions give numpy scalars; keep them 0-d arrays
        anomaly = state.anomaly
        if anomaly:
            check_finite("forward", ctx, out, arrays)
        recorded = True in needs
        result = Tensor._from_op(out, ctx if recorded else None)
        # The output may be an input's memory (a view, or the very array): it shares that
        # input's record before after_forward looks at what the node saved of it.
        # (No loop variable here: one left bound to an input's array would count as a
        # reference from outside in after_forward's reference count.)
        if out.base is not None or id(out) in map(id, arrays):
            memory.share_view(result, tensors)
        if recorded and ctx.saved:
            memory.after_forward(ctx, result, tensors, arrays, anomaly)
        if state.tape is not None:
            state.tape.record(self, tensors, params, ctx, result)
        return result

    def _as_tensors(self, inputs: tuple[Any, ...]) -> tuple[Tensor, ...]:
        """Wrap numbers and arrays as constant tensors (copies: the caller keeps theirs).

        Operands in differentiable positions take the op's floating-point dtype (the first
        float tensor input's, else the first float constant's): constants of any number
        kind (``float32_tensor * np.float64(2)`` stays float32), and integer tensors too
        (``float32_tensor * int64_tensor`` is float32, as in PyTorch: an integer operand
        never widens a float one). Bool tensors (masks) stay bool: numpy never widens a
        float for them. Labels and conditions (``nondiff``) keep their dtype.

        A captured function's inputs that its eager caller passes as arrays (the targets
        of a compiled step: ``Tape.arrays``) are tensors that take part as arrays do, here
        and in ``_float_dtype``; their conversion is made again at every replay."""
        if STATE.tape is None:
            labels = self._labels_alone(inputs)
            if labels is not None:
                return labels
        loose = STATE.tape.arrays if STATE.tape is not None else ()
        values: list[Tensor | np.ndarray] = []
        huge = -1                       # a Python int outside int64 (the last one), if any
        for i, x in enumerate(inputs):
            if isinstance(x, Tensor):
                values.append(x)
                continue
            array = self._constant_array(i, x)
            kind = array.dtype.kind
            if kind == "O" or (kind == "u" and i not in self.nondiff and huge_int(x)):
                huge, array = i, np.array(0)       # an integer in _float_dtype's eyes
            values.append(array)
        ref = self._float_dtype(values, loose)
        if huge >= 0:
            values[huge] = self._huge_int(huge, inputs[huge], ref, values, inputs)
        if ref is None:
            self._uint64_ints(values, inputs)
        out = []
        for i, x in enumerate(values):
            if isinstance(x, Tensor):
                kinds = "biuf" if id(x) in loose else "iu"
                if ref is not None and x._data.dtype.kind in kinds and x._data.dtype != ref \
                        and i not in self.nondiff and self.promotes_integers:
                    if STATE.tape is not None and id(x) in loose:
                        STATE.tape.converting(x, self, ref)
                    x = _converted(x, ref)
            else:
                if ref is not None and x.dtype.kind in ("biuf" if self.promotes_integers else "f") \
                        and i not in self.nondiff:
                    x = in_dtype(x, ref, f"input {i}", self.error)
                x = Tensor._from_op(x, None)         # a private copy: nobody else holds it
                if STATE.tape is not None:
                    STATE.tape.constant(x, inputs[i], i, self)
            out.append(x)
        return tuple(out)

    def _labels_alone(self, inputs: tuple[Any, ...]) -> tuple[Tensor, ...] | None:
        """The common case of ``_as_tensors`` in one pass (a loss given its labels as a
        numpy array): the only inputs that are not tensors are numeric arrays in
        non-differentiable positions, which keep their dtype (copied), and no tensor in a
        differentiable position is an integer one to convert. None otherwise: the general
        path decides."""
        out = []
        nondiff = self.nondiff
        for i, x in enumerate(inputs):
            if isinstance(x, Tensor):
                if x._data.dtype.kind in "iu" and i not in nondiff:
                    return None
            elif type(x) is np.ndarray and i in nondiff and x.dtype.kind in NUMERIC_KINDS:
                x = Tensor._from_op(np.array(x, copy=True), None)
            else:
                return None
            out.append(x)
        return tuple(out)

    def _constant_array(self, i: int, x: Any) -> np.ndarray:
        """A number or array input as a new array, or a TypeError naming the op. A Python
        int beyond int64 stays an object array, for ``_huge_int``."""
        if x is None or isinstance(x, (str, bytes)):
            raise self.error(f"input {i} must be a Tensor, an array or a number, "
                             f"got {plain_repr(x)}", TypeError)
        array = np.array(x, copy=True)
        if array.dtype.kind not in NUMERIC_KINDS:    # not numbers: say what it is
            if huge_int(x):
                return array
            if array.dtype == object:
                raise self.error(f"input {i} must be a Tensor, an array or a number, "
                                 f"got {type(x).__name__}", TypeError)
            check_dtype(array.dtype, f"{self.name}: input {i}")
        return array

    def _huge_int(self, i: int, x: int, ref: np.dtype | None, values: Sequence[Any],
                  inputs: Sequence[Any]) -> np.ndarray:
        """Input ``i``, a Python int outside int64: a float constant in a differentiable
        position next to a floating-point operand (it takes that dtype, as a Python number
        does in numpy and PyTorch: ``float32_tensor + 2**70`` is float32); a uint64 constant
        where the other operands are uint64 and it fits (numpy 2: a Python int takes the
        other operands' dtype); otherwise an OverflowError, as numpy and PyTorch give:
        ``np.array(2**63)`` is uint64, and making integer arithmetic float64 (int64 with
        uint64) behind the user's back would change the result's dtype for one constant."""
        as_float = int_as_float(x)
        if ref is not None and i not in self.nondiff and math.isfinite(as_float):
            return np.array(as_float)
        fits_uint64 = 0 <= x < 2**64
        if fits_uint64 and ref is None and i not in self.nondiff:
            others = [v._data.dtype if isinstance(v, Tensor) else v.dtype
                      for j, v in enumerate(values) if j != i and j not in self.nondiff
                      and type(inputs[j]) not in (int, float, complex)]   # weak, as in numpy
            if others and np.result_type(*others) == np.uint64:
                return np.array(x, np.uint64)
        if ref is not None and i not in self.nondiff:
            raise self.error(f"input {i}, the integer {huge_int_text(x)}, is too large even "
                             f"for float64", OverflowError)
        hint = ""
        if i not in self.nondiff and math.isfinite(as_float):
            hint = (f"; no floating-point operand gives it a float dtype: write it as a float "
                    f"({as_float:.6g}) or convert the integer tensor first (t.astype(np.float64))")
        why = ("it fits uint64 alone, and the other operands are not uint64" if fits_uint64
               else "numpy has no integer dtype that holds it")
        raise self.error(f"input {i}, the integer {huge_int_text(x)}, is too large for int64 "
                         f"({why}){hint}", OverflowError)

    def _uint64_ints(self, values: list[Tensor | np.ndarray], inputs: Sequence[Any]) -> None:
        """Python ints beside uint64 operands (no float one) become uint64, as in numpy 2:
        an int64 constant would make the result float64, which rounds integers beyond
        2**53 silently (``uint64_tensor + 1``). A negative one is an OverflowError, as
        numpy 2 gives. (Other integer dtypes keep int64 constants: ``uint8_tensor - 1`` is
        int64 -1, never a wrapped 255.)"""
        python_ints = [i for i, x in enumerate(inputs) if type(x) is int and i not in self.nondiff]
        if not python_ints:
            return
        others = [v._data.dtype if isinstance(v, Tensor) else v.dtype for j, v in enumerate(values)
                  if j not in python_ints and j not in self.nondiff]
        if not others or np.result_type(*others) != np.uint64:
            return
        for i in python_ints:
            x = inputs[i]
            if not 0 <= x < 2**64:
                raise self.error(f"input {i}, the integer {huge_int_text(x)}, is outside uint64, "
                                 f"the dtype of the other operands (numpy 2 refuses it too); "
                                 f"convert the tensor first (t.astype(np.int64) or a float)",
                                 OverflowError)
            values[i] = np.array(x, np.uint64)

    def _float_dtype(self, values: list[Tensor | np.ndarray],
                     loose: Collection[int] = ()) -> np.dtype | None:
        """The dtype the other differentiable operands take: the first floating-point
        tensor's, else the first floating-point constant's (or tensor standing for an
        array: ids in ``loose``), among the differentiable positions (a float target never
        makes integer logits float); None if neither."""
        for i, x in enumerate(values):
            if isinstance(x, Tensor) and id(x) not in loose and x._data.dtype.kind == "f" \
                    and i not in self.nondiff:
                return x._data.dtype
        for i, x in enumerate(values):
            if (not isinstance(x, Tensor) or id(x) in loose) and x.dtype.kind == "f" \
                    and i not in self.nondiff:
                return x.dtype
        return None

    def _refuse_grad(self, flags: list[bool]) -> None:
        for i in self.refuses_grad:
            if flags[i]:
                name = self.signature.inputs[i]
                raise self.error(
                    f"input {i} ({name}) requires grad, but {self.name} does not differentiate "
                    f"it (PyTorch does): the gradient through it would be silently left out. "
                    f"Detach it ({name}.detach()) or compute it under engine.no_grad()")

    def error(self, message: str, kind: type[Exception] = ValueError) -> Exception:
        """An exception whose message starts with this op's name."""
        return kind(f"{self.name}: {message}")

    def __repr__(self) -> str:
        return f"<op {self.name}>"


# The smallest magnitude a cast to the dtype rounds to Inf: halfway past its largest number
# (whose last bit is 1, so a tie rounds up). Compared before the cast, which then never
# overflows (numpy would warn).
_INF_AT = {np.dtype(np.float16): 65520.0,
           np.dtype(np.float32): float(np.finfo(np.float32).max) + 2.0 ** 103}


def in_dtype(array: np.ndarray, dtype: np.dtype, what: str,
             error: Callable[[str], Exception] = ValueError) -> np.ndarray:
    """``array`` cast to the floating-point ``dtype``, or ``error(message)``, the message
    starting with ``what``, when the cast changes what a value says rather than rounding
    it: a finite value made Inf (70000 in float16), or one below the dtype's normal range
    rounded by more than the dtype's precision (5e-9 made 0 in float16: ``t * 5e-9`` would
    be 0; 3e-8 made 6e-8). Only casts to a narrower range can."""
    limit = _INF_AT.get(dtype)
    kind = array.dtype.kind
    if limit is None or not (kind == "f" and array.dtype.itemsize > dtype.itemsize
                             or kind in "iu" and dtype.itemsize == 2):
        return array.astype(dtype, copy=False)
    over = (array >= limit) | (array <= -limit)
    if kind == "f":
        over &= np.isfinite(array)
    if over.any():
        raise error(f"{what} {_vanishes(array[over].flat[0], np.inf, dtype)}")
    cast = array.astype(dtype)
    if kind == "f":
        info = np.finfo(dtype)
        small = (np.abs(array) < info.smallest_normal) & (array != 0)
        if small.any():
            value = array[small]
            off = np.abs(value.astype(dtype).astype(array.dtype) - value) > info.eps * np.abs(value)
            if off.any():
                raise error(f"{what} {_vanishes(value[off].flat[0], None, dtype)}")
    return cast


def _vanishes(value: Any, becomes: float | None, dtype: np.dtype) -> str:
    """What a value's cast does to it (``becomes``, or its cast when None), and what to do."""
    made = value.astype(dtype) if becomes is None else becomes
    wider = "float32 (t.astype(np.float32))" if dtype.itemsize == 2 else "float64"
    return (f"holds {plain_repr(value.item())}, which is {plain_repr(float(made))} in {dtype}, "
            f"the op's dtype: it would compute with that; compute in {wider} or rescale")


def _converted(t: Tensor, dtype: np.dtype) -> Tensor:
    """An integer tensor's values in ``dtype``, as a new constant tensor of the same name;
    a captured plan converts its new array at every replay."""
    c = Tensor._from_op(in_dtype(t._data, dtype, t.describe()), None)
    c.name = t.name
    if STATE.tape is not None:
        def astype(a: np.ndarray) -> np.ndarray:
            return in_dtype(a, dtype, t.describe())
        STATE.tape.value(astype, "astype", f"{{0}}.astype({dtype})", (t,), c)
    return c


REGISTRY: dict[str, Op] = {}


def register(cls: type | None = None, *, method: bool | str = False) -> Any:
    """Class decorator: make the op, put it in ``REGISTRY`` and export it as
    ``engine.<name>``; ``method=True`` (or a method name) also attaches a Tensor method.

    Refuses, with the reason, an op without a name, docstring or rule; one without a
    forward, backward or (unless linear) jvp rule; a forward that does not follow the
    contract; one that sets the retired ``check_values`` flag; a name already taken by
    another op or by anything else in ``engine``. Registering a class with the same module
    and name again (a re-run notebook cell) replaces the old op.
    """
    if cls is None:
        return lambda c: register(c, method=method)
    if not (isinstance(cls, type) and issubclass(cls, Op)):
        raise TypeError(f"register is a class decorator for Op subclasses (put @register above "
                        f"`class ...(engine.Op)`), got {cls!r}")
    op = cls()
    name = op.name
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{cls.__name__} needs a `name` that is a Python identifier, got {name!r}")
    if not (cls.__doc__ or "").strip():
        raise ValueError(f"op {name!r} needs a docstring stating its math")
    if not isinstance(op.rule, str) or not op.rule.strip() or "\n" in op.rule:
        raise ValueError(f"op {name!r} needs a `rule`: its derivative in one line, e.g. "
                         f"rule = \"d/dx = 1 - tanh(x)^2\"")
    for rule in ("forward", "backward"):
        if getattr(cls, rule) is getattr(Op, rule):
            raise ValueError(f"op {name!r} defines no {rule} rule")
    if cls.jvp is Op.jvp and not op.linear:
        raise ValueError(f"op {name!r} defines no jvp rule (only an op with linear = True "
                         f"may leave it out)")
    if hasattr(cls, "check_values"):
        raise ValueError(f"op {name!r} sets check_values, which handgrad no longer reads: "
                         f"`check` reads shapes, dtypes and parameters only; move validation "
                         f"that reads values into a `validate(self, *inputs, **params)` method "
                         f"(run on every call and every replay)")
    if not op.signature.varargs and any(not 0 <= i < len(op.signature.inputs) for i in op.nondiff):
        raise ValueError(f"op {name!r}: nondiff {op.nondiff} names positions outside its "
                         f"inputs {op.signature.inputs}")
    if not set(op.refuses_grad) <= set(op.nondiff):
        raise ValueError(f"op {name!r}: refuses_grad {op.refuses_grad} names positions that "
                         f"are not nondiff {op.nondiff}")
    previous = REGISTRY.get(name)
    if previous is not None and not _same_class(type(previous), cls):
        raise ValueError(f"an op named {name!r} is already registered "
                         f"({type(previous).__module__}.{type(previous).__qualname__})")
    package = sys.modules[__package__]
    taken = package.__dict__.get(name)
    if taken is not None and not isinstance(taken, Op):
        raise ValueError(f"op name {name!r} is taken by engine.{name} ({type(taken).__name__})")
    if previous is not None:
        unregister(name)
    REGISTRY[name] = op
    setattr(package, name, op)
    if method:
        _attach_method(op, name if method is True else method)
    return cls


def _same_class(a: type, b: type) -> bool:
    return a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__


def _attach_method(op: Op, method_name: str) -> None:
    existing = Tensor.__dict__.get(method_name)
    if existing is not None and getattr(existing, "__op__", None) is None:
        raise ValueError(f"op {op.name!r}: Tensor.{method_name} already exists")

    def method(self: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return op(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = method_name
    method.__doc__ = f"``t.{method_name}(...)`` is ``engine.{op.name}(t, ...)``: " + \
        (type(op).__doc__ or "").strip().splitlines()[0]
    method.__op__ = op  # type: ignore[attr-defined]
    setattr(Tensor, method_name, method)


def unregister(name: str) -> None:
    """Remove an op from ``REGISTRY``, ``engine`` and Tensor (tests of custom ops use this)."""
    op = REGISTRY.pop(name, None)
    if op is None:
        return
    package = sys.modules[__package__]
    if package.__dict__.get(name) is op:
        delattr(package, name)
    for key, value in list(Tensor.__dict__.items()):
        if getattr(value, "__op__", None) is op:
            delattr(Tensor, key)
