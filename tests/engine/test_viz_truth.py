"""The pictures say only what the engine computes (issue 21, "fix what is false"): the output
delta of soft targets whose rows do not sum to 1, a check line that says "differs" when the
numpy right-hand side is not the engine's value, rule lines that follow the reduction, and
``render`` writing the format its path names."""
from __future__ import annotations

import re
import shutil
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import engine, nn
from handgrad.engine.viz import backward_playback, derivation, draw, labels, measures, render
from handgrad.engine.viz.gradients import backward_steps, rule_steps
from handgrad.engine.viz.layers import _matrix, check_line, layer_frames
from handgrad.engine.viz.lecture import Clause
from handgrad.engine.viz.losses import fused_loss_lines, output_delta
from handgrad.engine.viz.playback import caption, captioned_frames
from handgrad.engine.viz.player import STYLE
from handgrad.engine.viz.view import build_view

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")

X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5]])
SOFT = np.array([[0.2, 0.3], [0.5, 0.9], [1.0, 1.0], [0.1, 0.2], [0.6, 0.1]])  # rows ≠ 1
CHECK = re.compile(r'<div class="(hg-check[^"]*)">([^<]*)</div>')


def label(source: str, node: str) -> str:
    """The text of one DOT node's label, line breaks as spaces (rules wrap)."""
    text = re.search(rf'^\s*{node} \[label="((?:[^"\\]|\\.)*)"', source, re.M).group(1)
    return " ".join(text.replace("\\n", " ").split())


def soft_loss(dtype=np.float64, **kwargs):
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=dtype)
    z = model(engine.Tensor(X.astype(dtype)))
    return model, engine.softmax_cross_entropy(z, SOFT.astype(dtype), **kwargs)


def checks(playback) -> list[tuple[str, str]]:
    return [m for _, body in playback.frames for m in CHECK.findall(body)]


# --- 1. soft targets whose rows do not sum to 1 --------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_soft_targets_show_the_formula_that_holds_and_its_check_equals_the_engine(dtype):
    model, loss = soft_loss(dtype)
    bp1 = backward_playback(loss, level="layer", model=model).frames[0][1]
    assert "δ² = (p·Σy − y)/N, N = 5 rows" in bp1 and "(p − y)/N" not in bp1
    assert '<div class="hg-name">Σy</div>' in bp1                  # the row sums are shown
    assert "<td>1.4</td>" in bp1 and "<td>0.3</td>" in bp1
    box = label(draw(loss, rules=True).source, "op3")
    assert box.startswith("softmax_cross_entropy δ = (p·Σy − y)/N, N = 5 rows")
    assert "d/dz = (p·Σy − y)/N" in box and "(p − y)" not in box
    out = derivation(loss)[0]
    engine_delta = out["delta"]
    # the engine rounds p·Σy − y (terms up to 2/N = 0.4) in its dtype: a few eps of 0.4
    np.testing.assert_allclose(out["rhs"], engine_delta, rtol=0,
                               atol=1e-15 if dtype == np.float64 else 1e-7)
    np.testing.assert_allclose(out["y_sum"].ravel(), SOFT.sum(1), rtol=1e-7)
    # every check line of the page says "equals", within its stated tolerance
    found = checks(backward_playback(loss, level="layer", model=model))
    assert len(found) == 6
    for cls, text in found:
        diff, tol = map(float, re.search(r"largest difference ([0-9.e+-]+), within the "
                                         r"tolerance ([0-9.e+-]+)", text).groups())
        assert cls == "hg-check" and "equals" in text and diff <= tol


def test_soft_targets_with_label_smoothing_check_against_what_the_engine_computes():
    model, loss = soft_loss(label_smoothing=0.2)
    out = derivation(loss)[0]
    smoothed = 0.8 * SOFT + 0.1
    np.testing.assert_allclose(out["y"], smoothed, rtol=1e-15)
    np.testing.assert_allclose(out["y_sum"].ravel(), smoothed.sum(1), rtol=1e-15)
    np.testing.assert_allclose(out["rhs"], out["delta"], rtol=0, atol=1e-15)
    assert "hg-differs" not in backward_playback(loss, level="layer").frames[0][1]


@pytest.mark.parametrize("targets, dtype", [
    (np.array([0, 1, 1, 0, 1]), np.float64),                                # labels
    (np.eye(2)[[0, 1, 1, 0, 1]], np.float64),                               # one-hot rows
    ((SOFT / SOFT.sum(1, keepdims=True)).astype(np.float32), np.float32),   # float32 rows ≈ 1
])
def test_rows_that_sum_to_one_keep_showing_p_minus_y(targets, dtype):
    """Rows that sum to 1 in the dtype the engine sums them in, the logits' (float32 rows
    summed in float64 are 1 + 3e-8: test_rows_are_summed_as_the_engine_sums_them)."""
    model = nn.MLP([2, 3, 2], seed=0, dtype=dtype)
    z = model(engine.Tensor(X.astype(dtype)))
    for loss in (engine.softmax_cross_entropy(z, targets),
                 engine.softmax_cross_entropy(z, targets, label_smoothing=0.1)):
        out = derivation(loss)[0]
        assert out["formula"] == "δ = (p − y)/N, N = 5 rows" and out["y_sum"] is None
        # float32: the engine rounds (p − y)/N, terms up to 0.2, to float32 (1e-8 apart)
        np.testing.assert_allclose(out["rhs"], out["delta"], rtol=0,
                                   atol=1e-8 if dtype == np.float64 else 1e-7)
        found = checks(backward_playback(loss, level="layer"))
        assert found and all(cls == "hg-check" and "equals" in text for cls, text in found)


@pytest.mark.parametrize("z_dtype, targets", [
    # float16 rows summing to 0.99: summed exactly in float32, not rounding (was "p − y")
    (np.float32, np.array([[0.5, 0.3, 0.19], [0.2, 0.2, 0.59]], np.float16)),
    # float32 rows that are 1 in float32 are 1 + 3e-8 summed in float64, as the engine does
    (np.float64, np.array([[0.4, 0.6], [0.3, 0.7]], np.float32)),
    # 1000 classes, rows summing to 0.9996: within 4·C·eps(float32) = 4.8e-4 of 1, not 4 eps
    (np.float32, np.full((2, 1000), 0.9996e-3, np.float32)),
])
def test_rows_are_summed_as_the_engine_sums_them(z_dtype, targets):
    """"p − y" only when the rows sum to 1 in the logits' dtype, where the engine sums them
    (loss.py: delta = p · targets.sum() − targets): the tolerance came from the coarsest
    dtype and grew with the classes, so rows summing to 0.99 or 0.9996 were drawn with
    (p − y)/N, which does not give the engine's gradient."""
    C = targets.shape[-1]
    z = engine.Tensor(np.linspace(-1, 1, 2 * C).reshape(2, C).astype(z_dtype),
                      requires_grad=True)
    loss = engine.softmax_cross_entropy(z, targets)
    box = label(draw(loss, rules=True, max_elements=4).source, "op0")
    assert box.startswith("softmax_cross_entropy δ = (p·Σy − y)/N, N = 2 rows, Σy = each "
                          "row's target sum (not all 1)")
    assert "d/dz = (p·Σy − y)/N" in box and "(p − y)" not in box
    delta = output_delta(loss.node)
    np.testing.assert_allclose(delta.y_sum.ravel(), targets.astype(np.float64).sum(-1),
                               rtol=1e-6)
    loss.backward()
    # the formula shown, recomputed in float64, is the engine's gradient up to its rounding
    np.testing.assert_allclose(delta.rhs(), z.grad, rtol=0,
                               atol=16 * np.finfo(z_dtype).eps * np.abs(z.grad).max())


def test_the_check_line_says_differs_in_red_beyond_its_tolerance():
    engine_value = np.array([[0.01, -0.01]], dtype=np.float32)
    scale = np.abs(engine_value)
    same = check_line(engine_value.astype(np.float64) + 1e-12, engine_value, "δ²", scale, 2)
    assert 'class="hg-check"' in same and "equals the engine's δ²" in same
    assert "within the tolerance 3.8e-08" in same     # 8 (2 + 2) eps(float32) · 0.01
    wrong = check_line(engine_value * 1.5, engine_value, "δ²", scale, 2)
    assert 'class="hg-check hg-differs"' in wrong and "equals" not in wrong
    assert "differs from the engine's δ²: largest difference 5.0e-03, more than the " \
           "tolerance 3.8e-08" in wrong
    assert re.search(r"\.hg-check\.hg-differs \{[^}]*color: #c62828", STYLE)   # red


@pytest.mark.parametrize("entry", [np.inf, -np.inf, np.nan])
def test_inf_and_nan_at_the_same_places_are_equal_not_differs(entry):
    """inf − inf and nan − nan made the largest difference nan, and nan <= tol is False:
    a formula giving exactly the engine's [inf, 1] was captioned "differs (largest
    difference nan)" and a RuntimeWarning leaked. Equal means the same NaN places, the
    same infinities and the finite entries within the tolerance."""
    x = engine.Tensor(np.array([entry, 1.0]), name="x")
    w = engine.Tensor(np.array([2.0, 3.0]), requires_grad=True, name="w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                     # no RuntimeWarning leaks out
        caption = backward_playback((x * w).sum()).frames[2][0]
        value = engine_value = np.array([entry, 0.01])
        same = check_line(value.copy(), engine_value, "δ²", np.abs(value), 2)
    shown = {np.inf: "inf", -np.inf: "-inf"}.get(entry, "nan")
    assert caption.endswith(f"∂L/∂w = ∂L/∂t2 ⊙ x = [{shown}, 1]"), caption
    assert 'class="hg-check"' in same and "equals the engine's δ²" in same
    assert "(inf and nan at the same places; largest difference of the finite entries " \
           "0.0e+00, within the tolerance" in same


def test_non_finite_entries_at_other_places_or_signs_differ_and_say_where():
    engine_value = np.array([np.inf, np.nan, 0.01])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sign = check_line(np.array([-np.inf, np.nan, 0.01]), engine_value, "δ²",
                          np.array([np.inf, 1.0, 0.01]), 2)
        place = check_line(np.array([np.inf, 1.0, 0.01]), engine_value, "δ²",
                           np.array([np.inf, 1.0, 0.01]), 2)
        both = check_line(np.array([np.inf, np.nan, 0.02]), engine_value, "δ²",
                          np.array([np.inf, 1.0, 0.01]), 2)
        clause = Clause("∂L/∂w", "g ⊙ x", np.array([np.inf, 1.0]), rhs=np.array([np.nan, 1.0]))
        text = clause.text()
    assert 'hg-differs' in sign and "different infinities (sign or place) (the finite " \
           "entries are within the tolerance" in sign
    assert 'hg-differs' in place and "differs from the engine's δ²: nan at different places" \
           in place
    assert 'hg-differs' in both and "largest difference of the finite entries 1.0e-02, " \
           "more than the tolerance" in both
    assert not clause.holds()
    assert text == ("∂L/∂w = [inf, 1] (engine), but g ⊙ x = [nan, 1] differs (nan at different "
                    "places; different infinities (sign or place))")


@pytest.mark.parametrize("values, shown", [([1e-300, 0.0], "1e-300"), ([1e300, 1.0], "1e+300"),
                                           ([3e-200, 4e-200], "5e-200")])
def test_norms_neither_underflow_to_0_nor_overflow_to_inf(values, shown):
    """np.linalg.norm squares without scaling: a gradient [1e-300, 0] was said to have
    ‖∂L/∂w‖ = 0 and [1e300, 1] ‖∂L/∂w‖ = inf, in the closing caption, the collapsed
    boxes, the boxes' ‖grad‖ lines and the layer slides' heat maps."""
    x = engine.Tensor(np.array(values), name="x")
    w = engine.Tensor(np.array([2.0, 3.0]), requires_grad=True, name="w")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        closing = backward_playback((x * w).sum()).frames[-1][0]
        big = engine.Tensor(np.tile(np.array(values), 4), requires_grad=True, name="big")
        source = draw((big * 1.0).sum(), max_elements=2).source
        slide = _matrix("∂L/∂W", np.tile(np.array(values), 30), 40)
    assert closing.endswith(f"‖∂L/∂w‖ = {shown}"), closing
    assert f"‖value‖ = {labels.number(2 * float(shown))}" in source   # ‖4 copies‖
    assert f"‖∂L/∂W‖ = {labels.number(float(shown) * np.sqrt(30))}" in slide


def test_the_norm_of_non_finite_and_empty_arrays():
    assert np.isnan(measures.norm(np.array([np.inf, np.nan])))
    assert measures.norm(np.array([-np.inf, 1.0])) == np.inf
    assert measures.norm(np.zeros((0, 3))) == 0.0 and measures.norm(np.zeros(3)) == 0.0
    assert measures.norm(np.array([[3.0, 4.0]])) == 5.0


# --- 2. the rule line follows the reduction --------------------------------------------------

Z = np.array([[1.0, -1.0, 0.5], [0.5, 2.0, -0.3]])


@pytest.mark.parametrize("reduction, rule", [
    ("mean", "d/dz = (p − y)/N, p = softmax(z), N = rows averaged"),
    ("sum", "d/dz = p − y, p = softmax(z) (reduction sum: no /N)"),
    ("none", "d/dzₙ = (p − y)ₙ·gₙ per row, p = softmax(z), g = the incoming gradient "
             "(reduction none)"),
])
def test_softmax_cross_entropy_rule_line_follows_the_reduction(reduction, rule):
    z = engine.Tensor(Z, requires_grad=True)
    loss = engine.softmax_cross_entropy(z, np.array([0, 1]), reduction=reduction)
    box = label(draw(loss.sum() if reduction == "none" else loss, rules=True).source, "op0")
    assert box.endswith(rule)
    if reduction != "mean":
        assert "/N" not in box.replace("no /N", "")


@pytest.mark.parametrize("op, reduction, rule", [
    ("sigmoid_binary_cross_entropy", "mean", "d/dz = (σ(z) − y)/N, N = all elements (mean)"),
    ("sigmoid_binary_cross_entropy", "batchmean",
     "d/dz = (σ(z) − y)/N, N = the batch size (batchmean)"),
    ("sigmoid_binary_cross_entropy", "sum", "d/dz = σ(z) − y (reduction sum: no /N)"),
    ("sigmoid_binary_cross_entropy", "none",
     "d/dz = (σ(z) − y)·g per element, g = the incoming gradient (reduction none)"),
    ("mse", "mean", "d/dpred = 2 (pred − target)/N, d/dtarget = −2 (pred − target)/N, "
                    "N = all elements (mean)"),
    ("mse", "sum", "d/dpred = 2 (pred − target), d/dtarget = −2 (pred − target) "
                   "(reduction sum: no /N)"),
    ("mse", "none", "d/dpred = 2 (pred − target)·g, d/dtarget = −2 (pred − target)·g per "
                    "element, g = the incoming gradient (reduction none)"),
])
def test_bce_and_mse_rule_lines_follow_the_reduction(op, reduction, rule):
    z = engine.Tensor(Z, requires_grad=True)
    loss = getattr(engine, op)(z, np.ones_like(Z) * 0.5, reduction=reduction)
    box = label(draw(loss.sum() if reduction == "none" else loss, rules=True).source, "op0")
    assert box.endswith(rule)


@pytest.mark.parametrize("reduction, formula", [
    ("mean", "δ = (σ(z) − y)/N, N = 1 elements"), ("batchmean", "δ = (σ(z) − y)/N, N = 1 rows"),
    ("sum", "δ = σ(z) − y (reduction sum)"), ("none", "δ = (σ(z) − y)·g per element"),
])
def test_bce_of_a_0d_logit_is_drawn_with_n_1_as_the_engine_counts_it(reduction, formula):
    """The engine takes a 0-d logit (N = 1 for batchmean); the pictures raised IndexError
    on every reduction, reading z.shape[0] for the batchmean entry of an eager table."""
    z = engine.Tensor(np.array(0.3), requires_grad=True)
    loss = engine.sigmoid_binary_cross_entropy(z, np.array(1.0), reduction=reduction)
    box = label(draw(loss, rules=True).source, "op0")
    assert box.startswith(f"sigmoid_binary_cross_entropy reduction={reduction!r} {formula}"
                          if reduction != "mean" else f"sigmoid_binary_cross_entropy {formula}")
    captions = [text for text, _ in captioned_frames(loss)]
    assert len(captions) == 3 and "differs" not in captions[1]
    delta = output_delta(loss.node)
    loss.backward()
    np.testing.assert_allclose(delta.rhs(), z.grad, rtol=1e-15)     # σ(0.3) − 1, N = 1


def test_a_saturated_float32_tanh_is_captioned_as_the_formula_it_computes():
    """Every unit saturated (|z| > 3): the caption said the engine's tanh′ "differs" from
    1 − (a¹)² (largest difference 2.7e-08), beside two identical printed arrays: the
    rounding tolerance was taken on the tiny 1 − a² itself, not on 1 + a²."""
    x = engine.Tensor(np.array([[3.0], [-4.0]], np.float32))
    W1 = engine.Tensor(np.array([[1.3, -1.27, 1.12]], np.float32), requires_grad=True)
    W2 = engine.Tensor(np.array([[0.5, -0.2], [0.1, 0.3], [-0.4, 0.2]], np.float32),
                       requires_grad=True)
    a1 = engine.tanh(engine.linear(x, W1))
    loss = engine.softmax_cross_entropy(engine.linear(a1, W2), np.array([0, 1]))
    tanh_step = next(text for text, _ in captioned_frames(loss) if "backward of tanh" in text)
    assert "tanh′(z) = 1 − (a)² = [[0.001638" in tanh_step.replace("¹", "") \
        and "differs" not in tanh_step, tanh_step
    wrong = Clause("f′", "1 − a²", np.array([0.5], np.float32), np.array([0.5001]),
                   scale=np.array([1.5]))
    assert not wrong.holds()                     # a real difference still shows


def test_a_means_caption_states_no_false_equation():
    """It read "∂L/∂t = ∂L/∂L / n, n = 12 = [[0.08333, …]]": as written, 12 = [[0.08333, …]]."""
    x = engine.Tensor(np.arange(12.0).reshape(4, 3), requires_grad=True)
    mean_step = next(text for text, _ in captioned_frames(engine.mean(x * 2.0))
                     if "backward of mean" in text)
    assert "/ 12 = [[0.08333" in mean_step and "n = 12 =" not in mean_step, mean_step


def test_soft_targets_change_the_rule_line_for_every_reduction():
    z = engine.Tensor(Z[:, :2], requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        loss = engine.softmax_cross_entropy(z, SOFT[:2], reduction=reduction)
        box = label(draw(loss.sum() if reduction == "none" else loss, rules=True).source, "op0")
        assert "p·Σy − y" in box and "Σy = each row's target sum" in box and "(p − y)" not in box


# --- 3. render writes the format its path names ---------------------------------------------

@needs_dot
@pytest.mark.parametrize("name, magic", [("g.png", b"\x89PNG"), ("g.pdf", b"%PDF"),
                                         ("g.svg", b"<?xml"), ("g.dot", b"digraph"),
                                         ("g", b"<?xml")])
def test_render_writes_the_format_the_extension_names(tmp_path, name, magic):
    path = render(draw(engine.Tensor(1.0)), tmp_path / name)
    assert path.read_bytes().startswith(magic)


def test_render_refuses_a_format_that_contradicts_the_extension(tmp_path):
    picture = draw(engine.Tensor(1.0))
    with pytest.raises(ValueError, match=r"render: format 'svg' contradicts the path .*g\.png"):
        render(picture, tmp_path / "g.png", "svg")
    with pytest.raises(ValueError, match=r"cannot tell the format .*\.jpg"):
        render(picture, tmp_path / "g.jpg")
    assert not list(tmp_path.iterdir())                    # nothing written
    assert render(picture, tmp_path / "g.gv", "dot").read_text() == picture.source


# --- 4. the numbers an equation is written with ---------------------------------------------

@pytest.mark.parametrize("op", ["softmax_cross_entropy", "sigmoid_binary_cross_entropy"])
def test_a_count_divisor_is_printed_exactly(op):
    """N = 12345 rows was written "(p − y)/1.234e+04" and "÷ 1.234e+04 =" (4 significant
    digits of a float): not the divisor. A count is an int, printed in full."""
    rng = np.random.default_rng(0)
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    z = model(engine.Tensor(rng.standard_normal((12345, 2)).astype(np.float32)))
    y = rng.integers(0, 2, 12345)
    loss = (engine.softmax_cross_entropy(z, y) if op == "softmax_cross_entropy"
            else engine.sigmoid_binary_cross_entropy(z, np.eye(2)[y], reduction="batchmean"))
    view = build_view(loss, model)
    steps = rule_steps(backward_steps(view))
    assert f"({'p' if 'softmax' in op else 'σ(z)'} − y)/12345 = [[" in caption(view, steps, 1)
    bp1 = layer_frames(loss, model=model)[0][1]
    assert "÷ 12345 =" in bp1 and "e+04" not in bp1.split("hg-check")[0]
    assert output_delta(loss.node).N == 12345


NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


def printed(lines: list[str], title: str) -> np.ndarray:
    """The numbers of the array a box prints under ``title`` ("p [[...]]" and its rows)."""
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{title} "))
    block = [lines[start][len(title):]]
    block += [line for line in lines[start + 1:start + 20] if line.startswith(" ")]
    block = block[:next((i for i, line in enumerate(block) if i and "]]" in block[i - 1]),
                        len(block))]
    return np.array([float(v) for line in block for v in NUMBER.findall(line)])


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 3), classes=st.integers(2, 3), dtype=st.sampled_from(["float32", "float64"]),
       op=st.sampled_from(["softmax_cross_entropy", "sigmoid_binary_cross_entropy"]),
       smoothing=st.sampled_from([0.0, 0.1]), data=st.data())
def test_the_output_delta_holds_for_the_numbers_printed(rows, classes, dtype, op, smoothing, data):
    """The rule for every displayed equation: it holds for the displayed numbers to their
    printed precision. A confident p = 0.99995892 printed "1" beside y = 1 made "(1 − 1)/4"
    of a δ of −1.028e-05: p and y are printed with the digits (p − y)/N needs, so the delta
    computed from the printed numbers agrees with the printed δ to 4 significant digits
    (relative 1e-3), up to the engine's own rounding of p − y in its dtype."""
    logits = data.draw(st.lists(st.floats(-25, 25, allow_subnormal=False),
                                min_size=rows * classes, max_size=rows * classes))
    labels_ = np.array(data.draw(st.lists(st.integers(0, classes - 1), min_size=rows,
                                          max_size=rows)))
    z = engine.Tensor(np.array(logits, dtype).reshape(rows, classes), requires_grad=True)
    if op == "softmax_cross_entropy":
        loss = engine.softmax_cross_entropy(z, labels_, label_smoothing=smoothing)
    else:
        loss = engine.sigmoid_binary_cross_entropy(z, np.eye(classes)[labels_].astype(dtype))
    lines = fused_loss_lines(loss.node, max_elements=100, incoming=1.0)
    (engine_delta,) = engine.grad(loss, [z])
    P, Y = printed(lines, "p"), printed(lines, "y")
    D = np.array([float(labels.number(v)) for v in engine_delta.reshape(-1)])
    N = output_delta(loss.node).N
    eps = float(np.finfo(dtype).eps)
    allowed = 1e-3 * np.abs(D) + 4 * eps * np.maximum(np.abs(P), np.abs(Y)) / N
    assert np.all(np.abs((P - Y) / N - D) <= allowed), (lines, D)


def test_a_confident_output_is_printed_with_the_digits_its_delta_needs():
    """bug2: BP1 of a confident output read p 1 − y 1 ÷ 4 = δ −1.028e-05, and the op box
    p [..., 1] beside y [..., 1]. Both print the engine's float32 p = 0.99995887 now (not
    0.99995892, p recomputed in float64, with which (p − y)/4 is -1.027e-05); other
    numbers keep 4."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    model.layers[2].weight = nn.Parameter(np.zeros((3, 2), np.float32))
    model.layers[2].bias = nn.Parameter(np.array([0.0, 10.1], np.float32))
    x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    loss = nn.CrossEntropyLoss()(model(x), np.array([1, 1, 1, 1]))
    bp1 = layer_frames(loss, model=model)[0][1]
    assert bp1.count("<td>0.99995887</td>") == 4 and "<td>1</td>" in bp1   # y stays 1
    assert bp1.count("<td>-1.028e-05</td>") == 4                            # δ: 4 digits
    box = label(draw(loss, model=model, max_elements=8).source, "op3")
    assert "p [[4.1077856e-05, 0.99995887]," in box and "y [[0, 1]," in box
    assert labels.digits_to_subtract(np.array([0.3, 0.7]), np.array([0.0, 1.0])) == 4


def _slide_matrix(html: str, name: str) -> np.ndarray:
    m = re.search(r'<div class="hg-name">' + re.escape(name) + r'</div><table[^>]*>(.*?)</table>', html)
    assert m is not None, name
    return np.array([float(v) for v in re.findall(r"<td>(.*?)</td>", m.group(1))])


def test_the_bp1_slide_prints_y_as_the_engine_subtracted_it():
    """Soft float64 targets beside float32 logits: the engine subtracts y cast to float32,
    the slide printed the float64 y, and near the fit (p close to y) the printed p - y was
    not the printed delta (-2.71e-07 beside -2.68e-07)."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = engine.Tensor(np.array([[0.5, -1.0]], dtype=np.float32))
    with engine.no_grad():
        z = model(x).numpy(copy=True)
    y = np.round(1 / (1 + np.exp(-z.astype(np.float64))), 7) + np.array([[3e-7, -4e-7]])
    loss = nn.BCEWithLogitsLoss(reduction="sum")(model(x), y)          # N = 1: delta = p - y
    _, html = layer_frames(loss, model=model)[0]
    p, y_shown, delta = (_slide_matrix(html, k) for k in ("p = σ(z²)", "y", "δ²"))
    np.testing.assert_allclose(p - y_shown, delta, rtol=1e-3)


def test_bp4_shows_the_delta_of_one_example_given_as_a_vector_as_a_row():
    """x of shape (in,): aᵀ was shown (3, 1) beside δ (2,), a product numpy refuses."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = engine.Tensor(np.array([0.5, 1.0], dtype=np.float32))
    loss = engine.softmax_cross_entropy(model(x), np.array(1))
    _, html = layer_frames(loss, model=model)[1]
    names = re.findall(r'<div class="hg-name">(.*?)</div>', html)
    shapes = re.findall(r'<div class="hg-shape">(\(.*?\))</div>', html)
    shown = dict(zip(names, shapes))
    assert shown["a¹ᵀ"] == "(3, 1)" and shown["δ²"] == "(1, 2)", shown


def test_printed_deltas_add_up_to_the_printed_bias_gradient_when_they_cancel():
    """Near a minimum ∂L/∂b² is -9.8e-06 while its δ² are ±0.25: printed with 4 digits the
    δ summed to 0, and aᵀ·δ from the printed factors missed the printed product. The
    factors get the digits their cancellation needs."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0, dtype=np.float64)
    x = engine.Tensor(np.array([[3e-4, -1e-4], [-2e-4, 4e-4]]))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1]))
    _, html = layer_frames(loss, model=model)[1]

    def matrix(name):
        m = re.search(r'<div class="hg-name">' + re.escape(name) + r'</div><table[^>]*>(.*?)</table>', html)
        return np.array([[float(v) for v in re.findall(r"<td>(.*?)</td>", r)]
                         for r in re.findall(r"<tr>(.*?)</tr>", m.group(1))])

    delta, a_T = matrix("δ²"), matrix("a¹ᵀ")
    np.testing.assert_allclose(delta.sum(0), matrix("∂L/∂b²").ravel(), rtol=1e-3)
    np.testing.assert_allclose(a_T @ delta, matrix("∂L/∂W² (layers.2.weight)"), rtol=1e-3)


def test_derivation_hands_out_copies_so_a_write_leaves_the_live_graph_as_it_was():
    """derivation() needs the graph alive; its arrays (a_prev: the activation the linear
    node saved, W_next: the weight's memory, p: the loss's saved delta) are copies, so
    writing them leaves the backward pass and the weights as they were."""
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = engine.Tensor(X)
    y = np.array([0, 1, 1, 0, 1])
    expected_loss = engine.softmax_cross_entropy(model(x), y)
    expected_loss.backward()
    expected = [p.grad.copy() for p in model.parameters()]
    weights = [p.numpy(copy=True) for p in model.parameters()]
    model.zero_grad()
    loss = engine.softmax_cross_entropy(model(x), y)
    for d in derivation(loss):
        for value in d.values():
            if isinstance(value, np.ndarray) and value.size:
                value[...] = 0.0
    loss.backward()
    for p, g, w in zip(model.parameters(), expected, weights, strict=True):
        np.testing.assert_array_equal(p.grad, g)
        np.testing.assert_array_equal(p.numpy(copy=True), w)


def test_a_weight_shared_by_two_layers_is_named_after_both():
    """Sequential(lin, Tanh, Linear, Tanh, lin): the shared weight was drawn as W³ alone
    (layer 1's use unnamed) and its whole gradient shown as ‖∂L/∂W³‖, the symbol of layer
    3's part; the slides already said it is one tensor shared by layers 1 and 3."""
    lin = nn.Linear(2, 2)
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(2, 2), nn.Tanh(), lin)
    loss = engine.softmax_cross_entropy(model(engine.Tensor(X)), np.array([0, 1, 1, 0, 1]))
    source = draw(loss, model=model).source
    assert "W¹,³ = 0.weight" in source and "W³ = 0.weight" not in source
    assert "b¹,³ = 0.bias" in source and "W² = 2.weight" in source
    done = backward_playback(loss, model=model).frames[-1][0]
    assert "‖∂L/∂W¹,³‖" in done and "‖∂L/∂W²‖" in done
