"""``History``: what a training run measured (the loss of every step, a record per epoch),
kept by ``fit`` and by the callbacks of nn/callbacks.py, saved in resume checkpoints."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(repr=False)
class History:
    """What ``fit`` measured: the loss of every step (per example: a loss with
    ``reduction="sum"`` divided by the batch size, see ``fit``) and a dict of metrics per
    epoch.

    ``interrupted``: fit stopped at a Ctrl-C; during an epoch, the losses of the unfinished
    epoch's steps are in ``steps``, but that epoch has no record in ``epochs``."""

    steps: list[float] = field(default_factory=list)
    epochs: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    best_epoch: int | None = None
    interrupted: bool = False
    # With fit(record_grad_norms=True): the L2 norm of each parameter's gradient at every
    # step (NaN at a step where it had none: a frozen parameter), by parameter name (what
    # plots.plot_gradient_norms draws).
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
