"""Function transforms over the graph: ``grad`` (reverse mode, no side effects), ``vjp``
and ``jvp`` (forward mode, driven by each op's JVP rule)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import graph
from .tensor import Tensor


def _as_tuple(x: Any) -> tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _leaf(x: Any, what: str, i: int) -> Tensor:
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind != "f":
        raise TypeError(f"{what}: primal {i} must be floating point, got dtype {data.dtype}")
    return Tensor(data, requires_grad=True)


def _tangent(t: Any, primal: Tensor, what: str, i: int) -> np.ndarray:
    arr = np.asarray(t.data if isinstance(t, Tensor) else t)
    if arr.shape != primal.shape:
        raise ValueError(f"{what}: tangent {i} has shape {arr.shape} but its primal has shape "
                         f"{primal.shape}")
    return arr.astype(primal.dtype, copy=False)


def grad(outputs: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor],
         grad_outputs: Any = None, retain_graph: bool = False) -> tuple[np.ndarray, ...]:
    """d(outputs)/d(inputs) contracted with ``grad_outputs`` (ones for a scalar output),
    like ``torch.autograd.grad``. Leaves' ``.grad`` are not touched. An input the outputs
    do not depend on gets a zero gradient."""
    outs = _as_tuple(outputs)
    ins = _as_tuple(inputs)
    if grad_outputs is None:
        for o in outs:
            if o.size != 1:
                raise ValueError(f"grad: output of shape {o.shape} is not a scalar; pass grad_outputs")
        gouts = [np.ones_like(o.data) for o in outs]
    else:
        gouts = [np.asarray(g.data if isinstance(g, Tensor) else g, dtype=o.dtype)
                 for g, o in zip(_as_tuple(grad_outputs), outs)]
    for o in outs:
        if not o.requires_grad:
            raise RuntimeError("grad: an output does not require grad (no graph to differentiate)")
    found = graph.backward(list(outs), gouts, retain_graph=retain_graph, inputs=list(ins))
    assert found is not None
    return tuple(np.zeros_like(t.data) if g is None else g for g, t in zip(found, ins))


def vjp(fn: Callable[..., Any], primals: Sequence[Any]) -> tuple[Any, Callable[[Any], tuple[np.ndarray, ...]]]:
    """Run ``fn(*primals)`` and return ``(outputs, vjp_fn)``; ``vjp_fn(cotangent)`` gives
    the gradient of <cotangent, outputs> with respect to each primal (may be called many times)."""
    leaves = [_leaf(p, "vjp", i) for i, p in enumerate(_as_tuple(primals))]
    with graph.enable_grad():
        outputs = fn(*leaves)

    def vjp_fn(cotangents: Any) -> tuple[np.ndarray, ...]:
        return grad(outputs, leaves, grad_outputs=cotangents, retain_graph=True)

    return outputs, vjp_fn


def jvp(fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]) -> tuple[Any, Any]:
    """Forward mode: run ``fn(*primals)`` and push ``tangents`` through each op's JVP rule.

    Returns ``(outputs, output_tangents)``: outputs as fn returned them (Tensor or tuple of
    Tensors) and the directional derivatives J·tangents as numpy arrays of the same structure.
    """
    primals, tangents = _as_tuple(primals), _as_tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    leaves = [_leaf(p, "jvp", i) for i, p in enumerate(primals)]
    seeds = {id(x): _tangent(t, x, "jvp", i) for i, (x, t) in enumerate(zip(leaves, tangents))}
    with graph.enable_grad():
        outputs = fn(*leaves)
    outs = _as_tuple(outputs)
    for o in outs:
        if not isinstance(o, Tensor):
            raise TypeError(f"jvp: fn must return Tensors, got {type(o).__name__}")
    out_tangents = graph.forward_tangents(list(outs), seeds)
    if isinstance(outputs, (tuple, list)):
        return outputs, tuple(out_tangents)
    return outputs, out_tangents[0]
