"""The backward pass as a slide show: one picture per backward step (level="op"), or one
slide per equation of the derivation for an MLP (level="layer", layers.py), played by a
self-contained HTML player (player.py) in a page or inline in Jupyter."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import graphviz

from ..tensor import Tensor
from . import labels
from .drawing import (
    OUT,
    SHOW,
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
from .layers import layer_frames
from .numeric import numeric_checks
from .player import Playback, check_options
from .rendering import to_svg
from .view import GraphView, build_view


def caption(view: GraphView, steps: list[Step], k: int) -> str:
    """"step 3/7: backward of tanh sends grad (4, 5) to t2" for step ``k`` (from 1)."""
    step = steps[k - 1]
    assert step.node is not None           # rule steps only (see rule_steps): a leaf runs none
    sent = [f"grad {labels.shape_text(g.shape)} to {view.name(inp)}"
            for inp, g in zip(step.node.inputs, step.sent) if g is not None]
    return (f"step {k}/{len(steps)}: backward of {step.node.op.name} sends "
            + (", ".join(sent) or "nothing"))


def frame_overlay(view: GraphView, steps: list[Step], k: int, max_elements: int,
                  stable: bool = False) -> Overlay:
    """What frame ``k`` shows: gradients summed so far, the current op and what it sends
    (with ``stable``, every frame labels the gradient arrows alike, by shape, so that one
    layout serves them all; the values sent show in the receiving boxes)."""
    step = steps[k - 1]
    pending = {id(s.node) for s in steps[k:]}
    grads = received(view, steps, k)
    overlay = Overlay(
        grads=grads,
        partial={id(t) for t in view.tensors
                 if id(t) in grads and not is_complete(view, t, pending)},
        steps=step_numbers(view, steps),
        edge_labels=gradient_shapes(view),
        current=id(step.node),
        done={id(s.node) for s in steps[:k - 1]},
        caption=caption(view, steps, k),
    )
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
    """(caption, view, overlay) for each backward step, in the order backward runs them.
    The caption is taken out of the overlay (a player shows it once, above the picture);
    ``numeric`` adds each leaf's central-difference check once its gradient is complete."""
    view = build_view(loss, model)
    all_steps = backward_steps(view)
    steps = rule_steps(all_steps)              # one frame per op whose rule runs
    n = options.max_elements
    checks = numeric_checks(view, all_gradients(view, all_steps), n) if numeric else {}
    for k in range(1, len(steps) + 1):
        overlay = frame_overlay(view, steps, k, n, stable=stable)
        overlay.checks = {key: c for key, c in checks.items()
                          if key in overlay.grads and key not in overlay.partial}
        text, overlay.caption = overlay.caption or "", None
        yield text, view, overlay


def focus_ids(view: GraphView, overlay: Overlay, record: Record) -> set[str]:
    """The ids of the elements that show the op whose rule runs now (a presenting player
    keeps them in view): its own box; in a collapsed view the gradient arrows it sends
    between boxes, else the box of the module that hides it."""
    if overlay.current is None:
        return set()
    node_id = view.ids[overlay.current]
    if f"n_{node_id}" in record.nodes:
        return {f"n_{node_id}"}
    arrows = {eid for eid in record.edges if eid.startswith(f"g_{node_id}_")}
    if arrows:
        return arrows
    unit = collapse_units(view).get(overlay.current)
    label = module_label(view, unit) if unit is not None else None
    return {nid for nid, (lines, _) in record.nodes.items() if lines and lines[0] == label}


def op_playback(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
                rankdir: str = "TB", max_elements: int = 6, fontsize: float = 14,
                rules: bool = False, collapse: bool = False, numeric: bool = False
                ) -> tuple[str, list[dict[str, Any]]]:
    """The graph laid out once (the last frame: every box holds all its lines), and for
    each backward step what changes: each box's lines and colours, each gradient arrow's
    style, the caption. Nothing moves between steps: the player only restyles."""
    options = Options(show=tuple(show), rankdir=rankdir, max_elements=max_elements,
                      fontsize=fontsize, rules=rules, collapse=collapse)
    data, layout = [], None
    for text, view, overlay in _step_overlays(loss, model, options, numeric, stable=True):
        record = Record()
        layout = to_digraph(view, options, overlay, record)
        now = focus_ids(view, overlay, record)
        data.append({"caption": text,
                     "nodes": {nid: {"lines": lines, "fill": a.get("fillcolor", "#ffffff"),
                                     "pen": a.get("penwidth", "1"),
                                     "font": a.get("fontcolor", "#000000"),
                                     **({"now": True} if nid in now else {})}
                               for nid, (lines, a) in record.nodes.items()},
                     "edges": {eid: {"pen": a.get("penwidth", "1"),
                                     "dash": "5,2" if a.get("style") == "dashed" else "",
                                     **({"now": True} if eid in now else {})}
                               for eid, a in record.edges.items()}})
    assert layout is not None
    return inline_svg(to_svg(layout)), data


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
    Graphviz needed. ``max_elements`` (default 6 for op, 40 for layer): larger arrays are
    summarised. ``present=True`` starts the player in presentation mode (full screen, text
    at least 24 px on a 1920×1080 screen, the running op kept in view; every player also
    has a "present" button); ``theme`` is "light" or "dark" (high contrast).
    """
    check_options(present, theme)
    if level not in LEVELS:
        raise ValueError(f"backward playback: level must be one of {LEVELS}, got {level!r}")
    if level == "layer":
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
