"""A Plan's program written out, from its instruction records: as two plain Python
functions a replay runs, and as the numbered listing ``Plan.source()`` shows.

``engine.capture`` records a program: forward instructions and the backward walk, over
numbered slots (``plan_format.py``). Interpreting that list at every replay costs Python
work per instruction: building argument lists, reading records, testing flags. This module
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
(input shapes and dtypes, outside tensors' shapes and dtypes, the ops' value validation
(``Op.validate``), array types, gradient dtypes) is written out too; an op's ``check``
reads only shapes, dtypes and parameters, which the capture proved, and is not run again.
``Plan.code()`` returns the source.

``listing`` writes the same records for people, one numbered line per instruction, the
backward pass as the from-scratch derivations write it (``g_t1 = relu.backward(g_t2)``).

A long program is written as several functions of ``CHUNK`` steps each, compiled one at a
time, which ``forward`` and ``backward`` call in order, handing on the variables a later
part uses: compiling one function of 100,000 steps took the compiler about 4 GB.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from .plan_format import BackwardInstruction, LeafGradient, ValueInstruction

if TYPE_CHECKING:  # pragma: no cover
    from .capture import Plan


def _bad_input(k: int, a: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> None:
    raise ValueError(f"plan: input {k} has shape {a.shape} dtype {a.dtype}, but the plan was "
                     f"captured for shape {shape} dtype {dtype}; capture another plan for it")


def _bad_outside(tensor: Any, a: np.ndarray, shape: tuple[int, ...], dtype: np.dtype,
                 requires_grad: bool) -> None:
    if tensor._requires_grad is not requires_grad:
        raise ValueError(f"plan: {tensor.describe()} now has requires_grad="
                         f"{tensor._requires_grad}; it was captured with requires_grad="
                         f"{requires_grad}, which decided its gradient. Capture another plan")
    name = f" {tensor.name!r}" if tensor.name else ""      # describe() would say the new shape too
    raise ValueError(f"plan: {type(tensor).__name__}{name} now has shape {a.shape} dtype {a.dtype}; "
                     f"it was captured with shape {shape} dtype {dtype}; capture another plan")


def _as_array(a: Any) -> np.ndarray:
    """A replay input's array. A tensor that requires grad is refused, as the capture
    refuses one: the plan gives inputs no gradient, so it would stay None unseen."""
    if getattr(a, "_requires_grad", False):
        raise ValueError(f"plan: {a.describe()} requires grad; plan inputs are data and get "
                         f"no gradient (pass it detached, or read it inside fn as a parameter)")
    return np.asarray(a._data if hasattr(a, "_data") else a)


# Statements per generated function. One function of N statements costs the compiler
# memory in proportion to N (about 40 KB per op: 100,000 ops ran out of memory); with
# chunks of this size the compiler's share of a capture's peak is a fixed few MB. A replay
# pays one call per chunk.
CHUNK = 200

# One step of a generated function: its lines, and the variables (v<slot>, g<slot>) it uses.
Block = tuple


def build(plan: "Plan") -> tuple[Callable[..., list[np.ndarray]], Callable[..., None] | None]:
    """(forward(inputs), backward(on_grad) or None) for ``plan``: the generated functions."""
    pieces, ns = _generate(plan)
    for piece in pieces:    # one compile per function: the compiler's memory stays small
        exec(compile(piece, "<handgrad plan>", "exec"), ns)  # noqa: S102 - our own code
    return ns["forward"], ns.get("backward")


def source(plan: "Plan") -> str:
    """The Python source ``build`` compiles for ``plan`` (written out again on request,
    not kept: on a long program it is a good part of the plan's memory)."""
    return "\n".join(_generate(plan)[0])


def _generate(plan: "Plan") -> tuple[list[str], dict[str, Any]]:
    """The generated functions' sources, one per function, and the namespace they run in
    (the rules, nodes, shapes and dtypes they name)."""
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

    node_name: dict[int, str] = {}
    pieces = _function("forward", "inputs", _forward_blocks(plan, name, rule, dt, node_name),
                       set())
    if plan.root is not None:
        backward, receiving = _backward_blocks(plan, name, rule, dt, node_name)
        pieces += _function("backward", "on_grad", backward, receiving)
    return pieces, ns


def _forward_blocks(plan: "Plan", name: Callable[..., str], rule: Callable[..., str],
                    dt: Callable[..., str], node_name: dict[int, str]) -> list[Block]:
    """The forward program: input checks, outside tensors read live (and checked), the
    constants, one rule call per op, and the return of the outputs."""
    n = len(plan.input_slots)
    blocks: list[Block] = [([f"    if len(inputs) != {n}:",
                             f"        raise TypeError(f'plan: takes {n} input arrays, got "
                             f"{{len(inputs)}}')"], ())]
    for k, (slot, (shape, dtype)) in enumerate(zip(plan.input_slots, plan.input_specs, strict=True)):
        s, d = name(f"shape{slot}", shape), dt(dtype)
        blocks.append(([f"    v{slot} = inputs[{k}]",
                        f"    if type(v{slot}) is not ndarray: v{slot} = _as_array(v{slot})",
                        f"    if v{slot}.shape != {s} or v{slot}.dtype != {d}: "
                        f"_bad_input({k}, v{slot}, {s}, {d})"], (f"v{slot}",)))
    for slot, tensor, shape, dtype, requires_grad in plan.outside:
        t, s, d = name(f"tensor{slot}", tensor), name(f"shape{slot}", shape), dt(dtype)
        # A plan with a backward pass decided which gradients to compute from each
        # tensor's requires_grad: a tensor frozen (or unfrozen) since is an error.
        flag = f" or {t}._requires_grad is not {requires_grad}" if plan.root is not None else ""
        blocks.append(([f"    v{slot} = {t}._data",
                        f"    if v{slot}.shape != {s} or v{slot}.dtype != {d}{flag}: "
                        f"_bad_outside({t}, v{slot}, {s}, {d}, {requires_grad})"], (f"v{slot}",)))
    for slot, array in plan.constants:
        blocks.append(([f"    v{slot} = {name(f'constant{slot}', array)}"], (f"v{slot}",)))
    walked = {id(step.context) for step in plan.backward if isinstance(step, BackwardInstruction)}
    for step in plan.forward:
        args = ", ".join(f"v{i}" for i in step.inputs)
        out = step.output
        if isinstance(step, ValueInstruction):       # made without an op: no context
            blocks.append(([f"    v{out} = {name(step.name, step.function)}({args})",
                            f"    if type(v{out}) is not ndarray: v{out} = asarray(v{out})"],
                           tuple(f"v{i}" for i in step.inputs) + (f"v{out}",)))
            continue
        ctx = step.context
        kw = f", **{name(f'params{out}', ctx.params)}" if ctx.params else ""
        lines = [f"    {rule(step.op, 'validate')}({args}{kw})"] if step.validate else []
        c = node_name[id(ctx)] = name(f"node{out}", ctx)
        # Saves add to a context. The backward empties those on its walk after their rule
        # (and Plan.run_forward all of them after a replay without one); others, here.
        empty = "" if id(ctx) in walked else f"{c}.saved = (); "
        lines += [f"    {empty}v{out} = {rule(step.op, 'forward')}({c}, {args}{kw})",
                  f"    if type(v{out}) is not ndarray: v{out} = asarray(v{out})"]
        blocks.append((lines, tuple(f"v{i}" for i in step.inputs) + (f"v{out}",)))
    outputs = [f"v{s}" for s in plan.output_slots]
    blocks.append(([f"    return [{', '.join(outputs)}]"], tuple(outputs)))
    return blocks


def _backward_blocks(plan: "Plan", name: Callable[..., str], rule: Callable[..., str],
                     dt: Callable[..., str], node_name: dict[int, str]
                     ) -> tuple[list[Block], set[str]]:
    """The backward walk as recorded: the seed, one backward rule call per node (each
    gradient summed into its input's variable, in the recorded order), each leaf's
    gradient handed to ``on_grad`` when final. Also the variables that receive sums."""
    root = plan.root
    root_shape, root_dtype = plan.root_spec
    blocks: list[Block] = [([f"    g{root} = ones({name(f'shape{root}', root_shape)}, "
                             f"{dt(root_dtype)})"], (f"g{root}",))]
    receiving: set[str] = set()
    for step in plan.backward:
        slot = step.slot
        if isinstance(step, LeafGradient):
            blocks.append(([f"    on_grad({step.leaf}, g{slot}); g{slot} = None"],
                           (f"g{slot}",)))
            continue
        c = node_name[id(step.context)]
        lines = [f"    r = {rule(step.op, 'backward')}({c}, g{slot}); {c}.saved = (); "
                 f"g{slot} = None"]
        used = [f"g{slot}"]
        for i, target in enumerate(step.targets):
            if target is None:
                continue
            into, d = target.slot, dt(target.dtype)
            lines += [f"    t = r[{i}]",
                      "    if t is not None:",
                      "        if type(t) is not ndarray: t = asarray(t)",
                      f"        if t.dtype != {d}: t = t.astype({d})",
                      f"        g{into} = t if g{into} is None else g{into} + t"]
            used.append(f"g{into}")
            receiving.add(f"g{into}")
        blocks.append((lines, tuple(used)))
    return blocks, receiving


def _function(fname: str, arg: str, blocks: list[Block], receiving: set[str]) -> list[str]:
    """The sources of ``def fname(arg)`` running ``blocks`` in order (and of its parts).
    Up to ``CHUNK`` blocks it is one function; beyond, ``fname`` calls one function per ``CHUNK`` blocks, in
    order, handing over in a list ``s`` each variable a later chunk uses (a chunk takes a
    variable out of the list when it starts, so a gradient is freed as soon as its last
    user is done with it). Variables in ``receiving`` are set to None before their first
    use (gradients are summed into them)."""
    chunks = [blocks[i:i + CHUNK] for i in range(0, len(blocks), CHUNK)] or [[]]
    if len(chunks) == 1:
        cleared = sorted(receiving, key=_slot_order)
        head = [f"def {fname}({arg}):"] + (["    " + " = ".join(cleared) + " = None"] if cleared else [])
        return ["\n".join(head + [line for lines, _ in chunks[0] for line in lines]) + "\n"]
    used = [{v for _, refs in chunk for v in refs} for chunk in chunks]
    first: dict[str, int] = {}          # the first and the last chunk using each variable
    last: dict[str, int] = {}
    for k, u in enumerate(used):
        for v in u:
            first.setdefault(v, k)
            last[v] = k
    index: dict[str, int] = {}
    out: list[str] = []
    for k, chunk in enumerate(chunks):
        taken = sorted((v for v in used[k] if first[v] < k), key=_slot_order)
        fresh = sorted((v for v in used[k] if first[v] == k and v in receiving), key=_slot_order)
        handed = sorted((v for v in used[k] if last[v] > k), key=_slot_order)
        for v in handed:
            index.setdefault(v, len(index))
        lines = [f"def {fname}_{k}(s, {arg}):"]
        lines += [f"    {v} = s[{index[v]}]; s[{index[v]}] = None" for v in taken]
        if fresh:
            lines.append("    " + " = ".join(fresh) + " = None")
        lines += [line for block_lines, _ in chunk for line in block_lines]
        lines += [f"    s[{index[v]}] = {v}" for v in handed]     # none after a return
        out.append("\n".join(lines) + "\n")
    calls = [f"    {fname}_{k}(s, {arg})" for k in range(len(chunks) - 1)]
    main = [f"def {fname}({arg}):", f"    s = [None] * {len(index)}", *calls,
            f"    return {fname}_{len(chunks) - 1}(s, {arg})"]
    return out + ["\n".join(main) + "\n"]


def _slot_order(var: str) -> int:
    return int(var[1:])


# --- the listing --------------------------------------------------------------------------

def listing(plan: "Plan", extra: Sequence[str] = ()) -> str:
    """The program for people, one numbered line per instruction: the forward pass, then
    the backward pass written out (``g_t3 = relu.backward(g_t4)``; ``g_x +=`` where a
    gradient is summed into one that already holds a part, ``g_x (+)`` in a tuple), then
    the ``extra`` lines."""
    results = {step.output: f"t{k}" for k, step in enumerate(plan.forward, 1)}
    # A constant reads as its value (``mul(0.1, t1)``); an outside tensor with no name as
    # ``outside<slot>``: never a t<k>, which names the k-th result.
    results.update((slot, _short(array.item() if array.size == 1 else array))
                   for slot, array in plan.constants)

    def name(slot: int) -> str:
        return plan.names.get(slot) or results.get(slot, f"outside{slot}")

    lines = []
    for step in plan.forward:
        if isinstance(step, ValueInstruction):
            lines.append(f"{name(step.output)} = "
                         + step.text.format(*[name(i) for i in step.inputs]))
            continue
        params = [f"{k}={_short(v)}" for k, v in step.context.params.items()]
        args = ", ".join([name(i) for i in step.inputs] + ([", ".join(params)] if params else []))
        lines.append(f"{name(step.output)} = {step.op.name}({args})")
    if plan.root is not None:
        lines.append(f"g_{name(plan.root)} = 1")
        summed = {plan.root}              # slots whose gradient already holds a part
        for back in plan.backward:
            if isinstance(back, LeafGradient):
                lines.append(f"grad[{name(back.slot)}] = g_{name(back.slot)}")
            else:
                lines.append(_backward_line(back, name, summed))
    lines += list(extra)
    width = len(str(len(lines)))
    return "\n".join(f"{i:>{width}}  {line}" for i, line in enumerate(lines, 1))


def _backward_line(step: BackwardInstruction, name: Callable[[int], str], summed: set[int]) -> str:
    """``g_a, _, g_b = op.backward(g_out)``: ``_`` where no gradient flows; ``(+)`` marks a
    gradient added to one already there, ``+=`` the same for the last one."""
    parts, last_summed = [], False
    for k, target in enumerate(step.targets):
        last_summed = target is not None and target.slot in summed
        if target is None:
            parts.append("_")
        elif last_summed and k < len(step.targets) - 1:
            parts.append(f"g_{name(target.slot)} (+)")
        else:
            parts.append(f"g_{name(target.slot)}")
        if target is not None:
            summed.add(target.slot)
    assign = "+=" if last_summed else "="
    return f"{', '.join(parts)} {assign} {step.op.name}.backward(g_{name(step.slot)})"


def _short(value: Any) -> str:
    """A parameter's value as the listing shows it: arrays and Generators by kind, long
    values cut at 24 characters."""
    if isinstance(value, np.ndarray):
        return f"array{value.shape}"
    if isinstance(value, np.random.Generator):
        return "Generator"
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
