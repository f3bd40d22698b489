"""What fit shows (``verbose`` in the Keras sense, ``progress`` mapped onto it) and the
History's one-line repr."""
from __future__ import annotations

import io
import re
import sys

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn import progress

X = np.random.default_rng(0).standard_normal((64, 3))
Y = (X[:, 0] > 0).astype(np.int64)


def _fit(**kwargs):
    model = nn.MLP([3, 4, 2], seed=0)
    return nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y),
                  batch_size=16, **kwargs)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verbose_2_prints_one_line_per_epoch(capsys):
    _fit(epochs=3, val_data=(X, Y), verbose=2)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3
    assert re.fullmatch(r"epoch 1/3  train_loss \d\.\d{4}  train_accuracy \d\.\d{4}  "
                        r"val_loss \d\.\d{4}  val_accuracy \d\.\d{4}  \d+\.\d\d s", err[0]), err[0]
    assert err[2].startswith("epoch 3/3  ")


def test_verbose_0_and_progress_false_are_silent(capsys):
    _fit(epochs=2, verbose=0)
    _fit(epochs=2, progress=False)
    assert capsys.readouterr() == ("", "")


def test_auto_gives_lines_in_a_log_and_a_bar_on_a_terminal(monkeypatch, capsys):
    """Not a terminal (a log, CI, this test's captured stderr): one short line per epoch,
    not bar refreshes. progress=True (the old default, what handgrad train passes) is auto."""
    _fit(epochs=30)
    _fit(epochs=30, progress=True)
    err = capsys.readouterr().err
    assert err.count("\n") == 60 and len(err) < 60 * 80 and "\r" not in err
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress.resolve_verbose("auto") == progress.BAR
    _fit(epochs=2)
    assert "\r" in terminal.getvalue() and "step" in terminal.getvalue()   # tqdm's bar
    assert not re.search(r"^epoch 1/2", terminal.getvalue(), flags=re.M)


def test_auto_gives_a_bar_in_a_notebook_only_with_ipywidgets(monkeypatch):
    monkeypatch.setattr(progress, "_stderr_is_a_terminal", lambda: False)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: None)
    assert progress.resolve_verbose("auto") == progress.LINES      # no IProgress warning
    monkeypatch.setattr(progress.importlib.util, "find_spec", lambda name: object())
    assert progress.resolve_verbose("auto") == progress.BAR


def test_in_a_notebook_the_lines_go_to_stdout(monkeypatch, capsys):
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    _fit(epochs=2, verbose=2)
    out, err = capsys.readouterr()
    assert out.count("\n") == 2 and err == ""


@pytest.mark.parametrize("kwargs, message", [
    ({"verbose": 3}, "fit: verbose must be 0, 1, 2 or 'auto', got 3"),
    ({"verbose": True}, "fit: verbose must be 0, 1, 2 or 'auto', got True"),
    ({"verbose": "yes"}, "fit: verbose must be 0, 1, 2 or 'auto', got 'yes'"),
    ({"verbose": 2, "progress": False}, "fit: progress=False contradicts verbose=2"),
    ({"verbose": 0, "progress": True}, "fit: progress=True contradicts verbose=0"),
    ({"progress": "no"}, "fit: progress must be True or False, got 'no'"),
])
def test_bad_verbose_is_an_error_before_training(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        _fit(epochs=1, **kwargs)


def test_progress_true_with_an_explicit_verbose_is_that_verbose(capsys):
    _fit(epochs=2, verbose=2, progress=True)
    assert capsys.readouterr().err.count("\n") == 2


# --- History's repr ------------------------------------------------------------------------------

def test_history_repr_is_one_short_line_whatever_the_run():
    history = _fit(epochs=300, val_data=(X, Y), verbose=0, record_grad_norms=True)
    text = repr(history)
    assert "\n" not in text and len(text) < 160, text
    last = history.epochs[-1]
    assert text == (f"History(epochs=300, steps=1200, train_loss={last['train_loss']:.4g}, "
                    f"train_accuracy={last['train_accuracy']:.4g}, val_loss={last['val_loss']:.4g}, "
                    f"val_accuracy={last['val_accuracy']:.4g})")
    assert repr(nn.History()) == "History(epochs=0, steps=0)"
    ended = nn.History(steps=[0.5], epochs=[{"epoch": 1, "train_loss": 0.5}], best_epoch=1,
                       stopped_early=True)
    assert repr(ended) == "History(epochs=1, steps=1, train_loss=0.5, best_epoch=1, stopped_early=True)"


@pytest.mark.parametrize("verbose", [np.int64(2), np.int32(2), np.uint8(2)])
def test_verbose_takes_a_numpy_integer_as_the_same_int(verbose, capsys):
    # it was refused: "fit: verbose must be 0, 1, 2 or 'auto', got 2"
    _fit(epochs=2, verbose=verbose)
    assert len(capsys.readouterr().err.splitlines()) == 2
    assert progress.resolve_verbose(np.int64(0)) == 0
    assert type(progress.resolve_verbose(np.int64(1))) is int


def test_progress_takes_a_numpy_bool(capsys):
    _fit(epochs=2, progress=np.False_)
    assert capsys.readouterr().err == ""
    assert progress.resolve_verbose(2, np.True_) == 2
