"""Training curves with matplotlib (an optional extra: ``pip install handgrad[plot]``).

Importing this module works without matplotlib; the functions return None then."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_history(history: Any, path: str | Path) -> Path | None:
    """Loss per step and per epoch, and accuracy per epoch, in one PNG. Returns the path,
    or None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    epochs = [e["epoch"] for e in history.epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    steps_per_epoch = max(1, len(history.steps) // max(1, len(epochs)))
    ax_loss.plot([i / steps_per_epoch for i in range(1, len(history.steps) + 1)], history.steps,
                 color="0.75", linewidth=0.8, label="train loss (per step)")
    ax_loss.plot(epochs, history.metric("train_loss"), label="train loss (epoch mean)")
    if history.metric("val_loss"):
        ax_loss.plot(epochs, history.metric("val_loss"), label="validation loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.set_yscale("log")
    ax_loss.legend()
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
        if history.metric(key):
            ax_acc.plot(epochs, history.metric(key), label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")


def plot_activations(path: str | Path) -> Path | None:
    """Each activation and its derivative on one figure (a grid of small plots). The
    derivative is what handgrad's backward computes (``engine.grad``), not a formula, so
    the figure shows the rules the engine really uses. Returns the path, or None when
    matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    import engine

    x = np.linspace(-4, 4, 801)
    fig, axes = plt.subplots(2, 4, figsize=(12, 5.5), sharex=True)
    for ax, name in zip(axes.flat, ACTIVATIONS):
        t = engine.Tensor(x, requires_grad=True)
        y = getattr(engine, name)(t)
        (dy,) = engine.grad(y.sum(), t)  # d sum(f(x)) / dx_i = f'(x_i): elementwise ops
        ax.axhline(0, color="0.8", linewidth=0.8)
        ax.axvline(0, color="0.8", linewidth=0.8)
        ax.plot(x, y.data, label="f(x)")
        ax.plot(x, dy, linestyle="--", label="f'(x) from backward")
        ax.set_title(name)
        ax.set_ylim(-1.5, 4.1)
    axes.flat[0].legend(loc="upper left", fontsize=8)
    axes.flat[-1].axis("off")
    axes.flat[3].tick_params(labelbottom=True)  # the plot above the empty slot keeps its x axis
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
