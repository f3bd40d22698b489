"""A slide player for frames of HTML (SVG pictures or equation slides), self-contained.

Each player is one ``<div>`` with its own id: any number of them can sit on one page (a
notebook with two outputs, a slide deck) and each works alone. The arrow keys move only
the player that has focus (click it or tab to it); the buttons always work. Pictures can
be zoomed (buttons, or the mouse wheel with Ctrl) and panned (drag) for big graphs. Each
frame's caption is shown once, above the picture.
"""
from __future__ import annotations

import html
import itertools
import json
from pathlib import Path
from typing import Any, Sequence

_ids = itertools.count()

STYLE = """<style>
.hg-player { font-family: sans-serif; color: #222; border: 1px solid #ccd; border-radius: 6px;
  padding: 0.6em 0.8em; margin: 0.8em 0; outline: none; }
.hg-player:focus { border-color: #4a72c2; box-shadow: 0 0 0 2px #c9d8f5; }
.hg-player nav { display: flex; gap: 0.6em; align-items: center; flex-wrap: wrap; }
.hg-player button { font-size: 15px; padding: 0.2em 0.8em; }
.hg-player .hg-caption { font-size: 17px; margin: 0.5em 0; min-height: 1.3em; }
.hg-player .hg-view { overflow: hidden; cursor: grab; border-top: 1px solid #eee; }
.hg-player .hg-stage { transform-origin: 0 0; }
.hg-player .hg-stage svg { display: block; max-width: none; }
.hg-player .hg-hint { font-size: 13px; color: #667; }
.hg-slide { font-size: 16px; line-height: 1.35; }
.hg-slide .hg-eq { font-size: 20px; margin: 0.3em 0 0.6em; font-family: serif; }
.hg-slide .hg-row { display: flex; gap: 1.2em; align-items: flex-start; flex-wrap: wrap; }
.hg-slide .hg-op { font-size: 22px; align-self: center; font-family: serif; }
.hg-slide table.hg-m { border-collapse: collapse; font-family: monospace; font-size: 15px;
  border-left: 2px solid #444; border-right: 2px solid #444; }
.hg-slide table.hg-m td { padding: 1px 6px; text-align: right; }
.hg-slide .hg-name { font-family: serif; font-size: 18px; text-align: center; margin-bottom: 2px; }
.hg-slide .hg-shape { font-size: 13px; color: #667; text-align: center; }
.hg-slide .hg-stack { display: flex; gap: 0.4em; margin: 0.4em 0 0.8em; flex-wrap: wrap; }
.hg-slide .hg-layer { border: 1px solid #99a; border-radius: 4px; padding: 2px 8px; color: #556; }
.hg-slide .hg-layer.hg-now { background: #ffc933; color: #222; border-color: #a77d00; }
.hg-slide .hg-check { font-size: 13px; color: #2e7d32; }
.hg-slide .hg-check.hg-differs { color: #c62828; font-weight: bold; }
</style>"""

SCRIPT = """<script>
(function () {
  var root = document.getElementById("{{ID}}");
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  var frames = root.querySelectorAll(".hg-frame");
  var caption = root.querySelector(".hg-caption"), counter = root.querySelector(".hg-counter");
  var prev = root.querySelector(".hg-prev"), next = root.querySelector(".hg-next");
  var view = root.querySelector(".hg-view"), stage = root.querySelector(".hg-stage");
  var current = 0, scale = 1, x = 0, y = 0, drag = null;
  function place() { stage.style.transform = "translate(" + x + "px," + y + "px) scale(" + scale + ")"; }
  function show(k) {
    current = Math.max(0, Math.min(frames.length - 1, k));
    for (var i = 0; i < frames.length; i++) { frames[i].hidden = i !== current; }
    if (restyle) { apply(current); }
    counter.textContent = "step " + (current + 1) + " / " + frames.length;
    caption.textContent = frames[current].dataset.caption;
    prev.disabled = current === 0;
    next.disabled = current === frames.length - 1;
    place(); resize();
  }
  var dataTag = root.querySelector(".hg-data");
  var restyle = dataTag ? JSON.parse(dataTag.textContent) : null;
  function find(id) { return root.querySelector('[id="' + id + '"]'); }
  function apply(k) {            // one layout, restyled: each box's lines and colours
    var d = restyle[k];
    for (var nid in d.nodes) {
      var g = find(nid), spec = d.nodes[nid];
      if (!g) { continue; }
      var texts = g.querySelectorAll("text");
      for (var i = 0; i < texts.length; i++) {
        texts[i].textContent = i < spec.lines.length ? spec.lines[i] : "";
        texts[i].setAttribute("fill", spec.font);
      }
      var shapes = g.querySelectorAll("polygon, ellipse, path");
      for (var j = 0; j < shapes.length; j++) {
        if (shapes[j].getAttribute("fill") !== "none") { shapes[j].setAttribute("fill", spec.fill); }
        shapes[j].setAttribute("stroke-width", spec.pen);
      }
    }
    for (var eid in d.edges) {
      var e = find(eid), es = d.edges[eid];
      if (!e) { continue; }
      var parts = e.querySelectorAll("path, polygon");
      for (var m = 0; m < parts.length; m++) {
        parts[m].setAttribute("stroke-width", es.pen);
        if (parts[m].tagName === "path") { parts[m].setAttribute("stroke-dasharray", es.dash); }
      }
    }
  }
  function svg() { return restyle ? stage.querySelector("svg") : frames[current].querySelector("svg"); }
  function natural() {           // the picture's size in px at scale 1
    var s = svg();
    if (!s) { return null; }
    var w = s.width.baseVal, h = s.height.baseVal;
    w.convertToSpecifiedUnits(SVGLength.SVG_LENGTHTYPE_PX);
    h.convertToSpecifiedUnits(SVGLength.SVG_LENGTHTYPE_PX);
    return [w.valueInSpecifiedUnits, h.valueInSpecifiedUnits, s.viewBox.baseVal.width];
  }
  function smallest() {          // the smallest text of the picture, in px at scale 1
    var s = svg(), n = natural(), texts = s ? s.querySelectorAll("text") : [], least = null;
    for (var i = 0; i < texts.length; i++) {
      var f = parseFloat(texts[i].getAttribute("font-size"));
      if (f && (least === null || f < least)) { least = f; }
    }
    return least === null ? null : least * n[0] / n[2];
  }
  function textPx() { var p = smallest(); return p === null ? null : p * scale; }
  function fit() {               // fit the width, but keep every text at 12 px or more (then pan)
    var n = natural(), p = smallest();
    if (!n) { scale = 1; x = 0; y = 0; return; }
    scale = Math.min(1, Math.max(view.clientWidth / n[0], p ? 12 / p : 0));
    x = 0; y = 0;
  }
  function resize() {
    var n = natural();
    if (n) { view.style.height = Math.ceil(n[1] * scale) + 4 + "px"; }
    var px = textPx();
    if (px) { root.dataset.textPx = px.toFixed(2); }
  }
  function zoom(f) { scale = Math.max(0.2, Math.min(8, scale * f)); place(); resize(); }
  prev.onclick = function () { show(current - 1); };
  next.onclick = function () { show(current + 1); };
  root.querySelector(".hg-in").onclick = function () { zoom(1.25); };
  root.querySelector(".hg-out").onclick = function () { zoom(0.8); };
  root.querySelector(".hg-fit").onclick = function () { fit(); place(); resize(); };
  root.addEventListener("keydown", function (e) {          // only while this player has focus
    if (e.key === "ArrowLeft") { show(current - 1); e.preventDefault(); }
    if (e.key === "ArrowRight") { show(current + 1); e.preventDefault(); }
  });
  root.addEventListener("mousedown", function () { root.focus({preventScroll: true}); });
  view.addEventListener("wheel", function (e) {
    if (!e.ctrlKey) { return; }
    e.preventDefault(); zoom(e.deltaY < 0 ? 1.1 : 0.9);
  }, {passive: false});
  view.addEventListener("mousedown", function (e) { drag = [e.clientX - x, e.clientY - y]; });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (drag) { x = e.clientX - drag[0]; y = e.clientY - drag[1]; place(); }
  });
  fit();
  show(0);
})();
</script>"""


def player(frames: Sequence[tuple[str, str]], title: str = "", layout: str | None = None,
           restyle: Sequence[dict[str, Any]] | None = None) -> str:
    """An HTML fragment: a player over (caption, html) frames, with a fresh element id.
    With ``layout`` (one SVG) and ``restyle`` (per frame: each element's lines and
    colours, by id), every frame is the same picture restyled: nothing moves."""
    pid = f"hg-player-{next(_ids)}-{id(frames) & 0xffff:x}"
    if layout is not None:
        data = json.dumps(list(restyle or [])).replace("</", "<\\/")
        sections = (f'{layout}\n<script type="application/json" class="hg-data">{data}</script>\n'
                    + "\n".join(f'<div class="hg-frame" data-caption="{html.escape(text)}" '
                                 f'hidden></div>' for text, _ in frames))
        return _shell(pid, title, len(frames), sections)
    sections = "\n".join(
        f'<div class="hg-frame" data-caption="{html.escape(text)}"{" hidden" if i else ""}>'
        f'\n{body}\n</div>' for i, (text, body) in enumerate(frames))
    return _shell(pid, title, len(frames), sections)


def _shell(pid: str, title: str, count: int, sections: str) -> str:
    heading = f"<div><b>{html.escape(title)}</b></div>" if title else ""
    return (f'{STYLE}\n<div class="hg-player" id="{pid}" tabindex="0">{heading}\n'
            f'<nav><button class="hg-prev" type="button">&larr; previous</button>'
            f'<span class="hg-counter">step 1 / {count}</span>'
            f'<button class="hg-next" type="button">next &rarr;</button>'
            f'<button class="hg-out" type="button" title="zoom out">&minus;</button>'
            f'<button class="hg-in" type="button" title="zoom in">+</button>'
            f'<button class="hg-fit" type="button">reset view</button>'
            f'<span class="hg-hint">arrow keys when selected; drag to pan, Ctrl+wheel to '
            f'zoom</span></nav>\n<div class="hg-caption"></div>\n'
            f'<div class="hg-view"><div class="hg-stage">\n{sections}\n</div></div>\n</div>\n'
            + SCRIPT.replace("{{ID}}", pid))


class Playback:
    """Frames of the backward pass that display as a working player: in Jupyter
    (``_repr_html_``, any number of times per notebook) or saved as a page (``save``)."""

    def __init__(self, frames: Sequence[tuple[str, str]], title: str, layout: str | None = None,
                 restyle: Sequence[dict[str, Any]] | None = None):
        self.frames = list(frames)
        self.title = title
        self.layout, self.restyle = layout, restyle

    def __len__(self) -> int:
        return len(self.frames)

    def _repr_html_(self) -> str:
        return player(self.frames, self.title, self.layout, self.restyle)

    def html_page(self) -> str:
        """The player as a self-contained HTML page (inline SVG, no external files)."""
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f"<title>handgrad: {html.escape(self.title)}</title>\n</head>\n<body "
                f'style="margin: 1em">\n<h1 style="font-family: sans-serif">'
                f"{html.escape(self.title)}</h1>\n{player(self.frames, '', self.layout, self.restyle)}\n"
                f"</body>\n</html>\n")

    def save(self, path: str | Path) -> Path:
        """Write ``html_page()`` to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.html_page(), encoding="utf-8")
        return path
