"""Training and evaluation loops: ``fit``, ``evaluate``, ``predict``, and the History they keep."""
from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from . import metrics
from .data import DataLoader
from .errors import UserInputError
from .finite import all_finite, first_non_finite, non_finite_rows
from .module import Module
from .optim import LRScheduler, NonFiniteUpdate, Optimizer, clip_grad_norm_
from .progress import Progress, resolve_verbose


@dataclass(repr=False)
class History:
    """What ``fit`` measured: the loss of every step and a dict of metrics per epoch.

    ``interrupted``: fit stopped at a Ctrl-C; the losses of the unfinished epoch's steps are
    in ``steps``, but that epoch has no record in ``epochs``."""

    steps: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    interrupted: bool = False
    # With fit(record_grad_norms=True): the L2 norm of each parameter's gradient at every
    # step, by parameter name (what plots.plot_gradient_norms draws).
    grad_norms: dict[str, list[float]] = field(default_factory=dict)

    def metric(self, name: str) -> list[float]:
        """The value of metric ``name`` (``"train_loss"``, ``"val_accuracy"``, ...) at each
        epoch that recorded it, in order; [] if none did."""
        return [e[name] for e in self.epochs if name in e]

    def __repr__(self) -> str:
        """One line whatever the length of the run: the epochs and steps, the last epoch's
        losses and accuracies, and how the run ended (``to_dict()`` has everything)."""
        cells = [f"epochs={len(self.epochs)}", f"steps={len(self.steps)}"]
        last = self.epochs[-1] if self.epochs else {}
        cells += [f"{k}={float(last[k]):.4g}" for k in
                  ("train_loss", "train_accuracy", "val_loss", "val_accuracy") if k in last]
        if self.best_epoch is not None:
            cells.append(f"best_epoch={self.best_epoch}")
        cells += [f"{flag}=True" for flag in ("stopped_early", "interrupted") if getattr(self, flag)]
        return f"History({', '.join(cells)})"

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain lists, dicts and numbers (JSON-serialisable; copies, not
        views); ``grad_norms`` only when recorded. ``from_dict`` reads it back."""
        d = {"steps": list(self.steps), "epochs": [dict(e) for e in self.epochs],
             "stopped_early": self.stopped_early, "best_epoch": self.best_epoch,
             "interrupted": self.interrupted}
        if self.grad_norms:
            d["grad_norms"] = {k: list(v) for k, v in self.grad_norms.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        """The History that ``to_dict()`` wrote (missing keys take their defaults), as read
        back from a resume checkpoint or ``history.json``."""
        return cls(steps=list(d.get("steps", [])), epochs=[dict(e) for e in d.get("epochs", [])],
                   stopped_early=bool(d.get("stopped_early", False)),
                   best_epoch=d.get("best_epoch"), interrupted=bool(d.get("interrupted", False)),
                   grad_norms={str(k): [float(x) for x in v]
                               for k, v in dict(d.get("grad_norms", {})).items()})


class TrainingError(UserInputError, FloatingPointError):
    """The loss, a regularizer, a gradient, an update of the weights or the validation loss
    became NaN or Inf. Raised before the weights took such a value (an update that would is
    undone), so the model keeps its last good weights (the best ones under early stopping
    with restore_best); ``history`` holds everything recorded so far."""

    def __init__(self, message: str, history: History, epoch: int, step: int):
        super().__init__(message)
        self.history, self.epoch, self.step = history, epoch, step


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {plain_repr(value)}")
    return int(value)


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


def _is_classification(loss_fn: Any, scores: np.ndarray, y: np.ndarray) -> bool:
    """Accuracy makes sense for class scores against labels or one-hot targets."""
    return scores.ndim == 2 and scores.shape[1] > 1 and (
        (y.ndim == 1 and y.dtype.kind in "iu") or y.shape == scores.shape)


def predict(model: Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X (eval mode, no graph), concatenated over batches; for an
    empty X, the model's output for an empty batch (shape (0, n_outputs)). Eval mode holds
    in this thread only (``model.eval_mode()``): a thread training the model keeps its
    dropout, and the flags ``train()``/``eval()`` set are untouched."""
    batch_size = _positive_int("predict: batch_size", batch_size)
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
        loss = float(loss_fn(Tensor(scores, copy=False), y).item())
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


def finite_gradients(params: list[Any]) -> bool:
    """Whether every gradient is free of NaN and Inf (one dot product each, nn/finite.py)."""
    return all(all_finite(p.grad) for p in params if p.grad is not None)


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


def _early_stopping_so_far(history: History, initial_epoch: int, patience: int | None,
                           monitor: str, sign: float, restore_best: bool,
                           best_state: dict[str, Any] | None) -> tuple[float, int]:
    """The best score and the epochs waited since, recounted from a resumed history."""
    if len(history.epochs) != initial_epoch:
        raise ValueError(f"fit: history has {len(history.epochs)} epochs but initial_epoch is "
                         f"{initial_epoch}")
    if patience is None or initial_epoch == 0:
        if best_state is not None:
            raise ValueError("fit: best_state is only for resuming a run with early stopping")
        return math.inf, 0
    if history.stopped_early:
        raise ValueError(f"fit: the run being resumed stopped early at epoch {initial_epoch}")
    best, waited, best_epoch = math.inf, 0, None
    for record in history.epochs:
        if monitor not in record:
            raise ValueError(f"fit: the history being resumed has no {monitor!r}")
        if sign * record[monitor] < best:
            best, waited, best_epoch = sign * record[monitor], 0, record["epoch"]
        else:
            waited += 1
    if best_epoch != history.best_epoch:
        raise ValueError(f"fit: the history's best epoch ({history.best_epoch}) is not the best "
                         f"{monitor} in its records (epoch {best_epoch})")
    if restore_best and best_state is None:
        raise ValueError(f"fit: resuming early stopping with restore_best needs best_state= "
                         f"(the weights of epoch {best_epoch})")
    return best, waited


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
        record_grad_norms: bool = False) -> History:
    """Train ``model`` with minibatch gradient descent and return its History.

    Each step: forward, ``loss_fn(output, targets)`` (+ ``regularizer()``), backward, a
    check that the loss, the regularizer and every gradient are finite (TrainingError,
    before anything is updated), optional gradient clipping, ``optimizer.step()`` with
    ``check_finite`` on (an update giving NaN/Inf is undone: TrainingError). NaN/Inf in
    ``val_data`` is a ValueError before training; validation outputs that overflow are a
    TrainingError.
    ``batch_size=None`` means full-batch gradient descent. After each epoch the train (and
    validation) loss and accuracy are recorded; ``early_stopping=k`` stops when ``monitor``
    has not improved for k epochs and, with ``restore_best``, puts back the best weights.
    ``train_data`` is (X, y) (shuffled per epoch from (seed, epoch)) or a DataLoader.

    Ctrl-C stops after the current step: the History comes back with ``interrupted``.
    ``initial_epoch=k`` and ``history=`` continue a run that has done k epochs (epochs is
    the total), as ``handgrad train --resume`` does; under early stopping the patience count
    is recounted from the history and ``best_state`` gives the weights of its best epoch.

    ``compile=True`` runs each step through ``nn.compile_step``: captured once per batch
    shape, then replayed, with exactly the same results (same checks, same order).
    ``record_grad_norms=True`` keeps the L2 norm of every parameter's gradient at every step
    in ``history.grad_norms`` (one pass over the gradients per step).

    ``verbose`` as in Keras: 0 silent, 1 a progress bar, 2 one line per epoch; "auto" (the
    default) a bar on a terminal or in a notebook with ipywidgets, else one line per epoch
    (nn/progress.py). The older ``progress=False`` is ``verbose=0``, ``progress=True`` is
    ``verbose="auto"``.
    """
    epochs = _positive_int("fit: epochs", epochs)
    display = resolve_verbose(verbose, progress)
    if batch_size is not None:
        batch_size = _positive_int("fit: batch_size", batch_size)
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) \
            or not 0 <= initial_epoch < epochs:
        raise ValueError(f"fit: initial_epoch must be an integer in [0, {epochs}), "
                         f"got {plain_repr(initial_epoch)}")
    if early_stopping is not None:
        early_stopping = _positive_int("fit: early_stopping", early_stopping)
        if val_data is None and monitor.startswith("val_"):
            raise ValueError("fit: early stopping on a validation metric needs val_data")
    if clip_grad_norm is not None and not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
        raise ValueError(f"fit: clip_grad_norm must be finite and positive, got {plain_repr(clip_grad_norm)}")
    X, y = _split(train_data, "fit: train_data")
    if val_data is not None:
        bad = _where_not_finite("fit: val_data", *_split(val_data, "fit: val_data"))
        if bad is not None:
            raise ValueError(bad)
    loader = train_data if isinstance(train_data, DataLoader) else None
    history = history if history is not None else History()
    sign = -1.0 if "acc" in monitor else 1.0      # accuracies improve upwards
    best, waited = _early_stopping_so_far(history, initial_epoch, early_stopping, monitor, sign,
                                          restore_best, best_state)
    if best_state is not None:
        model.check_state_dict(best_state, check_finite=True)
    params = optimizer.params
    steps_per_epoch = len(loader) if loader is not None else -(-len(X) // (batch_size or len(X)))
    named = model.named_parameters() if record_grad_norms else []
    names = {id(p): name for name, p in model.named_parameters()}
    compiled = None
    if compile:
        from .compile import NonFinite, compile_step
        compiled = compile_step(model, loss_fn, optimizer, regularizer=regularizer,
                                clip_grad_norm=clip_grad_norm)

    def failure(what: str, value: float, epoch: int, step: int,
                kept: str = "its last good weights") -> TrainingError:
        if early_stopping is not None and restore_best and best_state is not None:
            model.load_state_dict(best_state)
            kept = "its best weights"
        return TrainingError(
            f"fit: {what} became {value} at epoch {epoch}, step {step}; the model keeps "
            f"{kept}. Lower the learning rate, clip gradients, or find the op with "
            f"engine.detect_anomaly()", history, epoch, step)

    def undone(e: NonFiniteUpdate, epoch: int, step: int) -> TrainingError:
        p = optimizer.params[e.index]
        what = f"{names.get(id(p), f'parameter {e.index}')} (after the optimizer's update)"
        return failure(what, e.value, epoch, step)

    shown = Progress(display, (epochs - initial_epoch) * steps_per_epoch, epochs)
    checking = optimizer.check_finite
    with _Interrupts() as interrupts:
        try:
            optimizer.check_finite = True        # an update giving NaN/Inf is undone, raises
            for epoch in range(initial_epoch + 1, epochs + 1):
                model.train()
                start = time.perf_counter()
                total_loss, total_correct, seen, classification = 0.0, 0, 0, False
                batches = loader if loader is not None else _batches(
                    X, y, batch_size or len(X), shuffle, seed, epoch)
                for step, (xb, yb) in enumerate(batches, start=1):
                    if compiled is not None:
                        try:
                            value = compiled(xb, yb)
                        except NonFinite as e:
                            raise failure(e.what, e.value, epoch, step) from None
                        except NonFiniteUpdate as e:
                            raise undone(e, epoch, step) from None
                        scores = compiled.last_output
                        assert scores is not None            # set by every step that returns
                    else:
                        out = model(Tensor(xb, copy=False))
                        loss = loss_fn(out, yb)
                        value = float(loss.item())
                        if not math.isfinite(value):
                            raise failure("the loss", value, epoch, step)
                        objective = loss
                        if regularizer is not None:
                            penalty = regularizer()
                            if not math.isfinite(float(penalty.item())):
                                raise failure("the regularizer", float(penalty.item()), epoch, step)
                            objective = loss + penalty
                        optimizer.zero_grad()
                        objective.backward()
                        if not finite_gradients(params):
                            raise failure("a gradient", math.nan, epoch, step)
                        if clip_grad_norm is not None:
                            clip_grad_norm_(params, clip_grad_norm)
                        try:
                            optimizer.step()
                        except NonFiniteUpdate as e:
                            raise undone(e, epoch, step) from None
                        scores = out.numpy(copy=True)
                    if scheduler is not None and scheduler_per_step:
                        scheduler.step()
                    history.steps.append(value)
                    if record_grad_norms:
                        for name, p in named:
                            if p.grad is not None:
                                history.grad_norms.setdefault(name, []).append(
                                    math.sqrt(float(np.dot(p.grad.ravel(), p.grad.ravel()))))
                    total_loss += value * len(xb)
                    if _is_classification(loss_fn, scores, np.asarray(yb)):
                        if not all_finite(scores):    # -inf logits keep the loss finite
                            raise failure("the model's outputs", first_non_finite(scores),
                                          epoch, step, "the weights of that step (finite)")
                        classification = True
                        total_correct += int(round(metrics.accuracy(scores, yb) * len(xb)))
                    seen += len(xb)
                    shown.step(epoch, value)
                    if interrupts.requested:
                        break
                if interrupts.requested:
                    history.interrupted = True
                    break
                if scheduler is not None and not scheduler_per_step:
                    scheduler.step()
                record: dict[str, float] = {"epoch": epoch, "train_loss": total_loss / seen,
                                            "lr": optimizer.lr,
                                            "seconds": time.perf_counter() - start}
                if classification:
                    record["train_accuracy"] = total_correct / seen
                if val_data is not None:
                    try:
                        scores_val = evaluate(model, loss_fn, val_data)
                    except NonFiniteEvaluation as e:
                        raise failure(f"the validation {e.what}", e.value, epoch, step,
                                      "the weights of that step (finite, but they overflow on "
                                      "the validation data)") from None
                    for k, v in scores_val.items():
                        record[f"val_{k}"] = v
                history.epochs.append(record)
                shown.epoch(record)
                if early_stopping is not None:
                    if monitor not in record:
                        raise ValueError(f"fit: cannot monitor {monitor!r}; recorded: "
                                         f"{sorted(record)}")
                    score = sign * record[monitor]
                    if score < best:
                        best, waited, history.best_epoch = score, 0, epoch
                        best_state = model.state_dict()
                    else:
                        waited += 1
                        if waited >= early_stopping:
                            history.stopped_early = True
                if callback is not None:
                    callback(epoch, record)
                if history.stopped_early:
                    break
        finally:
            optimizer.check_finite = checking
            shown.close()
    if early_stopping is not None and restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history
