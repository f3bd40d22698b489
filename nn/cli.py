"""The ``handgrad`` command line: ``handgrad train`` (the main job), ``handgrad evaluate``,
``handgrad draw`` and ``handgrad check`` (the gradient-check suite of engine/testing/cli.py,
which needs hypothesis: ``pip install "handgrad[check]"``).

Every user error is one line on stderr and exit status 2, found before any training
starts: option values are checked by the converters of ``cli_args``, combinations and
paths by ``check_train``. Errors about files and data (missing, corrupt, unreadable) are
one line too. A bug in handgrad still shows its traceback: only the error types that
describe the user's input are caught.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from handgrad import __version__
from handgrad.engine.testing import cli as check_cli

from . import cli_args as opt_
from .cli_args import UsageError
from . import data as data_
from . import init as init_
from . import optim, serialization
from .draw_command import add_draw_arguments, draw_command
from .layers import ACTIVATIONS, MLP
from .losses import CrossEntropyLoss
from .module import Module
from .train import History, TrainingError, evaluate, fit


class _Parser(argparse.ArgumentParser):
    """Bad options: one line on stderr and exit status 2, no usage dump, no traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


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
MOMENTUM_OPTIMIZERS = ("sgd", "rmsprop")     # the optimizers --momentum applies to
EPOCH_SCHEDULES = ("step", "cosine")         # schedules whose shape depends on --epochs

# What a run is (saved in the checkpoint, so --resume rebuilds exactly the same run).
RUN_KEYS = ("dataset", "n", "hidden", "activation", "dropout", "init", "optimizer", "lr",
            "momentum", "weight_decay", "label_smoothing", "schedule", "clip_grad_norm",
            "epochs", "batch_size", "val_fraction", "early_stopping", "seed")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handgrad", description="Train and evaluate MLPs with handgrad.")
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train an MLP (default: the spirals dataset, in seconds)")
    t.add_argument("--dataset", choices=data_.DATASETS)
    t.add_argument("--data-dir", help="directory with the MNIST-format IDX files")
    t.add_argument("--n", type=opt_.positive_int, help="use only the first N training examples")
    t.add_argument("--hidden", type=opt_.sizes, help="hidden layer sizes, e.g. 256,128")
    t.add_argument("--activation", choices=sorted(ACTIVATIONS))
    t.add_argument("--dropout", type=opt_.fraction)
    t.add_argument("--init", choices=sorted(init_.INITIALIZERS))
    t.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS))
    t.add_argument("--lr", type=opt_.positive_float, help="learning rate")
    t.add_argument("--momentum", type=opt_.fraction,
                   help="for sgd and rmsprop only (default 0.9)")
    t.add_argument("--weight-decay", type=opt_.nonnegative_float)
    t.add_argument("--label-smoothing", type=opt_.unit_interval)
    t.add_argument("--schedule", choices=["none", "step", "cosine", "exponential"])
    t.add_argument("--clip-grad-norm", type=opt_.positive_float)
    t.add_argument("--epochs", type=opt_.positive_int, help="total number of epochs")
    t.add_argument("--batch-size", type=opt_.positive_int,
                   help="default: full batch for the small datasets, 128 for (fashion-)mnist")
    t.add_argument("--val-fraction", type=opt_.fraction)
    t.add_argument("--early-stopping", type=opt_.positive_int, metavar="PATIENCE")
    t.add_argument("--seed", type=int)
    t.add_argument("--out", type=Path, help="directory for the checkpoint, history.json and "
                                            "curves (created; files in it are replaced)")
    t.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the run saved in DIR (by --out) up to --epochs")
    t.add_argument("--compile", action="store_true",
                   help="capture each training step once and replay it (same results, faster)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")

    e = sub.add_parser("evaluate", help="report test metrics of a checkpoint")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--dataset", choices=data_.DATASETS, help="default: the one it was trained on")
    e.add_argument("--data-dir")
    e.add_argument("--seed", type=int, help="default: the training seed (synthetic datasets)")

    d = sub.add_parser("draw", help="draw the compute graph of a small MLP on one batch")
    add_draw_arguments(d)

    m = sub.add_parser("demo", help="demonstrations for a lecture")
    m.add_argument("name", choices=["vanishing"],
                   help="vanishing: gradient norms per layer of a deep sigmoid/tanh/ReLU MLP")
    m.add_argument("--depth", type=opt_.positive_int, default=8, help="hidden layers (8)")
    m.add_argument("--width", type=opt_.positive_int, default=32, help="units per layer (32)")
    m.add_argument("--steps", type=opt_.positive_int, default=200,
                   help="full-batch SGD steps before the second measurement (200)")
    m.add_argument("--out", type=Path, help="directory for vanishing.png and vanishing.json")

    c = sub.add_parser("check", help="check derivative rules with hypothesis (every op, or "
                                     "the ops of --module)")
    check_cli.add_arguments(c)
    return parser


# --- the run: options, defaults, checks ---------------------------------------------------

def run_config(args: argparse.Namespace, saved: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's settings: the options given, else the saved run's (--resume), else the
    defaults for the dataset. Raises UsageError for combinations that make no sense."""
    given = {k: getattr(args, k) for k in RUN_KEYS if getattr(args, k, None) is not None}
    if saved is not None:
        changed = {k: v for k, v in given.items() if k != "epochs" and v != saved.get(k)}
        if changed:
            (k, v), = list(changed.items())[:1]
            raise UsageError(f"--{k.replace('_', '-')} {v} differs from the run being resumed "
                             f"({saved.get(k)}); --resume continues a run as it was")
        run = dict(saved)
        if "epochs" in given:
            if given["epochs"] != saved["epochs"] and saved["schedule"] in EPOCH_SCHEDULES:
                raise UsageError(f"--epochs {given['epochs']} would change the {saved['schedule']} "
                                 f"schedule of the run being resumed (planned for "
                                 f"{saved['epochs']} epochs)")
            run["epochs"] = given["epochs"]
        return run
    dataset = given.get("dataset", "spirals")
    d = DEFAULTS[dataset]
    optimizer = given.get("optimizer", d["optimizer"])
    if "momentum" in given and optimizer not in MOMENTUM_OPTIMIZERS:
        raise UsageError(f"--momentum is not used by {optimizer} (only by "
                         f"{' and '.join(MOMENTUM_OPTIMIZERS)})")
    default_lr = d["lr"] if optimizer == d["optimizer"] else (
        1e-3 if optimizer in ("adam", "adamw") else 0.05)
    run = {"dataset": dataset, "n": None, "hidden": d["hidden"], "activation": "relu",
           "dropout": 0.0, "init": None, "optimizer": optimizer, "lr": default_lr,
           "momentum": 0.9 if optimizer in MOMENTUM_OPTIMIZERS else None, "weight_decay": 0.0,
           "label_smoothing": 0.0, "schedule": "none", "clip_grad_norm": None,
           "epochs": d["epochs"], "batch_size": d["batch_size"], "val_fraction": 0.1,
           "early_stopping": None, "seed": 0}
    run.update(given)
    if run["early_stopping"] is not None and run["val_fraction"] == 0:
        raise UsageError("--early-stopping needs validation data: --val-fraction must be > 0")
    return run


def check_out(out: Path | None) -> None:
    """--out must be a directory we can create or write: checked before training."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is an existing file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    if not os.access(out, os.W_OK):
        raise UsageError(f"--out {out}: the directory is not writable")


# --- building and running ------------------------------------------------------------------

def _optimizer(run: dict[str, Any], model: MLP) -> optim.Optimizer:
    name, lr, wd = run["optimizer"], run["lr"], run["weight_decay"]
    if name in MOMENTUM_OPTIMIZERS:
        return optim.OPTIMIZERS[name](model, lr=lr, momentum=run["momentum"], weight_decay=wd)
    return optim.OPTIMIZERS[name](model, lr=lr, weight_decay=wd)


def _schedule(run: dict[str, Any], opt: optim.Optimizer) -> optim.LRScheduler | None:
    name, epochs = run["schedule"], run["epochs"]
    if name == "step":
        return optim.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=epochs)
    if name == "exponential":
        return optim.ExponentialLR(opt, gamma=0.95)
    return None


def _generators(model: Module) -> list[np.random.Generator]:
    """The random generators the model draws from while training (dropout), each once."""
    found: list[np.random.Generator] = []
    for m in model.modules():
        rng = getattr(m, "rng", None)
        if isinstance(rng, np.random.Generator) and all(rng is not g for g in found):
            found.append(rng)
    return found


class _Run:
    """A model, its optimizer and schedule, and the state at the end of the last complete
    epoch (what resume.npz holds, so that --resume continues exactly from there).

    Two files: ``model.npz`` is the model the run produced (under early stopping, the best
    epoch's weights, which the test metrics describe); ``resume.npz`` is the last complete
    epoch with the optimizer state, the schedule, the random generators and the history."""

    def __init__(self, run: dict[str, Any], sizes: list[int]):
        self.run = run
        self.model = MLP(sizes, activation=run["activation"], dropout=run["dropout"],
                         init=run["init"], seed=run["seed"])
        self.optimizer = _optimizer(run, self.model)
        self.scheduler = _schedule(run, self.optimizer)
        self.epochs_done = 0
        self.history = History()
        self.best: dict[str, np.ndarray] | None = None   # the best epoch's weights
        self.snapshot: dict[str, Any] = {}

    def take_snapshot(self) -> None:
        self.snapshot = {
            "params": self.model.state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": [g.bit_generator.state for g in _generators(self.model)],
            "epochs_done": self.epochs_done,
            "history": copy.deepcopy(self.history.to_dict()),
        }

    def end_of_epoch(self, epoch: int, record: dict[str, float]) -> None:
        self.epochs_done = epoch
        if self.history.best_epoch == epoch:
            self.best = self.model.state_dict()
        self.take_snapshot()

    def restore(self, resume_dir: Path) -> None:
        """Put back the state saved in ``resume_dir`` (by save) into the model, the optimizer,
        the schedule and the random generators."""
        path = resume_dir / "resume.npz"
        ck = serialization.load(path, self.model, optimizer=self.optimizer)
        generators = _generators(self.model)
        try:         # the metadata is untrusted too: any malformed part is the file's fault
            resume = ck.checkpoint_metadata["resume"]
            history = History.from_dict(resume["history"])
            epochs_done = int(resume["epochs_done"])
            if len(history.epochs) != epochs_done or len(generators) != len(resume["rng"]):
                raise ValueError("epochs or random generators do not match the run")
            if self.scheduler is not None:
                self.scheduler.load_state_dict(resume["scheduler"])
            for g, state in zip(generators, resume["rng"]):
                g.bit_generator.state = state
        except (KeyError, TypeError, ValueError) as e:
            raise serialization.CheckpointError(f"{path}: malformed resume state ({e})") from None
        self.epochs_done, self.history = epochs_done, history
        if self.history.best_epoch is not None:
            best = serialization.load(resume_dir / "model.npz", check_finite=True)
            self.best = best.state_dict()

    def save(self, out: Path, test: dict[str, float] | None, interrupted: bool) -> list[Path]:
        """Write the run: model.npz, resume.npz, history.json and curves.png."""
        snap = self.snapshot
        last = copy.deepcopy(self.model)
        last.load_state_dict(snap["params"])
        produced = copy.deepcopy(last)
        if self.run["early_stopping"] is not None and self.best is not None:
            produced.load_state_dict(self.best)
        meta = {"dataset": self.run["dataset"], "seed": self.run["seed"], "run": self.run,
                "test": test, "interrupted": interrupted}
        resume = dict(meta, resume={k: snap[k] for k in ("scheduler", "rng", "epochs_done",
                                                           "history")})
        # resume.npz first: a model.npz is never newer than the state it resumes from.
        resume_path = serialization.save(last, out / "resume.npz", metadata=resume,
                                         optimizer_state=snap["optimizer"])
        ckpt = serialization.save(produced, out / "model.npz", metadata=meta)
        history_path = out / "history.json"
        history_path.write_text(json.dumps(snap["history"], indent=1))
        written = [ckpt, resume_path, history_path]
        from .plots import plot_gradient_norms, plot_history
        history = History.from_dict(snap["history"])
        pngs = [plot_history(history, out / "curves.png"),
                plot_gradient_norms(history, out / "grad_norms.png")]
        return written + [p for p in pngs if p is not None]


def train(args: argparse.Namespace) -> int:
    meta = None
    if args.resume is not None:
        path = args.resume / "resume.npz"
        meta, _ = serialization.read(path)
        if "resume" not in meta.get("metadata", {}):
            raise UsageError(f"--resume {args.resume}: {path} was not written by handgrad train "
                             f"--out (no run recorded in it)")
        meta = meta["metadata"]
    run = run_config(args, meta["run"] if meta else None)
    out = args.out if args.out is not None else args.resume
    check_out(out)

    splits = data_.load_dataset(run["dataset"], data_dir=args.data_dir, n=run["n"],
                                seed=run["seed"], val_fraction=run["val_fraction"])
    sizes = [int(np.prod(splits.input_shape))] + run["hidden"] + [splits.num_classes]
    state = _Run(run, sizes)
    if meta is not None:
        state.restore(args.resume)
        if state.history.stopped_early:
            raise UsageError(f"--resume {args.resume}: the run stopped early (no improvement "
                             f"since epoch {state.history.best_epoch}); nothing to continue")
        if state.epochs_done >= run["epochs"]:
            raise UsageError(f"--resume {args.resume}: the run already has {state.epochs_done} "
                             f"epochs; ask for more with --epochs")
    state.take_snapshot()
    loss_fn = CrossEntropyLoss(label_smoothing=run["label_smoothing"])
    val = (splits.x_val, splits.y_val) if splits.x_val is not None else None
    print(f"handgrad: {run['dataset']} from {splits.source}: {len(splits.x_train)} train / "
          f"{0 if val is None else len(val[0])} val / {len(splits.x_test)} test examples; "
          f"MLP {sizes} {run['activation']}, {run['optimizer']} lr={run['lr']}, "
          f"{run['epochs']} epochs, batch {run['batch_size'] or 'full'}"
          + (f", resuming after epoch {state.epochs_done}" if meta else ""), flush=True)

    start = time.perf_counter()
    failure: TrainingError | None = None
    try:
        state.history = fit(state.model, loss_fn, state.optimizer,
                            (splits.x_train, splits.y_train), epochs=run["epochs"],
                            batch_size=run["batch_size"], val_data=val,
                            scheduler=state.scheduler, clip_grad_norm=run["clip_grad_norm"],
                            early_stopping=run["early_stopping"],
                            monitor="val_loss" if val is not None else "train_loss",
                            seed=run["seed"], progress=not args.quiet,
                            callback=state.end_of_epoch, initial_epoch=state.epochs_done,
                            history=state.history,
                            best_state=state.best if state.epochs_done else None,
                            compile=args.compile, record_grad_norms=out is not None)
    except TrainingError as e:
        failure = e
    seconds = time.perf_counter() - start
    interrupted = failure is None and state.history.interrupted
    finished = failure is None and not interrupted
    test = evaluate(state.model, loss_fn, (splits.x_test, splits.y_test)) if finished else None
    if out is not None:
        written = state.save(out, test, interrupted=not finished)
        print("wrote " + ", ".join(str(p) for p in written))
    if failure is not None:
        raise UsageError(f"{failure}" + (f"; the state after epoch {state.epochs_done} is saved "
                                         f"in {out}" if out is not None else ""))
    if interrupted:
        print(f"interrupted after {seconds:.1f} s" + (
            f"; the state after epoch {state.epochs_done} is saved: continue with "
            f"handgrad train --resume {out}" if out is not None else ""), file=sys.stderr)
        return 130
    last = state.history.epochs[-1]
    summary = ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k.startswith(("train_", "val_")))
    print(f"trained {len(state.history.epochs)} epochs in {seconds:.1f} s: {summary}")
    assert test is not None
    print(f"test loss: {test['loss']:.4f}")
    print(f"test accuracy: {test['accuracy']:.4f}")
    return 0


def demo_cmd(args: argparse.Namespace) -> int:
    from . import demos
    check_out(args.out)
    result = demos.vanishing_gradients(depth=args.depth, width=args.width, steps=args.steps)
    print(f"Gradient norm of each layer's weights (layer 1 is next to the input), MLP with "
          f"{args.depth} hidden layers of {args.width} on spirals, at initialisation and "
          f"after {args.steps} full-batch SGD steps:")
    print(demos.table(result))
    if args.out is not None:
        (args.out / "vanishing.json").write_text(json.dumps(result, indent=1))
        png = demos.plot_vanishing(result, args.out / "vanishing.png")
        print(f"wrote {args.out / 'vanishing.json'}" + (f", {png}" if png else ""))
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    model = serialization.load(args.checkpoint)
    meta = getattr(model, "checkpoint_metadata", {})
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint}: no dataset recorded; pass --dataset")
    seed = args.seed if args.seed is not None else meta.get("seed", 0)
    splits = data_.load_dataset(dataset, data_dir=args.data_dir, seed=seed)
    scores_loss = evaluate(model, CrossEntropyLoss(), (splits.x_test, splits.y_test))
    print(f"{args.checkpoint}: {type(model).__name__} {model.config['sizes']} on {dataset} "
          f"({len(splits.x_test)} test examples)")
    print(f"test loss: {scores_loss['loss']:.4f}")
    print(f"test accuracy: {scores_loss['accuracy']:.4f}")
    return 0


# Errors that describe the user's input (options, files, data): one line, status 2.
USER_ERRORS = (UsageError, data_.DatasetError, serialization.CheckpointError, FileNotFoundError,
               IsADirectoryError, NotADirectoryError, PermissionError, check_cli.UsageError,
               check_cli.HypothesisMissing)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        command = {"train": train, "draw": draw_command, "evaluate": evaluate_cmd,
                   "demo": demo_cmd, "check": check_cli.check_command}[args.command]
        status = command(args)
        sys.stdout.flush()                   # a closed pipe shows here, inside the handler
        return status
    except USER_ERRORS as e:
        print(f"handgrad: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`handgrad train | head`): stop quietly. Point stdout at
        # devnull so that the interpreter's final flush does not complain again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
