"""A training run never silently goes wrong: non-finite values stop fit before they reach
the weights (with the history kept), Ctrl-C stops cleanly between steps, bad arguments are
errors up front, evaluation restores each module's mode, and a run split in two (resumed
at an epoch) equals the run done in one go, bit for bit."""
from __future__ import annotations

import copy
import os
import signal

import numpy as np
import pytest

from handgrad import engine
from handgrad import nn

X, Y = nn.data.blobs(120, centers=3, seed=0)


def model_and_opt(seed=0, **kw):
    model = nn.MLP([2, 8, 3], seed=seed, **kw)
    return model, nn.optim.SGD(model, lr=0.1, momentum=0.9)


class NaNAt:
    """Cross-entropy that returns NaN at one call (counted from 1)."""

    def __init__(self, at: int):
        self.at, self.calls = at, 0

    def __call__(self, out, y):
        self.calls += 1
        loss = nn.CrossEntropyLoss()(out, y)
        return loss * np.nan if self.calls == self.at else loss


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_nan_loss_stops_fit_before_the_update_with_the_history_kept():
    model, opt = model_and_opt()
    seen = {}

    class Recording(NaNAt):
        def __call__(self, out, y):
            seen[self.calls + 1] = weights(model)       # the weights this call sees
            return super().__call__(out, y)

    with pytest.raises(nn.TrainingError, match=r"the loss became nan at epoch 2, step 3") as info:
        nn.fit(model, Recording(at=3 + 4), opt, (X, Y), epochs=5, batch_size=32, progress=False)
    e = info.value
    assert (e.epoch, e.step) == (2, 3)
    assert len(e.history.epochs) == 1 and len(e.history.steps) == 4 + 2
    assert same(weights(model), seen[7])                 # untouched by the bad step


def test_a_nan_regularizer_and_a_nan_gradient_are_caught_the_same_way():
    model, opt = model_and_opt()
    w = model.layers[0].weight
    before = weights(model)
    with pytest.raises(nn.TrainingError, match="the regularizer became nan at epoch 1, step 1"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, progress=False,
               regularizer=lambda: (w * w).sum() * np.nan)
    assert same(weights(model), before)
    # sqrt(0 * w) is 0 (the loss stays finite) but its gradient is infinite.
    with pytest.raises(nn.TrainingError, match="a gradient became nan at epoch 1, step 1"), \
            np.errstate(divide="ignore", invalid="ignore"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, progress=False,
               regularizer=lambda: engine.sqrt(w * 0.0).sum())
    assert same(weights(model), before)


def test_with_early_stopping_a_failure_restores_the_best_weights():
    model, opt = model_and_opt()
    best = {}

    history_probe = []

    def callback(epoch, record):
        history_probe.append(record["val_loss"])
        if record["val_loss"] == min(history_probe):
            best.clear()
            best.update(weights(model))

    with pytest.raises(nn.TrainingError):
        nn.fit(model, NaNAt(at=4 * 4 + 2), opt, (X[:100], Y[:100]), epochs=10, batch_size=25,
               val_data=(X[100:], Y[100:]), early_stopping=5, progress=False, callback=callback)
    assert same(weights(model), best)


def test_ctrl_c_stops_cleanly_between_steps_and_restores_the_signal_handler():
    previous = signal.getsignal(signal.SIGINT)

    class InterruptAt(nn.CrossEntropyLoss):
        def __init__(self, at):
            super().__init__()
            self.at, self.calls = at, 0

        def forward(self, out, y):
            self.calls += 1
            if self.calls == self.at:
                os.kill(os.getpid(), signal.SIGINT)       # as if the user pressed Ctrl-C
            return super().forward(out, y)

    model, opt = model_and_opt()
    history = nn.fit(model, InterruptAt(at=6), opt, (X, Y), epochs=5, batch_size=32,
                     progress=False)
    assert history.interrupted and len(history.steps) == 6 and len(history.epochs) == 1
    assert history.to_dict()["interrupted"] is True
    assert signal.getsignal(signal.SIGINT) is previous
    # The same run stopped after 6 steps by hand: the interrupted run's weights are whole.
    ref, ref_opt = model_and_opt()
    seen = {}

    class Spy(nn.CrossEntropyLoss):
        calls = 0

        def forward(self, out, y):
            Spy.calls += 1
            seen[Spy.calls] = weights(ref)
            return super().forward(out, y)

    nn.fit(ref, Spy(), ref_opt, (X, Y), epochs=5, batch_size=32, progress=False)
    assert same(weights(model), seen[7])


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_data=(X[:0], Y[:0])), "the dataset is empty"),
    (dict(train_data=(X, Y[:-1])), "120 inputs but 119 targets"),
    (dict(batch_size=0), "batch_size must be a positive integer, got 0"),
    (dict(batch_size=-4), "batch_size must be a positive integer"),
    (dict(batch_size=2.5), "batch_size must be a positive integer"),
    (dict(epochs=0), "epochs must be a positive integer, got 0"),
    (dict(epochs=-1), "epochs must be a positive integer"),
    (dict(initial_epoch=5, epochs=5), r"initial_epoch must be an integer in \[0, 5\)"),
    (dict(clip_grad_norm=float("nan")), "clip_grad_norm must be finite and positive"),
])
def test_bad_fit_arguments_are_value_errors_before_training(kwargs, message):
    model, opt = model_and_opt()
    before = weights(model)
    args = dict(train_data=(X, Y), epochs=2, batch_size=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        nn.fit(model, nn.CrossEntropyLoss(), opt, args.pop("train_data"), progress=False, **args)
    assert same(weights(model), before)


def test_predict_and_evaluate_restore_each_modules_own_mode():
    model = nn.MLP([2, 8, 3], dropout=0.5, seed=0)
    model.train()
    model.layers[2].eval()                     # one dropout layer deliberately in eval mode
    modes = [m.training for m in model.modules()]
    nn.predict(model, X)
    nn.evaluate(model, nn.CrossEntropyLoss(), (X, Y))
    assert [m.training for m in model.modules()] == modes
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            nn.predict(model, X, batch_size=bad)
    with pytest.raises(ValueError, match="the dataset is empty"):
        nn.evaluate(model, nn.CrossEntropyLoss(), (X[:0], Y[:0]))


def test_a_run_resumed_at_an_epoch_equals_the_run_done_in_one_go():
    one, one_opt = model_and_opt(dropout=0.2)
    h1 = nn.fit(one, nn.CrossEntropyLoss(), one_opt, (X, Y), epochs=4, batch_size=16, seed=3,
                progress=False)
    two, two_opt = model_and_opt(dropout=0.2)
    h2 = nn.fit(two, nn.CrossEntropyLoss(), two_opt, (X, Y), epochs=2, batch_size=16, seed=3,
                progress=False)
    saved_state = two_opt.state_dict()              # as if saved and loaded
    two = copy.deepcopy(two)                         # (with its dropout generator's state)
    two_opt = nn.optim.SGD(two, lr=0.1, momentum=0.9)
    two_opt.load_state_dict(saved_state)
    h2 = nn.fit(two, nn.CrossEntropyLoss(), two_opt, (X, Y), epochs=4, batch_size=16, seed=3,
                progress=False, initial_epoch=2, history=h2)
    assert same(weights(one), weights(two))
    assert h1.steps == h2.steps and [e["epoch"] for e in h2.epochs] == [1, 2, 3, 4]
    assert nn.History.from_dict(h2.to_dict()) == h2
