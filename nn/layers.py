"""Layers: Linear, activations, Dropout, Flatten, and the MLP built from them."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from handgrad import engine
from handgrad.engine import Tensor
from handgrad.engine.plain import plain_repr

from . import init as init_
from .module import Module, Parameter, Sequential


def _bias_flag(where: str, bias: Any) -> bool:
    """``bias`` as a bool: True or False (numpy's too), or the integers 1 and 0; anything
    else is a ValueError naming ``where`` (a model records what it was built with, and a
    checkpoint of ``bias=1`` must read back as the model it is)."""
    if isinstance(bias, (bool, np.bool_)):
        return bool(bias)
    if isinstance(bias, (int, np.integer)) and bias in (0, 1):
        return bool(bias)
    raise ValueError(f"{where}: bias must be True or False (or 1 or 0), got {plain_repr(bias)}")


class Linear(Module):
    """y = x @ W + b with W of shape (in_features, out_features): the fused ``linear`` op.

    The weight is stored (in, out), as in the from-scratch derivations (delta_W = a^T delta),
    not (out, in) as in PyTorch. ``init`` names an initializer of ``nn.init`` or is a
    callable (shape, rng) -> array; biases start at zero. ``bias`` is True or False (1 and
    0 are taken as those, anything else is a ValueError).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str | init_.Initializer = "he", rng: np.random.Generator | None = None,
                 dtype: Any = np.float32):
        super().__init__()
        for what, n in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
                raise ValueError(f"Linear: {what} must be a positive integer, got {plain_repr(n)}")
        bias = _bias_flag("Linear", bias)
        init_.check_rng("Linear", rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(init_.initialize(init, (in_features, out_features), rng, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x: Any) -> Tensor:
        try:    # the op checks the shapes; its error gets this layer's name in front
            return engine.linear(x, self.weight, self.bias)
        except ValueError as e:
            raise ValueError(f"Linear({self.in_features}→{self.out_features}): {e}") from None

    def extra_repr(self) -> str:
        return f"{self.in_features}→{self.out_features}, bias={self.bias is not None}"


class _Activation(Module):
    """An activation: forward applies ``fn`` with the module's settings as keyword
    arguments. Each setting is an attribute (``LeakyReLU().negative_slope``), read at every
    call, so assigning one after construction changes what the module computes (as in
    PyTorch); the op checks the value at the call."""

    fn: Any = None
    _settings: tuple[str, ...] = ()     # the names of fn's keyword arguments this one holds

    def __init__(self, **settings: Any):
        super().__init__()
        object.__setattr__(self, "_settings", tuple(settings))
        for name, value in settings.items():
            setattr(self, name, value)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The settings passed to ``fn``, by name (their current values)."""
        return {name: getattr(self, name) for name in self._settings}

    def forward(self, x: Tensor) -> Tensor:
        if not self._settings:
            return type(self).fn(x)
        return type(self).fn(x, **self.kwargs)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())


class ReLU(_Activation):
    """relu(x) = max(x, 0), elementwise (``engine.relu``; derivative 0 at x = 0)."""

    fn = engine.relu


class Sigmoid(_Activation):
    """sigmoid(x) = 1 / (1 + e^-x), elementwise (``engine.sigmoid``)."""

    fn = engine.sigmoid


class Tanh(_Activation):
    """tanh(x), the hyperbolic tangent, elementwise (``engine.tanh``)."""

    fn = engine.tanh


class Softplus(_Activation):
    """softplus(x) = log(1 + e^x), elementwise, a smooth ReLU (``engine.softplus``)."""

    fn = engine.softplus


class LeakyReLU(_Activation):
    """leaky_relu(x) = x if x > 0 else negative_slope * x, elementwise
    (``engine.leaky_relu``)."""

    fn = engine.leaky_relu
    negative_slope: float

    def __init__(self, negative_slope: float = 0.01):
        super().__init__(negative_slope=negative_slope)


class ELU(_Activation):
    """elu(x) = x if x > 0 else alpha * (e^x - 1), elementwise (``engine.elu``)."""

    fn = engine.elu
    alpha: float

    def __init__(self, alpha: float = 1.0):
        super().__init__(alpha=alpha)


class GELU(_Activation):
    """gelu(x) = x * Phi(x), Phi the standard normal CDF (``engine.gelu``). The default
    ``approximate="tanh"`` uses the tanh approximation of Phi (PyTorch's default is
    ``"none"``, the exact form, also available)."""

    fn = engine.gelu
    approximate: str

    def __init__(self, approximate: str = "tanh"):
        super().__init__(approximate=approximate)


class Softmax(_Activation):
    """softmax(x)_i = e^(x_i) / sum_j e^(x_j) along ``axis`` (default the last), so each
    slice sums to 1 (``engine.softmax``)."""

    fn = engine.softmax
    axis: int

    def __init__(self, axis: int = -1):
        super().__init__(axis=axis)


class Identity(Module):
    """The identity: ``Identity()(x)`` is ``x`` itself (no op, no node)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1 * d2 * ...): images to vectors."""

    def forward(self, x: Tensor) -> Tensor:
        return engine.flatten(x, start_dim=1)


# What a copied Dropout's state holds in place of nn.init's shared generator.
_SHARED_RNG = "nn.init.default_rng()"


class Dropout(Module):
    """Inverted dropout: in training, zero each element with probability p and scale the
    rest by 1/(1-p); in eval mode, the identity."""

    rng: np.random.Generator

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.rng = init_.generator("Dropout", rng)
        self.p = p

    def __setattr__(self, name: str, value: Any) -> None:
        """``rng`` assigned later is checked as the constructor checks it (``layer.rng = 0``
        would reach the op, which reads an int as a seed: the same mask at every call)."""
        if name == "rng":
            value = init_.generator("Dropout", value)
        super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return engine.dropout(x, p=self.p, training=self.training, rng=self.rng)

    def __getstate__(self) -> dict[str, Any]:
        """A copy (pickle, deepcopy) of a Dropout on nn.init's shared generator draws from
        that generator too, as in PyTorch: with a copy of it, the copy drew the very masks
        the original drew, and ``manual_seed`` no longer reached it."""
        state = super().__getstate__()
        if state.get("rng") is init_.default_rng():
            state["rng"] = _SHARED_RNG
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if state.get("rng") == _SHARED_RNG:
            state = {**state, "rng": init_.default_rng()}
        super().__setstate__(state)

    def extra_repr(self) -> str:
        return f"p={self.p}"


ACTIVATIONS: dict[str, type[Module]] = {
    "relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh, "leaky_relu": LeakyReLU, "elu": ELU,
    "gelu": GELU, "softplus": Softplus, "identity": Identity,
}

# He initialization suits the ReLU family; Xavier suits the saturating ones.
DEFAULT_INIT = {"relu": "he", "leaky_relu": "he", "elu": "he", "gelu": "he", "softplus": "he",
                "sigmoid": "xavier", "tanh": "xavier", "identity": "xavier"}


class MLP(Module):
    """A multilayer perceptron: ``MLP([784, 50, 10], activation="sigmoid")`` is
    Linear(784→50), Sigmoid, Linear(50→10). The output layer is linear (logits, for the
    fused softmax-cross-entropy or sigmoid-BCE losses).

    ``init`` (a name of ``nn.init.INITIALIZERS`` or a callable (shape, rng) -> array;
    default He for the ReLU family, Xavier for sigmoid, tanh and identity) initializes the
    hidden layers only: the output layer is always Xavier (``"xavier"``), whatever
    ``init`` is; a callable is called for the hidden layers' weights only. For another
    output initialization, assign ``model.layers[-1].weight`` a new ``nn.Parameter``
    before building the optimizer."""

    config: dict[str, Any]      # what it takes to build this model again (in checkpoints)

    def __init__(self, sizes: Sequence[int], activation: str = "relu", dropout: float = 0.0,
                 init: str | init_.Initializer | None = None, bias: bool = True,
                 seed: int | None = None, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32):
        super().__init__()
        sizes = list(sizes)
        for i, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
                raise ValueError(f"MLP: sizes must be positive integers, got {plain_repr(n)} at "
                                 f"position {i} of {plain_repr(sizes)}")
        sizes = [int(n) for n in sizes]
        if len(sizes) < 2:
            raise ValueError(f"MLP: sizes must list at least an input and an output size, "
                             f"got {plain_repr(sizes)}")
        bias = _bias_flag("MLP", bias)
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: unknown activation {activation!r}; choose one of "
                             f"{sorted(ACTIVATIONS)}")
        init_.check_rng("MLP", rng)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
            raise TypeError(f"MLP: seed must be an integer or None, got {seed!r}")
        if seed is not None and rng is not None:
            raise ValueError("MLP: give seed or rng, not both (the weights would come from rng "
                             "alone, the seed ignored)")
        if dropout and len(sizes) == 2:
            raise ValueError(f"MLP: dropout={plain_repr(dropout)} applies after hidden layers, "
                             f"and sizes {plain_repr(sizes)} have none (no dropout would run)")
        if rng is None:
            rng = np.random.default_rng(seed) if seed is not None else init_.default_rng()
        init = init or DEFAULT_INIT[activation]
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = i == len(sizes) - 2
            layers.append(Linear(n_in, n_out, bias=bias, init="xavier" if last else init, rng=rng,
                                 dtype=dtype))
            if not last:
                layers.append(ACTIVATIONS[activation]())
                if dropout:
                    layers.append(Dropout(dropout, rng=rng))
        self.layers = Sequential(*layers)
        # What it takes to build this model again (saved in checkpoints).
        object.__setattr__(self, "config", {
            "sizes": sizes, "activation": activation, "dropout": float(dropout),
            "init": init if isinstance(init, str) else None, "bias": bias,
            "dtype": np.dtype(dtype).name})

    def forward(self, x: Any) -> Tensor:
        return self.layers(x)

    def extra_repr(self) -> str:
        return f"sizes={self.config['sizes']}, activation={self.config['activation']!r}"
