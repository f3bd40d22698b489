"""Pictures of the compute graph for teaching: shapes, values and gradients on every
tensor, layers as clusters, the backward pass step by step, numeric vs analytic gradients.

    from engine.viz import draw, render
    g = draw(loss, model=model)         # a graphviz.Digraph; g.source is the DOT text
    render(g, "graph.svg")              # needs the Graphviz `dot` program
    save_backward_html(loss, "backward.html")
"""
from .drawing import draw
from .playback import backward_frames, save_backward_html
from .rendering import GraphvizNotFound, render

__all__ = ["draw", "backward_frames", "save_backward_html", "render", "GraphvizNotFound"]
