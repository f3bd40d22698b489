"""A slide player for frames of HTML (SVG pictures or equation slides), self-contained.

Each player is one ``<div>`` with its own id: any number of them can sit on one page (a
notebook with two outputs, a slide deck) and each works alone. The keys move only the
player that has focus (click it or tab to it); the buttons always work. Pictures can be
zoomed (buttons, "+"/"−", or the mouse wheel with Ctrl) and panned (drag) for big graphs;
equation slides are zoomed by their font size, so they reflow and are never cut off. Each
frame's caption is shown once, above the picture.

Keys (what a presentation clicker sends): PageDown, Space, → and ↓ go forward; PageUp,
Shift+Space, ← and ↑ go back; Home and End go to the first and the last step.

Presentation mode (the "present" button, or ``present=True``): the player covers the
window (and asks for full screen), the picture is scaled to fill the screen but never
below a readable text size (the larger of width/80 and height/45 CSS px, at least 18:
24 px on a 1920×1080 screen), the op that runs now is kept in view (auto-pan), and the
controls shrink to an overlay that hides after a few seconds without mouse movement.

Themes: "light" and "dark" (high contrast); the player paints its own background so it
reads on a dark notebook. Without JavaScript the page shows step 1 and its caption.
"""
from __future__ import annotations

import html
import itertools
import json
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any, Sequence

_ids = itertools.count()
THEMES = ("light", "dark")
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"

STYLE = """<style>
.hg-player { font-family: sans-serif; color: #1a1a1a; background: #ffffff; border: 1px solid #ccd;
  border-radius: 6px; padding: 0.6em 0.8em; margin: 0.8em 0; outline: none; }
.hg-player:focus { border-color: #4a72c2; box-shadow: 0 0 0 2px #c9d8f5; }
.hg-player nav { display: flex; gap: 0.6em; align-items: center; flex-wrap: wrap; }
.hg-player button { font-size: 15px; padding: 0.2em 0.8em; color: #111; background: #f1f3f7;
  border: 1px solid #99a; border-radius: 4px; cursor: pointer; }
.hg-player button:disabled { opacity: 0.45; cursor: default; }
.hg-player .hg-caption { font-size: 17px; margin: 0.5em 0; min-height: 1.3em; }
.hg-player .hg-view { overflow: hidden; cursor: grab; border-top: 1px solid #eee; }
.hg-player.hg-slides .hg-view { overflow: auto; cursor: default; }
.hg-player .hg-stage { transform-origin: 0 0; font-size: 16px; }
.hg-player .hg-stage svg { display: block; max-width: none; }
.hg-player .hg-hint { font-size: 13px; color: #556; }
.hg-player.hg-present { position: fixed; top: 0; left: 0; right: 0; bottom: 0; z-index: 2147483000;
  margin: 0; padding: 0; border: 0; border-radius: 0; box-shadow: none; display: flex;
  flex-direction: column; box-sizing: border-box; font-size: var(--hg-px, 24px); }
.hg-player.hg-present > .hg-title, .hg-player.hg-present .hg-hint { display: none; }
.hg-player.hg-present .hg-caption { font-size: calc(var(--hg-px, 24px) * 1.1); margin: 0;
  padding: 0.25em 0.6em; flex: none; }
.hg-player.hg-present .hg-view { flex: 1 1 auto; min-height: 0; }
.hg-player.hg-present nav { position: absolute; right: 0.4em; bottom: 0.4em; z-index: 2;
  gap: 0.3em; padding: 0.2em 0.3em; border-radius: 6px; background: rgba(128, 128, 128, 0.25);
  transition: opacity 0.4s; }
.hg-player.hg-present nav button { font-size: var(--hg-px, 24px); padding: 0.05em 0.4em; }
.hg-player.hg-present.hg-idle nav { opacity: 0; pointer-events: none; }
.hg-player.hg-present:fullscreen { width: 100%; height: 100%; }
.hg-player[data-theme="dark"] { color: #f5f5f5; background: #0d1117; border-color: #5a6270; }
.hg-player[data-theme="dark"] button { color: #ffffff; background: #262c36; border-color: #9aa4b4; }
.hg-player[data-theme="dark"] .hg-hint { color: #c9d1d9; }
.hg-player[data-theme="dark"] .hg-view { border-top-color: #30363d; }
.hg-player[data-theme="dark"] .hg-stage svg { filter: invert(1) hue-rotate(180deg); }
/* Printed (or "save as PDF"), a slide player is a handout: every slide on its own page
   under its caption; a picture player prints the step on screen, the whole picture
   unzoomed and shrunk to one page below its caption (room for about five lines of
   caption and title; handgrad draw --pdf writes one page per step). */
@media print {
  .hg-player { position: static !important; border: 0; box-shadow: none; }
  .hg-player nav { display: none !important; }
  .hg-player.hg-slides .hg-caption { display: none !important; }
  .hg-player .hg-view { overflow: visible !important; height: auto !important; border: 0; }
  .hg-player .hg-stage { transform: none !important; }
  .hg-player .hg-stage > svg, .hg-player .hg-frame > svg { width: auto !important;
    height: auto !important; max-width: 100% !important; max-height: calc(100vh - 16em); }
  .hg-player.hg-slides .hg-frame { display: block !important; break-after: page; }
  .hg-player.hg-slides .hg-frame:last-child { break-after: auto; }
  .hg-player.hg-slides .hg-frame::before { content: attr(data-caption); display: block;
    font-weight: bold; margin-bottom: 0.6em; }
}
.hg-slide { font-size: 1em; line-height: 1.35; }
.hg-slide .hg-eq { font-size: 1.25em; margin: 0.3em 0 0.6em; font-family: serif; }
.hg-slide .hg-row { display: flex; gap: 1.2em; align-items: flex-start; flex-wrap: wrap; }
.hg-slide .hg-op { font-size: 1.375em; align-self: center; font-family: serif; }
.hg-slide table.hg-m { border-collapse: collapse; font-family: monospace; font-size: 0.9375em;
  border-left: 2px solid currentColor; border-right: 2px solid currentColor; }
.hg-slide table.hg-m td { padding: 1px 0.4em; text-align: right; }
.hg-slide .hg-name { font-family: serif; font-size: 1.125em; text-align: center; margin-bottom: 2px; }
.hg-slide .hg-shape { font-size: 0.8125em; color: #556; text-align: center; }
.hg-slide .hg-heat { display: block; margin: 0.2em auto; border: 1px solid #99a; }
.hg-slide .hg-stack { display: flex; gap: 0.4em; margin: 0.4em 0 0.8em; flex-wrap: wrap; }
.hg-slide .hg-layer { border: 1px solid #99a; border-radius: 4px; padding: 2px 8px; color: #445; }
.hg-slide .hg-layer.hg-now { background: #ffc933; color: #1a1a1a; border-color: #a77d00; }
.hg-slide .hg-check { font-size: 0.8125em; color: #1b6e20; }
.hg-slide .hg-check.hg-differs { color: #c62828; font-weight: bold; }
.hg-present .hg-slide { padding: 0 0.6em; }
.hg-present .hg-slide .hg-shape, .hg-present .hg-slide .hg-check,
.hg-present .hg-slide table.hg-m { font-size: 1em; }
[data-theme="dark"] .hg-slide .hg-shape { color: #c9d1d9; }
[data-theme="dark"] .hg-slide .hg-layer { color: #e6edf3; border-color: #8b949e; }
[data-theme="dark"] .hg-slide .hg-layer.hg-now { color: #111111; }
[data-theme="dark"] .hg-slide .hg-check { color: #7ee787; }
[data-theme="dark"] .hg-slide .hg-check.hg-differs { color: #ff9b93; }
</style>"""

SCRIPT = """<script>
(function () {
  var root = document.getElementById("{{ID}}");
  if (!root || root.dataset.ready) { return; }
  root.dataset.ready = "1";
  function q(s) { return root.querySelector(s); }
  var frames = root.querySelectorAll(".hg-frame");
  var caption = q(".hg-caption"), counter = q(".hg-counter"), prev = q(".hg-prev"), next = q(".hg-next");
  var view = q(".hg-view"), stage = q(".hg-stage"), presentButton = q(".hg-present-button");
  var themeButton = q(".hg-theme"), dataTag = q(".hg-data");
  var restyle = dataTag ? JSON.parse(dataTag.textContent) : null;
  var current = 0, scale = 1, x = 0, y = 0, drag = null, zoomed = 1, idle = null, full = false;
  function presenting() { return root.classList.contains("hg-present"); }
  function target() {            // the smallest text in presentation mode, CSS px
    return 1.02 * Math.max(18, window.innerWidth / 80, window.innerHeight / 45);
  }
  function place() { stage.style.transform = "translate(" + x + "px," + y + "px) scale(" + scale + ")"; }
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
      var images = g.querySelectorAll("image"), srcs = spec.images || [];
      for (var n = 0; n < images.length; n++) {   // heat maps: the layout's, another, or none
        var im = images[n], src = srcs[n];
        if (!im.hasAttribute("data-hg-href")) {
          im.setAttribute("data-hg-href", im.getAttribute("xlink:href") || "");
        }
        im.style.display = src === "" ? "none" : "";
        im.setAttribute("xlink:href", src || im.getAttribute("data-hg-href"));
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
      e.style.display = es.hide ? "none" : "";   // a gradient arrow shows once it is sent
      var parts = e.querySelectorAll("path, polygon");
      for (var m = 0; m < parts.length; m++) {
        parts[m].setAttribute("stroke-width", es.pen);
        if (parts[m].tagName === "path") { parts[m].setAttribute("stroke-dasharray", es.dash); }
      }
    }
  }
  function svg() {               // the frame's picture; a slide's heat maps are not one
    return (restyle ? stage : frames[current]).querySelector(":scope > svg");
  }
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
  function fit() {               // the frame's scale: see fitScale
    var n = natural(), p = smallest();
    x = 0; y = 0;
    if (!n) { scale = 1; return; }
    if (presenting()) {          // fill the screen, but never below the readable size
      scale = Math.max(Math.min(view.clientWidth / n[0], view.clientHeight / n[1]),
                       p ? target() / p : 0);
    } else {                     // fit the width, but keep every text at 12 px or more (then pan)
      scale = Math.min(1, Math.max(view.clientWidth / n[0], p ? 12 / p : 0));
    }
  }
  function focusBox() {          // the screen rectangle of what runs now (op-level frames)
    var d = restyle ? restyle[current] : null, box = null, all = d ? [d.nodes, d.edges] : [];
    for (var a = 0; a < all.length; a++) {
      for (var id in all[a]) {
        var el = all[a][id].now ? find(id) : null;
        if (!el) { continue; }
        var r = el.getBoundingClientRect();
        box = box ? {left: Math.min(box.left, r.left), top: Math.min(box.top, r.top),
                     right: Math.max(box.right, r.right), bottom: Math.max(box.bottom, r.bottom)}
                  : {left: r.left, top: r.top, right: r.right, bottom: r.bottom};
      }
    }
    return box;
  }
  function keepInView() {        // auto-pan: the op that runs now stays inside the view
    var n = natural();
    if (!n) { return; }
    place();
    var vw = view.clientWidth, vh = view.clientHeight, v = view.getBoundingClientRect();
    var box = focusBox();
    if (box) {
      var left = box.left - v.left, right = box.right - v.left, top = box.top - v.top,
          bottom = box.bottom - v.top, mx = 0.12 * vw, my = 0.12 * vh;
      if (left < mx || right > vw - mx) { x += vw / 2 - (left + right) / 2; }
      if (top < my || bottom > vh - my) { y += vh / 2 - (top + bottom) / 2; }
    }
    var w = n[0] * scale, h = n[1] * scale;
    x = w <= vw ? (vw - w) / 2 : Math.min(0, Math.max(vw - w, x));
    y = h <= vh ? (vh - h) / 2 : Math.min(0, Math.max(vh - h, y));
    place();
  }
  function fits(px, both) {      // the slide at this font size: nothing sticks out
    stage.style.fontSize = px + "px";
    return view.scrollWidth <= view.clientWidth && (!both || view.scrollHeight <= view.clientHeight);
  }
  function largest(lo, hi, both) { // the largest font size in [lo, hi] that fits (lo if none)
    if (fits(hi, both)) { return hi; }
    for (var i = 0; i < 10; i++) { var mid = (lo + hi) / 2; if (fits(mid, both)) { lo = mid; } else { hi = mid; } }
    return lo;
  }
  function sizeSlide() {         // slides zoom by font size: they reflow, never cut off
    x = 0; y = 0; scale = 1; stage.style.transform = "";
    var least = presenting() ? target() : 8;
    var base = presenting() ? largest(least, 1.6 * least, true) : 16;
    // A slide too big for the screen even at readable text (three layers of a batch of 4
    // at 1024x768) goes below it, down to 60%, rather than run off the screen.
    if (presenting() && !fits(base, true)) { least = base = largest(0.6 * least, least, true); }
    var px = Math.max(least, base * zoomed);
    if (px > base && !fits(px, false)) { px = largest(base, px, false); }
    stage.style.fontSize = px + "px";
    root.dataset.textPx = px.toFixed(2);
  }
  function layout(refit) {
    root.classList.toggle("hg-slides", !svg());
    if (!svg()) { sizeSlide(); return; }
    stage.style.fontSize = "";
    if (refit) { fit(); }
    if (presenting()) { view.style.height = ""; keepInView(); } else { place(); }
    var n = natural(), p = smallest();
    if (n && !presenting()) { view.style.height = Math.ceil(n[1] * scale) + 4 + "px"; }
    if (p) { root.dataset.textPx = (p * scale).toFixed(2); }
  }
  function reserveCaption() {    // room for the tallest caption: the picture never jumps
    caption.style.minHeight = "";
    var tallest = 0, cs = getComputedStyle(caption);
    for (var i = 0; i < frames.length; i++) {
      caption.textContent = frames[i].dataset.caption;
      tallest = Math.max(tallest, caption.offsetHeight);
    }
    var pad = parseFloat(cs.paddingTop) + parseFloat(cs.paddingBottom);
    caption.style.minHeight = Math.max(0, tallest - pad) + "px";
    caption.textContent = frames[current].dataset.caption;
  }
  function show(k) {
    current = Math.max(0, Math.min(frames.length - 1, k));
    for (var i = 0; i < frames.length; i++) { frames[i].hidden = i !== current; }
    if (restyle) { apply(current); }
    counter.textContent = (current + 1) + " / " + frames.length;   // the frame, like a slide number
    caption.textContent = frames[current].dataset.caption;
    prev.disabled = current === 0;
    next.disabled = current === frames.length - 1;
    // One layout keeps its scale between steps; step 1 is always shown as at load (back
    // from the end, the pan kept along the way had moved it).
    layout(!restyle || !root.dataset.shown || current === 0);
    root.dataset.shown = "1";
    root.dataset.step = String(current + 1);
  }
  function zoom(f) {
    if (!svg()) { zoomed = Math.max(0.5, Math.min(4, zoomed * f)); sizeSlide(); return; }
    scale = Math.max(0.2, Math.min(8, scale * f));
    layout(false);
  }
  function wake() {              // controls show on mouse movement, hide after 2.5 s
    root.classList.remove("hg-idle");
    clearTimeout(idle);
    if (presenting()) { idle = setTimeout(function () { root.classList.add("hg-idle"); }, 2500); }
  }
  function requestFull() {
    if (!root.requestFullscreen || document.fullscreenElement === root) { return; }
    try {                        // denied without a user gesture, or in a headless browser
      var r = root.requestFullscreen();
      if (r && r.catch) { r.catch(function () {}); }
    } catch (err) { /* the overlay alone */ }
  }
  function enter(user) {
    root.classList.add("hg-present");
    root.style.setProperty("--hg-px", target().toFixed(2) + "px");
    document.documentElement.style.overflow = "hidden";
    presentButton.textContent = "exit";
    zoomed = 1;
    if (user) { requestFull(); }
    root.focus({preventScroll: true});
    reserveCaption(); wake(); layout(true);
  }
  function leave() {
    root.classList.remove("hg-present", "hg-idle");
    document.documentElement.style.overflow = "";
    presentButton.textContent = "present";
    if (document.fullscreenElement === root && document.exitFullscreen) {
      document.exitFullscreen().catch(function () {});
    }
    zoomed = 1; reserveCaption(); wake(); layout(true);
  }
  function setTheme(name) {
    root.dataset.theme = name;
    themeButton.textContent = name === "dark" ? "light theme" : "dark theme";
  }
  var keys = {PageDown: 1, ArrowRight: 1, ArrowDown: 1, PageUp: -1, ArrowLeft: -1, ArrowUp: -1};
  function onKey(e) {            // only while this player has focus
    if (e.altKey || e.ctrlKey || e.metaKey) { return; }
    var t = e.target, k = e.key;
    if (t && t.tagName === "BUTTON" && (k === " " || k === "Enter")) { return; }  // the button's own
    var step = k === " " ? (e.shiftKey ? -1 : 1) : keys[k];
    if (step) { show(current + step); }
    else if (k === "Home") { show(0); }
    else if (k === "End") { show(frames.length - 1); }
    else if (k === "+" || k === "=") { zoom(1.25); }
    else if (k === "-" || k === "_" || k === "\\u2212") { zoom(0.8); }
    else if (k === "Escape" && presenting()) { leave(); }
    else { return; }
    e.preventDefault();
  }
  prev.onclick = function () { show(current - 1); };
  next.onclick = function () { show(current + 1); };
  q(".hg-in").onclick = function () { zoom(1.25); };
  q(".hg-out").onclick = function () { zoom(0.8); };
  q(".hg-fit").onclick = function () { zoomed = 1; layout(true); };
  presentButton.onclick = function () { if (presenting()) { leave(); } else { enter(true); } };
  themeButton.onclick = function () { setTheme(root.dataset.theme === "dark" ? "light" : "dark"); };
  var buttons = root.querySelectorAll("nav button");
  for (var b = 0; b < buttons.length; b++) {   // a click keeps the focus on the player
    buttons[b].addEventListener("mousedown", function (e) { e.preventDefault(); });
  }
  root.addEventListener("keydown", onKey);
  root.addEventListener("mousedown", function () { root.focus({preventScroll: true}); });
  root.addEventListener("mousemove", wake);
  root.addEventListener("fullscreenchange", function () {     // it bubbles from the root
    if (document.fullscreenElement === root) { full = true; layout(true); }
    else if (full) { full = false; if (presenting()) { leave(); } }
  });
  window.addEventListener("resize", function () {
    if (presenting()) { root.style.setProperty("--hg-px", target().toFixed(2) + "px"); }
    reserveCaption();
    if (presenting()) { layout(true); }
  });
  view.addEventListener("wheel", function (e) {
    if (!e.ctrlKey) { return; }
    e.preventDefault(); zoom(e.deltaY < 0 ? 1.1 : 0.9);
  }, {passive: false});
  view.addEventListener("mousedown", function (e) { if (svg()) { drag = [e.clientX - x, e.clientY - y]; } });
  window.addEventListener("mouseup", function () { drag = null; });
  window.addEventListener("mousemove", function (e) {
    if (drag) { x = e.clientX - drag[0]; y = e.clientY - drag[1]; place(); }
  });
  setTheme(root.dataset.theme || "light");
  if (root.dataset.present) {    // a clicker's first press (a user gesture) asks for full screen
    root.addEventListener("keydown", function once() {
      root.removeEventListener("keydown", once);
      if (presenting()) { requestFull(); }
    });
    show(0); enter(false);
  } else {
    reserveCaption(); show(0);
  }
})();
</script>"""


def check_options(present: Any, theme: Any) -> None:
    """A clear error for a ``present`` that is not a bool or an unknown ``theme``."""
    if not isinstance(present, bool):
        raise ValueError(f"backward playback: present must be True or False, got {present!r}")
    if theme not in THEMES:
        raise ValueError(f"backward playback: theme must be one of {THEMES}, got {theme!r}")


def script_json(value: Any) -> str:
    """JSON to put inside <script type="application/json">: every "<", ">" and "&" written
    as \\u003c etc., so no text in it ("</script>", "<!--<script>") can end or hide the tag."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def static_frame(layout: str, spec: dict[str, Any]) -> str:
    """The laid-out SVG restyled in Python as the player restyles it for one frame (each
    box's lines, colours and heat maps, each arrow's pen), so a page without JavaScript
    shows that frame (step 1) instead of the layout's last one."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(layout)
    ns = f"{{{SVG_NS}}}"
    by_id = {el.get("id"): el for el in root.iter() if el.get("id")}
    for nid, node in spec.get("nodes", {}).items():
        g = by_id.get(nid)
        if g is None:
            continue
        for i, text in enumerate(g.iter(f"{ns}text")):
            text.text = node["lines"][i] if i < len(node["lines"]) else ""
            text.set("fill", node["font"])
        for image, src in zip(g.iter(f"{ns}image"), node.get("images", []), strict=False):
            if src == "":
                image.set("style", "display: none")
            elif src:
                image.set(f"{{{XLINK_NS}}}href", src)
        for shape in g.iter():
            if shape.tag in (f"{ns}polygon", f"{ns}ellipse", f"{ns}path"):
                if shape.get("fill") != "none":
                    shape.set("fill", node["fill"])
                shape.set("stroke-width", node["pen"])
    for eid, edge in spec.get("edges", {}).items():
        g = by_id.get(eid)
        if g is None:
            continue
        if edge.get("hide"):
            g.set("style", "display: none")
        for part in g.iter():
            if part.tag in (f"{ns}path", f"{ns}polygon"):
                part.set("stroke-width", edge["pen"])
                if part.tag == f"{ns}path":
                    part.set("stroke-dasharray", edge["dash"])
    return ET.tostring(root, encoding="unicode")


def player(frames: Sequence[tuple[str, str]], title: str = "", layout: str | None = None,
           restyle: Sequence[dict[str, Any]] | None = None, *, present: bool = False,
           theme: str = "light") -> str:
    """An HTML fragment: a player over (caption, html) frames, with a fresh element id.
    With ``layout`` (one SVG) and ``restyle`` (per frame: each element's lines and
    colours, by id; ``"now": true`` on what runs now), every frame is the same picture
    restyled: nothing moves. ``present`` starts in presentation mode; ``theme`` is
    "light" or "dark" (a button switches)."""
    check_options(present, theme)
    # Unique in a page (the counter) and the same in every run for the same picture (the
    # suffix hashes its content: an export is byte-for-byte reproducible).
    content = "\0".join([title, layout or "", *(part for frame in frames for part in frame)])
    pid = f"hg-player-{next(_ids)}-{zlib.crc32(content.encode('utf-8')) & 0xffff:x}"
    first = frames[0][0] if frames else ""
    if layout is not None:
        data = script_json(list(restyle or []))
        picture = static_frame(layout, restyle[0]) if restyle else layout
        sections = (f'{picture}\n<script type="application/json" class="hg-data">{data}</script>\n'
                    + "\n".join(f'<div class="hg-frame" data-caption="{html.escape(text)}" '
                                f'hidden></div>' for text, _ in frames))
        return _shell(pid, title, len(frames), sections, first, present, theme)
    sections = "\n".join(
        f'<div class="hg-frame" data-caption="{html.escape(text)}"{" hidden" if i else ""}>'
        f'\n{body}\n</div>' for i, (text, body) in enumerate(frames))
    return _shell(pid, title, len(frames), sections, first, present, theme)


def _shell(pid: str, title: str, count: int, sections: str, first: str, present: bool,
           theme: str) -> str:
    heading = f'<div class="hg-title"><b>{html.escape(title)}</b></div>' if title else ""
    mode = ' data-present="1"' if present else ""
    return (f'{STYLE}\n<div class="hg-player" id="{pid}" tabindex="0" '
            f'data-theme="{theme}"{mode}>{heading}\n'
            f'<nav><button class="hg-prev" type="button">&larr; previous</button>'
            f'<span class="hg-counter">1 / {count}</span>'
            f'<button class="hg-next" type="button">next &rarr;</button>'
            f'<button class="hg-out" type="button" title="smaller (the - key)">&minus;</button>'
            f'<button class="hg-in" type="button" title="larger (the + key)">+</button>'
            f'<button class="hg-fit" type="button">reset view</button>'
            f'<button class="hg-present-button" type="button" title="full screen, big text, '
            f'the current step kept in view">present</button>'
            f'<button class="hg-theme" type="button">dark theme</button>'
            f'<span class="hg-hint">keys when selected: PageDown/PageUp, space, arrows, '
            f'Home/End, +/&minus;; drag to pan, Ctrl+wheel to zoom</span></nav>\n'
            f'<div class="hg-caption">{html.escape(first)}</div>\n'
            f'<div class="hg-view"><div class="hg-stage">\n{sections}\n</div></div>\n</div>\n'
            + SCRIPT.replace("{{ID}}", pid))


class Playback:
    """Frames of the backward pass that display as a working player: in Jupyter
    (``_repr_html_``, any number of times per notebook) or saved as a page (``save``).
    ``present`` starts the player in presentation mode; ``theme`` is "light" or "dark"."""

    def __init__(self, frames: Sequence[tuple[str, str]], title: str, layout: str | None = None,
                 restyle: Sequence[dict[str, Any]] | None = None, *, present: bool = False,
                 theme: str = "light"):
        check_options(present, theme)
        self.frames = list(frames)
        self.title = title
        self.layout, self.restyle = layout, restyle
        self.present, self.theme = present, theme

    def __len__(self) -> int:
        return len(self.frames)

    def _player(self, title: str) -> str:
        return player(self.frames, title, self.layout, self.restyle, present=self.present,
                      theme=self.theme)

    def _repr_html_(self) -> str:
        return self._player(self.title)

    def html_page(self) -> str:
        """The player as a self-contained HTML page (inline SVG, no external files)."""
        dark = self.theme == "dark"
        body = "background: #0d1117; color: #f5f5f5; " if dark else ""
        return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
                f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                f"<title>handgrad: {html.escape(self.title)}</title>\n</head>\n<body "
                f'style="{body}margin: 1em">\n<h1 style="font-family: sans-serif">'
                f"{html.escape(self.title)}</h1>\n{self._player('')}\n"
                f"</body>\n</html>\n")

    def save(self, path: str | Path) -> Path:
        """Write ``html_page()`` to ``path`` (UTF-8) and return the path."""
        path = Path(path)
        path.write_text(self.html_page(), encoding="utf-8")
        return path
