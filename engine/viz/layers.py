"""The backward pass of an MLP, layer by layer, as the derivations write it (BP1-BP4).

An MLP's graph is a chain: ``z^l = linear(a^(l-1), W^l, b^l)``, ``a^l = f(z^l)``, and a fused
loss on ``z^L``. ``mlp_layers`` finds that chain in any graph (no knowledge of ``nn``:
only the ops), and ``layer_frames`` makes one slide per equation with the actual numbers:

    BP1  δᴸ = (p − y)/N                     the output delta (the fused loss's rule;
                                            (p·Σy − y)/N when rows of y do not sum to 1)
    BP2  δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ)         the delta recursion
    BP3  ∂L/∂bˡ = Σₙ δˡ                      bias gradient: the delta summed over the batch
    BP4  ∂L/∂Wˡ = aˡ⁻¹ᵀ δˡ                   weight gradient

Every number shown comes from the engine's own backward walker (``graph.backward_steps``)
or from the forward pass; each slide also recomputes its right-hand side with numpy and
states the largest difference from the engine's gradient against a stated tolerance (the
rounding the engine's dtype allows): "equals" within it, "differs" in red beyond it, so a
student sees the formula hold, or sees that it does not. (W is stored (in, out), as in the
derivations: z = a W + b.)
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..graph import Node
from ..tensor import Tensor
from . import labels, losses, measures
from .gradients import all_gradients, backward_steps
from .thumbnails import heat_cells, heat_colours
from .view import build_view

ACTIVATIONS = ("relu", "sigmoid", "tanh", "leaky_relu", "elu", "softplus", "gelu")
FUSED_LOSSES = losses.FUSED_LOSSES
SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def sup(n: int | str) -> str:
    return str(n).translate(SUPERSCRIPT)


@dataclass
class Layer:
    """Layer l (from 1): z = a_prev W + b, then a = f(z) (no f for the output layer)."""

    index: int
    linear: Node
    a_prev: Tensor
    W: Tensor
    b: Tensor | None
    z: Tensor
    act: Node | None = None
    a: Tensor | None = None


def mlp_layers(loss: Tensor) -> list[Layer]:
    """The layers of the MLP below a fused loss, input side first; ValueError (saying what
    was found instead) when the graph is not linear → activation → ... → fused loss. A
    dropout that zeroes nothing (eval mode) after an activation is the identity, passed
    over: aˡ is its output, equal to f(zˡ)."""
    node = loss.node
    if node is None or node.op.name not in FUSED_LOSSES:
        found = "no graph" if node is None else f"op '{node.op.name}'"
        raise ValueError(f"level='layer' needs a loss made by a fused loss op "
                         f"({', '.join(FUSED_LOSSES)}), found {found}; use level='op'")
    layers: list[Layer] = []
    z = node.inputs[0]
    act: Node | None = None
    while True:
        lin = z.node
        if lin is None or lin.op.name != "linear":
            what = "an input" if lin is None else f"op '{lin.op.name}'"
            raise ValueError(f"level='layer' needs linear layers; {labels.shape_text(z.shape)} "
                             f"tensor before the activation comes from {what}; use level='op'")
        a_prev, W = lin.inputs[0], lin.inputs[1]
        b = lin.inputs[2] if len(lin.inputs) > 2 else None
        # a = f(z) of this layer is the input of the layer appended just before it
        layers.append(Layer(0, lin, a_prev, W, b, z, act,
                            None if act is None else layers[-1].a_prev))
        prev = a_prev.node
        while prev is not None and losses.identity_dropout(prev):   # a = its input
            prev = prev.inputs[0].node
        if prev is None:
            break
        if prev.op.name not in ACTIVATIONS:
            raise ValueError(_not_an_activation(prev.op.name))
        act, z = prev, prev.inputs[0]
    layers.reverse()
    for k, layer in enumerate(layers, start=1):
        layer.index = k
    return layers


def _not_an_activation(name: str) -> str:
    """Why op ``name``, found where an activation should be, stops level='layer'."""
    found = f"found op '{name}'"
    if name == "linear":
        found = ("found op 'linear' straight after another linear layer (no activation "
                 "between them, e.g. activation='identity', so there is no f′(z) for BP2)")
    elif name == "dropout":
        found += (" (a training-mode dropout, which zeroes a random mask; make the loss "
                  "again with the model in eval mode, model.eval(), where dropout is the "
                  "identity)")
    return (f"level='layer' shows elementwise activations between layers "
            f"({', '.join(ACTIVATIONS)}); {found}; use level='op'")


def fprime_formula(act: Node) -> str:
    """f′ of an activation node written as its formula, with the node's parameters
    ("σ′(z) = σ(z)(1 − σ(z))", "relu′(z) = 1[z > 0]")."""
    name, params = act.op.name, act.params
    if name == "leaky_relu":
        slope = labels.number(params.get("negative_slope", 0.01))
        return f"leaky_relu′(z) = 1 if z > 0, else {slope}"
    if name == "elu":
        return f"elu′(z) = 1 if z > 0, else {labels.number(params.get('alpha', 1.0))}·eᶻ"
    if name == "gelu":
        if params.get("approximate", "tanh") == "none":
            return "gelu′(z) = Φ(z) + z·φ(z)"
        return ("gelu′(z) = (1 + t)/2 + z(1 − t²)u′(z)/2, t = tanh(u), "
                "u = √(2/π)(z + 0.044715 z³)")
    return FPRIME[name]


FPRIME = {"relu": "relu′(z) = 1[z > 0]", "sigmoid": "σ′(z) = σ(z)(1 − σ(z))",
          "tanh": "tanh′(z) = 1 − tanh²(z)", "softplus": "softplus′(z) = σ(z)"}


def _derivative(act: Node, z: np.ndarray) -> np.ndarray:
    """f′(z) of an elementwise activation node (with its parameters), through the engine's
    own backward: the gradient of Σ f(z) is f′(z) elementwise."""
    from ..transforms import grad

    t = Tensor(z, requires_grad=True)
    (d,) = grad(act.op.apply(t, **act.params).sum(), [t])
    return d


def heat_map(a: np.ndarray) -> str:
    """A thumbnail of a big array as an inline SVG of coloured cells (blue negative, red
    positive, white 0, by |value| over the largest |value|); more than HEAT_CELLS rows
    or columns are averaged in blocks (thumbnails.py: the op view's PNGs share these
    colours). Sized in em, so it grows with the slide's text."""
    m = heat_cells(a)
    rgb = heat_colours(m)
    cells = [f'<rect x="{j}" y="{i}" width="1" height="1" fill="rgb({r},{g},{b})"/>'
             for (i, j), (r, g, b) in zip(np.ndindex(*m.shape), rgb.reshape(-1, 3).tolist(),
                                          strict=True)]
    h, w = m.shape
    scale = 8 / max(h, w)                   # the longer side 8 em
    return (f'<svg class="hg-heat" viewBox="0 0 {w} {h}" preserveAspectRatio="none" '
            f'style="width: {max(w * scale, 0.5):.3g}em; height: {max(h * scale, 0.5):.3g}em" '
            f'role="img" aria-label="heat map">{"".join(cells)}</svg>')


def _matrix(name: str, a: np.ndarray, max_elements: int, summary: str | None = None,
            digits: int = labels.DIGITS) -> str:
    """One named matrix (or vector) as an HTML table of numbers in ``digits`` significant
    digits (a vector longer than labels.VECTOR_ROW wraps into rows); if big, a heat-map
    thumbnail with its shape and norm, or the line ``summary`` when one is given
    (targets: ``target_summary``)."""
    a = np.asarray(a)
    head = f'<div class="hg-name">{html.escape(name)}</div>'
    shape = f'<div class="hg-shape">{labels.shape_text(a.shape)}</div>'
    if a.size > max_elements:
        if summary is not None:
            return f'<div>{head}{shape}<div class="hg-shape">{html.escape(summary)}</div></div>'
        norm = labels.number(measures.norm(a))
        summary = html.escape(labels.array_lines(a, 0)[0])
        return (f'<div>{head}{heat_map(a)}{shape}<div class="hg-shape">‖{html.escape(name)}‖ = '
                f'{norm}</div><div class="hg-shape">{summary}</div></div>')
    rows = labels.vector_rows(a, digits=digits) if a.ndim <= 1 else \
        [[labels.number(v, digits) for v in row] for row in a.reshape(-1, a.shape[-1])]
    body = "".join("<tr>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>" for row in rows)
    return f'<div>{head}<table class="hg-m" style="{BRACKETS}">{body}</table>{shape}</div>'


def target_summary(node: Node, y: np.ndarray) -> str | None:
    """The line that stands for a big target matrix ``y`` (rows × classes, as the fused
    loss ``node`` used it): for integer class labels of a softmax cross-entropy the count
    of each class, nₖ = #{n : labelₙ = k}, from the labels themselves (label smoothing
    changes y's rows, not how many examples each class has); for probability targets the
    column sums Σₙ yₙₖ, named as such (a sum of probabilities is no count); None (a heat
    map) when y is not rows × classes."""
    if y.ndim < 2:
        return None
    targets = np.asarray(node.inputs[1]._data)
    softmax = node.op.name == "softmax_cross_entropy"
    if softmax and targets.dtype.kind in "iu":
        counts = np.bincount(targets.reshape(-1), minlength=y.shape[-1])
        return "class counts " + ", ".join(f"{k}: {n}" for k, n in enumerate(counts.tolist()))
    sums = y.reshape(-1, y.shape[-1]).sum(axis=0)
    what = "target mass per class Σₙ y" if softmax else "Σₙ y per output"
    return f"{what} " + ", ".join(f"{k}: {labels.number(v)}" for k, v in enumerate(sums))


def layer_formula(formula: str, s: str) -> str:
    """The output delta's formula (losses.output_delta) with the layer's superscript:
    "δ = (p − y)/N, N = 4 rows" -> "δ² = (p − y)/N, N = 4 rows"; σ(z) becomes σ(z²)."""
    return formula.replace("δ", f"δ{s}", 1).replace("σ(z)", f"σ(z{s})")


# Square brackets around a matrix (the player's table has side bars; these add the short
# top and bottom strokes, so it never reads as a determinant |A|).
BRACKETS = "background: " + ", ".join(
    f"linear-gradient(currentColor, currentColor) {x} {y} / 0.35em 2px no-repeat"
    for x in ("left", "right") for y in ("top", "bottom"))


def _row(*items: str) -> str:
    return '<div class="hg-row">' + "".join(items) + "</div>"


def _op(symbol: str) -> str:
    return f'<div class="hg-op">{html.escape(symbol)}</div>'


def tolerance(engine_value: np.ndarray, scale: np.ndarray, terms: int) -> float:
    """How far a right-hand side recomputed in float64 may lie from the engine's value by
    rounding alone: 8 (terms + 2) eps of the engine's dtype times the largest ``scale``
    (the formula computed on absolute values: |a|ᵀ|δ| for aᵀδ), ``terms`` the numbers
    summed into one entry. A dot product of K terms rounds by at most about K eps/2 of
    that scale, so anything past the tolerance is a different formula, not rounding."""
    dtype = np.asarray(engine_value).dtype
    eps = float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)
    return 8 * (terms + 2) * eps * measures.finite_max(scale)


def check_line(formula: np.ndarray, engine_value: np.ndarray, what: str, scale: np.ndarray,
               terms: int) -> str:
    """Whether the numpy right-hand side equals the engine's value: "equals" with the
    largest difference when it is within the tolerance (and NaN and infinities sit at the
    same places: measures.agreement), else "differs", in red, saying where."""
    engine_value = np.asarray(engine_value)
    tol = tolerance(engine_value, scale, terms)
    found = measures.agreement(formula, engine_value, tol)
    diff, what = found.diff, html.escape(what)
    if found.equal:
        if found.non_finite:
            return (f'<div class="hg-check">the right-hand side, recomputed here with numpy, '
                    f"equals the engine's {what} (inf and nan at the same places; largest "
                    f"difference of the finite entries {diff:.1e}, within the tolerance "
                    f"{tol:.1e})</div>")
        return (f'<div class="hg-check">the right-hand side, recomputed here with numpy, equals '
                f"the engine's {what} (largest difference {diff:.1e}, within the tolerance "
                f"{tol:.1e})</div>")
    beyond = (f", more than the tolerance {tol:.1e}" if diff > tol
              else f" (the finite entries are within the tolerance {tol:.1e})")
    return (f'<div class="hg-check hg-differs">the right-hand side, recomputed here with numpy, '
            f"differs from the engine's {what}: {html.escape(found.gap())}{beyond}</div>")


def _stack(layers: list[Layer], now: int, outside: list[str]) -> str:
    """The chain of layers, layer ``now`` highlighted, each with its own formula:
    zˡ = aˡ⁻¹Wˡ + bˡ, or zˡ = aˡ⁻¹Wˡ for a layer without a bias. The input is x = a⁰
    unless the model has parameters ``outside`` the chain: then a⁰ need not be the model's
    input (frozen layers before the chain compute it without a graph), and a line says so."""
    first = "a⁰" if outside else "x = a⁰"
    boxes = [f'<span class="hg-layer">{first}</span>']
    for layer in layers:
        k = layer.index
        cls = "hg-layer hg-now" if k == now else "hg-layer"
        act = f", a{sup(k)} = {layer.act.op.name}(z{sup(k)})" if layer.act is not None else ""
        bias = f" + b{sup(k)}" if layer.b is not None else ""
        boxes.append(f'<span class="{cls}">layer {k}: z{sup(k)} = '
                     f"a{sup(k - 1)}W{sup(k)}{bias}{act}</span>")
    boxes.append('<span class="hg-layer">loss</span>')
    note = ""
    if outside:
        listed = ", ".join(outside[:4]) + (f" and {len(outside) - 4} more" if len(outside) > 4 else "")
        note = (f'<div class="hg-eq">a⁰ is the input of the first layer with a graph, not '
                f"necessarily x: the model's {html.escape(listed)} are not in this chain "
                f"(frozen layers before it, or unused); layers are numbered from it</div>")
    return '<div class="hg-stack">' + " → ".join(boxes) + "</div>" + note


def recorded(layer: Layer, which: str) -> bool:
    """Whether the graph computes a gradient for the layer's W (``which`` "W") or b: as
    ``requires_grad`` was when the forward pass recorded the node, which is what backward
    follows, not as it is now (a weight frozen after the forward pass still gets one)."""
    return layer.linear.needs_input_grad[1 if which == "W" else 2]


def _since(layer: Layer, which: str) -> str:
    """" when the graph was recorded" if the tensor requires grad now though it did not
    then (unfrozen after the forward pass), else ""."""
    tensor = layer.W if which == "W" else layer.b
    return " when the graph was recorded" if tensor is not None and tensor.requires_grad else ""


def _gradient_title(layer: Layer, layers: list[Layer], others: dict[str, list[Node]]
                    ) -> tuple[str, list[str]]:
    """The caption and lines of layer k's gradient slide: BP3 ∂L/∂bˡ = Σₙ δˡ for a bias,
    BP4 ∂L/∂Wˡ = aˡ⁻¹ᵀ δˡ for the weight, each only when it has a gradient; a frozen one
    (requires_grad=False) is said to be frozen instead: backward computes nothing for it.
    A weight or bias shared by several layers (tied weights) has the sum of their parts;
    one that ``others`` (op nodes outside the layers) also use, their parts too."""
    k, s = layer.index, sup(layer.index)
    frozen = [f"{name}{s}" for name, t in (("W", layer.W), ("b", layer.b))
              if t is not None and not recorded(layer, name)]
    equations, notes = [], []
    for which, number, tensor in (("b", "BP3", layer.b), ("W", "BP4", layer.W)):
        if tensor is None or not recorded(layer, which):
            continue
        sharing = _sharing(layer, layers, which)
        parts = [(f"Σₙ δ{sup(j)}" if which == "b" else f"a{sup(j - 1)}ᵀ δ{sup(j)}")
                 for j in sharing]
        if others[which]:
            parts.append("the parts of its other uses")
        equations.append((f"{number}: ∂L/∂{which}{s} = {' + '.join(parts)}", f"{which}{s}"))
        if len(sharing) > 1:
            notes.append(f"{which}{s} is one tensor shared by {_layer_list(sharing)}: its "
                         f"gradient is the sum of their parts")
        if others[which]:
            notes.append(_other_uses_note(f"{which}{s}", others[which], sharing))
    frozen_notes = [f"{name} is frozen (requires_grad=False{_since(layer, name[0])}): no "
                    f"gradient, so no {'BP4' if name.startswith('W') else 'BP3'}"
                    for name in frozen]
    why = [f"{name} is frozen" for name in frozen]
    if layer.b is None:
        why.append("the layer has no bias")
        frozen_notes.append("the layer has no bias")
    notes = frozen_notes + notes
    if not equations:
        return f"layer {k}: no gradients ({'; '.join(why)})", notes
    numbers = " and ".join(e.split(":")[0] for e, _ in equations)
    gradients = " and ".join(name for _, name in equations)
    plural = "s" if len(equations) > 1 else ""
    caption = f"layer {k}: {numbers} (gradient{plural} of {gradients}"
    return caption + "".join(f"; {w}" for w in why) + ")", [e for e, _ in equations] + notes


def _layer_list(numbers: list[int]) -> str:
    """"layer 1", "layers 1 and 3", "layers 1, 2 and 3"."""
    if len(numbers) == 1:
        return f"layer {numbers[0]}"
    return f"layers {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


def _other_uses_note(name: str, nodes: list[Node], sharing: list[int]) -> str:
    """Why a slide checks this layer's part only: ``name`` also feeds ``nodes``."""
    whose = _layer_list(sharing)
    return (f"{name} also feeds {uses_text(nodes)} outside the layers (tied through a "
            f"transpose, or used again): its gradient also holds those uses' parts, so this "
            f"slide shows the part from {whose} and checks it against what the linear "
            f"node{'s' if len(sharing) > 1 else ''} of {whose} sent back to {name}")


def _part(d: dict[str, Any], which: str) -> tuple[np.ndarray, np.ndarray, int, str]:
    """Layer l's part of the gradient of its ``which`` ("b": Σₙ δˡ, BP3; "W": aˡ⁻¹ᵀ δˡ,
    BP4): the value, the same on absolute values (for the tolerance), the terms summed into
    one entry, and how the slide writes it."""
    k, s = d["l"], sup(d["l"])
    d2 = d["delta"].reshape(-1, d["delta"].shape[-1]).astype(np.float64)
    if which == "b":
        return d2.sum(0), np.abs(d2).sum(0), d2.shape[0], f"Σₙ δ{s}"
    return (d["a_prev"].T.astype(np.float64) @ d2, np.abs(d["a_prev"].T) @ np.abs(d2), d2.shape[0],
            f"a{sup(k - 1)}ᵀ δ{s}")


def other_uses(view: Any, tensor: Tensor | None, layers: list[Layer], slot: int) -> list[Node]:
    """The op nodes other than the layers' linear nodes (with ``tensor`` in their weight,
    ``slot`` 1, or bias slot 2) that take ``tensor`` as an input: W tied to Wᵀ through a
    transpose, a penalty on W added to the loss. Their parts are in ∂L/∂W too."""
    if tensor is None:
        return []
    own = {id(layer.linear) for layer in layers
           if len(layer.linear.inputs) > slot and layer.linear.inputs[slot] is tensor}
    return list({id(n): n for n in view.consumers(tensor) if id(n) not in own}.values())


def uses_text(nodes: list[Node]) -> str:
    """"op 'transpose' (node #3)", listed for a note."""
    return ", ".join(f"op '{n.op.name}' (node #{n.index})" for n in nodes)


def _sharing(layer: Layer, layers: list[Layer], which: str) -> list[int]:
    """The layers (their numbers) whose W (or b) is this layer's very tensor: tied weights."""
    mine = layer.W if which == "W" else layer.b
    return sorted(other.index for other in layers
                  if (other.W if which == "W" else other.b) is mine)


def _target(d: dict[str, Any], by_layer: dict[int, dict[str, Any]], which: str,
            sharing: list[int], name: str) -> tuple[np.ndarray, str]:
    """What the sharing layers' parts add up to, and its name: the engine's gradient, or,
    when the tensor also feeds other ops (d["others"]), the parts the layers' linear
    nodes sent back to it, which the gradient sums with those uses' parts."""
    if not d["others"][which]:
        return (d["gb"] if which == "b" else d["gW"]), name
    sent = np.sum([by_layer[j]["sent"][which] for j in sharing], axis=0)
    base, _, model_name = name.partition(" (")       # "∂L/∂W¹ (layers.0.weight)"
    return sent, (f"part of {base} from {_layer_list(sharing)}"
                  + (f" ({model_name}" if model_name else ""))


def _relation(left: np.ndarray, right: np.ndarray, m: int) -> str:
    """"=" when ``left`` and ``right`` print the same (labels.DIGITS digits), else "≈":
    the engine's rounding (float16's, a sum that cancels) can show in the printed
    digits, and a picture must not put "=" between numbers that visibly differ. Arrays
    of more than ``m`` entries print no numbers (a heat map): "=", and the check line
    gives the difference."""
    if np.size(left) > m or np.size(right) > m:
        return "="
    same = [labels.number(v) for v in np.ravel(left)] == \
        [labels.number(v) for v in np.ravel(right)]
    return "=" if same else "≈"


def _approx_note(rows: list[str], dtype: np.dtype) -> list[str]:
    """A line saying what "≈" means, when one of the ``rows`` uses it."""
    if not any("≈</div>" in r for r in rows):             # an operator ending in ≈
        return []
    return [f'<div class="hg-check">≈: the two sides differ in the printed digits by '
            f"the engine's {np.dtype(dtype).name} rounding (the check gives the difference)"
            f"</div>"]


def _gradient_rows(d: dict[str, Any], by_layer: dict[int, dict[str, Any]], which: str,
                   name: str, m: int) -> list[str]:
    """BP3 (``which`` "b") or BP4 ("W") of layer l with its numbers and its check. A tensor
    shared by several layers (tied weights) gets this layer's part, then the sum of every
    sharing layer's part: what backward accumulates into its gradient (or, when it also
    feeds other ops, what these layers' linear nodes sent back: ``_target``)."""
    sharing = _sharing(d["layer"], [e["layer"] for e in by_layer.values()], which)
    shared = len(sharing) > 1
    target, target_name = _target(d, by_layer, which, sharing, name)
    value, scale, terms, text = _part(d, which)
    rows = []
    if which == "W":                                  # the product written out: aˡ⁻¹ᵀ · δˡ
        shown, shown_name = ((value, f"{text} (layer {d['l']}'s part)") if shared
                             else (target, target_name))
        rows.append(_product_row(d, value, scale, m, shown, shown_name))
    if shared:
        parts = [_part(by_layer[j], which) for j in sharing]
        terms_shown = [html_part for j, part in enumerate(parts)
                       for html_part in ([_op("+")] if j else []) + [_matrix(part[3], part[0], m)]]
        value = np.sum([part[0] for part in parts], axis=0)
        scale = np.sum([part[1] for part in parts], axis=0)
        terms = sum(part[2] for part in parts)
        rows.append(_row(*terms_shown, _op(_relation(value, target, m)),
                         _matrix(target_name, target, m)))
    elif which == "b":
        rows.append(_row(_matrix(text, value, m), _op(_relation(value, target, m)),
                         _matrix(target_name, target, m)))
    rows += _approx_note(rows, target.dtype)
    rows.append(check_line(value, target, target_name.split(" (")[0], scale, terms))
    return rows


def _product_row(d: dict[str, Any], value: np.ndarray, scale: np.ndarray, m: int,
                 shown: np.ndarray, shown_name: str) -> str:
    """BP4's aˡ⁻¹ᵀ · δˡ = ``shown``, the factors with enough digits that they give the
    printed product, and the printed δ the printed Σₙ δ (BP3), however much they cancel."""
    # δ with its batch axes flattened as aˡ⁻¹ is: (1, out) for one example given as a
    # vector, not (out,), which would print a product numpy refuses
    delta = d["delta"].reshape(-1, d["delta"].shape[-1])
    digits = labels.digits_to_sum(value, scale)
    if d["gb"] is not None:
        digits = max(digits, labels.digits_to_sum(*_part(d, "b")[:2]))
    return _row(_matrix(f"a{sup(d['l'] - 1)}ᵀ", d["a_prev"].T, m, digits=digits),
                _op("·"), _matrix(f"δ{sup(d['l'])}", delta, m, digits=digits),
                _op(_relation(value, shown, m)), _matrix(shown_name, shown, m))


def _back_row(d: dict[str, Any], s: str, sn: str, m: int) -> str:
    """BP2's first row, δˡ⁺¹ · Wˡ⁺¹ᵀ = ∂L/∂aˡ, its factors with enough digits that they
    give the printed product however much its terms cancel (as BP4's aᵀ · δ); the usual
    digits when the product is a heat map, which prints no numbers to give."""
    delta_next, W_T = d["delta_next"], d["W_next"].T
    exact = delta_next.astype(np.float64) @ W_T.astype(np.float64)
    digits = labels.digits_to_sum(exact, np.abs(delta_next) @ np.abs(W_T)) \
        if d["back"].size <= m else labels.DIGITS
    return _row(_matrix(f"δ{sn}", delta_next, m, digits=digits), _op("·"),
                _matrix(f"W{sn}ᵀ", W_T, m, digits=digits), _op(_relation(exact, d["back"], m)),
                _matrix(f"δ{sn} W{sn}ᵀ = ∂L/∂a{s}", d["back"], m))


def derivation(loss: Tensor) -> list[dict[str, Any]]:
    """The derivation's quantities for each layer, output layer first, as arrays: ``delta``
    (δˡ = ∂L/∂zˡ, from the engine's backward walker), ``a_prev`` (aˡ⁻¹), ``gW`` and ``gb``
    (the engine's ∂L/∂Wˡ, ∂L/∂bˡ); for the output layer ``p``, ``y``, ``N``, ``y_sum``
    (each row's target sum when some row does not sum to 1, else None), ``formula`` and
    ``rhs`` (BP1's right-hand side, in numpy); for a hidden layer ``delta_next``,
    ``W_next``, ``back`` (δˡ⁺¹ Wˡ⁺¹ᵀ, the engine's ∂L/∂aˡ) and ``fprime`` (f′(zˡ), through
    the engine's backward) with ``fprime_formula`` (its formula as text). The arrays are
    copies: writing them changes nothing of the graph, which is still alive."""
    if loss.size != 1 or loss.node is None:
        raise ValueError("level='layer' needs a scalar loss with its graph")
    layers = mlp_layers(loss)
    # the engine's walker, graph kept alive; a freed graph is a clear error
    steps = backward_steps(view := build_view(loss))
    grads = all_gradients(view, steps)
    sent = {id(s.node): s.sent for s in steps if s.node is not None}
    out: list[dict[str, Any]] = []
    for layer in reversed(layers):
        d: dict[str, Any] = {
            "l": layer.index, "layer": layer, "delta": grads[id(layer.z)],
            "a_prev": layer.a_prev._data.reshape(-1, layer.a_prev.shape[-1]),
            "gW": grads.get(id(layer.W)),
            "gb": grads.get(id(layer.b)) if layer.b is not None else None,
            "sent": dict(zip(("W", "b"), sent[id(layer.linear)][1:], strict=False)),
            "others": {"W": other_uses(view, layer.W, layers, 1),
                       "b": other_uses(view, layer.b, layers, 2)}}
        if layer.index == len(layers):
            out_delta = losses.output_delta(loss.node)
            d.update(p=out_delta.p, y=out_delta.y, N=out_delta.N, y_sum=out_delta.y_sum,
                     formula=out_delta.formula, rhs=out_delta.rhs(), digits=out_delta.digits())
        else:
            nxt = layers[layer.index]                    # layer l + 1
            assert layer.act is not None                 # only the output layer has none
            d.update(delta_next=grads[id(nxt.z)], W_next=nxt.W._data, back=grads[id(layer.a)],
                     fprime=_derivative(layer.act, layer.z._data), act=layer.act.op.name,
                     fprime_formula=fprime_formula(layer.act))
        # Copies: a_prev is a value the graph saved, W_next a weight's memory, and the
        # graph is alive; a write into them would change its backward pass unseen.
        d["sent"] = {k: None if v is None else np.array(v, copy=True)
                     for k, v in d["sent"].items()}
        out.append({k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v
                    for k, v in d.items()})
    return out


def layer_frames(loss: Tensor, *, model: Any = None, max_elements: int = 40) -> list[tuple[str, str]]:
    """(caption, HTML) slides: for each layer from the output to the first, BP1 (output
    layer) or BP2 (hidden layers), then BP3 (a layer with a bias) and BP4, with the actual
    numbers."""
    steps = derivation(loss)
    with np.errstate(all="ignore"):     # inf · 0 in a recomputed side is the NaN it shows
        return _slides(loss, steps, model, max_elements)


def _slides(loss: Tensor, steps: list[dict[str, Any]], model: Any, max_elements: int
            ) -> list[tuple[str, str]]:
    """``layer_frames``' slides for the derivation ``steps``."""
    assert loss.node is not None             # derivation() refused a loss without a graph
    layers = [d["layer"] for d in reversed(steps)]
    names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    chain = {id(t) for layer in layers for t in (layer.W, layer.b) if t is not None}
    outside = [n for i, n in names.items() if i not in chain]
    by_layer = {d["l"]: d for d in steps}
    reduction = loss.node.params.get("reduction", "mean")
    m = max_elements
    slides: list[tuple[str, str]] = []
    for d in steps:
        k, s = d["l"], sup(d["l"])
        delta = d["delta"]
        if "p" in d:
            name = "p = softmax(z" + s + ")" if loss.node.op.name == "softmax_cross_entropy" \
                else f"p = σ(z{s})"
            eq = f"BP1 (output delta): {layer_formula(d['formula'], s)}  (δ{s} = ∂L/∂z{s})"
            p_digits, y_digits = d["digits"]     # enough that (p − y)/N holds as printed
            sums = [] if d["y_sum"] is None else [_op("·"), _matrix("Σy", d["y_sum"], m,
                                                                    digits=p_digits)]
            y = _matrix("y", d["y"], m, target_summary(loss.node, d["y"]), y_digits)
            equals = _relation(d["rhs"], delta, m)
            body = _row(_matrix(name, d["p"], m, digits=p_digits), *sums, _op("−"), y,
                        _op(equals if d["N"] == 1 else f"÷ {labels.number(d['N'])} {equals}"),
                        _matrix(f"δ{s}", delta, m))
            body += "".join(_approx_note([body], delta.dtype))
            p_term = d["p"] if d["y_sum"] is None else d["p"] * d["y_sum"]
            check = check_line(d["rhs"], delta, f"δ{s} = ∂L/∂z{s}",
                               (np.abs(p_term) + np.abs(d["y"])) / d["N"], delta.shape[-1]) \
                if reduction in ("mean", "sum", "batchmean") else ""
        else:
            sn = sup(k + 1)
            eq = (f"BP2 (delta recursion): δ{s} = (δ{sn} W{sn}ᵀ) ⊙ f′(z{s}),  f = {d['act']}, "
                  f"{d['fprime_formula']}")
            body = (_back_row(d, s, sn, m)
                    + _row(_matrix(f"δ{sn} W{sn}ᵀ", d["back"], m), _op("⊙"),
                           _matrix(f"f′(z{s})", d["fprime"], m),
                           _op(_relation(d["back"].astype(np.float64) * d["fprime"], delta, m)),
                           _matrix(f"δ{s}", delta, m)))
            body += "".join(_approx_note([body], d["back"].dtype))
            check = check_line((d["delta_next"] @ d["W_next"].T) * d["fprime"], delta,
                               f"δ{s} = ∂L/∂z{s}",
                               (np.abs(d["delta_next"]) @ np.abs(d["W_next"].T))
                               * np.abs(d["fprime"]), d["W_next"].shape[-1])
        slides.append((f"layer {k}: {eq.split(':')[0]}",
                       f'<div class="hg-slide">{_stack(layers, k, outside)}<div class="hg-eq">'
                       f"{html.escape(eq)}</div>{body}{check}</div>"))
        wname = names.get(id(d["layer"].W), f"W{s}")
        parts = []
        if d["gb"] is not None:
            parts += _gradient_rows(d, by_layer, "b", f"∂L/∂b{s}", m)
        if d["gW"] is not None:
            parts += _gradient_rows(d, by_layer, "W", f"∂L/∂W{s} ({wname})", m)
        caption, equations = _gradient_title(d["layer"], layers, d["others"])
        eqs = "".join(f'<div class="hg-eq">{html.escape(e)}</div>' for e in equations)
        slides.append((caption,
                       f'<div class="hg-slide">{_stack(layers, k, outside)}{eqs}{"".join(parts)}</div>'))
    return slides
