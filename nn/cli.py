"""The ``handgrad`` command line: ``handgrad train`` (the main job), ``handgrad evaluate``,
``handgrad draw`` and ``handgrad check`` (the gradient-check suite of engine/testing/cli.py,
which needs hypothesis: ``pip install "handgrad[check]"``).

Every user error is one line on stderr and exit status 2, found before any training
starts: option values are checked by the converters of ``cli_args``, combinations and
paths, split sizes and memory by ``check_out``, ``check_size`` and ``load_splits``. Errors
about files and data (missing, corrupt, unreadable), a full disk and a closed or full stdout
are one line too. A bug in handgrad still shows its traceback: only ``UserInputError`` (and
the OS errors about the user's paths) is caught, never a plain ValueError.

``train --out`` saves the run directory as one unit (``rundir``); ``--resume`` verifies it.
Ctrl-C at any moment exits with status 130 and the last complete epoch saved (SIGTERM and
SIGHUP during training too).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from handgrad import __version__
from handgrad.engine.testing import cli as check_cli

from . import cli_args as opt_
from . import cli_plan as plan_
from . import data as data_
from . import init as init_
from . import optim, rundir, serialization
from .cli_args import UsageError
from .draw_command import add_draw_arguments, draw_command
from .errors import UserInputError
from .history import History
from .layers import ACTIVATIONS, MLP
from .losses import CrossEntropyLoss
from .module import Module
from .plots import MatplotlibMissing
from .step import TrainingError
from .train import NonFiniteEvaluation, evaluate, fit


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
            "epochs", "batch_size", "val_fraction", "early_stopping", "seed", "threads")
# Keys that runs saved by an older handgrad do not record, with the value such a run had
# unless the option was given: the option's default then. Resuming one uses the option
# given, else this value (and says so: the run may have been started with another one).
UNRECORDED_BEFORE: dict[str, Any] = {"threads": "auto"}
# Why a recorded option may not change on --resume, where it is not obvious.
WHY_UNCHANGED = {"threads": " (float32 products split over other BLAS threads round "
                            "differently in the last bits)"}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handgrad", description="Train and evaluate MLPs with handgrad.")
    parser.add_argument("--version", action="version", version=f"handgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train an MLP (default: the spirals dataset, in seconds)")
    t.add_argument("--dataset", choices=data_.DATASETS)
    t.add_argument("--data-dir", help="directory with the MNIST-format IDX files")
    t.add_argument("--n", type=opt_.positive_int, help="MNIST-format sets: use only the first N training examples; "
                   "generated sets (spirals, ...): N examples in all, split into train, "
                   "validation and test")
    t.add_argument("--hidden", type=opt_.sizes, help="hidden layer sizes, e.g. 256,128")
    t.add_argument("--activation", choices=sorted(ACTIVATIONS))
    t.add_argument("--dropout", type=opt_.fraction)
    t.add_argument("--init", choices=sorted(init_.INITIALIZERS),
                   help="the hidden layers' initializer (the output layer is always xavier)")
    t.add_argument("--optimizer", choices=sorted(optim.OPTIMIZERS))
    t.add_argument("--lr", type=opt_.positive_float, help="learning rate")
    t.add_argument("--momentum", type=opt_.fraction,
                   help="for sgd and rmsprop only (default 0.9)")
    t.add_argument("--weight-decay", type=opt_.nonnegative_float,
                   help="default 0.01 for adamw (as nn.optim.AdamW and PyTorch), else 0")
    t.add_argument("--label-smoothing", type=opt_.unit_interval)
    t.add_argument("--schedule", choices=["none", "step", "cosine", "exponential"])
    t.add_argument("--clip-grad-norm", type=opt_.positive_float)
    t.add_argument("--epochs", type=opt_.positive_int, help="total number of epochs")
    t.add_argument("--batch-size", type=opt_.positive_int,
                   help="default: full batch for the small datasets, 128 for (fashion-)mnist")
    t.add_argument("--val-fraction", type=opt_.fraction)
    t.add_argument("--early-stopping", type=opt_.positive_int, metavar="PATIENCE")
    t.add_argument("--seed", type=opt_.seed)
    t.add_argument("--out", type=Path, help="directory for the checkpoint, history.json and "
                                            "curves (created; files in it are replaced)")
    t.add_argument("--resume", type=Path, metavar="DIR",
                   help="continue the run saved in DIR (by --out) up to --epochs")
    t.add_argument("--compile", action="store_true",
                   help="capture each training step once and replay it (same results, faster)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--threads", type=opt_.threads,
                   help="BLAS threads: auto (one for a small model: idle threads spin on a busy "
                        "machine; the default), none (numpy's default) or a number; recorded "
                        "with the run, which --resume continues with the same setting")

    e = sub.add_parser("evaluate", help="report test metrics of a checkpoint")
    e.add_argument("checkpoint", type=Path)
    e.add_argument("--dataset", choices=data_.DATASETS, help="default: the one it was trained on")
    e.add_argument("--data-dir")
    e.add_argument("--seed", type=opt_.seed, help="default: the training seed (synthetic datasets)")

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
        saved = {**{k: given.get(k, v) for k, v in UNRECORDED_BEFORE.items()}, **saved}
        changed = {k: v for k, v in given.items() if k != "epochs" and v != saved.get(k)}
        if changed:
            (k, v), = list(changed.items())[:1]
            raise UsageError(f"--{k.replace('_', '-')} {v} differs from the run being resumed "
                             f"({saved.get(k)}); --resume continues a run as it was"
                             + WHY_UNCHANGED.get(k, ""))
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
           "momentum": 0.9 if optimizer in MOMENTUM_OPTIMIZERS else None,
           "weight_decay": 1e-2 if optimizer == "adamw" else 0.0,
           "label_smoothing": 0.0, "schedule": "none", "clip_grad_norm": None,
           "epochs": d["epochs"], "batch_size": d["batch_size"], "val_fraction": 0.1,
           "early_stopping": None, "seed": 0, "threads": "auto"}
    run.update(given)
    if run["early_stopping"] is not None and run["val_fraction"] == 0:
        raise UsageError("--early-stopping needs validation data: --val-fraction must be > 0")
    return run


def check_out(out: Path | None, needed_bytes: int = 0) -> None:
    """--out must be a directory we can create or write, whose files can all be replaced
    and with room for the run: checked before training."""
    if out is not None:
        rundir.check_writable(out, needed_bytes)


def check_size(run: dict[str, Any]) -> None:
    """Enough examples for the splits that can be known before loading, and enough memory
    for the model: checked before any data is read or any array allocated."""
    plan_.check_examples(run["dataset"], run["n"])
    inputs, classes = plan_.SHAPES[run["dataset"]]
    n = plan_.examples(run["dataset"], run["n"])
    rows = min(run["batch_size"] or n, n)
    slots = plan_.OPTIMIZER_SLOTS[run["optimizer"]]
    hidden = run["hidden"]
    listed = ",".join(map(str, hidden[:plan_.MAX_GROUPS]))      # one short line, however many
    if len(hidden) > plan_.MAX_GROUPS:
        listed += f",… ({len(hidden)} sizes)"
    what = " ".join([f"--hidden {listed}"]
                    + [f"--{k.replace('_', '-')} {run[k]}" for k in ("n", "batch_size")
                       if run[k] is not None])
    plan_.check_memory(what, [inputs, *run["hidden"], classes], rows, slots,
                       plan_.data_bytes(run["dataset"], n))


def load_splits(run: dict[str, Any], data_dir: str | None) -> data_.Splits:
    """The dataset, split as load_dataset splits it, once every split is known to hold at
    least one example (load_dataset itself treats an empty split as a programming error)."""
    splits = data_.load_dataset(run["dataset"], data_dir=data_dir, n=run["n"], seed=run["seed"])
    plan_.check_split(run["dataset"], run["n"], len(splits.x_train), len(splits.x_test),
                      run["val_fraction"])
    if not run["val_fraction"]:
        return splits
    x_train, y_train, x_val, y_val = data_.train_val_split(
        splits.x_train, splits.y_train, run["val_fraction"], run["seed"])
    return dataclasses.replace(splits, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def _save_bytes(sizes: list[int], optimizer: str) -> int:
    """A lower bound of the bytes a save writes: model.npz, and resume.npz with the
    optimizer's state."""
    params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    return 4 * params * (2 + plan_.OPTIMIZER_SLOTS[optimizer])


# --- building and running ------------------------------------------------------------------

def _optimizer(run: dict[str, Any], model: MLP) -> optim.Optimizer:
    name, lr, wd = run["optimizer"], run["lr"], run["weight_decay"]
    make: Callable[..., optim.Optimizer] = optim.OPTIMIZERS[name]   # each its own options
    if name in MOMENTUM_OPTIMIZERS:
        return make(model, lr=lr, momentum=run["momentum"], weight_decay=wd)
    return make(model, lr=lr, weight_decay=wd)


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


@dataclasses.dataclass
class Saved:
    """A run directory given to --resume, verified: its manifest, where each file's
    verified bytes are, and the metadata of its resume.npz."""

    directory: Path
    manifest: dict[str, Any]
    files: dict[str, Path]
    metadata: dict[str, Any]


def read_saved(directory: Path) -> Saved:
    """The run saved in ``directory``, after checking that its files form one saved epoch.
    A save that committed but was stopped before renaming its files is finished first."""
    try:
        rundir.settle(directory)
    except OSError:
        pass              # a read-only copy: verify() reads the staged files where they are
    manifest, files = rundir.verify(directory, required=("resume.npz", "model.npz"))
    meta, _ = serialization.read(files["resume.npz"])
    metadata = meta.get("metadata", {})
    if not isinstance(metadata, dict) or "resume" not in metadata or "run" not in metadata:
        raise UsageError(f"--resume {directory}: resume.npz was not written by handgrad train "
                         f"--out (no run recorded in it)")
    return Saved(directory, manifest, files, metadata)


def _check_same_data(args: argparse.Namespace, saved: Saved, data: str) -> None:
    """--resume continues a run on the data it was trained on: the checksum of the splits
    loaded now must be the run's (a run saved before handgrad recorded one is taken)."""
    recorded = saved.metadata["resume"].get("data")
    if recorded is not None and recorded != data:
        where = f"--data-dir {args.data_dir}" if args.data_dir is not None else "the data found"
        raise UsageError(f"--resume {args.resume}: {where} is not the data the run was trained "
                         f"on (checksum {data}, the run's {recorded}); --resume continues a run "
                         f"on its own data: pass the --data-dir it was trained with")


def _say_unrecorded(args: argparse.Namespace, saved: Saved, run: dict[str, Any]) -> None:
    """A run saved before handgrad recorded an option resumes with the value that option
    had by default then; say so on stderr, since the run may have been given another."""
    for key in UNRECORDED_BEFORE:
        if key not in saved.metadata["run"] and getattr(args, key, None) is None:
            option = f"--{key.replace('_', '-')}"
            print(f"handgrad: note: {args.resume} does not record {option} (saved by an older "
                  f"handgrad); resuming with {option} {run[key]}, the default then: if the run "
                  f"was started with another {option}, give it for a bit-for-bit resume",
                  file=sys.stderr)


class _Run:
    """A model, its optimizer and schedule, and the state at the end of the last complete
    epoch (what resume.npz holds, so that --resume continues exactly from there).

    Two checkpoints: ``model.npz`` is the model the run produced (under early stopping, the
    best epoch's weights, which the test metrics describe); ``resume.npz`` is the last
    complete epoch with the optimizer state, the schedule, the random generators and the
    history. Both are saved together with the history and the curves, as one unit
    (``rundir.commit``)."""

    def __init__(self, run: dict[str, Any], sizes: list[int], splits: data_.Splits):
        self.run = run
        self.data = splits.fingerprint()        # checksums of its data: all of it (--resume)
        self.test_data = splits.test_fingerprint()     # and its test split (evaluate)
        self.source = splits.source             # where the data was read, or how generated
        self.model = MLP(sizes, activation=run["activation"], dropout=run["dropout"],
                         init=run["init"], seed=run["seed"])
        self.optimizer = _optimizer(run, self.model)
        self.scheduler = _schedule(run, self.optimizer)
        self.history = History()
        self.snapshot: dict[str, Any] = {}
        self.take_snapshot(0, None)

    @property
    def epochs_done(self) -> int:
        return int(self.snapshot["epochs_done"])

    @property
    def best(self) -> dict[str, np.ndarray] | None:
        """The best epoch's weights (early stopping), as of the last complete epoch."""
        return self.snapshot["best"]

    def take_snapshot(self, epochs_done: int, best: dict[str, np.ndarray] | None) -> None:
        # Built aside, then assigned in one step: a Ctrl-C that aborts fit in the middle
        # leaves the previous epoch's snapshot whole.
        snapshot = {
            "params": self.model.state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": [g.bit_generator.state for g in _generators(self.model)],
            "epochs_done": epochs_done,
            "history": copy.deepcopy(self.history.to_dict()),
            "best": best,
        }
        self.snapshot = snapshot

    def end_of_epoch(self, epoch: int, record: dict[str, float]) -> None:
        best = self.model.state_dict() if self.history.best_epoch == epoch else self.best
        self.take_snapshot(epoch, best)

    def restore(self, saved: Saved) -> None:
        """Put back the state saved in the verified run directory into the model, the
        optimizer, the schedule and the random generators."""
        path = saved.files["resume.npz"]
        ck = serialization.load(path, self.model, optimizer=self.optimizer)
        generators = _generators(self.model)
        try:         # the metadata is untrusted too: any malformed part is the file's fault
            resume = serialization.metadata_of(ck)["resume"]
            history = History.from_dict(resume["history"])
            epochs_done = int(resume["epochs_done"])
            if len(history.epochs) != epochs_done or len(generators) != len(resume["rng"]):
                raise ValueError("epochs or random generators do not match the run")
            if epochs_done != saved.manifest["epochs_done"]:
                raise ValueError(f"it holds epoch {epochs_done}, {rundir.MANIFEST} says "
                                 f"{saved.manifest['epochs_done']}")
            if self.scheduler is not None:
                self.scheduler.load_state_dict(resume["scheduler"])
            for g, state in zip(generators, resume["rng"], strict=True):
                g.bit_generator.state = state
        except (KeyError, TypeError, ValueError) as e:
            raise serialization.CheckpointError(f"{path}: malformed resume state ({e})") from None
        self.history = history
        best = None
        if history.best_epoch is not None:
            # Loaded into this run's architecture: a model.npz of another one is one line.
            best = serialization.load(saved.files["model.npz"], copy.deepcopy(self.model),
                                      check_finite=True).state_dict()
        self.take_snapshot(epochs_done, best)

    def save(self, out: Path, test: dict[str, float] | None,
             interrupted: bool) -> tuple[list[Path], dict[str, str]]:
        """Write the last complete epoch: model.npz, resume.npz, history.json and the
        curves, committed together. Returns the files written and, for each file skipped,
        why (no epoch to draw, no gradient norms recorded, matplotlib missing)."""
        snap = self.snapshot
        last = copy.deepcopy(self.model)
        last.load_state_dict(snap["params"])
        produced = copy.deepcopy(last)
        if self.run["early_stopping"] is not None and snap["best"] is not None:
            produced.load_state_dict(snap["best"])
        meta = {"dataset": self.run["dataset"], "seed": self.run["seed"], "run": self.run,
                "test": test, "interrupted": interrupted, "test_data": self.test_data,
                "data_source": self.source}
        resume = dict(meta, resume={**{k: snap[k] for k in ("scheduler", "rng", "epochs_done",
                                                              "history")}, "data": self.data})
        history = History.from_dict(snap["history"])
        skipped: dict[str, str] = {}
        writers = {
            "resume.npz": lambda p: serialization.save(last, p, metadata=resume,
                                                       optimizer_state=snap["optimizer"]),
            "model.npz": lambda p: serialization.save(produced, p, metadata=meta),
            # The epochs saved, and whether the run was interrupted (a Ctrl-C after them)
            "history.json": lambda p: _write_text(p, json.dumps(
                dict(snap["history"], interrupted=self.history.interrupted), indent=1)),
            "curves.png": lambda p: _plot("curves.png", history, p, skipped),
            "grad_norms.png": lambda p: _plot("grad_norms.png", history, p, skipped),
        }
        before = rundir.read_manifest(out) if (out / rundir.MANIFEST).exists() else None
        try:
            return rundir.commit(out, writers, snap["epochs_done"]), skipped
        except OSError as e:
            kept = (f"it still holds the run saved after epoch {before['epochs_done']}"
                    if before else "nothing of this run was saved")
            raise rundir.RunDirError(f"cannot save the run in {out}: "
                                     f"{e.strerror or e}; {kept}") from None


def _plot(name: str, history: History, path: Path, skipped: dict[str, str]) -> Path | None:
    """Draw curves.png or grad_norms.png into ``path``, or say in ``skipped`` why not."""
    if not history.epochs:
        skipped[name] = "no complete epoch to draw"
        return None
    if name == "grad_norms.png" and not history.grad_norms:
        skipped[name] = "no gradient norms were recorded"
        return None
    from . import plots
    try:
        if name == "curves.png":
            plots.plot_history(history, path)
        else:
            plots.plot_gradient_norms(history, path)
    except plots.MatplotlibMissing:
        skipped[name] = 'matplotlib is not installed: pip install "handgrad[plot]"'
        return None
    return path


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# Signals taken as a Ctrl-C while a run trains: what `timeout`, `docker stop`, Slurm and
# systemd send (SIGTERM), and a closed terminal (SIGHUP). They killed the process with
# every trained epoch unsaved.
_AS_CTRL_C = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class _HeldInterrupts:
    """Ctrl-C while this is active (outside fit, which has its own handler) is recorded,
    not raised: the run is saved whole first. SIGTERM and SIGHUP go to whichever Ctrl-C
    handler is current (fit's during training, this one's outside it), so they save the
    run as Ctrl-C does. Outside the main thread it does nothing."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_HeldInterrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._handle)
            for signum in _AS_CTRL_C:
                self.previous[signum] = signal.signal(signum, _as_ctrl_c)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def _as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM or SIGHUP: what the current Ctrl-C handler does."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:                                       # SIG_IGN or SIG_DFL: stop as Ctrl-C would
        raise KeyboardInterrupt


def _fit(state: _Run, run: dict[str, Any], splits: data_.Splits, loss_fn: CrossEntropyLoss,
         args: argparse.Namespace, record_grad_norms: bool) -> TrainingError | None:
    """Train from the state's last complete epoch; a TrainingError is returned (the state
    keeps its last good epoch). A second Ctrl-C aborts fit at once: the last complete epoch
    is still in the snapshot, and the history says interrupted."""
    val = (splits.x_val, splits.y_val) if splits.x_val is not None else None
    try:
        # fit checks every loss and gradient for NaN/Inf itself: numpy's warnings about
        # them would only come before the one line that says so.
        with np.errstate(all="ignore"):
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
                                compile=args.compile, record_grad_norms=record_grad_norms,
                                threads=None if run["threads"] == "none" else run["threads"])
    except TrainingError as e:
        return e
    except KeyboardInterrupt:
        state.history.interrupted = True
    return None


def train(args: argparse.Namespace) -> int:
    saved = read_saved(args.resume) if args.resume is not None else None
    run = run_config(args, saved.metadata["run"] if saved else None)
    if saved is not None:
        _say_unrecorded(args, saved, run)
    out = args.out if args.out is not None else args.resume
    check_size(run)
    plan_.check_data_dir(run["dataset"], args.data_dir)
    inputs, classes = plan_.SHAPES[run["dataset"]]
    check_out(out, _save_bytes([inputs, *run["hidden"], classes], run["optimizer"]))

    splits = load_splits(run, args.data_dir)
    sizes = [int(np.prod(splits.input_shape))] + run["hidden"] + [splits.num_classes]
    state = _Run(run, sizes, splits)
    if saved is not None:
        _check_same_data(args, saved, state.data)
        state.restore(saved)
        if state.history.stopped_early:
            raise UsageError(f"--resume {args.resume}: the run stopped early (no improvement "
                             f"since epoch {state.history.best_epoch}); nothing to continue")
        if state.epochs_done >= run["epochs"]:
            raise UsageError(f"--resume {args.resume}: the run already has {state.epochs_done} "
                             f"epochs; ask for more with --epochs")
    loss_fn = CrossEntropyLoss(label_smoothing=run["label_smoothing"])
    print(f"handgrad: {run['dataset']} from {splits.source}: {len(splits.x_train)} train / "
          f"{0 if splits.x_val is None else len(splits.x_val)} val / {len(splits.x_test)} test "
          f"examples; MLP {sizes} {run['activation']}, {run['optimizer']} lr={run['lr']}, "
          f"{run['epochs']} epochs, batch {run['batch_size'] or 'full'}"
          + (f", resuming after epoch {state.epochs_done}" if saved else ""), flush=True)

    first = state.epochs_done + 1          # this invocation's first epoch
    start = time.perf_counter()
    with _HeldInterrupts() as ctrl_c:      # from here on a Ctrl-C waits for the save
        failure = _fit(state, run, splits, loss_fn, args, record_grad_norms=out is not None)
        seconds = time.perf_counter() - start
        completed = failure is None and not state.history.interrupted   # fit ran to its end
        test, test_failure = None, None
        if completed and not ctrl_c.requested:
            try:
                with np.errstate(all="ignore"):
                    test = evaluate(state.model, loss_fn, (splits.x_test, splits.y_test))
            except NonFiniteEvaluation as e:     # the trained epochs are still saved below
                test_failure = (f"training ended, but on the test set the {e.what} are {e.value}"
                                if e.what == "outputs" else
                                f"training ended, but on the test set the {e.what} is {e.value}")
                test_failure += ": the trained weights overflow there (lower --lr)"
        # A new run stopped before its first epoch has nothing of its own to save: what is
        # already in --out (a finished run, maybe one an older handgrad saved without a
        # manifest, or the user's own model.npz) is kept rather than replaced by weights
        # that never trained.
        kept = out is not None and saved is None and state.epochs_done == 0 \
            and rundir.holds_files(out)
        written, skipped = (state.save(out, test, interrupted=not completed)
                            if out is not None and not kept else ([], {}))
    saved_where = (f"; no epoch completed, so nothing was saved and {out} keeps the files "
                   f"that were there" if kept else
                   "" if out is None else f"; the state after epoch {state.epochs_done} is saved")
    if written:
        print("wrote " + ", ".join(str(p) for p in written))
    if skipped:
        print("skipped " + "; ".join(f"{name} ({why})" for name, why in skipped.items()))
    if failure is not None:
        raise UsageError(f"{failure}{saved_where}" + (f" in {out}" if written else ""))
    if test_failure is not None:
        raise UsageError(test_failure + (f"; the trained run is saved in {out}, without a test "
                                         f"result" if written else ""))
    if not completed or ctrl_c.requested:
        where = ("" if out is None else f"; the finished run is saved in {out}" if completed else
                 saved_where if kept else
                 f"{saved_where}: continue with handgrad train --resume {out}")
        print(f"interrupted after {seconds:.1f} s{where}", file=sys.stderr)
        return 130
    print(_summary(state.history, first, seconds))
    assert test is not None
    print(f"test loss: {test['loss']:.4f}{_smoothed(run['label_smoothing'])}")
    print(f"test accuracy: {test['accuracy']:.4f}")
    return 0


def _summary(history: History, first: int, seconds: float) -> str:
    """What this invocation trained (epochs ``first`` on: a resumed run's time is of them
    alone) and the last epoch's metrics; under early stopping with another best epoch, the
    epoch whose weights the model keeps, which the test lines below score."""
    def metrics(record: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k.startswith(("train_", "val_")))

    done = len(history.epochs)
    epochs = (f"{done} epochs" if first == 1 else f"epoch {done}" if first == done else
              f"epochs {first}-{done}") + ("" if first == 1 else f" (resumed after epoch {first - 1})")
    line = f"trained {epochs} in {seconds:.1f} s: {metrics(history.epochs[-1])}"
    best = history.best_epoch
    if best is not None and best != done:
        line += (f"\nthe model keeps epoch {best}'s weights (early stopping: "
                 f"{metrics(history.epochs[best - 1])}), which the test below scores")
    return line


def _smoothed(label_smoothing: float) -> str:
    """What the test loss line adds when the run's loss smooths its labels (the loss then
    differs from plain cross-entropy: say which it is)."""
    return f" (cross-entropy with label smoothing {label_smoothing:g}, as trained)" \
        if label_smoothing else ""


def demo_cmd(args: argparse.Namespace) -> int:
    from . import demos
    if args.out is not None:
        rundir.check_writable(args.out, files=())
    sizes = [2, *[args.width] * args.depth, 3]
    rows = plan_.examples("spirals", None) * 4 // 5          # the training split, full batch
    plan_.check_memory(f"--depth {args.depth} --width {args.width}", sizes, rows, slots=0)
    result = demos.vanishing_gradients(depth=args.depth, width=args.width, steps=args.steps)
    print(f"Gradient norm of each layer's weights (layer 1 is next to the input), MLP with "
          f"{args.depth} hidden layers of {args.width} on spirals, at initialisation and "
          f"after {args.steps} full-batch SGD steps:")
    print(demos.table(result))
    if args.out is not None:
        rundir.make(args.out)
        (args.out / "vanishing.json").write_text(json.dumps(result, indent=1))
        png = args.out / "vanishing.png"
        try:
            demos.plot_vanishing(result, png)
        except MatplotlibMissing as e:
            print(f"wrote {args.out / 'vanishing.json'}; skipped vanishing.png ({e})")
        else:
            print(f"wrote {args.out / 'vanishing.json'}, {png}")
    return 0


def evaluate_cmd(args: argparse.Namespace) -> int:
    model = serialization.load(args.checkpoint)     # an MLP: the architecture it rebuilds
    assert isinstance(model, MLP)
    meta = serialization.metadata_of(model)
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise UsageError(f"{args.checkpoint}: no dataset recorded; pass --dataset")
    if dataset not in data_.DATASETS:
        raise UsageError(f"{args.checkpoint}: the recorded dataset {dataset!r} is not one of "
                         f"{', '.join(data_.DATASETS)}; pass --dataset")
    seed = args.seed if args.seed is not None else meta.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= opt_.MAX_SEED:
        raise UsageError(f"{args.checkpoint}: the recorded seed {seed!r} is not a seed; "
                         f"pass --seed")
    check_fits(args.checkpoint, model, dataset)
    plan_.check_data_dir(dataset, args.data_dir)
    if args.seed is not None and dataset not in data_.GENERATORS:
        raise UsageError(f"--seed draws another sample of a generated dataset, but the test "
                         f"split of {dataset} is its official one: leave --seed out")
    splits = _test_data(args.checkpoint, meta, dataset, args.data_dir, seed)
    other = _other_test_data(args, meta, dataset, splits)
    run = meta.get("run")
    smoothing = run.get("label_smoothing", 0.0) if isinstance(run, dict) else 0.0
    with np.errstate(all="ignore"):    # a NaN loss is reported as the number it is
        scores_loss = evaluate(model, CrossEntropyLoss(label_smoothing=smoothing),   # train's loss
                               (splits.x_test, splits.y_test))
    print(f"{args.checkpoint}: {type(model).__name__} {model.config['sizes']} on {dataset} "
          f"({len(splits.x_test)} test examples) from {splits.source}{other}")
    print(f"test loss: {scores_loss['loss']:.4f}{_smoothed(smoothing)}")
    print(f"test accuracy: {scores_loss['accuracy']:.4f}")
    return 0


def _test_data(checkpoint: Path, meta: dict[str, Any], dataset: str, data_dir: str | None,
               seed: int) -> data_.Splits:
    """The dataset split as the run recorded in ``meta`` split it (``load_splits``): for the
    dataset it was trained on, the recorded ``--n`` too (for a generated dataset it decides
    the test split), so that an unchanged checkpoint scores the test metrics train recorded."""
    run = meta.get("run")
    n = run["n"] if isinstance(run, dict) and run.get("dataset") == dataset else None
    what = f"{checkpoint} records --n {n}" if n is not None else f"{checkpoint}"
    plan_.check_examples(dataset, n, what)
    plan_.check_data_memory(what, dataset, n)
    splits = data_.load_dataset(dataset, data_dir=data_dir, n=n, seed=seed)
    if len(splits.x_test) == 0:
        raise UsageError(f"{what}, which leaves no test example of {dataset}")
    return splits


def _other_test_data(args: argparse.Namespace, meta: dict[str, Any], dataset: str,
                     splits: data_.Splits) -> str:
    """"" when the test split loaded is the one the model was saved with (or none was
    recorded, or another dataset was asked for); a note when it differs and --data-dir or
    --seed asked for other data; a UsageError when it differs and nobody asked for it (the
    default search found other files than the run's: the metrics would be of other data)."""
    recorded = meta.get("test_data") if "run" in meta else None    # else a key of the user's
    if recorded is None or dataset != meta.get("dataset") or recorded == splits.test_fingerprint():
        return ""
    if args.data_dir is None and args.seed is None:
        raise UsageError(f"{args.checkpoint}: the test data found ({splits.source}) is not the "
                         f"test data the model was trained with ({meta.get('data_source')}): "
                         f"pass --data-dir")
    return " (not the test data the model was trained with)"


def check_fits(checkpoint: Path, model: MLP, dataset: str) -> None:
    """The model must take the dataset's inputs and score exactly its classes."""
    inputs, classes = plan_.SHAPES[dataset]
    sizes = model.config["sizes"]
    if sizes[0] != inputs or sizes[-1] != classes:
        raise UsageError(f"--dataset {dataset} has {inputs} inputs and {classes} classes, but "
                         f"the model in {checkpoint} takes {sizes[0]} inputs and scores "
                         f"{sizes[-1]} classes")


class OutputError(UserInputError):
    """Standard output is closed or cannot be written (a full disk, /dev/full)."""


class _GuardedStdout:
    """sys.stdout, with write errors turned into OutputError (one line, status 2). A reader
    that went away (BrokenPipeError) is left to main, which stops quietly."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def _guard(self, call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputError(f"cannot write to standard output: {e.strerror or e}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


# Errors that describe the user's input (options, files, data): one line, status 2. The
# OS errors are about the paths the user named; engine's check command has its own.
USER_ERRORS = (UserInputError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
               PermissionError, check_cli.UsageError, check_cli.HypothesisMissing)


def main(argv: Sequence[str] | None = None) -> int:
    if sys.stdout is None:               # started with stdout closed (handgrad train >&-)
        print("handgrad: error: standard output is closed; nothing could show the results",
              file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)      # (the parser imports graphviz: slow)
    except KeyboardInterrupt:
        print("handgrad: interrupted", file=sys.stderr)
        return 130
    command = {"train": train, "draw": draw_command, "evaluate": evaluate_cmd,
               "demo": demo_cmd, "check": check_cli.check_command}[args.command]
    stdout = sys.stdout
    sys.stdout = _GuardedStdout(stdout)
    try:
        status = command(args)
        sys.stdout.flush()                   # a closed pipe shows here, inside the handler
        return status
    except USER_ERRORS as e:
        if isinstance(e, OutputError):
            _silence(stdout)
        print(f"handgrad: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`handgrad train | head`): stop quietly.
        _silence(stdout)
        return 0
    except KeyboardInterrupt:            # Ctrl-C outside training: nothing was written
        print("handgrad: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout = stdout


def _silence(stdout: Any) -> None:
    """Point stdout at devnull so that the interpreter's final flush does not fail again."""
    try:
        fd = stdout.fileno()
    except (OSError, ValueError, AttributeError):
        return                            # not a real file (captured by a test)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
