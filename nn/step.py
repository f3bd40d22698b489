"""One training step, eager or compiled, behind one interface: ``loss, scores = step(xb, yb)``.

A step does, in this order: forward, the loss (and the regularizer) checked finite,
backward (into gradients it first sets to None for every parameter of the model and of the
optimizer: after a step each holds that step's gradient alone), the gradients checked
finite (all before any parameter changes), optional gradient clipping, the optimizer's
update; it returns the loss as a float and the model's outputs for the batch (a copy).
``EagerStep`` runs the graph every call; ``ReplayStep`` records it once per batch shape
with ``engine.capture`` and replays the plan after (see nn/compile.py, whose
``compile_step`` is the public face of it). ``fit`` runs either.

A non-finite loss, regularizer or gradient raises ``TrainingError`` (the one type for it:
``fit`` adds the epoch, the step and its History to the same type). An update that would
make a weight NaN or Inf is the optimizer's to refuse (``optimizer.check_finite``:
``optim.NonFiniteUpdate``).

The gradient check is one reduction: the sum over every gradient of its squared L2 norm
(a BLAS dot of each flattened array with itself, accumulated in one Python float). The
terms are squared magnitudes, never negative, so an Inf cannot cancel and any NaN or Inf
element makes the sum NaN or Inf; only when the sum overflows on finite values (a
gradient norm beyond ~1e19 in float32) does an elementwise test decide. It reads each
gradient once, as the older check per array did, with no branch per array. Each dot
product also bounds its gradient's largest element, which the optimizer's own check uses to
prove its update finite without copying the weights (nn/update_bounds.py).
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
from .errors import UserInputError
from .finite import all_finite, first_non_finite, square_norm
from .history import History
from .module import Module, Parameter
from .optim import Optimizer, clip_grad_norm_, clip_scale
from .update_bounds import max_bound


class TrainingError(UserInputError, FloatingPointError):
    """The loss, a regularizer, a gradient, an update of the weights, the model's outputs or
    the validation loss became NaN or Inf. ``fit`` raises it before the weights took such a
    value (it turns the optimizer's ``check_finite`` on, so an update that would is undone):
    the model keeps its last good weights (the best ones under early stopping with
    restore_best). A step used alone (``EagerStep``, ``compile_step``) checks the loss, the
    regularizer and the gradients before any weight changes; its update is checked only
    with ``optimizer.check_finite`` on (``optim.NonFiniteUpdate``). Without it, an update
    that overflows reaches the weights, and the next step's loss reports it.

    ``what`` and ``value`` say what failed. Raised by a step alone, ``history``, ``epoch``
    and ``step`` are None; ``fit`` raises it with them (``history`` holds everything
    recorded so far). ``kept``, set by ``fit``, says which weights the model keeps when
    they are not its last good ones (None: the last good ones, or a step alone)."""

    def __init__(self, message: str, history: History | None = None, epoch: int | None = None,
                 step: int | None = None, *, what: str = "", value: float = math.nan,
                 kept: str | None = None):
        super().__init__(message)
        self.history, self.epoch, self.step = history, epoch, step
        self.what, self.value, self.kept = what, value, kept


def non_finite(what: str, value: float, kept: str | None = None) -> TrainingError:
    """The step-level TrainingError for ``what`` (the loss, a gradient, ...) being ``value``."""
    return TrainingError(f"{what} became {value}", what=what, value=value, kept=kept)


def one_number(owner: str, loss: Tensor) -> Tensor:
    """``loss`` itself when it is one number; else a ValueError naming its shape (a loss
    with ``reduction="none"`` gives one per example, and there is no single one to train
    on or record)."""
    if loss.size != 1:
        raise ValueError(f"{owner}: the loss must be one number, but loss_fn returned shape "
                         f"{loss.shape} (reduction='none'? use 'mean' or 'sum')")
    return loss


def as_batch(x: Any) -> Tensor:
    """The tensor an eager step feeds the model: the one place a batch is wrapped. An array
    that owns its memory (fit's batches are fresh copies or gathered rows) is adopted
    (``engine.adopt``): no copy and nothing to watch. A view of someone's array (a
    ``DataLoader(shuffle=False)`` slices the caller's X) is shared as ``copy=False`` does:
    no copy either, but tracked, since its owner may still write to it."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return engine.adopt(x) if x.base is None else Tensor(x, copy=False)
    return Tensor(x)


def gradient_bounds(params: list[Any]) -> dict[int, float] | None:
    """None when a gradient holds NaN or Inf (one sum of squared norms, module docstring);
    else, by ``id`` of each parameter, a bound on its gradient's largest |element| where
    one is known, from the same dot products (nn/update_bounds.py ``max_bound``: it lets a
    checked optimizer prove its update finite with no copy)."""
    bounds: dict[int, float] = {}
    total = 0.0
    for p in params:
        g = p.grad
        if g is not None and g.dtype.kind in "fc":
            norm = square_norm(g)
            total += norm
            bound = max_bound(norm, g.size, g.dtype)
            if bound is not None:
                bounds[id(p)] = bound
    if math.isfinite(total) or all(bool(np.isfinite(p.grad).all()) for p in params
                                   if p.grad is not None):
        return bounds
    return None


class _Gradients:
    """The parameters whose gradients a step forgets (``grad = None``) before its backward:
    the optimizer's and every other parameter of the model, so that each step's
    gradients are that step's alone, for the parameters the optimizer does not hold (a
    frozen layer, fine-tuning) as for its own (``GradNormRecorder`` reads them all). The
    model's other parameters are listed once per module tree (``tree_version``) and
    settings (a parameter replaced is an assignment): a step then clears the optimizer's
    parameters and that list (empty when the optimizer holds the whole model)."""

    def __init__(self, model: Module):
        self.model = model
        self._tree = -1                          # the tree version self._modules is for
        self._modules: list[Module] = []
        # What self._others is for: the settings, the optimizer and how many it holds (a
        # step's optimizer may be replaced, and add_param_group adds to one).
        self._seen: tuple[Any, ...] | None = None
        self._others: list[Parameter] = []

    def clear(self, optimizer: Optimizer) -> None:
        """Forget the gradients of ``optimizer``'s parameters (the step's, read at each
        step) and of the model's others."""
        if self._tree != module_.tree_version():
            self._tree = module_.tree_version()
            self._modules = list(self.model.modules())
            self._seen = None
        seen = (tuple([m._assignments for m in self._modules]), id(optimizer), len(optimizer.params))
        if seen != self._seen:
            self._seen = seen
            held = {id(p) for p in optimizer.params}
            self._others = [p for p in self.model.parameters() if id(p) not in held]
        for p in optimizer.params:
            p.grad = None
        for p in self._others:
            p.grad = None


class Step:
    """What an eager and a compiled step share: the arguments and their checks, and the
    end of a step (gradient check, clipping, update). ``step(xb, yb)`` returns
    ``(loss, scores)``; ``last_penalty`` is the regularizer's value at the last step."""

    owner = "Step"

    def __init__(self, model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, *,
                 regularizer: Callable[[], Tensor] | None = None,
                 clip_grad_norm: float | None = None, check_finite: bool = True):
        if not isinstance(model, Module):
            raise TypeError(f"{self.owner}: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{self.owner}: optimizer must be an nn.optim optimizer, got "
                            f"{type(optimizer).__name__}")
        if clip_grad_norm is not None and not (math.isfinite(clip_grad_norm) and clip_grad_norm > 0):
            raise ValueError(f"{self.owner}: clip_grad_norm must be finite and positive, got "
                             f"{plain_repr(clip_grad_norm)}")
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.regularizer, self.clip_grad_norm = regularizer, clip_grad_norm
        self.check_finite = check_finite
        self.last_penalty: float | None = None
        # The factor the last step's clipping scaled the optimizer's gradients by (1: none),
        # so that a GradNormRecorder given the step records the norms backward computed.
        self.last_clip_scale = 1.0
        self._gradients = _Gradients(model)

    def __call__(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def _check(self, what: str, value: float | None) -> None:
        if self.check_finite and value is not None and not math.isfinite(value):
            raise non_finite(what, value)

    def _update(self) -> None:
        """After backward: the gradients checked, clipped, and the optimizer's update."""
        params = self.optimizer.params
        bounds = gradient_bounds(params) if self.check_finite else {}
        if bounds is None:
            raise self._non_finite_gradient(params)
        if self.clip_grad_norm is not None:                  # scales by at most 1: bounds hold
            self.last_clip_scale = clip_scale(clip_grad_norm_(params, self.clip_grad_norm),
                                              self.clip_grad_norm)
        self.optimizer._step(bounds)

    def _non_finite_gradient(self, params: list[Any]) -> TrainingError:
        """The error for the first gradient holding NaN or Inf: its parameter's name and
        its first such value (the check's sum only says that one does)."""
        names = {id(p): name for name, p in self.model.named_parameters()}
        for i, p in enumerate(params):
            g = p.grad
            if g is not None and not all_finite(g):
                name = names.get(id(p), f"parameter {i}")
                return non_finite(f"the gradient of {name}", first_non_finite(g))
        return non_finite("a gradient", math.nan)         # (not reached: one was not finite)


class EagerStep(Step):
    """``loss, scores = step(xb, yb)``: one step that builds the graph and walks it."""

    owner = "EagerStep"

    def __call__(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        out = self.model(as_batch(x))
        loss = one_number(self.owner, self.loss_fn(out, y))
        value = float(loss.item())
        self._check("the loss", value)
        objective = loss
        if self.regularizer is not None:
            penalty = self.regularizer()
            self.last_penalty = float(penalty.item())
            self._check("the regularizer", self.last_penalty)
            objective = loss + penalty
        self._gradients.clear(self.optimizer)   # every parameter's: this step's gradients alone
        objective.backward()
        scores = out.numpy(copy=True)     # before the update: out may share a weight's memory
        self._update()
        return value, scores


_SETTINGS = 5       # where ReplayStep.key holds the modules' settings counts


class ReplayStep(Step):
    """``loss, scores = step(xb, yb)``: one step captured once per batch shape and
    replayed (``compile_step`` returns it wrapped in ``CompiledStep``, which returns the
    loss alone). ``plans`` maps each key (``key``) to its plan."""

    owner = "compile_step"
    # Plans kept at most: a schedule that assigns a module attribute every step (a dropout's
    # p annealed) captures a plan per step, about 4 KB per op each; the oldest go first.
    MAX_PLANS = 64

    def __init__(self, model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, *,
                 regularizer: Callable[[], Tensor] | None = None,
                 clip_grad_norm: float | None = None, check_finite: bool = True):
        super().__init__(model, loss_fn, optimizer, regularizer=regularizer,
                         clip_grad_norm=clip_grad_norm, check_finite=check_finite)
        self.plans: dict[tuple[Any, ...], engine.Plan] = {}
        self.last_plan: engine.Plan | None = None
        self.last_output: np.ndarray | None = None
        self.names = {id(p): name for name, p in model.named_parameters()}
        self._tree = -1                          # the tree version self._modules is for
        self._modules: list[Module] = []
        self._outside: list[Tensor] = []   # tensors plans read that no module holds
        self._called: list[Module] = []    # modules plans ran that are not in the trees
        self._seen: tuple[int, ...] | None = None   # the settings self._tensors is for
        self._tensors: list[Tensor] = []   # whose requires_grad the key holds
        self._busy = threading.Lock()

    def _fn(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        out = self.model(x)
        loss = one_number(self.owner, self.loss_fn(out, y))
        if self.regularizer is None:
            return loss, loss, out
        penalty = self.regularizer()
        return loss + penalty, loss, out, penalty

    def key(self, x: np.ndarray, y: np.ndarray | Tensor) -> tuple[Any, ...]:
        """What a plan is valid for: the batch's shapes and dtypes; the mode (in this
        thread) and the settings count of every module of the model and the loss (any
        attribute assigned since, such as a dropout's ``p`` or the loss's
        ``label_smoothing``, means a new capture); ``requires_grad`` of every parameter of
        those modules and of every other tensor a plan reads; and whether the targets are
        a tensor (ops convert an array, not a tensor, to the outputs' dtype)."""
        if self._tree != module_.tree_version():            # modules added or replaced
            self._tree = module_.tree_version()
            self._modules = list(self.model.modules())
            if isinstance(self.loss_fn, Module):
                self._modules += list(self.loss_fn.modules())
            self._modules += self._called
            self._seen = None
        settings = tuple([m._assignments for m in self._modules])
        if settings != self._seen:                          # a parameter may be replaced
            self._seen = settings
            self._tensors = [p for m in self._modules for p in m._parameters.values()]
            self._tensors += self._outside
        return (x.shape, x.dtype.str, y.shape, y.dtype.str,
                module_.training_flags(self._modules), settings,
                tuple([t.requires_grad for t in self._tensors]), isinstance(y, Tensor))

    def __call__(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("compile_step: this step is already running in another "
                               "thread; a step (its plans' saved values, the model's "
                               "gradients) serves one call at a time: give each thread "
                               "its own model and step")
        try:
            return self._step(x, y)
        finally:
            self._busy.release()

    def _step(self, x: Any, y: Any) -> tuple[float, np.ndarray]:
        if not engine.is_grad_enabled():
            raise RuntimeError(f"{self.owner}: gradients are off in this thread (inside "
                               f"engine.no_grad()); a training step needs them")
        if engine.is_anomaly_enabled():
            raise RuntimeError(f"{self.owner}: detect_anomaly() checks every op as it runs, "
                               f"which a replayed plan does not; find the op with the eager "
                               f"step (fit(compile=False))")
        x, targets = self._array("batch", x), self._array("targets", y)
        # Eagerly, targets given as an array reach the loss as one, which its op converts
        # to the outputs' dtype (as_arrays); a tensor stays a tensor.
        y = y if isinstance(y, Tensor) else targets
        self._gradients.clear(self.optimizer)   # every parameter's: this step's gradients alone
        key = self.key(x, y)
        plan = self.plans.get(key)
        if plan is not None and plan.watched and plan.changed_parameter() is not None:
            plan = None           # an array an op took as a parameter was written: capture again
        if plan is None:
            # The first step of this shape runs eagerly while it is recorded: its forward,
            # its backward (gradients land in .grad), then the checks and update below.
            self.names = {id(p): name for name, p in self.model.named_parameters()}
            with module_.calls_recorded() as called:
                plan = self.plans[key] = engine.capture(
                    self._fn, x, y, names=self.names,
                    as_arrays=() if isinstance(y, Tensor) else (1,))
            self._note_outside(plan, called, key, x, y)
            while len(self.plans) > self.MAX_PLANS:
                del self.plans[next(iter(self.plans))]     # the oldest (dicts keep order)
            outputs = plan.last_outputs
            if plan.root is None:
                raise engine.CaptureError("compile_step: the loss does not depend on any "
                                          "parameter that requires grad")
            self._check_outputs(outputs)
        else:
            outputs = plan.run_forward(x, y, copy=False)     # read here, the scores copied
            self._check_outputs(outputs)
            plan.run_backward(plan.accumulator())
        self.last_plan = plan
        self.last_output = np.array(outputs[2], copy=True)   # before the update, as eagerly
        self._update()
        return float(outputs[1]), self.last_output

    def _array(self, what: str, v: Any) -> np.ndarray:
        """The values of the batch or the targets. A tensor in a graph (computed by ops, or
        requiring grad) is refused: its gradient would not flow back from a plan."""
        if not isinstance(v, Tensor):
            return np.asarray(v)
        if v.node is not None or v.requires_grad:
            how = f"computed by op '{v.node.op.name}'" if v.node is not None else "requiring grad"
            raise ValueError(f"{self.owner}: the {what} is a tensor in a graph ({how}); a "
                             f"compiled step takes arrays and would cut it from the graph, so "
                             f"no gradient would reach what made it. Pass arrays, or run the "
                             f"step eagerly (fit(compile=False))")
        return v.numpy()

    def _note_outside(self, plan: engine.Plan, called: list[tuple[Module, int]],
                      key: tuple[Any, ...], x: np.ndarray, y: np.ndarray | Tensor) -> None:
        """Add what the key does not cover yet to it: the tensors ``plan`` reads that no
        module holds (a regularizer's, a plain loss function's) and the modules it ran that
        are in neither tree (a loss module inside a plain function, a layer kept in a
        list: a dropout's ``p`` set later must mean a new capture); then file the plan
        under its full key, with every module's settings as they were before the capture
        (an attribute the capture's own forward assigned, such as a counter, must mean a
        new capture at the next call, as it does for a module in the trees)."""
        before = dict(zip(map(id, self._modules), key[_SETTINGS], strict=True))
        for m, count in called:
            before.setdefault(id(m), count)
        known_modules = {id(m) for m in self._modules}
        modules = []                            # new ones, each once
        for m in (m for c, _ in called for m in c.modules()):
            if id(m) not in known_modules:
                known_modules.add(id(m))
                modules.append(m)
        known = {id(p) for m in self._modules + modules for p in m._parameters.values()}
        known.update(id(t) for t in self._outside)
        new = [t for _, t, *_ in plan.outside if id(t) not in known]
        if new or modules:
            self._outside += new
            self._called += modules
            self._tree = -1                         # the module list again, with them
            del self.plans[key]
            full = list(self.key(x, y))
            full[_SETTINGS] = tuple([before.get(id(m), m._assignments) for m in self._modules])
            self.plans[tuple(full)] = plan

    def _check_outputs(self, outputs: list[np.ndarray]) -> None:
        self._check("the loss", float(outputs[1]))
        self.last_penalty = None if len(outputs) < 4 else float(outputs[3])
        self._check("the regularizer", self.last_penalty)

    def source(self) -> str:
        """The last plan's program, with the optimizer's update at the end."""
        if self.last_plan is None:
            return "<not captured yet: call the step once>"
        name = type(self.optimizer).__name__.lower()
        extra = [f"{name}({n}, g_{n})" for n in (self.names[id(p)] for p in self.optimizer.params
                                                  if id(p) in self.names)]
        return self.last_plan.source(extra)
