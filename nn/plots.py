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

# What a lecture points at, per activation: computed from the engine's own derivative in
# activation_facts() and written on each panel of plot_activations.
def activation_facts(x: Any = None) -> dict[str, dict[str, float]]:
    """For each activation, from handgrad's backward (not from formulas): the largest
    derivative and where it is, and the interval outside which f'(x) < 0.01 (saturation;
    None for functions that do not saturate on both sides)."""
    import numpy as np

    from handgrad import engine

    x = np.linspace(-6, 6, 12001) if x is None else np.asarray(x, dtype=np.float64)
    facts: dict[str, dict[str, float]] = {}
    for name in ACTIVATIONS:
        t = engine.Tensor(x, requires_grad=True)
        (d,) = engine.grad(getattr(engine, name)(t).sum(), t)
        i = int(np.argmax(d))
        small = np.abs(d) < 0.01
        left = x[~small][0] if (~small).any() else float("nan")
        right = x[~small][-1] if (~small).any() else float("nan")
        facts[name] = {"max_derivative": round(float(d[i]), 4), "at": round(float(x[i]), 3),
                       "saturates_below": round(float(left), 2) if small[0] else None,
                       "saturates_above": round(float(right), 2) if small[-1] else None}
    return facts


def plot_activations(path: str | Path) -> Path | None:
    """Each activation (top) and its derivative (bottom, as handgrad's backward computes it
    with ``engine.grad``), each panel with its own y-range so that small derivatives stay
    visible, annotated with the facts a lecture points at: the largest derivative
    (sigmoid' peaks at 0.25, tanh' at 1), ReLU's step, where each saturates (f' < 0.01).
    Returns the path, or None when matplotlib is not installed."""
    plt = _pyplot()
    if plt is None:
        return None
    import numpy as np

    from handgrad import engine

    x = np.linspace(-6, 6, 1201)
    facts = activation_facts(x)
    fig, axes = plt.subplots(2, len(ACTIVATIONS), figsize=(2.6 * len(ACTIVATIONS), 5.2))
    for k, name in enumerate(ACTIVATIONS):
        t = engine.Tensor(x, requires_grad=True)
        y = getattr(engine, name)(t)
        (dy,) = engine.grad(y.sum(), t)  # d sum(f(x)) / dx_i = f'(x_i): elementwise ops
        top, bottom = axes[0, k], axes[1, k]
        for ax in (top, bottom):
            ax.axhline(0, color="0.85", linewidth=0.8)
            ax.axvline(0, color="0.85", linewidth=0.8)
        top.plot(x, y.numpy(), color="C0")
        top.set_title(name)
        bottom.plot(x, dy, color="C1")
        f = facts[name]
        bottom.plot([f["at"]], [f["max_derivative"]], "o", color="C3", markersize=4)
        note = f"max f′ = {f['max_derivative']:.3g}"
        if name == "relu":
            note += "\nf′ is a step: 0 | 1"
        if f["saturates_below"] is not None and f["saturates_above"] is not None:
            note += f"\nf′ < 0.01 for |x| > {max(-f['saturates_below'], f['saturates_above']):.1f}"
            for edge in (f["saturates_below"], f["saturates_above"]):
                bottom.axvspan(*( (x[0], edge) if edge < 0 else (edge, x[-1]) ),
                               color="0.9", zorder=0)
        elif f["saturates_below"] is not None:
            note += f"\nf′ < 0.01 for x < {f['saturates_below']:.1f}"
        bottom.text(0.03, 0.96, note, transform=bottom.transAxes, va="top", fontsize=8)
        lo, hi = float(dy.min()), float(dy.max())
        pad = 0.15 * (hi - lo or 1.0)
        bottom.set_ylim(lo - pad, hi + 2.2 * pad)           # room for the note
        bottom.set_xlabel("x")
    axes[0, 0].set_ylabel("f(x)")
    axes[1, 0].set_ylabel("f′(x) from backward")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_gradient_norms(history: Any, path: str | Path, weights_only: bool = True) -> Path | None:
    """The L2 norm of each layer's gradient per step (``fit(record_grad_norms=True)``), on
    a log scale: layers whose gradients vanish sit orders of magnitude below the others.
    ``weights_only`` leaves the biases out. Returns the path, or None without matplotlib
    or without recorded norms."""
    plt = _pyplot()
    if plt is None or not history.grad_norms:
        return None
    names = [n for n in history.grad_norms if not weights_only or not n.endswith("bias")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        norms = history.grad_norms[name]
        ax.plot(range(1, len(norms) + 1), norms, linewidth=0.9, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("‖∂L/∂W‖ (L2 norm)")
    ax.set_title("gradient norm per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
