"""nn/callbacks.py: what fit does besides the steps, as objects that a loop of one's own
can call too, with the same results as fit."""
from __future__ import annotations

import math

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn.callbacks import Callback, EarlyStopping, GradNormRecorder, LRSchedule
from handgrad.nn.step import EagerStep

X = np.random.default_rng(1).standard_normal((80, 4))
Y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)


def _setup():
    model = nn.MLP([4, 8, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.5, momentum=0.9)
    return model, opt, nn.optim.ExponentialLR(opt, gamma=0.9)


def test_the_callbacks_in_a_loop_of_ones_own_give_what_fit_gives():
    model, opt, sched = _setup()
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=12, batch_size=32,
                     shuffle=False, scheduler=sched, early_stopping=1, monitor="train_loss",
                     record_grad_norms=True, progress=False)

    own, opt2, sched2 = _setup()
    step = EagerStep(own, nn.CrossEntropyLoss(), opt2)
    stopper, norms, schedule = EarlyStopping(own, patience=1, monitor="train_loss"), \
        GradNormRecorder(own), LRSchedule(sched2)
    steps, epochs = [], 0
    for epoch in range(1, 13):
        total = 0.0
        for i in range(0, len(X), 32):
            xb, yb = X[i:i + 32].copy(), Y[i:i + 32]
            loss, scores = step(xb, yb)
            steps.append(loss)
            total += loss * len(yb)
            norms.on_step_end(epoch, i // 32 + 1, loss, scores, yb)
        schedule.on_epoch_end(epoch)
        stopper.on_record(epoch, {"epoch": epoch, "train_loss": total / len(X)})
        epochs = epoch
        if stopper.stop:
            break
    assert stopper.restore()

    assert history.stopped_early and len(history.epochs) == epochs < 12
    assert steps == history.steps and norms.norms == history.grad_norms
    assert stopper.best_epoch == history.best_epoch and opt2.lr == opt.lr
    for (name, a), b in zip(model.state_dict().items(), own.state_dict().values()):
        assert np.array_equal(a, b), name


class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, history, epochs, steps_per_epoch):
        self.calls.append(("begin", epochs, steps_per_epoch))

    def on_epoch_begin(self, epoch):
        self.calls.append(("epoch", epoch))

    def on_step_end(self, epoch, step, loss, scores, targets):
        self.calls.append(("step", epoch, step, scores.shape, len(targets)))

    def on_epoch_end(self, epoch):
        self.calls.append(("epoch end", epoch))

    def on_record(self, epoch, record):
        self.calls.append(("record", epoch, sorted(record)))
        self.stop = epoch == self.stop_at

    def on_train_end(self):
        self.calls.append(("end",))


@pytest.mark.parametrize("compile", [False, True])
def test_fit_calls_a_users_callbacks_at_every_hook_and_stops_when_asked(compile):
    model, opt, _ = _setup()
    rec = Recorder(stop_at=2)
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=5, batch_size=48,
                     progress=False, callbacks=[rec], compile=compile)
    keys = ["epoch", "lr", "seconds", "steps", "train_accuracy", "train_loss"]
    assert rec.calls == [("begin", 5, 2),
                         ("epoch", 1), ("step", 1, 1, (48, 2), 48), ("step", 1, 2, (32, 2), 32),
                         ("epoch end", 1), ("record", 1, keys),
                         ("epoch", 2), ("step", 2, 1, (48, 2), 48), ("step", 2, 2, (32, 2), 32),
                         ("epoch end", 2), ("record", 2, keys), ("end",)]
    assert len(history.epochs) == 2


def test_on_train_end_runs_after_an_error_too():
    model, opt, _ = _setup()
    rec = Recorder()
    Xbad = X.copy()
    Xbad[50] = np.nan
    with pytest.raises(nn.TrainingError, match="the loss became nan at epoch 1, step 2"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (Xbad, Y), epochs=2, batch_size=48,
               shuffle=False, progress=False, callbacks=[rec])
    assert rec.calls[-1] == ("end",)


def test_callbacks_check_their_arguments():
    model, opt, _ = _setup()
    with pytest.raises(ValueError, match="EarlyStopping: patience must be a positive integer, got 0"):
        EarlyStopping(model, patience=0)
    with pytest.raises(TypeError, match="LRSchedule: expected an nn.optim scheduler, got SGD"):
        LRSchedule(opt)
    with pytest.raises(ValueError, match=r"EarlyStopping: cannot monitor 'val_loss'; recorded: \['epoch'\]"):
        EarlyStopping(model, patience=1).on_record(1, {"epoch": 1})


def test_an_early_stopping_passed_to_a_second_fit_starts_afresh():
    # it kept stop, best and waited from the first fit: the second stopped after one epoch
    # that improved its loss, without even marking the History stopped_early
    model = nn.MLP([4, 8, 2], seed=0)
    stopper = EarlyStopping(model, patience=1, monitor="train_loss")
    first = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=20.0), (X, Y),
                   epochs=30, verbose=0, callbacks=[stopper])
    assert first.stopped_early and stopper.stop
    stopper.restore()
    second = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.01), (X, Y),
                    epochs=4, verbose=0, callbacks=[stopper])
    losses = second.metric("train_loss")
    assert len(second.epochs) == 4 and all(b < a for a, b in zip(losses, losses[1:]))
    assert not stopper.stop and stopper.waited == 0 and stopper.best_epoch == 4
    assert stopper.best == losses[-1] and second.best_epoch == 4


def test_fit_puts_back_the_best_weights_of_an_early_stopping_given_in_callbacks():
    """An EarlyStopping(restore_best=True) in callbacks= stopped the run and marked the
    History's best epoch, but the model kept the last epoch's weights (fit restored only
    the stopper it made from early_stopping=)."""
    model = nn.MLP([4, 8, 2], seed=0)
    weights = {}

    def keep(epoch, record):
        weights[epoch] = model.state_dict()

    history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=20.0), (X, Y),
                     epochs=30, verbose=0, callback=keep,
                     callbacks=[EarlyStopping(model, patience=1, monitor="train_loss")])
    assert history.stopped_early and history.best_epoch < len(history.epochs)
    for name, value in model.state_dict().items():
        assert np.array_equal(value, weights[history.best_epoch][name]), name
    assert not all(np.array_equal(v, weights[len(history.epochs)][k])
                   for k, v in model.state_dict().items())


def test_an_early_stopping_resumed_before_fit_keeps_its_count():
    # resume() recounts from the history being continued (as fit does for its own
    # stopper); on_train_begin with that history keeps the count instead of starting afresh
    model = nn.MLP([4, 8, 2], seed=0)
    state = model.state_dict()
    history = nn.History(steps=[0.5] * 9, best_epoch=2, epochs=[
        {"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 1e-6},
        {"epoch": 3, "train_loss": 0.4}])
    stopper = EarlyStopping(model, patience=2, monitor="train_loss")
    stopper.resume(history, state)
    assert (stopper.best, stopper.waited, stopper.best_epoch) == (1e-6, 1, 2)
    nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y), epochs=6,
           initial_epoch=3, history=history, verbose=0, callbacks=[stopper])
    assert len(history.epochs) == 4 and history.stopped_early and history.best_epoch == 2
    assert (stopper.best, stopper.waited, stopper.best_state) == (1e-6, 2, state)
    stopper.on_train_begin(history, 6, 3)            # not resumed again: a new run, afresh
    assert (stopper.best, stopper.waited, stopper.best_state, stopper.stop) == (np.inf, 0, None, False)


@pytest.mark.parametrize("record, users", [(True, 1), (False, 2)])
def test_fit_refuses_two_gradient_norm_recorders(record, users):
    # both recorded into history.grad_norms: every norm appended twice
    model, opt, _ = _setup()
    recorders = [GradNormRecorder(model) for _ in range(users)]
    with pytest.raises(ValueError, match="would each record into history.grad_norms, every "
                                         "norm twice; pass one of them"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, verbose=0,
               record_grad_norms=record, callbacks=recorders)
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, batch_size=32,
                     verbose=0, callbacks=recorders[:1])
    assert [len(v) for v in history.grad_norms.values()] == [3] * 4     # once per step


@pytest.mark.parametrize("compile", [False, True])
def test_recorded_gradient_norms_are_backwards_not_the_clipped_ones(compile):
    """With clip_grad_norm the recorder read the gradients after clipping had scaled them:
    0.00095 recorded for a gradient of norm 0.64, hiding the exploding gradients the plot
    (labelled ‖∂L/∂W‖) is for."""
    model = nn.MLP([4, 8, 2], seed=0)
    twin = nn.MLP([4, 8, 2], seed=0)
    nn.CrossEntropyLoss()(twin(X), Y).backward()
    raw = {name: float(np.linalg.norm(p.grad)) for name, p in twin.named_parameters()}
    history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, Y), epochs=1,
                     batch_size=None, clip_grad_norm=1e-3, record_grad_norms=True, verbose=0,
                     compile=compile)
    for name, norm in raw.items():
        assert history.grad_norms[name][0] == pytest.approx(norm, rel=1e-6), name


@pytest.mark.parametrize("monitor, mode, best", [
    ("val_precision", "auto", 3), ("val_f1", "auto", 3), ("train_accuracy", "auto", 3),
    ("val_loss", "auto", 1), ("my_score", "max", 3), ("my_score", "min", 1),
    ("cauchy_loss", "auto", 1), ("val_top5_err", "auto", 1)])
def test_early_stopping_improves_in_the_metrics_direction(monitor, mode, best):
    """mode="auto" reads the direction from the name (Keras): precision, F1, AUC go up, as
    accuracies do. Before, only names with "acc" went up: a rising precision was minimised,
    and the worst epoch's weights were kept and restored."""
    stopper = EarlyStopping(nn.MLP([4, 8, 2], seed=0), patience=5, monitor=monitor, mode=mode)
    for epoch, value in enumerate([0.5, 0.7, 0.9], start=1):
        stopper.on_record(epoch, {"epoch": epoch, monitor: value})
    assert stopper.best_epoch == best


def test_early_stopping_asks_for_a_mode_it_cannot_tell_and_checks_its_flags():
    model = nn.MLP([4, 8, 2], seed=0)
    with pytest.raises(ValueError, match=r"EarlyStopping: cannot tell from its name whether "
                                         r"'my_score' improves upwards or downwards; pass mode="):
        EarlyStopping(model, patience=2, monitor="my_score")
    with pytest.raises(ValueError, match=r"cannot tell from its name whether 'val_loss_cls_acc'"):
        EarlyStopping(model, patience=2, monitor="val_loss_cls_acc")     # both: ask
    with pytest.raises(ValueError, match=r"EarlyStopping: mode must be 'auto', 'min' or 'max', got 'up'"):
        EarlyStopping(model, patience=2, monitor="val_loss", mode="up")
    with pytest.raises(ValueError, match=r"EarlyStopping: restore_best must be True or False, got 'no'"):
        EarlyStopping(model, patience=2, restore_best="no")
    _, _, schedule = _setup()
    with pytest.raises(ValueError, match=r"LRSchedule: per_step must be True or False, got 'no'"):
        LRSchedule(schedule, per_step="no")


def test_a_callback_that_stopped_one_fit_does_not_stop_the_next():
    """fit sets every callback's stop to False when it begins, as Keras does: a callback
    kept from a fit it stopped ended the next fit after one epoch."""
    class StopBelow(Callback):
        def on_record(self, epoch, record):
            if record["train_loss"] < 0.6:
                self.stop = True
    model, opt, _ = _setup()
    stopper = StopBelow()
    nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=50, verbose=0, callbacks=[stopper])
    assert stopper.stop
    again = nn.fit(nn.MLP([4, 8, 2], seed=1), nn.CrossEntropyLoss(),
                   nn.optim.SGD(nn.MLP([4, 8, 2], seed=1), lr=0.0), (X, Y), epochs=3,
                   verbose=0, callbacks=[StopBelow()])
    assert len(again.epochs) == 3                     # (the control: a fresh callback)
    model2 = nn.MLP([4, 8, 2], seed=1)
    second = nn.fit(model2, nn.CrossEntropyLoss(), nn.optim.SGD(model2, lr=0.0), (X, Y),
                    epochs=3, verbose=0, callbacks=[stopper])
    assert len(second.epochs) == 3 and not stopper.stop


def test_a_users_grad_norm_recorder_records_the_norms_before_clipping_as_fits_own():
    """A GradNormRecorder made without a step and passed in callbacks gets fit's step while
    fit runs (and is given it back after): before, it recorded the clipped norms, about 40x
    smaller than record_grad_norms=True's with clip_grad_norm=0.01."""
    runs = []
    for own in (True, False):
        model = nn.MLP([4, 8, 2], seed=0)
        recorder = GradNormRecorder(model)
        history = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.5), (X, Y),
                         epochs=2, verbose=0, clip_grad_norm=0.01, record_grad_norms=own,
                         callbacks=[] if own else [recorder])
        runs.append(history.grad_norms)
        assert recorder.step is None
    assert runs[0] == runs[1] and runs[0]["layers.0.weight"][0] > 0.02


def test_fit_refuses_a_schedule_given_twice():
    """scheduler= and an LRSchedule of the same schedule in callbacks stepped it twice per
    epoch, silently: [0.1, 0.05, 0.025, ...] for [0.1, 0.1, 0.05, ...]."""
    model, opt, schedule = _setup()
    for hooks in ([LRSchedule(schedule)], [LRSchedule(schedule), LRSchedule(schedule)]):
        with pytest.raises(ValueError, match=r"fit: one schedule is given twice"):
            nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
                   scheduler=schedule if len(hooks) == 1 else None, callbacks=hooks)
    assert schedule.t == 0


def test_grad_norms_line_up_with_the_steps_when_a_parameter_is_frozen_for_a_while():
    """A parameter frozen in epoch 1 and trained in epoch 2 had 3 norms for 6 steps, its
    first (step 4's) drawn at step 1; a later frozen step was skipped too."""
    r = np.random.default_rng(1)
    X, y = r.normal(size=(48, 4)).astype(np.float32), r.integers(0, 3, 48)

    class FreezeOddEpochs(nn.callbacks.Callback):
        def __init__(self, w):
            self.w = w

        def on_epoch_begin(self, epoch):
            self.w.requires_grad = epoch == 2

    model = nn.MLP([4, 8, 3], seed=0)
    h = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, y), epochs=3,
               batch_size=16, shuffle=False, record_grad_norms=True, verbose=0,
               callbacks=[FreezeOddEpochs(model.layers[0].weight)])
    norms = h.grad_norms["layers.0.weight"]
    assert len(norms) == len(h.steps) == len(h.grad_norms["layers.0.bias"]) == 9
    assert all(math.isnan(v) for v in norms[:3] + norms[6:]) and all(v > 0 for v in norms[3:6])


def test_two_early_stoppings_are_refused_before_training():
    """fit took early_stopping= and an EarlyStopping in callbacks: each put its best weights
    back, the last winning, and history.best_epoch named the other's epoch (3, weights of 1)."""
    r = np.random.default_rng(1)
    X, y = r.normal(size=(48, 4)).astype(np.float32), r.integers(0, 3, 48)
    model = nn.MLP([4, 8, 3], seed=0)
    before = [p.numpy(copy=True) for p in model.parameters()]
    for args in (dict(early_stopping=5, monitor="train_loss", callbacks=[EarlyStopping(model, 2, "val_loss")]),
                 dict(callbacks=[EarlyStopping(model, 2, "val_loss"), EarlyStopping(model, 3, "val_loss")])):
        with pytest.raises(ValueError, match="fit: .*EarlyStopping.* would each put their own best weights"):
            nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, y), epochs=3,
                   val_data=(X[:10], y[:10]), verbose=0, **args)
    for p, w in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.numpy(copy=True), w)


class _Final(Callback):
    """Keeps the model's weights as on_train_end sees them (a callback saving "the final
    model" there)."""

    def __init__(self, model):
        self.model, self.seen = model, None

    def on_train_end(self):
        self.seen = self.model.state_dict()


def _stopping_run(model, *callbacks, epochs=30, **options):
    return nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=20.0), (X, Y),
                  epochs=epochs, verbose=0, early_stopping=1, monitor="train_loss",
                  callbacks=list(callbacks), **options)


def test_on_train_end_sees_the_weights_fit_returns():
    """The best weights were put back after on_train_end: a callback saving the final
    model there saved the last epoch's, not the model fit returned."""
    model = nn.MLP([4, 8, 2], seed=0)
    final = _Final(model)
    history = _stopping_run(model, final)
    assert history.stopped_early and history.best_epoch < len(history.epochs)
    for name, value in model.state_dict().items():
        assert np.array_equal(final.seen[name], value), name


def test_every_on_train_end_runs_and_the_best_weights_come_back_when_one_raises():
    """One on_train_end raising skipped the callbacks after it and the restore of the best
    weights; its error is raised after every hook ran."""
    class Raises(Callback):
        def on_train_end(self):
            raise RuntimeError("disk full")
    model = nn.MLP([4, 8, 2], seed=0)
    reference = nn.MLP([4, 8, 2], seed=0)
    _stopping_run(reference)
    final = _Final(model)
    with pytest.raises(RuntimeError, match="disk full"):
        _stopping_run(model, Raises(), final)
    assert final.seen is not None
    for name, value in model.state_dict().items():
        assert np.array_equal(value, reference.state_dict()[name]), name


def test_a_ctrl_c_under_early_stopping_keeps_the_last_weights_and_resumes_exactly():
    """A Ctrl-C between epochs put the best weights back next to the last epoch's optimizer
    state: continuing as documented (initial_epoch=, history=) diverged from the run never
    stopped. The model keeps the last epoch's weights; the run goes on bit for bit."""
    import os
    import signal

    class CtrlC(Callback):
        def on_record(self, epoch, record):
            if epoch == 4:
                os.kill(os.getpid(), signal.SIGINT)

    def run(stop):
        model = nn.MLP([4, 8, 2], seed=0)
        opt = nn.optim.SGD(model, lr=2.0, momentum=0.9)    # train_loss best at epoch 2 of 4
        fit = dict(verbose=0, early_stopping=3, monitor="train_loss", epochs=8)
        history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y),
                         callbacks=[CtrlC()] if stop else [], **fit)
        if stop:
            assert history.interrupted and len(history.epochs) == 4 and history.best_epoch == 2
            best = history.best_epoch
            best_state = kept[best]
            history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), initial_epoch=4,
                             history=history, best_state=best_state, **fit)
        return model, history

    kept = {}
    model = nn.MLP([4, 8, 2], seed=0)
    nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=2.0, momentum=0.9), (X, Y),
           verbose=0, epochs=4, callback=lambda e, r: kept.__setitem__(e, model.state_dict()))
    whole, whole_history = run(False)
    resumed, resumed_history = run(True)
    assert [r["train_loss"] for r in resumed_history.epochs] == \
        [r["train_loss"] for r in whole_history.epochs]
    for name, value in whole.state_dict().items():
        assert np.array_equal(resumed.state_dict()[name], value), name


def test_an_lr_schedule_in_callbacks_is_checked_as_scheduler_is():
    """LRSchedule(s) in callbacks= skipped the checks scheduler=s gets: a schedule of
    another optimizer (its rates never used) and one not restored on resume (a cosine
    started again from its beginning) were taken."""
    model, opt, _ = _setup()
    other = nn.optim.ExponentialLR(nn.optim.SGD(nn.MLP([4, 2], seed=0), lr=0.1), gamma=0.9)
    with pytest.raises(ValueError, match="an LRSchedule in callbacks schedules is a "
                                         "ExponentialLR of another optimizer"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, verbose=0,
               callbacks=[LRSchedule(other)])
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0)
    fresh = nn.optim.ExponentialLR(opt, gamma=0.9)
    with pytest.raises(ValueError, match="scheduler has been stepped 0 times, but the run "
                                         "being resumed stepped it 2 times"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=3, initial_epoch=2,
               history=history, verbose=0, callbacks=[LRSchedule(fresh)])


def test_a_resumed_run_refuses_an_early_stopping_in_callbacks_not_resumed():
    """Not resume()d, the stopper counted from the first new epoch: history.best_epoch
    named the best of the new epochs alone, against the History's own records."""
    model = nn.MLP([4, 8, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, verbose=0,
                     early_stopping=5, monitor="train_loss")
    with pytest.raises(ValueError, match="has not been resumed with this history"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=4, initial_epoch=2,
               history=history, verbose=0,
               callbacks=[EarlyStopping(model, patience=5, monitor="train_loss")])


def test_callbacks_made_for_another_model_are_refused():
    """A list of callbacks built once for a search's first model: the stopper restored that
    model's weights, and the recorder recorded its stale gradients (one value 50 times)."""
    first, second = nn.MLP([4, 8, 2], seed=0), nn.MLP([4, 8, 2], seed=1)
    for cb in (EarlyStopping(first, patience=2, monitor="train_loss"), GradNormRecorder(first)):
        with pytest.raises(ValueError, match=f"the {type(cb).__name__} in callbacks was made "
                                             f"for another model"):
            nn.fit(second, nn.CrossEntropyLoss(), nn.optim.SGD(second, lr=0.1), (X, Y),
                   epochs=1, verbose=0, callbacks=[cb])
