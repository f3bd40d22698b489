"""One test specification per registered op: how to draw valid inputs (its domain, its
kinks avoided), a numpy reference for its forward, and any tolerance override with the
reason. The suite walks ``engine.REGISTRY`` and looks each op up here: an op without a
spec fails the suite, so no op escapes testing.

A sample is ``(args, params)``: ``op.apply(*args, **params)`` is the op under test. Float
arrays in differentiable positions are checked; labels, masks and conditions are not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from . import strategies as s

Sample = tuple[tuple[Any, ...], dict[str, Any]]


@dataclass(frozen=True)
class OpSpec:
    """How to test one op.

    sample:        a hypothesis strategy of (args, params) inside the op's domain.
    reference:     numpy (float64) reference of the forward: reference(*args, **params).
    kinks:         where the op is not differentiable and how the sample avoids it.
    complex_step:  the forward is analytic and accepts complex input (complex-step check).
    atol, rtol:    tolerance override for finite-difference checks, with ``why``.
    kink_examples: (args, params, expected gradients of sum(output)) at the kinks
                   themselves, documenting the convention chosen there.
    """

    name: str
    sample: st.SearchStrategy
    reference: Callable[..., np.ndarray]
    kinks: str = "none: smooth on its domain"
    complex_step: bool = False
    atol: float | None = None
    rtol: float | None = None
    why: str = ""
    kink_examples: tuple[tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


SPECS: dict[str, OpSpec] = {}


def spec(name: str, sample: st.SearchStrategy, reference: Callable[..., np.ndarray], **kw: Any) -> OpSpec:
    """Define (or replace) the test specification of op ``name``. Users call this for their ops."""
    SPECS[name] = OpSpec(name, sample, reference, **kw)
    return SPECS[name]


def spec_for(name: str) -> OpSpec:
    if name not in SPECS:
        raise KeyError(f"op {name!r} has no test specification: add one with "
                       f"engine.testing.spec({name!r}, sample=..., reference=...)")
    return SPECS[name]


# --- building blocks ---------------------------------------------------------------------

def unary(values: Callable[[s.Shape], st.SearchStrategy], max_dims: int = 3, **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a one-input op: an array of any small shape from ``values(shape)``,
    and each keyword parameter drawn from its strategy."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(max_dims=max_dims))
        return (draw(values(shape)),), {k: draw(v) for k, v in params.items()}
    return draw_sample()


def binary(left: Callable[[s.Shape], st.SearchStrategy], right: Callable[[s.Shape], st.SearchStrategy]) -> st.SearchStrategy:
    """Samples of a two-input broadcasting op: shapes that broadcast together."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        sa, sb = draw(s.broadcastable_shapes(2))
        return (draw(left(sa)), draw(right(sb))), {}
    return draw_sample()


def reduction(values: Callable[[s.Shape], st.SearchStrategy], **params: st.SearchStrategy) -> st.SearchStrategy:
    """Samples of a reduction: an array, a valid ``axis`` (None, int or tuple), ``keepdims``."""
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(max_dims=3))
        p = {"axis": draw(s.axis_for(len(shape))), "keepdims": draw(st.booleans())}
        p.update({k: draw(v) for k, v in params.items()})
        return (draw(values(shape)),), p
    return draw_sample()


def _along_axis(values: Callable[[s.Shape], st.SearchStrategy]) -> st.SearchStrategy:
    @st.composite
    def draw_sample(draw: st.DrawFn) -> Sample:
        shape = draw(s.shapes(min_dims=1, max_dims=3))
        return (draw(values(shape)),), {"axis": draw(st.integers(-len(shape), len(shape) - 1))}
    return draw_sample()


def _axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return tuple(a % ndim for a in (axis if isinstance(axis, tuple) else (axis,)))


# --- elementwise ---------------------------------------------------------------------------

spec("add", binary(s.reals, s.reals), np.add, complex_step=True)
spec("sub", binary(s.reals, s.reals), np.subtract, complex_step=True)
spec("mul", binary(s.reals, s.reals), np.multiply, complex_step=True)
spec("div", binary(s.reals, s.nonzero), np.divide, kinks="pole at b = 0: b kept |b| >= 0.3",
     complex_step=True)
spec("neg", unary(s.reals), np.negative, complex_step=True)
spec("pow", binary(s.positive, lambda sh: s.reals(sh, 2.0)), np.power,
     kinks="a > 0 (a^b for real b and the log(a) in d/db need it): a in [0.2, 3]", complex_step=True)


@st.composite
def _pow_scalar_sample(draw: st.DrawFn) -> Sample:
    exponent = draw(st.sampled_from([0, 1, 2, 3, -1, -2, 0.5, 1.5, -0.5]))
    shape = draw(s.shapes())
    if float(exponent).is_integer() and exponent >= 0:
        x = draw(s.reals(shape))
    elif float(exponent).is_integer():
        x = draw(s.nonzero(shape))
    else:
        x = draw(s.positive(shape))
    return (x,), {"exponent": exponent}


spec("pow_scalar", _pow_scalar_sample(), lambda x, exponent: np.power(x, exponent),
     kinks="pole at 0 for negative exponents (|x| >= 0.3); x > 0 for fractional ones",
     complex_step=True)
spec("exp", unary(s.reals), np.exp, complex_step=True)
spec("log", unary(s.positive), np.log, kinks="pole at 0: x in [0.2, 3]", complex_step=True)
spec("sqrt", unary(s.positive), np.sqrt, kinks="infinite slope at 0: x in [0.2, 3]",
     complex_step=True)
spec("abs", unary(s.nonzero), np.abs, kinks="kink at 0 (abs'(0) = 0 by convention): |x| >= 0.3",
     kink_examples=(((np.array([-1.0, 0.0, 2.0]),), {}, (np.array([-1.0, 0.0, 1.0]),)),))
_TIE = ((np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])), {})
spec("maximum", binary(lambda sh: s.off_grid(sh, 0.0), lambda sh: s.off_grid(sh, 0.5)),
     np.maximum, kinks="ties a == b (gradient split evenly): |a - b| >= 0.1",
     kink_examples=(_TIE + ((np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.5, 0.0])),),))
spec("minimum", binary(lambda sh: s.off_grid(sh, 0.0), lambda sh: s.off_grid(sh, 0.5)),
     np.minimum, kinks="ties a == b (gradient split evenly): |a - b| >= 0.1",
     kink_examples=(_TIE + ((np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.5, 1.0])),),))


@st.composite
def _clip_sample(draw: st.DrawFn) -> Sample:
    bounds = draw(st.sampled_from([(-1.0, 1.0), (None, 0.5), (-0.5, None)]))
    shape = draw(s.shapes())
    x = draw(s.values(shape, -3, 3, avoid=[b for b in bounds if b is not None]))
    return (x,), {"min": bounds[0], "max": bounds[1]}


spec("clip", _clip_sample(), lambda x, min=None, max=None: np.clip(x, min, max),
     kinks="at min and max (gradient passes at the bound): x >= 0.1 away from both",
     kink_examples=(((np.array([-2.0, -1.0, 0.0, 1.0, 2.0]),), {"min": -1.0, "max": 1.0},
                     (np.array([0.0, 1.0, 1.0, 1.0, 0.0]),)),))


@st.composite
def _where_sample(draw: st.DrawFn) -> Sample:
    sc, sa, sb = draw(s.broadcastable_shapes(3))
    cond = draw(s.hnp.arrays(np.bool_, sc))
    return (cond, draw(s.reals(sa)), draw(s.reals(sb))), {}


spec("where", _where_sample(), np.where, kinks="none (cond is not differentiable)")

# --- linear algebra ------------------------------------------------------------------------


@st.composite
def _matmul_sample(draw: st.DrawFn) -> Sample:
    sa, sb = draw(s.matmul_shapes())
    return (draw(s.reals(sa)), draw(s.reals(sb))), {}


@st.composite
def _linear_sample(draw: st.DrawFn) -> Sample:
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(s.shapes(min_dims=0, max_dims=2))
    x = draw(s.reals(batch + (n_in,)))
    W = draw(s.reals((n_in, n_out)))
    args = (x, W, draw(s.reals((n_out,)))) if draw(st.booleans()) else (x, W)
    return args, {}


spec("matmul", _matmul_sample(), np.matmul, complex_step=True)
spec("linear", _linear_sample(), lambda x, W, b=None: x @ W + (0 if b is None else b),
     complex_step=True)

# --- shape ---------------------------------------------------------------------------------


@st.composite
def _reshape_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=3))
    size = int(np.prod(shape))
    target = draw(st.sampled_from([(size,), (-1,), tuple(reversed(shape)), (1, size), (size, 1)]))
    return (draw(s.reals(shape)),), {"shape": target}


@st.composite
def _flatten_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=4))
    n = len(shape)
    start = draw(st.integers(0, n - 1))
    end = draw(st.integers(start, n - 1))
    return (draw(s.reals(shape)),), {"start_dim": start, "end_dim": end - n}


@st.composite
def _transpose_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=4))
    axes = draw(st.one_of(st.none(), st.permutations(range(len(shape))).map(tuple)))
    return (draw(s.reals(shape)),), {"axes": axes}


@st.composite
def _getitem_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3))
    x = draw(s.reals(shape))
    kind = draw(st.sampled_from(["slice", "int", "array", "mask", "mixed"]))
    n = shape[0]
    if kind == "slice":
        start = draw(st.integers(0, n - 1))
        index: Any = (slice(start, None, draw(st.sampled_from([1, 2, -1]))), Ellipsis)
    elif kind == "int":
        index = draw(st.integers(-n, n - 1))
    elif kind == "array":  # repeated indices: the backward must accumulate
        index = np.asarray(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=6)))
    elif kind == "mask":
        index = draw(s.hnp.arrays(np.bool_, shape))
    else:
        index = (Ellipsis, None, draw(st.integers(0, shape[-1] - 1)))
    return (x,), {"index": index}


@st.composite
def _concat_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    pieces = []
    for _ in range(draw(st.integers(1, 3))):
        sh = list(shape)
        sh[axis] = draw(st.integers(1, 3))
        pieces.append(draw(s.reals(tuple(sh))))
    return tuple(pieces), {"axis": axis}


@st.composite
def _stack_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(max_dims=3))
    k = draw(st.integers(1, 3))
    axis = draw(st.integers(-len(shape) - 1, len(shape)))
    return tuple(draw(s.reals(shape)) for _ in range(k)), {"axis": axis}


@st.composite
def _broadcast_to_sample(draw: st.DrawFn) -> Sample:
    target = draw(s.shapes(max_dims=3))
    keep = draw(st.integers(0, len(target)))
    shape = tuple(1 if draw(st.booleans()) else n for n in target[len(target) - keep:])
    return (draw(s.reals(shape)),), {"shape": target}


spec("reshape", _reshape_sample(), lambda x, shape: np.reshape(x, shape), complex_step=True)
spec("flatten", _flatten_sample(),
     lambda x, start_dim, end_dim: x.reshape(x.shape[:start_dim] + (-1,) + x.shape[x.ndim + end_dim + 1:]),
     complex_step=True)
spec("transpose", _transpose_sample(), lambda x, axes: np.transpose(x, axes), complex_step=True)
spec("getitem", _getitem_sample(), lambda x, index: np.asarray(x[index]), complex_step=True)
spec("concat", _concat_sample(), lambda *xs, axis: np.concatenate(xs, axis=axis), complex_step=True)
spec("stack", _stack_sample(), lambda *xs, axis: np.stack(xs, axis=axis), complex_step=True)
spec("broadcast_to", _broadcast_to_sample(), lambda x, shape: np.broadcast_to(x, shape),
     complex_step=True)

# --- reductions ----------------------------------------------------------------------------


@st.composite
def _var_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1, max_dims=3, min_side=2))
    return (draw(s.reals(shape)),), {"axis": draw(s.axis_for(len(shape))),
                                     "keepdims": draw(st.booleans()),
                                     "ddof": draw(st.sampled_from([0, 1]))}


spec("sum", reduction(s.reals), lambda x, axis, keepdims: np.sum(x, axis=axis, keepdims=keepdims),
     complex_step=True)
spec("mean", reduction(s.reals), lambda x, axis, keepdims: np.mean(x, axis=axis, keepdims=keepdims),
     complex_step=True)
_TIES = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])
spec("max", reduction(s.distinct), lambda x, axis, keepdims: np.max(x, axis=axis, keepdims=keepdims),
     kinks="ties (gradient split evenly): entries pairwise >= 0.3 apart",
     kink_examples=(((_TIES,), {"axis": 1}, (np.array([[0, .5, .5], [1 / 3, 1 / 3, 1 / 3]]),)),
                    ((_TIES,), {"axis": None}, (np.array([[0, .5, .5], [0, 0, 0]]),))))
spec("min", reduction(s.distinct), lambda x, axis, keepdims: np.min(x, axis=axis, keepdims=keepdims),
     kinks="ties (gradient split evenly): entries pairwise >= 0.3 apart",
     kink_examples=(((_TIES,), {"axis": 1}, (np.array([[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]),)),))
spec("var", _var_sample(),
     lambda x, axis, keepdims, ddof: np.var(x, axis=axis, keepdims=keepdims, ddof=ddof),
     complex_step=True)


def _logsumexp_ref(x: np.ndarray, axis: Any, keepdims: bool) -> np.ndarray:
    return np.log(np.sum(np.exp(x), axis=axis, keepdims=keepdims))


spec("logsumexp", reduction(s.reals), _logsumexp_ref)

# --- activations ---------------------------------------------------------------------------


def _softmax_ref(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def _gelu_ref(x: np.ndarray, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


@st.composite
def _dropout_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes())
    p = draw(st.sampled_from([0.1, 0.5, 0.9]))
    keep = draw(s.hnp.arrays(np.bool_, shape))
    return (draw(s.reals(shape)), keep / (1 - p)), {}


spec("sigmoid", unary(lambda sh: s.reals(sh, 5.0)), lambda x: 1 / (1 + np.exp(-x)))
spec("tanh", unary(s.reals), np.tanh, complex_step=True)
_KINK = (np.array([-1.0, 0.0, 1.0]),)
spec("relu", unary(s.nonzero), lambda x: np.maximum(x, 0), kinks="at 0 (relu'(0) = 0): |x| >= 0.3",
     kink_examples=((_KINK, {}, (np.array([0.0, 0.0, 1.0]),)),))
spec("leaky_relu", unary(s.nonzero, negative_slope=st.sampled_from([0.01, 0.2])),
     lambda x, negative_slope: np.where(x > 0, x, negative_slope * x),
     kinks="at 0 (derivative there = negative_slope): |x| >= 0.3",
     kink_examples=((_KINK, {"negative_slope": 0.2}, (np.array([0.2, 0.2, 1.0]),)),))
spec("elu", unary(s.nonzero, alpha=st.sampled_from([1.0, 0.5])),
     lambda x, alpha: np.where(x > 0, x, alpha * (np.exp(x) - 1)),
     kinks="at 0 when alpha != 1 (derivative there = alpha): |x| >= 0.3",
     kink_examples=((_KINK, {"alpha": 0.5}, (np.array([0.5 * np.exp(-1.0), 0.5, 1.0]),)),))
spec("softplus", unary(lambda sh: s.reals(sh, 5.0)), lambda x: np.log1p(np.exp(x)))
spec("gelu", unary(s.reals, approximate=st.sampled_from(["tanh", "none"])), _gelu_ref)
spec("softmax", _along_axis(s.reals), _softmax_ref)
spec("log_softmax", _along_axis(s.reals), lambda x, axis: np.log(_softmax_ref(x, axis)))
spec("dropout", _dropout_sample(), lambda x, mask: x * mask,
     kinks="none (the mask is a non-differentiable input)", complex_step=True)

# --- losses --------------------------------------------------------------------------------


def _mse_ref(pred: np.ndarray, target: np.ndarray, reduction: str) -> np.ndarray:
    sq = (pred - target) ** 2
    return {"mean": sq.mean, "sum": sq.sum, "none": lambda: sq}[reduction]()


@st.composite
def _mse_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes())
    return ((draw(s.reals(shape)), draw(s.reals(shape))),
            {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))})


@st.composite
def _sce_sample(draw: st.DrawFn) -> Sample:
    classes = draw(st.integers(2, 5))
    batch = draw(s.shapes(min_dims=0, max_dims=2))
    z = draw(s.reals(batch + (classes,), 4.0))
    y = draw(st.one_of(s.labels(batch, classes), s.probabilities(batch + (classes,))))
    return (z, y), {"reduction": draw(st.sampled_from(["mean", "sum", "none"])),
                    "label_smoothing": draw(st.sampled_from([0.0, 0.1]))}


def _sce_ref(z: np.ndarray, y: np.ndarray, reduction: str, label_smoothing: float) -> np.ndarray:
    C = z.shape[-1]
    t = np.eye(C)[y] if y.dtype.kind in "iu" else y
    t = (1 - label_smoothing) * t + label_smoothing / C
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    per_row = -(t * log_p).sum(axis=-1)
    return {"mean": per_row.mean, "sum": per_row.sum, "none": lambda: per_row}[reduction]()


@st.composite
def _bce_sample(draw: st.DrawFn) -> Sample:
    shape = draw(s.shapes(min_dims=1))
    z = draw(s.reals(shape, 5.0))
    y = draw(st.one_of(s.values(shape, 0.0, 1.0), s.hnp.arrays(np.int64, shape, elements=st.integers(0, 1))))
    return (z, y), {"reduction": draw(st.sampled_from(["mean", "sum", "none", "batchmean"]))}


def _bce_ref(z: np.ndarray, y: np.ndarray, reduction: str) -> np.ndarray:
    p = 1 / (1 + np.exp(-z))
    per = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    if reduction == "batchmean":
        return per.sum() / z.shape[0]
    return {"mean": per.mean, "sum": per.sum, "none": lambda: per}[reduction]()


spec("mse", _mse_sample(), _mse_ref, complex_step=True)
spec("softmax_cross_entropy", _sce_sample(), _sce_ref,
     kinks="none (targets are not differentiable)")
spec("sigmoid_binary_cross_entropy", _bce_sample(), _bce_ref,
     kinks="none (targets are not differentiable)")
