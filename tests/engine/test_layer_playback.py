"""The layer-level playback (BP1-BP4): every number it shows is the engine's gradient and
equals a hand-written numpy derivation of the same MLP; the page plays in a real browser."""
from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import (
    backward_playback,
    derivation,
    layer_frames,
    mlp_layers,
    save_backward_html,
)

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5]])
Y = np.array([0, 1, 1, 0, 1])
DERIVATIVES = {"tanh": lambda z: 1 - np.tanh(z) ** 2, "relu": lambda z: (z > 0) * 1.0,
               "sigmoid": lambda z: np.exp(-z) / (1 + np.exp(-z)) ** 2}
FORWARD = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0),
           "sigmoid": lambda z: 1 / (1 + np.exp(-z))}


def by_hand(model: nn.MLP, activation: str) -> list[dict[str, np.ndarray]]:
    """Backpropagation written out in numpy, the classic way, for comparison."""
    Ws = [m.weight.numpy() for m in model.modules() if isinstance(m, nn.Linear)]
    bs = [m.bias.numpy() for m in model.modules() if isinstance(m, nn.Linear)]
    a, zs, acts = X, [], [X]
    for k, (W, b) in enumerate(zip(Ws, bs)):
        z = a @ W + b
        zs.append(z)
        a = FORWARD[activation](z) if k < len(Ws) - 1 else z
        acts.append(a)
    p = np.exp(zs[-1] - zs[-1].max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = (p - np.eye(2)[Y]) / len(X)                         # BP1
    out = []
    for k in range(len(Ws) - 1, -1, -1):
        out.append({"delta": delta, "gW": acts[k].T @ delta, "gb": delta.sum(0)})  # BP3, BP4
        if k:
            delta = (delta @ Ws[k].T) * DERIVATIVES[activation](zs[k - 1])        # BP2
    return out


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_every_quantity_equals_the_hand_written_derivation(activation):
    model = nn.MLP([2, 4, 3, 2], activation=activation, seed=1, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    steps = derivation(loss)
    assert [d["l"] for d in steps] == [3, 2, 1]
    for d, ref in zip(steps, by_hand(model, activation)):
        for key in ("delta", "gW", "gb"):
            np.testing.assert_allclose(d[key], ref[key], rtol=1e-12, atol=1e-15)
    out = steps[0]
    assert out["N"] == 5 and out["formula"] == "δ = (p − y)/N, N = 5 rows"
    np.testing.assert_allclose((out["p"] - out["y"]) / out["N"], out["delta"], atol=1e-15)
    for d in steps[1:]:
        np.testing.assert_allclose(d["fprime"], DERIVATIVES[activation](d["layer"].z.numpy()),
                                   atol=1e-15)
        np.testing.assert_allclose((d["delta_next"] @ d["W_next"].T) * d["fprime"], d["delta"],
                                   atol=1e-15)


def test_the_slides_state_each_equation_with_its_numbers():
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    playback = backward_playback(loss, level="layer", model=model)
    captions = [c for c, _ in playback.frames]
    assert captions == ["layer 2: BP1 (output delta)",
                        "layer 2: BP3 and BP4 (gradients of b² and W²)",
                        "layer 1: BP2 (delta recursion)",
                        "layer 1: BP3 and BP4 (gradients of b¹ and W¹)"]
    bp1, bp34, bp2 = playback.frames[0][1], playback.frames[1][1], playback.frames[2][1]
    assert "δ² = (p − y)/N, N = 5 rows  (δ² = ∂L/∂z²)" in bp1
    assert "δ¹ = (δ² W²ᵀ) ⊙ f′(z¹),  f = tanh" in bp2 and "f′(z¹)" in bp2
    assert "∂L/∂b² = Σₙ δ²" in bp34 and "∂L/∂W² = a¹ᵀ δ²" in bp34
    assert "layers.2.weight" in bp34                          # the model's parameter name
    d = derivation(loss)[0]
    cells = re.findall(r"<td>([^<]+)</td>", bp1)
    assert f"{d['delta'][0, 0]:.4g}" in cells                 # the actual numbers are shown
    diffs = [float(x) for x in re.findall(r"largest difference ([0-9.e+-]+)", "".join(
        body for _, body in playback.frames))]
    assert len(diffs) == 6 and max(diffs) < 1e-15     # BP1, BP2, BP3 and BP4 twice


def test_big_tensors_show_shapes_and_summaries():
    model = nn.MLP([2, 64, 2], seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    body = backward_playback(loss, level="layer", max_elements=40).frames[1][1]
    assert "(64, 2)" in body and "min " in body and "mean " in body


def _bp1_text(loss) -> str:
    body = layer_frames(loss)[0][1]
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", "", body))
    return re.sub(r"\s+", " ", html.unescape(text))


def test_a_big_target_matrix_shows_true_class_counts_and_never_calls_probabilities_counts():
    """Under label smoothing y's rows are smoothed, but the batch still holds 24 examples
    of class 0 and 6 of class 1; probability targets get their column sums, named so."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = engine.Tensor(np.random.default_rng(0).standard_normal((30, 2)).astype(np.float32))
    labels = np.array([0] * 24 + [1] * 6)
    smoothed = _bp1_text(nn.CrossEntropyLoss(label_smoothing=0.2)(model(x), labels))
    assert "class counts 0: 24, 1: 6 ÷" in smoothed
    soft = np.eye(2)[labels] * 0.9 + 0.05
    text = _bp1_text(nn.CrossEntropyLoss()(model(x), soft))
    assert "class counts" not in text and "target mass per class Σₙ y 0: 23.1, 1: 6.9 ÷" in text


def test_a_model_without_biases_is_stated_without_b_and_without_bp3():
    model = nn.MLP([2, 3, 2], activation="tanh", bias=False, seed=0, dtype=np.float64)
    slides = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y))
    assert [cap for cap, _ in slides] == [
        "layer 2: BP1 (output delta)", "layer 2: BP4 (gradient of W²; the layer has no bias)",
        "layer 1: BP2 (delta recursion)", "layer 1: BP4 (gradient of W¹; the layer has no bias)"]
    for _, body in slides:
        text = html.unescape(body)
        assert "z¹ = a⁰W¹, a¹ = tanh(z¹)" in text and "z² = a¹W²</span>" in text
        assert "+ b" not in text and "BP3" not in text and "differs" not in text
    assert "BP4: ∂L/∂W²" in html.unescape(slides[1][1])


def test_graphs_that_are_not_an_mlp_are_refused_with_the_reason():
    a = engine.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ValueError, match="fused loss op"):
        mlp_layers((a * a).sum())
    model = nn.MLP([2, 3, 2], dropout=0.5, seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    with pytest.raises(ValueError, match="found op 'dropout'.*eval mode"):
        mlp_layers(loss)


def test_an_eval_mode_dropout_is_the_identity_and_the_training_mode_advice_works():
    """A model in eval mode was refused for its dropout with the advice "draw the model in
    eval mode": its dropout nodes are the identity, passed over; the slides are those of
    the same MLP without dropout. A training-mode dropout is refused, and the advice works."""
    model = nn.MLP([2, 3, 3, 2], activation="tanh", dropout=0.5, seed=0, dtype=np.float64)
    plain = nn.MLP([2, 3, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    expected = layer_frames(nn.CrossEntropyLoss()(plain(engine.Tensor(X)), Y))
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)            # training mode
    with pytest.raises(ValueError, match=r"found op 'dropout' \(a training-mode dropout.*"
                                         r"model\.eval\(\)"):
        backward_playback(loss, level="layer", model=model)
    model.eval()                                                        # the advice
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    assert [layer.index for layer in mlp_layers(loss)] == [1, 2, 3]
    assert layer_frames(loss) == expected           # (without model: no parameter names)
    backward_playback(loss, level="layer", model=model)


def test_slides_after_replacing_data_since_the_forward_pass_are_refused_by_name():
    """A from-scratch update by reassignment (p.data = p.data - lr * p.grad) after the
    forward pass: the graph keeps the old arrays, so BP2 with the new W² would "differ".
    The slides refuse, naming the weight; an update before the forward pass is drawn."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    loss.backward(retain_graph=True)
    for p in model.parameters():
        p.data = p.data - 0.5 * p.grad
    for slides in (lambda: layer_frames(loss, model=model), lambda: derivation(loss),
                   lambda: backward_playback(loss, level="layer", model=model)):
        with pytest.raises(ValueError, match=r"W¹ = (layers\.0\.)?weight changed after the "
                                             r"forward pass.*\.data was replaced.*forward pass again"):
            slides()
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    assert not any("differs" in body for _, body in layer_frames(loss, model=model))


def test_linear_layers_with_no_activation_between_them_are_refused_with_that_reason():
    model = nn.MLP([2, 3, 2], activation="identity", seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    with pytest.raises(ValueError, match=r"found op 'linear' straight after another linear "
                                         r"layer \(no activation between them") as info:
        mlp_layers(loss)
    assert "dropout" not in str(info.value)


# --- in a real browser ---------------------------------------------------------------------

def _draw_html(tmp_path: Path, *extra: str) -> Path:
    from handgrad.nn import cli
    path = tmp_path / "page.html"
    assert cli.main(["draw", "--html", "--out", str(path), *extra]) == 0
    return path


def test_options_of_the_op_graph_are_refused_at_the_layer_level_not_dropped():
    """backward_playback(level="layer") took numeric, rules, collapse, rankdir, fontsize
    and show and wrote the same slides without a word; they are a ValueError naming them
    (their defaults, as a caller passing every option gives them, are accepted)."""
    model = nn.MLP([2, 3, 2], seed=0, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)
    with pytest.raises(ValueError, match="level='layer' shows the equations BP1-BP4, not the "
                                         "op graph, so rules, numeric would change nothing"):
        backward_playback(loss, level="layer", numeric=True, rules=True)
    for option in (dict(collapse=True), dict(rankdir="LR"), dict(fontsize=20),
                   dict(show=("shape",))):
        with pytest.raises(ValueError, match=f"so {next(iter(option))} would change nothing"):
            backward_playback(loss, level="layer", **option)
    assert backward_playback(loss, level="layer", rankdir="TB", fontsize=14, rules=False,
                             collapse=False, numeric=False).frames


def test_in_a_browser_the_default_page_has_readable_text_and_nothing_moves(tmp_path, capsys, browser):
    page = _draw_html(tmp_path)
    driver = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.get(page.as_uri())
    player = driver.find_element(By.CSS_SELECTOR, ".hg-player")
    assert float(player.get_attribute("data-text-px")) >= 12      # on a 1366-px window
    boxes = "return Array.from(arguments[0].querySelectorAll('g.node')).map(" \
            "g => {var r = g.getBoundingClientRect(); return [g.id, r.x, r.y, r.width]})"
    caption = driver.find_element(By.CSS_SELECTOR, ".hg-caption")
    first = driver.execute_script(boxes, player)
    texts = []
    heads = ["step 0/4", "step 1/4", "step 2/4", "step 3/4", "step 4/4", "done"]
    for head in heads:                  # step 0, one frame per rule, the closing frame
        assert caption.text.startswith(head)
        assert driver.execute_script(boxes, player) == first       # one layout
        texts.append(driver.execute_script(
            "return document.getElementById('n_t3').textContent", player))
        player.click()
        player.send_keys(Keys.ARROW_RIGHT)
    assert len(set(texts)) > 1                    # the gradients fill in as steps go
    before = float(player.get_attribute("data-text-px"))
    player.find_element(By.CSS_SELECTOR, ".hg-in").click()      # zoom in
    assert float(player.get_attribute("data-text-px")) == pytest.approx(before * 1.25)
    assert driver.execute_script(boxes, player) != first          # zoomed, same layout
    svg_text = driver.execute_script("return arguments[0].querySelector('svg').textContent",
                                     player)
    assert "backward of" not in svg_text          # the caption is shown once, above


def test_in_a_browser_two_players_on_one_page_are_independent(tmp_path, browser):
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X.astype(np.float32))), Y)
    one = backward_playback(loss, level="layer", model=model)
    page = tmp_path / "two.html"
    page.write_text(f"<html><body>{one._repr_html_()}{one._repr_html_()}</body></html>")
    driver = browser
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    driver.get(page.as_uri())
    first, second = driver.find_elements(By.CSS_SELECTOR, ".hg-player")
    counter = lambda p: p.find_element(By.CSS_SELECTOR, ".hg-counter").text  # noqa: E731
    first.find_element(By.CSS_SELECTOR, ".hg-next").click()
    assert (counter(first), counter(second)) == ("2 / 4", "1 / 4")
    second.click()
    second.send_keys(Keys.ARROW_RIGHT)
    second.send_keys(Keys.ARROW_RIGHT)
    assert (counter(first), counter(second)) == ("2 / 4", "3 / 4")


def test_save_backward_html_writes_the_layer_page(tmp_path):
    model = nn.MLP([2, 3, 2], seed=0)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(X.astype(np.float32))), Y)
    text = save_backward_html(loss, tmp_path / "l.html", model=model, level="layer").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.count('class="hg-frame"') == 4
    with pytest.raises(ValueError, match="level must be one of"):
        save_backward_html(loss, tmp_path / "x.html", level="module")


def test_a_frozen_weight_or_bias_is_said_to_be_frozen_not_given_an_equation():
    """A weight or bias with requires_grad=False has no gradient: its slide was titled "BP3
    and BP4" and stated ∂L/∂b² = Σₙ δ² with no numbers. It says the tensor is frozen."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    model.layers[2].bias.requires_grad = False
    model.layers[0].weight.requires_grad = False
    slides = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y), model=model)
    assert [cap for cap, _ in slides] == [
        "layer 2: BP1 (output delta)", "layer 2: BP4 (gradient of W²; b² is frozen)",
        "layer 1: BP2 (delta recursion)", "layer 1: BP3 (gradient of b¹; W¹ is frozen)"]
    layer2, layer1 = html.unescape(slides[1][1]), html.unescape(slides[3][1])
    assert "b² is frozen (requires_grad=False): no gradient, so no BP3" in layer2
    assert "BP3" not in layer2.replace("so no BP3", "") and "BP4: ∂L/∂W² = a¹ᵀ δ²" in layer2
    assert "W¹ is frozen (requires_grad=False): no gradient, so no BP4" in layer1
    assert "BP4" not in layer1.replace("so no BP4", "") and "BP3: ∂L/∂b¹ = Σₙ δ¹" in layer1
    assert "differs" not in "".join(body for _, body in slides)
    model.layers[2].weight.requires_grad = False                 # layer 2: nothing to learn
    caption, body = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y))[1]
    assert caption == "layer 2: no gradients (W² is frozen; b² is frozen)"
    assert "BP3" not in body.replace("so no BP3", "") and "BP4" not in body.replace("so no BP4", "")


def test_a_frozen_first_layer_is_not_drawn_as_the_input_x():
    """With the first layer frozen whole, it makes no graph: the chain found starts at the
    model's second layer, whose input relu(z) the stack called "x = a⁰" (false: it is not
    the model's input). With the model known, a⁰ is not called x and a line names the
    parameters outside the chain and says where the numbering starts."""
    model = nn.MLP([2, 3, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    for p in model.layers[0].parameters():
        p.requires_grad = False
    slides = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y), model=model)
    assert len(slides) == 4                         # two layers with a graph, numbered 1 and 2
    for _, body in slides:
        text = html.unescape(body)
        assert "x = a⁰" not in text and '<span class="hg-layer">a⁰</span>' in text
        assert ("a⁰ is the input of the first layer with a graph, not necessarily x: the "
                "model's layers.0.weight, layers.0.bias are not in this chain") in text
        assert "differs" not in text
    for p in model.layers[0].parameters():         # all in the chain: x = a⁰, no such line
        p.requires_grad = True
    slides = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y), model=model)
    assert all("x = a⁰" in body and "not in this chain" not in body for _, body in slides)


def _cells(body: str, name: str) -> np.ndarray:
    """The numbers of the first matrix a slide shows under a name starting with ``name``."""
    table = re.search(r">" + re.escape(name) + r"[^<]*</div><table[^>]*>(.*?)</table>", body).group(1)
    return np.array([float(v) for v in re.findall(r"<td>(.*?)</td>", table)])


def test_bp1_prints_the_engines_p_so_that_the_printed_equation_holds():
    """p was recomputed in float64 while δ is the engine's float32 (or float16) value: next
    to y = 1 the printed p (0.99995892) was not the engine's (0.99995888), and
    (p − y)/N written with the printed numbers gave -2.054e-05 beside a shown δ of
    -2.056e-05. p is now the engine's, so the equation holds to the digits shown."""
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(np.array([[0.0, 10.1], [0.0, -9.3]], np.float32))
    confident = nn.CrossEntropyLoss()(lin(engine.Tensor(np.eye(2, dtype=np.float32))), np.array([1, 0]))
    # (Not float16: its δ carries float16's rounding, about 3 digits, which shows in the 4th
    # digit printed; the check line's tolerance states it.)
    _, body = layer_frames(confident)[0]
    p, y, delta = _cells(body, "p = softmax(z"), _cells(body, "y"), _cells(body, "δ")
    unit = 10.0 ** (np.floor(np.log10(np.abs(delta))) - 3)           # 4 significant digits
    assert np.all(np.abs((p - y) / 2 - delta) <= 0.51 * unit), (p, y, delta)


def test_freezing_after_the_forward_pass_changes_nothing_the_slides_say():
    """The slides read requires_grad when drawn, backward what the forward pass recorded:
    W¹ frozen after the forward pass was said to have no gradient on the slide showing
    it; unfrozen after it, the slide stated a BP4 the engine does not compute."""
    frozen_later = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    loss = nn.CrossEntropyLoss()(frozen_later(engine.Tensor(X)), Y)
    frozen_later.layers[0].weight.requires_grad = False
    caption, body = layer_frames(loss, model=frozen_later)[-1]
    assert caption == "layer 1: BP3 and BP4 (gradients of b¹ and W¹)"
    assert "frozen" not in body and "differs" not in body
    unfrozen_later = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    unfrozen_later.layers[0].weight.requires_grad = False
    loss = nn.CrossEntropyLoss()(unfrozen_later(engine.Tensor(X)), Y)
    unfrozen_later.layers[0].weight.requires_grad = True
    caption, body = layer_frames(loss, model=unfrozen_later)[-1]
    assert caption == "layer 1: BP3 (gradient of b¹; W¹ is frozen)"
    assert ("W¹ is frozen (requires_grad=False when the graph was recorded): no gradient, "
            "so no BP4") in html.unescape(body) and "BP4:" not in html.unescape(body)
    loss.backward()
    assert unfrozen_later.layers[0].weight.grad is None        # as the slide says


def test_tied_weights_are_stated_as_shared_with_the_sum_of_both_layers_parts():
    """Layers 1 and 2 share one weight: backward sums both layers' parts into its gradient,
    and BP4 with one layer's part said "differs" without saying why. Each slide says the
    weight is shared by layers 1 and 2, shows this layer's part, then the sum, which
    equals the engine's gradient."""
    model = nn.MLP([2, 2, 2], activation="tanh", seed=0, dtype=np.float64)
    model.layers[2].weight = model.layers[0].weight
    slides = layer_frames(nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y), model=model)
    for k, slide in ((2, slides[1][1]), (1, slides[3][1])):
        text = html.unescape(slide)
        s = "²" if k == 2 else "¹"
        assert f"BP4: ∂L/∂W{s} = a⁰ᵀ δ¹ + a¹ᵀ δ²" in text
        assert f"W{s} is one tensor shared by layers 1 and 2: its gradient is the sum of " \
               f"their parts" in text
        assert f"(layer {k}'s part)" in text and "differs" not in text
        assert f"equals the engine's ∂L/∂W{s}" in text and f"equals the engine's ∂L/∂b{s}" in text
    assert "shared" not in html.unescape(layer_frames(nn.CrossEntropyLoss()(
        nn.MLP([2, 2, 2], seed=0)(engine.Tensor(X)), Y))[1][1])
