"""A Plan's program turned into two plain Python functions, for speed.

``engine.capture`` records a program: forward instructions and the backward walk, over
numbered slots (see ``capture.py``). Interpreting that list at every replay costs Python
work per instruction: building argument lists, unpacking tuples, testing flags. This module
writes the same program out once as Python source, one line per step, and compiles it:

    def forward(inputs):
        v0 = inputs[0]
        ...                                   (the input and parameter checks)
        v4 = linear_forward(node4, v0, v2, v3)
        v5 = relu_forward(node5, v4)
        ...
    def backward(on_grad):
        g9 = ones(shape9, float32)
        r = softmax_cross_entropy_backward(node9, g9); node9.saved = ()
        ...
        on_grad(0, g7)                        (a parameter's gradient is final)

``linear_forward`` is the op's own ``forward`` rule, ``linear_backward`` its ``backward``
rule and ``node4`` the context the rules save into and read from: the generated code calls
the very rules the eager engine calls, in the order the capture recorded, so it computes
the same numbers bit for bit. Only the interpreting is left out: every check a replay makes
(input shapes and dtypes, outside tensors' shapes and dtypes, value-reading checks, array
types, gradient dtypes) is written out too. ``Plan.code()`` returns the source.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from .capture import Plan


def _bad_input(k: int, a: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    raise ValueError(f"plan: input {k} has shape {a.shape} dtype {a.dtype}, but the plan was "
                     f"captured for shape {shape} dtype {dtype}; capture another plan for it")


def _bad_outside(tensor: Any, a: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    raise ValueError(f"plan: {tensor.describe()} now has shape {a.shape} dtype {a.dtype}; it "
                     f"was captured with shape {shape} dtype {dtype}")


def _as_array(a: Any) -> np.ndarray:
    return np.asarray(a._data if hasattr(a, "_data") else a)


def build(plan: "Plan") -> tuple[Callable[..., list[np.ndarray]], Callable[..., None] | None, str]:
    """(forward(inputs), backward(on_grad) or None, source) for ``plan``."""
    ns: dict[str, Any] = {"ndarray": np.ndarray, "asarray": np.asarray, "ones": np.ones,
                          "_as_array": _as_array, "_bad_input": _bad_input,
                          "_bad_outside": _bad_outside}

    def name(wanted: str, value: Any) -> str:
        """A name in the generated code's namespace for ``value`` (``wanted`` if free)."""
        wanted = re.sub(r"\W", "_", wanted)
        if wanted in ns and ns[wanted] is not value:
            wanted = f"{wanted}_{len(ns)}"
        ns[wanted] = value
        return wanted

    rules: dict[tuple[int, str], str] = {}

    def rule(op: Any, kind: str) -> str:
        """One name per op and rule (``linear_forward``), shared by all its nodes."""
        key = (id(op), kind)
        if key not in rules:
            rules[key] = name(f"{op.name}_{kind}", getattr(op, kind))
        return rules[key]

    def dt(d: Any) -> str:
        return name(np.dtype(d).name, np.dtype(d))

    f = ["def forward(inputs):",
         f"    if len(inputs) != {len(plan.input_slots)}:",
         f"        raise TypeError(f'plan: takes {len(plan.input_slots)} input arrays, got "
         f"{{len(inputs)}}')"]
    for k, (slot, (shape, dtype)) in enumerate(zip(plan.input_slots, plan.input_specs)):
        s, d = name(f"shape{slot}", shape), dt(dtype)
        f += [f"    v{slot} = inputs[{k}]",
              f"    if type(v{slot}) is not ndarray: v{slot} = _as_array(v{slot})",
              f"    if v{slot}.shape != {s} or v{slot}.dtype != {d}: "
              f"_bad_input({k}, v{slot}, {s}, {d})"]
    for slot, tensor, shape, dtype in plan.outside:
        t, s, d = name(f"tensor{slot}", tensor), name(f"shape{slot}", shape), dt(dtype)
        f += [f"    v{slot} = {t}._data",
              f"    if v{slot}.shape != {s} or v{slot}.dtype != {d}: "
              f"_bad_outside({t}, v{slot}, {s}, {d})"]
    for slot, array in plan.constants:
        f.append(f"    v{slot} = {name(f'constant{slot}', array)}")
    node_name: dict[int, str] = {}
    for op, ctx, ins, out, check in plan.forward:
        args = ", ".join(f"v{i}" for i in ins)
        kw = f", **{name(f'params{out}', ctx.params)}" if ctx.params else ""
        if check:
            f.append(f"    {rule(op, 'check')}({args}{kw})")
        node_name[id(ctx)] = name(f"node{out}", ctx)
        f += [f"    v{out} = {rule(op, 'forward')}({node_name[id(ctx)]}, {args}{kw})",
              f"    if type(v{out}) is not ndarray: v{out} = asarray(v{out})"]
    f.append(f"    return [{', '.join(f'v{s}' for s in plan.output_slots)}]")

    b: list[str] = []
    if plan.root is not None:
        root = plan.root
        root_shape, root_dtype = plan.root_spec
        receiving = sorted({t[0] for _, ctx, targets in plan.backward if ctx is not None
                            for t in targets if t is not None})
        b = ["def backward(on_grad):",
             f"    g{root} = ones({name(f'shape{root}', root_shape)}, {dt(root_dtype)})"]
        if receiving:
            b.append("    " + " = ".join(f"g{s}" for s in receiving) + " = None")
        for slot, ctx, targets in plan.backward:
            if ctx is None:
                b.append(f"    on_grad({plan.leaf_of_slot[slot]}, g{slot}); g{slot} = None")
                continue
            c = node_name[id(ctx)]
            b.append(f"    r = {rule(ctx.op, 'backward')}({c}, g{slot}); "
                     f"{c}.saved = (); g{slot} = None")
            for i, target in enumerate(targets):
                if target is None:
                    continue
                into, d = target[0], dt(target[1])
                b += [f"    t = r[{i}]",
                      "    if t is not None:",
                      "        if type(t) is not ndarray: t = asarray(t)",
                      f"        if t.dtype != {d}: t = t.astype({d})",
                      f"        g{into} = t if g{into} is None else g{into} + t"]
    source = "\n".join(f + [""] + b)
    exec(compile(source, "<handgrad plan>", "exec"), ns)  # noqa: S102 - our own generated code
    return ns["forward"], ns.get("backward"), source
