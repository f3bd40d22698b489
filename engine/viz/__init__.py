"""Pictures of the compute graph for teaching: shapes, values and gradients on every
tensor, layers as clusters, the backward pass step by step, numeric vs analytic gradients.

    from handgrad.engine.viz import draw, render
    g = draw(loss, model=model)         # a graphviz.Digraph; g.source is the DOT text
    render(g, "graph.svg")              # or .png, .pdf (from the extension): needs Graphviz `dot`
    save_backward_html(loss, "backward.html")
    save_backward_pdf(loss, "handout.pdf")    # one page per step, one fixed layout
    save_backward_steps(loss, "frames", format="png")   # frames/step-00.png, ...
"""
from .drawing import draw
from .export import save_backward_pdf, save_backward_steps
from .layers import derivation, layer_frames, mlp_layers
from .playback import backward_frames, backward_playback, save_backward_html
from .player import Playback
from .rendering import GraphvizNotFound, render

__all__ = ["draw", "backward_frames", "backward_playback", "save_backward_html", "Playback",
           "save_backward_steps", "save_backward_pdf", "derivation", "layer_frames",
           "mlp_layers", "render", "GraphvizNotFound"]
