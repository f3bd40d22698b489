"""A training step captured once and replayed: ``step = nn.compile_step(model, loss_fn, opt)``.

The first call for a given input shape and dtype (and the modules' train/eval modes) runs
the step eagerly while ``engine.capture`` records it; later calls replay the recorded plan
(see ``engine/capture.py``): the same forward and backward rules in the same order on
plain arrays, then the same optimizer update. The parameters come out bit for
bit as an eager loop would leave them (tests/nn/test_compile.py checks SGD with momentum
and Nesterov, Adam and AdamW, float32 and float64, dropout).

A new shape (the last, smaller batch of an epoch), a switch to ``model.eval()`` (or an
``eval_mode()`` block in the calling thread), a changed module setting (any attribute
assigned on a module, such as a dropout's ``p`` or the loss's ``label_smoothing``) or a
tensor frozen or unfrozen (``requires_grad``: it decides which gradients the plan
computes) captures another plan; a plan is never replayed on anything else. The optimizer
is not part of a plan: its update runs after the replay on every call, reading the
optimizer's parameter groups and hyperparameters as they are then (a learning-rate
schedule, a replaced ``step.optimizer``), exactly as an eager step would. Python values
outside modules (numbers in a loss written as a plain function, in a regularizer) are
fixed at the capture: change them by making a new step.

A step runs one call at a time: a call from a second thread while one runs raises
``RuntimeError`` (the plan's saved values are one step's; give each thread its own model
and step).

Each step does what ``fit`` does eagerly, in the same order: forward, the loss (and the
regularizer) checked finite, backward, every gradient checked finite (all before any
parameter changes; ``nn.TrainingError`` names what failed), optional gradient clipping,
the optimizer's update. ``print(step)`` shows the captured program. The step itself is
nn/step.py's ``ReplayStep`` (``step.replay``), the one ``fit(compile=True)`` runs; this
wrapper returns the loss alone, as it always has.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor

from .module import Module
from .optim import Optimizer
from .step import ReplayStep


class CompiledStep:
    """``loss = step(x, y)``: one training step of ``model`` on a batch, replayed from a
    captured plan. Returns the loss as a float; ``step.last_output`` holds the model's
    output for the batch (a copy) and ``step.last_penalty`` the regularizer's value.
    ``step.replay`` is the underlying nn/step.py step (``loss, scores = replay(x, y)``)."""

    def __init__(self, model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, *,
                 regularizer: Callable[[], Tensor] | None = None,
                 clip_grad_norm: float | None = None, check_finite: bool = True):
        self.replay = ReplayStep(model, loss_fn, optimizer, regularizer=regularizer,
                                 clip_grad_norm=clip_grad_norm, check_finite=check_finite)

    def __call__(self, x: Any, y: Any) -> float:
        return self.replay(x, y)[0]

    @property
    def model(self) -> Module:
        """The model the step trains."""
        return self.replay.model

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer whose update ends each step (assignable: the next step uses it)."""
        return self.replay.optimizer

    @optimizer.setter
    def optimizer(self, value: Optimizer) -> None:
        self.replay.optimizer = value

    @property
    def plans(self) -> dict[tuple[Any, ...], engine.Plan]:
        """The captured plans by key (``ReplayStep.key``)."""
        return self.replay.plans

    @property
    def last_plan(self) -> engine.Plan | None:
        """The plan the last step replayed (None before the first step)."""
        return self.replay.last_plan

    @property
    def last_output(self) -> np.ndarray | None:
        """The model's output for the last batch (a copy; None before the first step)."""
        return self.replay.last_output

    @property
    def last_penalty(self) -> float | None:
        """The regularizer's value at the last step (None without a regularizer)."""
        return self.replay.last_penalty

    def key(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
        """What a plan is valid for (``ReplayStep.key``)."""
        return self.replay.key(x, y)

    def source(self) -> str:
        """The last plan's program, with the optimizer's update at the end."""
        return self.replay.source()

    def __str__(self) -> str:
        return self.source()

    def __repr__(self) -> str:
        return f"<CompiledStep: {len(self.plans)} plan(s) for {type(self.model).__name__}>"


def compile_step(model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, *,
                 regularizer: Callable[[], Tensor] | None = None,
                 clip_grad_norm: float | None = None, check_finite: bool = True) -> CompiledStep:
    """A training step for ``model`` captured once per input shape and replayed after:
    ``loss = step(x, y)`` computes exactly what the eager step computes (see the module
    docstring)."""
    return CompiledStep(model, loss_fn, optimizer, regularizer=regularizer,
                        clip_grad_norm=clip_grad_norm, check_finite=check_finite)
