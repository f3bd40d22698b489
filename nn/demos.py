"""Demonstrations for a lecture: the vanishing gradient.

``vanishing_gradients()`` builds the same deep MLP with sigmoid, tanh and ReLU hidden
layers and measures the norm of each layer's weight gradient on the whole training set,
at initialisation and after some full-batch training. Through k sigmoid layers the
backward pass multiplies the delta by σ'(z) ≤ 0.25 at every layer (BP2), so the first
layers' gradients shrink geometrically; ReLU's derivative is 1 where a unit is active.
``handgrad demo vanishing`` prints the table and draws it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from handgrad import engine
from handgrad.engine.plain import plain_repr

from .data import load_dataset
from .layers import MLP, Linear
from .losses import CrossEntropyLoss
from .optim import SGD


def _layer_norms(model: MLP, loss_fn: Any, x: np.ndarray, y: np.ndarray) -> list[float]:
    """‖∂L/∂W‖ of each Linear layer, input side first, on one full-batch backward."""
    for p in model.parameters():
        p.grad = None
    loss_fn(model(engine.Tensor(x)), y).backward()
    norms = []
    for m in model.modules():
        if isinstance(m, Linear):
            g = m.weight.grad
            assert g is not None            # every weight lies on the path to the loss
            norms.append(math.sqrt(float(np.sum(np.square(g, dtype=np.float64)))))
    return norms


def vanishing_gradients(depth: int = 8, width: int = 32,
                        activations: tuple[str, ...] = ("sigmoid", "tanh", "relu"),
                        steps: int = 200, lr: float = 0.1, dataset: str = "spirals",
                        seed: int = 0) -> dict[str, dict[str, Any]]:
    """For each activation: the per-layer weight-gradient norms at initialisation
    (``init``) and after ``steps`` full-batch SGD steps (``trained``), and the training
    accuracy reached. ``depth`` hidden layers of ``width`` units; each activation gets its
    usual initialisation (Xavier for sigmoid/tanh, He for ReLU)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"vanishing_gradients: depth must be a positive integer, got {plain_repr(depth)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"vanishing_gradients: steps must be an integer >= 0, got {plain_repr(steps)}")
    data = load_dataset(dataset, seed=seed, val_fraction=0)
    x, y = data.x_train.reshape(len(data.x_train), -1), data.y_train
    sizes = [x.shape[1]] + [width] * depth + [data.num_classes]
    loss_fn = CrossEntropyLoss()
    result: dict[str, dict[str, Any]] = {}
    for act in activations:
        model = MLP(sizes, activation=act, seed=seed)
        init = _layer_norms(model, loss_fn, x, y)
        opt = SGD(model, lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(model(engine.Tensor(x)), y).backward()
            opt.step()
        trained = _layer_norms(model, loss_fn, x, y)
        with engine.no_grad():
            accuracy = float(np.mean(model(engine.Tensor(x)).numpy().argmax(1) == y))
        result[act] = {"init": init, "trained": trained, "train_accuracy": accuracy}
    return result


def table(result: dict[str, dict[str, Any]]) -> str:
    """Per layer (input side first): each activation's gradient norm at init and trained."""
    acts = list(result)
    n = len(next(iter(result.values()))["init"])
    head = "layer  " + "  ".join(f"{a + ' init':>13} {a + ' trained':>15}" for a in acts)
    lines = [head]
    for i in range(n):
        cells = "  ".join(f"{result[a]['init'][i]:>13.3e} {result[a]['trained'][i]:>15.3e}"
                          for a in acts)
        lines.append(f"{i + 1:>5}  {cells}")
    lines.append("train accuracy " + ", ".join(f"{a} {result[a]['train_accuracy']:.3f}" for a in acts))
    return "\n".join(lines)


def plot_vanishing(result: dict[str, dict[str, Any]], path: str | Path | None = None, *,
                   ax: Any = None) -> Any:
    """Two panels, at initialisation and after training: gradient norm per layer (log
    scale) for each activation. Draws into ``ax`` (two Axes) or a new figure, saves it to
    ``path`` if given, and returns the figure; without matplotlib, ``MatplotlibMissing``."""
    from . import plots

    what = "plot_vanishing"
    made = ax is None
    if made:
        fig = plots._new_figure(what, path, (10, 4))
        axes = fig.subplots(1, 2, sharey=True)
    else:
        axes = plots._axes_grid(what, ax, (1, 2))[0]
        fig = axes[0].figure
    for a, when in zip(axes, ("init", "trained"), strict=True):
        for act, r in result.items():
            norms = r[when]
            a.plot(range(1, len(norms) + 1), norms, "o-", label=act)
        a.set_yscale("log")
        a.set_xlabel("layer (1 = next to the input)")
        a.set_title("at initialisation" if when == "init" else "after training")
        a.grid(True, alpha=0.3)
    axes[0].set_ylabel("‖∂L/∂W‖ of the layer")
    axes[0].legend()
    if made:
        fig.suptitle("Vanishing gradients: the same deep MLP with different activations")
    return plots._finish(fig, path, made)
