"""The teaching pictures (engine.viz): the DOT text of small known graphs, layers as
clusters, collapsing, backward order, numeric vs analytic gradients, the step-by-step
playback, rendering with and without Graphviz, the activation plot and the CLI.

Regenerate the golden files (the README figure) with
    .venv/bin/python -m tests.engine.test_viz
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import (
    GraphvizNotFound,
    backward_frames,
    backward_playback,
    draw,
    labels,
    render,
    save_backward_html,
    save_backward_steps,
)
from handgrad.engine.viz.drawing import check_lines
from handgrad.engine.viz.losses import output_delta
from handgrad.engine.viz.numeric import NumericCheck, numeric_checks
from handgrad.engine.viz.playback import captioned_frames
from handgrad.engine.viz.styles import DONE
from handgrad.engine.viz.view import build_view
from handgrad.nn.draw_command import add_draw_arguments, draw_command

GOLDEN = Path(__file__).parent / "golden"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
SVG = "{http://www.w3.org/2000/svg}"


# --- reading DOT text back ---------------------------------------------------------------

NODE = re.compile(r'^\s*(\w+) \[label=("(?:[^"\\]|\\.)*"|<<TABLE.*?</TABLE>>|\w+)', re.MULTILINE)
EDGE = re.compile(r"^\s*(\w+) -> (\w+)(?: \[(.*)\])?$", re.MULTILINE)


def label_text(label: str) -> str:
    """A DOT label as plain text: a quoted one's lines, or an HTML-like one's (a box with
    heat-map thumbnails: its text lines, each ended by <BR ALIGN="LEFT"/>)."""
    if label.startswith("<<"):
        return "\n".join(html.unescape(line) for line in re.findall(r'([^<>]*)<BR ALIGN="LEFT"/>', label))
    return label.strip('"').replace("\\n", "\n")


def nodes(source: str) -> dict[str, str]:
    """DOT node id -> its label as plain text (legend entries left out)."""
    found = {name: label_text(label) for name, label in NODE.findall(source)}
    return {k: v for k, v in found.items() if not k.startswith("legend_")}


def edges(source: str) -> list[tuple[str, str]]:
    return [(a, b) for a, b, _ in EDGE.findall(source) if not a.startswith("legend_")]


def edge_attrs(source: str) -> dict[tuple[str, str], str]:
    return {(a, b): attrs for a, b, attrs in EDGE.findall(source)}


def svg_texts(svg: str) -> set[str]:
    """The texts an SVG shows."""
    return {t.text for t in ET.fromstring(svg).iter(f"{SVG}text")}


def cluster(source: str, name: str) -> str:
    """The body of ``subgraph "name" { ... }`` (nested clusters included)."""
    start = re.search(rf'subgraph "?{re.escape(name)}"? {{', source)
    assert start is not None, f"no cluster {name}"
    depth, i = 1, start.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(source[i], 0)
        i += 1
    return source[start.end():i - 1]


# --- small known graphs --------------------------------------------------------------------

def tanh_graph():
    """sum(tanh(x * w + b)) with x data, w and b leaves that require grad, float64."""
    x = engine.Tensor(np.array([1.0, 2.0]), name="x")
    w = engine.Tensor(np.array([0.5, -1.0]), requires_grad=True, name="w")
    b = engine.Tensor(np.array([0.1, 0.2]), requires_grad=True, name="b")
    return (x * w + b).tanh().sum(), x, w, b


def nn_loss(model, x):
    return nn.CrossEntropyLoss()(model(x), np.array([1, 0]))


def small_mlp():
    """MLP([2, 3, 2]) with fixed float64 weights on 2 XOR examples, and its loss."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    model.load_state_dict({
        "layers.0.weight": [[0.5, -0.3, 0.8], [-0.2, 0.4, 0.6]],
        "layers.0.bias": [0.1, -0.2, 0.05],
        "layers.2.weight": [[0.7, -0.5], [-0.4, 0.9], [0.3, 0.6]],
        "layers.2.bias": [0.05, -0.05],
    })
    x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]), name="x")
    loss = nn.CrossEntropyLoss()(model(x), np.array([1, 0]))
    return model, loss


def test_tanh_graph_has_exactly_its_tensors_ops_and_data_flow_edges():
    loss, *_ = tanh_graph()
    source = draw(loss).source
    found = nodes(source)
    assert set(found) == {f"t{i}" for i in range(7)} | {f"op{i}" for i in range(4)}
    assert [found[f"op{i}"] for i in range(4)] == ["mul", "add", "tanh", "sum"]
    names = [found[f"t{i}"].splitlines()[0] for i in range(7)]
    assert names == ["x", "w", "t2", "b", "t4", "t5", "t6"]
    assert sorted(edges(source)) == sorted([
        ("t0", "op0"), ("t1", "op0"), ("op0", "t2"), ("t2", "op1"), ("t3", "op1"),
        ("op1", "t4"), ("t4", "op2"), ("op2", "t5"), ("t5", "op3"), ("op3", "t6")])


def test_tensor_labels_show_shape_dtype_value_and_every_gradient():
    loss, x, w, b = tanh_graph()
    found = nodes(draw(loss).source)
    y = np.tanh(x.data * w.data + b.data)
    dw = x.data * (1 - y ** 2)                        # d sum(tanh(x w + b)) / dw by hand
    np.testing.assert_allclose(dw, [0.7116, 0.2071], atol=5e-5)
    assert found["t1"].splitlines() == ["w", "(2,) float64", "value [0.5, -1]",
                                        "grad [0.7116, 0.2071]"]
    assert "grad [1, 1]" in found["t5"]              # an intermediate's gradient
    assert found["t6"].splitlines()[-1] == "grad 1"  # the root
    assert "grad" not in found["t0"]                 # data has none
    assert w.grad is None and b.grad is None         # drawing does not touch .grad


def test_big_tensors_are_summarised_and_show_selects_the_lines():
    a = engine.Tensor(np.arange(12.0).reshape(3, 4), requires_grad=True, name="a")
    source = draw((a * a).sum(), max_elements=6).source
    assert nodes(source)["t0"].splitlines()[2:] == ["value min 0  mean 5.5  max 11",
                                                    "‖value‖ = 22.49",   # and a heat map
                                                    "grad min 0  mean 11  max 22",
                                                    "‖grad‖ = 44.99"]
    assert nodes(draw((a * a).sum(), show=("shape",)).source)["t0"] == "a\n(3, 4) float64"
    with pytest.raises(ValueError, match="show"):
        draw(a, show=("colour",))


def test_after_backward_freed_the_graph_the_picture_still_shows_this_losss_gradient():
    loss, _, w, _ = tanh_graph()
    before = nodes(draw(loss).source)
    loss.backward()
    found = nodes(draw(loss).source)
    assert f"grad [{labels.number(w.grad[0])}, {labels.number(w.grad[1])}]" in found["t1"]
    assert found == before                           # intermediates too: the ops re-run
    assert w.grad is not None and loss.node.freed    # .grad and the freed graph untouched


def test_a_picture_after_an_accumulating_backward_shows_the_gradient_of_the_loss_drawn():
    """.grad sums every backward() since it was last cleared: drawn after a second
    backward without zero_grad, it was shown as "grad" of this loss (b² [-0.06867,
    0.06867] where this loss's gradient is [-0.04431, 0.04431]), and numeric=True blamed
    backprop for the difference (2.4e-02). The picture differentiates the loss drawn."""
    x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    y = np.array([0, 1, 1, 0])
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    nn.CrossEntropyLoss()(model(x[:2]), y[:2]).backward()      # an earlier batch
    loss = nn.CrossEntropyLoss()(model(x), y)
    fresh = nodes(draw(loss, model=model).source)
    loss.backward()
    bias = model.layers[2].bias
    accumulated = bias.grad.copy()
    after = nodes(draw(loss, model=model, numeric=True).source)
    (true,) = engine.grad(nn.CrossEntropyLoss()(model(x), y), [bias])
    assert not np.allclose(accumulated, true, atol=1e-3)         # .grad is not this gradient
    box = after["t6"]
    assert box.startswith("b² = layers.2.bias") and box.split("\nnumeric")[0] == fresh["t6"]
    assert f"grad [{labels.number(true[0])}, {labels.number(true[1])}]" in box
    errors = [float(e) for e in re.findall(r"max \|analytic − numeric\| ([0-9.e+-]+)",
                                           "\n".join(after.values()))]
    assert len(errors) == 4 and max(errors) < 1e-6
    np.testing.assert_array_equal(bias.grad, accumulated)        # the user's .grad untouched


def test_a_freed_graph_that_cannot_be_rerun_shows_no_gradient_and_says_why():
    w = engine.Tensor(np.ones(4), requires_grad=True, name="w")
    loss = engine.dropout(w, p=0.5, rng=np.random.default_rng(0)).sum()
    loss.backward()
    source = draw(loss).source
    assert "grad" not in "".join(nodes(source).values())
    assert re.search(r"label=\"no gradient shown: backward\(\) freed this graph.*op "
                     r"'dropout' \(node #\d+\) would draw new random numbers", source)


def _buffer_loss(x):
    """mse(x @ W, y) with W zero-initialised, backward() run: the loss (0.5) does not
    depend on x, its gradient with respect to W does."""
    W = engine.Tensor(np.zeros((2, 1)), requires_grad=True, name="W")
    loss = engine.mse(x @ W, np.array([[1.0], [0.0]]))
    loss.backward()
    return loss, W


def test_a_freed_graph_reading_a_shared_batch_buffer_shows_no_gradient_and_says_why():
    """The next batch loaded into a buffer shared with from_numpy after backward() (a
    write handgrad cannot see once the graph is freed): the re-run gave W's gradient
    [-10, -20] for a loss whose gradient is [-1, -2], and the equal loss let it through."""
    buf = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = engine.from_numpy(buf)
    x.name = "x"
    loss, W = _buffer_loss(x)
    np.testing.assert_array_equal(W.grad.ravel(), [-1, -2])
    buf[:] = [[10.0, 20.0], [30.0, 40.0]]                 # the next batch
    source = draw(loss).source
    assert "grad" not in "".join(nodes(source).values())
    assert re.search(r"label=\"no gradient shown: backward\(\) freed this graph.*but x may "
                     r"no longer hold them: its memory is shared with an array outside "
                     r"handgrad.*Draw before loss.backward\(\).*Tensor\(x\), which copies",
                     source)
    frames = np.frombuffer(bytearray(np.ones(4).tobytes())).reshape(2, 2)   # foreign memory
    loss, _ = _buffer_loss(engine.Tensor(frames, copy=False))
    assert "memory is not numpy's (it belongs to a bytearray" in draw(loss).source


@pytest.mark.parametrize("make", [engine.Tensor, engine.adopt], ids=["Tensor", "adopt"])
def test_a_freed_graph_reading_a_copied_or_adopted_batch_still_shows_its_gradient(make):
    buf = np.array([[1.0, 2.0], [3.0, 4.0]])
    x = make(buf if make is engine.Tensor else buf.copy())
    loss, W = _buffer_loss(x)
    buf[:] = [[10.0, 20.0], [30.0, 40.0]]                 # Tensor(buf) copied it
    assert "grad [[-1],\n      [-2]]" in nodes(draw(loss).source)["t1"]
    np.testing.assert_array_equal(W.grad.ravel(), [-1, -2])


def test_op_labels_show_parameters_that_differ_from_the_defaults():
    a = engine.Tensor(np.ones((2, 3)), requires_grad=True)
    found = nodes(draw(a.softmax(axis=0).sum(axis=1).mean()).source)
    assert found["op0"] == "softmax\naxis=0"
    assert found["op1"] == "sum\naxis=(1,)"          # as the op's check() normalised it
    assert found["op2"] == "mean"                    # axis=None, keepdims=False: defaults


def test_derivative_rules_come_from_each_ops_rule_attribute():
    for op in engine.REGISTRY.values():
        assert labels.derivative_rule(op) == op.rule
    assert labels.derivative_rule(engine.exp) == "d/dx = e^x (the output itself)"
    loss, *_ = tanh_graph()
    assert "d/dx = 1 - tanh(x)^2" in nodes(draw(loss, rules=True).source)["op2"]


def test_the_gelu_and_sigmoid_bce_pictures_show_their_whole_rule():
    """Both were cut or wrong when rules were parsed out of docstrings."""
    x = engine.Tensor(np.array([0.5, -1.0]), requires_grad=True)
    gelu_box = " ".join(nodes(draw(engine.gelu(x).sum(), rules=True).source)["op0"].split())
    assert "(1 + t)/2 + x (1 − t²) u′(x)/2" in gelu_box and "Φ(x) + x φ(x)" in gelu_box
    bce = engine.sigmoid_binary_cross_entropy(x, np.array([1.0, 0.0]), reduction="batchmean")
    bce_box = " ".join(nodes(draw(bce, rules=True).source)["op0"].split())
    assert "d/dz = (σ(z) − y)/N" in bce_box and "the batch size (batchmean)" in bce_box


def test_fused_losses_are_one_box_showing_their_backward_delta():
    z = engine.Tensor(np.array([[1.0, -1.0], [0.5, 2.0]]), requires_grad=True)
    found = nodes(draw(engine.softmax_cross_entropy(z, np.array([0, 1]))).source)
    ops = [v for k, v in found.items() if k.startswith("op")]
    # the formula for its reduction, what N is, and (small tensors) p and y to check by hand
    p = np.exp([[2.0, 0.0], [0.0, 1.5]]) / np.exp([[2.0, 0.0], [0.0, 1.5]]).sum(1, keepdims=True)
    assert ops == ["softmax_cross_entropy\nδ = (p − y)/N, N = 2 rows\n"
                   f"p [[{p[0, 0]:.4g}, {p[0, 1]:.4g}],\n"
                   f"   [{p[1, 0]:.4g}, {p[1, 1]:.4g}]]\n"
                   "y [[1, 0],\n   [0, 1]]"]
    summed = nodes(draw(engine.softmax_cross_entropy(z, np.array([0, 1]), reduction="sum")).source)
    assert "δ = p − y (reduction sum)" in summed["op0"]
    found = nodes(draw(engine.sigmoid_binary_cross_entropy(z, np.ones((2, 2)))).source)
    assert "δ = (σ(z) − y)/N, N = 4 elements" in found["op0"]
    found = nodes(draw(engine.sigmoid_binary_cross_entropy(z, np.ones((2, 2)),
                                                           reduction="batchmean")).source)
    assert "δ = (σ(z) − y)/N, N = 2 rows" in found["op0"]


def test_a_scaled_fused_loss_box_states_the_delta_it_sends():
    """draw(ce / 4): the loss node receives g = 1/4, and sends g·(p − y)/N; its box said
    (p − y)/N, four times the gradient printed in the z box below it."""
    z = engine.Tensor(np.array([[1.0, -1.0], [0.5, 2.0]]), requires_grad=True)
    ce = engine.softmax_cross_entropy(z, np.array([0, 1]))
    loss = ce / 4
    box = nodes(draw(loss).source)["op0"]
    assert box.startswith("softmax_cross_entropy\nδ = g·(p − y)/N, N = 2 rows\n"
                          "g = the gradient the loss receives = 0.25\np ")
    delta = output_delta(ce.node)
    (sent,) = engine.grad(loss, [z], retain_graph=True)
    np.testing.assert_allclose(0.25 * delta.rhs(), sent, rtol=1e-15)     # what the box says
    frames = [nodes(f.source)["op0"] for f in backward_frames(loss)]
    assert "receives\n" in frames[0] and "receives = 0.25" in frames[-1]   # once it arrived
    loss.backward()                                       # freed: the ops re-run, g known
    assert "δ = g·(p − y)/N, N = 2 rows\ng = the gradient the loss receives = 0.25\n" in \
        nodes(draw(loss).source)["op0"]
    assert "δ = g·(p − y)/N, N = 2 rows\ng = the gradient the loss receives\n" in \
        nodes(draw(loss, show=("shape",)).source)["op0"]   # no gradients: g only named
    summed = engine.sigmoid_binary_cross_entropy(z, np.ones((2, 2)), reduction="sum")
    box = nodes(draw(summed * 3 + summed).source)["op0"]  # used twice: g = 3 + 1
    assert "δ = g·(σ(z) − y) (reduction sum)\ng = the gradient the loss receives = 4\n" in box
    assert "δ = (p − y)/N, N = 2 rows\np " in nodes(draw(ce).source)["op0"]   # the root: g = 1


def test_matrix_values_line_up_in_columns_and_inputs_stay_outside_layers():
    lines = labels.labelled("value", np.array([[1.5, -20.25], [300.0, 4.0]]), 6)
    assert lines == ["value [[1.5, -20.25],", "       [300,      4]]"]
    model, _ = small_mlp()
    x = engine.Tensor(np.ones((2, 2)), requires_grad=True, name="x")     # an input with grad
    source = draw(nn_loss(model, x), model=model).source
    assert '"t0"' not in cluster(source, "cluster_layers") and "x" in nodes(source)["t0"]
    alone = engine.Tensor(np.ones(3), name="w")           # a tensor without a graph
    assert "root" not in draw(alone).source and "the loss" not in draw(alone).source


# --- modules -------------------------------------------------------------------------------

def test_mlp_layers_are_clusters_labelled_with_module_and_description():
    model, loss = small_mlp()
    source = draw(loss, model=model).source
    outer = cluster(source, "cluster_layers")
    assert 'label="layers (Sequential)"' in outer
    for scope, text in [("layers.0", "layers.0 (Linear 2→3, bias=True)"),
                        ("layers.1", "layers.1 (Tanh)"),
                        ("layers.2", "layers.2 (Linear 3→2, bias=True)")]:
        body = cluster(source, f"cluster_{scope}")
        assert f'label="{text}"' in body and f"cluster_{scope}" in outer
    found = nodes(cluster(source, "cluster_layers.0"))
    assert sorted(v.splitlines()[0] for v in found.values()) == [   # the lecture's names
        "W¹ = layers.0.weight", "b¹ = layers.0.bias", "linear", "z¹"]
    assert "softmax_cross_entropy" not in outer      # the loss is outside every module


def test_without_a_model_clusters_carry_the_scope_and_parameters_their_own_name():
    model, loss = small_mlp()
    source = draw(loss).source
    assert 'label="layers.0"' in cluster(source, "cluster_layers.0")
    assert nodes(cluster(source, "cluster_layers.2"))["t5"].startswith("W² = weight\n(3, 2)")


def test_collapse_draws_one_box_per_layer_with_its_parameter_shapes():
    model, loss = small_mlp()
    source = draw(loss, model=model, collapse=True).source
    found = nodes(source)
    assert [found[f"group{i}"].splitlines()[:3] for i in range(3)] == [
        ["layers.0 (Linear 2→3, bias=True)", "W¹ = weight (2, 3)", "b¹ = bias (3,)"],
        ["layers.1 (Tanh)", "‖∂L/∂a¹‖ = 0.4994"],
        ["layers.2 (Linear 3→2, bias=True)", "W² = weight (3, 2)", "b² = bias (2,)"]]
    assert [v.splitlines()[:2] for k, v in found.items() if k.startswith("op")] == [
        ["softmax_cross_entropy", "δ = (p − y)/N, N = 2 rows"]]
    assert sorted(edges(source)) == sorted([
        ("t0", "group0"), ("group0", "group1"), ("group1", "group2"), ("group2", "op3"),
        ("t8", "op3"), ("op3", "t9")])
    assert edge_attrs(source)[("group0", "group1")] == 'label="(2, 3)" id=d_op1_0'


@pytest.mark.parametrize("freeze", ["before", "after"])
def test_collapse_lists_a_frozen_weight_and_says_it_is_frozen(freeze):
    """A weight frozen before the forward pass disappeared from its collapsed layer's box
    (the box listed parameters requiring grad only): "Linear 2→3" showed a bias alone.
    Frozen is what the graph recorded: one frozen after the forward pass still got its
    gradient, so it is not said to be frozen."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=1)
    if freeze == "before":
        model.layers[0].weight.requires_grad = False
    x = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1, 1, 0]))
    if freeze == "after":
        model.layers[0].weight.requires_grad = False
    loss.backward()
    box = nodes(draw(loss, model=model, collapse=True).source)["group0"].splitlines()
    if freeze == "before":
        assert box[1] == "W¹ = weight (2, 3), frozen" and not any("∂L/∂W¹" in x for x in box)
    else:
        assert box[1] == "W¹ = weight (2, 3)"


def test_ids_are_deterministic_two_builds_give_identical_dot():
    def build() -> str:
        junk = [engine.Tensor(np.ones(3), requires_grad=True) * 2 for _ in range(5)]  # noqa: F841
        model, loss = small_mlp()
        return draw(loss, model=model, backward_order=True, numeric=True).source
    assert build() == build()


# --- backward order and numeric overlay ----------------------------------------------------

def fan_out_graph():
    """loss = sum(tanh(h) * sigmoid(h)) + sum(W * W), h = x @ W: W and h used twice."""
    W = engine.Tensor(np.array([[0.3, -0.2], [0.1, 0.4]]), requires_grad=True, name="W")
    h = engine.Tensor(np.array([[1.0, 2.0], [-1.0, 0.5]]), name="x") @ W
    return (h.tanh() * h.sigmoid()).sum() + (W * W).sum()


def test_backward_order_numbers_ops_as_backward_runs_their_rules(monkeypatch):
    loss = fan_out_graph()
    source = draw(loss, backward_order=True).source
    numbered = {int(re.match(r"\[(\d+)\]", label).group(1)): name
                for name, label in nodes(source).items() if name.startswith("op")}
    view = build_view(loss)
    calls: list[str] = []
    for op in {id(node.op): node.op for node in view.nodes}.values():  # each op once
        rule = op.backward
        monkeypatch.setattr(op, "backward",
                            lambda ctx, g, rule=rule: calls.append(view.dot_id(ctx)) or rule(ctx, g))
    loss.backward()
    assert [numbered[k] for k in sorted(numbered)] == calls
    assert sorted(numbered) == list(range(1, len(view.nodes) + 1))
    # the gradient has its own arrow, pointing back from the consumer to the producer
    assert ('t1 -> op0 [label="grad (2, 2)" color="#c0392b" constraint=false dir=back '
            'fontcolor="#c0392b" id=g_op0_1 style=dashed]') in source
    assert edge_attrs(source)[("t0", "op0")] == "id=d_op0_0"   # x is data: no gradient back


def test_numeric_gradients_agree_with_the_analytic_ones():
    a = engine.Tensor(np.linspace(-1, 1, 12).reshape(3, 4), requires_grad=True, name="a")
    v = engine.Tensor(np.array([0.5, -0.25, 1.0, 2.0]), requires_grad=True, name="v")
    loss = ((a * v).tanh() ** 2).mean() + v.softplus().sum()
    view = build_view(loss)
    dA, dv = engine.grad(loss, [a, v], retain_graph=True)
    checks = numeric_checks(view, {id(a): dA, id(v): dv}, max_elements=6)
    small, big = checks[id(v)], checks[id(a)]
    assert small.direction is None and small.numeric.shape == (4,)       # per element
    assert big.direction is not None and big.numeric.shape == ()         # along one direction
    np.testing.assert_allclose(small.numeric, dv, atol=1e-6, rtol=0)
    np.testing.assert_allclose(big.numeric, np.sum(dA * big.direction), atol=1e-6, rtol=0)
    assert small.error < 1e-6 and big.error < 1e-6
    found = nodes(draw(loss, numeric=True).source)
    assert "numeric [" in found["t1"] and "along a random unit u: grad·u" in found["t0"]


def test_a_graph_whose_weights_changed_after_its_forward_pass_is_refused_by_name():
    """After backward and an optimizer step, the picture would show the new weights next
    to the old gradient and activations, and the numeric check would blame the exact
    gradient: every picture refuses it, naming the weight; a new forward pass draws."""
    model, loss = small_mlp()
    drawn = draw(loss, model=model, numeric=True).source
    assert max(float(v) for v in re.findall(r"numeric\| ([0-9.e+-]+)", drawn)) < 1e-6
    loss.backward()
    nn.optim.SGD(model.parameters(), lr=1.0).step()
    message = r"W¹ = layers\.0\.weight changed after the forward pass.*written in place.*" \
        r"forward pass again"
    for picture in (lambda: draw(loss, model=model, numeric=True),
                    lambda: draw(loss, model=model),
                    lambda: backward_playback(loss, model=model)):
        with pytest.raises(ValueError, match=message):
            picture()
    x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]))
    again = draw(nn_loss(model, x), model=model, numeric=True).source
    assert max(float(v) for v in re.findall(r"numeric\| ([0-9.e+-]+)", again)) < 1e-6


def test_a_write_through_an_array_read_after_the_forward_pass_is_refused():
    loss, x, w, b = tanh_graph()
    w.data[0] = 3.0                       # handed out while a live node saved it: checkpoint
    with pytest.raises(ValueError, match="w changed after the forward pass.*numpy array"):
        draw(loss)


def test_a_write_through_an_array_handed_out_after_backward_freed_the_graph_is_refused():
    """``p.data -= lr * p.grad`` once backward() freed the graph: no live node saved the
    weights, so no checkpoint recorded them and the write left no trace. The picture would
    show the new weights next to the old activations and gradients ("z = x W + b" false
    for the values drawn): every picture refuses it, as possibly changed."""
    model, loss = small_mlp()
    loss.backward()
    for p in model.parameters():
        p.data -= 0.5 * p.grad
    message = r"W¹ = layers\.0\.weight may have changed after the forward pass.*handed out"
    for picture in (lambda: draw(loss, model=model),
                    lambda: backward_playback(loss, model=model)):
        with pytest.raises(ValueError, match=message):
            picture()


def test_a_scalar_graph_updated_micrograd_style_is_refused_even_where_no_node_saved_it():
    """``c`` is read only by ``add``, which saves nothing, so no forward pass ever stops
    counting its array as handed out: the hand-out after the forward still counts."""
    a = engine.Tensor(2.0, requires_grad=True, name="a")
    c = engine.Tensor(1.0, requires_grad=True, name="c")
    for _ in range(2):
        y = a * 3.0 + c
        y.backward()
        c.data -= 0.1 * c.grad
        c.grad = None
    with pytest.raises(ValueError, match="c may have changed.*handed out"):
        draw(y)


def test_reading_values_without_handing_the_array_out_keeps_the_graph_drawable():
    """print(t), t.numpy(copy=True), reading outputs for a metric, and drawing itself (twice)
    hand no leaf's array out after the forward pass; reading a weight's .data does."""
    model, loss = small_mlp()
    loss.backward()
    w = model.layers[0].weight
    print(w, w.numpy(copy=True), loss.numpy(), loss.item())
    draw(loss, model=model)
    draw(loss, model=model, numeric=True)
    _ = w.data                            # the array leaves handgrad
    with pytest.raises(ValueError, match="may have changed.*print\\(t\\)"):
        draw(loss, model=model)


def test_numeric_needs_a_scalar_root():
    a = engine.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="scalar"):
        draw(a * 2, numeric=True)


def test_numeric_without_an_analytic_gradient_compares_with_nothing():
    """Without an analytic gradient the numeric estimate is shown alone (it compared a
    missing .grad as zeros, "max |analytic − numeric| 8.7e-02"). After backward() and
    zero_grad() the picture re-runs the freed graph and has this loss's gradient."""
    model, loss = small_mlp()
    loss.backward()
    true = {p: p.grad.copy() for p in model.parameters()}
    nn.optim.SGD(model.parameters(), lr=1.0).zero_grad()
    found = nodes(draw(loss, model=model, numeric=True, max_elements=4).source)
    boxes = [found[k] for k in ("t1", "t2", "t5", "t6")]   # W¹, b¹, W², b²
    assert all("\ngrad" in box and "max |analytic − numeric|" in box for box in boxes)
    lines = check_lines(NumericCheck(None, np.array([0.5, -0.25])), 4)
    assert lines == ["numeric [0.5, -0.25]", "no analytic gradient here to compare with"]
    lines = check_lines(NumericCheck(None, np.array(0.125), direction=np.ones(6)), 4)
    assert lines == ["along a random unit u: numeric d/du 0.125",
                     "no analytic gradient here to compare with"]
    view = build_view(loss, model)
    checks = numeric_checks(view, {}, max_elements=6)
    W1 = model.layers[0].weight
    assert checks[id(W1)].analytic is None and checks[id(W1)].error is None
    np.testing.assert_allclose(checks[id(W1)].numeric, true[W1], atol=1e-8, rtol=0)


def dropout_loss(**kwargs):
    """A training-mode MLP([2, 3, 2]) with dropout 0.5 (a numpy Generator) and its loss."""
    model = nn.MLP([2, 3, 2], activation="tanh", dropout=0.5, seed=0, dtype=np.float64)
    model.train()
    x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]), name="x")
    return model, nn.CrossEntropyLoss()(model(x), np.array([1, 0]))


def test_numeric_holds_the_recorded_dropout_mask_and_leaves_the_generator_alone():
    """The numeric estimate differentiates the graph that ran: dropout with the mask its
    forward drew. It replayed dropout with a new mask per nudge (errors of ~1e5) and
    advanced the model's Generator, changing the next training step's masks."""
    model, loss = dropout_loss()
    generator = model.layers[2].rng
    state = generator.bit_generator.state
    errors = [float(e) for e in re.findall(r"max \|analytic − numeric\| ([0-9.e+-]+)",
                                            draw(loss, model=model, numeric=True).source)]
    backward_playback(loss, model=model, numeric=True)
    assert len(errors) == 4 and max(errors) < 1e-8
    assert generator.bit_generator.state == state
    view = build_view(loss, model)
    dW, = engine.grad(loss, [model.layers[0].weight], retain_graph=True)
    check = numeric_checks(view, {id(model.layers[0].weight): dW}, 6)
    np.testing.assert_allclose(check[id(model.layers[0].weight)].numeric, dW, atol=1e-8, rtol=0)
    assert generator.bit_generator.state == state


def test_numeric_refuses_a_random_op_it_cannot_replay_with_the_numbers_it_drew(registered):
    model, loss = dropout_loss()
    loss.backward()                                        # frees the mask
    with pytest.raises(ValueError, match=r"cannot replay op 'dropout' \(node #\d+\): "
                                         r"backward\(\) freed the mask"):
        draw(loss, model=model, numeric=True)

    class Jitter(engine.Op):
        """jitter(x, rng) = x + noise drawn from rng (a test op)."""

        name = "jitter"
        rule = "d/dx = 1"

        def forward(self, ctx, x, *, rng):
            return x + rng.standard_normal(x.shape)

        def backward(self, ctx, grad):
            return (grad,)

        def jvp(self, ctx, dx):
            return dx

    jitter = registered(Jitter)
    generator = np.random.default_rng(0)
    w = engine.Tensor(np.ones(2), requires_grad=True)
    noisy = jitter(w, rng=generator).sum()
    state = generator.bit_generator.state
    with pytest.raises(ValueError, match="cannot replay op 'jitter' .*numpy Generator"):
        draw(noisy, numeric=True)
    assert generator.bit_generator.state == state
    seeded = engine.dropout(w, p=0.5, rng=3).sum()         # an int seed redraws its mask
    seeded.backward()
    error = re.search(r"max \|analytic − numeric\| ([0-9.e+-]+)", draw(seeded, numeric=True).source)
    assert float(error.group(1)) < 1e-8


def test_numeric_replays_an_eval_mode_dropout_as_the_identity_as_the_refusal_advises():
    """An eval-mode dropout draws nothing (the identity), but numeric=True refused it for
    the Generator it holds, so the refusal's own advice (eval mode) failed too."""
    model, loss = dropout_loss()
    loss.backward()                                        # frees the training-mode mask
    with pytest.raises(ValueError, match=r"backward\(\) freed the mask .*model\.eval\(\)"):
        draw(loss, model=model, numeric=True)
    model.eval()                                           # the advice
    model.zero_grad()
    generator = model.layers[2].rng
    state = generator.bit_generator.state
    x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]), name="x")
    loss = nn.CrossEntropyLoss()(model(x), np.array([1, 0]))
    loss.backward()                                        # an identity saves no mask to free
    source = draw(loss, model=model, numeric=True).source
    errors = [float(e) for e in re.findall(r"max \|analytic − numeric\| ([0-9.e+-]+)", source)]
    assert len(errors) == 4 and max(errors) < 1e-8
    assert generator.bit_generator.state == state


# --- playback ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0, -1, 1.5, True, "6"])
def test_playback_max_elements_that_is_not_a_positive_integer_is_refused_by_name(value, tmp_path):
    """backward_playback took max_elements=0, -1 (layer level), 1.5 or True: a ValueError
    names max_elements and the value, at both levels and in the step exports."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]]))),
                                 np.array([1, 0]))
    message = rf"max_elements must be a positive integer.*, got {re.escape(repr(value))}$"
    for level in ("op", "layer"):
        with pytest.raises(ValueError, match=message):
            backward_playback(loss, level=level, model=model, max_elements=value)
    with pytest.raises(ValueError, match=message):
        save_backward_steps(loss, tmp_path / "steps", max_elements=value)
    assert list(tmp_path.iterdir()) == []
    assert backward_playback(loss, level="layer", model=model, max_elements=1) is not None


@pytest.mark.parametrize("value", [-1, 1.5, True, "6"])
def test_draw_max_elements_that_is_not_an_integer_of_zero_or_more_is_refused_by_name(value):
    """draw took max_elements=1.5 or True (documented: an integer >= 0)."""
    with pytest.raises(ValueError, match=rf"draw: max_elements must be an integer >= 0, "
                                         rf"got {re.escape(repr(value))}$"):
        draw(fan_out_graph(), max_elements=value)


def test_one_frame_per_backward_step_with_the_current_op_highlighted():
    loss = fan_out_graph()
    frames = list(captioned_frames(loss))
    n_ops = len(build_view(loss).nodes)
    # step 0 (the forward pass done), one frame per rule, the closing frame
    assert len(list(backward_frames(loss))) == n_ops + 2 == len(frames) == 10
    for k, (caption, frame) in enumerate(frames[1:-1], start=1):
        assert caption.startswith(f"step {k}/{n_ops}: backward of ")
        assert frame.source.count("penwidth=3") == 2     # the current op, and its legend entry
        assert 'legend_now' in frame.source and 'legend_gradient' in frame.source
    model, loss = small_mlp()
    assert "legend_layer" in draw(loss, model=model).source     # the clusters' colour too
    assert "legend_layer" not in draw(engine.Tensor(np.ones(2), requires_grad=True).sum()).source
    assert frames[1][0] == "step 1/8: backward of add: ∂L/∂t6 = ∂L/∂L = 1; ∂L/∂t8 = ∂L/∂L = 1"
    assert frames[-2][0] == ("step 8/8: backward of matmul: ∂L/∂W (this op's part) = "
                             "xᵀ ∂L/∂t2 = [[0.2469, -0.02124], [1.372, 1.466]]")


def test_frames_show_gradients_summed_so_far_until_every_user_has_run():
    loss = fan_out_graph()
    frames = [nodes(f.source) for f in backward_frames(loss)]
    for name in ("t1", "t2"):   # W feeds matmul and W * W; h feeds tanh and sigmoid
        partial = [k for k, f in enumerate(frames) if "grad so far" in f[name]]
        final = [k for k, f in enumerate(frames) if "\ngrad [" in f[name]]
        assert partial and final and max(partial) < min(final)
        assert all("grad" not in f[name] for f in frames[:min(partial)])
    W = frames[-1]["t1"]
    assert W.endswith("grad [[0.8469, -0.4212],\n      [ 1.572,   2.266]]")


def test_an_op_is_drawn_as_done_only_after_its_rule_ran():
    """Step 0 is the forward pass done: no op is faded as "rule already ran" (it faded all
    but the last op, as if backward had run them); step k fades exactly steps 1..k − 1."""
    faded = re.compile(rf'^\s*(op\d+) \[label="[^"]*" fillcolor="{DONE["fillcolor"]}"', re.M)
    model, loss = small_mlp()
    frames = [f.source for f in backward_frames(loss, model=model)]
    n = len(frames) - 2
    assert n == 4
    done = [sorted(faded.findall(source)) for source in frames]
    assert done[0] == [] and done[1] == []
    assert [len(d) for d in done] == [0, 0, 1, 2, 3, 4]
    assert all(set(done[k]) <= set(done[k + 1]) for k in range(n + 1))


def test_frames_need_a_live_graph():
    loss, *_ = tanh_graph()
    loss.backward()
    with pytest.raises(ValueError, match="retain_graph"):
        next(backward_frames(loss))


# --- rendering -----------------------------------------------------------------------------

@needs_dot
@pytest.mark.parametrize("scope", ["<b>block</b>", "<in & out>"])
def test_a_scope_shaped_like_html_is_the_cluster_label_as_text(tmp_path, scope):
    """A cluster label went into the DOT raw: name_scope("<b>block</b>") became the HTML
    label <b>block</b> (a cluster "b" and two stray nodes "block" and "/b"), and
    "<in & out>" made dot fail. It is escaped as tensor names are."""
    x = engine.Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")
    with engine.name_scope(scope):
        h = x * x
    picture = draw(h.sum())
    written = scope.replace("&", "&amp;")           # Graphviz reads it back as "&"
    body = cluster(picture.source, f"cluster_{written}")
    assert f'label="{written}"' in body
    root = ET.parse(render(picture, tmp_path / "scope.svg")).getroot()
    drawn = {g.get("class"): [] for g in root.iter(f"{SVG}g")}
    for g in root.iter(f"{SVG}g"):
        drawn[g.get("class")].append(g)
    titles = [g.find(f"{SVG}title").text for g in drawn["node"]]
    assert sorted(t for t in titles if not t.startswith("legend_")) == sorted(nodes(picture.source))
    (box,) = [g for g in drawn["cluster"] if g.find(f"{SVG}title").text == f"cluster_{scope}"]
    assert [t.text for t in box.iter(f"{SVG}text")] == [scope]
    save_backward_steps(h.sum(), tmp_path / "frames")        # the pinned exports too
    frame = ET.parse(tmp_path / "frames" / "step-00.svg").getroot()
    assert scope in [t.text for t in frame.iter(f"{SVG}text")]


@needs_dot
def test_scopes_with_backslashes_and_quotes_are_each_their_own_cluster(tmp_path):
    """A scope ending in a backslash made the cluster's name end the DOT string early (dot
    failed: syntax error), and the scopes 'q"' and 'q\\"' became one cluster's name, so
    their boxes were drawn in one cluster."""
    scopes = ["a\\", 'q"', 'q\\"', "b\\\\"]
    x = engine.Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")
    total = x.sum()
    for scope in scopes:
        with engine.name_scope(scope):
            total = total + (x * 2.0).sum()
    root = ET.parse(render(draw(total), tmp_path / "scopes.svg")).getroot()
    clusters = [g for g in root.iter(f"{SVG}g") if g.get("class") == "cluster"
                and g.find(f"{SVG}title").text != "cluster_legend"]
    labels = sorted([t.text for t in g.iter(f"{SVG}text")][0] for g in clusters)
    assert labels == sorted(scopes)                 # four clusters, each labelled as written
    save_backward_steps(total, tmp_path / "frames")   # every frame on the one layout
    boxes = []
    for frame in sorted((tmp_path / "frames").glob("step-*.svg")):
        found = {g.find(f"{SVG}title").text: [(e.get("points"), e.get("d")) for e in g
                                               if e.tag in (f"{SVG}polygon", f"{SVG}path")]
                 for g in ET.parse(frame).getroot().iter(f"{SVG}g") if g.get("class") == "cluster"}
        boxes.append(found)
    assert len(boxes) > 2 and all(b == boxes[0] for b in boxes)


@needs_dot
def test_a_name_or_scope_shaped_like_an_entity_is_shown_as_written(tmp_path):
    """Graphviz reads "&amp;", "&lt;", "&#38;" and "&alpha;" in a DOT label or name as the
    character they name: a tensor "&amp;" was drawn "&", and a scope "S&alpha;" went into
    the SVG's <title> as an entity XML does not know, so the HTML export failed to parse
    it. Every picture shows the text as written; a name "<script>" stays text."""
    names = ["&amp; &lt;i&gt; x &#38; y", "<script>alert(1)</script>"]
    x = engine.Tensor(np.array([1.0, 2.0]), requires_grad=True, name=names[0])
    w = engine.Tensor(np.arange(1.0, 11.0), requires_grad=True, name=names[1])  # heat map
    with engine.name_scope("S&alpha;"):
        loss = (x * x).sum() + (w * w).sum()
    shown = {*names, "S&alpha;"}
    assert shown <= svg_texts(render(draw(loss), tmp_path / "d.svg").read_text())
    assert shown <= svg_texts(save_backward_steps(loss, tmp_path / "frames")[0].read_text())
    page = save_backward_html(loss, tmp_path / "b.html").read_text()
    assert shown <= svg_texts(page[page.index("<svg"):page.index("</svg>") + len("</svg>")])
    assert "<script>alert" not in page


@needs_dot
def test_a_line_break_in_a_name_or_scope_is_shown_escaped_on_its_one_line(tmp_path):
    """A newline in a tensor name or a scope went into the pictures raw: dot drew the name
    on two lines (the player and the step exports, which fill a box line by line, then
    put each line in the place of the one before), a heat-map box ran "x" and "y"
    together, and the step exports lost the cluster (its DOT name spanned two lines)."""
    big = engine.Tensor(np.arange(1.0, 11.0), requires_grad=True, name="x\ny")  # heat map
    small = engine.Tensor(np.array([1.0, 2.0]), requires_grad=True, name="s\r\nt")
    with engine.name_scope("blo\nck"):
        loss = (big * big).sum() + (small * small).sum()
    shown = {"x\\ny", "s\\r\\nt", "blo\\nck"}
    assert shown <= svg_texts(render(draw(loss), tmp_path / "d.svg").read_text())
    assert shown <= svg_texts(save_backward_steps(loss, tmp_path / "frames")[0].read_text())
    page = save_backward_html(loss, tmp_path / "b.html").read_text()
    svg = page[page.index("<svg"):page.index("</svg>") + len("</svg>")]
    assert shown <= svg_texts(svg)
    last = json.loads(re.search(r'class="hg-data">(.*?)</script>', page, re.S).group(1))[-1]
    boxes = {g.get("id"): len(list(g.iter(f"{SVG}text"))) for g in ET.fromstring(svg).iter(f"{SVG}g")}
    assert {nid: len(spec["lines"]) for nid, spec in last["nodes"].items()} == \
        {nid: boxes[nid] for nid in last["nodes"]}           # the player's line per <text>


@needs_dot
def test_svg_of_an_mlp_has_every_node_and_cluster(tmp_path):
    model, loss = small_mlp()
    picture = draw(loss, model=model)
    path = render(picture, tmp_path / "mlp.svg")
    root = ET.parse(path).getroot()
    titles = {g.get("class"): set() for g in root.iter(f"{SVG}g")}
    for g in root.iter(f"{SVG}g"):
        title = g.find(f"{SVG}title")
        if title is not None:
            titles[g.get("class")].add(title.text)
    assert set(nodes(picture.source)) <= titles["node"]
    assert {"cluster_layers", "cluster_layers.0", "cluster_layers.1", "cluster_layers.2",
            "cluster_legend"} <= titles["cluster"]
    assert render(picture, tmp_path / "mlp.png", "png").read_bytes()[:4] == b"\x89PNG"


@needs_dot
@needs_dot
def test_an_html_export_is_the_same_bytes_in_every_run(tmp_path):
    """The same picture exported by two processes (different hash seeds): identical files,
    so an export can be diffed and kept under version control. The hidden arrows were
    listed in set order, and the player's id took the frames' memory address."""
    script = (
        "import sys, numpy as np\n"
        "from handgrad import engine, nn\n"
        "from handgrad.engine.viz import save_backward_html\n"
        "model = nn.MLP([2, 3, 2], activation='tanh', seed=0)\n"
        "x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]], dtype=np.float32), name='x')\n"
        "loss = nn.CrossEntropyLoss()(model(x), np.array([1, 0]))\n"
        "save_backward_html(loss, sys.argv[1], model=model)\n")
    pages = []
    for seed in ("1", "2"):
        path = tmp_path / f"page{seed}.html"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, str(path)], check=True, env=env)
        pages.append(path.read_bytes())
    assert pages[0] == pages[1]


def test_backward_html_is_one_self_contained_page_one_layout_restyled_per_step(tmp_path):
    model, loss = small_mlp()
    text = save_backward_html(loss, tmp_path / "b.html", model=model).read_text()
    assert text.count('<div class="hg-frame"') == len(build_view(loss).nodes) + 2 == 6
    assert text.count("<svg") == 1                 # laid out once; each step restyles it
    data = json.loads(re.search(r'<script type="application/json" class="hg-data">(.*?)</script>',
                                text, re.S).group(1))
    assert len(data) == 6 and all(set(d) == {"caption", "nodes", "edges"} for d in data)
    assert data[1]["nodes"]["n_op3"]["fill"] == "#ffc933"         # the loss's rule runs first
    assert data[2]["nodes"]["n_op3"]["fill"] == "#e9eef7"         # then it is done
    tanh = ("step 3/4: backward of tanh: tanh′(z¹) = 1 − (a¹)² = [[0.9901, 0.961, 0.6732], "
            "[0.8556, 0.9901, 0.1977]]; δ¹ = ∂L/∂a¹ ⊙ tanh′(z¹) = [[0.2316, -0.2436, -0.03937], "
            "[-0.204, 0.2557, 0.01178]]")
    assert data[3]["caption"] == tanh
    assert f'data-caption="{tanh}"' in text
    assert text.count("step 3/4: backward of tanh") == 2          # its frame and its data: once shown
    assert "ArrowLeft" in text and "ArrowRight" in text and "tabindex" in text
    without_xmlns = re.sub(r'xmlns(:xlink)?="http://www\.w3\.org/[^"]*"', "", text)
    assert "http" not in without_xmlns
    assert not re.search(r"<(link|img|iframe)\b|src=|@import|url\(", text)


def test_two_playbacks_are_independent_players_with_their_own_ids():
    model, loss = small_mlp()
    playback = backward_playback(loss, level="layer", model=model)
    first, second = playback._repr_html_(), playback._repr_html_()
    ids = [re.search(r'class="hg-player" id="([^"]+)"', h).group(1) for h in (first, second)]
    assert ids[0] != ids[1] and f'getElementById("{ids[1]}")' in second
    assert "root.addEventListener(\"keydown\"" in first     # keys on the player, not the page
    assert "document.addEventListener" not in first


def test_without_dot_rendering_explains_how_to_install_it_and_dot_text_still_works(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))       # no `dot` to be found
    loss, *_ = tanh_graph()
    picture = draw(loss)
    with pytest.raises(GraphvizNotFound, match="apt-get install graphviz") as error:
        render(picture, tmp_path / "g.svg")
    assert isinstance(error.value, RuntimeError)
    assert "brew install graphviz" in str(error.value)
    assert "conda install graphviz" in str(error.value)
    assert not (tmp_path / "g.svg").exists()
    assert picture.source.startswith("digraph handgrad {")
    assert render(picture, tmp_path / "g.dot", "dot").read_text() == picture.source
    with pytest.raises(GraphvizNotFound):
        save_backward_html(loss, tmp_path / "b.html")
    assert draw_command(parse(["--out", str(tmp_path / "g.svg")])) == 2
    err = capsys.readouterr().err
    assert err.startswith("handgrad draw: error: ") and err.count("\n") == 1


def test_render_rejects_unknown_formats(tmp_path):
    with pytest.raises(ValueError, match="format"):
        render(draw(engine.Tensor(1.0)), tmp_path / "g.gif", "gif")


# --- teaching plot and CLI -----------------------------------------------------------------

def test_plot_activations_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from handgrad.nn.plots import plot_activations
    path = tmp_path / "activations.png"
    plot_activations(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="handgrad draw")
    add_draw_arguments(parser)
    return parser.parse_args(argv)


def test_draw_command_writes_dot_text_and_prints_the_path(tmp_path, capsys):
    out = tmp_path / "graph.dot"
    args = ["--hidden", "4,3", "--batch", "2", "--collapse", "--out", str(out)]
    assert draw_command(parse(args)) == 0
    assert capsys.readouterr().out.strip() == str(out)
    text = out.read_text()
    assert text.startswith("digraph handgrad {")
    assert text.count("shape=box3d") == 5 + 1     # 5 layers, and the legend's sample


@needs_dot
def test_draw_command_writes_svg_and_the_html_playback(tmp_path, capsys):
    svg = tmp_path / "g.svg"
    args = ["--backward-order", "--rules", "--numeric", "--out", str(svg)]
    assert draw_command(parse(args)) == 0
    assert ET.parse(svg).getroot().tag == f"{SVG}svg"
    page = tmp_path / "b.html"
    assert draw_command(parse(["--html", "--out", str(page)])) == 0
    # step 0, then linear, tanh, linear, loss, then the closing frame
    assert page.read_text().count('<div class="hg-frame"') == 6
    assert capsys.readouterr().out.split() == [str(svg), str(page)]


# --- golden README figure --------------------------------------------------------------------

def golden_picture():
    model, loss = small_mlp()
    return draw(loss, model=model)


def test_small_mlp_dot_matches_the_golden_file():
    expected = (GOLDEN / "small_mlp.dot").read_text(encoding="utf-8")
    assert golden_picture().source == expected, \
        "the picture changed: regenerate with `.venv/bin/python -m tests.engine.test_viz`"


def test_golden_svg_was_rendered_from_the_golden_dot():
    svg = ET.parse(GOLDEN / "small_mlp.svg").getroot()
    titles = {g.find(f"{SVG}title").text for g in svg.iter(f"{SVG}g") if g.get("class") == "node"}
    dot_ids = {name for name, _ in NODE.findall((GOLDEN / "small_mlp.dot").read_text())}
    assert titles == dot_ids


if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    picture = golden_picture()
    (GOLDEN / "small_mlp.dot").write_text(picture.source, encoding="utf-8")
    print(render(picture, GOLDEN / "small_mlp.svg"))
    print(GOLDEN / "small_mlp.dot")


# --- slide-ready options, and the draw command's page -----------------------------------------

def test_font_size_layout_direction_and_max_elements_are_options():
    model, loss = small_mlp()
    source = draw(loss, model=model, rankdir="LR", fontsize=18, max_elements=2).source
    assert "rankdir=LR" in source and "node [fontname=Helvetica fontsize=18]" in source
    assert "value min" in nodes(source)["t5"]                 # (3, 2) > 2 elements: summarised
    assert "rankdir=TB" in draw(loss).source                  # the default fits 16:9
    with pytest.raises(ValueError, match="fontsize must be a number of points"):
        draw(loss, fontsize=0)
    assert hasattr(draw(loss), "_repr_mimebundle_")           # Jupyter displays it inline


@needs_dot
def test_draw_html_honours_rules_collapse_numeric_and_the_layer_level(tmp_path, capsys):
    page = tmp_path / "p.html"
    assert draw_command(parse(["--html", "--rules", "--numeric", "--out", str(page)])) == 0
    text = page.read_text()
    assert "grad_x = grad @ W^T" in text and "numeric" in text
    assert draw_command(parse(["--html", "--collapse", "--out", str(page)])) == 0
    assert "layers.0 (Linear 2→4, bias=True)" in page.read_text() and "n_group0" in page.read_text()
    assert draw_command(parse(["--html", "--level", "layer", "--out", str(page)])) == 0
    assert "BP1 (output delta)" in page.read_text()
    assert draw_command(parse(["--rankdir", "LR", "--font-size", "20", "--max-elements", "3",
                               "--format", "dot", "--out", str(tmp_path / "g.dot")])) == 0
    dot = (tmp_path / "g.dot").read_text()
    assert "rankdir=LR" in dot and "fontsize=20" in dot


def test_the_xor_example_is_the_four_corners(tmp_path, capsys):
    out = tmp_path / "g.dot"
    assert draw_command(parse(["--format", "dot", "--out", str(out), "--max-elements", "8"])) == 0
    x_box = nodes(out.read_text())["t0"]
    assert "value [[0, 0],\n       [0, 1],\n       [1, 0],\n       [1, 1]]" in x_box


@needs_dot
def test_the_default_mlp_picture_fits_a_16_9_slide(tmp_path, capsys):
    out = tmp_path / "g.svg"
    assert draw_command(parse(["--out", str(out)])) == 0
    root = ET.parse(out).getroot()
    width, height = (float(root.get(k).removesuffix("pt")) for k in ("width", "height"))
    assert 1.3 <= width / height <= 2.2, (width, height)      # 16:9 is 1.78


def test_the_kink_note_does_not_say_the_rule_takes_one_sides_slope():
    """max over three tied entries gives each 1/3, neither side's slope (0 and 1): the note
    said "the rule takes one side's slope there"."""
    x = engine.Tensor(np.array([1.0, 1.0, 1.0, 0.5]), requires_grad=True, name="x")
    box = nodes(draw(x.max(), numeric=True).source)["t0"]
    assert "kink: 3 entries of x (into max)" in box and "one side" not in box
    assert "the rule takes a convention there" in box


def test_a_numeric_mismatch_at_a_kink_says_so_next_to_it():
    """XOR with relu: z¹ = 0 exactly for the (0, 0) corner (zero biases), where the rule
    takes relu′(0) = 0 and the central difference straddles the kink: b¹ showed analytic vs
    numeric 7.6e-02 apart with no word why. Its box says so; the others agree (x = 0 in
    that row, so W¹ does not move z¹ there) and say nothing."""
    model = nn.MLP([2, 4, 2], activation="relu", seed=0)
    x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1, 1, 0]))
    found = nodes(draw(loss, model=model, numeric=True).source)
    error = re.compile(r"max \|analytic − numeric\| ([0-9.e+-]+)")
    why = "the rule takes a convention there, the central\ndifference averages both sides"
    for box in found.values():
        if box.startswith("b¹"):
            assert float(error.search(box).group(1)) > 1e-2
            assert "\nkink: 4 entries of z¹ (into relu) within h = 1e-06 of it\n" in box
            assert box.endswith(why + ": both are right")
        elif box.startswith(("W¹", "W²", "b²")):
            assert float(error.search(box).group(1)) < 1e-6 and "kink" not in box
    assert sum(box.startswith(("W", "b")) for box in found.values()) == 4
    frames = [nodes(f.source) for _, f in captioned_frames(loss, model=model, numeric=True)]
    assert sum("kink: " in box for box in frames[-1].values()) == 1    # the playback too
    smooth = nn.MLP([2, 4, 2], activation="tanh", seed=0)
    tanh_loss = nn.CrossEntropyLoss()(smooth(x), np.array([0, 1, 1, 0]))
    assert "kink" not in draw(tanh_loss, model=smooth, numeric=True).source
