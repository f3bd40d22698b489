"""Small things a lecture trips over: the BP1 header names the layer (δ², not δ) and
states the formula that holds for the reduction and targets; BP3 and BP4 on their own
lines; matrices in brackets; no "÷ 1" for reduction="sum"; f′ written as its formula; a
compact legend."""
from __future__ import annotations

import html
import re
import shutil

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import backward_playback
from handgrad.engine.viz.layers import BRACKETS

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5]])
Y = np.array([0, 1, 1, 0, 1])


def slides(activation="tanh", **loss_kwargs):
    model = nn.MLP([2, 3, 2], activation=activation, seed=0, dtype=np.float64)
    loss = engine.softmax_cross_entropy(model(engine.Tensor(X)), Y, **loss_kwargs)
    return [body for _, body in backward_playback(loss, level="layer", model=model).frames]


def equations(body: str) -> list[str]:
    return [html.unescape(e) for e in re.findall(r'<div class="hg-eq">([^<]*)</div>', body)]


@pytest.mark.parametrize("reduction, header", [
    ("mean", "BP1 (output delta): δ² = (p − y)/N, N = 5 rows  (δ² = ∂L/∂z²)"),
    ("sum", "BP1 (output delta): δ² = p − y (reduction sum)  (δ² = ∂L/∂z²)"),
])
def test_the_bp1_header_names_the_layer_and_follows_the_reduction(reduction, header):
    bp1 = slides(reduction=reduction)[0]
    assert equations(bp1) == [header]
    assert not re.search(r"δ =", bp1)                        # never a bare δ
    ops = re.findall(r'<div class="hg-op">([^<]*)</div>', bp1)
    assert ("÷ 5 =" in ops) == (reduction == "mean")         # no "÷ 1" for sum
    assert all("÷ 1" not in op for op in ops)


def test_the_bp1_header_of_a_sigmoid_output_names_the_layer_too():
    model = nn.MLP([2, 3, 1], seed=0, dtype=np.float64)
    z = model(engine.Tensor(X))
    loss = engine.sigmoid_binary_cross_entropy(z, Y.reshape(-1, 1).astype(np.float64))
    bp1 = backward_playback(loss, level="layer").frames[0][1]
    assert equations(bp1)[0].startswith("BP1 (output delta): δ² = (σ(z²) − y)/N, N = 5 elements")


def test_bp3_and_bp4_are_on_separate_lines():
    bp34 = slides()[1]
    assert equations(bp34) == ["BP3: ∂L/∂b² = Σₙ δ²", "BP4: ∂L/∂W² = a¹ᵀ δ²"]


@pytest.mark.parametrize("activation, formula", [
    ("tanh", "tanh′(z) = 1 − tanh²(z)"), ("relu", "relu′(z) = 1[z > 0]"),
    ("sigmoid", "σ′(z) = σ(z)(1 − σ(z))")])
def test_bp2_writes_f_prime_as_its_formula(activation, formula):
    bp2 = slides(activation)[2]
    assert equations(bp2) == [f"BP2 (delta recursion): δ¹ = (δ² W²ᵀ) ⊙ f′(z¹),  "
                              f"f = {activation}, {formula}"]


def test_leaky_relu_and_elu_formulas_carry_their_parameters():
    from handgrad.engine.viz.layers import fprime_formula
    x = engine.Tensor(np.ones(3), requires_grad=True)
    assert fprime_formula(engine.leaky_relu(x, negative_slope=0.2).node) == \
        "leaky_relu′(z) = 1 if z > 0, else 0.2"
    assert fprime_formula(engine.elu(x, alpha=0.5).node) == "elu′(z) = 1 if z > 0, else 0.5·eᶻ"


def test_matrices_are_drawn_in_brackets():
    for body in slides():
        tables = re.findall(r'<table class="hg-m"([^>]*)>', body)
        assert tables and all(f'style="{BRACKETS}"' == t.strip() for t in tables)
    # the four short strokes of [ and ]: top and bottom at each side
    assert BRACKETS.count("linear-gradient") == 4
    for corner in ("left top", "left bottom", "right top", "right bottom"):
        assert corner in BRACKETS


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
def test_the_legend_is_a_compact_block():
    from handgrad.engine.viz.playback import backward_frames
    from handgrad.engine.viz.rendering import to_svg
    model = nn.MLP([2, 4, 2], activation="tanh", seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X.astype(np.float32))), Y)
    frame = next(iter(backward_frames(loss, model=model)))      # the most legend entries
    svg = to_svg(frame)
    height = float(re.search(r'viewBox="[\d.]+ [\d.]+ [\d.]+ ([\d.]+)"', svg).group(1))
    legend = re.search(r"<title>cluster_legend</title>\s*<polygon[^>]*points=\"([^\"]+)\"", svg)
    ys = [float(p.split(",")[1]) for p in legend.group(1).split()]
    entries = len(re.findall(r"<title>legend_", svg))
    assert entries >= 8
    # three entries to a row: a third of the ranks, not a column beside the whole graph
    assert max(ys) - min(ys) < 0.6 * height              # a column spanned 92 % of it


def test_the_legend_can_be_turned_off():
    x = engine.Tensor(np.array([[1.0, -2.0]]), requires_grad=True)
    loss = (x * x).sum()
    from handgrad.engine.viz import draw
    assert "cluster_legend" in draw(loss).source
    assert "cluster_legend" not in draw(loss, legend=False).source
    with pytest.raises(ValueError, match="draw: legend must be True or False, got 'no'"):
        draw(loss, legend="no")
