"""Presentation mode of both players (op level and layer level): readable from the back of
a lecture hall, driven by a clicker, kept on the running op, in a light or dark theme, and
showing step 1 without JavaScript. The browser tests measure a real headless Chromium at
the two screen sizes of the issue (1366×768 and 1920×1080), one browser for the module."""
from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import backward_playback, derivation, labels, save_backward_html
from handgrad.nn.cli_args import UsageError
from handgrad.nn.draw_command import add_draw_arguments, draw_command

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")
X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5]], dtype=np.float32)
Y = np.array([0, 1, 1, 0, 1])
SIZES = {(1366, 768): 18, (1920, 1080): 24}      # screen -> smallest text allowed, CSS px


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="handgrad draw")
    add_draw_arguments(parser)
    return parser.parse_args(argv)


def small_loss():
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    return model, nn.CrossEntropyLoss()(model(engine.Tensor(X)), Y)


# --- without a browser ---------------------------------------------------------------------

def test_present_and_theme_go_into_the_page_and_bad_values_are_refused(tmp_path):
    model, loss = small_loss()
    plain = save_backward_html(loss, tmp_path / "a.html", level="layer", model=model).read_text()
    assert 'data-present' not in plain and 'data-theme="light"' in plain
    page = save_backward_html(loss, tmp_path / "b.html", level="layer", model=model,
                              present=True, theme="dark").read_text()
    assert 'data-present="1"' in page and 'data-theme="dark"' in page
    assert "background: #0d1117" in page                  # the page itself is dark too
    assert 'class="hg-present-button"' in plain and 'class="hg-theme"' in plain
    with pytest.raises(ValueError, match="theme must be one of .*'light', 'dark'.*got 'blue'"):
        backward_playback(loss, level="layer", theme="blue")
    with pytest.raises(ValueError, match="present must be True or False, got 'yes'"):
        backward_playback(loss, level="layer", present="yes")


def test_the_cli_flag_writes_a_presenting_page_and_needs_html(tmp_path, capsys):
    page = tmp_path / "bp.html"
    assert draw_command(parse(["--html", "--present", "--level", "layer", "--out", str(page)])) == 0
    assert 'data-present="1"' in page.read_text()
    with pytest.raises(UsageError, match="--present .* add --html"):
        draw_command(parse(["--present", "--out", str(tmp_path / "g.svg")]))


def test_without_javascript_the_layer_page_shows_step_one_and_its_caption(tmp_path):
    model, loss = small_loss()
    text = save_backward_html(loss, tmp_path / "l.html", level="layer", model=model,
                              present=True).read_text()
    frames = re.findall(r'<div class="hg-frame"[^>]*>', text)
    assert len(frames) == 4 and "hidden" not in frames[0]
    assert all(f.endswith(" hidden>") for f in frames[1:])
    assert '<div class="hg-caption">layer 2: BP1 (output delta)</div>' in text


@needs_dot
def test_without_javascript_the_op_page_shows_step_one_not_the_last(tmp_path):
    model, loss = small_loss()
    text = save_backward_html(loss, tmp_path / "o.html", model=model).read_text()
    assert '<div class="hg-caption">step 0/4: forward done, L = ' in text   # the first frame
    loss_box = re.search(r'<g id="n_op3" class="node">(.*?)</g>', text, re.S).group(1)
    assert 'fill="#ffc933"' not in loss_box               # step 0: no rule has run yet
    root = re.search(r'<g id="n_t9" class="node">(.*?)</g>', text, re.S).group(1)
    assert ">grad 1<" in root                             # only ∂L/∂L = 1 is in place
    first_op = re.search(r'<g id="n_op0" class="node">(.*?)</g>', text, re.S).group(1)
    assert 'fill="#ffc933"' not in first_op and 'fill="#e9eef7"' not in first_op
    weight = re.search(r'<g id="n_t1" class="node">(.*?)</g>', text, re.S).group(1)
    assert "grad" not in weight                           # no gradient has arrived yet
    assert text.count("<svg") == 1


def test_long_vectors_wrap_and_class_labels_show_counts():
    lines = labels.array_lines(np.arange(10.0), 12)
    assert lines == ["[0, 1, 2, 3, 4, 5, 6, 7,", " 8, 9]"]
    assert labels.array_lines(np.array([2, 0, 1, 1, 0, 1, 1]), 6) == ["counts 0: 2, 1: 4, 2: 1"]
    assert labels.array_lines(np.arange(3.0), 6) == ["[0, 1, 2]"]       # short: one line


def test_big_layer_matrices_are_heat_maps_with_shape_and_norm_and_targets_show_counts():
    model = nn.MLP([2, 16, 2], seed=0)
    x = np.random.default_rng(0).standard_normal((12, 2)).astype(np.float32)
    loss = nn.CrossEntropyLoss()(model(engine.Tensor(x)), np.array([0, 1] * 5 + [1, 1]))
    slides = backward_playback(loss, level="layer", model=model, max_elements=20).frames
    assert "class counts 0: 5, 1: 7" in slides[0][1]          # y, not a mean of class ids
    norm = np.linalg.norm(derivation(loss)[0]["gW"])
    bp34 = slides[1][1]
    assert bp34.count('class="hg-heat"') == 3 and "(16, 2)" in bp34   # a¹ᵀ, δ², ∂L/∂W²
    assert f"‖∂L/∂W² (layers.2.weight)‖ = {labels.number(norm)}" in bp34


# --- in a real browser ---------------------------------------------------------------------

MEASURE = """
var root = arguments[0], least = null, where = null, all = root.querySelectorAll("*");
for (var i = 0; i < all.length; i++) {
  var el = all[i], own = "";
  for (var c = el.firstChild; c; c = c.nextSibling) { if (c.nodeType === 3) { own += c.nodeValue; } }
  if (!/[A-Za-z0-9]/.test(own)) { continue; }
  var r = el.getBoundingClientRect(), cs = getComputedStyle(el);
  if (r.width === 0 || r.height === 0 || cs.visibility === "hidden") { continue; }
  if (r.right <= 0 || r.bottom <= 0 || r.left >= innerWidth || r.top >= innerHeight) { continue; }
  var k = 1, shown = true;
  for (var a = el; a; a = a.parentElement) {
    var s = getComputedStyle(a);
    if (s.opacity === "0") { shown = false; }
    if (!(el instanceof SVGElement) && s.transform && s.transform !== "none") {
      var m = s.transform.slice(7, -1).split(",");
      k *= Math.hypot(parseFloat(m[0]), parseFloat(m[1]));
    }
  }
  if (!shown) { continue; }
  if (el instanceof SVGGraphicsElement) { k = r.width / el.getBBox().width; }
  var px = parseFloat(cs.fontSize) * k;
  if (least === null || px < least) { least = px; where = own.trim().slice(0, 40); }
}
return [least, where];
"""
NOW_BOX = """
var root = arguments[0], d = JSON.parse(root.querySelector(".hg-data").textContent);
var step = parseInt(root.dataset.step) - 1, spec = d[step], out = [];
for (var id in spec.nodes) { if (spec.nodes[id].now) { out.push(id); } }
var r = document.getElementById(out[0]).getBoundingClientRect();
return [out.length, r.left, r.top, r.right, r.bottom];
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The default MLP (``handgrad draw`` defaults) at both levels, presenting and not."""
    from handgrad.nn import cli
    folder = tmp_path_factory.mktemp("pages")
    out = {}
    for name, extra in {"op": [], "layer": ["--level", "layer"]}.items():
        for present in (True, False):
            path = folder / f"{name}{'-present' if present else ''}.html"
            flags = ["--present"] if present else []
            assert cli.main(["draw", "--html", "--out", str(path), *extra, *flags]) == 0
            out[name + ("-present" if present else "")] = path
    return out


def open_page(driver, path: Path, size: tuple[int, int]):
    """The page on a screen of ``size`` CSS px (the viewport a full-screen player gets)."""
    from selenium.webdriver.common.by import By
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False,
        "screenWidth": width, "screenHeight": height})
    driver.get(path.as_uri())
    assert driver.execute_script("return [innerWidth, innerHeight]") == [width, height]
    return driver.find_element(By.CSS_SELECTOR, ".hg-player")


def step_of(player) -> int:
    return int(player.get_attribute("data-step"))


@pytest.mark.parametrize("size", list(SIZES), ids=["1366x768", "1920x1080"])
@pytest.mark.parametrize("level", ["op", "layer"])
def test_presenting_every_step_has_big_text_and_the_running_op_in_view(browser, pages, level,
                                                                         size, capsys):
    from selenium.webdriver.common.keys import Keys
    player = open_page(browser, pages[f"{level}-present"], size)
    rect = browser.execute_script("var r = arguments[0].getBoundingClientRect(); "
                                  "return [r.left, r.top, r.width, r.height]", player)
    assert rect == [0, 0, size[0], size[1]]                    # it covers the screen
    count = len(player.find_elements("css selector", ".hg-frame"))
    smallest = []
    for k in range(1, count + 1):
        assert step_of(player) == k
        least, where = browser.execute_script(MEASURE, player)
        smallest.append(least)
        assert least >= SIZES[size], f"step {k}: {where!r} is {least:.1f} px"
        if level == "op":
            found, left, top, right, bottom = browser.execute_script(NOW_BOX, player)
            assert found == 1
            assert 0 <= left and right <= size[0] and 0 <= top and bottom <= size[1], \
                f"step {k}: the running op at {left, top, right, bottom}"
        else:                  # a slide fits: no scrolling needed at the readable size
            width, client = browser.execute_script(
                "var v = arguments[0].querySelector('.hg-view'); "
                "return [v.scrollWidth, v.clientWidth]", player)
            assert width <= client
        player.send_keys(Keys.PAGE_DOWN)
    with capsys.disabled():
        print(f"\n  smallest text, {level} player at {size[0]}x{size[1]}: {min(smallest):.2f} px")


@pytest.fixture(scope="module")
def readme_pages(tmp_path_factory) -> dict[str, Path]:
    """The README's two examples: MLP([2, 3, 2]) on two XOR rows (op level) and on the
    four corners (layer level), saved in presentation mode."""
    folder = tmp_path_factory.mktemp("readme")
    model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
    x = engine.Tensor(np.array([[0.0, 1.0], [1.0, 1.0]], dtype=np.float32), name="x")
    op_loss = nn.CrossEntropyLoss()(model(x), np.array([1, 0]))
    x4 = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    layer_loss = nn.CrossEntropyLoss()(model(x4), np.array([0, 1, 1, 0]))
    return {"op": save_backward_html(op_loss, folder / "op.html", model=model, present=True),
            "layer": save_backward_html(layer_loss, folder / "layer.html", model=model,
                                        level="layer", present=True)}


def test_a_slide_too_big_for_readable_text_shrinks_rather_than_run_off_the_screen(browser,
                                                                                  tmp_path):
    """Two hidden layers, a batch of 4, at 1024x768: the BP2 slide did not fit even at the
    smallest readable text, and its last matrix and the numpy check line ran below the
    screen (a clicker cannot scroll). It now takes smaller text, never below 60%."""
    from selenium.webdriver.common.keys import Keys
    model = nn.MLP([2, 3, 4, 3], activation="tanh", seed=0)
    x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 1, 2, 1]))
    page = save_backward_html(loss, tmp_path / "bp.html", model=model, level="layer", present=True)
    player = open_page(browser, page, (1024, 768))
    readable = 1.02 * 18
    for k in range(len(player.find_elements("css selector", ".hg-frame"))):
        scroll, client = browser.execute_script(
            "var v = arguments[0].querySelector('.hg-view'); "
            "return [[v.scrollWidth, v.scrollHeight], [v.clientWidth, v.clientHeight]]", player)
        assert scroll[0] <= client[0] and scroll[1] <= client[1], f"slide {k + 1}: {scroll} in {client}"
        assert float(player.get_attribute("data-text-px")) >= 0.6 * readable - 0.01
        player.send_keys(Keys.PAGE_DOWN)


def test_step_one_looks_the_same_after_going_to_the_end_and_back(browser, tmp_path):
    """Op level, presenting at 1366x768: after End then Home (or PageDown then PageUp to
    the first step) step 1 was panned 188 px away from where it was at load, the loss box
    under the control bar."""
    from selenium.webdriver.common.keys import Keys
    model = nn.MLP([2, 3, 4, 3], activation="tanh", seed=0)
    x = engine.Tensor(np.random.default_rng(1).standard_normal((4, 2)).astype(np.float32))
    loss = nn.CrossEntropyLoss()(model(x), np.array([0, 2, 1, 1]))
    page = save_backward_html(loss, tmp_path / "op.html", model=model, present=True)
    player = open_page(browser, page, (1366, 768))
    where = "return arguments[0].querySelector('.hg-stage').style.transform"
    at_load = browser.execute_script(where, player)
    frames = len(player.find_elements("css selector", ".hg-frame"))
    for keys in ([Keys.END, Keys.HOME], [Keys.PAGE_DOWN] * frames + [Keys.PAGE_UP] * frames):
        for key in keys:
            player.send_keys(key)
        assert step_of(player) == 1 and browser.execute_script(where, player) == at_load


@pytest.mark.parametrize("size", list(SIZES), ids=["1366x768", "1920x1080"])
def test_presenting_the_readme_examples_has_big_text(browser, readme_pages, size):
    from selenium.webdriver.common.keys import Keys
    for level, page in readme_pages.items():
        player = open_page(browser, page, size)
        for k in range(len(player.find_elements("css selector", ".hg-frame"))):
            least, where = browser.execute_script(MEASURE, player)
            assert least >= SIZES[size], f"{level} step {k + 1}: {where!r} is {least:.1f} px"
            player.send_keys(Keys.SPACE)


def test_clicker_keys_advance_and_go_back(browser, pages):
    from selenium.webdriver.common.keys import Keys
    player = open_page(browser, pages["op-present"], (1366, 768))
    forward = [Keys.PAGE_DOWN, Keys.SPACE, Keys.ARROW_RIGHT, Keys.ARROW_DOWN]
    back = [Keys.PAGE_UP, Keys.SHIFT + Keys.SPACE, Keys.ARROW_LEFT, Keys.ARROW_UP]
    for go, undo in zip(forward, back):
        assert step_of(player) == 1
        player.send_keys(go)
        assert step_of(player) == 2, repr(go)
        player.send_keys(undo)
        assert step_of(player) == 1, repr(undo)
    player.send_keys(Keys.END)               # step 0, four rules, the closing frame
    assert step_of(player) == 6
    assert player.find_element("css selector", ".hg-caption").text.startswith("done: all 4 rules")
    player.send_keys(Keys.HOME)
    assert step_of(player) == 1


def test_plus_enlarges_the_equation_slides_without_cutting_them_off(browser, pages):
    from selenium.webdriver.common.keys import Keys
    for name in ("layer-present", "layer"):
        player = open_page(browser, pages[name], (1366, 768))
        cell = "return parseFloat(getComputedStyle(arguments[0].querySelector(" \
               "'.hg-frame:not([hidden]) td')).fontSize)"
        fits = "var v = arguments[0].querySelector('.hg-view'); return v.scrollWidth <= v.clientWidth"
        before = browser.execute_script(cell, player)
        player.send_keys("+")
        player.send_keys("+")
        after = browser.execute_script(cell, player)
        assert after > before * 1.2, name
        assert browser.execute_script(fits, player), name
        for _ in range(6):                        # as large as it goes: still nothing cut off
            player.send_keys("+")
        assert browser.execute_script(fits, player), name
        player.send_keys(Keys.PAGE_DOWN)                   # the next slide is fitted too
        assert browser.execute_script(fits, player), name
    player = open_page(browser, pages["layer"], (1366, 768))
    before = browser.execute_script(cell, player)
    player.send_keys("-")
    assert browser.execute_script(cell, player) == pytest.approx(before * 0.8)


def test_the_theme_button_switches_the_background_and_present_button_enters(browser, pages):
    from selenium.webdriver.common.by import By
    player = open_page(browser, pages["op"], (1366, 768))
    background = "return getComputedStyle(arguments[0]).backgroundColor"
    assert browser.execute_script(background, player) == "rgb(255, 255, 255)"   # its own
    player.find_element(By.CSS_SELECTOR, ".hg-theme").click()
    assert player.get_attribute("data-theme") == "dark"
    assert browser.execute_script(background, player) == "rgb(13, 17, 23)"
    player.find_element(By.CSS_SELECTOR, ".hg-theme").click()
    assert browser.execute_script(background, player) == "rgb(255, 255, 255)"
    assert "hg-present" not in player.get_attribute("class")
    player.find_element(By.CSS_SELECTOR, ".hg-present-button").click()   # fullscreen or not
    assert "hg-present" in player.get_attribute("class")
    least, where = browser.execute_script(MEASURE, player)
    assert least >= 18, where
    player.find_element(By.CSS_SELECTOR, ".hg-present-button").click()
    assert "hg-present" not in player.get_attribute("class")


def test_printing_the_layer_player_gives_one_page_per_slide(browser, pages):
    """A print stylesheet makes the slide player a handout (Chrome's "save as PDF")."""
    import base64
    import re

    from selenium.webdriver.common.print_page_options import PrintOptions
    player = open_page(browser, pages["layer"], (1366, 768))
    slides = int(player.find_element("css selector", ".hg-counter").text.split("/")[1])
    options = PrintOptions()
    options.orientation = "landscape"
    pdf = base64.b64decode(browser.print_page(options))
    pages_printed = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
    assert pages_printed == slides > 1


def test_printing_the_op_player_gives_one_page_per_step_with_the_whole_picture(browser, pages):
    """Printed, a picture player shows the step on screen: its caption and the whole
    picture, unzoomed and shrunk to fit, on one page (it was split over three, cut off)."""
    import base64

    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.print_page_options import PrintOptions
    player = open_page(browser, pages["op"], (1366, 768))
    for k in range(1, len(player.find_elements("css selector", ".hg-frame")) + 1):
        for orientation in ("landscape", "portrait"):
            options = PrintOptions()
            options.orientation = orientation
            pdf = base64.b64decode(browser.print_page(options))
            printed = len(re.findall(rb"/Type\s*/Page(?!s)", pdf))
            assert printed == 1, f"step {k}, {orientation}: {printed} pages"
        player.send_keys(Keys.PAGE_DOWN)
    for width, height in ((720, 1000), (980, 740)):   # a page's printable area, CSS px
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
        try:
            browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
            left, top, right, bottom, page_width = browser.execute_script(
                "var r = arguments[0].querySelector('.hg-stage > svg').getBoundingClientRect();"
                " return [r.left, r.top, r.right, r.bottom,"
                " document.documentElement.scrollWidth]", player)
        finally:
            browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})
        assert 0 <= left and right <= width and page_width <= width, (width, left, right)
        assert 0 <= top and bottom <= height, (height, top, bottom)

@pytest.fixture(scope="module")
def heat_map_pages(tmp_path_factory) -> dict[str, Path]:
    """Layer slides holding heat maps (layers of more than 40 numbers: --hidden 16,16)."""
    from handgrad.nn import cli
    folder = tmp_path_factory.mktemp("heat")
    out = {}
    for name, flags in {"layer": [], "layer-present": ["--present"]}.items():
        out[name] = folder / f"{name}.html"
        assert cli.main(["draw", "--html", "--level", "layer", "--hidden", "16,16",
                         "--out", str(out[name]), *flags]) == 0
    return out


def test_slides_with_heat_maps_are_laid_out_as_slides_not_as_pictures(browser, heat_map_pages):
    """A heat map (an <svg> inside a slide) is not the frame's picture: the slide keeps the
    slide layout (reflowed, never cut off, printed one per page), on the page and presenting."""
    import base64

    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.common.print_page_options import PrintOptions
    state = """var p = arguments[0], v = p.querySelector('.hg-view'),
        f = p.querySelector('.hg-frame:not([hidden])');
        return [p.classList.contains('hg-slides'), f.querySelectorAll('svg.hg-heat').length,
                getComputedStyle(v).overflowY, v.scrollWidth <= v.clientWidth,
                f.getBoundingClientRect().height <= v.clientHeight]"""
    heat_slides = 0
    for name, page in heat_map_pages.items():
        player = open_page(browser, page, (1366, 768))
        for k in range(1, len(player.find_elements("css selector", ".hg-frame")) + 1):
            slide, heat_maps, overflow, wide, high = browser.execute_script(state, player)
            heat_slides += heat_maps > 0
            assert slide, f"{name} slide {k} ({heat_maps} heat maps) is laid out as a picture"
            assert overflow == "auto", f"{name} slide {k}: what does not fit is cut off"
            if name == "layer":     # the page grows with the slide: all of it shows
                assert wide and high, f"{name} slide {k} does not show whole"
            else:                   # the readable size, not blown up to the heat map's
                least, where = browser.execute_script(MEASURE, player)
                assert 0.6 * 18 <= least <= 1.6 * 18 * 1.02 + 0.01, f"slide {k}: {where!r} {least:.1f} px"
                # below it only for a slide too big at the readable size, which then fits
                assert least >= 18 or (wide and high), f"slide {k}: {least:.1f} px, cut off"
            player.send_keys(Keys.PAGE_DOWN)
    assert heat_slides >= 4                          # the case of the bug is drawn
    player = open_page(browser, heat_map_pages["layer"], (1366, 768))
    slides = len(player.find_elements("css selector", ".hg-frame"))
    player.send_keys(Keys.END)                       # printed from a slide with heat maps
    options = PrintOptions()
    options.orientation = "landscape"
    pdf = base64.b64decode(browser.print_page(options))
    assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == slides


def test_names_that_look_like_html_show_literally_and_the_player_still_runs(browser, tmp_path):
    """Names go into the player's JSON inside <script type="application/json">: "<!--<script>"
    there used to swallow the player's own script (nothing moved)."""
    import json

    from selenium.webdriver.common.by import By
    names = ["<!--<script>", "w</script>&amp;"]
    x, w = (engine.Tensor(np.array([1.0, 2.0]), requires_grad=True, name=n) for n in names)
    loss = (x * w).sum()
    restyle = json.loads(json.dumps(backward_playback(loss).restyle))
    player = open_page(browser, save_backward_html(loss, tmp_path / "names.html"), (1366, 768))
    player.find_element(By.CSS_SELECTOR, ".hg-next").click()
    player.find_element(By.CSS_SELECTOR, ".hg-next").click()
    assert player.get_attribute("data-ready") == "1"
    assert player.find_element(By.CSS_SELECTOR, ".hg-counter").text == "3 / 4"
    assert browser.execute_script("return JSON.parse(arguments[0].querySelector('.hg-data')"
                                  ".textContent)", player) == restyle
    texts = browser.execute_script("return Array.from(arguments[0].querySelectorAll("
                                   "'.hg-stage svg text'), t => t.textContent)", player)
    caption = player.find_element(By.CSS_SELECTOR, ".hg-caption").text
    for name in names:
        assert name in texts, texts
        assert f"∂L/∂{name} = " in caption, caption
