"""How each kind of box looks, and the legend that explains it."""
from __future__ import annotations

import graphviz

from .view import DATA, INTERMEDIATE, LEAF, PARAMETER, ROOT

OP, MODULE = "op", "module"

MONO = "Courier"  # tensor boxes: numbers line up in columns

STYLES: dict[str, dict[str, str]] = {
    PARAMETER: dict(shape="box", style="filled,bold", fillcolor="#ffd9a6", fontname=MONO),
    LEAF: dict(shape="box", style="filled", fillcolor="#fff2b3", fontname=MONO),
    DATA: dict(shape="note", style="filled", fillcolor="#e6e6e6", fontname=MONO),
    INTERMEDIATE: dict(shape="box", style="rounded,filled", fillcolor="#ffffff", fontname=MONO),
    ROOT: dict(shape="doubleoctagon", style="filled", fillcolor="#f6b8b8", fontname=MONO),
    OP: dict(shape="ellipse", style="filled", fillcolor="#cfe0fc"),
    MODULE: dict(shape="box3d", style="filled", fillcolor="#d4efd4"),
}

LEGEND_TEXT = {
    PARAMETER: "parameter (trained)",
    LEAF: "leaf that requires grad",
    DATA: "data / constant (no grad)",
    INTERMEDIATE: "intermediate tensor",
    ROOT: "root (the loss)",
    OP: "op (its backward rule)",
    MODULE: "collapsed module",
}

# Playback frames: the op whose rule runs now, ops already done, gradients sent.
CURRENT = dict(fillcolor="#ffc933", penwidth="3")
DONE = dict(fillcolor="#e9eef7", fontcolor="#6b7280")
GRAD_COLOR = "#c0392b"
CLUSTER = dict(style="rounded,filled", color="#8a9bb5", fillcolor="#f5f7fb", fontcolor="#2c3e66")
NOW, RAN, GRADIENT, LAYER = "now", "ran", "gradient", "layer"    # more legend entries
LEGEND_TEXT.update({NOW: "op whose backward rule runs now", RAN: "op whose rule already ran",
                    GRADIENT: "gradient, sent back from consumer to producer",
                    LAYER: "module: what one layer made"})
LEGEND_STYLE = {NOW: {**STYLES[OP], **CURRENT}, RAN: {**STYLES[OP], **DONE},
                GRADIENT: dict(shape="plaintext", fontcolor=GRAD_COLOR),
                LAYER: dict(shape="box", **CLUSTER)}

GRAPH_ATTRS = dict(fontname="Helvetica", nodesep="0.3", ranksep="0.4")
NODE_ATTRS = dict(fontname="Helvetica")
EDGE_ATTRS = dict(fontname="Helvetica", color="#555555")


LEGEND_COLUMNS = 3    # legend entries per row: a compact block, not a long column


def add_legend(g: graphviz.Digraph, kinds: list[str]) -> None:
    """A 'legend' cluster with one sample per kind drawn in the picture (boxes, and in
    backward views the op colours and the gradient arrows), LEGEND_COLUMNS to a row (the
    rows chained by invisible edges along the rank direction), with tight margins."""
    with g.subgraph(name="cluster_legend") as legend:
        legend.attr(label="legend", style="dashed", color="#999999", margin="4")
        for kind in kinds:
            legend.node(f"legend_{kind}", LEGEND_TEXT[kind], margin="0.06,0.02", height="0.3",
                        **LEGEND_STYLE.get(kind, STYLES.get(kind, {})))
        rows = [kinds[i:i + LEGEND_COLUMNS] for i in range(0, len(kinds), LEGEND_COLUMNS)]
        for row in rows:
            with legend.subgraph() as same:
                same.attr(rank="same")
                for kind in row:
                    same.node(f"legend_{kind}")
        for a, b in zip(rows, rows[1:], strict=False):
            legend.edge(f"legend_{a[0]}", f"legend_{b[0]}", style="invis")
