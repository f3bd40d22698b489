"""What ``fit`` does besides the steps, as small objects the loop calls (Keras callbacks,
Chainer extensions): ``LRSchedule``, ``GradNormRecorder``, ``Progress``, ``EarlyStopping``.
Each works in a loop of your own as well; call the hooks where ``fit`` would::

    step = EagerStep(model, loss_fn, opt)          # nn/step.py; or compile_step(...).replay
    stopper, norms = EarlyStopping(model, patience=3, monitor="train_loss"), GradNormRecorder(model)
    for epoch in range(1, 21):
        for i, (xb, yb) in enumerate(batches(epoch), start=1):
            loss, scores = step(xb, yb)
            norms.on_step_end(epoch, i, loss, scores, yb)
        stopper.on_record(epoch, {"epoch": epoch, "train_loss": ...})
        if stopper.stop:
            break
    stopper.restore()

The hooks, in the order ``fit`` calls them (every one a no-op in ``Callback``):
``on_train_begin(history, epochs, steps_per_epoch)``; per epoch ``on_epoch_begin(epoch)``,
after each step ``on_step_end(epoch, step, loss, scores, targets)``, after the epoch's last
step ``on_epoch_end(epoch)`` (before it is evaluated: where per-epoch schedules step; the
record keeps the rate the epoch trained with, read before), then ``on_record(epoch, record)`` once the
epoch's record is complete and in the History; ``on_train_end()`` at the end, also after an
error. A callback that sets ``stop`` ends ``fit`` after the current epoch.
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable

import numpy as np

from handgrad.engine.plain import plain_repr

from . import progress as progress_
from .data import check_flag
from .finite import l2_norm
from .history import History
from .module import Module
from .optim import LRScheduler


class Callback:
    """The hooks a training loop calls (all no-ops here); ``stop`` asks the loop to end
    after the current epoch."""

    stop: bool = False

    def on_train_begin(self, history: History, epochs: int, steps_per_epoch: int) -> None:
        """Before the first step; ``history`` may already hold epochs (a resumed run)."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Before the first step of ``epoch`` (counted from 1)."""

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        """After step ``step`` of ``epoch`` updated the weights: its loss (under ``fit``
        per example, as in ``History.steps``: a ``reduction="sum"`` loss divided by the
        batch size), the model's outputs for the batch and the batch's targets."""

    def on_epoch_end(self, epoch: int) -> None:
        """After the epoch's last step, before it is evaluated and recorded."""

    def on_record(self, epoch: int, record: dict[str, float]) -> None:
        """The epoch's record (train and validation metrics, ``lr``, ``seconds``, and under
        ``fit`` the epoch's number of steps, ``steps``) is done."""

    def on_train_end(self) -> None:
        """After the last epoch, an interruption or an error."""


# Which way a metric improves, from the words of its name (EarlyStopping's mode="auto").
_UPWARDS = {"acc", "accuracy", "precision", "recall", "f1", "auc"}
_DOWNWARDS = {"loss", "error", "err", "mse", "mae", "rmse", "perplexity"}


def _direction(owner: str, monitor: str, mode: Any) -> str:
    """"min" or "max" for ``monitor`` under ``mode`` ("auto": from the metric's name)."""
    if mode in ("min", "max"):
        return str(mode)
    if mode != "auto":
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {plain_repr(mode)}")
    words = set(re.split(r"[^a-z0-9]+", monitor.lower()))    # "val_loss": {"val", "loss"}
    up, down = bool(words & _UPWARDS), bool(words & _DOWNWARDS)
    if up != down:
        return "max" if up else "min"
    raise ValueError(f"{owner}: cannot tell from its name whether {monitor!r} improves "
                     f"upwards or downwards; pass mode='max' or mode='min'")


class LRSchedule(Callback):
    """Steps ``scheduler`` after every step (``per_step=True``) or every epoch."""

    def __init__(self, scheduler: LRScheduler, per_step: bool = False):
        if not isinstance(scheduler, LRScheduler):
            raise TypeError(f"LRSchedule: expected an nn.optim scheduler, got {type(scheduler).__name__}")
        check_flag("LRSchedule: per_step", per_step)
        self.scheduler, self.per_step = scheduler, per_step

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        if self.per_step:
            self.scheduler.step()

    def on_epoch_end(self, epoch: int) -> None:
        if not self.per_step:
            self.scheduler.step()


class GradNormRecorder(Callback):
    """The L2 norm of each parameter's gradient after every step (NaN at a step without
    one), by parameter name, in ``norms`` (the History's ``grad_norms`` under ``fit``: what
    ``plots.plot_gradient_norms`` draws as ‖∂L/∂W‖). One dot product per parameter per step.

    A step that clips (``clip_grad_norm``) scales the optimizer's gradients in place before
    this runs; given that ``step`` (``fit`` gives its own), the recorder divides their norms
    by the step's ``last_clip_scale``, so that it records the norms backward computed (to
    float32 rounding), where exploding gradients show, not the clipped ones."""

    def __init__(self, model: Module, step: Any = None):
        if not isinstance(model, Module):
            raise TypeError(f"GradNormRecorder: model must be an nn.Module, got {type(model).__name__}")
        self.named = model.named_parameters()
        self.norms: dict[str, list[float]] = {}
        self.step = step
        self.steps = 0          # the steps recorded (with fit: the History's, before the run too)

    def on_train_begin(self, history: History, epochs: int, steps_per_epoch: int) -> None:
        self.norms = history.grad_norms
        self.steps = len(history.steps)

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        """Each list lines up with the steps (entry i: step i + 1): a step where a
        parameter had no gradient (frozen) gets NaN, once it has had one (a list drawn
        by position showed a norm at the wrong step)."""
        self.steps += 1
        scale = 1.0 if self.step is None else self.step.last_clip_scale
        clipped = {id(p) for p in self.step.optimizer.params} if scale != 1.0 else set()
        for name, p in self.named:
            g = p.grad
            norms = self.norms.get(name)
            if g is None and norms is None:
                continue                        # never had one: no list
            if norms is None:
                norms = self.norms[name] = []
            norms.extend([math.nan] * (self.steps - 1 - len(norms)))   # steps without one
            if g is None:
                norms.append(math.nan)
                continue
            norm = l2_norm(g)
            norms.append(norm / scale if id(p) in clipped else norm)


class Progress(Callback):
    """What the loop shows, ``verbose`` as in ``fit`` (nn/progress.py): 0 nothing, 1 a
    progress bar, 2 one line per epoch, "auto" a bar on a terminal, else lines."""

    def __init__(self, verbose: int | str = "auto", progress: bool | None = None):
        self.verbose = progress_.resolve_verbose(verbose, progress)
        self.display: progress_.Progress | None = None

    def on_train_begin(self, history: History, epochs: int, steps_per_epoch: int) -> None:
        total = (epochs - len(history.epochs)) * steps_per_epoch
        self.display = progress_.Progress(self.verbose, total, epochs)

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        if self.display is not None:
            self.display.step(epoch, loss)

    def on_record(self, epoch: int, record: dict[str, float]) -> None:
        if self.display is not None:
            self.display.epoch(record)

    def on_train_end(self) -> None:
        if self.display is not None:
            self.display.close()


class EarlyStopping(Callback):
    """Stops when ``monitor`` (a key of the epoch records: "val_loss", "train_accuracy",
    ...) has not improved for ``patience`` epochs. ``mode`` says which way is better:
    "min", "max", or "auto" (the default, as Keras): "max" for accuracies, precision,
    recall, F1 and AUC, "min" for losses and errors, else a ValueError asking for it.
    Keeps the best epoch's weights in ``best_state``; ``restore()`` puts them back when
    ``restore_best``. Under ``fit`` (its own, from ``early_stopping=``,
    or one in ``callbacks=``) it marks the History's ``best_epoch`` and ``stopped_early``,
    and fit calls ``restore()`` when it ends, as Keras' ``restore_best_weights`` does; in a
    loop of your own, call it yourself."""

    def __init__(self, model: Module, patience: int, monitor: str = "val_loss",
                 restore_best: bool = True, *, mode: str = "auto", owner: str = "EarlyStopping"):
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience <= 0:
            raise ValueError(f"{owner}: patience must be a positive integer, got {patience!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"{owner}: monitor must be the name of a metric (a str), got "
                            f"{plain_repr(monitor)}")
        check_flag(f"{owner}: restore_best", restore_best)
        self.model, self.patience, self.monitor = model, int(patience), monitor
        self.restore_best, self.owner = restore_best, owner
        self.sign = -1.0 if _direction(owner, monitor, mode) == "max" else 1.0
        self.best, self.waited = math.inf, 0
        self.best_epoch: int | None = None
        self.best_state: dict[str, Any] | None = None
        self.history: History | None = None
        self._resumed: History | None = None     # the history resume() recounted

    def on_train_begin(self, history: History, epochs: int, steps_per_epoch: int) -> None:
        """A new run: ``stop``, the best score and epoch, their weights and the epochs
        waited start afresh (as in Keras), so that a stopper passed to a second ``fit``
        keeps nothing of the first; unless ``resume`` was called with this ``history``
        (what ``fit`` does for its own stopper when it resumes a run), whose count holds."""
        if self._resumed is not history:
            self.best, self.waited, self.best_epoch, self.best_state = math.inf, 0, None, None
        self._resumed = None
        self.stop = False
        self.history = history

    def resume(self, history: History, best_state: dict[str, Any] | None) -> None:
        """Recount the best score and the epochs waited since from the ``history`` of a
        run being resumed; ``best_state`` holds the weights of its best epoch. Call it
        before the ``fit`` that continues ``history`` (``fit`` does for its own stopper):
        ``on_train_begin`` with that history then keeps the count."""
        if history.stopped_early:
            raise ValueError(f"{self.owner}: the run being resumed stopped early at epoch "
                             f"{len(history.epochs)}")
        best, waited, best_epoch = math.inf, 0, None
        for record in history.epochs:
            if self.monitor not in record:
                raise ValueError(f"{self.owner}: the history being resumed has no {self.monitor!r}")
            if self.sign * record[self.monitor] < best:
                best, waited, best_epoch = self.sign * record[self.monitor], 0, record["epoch"]
            else:
                waited += 1
        if best_epoch != history.best_epoch:
            raise ValueError(f"{self.owner}: the history's best epoch ({history.best_epoch}) is "
                             f"not the best {self.monitor} in its records (epoch {best_epoch})")
        if self.restore_best and best_state is None:
            raise ValueError(f"{self.owner}: resuming early stopping with restore_best needs "
                             f"best_state= (the weights of epoch {best_epoch})")
        self.best, self.waited, self.best_state = best, waited, best_state
        self.best_epoch = None if best_epoch is None else int(best_epoch)
        self._resumed = history

    def resumed_with(self, history: History) -> bool:
        """Whether ``resume`` was called with ``history`` (and no run has begun since)."""
        return self._resumed is history

    def on_record(self, epoch: int, record: dict[str, float]) -> None:
        if self.monitor not in record:
            why = ("; accuracy is recorded for a softmax classifier only (class scores "
                   "(N, C) against integer labels or probability rows)"
                   if "accuracy" in self.monitor else "")
            raise ValueError(f"{self.owner}: cannot monitor {self.monitor!r}; recorded: "
                             f"{sorted(record)}{why}")
        score = self.sign * record[self.monitor]
        if score < self.best:
            self.best, self.waited, self.best_epoch = score, 0, epoch
            self.best_state = self.model.state_dict()
            if self.history is not None:
                self.history.best_epoch = epoch
        else:
            self.waited += 1
            if self.waited >= self.patience:
                self.stop = True
                if self.history is not None:
                    self.history.stopped_early = True

    def restore(self) -> bool:
        """Put the best weights back (with ``restore_best``, once there are any); whether it did."""
        if self.restore_best and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            return True
        return False


class EpochFunction(Callback):
    """``fn(epoch, record)`` after every epoch's record: ``fit(callback=fn)``."""

    def __init__(self, fn: Callable[[int, dict[str, float]], None]):
        self.fn = fn

    def on_record(self, epoch: int, record: dict[str, float]) -> None:
        self.fn(epoch, record)
