"""handgrad.nn: layers, losses, optimizers, data and training on top of ``engine``."""
from . import data, init, metrics, optim
from .compile import CompiledStep, compile_step
from .data import DataLoader, load_dataset
from .layers import (ELU, GELU, MLP, Dropout, Flatten, Identity, LeakyReLU, Linear, ReLU, Sigmoid,
                     Softmax, Softplus, Tanh)
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
    "fit", "evaluate", "predict", "compile_step", "CompiledStep", "History", "TrainingError", "save", "load", "CheckpointError",
    "accuracy", "confusion_matrix", "precision_recall",
]
