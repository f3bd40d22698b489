"""Training and evaluation loops: ``fit``, ``evaluate``, ``predict``, and the History they keep.

``fit`` is a loop over epochs and batches that runs a step (nn/step.py: eager or compiled)
and calls callbacks (nn/callbacks.py) for everything else: schedules, gradient norms,
progress, early stopping and the user's own."""
from __future__ import annotations

import collections.abc
import contextlib
import functools
import math
import signal
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from . import metrics
from .callbacks import Callback, EarlyStopping, EpochFunction, GradNormRecorder, LRSchedule, Progress
from .data import DataLoader, check_count, check_flag, check_positive
from .finite import all_finite, first_non_finite, non_finite_rows
from .history import History
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module
from .optim import LRScheduler, NonFiniteUpdate, Optimizer
from .step import EagerStep, ReplayStep, Step, TrainingError, non_finite, one_number
from .threads import blas_threads, threads_for

__all__ = ["History", "TrainingError", "fit", "evaluate", "predict", "NonFiniteEvaluation"]


def _split(data: Any, what: str = "data") -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, DataLoader):
        X, y = data.X, data.y
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        X, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise TypeError(f"{what} must be an (X, y) pair or a DataLoader")
    if X.ndim == 0 or y.ndim == 0:
        raise ValueError(f"{what}: inputs and targets need a first (example) axis, got shapes "
                         f"{X.shape} and {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"{what}: {len(X)} inputs but {len(y)} targets")
    if len(X) == 0:
        raise ValueError(f"{what}: the dataset is empty")
    return X, y


def _check_val_data(X: np.ndarray, y: np.ndarray, val_data: Any) -> None:
    """``val_data`` checked before training, not after the first epoch changed the weights:
    finite, and its examples and targets of the shapes and kinds of train_data's (``X``,
    ``y``): a third input column, (N, 1) labels or float labels are errors now."""
    Xv, yv = _split(val_data, "fit: val_data")
    bad = _where_not_finite("fit: val_data", Xv, yv)
    if bad is not None:
        raise ValueError(bad)
    for name, train, val in (("inputs", X, Xv), ("targets", y, yv)):
        if val.shape[1:] != train.shape[1:]:
            raise ValueError(f"fit: val_data: its {name} have shape {val.shape[1:]} per example, "
                             f"train_data's {train.shape[1:]}")
    labels = "iu"
    if (y.dtype.kind in labels) != (yv.dtype.kind in labels):
        raise ValueError(f"fit: val_data: its targets are of dtype {yv.dtype}, train_data's of "
                         f"{y.dtype} (class labels are integers, probabilities floats)")


def _check_loader(loader: DataLoader) -> None:
    """A DataLoader that ``fit`` can train on: one that yields at least one batch."""
    if len(loader) == 0:
        n = len(loader.X)
        raise ValueError(f"fit: train_data: the DataLoader yields no batches: its {n} examples "
                         f"are fewer than batch_size {loader.batch_size}, and drop_last=True "
                         f"drops that partial batch; pass a batch_size of at most {n}, or "
                         f"drop_last=False")


_NOT_SOFTMAX = (MSELoss, BCEWithLogitsLoss)        # regression; independent labels
_NOT_SOFTMAX_OPS = {"mse", "sigmoid_binary_cross_entropy"}


def _is_classification(loss_fn: Any, scores: np.ndarray, y: np.ndarray) -> bool:
    """Whether accuracy (the argmax of each row of scores against its label) means
    something: class scores (N, C) of a softmax classifier, against integer labels (N,) or
    probability rows (N, C). Never for a regression or multi-label loss (MSE, binary
    cross-entropy: the argmax of two regression outputs or of independent labels is no
    class); for a loss of the user's with float targets, only when every row of the
    targets is a distribution (non-negative, summing to 1)."""
    op_name = getattr(loss_fn, "name", None)              # a loss given as an engine op
    if scores.ndim != 2 or scores.shape[1] < 2 or isinstance(loss_fn, _NOT_SOFTMAX) \
            or op_name in _NOT_SOFTMAX_OPS:
        return False
    if y.ndim == 1 and y.dtype.kind in "iu":
        return True
    if y.shape != scores.shape or y.dtype.kind != "f":
        return False
    if isinstance(loss_fn, CrossEntropyLoss) or op_name == "softmax_cross_entropy":
        return True
    return bool(np.all(y >= 0)) and bool(np.allclose(np.add.reduce(y, axis=1), 1.0, atol=1e-3))


def _summed(loss_fn: Any) -> bool:
    """Whether ``loss_fn`` sums over the batch (``reduction="sum"``): fit and evaluate then
    divide its value by the number of examples, so that every loss they record is per
    example (a plain function's loss is taken as a mean). For cross-entropy that is what
    "mean" gives; MSELoss's and BCEWithLogitsLoss's "mean" is per element, so their "sum"
    records the sum over each example's outputs: D times their "mean" for D outputs. The
    reduction is read from the loss's ``reduction`` (nn's losses) or a ``functools.partial``'s
    keyword (``partial(engine.softmax_cross_entropy, reduction="sum")``)."""
    while isinstance(loss_fn, functools.partial):
        if "reduction" in loss_fn.keywords:
            return bool(loss_fn.keywords["reduction"] == "sum")
        loss_fn = loss_fn.func
    return getattr(loss_fn, "reduction", None) == "sum"


def predict(model: Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X (eval mode, no graph), concatenated over batches; for an
    empty X, the model's output for an empty batch (shape (0, n_outputs)). Eval mode holds
    in this thread only (``model.eval_mode()``): a thread training the model keeps its
    dropout, and the flags ``train()``/``eval()`` set are untouched."""
    batch_size = check_positive("predict: batch_size", batch_size)
    X = np.asarray(X)
    with model.eval_mode(), engine.no_grad():     # this thread only: training goes on
        outs = [model(Tensor(X[i:i + batch_size], copy=False)).numpy(copy=True)
                for i in range(0, max(len(X), 1), batch_size)]
    return np.concatenate(outs)


class NonFiniteEvaluation(ValueError):
    """``evaluate``: the model's outputs or the loss are NaN or Inf (``what`` and ``value``
    say which)."""

    def __init__(self, message: str, what: str, value: float):
        super().__init__(message)
        self.what, self.value = what, value


def _where_not_finite(what: str, X: np.ndarray, y: np.ndarray) -> str | None:
    """Which of the data's float inputs or targets hold NaN/Inf (the first example), if any."""
    for name, a in (("inputs", X), ("targets", y)):
        if not all_finite(a):
            count, first = non_finite_rows(a)
            return (f"{what}: the {name} hold NaN/Inf in {count} of {len(a)} examples "
                    f"(the first is example {first})")
    return None


def evaluate(model: Module, loss_fn: Callable[..., Tensor], data: Any,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for classification) of the model on ``data`` = (X, y).
    NaN/Inf is an error, never a score: in the data (a ValueError naming the first example),
    in the model's outputs or in the loss (``NonFiniteEvaluation``, a ValueError)."""
    X, y = _split(data, "evaluate: data")
    bad_data = _where_not_finite("evaluate: data", X, y)
    if bad_data is not None:
        raise ValueError(bad_data)
    scores = predict(model, X, batch_size)
    if not all_finite(scores):
        count, first = non_finite_rows(scores)
        raise NonFiniteEvaluation(
            f"evaluate: the model's outputs are NaN/Inf for {count} of {len(scores)} "
            f"examples (the first is example {first})", "outputs",
            first_non_finite(scores))
    with engine.no_grad():
        value = loss_fn(engine.adopt(scores), y)                  # scores: fresh, ours
    loss = float(one_number("evaluate", value).item())
    if _summed(loss_fn):
        loss /= max(len(X), 1)                              # per example, as fit records it
    if not math.isfinite(loss):
        raise NonFiniteEvaluation(f"evaluate: the loss is {loss} (the data and the outputs are "
                                  f"finite)", "loss", loss)
    out = {"loss": loss}
    if _is_classification(loss_fn, scores, y):
        out["accuracy"] = metrics.accuracy(scores, y)
    return out


def _batches(X: np.ndarray, y: np.ndarray, batch_size: int, shuffle: bool, seed: int,
             epoch: int) -> Any:
    """The minibatches of one epoch. The order is a function of (seed, epoch) alone, so a
    run resumed at epoch e sees exactly the batches the uninterrupted run saw."""
    n = len(X)
    if not shuffle:
        for i in range(0, n, batch_size):
            yield X[i:i + batch_size].copy(), y[i:i + batch_size]   # copies: fresh batches
        return
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for i in range(0, n, batch_size):
        idx = order[i:i + batch_size]
        yield X[idx], y[idx]


class _Interrupts:
    """Ctrl-C during fit: the first sets a flag that the loop reads between steps, so the
    model is never left half-updated; a second one aborts at once (KeyboardInterrupt).
    Outside the main thread signals cannot be caught and nothing changes."""

    def __init__(self) -> None:
        self.requested = False
        self.previous: Any = None
        self.installed = False

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
            self.installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)


class _Tally(Callback):
    """The epoch's running train loss and accuracy (a classifier's outputs must be finite:
    -inf logits keep the loss finite but are no score)."""

    def __init__(self, loss_fn: Any):
        self.loss_fn = loss_fn
        self._buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.on_epoch_begin(0)

    def on_epoch_begin(self, epoch: int) -> None:
        self.start = time.perf_counter()
        self.total_loss, self.correct, self.seen, self.classification = 0.0, 0, 0, False
        # A batch whose targets are no class labels (a zero row among probability rows, with
        # a loss of the user's): the epoch then records no accuracy, as evaluate() records
        # none for such data, rather than one batch's hits over every batch's examples.
        self.unscored = False
        self.steps = 0

    def on_step_end(self, epoch: int, step: int, loss: float, scores: np.ndarray,
                    targets: Any) -> None:
        n = len(targets)
        self.total_loss += loss * n                 # loss: the step's mean per example
        targets = np.asarray(targets)
        if _is_classification(self.loss_fn, scores, targets):
            if not all_finite(scores):
                raise non_finite("the model's outputs", first_non_finite(scores),
                                 "the weights of that step (finite)")
            self.classification = True
            self.correct += self._count_correct(scores, targets)
        else:
            self.unscored = True
        self.seen += n
        self.steps += 1

    def _count_correct(self, scores: np.ndarray, targets: np.ndarray) -> int:
        """How many rows of ``scores`` (finite) have their argmax at the label: integer
        labels through buffers kept per batch size (no temporaries at each step); one-hot
        targets through ``metrics.accuracy``."""
        if targets.ndim != 1:
            return int(round(metrics.accuracy(scores, targets) * len(targets)))
        n, classes = len(targets), scores.shape[1]
        # Labels outside [0, C) never match an argmax: they would count as wrong answers.
        # The built-in losses refuse them; a loss of the user's (an NLL by hand) may not.
        if n and (np.maximum.reduce(targets) >= classes or np.minimum.reduce(targets) < 0):
            bad = targets[(targets < 0) | (targets >= classes)][0]
            raise ValueError(f"fit: class label {bad} is outside [0, {classes}) for the model's "
                             f"outputs of shape {scores.shape} (the loss took it without error)")
        if n not in self._buffers:
            self._buffers[n] = (np.empty(n, np.intp), np.empty(n, np.bool_))
        predicted, hit = self._buffers[n]
        scores.argmax(axis=1, out=predicted)        # the method: np.argmax without its wrapper
        return int(np.count_nonzero(np.equal(predicted, targets, out=hit)))

    def record(self, epoch: int, lr: float) -> dict[str, float]:
        """The epoch's record: a ValueError, not a division by zero, if it ran no step."""
        if self.seen == 0:
            raise ValueError(f"fit: epoch {epoch} ran no steps: train_data yielded no batches")
        record: dict[str, float] = {"epoch": epoch, "train_loss": self.total_loss / self.seen,
                                    "lr": lr, "seconds": time.perf_counter() - self.start,
                                    "steps": self.steps}
        if self.classification and not self.unscored:
            record["train_accuracy"] = self.correct / self.seen
        return record


class _Where:
    """The epoch and step the loop is at, for the message of a TrainingError."""

    def __init__(self) -> None:
        self.epoch, self.step = 0, 0
        self.lr = math.nan          # the learning rate the last step used


def _check_flags(**flags: Any) -> None:
    """fit's on/off options must be True or False (``data.check_flag``)."""
    for name, value in flags.items():
        check_flag(f"fit: {name}", value)


def _check_hooks(callbacks: Any, history: Any) -> list[Callback]:
    """fit's ``callbacks`` as a list (None is none, as in Keras), each an
    ``nn.callbacks.Callback``; ``history`` a History or None. A TypeError before training,
    not an AttributeError from a hook (on_train_end's, which hid the real one)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, collections.abc.Sequence):
        raise TypeError(f"fit: callbacks must be a list of nn.callbacks.Callback, got "
                        f"{plain_repr(callbacks)} (a {type(callbacks).__name__})")
    for i, cb in enumerate(callbacks):
        if not isinstance(cb, Callback):
            also = (" (a function of (epoch, record) goes in callback=)"
                    if callable(cb) and not isinstance(cb, type) else "")
            raise TypeError(f"fit: callbacks[{i}] is {plain_repr(cb)}, a {type(cb).__name__}, "
                            f"not an nn.callbacks.Callback{also}")
    if history is not None and not isinstance(history, History):
        raise TypeError(f"fit: history must be a History (of the run being resumed) or None, "
                        f"got {plain_repr(history)} (a {type(history).__name__})")
    return list(callbacks)


def _check_extras(callbacks: list[Callback], record_grad_norms: bool, scheduler: Any,
                  optimizer: Optimizer, model: Module, early_stopping: int | None = None) -> None:
    """One gradient-norm recorder at most, each schedule stepped by one hook at most, one
    early stopping at most, every schedule (``scheduler`` and the callbacks') on fit's
    optimizer, and the callbacks' stopper and recorder of fit's model: ValueErrors before
    training."""
    recorders = sum(isinstance(cb, GradNormRecorder) for cb in callbacks) + bool(record_grad_norms)
    if recorders > 1:
        which = ("record_grad_norms=True and a GradNormRecorder in callbacks" if record_grad_norms
                 else "two GradNormRecorders in callbacks")
        raise ValueError(f"fit: {which} would each record into history.grad_norms, every norm "
                         f"twice; pass one of them")
    schedules = [cb.scheduler for cb in callbacks if isinstance(cb, LRSchedule)]
    if scheduler is not None:
        schedules.append(scheduler)
    if len({id(s) for s in schedules}) < len(schedules):
        raise ValueError("fit: one schedule is given twice (scheduler= and an LRSchedule in "
                         "callbacks, or two LRSchedules of it): it would step twice per "
                         "epoch or step; pass it once")
    stoppers = sum(isinstance(cb, EarlyStopping) for cb in callbacks) + (early_stopping is not None)
    if stoppers > 1:
        which = ("early_stopping= and an EarlyStopping in callbacks" if early_stopping is not None
                 else "two EarlyStoppings in callbacks")
        raise ValueError(f"fit: {which} would each put their own best weights back, the last "
                         f"one winning, and history.best_epoch would name either; pass one")
    for s in schedules:
        if isinstance(s, LRScheduler) and s.optimizer is not optimizer:
            where = "scheduler" if s is scheduler else "an LRSchedule in callbacks schedules"
            raise ValueError(f"fit: {where} is a {type(s).__name__} of another optimizer than "
                             f"the one fit trains with: its steps would set learning rates "
                             f"that fit never uses; make the schedule on fit's optimizer")
    _check_same_model(callbacks, model)


def _check_same_model(callbacks: list[Callback], model: Module) -> None:
    """An EarlyStopping or a GradNormRecorder in ``callbacks`` must be of fit's model (a
    list of callbacks built once for the first model of a search): one of another model
    restored that model's best weights and recorded its stale gradients."""
    mine = {id(p) for p in model.parameters()}
    for cb in callbacks:
        if isinstance(cb, EarlyStopping) and cb.model is not model or \
                isinstance(cb, GradNormRecorder) and any(id(p) not in mine for _, p in cb.named):
            raise ValueError(f"fit: the {type(cb).__name__} in callbacks was made for another "
                             f"model than the one fit trains: make it on this model")


@contextlib.contextmanager
def _lent_step(step: Step, callbacks: list[Callback]) -> Iterator[None]:
    """Fit's step lent to the GradNormRecorders in ``callbacks`` made without one, while
    fit runs: with it they record the norms backward computed, not the clipped ones, as
    fit's own recorder does (``record_grad_norms=True``)."""
    lent = [cb for cb in callbacks if isinstance(cb, GradNormRecorder) and cb.step is None]
    for cb in lent:
        cb.step = step
    try:
        yield
    finally:
        for cb in lent:
            cb.step = None


MONITORED = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")   # what fit records


def _check_monitor(monitor: Any, early_stopping: Any, val_data: Any, loss_fn: Any) -> None:
    """``monitor`` must be a metric fit records; under early stopping, one this run will
    record: a validation metric needs ``val_data``, an accuracy a loss that can be a
    softmax classifier's (never ``MSELoss`` or ``BCEWithLogitsLoss``). For a loss of the
    user's, whether accuracy is recorded is known at the end of the first epoch only
    (``_is_classification``): EarlyStopping's error then."""
    if not isinstance(monitor, str) or monitor not in MONITORED:
        raise ValueError(f"fit: monitor must be one of {', '.join(map(repr, MONITORED))}, "
                         f"got {plain_repr(monitor)}")
    if early_stopping is None:
        return
    if val_data is None and monitor.startswith("val_"):
        raise ValueError("fit: early stopping on a validation metric needs val_data")
    if monitor.endswith("_accuracy") and (isinstance(loss_fn, _NOT_SOFTMAX)
                                          or getattr(loss_fn, "name", None) in _NOT_SOFTMAX_OPS):
        kind = getattr(loss_fn, "name", None) or type(loss_fn).__name__
        raise ValueError(f"fit: monitor={monitor!r} is never recorded with {kind}: accuracy is "
                         f"recorded for a softmax classifier only; monitor "
                         f"{monitor.replace('accuracy', 'loss')!r}")


def _check_options(epochs: Any, batch_size: Any, initial_epoch: Any, early_stopping: Any,
                   clip_grad_norm: Any, seed: Any) -> None:
    """The option errors of fit (after epochs and verbose), in the order fit has always
    given them, then the seed's."""
    if batch_size is not None:
        check_positive("fit: batch_size", batch_size)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
            or not 0 <= initial_epoch < epochs:
        raise ValueError(f"fit: initial_epoch must be an integer in [0, {epochs}), "
                         f"got {plain_repr(initial_epoch)}")
    if early_stopping is not None:
        check_positive("fit: early_stopping", early_stopping)
    if clip_grad_norm is not None and not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
        raise ValueError(f"fit: clip_grad_norm must be finite and positive, got {plain_repr(clip_grad_norm)}")
    if seed is None:
        raise ValueError("fit: seed must be a non-negative integer, got None: the batch order "
                         "of epoch e is drawn from (seed, e), and a seed drawn at random would "
                         "give a resumed run other batches; pick one (a DataLoader(..., "
                         "seed=None) draws its own and keeps it)")
    check_count("fit: seed", seed)


def _check_resume(history: History, initial_epoch: int, stopper: EarlyStopping | None,
                  best_state: dict[str, Any] | None, scheduler: Any, per_step: bool,
                  callbacks: Sequence[Callback] = ()) -> None:
    """A resumed run (``initial_epoch``, ``history``, ``best_state``, the schedules, an
    EarlyStopping in ``callbacks``) must fit together."""
    recorded = [int(r["steps"]) for r in history.epochs if "steps" in r]
    between = len(recorded) == len(history.epochs) and len(history.steps) == sum(recorded)
    if history.interrupted and not between:     # stopped between epochs: it goes on
        raise ValueError(f"fit: history is of a run interrupted during epoch "
                         f"{len(history.epochs) + 1} (Ctrl-C): the model's weights are from "
                         f"the middle of it, so continuing from its start would not be the "
                         f"run uninterrupted, and its steps would be counted twice. Continue "
                         f"from weights saved at the end of an epoch (a callback, or handgrad "
                         f"train --resume), or start a new History")
    if len(recorded) == len(history.epochs) and len(history.steps) != sum(recorded):
        raise ValueError(f"fit: history holds {len(history.steps)} step losses but its "
                         f"{len(history.epochs)} epoch records account for {sum(recorded)}: "
                         f"the run stopped during epoch {len(history.epochs) + 1} (the "
                         f"history of a TrainingError?), so the model's weights are from the "
                         f"middle of it and its steps would be counted twice. Continue from "
                         f"weights saved at the end of an epoch, or start a new History")
    if len(history.epochs) != initial_epoch:
        raise ValueError(f"fit: history has {len(history.epochs)} epochs but initial_epoch is "
                         f"{initial_epoch}")
    schedules = [(scheduler, per_step)] if isinstance(scheduler, LRScheduler) else []
    schedules += [(cb.scheduler, cb.per_step) for cb in callbacks if isinstance(cb, LRSchedule)]
    for schedule, by_step in schedules if initial_epoch > 0 else []:
        done = len(history.steps) if by_step else initial_epoch
        if schedule.t != done:
            unit = "steps" if by_step else "epochs"
            raise ValueError(f"fit: scheduler has been stepped {schedule.t} times, but the run "
                             f"being resumed stepped it {done} times (once per "
                             f"{unit[:-1]}: {done} {unit}); a schedule that is not restored "
                             f"would start again from its beginning. Restore it first: "
                             f"scheduler.load_state_dict() with the scheduler.state_dict() "
                             f"saved with the checkpoint (as handgrad train --resume does)")
    for cb in callbacks if initial_epoch > 0 else []:
        if isinstance(cb, EarlyStopping) and not cb.resumed_with(history):
            raise ValueError("fit: the EarlyStopping in callbacks has not been resumed with "
                             "this history: it would count from the first epoch it sees, and "
                             "history.best_epoch would name its best of the new epochs alone. "
                             "Call its resume(history, best_state) first")
    if stopper is None or initial_epoch == 0:
        if best_state is not None:
            raise ValueError("fit: best_state is only for resuming a run with early stopping")
        return
    stopper.resume(history, best_state)


@contextlib.contextmanager
def _updates_checked(optimizer: Optimizer) -> Iterator[None]:
    """``optimizer.check_finite`` on while fit trains: an update giving NaN/Inf is undone."""
    checking = optimizer.check_finite
    optimizer.check_finite = True
    try:
        yield
    finally:
        optimizer.check_finite = checking


def _train_epoch(step: Step, optimizer: Optimizer, batches: Any, where: _Where, history: History,
                 callbacks: list[Callback], interrupts: _Interrupts, summed: bool) -> bool:
    """Run one epoch's steps; False when a Ctrl-C interrupted it. Each step's loss goes to
    ``history.steps`` and the callbacks as a mean per example, like the epoch records: a
    ``summed`` loss (``reduction="sum"``) is divided by the batch's number of examples."""
    for where.step, (xb, yb) in enumerate(batches, start=1):
        if interrupts.requested:           # before the step: one during the last ends the epoch
            return False
        loss, scores = step(xb, yb)
        where.lr = optimizer.lr          # the rate this step used: before the callbacks' schedules
        if summed:
            loss /= len(yb)
        history.steps.append(loss)
        for cb in callbacks:
            cb.on_step_end(where.epoch, where.step, loss, scores, yb)
    return True


def _validate(model: Module, loss_fn: Any, val_data: Any, record: dict[str, float]) -> None:
    """Add the validation metrics to the epoch's ``record``; outputs that overflow on the
    validation data are a TrainingError (the weights are finite, but no good)."""
    try:
        scores = evaluate(model, loss_fn, val_data)
    except NonFiniteEvaluation as e:
        raise non_finite(f"the validation {e.what}", e.value,
                         "the weights of that step (finite, but they overflow on the "
                         "validation data)") from None
    except (ValueError, TypeError) as e:         # a label the model has no class for, ...
        raise (TypeError if isinstance(e, TypeError) else ValueError)(f"fit: val_data: {e}") from e
    for k, v in scores.items():
        record[f"val_{k}"] = v


def _failure(e: TrainingError | NonFiniteUpdate, where: _Where, history: History,
             stoppers: list[EarlyStopping], names: dict[int, str], params: list[Any]) -> TrainingError:
    """The TrainingError fit raises for a step's (or the update's, the outputs', the
    validation's) NaN/Inf: what, where, and which weights the model keeps."""
    if isinstance(e, NonFiniteUpdate):
        p = params[e.index]
        name = names.get(id(p), f"parameter {e.index}")
        what = (f"{name} (after the optimizer's update)" if e.state_key is None else
                f"the optimizer's state {e.state_key!r} of {name} (after its update)")
        kept = None
    else:
        what, kept = e.what, e.kept
    restored = [stopping.restore() for stopping in stoppers]    # one at most (_check_extras)
    if any(restored):
        kept = "its best weights"
    return TrainingError(
        f"fit: {what} became {e.value} at epoch {where.epoch}, step {where.step}; the model "
        f"keeps {kept or 'its last good weights'}. Lower the learning rate, clip gradients, or "
        f"find the op with engine.detect_anomaly()", history, where.epoch, where.step,
        what=what, value=e.value, kept=kept)


def fit(model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, train_data: Any, *,
        epochs: int = 10, batch_size: int | None = 32, val_data: Any = None,
        scheduler: LRScheduler | None = None, scheduler_per_step: bool = False,
        clip_grad_norm: float | None = None, regularizer: Callable[[], Tensor] | None = None,
        early_stopping: int | None = None, monitor: str = "val_loss", restore_best: bool = True,
        shuffle: bool = True, seed: int = 0, verbose: int | str = "auto",
        progress: bool | None = None,
        callback: Callable[[int, dict[str, float]], None] | None = None,
        initial_epoch: int = 0, history: History | None = None,
        best_state: dict[str, Any] | None = None, compile: bool = False,
        record_grad_norms: bool = False, callbacks: Sequence[Callback] | None = (),
        threads: int | str | None = "auto") -> History:
    """Train ``model`` with minibatch gradient descent and return its History.

    Each step (nn/step.py): forward, ``loss_fn(output, targets)`` (+ ``regularizer()``),
    backward, a check that the loss, the regularizer and every gradient are finite
    (TrainingError, before anything is updated), optional gradient clipping,
    ``optimizer.step()`` with ``check_finite`` on (an update giving NaN/Inf is undone:
    TrainingError). NaN/Inf in ``val_data`` is a ValueError before training; validation
    outputs that overflow are a TrainingError.
    ``batch_size=None`` means full-batch gradient descent. After each epoch the train (and
    validation) loss, averaged over the examples (a loss with ``reduction="sum"``, as an
    attribute or a ``functools.partial``'s keyword, is divided by the batch size, which
    for MSELoss and BCEWithLogitsLoss gives a sum over each example's outputs where their
    "mean" averages over them too: ``_summed``; so is
    each step's loss in ``history.steps`` and the callbacks), and,
    for a softmax classifier, accuracy are recorded (none for ``MSELoss`` or
    ``BCEWithLogitsLoss``: ``_is_classification``), with the learning rate the epoch
    trained with (``lr``: its last step's, when a schedule changes it per step), the
    epoch's time (``seconds``) and number of steps (``steps``: where ``plots.plot_history``
    puts each of ``history.steps``); ``early_stopping=k`` stops when ``monitor`` ("train_loss",
    "train_accuracy", "val_loss" or "val_accuracy"; anything else is a ValueError)
    has not improved for k epochs and, with ``restore_best``, puts back the best weights.
    ``train_data`` is (X, y) (shuffled per epoch from (seed, epoch)) or a DataLoader
    (shuffled per epoch from (its seed, epoch): fit calls its ``set_epoch`` each epoch). A
    DataLoader batches by its own settings: its ``batch_size``, ``shuffle`` and ``seed``
    apply, and fit's are not used (as Keras ignores ``shuffle`` for a generator).
    ``seed`` is a non-negative integer (checked before training, whatever ``train_data``);
    None is refused rather than drawn at random, so that a run resumed with the same seed
    sees the batches the uninterrupted run saw (a DataLoader's ``seed=None`` draws one
    once and keeps it in the loader). Epochs count from ``initial_epoch + 1``: calling
    ``fit(..., epochs=1)`` in a loop of your own trains every pass in epoch 1's order
    (Keras would reshuffle); continue with ``initial_epoch=`` and ``history=``, or pass
    another ``seed`` each call.

    Ctrl-C stops after the current step (between epochs: before the next one begins, the
    epochs done all recorded): the History comes back with ``interrupted``; one stopped
    between epochs continues with ``initial_epoch=`` and ``history=``. Under early stopping
    the best weights come back when the run ends (before the callbacks' ``on_train_end``),
    not after a Ctrl-C: the model keeps the last epoch's, which go with the optimizer's
    state, so that the run continues exactly. A stopper, a gradient-norm recorder or a
    schedule in ``callbacks`` gets the checks fit's own get (of this model and optimizer;
    on resume, restored).
    ``initial_epoch=k`` and ``history=`` continue a run that has done k epochs (epochs is
    the total), as ``handgrad train --resume`` does; under early stopping the patience count
    is recounted from the history and ``best_state`` gives the weights of its best epoch.
    A ``scheduler`` must be where the run left it (its step count ``t`` is ``initial_epoch``,
    or ``len(history.steps)`` with ``scheduler_per_step``: restore it with
    ``load_state_dict``), else a ValueError before training: a schedule made afresh would
    start again from its beginning.

    ``compile=True`` runs each step through ``nn.compile_step``: captured once per batch
    shape, then replayed, with exactly the same results (same checks, same order).
    ``record_grad_norms=True`` keeps the L2 norm of every parameter's gradient at every step
    in ``history.grad_norms`` (one pass over the gradients per step): that step's gradient,
    for the parameters the optimizer does not hold as for its own. It is a
    ``GradNormRecorder``; with one in ``callbacks`` too, a ValueError (each would record
    every norm).

    ``verbose`` as in Keras: 0 silent, 1 a progress bar, 2 one line per epoch; "auto" (the
    default) a bar on a terminal or in a notebook with ipywidgets, else one line per epoch
    (nn/progress.py). The older ``progress=False`` is ``verbose=0``, ``progress=True`` is
    ``verbose="auto"``.

    ``scheduler`` must schedule ``optimizer`` (a ValueError before training if it was made
    on another one). The schedule, the gradient norms, the display, early stopping and ``callback(epoch,
    record)`` are callbacks (nn/callbacks.py); ``callbacks=[...]`` adds your own
    (``nn.callbacks.Callback`` objects, else a TypeError; None is none), called after them
    at every hook.

    ``threads``: BLAS threads while training (nn/threads.py). ``"auto"`` (the default) runs
    a small model (for the batches trained on: a DataLoader's ``batch_size``, else fit's)
    on one thread (its products gain nothing from more, and idle BLAS threads
    spinning on a busy machine made a tiny run 4-7x slower), an int sets the count, None
    leaves BLAS alone. For mid-size float32 products the last bits can differ from numpy's
    default thread count (nn/threads.py); a run and its resume choose alike. Fits
    overlapping in two threads may run some steps on the other's count (numpy 2.4's
    OpenBLAS takes a count set in the main thread for every thread, one set in another
    thread for that thread alone; numpy 2.0's keeps one count for the process: see
    ``blas_threads``).
    """
    epochs = check_positive("fit: epochs", epochs)
    shown = Progress(verbose, progress)
    _check_options(epochs, batch_size, initial_epoch, early_stopping, clip_grad_norm, seed)
    _check_monitor(monitor, early_stopping, val_data, loss_fn)
    callbacks = _check_hooks(callbacks, history)
    _check_flags(shuffle=shuffle, restore_best=restore_best, compile=compile,
                 scheduler_per_step=scheduler_per_step, record_grad_norms=record_grad_norms)
    _check_extras(callbacks, record_grad_norms, scheduler, optimizer, model, early_stopping)
    stopper = None if early_stopping is None else EarlyStopping(model, early_stopping, monitor,
                                                                restore_best, owner="fit")
    X, y = _split(train_data, "fit: train_data")
    if val_data is not None:
        _check_val_data(X, y, val_data)
    history = history if history is not None else History()
    _check_resume(history, initial_epoch, stopper, best_state, scheduler, scheduler_per_step,
                  callbacks)
    if best_state is not None:
        model.check_state_dict(best_state, check_finite=True)
    loader = train_data if isinstance(train_data, DataLoader) else None
    if loader is not None:
        _check_loader(loader)
    size = batch_size or len(X)
    # the batches fit trains on: a DataLoader's own (fit's batch_size does not apply to it)
    blas_limit = threads_for(model, loader.batch_size if loader is not None else size, threads,
                             owner="fit")
    step = (ReplayStep if compile else EagerStep)(model, loss_fn, optimizer, regularizer=regularizer,
                                                  clip_grad_norm=clip_grad_norm)
    step.owner = "fit"                                  # its errors are fit's
    tally = _Tally(loss_fn)
    extras = [LRSchedule(scheduler, scheduler_per_step) if scheduler is not None else None,
              GradNormRecorder(model, step) if record_grad_norms else None, tally,
              shown if shown.verbose else None, stopper,      # verbose=0: nothing to show
              EpochFunction(callback) if callback is not None else None, *callbacks]
    hooks = [cb for cb in extras if cb is not None]
    # fit's own stopper or one in callbacks= (one at most): it puts its best weights back
    stoppers = [cb for cb in hooks if isinstance(cb, EarlyStopping)]
    # A continued History starts a new run, once every check has passed: not interrupted
    # (one stopped between epochs goes on; a Ctrl-C sets it again), not stopped early (yet),
    # and without early stopping nothing monitors its epochs, so an earlier run's best epoch
    # would be false of them.
    history.interrupted = history.stopped_early = False
    if not stoppers:
        history.best_epoch = None
    names = {id(p): name for name, p in model.named_parameters()}
    where = _Where()
    with _Interrupts() as interrupts, _updates_checked(optimizer), _ending(hooks), \
            blas_threads(blas_limit), _lent_step(step, callbacks):
        try:
            for cb in hooks:
                cb.stop = False               # a new run, as in Keras (a callback kept from an earlier fit)
                cb.on_train_begin(history, epochs, len(loader) if loader is not None else -(-len(X) // size))
            for where.epoch in range(initial_epoch + 1, epochs + 1):
                if interrupts.requested:      # between epochs (validation, a callback): no step
                    history.interrupted = True
                    break
                model.train()
                for cb in hooks:
                    cb.on_epoch_begin(where.epoch)
                if loader is not None:
                    loader.set_epoch(where.epoch)       # its order: (its seed, the epoch)
                batches = loader if loader is not None else _batches(X, y, size, shuffle, seed, where.epoch)
                if not _train_epoch(step, optimizer, batches, where, history, hooks, interrupts,
                                    _summed(loss_fn)):
                    history.interrupted = True
                    break
                for cb in hooks:
                    cb.on_epoch_end(where.epoch)
                record = tally.record(where.epoch, float(where.lr))
                if val_data is not None:
                    _validate(model, loss_fn, val_data, record)
                history.epochs.append(record)
                for cb in hooks:
                    cb.on_record(where.epoch, record)
                if any(cb.stop for cb in hooks):
                    break
        except (TrainingError, NonFiniteUpdate) as e:
            if isinstance(e, TrainingError) and e.history is not None:
                raise                              # a callback's own, with its context
            raise _failure(e, where, history, stoppers, names, optimizer.params) from None
        # The best weights back before on_train_end, so that a callback saving "the final
        # model" there saves the one fit returns. Not after a Ctrl-C: the model keeps the
        # last epoch's weights, which go with the optimizer's state, so that the run
        # continues (initial_epoch=, history=) as if never stopped.
        if not history.interrupted:
            for stopping in stoppers:
                stopping.restore()
    return history


@contextlib.contextmanager
def _ending(hooks: list[Callback]) -> Iterator[None]:
    """``on_train_end`` of every callback however the loop ends, each one even if another
    raised; the first such error is raised after them, unless the loop's own is on its way
    (a TrainingError is not replaced by a callback's)."""
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        errors = []
        for cb in hooks:
            try:
                cb.on_train_end()
            except Exception as e:  # noqa: BLE001 - raised below, after every hook ran
                errors.append(e)
        if errors and not failed:
            raise errors[0]
