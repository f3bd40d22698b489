"""``handgrad draw``: the compute graph of a small MLP on a batch of a teaching dataset.

``nn/cli.py`` creates the sub-command with ``add_draw_arguments`` and runs it with
``draw_command``. It lives in nn (it builds an nn model); the pictures come from
``engine.viz``, which knows nothing about nn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from handgrad.engine import Tensor

from .cli_args import UsageError, font_points, positive_int, seed, sizes
from .cli_plan import check_data_dir
from .data import DATASETS, load_dataset
from .files import nearest_existing, probe_write
from .layers import ACTIVATIONS, MLP
from .losses import CrossEntropyLoss

FONT_SIZE = 14           # points: --font-size's default


def add_draw_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``handgrad draw``, added to its sub-parser."""
    from handgrad.engine.viz.rendering import FORMATS

    parser.add_argument("--dataset", choices=DATASETS, default="xor")
    parser.add_argument("--data-dir", help="directory with the MNIST-format IDX files")
    parser.add_argument("--hidden", type=sizes, default=[4], help="hidden sizes, e.g. 4 or 8,8")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    parser.add_argument("--batch", type=positive_int, default=4,
                        help="examples in the batch (default 4; at most the dataset's "
                             "training examples: 4 for xor)")
    parser.add_argument("--collapse", action="store_true", help="one box per layer")
    parser.add_argument("--backward-order", action="store_true",
                        help="number the ops in the order backward runs their rules")
    parser.add_argument("--rules", action="store_true", help="print each op's derivative rule")
    parser.add_argument("--numeric", action="store_true",
                        help="show central-difference gradients beside the analytic ones")
    parser.add_argument("--html", action="store_true",
                        help="write the step-by-step backward playback page instead")
    parser.add_argument("--present", action="store_true",
                        help="with --html: open the page in presentation mode (full screen, "
                             "big text, the running step kept in view, clicker keys)")
    parser.add_argument("--level", choices=["op", "layer"], default="op",
                        help="with --html: one frame per op (any graph), or per equation "
                             "BP1-BP4 of the derivation, layer by layer (default op)")
    parser.add_argument("--rankdir", choices=["TB", "LR", "BT", "RL"], default="TB",
                        help="layout direction (default TB, top to bottom: the default MLP "
                             "fits a 16:9 slide)")
    parser.add_argument("--font-size", type=font_points, default=FONT_SIZE,
                        help=f"text size in points, 4 to 72 (default {FONT_SIZE:g})")
    parser.add_argument("--max-elements", type=positive_int,
                        help="print arrays up to this many elements, summarise larger ones "
                             "(default 8: XOR's four corners, p and y in full; 6 for --html, "
                             "40 for --level layer)")
    parser.add_argument("--format", choices=FORMATS,
                        help="svg, png, pdf or dot (default: from --out, else svg)")
    parser.add_argument("--out", type=Path, help="file to write (default handgrad-graph.svg, "
                                                 "or handgrad-backward.html with --html)")
    parser.add_argument("--pdf", type=Path, metavar="PATH",
                        help="with --html (op level): also write a handout, one PDF page per "
                             "step, every page the same layout")
    parser.add_argument("--steps", type=Path, metavar="DIR",
                        help="with --html (op level): also write every step as its own "
                             "picture, DIR/step-00.svg, ... (same layout in all)")
    parser.add_argument("--steps-format", choices=["svg", "png", "pdf"], default="svg",
                        help="the format of the --steps pictures (default svg)")
    parser.add_argument("--preset", choices=["slide"],
                        help="slide: a 16:9 picture for a 1920x1080 slide, one box per layer, "
                             "text of at least 24 px (sets --collapse, --rankdir TB, "
                             "--font-size 24)")
    parser.add_argument("--seed", type=seed, default=0,
                        help="seed of the model's weights and of the dataset (default 0)")


def output_path(args: argparse.Namespace) -> tuple[Path, str]:
    """Where to write and in which format ("html" for the playback page). A --format or
    --html that contradicts the file's extension, a picture whose format the extension
    does not tell (render's format_for: graph.jpg without --format), or an --out that is a
    directory, is a UsageError."""
    from handgrad.engine.viz.rendering import FORMATS, format_for
    out: Path | None = args.out
    suffix = out.suffix.lstrip(".").lower() if out is not None else ""
    if args.html:
        if args.format is not None:
            raise UsageError("--format does not apply to --html (the page is HTML)")
        fmt = "html"
        if suffix in FORMATS:
            raise UsageError(f"--out {out} names a .{suffix} file, but --html writes an HTML page")
        if out is not None and suffix not in ("html", "htm"):
            raise UsageError(f"--out {out}: --html writes an HTML page; name it .html")
    else:
        if args.format is not None and suffix in FORMATS and suffix != args.format:
            raise UsageError(f"--format {args.format} contradicts --out {out} (a .{suffix} file)")
        if suffix in ("html", "htm"):
            raise UsageError(f"--out {out} names an HTML file: add --html for the playback page")
        try:        # the library's choice (render's): an extension it cannot tell is refused
            fmt = format_for(out, args.format) if out is not None else args.format or "svg"
        except ValueError:
            raise UsageError(f"--out {out}: cannot tell the picture's format from the "
                             f"extension .{suffix}; name a .svg, .png, .pdf or .dot file, "
                             f"or give --format") from None
    path = out or Path("handgrad-backward.html" if fmt == "html" else f"handgrad-graph.{fmt}")
    if path.is_dir():
        raise UsageError(f"--out {path} is a directory; give a file name")
    return path, fmt


def check_exports(args: argparse.Namespace, fmt: str) -> None:
    """--pdf and --steps export the op-level steps of the page; --preset slide is a picture.
    Contradictions are UsageErrors, before any work."""
    for flag, value in (("--pdf", args.pdf), ("--steps", args.steps)):
        if value is None:
            continue
        if fmt != "html" or args.level != "op":
            raise UsageError(f"{flag} exports the steps of the op-level page: add --html "
                             f"(and --level op)")
    if args.pdf is not None:
        if args.pdf.suffix.lower() != ".pdf":
            raise UsageError(f"--pdf {args.pdf} must name a .pdf file")
        if args.pdf.is_dir():
            raise UsageError(f"--pdf {args.pdf} is a directory; give a file name")
    if args.steps is not None and args.steps.exists() and not args.steps.is_dir():
        raise UsageError(f"--steps {args.steps} is a file; give a directory")
    if args.preset == "slide":
        if fmt == "html":
            raise UsageError("--preset slide makes a picture; for the page use --present")
        if fmt == "dot":
            raise UsageError("--preset slide makes a picture: svg, png or pdf, not dot")
    if args.steps is None and args.steps_format != "svg":
        raise UsageError("--steps-format is the format of the --steps pictures: add --steps DIR")


def check_ignored(args: argparse.Namespace, fmt: str) -> None:
    """Options the picture asked for would not use are UsageErrors, not dropped without a
    word: --backward-order numbers one picture's nodes (the page steps through that order
    itself); a slide is drawn top to bottom with at least its own font size; --data-dir
    reads MNIST-format files, which a generated dataset has none of."""
    from handgrad.engine.viz.export import SLIDE_FONT
    if args.backward_order and fmt == "html":
        raise UsageError("--backward-order numbers the nodes of one picture; the step-by-step "
                         "page (--html) shows the backward order itself: leave it out")
    if args.preset == "slide":
        if args.rankdir != "TB":
            raise UsageError(f"--preset slide draws top to bottom: --rankdir {args.rankdir} "
                             f"would change nothing; leave one of them out")
        if args.font_size != FONT_SIZE and args.font_size < SLIDE_FONT:
            raise UsageError(f"--preset slide uses at least {SLIDE_FONT} pt: --font-size "
                             f"{args.font_size:g} would change nothing; give {SLIDE_FONT} or "
                             f"more, or leave it out")
    check_data_dir(args.dataset, args.data_dir)


def _probe(flag: str, path: Path, directory: Path) -> None:
    """A file can be made in ``directory`` (as root os.access says yes to everything: only
    a real write tells), else a UsageError naming ``flag`` and ``path``."""
    try:
        probe_write(directory)
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write in {directory} "
                         f"({e.strerror or e})") from None


def check_outputs(args: argparse.Namespace, path: Path) -> None:
    """Every file and folder the command writes (--out, --pdf, --steps) can be written,
    checked before any is: a later one failing must not leave the earlier ones written. A
    file's folder must exist; --steps is created, so its nearest existing folder must take
    it."""
    if args.steps is not None:
        _apart_from_steps(args, path)
    for flag, file in (("--out", path), ("--pdf", args.pdf)):
        if file is None:
            continue
        folder = file.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise UsageError(f"{flag} {file}: the folder {folder} {what}")
        _probe(flag, file, folder)
    if args.steps is not None:
        existing = nearest_existing(args.steps)
        if not existing.is_dir():
            raise UsageError(f"--steps {args.steps}: {existing} is a file, not a folder")
        _probe("--steps", args.steps, existing)


def _apart_from_steps(args: argparse.Namespace, path: Path) -> None:
    """--steps is a folder of its own: not the page's --out, and not holding --pdf under a
    step picture's name (the export removes an earlier export's step-NN files, which would
    delete the handout it had just written)."""
    from handgrad.engine.viz.export import STEP_FILE
    steps = args.steps.resolve()
    if path.resolve() == steps:
        raise UsageError(f"--steps {args.steps} is the page's --out; give the step pictures a "
                         f"folder of their own")
    if args.pdf is not None and args.pdf.resolve().parent == steps and STEP_FILE.fullmatch(args.pdf.name):
        raise UsageError(f"--pdf {args.pdf} is named as a step picture in --steps {args.steps}, "
                         f"which keeps only this export's step pictures; give the handout "
                         f"another name")


def check_level(args: argparse.Namespace) -> None:
    """--level layer plays BP1-BP4, whose BP2 δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ) needs an activation
    f between the layers; --activation identity puts none there (the model always has a
    hidden layer), so that pair is a UsageError, before any work. So is an option of the
    op graph the equation slides have no use for (--numeric, --rules, --collapse,
    --backward-order, --rankdir, --font-size): it would be dropped without a word."""
    if args.level != "layer":
        return
    graph_only = [flag for flag, given in (
        ("--numeric", args.numeric), ("--rules", args.rules), ("--collapse", args.collapse),
        ("--backward-order", args.backward_order), ("--rankdir", args.rankdir != "TB"),
        ("--font-size", args.font_size != FONT_SIZE)) if given]
    if graph_only:
        raise UsageError(f"--level layer shows the equations BP1-BP4, not the op graph, so "
                         f"{', '.join(graph_only)} would change nothing: leave "
                         f"{'it' if len(graph_only) == 1 else 'them'} out, or use --level op")
    if args.activation == "identity":
        raise UsageError("--level layer needs an activation between the layers (BP2's "
                         "f′(z)), but --activation identity has none: choose another "
                         "--activation, or use --level op")


def steps_report(directory: Path, loss: Tensor, **options: Any) -> str:
    """Write the step pictures (export.save_backward_steps) and say what
    happened to ``directory``: how many pictures were written, the first and last name,
    and how many step pictures of an earlier export were replaced or removed (the
    directory then holds exactly this run's frames)."""
    from handgrad.engine.viz.export import save_backward_steps, step_files

    before = set(step_files(directory))
    paths = save_backward_steps(loss, directory, **options)
    replaced = len(before & set(paths))
    removed = len(before - set(paths))
    earlier = [f"replaced {replaced}"] if replaced else []
    earlier += [f"removed {removed}"] if removed else []
    note = f" ({' and '.join(earlier)} step pictures of an earlier export)" if earlier else ""
    return (f"{directory}: {len(paths)} step pictures, {paths[0].name} to "
            f"{paths[-1].name}{note}")


def draw_command(args: argparse.Namespace) -> int:
    """Build the MLP, run it on one batch, and write the picture. Prints the path."""
    from handgrad.engine.viz import GraphvizNotFound, draw, render, save_backward_html
    from handgrad.engine.viz.export import SLIDE_FONT, as_slide, save_backward_pdf

    path, fmt = output_path(args)          # bad paths and formats: before any work
    if args.level != "op" and fmt != "html":
        raise UsageError("--level layer is the step-by-step page: add --html")
    if args.present and fmt != "html":
        raise UsageError("--present is a mode of the step-by-step page: add --html")
    check_exports(args, fmt)
    check_level(args)
    check_ignored(args, fmt)
    check_outputs(args, path)
    if args.dataset == "xor":
        # The classic XOR table: the four 0/1 corners (--batch picks how many of them).
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
        y, num_classes = np.array([0, 1, 1, 0]), 2
        rows = "4 rows (the XOR table's four corners)"
    else:
        splits = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
        x, y = splits.x_train, splits.y_train
        num_classes = splits.num_classes
        rows = f"{len(x)} training examples"
    if args.batch > len(x):      # the picture's N must be the --batch asked for
        raise UsageError(f"--batch {args.batch}: --dataset {args.dataset} has only {rows}; "
                         f"give --batch {len(x)} or less")
    x, y = x[:args.batch], y[:args.batch]
    x = x.reshape(len(x), -1).astype(np.float32)  # images become vectors; the MLP is float32
    model = MLP([x.shape[1], *args.hidden, num_classes], activation=args.activation,
                seed=args.seed)
    loss = CrossEntropyLoss()(model(Tensor(x, name="x")), y)
    slide = args.preset == "slide"
    style = dict(rankdir="TB" if slide else args.rankdir, rules=args.rules,
                 fontsize=max(args.font_size, SLIDE_FONT) if slide else args.font_size,
                 collapse=args.collapse or slide)
    try:
        if fmt == "html":
            save_backward_html(loss, path, model=model, level=args.level,
                               max_elements=args.max_elements, numeric=args.numeric,
                               present=args.present, **style)
            exports = dict(model=model, max_elements=args.max_elements or 6,
                           numeric=args.numeric, **style)
            if args.pdf is not None:
                print(save_backward_pdf(loss, args.pdf, **exports))
            if args.steps is not None:
                print(steps_report(args.steps, loss, format=args.steps_format, **exports))
        else:
            # the picture: XOR's four corners, p and y in full (8); a slide: summaries (6)
            picture = draw(loss, model=model, backward_order=args.backward_order,
                           numeric=args.numeric, max_elements=args.max_elements or (6 if slide else 8),
                           **style)
            render(as_slide(picture, fmt) if slide else picture, path, fmt)
    except GraphvizNotFound as e:
        print(f"handgrad draw: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
