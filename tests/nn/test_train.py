"""fit / evaluate / predict: learning, history, reproducibility, early stopping, schedules."""
from __future__ import annotations

import json

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn.data import DataLoader, spirals


@pytest.fixture(scope="module")
def blobs_data():
    X, y = nn.data.blobs(300, centers=3, seed=0)
    return X[:240], y[:240], X[240:], y[240:]


def _model(seed=0):
    return nn.MLP([2, 16, 3], activation="relu", seed=seed)


def test_fit_learns_and_records_history(blobs_data):
    Xtr, ytr, Xva, yva = blobs_data
    model = _model()
    hist = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.Adam(model, lr=0.05), (Xtr, ytr),
                  epochs=15, batch_size=32, val_data=(Xva, yva), progress=False)
    assert len(hist.epochs) == 15 and len(hist.steps) == 15 * 8     # 240 / 32 -> 8 batches
    first, last = hist.epochs[0], hist.epochs[-1]
    assert set(last) >= {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"}
    assert last["train_loss"] < first["train_loss"]
    assert last["val_accuracy"] > 0.9
    assert nn.evaluate(model, nn.CrossEntropyLoss(), (Xva, yva))["accuracy"] == last["val_accuracy"]


def test_training_is_reproducible_bit_for_bit_with_a_seed():
    X, y = spirals(200, seed=1)
    runs = []
    for _ in range(2):
        model = nn.MLP([2, 16, 16, 3], seed=5, dropout=0.1)
        hist = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1, momentum=0.9),
                      (X, y), epochs=3, batch_size=16, seed=7, progress=False)
        runs.append((hist.steps, model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k in runs[0][1]:
        assert np.array_equal(runs[0][1][k], runs[1][1][k])


def test_full_batch_gradient_descent_and_a_data_loader(blobs_data):
    Xtr, ytr, _, _ = blobs_data
    model = _model()
    hist = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.5), (Xtr, ytr),
                  epochs=5, batch_size=None, progress=False)
    assert len(hist.steps) == 5                    # one step per epoch
    loader = DataLoader(Xtr, ytr, batch_size=60, shuffle=True, seed=0)
    hist = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.5), loader, epochs=2,
                  progress=False)
    assert len(hist.steps) == 2 * 4


def test_early_stopping_restores_the_best_weights(blobs_data):
    """40 training examples and a big network: it overfits, the validation loss turns up,
    training stops and the weights of the best epoch come back."""
    X, y = spirals(200, seed=0)
    model = nn.MLP([2, 64, 64, 3], seed=0)
    snapshots = {}
    hist = nn.fit(model, nn.CrossEntropyLoss(), nn.optim.Adam(model, lr=0.02), (X[:40], y[:40]),
                  epochs=200, batch_size=8, val_data=(X[40:], y[40:]), early_stopping=5,
                  progress=False, callback=lambda e, rec: snapshots.__setitem__(e, model.state_dict()))
    assert hist.stopped_early and len(hist.epochs) < 200
    best = min(hist.epochs, key=lambda e: e["val_loss"])
    assert hist.best_epoch == best["epoch"] == len(hist.epochs) - 5
    for k, v in model.state_dict().items():
        assert np.array_equal(v, snapshots[hist.best_epoch][k])
    Xtr, ytr, _, _ = blobs_data
    with pytest.raises(ValueError, match="val_data"):
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (Xtr, ytr),
               early_stopping=2, progress=False)


def test_scheduler_clipping_and_regularizer(blobs_data):
    Xtr, ytr, _, _ = blobs_data
    model = _model()
    opt = nn.optim.SGD(model, lr=0.1)
    sched = nn.optim.StepLR(opt, step_size=2, gamma=0.5)
    hist = nn.fit(model, nn.CrossEntropyLoss(), opt, (Xtr, ytr), epochs=4, batch_size=60,
                  scheduler=sched, clip_grad_norm=0.1,
                  regularizer=lambda: nn.l2_penalty(model, 1e-3), progress=False)
    assert [e["lr"] for e in hist.epochs] == [0.1, 0.1, 0.05, 0.05]


def test_each_epoch_records_the_learning_rate_it_trained_with(blobs_data):
    """The record's lr was read after the scheduler's step at the epoch's end: under
    StepLR(2, 0.5) epoch 2 trained with 0.1 and recorded 0.05 (the next epoch's rate), as
    Keras's history does not. Per step, it is the rate of the epoch's last step."""
    Xtr, ytr, _, _ = blobs_data
    steps = -(-len(Xtr) // 60)
    for per_step in (False, True):
        model = _model()
        opt = nn.optim.SGD(model, lr=0.1)
        hist = nn.fit(model, nn.CrossEntropyLoss(), opt, (Xtr, ytr), epochs=3, batch_size=60,
                      scheduler=nn.optim.ExponentialLR(opt, gamma=0.5),
                      scheduler_per_step=per_step, progress=False)
        last = [k * steps - 1 if per_step else k - 1 for k in (1, 2, 3)]   # steps before it
        assert [e["lr"] for e in hist.epochs] == [0.1 * 0.5 ** t for t in last]
        assert opt.lr == 0.1 * 0.5 ** (3 * steps if per_step else 3)        # the next rate


def test_a_diverging_loss_is_reported_not_silently_continued(blobs_data):
    Xtr, ytr, _, _ = blobs_data
    model = _model()
    model.layers[0].weight.data[...] = np.inf
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError, match="loss became"):
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (Xtr, ytr),
               epochs=1, progress=False)


def test_progress_bar_runs(blobs_data, capsys):
    Xtr, ytr, _, _ = blobs_data
    model = _model()
    nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (Xtr, ytr), epochs=1,
           batch_size=120, progress=True)


def test_predict_batches_and_restores_the_mode():
    model = nn.MLP([2, 4, 3], dropout=0.5, seed=0)
    X = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    full = nn.predict(model, X)
    np.testing.assert_allclose(nn.predict(model, X, batch_size=3), full, rtol=1e-6)
    assert model.training                         # predict ran in eval mode, then restored
    assert full.shape == (10, 3)


def test_binary_multilabel_training_with_bce():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 4)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0], axis=1).astype(np.float32)
    model = nn.MLP([4, 16, 2], seed=0)
    nn.fit(model, nn.BCEWithLogitsLoss(), nn.optim.Adam(model, lr=0.05), (X, Y), epochs=30,
           batch_size=50, progress=False)
    probs = 1 / (1 + np.exp(-nn.predict(model, X)))
    precision, recall = nn.precision_recall(probs, Y)
    assert precision > 0.9 and recall > 0.9


def test_predict_on_an_empty_batch_has_the_models_output_shape():
    model = nn.MLP([2, 4, 3], seed=0)
    out = nn.predict(model, np.zeros((0, 2), np.float32))
    assert out.shape == (0, 3) and out.dtype == np.float32
    assert model.training


def test_evaluate_refuses_nan_outputs_instead_of_scoring_them():
    # All-NaN scores argmax to class 0: with labels of class 0 that was accuracy 1.0.
    model = nn.MLP([2, 4, 3], seed=0)
    model.layers[-1].bias.data[...] = np.nan
    X = np.zeros((6, 2), np.float32)
    with pytest.raises(ValueError, match=r"evaluate: the model's outputs are NaN/Inf for 6 of 6 "
                                         r"examples \(the first is example 0\)"):
        nn.evaluate(model, nn.CrossEntropyLoss(), (X, np.zeros(6, np.int64)))


def test_evaluate_names_nan_inputs_and_a_non_finite_loss():
    model = nn.MLP([2, 4, 1], seed=0)
    X = np.zeros((5, 2))
    X[3, 1] = np.inf
    with pytest.raises(ValueError, match=r"evaluate: data: the inputs hold NaN/Inf in 1 of 5 "
                                         r"examples \(the first is example 3\)"):
        nn.evaluate(model, nn.MSELoss(), (X, np.zeros((5, 1))))
    with pytest.raises(ValueError, match=r"evaluate: the loss is inf \(the data and the "
                                         r"outputs are finite\)"), np.errstate(over="ignore"):
        nn.evaluate(model, nn.MSELoss(), (np.zeros((5, 2)), np.full((5, 1), 1e300)))


def _two_output_data(kind: str):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((48, 4)).astype(np.float32)
    if kind == "regression":
        return X, rng.standard_normal((48, 2)).astype(np.float32)
    if kind == "multi-label":
        return X, (rng.random((48, 2)) > 0.5).astype(np.float32)
    if kind == "labels":
        return X, rng.integers(0, 2, 48)
    return X, np.eye(2, dtype=np.float32)[rng.integers(0, 2, 48)]       # one-hot rows


@pytest.mark.parametrize("loss_fn, kind, accuracy", [
    (nn.MSELoss(), "regression", False),
    (nn.MSELoss(), "one-hot", False),               # fitting one-hot rows by MSE: no classifier
    (nn.BCEWithLogitsLoss(), "multi-label", False),
    (nn.CrossEntropyLoss(), "labels", True),
    (nn.CrossEntropyLoss(), "one-hot", True),
    (lambda out, y: engine.softmax_cross_entropy(out, y), "labels", True),
    (lambda out, y: engine.softmax_cross_entropy(out, y), "one-hot", True),
    (lambda out, y: ((out - y) ** 2).mean(), "regression", False),     # rows are no distributions
], ids=["mse", "mse on one-hot", "bce multi-label", "ce labels", "ce one-hot", "own ce labels",
        "own ce one-hot", "own mse"])
def test_accuracy_is_recorded_only_for_a_softmax_classifier(loss_fn, kind, accuracy):
    """The argmax of two regression outputs, or of independent labels, is no class: fit and
    evaluate record no accuracy for them rather than a meaningless one."""
    X, Y = _two_output_data(kind)
    model = nn.MLP([4, 8, 2], seed=0)
    history = nn.fit(model, loss_fn, nn.optim.SGD(model, lr=0.01), (X, Y), epochs=1,
                     batch_size=16, verbose=0, val_data=(X, Y))
    record = history.epochs[0]
    assert ("train_accuracy" in record) is accuracy
    assert ("val_accuracy" in record) is accuracy
    assert ("accuracy" in nn.evaluate(model, loss_fn, (X, Y))) is accuracy


def test_an_epoch_with_a_batch_of_no_class_targets_records_no_accuracy():
    """A loss of the user's with probability rows, one of them all zeros (an example masked
    out): that batch is no classification, and its examples counted while its hits did not
    (0.2 recorded where the argmax accuracy is 0.3). As evaluate() on the same data, the
    epoch records no accuracy; the next epoch of class rows alone records one."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 4))
    Y = np.eye(3)[rng.integers(0, 3, 20)]
    Y[0] = 0.0

    def loss_fn(out, t):
        return engine.softmax_cross_entropy(out, t)

    model = nn.Linear(4, 3)
    history = nn.fit(model, loss_fn, nn.optim.SGD(model, lr=0.0), (X, Y), epochs=1,
                     batch_size=5, shuffle=False, verbose=0)
    assert "train_accuracy" not in history.epochs[0]
    assert "accuracy" not in nn.evaluate(model, loss_fn, (X, Y))
    history = nn.fit(model, loss_fn, nn.optim.SGD(model, lr=0.0), (X[5:], Y[5:]), epochs=1,
                     batch_size=5, shuffle=False, verbose=0)
    hits = np.mean(nn.predict(model, X[5:]).argmax(1) == Y[5:].argmax(1))
    assert history.epochs[0]["train_accuracy"] == hits


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_recorded_losses_are_means_per_example_whatever_the_reduction(compile):
    """With reduction="sum" the train loss was batch-size times the mean and the validation
    loss validation-size times it: three scales for one quantity. All are means now."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    Y = rng.integers(0, 3, 64)
    records = {}
    for reduction in ("mean", "sum"):
        model = nn.MLP([4, 8, 3], seed=0)
        loss_fn = nn.CrossEntropyLoss(reduction=reduction)
        history = nn.fit(model, loss_fn, nn.optim.SGD(model, lr=0.0), (X, Y), epochs=1,
                         batch_size=16, verbose=0, val_data=(X[:32], Y[:32]), compile=compile)
        records[reduction] = (history.epochs[0]["train_loss"], history.epochs[0]["val_loss"],
                              nn.evaluate(model, loss_fn, (X, Y))["loss"])
    assert records["sum"] == pytest.approx(records["mean"], rel=1e-6)   # float32 sums, orders differ
    assert records["mean"][0] == pytest.approx(records["mean"][2], rel=1e-6)   # lr 0: the same weights


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_step_losses_are_means_per_example_whatever_the_reduction(compile):
    """With reduction="sum" History.steps and the callbacks (the progress bar) got batch
    sums, 16x, 16x and 8x the mean here, next to epoch records that are means."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    Y = rng.integers(0, 3, 40)
    class Seen(nn.callbacks.Callback):
        def __init__(self):
            self.losses = []

        def on_step_end(self, epoch, step, loss, scores, targets):
            self.losses.append(loss)

    steps = {}
    for reduction in ("mean", "sum"):
        seen = Seen()
        model = nn.MLP([4, 8, 3], seed=0)
        history = nn.fit(model, nn.CrossEntropyLoss(reduction=reduction), nn.optim.SGD(model, lr=0.0),
                         (X, Y), epochs=1, batch_size=16, shuffle=False, verbose=0,
                         compile=compile, callbacks=[seen])
        steps[reduction] = history.steps
        assert seen.losses == history.steps
        total = sum(loss * n for loss, n in zip(history.steps, (16, 16, 8)))
        assert history.epochs[0]["train_loss"] == pytest.approx(total / 40, rel=1e-12)
    np.testing.assert_allclose(steps["sum"], steps["mean"], rtol=1e-6)   # float32 sums


@pytest.mark.parametrize("compile", [False, True], ids=["eager", "compiled"])
def test_a_loss_that_is_not_one_number_is_a_clear_error(compile):
    X = np.zeros((8, 4), np.float32)
    Y = np.zeros(8, np.int64)
    model = nn.MLP([4, 3], seed=0)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    with pytest.raises(ValueError, match=r"^fit: the loss must be one number, but loss_fn returned "
                                         r"shape \(8,\) \(reduction='none'"):
        nn.fit(model, loss_fn, nn.optim.SGD(model, lr=0.1), (X, Y), epochs=1, batch_size=8,
               verbose=0, compile=compile)
    with pytest.raises(ValueError, match=r"^evaluate: the loss must be one number"):
        nn.evaluate(model, loss_fn, (X, Y))


def test_a_history_interrupted_mid_epoch_is_refused_for_continuing():
    """After Ctrl-C the weights are from the middle of an epoch and the history holds that
    epoch's first steps: continuing from its start silently counted them twice."""
    X, Y = nn.data.blobs(64, centers=3, seed=0)
    model = _model()
    opt = nn.optim.SGD(model, lr=0.1)
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=1, verbose=0)
    history.steps += [1.0, 1.0]                      # what Ctrl-C in epoch 2 leaves
    history.interrupted = True
    with pytest.raises(ValueError, match="interrupted during epoch 2 .*counted twice"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=3, verbose=0,
               initial_epoch=1, history=history)


def test_the_history_of_a_training_error_mid_epoch_is_refused_for_continuing():
    """A TrainingError's history holds the failed epoch's first steps, not marked
    interrupted: continuing from it ran that epoch again on weights that had taken two of
    its steps, and history.steps held 22 losses for 20 steps."""
    X, Y = nn.data.blobs(64, centers=3, seed=0)
    model = _model()
    opt = nn.optim.SGD(model, lr=0.1)
    calls = []

    def flaky(scores, targets):                      # the 3rd step of epoch 2 is NaN
        calls.append(1)
        loss = nn.CrossEntropyLoss()(scores, targets)
        return loss * float("nan") if len(calls) == 7 else loss

    with pytest.raises(nn.TrainingError) as failure:
        nn.fit(model, flaky, opt, (X, Y), epochs=3, batch_size=16, verbose=0)
    history = failure.value.history
    assert len(history.epochs) == 1 and len(history.steps) == 6 and not history.interrupted
    with pytest.raises(ValueError, match=r"history holds 6 step losses but its 1 epoch records "
                                         r"account for 4: the run stopped during epoch 2"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=3, batch_size=16, verbose=0,
               initial_epoch=1, history=history)


@pytest.mark.parametrize("compile", [False, True])
def test_every_number_fit_records_is_a_python_number(blobs_data, compile):
    # a numpy scalar learning rate (SGD takes one) is recorded as a float: to_dict() stays
    # JSON-serialisable, as it promises
    Xtr, ytr, Xva, yva = blobs_data
    model = _model()
    hist = nn.fit(model, nn.CrossEntropyLoss(reduction="sum"),
                  nn.optim.SGD(model, lr=np.float32(0.01)), (Xtr, ytr), epochs=2,
                  batch_size=np.int64(64), val_data=(Xva, yva), initial_epoch=np.int64(0),
                  verbose=0, record_grad_norms=True, compile=compile)
    assert type(hist.epochs[0]["lr"]) is float and hist.epochs[0]["lr"] == float(np.float32(0.01))
    d = hist.to_dict()
    values = d["steps"] + [v for e in d["epochs"] for v in e.values()] \
        + [v for norms in d["grad_norms"].values() for v in norms]
    assert {type(v) for v in values} <= {int, float}
    assert nn.History.from_dict(json.loads(json.dumps(d))).to_dict() == d


def test_fit_refuses_a_scheduler_of_another_optimizer(blobs_data):
    # it stepped a schedule made on another optimizer every epoch, and the optimizer fit
    # trains with kept its learning rate: no error, no warning
    Xtr, ytr, _, _ = blobs_data
    model = _model()
    old = nn.optim.SGD(model, lr=0.5)
    sched = nn.optim.StepLR(old, step_size=1, gamma=0.1)
    opt = nn.optim.SGD(model, lr=0.5)
    before = model.state_dict()
    with pytest.raises(ValueError, match="fit: scheduler is a StepLR of another optimizer"):
        nn.fit(model, nn.CrossEntropyLoss(), opt, (Xtr, ytr), epochs=3, verbose=0,
               scheduler=sched)
    assert sched.t == 0 and old.lr == opt.lr == 0.5
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("per_step", [False, True])
def test_a_resume_refuses_a_schedule_that_was_not_restored(blobs_data, per_step):
    # fit neither advanced nor checked the schedule: a run resumed with a new schedule
    # silently started it again and differed from the uninterrupted run
    Xtr, ytr, _, _ = blobs_data

    def make():
        model = _model()
        opt = nn.optim.SGD(model, lr=0.5)
        return model, opt, nn.optim.ExponentialLR(opt, gamma=0.5)

    def run(model, opt, sched, epochs, **kw):
        return nn.fit(model, nn.CrossEntropyLoss(), opt, (Xtr, ytr), epochs=epochs,
                      batch_size=64, verbose=0, scheduler=sched, scheduler_per_step=per_step,
                      **kw)

    full_model, *rest = make()
    full = run(full_model, *rest, epochs=4)
    m1, o1, s1 = make()
    part = run(m1, o1, s1, epochs=2)
    saved = (m1.state_dict(), json.loads(json.dumps(part.to_dict())), s1.state_dict())
    m2, o2, s2 = make()
    m2.load_state_dict(saved[0])
    history = nn.History.from_dict(saved[1])
    with pytest.raises(ValueError, match=r"fit: scheduler has been stepped 0 times, but the run "
                                         r"being resumed stepped it (8|2) times .* Restore it "
                                         r"first: scheduler.load_state_dict\(\)"):
        run(m2, o2, s2, epochs=4, initial_epoch=2, history=history)
    assert s2.t == 0 and o2.lr == 0.5 and history.to_dict() == saved[1]
    assert all(np.array_equal(saved[0][k], v) for k, v in m2.state_dict().items())
    s2.load_state_dict(saved[2])                    # restored: the run continues exactly
    resumed = run(m2, o2, s2, epochs=4, initial_epoch=2, history=history)
    assert [e["lr"] for e in resumed.epochs] == [e["lr"] for e in full.epochs]
    assert all(np.array_equal(full_model.state_dict()[k], v) for k, v in m2.state_dict().items())


def _nll(out, t):
    """The textbook NLL over log_softmax, written by hand: it reads a label -1 as the last
    class, without error (the built-in losses refuse it)."""
    t = np.asarray(t)
    return -(engine.log_softmax(out)[np.arange(len(t)), t]).mean()


def test_fit_refuses_labels_outside_the_classes_that_the_loss_took():
    """fit's running accuracy counted a label -1 as a wrong answer (0.24 with 100 of 300),
    where evaluate refuses it: both now name it."""
    X, y = spirals(300, seed=1)
    bad = y.copy()
    bad[5] = -1
    model = nn.MLP([2, 16, 3], seed=0)
    with pytest.raises(ValueError, match=r"fit: class label -1 is outside \[0, 3\) for the "
                                         r"model's outputs of shape \(32, 3\)"):
        nn.fit(model, _nll, nn.optim.SGD(model, lr=0.1), (X, bad), epochs=1, verbose=0,
               shuffle=False)


@pytest.mark.parametrize("val, message", [
    ("column", r"fit: val_data: its inputs have shape \(3,\) per example, train_data's \(2,\)"),
    ("labels (N, 1)", r"fit: val_data: its targets have shape \(1,\) per example, train_data's \(\)"),
    ("float labels", r"fit: val_data: its targets are of dtype float64, train_data's of int64"),
])
def test_fit_checks_val_data_against_train_data_before_training(val, message):
    """These failed after a whole epoch had changed the weights, as an op's error that did
    not name val_data."""
    X, y = spirals(300, seed=1)
    Xv, yv = {"column": (np.c_[X, X[:, :1]], y), "labels (N, 1)": (X, y[:, None]),
              "float labels": (X, y.astype(np.float64))}[val]
    model = nn.MLP([2, 16, 3], seed=0)
    before = model.state_dict()
    with pytest.raises(ValueError, match=message):
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, y),
               val_data=(Xv, yv), epochs=2, verbose=0)
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())


def test_an_error_on_the_validation_data_names_val_data():
    X, y = spirals(300, seed=1)
    model = nn.MLP([2, 16, 3], seed=0)
    with pytest.raises(ValueError, match=r"^fit: val_data: softmax_cross_entropy: class label 3 "
                                         r"is outside \[0, 3\)"):
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1), (X, y),
               val_data=(X[:10], np.r_[y[:9], 3]), epochs=1, verbose=0)


def test_a_partial_loss_summing_over_the_batch_is_recorded_per_example():
    """partial(engine.softmax_cross_entropy, reduction="sum") was recorded as a sum: train
    losses 16 times the per-example value, validation losses 20 times."""
    import functools

    r = np.random.default_rng(1)
    X, y = r.normal(size=(48, 4)).astype(np.float32), r.integers(0, 3, 48)
    runs = []
    for loss in (nn.CrossEntropyLoss(reduction="sum"),
                 functools.partial(engine.softmax_cross_entropy, reduction="sum")):
        model = nn.MLP([4, 8, 3], seed=0)
        h = nn.fit(model, loss, nn.optim.SGD(model, lr=0.01), (X, y), epochs=2, batch_size=16,
                   val_data=(X[:20], y[:20]), verbose=0)
        runs.append(h)
    assert runs[0].steps == runs[1].steps
    assert [r["val_loss"] for r in runs[0].epochs] == [r["val_loss"] for r in runs[1].epochs]


def test_a_history_continued_without_early_stopping_drops_the_earlier_best_epoch():
    """Continued to 10 epochs without early stopping, a History that had stopped early still
    said stopped_early=True and best_epoch=1, though every epoch ran and none was monitored."""
    r = np.random.default_rng(1)
    X, y = r.normal(size=(48, 4)).astype(np.float32), r.integers(0, 3, 48)
    model = nn.MLP([4, 8, 3], seed=0)
    opt = nn.optim.SGD(model, lr=0.0)           # no improvement: stops at once
    h = nn.fit(model, nn.CrossEntropyLoss(), opt, (X, y), epochs=10, batch_size=None,
               early_stopping=1, monitor="train_loss", verbose=0)
    assert h.stopped_early and h.best_epoch == 1 and len(h.epochs) < 10
    nn.fit(model, nn.CrossEntropyLoss(), opt, (X, y), epochs=10, batch_size=None, verbose=0,
           initial_epoch=len(h.epochs), history=h)
    assert len(h.epochs) == 10 and not h.stopped_early and h.best_epoch is None
