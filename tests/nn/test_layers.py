"""Layers: Linear matches x @ W + b, activations match the engine ops, Dropout, MLP."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine, nn

from .test_compile import train_step

rng = np.random.default_rng(0)


def test_linear_forward_backward_is_the_classic_layer():
    lin = nn.Linear(3, 2, rng=np.random.default_rng(0))
    x = rng.standard_normal((5, 3)).astype(np.float32)
    out = lin(x)
    np.testing.assert_allclose(out.data, x @ lin.weight.data + lin.bias.data, rtol=1e-6)
    delta = rng.standard_normal((5, 2)).astype(np.float32)
    out.backward(delta)
    # weight gradient = previous activation^T delta, bias gradient = delta summed over the batch
    np.testing.assert_allclose(lin.weight.grad, x.T @ delta, rtol=1e-5)
    np.testing.assert_allclose(lin.bias.grad, delta.sum(axis=0), rtol=1e-5)
    assert out.node.op.name == "linear"
    assert lin.weight.dtype == np.float32 and lin.weight.grad.dtype == np.float32


def test_linear_without_bias_and_bad_input():
    lin = nn.Linear(3, 2, bias=False)
    assert lin.bias is None and len(lin.parameters()) == 1
    assert lin(np.ones((2, 3), dtype=np.float32)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"Linear\(3→2\).*shape \(2, 4\)"):
        lin(np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 2)


@pytest.mark.parametrize("flag,expected", [(1, True), (0, False), (np.int64(1), True),
                                           (np.bool_(False), False), (True, True)])
def test_bias_given_as_0_or_1_is_recorded_as_a_bool(flag, expected):
    """MLP(bias=1) recorded bias=1 in its config, which nn.load refuses: the file it saved
    could never be read back. The layers record the bool."""
    mlp = nn.MLP([3, 4, 2], bias=flag, seed=0)
    assert mlp.config["bias"] is expected
    assert (mlp.layers[0].bias is not None) is expected
    assert (nn.Linear(3, 2, bias=flag).bias is not None) is expected


@pytest.mark.parametrize("flag", [2, -1, 1.0, "yes", None])
def test_a_bias_that_is_not_a_bool_or_0_or_1_is_refused(flag):
    for make in (lambda: nn.MLP([3, 4, 2], bias=flag), lambda: nn.Linear(3, 2, bias=flag)):
        with pytest.raises(ValueError, match=r"bias must be True or False \(or 1 or 0\), got"):
            make()


@pytest.mark.parametrize("module,fn", [
    (nn.ReLU(), engine.relu), (nn.Sigmoid(), engine.sigmoid), (nn.Tanh(), engine.tanh),
    (nn.LeakyReLU(0.2), lambda x: engine.leaky_relu(x, negative_slope=0.2)),
    (nn.ELU(0.5), lambda x: engine.elu(x, alpha=0.5)), (nn.GELU(), engine.gelu),
    (nn.Softplus(), engine.softplus), (nn.Identity(), lambda x: x),
    (nn.Softmax(), lambda x: engine.softmax(x, axis=-1)),
])
def test_activation_modules_apply_their_op(module, fn):
    x = engine.Tensor(rng.standard_normal((4, 3)))
    np.testing.assert_array_equal(module(x).data, fn(x).data)
    assert module.parameters() == []


@pytest.mark.parametrize("module,name,value,fn", [
    (nn.LeakyReLU(0.01), "negative_slope", 0.5, lambda x: engine.leaky_relu(x, negative_slope=0.5)),
    (nn.ELU(1.0), "alpha", 2.0, lambda x: engine.elu(x, alpha=2.0)),
    (nn.GELU(), "approximate", "none", lambda x: engine.gelu(x, approximate="none")),
    (nn.Softmax(), "axis", 0, lambda x: engine.softmax(x, axis=0)),
])
def test_an_activation_setting_assigned_after_construction_is_used(module, name, value, fn):
    """The settings were kept in a private dict: reading ``act.negative_slope`` was an
    AttributeError and assigning it created an attribute forward never read."""
    x = engine.Tensor(rng.standard_normal((4, 3)))
    setattr(module, name, value)
    assert getattr(module, name) == value and f"{name}={value!r}" in repr(module)
    np.testing.assert_array_equal(module(x).data, fn(x).data)


def test_a_compiled_step_captures_again_after_an_activation_setting_changes():
    X = rng.standard_normal((64, 4))
    Y = (X[:, 0] > 0).astype(np.int64)

    def run(compile, change=True):
        model = nn.Sequential(nn.Linear(4, 8, rng=np.random.default_rng(0)), nn.LeakyReLU(0.01),
                              nn.Linear(8, 2, rng=np.random.default_rng(1)))
        loss_fn, opt = nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=0.5)
        step = nn.compile_step(model, loss_fn, opt) if compile else None
        losses = []
        for k in range(4):
            if k == 2 and change:
                model[1].negative_slope = 0.5
            xb, yb = X[16 * k:16 * (k + 1)], Y[16 * k:16 * (k + 1)]
            losses.append(train_step(step, model, loss_fn, opt, xb, yb))
        return model, losses, step

    eager, eager_losses, _ = run(False)
    compiled, compiled_losses, step = run(True)
    assert len(step.plans) == 2                     # captured again after the change
    assert compiled_losses[2:] != run(True, change=False)[1][2:]   # the change was used
    assert compiled_losses == eager_losses
    assert all(np.array_equal(a, b) for a, b in
               zip(eager.state_dict().values(), compiled.state_dict().values(), strict=True))


def test_dropout_train_and_eval():
    drop = nn.Dropout(0.5, rng=np.random.default_rng(0))
    x = engine.Tensor(np.ones((100, 100), dtype=np.float32))
    y = drop(x).data
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.45 < (y == 0).mean() < 0.55          # 10,000 draws: std of the rate is 0.005
    drop.eval()
    np.testing.assert_array_equal(drop(x).data, x.data)
    with pytest.raises(ValueError, match="p must be"):
        nn.Dropout(1.0)


NOT_GENERATORS = [0, np.int64(3), 1.5, "seed", True, np.random.RandomState(0)]


@pytest.mark.parametrize("rng", NOT_GENERATORS)
@pytest.mark.parametrize("build,where", [
    (lambda rng: nn.Dropout(0.5, rng=rng), "Dropout"),
    (lambda rng: nn.Linear(3, 2, rng=rng), "Linear"),
    (lambda rng: nn.MLP([3, 4, 2], rng=rng), "MLP"),
    (lambda rng: nn.init.initialize("he", (3, 2), rng), "initialize"),
])
def test_an_rng_that_is_not_a_generator_is_a_type_error_naming_the_layer(build, where, rng):
    """Dropout(rng=0) was accepted and drew the same mask at every call (the op's int
    seed); Linear(rng=0) was an AttributeError from inside the initializer."""
    with pytest.raises(TypeError, match=rf"^{where}: rng must be a numpy.random.Generator or None, "
                                        rf"got .*\({type(rng).__name__}\)"):
        build(rng)


@pytest.mark.parametrize("rng", NOT_GENERATORS)
def test_assigning_dropout_an_rng_that_is_not_a_generator_is_a_type_error(rng):
    """``layer.rng = 0`` after construction was accepted and, the op reading an int as a
    seed, drew the same mask at every call: it is refused as the constructor refuses it,
    and the layer keeps its generator. None is the default generator, as in the
    constructor."""
    generator = np.random.default_rng(0)
    drop = nn.Dropout(0.5, rng=generator)
    with pytest.raises(TypeError, match=rf"^Dropout: rng must be a numpy.random.Generator or None, "
                                        rf"got .*\({type(rng).__name__}\)"):
        drop.rng = rng
    assert drop.rng is generator
    drop.rng = None
    assert drop.rng is nn.init.default_rng()


def test_dropout_with_a_generator_draws_a_new_mask_at_every_call():
    drop = nn.Dropout(0.5, rng=np.random.default_rng(0))
    x = engine.Tensor(np.ones(64, dtype=np.float32))
    assert not np.array_equal(drop(x).numpy(), drop(x).numpy())
    assert isinstance(nn.Dropout(0.5).rng, np.random.Generator)


def test_flatten_module():
    x = engine.Tensor(np.zeros((2, 3, 4)))
    assert nn.Flatten()(x).shape == (2, 12)


def test_mlp_structure_matches_the_classic_network():
    model = nn.MLP([784, 50, 10], activation="sigmoid", seed=0)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Linear", "Sigmoid", "Linear"]
    assert model.layers[0].weight.shape == (784, 50) and model.layers[2].weight.shape == (50, 10)
    assert model(np.zeros((3, 784), dtype=np.float32)).shape == (3, 10)
    assert model.config["sizes"] == [784, 50, 10]


def test_mlp_init_sets_the_hidden_layers_only_and_says_so():
    """The output layer is Xavier whatever ``init`` is, a callable included: kept, and
    documented (it was not, and ``init="zeros"`` looked ignored for the last layer)."""
    calls = []

    def halves(shape, rng):
        calls.append(shape)
        return np.full(shape, 0.5)

    model = nn.MLP([3, 4, 5, 2], init=halves, seed=0)
    assert calls == [(3, 4), (4, 5)]
    assert (model.layers[0].weight.numpy() == 0.5).all()
    out = model.layers[-1].weight.numpy()
    np.testing.assert_array_equal(
        out, nn.MLP([3, 4, 5, 2], init="zeros", seed=0).layers[-1].weight.numpy())
    assert 0.2 < out.std() / np.sqrt(2 / (5 + 2)) < 5 and out.std() > 0       # Xavier's scale
    doc = " ".join(nn.MLP.__doc__.split())
    assert "hidden layers only: the output layer is always Xavier" in doc


def test_mlp_with_dropout_and_errors():
    model = nn.MLP([4, 8, 8, 2], activation="relu", dropout=0.2, seed=0)
    kinds = [type(m).__name__ for m in model.layers]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    with pytest.raises(ValueError, match="unknown activation"):
        nn.MLP([2, 2], activation="swish")
    with pytest.raises(ValueError, match="sizes"):
        nn.MLP([2])


def test_mlp_learns_xor_with_gradient_descent():
    """The classic from-scratch experiment in miniature: full-batch gradient descent."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = nn.MLP([2, 8, 2], activation="tanh", seed=1)
    loss_fn = nn.CrossEntropyLoss()
    opt = nn.optim.SGD(model, lr=0.5, momentum=0.9)
    for _ in range(300):
        loss = loss_fn(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert nn.accuracy(model(X), y) == 1.0


def test_an_mlp_seed_must_be_an_integer():
    """seed=True was taken as the seed 1."""
    with pytest.raises(TypeError, match="MLP: seed must be an integer or None, got True"):
        nn.MLP([2, 3], seed=True)
    nn.MLP([2, 3], seed=np.int64(3))
