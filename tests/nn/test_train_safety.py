"""A training run never silently goes wrong: non-finite values stop fit before they reach
the weights (with the history kept), Ctrl-C stops cleanly between steps, bad arguments are
errors up front, evaluation restores each module's mode, and a run split in two (resumed
at an epoch) equals the run done in one go, bit for bit."""
from __future__ import annotations

import copy
import os
import re
import signal

import numpy as np
import pytest

from handgrad import engine, nn

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
    with pytest.raises(nn.TrainingError,
                       match="the gradient of layers.0.weight became nan at epoch 1, step 1"), \
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
    (dict(train_data=nn.DataLoader(X, Y, batch_size=128, drop_last=True)),
     r"fit: train_data: the DataLoader yields no batches: its 120 examples are fewer than "
     r"batch_size 128, and drop_last=True drops that partial batch; pass a batch_size of at "
     r"most 120, or drop_last=False"),                        # was a ZeroDivisionError
    (dict(train_data=type("Dry", (nn.DataLoader,), {"__iter__": lambda self: iter(())})(X, Y)),
     "fit: epoch 1 ran no steps: train_data yielded no batches"),
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


def test_a_run_resumed_with_a_new_shuffling_data_loader_equals_the_run_done_in_one_go():
    """A new DataLoader(shuffle=True, seed=s) for the resumed run started again at its
    first permutation, so the resumed epochs saw other batches than the uninterrupted run.
    fit calls set_epoch: the order is a function of (seed, epoch), as for (X, y) pairs."""
    def loader():
        return nn.DataLoader(X, Y, batch_size=16, shuffle=True, seed=3)

    one, one_opt = model_and_opt()
    h1 = nn.fit(one, nn.CrossEntropyLoss(), one_opt, loader(), epochs=4, progress=False)
    two, two_opt = model_and_opt()
    h2 = nn.fit(two, nn.CrossEntropyLoss(), two_opt, loader(), epochs=2, progress=False)
    saved_state = two_opt.state_dict()
    two = copy.deepcopy(two)
    two_opt = nn.optim.SGD(two, lr=0.1, momentum=0.9)
    two_opt.load_state_dict(saved_state)
    h2 = nn.fit(two, nn.CrossEntropyLoss(), two_opt, loader(), epochs=4, progress=False,
                initial_epoch=2, history=h2)
    assert same(weights(one), weights(two)) and h1.steps == h2.steps
    pairs, pairs_opt = model_and_opt()             # the same batches as fit's (X, y) order
    h3 = nn.fit(pairs, nn.CrossEntropyLoss(), pairs_opt, (X, Y), epochs=4, batch_size=16,
                seed=3, progress=False)
    assert same(weights(one), weights(pairs)) and h1.steps == h3.steps


@pytest.mark.parametrize("compile", [False, True])
def test_an_update_that_overflows_is_undone_so_the_model_keeps_its_last_good_weights(compile):
    # lr 1e300: the gradients and the loss are finite, the new weights are not.
    model = nn.MLP([2, 8, 3], seed=0)
    opt = nn.optim.SGD(model, lr=1e300)
    before = weights(model)
    with pytest.raises(nn.TrainingError, match=r"fit: layers\.0\.weight \(after the optimizer's "
                       r"update\) became -?inf at epoch 1, step 1; the model keeps its last "
                       r"good weights") as info:
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, batch_size=32,
               progress=False, compile=compile)
    assert (info.value.epoch, info.value.step) == (1, 1)
    assert same(weights(model), before)                  # every parameter, bit for bit
    assert opt.check_finite is False                     # fit turned the check off again


def test_an_overflow_late_in_a_run_keeps_the_weights_of_the_step_before():
    model, opt = model_and_opt()
    seen = {}

    def grow(epoch, record):                   # after epoch 1: a learning rate that overflows
        seen["after"] = weights(model)
        opt.lr = 1e300

    with pytest.raises(nn.TrainingError, match="at epoch 2, step 1") as info:
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=3, batch_size=32,
               progress=False, callback=grow)
    assert same(weights(model), seen["after"])
    assert len(info.value.history.epochs) == 1


@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_nan_in_validation_data_is_an_error_before_training_not_a_quiet_early_stop(where):
    # Classification with a NaN input; regression (MSE) with a NaN target. Before, the NaN
    # val_loss never "improved" and early stopping ended the run as if it had converged.
    regression = where == "targets"
    model = nn.MLP([2, 8, 1 if regression else 3], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    targets = Y[:, None].astype(np.float64) if regression else Y
    loss = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    Xv, Yv = X[:20].copy(), targets[:20].copy()
    (Xv if where == "inputs" else Yv)[7] = np.nan
    before = weights(model)
    with pytest.raises(ValueError, match=rf"fit: val_data: the {where} hold NaN/Inf in 1 of 20 "
                                         rf"examples \(the first is example 7\)"):
        nn.fit(model, loss, opt, (X, targets), epochs=5, val_data=(Xv, Yv), early_stopping=1,
               progress=False)
    assert same(weights(model), before)


def test_validation_outputs_that_overflow_stop_fit_with_the_history():
    # Finite validation inputs so large that the forward pass overflows: a TrainingError at
    # the end of epoch 1, not a NaN val_loss that early stopping reads as "no improvement".
    # (OpenBLAS on some CPUs raises the invalid flag too when a product overflows.)
    model, opt = model_and_opt()
    val = (np.full((10, 2), 1.7e308), Y[:10])
    with pytest.raises(nn.TrainingError, match=r"the validation outputs became -?inf at "
                                               r"epoch 1, step 4") as info, \
            np.errstate(over="ignore", invalid="ignore"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=5, batch_size=32,
               val_data=val, early_stopping=2, progress=False)
    assert len(info.value.history.steps) == 4 and info.value.history.epochs == []
    assert all(np.isfinite(v).all() for v in weights(model).values())


class MaskedLogits(nn.Module):
    """Class 2 masked with -inf: the loss and the gradients stay finite, the outputs do not."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 3, rng=np.random.default_rng(0))

    def forward(self, x):
        return self.linear(x) + engine.Tensor(np.array([0.0, 0.0, -np.inf], np.float32))


def test_non_finite_training_outputs_are_a_training_error_not_a_score():
    model = MaskedLogits()
    opt = nn.optim.SGD(model, lr=0.1)
    with pytest.raises(nn.TrainingError, match=r"the model's outputs became -inf at epoch 1, "
                                               r"step 1") as info:
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y % 2), epochs=1, progress=False)
    assert info.value.history.steps and np.isfinite(info.value.history.steps[0])


@pytest.mark.parametrize("seed, shown", [(None, "None: the batch order"), (-1, "-1"),
                                         (1.5, "1.5"), ("0", "'0'"), (True, "True")])
def test_fit_checks_its_seed_before_training(seed, shown):
    # they failed inside the first epoch (after on_train_begin and on_epoch_begin), with
    # numpy's messages naming neither fit nor seed; "0" was even accepted
    class Hooks(nn.callbacks.Callback):
        calls = 0

        def on_train_begin(self, *args):
            Hooks.calls += 1

    model, opt = model_and_opt()
    before = weights(model)
    with pytest.raises(ValueError, match=f"fit: seed must be a non-negative integer, got {re.escape(shown)}"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0, seed=seed,
               callbacks=[Hooks()])
    assert Hooks.calls == 0 and same(weights(model), before)


def test_fit_takes_a_numpy_integer_seed_as_the_same_int():
    runs = []
    for seed in (3, np.int64(3)):
        model, opt = model_and_opt()
        runs.append(nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
                           seed=seed).steps)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("option", ["shuffle", "restore_best", "compile", "scheduler_per_step",
                                    "record_grad_norms"])
@pytest.mark.parametrize("value, shown", [("no", "'no'"), ("yes", "'yes'"), (1, "1"),
                                          (None, "None")])
def test_fit_takes_only_true_or_false_for_its_on_off_options(option, value, shown):
    # "no" was truthy: shuffle="no" shuffled, restore_best="no" restored, compile="yes" compiled
    model, opt = model_and_opt()
    before = weights(model)
    with pytest.raises(ValueError, match=f"fit: {option} must be True or False, got {re.escape(shown)}"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
               **{option: value})
    assert same(weights(model), before)


def test_fit_takes_numpy_bools_for_its_on_off_options():
    runs = []
    for flag in (False, np.False_):
        model, opt = model_and_opt()
        runs.append(nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
                           shuffle=flag, compile=flag, restore_best=np.True_, early_stopping=1,
                           monitor="train_loss").steps)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("monitor", ["epoch", "foo", "lr", "loss", "accuracy", 3, None])
@pytest.mark.parametrize("early_stopping", [None, 1])
def test_fit_monitors_only_a_metric_it_records(monitor, early_stopping):
    # "epoch" was monitored (it only grows: a stop after `patience` epochs), "foo" failed
    # only after the first epoch, 3 was an AttributeError, and without early stopping any
    # monitor at all was taken
    model, opt = model_and_opt()
    before = weights(model)
    with pytest.raises(ValueError, match=r"fit: monitor must be one of 'train_loss', "
                                         r"'train_accuracy', 'val_loss', 'val_accuracy', got "
                                         + re.escape(repr(monitor))):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
               val_data=(X, Y), monitor=monitor, early_stopping=early_stopping)
    assert same(weights(model), before)


@pytest.mark.parametrize("loss_fn, shown", [(nn.MSELoss(), "MSELoss"),
                                            (nn.BCEWithLogitsLoss(), "BCEWithLogitsLoss")])
@pytest.mark.parametrize("monitor", ["train_accuracy", "val_accuracy"])
def test_fit_refuses_to_monitor_an_accuracy_a_regression_loss_never_records(loss_fn, shown, monitor):
    # it failed at the end of the first epoch, the weights trained, "cannot monitor"
    model, opt = model_and_opt()
    before = weights(model)
    with pytest.raises(ValueError, match=f"fit: monitor='{monitor}' is never recorded with "
                                         f"{shown}: accuracy is recorded for a softmax "
                                         f"classifier only"):
        nn.fit(model, loss_fn, opt, (X, np.eye(3, dtype=X.dtype)[Y]), epochs=2, verbose=0,
               val_data=(X, np.eye(3, dtype=X.dtype)[Y]), monitor=monitor, early_stopping=1)
    assert same(weights(model), before)


def test_an_accuracy_a_loss_of_the_users_does_not_record_is_an_error_at_the_first_epoch():
    def squared(out, y):                # regression targets: no accuracy is recorded
        return ((out - y) ** 2).mean()

    model, opt = model_and_opt()
    with pytest.raises(ValueError, match=r"fit: cannot monitor 'train_accuracy'; recorded: "
                                         r"\['epoch', 'lr', 'seconds', 'steps', 'train_loss'\]; "
                                         r"accuracy is recorded for a softmax classifier only"):
        nn.fit(model, squared, opt, (X, np.full((len(X), 3), 2.0, X.dtype)), epochs=2,
               verbose=0, monitor="train_accuracy", early_stopping=1)


def _on_epoch(epoch, record):
    pass


@pytest.mark.parametrize("kwargs, message", [
    (dict(callbacks=[_on_epoch]),
     r"fit: callbacks\[0\] is <function _on_epoch at 0x[0-9a-f]+>, a function, not an "
     r"nn.callbacks.Callback \(a function of \(epoch, record\) goes in callback=\)"),
    (dict(callbacks=[nn.callbacks.Callback(), "log"]),
     r"fit: callbacks\[1\] is 'log', a str, not an nn.callbacks.Callback$"),
    (dict(callbacks=[nn.callbacks.Callback]),               # the class, not an instance
     r"fit: callbacks\[0\] is <class '.*Callback'>, a type, not an nn.callbacks.Callback$"),
    (dict(callbacks=nn.callbacks.Callback()),
     r"fit: callbacks must be a list of nn.callbacks.Callback, got .* \(a Callback\)"),
    (dict(callbacks="log"), r"fit: callbacks must be a list of nn.callbacks.Callback, got 'log'"),
    (dict(history={}), r"fit: history must be a History \(of the run being resumed\) or None, "
                       r"got \{\} \(a dict\)"),
])
def test_fit_checks_its_callbacks_and_history_before_training(kwargs, message):
    # a function in callbacks was an AttributeError about on_train_end (raised while
    # ending, hiding the on_train_begin one), history={} one about 'interrupted'
    model, opt = model_and_opt()
    before = weights(model)
    with pytest.raises(TypeError, match=message):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0, **kwargs)
    assert same(weights(model), before)


def test_fit_takes_callbacks_none_as_no_callbacks():
    runs = []
    for callbacks in ((), None):
        model, opt = model_and_opt()
        runs.append(nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
                           callbacks=callbacks).steps)
    assert runs[0] == runs[1]


class _Overflowing(nn.Module):
    """d out / d w = x * 1e30 = 1e40 for x = 1e10: Inf in float32, the loss finite."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.full((1, 1), 1e-30, dtype=np.float32))

    def forward(self, x):
        return (x * self.w) * 1e30


def test_an_inf_gradient_is_named_with_its_parameter_and_value():
    """It was "a gradient became nan", value nan, no parameter named."""
    from handgrad.nn.step import EagerStep
    model = _Overflowing()
    step = EagerStep(model, nn.MSELoss(), nn.optim.SGD(model, lr=1e-3))
    with np.errstate(all="ignore"), pytest.raises(nn.TrainingError,
                                                  match=r"^the gradient of w became inf$") as e:
        step(np.full((4, 1), 1e10, np.float32), np.zeros((4, 1), np.float32))
    assert e.value.value == np.inf and e.value.what == "the gradient of w"


def test_fits_training_error_says_which_weights_the_model_keeps():
    """fit's TrainingError had kept=None ("the last good weights") even where its message
    said the best ones, or the weights of the step."""
    X, y = nn.data.blobs(200, centers=3, seed=0)
    X = X.astype(np.float32)
    model = nn.MLP([2, 16, 3], seed=0)
    with np.errstate(all="ignore"), pytest.raises(nn.TrainingError) as e:
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, y),
               val_data=(np.full((4, 2), 3.4e38, np.float32), y[:4]), epochs=2, verbose=0)
    assert "the model keeps the weights of that step" in str(e.value)
    assert e.value.kept.startswith("the weights of that step")


class _CtrlCAt(nn.callbacks.Callback):
    """Presses Ctrl-C (SIGINT to this process) in on_record of one epoch, or in the
    on_step_end of one step (its epoch, its step)."""

    def __init__(self, record=None, step=None):
        self.record, self.step = record, step

    def on_record(self, epoch, record):
        if epoch == self.record:
            os.kill(os.getpid(), signal.SIGINT)

    def on_step_end(self, epoch, step, loss, scores, targets):
        if (epoch, step) == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _three_steps_an_epoch(**fit_args):
    r = np.random.default_rng(1)
    X, y = r.normal(size=(48, 4)).astype(np.float32), r.integers(0, 3, 48)
    model = nn.MLP([4, 8, 3], seed=0)
    opt = nn.optim.SGD(model, lr=0.1, momentum=0.9)
    args = dict(epochs=4, batch_size=16, val_data=(X[:20], y[:20]), verbose=0) | fit_args
    return model, opt, nn.fit(model, nn.CrossEntropyLoss(), opt, (X, y), **args), (X, y)


@pytest.mark.parametrize("when", [dict(record=2), dict(step=(2, 3))],
                         ids=["while epoch 2 is recorded", "during epoch 2's last step"])
def test_ctrl_c_at_the_end_of_an_epoch_stops_before_the_next_and_the_run_goes_on(when):
    """In on_record (validation, a checkpoint saved) fit ran one step of epoch 3 and then
    refused to resume ("weights from the middle of it"); in the last step it left epoch 2
    unrecorded."""
    whole, _, _, _ = _three_steps_an_epoch()
    model, opt, history, data = _three_steps_an_epoch(callbacks=[_CtrlCAt(**when)])
    assert history.interrupted and len(history.epochs) == 2 and len(history.steps) == 6
    nn.fit(model, nn.CrossEntropyLoss(), opt, data, epochs=4, batch_size=16,
           val_data=(data[0][:20], data[1][:20]), verbose=0, initial_epoch=2, history=history)
    assert not history.interrupted and len(history.epochs) == 4
    for a, b in zip(whole.parameters(), model.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(copy=True), b.numpy(copy=True))
