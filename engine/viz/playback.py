"""The backward pass as a slide show: one picture per backward step (level="op"), or one
slide per equation of the derivation for an MLP (level="layer", layers.py), played by a
self-contained HTML player (player.py) in a page or inline in Jupyter."""
from __future__ import annotations

import numbers
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import graphviz
import numpy as np

from ..plain import plain_repr
from ..tensor import Tensor
from . import labels, lecture, losses, measures
from .drawing import (
    OUT,
    SHOW,
    EdgeKey,
    Options,
    Overlay,
    Record,
    collapse_units,
    gradient_shapes,
    module_label,
    step_numbers,
    to_digraph,
)
from .gradients import Step, all_gradients, backward_steps, is_complete, received, rule_steps
from .kinks import kink_notes
from .layers import layer_frames
from .numeric import numeric_checks
from .player import Playback, check_options
from .rendering import png_data_uri, to_svg
from .thumbnails import Picture
from .view import GraphView, build_view


def caption(view: GraphView, steps: list[Step], k: int) -> str:
    """Step ``k`` (from 1) in words and numbers: "step 3/4: backward of tanh: tanh′(z¹) =
    1 − (a¹)² = [...]; ∂L/∂z¹ = ..." (the engine's values, each formula checked by
    lecture.py); an op whose rule has no value form here: its rule in words and the
    shapes it sends."""
    step = steps[k - 1]
    assert step.node is not None           # rule steps only (see rule_steps): a leaf runs none
    head = f"step {k}/{len(steps)}: backward of {step.node.op.name}"
    clauses = lecture.step_clauses(step.node, step.tensor, step.grad, step.sent, view.symbol,
                                   lambda t: len(view.consumers(t)) > 1)
    if clauses:
        return f"{head}: " + "; ".join(c.text() for c in clauses)
    sent = [f"grad {labels.shape_text(g.shape)} to {view.name(inp)}"
            for inp, g in zip(step.node.inputs, step.sent, strict=True) if g is not None]
    return f"{head} ({losses.node_rule(step.node)}) sends " + (", ".join(sent) or "nothing")


def opening_caption(view: GraphView, steps: list[Step]) -> str:
    """Step 0: the forward pass is done and the backward pass starts from ∂L/∂L = 1."""
    value = labels.number(view.root._data.reshape(()).item())
    named = "" if view.symbol(view.root) == "L" else f" = {view.name(view.root)}"
    return (f"step 0/{len(steps)}: forward done, L{named} = {value}; backward starts at the "
            f"loss with ∂L/∂L = 1")


def closing_caption(view: GraphView, steps: list[Step], grads: dict[int, np.ndarray]) -> str:
    """The closing frame: every rule ran; each leaf's gradient norm, in one line."""
    leaves = [t for t in view.tensors if t.node is None and id(t) in grads]
    norms = ", ".join(f"‖{lecture.delta_symbol(view.symbol(t))}‖ = "
                      f"{labels.number(measures.norm(grads[id(t)]))}" for t in leaves)
    ran = "the one rule ran" if len(steps) == 1 else f"all {len(steps)} rules ran"
    return (f"done: {ran}, every gradient is in place"
            + (f": {norms}" if norms else ""))


def sent_edges(view: GraphView, steps: list[Step]) -> set[EdgeKey]:
    """The gradient arrows of the given (already run) steps: the gradient each rule
    received and what it sent to each input."""
    shapes = gradient_shapes(view)
    keys = {(id(s.node), OUT) for s in steps}
    keys |= {(id(s.node), i) for s in steps for i, g in enumerate(s.sent) if g is not None}
    return keys & set(shapes)


def ran_before(steps: list[Step], k: int) -> list[Step]:
    """The steps whose rule has run before frame ``k`` draws: none at k = 0 (the forward
    pass done) and k = 1 (the first rule runs now), steps 1..k − 1 while step k runs, and
    every step in the closing frame (k = len(steps) + 1)."""
    if k > len(steps):
        return steps
    return steps[:max(k - 1, 0)]          # k - 1 = -1 at k = 0 would slice all but the last


def frame_overlay(view: GraphView, steps: list[Step], k: int, max_elements: int,
                  stable: bool = False) -> Overlay:
    """What frame ``k`` shows (0: the forward pass done, only ∂L/∂L = 1 in place; from 1,
    the step's rule runs; len(steps) + 1: every gradient in place): gradients summed so
    far, the current op, and the gradient arrows sent so far. With ``stable`` every arrow
    is labelled by shape, so that one layout serves all frames; otherwise the running
    rule's arrows carry the values they send."""
    n = len(steps)
    ran = steps[:min(k, n)]
    pending = {id(s.node) for s in steps[k:]}
    grads = received(view, steps, min(k, n))
    shapes = gradient_shapes(view)
    overlay = Overlay(
        grads=grads,
        partial={id(t) for t in view.tensors
                 if id(t) in grads and not is_complete(view, t, pending)},
        steps=step_numbers(view, steps),
        edge_labels={key: shapes[key] for key in sent_edges(view, ran)},
        done={id(s.node) for s in ran_before(steps, k)},
        playback=True,
    )
    if k == 0:
        overlay.focus, overlay.caption = id(view.root), opening_caption(view, steps)
    elif k > n:
        overlay.focus = id(steps[-1].node) if steps else id(view.root)
        overlay.caption = closing_caption(view, steps, grads)
    else:
        step = steps[k - 1]
        overlay.current, overlay.caption = id(step.node), caption(view, steps, k)
        if not stable:
            overlay.edge_labels[(id(step.node), OUT)] = (
                f"grad in {labels.shape_text(step.grad.shape)}")
            for i, g in enumerate(step.sent):
                if g is not None:
                    overlay.edge_labels[(id(step.node), i)] = "\n".join(
                        labels.labelled("sends", g, max_elements))
    overlay.hot_edges = set(overlay.edge_labels)
    return overlay


def _step_overlays(loss: Tensor, model: Any, options: Options, numeric: bool, stable: bool
                   ) -> Iterator[tuple[str, GraphView, Overlay]]:
    """(caption, view, overlay) for step 0 (the forward pass done), each backward step in
    the order backward runs them, and the closing frame (every gradient in place). The
    caption is taken out of the overlay (a player shows it once, above the picture);
    ``numeric`` adds each leaf's central-difference check once its gradient is complete."""
    view = build_view(loss, model)
    all_steps = backward_steps(view)
    steps = rule_steps(all_steps)              # one frame per op whose rule runs
    n = options.max_elements
    checks = numeric_checks(view, all_gradients(view, all_steps), n) if numeric else {}
    kinks = kink_notes(view, checks)
    for k in range(0, len(steps) + 2):
        overlay = frame_overlay(view, steps, k, n, stable=stable)
        overlay.checks = {key: c for key, c in checks.items()
                          if key in overlay.grads and key not in overlay.partial}
        overlay.kinks = {key: kinks[key] for key in overlay.checks if key in kinks}
        text, overlay.caption = overlay.caption or "", None
        yield text, view, overlay


def focus_ids(view: GraphView, overlay: Overlay, record: Record) -> set[str]:
    """The ids of the elements that show the op whose rule runs now (a presenting player
    keeps them in view): its own box; in a collapsed view the box of the module that
    hides it, else the gradient arrows it sends between boxes. Step 0 and the closing
    frame keep ``overlay.focus`` (the loss, the last op) in view."""
    target = overlay.current if overlay.current is not None else overlay.focus
    if target is None:
        return set()
    node_id = view.ids[target]
    if f"n_{node_id}" in record.nodes:
        return {f"n_{node_id}"}
    unit = collapse_units(view).get(target)
    label = module_label(view, unit) if unit is not None else None
    boxes = {nid for nid, (lines, _) in record.nodes.items() if lines and lines[0] == label}
    return boxes or {eid for eid in record.edges if eid.startswith(f"g_{node_id}_")}


def svg_text(line: str) -> str:
    """A box's line as the SVG keeps it: Graphviz writes every space after a space (and a
    leading one) as a no-break space, so matrix columns stay aligned; the player's lines
    must do the same, or the browser collapses the runs of spaces."""
    return re.sub(r"(?<=[ \u00a0]) |^ ", "\u00a0", line)


def op_playback(loss: Tensor, **kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
    """``op_layout`` with the layout as inline SVG (what the player restyles), each box's
    heat maps as the player swaps them (``player_images``)."""
    layout, data = op_layout(loss, **kwargs)
    return inline_svg(to_svg(layout)), player_images(layout, data)


def player_images(layout: Picture, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``data`` with each box's "thumbs" (slots by file name) replaced by "images", one
    entry per <image> of the laid-out box: null where the frame shows the layout's own
    picture, "" where it shows none (no gradient yet), else a data: URI (a gradient summed
    so far). The layout's pictures are in its SVG once; only the others are repeated."""
    out = []
    for frame in data:
        nodes = {}
        for nid, spec in frame["nodes"].items():
            spec = dict(spec)
            thumbs = spec.pop("thumbs", None)
            if thumbs is not None:
                final = [name for _, name, _ in data[-1]["nodes"][nid]["thumbs"]]
                spec["images"] = [None if name == last else _data_uri(layout, name)
                                  for (_, name, _), last in zip(thumbs, final, strict=True)]
            nodes[nid] = spec
        out.append({**frame, "nodes": nodes})
    return out


def _data_uri(layout: Picture, name: str) -> str:
    """The layout's PNG ``name`` as a data: URI; "" for no picture."""
    return png_data_uri(layout.images[name]) if name else ""


def check_max_elements(max_elements: Any, default: str = "") -> None:
    """A playback's (and its exports') ``max_elements``: a positive integer, the most
    elements an array may have to be printed in full; 0, -1, 1.5 or True were taken."""
    if isinstance(max_elements, bool) or not isinstance(max_elements, numbers.Integral) \
            or max_elements < 1:
        raise ValueError(f"backward playback: max_elements must be a positive integer"
                         f"{default}, got {plain_repr(max_elements)}")


def op_layout(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
              rankdir: str = "TB", max_elements: int = 6, fontsize: float = 14,
              rules: bool = False, collapse: bool = False, numeric: bool = False
              ) -> tuple[Picture, list[dict[str, Any]]]:
    """The graph laid out once (the last frame: every box holds all its lines), and for
    each backward step what changes: each box's lines and colours, its heat maps
    ("thumbs": the layout's slots with this frame's file names, "" for none yet; the
    layout keeps every frame's PNGs), each gradient arrow's style, the caption. Nothing
    moves between steps: the player only restyles."""
    check_max_elements(max_elements)
    options = Options(show=tuple(show), rankdir=rankdir, max_elements=max_elements,
                      fontsize=fontsize, rules=rules, collapse=collapse)
    data: list[dict[str, Any]] = []
    layout, arrows, images, record = None, set(), {}, Record()
    thumbs: list[dict[str, list[str]]] = []          # per frame: box id -> file names
    texts: list[dict[str, list[str]]] = []           # per frame: box id -> its lines
    for text, view, overlay in _step_overlays(loss, model, options, numeric, stable=True):
        record = Record()
        layout = to_digraph(view, options, overlay, record)
        arrows |= set(record.edges)
        images.update(layout.images)
        thumbs.append({nid: [name for _, name, _ in slots]
                       for nid, slots in record.thumbs.items()})
        texts.append({nid: lines for nid, (lines, _) in record.nodes.items()})
        now = focus_ids(view, overlay, record)
        data.append({"caption": text,
                     "nodes": {nid: {"lines": [svg_text(x) for x in lines],
                                     "fill": a.get("fillcolor", "#ffffff"),
                                     "pen": a.get("penwidth", "1"),
                                     "font": a.get("fontcolor", "#000000"),
                                     **({"now": True} if nid in now else {})}
                               for nid, (lines, a) in record.nodes.items()},
                     "edges": {eid: {"pen": a.get("penwidth", "1"),
                                     "dash": "5,2" if a.get("style") == "dashed" else "",
                                     **({"now": True} if eid in now else {})}
                               for eid, a in record.edges.items()}})
    for frame in data:        # a gradient arrow is hidden until its gradient is sent
        frame["edges"].update({eid: {"pen": "1", "dash": "", "hide": True}
                               for eid in sorted(arrows - set(frame["edges"]))})
    assert layout is not None
    sizing = _widest_lines(texts)
    if sizing:          # a line longer in an earlier frame ("grad so far [...]"): wider boxes
        layout = to_digraph(view, options, overlay, Record(), sizing)
    for frame, names in zip(data, thumbs, strict=True):   # the last frame's slots, filled
        for nid, slots in record.thumbs.items():
            mine = names.get(nid, [])
            frame["nodes"][nid]["thumbs"] = [
                [k, mine[i] if i < len(mine) else "", list(size)]
                for i, (k, _, size) in enumerate(slots)]
    layout.images.update(images)
    return layout, data


def _widest_lines(frames: list[dict[str, list[str]]]) -> dict[str, list[str]]:
    """By box name, for each box whose lines (``frames``: per frame, by node id) are
    longer in some frame than in the last one (the layout's): each line at its longest
    over the frames (in characters), so that the box laid out once holds every frame's
    text. Empty when the last frame's are the longest."""
    longest: dict[str, list[str]] = {}
    for frame in frames:
        for nid, lines in frame.items():
            rows = longest.setdefault(nid, [])
            for i, line in enumerate(lines):
                if i == len(rows):
                    rows.append(line)
                elif len(line) > len(rows[i]):
                    rows[i] = line
    last = frames[-1] if frames else {}
    return {nid.removeprefix("n_"): rows for nid, rows in longest.items()
            if nid in last and rows != last[nid]}


def captioned_frames(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
                     rankdir: str = "TB", max_elements: int = 6, fontsize: float = 14,
                     rules: bool = False, collapse: bool = False, numeric: bool = False
                     ) -> Iterator[tuple[str, graphviz.Digraph]]:
    """(caption, picture) for each backward step, in the order backward runs them. The
    caption is not drawn into the picture (a player shows it once, above). ``numeric``
    shows each leaf's central-difference check once its gradient is complete."""
    options = Options(show=tuple(show), rankdir=rankdir, max_elements=max_elements,
                      fontsize=fontsize, rules=rules, collapse=collapse)
    for text, view, overlay in _step_overlays(loss, model, options, numeric, stable=False):
        yield text, to_digraph(view, options, overlay)


def backward_frames(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
                    rankdir: str = "TB", max_elements: int = 6) -> Iterator[graphviz.Digraph]:
    """One Digraph per backward step (one per op, in the order backward runs them).

    The op whose rule runs is highlighted; the edges to its inputs carry the gradient it
    sends (values for small tensors). Tensors show the gradient summed so far ("grad so
    far" while some op that used them has not run yet). Needs a scalar loss whose graph
    is still alive (before ``loss.backward()``, or after ``backward(retain_graph=True)``).
    """
    for _, frame in captioned_frames(loss, model=model, show=show, rankdir=rankdir,
                                     max_elements=max_elements):
        yield frame


def inline_svg(svg: str) -> str:
    """The <svg> element alone: no XML prolog, DOCTYPE (it holds a URL) or comments."""
    svg = svg[svg.index("<svg"):]
    return re.sub(r"<!--.*?-->", "", svg, flags=re.DOTALL).strip()


LEVELS = ("op", "layer")


def backward_playback(loss: Tensor, *, level: str = "op", model: Any = None,
                      show: Sequence[str] = SHOW, rankdir: str = "TB", max_elements: int | None = None,
                      fontsize: float = 14, rules: bool = False, collapse: bool = False,
                      numeric: bool = False, present: bool = False, theme: str = "light"
                      ) -> Playback:
    """The backward pass as a Playback: it displays as a working player in Jupyter
    (``_repr_html_``) and ``save(path)`` writes a self-contained page.

    level="op": one graph picture per op whose backward rule runs (any graph; needs the
    Graphviz ``dot`` program). level="layer": for an MLP ending in a fused loss, one slide
    per equation of the derivation (BP1-BP4) with the actual numbers (see layers.py); no
    Graphviz needed; the options of the op graph (show, rankdir, fontsize, rules,
    collapse, numeric) are a ValueError there unless left at their defaults.
    ``max_elements`` (default 6 for op, 40 for layer): larger arrays are summarised.
    ``present=True`` starts the player in presentation mode (full screen, text at least
    24 px on a 1920×1080 screen, the running op kept in view; every player also has a
    "present" button); ``theme`` is "light" or "dark" (high contrast).
    """
    check_options(present, theme)
    if max_elements is not None:
        check_max_elements(max_elements, " (or None: 6 for op, 40 for layer)")
    if level not in LEVELS:
        raise ValueError(f"backward playback: level must be one of {LEVELS}, got {level!r}")
    if level == "layer":
        graph_only = [name for name, given in (
            ("show", tuple(show) != tuple(SHOW)), ("rankdir", rankdir != "TB"),
            ("fontsize", fontsize != 14), ("rules", rules), ("collapse", collapse),
            ("numeric", numeric)) if given]
        if graph_only:
            raise ValueError(f"backward playback: level='layer' shows the equations BP1-BP4, "
                             f"not the op graph, so {', '.join(graph_only)} would change "
                             f"nothing; leave {'it' if len(graph_only) == 1 else 'them'} "
                             f"at the default or use level='op'")
        slides = layer_frames(loss, model=model,
                              max_elements=40 if max_elements is None else max_elements)
        return Playback(slides, "The backward pass, layer by layer (BP1-BP4)", present=present,
                        theme=theme)
    svg, data = op_playback(loss, model=model, show=show, rankdir=rankdir,
                            max_elements=6 if max_elements is None else max_elements,
                            fontsize=fontsize, rules=rules, collapse=collapse, numeric=numeric)
    return Playback([(d["caption"], "") for d in data], "The backward pass, step by step",
                    layout=svg, restyle=data, present=present, theme=theme)


def save_backward_html(loss: Tensor, path: str | Path, *, level: str = "op", model: Any = None,
                       show: Sequence[str] = SHOW, rankdir: str = "TB",
                       max_elements: int | None = None, fontsize: float = 14,
                       rules: bool = False, collapse: bool = False, numeric: bool = False,
                       present: bool = False, theme: str = "light") -> Path:
    """Write one self-contained HTML page that steps through the backward pass (see
    ``backward_playback``): previous/next buttons, the arrow keys while the player has
    focus, zoom and pan, presentation mode (``present=True`` starts in it), a light or dark
    ``theme``. No external scripts, styles or fonts. With level="op", raises
    GraphvizNotFound without the ``dot`` program."""
    return backward_playback(loss, level=level, model=model, show=show, rankdir=rankdir,
                             max_elements=max_elements, fontsize=fontsize, rules=rules,
                             collapse=collapse, numeric=numeric, present=present,
                             theme=theme).save(path)
