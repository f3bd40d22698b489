"""Optimizers, learning-rate schedules and gradient clipping.

Each ``step`` follows the published update rule (as PyTorch implements it), written with
in-place numpy operations on buffers allocated once per parameter. ``g`` is a parameter's
gradient, ``lr`` the learning rate, ``t`` the step count starting at 1.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

import engine

from .module import Module, Parameter


class Optimizer:
    """Holds the parameters and a per-parameter state dict; subclasses define ``update``."""

    def __init__(self, params: Iterable[Parameter] | Module, lr: float):
        self.params: list[Parameter] = list(params.parameters() if isinstance(params, Module) else params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty list of parameters")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be positive, got {lr}")
        self.lr = float(lr)
        self.state: dict[int, dict[str, Any]] = {id(p): {} for p in self.params}
        self.steps = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place. The update is tracked
        (``engine.inplace``): a graph computed before it and not backpropagated yet raises
        in backward() instead of using the new weights."""
        self.steps += 1
        params = [p for p in self.params if p.grad is not None]
        state = self.state
        for p, w in zip(params, engine.inplace(*params)):   # tracked in-place writes
            self.update(w, p.grad, state[id(p)])

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        raise NotImplementedError

    @staticmethod
    def _check(name: str, value: float, lo: float = 0.0, hi: float = math.inf, hi_open: bool = False) -> None:
        if not (lo <= value < hi if hi_open else lo <= value <= hi):
            raise ValueError(f"invalid {name}: {value}")


def _with_weight_decay(w: np.ndarray, g: np.ndarray, weight_decay: float) -> np.ndarray:
    """g + wd * w (L2 regularization folded into the gradient); g itself when wd = 0."""
    return g + weight_decay * w if weight_decay else g


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (heavy ball or Nesterov).

        g <- g + wd w
        b <- mu b + (1 - dampening) g      (b = g at the first step)
        g <- g + mu b  (Nesterov)  or  b
        w <- w - lr g
    """

    def __init__(self, params: Any, lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._check("momentum", momentum, 0, 1, hi_open=True)
        self._check("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum needs momentum > 0 and dampening = 0")
        self.momentum, self.dampening = momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        g = _with_weight_decay(w, g, self.weight_decay)
        if self.momentum:
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = np.array(g, dtype=w.dtype, copy=True)
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g if self.dampening else g
            g = g + self.momentum * buf if self.nesterov else buf
        w -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction.

        g <- g + wd w                  (L2, coupled; see AdamW for the decoupled form)
        m <- b1 m + (1 - b1) g
        v <- b2 v + (1 - b2) g^2
        w <- w - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._check("beta1", betas[0], 0, 1, hi_open=True)
        self._check("beta2", betas[1], 0, 1, hi_open=True)
        self._check("eps", eps)
        self._check("weight_decay", weight_decay)
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        self.adam_update(w, _with_weight_decay(w, g, self.weight_decay), state)

    def adam_update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        b1, b2 = self.betas
        if "m" not in state:
            state["m"], state["v"], state["t"] = np.zeros_like(w), np.zeros_like(w), 0
        m, v = state["m"], state["v"]
        state["t"] += 1
        t = state["t"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        step = self.lr / (1 - b1 ** t)
        denom = np.sqrt(v / (1 - b2 ** t))
        denom += self.eps
        w -= step * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019):
    w <- w - lr wd w, then the Adam step on the plain gradient."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        if self.weight_decay:
            w *= 1 - self.lr * self.weight_decay
        self.adam_update(w, g, state)


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012).

        v <- alpha v + (1 - alpha) g^2
        d <- sqrt(v - mean_g^2) + eps  (centered)  or  sqrt(v) + eps
        b <- mu b + g / d ;  w <- w - lr b     (momentum)   or   w <- w - lr g / d
    """

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, centered: bool = False, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._check("alpha", alpha, 0, 1)
        self._check("eps", eps)
        self._check("momentum", momentum, 0, 1, hi_open=True)
        self._check("weight_decay", weight_decay)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum
        self.centered, self.weight_decay = centered, weight_decay

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        g = _with_weight_decay(w, g, self.weight_decay)
        if "v" not in state:
            state["v"] = np.zeros_like(w)
        v = state["v"]
        v *= self.alpha
        v += (1 - self.alpha) * (g * g)
        if self.centered:
            mean_g = state.setdefault("mean_g", np.zeros_like(w))
            mean_g *= self.alpha
            mean_g += (1 - self.alpha) * g
            denom = np.sqrt(v - mean_g * mean_g)
        else:
            denom = np.sqrt(v)
        denom += self.eps
        if self.momentum:
            buf = state.setdefault("momentum", np.zeros_like(w))
            buf *= self.momentum
            buf += g / denom
            w -= self.lr * buf
        else:
            w -= self.lr * (g / denom)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011): s <- s + g^2;  w <- w - lr g / (sqrt(s) + eps)."""

    def __init__(self, params: Any, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0):
        super().__init__(params, lr)
        self._check("eps", eps)
        self._check("initial_accumulator_value", initial_accumulator_value)
        self._check("weight_decay", weight_decay)
        self.eps, self.weight_decay = eps, weight_decay
        self.initial = initial_accumulator_value

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        g = _with_weight_decay(w, g, self.weight_decay)
        s = state.setdefault("sum", np.full_like(w, self.initial))
        s += g * g
        denom = np.sqrt(s)
        denom += self.eps
        w -= self.lr * (g / denom)


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012).

        v <- rho v + (1 - rho) g^2
        d <- sqrt(u + eps) / sqrt(v + eps) * g
        u <- rho u + (1 - rho) d^2
        w <- w - lr d
    """

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self._check("rho", rho, 0, 1)
        self._check("eps", eps)
        self._check("weight_decay", weight_decay)
        self.rho, self.eps, self.weight_decay = rho, eps, weight_decay

    def update(self, w: np.ndarray, g: np.ndarray, state: dict[str, Any]) -> None:
        g = _with_weight_decay(w, g, self.weight_decay)
        if "v" not in state:
            state["v"], state["u"] = np.zeros_like(w), np.zeros_like(w)
        v, u = state["v"], state["u"]
        v *= self.rho
        v += (1 - self.rho) * (g * g)
        delta = np.sqrt(u + self.eps) / np.sqrt(v + self.eps) * g
        u *= self.rho
        u += (1 - self.rho) * (delta * delta)
        w -= self.lr * delta


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
    "adadelta": Adadelta,
}


def clip_grad_norm_(params: Iterable[Parameter] | Module, max_norm: float) -> float:
    """Scale all gradients together so that their global L2 norm is at most ``max_norm``.
    Returns the norm before clipping."""
    params = params.parameters() if isinstance(params, Module) else list(params)
    grads = [p.grad for p in params if p.grad is not None]
    total = math.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads))
    if max_norm <= 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be positive, got {max_norm}")
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


# --- learning-rate schedules -----------------------------------------------------------------

class LRScheduler:
    """Sets ``optimizer.lr = base_lr * factor(t)`` where t counts calls to ``step()``
    (call it once per epoch, or once per batch for per-step schedules)."""

    def __init__(self, optimizer: Optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.t = 0

    def factor(self, t: int) -> float:
        raise NotImplementedError

    def step(self) -> float:
        self.t += 1
        self.optimizer.lr = self.base_lr * self.factor(self.t)
        return self.optimizer.lr

    def get_lr(self) -> float:
        return self.optimizer.lr


class StepLR(LRScheduler):
    """lr = base * gamma ** (t // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1):
        super().__init__(optimizer)
        if step_size <= 0:
            raise ValueError(f"StepLR: step_size must be positive, got {step_size}")
        if not gamma > 0:
            raise ValueError(f"StepLR: gamma must be positive, got {gamma}")
        self.step_size, self.gamma = step_size, gamma

    def factor(self, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base * gamma ** t."""

    def __init__(self, optimizer: Optimizer, gamma: float):
        super().__init__(optimizer)
        if not gamma > 0:
            raise ValueError(f"ExponentialLR: gamma must be positive, got {gamma}")
        self.gamma = gamma

    def factor(self, t: int) -> float:
        return self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2, constant after T_max."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        super().__init__(optimizer)
        if T_max <= 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be positive, got {T_max}")
        if not eta_min >= 0:
            raise ValueError(f"CosineAnnealingLR: eta_min must be >= 0, got {eta_min}")
        self.T_max, self.eta_min = T_max, eta_min

    def factor(self, t: int) -> float:
        t = min(t, self.T_max)
        lr = self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2
        return lr / self.base_lr


class LinearWarmup(LRScheduler):
    """lr rises linearly from start_factor * base to base over ``warmup_steps`` steps, then
    follows ``then`` (another schedule on the same optimizer, counted from the end of the
    warm-up) or stays at base."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.1,
                 then: LRScheduler | None = None):
        super().__init__(optimizer)
        if warmup_steps <= 0:
            raise ValueError(f"LinearWarmup: warmup_steps must be positive, got {warmup_steps}")
        if not 0 <= start_factor <= 1:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")
        self.warmup_steps, self.start_factor, self.then = warmup_steps, start_factor, then
        optimizer.lr = self.base_lr * start_factor

    def factor(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.start_factor + (1 - self.start_factor) * t / self.warmup_steps
        return self.then.factor(t - self.warmup_steps) if self.then is not None else 1.0
