"""``draw``: the compute graph below a tensor as a ``graphviz.Digraph``.

Tensors are boxes (name, shape and dtype, values, gradient), ops are ellipses, edges go in
the direction data flows. Nodes created inside an nn module sit in a cluster per module
(or one box per module with ``collapse=True``). Only DOT text is produced here; turning
it into SVG/PNG/PDF needs the Graphviz ``dot`` program (see rendering.py). In Jupyter the
returned Digraph displays inline.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import graphviz
import numpy as np

from ..graph import Node, topological_order
from ..plain import plain_repr
from ..tensor import Tensor
from . import labels, lecture, losses, measures, styles, thumbnails
from .gradients import (
    NoGradient,
    Step,
    all_gradients,
    backward_order,
    backward_steps,
    can_differentiate,
    differentiates_root,
)
from .kinks import kink_notes
from .numeric import NumericCheck, numeric_checks
from .thumbnails import Picture
from .view import PARAMETER, GraphView, build_view

SHOW = ("shape", "value", "grad")
RANKDIRS = ("LR", "RL", "TB", "BT")
OUT = -1  # edge key position of an op's edge to its output tensor

EdgeKey = tuple[int, int]  # (id(node), input position, or OUT)
Thumbs = list[tuple[int, np.ndarray]]  # (beside the lines up to k, array) per heat map


FONT_POINTS = (4, 72)     # the font sizes draw accepts, in points (handgrad draw --font-size)


@dataclass
class Options:
    """How to draw (the keyword arguments of ``draw``)."""

    show: Sequence[str] = SHOW
    rankdir: str = "TB"
    max_elements: int = 6
    collapse: bool = False
    rules: bool = False   # print each op's derivative rule
    fontsize: float = 14  # points, for the boxes (edge labels and legend slightly smaller)
    legend: bool = True   # the key to the colours and shapes, in one compact block

    def __post_init__(self) -> None:
        low, high = FONT_POINTS
        if isinstance(self.fontsize, bool) or not isinstance(self.fontsize, (int, float)) \
                or not low <= self.fontsize <= high:
            raise ValueError(f"draw: fontsize must be a number of points in [{low}, {high}], "
                             f"got {plain_repr(self.fontsize)}")
        unknown = [s for s in self.show if s not in SHOW]
        if unknown:
            raise ValueError(f"draw: show may contain {SHOW}, got {unknown}")
        if self.rankdir not in RANKDIRS:
            raise ValueError(f"draw: rankdir must be one of {RANKDIRS}, got {self.rankdir!r}")
        if isinstance(self.max_elements, bool) or not isinstance(self.max_elements, numbers.Integral) \
                or self.max_elements < 0:
            raise ValueError(f"draw: max_elements must be an integer >= 0, got "
                             f"{plain_repr(self.max_elements)}")
        if not isinstance(self.legend, bool):
            raise ValueError(f"draw: legend must be True or False, got {plain_repr(self.legend)}")


@dataclass
class Overlay:
    """What a picture adds to the bare graph: gradients, checks, backward steps, highlights."""

    grads: dict[int, np.ndarray] = field(default_factory=dict)      # id(tensor) -> gradient
    partial: set[int] = field(default_factory=set)      # tensors whose gradient is still summed
    checks: dict[int, NumericCheck] = field(default_factory=dict)   # id(leaf) -> check
    kinks: dict[int, list[str]] = field(default_factory=dict)  # id(leaf) -> why its check differs
    steps: dict[int, int] = field(default_factory=dict)  # id(node) -> backward step, from 1
    edge_labels: dict[EdgeKey, str] = field(default_factory=dict)
    hot_edges: set[EdgeKey] = field(default_factory=set)  # drawn in the gradient colour
    current: int | None = None                           # id(node) whose rule runs now
    done: set[int] = field(default_factory=set)          # ids of nodes whose rule already ran
    caption: str | None = None
    stored: bool = False           # the gradients are the tensors' .grad, not of the root
    focus: int | None = None       # id(tensor or node) a player keeps in view when no rule runs
    playback: bool = False         # a frame of the backward playback: its legend explains it


# The caption of a picture whose root is not one number: it has no gradient of its own.
STORED_GRAD = (".grad: what backward() stored on each tensor (summed over every backward pass "
               "since zero_grad()), not a gradient of the root drawn, which is not one number")


def draw(tensor: Tensor, *, show: Sequence[str] = SHOW, rankdir: str = "TB",
         max_elements: int = 6, collapse: bool = False, backward_order: bool = False,
         rules: bool = False, numeric: bool = False, model: Any = None,
         fontsize: float = 14, legend: bool = True) -> Picture:
    """The compute graph that produced ``tensor``, as a ``graphviz.Digraph`` (a Picture:
    it also keeps the PNGs of its heat-map thumbnails).

    show: what tensor boxes list besides the name: "shape" (and dtype), "value", "grad".
      Arrays with at most ``max_elements`` elements are printed, larger ones summarised
      as min / mean / max with their norm and a heat-map thumbnail (blue negative, red
      positive; integer class labels: the count of each class instead). With a scalar
      root, every tensor's gradient (intermediates too) is the gradient of that root,
      computed without touching ``.grad`` (after ``backward()`` freed the graph, by
      re-running its ops: ``.grad`` may sum several backward passes); for any other root
      ``.grad`` is shown where set, labelled ``.grad``, with a caption saying what it is.
    rankdir: "TB" (top to bottom: the default MLP fits a 16:9 slide), "LR" (left to
      right), "RL" or "BT".
    collapse: one box per module instead of a cluster of its ops and tensors.
    backward_order: number the ops in the order backward runs their rules and label
      each edge with the shape of the gradient flowing back along it.
    rules: print each op's derivative rule (its ``rule`` attribute; a loss's rule for the
      reduction it used).
    numeric: beside each leaf's gradient, the central-difference estimate (where they
      differ because an op's input sits at a kink, such as relu's 0, a note says so).
    model: an nn.Module: names parameters ("layers.0.weight") and labels clusters
      ("layers.0 (Linear 2→3, bias=True)").
    fontsize: points for the text in the boxes (14 reads on a projected 16:9 slide).
    legend: False leaves out the key to the colours and shapes (a slide that explains
      them itself).

    ``.source`` is the DOT text; rendering needs Graphviz (``render``).
    """
    options = Options(show=tuple(show), rankdir=rankdir, max_elements=max_elements,
                      collapse=collapse, rules=rules, fontsize=fontsize, legend=legend)
    view = build_view(tensor, model)
    overlay = Overlay()
    needs_steps = "grad" in options.show or numeric or backward_order
    steps = backward_steps(view) if needs_steps and can_differentiate(view) else None
    if "grad" in options.show or numeric:
        try:
            overlay.grads = all_gradients(view, steps)
        except NoGradient as unknown:       # graph freed, and it cannot be re-run
            overlay.caption = str(unknown)
        if overlay.grads and not differentiates_root(view):
            overlay.stored = True
            overlay.caption = STORED_GRAD
    if numeric:
        overlay.checks = numeric_checks(view, overlay.grads, max_elements)
        overlay.kinks = kink_notes(view, overlay.checks)
    if backward_order:
        overlay.steps = step_numbers(view, steps)
        overlay.edge_labels = gradient_shapes(view)
        overlay.hot_edges = set(overlay.edge_labels)
    return to_digraph(view, options, overlay)


def step_numbers(view: GraphView, steps: list[Step] | None) -> dict[int, int]:
    """id(node) -> the position (from 1) of its rule in the backward pass: from the
    walker's steps, or, once backward() freed the graph, from the same topological order
    the walker follows."""
    if steps is not None:
        order = backward_order(steps)
    else:
        order = [t.node for t in reversed(topological_order([view.root])) if t.node is not None]
    return {id(node): k for k, node in enumerate(order, start=1)}


def gradient_shapes(view: GraphView) -> dict[EdgeKey, str]:
    """Each edge a gradient flows back along, labelled with that gradient's shape."""
    found = {}
    for node in view.nodes:
        found[(id(node), OUT)] = f"grad {labels.shape_text(view.output[id(node)].shape)}"
        for i, (inp, needed) in enumerate(zip(node.inputs, node.needs_input_grad, strict=True)):
            if needed:
                found[(id(node), i)] = f"grad {labels.shape_text(inp.shape)}"
    return found


# --- text of the boxes ------------------------------------------------------------------

def tensor_lines(view: GraphView, t: Tensor, options: Options, overlay: Overlay
                 ) -> tuple[list[str], Thumbs]:
    """Name, shape and dtype, value, gradient and numeric check of one tensor; and the
    big arrays among value and gradient, each to be shown as a thumbnail below its lines."""
    n = options.max_elements
    lines = [view.name(t)]
    thumbs: Thumbs = []
    if "shape" in options.show:
        lines.append(f"{labels.shape_text(t.shape)} {t.dtype}")
    arrays = []
    if "value" in options.show:
        arrays.append(("value", t._data))
    grad = overlay.grads.get(id(t))
    if "grad" in options.show and grad is not None:
        name = ".grad" if overlay.stored else "grad so far" if id(t) in overlay.partial else "grad"
        arrays.append((name, grad))
    for title, a in arrays:
        lines += labels.labelled(title, a, n)
        if thumbnails.wants_thumbnail(a, n):
            lines.append(f"‖{title}‖ = {labels.number(measures.norm(a))}")
            thumbs.append((len(lines), np.asarray(a)))
    check = overlay.checks.get(id(t))
    if check is not None:
        lines += check_lines(check, n) + overlay.kinks.get(id(t), [])
    return lines, thumbs


def check_lines(check: NumericCheck, max_elements: int) -> list[str]:
    """The numeric estimate next to the analytic gradient, and their largest difference;
    without an analytic gradient, the estimate and a line saying there is none to compare."""
    if check.direction is None:
        lines = labels.labelled("numeric", check.numeric, max_elements)
    elif check.analytic is None:
        lines = [f"along a random unit u: numeric d/du {labels.number(check.numeric)}"]
    else:
        lines = [f"along a random unit u: grad·u {labels.number(check.analytic)}",
                 f"numeric d/du {labels.number(check.numeric)}"]
    if check.error is None:
        return lines + ["no analytic gradient here to compare with"]
    return lines + [f"max |analytic − numeric| {check.error:.1e}"]


def loss_incoming(view: GraphView, node: Node, overlay: Overlay) -> float | None:
    """The gradient a loss node's output receives: exactly 1 at the root, else its
    complete gradient when the overlay has it (a loss's output is a scalar unless its
    reduction is "none"), else None (not known here)."""
    out = view.output[id(node)]
    if out is view.root:
        return 1.0
    g = overlay.grads.get(id(out))
    if g is None or id(out) in overlay.partial or np.size(g) != 1:
        return None
    return float(np.reshape(g, ()))


def op_lines(view: GraphView, node: Node, options: Options, overlay: Overlay) -> list[str]:
    """Op name (with its backward step number), parameters, backward delta, rule."""
    step = overlay.steps.get(id(node))
    lines = [f"[{step}] {node.op.name}" if step is not None else node.op.name]
    params = labels.op_params(node)
    if params:
        lines.append(params)
    if node.op.name in losses.FUSED_LOSSES:
        lines += losses.fused_loss_lines(node, options.max_elements,
                                         loss_incoming(view, node, overlay),
                                         root=view.output[id(node)] is view.root)
    if options.rules:
        lines += labels.wrap(losses.node_rule(node))
    return lines


def dot_text(text: str) -> str:
    """``text`` for a DOT label or name that Graphviz shows as it is: "&" written "&amp;"
    (Graphviz reads "&amp;", "&lt;", "&#38;" or "&alpha;" there as the character they
    name, and writes an entity XML does not know, "&alpha;", into the SVG as it is)."""
    return text.replace("&", "&amp;")


def dot_id(text: str) -> str:
    """``text`` as a DOT identifier (a cluster's name), one for each text: ``dot_text``
    with every backslash doubled. The graphviz package quotes it and escapes each quote
    after an even run of backslashes (all of them, once doubled); without the doubling a
    final backslash escaped the closing quote (a syntax error) and the scopes 'q"' and
    'q\\"' came out as one cluster."""
    return dot_text(text).replace("\\", "\\\\")


def dot_label(lines: list[str]) -> str:
    """Lines joined with DOT's line break; backslashes kept literal, "&" as ``dot_text``
    writes it; never an HTML label."""
    return graphviz.nohtml("\\n".join(dot_text(line).replace("\\", "\\\\") for line in lines))


# --- assembling the Digraph -------------------------------------------------------------

@dataclass
class _Box:
    """One DOT node statement, waiting to be placed in its cluster."""

    name: str
    lines: list[str]
    kind: str          # a key of styles.STYLES
    scope: str | None
    attrs: dict[str, str] = field(default_factory=dict)  # on top of the kind's style
    thumbs: Thumbs = field(default_factory=list)          # heat maps inside the box


def scope_chain(scope: str | None) -> list[str]:
    """"layers.0" -> ["layers", "layers.0"]: the clusters a node sits in, outermost first."""
    if not scope:
        return []
    parts = scope.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def collapse_units(view: GraphView) -> dict[int, str]:
    """id(tensor or node) -> the module scope whose box hides it (collapse=True).

    A module's box is the outermost scope that owns op nodes itself: a container that
    only calls sub-modules (the Sequential ``layers`` of an MLP) stays a cluster around
    its children's boxes, so an MLP shows one box per layer. The root is never hidden.
    """
    owners = {view.scope(n) for n in view.nodes if n.scope}

    def unit(scope: str | None) -> str | None:
        return next((s for s in scope_chain(scope) if s in owners), None)

    hidden = {}
    items: list[Tensor | Node] = [*view.tensors, *view.nodes]
    for item in items:
        u = unit(view.scope(item))
        if u is not None and item is not view.root:
            hidden[id(item)] = u
    return hidden


def module_label(view: GraphView, scope: str) -> str:
    """"layers.0 (Linear 2→3, bias=True)" with a model, else the scope alone."""
    module = view.modules.get(scope)
    return f"{scope} ({labels.module_description(module)})" if module is not None else scope


def group_box(view: GraphView, unit: str, name: str, hidden: dict[int, str],
              overlay: Overlay) -> _Box:
    """The box standing for a collapsed module: its label, parameter shapes, backward steps,
    with gradients the norms of its parameters' gradients and of the gradient at its output
    (‖δˡ‖ for a layer's zˡ); highlighted while one of its rules runs."""
    lines = [module_label(view, unit)]
    params = [t for t in view.tensors if hidden.get(id(t)) == unit and t.node is None
              and (t.requires_grad or view.kind(t) == PARAMETER)]
    trained = [t for t in params if _gets_gradient(view, t)]
    for t in params:
        short = view.base_name(t).removeprefix(unit + ".")
        symbol = view.lecture.get(id(t))
        named = f"{symbol} = {short}" if symbol and symbol != short else short
        frozen = "" if any(t is u for u in trained) else ", frozen"
        lines.append(f"{named} {labels.shape_text(t.shape)}{frozen}")
    nodes = [n for n in view.nodes if hidden.get(id(n)) == unit]
    steps = [overlay.steps[id(n)] for n in nodes if id(n) in overlay.steps]
    if steps:
        lines.append("backward steps " + ", ".join(str(s) for s in sorted(steps)))
    if overlay.grads:
        outputs = [view.output[id(n)] for n in nodes
                   if any(hidden.get(id(u)) != unit for u in view.consumers(view.output[id(n)]))]
        norms = [gradient_norm(view, t, overlay) for t in [*trained, *outputs]]
        lines += [line for line in norms if line is not None]
    attrs: dict[str, str] = {}
    if overlay.current is not None and hidden.get(overlay.current) == unit:
        attrs = dict(styles.CURRENT)
    elif nodes and all(id(n) in overlay.done for n in nodes):
        attrs = dict(styles.DONE)
    parent = unit.rpartition(".")[0] or None
    return _Box(name, lines, styles.MODULE, parent, attrs)


def _gets_gradient(view: GraphView, t: Tensor) -> bool:
    """Whether the graph computes a gradient for leaf ``t``: as ``requires_grad`` was when
    the forward pass recorded its users (what backward follows), not as it is now."""
    return any(node.needs_input_grad[i] for node in view.users.get(id(t), [])
               for i, inp in enumerate(node.inputs) if inp is t)


def gradient_norm(view: GraphView, t: Tensor, overlay: Overlay) -> str | None:
    """"‖∂L/∂W¹‖ = 0.1234" ("‖δ¹‖" for a layer's zˡ) once the gradient is complete; before,
    in a playback frame, "not yet" (the line is there in every frame, so a player's boxes
    keep their size), in a picture nothing (no gradient is known)."""
    what = lecture.delta_symbol(view.symbol(t))
    grad = overlay.grads.get(id(t))
    if grad is None or id(t) in overlay.partial:
        return f"‖{what}‖ not yet" if overlay.playback else None
    return f"‖{what}‖ = {labels.number(measures.norm(grad))}"


def op_attrs(node: Node, overlay: Overlay) -> dict[str, str]:
    """Playback frames: the op whose rule runs now stands out, ops already done fade."""
    if id(node) == overlay.current:
        return dict(styles.CURRENT)
    if id(node) in overlay.done:
        return dict(styles.DONE)
    return {}


@dataclass
class Record:
    """What a picture drew, by element id (``id`` attributes, kept in the SVG): each box's
    lines and attributes, each edge's attributes, and for a box with heat maps each one's
    slot (it sits beside the lines up to line k; its file name, a key of the Picture's
    images; its size).
    The playback restyles one layout with it."""

    nodes: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    edges: dict[str, dict[str, str]] = field(default_factory=dict)
    thumbs: dict[str, list[thumbnails.Slot]] = field(default_factory=dict)


def to_digraph(view: GraphView, options: Options, overlay: Overlay,
               record: Record | None = None, sizing: dict[str, list[str]] | None = None) -> Picture:
    """Lay every box into its cluster, then the edges, then the legend. ``sizing`` (by
    box name) gives lines to size a box with instead of its own: a player lays its boxes
    out once, each as wide as its widest line in any frame."""
    g = Picture(name="handgrad")
    g.attr(rankdir=options.rankdir, **styles.GRAPH_ATTRS)
    g.attr(fontsize=f"{options.fontsize + 1:g}")
    if overlay.caption:
        g.attr(label=dot_label([overlay.caption]), labelloc="t")
    g.attr("node", **styles.NODE_ATTRS, fontsize=f"{options.fontsize:g}")
    g.attr("edge", **styles.EDGE_ATTRS, fontsize=f"{options.fontsize:g}")

    hidden = collapse_units(view) if options.collapse else {}
    group_names: dict[str, str] = {}   # module scope -> "group0", in order of appearance
    for t in view.tensors:
        for item in [t.node, t] if t.node is not None else [t]:
            unit = hidden.get(id(item))
            if unit is not None and unit not in group_names:
                group_names[unit] = f"group{len(group_names)}"

    def endpoint(item: Tensor | Node) -> str:
        """The DOT node drawn for a tensor or op: its own box, or its module's box."""
        unit = hidden.get(id(item))
        return group_names[unit] if unit is not None else view.dot_id(item)

    boxes = [group_box(view, unit, name, hidden, overlay) for unit, name in group_names.items()]
    for t in view.tensors:
        if t.node is not None and id(t.node) not in hidden:
            boxes.append(_Box(view.dot_id(t.node), op_lines(view, t.node, options, overlay), styles.OP,
                              view.scope(t.node), op_attrs(t.node, overlay)))
        if id(t) not in hidden:
            lines, thumbs = tensor_lines(view, t, options, overlay)
            boxes.append(_Box(view.dot_id(t), lines, view.kind(t), view.scope(t), thumbs=thumbs))
    place_boxes(g, view, boxes, record, sizing or {})
    add_edges(g, view, overlay, endpoint, record)
    kinds = [k for k in styles.STYLES if any(b.kind == k for b in boxes)]
    if any(b.scope for b in boxes):
        kinds.append(styles.LAYER)                  # clusters are drawn
    if overlay.current is not None or overlay.playback:
        kinds.append(styles.NOW)
    if overlay.done or overlay.playback:
        kinds.append(styles.RAN)
    if overlay.hot_edges:
        kinds.append(styles.GRADIENT)
    if options.legend:
        styles.add_legend(g, kinds)
    return g


def place_boxes(g: Picture, view: GraphView, boxes: list[_Box],
                record: Record | None = None, sizing: dict[str, list[str]] | None = None) -> None:
    """Emit each box inside the nested clusters of its scope (``cluster_layers.0`` inside
    ``cluster_layers``), clusters in the order they first appear. A box with heat maps
    gets an HTML-like label (its PNGs kept in ``g.images``), every other a plain one."""
    members: dict[str | None, list[_Box]] = {None: []}
    children: dict[str | None, list[str]] = {None: []}
    for box in boxes:
        parent: str | None = None
        for scope in scope_chain(box.scope):
            if scope not in members:
                members[scope], children[scope] = [], []
                children[parent].append(scope)
            parent = scope
        members[box.scope or None].append(box)

    def emit(container: graphviz.Digraph, scope: str | None) -> None:
        for box in members[scope]:
            attrs = {**styles.STYLES[box.kind], **box.attrs}
            slots = [g.add_thumbnail(k, a) for k, a in box.thumbs]
            sized = (sizing or {}).get(box.name, box.lines)
            label = thumbnails.html_label(sized, slots) if slots else dot_label(sized)
            container.node(box.name, label, id=f"n_{box.name}", **attrs)
            if record is not None:
                record.nodes[f"n_{box.name}"] = (box.lines, attrs)
                if slots:
                    record.thumbs[f"n_{box.name}"] = slots
        for child in children[scope]:
            with container.subgraph(name=f"cluster_{dot_id(child)}") as cluster:
                # escaped as box lines are: a scope "<b>x</b>" is text, not an HTML label
                cluster.attr(label=dot_label([module_label(view, child)]), **styles.CLUSTER)
                emit(cluster, child)

    emit(g, None)


def add_edges(g: graphviz.Digraph, view: GraphView, overlay: Overlay,
              endpoint: Callable[[Tensor | Node], str], record: Record | None = None) -> None:
    """Data-flow edges input -> op -> output. ``endpoint`` maps a tensor or node to the
    DOT node drawn for it (a collapsed module's box for hidden ones); edges inside one
    box vanish and an edge leaving a box is labelled with the shape it carries."""
    drawn: set[tuple[str, str]] = set()
    for node in view.nodes:
        out = view.output[id(node)]
        # (from, to, position, the tensor the edge carries)
        pairs: list[tuple[Tensor | Node, Tensor | Node, int, Tensor]] = [
            (inp, node, i, inp) for i, inp in enumerate(node.inputs)] + [(node, out, OUT, out)]
        for src, dst, position, carried in pairs:
            a, b = endpoint(src), endpoint(dst)
            key = (id(node), position)
            from_box, to_box = a != view.dot_id(src), b != view.dot_id(dst)
            if a == b or (from_box or to_box) and (a, b) in drawn:
                continue  # inside one module box, or a second edge between the same boxes
            drawn.add((a, b))
            attrs: dict[str, str] = {}
            if from_box and key not in overlay.edge_labels:
                attrs["label"] = labels.shape_text(carried.shape)
            name = f"{view.dot_id(node)}_{'out' if position == OUT else position}"
            g.edge(a, b, id=f"d_{name}", **attrs)
            if key in overlay.edge_labels:
                # The gradient travels the other way: its own arrow, from the consumer
                # back to the producer (dir=back keeps the layout of the data-flow edge).
                grad = dict(dir="back", color=styles.GRAD_COLOR, fontcolor=styles.GRAD_COLOR,
                            style="dashed", constraint="false")
                if id(node) == overlay.current:
                    grad.update(style="solid", penwidth="2.5")
                g.edge(a, b, id=f"g_{name}", label=dot_label(overlay.edge_labels[key].splitlines()),
                       **grad)
                if record is not None:
                    record.edges[f"g_{name}"] = grad
