"""Weight initialization. Every initializer takes a shape and a ``numpy.random.Generator``
and returns a new array, so a seed reproduces a network bit for bit.

For a weight of shape (fan_in, fan_out) (handgrad's Linear computes x @ W + b):
  he / kaiming   N(0, 2 / fan_in)                  keeps activations' variance through ReLU
  xavier/glorot  N(0, 2 / (fan_in + fan_out))      for tanh / sigmoid
  *_uniform      the uniform law with the same variance
  small_normal   N(0, 0.1^2)                       the classic from-scratch choice
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from handgrad.engine.plain import plain_repr

Initializer = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]

_default_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reset the generator used by layers built without an explicit ``rng``, in place (as
    ``torch.manual_seed``): the initial weights of layers built afterwards, and the masks of
    every such Dropout, built before or after, repeat after the same seed."""
    _default_rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state


def default_rng() -> np.random.Generator:
    """The generator layers use when built without an explicit ``rng`` (``manual_seed`` resets it)."""
    return _default_rng


def check_rng(where: str, rng: Any) -> None:
    """A TypeError naming ``where`` unless ``rng`` is a ``numpy.random.Generator`` or None.
    An int seed is refused too: a layer keeps its generator and draws from it again at
    every call (a dropout seeded with an int would draw the same mask every step)."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        hint = (f"; for a seed, pass np.random.default_rng({rng})"
                if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) else "")
        raise TypeError(f"{where}: rng must be a numpy.random.Generator or None, got "
                        f"{plain_repr(rng)} ({type(rng).__name__}){hint}")


def generator(where: str, rng: Any) -> np.random.Generator:
    """``rng`` checked by ``check_rng``, None being the default generator."""
    check_rng(where, rng)
    return rng if rng is not None else _default_rng


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"fan-based initialization needs a weight of at least 2 dimensions, "
                         f"got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[0] * receptive, shape[1] * receptive


def kaiming_normal(shape: tuple[int, ...], rng: np.random.Generator, gain: float = math.sqrt(2)) -> np.ndarray:
    """He / Kaiming normal: N(0, gain^2 / fan_in); the default gain sqrt(2) suits ReLU."""
    fan_in, _ = _fans(shape)
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def kaiming_uniform(shape: tuple[int, ...], rng: np.random.Generator, gain: float = math.sqrt(2)) -> np.ndarray:
    """He / Kaiming uniform: U(-b, b) with b = gain * sqrt(3 / fan_in), the variance of
    ``kaiming_normal``."""
    fan_in, _ = _fans(shape)
    bound = gain * math.sqrt(3 / fan_in)
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(shape: tuple[int, ...], rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """Xavier / Glorot normal: N(0, gain^2 * 2 / (fan_in + fan_out)), for tanh and sigmoid."""
    fan_in, fan_out = _fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2 / (fan_in + fan_out)), size=shape)


def xavier_uniform(shape: tuple[int, ...], rng: np.random.Generator, gain: float = 1.0) -> np.ndarray:
    """Xavier / Glorot uniform: U(-b, b) with b = gain * sqrt(6 / (fan_in + fan_out)), the
    variance of ``xavier_normal``."""
    fan_in, fan_out = _fans(shape)
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def small_normal(shape: tuple[int, ...], rng: np.random.Generator, std: float = 0.1) -> np.ndarray:
    """N(0, std^2) whatever the fans: the classic from-scratch choice (std 0.1)."""
    return rng.normal(0.0, std, size=shape)


def zeros(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    """All zeros in float64 (biases); ``rng`` is accepted and unused."""
    return np.zeros(shape)


def ones(shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    """All ones in float64; ``rng`` is accepted and unused."""
    return np.ones(shape)


INITIALIZERS: dict[str, Initializer] = {
    "he": kaiming_normal, "kaiming": kaiming_normal, "kaiming_normal": kaiming_normal,
    "he_uniform": kaiming_uniform, "kaiming_uniform": kaiming_uniform,
    "xavier": xavier_normal, "glorot": xavier_normal, "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform, "glorot_uniform": xavier_uniform,
    "small_normal": small_normal, "normal": small_normal,
    "zeros": zeros, "ones": ones,
}


def get(init: str | Initializer) -> Initializer:
    """An initializer by name, or ``init`` itself when it is a callable."""
    if callable(init):
        return init
    if init not in INITIALIZERS:
        raise ValueError(f"unknown initializer {init!r}; choose one of {sorted(INITIALIZERS)}")
    return INITIALIZERS[init]


def initialize(init: str | Initializer, shape: tuple[int, ...], rng: np.random.Generator | None,
               dtype: Any = np.float32) -> np.ndarray:
    """A new array of ``shape`` from ``init`` (a name of ``INITIALIZERS`` or a callable),
    drawn from ``rng`` (the module's default generator when None) and cast to ``dtype``.
    An initializer that returns another shape is a ValueError naming it; an ``rng`` other
    than a Generator or None is a TypeError."""
    out = np.asarray(get(init)(tuple(shape), generator("initialize", rng)))
    if out.shape != tuple(shape):
        raise ValueError(f"initializer {init!r} returned shape {out.shape}, expected {tuple(shape)}")
    return out.astype(dtype)
