"""Function transforms over the graph: ``grad`` (reverse mode without touching ``.grad``),
``vjp``, and ``jvp`` (forward mode, driven by each op's JVP rule).

Arguments are checked before any work: as many gradient outputs as outputs, each of its
output's exact shape (no silent broadcasting), inputs that require grad and take part in
the graph (``allow_unused=True`` gives zeros for the ones that do not).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import graph
from .memory import GradientStore
from .modes import STATE, enable_grad
from .tensor import Tensor


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def gradients(outputs: Sequence[Tensor], seeds: Sequence[np.ndarray], inputs: Sequence[Tensor],
              retain_graph: bool = False) -> list[np.ndarray | None]:
    """d(outputs)/d(input) contracted with ``seeds``, for each input: None for an input no
    gradient reaches. The arrays are the caller's (copied where the pass shares them)."""
    wanted = {id(t) for t in inputs}
    found: dict[int, np.ndarray] = {}
    for tensor, grad, _, _ in graph.backward_steps(outputs, seeds, retain_graph=retain_graph):
        if id(tensor) in wanted:
            found[id(tensor)] = grad
    store = GradientStore(seeds)
    return [None if id(t) not in found else store.own(found[id(t)], t.dtype) for t in inputs]


def _seeds(what: str, outs: tuple[Tensor, ...], grad_outputs: Any) -> list[np.ndarray]:
    if grad_outputs is None:
        for o in outs:
            if o.size != 1:
                raise ValueError(f"{what}: output of shape {o.shape} is not a scalar; pass "
                                 f"grad_outputs (one array of its shape per output)")
        return [np.ones_like(o._data) for o in outs]
    given = _as_tuple(grad_outputs)
    if len(given) != len(outs):
        raise ValueError(f"{what}: {len(given)} gradient outputs for {len(outs)} outputs")
    return [_matching(what, f"gradient output {i}", g, f"output {i}", o, copy=False)
            for i, (g, o) in enumerate(zip(given, outs, strict=True))]


def _matching(what: str, name: str, value: Any, partner: str, like: Tensor, copy: bool) -> np.ndarray:
    """``value`` (a Tensor or array-like: a seed or a tangent) as an array of ``like``'s
    shape and dtype, or a clear error naming ``what``, the value and its ``partner``."""
    arr = np.asarray(value._data if isinstance(value, Tensor) else value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what}: {name} must be numeric, got dtype {arr.dtype}")
    if arr.shape != like.shape:
        raise ValueError(f"{what}: {name} has shape {arr.shape} but {partner} has shape {like.shape}")
    return arr.astype(like.dtype, copy=copy)


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool = False,
         allow_unused: bool = False) -> tuple[np.ndarray, ...]:
    """d(outputs)/d(inputs) contracted with ``grad_outputs`` (ones for scalar outputs),
    like ``torch.autograd.grad``; ``.grad`` is not touched. An input no gradient reaches is
    an error, or gets zeros with ``allow_unused=True``."""
    outs, ins = _as_tuple(outputs), _as_tuple(inputs)
    for i, o in enumerate(outs):
        if not isinstance(o, Tensor):
            raise TypeError(f"grad: output {i} must be a Tensor, got {type(o).__name__}")
        if not o.requires_grad:
            raise RuntimeError(f"grad: output {i} does not require grad (no graph to "
                               f"differentiate; was it computed under no_grad()?)")
    for i, t in enumerate(ins):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: input {i} must be a Tensor, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError(f"grad: input {i} ({t.describe()}) does not require grad")
    seeds = _seeds("grad", outs, grad_outputs)
    found = gradients(outs, seeds, ins, retain_graph=retain_graph)
    result = []
    for i, (g, t) in enumerate(zip(found, ins, strict=True)):
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad: input {i} ({t.describe()}) is not used in the graph "
                                   f"of the outputs, so no gradient reaches it; pass "
                                   f"allow_unused=True to get zeros for it")
            g = np.zeros_like(t._data)
        result.append(g)
    return tuple(result)


def _leaf(x: Any, what: str, i: int) -> Tensor:
    """A fresh leaf of ``x``'s values: the function is differentiated at them, and nothing
    flows back to ``x``. Inside another transform's function, a primal that requires grad
    (the outer transform's leaf, or computed from it) is refused: the transforms do not
    nest, and jvp of vjp's output (or vjp of jvp's) gave zero derivatives, silently."""
    if STATE.transform_leaves and isinstance(x, Tensor) and x.requires_grad:
        raise RuntimeError(
            f"{what}: primal {i} ({x.describe()}) requires grad, in a function another "
            f"transform is running: transforms do not nest (the inner one differentiates at a "
            f"fresh copy of the values, and the outer one would see zero derivatives)")
    data = x._data if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind != "f":
        raise TypeError(f"{what}: primal {i} must be floating point, got dtype {data.dtype}")
    return Tensor(data, requires_grad=True)


def _run(fn: Callable[..., Any], leaves: list[Tensor]) -> Any:
    """``fn(*leaves)`` with the graph recorded, counted as a transform running in this
    thread (``STATE.transform_leaves``: its leaves noted, for ``_leaf`` and for a backward
    pass inside fn that reaches them, which ``graph.backward_steps`` refuses)."""
    outer = STATE.transform_leaves
    STATE.transform_leaves = outer + (frozenset(map(id, leaves)),)
    try:
        with enable_grad():
            return fn(*leaves)
    finally:
        STATE.transform_leaves = outer


def vjp(fn: Callable[..., Any], *primals: Any) -> tuple[Any, Callable[[Any], tuple[np.ndarray, ...]]]:
    """Run ``fn(*primals)`` and return ``(outputs, vjp_fn)``, as ``jax.vjp`` and
    ``torch.func.vjp``: the primals are separate arguments, ``vjp(f, x, y)``.

    ``vjp_fn(cotangents)`` (one array per output, each of its output's shape; a single
    array for a single output) gives the gradient of ``<cotangents, outputs>`` with respect to
    each primal, as a tuple with one numpy array per primal (zeros for a primal the outputs
    do not depend on); it may be called many times::

        out, vjp_fn = engine.vjp(lambda a, b: (a @ b).tanh(), a, b)
        grad_a, grad_b = vjp_fn(np.ones(out.shape))

    A primal is a Tensor or an array of floats; a tuple or list is refused (the earlier
    form ``vjp(f, (x, y))`` would otherwise run ``f`` on one stacked array).
    """
    for i, p in enumerate(primals):
        if isinstance(p, (tuple, list)):
            raise TypeError(f"vjp: primal {i} is a {type(p).__name__}; pass each primal as its "
                            f"own argument, vjp(fn, x, y), as jax.vjp and torch.func.vjp do "
                            f"(np.asarray it first if it is one array)")
    leaves = [_leaf(p, "vjp", i) for i, p in enumerate(primals)]
    outputs = _run(fn, leaves)
    outs = _as_tuple(outputs)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"vjp: fn must return Tensors, got {type(o).__name__}")

    def vjp_fn(cotangents: Any) -> tuple[np.ndarray, ...]:
        seeds = _seeds("vjp", outs, cotangents)
        live = [(o, s) for o, s in zip(outs, seeds, strict=True) if o.requires_grad]
        found = gradients([o for o, _ in live], [s for _, s in live], leaves,
                          retain_graph=True) if live else [None] * len(leaves)
        return tuple(np.zeros_like(x._data) if g is None else g for g, x in zip(found, leaves, strict=True))

    return outputs, vjp_fn


def jvp(fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode: run ``fn(*primals)`` and push ``tangents`` through each op's JVP rule.

    Returns ``(outputs, output_tangents)``: outputs as fn returned them (Tensor or tuple of
    Tensors) and the directional derivatives J·tangents as numpy arrays of the same structure.
    """
    primals, tangents = _as_tuple(primals), _as_tuple(tangents)
    for i, p in enumerate(primals):
        if isinstance(p, (tuple, list)):
            raise TypeError(f"jvp: primal {i} is a {type(p).__name__}; each primal is one Tensor "
                            f"or array (it would run fn on one stacked array), as jax.jvp takes "
                            f"them: jvp(fn, (x, y), (dx, dy))")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    leaves = [_leaf(p, "jvp", i) for i, p in enumerate(primals)]
    seeds = {id(x): _matching("jvp", f"tangent {i}", t, "its primal", x, copy=True)
             for i, (x, t) in enumerate(zip(leaves, tangents, strict=True))}
    outputs = _run(fn, leaves)
    outs = _as_tuple(outputs)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"jvp: fn must return Tensors, got {type(o).__name__}")
    # Independent arrays, handed out as gradients are: a linear op's tangent may be a view
    # of another output's (reshape), and an output returned twice has one array.
    store = GradientStore(())
    out_tangents = [store.own(t, o.dtype)
                    for t, o in zip(graph.forward_tangents(list(outs), seeds), outs, strict=True)]
    if isinstance(outputs, list):                  # the structure fn returned, as in jax.jvp
        return outputs, out_tangents
    if isinstance(outputs, tuple):
        return outputs, tuple(out_tangents)
    return outputs, out_tangents[0]
