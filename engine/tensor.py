"""Tensor: a numpy array that remembers the op that produced it.

A tensor holds ``data`` (a numpy array), ``requires_grad``, ``grad`` (filled by
``backward``) and ``node`` (the graph node that produced it; None for leaves). Its
operators are thin wrappers over the ops in ``engine.ops``; methods named like ops
(``t.exp()``, ``t.sum(axis=0)``) are attached by ``@register(method=True)`` on the op's
class. All the math lives in the ops.

Values are safe from outside changes (see ``memory.py``, which owns every array a tensor
holds): ``Tensor(array)`` copies the array (``copy=False`` shares it, ``adopt`` takes an
array its caller gives away); an array you hold from ``t.data`` is read-only while a graph
has saved it for backward; handgrad's own in-place operations (``t += 1`` under
``no_grad()``, optimizer steps) tick a write clock that backward checks; memory numpy does
not own (a ``np.memmap``, ``np.frombuffer`` of a bytearray) shared with ``copy=False`` is
checksummed by the nodes that save it instead.

A tensor holds numbers: bool, integers, floats (and complex, for complex-step checks);
``check_dtype`` refuses strings, bytes, void, datetimes and objects.
"""
from __future__ import annotations

import math
import operator
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import numpy as np

from . import graph, memory
from .memory import GradientStore
from .modes import STATE
from .plain import plain_repr

_Self = TypeVar("_Self", bound="Tensor")     # the in-place operators return self

if TYPE_CHECKING:       # t.exp(), t.sum(axis=0): the op methods, typed (engine/_ops.pyi)
    from ._ops import OpMethods
else:
    OpMethods = object


class Tensor(OpMethods):
    """An n-dimensional array in the compute graph.

    ``Tensor(data, requires_grad=False, name=None, dtype=None, copy=True)``. ``data`` is
    anything numpy accepts and is copied, as by ``np.array`` (the tensor never shares
    memory with an array you keep writing to); ``copy=False`` shares an array that needs
    no conversion, as ``torch.from_numpy`` does. Only floating-point tensors can require
    a gradient; only numeric dtypes are accepted (see ``check_dtype``).
    """

    __slots__ = ("_data", "_memory", "_requires_grad", "grad", "name", "node", "_retains_grad",
                 "__weakref__")
    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray + Tensor -> Tensor

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None,
                 dtype: Any = None, copy: bool = True):
        source = data if isinstance(data, Tensor) else None
        if source is not None:
            data = source._data
        try:
            array, record = memory.wrap(data, dtype, copy, source)
        except (TypeError, ValueError) as e:
            raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__}: {e}") from None
        if array.dtype.kind not in NUMERIC_KINDS:    # check_dtype's test, without its message
            if huge_int(data):
                f = int_as_float(data)
                hint = f"; give it as a float ({f:.6g}) for a float tensor" if math.isfinite(f) else ""
                raise OverflowError(f"Tensor: the integer {huge_int_text(data)} is too large for "
                                    f"int64 (numpy has no integer dtype that holds it){hint}")
            check_dtype(array.dtype, f"Tensor: cannot make a tensor from {type(data).__name__}")
        self._data: np.ndarray = array
        self._memory: memory.MemoryRecord | None = record
        self._requires_grad = False
        self.grad: np.ndarray | None = None   # d(loss)/d(this tensor), summed over backward passes
        self.name = name
        self.node: graph.Node | None = None
        self._retains_grad = False
        if requires_grad:
            self.requires_grad = True
        if STATE.tape is not None:
            STATE.tape.created(self, data)

    @classmethod
    def _from_op(cls, data: np.ndarray, node: "graph.Node | None") -> "Tensor":
        """Fast path for op outputs: no validation, no copy."""
        t = cls.__new__(cls)
        t._data = data
        t._memory = None
        t._requires_grad = node is not None
        t.grad = None
        t.name = None
        t.node = node
        t._retains_grad = False
        return t

    # --- the values --------------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        """The values: the tensor's own numpy array (shared, not a copy; write to it to
        change the tensor). While a graph that saved these values for backward is alive
        and you hold the array, it is read-only. No work proportional to its size."""
        if STATE.tape is not None:
            STATE.tape.refuse(f"read the values of {self.describe()} (.data / .numpy())")
        return memory.hand_out(self)

    @data.setter
    def data(self, value: Any) -> None:
        """``t.data = array`` replaces the values (sharing ``array``, as in PyTorch); graphs
        computed before keep the old ones."""
        if STATE.tape is not None:     # no op runs: a replay would skip the replacement
            STATE.tape.in_place(self, "t.data =", _AFTER_CAPTURE)
        source = value if isinstance(value, Tensor) else None
        array = value._data if source is not None else np.asarray(value)
        check_dtype(array.dtype, "data")
        if self._requires_grad and array.dtype.kind != "f":
            raise TypeError(f"data: {self.describe()} requires grad, so its data must be "
                            f"floating point, got dtype {array.dtype}")
        memory.replace(self, array, source)

    # --- array facts -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """The size of each dimension, as a tuple of ints (``data.shape``)."""
        return self._data.shape

    @property
    def ndim(self) -> int:
        """The number of dimensions, ``len(shape)`` (0 for a scalar tensor)."""
        return self._data.ndim

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype of the values (``np.float32``, ``np.float64``, an integer or bool
        dtype, ...)."""
        return self._data.dtype

    @property
    def size(self) -> int:
        """The number of elements, the product of ``shape`` (1 for a scalar tensor); an int,
        as numpy's ``size``, not a method as PyTorch's ``size()``."""
        return self._data.size

    @property
    def is_leaf(self) -> bool:
        """True when no op produced this tensor (``node is None``): tensors you create, and
        op results computed with no input requiring grad or under ``no_grad()``."""
        return self.node is None

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self._data)

    def __iter__(self) -> Iterator["Tensor"]:
        """The rows ``t[0], t[1], ...`` (each one a getitem in the graph), as numpy iterates."""
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(len(self._data)))

    def describe(self) -> str:
        """"Tensor 'x' of shape (2, 3), dtype float32": for error messages."""
        name = f" {self.name!r}" if self.name else ""
        return f"{type(self).__name__}{name} of shape {self.shape}, dtype {self.dtype}"

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        """What ``pickle`` and ``copy.deepcopy`` copy: every slot but the memory record.
        The copy's array is new memory, and the original's record (its locks, hand-outs,
        checkpoints) is not about it: a copied "locked" would stop later graphs from
        locking the copy's array, which stays writeable."""
        if STATE.tape is not None:       # the plan would hold the capture's copy for good
            STATE.tape.refuse(f"copied {self.describe()} (copy.deepcopy, pickle)")
        slots = {name: getattr(self, name) for name in _STATE_SLOTS if hasattr(self, name)}
        slots["_memory"] = None
        return None, slots

    def __copy__(self) -> "Tensor":
        """``copy.copy``: a tensor on the same memory, so on the same record (as
        ``detach()``, but keeping the node and gradient)."""
        if STATE.tape is not None:       # a tensor the plan would not know: the capture's
            STATE.tape.refuse(f"copied {self.describe()} (copy.copy)")
        t = type(self).__new__(type(self))
        for name, value in self.__getstate__()[1].items():
            setattr(t, name, value)
        memory.alias(t, self)
        return t

    def __repr__(self) -> str:
        extras = []
        if self.name:
            extras.append(f"name={self.name!r}")
        if self.node is not None:
            extras.append(f"op={self.node.op.name}")
        elif self._requires_grad:
            extras.append("requires_grad=True")
        body = np.array2string(self._data, separator=", ", threshold=20, edgeitems=2)
        return f"Tensor({body}, dtype={self.dtype}{''.join(', ' + e for e in extras)})"

    # --- conversion --------------------------------------------------------------------
    def numpy(self, copy: bool = False) -> np.ndarray:
        """The underlying array (shared, like ``.data``), or a copy of it."""
        if copy:
            if STATE.tape is not None:   # a value read while capturing is frozen in the plan
                STATE.tape.refuse(f"read the values of {self.describe()} (.numpy(copy=True))")
            return self._data.copy()
        return self.data

    def item(self) -> float | int | bool:
        """The value of a one-element tensor as a Python number (``float``, ``int`` or
        ``bool``); ValueError for any other size."""
        if STATE.tape is not None:
            STATE.tape.refuse(f"read the value of {self.describe()} (.item(), float(), "
                              f"int() or bool())")
        if self.size != 1:
            raise ValueError(f"item: only a tensor with one element can be converted to a "
                             f"Python scalar, this one has shape {self.shape}")
        return self._data.item()

    # Hidden from type checkers: numpy's stubs would type ``ndarray @ tensor`` (a Tensor:
    # ``__array_ufunc__ = None`` sends it to ``__rmatmul__``) as an ndarray.
    if not TYPE_CHECKING:
        def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
            return self._as_array(dtype, copy)

    def _as_array(self, dtype: Any, copy: bool | None) -> np.ndarray:
        """``np.asarray(t, dtype, copy=...)``: numpy's ``__array__`` protocol."""
        if STATE.tape is not None:
            STATE.tape.refuse(f"turned {self.describe()} into a numpy array")
        if dtype is not None and dtype != self._data.dtype:
            if copy is False:            # numpy 2's protocol: no copy asked, one needed
                raise ValueError(f"np.asarray(copy=False): {self.describe()} needs a copy to "
                                 f"become {np.dtype(dtype)} (writes to it would not reach the "
                                 f"tensor)")
            return self._data.astype(dtype)
        return self._data.copy() if copy else self.data

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        if self.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.size} elements is "
                             f"ambiguous: use .any() or .all() on t.data")
        return bool(self.item())

    def detach(self) -> "Tensor":
        """The same data (shared memory), cut from the graph: no node, no grad."""
        t = Tensor._from_op(self._data, None)
        memory.alias(t, self)
        if STATE.tape is not None:             # a plan hands on the same array
            STATE.tape.detached(self, t)
        return t

    def astype(self, dtype: Any) -> "Tensor":
        """A copy of the data in another dtype, as a new leaf (keeps requires_grad for
        floats). Not differentiable: on a tensor that requires grad while the graph is
        recorded it is an error, since the gradient would stop at the new leaf (PyTorch's
        ``.to(dtype)`` passes it on); ``t.detach().astype(...)`` cuts the graph on purpose."""
        if self._requires_grad and STATE.grad_enabled:
            raise RuntimeError(
                f"astype: {self.describe()} requires grad, and astype makes a new leaf: no "
                f"gradient would reach {'its graph' if self.node is not None else 'this tensor'} "
                f"through the copy (handgrad has no differentiable cast). Write "
                f"t.detach().astype(...) to cut the graph on purpose, or build the tensor in "
                f"the dtype you need")
        data = self._data.astype(dtype)
        return Tensor(data, requires_grad=self._requires_grad and data.dtype.kind == "f",
                      copy=False)

    # --- gradients ---------------------------------------------------------------------
    @property
    def requires_grad(self) -> bool:
        """Whether ``backward`` computes a gradient for this tensor. Settable on a leaf
        only, and only True for a floating-point dtype (as ``torch.Tensor.requires_grad``)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        value = bool(value)
        if self.node is not None:
            raise RuntimeError(f"requires_grad can be changed only on a leaf tensor; this "
                               f"one was computed by op '{self.node.op.name}' (use detach())")
        if value and self._data.dtype.kind != "f":
            raise TypeError(f"only floating-point tensors can require grad, got dtype "
                            f"{self._data.dtype} (convert first: t.astype(np.float32))")
        self._requires_grad = value

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of the final objective with respect to this tensor;
        it may be omitted only when this tensor holds a single element (a loss).
        """
        if not self._requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(were its inputs created with requires_grad=True? "
                               "was it computed under no_grad()?)")
        data = self._data
        if grad is None:
            if data.size != 1:
                raise ValueError(f"backward: a gradient can be implied only for a tensor with "
                                 f"one element (a scalar loss); this one has shape {self.shape}. "
                                 f"Pass grad= of that shape, or reduce it first (.sum(), .mean())")
            g = np.array(1, data.dtype).reshape(data.shape)    # np.ones without its Python frame
        else:
            g = np.asarray(grad._data if isinstance(grad, Tensor) else grad)
            if g.shape != data.shape:
                raise ValueError(f"backward: grad has shape {g.shape} but the tensor has shape "
                                 f"{self.shape}")
            if g.dtype != data.dtype:
                g = g.astype(data.dtype)
        # The seed may be a leaf's .grad (y.backward(x.grad)): the store does not add into
        # it in place, as other branches of the pass still read it.
        store = GradientStore([g])
        for tensor, g_tensor, node, _ in graph.backward_steps([self], [g], retain_graph=retain_graph):
            # A leaf frozen since the forward pass (requires_grad = False) gets no .grad,
            # as in PyTorch.
            if node is None and tensor._requires_grad or tensor._retains_grad:
                store.accumulate(tensor, g_tensor)

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (``grad`` becomes None, as in PyTorch)."""
        self.grad = None

    def retain_grad(self) -> None:
        """Make backward() also fill ``.grad`` of this non-leaf tensor."""
        if self.node is not None:
            self._retains_grad = True

    # --- operators ---------------------------------------------------------------------
    def __add__(self, other: Any) -> "Tensor":
        return _OPS["add"](self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return _OPS["add"](other, self)

    def __sub__(self, other: Any) -> "Tensor":
        return _OPS["sub"](self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        return _OPS["sub"](other, self)

    def __mul__(self, other: Any) -> "Tensor":
        return _OPS["mul"](self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        return _OPS["mul"](other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        return _OPS["div"](self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _OPS["div"](other, self)

    def __pow__(self, other: Any) -> "Tensor":
        """``t ** 2`` (a number: pow_scalar) or ``t ** u`` (a tensor or array: pow)."""
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return _OPS["pow_scalar"](self, other)
        return _OPS["pow"](self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return _OPS["pow"](other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        return _OPS["matmul"](self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return _OPS["matmul"](other, self)

    def __neg__(self) -> "Tensor":
        return _OPS["neg"](self)

    def __pos__(self) -> "Tensor":
        return self

    def __abs__(self) -> "Tensor":
        return _OPS["abs"](self)

    def __getitem__(self, index: Any) -> "Tensor":
        return _OPS["getitem"](self, index)

    # --- in place ----------------------------------------------------------------------
    # ``t += x`` changes t's own array (never rebinds the name to a new tensor), bumping
    # its version so that a backward through a graph that saved the old values raises.
    # Like PyTorch, this is refused while recording for a tensor that requires grad: for a
    # parameter, update inside ``with engine.no_grad():`` (as optimizers do).
    def __iadd__(self: _Self, other: Any) -> _Self:
        return self._inplace(np.add, other, "+=")

    def __isub__(self: _Self, other: Any) -> _Self:
        return self._inplace(np.subtract, other, "-=")

    def __imul__(self: _Self, other: Any) -> _Self:
        return self._inplace(np.multiply, other, "*=")

    def __itruediv__(self: _Self, other: Any) -> _Self:
        return self._inplace(np.true_divide, other, "/=")

    def __ipow__(self: _Self, other: Any) -> _Self:
        return self._inplace(np.power, other, "**=")

    def __imatmul__(self, other: Any) -> "Tensor":
        raise TypeError("in-place matrix product (@=) is not supported: write t = t @ m")

    def _inplace(self: _Self, ufunc: np.ufunc, other: Any, symbol: str) -> _Self:
        value = self._write_checks(other, symbol, f"t = t {symbol[:-1]} x")
        try:
            shape = np.broadcast_shapes(self.shape, value.shape)
        except ValueError:
            shape = None
        if shape != self.shape:
            raise ValueError(f"{symbol}: a value of shape {value.shape} cannot update "
                             f"{self.describe()} in place (it would need shape {shape})")
        op = symbol[:-1]
        # The dtype numpy's loop computes in (true division of integers is float64, a power
        # of bools int8), checked before anything is written or stamped.
        try:
            result = ufunc.resolve_dtypes((self.dtype, value.dtype, None))[-1]
        except TypeError as e:     # no loop at all: bool - bool, a string
            hint = (f"convert first, e.g. t = t.astype(np.int64) {op} x"
                    if value.dtype.kind in NUMERIC_KINDS else "x must hold numbers")
            raise TypeError(f"{symbol}: {self.dtype} {op} {value.dtype} is not defined for "
                            f"{self.describe()} (numpy: {e}); {hint}") from None
        if not np.can_cast(result, self.dtype, "same_kind"):
            raise TypeError(f"{symbol}: the result of {self.dtype} {op} {value.dtype} does not "
                            f"fit {self.describe()}: it is {result}, and an in-place operation "
                            f"keeps the tensor's dtype; write t = t {op} x for a new tensor")
        if ufunc is np.power and result.kind in "iu" and value.dtype.kind == "i" \
                and (value < 0).any():   # numpy would raise midway, some elements written
            raise ValueError(f"{symbol}: an integer to a negative integer power is not an "
                             f"integer, and {self.describe()} keeps its dtype; convert first: "
                             f"t = t.astype(np.float64) {op} x")
        self._check_can_write(symbol)
        with memory.writing(self) as (array,):     # stamped again once numpy has written
            try:
                ufunc(array, value, out=array, casting="same_kind")
            except ValueError as e:   # a read-only view (broadcast_to, a view of saved memory)
                raise ValueError(f"{symbol}: cannot write into {self.describe()}: {e}") from None
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        """``t[index] = value`` writes into t's own array, under the rules of ``t += x``:
        refused while recording for a tensor that requires grad (update under
        ``no_grad()``), a tracked write (a graph that saved the old values raises in its
        backward), the tensor keeps its dtype. Python runs ``t[:2] *= 10`` as a getitem,
        ``*=`` on the result, then this: a slice's view is written through by ``*=`` (as in
        numpy and PyTorch) and an integer or array index's copy is written back here, so
        both change t, and a tensor that refuses ``*=`` refuses before anything is written."""
        symbol = "t[...] ="
        array = self._write_checks(value, symbol, "engine.where(mask, x, t) or engine.concat")
        if isinstance(value, Tensor) and value._requires_grad and STATE.grad_enabled:
            raise RuntimeError(
                f"{symbol}: the value requires grad and writing it into {self.describe()} "
                f"would not be differentiable (an item assignment is not an op); build the "
                f"new tensor with ops (engine.where(mask, x, t), engine.concat), or write "
                f"under `with engine.no_grad():` for the values alone")
        check_dtype(array.dtype, symbol)
        if not np.can_cast(array.dtype, self.dtype, "same_kind"):
            raise TypeError(f"{symbol}: a value of dtype {array.dtype} does not fit "
                            f"{self.describe()} (an in-place write keeps the tensor's dtype); "
                            f"convert the value first, or build a new tensor")
        if isinstance(index, tuple):
            index = tuple(i._data if isinstance(i, Tensor) else i for i in index)
        elif isinstance(index, Tensor):
            index = index._data
        # numpy's own rules, tried first on a stand-in of t's shape and dtype whose elements
        # all share one scratch element (no copy of t): a value numpy refuses is refused here,
        # before the write is stamped. (Its rules are irregular: a (1,) value fits a slice of
        # one element but not an element; a boolean mask takes a value of at most 1 dimension.)
        scratch = np.ndarray(self.shape, self.dtype, np.empty(1, self.dtype),
                             strides=(0,) * self.ndim)
        try:
            target = np.shape(scratch[index])           # a bad index raises before any write
        except IndexError as e:
            raise IndexError(f"{symbol}: index {plain_repr(index)} is invalid for "
                             f"{self.describe()}: {e}") from None
        try:
            # Older numpy (the deprecation dates from 1.25) only warns for a (1,) value into
            # an element, and writes it; newer numpy refuses it: a refusal on every version.
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                scratch[index] = array
        except (ValueError, TypeError, DeprecationWarning):
            one = "; an element takes a single number" if target == () else ""
            raise ValueError(f"{symbol}: a value of shape {array.shape} cannot be written "
                             f"into {self.describe()} at index {plain_repr(index)}, which "
                             f"selects shape {target}{one}") from None
        self._check_can_write(symbol)
        with memory.writing(self) as (data,):      # stamped again once numpy has written
            try:
                data[index] = array
            except ValueError as e:   # a read-only view (broadcast_to, a view of saved memory)
                raise ValueError(f"{symbol}: cannot write into {self.describe()}: {e}") from None

    def _check_can_write(self, symbol: str) -> None:
        """Read-only memory of the caller's is refused before the write is stamped (numpy
        would refuse it inside the tracked write: nothing changed, yet a graph that saved
        the tensor would raise "modified by an in-place operation" in its backward)."""
        if not memory.can_write(self):
            raise ValueError(f"{symbol}: cannot write into {self.describe()}: its memory is "
                             f"read-only (a broadcast view, a buffer); copy it first")

    def _write_checks(self, other: Any, symbol: str, instead: str) -> np.ndarray:
        """What every in-place write checks first: refused on a tensor that requires grad
        while the graph is recorded, and inside a capture; the operand as an array (a
        Python int as numpy 2 takes it: ``_python_int``)."""
        if self._requires_grad and STATE.grad_enabled:
            if self.node is None:
                raise RuntimeError(
                    f"{symbol} on {self.describe()}, a leaf that requires grad, while the graph "
                    f"is recorded: an update would not be differentiable. Update parameters "
                    f"inside `with engine.no_grad():` (as optimizers do), or write "
                    f"{instead} for a new tensor in the graph.")
            raise RuntimeError(
                f"{symbol} on a tensor computed by op '{self.node.op.name}': in-place changes "
                f"of graph tensors are not supported; write {instead} instead.")
        if STATE.tape is not None:               # no op runs: a replay would skip the write
            STATE.tape.in_place(self, symbol, instead)
        if isinstance(other, Tensor):
            return other._data
        if isinstance(other, int) and not isinstance(other, bool):
            return self._python_int(other, symbol)
        return np.asarray(other)

    def _python_int(self, x: int, symbol: str) -> np.ndarray:
        """A Python int written into this tensor, as numpy 2 takes it (NEP 50): it has no
        dtype of its own, so an integer tensor gives it its dtype and it must fit it
        (``uint8_t[0] = 1`` is fine, ``int8_t[0] = 300`` an OverflowError, never a wrapped
        44); a float tensor takes it as a float (beyond int64 too, not beyond float64)."""
        dtype = self.dtype
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= x <= info.max:
                raise OverflowError(
                    f"{symbol}: the integer {huge_int_text(x)} is too "
                    f"{'large' if x > 0 else 'small'} for {dtype} ({info.min} to {info.max}), "
                    f"and {self.describe()} keeps its dtype in an in-place write; convert the "
                    f"tensor first (t.astype(...)), or build a new tensor")
            return np.array(x, dtype)
        if -2**63 <= x < 2**64:
            return np.asarray(x)       # bool: refused by the dtype checks, as an int64 is
        if dtype.kind not in "fc" or not math.isfinite(int_as_float(x)):
            raise OverflowError(f"{symbol}: the integer {huge_int_text(x)} is too large "
                                f"for {'float64' if dtype.kind in 'fc' else 'int64'}, "
                                f"and {self.describe()} keeps its dtype")
        return np.asarray(int_as_float(x))       # a float tensor takes it as a float

    # --- comparisons -------------------------------------------------------------------
    # Elementwise, like numpy and PyTorch: boolean tensors outside the graph (masks for
    # `where`). Tensors still hash by identity, so they work as dict keys and in sets.
    def _compare(self, other: Any, compare: Callable[[Any, Any], Any], symbol: str) -> "Tensor":
        result = Tensor._from_op(np.asarray(compare(self._data, _data(other))), None)
        if STATE.tape is not None:             # a plan makes it again from its arrays
            STATE.tape.comparison(compare, symbol, self, other, result)
        return result

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, operator.eq, "==")

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, operator.ne, "!=")

    def __lt__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.lt, "<")

    def __le__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.le, "<=")

    def __gt__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.gt, ">")

    def __ge__(self, other: Any) -> "Tensor":
        return self._compare(other, operator.ge, ">=")

    __hash__ = object.__hash__

    # --- shape methods with their own calling conventions ------------------------------
    def reshape(self, *shape: Any) -> "Tensor":
        """``t.reshape(2, 3)`` or ``t.reshape((2, 3))``."""
        return _OPS["reshape"](self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes: Any) -> "Tensor":
        """All axes reversed, or permuted as given: ``t.transpose(1, 0, 2)``."""
        return self.permute(*axes) if axes else _OPS["transpose"](self)

    def permute(self, *axes: Any) -> "Tensor":
        """The axes in a new order: ``t.permute(2, 0, 1)`` or ``t.permute((2, 0, 1))``."""
        if len(axes) == 1 and not isinstance(axes[0], (int, np.integer)):
            axes = tuple(axes[0])
        return _OPS["transpose"](self, axes=axes)

    @property
    def T(self) -> "Tensor":
        """The tensor with its axes reversed, ``transpose(self)``: the matrix transpose for
        2-D (differentiable, as every op)."""
        return _OPS["transpose"](self)


NUMERIC_KINDS = "biufc"   # bool, signed and unsigned integers, floats, complex


def check_dtype(dtype: np.dtype, what: str) -> None:
    """Refuse a dtype that is not a number: strings, bytes, void (raw or structured),
    datetimes, timedeltas, Python objects. Complex stays allowed (the complex-step check
    runs the ops on complex inputs)."""
    if dtype.kind not in NUMERIC_KINDS:
        objects = " (non-numeric Python objects)" if dtype.kind == "O" else ""
        raise TypeError(f"{what}: dtype {dtype}{objects} is not supported; a tensor holds "
                        f"bool, integers or floats (complex only for complex-step checks)")


def huge_int(x: Any) -> bool:
    """A Python int outside int64: ``np.array(2**63)`` is uint64 (which int64 operands
    would make float64), ``np.array(2**70)`` an object array (numpy has no integer dtype
    for it)."""
    return isinstance(x, int) and not isinstance(x, bool) and not -2**63 <= x < 2**63


def huge_int_text(x: int) -> str:
    """The integer for a message: its digits, or its size when they would fill the line."""
    return str(x) if x.bit_length() <= 100 else f"of {x.bit_length()} bits"


def int_as_float(x: int) -> float:
    """``float(x)``, inf beyond float64 (where ``float`` raises)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _data(x: Any) -> Any:
    return x._data if isinstance(x, Tensor) else x


def as_tensor(x: Any, dtype: Any = None) -> Tensor:
    """``x`` if it is a Tensor already, otherwise a constant Tensor sharing x's memory when
    no conversion is needed (like ``torch.as_tensor``)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x, dtype=dtype, copy=False)


_STATE_SLOTS = tuple(name for name in Tensor.__slots__ if name not in ("_memory", "__weakref__"))


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory (no copy). While a graph has saved it for
    backward, the array is read-only; if numpy does not own that memory (a ``np.memmap``,
    ``np.frombuffer`` of a bytearray), a write to it after the forward pass makes the
    backward raise (the saved values are checksummed)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy expects a numpy array, got {type(array).__name__}")
    return Tensor(array, copy=False)


def adopt(array: np.ndarray, requires_grad: bool = False, name: str | None = None) -> Tensor:
    """A tensor that takes ``array`` over, with no copy: the caller gives the array away
    (a batch it just gathered, ``X[idx]``) and does not write to it afterwards. Unlike
    ``from_numpy`` / ``copy=False``, whose arrays the caller keeps and may write (so a
    graph that saves them locks them while the caller holds them), an adopted array is
    handgrad's alone, as if handgrad had made it: nothing is watched or locked. Memory numpy
    does not own (a ``np.memmap``, ``np.frombuffer``), which can change without any numpy
    array, is shared as by ``from_numpy`` instead. A tensor's ``.grad`` is not an array to
    adopt: the next ``backward()`` adds into it in place (adopt a copy)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"adopt expects a numpy array, got {type(array).__name__}")
    check_dtype(array.dtype, "adopt")
    t = Tensor._from_op(array, None)
    memory.adopt(t)
    t.name = name
    if requires_grad:
        t.requires_grad = True
    if STATE.tape is not None:
        STATE.tape.created(t, array)
    return t


def inplace(*tensors: Tensor, keep: bool = True) -> list[np.ndarray]:
    """The tensors' arrays, to write in place: ``w, = engine.inplace(p); w -= lr * p.grad``.
    The write is stamped now, so a graph computed before it raises in its backward. Arrays
    you keep and write later are writes with no stamp: by default they count as handed out
    (as ``t.data``), so a graph that saves them locks them while you hold them.
    ``keep=False`` promises to write at once and keep nothing.
    The stamp comes before your write: if another thread may run a forward pass reading
    these tensors while you write, use ``engine.writing``, which stamps the write again
    when it is done, so that the backward of that forward raises."""
    _refused_in_capture("engine.inplace", tensors)
    return memory.writable(*tensors, keep=keep)


def writing(*tensors: Tensor) -> "memory.Writing":
    """``with engine.writing(p) as (w,): w -= lr * p.grad``: the tensors' arrays, to write
    in place inside the block, kept by nobody after it (as ``inplace(keep=False)``). The
    write is stamped when the block begins and again when it ends, so a graph computed
    before the block ends, in this thread or another one while numpy wrote, raises in its
    backward instead of using values written after its forward pass. handgrad's own
    writes go through it (``t += x`` under no_grad, the optimizers, ``load_state_dict``)."""
    _refused_in_capture("engine.writing", tensors)
    return memory.writing(*tensors)


# What a captured function should do instead of writing a tensor's memory (a running mean):
_AFTER_CAPTURE = "the new values as an output of the function, and write them after it"


def _refused_in_capture(symbol: str, tensors: tuple[Tensor, ...]) -> None:
    """A write with no op inside a captured function: a replay would skip it."""
    if STATE.tape is not None and tensors:
        STATE.tape.in_place(tensors[0], symbol, _AFTER_CAPTURE)


write_stamp = memory.write_stamp   # engine.write_stamp(t): changes whenever t may have been written
global_write_stamp = memory.global_write_stamp   # the same for every tensor at once
write_stamp_after = memory.write_stamp_after     # a stamp after one tracked write, derived
can_write = memory.can_write     # engine.can_write(t): whether inplace(t) could write it (checks only)


from .op import REGISTRY as _OPS  # noqa: E402  (the ops import Tensor; operators look them up late)
