"""Pictures that stated a formula or "=" that did not hold for the case drawn (found by a
bug hunt): each test draws the case and redoes the printed equation."""
from __future__ import annotations

import html
import re

import numpy as np

from handgrad import engine, nn
from handgrad.engine.viz import draw, labels, thumbnails
from handgrad.engine.viz.layers import layer_frames


def tables(slide: str) -> dict[str, np.ndarray]:
    """name -> the numbers of each table a slide prints (heat maps left out)."""
    found = re.findall(r'<div class="hg-name">(.*?)</div><table[^>]*>(.*?)</table>', slide)
    return {html.unescape(name): np.array([[float(v) for v in re.findall(r"<td>(.*?)</td>", r)]
                                           for r in re.findall(r"<tr>(.*?)</tr>", body)])
            for name, body in found}


def rows(slide: str) -> list[tuple[list[str], list[str]]]:
    """Each row of a slide: its table names and its operators, in order."""
    out = []
    for row in slide.split('<div class="hg-row">')[1:]:
        row = row.split('<div class="hg-check')[0]
        names = re.findall(r'<div class="hg-name">(.*?)</div>', row)
        ops = re.findall(r'<div class="hg-op">(.*?)</div>', row)
        out.append(([html.unescape(n) for n in names], [html.unescape(o) for o in ops]))
    return out


def slide(frames: list[tuple[str, str]], caption: str) -> str:
    return next(h for c, h in frames if c.startswith(caption))


def test_bp2_factors_multiply_to_the_printed_gradient_when_the_terms_cancel():
    """δ² · W²ᵀ = ∂L/∂a¹: the factors in 4 digits gave -0.0003264 beside the printed
    -0.0003475 (the terms cancel); they get the digits their cancellation needs."""
    rng = np.random.default_rng(0)
    model = nn.MLP([3, 4, 3], activation="relu", seed=0)
    x = engine.Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    loss = nn.CrossEntropyLoss()(model(x), rng.integers(0, 3, 4))
    m = tables(slide(layer_frames(loss, model=model), "layer 1: BP2"))
    shown = m["δ² W²ᵀ = ∂L/∂a¹"]
    half_unit = 0.5 * 10.0 ** (np.floor(np.log10(np.abs(shown))) - labels.DIGITS + 1)
    assert np.all(np.abs(m["δ²"] @ m["W²ᵀ"] - shown) <= 1.01 * half_unit)


def test_a_negative_zero_prints_as_0():
    """relu's grad * mask and a dropout's x * 0 make -0.0, printed "-0" (a small negative
    number rounded away, it read)."""
    assert labels.number(-0.0) == "0" and labels.number(np.float32(-0.0)) == "0"
    assert labels.number(-1.5e-7) == "-1.5e-07"
    assert "-0" not in "".join(labels.array_lines(np.array([[-0.0, 1.0], [0.5, -0.0]]), 10))
    model = nn.MLP([2, 3, 2], activation="relu", seed=1)
    x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1, 1, 0]))
    assert not re.search(r"-0(?![.\d])", draw(loss, model=model, max_elements=12).source)


def test_a_huge_finite_array_has_its_finite_mean_and_heat_map():
    """Entries of 1.5e308 summarised as "mean inf", and block means painted grey as not
    finite: the sums overflowed."""
    line = labels.array_lines(np.full((4, 4), 1.5e308), 0)[0]
    assert line == "min 1.5e+308  mean 1.5e+308  max 1.5e+308"
    cells = thumbnails.heat_cells(np.full((100, 100), 1.5e308))
    np.testing.assert_allclose(cells, 1.5e308)
    assert "mean inf" in labels.array_lines(np.array([1.0, np.inf, 2.0]), 0)[0]
    assert "mean nan" in labels.array_lines(np.array([1.0, np.nan, 2.0]), 0)[0]


def tied_through_a_transpose():
    """An autoencoder-style pair of layers: layer 2's weight is W¹ᵀ, the same tensor."""
    rng = np.random.default_rng(0)
    W = engine.Tensor(rng.standard_normal((3, 3)).astype(np.float32), requires_grad=True)
    b1 = engine.Tensor(np.zeros(3, np.float32), requires_grad=True)
    b2 = engine.Tensor(np.zeros(3, np.float32), requires_grad=True)
    x = engine.Tensor(rng.standard_normal((4, 3)).astype(np.float32))
    a1 = engine.tanh(engine.linear(x, W, b1))
    return engine.softmax_cross_entropy(engine.linear(a1, W.T, b2), np.array([0, 1, 2, 1])), W


def test_a_weight_tied_through_a_transpose_shows_and_checks_this_layers_part():
    """BP4 printed a⁰ᵀ · δ¹ = ∂L/∂W¹ with the whole gradient (layer 2's part in it too),
    and its check said "differs": the slide shows and checks layer 1's part."""
    loss, W = tied_through_a_transpose()
    bp4 = slide(layer_frames(loss), "layer 1: BP3 and BP4")
    assert "differs" not in bp4 and "BP4: ∂L/∂W¹ = a⁰ᵀ δ¹ + the parts of its other uses" in bp4
    assert "W¹ also feeds op &#x27;transpose&#x27;" in bp4
    m = tables(bp4)
    part = m["part of ∂L/∂W¹ from layer 1 (W¹)"]
    np.testing.assert_allclose(m["a⁰ᵀ"] @ m["δ¹"], part, rtol=1e-3, atol=1e-7)
    loss.backward()
    assert not np.allclose(part, W.grad, atol=1e-3)          # not the whole gradient


def test_float16_sides_that_print_differently_are_not_joined_by_equals():
    """float16 BP3: Σₙ δ² [0.08081, ...] = ∂L/∂b² [0.08069, ...]: the left side was
    summed in float16 too. It is summed in float64 now, and a row says "=" only between
    numbers that print the same, else "≈" (the engine's float16 rounding shows in the
    printed digits), and says why."""
    rng = np.random.default_rng(0)
    model = nn.MLP([3, 4, 3], activation="tanh", seed=0, dtype=np.float16)
    x = engine.Tensor(rng.standard_normal((4, 3)).astype(np.float16))
    loss = nn.CrossEntropyLoss()(model(x), rng.integers(0, 3, 4))
    frames = layer_frames(loss, model=model)
    bp2 = slide(frames, "layer 2: BP3 and BP4")           # the float64 sum is the engine's
    assert rows(bp2)[0] == (["Σₙ δ²", "∂L/∂b²"], ["="])
    bp1 = slide(frames, "layer 1: BP3 and BP4")
    assert rows(bp1)[0] == (["Σₙ δ¹", "∂L/∂b¹"], ["≈"])
    assert "engine's float16 rounding" in bp1
    for _, h in frames:
        m = tables(h)
        for names, ops in rows(h):
            if ops == ["="] and len(names) == 2:
                np.testing.assert_array_equal(m[names[0]], m[names[1]])


def test_float64_sides_keep_equals():
    """"≈" is for digits that differ, not for every slide."""
    model = nn.MLP([3, 4, 3], activation="tanh", seed=0, dtype=np.float64)
    x = engine.Tensor(np.random.default_rng(1).standard_normal((4, 3)))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1, 2, 1]))
    assert not any("≈" in h for _, h in layer_frames(loss, model=model))


def test_a_root_that_is_not_one_number_shows_grad_as_stored_and_says_so():
    """A non-scalar root has no gradient of its own: the picture shows the tensors' .grad,
    which sums every backward pass since zero_grad() (two here, of an old loss). It was
    labelled plain "grad", with no caption, as if it were a gradient of what is drawn."""
    model = nn.MLP([3, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for _ in range(2):
        model(engine.Tensor(x)).sum().backward()
    source = draw(model(engine.Tensor(x)), model=model).source
    assert "\\n.grad [" in source and "\\ngrad [" not in source
    assert "not a gradient of the root drawn" in source
    loss = model(engine.Tensor(x)).sum()                  # a scalar root: its own gradient
    source = draw(loss, model=model).source
    assert "\\ngrad [" in source and ".grad" not in source


def test_bp1_with_targets_not_summing_to_one_does_not_print_equals_between_differing_numbers():
    """BP1's p·Σy − y ÷ N = δ for probability rows not summing to 1, built to cancel: the
    engine's float32 p·Σy rounds, and the printed right-hand side and δ differed in the
    third digit under "=". They are joined by "≈", with a note saying why."""
    rng = np.random.default_rng(3)
    model = nn.MLP([2, 3, 3], activation="tanh", seed=3)
    z = model(engine.Tensor(rng.standard_normal((2, 2)).astype(np.float32)))
    logits = z.numpy(copy=True).astype(float)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = (p * rng.uniform(0.5, 2.0, (2, 1))).astype(np.float32)
    y[:, 0] += rng.uniform(-1e-4, 1e-4, 2).astype(np.float32)
    _, slide = layer_frames(nn.CrossEntropyLoss()(z, np.abs(y)), model=model)[0]
    first_row = slide.split('<div class="hg-row">')[1]
    assert re.findall(r'<div class="hg-op">(.*?)</div>', first_row)[-1] == "÷ 2 ≈"
    assert "≈: the two sides differ in the printed digits" in slide


def test_no_text_line_runs_under_its_boxs_heat_map_in_a_browser(browser, tmp_path):
    """Graphviz measures its monospace text narrower than Chromium draws it: the summary
    lines' last digits ran 15-30% of a character (72% at small font sizes) under the heat
    map beside them. At the default size, the smallest and the slide preset's."""
    from handgrad.engine.viz import render
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    for fontsize in (14, 4, 24):
        loss = nn.CrossEntropyLoss()(model(engine.Tensor(x)), np.array([0, 1, 1, 0]))
        path = render(draw(loss, model=model, fontsize=fontsize, max_elements=4),
                      tmp_path / f"graph{fontsize}.svg")
        browser.get(path.as_uri())
        overlaps = browser.execute_script("""
            var out = [];
            document.querySelectorAll('g.node').forEach(function (g) {
              var images = Array.from(g.querySelectorAll('image'));
              g.querySelectorAll('text').forEach(function (t) {
                var r = t.getBoundingClientRect();
                var shown = t.textContent.replace(/\\s+$/, '').length;   // the glyphs drawn
                if (!shown) return;
                var right = r.left + t.getSubStringLength(0, shown) * r.width
                                     / t.getComputedTextLength();
                images.forEach(function (im) {
                  var q = im.getBoundingClientRect();
                  if (right > q.left + 0.5 && r.left < q.right && r.bottom > q.top
                      && r.top < q.bottom) out.push(t.textContent);
                });
              });
            });
            return out;""")
        assert overlaps == [], (fontsize, overlaps)


def test_a_leaf_held_outside_says_its_values_shown_may_not_be_the_forwards():
    """W's array held from before the forward pass, written after backward(): the picture
    withheld the gradient with a caption, but showed W's new values next to the
    activations of the old ones without a word. The caption now says so."""
    x = engine.Tensor(np.array([[1.0, 0.5]]), name="x")
    W = engine.Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True, name="W")
    held = W.data
    loss = (x @ W).tanh().sum()
    loss.backward()
    held -= 0.5
    source = draw(loss).source
    assert "no gradient shown" in source
    assert "the values shown for W are its values now, which may not be those the forward" \
        in re.sub(r"\\\\n|\s+", " ", source)
