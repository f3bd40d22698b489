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
parameter changes; ``NonFinite`` names what failed), optional gradient clipping, the
optimizer's update. ``print(step)`` shows the captured program.
"""
from __future__ import annotations

import math
import threading
from typing import Any, Callable

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from . import module as module_
from .module import Module
from .optim import Optimizer, clip_grad_norm_
from .train import finite_gradients


class NonFinite(FloatingPointError):
    """The loss, the regularizer or a gradient is NaN or Inf; nothing was updated."""

    def __init__(self, what: str, value: float):
        super().__init__(f"{what} became {value}")
        self.what, self.value = what, value


class CompiledStep:
    """``loss = step(x, y)``: one training step of ``model`` on a batch, replayed from a
    captured plan. Returns the loss as a float; ``step.last_output`` holds the model's
    output for the batch (a copy) and ``step.last_penalty`` the regularizer's value."""

    def __init__(self, model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, *,
                 regularizer: Callable[[], Tensor] | None = None,
                 clip_grad_norm: float | None = None, check_finite: bool = True):
        if not isinstance(model, Module):
            raise TypeError(f"compile_step: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"compile_step: optimizer must be an nn.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        if clip_grad_norm is not None and not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
            raise ValueError(f"compile_step: clip_grad_norm must be finite and positive, got "
                             f"{plain_repr(clip_grad_norm)}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.regularizer, self.clip_grad_norm = regularizer, clip_grad_norm
        self.check_finite = check_finite
        self.plans: dict[tuple[Any, ...], engine.Plan] = {}
        self.last_plan: engine.Plan | None = None
        self.last_output: np.ndarray | None = None
        self.last_penalty: float | None = None
        self._names = {id(p): name for name, p in model.named_parameters()}
        self._tree = -1                          # the tree version self._modules is for
        self._modules: list[Module] = []
        self._outside: list[Tensor] = []   # tensors plans read that no module holds
        self._seen: tuple[int, ...] | None = None   # the settings self._tensors is for
        self._tensors: list[Tensor] = []   # whose requires_grad the key holds
        self._busy = threading.Lock()

    def _fn(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        loss = self.loss_fn(out, y)
        if self.regularizer is None:
            return loss, loss, out
        penalty = self.regularizer()
        return loss + penalty, loss, out, penalty

    def key(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, ...]:
        """What a plan is valid for: the batch's shapes and dtypes; the mode (in this
        thread) and the settings count of every module of the model and the loss (any
        attribute assigned since, such as a dropout's ``p`` or the loss's
        ``label_smoothing``, means a new capture); and ``requires_grad`` of every
        parameter of those modules and of every other tensor a plan reads."""
        if self._tree != module_.tree_version():            # modules added or replaced
            self._tree = module_.tree_version()
            self._modules = list(self.model.modules())
            if isinstance(self.loss_fn, Module):
                self._modules += list(self.loss_fn.modules())
            self._seen = None
        settings = tuple([m._settings for m in self._modules])
        if settings != self._seen:                          # a parameter may be replaced
            self._seen = settings
            self._tensors = [p for m in self._modules for p in m._parameters.values()]
            self._tensors += self._outside
        return (x.shape, x.dtype.str, y.shape, y.dtype.str,
                module_.training_flags(self._modules), settings,
                tuple([t.requires_grad for t in self._tensors]))

    def __call__(self, x: Any, y: Any) -> float:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("compile_step: this step is already running in another "
                               "thread; a step (its plans' saved values, the model's "
                               "gradients) serves one call at a time: give each thread "
                               "its own model and step")
        try:
            return self._step(x, y)
        finally:
            self._busy.release()

    def _step(self, x: Any, y: Any) -> float:
        x = x.numpy() if isinstance(x, Tensor) else np.asarray(x)
        y = y.numpy() if isinstance(y, Tensor) else np.asarray(y)
        params = self.optimizer.params
        for p in params:
            p.grad = None                              # zero_grad
        key = self.key(x, y)
        plan = self.plans.get(key)
        if plan is None:
            # The first step of this shape runs eagerly while it is recorded: its forward,
            # its backward (gradients land in .grad), then the checks and update below.
            self._names = {id(p): name for name, p in self.model.named_parameters()}
            plan = self.plans[key] = engine.capture(self._fn, x, y, names=self._names)
            self._note_outside(plan, key, x, y)
            outputs = plan.last_outputs
            if plan.root is None:
                raise engine.CaptureError("compile_step: the loss does not depend on any "
                                          "parameter that requires grad")
            self._check_outputs(outputs)
        else:
            outputs = plan.run_forward(x, y)
            self._check_outputs(outputs)
            plan.run_backward(plan.accumulator())
        self.last_plan = plan
        if self.check_finite and not finite_gradients(params):
            raise NonFinite("a gradient", math.nan)
        if self.clip_grad_norm is not None:
            clip_grad_norm_(params, self.clip_grad_norm)
        self.optimizer.step()
        self.last_output = np.array(outputs[2], copy=True)
        return float(outputs[1])

    def _note_outside(self, plan: engine.Plan, key: tuple[Any, ...], x: np.ndarray,
                      y: np.ndarray) -> None:
        """Add the tensors ``plan`` reads that no module holds (a regularizer's, a plain
        loss function's) to the key, and file the plan under its full key."""
        known = {id(p) for m in self._modules for p in m._parameters.values()}
        known.update(id(t) for t in self._outside)
        new = [t for _, t, *_ in plan.outside if id(t) not in known]
        if new:
            self._outside += new
            self._seen = None
            del self.plans[key]
            self.plans[self.key(x, y)] = plan

    def _check_outputs(self, outputs: list[np.ndarray]) -> None:
        value = float(outputs[1])
        if self.check_finite and not math.isfinite(value):
            raise NonFinite("the loss", value)
        self.last_penalty = None if len(outputs) < 4 else float(outputs[3])
        if self.check_finite and self.last_penalty is not None and not math.isfinite(self.last_penalty):
            raise NonFinite("the regularizer", self.last_penalty)

    def source(self) -> str:
        """The last plan's program, with the optimizer's update at the end."""
        if self.last_plan is None:
            return "<not captured yet: call the step once>"
        name = type(self.optimizer).__name__.lower()
        extra = [f"{name}({n}, g_{n})" for n in (self._names[id(p)] for p in self.optimizer.params
                                                  if id(p) in self._names)]
        return self.last_plan.source(extra)

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
