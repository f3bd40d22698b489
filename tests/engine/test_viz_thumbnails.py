"""Heat-map thumbnails in the op-level picture (issue 21): a tensor whose value or gradient
is too big to print shows a heat map (blue negative, red positive, the layer view's
colours) with its norm; small arrays and class labels keep their plain text. The PNGs are
embedded in SVG (and so in the HTML player and the per-step exports) as data: URIs; PNG
and PDF output draw them through cairo; no temporary file outlives a rendering."""
from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path

import graphviz
import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import (
    draw,
    labels,
    render,
    rendering,
    save_backward_html,
    save_backward_steps,
    thumbnails,
)
from handgrad.engine.viz.drawing import dot_label
from handgrad.engine.viz.layers import heat_map
from handgrad.engine.viz.rendering import to_svg

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
DATA_URI = re.compile(r'<image [^>]*?href="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def weight_30x20() -> np.ndarray:
    """Rows 0-14 positive, rows 15-29 negative, every entry different."""
    rng = np.random.default_rng(0)
    w = 0.5 + rng.random((30, 20))
    w[15:] *= -1
    return w


def decode_png(png: bytes) -> np.ndarray:
    """An 8-bit RGB PNG (filter 0 on every row, as thumbnails.png_bytes writes) as an
    (h, w, 3) array, read with zlib alone."""
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    at, idat, size = 8, b"", None
    while at < len(png):
        (length,), kind = struct.unpack(">I", png[at:at + 4]), png[at + 4:at + 8]
        body = png[at + 8:at + 8 + length]
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (8, 2)
            size = (h, w)
        elif kind == b"IDAT":
            idat += body
        at += 12 + length
    assert size is not None
    h, w = size
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 3 * w)
    assert not raw[:, 0].any()                       # filter type 0 on every row
    return raw[:, 1:].reshape(h, w, 3)


@needs_dot
def test_a_big_weight_shows_a_heat_map_with_its_norm_embedded_in_the_svg():
    w = weight_30x20()
    W = engine.Tensor(w, requires_grad=True, name="W")
    g = draw(W.tanh().sum(), show=("shape", "value"))
    svg = to_svg(g)
    box = re.search(r'<g id="n_t0" class="node">(.*?)</g>', svg, re.S).group(1)
    pngs = [base64.b64decode(b) for b in DATA_URI.findall(box)]
    assert len(pngs) == 1 and box.count("<image") == 1
    assert f"‖value‖ = {labels.number(np.linalg.norm(w))}" in box.replace("&#160;", " ")
    assert labels.number(np.linalg.norm(w)) == "26.08"
    assert tempfile.gettempdir() not in svg and "hg-heat-" not in svg
    assert not re.search(r'href="(?!data:)', svg)   # every picture is in the SVG itself
    rgb = decode_png(pngs[0])
    cell = 192 // 30                                 # px per cell: the longer side ~192 px
    assert rgb.shape == (30 * cell + 2, 20 * cell + 2, 3)   # and a 1-px frame
    for i, j in [(0, 0), (7, 13), (14, 19), (15, 0), (29, 19)]:
        r, gr, b = rgb[1 + cell * i + cell // 2, 1 + cell * j + cell // 2]
        if w[i, j] > 0:
            assert r == 255 and gr == b < 255, (i, j)       # red, as strong as |w| / max|w|
        else:
            assert b == 255 and gr == r < 255, (i, j)       # blue
        assert abs(int(gr) - round(255 * (1 - abs(w[i, j]) / np.abs(w).max()))) <= 1


def test_more_than_48_rows_or_columns_are_averaged_in_blocks_with_the_layer_views_colours():
    a = np.random.default_rng(1).standard_normal((100, 60))
    cells = thumbnails.heat_cells(a)
    assert cells.shape == (48, 48)
    rows = np.array_split(np.arange(100), 48)
    cols = np.array_split(np.arange(60), 48)
    assert cells[5, 7] == pytest.approx(a[np.ix_(rows[5], cols[7])].mean())
    rgb = decode_png(thumbnails.thumbnail(a))
    for i, j in [(0, 0), (5, 7), (47, 47)]:
        pixel = rgb[1 + 4 * i + 2, 1 + 4 * j + 2]          # 192 // 48 = 4 px per cell
        assert (pixel[0] == 255) == (cells[i, j] > 0) and (pixel[2] == 255) == (cells[i, j] < 0)
    # one colour mapping for both views: the layer view's SVG cells have the same colours
    fills = re.findall(r'fill="rgb\((\d+),(\d+),(\d+)\)"', heat_map(a))
    assert np.array_equal(np.array(fills, dtype=int).reshape(48, 48, 3),
                          thumbnails.heat_colours(cells))
    # a vector is one strip, not a hairline; nan is grey
    strip = decode_png(thumbnails.thumbnail(np.r_[np.arange(99.0), np.nan]))
    assert strip.shape[0] >= 16 + 2 and tuple(strip[5, -3]) == thumbnails.GREY


def test_small_arrays_and_class_labels_keep_their_plain_labels_and_get_no_picture():
    a = engine.Tensor(np.array([[1.0, -2.0, 3.0], [0.5, 0.0, -1.0]]), requires_grad=True,
                      name="a")
    g = draw((a * a).sum(), max_elements=6)
    assert g.images == {} and "<TABLE" not in g.source and "‖" not in g.source
    lines = ["a", "(2, 3) float64", *labels.labelled("value", a.data, 6),
             *labels.labelled("grad", 2 * a.data, 6)]
    assert f"\tt0 [label={graphviz.quoting.quote(dot_label(lines))} " in g.source
    # class labels (integers, few values): counts, no heat map; the big logits get one
    logits = engine.Tensor(np.random.default_rng(2).standard_normal((20, 3)), requires_grad=True)
    y = np.array([0, 1, 2, 1] * 5)
    source = draw(nn.CrossEntropyLoss()(logits, y)).source
    target = re.search(r'^\s*t1 \[label=(.*)$', source, re.M).group(1)
    assert target.startswith('"t1\\n(20,) int64\\nvalue counts 0: 5, 1: 10, 2: 5"')
    assert source.count("<IMG") == 2                   # logits: value and gradient


@needs_dot
@pytest.mark.parametrize("format, magic", [("png", b"\x89PNG\r\n\x1a\n"), ("pdf", b"%PDF-")])
def test_png_and_pdf_draw_the_thumbnails_and_leave_no_temporary_files(tmp_path, monkeypatch,
                                                                         format, magic):
    made: list[str] = []
    real = tempfile.TemporaryDirectory

    def recording(*args, **kwargs):
        d = real(*args, **kwargs)
        made.append(d.name)
        return d

    monkeypatch.setattr(rendering.tempfile, "TemporaryDirectory", recording)
    W = engine.Tensor(weight_30x20(), requires_grad=True, name="W")
    g = draw(W.tanh().sum())
    path = render(g, tmp_path / f"x.{format}")
    assert path.read_bytes().startswith(magic)
    assert len(made) == 1 and not Path(made[0]).exists()
    assert set(g.images) == {n for n in re.findall(r'SRC="([^"]+)"', g.source)}


@needs_dot
def test_dot_text_gets_its_thumbnails_beside_it_and_renders_later(tmp_path):
    """Graphviz reads <IMG SRC> from files: a .dot written without them failed later in
    `dot -Tsvg graph.dot` ("No or improper image file")."""
    W = engine.Tensor(weight_30x20(), requires_grad=True, name="W")
    g = draw(W.tanh().sum())
    path = render(g, tmp_path / "graph.dot")
    assert path.read_text(encoding="utf-8") == g.source
    for name, png in g.images.items():
        assert (tmp_path / name).read_bytes() == png
    done = subprocess.run(["dot", "-Tsvg", "graph.dot"], cwd=tmp_path, capture_output=True)
    assert done.returncode == 0, done.stderr
    assert b"<image" in done.stdout


def fan_out_loss():
    """W (30x20) feeds two ops, so its gradient is summed over two backward steps."""
    W = engine.Tensor(weight_30x20(), requires_grad=True, name="W")
    return W, (W.tanh() + W * 3.0).sum()


def node_specs(text: str, nid: str) -> list[dict]:
    data = json.loads(re.search(r'<script type="application/json" class="hg-data">(.*?)</script>',
                                text, re.S).group(1))
    return [frame["nodes"][nid] for frame in data]


@needs_dot
def test_the_html_player_embeds_the_thumbnails_and_swaps_the_gradients_per_step(tmp_path):
    model = nn.MLP([2, 16, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((12, 2)).astype(np.float32)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(x)), np.array([0, 1] * 6))
    text = save_backward_html(loss, tmp_path / "mlp.html", model=model).read_text()
    assert "data:image/png;base64," in text and not re.search(r'href="(?!data:)', text)
    assert "hg-heat-" not in text and tempfile.gettempdir() not in text

    _, fan = fan_out_loss()
    text = save_backward_html(fan, tmp_path / "fan.html").read_text()
    specs = node_specs(text, "n_t0")
    assert specs[0]["images"] == [None, ""]            # step 0: value shown, no gradient yet
    assert specs[-1]["images"] == [None, None]         # the end: the layout's own pictures
    partial = [s for s in specs if any(line.startswith("grad so far") for line in s["lines"])]
    assert len(partial) == 1 and partial[0]["images"][1].startswith("data:image/png;base64,")
    # without JavaScript the page shows step 1: its gradient picture hidden
    svg = text[text.index("<svg"):text.index("</svg>")]
    box = re.search(r'<g id="n_t0" class="node">(.*?)</g>', svg, re.S).group(1)
    images = re.findall(r"<image [^>]*>", box)
    assert len(images) == 2 and "display: none" not in images[0] and "display: none" in images[1]


@needs_dot
def test_the_player_in_a_browser_hides_shows_and_swaps_the_gradient_picture(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    _, fan = fan_out_loss()
    page = save_backward_html(fan, tmp_path / "fan.html")
    specs = node_specs(page.read_text(), "n_t0")
    browser.get(page.as_uri())
    player = browser.find_element(By.CSS_SELECTOR, ".hg-player")
    read = ('var im = document.getElementById("n_t0").querySelectorAll("image");'
            'return [].map.call(im, function (e) { return [getComputedStyle(e).display, '
            'e.getAttribute("xlink:href")]; });')
    first = browser.execute_script(read)
    layout_grad = first[1][1] if first[1][0] == "none" else None
    assert first[1][0] == "none" and first[0][0] != "none"
    for k in range(1, len(specs)):
        player.send_keys(Keys.ARROW_RIGHT)
        (value_display, _), (display, href) = browser.execute_script(read)
        want = specs[k]["images"][1]
        assert value_display != "none"
        assert (display == "none") == (want == ""), k
        if want:
            assert href == want, k                     # the gradient summed so far
        elif want is None:
            assert href == layout_grad, k              # back to the complete gradient


@needs_dot
def test_per_step_exports_keep_the_thumbnails_and_the_layout(tmp_path):
    _, fan = fan_out_loss()
    svgs = [p.read_text() for p in save_backward_steps(fan, tmp_path / "svg")]
    boxes = [re.search(r'<g id="n_t0" class="node">(.*?)</g>', s, re.S).group(1) for s in svgs]
    counts = [len(DATA_URI.findall(box)) for box in boxes]
    assert counts[0] == 1 and counts[-1] == 2          # value from the start, gradient at the end
    assert all(not re.search(r'href="(?!data:)', s) for s in svgs)
    pngs = save_backward_steps(fan, tmp_path / "png", format="png")
    sizes = {struct.unpack(">II", p.read_bytes()[16:24]) for p in pngs}
    assert len(sizes) == 1                             # one layout: every frame the same size
