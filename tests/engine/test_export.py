"""Exports for slides and handouts: every backward step from ONE layout (nothing moves
between frames, measured on the boxes' coordinates), a PDF handout with a page per step,
the 16:9 slide preset with text of at least 24 px at 1920x1080, and the default picture
showing XOR's data in full."""
from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import graphviz
import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.viz import backward_frames, save_backward_pdf, save_backward_steps
from handgrad.engine.viz.export import PdfMergeError, merge_pdfs, page_count
from handgrad.engine.viz.playback import op_layout
from handgrad.engine.viz.rendering import layout_json, pipe, to_svg
from handgrad.nn import cli

pytestmark = pytest.mark.skipif(shutil.which("dot") is None or shutil.which("neato") is None,
                                reason="Graphviz 'dot' and 'neato' not installed")
XOR = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)


def xor_loss():
    model = nn.MLP([2, 4, 2], activation="tanh", seed=0)
    return nn.CrossEntropyLoss()(model(engine.Tensor(XOR, name="x")), np.array([0, 1, 1, 0])), model


def box_places(svg: str) -> dict[str, tuple[float, ...]]:
    """Each box (SVG group id n_...) -> the coordinates of its outline."""
    places = {}
    for nid, body in re.findall(r'<g id="(n_[^"]+)" class="node">(.*?)</g>', svg, re.DOTALL):
        outline = re.search(r'points="([^"]+)"|cx="([^"]+)" cy="([^"]+)"| d="([^"]+)"', body)
        assert outline is not None, nid
        places[nid] = tuple(float(v) for v in re.findall(r"-?[\d.]+", outline.group(0)))
    return places


def displacement(frames: list[dict[str, tuple[float, ...]]]) -> float:
    """The largest move of any box coordinate between the first frame and another, pt."""
    return max(abs(a - b) for f in frames[1:] for nid in frames[0]
               for a, b in zip(frames[0][nid], f[nid]))


def test_every_exported_step_has_the_one_layout(tmp_path):
    loss, model = xor_loss()
    paths = save_backward_steps(loss, tmp_path / "frames", model=model)
    assert [p.name for p in paths] == [f"step-{k:02d}.svg" for k in range(len(paths))]
    frames = [box_places(p.read_text(encoding="utf-8")) for p in paths]
    assert len(frames) >= 4 and len(frames[0]) >= 10
    assert all(f.keys() == frames[0].keys() for f in frames)
    assert displacement(frames) == 0.0                 # measured: 0 pt, every box, every step
    # drawn one by one (backward_frames lays each frame out anew) the boxes jump
    loss, model = xor_loss()
    apart = [box_places(to_svg(g)) for g in backward_frames(loss, model=model)]
    common = set.intersection(*(set(f) for f in apart))
    assert displacement([{k: f[k] for k in common} for f in apart]) > 50


def test_the_exported_steps_show_what_the_player_shows(tmp_path):
    loss, model = xor_loss()
    paths = save_backward_steps(loss, tmp_path, model=model)
    def running(svg: str) -> list[str]:                        # boxes in the "runs now" colour
        return [nid for nid, body in re.findall(r'<g id="(n_[^"]+)" class="node">(.*?)</g>',
                                                svg, re.DOTALL) if 'fill="#ffc933"' in body]
    first, current = paths[0].read_text(encoding="utf-8"), paths[1].read_text(encoding="utf-8")
    assert running(first) == [] and len(running(current)) == 1   # step 1: the loss's rule
    assert "grad 1" in paths[-1].read_text(encoding="utf-8")
    pngs = save_backward_steps(loss, tmp_path / "png", format="png", model=model)
    sizes = {struct.unpack(">II", p.read_bytes()[16:24]) for p in pngs}
    assert len(sizes) == 1                                     # every PNG the same size
    with pytest.raises(ValueError, match="format must be one of"):
        save_backward_steps(loss, tmp_path, format="jpg")


def test_the_handout_has_one_page_per_step_of_one_size(tmp_path):
    loss, model = xor_loss()
    path = save_backward_pdf(loss, tmp_path / "handout.pdf", model=model)
    pdf = path.read_bytes()
    steps = len(save_backward_steps(loss, tmp_path / "s", model=model))
    assert page_count(pdf) == steps
    boxes = re.findall(rb"/MediaBox\s*\[([^\]]+)\]", pdf)
    assert len(boxes) == steps and len(set(b.split().__str__() for b in boxes)) == 1
    assert pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") >= steps
    with pytest.raises(ValueError, match="must end in .pdf"):
        save_backward_pdf(loss, tmp_path / "handout.png")


def test_merge_pdfs_refuses_what_it_cannot_read():
    with pytest.raises(PdfMergeError, match="not a PDF"):
        merge_pdfs([b"hello"])
    with pytest.raises(ValueError, match="no PDFs"):
        merge_pdfs([])


def svg_size(svg: str) -> tuple[float, float]:
    w, h = re.search(r'viewBox="[\d.-]+ [\d.-]+ ([\d.]+) ([\d.]+)"', svg).groups()
    return float(w), float(h)


def test_the_slide_preset_is_16_9_with_24_px_text(tmp_path, capsys):
    png, svg = tmp_path / "slide.png", tmp_path / "slide.svg"
    assert cli.main(["draw", "--preset", "slide", "--out", str(png)]) == 0
    assert struct.unpack(">II", png.read_bytes()[16:24]) == (1920, 1080)
    assert cli.main(["draw", "--preset", "slide", "--out", str(svg)]) == 0
    text = svg.read_text(encoding="utf-8")
    w, h = svg_size(text)
    assert abs(w / h - 16 / 9) < 0.002                         # measured: 16:9
    smallest = min(float(f) for f in re.findall(r'font-size="([\d.]+)"', text))
    assert smallest * 1920 / w >= 24                           # measured: 25.8 px
    # what the README's old "for a slide" recipe gave: far from 16:9, small text
    old = tmp_path / "old.svg"
    assert cli.main(["draw", "--rankdir", "LR", "--font-size", "18", "--max-elements", "12",
                     "--out", str(old)]) == 0
    ow, oh = svg_size(old.read_text(encoding="utf-8"))
    assert ow / oh > 2.5 and 18 * min(1920 / ow, 1080 / oh) < 24


def test_the_default_picture_shows_the_xor_data_in_full(tmp_path, capsys):
    out = tmp_path / "graph.dot"
    assert cli.main(["draw", "--out", str(out)]) == 0
    source = out.read_text(encoding="utf-8")
    for row in ("[[0, 0]", "[0, 1]", "[1, 0]", "[1, 1]]"):     # x: the four corners
        assert row in source
    assert "p [[" in source and "y [[1, 0]" in source          # p and y printed, not summarised
    assert "value min 0  mean 0.5" not in source


def test_the_cli_exports_a_handout_and_every_step(tmp_path, capsys):
    page, pdf, steps = tmp_path / "page.html", tmp_path / "handout.pdf", tmp_path / "steps"
    assert cli.main(["draw", "--html", "--out", str(page), "--pdf", str(pdf),
                     "--steps", str(steps), "--steps-format", "png"]) == 0
    assert page.exists() and page_count(pdf.read_bytes()) == len(list(steps.glob("*.png"))) >= 4


def test_a_steps_directory_holds_exactly_this_runs_frames_and_the_cli_says_so(tmp_path, capsys):
    """--steps DIR overwrote step-00..05 without a word and left step-06..09 of an earlier,
    longer export (another network) in DIR; the command printed only DIR/step-00.svg.
    Now step files this run did not write are removed (only names of the exporter's own
    pattern), and the command says how many it wrote, where, and what it replaced."""
    frames = tmp_path / "frames"
    frames.mkdir()
    earlier = [f"step-{k:02d}.svg" for k in range(10)] + ["step-03.png", "step-100.pdf"]
    others = ["notes.txt", "step-1.svg", "step-00.svg.bak", "step-00.jpg", "my-step-00.svg"]
    for name in earlier + others:
        (frames / name).write_text("an earlier run")
    (frames / "step-11.svg").mkdir()                   # a directory is never a frame file
    page = tmp_path / "page.html"
    assert cli.main(["draw", "--html", "--out", str(page), "--steps", str(frames)]) == 0
    out = capsys.readouterr().out.splitlines()
    written = sorted(p.name for p in frames.iterdir() if p.name.startswith("step-")
                     and p.suffix == ".svg" and p.is_file() and p.name != "step-1.svg")
    assert written == [f"step-{k:02d}.svg" for k in range(6)]
    assert all((frames / n).read_text() != "an earlier run" for n in written)
    assert sorted(p.name for p in frames.iterdir()) == sorted(written + others + ["step-11.svg"])
    assert all((frames / n).read_text() == "an earlier run" for n in others)
    assert out == [f"{frames}: 6 step pictures, step-00.svg to step-05.svg (replaced 6 and "
                   f"removed 6 step pictures of an earlier export)", str(page)]
    loss, model = xor_loss()                           # the function, called directly
    paths = save_backward_steps(loss, frames, format="png", model=model)
    assert sorted(p.name for p in frames.iterdir()) == sorted(
        [p.name for p in paths] + others + ["step-11.svg"])


def test_exports_print_no_graphviz_warnings_and_keep_the_layout(tmp_path, capfd):
    """Every --pdf/--steps export printed 'Warning: No loadimage plugin for "png:json"' 11
    times: the layout pass sent the heat maps to dot's json renderer, which cannot load
    PNGs. The pass now leaves them out (each sits in a cell of fixed size, so every
    position is the same) and every other warning of dot still shows."""
    page = tmp_path / "a.html"
    assert cli.main(["draw", "--html", "--out", str(page), "--pdf", str(tmp_path / "h.pdf"),
                     "--steps", str(tmp_path / "fr")]) == 0
    assert cli.main(["draw", "--preset", "slide", "--dataset", "moons", "--batch", "64",
                     "--out", str(tmp_path / "s.png")]) == 0       # x (64, 2) as a heat map
    err = capfd.readouterr().err
    assert "Warning" not in err and "loadimage" not in err, err
    loss, model = xor_loss()
    layout, _ = op_layout(loss, model=model)
    assert layout.images                                # the layout has heat maps
    full = json.loads(pipe(layout, "json"))             # as dot lays them out with the PNGs
    capfd.readouterr()
    plain = layout_json(layout)

    def places(found):
        return ({o["name"]: [o.get(k) for k in ("pos", "width", "height", "bb", "lp")]
                 for o in found["objects"]},
                [(e.get("id"), e.get("pos"), e.get("lp")) for e in found.get("edges", [])],
                found["bb"])
    assert places(plain) == places(full)
    broken = graphviz.Digraph()
    broken.node("a", shape="no-such-shape")
    layout_json(broken)
    assert "unknown shape no-such-shape" in capfd.readouterr().err     # still shown


@pytest.mark.parametrize("args, message", [
    (["--pdf", "h.pdf"], "--pdf exports the steps of the op-level page: add --html"),
    (["--html", "--level", "layer", "--pdf", "h.pdf"], "add --html"),
    (["--html", "--pdf", "h.png"], "must name a .pdf file"),
    (["--html", "--preset", "slide"], "for the page use --present"),
    (["--preset", "slide", "--format", "dot"], "svg, png or pdf"),
])
def test_contradicting_export_options_are_refused(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["draw", *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(Path(tmp_path).iterdir())


@pytest.mark.parametrize("extra", ["l2 penalty", "mse on the same logits"])
def test_no_frame_has_more_lines_in_a_box_than_the_layout_keeps(extra, tmp_path):
    """A loss that is not the root (CE + an L2 penalty): frame 0 gave its box the line
    "g = the gradient the loss receives" that the last frame, which the layout is made
    from, did not have, and the export and the player cut the box's last line (y's last
    row) without a word. Every frame now has the last frame's lines."""
    rng = np.random.default_rng(0)
    model = nn.MLP([2, 3, 2], activation="tanh", seed=1)
    x = rng.normal(size=(2, 2)).astype(np.float32)
    out = model(x)
    loss = nn.CrossEntropyLoss()(out, np.array([0, 1]))
    loss = loss + (nn.l2_penalty(model, 1e-3) if extra == "l2 penalty"
                   else engine.mse(out, np.zeros((2, 2), np.float32)))
    _, frames = op_layout(loss, model=model)
    last = frames[-1]["nodes"]
    for k, frame in enumerate(frames):
        for box, spec in frame["nodes"].items():
            assert len(spec["lines"]) <= len(last[box]["lines"]), (k, box, spec["lines"])
    first = save_backward_steps(loss, tmp_path, format="svg", model=model)[0].read_text()
    assert "g = the gradient the loss receives" in first and "[0, 1]]" in first


def test_a_box_is_laid_out_as_wide_as_its_widest_line_in_any_frame():
    """A tensor used twice shows "grad so far [...]" while its gradient is partial, longer
    than the last frame's "grad [...]"; the one layout was made from the last frame, and
    the line ran 32 px out of its box (the word "grad" and the "]" hidden), in the player
    and the exported pictures alike."""
    x = engine.Tensor(np.array([1.5, -2.0, 0.5]), requires_grad=True, name="x")
    w = engine.Tensor(np.array([0.3, 0.7, -1.1]), requires_grad=True, name="w")
    h = engine.tanh(x * w)
    layout, frames = op_layout(engine.sum(h * x + h))
    partial = [line for frame in frames for line in frame["nodes"]["n_t0"]["lines"]
               if line.startswith("grad so far")]
    assert partial and "grad so far [0.4219" in layout.source      # the box is sized with it
