"""The backward pass as a slide show: one picture per backward step, and one HTML page
that plays them (previous / next buttons, arrow keys), with no external files."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import graphviz

from ..tensor import Tensor
from . import labels
from .drawing import OUT, SHOW, Options, Overlay, gradient_shapes, step_numbers, to_digraph
from .gradients import Step, backward_steps, is_complete, received, rule_steps
from .rendering import to_svg
from .view import GraphView, build_view


def caption(view: GraphView, steps: list[Step], k: int) -> str:
    """"step 3/7: backward of tanh sends grad (4, 5) to t2" for step ``k`` (from 1)."""
    step = steps[k - 1]
    sent = [f"grad {labels.shape_text(g.shape)} to {view.name(inp)}"
            for inp, g in zip(step.node.inputs, step.sent) if g is not None]
    return (f"step {k}/{len(steps)}: backward of {step.node.op.name} sends "
            + (", ".join(sent) or "nothing"))


def frame_overlay(view: GraphView, steps: list[Step], k: int, max_elements: int) -> Overlay:
    """What frame ``k`` shows: gradients summed so far, the current op and what it sends."""
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
    overlay.edge_labels[(id(step.node), OUT)] = (
        f"grad in {labels.shape_text(step.grad.shape)}")
    for i, g in enumerate(step.sent):
        if g is not None:
            overlay.edge_labels[(id(step.node), i)] = "\n".join(
                labels.labelled("sends", g, max_elements))
    overlay.hot_edges = set(overlay.edge_labels)
    return overlay


def captioned_frames(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
                     rankdir: str = "LR", max_elements: int = 6
                     ) -> Iterator[tuple[str, graphviz.Digraph]]:
    """(caption, picture) for each backward step, in the order backward runs them."""
    options = Options(show=tuple(show), rankdir=rankdir, max_elements=max_elements)
    view = build_view(loss, model)
    steps = rule_steps(backward_steps(view))   # one frame per op whose rule runs
    for k in range(1, len(steps) + 1):
        overlay = frame_overlay(view, steps, k, max_elements)
        yield overlay.caption or "", to_digraph(view, options, overlay)


def backward_frames(loss: Tensor, *, model: Any = None, show: Sequence[str] = SHOW,
                    rankdir: str = "LR", max_elements: int = 6) -> Iterator[graphviz.Digraph]:
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


def save_backward_html(loss: Tensor, path: str | Path, *, model: Any = None,
                       show: Sequence[str] = SHOW, rankdir: str = "LR",
                       max_elements: int = 6) -> Path:
    """Write one self-contained HTML page that steps through the backward pass.

    Every frame is rendered to SVG by Graphviz and inlined; previous/next buttons and
    the left/right arrow keys move between them. No external scripts, styles or fonts.
    Raises GraphvizNotFound without the ``dot`` program.
    """
    frames = [(text, inline_svg(to_svg(frame))) for text, frame in
              captioned_frames(loss, model=model, show=show, rankdir=rankdir,
                               max_elements=max_elements)]
    path = Path(path)
    path.write_text(page(frames), encoding="utf-8")
    return path


def page(frames: list[tuple[str, str]]) -> str:
    """The HTML page around (caption, svg) frames."""
    sections = "\n".join(
        f'<section class="frame" data-caption="{html.escape(text)}"'
        f'{"" if i == 0 else " hidden"}>\n{svg}\n</section>'
        for i, (text, svg) in enumerate(frames))
    return PAGE.replace("{{COUNT}}", str(len(frames))).replace("{{FRAMES}}", sections)


PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>handgrad: the backward pass, step by step</title>
<style>
body { font-family: sans-serif; margin: 1.5em; color: #222; }
nav { display: flex; gap: 1em; align-items: center; margin-bottom: 0.5em; }
button { font-size: 1em; padding: 0.3em 1em; }
#caption { font-size: 1.1em; margin: 0.5em 0 1em; }
section.frame svg { max-width: 100%; height: auto; }
</style>
</head>
<body>
<h1>The backward pass, step by step</h1>
<p>Each step runs one op's backward rule: it turns the gradient of its output into a
gradient for each input (red). Use the buttons or the left/right arrow keys.</p>
<nav>
<button id="prev" type="button">&larr; previous</button>
<span id="counter">step 1 / {{COUNT}}</span>
<button id="next" type="button">next &rarr;</button>
</nav>
<p id="caption"></p>
{{FRAMES}}
<script>
(function () {
  var frames = document.querySelectorAll("section.frame");
  var current = 0;
  function show(k) {
    current = Math.max(0, Math.min(frames.length - 1, k));
    for (var i = 0; i < frames.length; i++) { frames[i].hidden = i !== current; }
    document.getElementById("counter").textContent =
      "step " + (current + 1) + " / " + frames.length;
    document.getElementById("caption").textContent = frames[current].dataset.caption;
    document.getElementById("prev").disabled = current === 0;
    document.getElementById("next").disabled = current === frames.length - 1;
  }
  document.getElementById("prev").onclick = function () { show(current - 1); };
  document.getElementById("next").onclick = function () { show(current + 1); };
  document.addEventListener("keydown", function (e) {
    if (e.key === "ArrowLeft") { show(current - 1); }
    if (e.key === "ArrowRight") { show(current + 1); }
  });
  show(0);
})();
</script>
</body>
</html>
"""
