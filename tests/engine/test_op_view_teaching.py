"""The op view teaches as a lecture does (issue 21): tensors named x = a⁰, z¹, a¹, …, L;
each step's caption gives the local rule with the engine's numbers (checked here against
an independent numpy backprop); a step 0 and a closing frame; gradient arrows that appear
when their gradient is sent; in the collapsed view the running layer highlighted and each
layer's gradient norms; matrix columns aligned in the player (measured in Chromium)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import draw, save_backward_html
from handgrad.engine.viz.lecture import Clause, inline
from handgrad.engine.viz.playback import captioned_frames, op_playback

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
X = np.array([[0.0, 1.0], [1.0, 1.0], [0.5, -0.5]])
Y = np.array([1, 0, 1])
W1 = np.array([[0.5, -0.3, 0.8], [-0.2, 0.4, 0.6]])
B1 = np.array([0.1, -0.2, 0.05])
W2 = np.array([[0.7, -0.5], [-0.4, 0.9], [0.3, 0.6]])
B2 = np.array([0.05, -0.05])
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]\d+)?")


def mlp():
    """MLP([2, 3, 2]), tanh, float64, fixed weights, on three rows: the model and its loss."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    model.load_state_dict({"layers.0.weight": W1, "layers.0.bias": B1,
                           "layers.2.weight": W2, "layers.2.bias": B2})
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X, name="x")), Y)
    return model, loss


def numpy_backprop() -> dict[str, np.ndarray]:
    """The same MLP's forward and backward pass in plain numpy (no engine code)."""
    z1 = X @ W1 + B1
    a1 = np.tanh(z1)
    z2 = a1 @ W2 + B2
    p = np.exp(z2 - z2.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d2 = (p - np.eye(2)[Y]) / len(X)
    da1 = d2 @ W2.T
    fprime = 1 - a1 ** 2
    d1 = da1 * fprime
    return {"d2": d2, "da1": da1, "gW2": a1.T @ d2, "gb2": d2.sum(0), "fprime": fprime,
            "d1": d1, "gW1": X.T @ d1, "gb1": d1.sum(0),
            "L": -np.log(p[np.arange(len(Y)), Y]).mean()}


def clause_values(caption: str) -> dict[str, np.ndarray]:
    """"lhs = formula = [[...]]; lhs2 = ..." -> {lhs: the numbers after its last "="}."""
    body = caption.split(": ", 2)[2]
    out = {}
    for clause in body.split("; "):
        lhs, _, rest = clause.partition(" = ")
        shown = rest.rpartition(" = ")[2].partition("…")[0]      # a long array is cut
        out[lhs] = np.array([float(v) for v in NUMBER.findall(shown)])
    return out


def close(shown: np.ndarray, exact: np.ndarray) -> bool:
    """Shown in 4 significant digits (within half a unit of the 4th digit), all of
    ``exact`` or, for a long array, its first 6 numbers."""
    exact = np.asarray(exact).reshape(-1)[:6]
    return shown.shape == exact.shape and bool(np.all(np.abs(shown - exact) <= 5e-4 * np.abs(exact)))


# --- names ---------------------------------------------------------------------------------

def first_lines(source: str) -> set[str]:
    """The first line of every label: quoted, or HTML-like (a box with heat maps)."""
    return {quoted.split("\\n")[0] or html_like for quoted, html_like in
            re.findall(r'label="([^"]*)"|label=<<TABLE[^>]*><TR><TD[^>]*>([^<]*)<BR', source)}


def test_boxes_carry_the_lectures_names_from_the_layers():
    model, loss = mlp()
    first = first_lines(draw(loss, model=model).source)
    assert {"x = a⁰", "z¹", "a¹", "z²", "L", "y", "W¹ = layers.0.weight", "b¹ = layers.0.bias",
            "W² = layers.2.weight", "b² = layers.2.bias"} <= first
    without = first_lines(draw(loss).source)
    assert {"x = a⁰", "z¹", "W¹ = weight"} <= without           # no model: the module's names
    other = engine.Tensor(np.ones((2, 2)), requires_grad=True, name="w")
    plain = draw((other.tanh() * 2).sum()).source               # not an MLP: names unchanged
    assert "z¹" not in plain and "a⁰" not in plain and 'label="w\\n' in plain


def test_a_frozen_first_layers_output_is_not_named_x():
    """Layer 1 frozen whole makes no graph: the chain starts at layer 2, whose input (the
    frozen layer's output) was named "x = a⁰". With the model's parameters outside the
    chain it is a⁰ alone; the model's real input, outside the graph, is not drawn."""
    model = nn.MLP([2, 3, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    for p in model.layers[0].parameters():
        p.requires_grad = False
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X, name="x")), Y)
    first = first_lines(draw(loss, model=model).source)
    assert "a⁰" in first and "x = a⁰" not in first
    assert {"W¹ = layers.2.weight", "W² = layers.4.weight"} <= first


def test_an_eval_mode_dropout_states_the_identity_and_its_dot_text_is_repeatable():
    """Eval mode (and p = 0): backward sends the gradient unchanged, yet the caption and the
    box stated d/dx = mask = keep / (1 − p) (2 for p = 0.5). The box also printed the
    dropout's generator with its memory address, so the same graph gave other DOT text."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    model = nn.MLP([2, 3, 2], activation="sigmoid", dropout=0.5, seed=0)
    model.eval()
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), np.array([0, 1, 1, 0]))
    (caption,) = [c for c, _ in captioned_frames(loss, model=model) if "dropout" in c]
    assert "d/dx = 1 (the identity: eval mode, or p = 0)" in caption and "keep" not in caption
    source = draw(loss, model=model, rules=True).source
    assert "keep / (1 − p)" not in source and "rng=Generator(PCG64)\\n" in source
    again = nn.MLP([2, 3, 2], activation="sigmoid", dropout=0.5, seed=0)
    again.eval()
    other = nn.CrossEntropyLoss()(again(engine.Tensor(X)), np.array([0, 1, 1, 0]))
    assert draw(other, model=again, rules=True).source == source


@needs_dot
def test_the_players_frames_use_the_names_too():
    model, loss = mlp()
    _, data = op_playback(loss, model=model)
    firsts = {spec["lines"][0] for frame in data for spec in frame["nodes"].values()}
    assert {"x\u00a0=\u00a0a⁰", "z¹", "a¹", "z²", "L"} <= {f.replace(" ", "\u00a0") for f in firsts}


# --- captions with values --------------------------------------------------------------------

def test_each_caption_states_the_local_rule_with_the_engines_numbers():
    model, loss = mlp()
    exact = numpy_backprop()
    captions = [c for c, _ in captioned_frames(loss, model=model)]
    loss_step, top, act, bottom = (clause_values(c) for c in captions[1:5])
    assert "δ² = (p − y)/3 = [[" in captions[1]
    assert close(loss_step["δ²"], exact["d2"])
    assert "∂L/∂a¹ = δ² W²ᵀ = " in captions[2] and "∂L/∂W² = a¹ᵀ δ² = " in captions[2]
    assert close(top["∂L/∂a¹"], exact["da1"]) and close(top["∂L/∂W²"], exact["gW2"])
    assert close(top["∂L/∂b²"], exact["gb2"]) and "∂L/∂b² = Σₙ δ² = " in captions[2]
    assert "tanh′(z¹) = 1 − (a¹)² = " in captions[3] and "δ¹ = ∂L/∂a¹ ⊙ tanh′(z¹) = " in captions[3]
    assert close(act["tanh′(z¹)"], exact["fprime"]) and close(act["δ¹"], exact["d1"])
    assert captions[3].count("…") == 2 and "(3, 3)" in captions[3]          # 9 numbers: cut
    assert close(bottom["∂L/∂W¹"], exact["gW1"]) and close(bottom["∂L/∂b¹"], exact["gb1"])
    assert "∂L/∂W¹ = a⁰ᵀ δ¹ = " in captions[4]
    assert not any("sends grad" in c for c in captions)             # values, not only shapes


def test_sigmoid_relu_and_an_op_without_a_value_form():
    z = engine.Tensor(np.array([[-1.0, 0.5], [2.0, -0.25]]), requires_grad=True, name="z")
    captions = [c for c, _ in captioned_frames(z.sigmoid().sum())]
    s = 1 / (1 + np.exp(-z.data))
    assert "σ′(z) = t1(1 − t1) = " in captions[2]
    assert close(clause_values(captions[2])["σ′(z)"], s * (1 - s))
    captions = [c for c, _ in captioned_frames(z.relu().sum())]
    assert close(clause_values(captions[2])["relu′(z)"], (z.data > 0).astype(float))
    captions = [c for c, _ in captioned_frames(z.reshape((4,)).sum())]
    shaped = captions[2]                       # reshape: its rule in words, no "= values"
    assert "the gradient is reshaped back" in shaped and "sends grad (2, 2) to z" in shaped
    assert " = [" not in shaped


def test_a_formula_that_does_not_hold_is_never_stated_with_equals():
    wrong = Clause("∂L/∂W", "aᵀ δ", np.array([1.0, 2.0]), rhs=np.array([1.0, 2.5]))
    assert not wrong.holds()
    text = wrong.text()
    assert "aᵀ δ =" in text and "differs" in text and "∂L/∂W = aᵀ δ = " not in text
    right = Clause("∂L/∂W", "aᵀ δ", np.array([1.0, 2.0]), rhs=np.array([1.0, 2.0]))
    assert right.text() == "∂L/∂W = aᵀ δ = [1, 2]"
    assert inline(np.arange(10.0), 3) == "[0, 1, 2, …] (10,)"


# --- step 0 and the closing frame --------------------------------------------------------------

def test_step_zero_and_a_closing_frame_with_a_one_line_summary():
    model, loss = mlp()
    exact = numpy_backprop()
    frames = list(captioned_frames(loss, model=model))
    assert len(frames) == 4 + 2
    first, last = frames[0], frames[-1]
    assert first[0].startswith(f"step 0/4: forward done, L = {float(exact['L']):.4g}")
    assert "∂L/∂L = 1" in first[0]
    grads = re.findall(r'label="([^"]*)"', first[1].source)
    assert [g for g in grads if "\\ngrad" in g] == [g for g in grads if g.startswith("L\\n")]
    assert "grad 1" in [g for g in grads if g.startswith("L\\n")][0]     # only ∂L/∂L = 1
    assert last[0].startswith("done: all 4 rules ran, every gradient is in place: ")
    assert "\n" not in last[0]
    norms = dict(re.findall(r"‖(∂L/∂[Wb][¹²])‖ = ([-\d.e]+)", last[0]))
    for key, name in [("∂L/∂W¹", "gW1"), ("∂L/∂b¹", "gb1"), ("∂L/∂W²", "gW2"), ("∂L/∂b²", "gb2")]:
        assert close(np.array([float(norms[key])]), np.linalg.norm(exact[name]))
    assert "grad so far" not in last[1].source


# --- arrows appear when their gradient is sent --------------------------------------------------

def test_a_gradient_arrow_appears_at_the_step_that_sends_it():
    model, loss = mlp()
    sources = [f.source for _, f in captioned_frames(loss, model=model)]
    # id=g_op0_1: the arrow of ∂L/∂W¹, sent by the first layer's linear, the last rule (4)
    present = ["id=g_op0_1" in s for s in sources]
    assert present == [False, False, False, False, True, True]
    assert ["id=g_op3_0" in s for s in sources] == [False, True, True, True, True, True]


@needs_dot
def test_in_the_player_arrows_are_hidden_until_sent():
    model, loss = mlp()
    _, data = op_playback(loss, model=model)
    hidden = [frame["edges"]["g_op0_1"].get("hide", False) for frame in data]
    assert hidden == [True, True, True, True, False, False]
    assert all(frame["edges"]["g_op3_0"].get("hide", False) == (k == 0)
               for k, frame in enumerate(data))


# --- the collapsed view: the running layer, and its gradient norms -------------------------------

@needs_dot
def test_collapsed_the_running_layer_is_highlighted_and_shows_its_gradient_norms():
    model, loss = mlp()
    exact = numpy_backprop()
    _, data = op_playback(loss, model=model, collapse=True)
    running = [[nid for nid, spec in frame["nodes"].items() if spec["fill"] == "#ffc933"]
               for frame in data]
    # step 0, the loss, layers.2 (linear), layers.1 (tanh), layers.0 (linear), closing
    assert running == [[], ["n_op3"], ["n_group2"], ["n_group1"], ["n_group0"], []]
    lines = {nid: [line.replace("\u00a0", " ") for line in spec["lines"]]
             for nid, spec in data[-1]["nodes"].items()}

    def norm(nid: str, what: str) -> float:
        found = [line for line in lines[nid] if line.startswith(f"‖{what}‖ = ")]
        return float(found[0].rpartition("= ")[2])

    for nid, what, name in [("n_group0", "∂L/∂W¹", "gW1"), ("n_group0", "δ¹", "d1"),
                            ("n_group2", "∂L/∂W²", "gW2"), ("n_group2", "δ²", "d2"),
                            ("n_group1", "∂L/∂a¹", "da1")]:
        assert close(np.array([norm(nid, what)]), np.linalg.norm(exact[name])), (nid, what)
    before = [line.replace("\u00a0", " ") for line in data[1]["nodes"]["n_group0"]["lines"]]
    assert "‖∂L/∂W¹‖ not yet" in before and "‖δ¹‖ not yet" in before
    assert len(before) == len(lines["n_group0"])          # same lines: the box keeps its size


# --- column alignment in a real browser ------------------------------------------------------------

COLUMNS = """
var texts = document.getElementById(arguments[0]).querySelectorAll("text"), rows = [];
for (var i = 0; i < texts.length; i++) {
  var t = texts[i], s = t.textContent, xs = [], n = t.getNumberOfChars();
  for (var j = 0; j < s.length; j++) {   // a collapsed space shifts (or drops) the glyphs
    if (s[j] === "," || s[j] === "]") { xs.push(j < n ? t.getStartPositionOfChar(j).x : -1); }
  }
  rows.push([s, xs]);
}
return rows;
"""


def test_matrix_columns_line_up_in_the_player(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    model, loss = mlp()
    page = save_backward_html(loss, tmp_path / "p.html", model=model)
    browser.get(page.as_uri())
    player = browser.find_element("css selector", ".hg-player")
    player.click()
    player.send_keys(Keys.END)                      # every gradient in place
    assert player.get_attribute("data-step") == "6"
    rows = browser.execute_script(COLUMNS, "n_t1")  # W¹: name, shape, value rows, grad rows
    texts = [s.replace("\u00a0", " ") for s, _ in rows]
    assert texts[2].startswith("value [[") and texts[4].startswith("grad [[")
    for top, below in [(2, 3), (4, 5)]:            # the value matrix, the gradient matrix
        # each column's separator (its ",", then the row's "]") at one x in both rows
        assert rows[top][1][:3] == pytest.approx(rows[below][1][:3], abs=0.01), texts


def test_the_readme_sentence_on_the_op_player_matches(tmp_path):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "Step 0 shows the forward pass done" in readme and "`x = a⁰`" in readme
    assert "`‖∂L/∂W‖` and `‖δ‖`" in readme


def test_the_data_the_player_gets_is_json(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("needs Graphviz dot")
    model, loss = mlp()
    text = save_backward_html(loss, tmp_path / "d.html", model=model).read_text()
    data = json.loads(re.search(r'class="hg-data">(.*?)</script>', text, re.S).group(1))
    assert data[0]["caption"].startswith("step 0/4") and data[-1]["caption"].startswith("done")


def test_a_leaf_or_a_non_scalar_root_is_refused_for_what_it_is():
    """Not a message about a freed graph, which these never had."""
    from handgrad.engine.viz import backward_playback
    x = engine.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"a root computed by ops .* a leaf of shape \(3,\)"):
        backward_playback(x)
    with pytest.raises(ValueError, match=r"a scalar root .* has shape \(3,\): draw its sum"):
        backward_playback(x * 2)
    loss = (x * 2).sum()
    loss.backward()
    with pytest.raises(ValueError, match="a graph that is still alive"):
        backward_playback(loss)


def test_the_closing_caption_of_one_rule_says_one_rule():
    x = engine.Tensor(np.ones(3), requires_grad=True)
    last = list(captioned_frames(x.sum()))[-1]
    assert last[0].startswith("done: the one rule ran, every gradient is in place")
