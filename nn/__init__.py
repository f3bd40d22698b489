"""handgrad.nn: layers, losses, optimizers, data and training on top of ``handgrad.engine``.

``nn.plots`` (matplotlib) and ``nn.demos`` load on first attribute access."""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import data, init, metrics, optim
from .compile import CompiledStep, compile_step
from .data import DataLoader, load_dataset
from .errors import UserInputError
from .layers import (
    ELU,
    GELU,
    MLP,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, l2_penalty
from .metrics import accuracy, confusion_matrix, precision_recall
from .module import Module, Parameter, Sequential
from .serialization import CheckpointError, load, save
from .train import History, TrainingError, evaluate, fit, predict

__all__ = [
    "Module", "Parameter", "Sequential", "Linear", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "ELU",
    "GELU", "Softplus", "Softmax", "Identity", "Flatten", "Dropout", "MLP",
    "CrossEntropyLoss", "BCEWithLogitsLoss", "MSELoss", "l2_penalty",
    "init", "optim", "data", "metrics", "DataLoader", "load_dataset",
    "fit", "evaluate", "predict", "UserInputError", "compile_step", "CompiledStep", "History",
    "TrainingError", "save", "load", "CheckpointError",
    "accuracy", "confusion_matrix", "precision_recall",
]


_SUBMODULES = ("plots", "demos", "cli", "serialization", "subnormal", "layers", "losses",
               "module", "train", "compile", "step", "callbacks", "history")


if TYPE_CHECKING:       # the submodules loaded on first use, for type checkers
    from . import (  # noqa: F401
        callbacks,
        cli,
        compile,
        demos,
        history,
        layers,
        losses,
        module,
        plots,
        serialization,
        step,
        subnormal,
        train,
    )
else:                   # hidden from type checkers: nn.<misspelt name> is their error
    def __getattr__(name: str) -> Any:
        if name in _SUBMODULES:
            return import_module(f".{name}", __name__)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
