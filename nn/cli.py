"""The ``handgrad`` command line: ``handgrad train`` (the main job), ``handgrad evaluate``
and ``handgrad draw``."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import data as data_
from . import init as init_
from . import optim, serialization
from .draw_command import add_draw_arguments, draw_command
from .layers import ACTIVATIONS, MLP
from .losses import CrossEntropyLoss
from .train import evaluate, fit


class _Parser(argparse.ArgumentParser):
    """Bad options: one line on stderr and exit status 2, no usage dump, no traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes like 64,32, got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


# Sensible settings per dataset when the user gives none.
DEFAULTS = {
    "spirals": dict(hidden=[64, 64], epochs=300, batch_size=None, lr=0.02, optimizer="adam"),
    "moons": dict(hidden=[32, 32], epochs=200, batch_size=None, lr=0.02, optimizer="adam"),
    "circles": dict(hidden=[32, 32], epochs=200, batch_size=None, lr=0.02, optimizer="adam"),
    "xor": dict(hidden=[16, 16], epochs=200, batch_size=None, lr=0.02, optimizer="adam"),
    "blobs": dict(hidden=[16], epochs=100, batch_size=None, lr=0.02, optimizer="adam"),
    "mnist": dict(hidden=[256, 128], epochs=5, batch_size=128, lr=0.05, optimizer="sgd"),
    "fashion-mnist": dict(hidden=[256, 128], epochs=5, batch_size=128, lr=0.05, optimizer="sgd"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handgrad", description="Train and evaluate MLPs with handgrad.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train an MLP (default: the spirals dataset, in seconds)")
    t.add_argument("--dataset", choices=data_.DATASETS, default="spirals")
    t.add_argument("--data-dir", help="directory with the MNIST-format IDX files")
    t.add_argument("--n", type=_positive_int, help="use only the first N training examples")
    t.add_argument("--hidden", type=_hidden, help="hidden layer sizes, e.g. 256,128")
    t.add_argument("--activation", choices=sorted(ACTIVATIONS), default="relu")
    t.add_argument("--dropout", type=float, default=0.0)
    t.add_argument("--init", choices=sorted(init_.INITIALIZERS))
    t.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS))
    t.add_argument("--lr", type=_positive_float, help="learning rate")
    t.add_argument("--momentum", type=float, default=0.9, help="for sgd and rmsprop (default 0.9)")
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--label-smoothing", type=float, default=0.0)
    t.add_argument("--schedule", choices=["none", "step", "cosine", "exponential"], default="none")
    t.add_argument("--clip-grad-norm", type=_positive_float)
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int, help="default: full batch for the small "
                                                            "datasets, 128 for (fashion-)mnist")
    t.add_argument("--val-fraction", type=float, default=0.1)
    t.add_argument("--early-stopping", type=_positive_int, metavar="PATIENCE")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, help="directory for the checkpoint, history.json and curves")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="report test metrics of a checkpoint")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--dataset", choices=data_.DATASETS, help="default: the one it was trained on")
    e.add_argument("--data-dir")
    e.add_argument("--seed", type=int, help="default: the training seed (synthetic datasets)")

    d = sub.add_parser("draw", help="draw the compute graph of a small MLP on one batch")
    add_draw_arguments(d)
    return parser


def _optimizer(name: str, model: MLP, args: argparse.Namespace, lr: float) -> optim.Optimizer:
    if name == "sgd":
        return optim.SGD(model, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    if name == "rmsprop":
        return optim.RMSprop(model, lr=lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return optim.OPTIMIZERS[name](model, lr=lr, weight_decay=args.weight_decay)


def _schedule(name: str, opt: optim.Optimizer, epochs: int) -> optim.LRScheduler | None:
    if name == "step":
        return optim.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=epochs)
    if name == "exponential":
        return optim.ExponentialLR(opt, gamma=0.95)
    return None


def train(args: argparse.Namespace) -> int:
    d = DEFAULTS[args.dataset]
    hidden = args.hidden if args.hidden is not None else d["hidden"]
    epochs = args.epochs or d["epochs"]
    batch_size = args.batch_size or d["batch_size"]
    opt_name = args.optimizer or d["optimizer"]
    lr = args.lr or (d["lr"] if opt_name == d["optimizer"] else 1e-3 if opt_name in ("adam", "adamw") else 0.05)
    if not 0 <= args.val_fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")

    splits = data_.load_dataset(args.dataset, data_dir=args.data_dir, n=args.n, seed=args.seed,
                                val_fraction=args.val_fraction)
    sizes = [int(np.prod(splits.input_shape))] + hidden + [splits.num_classes]
    model = MLP(sizes, activation=args.activation, dropout=args.dropout, init=args.init, seed=args.seed)
    loss_fn = CrossEntropyLoss(label_smoothing=args.label_smoothing)
    opt = _optimizer(opt_name, model, args, lr)
    val = (splits.x_val, splits.y_val) if splits.x_val is not None else None
    print(f"handgrad: {args.dataset}: {len(splits.x_train)} train / "
          f"{0 if val is None else len(val[0])} val / {len(splits.x_test)} test examples; "
          f"MLP {sizes} {args.activation}, {opt_name} lr={lr}, {epochs} epochs, "
          f"batch {batch_size or 'full'}", flush=True)
    start = time.perf_counter()
    history = fit(model, loss_fn, opt, (splits.x_train, splits.y_train), epochs=epochs,
                  batch_size=batch_size, val_data=val, scheduler=_schedule(args.schedule, opt, epochs),
                  clip_grad_norm=args.clip_grad_norm, early_stopping=args.early_stopping,
                  monitor="val_loss" if val is not None else "train_loss",
                  seed=args.seed, progress=not args.quiet)
    seconds = time.perf_counter() - start
    last = history.epochs[-1]
    test = evaluate(model, loss_fn, (splits.x_test, splits.y_test))
    summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith(("train_", "val_")))
    print(f"trained {len(history.epochs)} epochs in {seconds:.1f} s: {summary}")
    if args.out is not None:
        _write_outputs(args, model, history, test)
    print(f"test loss: {test['loss']:.4f}")
    print(f"test accuracy: {test['accuracy']:.4f}")
    return 0


def _write_outputs(args: argparse.Namespace, model: MLP, history, test: dict[str, float]) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    meta = {"dataset": args.dataset, "seed": args.seed, "test": test}
    ckpt = serialization.save(model, out / "model.npz", metadata=meta)
    (out / "history.json").write_text(json.dumps(history.to_dict(), indent=1))
    written = [ckpt, out / "history.json"]
    try:
        from .plots import plot_history
    except ImportError:
        pass
    else:
        png = plot_history(history, out / "curves.png")
        if png is not None:
            written.append(png)
    print("wrote " + ", ".join(str(p) for p in written))


def evaluate_cmd(args: argparse.Namespace) -> int:
    model = serialization.load(args.checkpoint)
    meta = getattr(model, "checkpoint_metadata", {})
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError(f"{args.checkpoint}: no dataset recorded; pass --dataset")
    seed = args.seed if args.seed is not None else meta.get("seed", 0)
    splits = data_.load_dataset(dataset, data_dir=args.data_dir, seed=seed)
    scores_loss = evaluate(model, CrossEntropyLoss(), (splits.x_test, splits.y_test))
    print(f"{args.checkpoint}: {type(model).__name__} {model.config['sizes']} on {dataset} "
          f"({len(splits.x_test)} test examples)")
    print(f"test loss: {scores_loss['loss']:.4f}")
    print(f"test accuracy: {scores_loss['accuracy']:.4f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            return train(args)
        if args.command == "draw":
            return draw_command(args)
        return evaluate_cmd(args)
    except (ValueError, FileNotFoundError, TypeError) as e:
        # Bad values the parser could not see (a missing data file, a corrupt checkpoint):
        # one line, status 2, as for bad options.
        print(f"handgrad: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
