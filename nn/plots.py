"""Training curves and teaching plots with matplotlib (an optional extra:
``pip install "handgrad[plot]"``).

Every plot function takes ``ax=`` (draw into your own axes: one Axes, or the grid it
names) and returns the matplotlib Figure; ``path=`` also saves it (the format from the
extension). Without ``ax`` a new figure is made: through pyplot when it is meant to be
shown (in a script ``plt.show()`` shows it; in a notebook the returned figure is the one
displayed, once), a plain ``Figure`` when it only goes to a file. Importing this module
works without matplotlib; calling a plot function raises ``MatplotlibMissing`` naming the
extra to install.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

INSTALL = 'pip install "handgrad[plot]"'


class MatplotlibMissing(ModuleNotFoundError):
    """A plot function was called without matplotlib installed."""


def _pyplot() -> Any:
    """pyplot with the Agg backend (files only), or None without matplotlib: for callers
    that skip a plot when matplotlib is missing (nn.demos)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _require_matplotlib(what: str) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise MatplotlibMissing(f"{what} needs matplotlib, which is not installed: {INSTALL}",
                                name="matplotlib") from None


def _in_notebook() -> bool:
    from .progress import in_notebook
    return in_notebook()


def _new_figure(what: str, path: str | Path | None, figsize: tuple[float, float]) -> Any:
    """A figure to draw on: a plain Figure when it only goes to a file (no GUI, nothing to
    close), else pyplot's (shown by plt.show() or the notebook)."""
    _require_matplotlib(what)
    if path is not None and not _in_notebook():
        from matplotlib.figure import Figure
        return Figure(figsize=figsize)
    import matplotlib.pyplot as plt
    return plt.figure(figsize=figsize)


def _axes_grid(what: str, ax: Any, shape: tuple[int, int]) -> Any:
    """``ax`` as a numpy array of Axes of ``shape`` (a flat sequence of the right length
    is reshaped); anything else is a ValueError naming what was expected."""
    import numpy as np
    from matplotlib.axes import Axes

    grid = np.asarray(ax, dtype=object)
    if grid.size != shape[0] * shape[1] or not all(isinstance(a, Axes) for a in grid.flat):
        raise ValueError(f"{what}: ax must be {shape[0]} x {shape[1]} matplotlib Axes (as "
                         f"fig.subplots{shape} gives), got {_describe(ax)}")
    return grid.reshape(shape)


def _describe(ax: Any) -> str:
    import numpy as np
    shape = np.shape(np.asarray(ax, dtype=object))
    return type(ax).__name__ + (f" of shape {shape}" if shape else "")


def _finish(fig: Any, path: str | Path | None, made: bool) -> Any:
    """Lay out a figure this module made, save it to ``path`` if given, and return it. In a
    notebook the figure is released from pyplot so that only the returned value shows."""
    if made:
        fig.tight_layout()
    if path is not None:
        fig.savefig(Path(path), dpi=100)
    if made and _in_notebook():
        import matplotlib.pyplot as plt
        plt.close(fig)
    return fig


def plot_history(history: Any, path: str | Path | None = None, *, ax: Any = None) -> Any:
    """Loss per step and per epoch (log scale), and accuracy per epoch, side by side.

    ``ax``: two Axes (loss, accuracy), or one Axes for the loss alone. Returns the
    Figure; ``path`` also saves it."""
    _require_matplotlib("plot_history")
    from matplotlib.axes import Axes

    made = ax is None
    if made:
        fig = _new_figure("plot_history", path, (10, 4))
        ax_loss, ax_acc = fig.subplots(1, 2)
    else:
        if isinstance(ax, Axes):
            ax_loss, ax_acc = ax, None
        else:
            ax_loss, ax_acc = _axes_grid("plot_history", ax, (1, 2))[0]
        fig = ax_loss.figure
    epochs = [e["epoch"] for e in history.epochs]
    # few epochs (a full-batch run: one step each) would be a bare line or a lone point:
    # mark every epoch
    mark = dict(marker="o", markersize=4) if len(epochs) <= MARKED_EPOCHS else {}
    if len(history.steps) > len(epochs):       # else the per-step curve is the epoch curve
        ax_loss.plot(_step_positions(history), history.steps, color="0.75", linewidth=0.8,
                     label="train loss (per step)")
    full_batch = " (one step per epoch)" if epochs and len(history.steps) == len(epochs) else ""
    ax_loss.plot(*_recorded(history, "train_loss"), label=f"train loss (epoch mean){full_batch}",
                 **mark)
    if history.metric("val_loss"):
        ax_loss.plot(*_recorded(history, "val_loss"), label="validation loss", **mark)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    if history.steps:
        ax_loss.set_yscale("log")
        ax_loss.legend()
    if ax_acc is not None:
        for key, label in (("train_accuracy", "train"), ("val_accuracy", "validation")):
            if history.metric(key):
                ax_acc.plot(*_recorded(history, key), label=label, **mark)
        ax_acc.set_xlabel("epoch")
        ax_acc.set_ylabel("accuracy")
        if ax_acc.get_lines():
            ax_acc.legend()
    return _finish(fig, path, made)


def _recorded(history: Any, key: str) -> tuple[list[int], list[float]]:
    """The epochs that recorded metric ``key`` and its values there: a run continued with
    validation data has val_loss from its later epochs only."""
    return [e["epoch"] for e in history.epochs if key in e], history.metric(key)


def _step_positions(history: Any) -> list[float]:
    """Where each loss of ``history.steps`` goes on the epoch axis: the j-th of the n steps
    of epoch e at e - 1 + j / n, so that the last step of epoch e is at x = e, under that
    epoch's record. n is the record's ``steps`` (what ``fit`` records); the steps after the
    last record (a run interrupted, or stopped by a TrainingError, during an epoch) take the
    last record's n. A History whose records do not count their steps (saved by an older
    handgrad, or made by hand) spreads the steps evenly, as many per epoch as there are."""
    steps, records = len(history.steps), history.epochs
    counts = [r.get("steps") for r in records]
    if not records or not all(isinstance(n, int) and n > 0 for n in counts) \
            or sum(counts) > steps:
        per_epoch = max(1, steps // max(1, len(records)))
        return [i / per_epoch for i in range(1, steps + 1)]
    xs: list[float] = []
    for record, n in zip(records, counts, strict=True):
        xs += [record["epoch"] - 1 + j / n for j in range(1, n + 1)]
    last, n = records[-1]["epoch"], counts[-1]
    xs += [last + j / n for j in range(1, steps - len(xs) + 1)]
    return xs


MARKED_EPOCHS = 30   # up to this many epochs, each is marked on the curves
NOTE_POINTS = 10     # the notes on plot_activations' panels: readable when projected

ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu")

# What a lecture points at, per activation: computed from the engine's own derivative in
# activation_facts() and written on each panel of plot_activations.
def activation_facts(x: Any = None) -> dict[str, dict[str, float | None]]:
    """For each activation, from handgrad's backward (not from formulas): the largest
    derivative and where it is, and the interval outside which f'(x) < 0.01 (saturation;
    None for functions that do not saturate on both sides)."""
    import numpy as np

    from handgrad import engine

    x = np.linspace(-6, 6, 12001) if x is None else np.asarray(x, dtype=np.float64)
    facts: dict[str, dict[str, float | None]] = {}
    for name in ACTIVATIONS:
        t = engine.Tensor(x, requires_grad=True)
        (d,) = engine.grad(getattr(engine, name)(t).sum(), t)
        i = int(np.argmax(d))
        small = np.abs(d) < 0.01
        inside = np.flatnonzero(~small)
        # The saturation bounds are the last grid points where f' < 0.01 (the threshold lies
        # between them and the first where it is not), rounded outward, so that "f' < 0.01
        # for x < b" holds as printed (elu's was -4.6, where elu' is 0.01005).
        left = x[max(inside[0] - 1, 0)] if inside.size else float("nan")
        right = x[min(inside[-1] + 1, x.size - 1)] if inside.size else float("nan")
        facts[name] = {"max_derivative": round(float(d[i]), 4), "at": round(float(x[i]), 3),
                       "saturates_below": math.floor(100 * float(left)) / 100 if small[0] else None,
                       "saturates_above": math.ceil(100 * float(right)) / 100 if small[-1] else None}
    return facts


def plot_activations(path: str | Path | None = None, *, ax: Any = None,
                     names: Sequence[str] = ACTIVATIONS) -> Any:
    """Each activation (top row) and its derivative (bottom row, as handgrad's backward
    computes it with ``engine.grad``), each panel with its own y-range so that small
    derivatives stay visible, annotated with the facts a lecture points at: the largest
    derivative (sigmoid' peaks at 0.25, tanh' at 1), ReLU's step, where each saturates
    (f' < 0.01), written above each derivative panel (10 pt, clear of the curves).

    ``names``: which activations (default all of ``ACTIVATIONS``); ``ax``: 2 x len(names)
    Axes. Returns the Figure; ``path`` also saves it."""
    import numpy as np

    from handgrad import engine

    unknown = [n for n in names if n not in ACTIVATIONS]
    if unknown or not names:
        raise ValueError(f"plot_activations: names must be some of {', '.join(ACTIVATIONS)}, "
                         f"got {list(names)}")
    _require_matplotlib("plot_activations")
    made = ax is None
    if made:
        fig = _new_figure("plot_activations", path, (2.8 * len(names), 6))
        axes = np.asarray(fig.subplots(2, len(names), squeeze=False))
    else:
        axes = _axes_grid("plot_activations", ax, (2, len(names)))
        fig = axes[0, 0].figure
    x = np.linspace(-6, 6, 1201)
    facts = activation_facts(x)
    for k, name in enumerate(names):
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
            bound = math.ceil(10 * max(-f['saturates_below'], f['saturates_above'])) / 10
            note += f"\nf′ < 0.01 for |x| > {bound:.1f}"     # rounded outward: true as printed
            for edge in (f["saturates_below"], f["saturates_above"]):
                bottom.axvspan(*( (x[0], edge) if edge < 0 else (edge, x[-1]) ),
                               color="0.9", zorder=0)
        elif f["saturates_below"] is not None:
            note += f"\nf′ < 0.01 for x < {math.floor(10 * f['saturates_below']) / 10:.1f}"
        # above the panel (its title), never over the curve
        bottom.set_title(note, fontsize=NOTE_POINTS, loc="left")
        lo, hi = float(dy.min()), float(dy.max())
        pad = 0.1 * (hi - lo or 1.0)
        bottom.set_ylim(lo - pad, hi + pad)
        bottom.set_xlabel("x")
    axes[0, 0].set_ylabel("f(x)")
    axes[1, 0].set_ylabel("f′(x) from backward")
    return _finish(fig, path, made)


def plot_gradient_norms(history: Any, path: str | Path | None = None,
                        weights_only: bool = True, *, ax: Any = None) -> Any:
    """The L2 norm of each layer's gradient per step (``fit(record_grad_norms=True)``), on
    a log scale: layers whose gradients vanish sit orders of magnitude below the others.
    ``weights_only`` leaves the biases out. ``ax``: one Axes. Returns the Figure; ``path``
    also saves it. A history without recorded norms is a ValueError."""
    if not history.grad_norms:
        raise ValueError("plot_gradient_norms: the history has no gradient norms; train with "
                         "fit(..., record_grad_norms=True)")
    _require_matplotlib("plot_gradient_norms")
    from matplotlib.axes import Axes

    made = ax is None
    if made:
        fig = _new_figure("plot_gradient_norms", path, (8, 4.5))
        ax = fig.subplots()
    elif not isinstance(ax, Axes):
        raise ValueError(f"plot_gradient_norms: ax must be one matplotlib Axes, got "
                         f"{_describe(ax)}")
    else:
        fig = ax.figure
    names = [n for n in history.grad_norms if not weights_only or not n.endswith("bias")]
    for name in names:
        norms = history.grad_norms[name]
        ax.plot(range(1, len(norms) + 1), norms, linewidth=0.9, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("‖∂L/∂W‖ (L2 norm)")
    ax.set_title("gradient norm per layer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _finish(fig, path, made)
