"""The backward pass for slides and handouts: every op-level step as its own SVG, PNG or
PDF file, and one PDF with a page per step, all drawn from ONE Graphviz layout.

The player (playback.py) lays the graph out once and restyles it per step; the exports
do the same in DOT: the layout's positions (``dot -Tjson``) are pinned on every box, arrow
and cluster, each step's lines and colours are applied, and Graphviz draws the result
without moving anything (``neato -n2``). So a box sits at the same place in every frame
(a frame made by ``draw`` alone would be laid out anew and jump by up to hundreds of pt).

Graphviz's PDFs have one page each; ``merge_pdfs`` joins them (no PDF library needed: it
reads the single cross-reference table Graphviz/cairo writes and refuses anything else).

    from handgrad.engine.viz import save_backward_steps, save_backward_pdf
    save_backward_steps(loss, "frames", format="png", model=model)  # frames/step-00.png, ...
    save_backward_pdf(loss, "handout.pdf", model=model)             # one page per step
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import graphviz

from ..plain import plain_repr
from ..tensor import Tensor
from .drawing import dot_label
from .playback import op_layout
from .rendering import INSTALL_HINT, GraphvizNotFound, embed_images, image_directory, layout_json
from .thumbnails import html_label

STEP_FORMATS = ("svg", "png", "pdf")
STEP_FILE = re.compile(r"step-[0-9]{2,}\.(?:svg|png|pdf)")    # how save_backward_steps names
ID = re.compile(r'(?<=[\s\[])id=("?)([^\s"\]]+)\1')
SUBGRAPH = re.compile(r'^\s*subgraph\s+("?)(.+?)\1\s*\{\s*$')


class PdfMergeError(ValueError):
    """A PDF that ``merge_pdfs`` cannot read (not a single-revision PDF with a plain
    cross-reference table, as Graphviz writes)."""


# --- one layout, pinned ---------------------------------------------------------------

def _geometry(layout: graphviz.Digraph) -> dict[str, Any]:
    """Where ``dot`` puts everything: node name -> pos/width/height, cluster name ->
    bb/lp, edge id -> pos/lp, and the graph's bb."""
    found = layout_json(layout)
    nodes, clusters = {}, {}
    for obj in found.get("objects", []):
        if "nodes" in obj or "bb" in obj:
            clusters[obj["name"]] = {k: obj[k] for k in ("bb", "lp") if k in obj}
        elif "pos" in obj:
            nodes[obj["name"]] = {"pos": obj["pos"], "width": obj["width"],
                                  "height": obj["height"], "fixedsize": "true"}
    edges = {e["id"]: {k: e[k] for k in ("pos", "lp") if k in e}
             for e in found.get("edges", []) if "id" in e and "pos" in e}
    return {"bb": found["bb"], "nodes": nodes, "clusters": clusters, "edges": edges}


def _attrs(attrs: dict[str, str]) -> str:
    """DOT attribute list text, values quoted."""
    return " ".join(f"{k}={graphviz.quoting.quote(str(v))}" for k, v in attrs.items())


def _node_statement(name: str, attrs: dict[str, Any]) -> str:
    """One node statement: a later statement for an existing node sets its attributes
    without moving it out of its cluster."""
    scratch = graphviz.Digraph()
    label = attrs.pop("label", None)
    scratch.node(name, label, **attrs)
    return scratch.body[0]


def _label(lines: list[str], count: int, thumbs: list[Any] | None = None) -> str:
    """A box's lines as a DOT label with exactly ``count`` lines (as many as the layout's
    box holds), so the text sits where the layout put it; the player does the same (it
    fills the layout's text lines and blanks the rest). A box with heat maps (``thumbs``:
    the layout's slots, this frame's file names) keeps its HTML-like label, an empty cell
    where this frame has no picture."""
    lines = [line.replace("\u00a0", " ") for line in lines[:count]]
    lines += [" "] * (count - len(lines))
    if thumbs:
        return html_label(lines, [(k, name, (w, h)) for k, name, (w, h) in thumbs])
    return dot_label(lines)


def frame_source(source: str, geometry: dict[str, Any], frame: dict[str, Any],
                 counts: dict[str, int]) -> str:
    """The layout's DOT text with every position pinned and one frame's restyle applied
    (``frame`` as playback.op_layout gives it: each box's lines and colours, each
    gradient arrow's pen, dashes, visibility)."""
    out = []
    for line in source.splitlines():
        m = SUBGRAPH.match(line)
        if m and m.group(2) in geometry["clusters"]:
            out += [line, "\t" + _attrs(geometry["clusters"][m.group(2)])]
            continue
        ids = ID.search(line)
        eid = ids.group(2) if ids else None
        if eid in geometry["edges"] and line.rstrip().endswith("]"):
            extra = dict(geometry["edges"][eid])
            spec = frame["edges"].get(eid)
            if spec is not None:
                extra["penwidth"] = spec["pen"]
                extra["style"] = "invis" if spec.get("hide") else (
                    "dashed" if spec["dash"] else "solid")
            line = line.rstrip()[:-1] + " " + _attrs(extra) + "]"
        out.append(line)
    closing = out.pop()
    assert closing.strip() == "}", closing
    out.append("\t" + _attrs({"bb": geometry["bb"]}))
    for name, place in geometry["nodes"].items():
        attrs: dict[str, Any] = dict(place)
        spec = frame["nodes"].get(f"n_{name}")
        if spec is not None:
            attrs.update(label=_label(spec["lines"], counts[f"n_{name}"], spec.get("thumbs")),
                         fillcolor=spec["fill"], penwidth=spec["pen"], fontcolor=spec["font"])
        out.append(_node_statement(name, attrs))
    return "\n".join(out + ["}"]) + "\n"


def pinned_frames(loss: Tensor, **options: Any) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
    """(caption, pinned DOT text) for every frame of the op-level player, in its order,
    and the heat-map PNGs they name. ``options``: those of ``backward_playback`` for
    level="op" (model, show, rankdir, max_elements, fontsize, rules, collapse, numeric)."""
    layout, data = op_layout(loss, **options)
    geometry = _geometry(layout)
    counts = {nid: len(spec["lines"]) for nid, spec in data[-1]["nodes"].items()}
    return ([(frame["caption"], frame_source(layout.source, geometry, frame, counts))
             for frame in data], layout.images)


def render_pinned(source: str, format: str, images: dict[str, bytes] | None = None) -> bytes:
    """A pinned DOT text drawn as it is (``neato -n2``: no layout) in ``format``, with the
    heat-map PNGs it names (``images``; in SVG as data: URIs)."""
    images = images or {}
    try:
        with image_directory(images) as where:
            if where is not None:
                body, closing = source.rstrip().rsplit("}", 1)
                assert not closing.strip(), closing
                source = f"{body}\timagepath={graphviz.quoting.quote(where)}\n}}\n"
            out = graphviz.pipe("neato", format, source.encode("utf-8"), neato_no_op=2,
                                quiet=True)
    except graphviz.ExecutableNotFound:
        raise GraphvizNotFound(f"exporting to {format} needs the Graphviz 'neato' program, "
                               f"which was not found on PATH: {INSTALL_HINT}") from None
    return embed_images(out, images) if format == "svg" else out


def backward_step_pictures(loss: Tensor, format: str = "svg", **options: Any
                           ) -> list[tuple[str, bytes]]:
    """(caption, picture bytes) for every frame of the op-level player, all from one
    layout: nothing moves between them. ``format``: svg, png or pdf."""
    if format not in STEP_FORMATS:
        raise ValueError(f"backward steps: format must be one of {STEP_FORMATS}, got "
                         f"{plain_repr(format)}")
    sources, images = pinned_frames(loss, **options)
    return [(caption, render_pinned(source, format, images)) for caption, source in sources]


def save_backward_steps(loss: Tensor, directory: str | Path, *, format: str = "svg",
                        **options: Any) -> list[Path]:
    """Write every frame of the op-level player as ``directory/step-00.<format>``,
    ``step-01``, ... (step 0: the forward pass done; the last: every gradient in place),
    all from one layout, and return the paths. The directory is created if needed; a
    path that is a file is a ValueError. Afterwards the directory holds exactly this
    playback's frames: files named as frames are (``step_files``: step-NN.svg, .png or
    .pdf) that this call did not write, left by an earlier export of a longer playback or
    in another format, are removed; nothing else in the directory is touched."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"backward steps: {str(directory)!r} is a file, not a directory")
    pictures = backward_step_pictures(loss, format, **options)
    directory.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(len(pictures) - 1)))
    paths = []
    for k, (_, picture) in enumerate(pictures):
        path = directory / f"step-{k:0{width}d}.{format}"
        path.write_bytes(picture)
        paths.append(path)
    for stale in set(step_files(directory)) - set(paths):   # written first: nothing is lost
        stale.unlink()
    return paths


def step_files(directory: str | Path) -> list[Path]:
    """The files in ``directory`` named as ``save_backward_steps`` names its frames
    (step-NN.svg, .png or .pdf, two digits or more), sorted; [] for no directory."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir()
                  if STEP_FILE.fullmatch(p.name) and (p.is_file() or p.is_symlink()))


def save_backward_pdf(loss: Tensor, path: str | Path, **options: Any) -> Path:
    """A handout: one PDF page per frame of the op-level player (same layout on every
    page), written to ``path``. Returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".pdf":
        raise ValueError(f"backward pdf: the path must end in .pdf, got {str(path)!r}")
    pages = [picture for _, picture in backward_step_pictures(loss, "pdf", **options)]
    path.write_bytes(merge_pdfs(pages))
    return path


# --- joining one-page PDFs --------------------------------------------------------------

OBJ = re.compile(rb"(\d+)\s+(\d+)\s+obj\b")
REF = re.compile(rb"(\d+)\s+(\d+)\s+R\b")


def _objects(pdf: bytes) -> tuple[dict[int, bytes], int]:
    """A PDF's objects (number -> the text between "obj" and "endobj") and the number of
    its catalog, read through its cross-reference table."""
    tail = re.search(rb"startxref\s+(\d+)\s+%%EOF\s*$", pdf)
    if not pdf.startswith(b"%PDF-") or tail is None:
        raise PdfMergeError("not a PDF file (no %PDF- header or startxref at the end)")
    at = int(tail.group(1))
    if not pdf.startswith(b"xref", at):
        raise PdfMergeError("the PDF uses a cross-reference stream; only plain tables "
                            "(as Graphviz writes) can be merged")
    trailer_at = pdf.find(b"trailer", at)
    rows = pdf[at + 4:trailer_at].split()
    trailer = pdf[trailer_at:pdf.find(b"startxref", trailer_at)]
    if b"/Prev" in trailer or b"/Encrypt" in trailer:
        raise PdfMergeError("the PDF has incremental updates or is encrypted")
    root = re.search(rb"/Root\s+(\d+)\s+0\s+R", trailer)
    if root is None:
        raise PdfMergeError("the PDF's trailer names no catalog (/Root)")
    offsets: dict[int, int] = {}
    i = 0
    try:
        while i < len(rows):
            first, count = int(rows[i]), int(rows[i + 1])
            for k in range(count):
                where, kind = rows[i + 2 + 3 * k], rows[i + 4 + 3 * k]
                if kind == b"n":
                    offsets[first + k] = int(where)
            i += 2 + 3 * count
    except (ValueError, IndexError):
        raise PdfMergeError("the cross-reference table cannot be read") from None
    ends = sorted(offsets.values()) + [at]
    objects = {}
    for number, offset in offsets.items():
        end = ends[ends.index(offset) + 1]
        chunk = pdf[offset:end].rstrip()
        head = OBJ.match(chunk)
        if head is None or int(head.group(1)) != number or not chunk.endswith(b"endobj"):
            raise PdfMergeError(f"object {number} is not where the cross-reference table "
                                f"says")
        objects[number] = chunk[head.end():-len(b"endobj")].strip()
    return objects, int(root.group(1))


def _renumber(body: bytes, shift: int) -> bytes:
    """References "n 0 R" moved by ``shift``, outside any stream data."""
    cut = re.search(rb">>\s*stream\r?\n", body)
    head, rest = (body[:cut.start()], body[cut.start():]) if cut else (body, b"")
    return REF.sub(lambda m: b"%d %s R" % (int(m.group(1)) + shift, m.group(2)), head) + rest


def _ref(body: bytes, key: bytes) -> int:
    found = re.search(rb"/" + key + rb"\s+(\d+)\s+0\s+R", body)
    if found is None:
        raise PdfMergeError(f"no /{key.decode()} reference where one is needed")
    return int(found.group(1))


def merge_pdfs(pdfs: list[bytes]) -> bytes:
    """One PDF with the pages of ``pdfs`` in order (each a PDF as Graphviz writes it:
    one revision, a plain cross-reference table). The objects of each are copied with
    new numbers; each file's catalog and page tree are replaced by one for all pages."""
    if not pdfs:
        raise ValueError("merge_pdfs: no PDFs to merge")
    body: list[bytes] = []             # object k + 3 at body[k]: 1 and 2 are written last
    kids: list[int] = []
    for pdf in pdfs:
        objects, root = _objects(pdf)
        tree = _ref(objects[root], b"Pages")
        listed = re.search(rb"/Kids\s*\[([^\]]*)\]", objects[tree])
        own = [int(n) for n, _ in REF.findall(listed.group(1))] if listed else []
        if not own or any(b"/Type /Page" not in objects.get(n, b"/Pages") or
                          b"/Type /Pages" in objects[n] for n in own):
            raise PdfMergeError("the page tree is not one flat list of pages")
        shift = len(body) + 2          # old object 1 becomes len(body) + 3
        for number in range(1, max(objects) + 1):
            text = objects.get(number, b"null")
            if number in (root, tree):
                text = b"null"         # replaced by the new catalog and page tree
            elif number in own:
                text = re.sub(rb"/Parent\s+\d+\s+0\s+R", b"/Parent 1 0 R",
                              _renumber(text, shift))
            else:
                text = _renumber(text, shift)
            body.append(text)
        kids += [n + shift for n in own]
    head = [b"<< /Type /Pages /Kids [ " + b" ".join(b"%d 0 R" % k for k in kids)
            + b" ] /Count %d >>" % len(kids), b"<< /Type /Catalog /Pages 1 0 R >>"]
    out = bytearray(b"%PDF-1.5\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, text in enumerate(head + body, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + text + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += (b"trailer\n<< /Size %d /Root 2 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(offsets) + 1, xref))
    return bytes(out)


def page_count(pdf: bytes) -> int:
    """The number of pages of a PDF that ``merge_pdfs`` can read (its page tree's /Count)."""
    objects, root = _objects(pdf)
    count = re.search(rb"/Count\s+(\d+)", objects[_ref(objects[root], b"Pages")])
    if count is None:
        raise PdfMergeError("the page tree has no /Count")
    return int(count.group(1))


# --- a picture for a 16:9 slide ----------------------------------------------------------

SLIDE = (1920, 1080)     # px: the picture fills this screen exactly
SLIDE_FONT = 24          # pt of the boxes' text for the slide preset (draw(fontsize=...))


def as_slide(digraph: graphviz.Digraph, format: str, size: tuple[int, int] = SLIDE
             ) -> graphviz.Digraph:
    """A copy of ``digraph`` that draws as a 16:9 picture (``size``'s aspect): tighter
    spacing, then centred on a padded page of that aspect; for png also the resolution
    that makes it exactly ``size`` pixels. Nothing is scaled non-uniformly, so the text
    is as large as the picture's width allows (draw with fontsize=SLIDE_FONT and
    collapse=True to get at least 24 px at 1920×1080 for the default MLP)."""
    g = digraph.copy()
    g.attr(ranksep="0.25", nodesep="0.2")
    x0, y0, x1, y1 = (float(v) for v in layout_json(g)["bb"].split(","))
    w, h = x1 - x0, y1 - y0
    ratio = size[0] / size[1]
    margin = 8.0                                      # pt, at least, on every side
    width = max(w + 2 * margin, ratio * (h + 2 * margin))
    height = width / ratio
    g.attr(pad=f"{(width - w) / 144:.5f},{(height - h) / 144:.5f}")
    if format == "png":
        g.attr(dpi=f"{72 * size[0] / width:.5f}")
    return g
