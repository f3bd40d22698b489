"""nn.compile_step and fit(compile=True): the same parameters, bit for bit, as eager."""
from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import cli

X = np.random.default_rng(0).standard_normal((203, 6))        # 203: a last, smaller batch
Y = (X[:, 0] * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)

OPTIMIZERS = {
    "sgd-momentum": lambda m: nn.optim.SGD(m, lr=0.05, momentum=0.9),
    "sgd-nesterov": lambda m: nn.optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True,
                                           weight_decay=1e-3),
    "adam": lambda m: nn.optim.Adam(m, lr=0.01),
    "adamw": lambda m: nn.optim.AdamW(m, lr=0.01),
}


def _train(compile, optimizer, dtype, **kw):
    model = nn.MLP([6, 16, 16, 3], dropout=0.2, seed=1, dtype=dtype)
    opt = OPTIMIZERS[optimizer](model)
    history = nn.fit(model, nn.CrossEntropyLoss(), opt, (X.astype(dtype), Y), epochs=3,
                     batch_size=32, val_data=(X[:50].astype(dtype), Y[:50]), progress=False,
                     compile=compile, **kw)
    return model, history


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_compiled_training_equals_eager_bit_for_bit(optimizer, dtype):
    eager, h1 = _train(False, optimizer, dtype)
    compiled, h2 = _train(True, optimizer, dtype)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        assert a.dtype == b.dtype == dtype
        assert np.array_equal(a, b), name
    assert h1.steps == h2.steps
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h.epochs] for h in (h1, h2)]
    assert strip[0] == strip[1]


def test_regularizer_and_clipping_compile_too():
    def run(compile):
        model = nn.MLP([6, 8, 3], seed=2)
        opt = nn.optim.SGD(model, lr=0.5, momentum=0.5)
        nn.fit(model, nn.CrossEntropyLoss(), opt, (X, Y), epochs=2, batch_size=40,
               regularizer=lambda: nn.l2_penalty(model, 1e-2), clip_grad_norm=0.5,
               progress=False, compile=compile)
        return model.state_dict()
    for a, b in zip(run(False).values(), run(True).values()):
        assert np.array_equal(a, b)


def test_a_plan_per_batch_shape_and_per_mode():
    model = nn.MLP([6, 8, 3], dropout=0.5, seed=0)
    step = nn.compile_step(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1))
    step(X[:32], Y[:32])
    step(X[32:64], Y[32:64])
    assert len(step.plans) == 1
    step(X[:11], Y[:11])                       # a smaller batch: its own plan
    model.eval()
    step(X[:32], Y[:32])                       # dropout off: its own plan
    assert len(step.plans) == 3
    shapes = sorted(k[0] for k in step.plans)
    assert shapes == [(11, 6), (32, 6), (32, 6)]


def train_step(step: Any, model: nn.Module, loss_fn: Any, opt: nn.optim.Optimizer,
               xb: np.ndarray, yb: np.ndarray) -> float:
    """One training step: the compiled ``step`` when there is one, else the README's eager
    loop (forward, zero_grad, backward, step); the loss as a float."""
    if step is not None:
        return step(xb, yb)
    loss = loss_fn(model(engine.Tensor(xb)), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def test_changing_a_module_setting_after_the_capture_captures_again():
    """A dropout's p or a loss's label_smoothing is a Python number the plan froze: after
    it changes, the step must not replay the old plan (a silently wrong loss); it captures
    a new one, and the run stays bit for bit equal to an eager run making the same change."""
    def run(compile):
        model = nn.MLP([6, 16, 3], dropout=0.5, seed=3)
        loss_fn = nn.CrossEntropyLoss()
        opt = nn.optim.SGD(model, lr=0.1, momentum=0.9)
        step = nn.compile_step(model, loss_fn, opt) if compile else None
        losses = []
        for k in range(6):
            if k == 2:
                loss_fn.label_smoothing = 0.2
            if k == 4:
                model.layers[2].p = 0.1
            xb, yb = X[32 * k:32 * (k + 1)], Y[32 * k:32 * (k + 1)]
            losses.append(train_step(step, model, loss_fn, opt, xb, yb))
        return model, losses, step

    eager, eager_losses, _ = run(False)
    compiled, compiled_losses, step = run(True)
    assert isinstance(compiled.layers[2], nn.Dropout)
    assert compiled_losses == eager_losses
    for a, b in zip(eager.state_dict().values(), compiled.state_dict().values()):
        assert np.array_equal(a, b)
    assert len(step.plans) == 3
    nn.MLP([6, 4, 3], dropout=0.5, seed=0)          # other modules built or changed elsewhere
    nn.CrossEntropyLoss().label_smoothing = 0.3
    step(X[:32], Y[:32])
    assert len(step.plans) == 3                     # ... do not invalidate this step's plans


def test_a_nan_loss_in_a_compiled_fit_keeps_the_last_good_weights():
    model = nn.MLP([6, 8, 3], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    # Under compile the loss function runs only when a plan is captured, so the NaN comes
    # from the data: one poisoned example in the fourth batch.
    Xbad = X.copy()
    Xbad[100] = np.nan
    with pytest.raises(nn.TrainingError, match="the loss became nan at epoch 1, step 4") as info:
        nn.fit(model, nn.CrossEntropyLoss(), opt, (Xbad, Y), epochs=2, batch_size=32,
               shuffle=False, progress=False, compile=True)
    assert len(info.value.history.steps) == 3
    assert all(np.isfinite(p.numpy()).all() for p in model.parameters())
    ref = nn.MLP([6, 8, 3], seed=0)
    nn.fit(ref, nn.CrossEntropyLoss(), nn.optim.SGD(ref, lr=0.1), (X[:96], Y[:96]), epochs=1,
           batch_size=32, shuffle=False, progress=False)
    for a, b in zip(model.state_dict().values(), ref.state_dict().values()):
        assert np.array_equal(a, b)


def test_printing_a_step_shows_the_program_with_the_optimizer_update():
    model = nn.MLP([6, 4, 3], seed=0)
    step = nn.compile_step(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1))
    assert "not captured yet" in str(step)
    step(X[:8], Y[:8])
    lines = [line.strip() for line in str(step).splitlines()]
    assert lines[0] == "1  t1 = linear(x, layers.0.weight, layers.0.bias)"
    assert "g_t3, _ = softmax_cross_entropy.backward(g_t4)" in lines[5]
    assert lines[-1].endswith("sgd(layers.2.bias, g_layers.2.bias)")
    assert sum(" = linear.backward(" in line for line in lines) == 2


def test_compile_step_validates_its_arguments():
    model = nn.MLP([6, 4, 3], seed=0)
    with pytest.raises(TypeError, match="optimizer must be an nn.optim optimizer"):
        nn.compile_step(model, nn.CrossEntropyLoss(), object())
    with pytest.raises(ValueError, match="clip_grad_norm must be finite and positive"):
        nn.compile_step(model, nn.CrossEntropyLoss(), nn.optim.SGD(model), clip_grad_norm=0)


def test_handgrad_train_compile_gives_the_same_model(tmp_path, capsys):
    args = ["train", "--dataset", "moons", "--epochs", "5", "--batch-size", "16", "--quiet"]
    assert cli.main(args + ["--out", str(tmp_path / "eager")]) == 0
    assert cli.main(args + ["--out", str(tmp_path / "compiled"), "--compile"]) == 0
    a, b = nn.load(tmp_path / "eager" / "model.npz"), nn.load(tmp_path / "compiled" / "model.npz")
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        assert np.array_equal(x, y)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("test")][:2] == \
        [line for line in out if line.startswith("test")][2:]


def test_capture_refusals_reach_the_user_of_compile_step():
    model = nn.MLP([6, 4, 3], seed=0)

    def loss_fn(out, y):
        if out.sum().item() > 1e9:              # Python control flow on values
            return out.sum()
        return nn.CrossEntropyLoss()(out, y)
    step = nn.compile_step(model, loss_fn, nn.optim.SGD(model))
    with pytest.raises(engine.CaptureError, match=r"read the value of .*item\(\)"):
        step(X[:4], Y[:4])


def test_freezing_a_parameter_or_changing_the_optimizer_after_the_capture_acts_as_eager():
    """A kept plan computed the gradient of a parameter frozen after the capture, and the
    optimizer went on updating it. requires_grad (of the modules' parameters and of any
    other tensor a plan reads, here a regularizer's) is part of the plan's key; the
    optimizer is not part of a plan (its update runs after the replay, reading the groups
    and hyperparameters as they are), so a new learning rate or a new optimizer is used
    as an eager loop would use it."""
    def run(compile):
        model = nn.MLP([6, 16, 3], seed=3)
        scale = engine.Tensor(np.full(3, 0.5), requires_grad=True, name="scale")
        loss_fn = nn.CrossEntropyLoss()
        opt = nn.optim.SGD([{"params": model.parameters()}, {"params": [scale], "lr": 0.2}],
                           lr=0.1, momentum=0.9)
        regularizer = lambda: 0.01 * (scale * scale).sum()      # noqa: E731
        step = nn.compile_step(model, loss_fn, opt, regularizer=regularizer) if compile else None
        frozen, losses = {}, []
        for k in range(8):
            if k == 2:
                model.layers[0].weight.requires_grad = False
                scale.requires_grad = False
                frozen = {"w": model.layers[0].weight.numpy(copy=True), "s": scale.numpy(copy=True)}
            if k == 3:
                opt.param_groups[0]["lr"] = 0.05
                opt.param_groups[0]["momentum"] = 0.5
            if k == 4:
                assert np.array_equal(model.layers[0].weight.numpy(), frozen["w"])
                assert np.array_equal(scale.numpy(), frozen["s"])
                model.layers[0].weight.requires_grad = True
                scale.requires_grad = True
            if k == 6:                          # a new optimizer
                opt = nn.optim.Adam(model, lr=0.01)
                if compile:
                    step.optimizer = opt
            xb, yb = X[24 * k:24 * (k + 1)], Y[24 * k:24 * (k + 1)]
            if compile:
                losses.append(step(xb, yb))
            else:
                data_loss = loss_fn(model(engine.Tensor(xb)), yb)
                opt.zero_grad()
                (data_loss + regularizer()).backward()
                opt.step()
                losses.append(data_loss.item())
        return model, scale, step, losses

    eager, eager_scale, _, eager_losses = run(False)
    compiled, compiled_scale, step, compiled_losses = run(True)
    assert compiled_losses == eager_losses
    for a, b in zip(eager.state_dict().values(), compiled.state_dict().values()):
        assert np.array_equal(a, b)
    assert np.array_equal(eager_scale.numpy(), compiled_scale.numpy())
    assert len(step.plans) == 2                 # trainable, frozen (then trainable again)


def test_an_eval_mode_block_in_the_calling_thread_gets_its_own_plan():
    model = nn.MLP([6, 8, 3], dropout=0.5, seed=0)
    step = nn.compile_step(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.1))
    step(X[:32], Y[:32])
    with model.eval_mode():
        step(X[:32], Y[:32])
    assert len(step.plans) == 2
    assert [k[4][4] for k in step.plans] == [True, False]        # the dropout's mode


def test_a_step_called_from_a_second_thread_while_it_runs_is_refused():
    model = nn.MLP([6, 4, 3], seed=0)
    inside, go_on = threading.Event(), threading.Event()

    def slow_loss(out, y):
        inside.set()
        assert go_on.wait(10)
        return nn.CrossEntropyLoss()(out, y)

    step = nn.compile_step(model, slow_loss, nn.optim.SGD(model, lr=0.1))
    first = threading.Thread(target=step, args=(X[:8], Y[:8]))
    first.start()
    try:
        assert inside.wait(10)
        with pytest.raises(RuntimeError, match="already running in another thread"):
            step(X[:8], Y[:8])
    finally:
        go_on.set()
        first.join()
    step(X[:8], Y[:8])                           # free again once the first call ended
    assert len(step.plans) == 1


def _small_step():
    model = nn.MLP([6, 8, 3], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    return model, nn.compile_step(model, nn.CrossEntropyLoss(), opt)


def test_a_batch_in_a_graph_is_refused_not_cut_from_it():
    """Eagerly the gradient flows back into what made the batch (an encoder); a plan takes
    arrays, so it would silently leave the encoder untrained."""
    model, step = _small_step()
    encoder = nn.Linear(6, 6, rng=np.random.default_rng(0))
    xb = encoder(engine.Tensor(X[:16]))
    with pytest.raises(ValueError, match=r"the batch is a tensor in a graph \(computed by op 'linear'\)"):
        step(xb, Y[:16])
    with pytest.raises(ValueError, match=r"the targets is a tensor in a graph \(requiring grad\)"):
        step(X[:16], engine.Tensor(np.eye(3)[Y[:16]], requires_grad=True))
    assert step(engine.Tensor(X[:16]), engine.Tensor(Y[:16])) > 0     # plain tensors are fine


def test_a_compiled_step_refuses_no_grad_and_detect_anomaly_as_eager_steps_do():
    model, step = _small_step()
    step(X[:16], Y[:16])
    before = [p.numpy(copy=True) for p in model.parameters()]
    with engine.no_grad(), pytest.raises(RuntimeError, match="gradients are off in this thread"):
        step(X[:16], Y[:16])
    with engine.detect_anomaly(), pytest.raises(RuntimeError, match="detect_anomaly.*eager step"):
        step(X[:16], Y[:16])
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before, strict=True))


class _ListNet(nn.Module):
    """A dropout kept in a plain list: called, but not a registered submodule."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 8, rng=np.random.default_rng(0))
        self.b = nn.Linear(8, 3, rng=np.random.default_rng(1))
        self.extra = [nn.Dropout(0.0, rng=np.random.default_rng(5))]

    def forward(self, x):
        return self.b(self.extra[0](engine.relu(self.a(x))))


def _setup(case: str):
    """(model, loss_fn, change): ``change()`` sets a module's setting outside the trees."""
    if case == "dropout in a list":
        model = _ListNet()

        def change():
            model.extra[0].p = 0.5
        return model, nn.CrossEntropyLoss(), change
    ce = nn.CrossEntropyLoss()

    def loss_fn(out, y):
        return ce(out, y)

    def smooth():
        ce.label_smoothing = 0.3
    return nn.MLP([6, 8, 3], seed=0), loss_fn, smooth


@pytest.mark.parametrize("case", ["loss module in a function", "dropout in a list"])
def test_settings_of_modules_outside_the_trees_mean_a_new_capture(case):
    """Modules a plan ran that are in neither the model's tree nor the loss's are keyed
    too: their settings changed later were replayed with the old ones, silently."""
    runs = []
    for compile in (False, True):
        model, loss_fn, change = _setup(case)
        opt = nn.optim.SGD(model, lr=0.1)
        step = (nn.compile_step if compile else nn.step.EagerStep)(model, loss_fn, opt)
        losses = []
        for i in range(3):
            if i == 1:
                change()
            out = step(X[16 * i:16 * i + 16].astype(np.float32), Y[16 * i:16 * i + 16])
            losses.append(out if compile else out[0])
        runs.append((losses, [p.numpy(copy=True).tobytes() for p in model.parameters()]))
    assert runs[0] == runs[1]


class _GatedLayer(nn.Module):
    """A layer with a mask made inside the step (a leaky gate at the batch's mean) and a
    detached statistic: values a plan makes again at every replay."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 16, rng=np.random.default_rng(3))

    def forward(self, x):
        h = self.linear(x)
        gate = h > h.detach().mean()
        return engine.where(gate, h, 0.1 * h)


def test_masks_and_detached_values_inside_a_compiled_step_train_as_eager():
    """They used to be kept from the first batch by every replay (a different model,
    silently), then refused; now compiled training equals eager bit for bit."""
    models = []
    for compile in (False, True):
        model = nn.Sequential(_GatedLayer(), nn.Linear(16, 3, rng=np.random.default_rng(4)))
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.05, momentum=0.9),
               (X, Y), epochs=2, batch_size=32, progress=False, compile=compile)
        models.append(model)
    for (name, a), b in zip(models[0].state_dict().items(), models[1].state_dict().values()):
        assert np.array_equal(a, b), name


def test_a_loss_that_indexes_with_the_labels_is_refused_not_replayed_with_the_first_ones():
    """``-logp[rows, y].mean()`` froze the first batch's labels into the plan: later steps
    trained on them, silently."""
    def nll(out, y):
        logp = engine.log_softmax(out, axis=-1)
        return -logp[np.arange(logp.shape[0]), y].mean()

    model = nn.MLP([6, 8, 3], seed=0)
    step = nn.compile_step(model, nll, nn.optim.SGD(model, lr=0.1))
    with pytest.raises(engine.CaptureError, match="op 'getitem' got a Tensor in its parameter"):
        step(X[:8], Y[:8])


@pytest.mark.parametrize("as_tensor", [False, True], ids=["array", "tensor"])
@pytest.mark.parametrize("case", ["float64 MSE", "float64 BCE", "bool BCE", "int MSE"])
def test_targets_of_another_dtype_are_converted_as_eagerly(case, as_tensor):
    """Eagerly a float64 target array meets float32 outputs in float32 (the loss op converts
    it); a compiled step passed it to the plan as a float64 tensor, so the loss and every
    gradient were computed in float64: other losses, other weights. A target tensor is not
    converted, eagerly or compiled."""
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(32, 4)).astype(np.float32)
    ys = rng.normal(size=(32, 2))
    loss_fn, ys = {"float64 MSE": (nn.MSELoss, ys), "float64 BCE": (nn.BCEWithLogitsLoss, (ys > 0) * 1.0),
                   "bool BCE": (nn.BCEWithLogitsLoss, ys > 0),
                   "int MSE": (nn.MSELoss, np.round(ys).astype(np.int64))}[case]
    runs = []
    for make in (nn.step.EagerStep, nn.step.ReplayStep):
        model = nn.MLP([4, 8, 2], seed=0)
        step = make(model, loss_fn(), nn.optim.SGD(model, lr=0.1))
        losses = [step(xs[i:i + 8], engine.Tensor(ys[i:i + 8]) if as_tensor else ys[i:i + 8])[0]
                  for i in range(0, 32, 8)]
        runs.append((losses, [p.numpy(copy=True).tobytes() for p in model.parameters()]))
    assert runs[0] == runs[1]


class _WarmupCE(nn.CrossEntropyLoss):
    """A loss module that assigns an attribute in its forward: a new capture every step."""

    def __init__(self):
        super().__init__()
        self.t = 0

    def forward(self, out, y):
        self.t += 1
        return super().forward(out, y) * min(1.0, self.t / 4)


@pytest.mark.parametrize("case", ["inside a function", "with an outside tensor"])
def test_a_module_assigning_in_its_forward_is_captured_again_at_every_step(case):
    """A plan that read something outside the trees (a loss module inside a function, a
    regularizer's tensor) was filed under the key read after the capture, which counted
    the capture's own assignment: the next step replayed it, and the counter stayed 1."""
    scale = engine.Tensor(np.float32(1e-3))
    runs = []
    for make in (nn.step.EagerStep, nn.step.ReplayStep):
        model, ce = nn.MLP([6, 8, 3], seed=0), _WarmupCE()
        if case == "inside a function":
            step = make(model, lambda o, t, ce=ce: ce(o, t), nn.optim.SGD(model, lr=0.5))
        else:
            step = make(model, ce, nn.optim.SGD(model, lr=0.5),
                        regularizer=lambda m=model: (m.layers[0].weight ** 2).sum() * scale)
        losses = [step(X[8 * i:8 * i + 8].astype(np.float32), Y[8 * i:8 * i + 8])[0]
                  for i in range(5)]
        runs.append((losses, ce.t, [p.numpy(copy=True).tobytes() for p in model.parameters()]))
    assert runs[0] == runs[1] and runs[1][1] == 5


def _twin_runs(loss_fn, Y, X=None):
    """compile_step and the eager loop from the same weights on the same batches: the
    parameters of each after four steps."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(16, 3)).astype(np.float32) if X is None else X
    model, twin = nn.MLP([3, 8, 2], seed=0), nn.MLP([3, 8, 2], seed=0)
    step = nn.compile_step(model, loss_fn, nn.optim.SGD(model, lr=0.1))
    opt = nn.optim.SGD(twin, lr=0.1)
    for i in range(0, 16, 4):
        step(X[i:i + 4], Y[i:i + 4])
        loss = loss_fn(twin(engine.Tensor(X[i:i + 4])), Y[i:i + 4])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return ([p.numpy(copy=True) for p in model.parameters()],
            [p.numpy(copy=True) for p in twin.parameters()])


@pytest.mark.parametrize("loss_fn, dtype", [
    (lambda out, y: engine.mse(out, engine.exp(y)), np.float64),    # a tensor eagerly: kept
    (lambda out, y: engine.mse(out, y * 0.9 + 0.05), np.float64),   # arrays eagerly: converted
    (lambda out, y: engine.mse(out, y.clip(0.1, 0.9)), np.float32),  # a method, no conversion
], ids=["engine op", "operators", "method"])
def test_an_engine_op_on_the_targets_is_a_tensor_in_a_plan_as_eagerly(loss_fn, dtype):
    """engine.exp(y) of float64 targets is a float64 tensor eagerly, so the loss is float64;
    the capture took it for an array and converted it to float32: the compiled step trained
    to other weights, with no error."""
    Y = np.random.default_rng(1).random((16, 2)).astype(dtype)
    compiled, eager = _twin_runs(loss_fn, Y)
    for a, b in zip(compiled, eager, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("loss_fn, Y, match", [
    (lambda out, y: engine.mse(out, engine.clip(y, 0.0, 1.0)), np.linspace(0, 1, 32).reshape(16, 2),
     "converts .* float64 to float32; it was computed from the step's targets by clip"),
    (lambda out, y: engine.mse(out, (y - 128) / 128), np.arange(32, dtype=np.uint8).reshape(16, 2),
     r"op 'sub' computes integers from .*uint8.*numpy's integer rules \(uint8 wraps"),
], ids=["engine.clip or y.clip", "uint8 arithmetic"])
def test_targets_a_plan_cannot_compute_as_eagerly_are_refused(loss_fn, Y, match):
    """engine.clip(y) is a float64 tensor eagerly and y.clip() an array converted to
    float32: the plan cannot tell which was written. y - 128 wraps in uint8 eagerly and
    widens in the engine. Both trained silently otherwise."""
    with pytest.raises(engine.CaptureError, match=match):
        _twin_runs(loss_fn, Y)
