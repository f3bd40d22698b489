"""``handgrad draw``: the compute graph of a small MLP on a batch of a teaching dataset.

``nn/cli.py`` creates the sub-command with ``add_draw_arguments`` and runs it with
``draw_command``. It lives in nn (it builds an nn model); the pictures come from
``engine.viz``, which knows nothing about nn.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from engine import Tensor

from .data import DATASETS, load_dataset
from .layers import ACTIVATIONS, MLP
from .losses import CrossEntropyLoss


def _sizes(text: str) -> list[int]:
    """"4" -> [4]; "8,8" -> [8, 8]."""
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 8,8, got {text!r}") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return sizes


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def add_draw_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``handgrad draw``, added to its sub-parser."""
    from engine.viz.rendering import FORMATS

    parser.add_argument("--dataset", choices=DATASETS, default="xor")
    parser.add_argument("--data-dir", help="directory with the MNIST-format IDX files")
    parser.add_argument("--hidden", type=_sizes, default=[4], help="hidden sizes, e.g. 4 or 8,8")
    parser.add_argument("--activation", choices=sorted(ACTIVATIONS), default="tanh")
    parser.add_argument("--batch", type=_positive_int, default=4,
                        help="examples in the batch (default 4)")
    parser.add_argument("--collapse", action="store_true", help="one box per layer")
    parser.add_argument("--backward-order", action="store_true",
                        help="number the ops in the order backward runs their rules")
    parser.add_argument("--rules", action="store_true", help="print each op's derivative rule")
    parser.add_argument("--numeric", action="store_true",
                        help="show central-difference gradients beside the analytic ones")
    parser.add_argument("--html", action="store_true",
                        help="write the step-by-step backward playback page instead")
    parser.add_argument("--format", choices=FORMATS,
                        help="svg, png, pdf or dot (default: from --out, else svg)")
    parser.add_argument("--out", type=Path, help="file to write (default handgrad-graph.svg, "
                                                 "or handgrad-backward.html with --html)")
    parser.add_argument("--seed", type=int, default=0)


def output_path(args: argparse.Namespace) -> tuple[Path, str]:
    """Where to write and in which format ("html" for the playback page)."""
    from engine.viz.rendering import FORMATS
    if args.html:
        return args.out or Path("handgrad-backward.html"), "html"
    suffix = args.out.suffix.lstrip(".").lower() if args.out is not None else ""
    fmt = args.format or (suffix if suffix in FORMATS else "svg")
    return args.out or Path(f"handgrad-graph.{fmt}"), fmt


def draw_command(args: argparse.Namespace) -> int:
    """Build the MLP, run it on one batch, and write the picture. Prints the path."""
    from engine.viz import GraphvizNotFound, draw, render, save_backward_html

    splits = load_dataset(args.dataset, data_dir=args.data_dir, seed=args.seed)
    x, y = splits.x_train[:args.batch], splits.y_train[:args.batch]
    x = x.reshape(len(x), -1).astype(np.float32)  # images become vectors; the MLP is float32
    model = MLP([x.shape[1], *args.hidden, splits.num_classes], activation=args.activation,
                seed=args.seed)
    loss = CrossEntropyLoss()(model(Tensor(x, name="x")), y)
    path, fmt = output_path(args)
    try:
        if fmt == "html":
            save_backward_html(loss, path, model=model)
        else:
            picture = draw(loss, model=model, collapse=args.collapse,
                           backward_order=args.backward_order, rules=args.rules,
                           numeric=args.numeric)
            render(picture, path, fmt)
    except GraphvizNotFound as e:
        print(f"handgrad draw: error: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
