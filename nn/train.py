"""Training and evaluation loops: ``fit``, ``evaluate``, ``predict``, and the History they keep."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import engine
from engine import Tensor

from . import metrics
from .data import DataLoader
from .module import Module
from .optim import LRScheduler, Optimizer, clip_grad_norm_


@dataclass
class History:
    """What ``fit`` measured: the loss of every step and a dict of metrics per epoch."""

    steps: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None

    def metric(self, name: str) -> list[float]:
        return [e[name] for e in self.epochs if name in e]

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "epochs": self.epochs, "stopped_early": self.stopped_early,
                "best_epoch": self.best_epoch}


def _split(data: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(data, DataLoader):
        return data.X, data.y
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise TypeError("data must be an (X, y) pair or a DataLoader")
    X, y = np.asarray(data[0]), np.asarray(data[1])
    if len(X) != len(y):
        raise ValueError(f"data: {len(X)} inputs but {len(y)} targets")
    return X, y


def _is_classification(loss_fn: Any, scores: np.ndarray, y: np.ndarray) -> bool:
    """Accuracy makes sense for class scores against labels or one-hot targets."""
    return scores.ndim == 2 and scores.shape[1] > 1 and (
        (y.ndim == 1 and y.dtype.kind in "iu") or y.shape == scores.shape)


def predict(model: Module, X: Any, batch_size: int = 1024) -> np.ndarray:
    """The model's outputs for X (eval mode, no graph), concatenated over batches."""
    X = np.asarray(X)
    was_training = model.training
    model.eval()
    try:
        with engine.no_grad():
            outs = [model(Tensor(X[i:i + batch_size], copy=False)).data
                    for i in range(0, len(X), batch_size)]
    finally:
        model.train(was_training)
    return np.concatenate(outs) if outs else np.empty((0,))


def evaluate(model: Module, loss_fn: Callable[..., Tensor], data: Any,
             batch_size: int = 1024) -> dict[str, float]:
    """Mean loss (and accuracy for classification) of the model on ``data`` = (X, y)."""
    X, y = _split(data)
    if len(X) == 0:
        raise ValueError("evaluate: empty dataset")
    scores = predict(model, X, batch_size)
    with engine.no_grad():
        loss = float(loss_fn(Tensor(scores), y).item())
    out = {"loss": loss}
    if _is_classification(loss_fn, scores, y):
        out["accuracy"] = metrics.accuracy(scores, y)
    return out


def fit(model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, train_data: Any, *,
        epochs: int = 10, batch_size: int = 32, val_data: Any = None,
        scheduler: LRScheduler | None = None, scheduler_per_step: bool = False,
        clip_grad_norm: float | None = None, regularizer: Callable[[], Tensor] | None = None,
        early_stopping: int | None = None, monitor: str = "val_loss", restore_best: bool = True,
        shuffle: bool = True, seed: int = 0, progress: bool = True,
        callback: Callable[[int, dict[str, float]], None] | None = None) -> History:
    """Train ``model`` with minibatch gradient descent and return its History.

    Each step: forward, ``loss_fn(output, targets)`` (+ ``regularizer()``), backward,
    optional gradient clipping, ``optimizer.step()``. ``batch_size=None`` means full-batch
    gradient descent. After each epoch the train (and validation) loss and accuracy are
    recorded; ``early_stopping=k`` stops when ``monitor`` has not improved for k epochs and,
    with ``restore_best``, puts back the best weights. ``train_data`` is (X, y) or a DataLoader.
    """
    if epochs <= 0:
        raise ValueError(f"fit: epochs must be positive, got {epochs}")
    if early_stopping is not None and val_data is None and monitor.startswith("val_"):
        raise ValueError("fit: early stopping on a validation metric needs val_data")
    if isinstance(train_data, DataLoader):
        loader = train_data
    else:
        X, y = _split(train_data)
        loader = DataLoader(X, y, batch_size=batch_size or len(X), shuffle=shuffle, seed=seed)
    history = History()
    best, best_state, waited = math.inf, None, 0
    sign = -1.0 if "acc" in monitor else 1.0      # accuracies improve upwards

    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs * len(loader), unit="step", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            start = time.perf_counter()
            total_loss, total_correct, seen = 0.0, 0, 0
            for xb, yb in loader:
                # A shuffled batch is a fresh array; a slice of the caller's data is copied.
                out = model(Tensor(xb, copy=xb.base is not None))
                loss = loss_fn(out, yb)
                objective = loss + regularizer() if regularizer is not None else loss
                optimizer.zero_grad()
                objective.backward()
                if clip_grad_norm is not None:
                    clip_grad_norm_(optimizer.params, clip_grad_norm)
                optimizer.step()
                if scheduler is not None and scheduler_per_step:
                    scheduler.step()
                value = float(loss.item())
                if not math.isfinite(value):
                    raise FloatingPointError(f"fit: the loss became {value} at epoch {epoch}, "
                                             f"step {len(history.steps) + 1}; lower the learning "
                                             f"rate or use engine.detect_anomaly() to find the op")
                history.steps.append(value)
                total_loss += value * len(xb)
                if _is_classification(loss_fn, out.data, np.asarray(yb)):
                    total_correct += int(round(metrics.accuracy(out.data, yb) * len(xb)))
                seen += len(xb)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{value:.4f}", refresh=False)
            if scheduler is not None and not scheduler_per_step:
                scheduler.step()
            record: dict[str, float] = {"epoch": epoch, "train_loss": total_loss / seen,
                                        "lr": optimizer.lr, "seconds": time.perf_counter() - start}
            if total_correct or _is_classification(loss_fn, out.data, np.asarray(yb)):
                record["train_accuracy"] = total_correct / seen
            if val_data is not None:
                for k, v in evaluate(model, loss_fn, val_data).items():
                    record[f"val_{k}"] = v
            history.epochs.append(record)
            if bar is not None:
                bar.set_postfix({k: f"{v:.4f}" for k, v in record.items()
                                 if k in ("train_loss", "train_accuracy", "val_loss", "val_accuracy")})
            if callback is not None:
                callback(epoch, record)
            if early_stopping is not None:
                if monitor not in record:
                    raise ValueError(f"fit: cannot monitor {monitor!r}; recorded: {sorted(record)}")
                score = sign * record[monitor]
                if score < best:
                    best, waited, history.best_epoch = score, 0, epoch
                    best_state = model.state_dict()
                else:
                    waited += 1
                    if waited >= early_stopping:
                        history.stopped_early = True
                        break
    finally:
        if bar is not None:
            bar.close()
    if early_stopping is not None and restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return history
