"""Tensor: a numpy array that remembers the op that produced it.

A tensor holds ``data`` (a numpy array), ``requires_grad``, ``grad`` (filled by
``backward``) and ``node`` (the graph node that produced it; None for leaves). Its
operators and methods are thin wrappers over the ops in ``engine.ops``: all the math
lives there.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import graph


class Tensor:
    """An n-dimensional array in the compute graph.

    ``Tensor(data, requires_grad=False, name=None, dtype=None)``. ``data`` is anything
    numpy accepts; it is not copied when it already is an array of the right dtype
    (like ``torch.from_numpy``). Only floating-point tensors can require a gradient.
    """

    __slots__ = ("data", "requires_grad", "grad", "name", "node", "_retains_grad", "__weakref__")
    __array_ufunc__ = None  # numpy defers to our reflected operators: ndarray + Tensor -> Tensor

    def __init__(self, data: Any, requires_grad: bool = False, name: str | None = None,
                 dtype: Any = None):
        if isinstance(data, Tensor):
            data = data.data
        array = np.asarray(data, dtype=dtype)
        if array.dtype == object:
            raise TypeError(f"Tensor: cannot make a tensor from {type(data).__name__} "
                            f"holding non-numeric objects")
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(f"Tensor: only floating-point tensors can require grad, "
                            f"got dtype {array.dtype}")
        self.data: np.ndarray = array
        self.requires_grad: bool = bool(requires_grad)
        self.grad: np.ndarray | None = None
        self.name = name
        self.node: graph.Node | None = None
        self._retains_grad = False

    @classmethod
    def _from_op(cls, data: np.ndarray, node: "graph.Node | None") -> "Tensor":
        """Fast path for op outputs: no validation, no copy."""
        t = cls.__new__(cls)
        t.data = data
        t.requires_grad = node is not None
        t.grad = None
        t.name = None
        t.node = node
        t._retains_grad = False
        return t

    # --- array facts -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def is_leaf(self) -> bool:
        return self.node is None

    def __len__(self) -> int:
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __repr__(self) -> str:
        extras = []
        if self.name:
            extras.append(f"name={self.name!r}")
        if self.node is not None:
            extras.append(f"op={self.node.op.name}")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        body = np.array2string(self.data, separator=", ", threshold=20, edgeitems=2)
        return f"Tensor({body}, dtype={self.dtype}{''.join(', ' + e for e in extras)})"

    # --- conversion --------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self) -> float | int | bool:
        if self.size != 1:
            raise ValueError(f"item: only a tensor with one element can be converted to a "
                             f"Python scalar, this one has shape {self.shape}")
        return self.data.item()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        if dtype is None or dtype == self.data.dtype:
            return self.data.copy() if copy else self.data
        return self.data.astype(dtype)

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __bool__(self) -> bool:
        return bool(self.item())

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (no node, no grad)."""
        return Tensor._from_op(self.data, None)

    def astype(self, dtype: Any) -> "Tensor":
        """A copy of the data in another dtype, as a new leaf (keeps requires_grad for floats)."""
        data = self.data.astype(dtype)
        return Tensor(data, requires_grad=self.requires_grad and data.dtype.kind == "f")

    # --- gradients ---------------------------------------------------------------------
    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` is the gradient of the final objective with respect to this tensor;
        it may be omitted only when this tensor holds a single element (a loss).
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad and has no graph "
                               "(were its inputs created with requires_grad=True? "
                               "was it computed under no_grad()?)")
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward: a gradient can be implied only for a tensor with "
                                 f"one element (a scalar loss); this one has shape {self.shape}. "
                                 f"Pass grad= of that shape, or reduce it first (.sum(), .mean())")
            g = np.ones_like(self.data)
        else:
            g = np.asarray(grad.data if isinstance(grad, Tensor) else grad)
            if g.shape != self.shape:
                raise ValueError(f"backward: grad has shape {g.shape} but the tensor has shape "
                                 f"{self.shape}")
            g = g.astype(self.dtype, copy=False)
        graph.backward([self], [g], retain_graph=retain_graph)

    def _accumulate_grad(self, g: np.ndarray, may_adopt: bool = False) -> None:
        """Add ``g`` to ``.grad``. The first gradient is kept as it is when the caller says
        nobody else holds it (``may_adopt``), and copied otherwise, because later
        accumulation and optimizers update ``.grad`` in place."""
        if self.grad is None:
            self.grad = g if may_adopt else np.array(g, dtype=self.dtype, copy=True)
        else:
            self.grad += g

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (``grad`` becomes None, as in PyTorch)."""
        self.grad = None

    def retain_grad(self) -> None:
        """Make backward() also fill ``.grad`` of this non-leaf tensor."""
        if self.node is not None:
            self._retains_grad = True

    # --- operators ---------------------------------------------------------------------
    def __add__(self, other: Any) -> "Tensor":
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> "Tensor":
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> "Tensor":
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> "Tensor":
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> "Tensor":
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> "Tensor":
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> "Tensor":
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _ops.div(other, self)

    def __pow__(self, other: Any) -> "Tensor":
        return _ops.power(self, other)

    def __rpow__(self, other: Any) -> "Tensor":
        return _ops.power(other, self)

    def __matmul__(self, other: Any) -> "Tensor":
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return _ops.matmul(other, self)

    def __neg__(self) -> "Tensor":
        return _ops.neg(self)

    def __pos__(self) -> "Tensor":
        return self

    def __getitem__(self, index: Any) -> "Tensor":
        return _ops.getitem(self, index)

    # Comparisons give boolean tensors outside the graph (masks for `where`). == and !=
    # keep Python's identity meaning so tensors stay usable as dict keys and in sets.
    def __lt__(self, other: Any) -> "Tensor":
        return Tensor(self.data < _data(other))

    def __le__(self, other: Any) -> "Tensor":
        return Tensor(self.data <= _data(other))

    def __gt__(self, other: Any) -> "Tensor":
        return Tensor(self.data > _data(other))

    def __ge__(self, other: Any) -> "Tensor":
        return Tensor(self.data >= _data(other))

    __hash__ = object.__hash__

    # --- methods: each is the op of the same name in engine.ops -------------------------
    def exp(self) -> "Tensor":
        return _ops.exp(self)

    def log(self) -> "Tensor":
        return _ops.log(self)

    def sqrt(self) -> "Tensor":
        return _ops.sqrt(self)

    def abs(self) -> "Tensor":
        return _ops.abs(self)

    def __abs__(self) -> "Tensor":
        return _ops.abs(self)

    def maximum(self, other: Any) -> "Tensor":
        return _ops.maximum(self, other)

    def minimum(self, other: Any) -> "Tensor":
        return _ops.minimum(self, other)

    def clip(self, min: float | None = None, max: float | None = None) -> "Tensor":
        return _ops.clip(self, min=min, max=max)

    def matmul(self, other: Any) -> "Tensor":
        return _ops.matmul(self, other)

    def sum(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def min(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _ops.min(self, axis=axis, keepdims=keepdims)

    def var(self, axis: Any = None, keepdims: bool = False, ddof: int = 0) -> "Tensor":
        return _ops.var(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def reshape(self, *shape: Any) -> "Tensor":
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        return _ops.flatten(self, start_dim=start_dim, end_dim=end_dim)

    def transpose(self, *axes: Any) -> "Tensor":
        return _ops.permute(self, *axes) if axes else _ops.transpose(self)

    def permute(self, *axes: Any) -> "Tensor":
        return _ops.permute(self, *axes)

    @property
    def T(self) -> "Tensor":
        return _ops.transpose(self)

    def broadcast_to(self, shape: Sequence[int]) -> "Tensor":
        return _ops.broadcast_to(self, shape)

    def sigmoid(self) -> "Tensor":
        return _ops.sigmoid(self)

    def tanh(self) -> "Tensor":
        return _ops.tanh(self)

    def relu(self) -> "Tensor":
        return _ops.relu(self)

    def leaky_relu(self, negative_slope: float = 0.01) -> "Tensor":
        return _ops.leaky_relu(self, negative_slope=negative_slope)

    def elu(self, alpha: float = 1.0) -> "Tensor":
        return _ops.elu(self, alpha=alpha)

    def softplus(self) -> "Tensor":
        return _ops.softplus(self)

    def gelu(self, approximate: str = "tanh") -> "Tensor":
        return _ops.gelu(self, approximate=approximate)

    def softmax(self, axis: int = -1) -> "Tensor":
        return _ops.softmax(self, axis=axis)

    def log_softmax(self, axis: int = -1) -> "Tensor":
        return _ops.log_softmax(self, axis=axis)

    def logsumexp(self, axis: Any = None, keepdims: bool = False) -> "Tensor":
        return _ops.logsumexp(self, axis=axis, keepdims=keepdims)


def _data(x: Any) -> Any:
    return x.data if isinstance(x, Tensor) else x


def as_tensor(x: Any, dtype: Any = None) -> Tensor:
    """``x`` if it is a Tensor already, otherwise a constant Tensor (no grad) wrapping it."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x, dtype=dtype)


from . import ops as _ops  # noqa: E402  (the ops import Tensor; methods look them up late)
