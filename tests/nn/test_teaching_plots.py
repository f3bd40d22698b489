"""Plots a lecture needs: gradient norms per layer, the vanishing-gradient demo, and the
activations with their derivatives."""
from __future__ import annotations

import json
import math
import signal
import sys

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import cli, demos, plots

PNG = b"\x89PNG\r\n\x1a\n"
X = np.random.default_rng(0).standard_normal((96, 4))
Y = (X[:, 0] > 0).astype(np.int64)


def _fit(compile=False):
    model = nn.MLP([4, 8, 8, 2], seed=0)
    history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y),
                     epochs=2, batch_size=32, progress=False, record_grad_norms=True,
                     compile=compile)
    return model, history


def test_fit_records_each_parameters_gradient_norm_at_every_step():
    model, history = _fit()
    names = [n for n, _ in model.named_parameters()]
    assert list(history.grad_norms) == names
    assert all(len(v) == len(history.steps) == 6 for v in history.grad_norms.values())
    # the first step's norms, computed by hand from a fresh model on the first batch
    ref = nn.MLP([4, 8, 8, 2], seed=0)
    order = np.random.default_rng([0, 1]).permutation(len(X))[:32]
    nn.CrossEntropyLoss()(ref(engine.Tensor(X[order])), Y[order]).backward()
    for name, p in ref.named_parameters():
        assert history.grad_norms[name][0] == pytest.approx(np.linalg.norm(p.grad), rel=1e-12)
    again = nn.History.from_dict(json.loads(json.dumps(history.to_dict())))
    assert again.grad_norms == history.grad_norms
    _, compiled = _fit(compile=True)
    assert compiled.grad_norms == history.grad_norms          # same gradients, bit for bit


def test_plot_gradient_norms_draws_one_line_per_weight(tmp_path):
    pytest.importorskip("matplotlib")
    _, history = _fit()
    fig = plots.plot_gradient_norms(history, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG
    (ax,) = fig.axes
    assert [line.get_label() for line in ax.get_lines()] == [
        n for n in history.grad_norms if not n.endswith("bias")]
    with pytest.raises(ValueError, match=r"plot_gradient_norms: the history has no gradient "
                                         r"norms; train with fit\(\.\.\., record_grad_norms=True\)"):
        plots.plot_gradient_norms(nn.History(), tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


# --- ax=, the returned figure, matplotlib missing ----------------------------------------------

def test_plots_draw_into_the_axes_given_and_return_their_figure():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    _, history = _fit()
    fig = Figure()
    one = fig.subplots()
    assert plots.plot_gradient_norms(history, ax=one) is fig
    assert len(one.get_lines()) == 3                  # the three weight matrices
    fig = Figure()
    pair = fig.subplots(1, 2)
    assert plots.plot_history(history, ax=pair) is fig
    assert pair[0].get_ylabel() == "loss" and pair[1].get_ylabel() == "accuracy"
    fig = Figure()
    loss_only = fig.subplots()
    assert plots.plot_history(history, ax=loss_only) is fig and len(fig.axes) == 1
    fig = Figure()
    grid = fig.subplots(2, 2)
    assert plots.plot_activations(ax=grid, names=("sigmoid", "relu")) is fig
    assert [a.get_title() for a in grid[0]] == ["sigmoid", "relu"]


def test_plots_without_ax_make_a_figure_and_save_it_when_given_a_path(tmp_path):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    _, history = _fit()
    fig = plots.plot_history(history, tmp_path / "curves.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    fig = plots.plot_activations(names=("tanh",))
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_wrong_axes_are_an_error_naming_what_is_expected():
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    _, history = _fit()
    three = Figure().subplots(1, 3)
    with pytest.raises(ValueError, match=r"plot_history: ax must be 1 x 2 matplotlib Axes"):
        plots.plot_history(history, ax=three)
    with pytest.raises(ValueError, match=r"plot_activations: ax must be 2 x 7 matplotlib Axes"):
        plots.plot_activations(ax=three)
    with pytest.raises(ValueError, match=r"plot_gradient_norms: ax must be one matplotlib Axes, "
                                         r"got ndarray of shape \(3,\)"):
        plots.plot_gradient_norms(history, ax=three)
    with pytest.raises(ValueError, match="plot_activations: names must be some of sigmoid"):
        plots.plot_activations(names=("swish",))


@pytest.mark.parametrize("call", [
    lambda h: plots.plot_history(h),
    lambda h: plots.plot_gradient_norms(h, "g.png"),
    lambda h: plots.plot_activations(),
])
def test_without_matplotlib_a_plot_says_what_to_install(monkeypatch, call):
    _, history = _fit()
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # any import of it now fails
    with pytest.raises(plots.MatplotlibMissing, match=r"^plot_\w+ needs matplotlib, which is "
                                                      r"not installed: pip install \"handgrad\[plot\]\"$"):
        call(history)


def test_activation_facts_are_what_a_lecture_points_at():
    facts = plots.activation_facts()
    assert facts["sigmoid"]["max_derivative"] == 0.25 and facts["sigmoid"]["at"] == 0.0
    assert facts["tanh"]["max_derivative"] == 1.0
    assert facts["sigmoid"]["saturates_above"] == pytest.approx(4.6, abs=0.05)   # σ' < 0.01
    assert facts["sigmoid"]["saturates_below"] == -facts["sigmoid"]["saturates_above"]
    assert facts["relu"]["saturates_above"] is None                             # never above
    assert facts["relu"]["saturates_below"] == pytest.approx(0, abs=0.01)        # a step at 0


def test_plot_activations_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    plots.plot_activations(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes()[:8] == PNG


def test_the_vanishing_gradient_demo_shows_sigmoid_gradients_vanishing():
    result = demos.vanishing_gradients(depth=6, width=16, steps=5)
    sig, relu = result["sigmoid"]["init"], result["relu"]["init"]
    assert len(sig) == len(relu) == 7
    # through six sigmoid layers (σ' <= 1/4 each) the first layer's gradient is tiny
    assert sig[0] / sig[-1] < 1e-3
    assert relu[0] / relu[-1] > 0.05
    assert all(math.isfinite(v) for r in result.values() for v in r["trained"])
    with pytest.raises(ValueError, match="depth must be a positive integer"):
        demos.vanishing_gradients(depth=0)


def test_handgrad_demo_vanishing_prints_the_table_and_writes_the_plot(tmp_path, capsys):
    assert cli.main(["demo", "vanishing", "--depth", "3", "--steps", "2",
                     "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sigmoid init" in out and "relu trained" in out
    data = json.loads((tmp_path / "vanishing.json").read_text())
    assert set(data) == {"sigmoid", "tanh", "relu"}
    if plots._pyplot() is not None:
        assert (tmp_path / "vanishing.png").read_bytes()[:8] == PNG
    with pytest.raises(SystemExit) as exit_:
        cli.main(["demo", "vanishing", "--depth", "0"])
    assert exit_.value.code == 2
    assert "--depth: must be a positive integer, got 0" in capsys.readouterr().err


def test_handgrad_train_out_writes_the_gradient_norm_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["train", "--dataset", "xor", "--epochs", "3", "--out", str(tmp_path),
                     "--quiet"]) == 0
    assert (tmp_path / "grad_norms.png").read_bytes()[:8] == PNG
    history = json.loads((tmp_path / "history.json").read_text())
    assert set(history["grad_norms"]) >= {"layers.0.weight", "layers.0.bias"}


def test_activation_notes_are_readable_and_clear_of_the_curves():
    pytest.importorskip("matplotlib")
    fig = plots.plot_activations()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    from matplotlib.text import Text
    notes = [t for t in fig.findobj(Text) if "max f′" in t.get_text()]
    assert len(notes) == len(plots.ACTIVATIONS)
    for note in notes:
        assert note.get_fontsize() >= 10
        box = note.get_window_extent(renderer)
        for ax in fig.axes:
            for line in ax.get_lines():
                points = ax.transData.transform(line.get_xydata())
                inside = ((points[:, 0] > box.x0) & (points[:, 0] < box.x1)
                          & (points[:, 1] > box.y0) & (points[:, 1] < box.y1))
                assert not inside.any(), (note.get_text(), line.get_label())


def test_curves_of_a_full_batch_run_mark_every_epoch():
    pytest.importorskip("matplotlib")
    # what fit(..., batch_size=len(x), epochs=3) records: one step per epoch
    history = nn.History(steps=[0.69, 0.52, 0.41],
                         epochs=[{"epoch": k + 1, "train_loss": v, "train_accuracy": a}
                                 for k, (v, a) in enumerate([(0.69, 0.5), (0.52, 0.7),
                                                             (0.41, 0.8)])])
    fig = plots.plot_history(history)
    ax_loss, ax_acc = fig.axes[:2]
    loss_lines = ax_loss.get_lines()
    assert len(loss_lines) == 1                          # no per-step copy of the same curve
    assert "one step per epoch" in loss_lines[0].get_label()
    for line in loss_lines + ax_acc.get_lines():
        assert line.get_marker() == "o" and len(line.get_xdata()) == 3


@pytest.mark.parametrize("stop", ["error", "interrupt"])
def test_the_per_step_curve_of_a_history_that_ends_mid_epoch_stays_under_its_epochs(stop):
    pytest.importorskip("matplotlib")
    # a History that holds part of an epoch (a TrainingError's, an interrupted run's): the
    # last step of epoch e still sits at x = e, the unfinished epoch's steps after it

    class Stop(nn.callbacks.Callback):
        def on_step_end(self, epoch, step, loss, scores, targets):
            if epoch == 3 and step == 2:
                if stop == "error":
                    raise nn.TrainingError("stop", what="test")
                signal.raise_signal(signal.SIGINT)

    model = nn.MLP([4, 8, 2], seed=0)
    try:
        history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y),
                         epochs=5, batch_size=16, verbose=0, callbacks=[Stop()])
    except nn.TrainingError as e:
        history = e.history
    assert [len(history.epochs), len(history.steps)] == [2, 14]       # 6 steps an epoch
    assert [r["steps"] for r in history.epochs] == [6, 6]
    fig = plots.plot_history(nn.History.from_dict(json.loads(json.dumps(history.to_dict()))))
    line = next(ln for ln in fig.axes[0].get_lines() if "per step" in ln.get_label())
    np.testing.assert_allclose(line.get_xdata(), [k / 6 for k in range(1, 15)])


def test_the_saturation_bounds_hold_as_printed():
    """The elu panel said "f′ < 0.01 for x < -4.6", where elu′ is 0.01005 (the grid's first
    point not saturated, rounded to one decimal): each bound a panel prints holds there and
    beyond, by handgrad's backward."""
    import re
    fig = nn.plots.plot_activations()
    notes = [ax.get_title(loc="left") for ax in fig.axes if "max f′" in ax.get_title(loc="left")]
    assert len(notes) == len(nn.plots.ACTIVATIONS)
    checked = 0
    for name, note in zip(nn.plots.ACTIVATIONS, notes, strict=True):
        m = re.search(r"f′ < 0.01 for (x <|\|x\| >) (-?[0-9.]+)", note)
        if m is None:
            continue
        bound = float(m.group(2))
        x = np.linspace(bound - 3, bound, 301) if m.group(1) == "x <" else \
            np.concatenate([np.linspace(bound, bound + 3, 301), -np.linspace(bound, bound + 3, 301)])
        t = engine.Tensor(x, requires_grad=True)
        getattr(engine, name)(t).sum().backward()
        assert np.all(np.abs(t.grad) < 0.01), (name, note)
        checked += 1
    assert checked >= 4


def test_a_metric_recorded_for_part_of_the_run_is_drawn_at_its_own_epochs():
    """A run continued with validation data has val_loss from epoch 4 on: plot_history
    drew every metric against all epochs and crashed inside matplotlib."""
    X, y = nn.data.xor(64, seed=0)
    model = nn.MLP([2, 8, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.5)
    h = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, y), epochs=3, batch_size=32, verbose=0)
    h = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, y), epochs=6, batch_size=32, verbose=0,
               val_data=(X, y), initial_epoch=3, history=h)
    fig = plots.plot_history(h)
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert list(lines["validation loss"].get_xdata()) == [4, 5, 6]
    assert list(lines["validation loss"].get_ydata()) == h.metric("val_loss")
    assert list(lines["validation"].get_xdata()) == [4, 5, 6]
