"""Checkpoints: round trip, architecture rebuilt, no pickle, atomic writes, clear errors."""
from __future__ import annotations

import os

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import serialization


def test_round_trip_rebuilds_the_model_from_the_file(tmp_path):
    model = nn.MLP([4, 6, 3], activation="tanh", dropout=0.1, seed=3)
    path = nn.save(model, tmp_path / "m.npz", metadata={"dataset": "xor", "epochs": 5})
    loaded = nn.load(path)
    assert type(loaded) is nn.MLP and loaded.config == model.config
    for (na, a), (nb, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert na == nb and a.dtype == b.dtype and np.array_equal(a.data, b.data)
    assert loaded.checkpoint_metadata == {"dataset": "xor", "epochs": 5}
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_array_equal(nn.predict(model, x), nn.predict(loaded, x))


def test_the_file_is_a_plain_npz_without_pickles(tmp_path):
    path = nn.save(nn.MLP([2, 3, 2], seed=0), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as data:      # would raise if anything were pickled
        assert set(data.files) == {"layers.0.weight", "layers.0.bias", "layers.2.weight",
                                   "layers.2.bias", serialization.META_KEY}


def test_load_into_an_existing_model_and_architecture_mismatch(tmp_path):
    path = nn.save(nn.MLP([2, 3, 2], seed=0), tmp_path / "m.npz")
    target = nn.MLP([2, 3, 2], seed=1)
    nn.load(path, target)
    np.testing.assert_array_equal(target.layers[0].weight.data, nn.MLP([2, 3, 2], seed=0).layers[0].weight.data)
    with pytest.raises(nn.CheckpointError, match="does not match"):
        nn.load(path, nn.MLP([2, 5, 2], seed=0))

    class Custom(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.lin = nn.Linear(2, n)

    with pytest.raises(nn.CheckpointError, match="missing keys"):
        nn.load(path, Custom(3))
    custom_path = nn.save(Custom(3), tmp_path / "c.npz")
    with pytest.raises(nn.CheckpointError, match="cannot be rebuilt"):
        nn.load(custom_path)
    with pytest.raises(nn.CheckpointError, match=r"lin.weight has shape \(2, 4\)"):
        nn.load(custom_path, Custom(4))


def test_no_saved_value_is_changed_by_a_dtype_on_the_way_back(tmp_path, monkeypatch):
    """A float64 array in a float32 MLP was saved as float64 under a float32 config, and
    load rounded it to float32, silently. save refuses such a model (nothing written), and
    load converts an array to its parameter's dtype only when no value changes."""
    path = tmp_path / "m.npz"
    nn.save(nn.MLP([3, 4, 2], seed=0), path)
    before = path.read_bytes()
    model = nn.MLP([3, 4, 2], seed=0)
    model.layers[0].weight.data = np.random.default_rng(1).normal(size=(3, 4))
    with pytest.raises(ValueError, match=r"save: parameter layers\.0\.weight holds float64 "
                                         r"values but the model's config says dtype float32"):
        nn.save(model, path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["m.npz"]
    # A file written before the check (the same mismatch) is refused, not rounded.
    monkeypatch.setattr(serialization, "_check_dtypes_match_config", lambda *a: None)
    old = nn.save(model, tmp_path / "old.npz")
    monkeypatch.undo()
    with pytest.raises(nn.CheckpointError, match=r"layers\.0\.weight is stored as float64 but "
                                                 r"the parameter is float32.*Nothing was loaded"):
        nn.load(old)
    target = nn.MLP([3, 4, 2], seed=5)
    kept = target.state_dict()
    with pytest.raises(nn.CheckpointError, match="stored as float64"):
        nn.load(old, target)
    assert all(np.array_equal(kept[k], v) for k, v in target.state_dict().items())

    class Custom(nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.lin = nn.Linear(3, 2, dtype=dtype)

    wide = Custom(np.float64)
    wide.lin.weight.data = np.random.default_rng(2).normal(size=(3, 2))
    with pytest.raises(nn.CheckpointError, match="lin.weight is stored as float64 but the "
                                                 "parameter is float32"):
        nn.load(nn.save(wide, tmp_path / "c.npz"), Custom(np.float32))
    # An exact conversion is no change: float32 values into float64 parameters, or float64
    # values that float32 holds exactly.
    narrow = Custom(np.float32)
    loaded = nn.load(nn.save(narrow, tmp_path / "n.npz"), Custom(np.float64))
    assert loaded.lin.weight.dtype == np.float64
    assert np.array_equal(loaded.lin.weight.data, narrow.lin.weight.data)
    wide.lin.weight.data = narrow.lin.weight.data.astype(np.float64)
    back = nn.load(nn.save(wide, tmp_path / "e.npz"), Custom(np.float32))
    assert np.array_equal(back.lin.weight.data, narrow.lin.weight.data)


def test_save_refuses_a_config_that_load_would_refuse_and_writes_nothing(tmp_path):
    """MLP(bias=1) was saved with bias=1 in its config, replacing a good checkpoint with one
    no load could read. The layers now record True; save makes load's config check."""
    path = tmp_path / "m.npz"
    nn.save(nn.MLP([3, 4, 2], seed=0), path)
    before = path.read_bytes()
    nn.load(nn.save(nn.MLP([3, 4, 2], bias=1, seed=0), tmp_path / "b.npz"))   # loadable
    model = nn.MLP([3, 4, 2], seed=0)
    model.config["bias"] = 1                     # a config edited by hand
    with pytest.raises(ValueError, match=r"save: .*invalid MLP config .*'bias': 1.*load would "
                                         r"refuse the file\); nothing was written"):
        nn.save(model, path)
    model.config.update(bias=True, sizes=[3, 5, 2])          # does not fit the parameters
    with pytest.raises(ValueError, match=r"save: .*implies parameters"):
        nn.save(model, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["b.npz", "m.npz"]


def _set_slope(model):
    for layer in model.layers:
        if isinstance(layer, nn.layers.LeakyReLU):
            layer.negative_slope = 0.3


def _set_approximate(model):
    model.layers[1].approximate = "none"


def _replace_activation(model):
    setattr(model.layers, "1", nn.layers.Tanh())


def _set_dropout(model):
    model.layers[2].p = 0.5


@pytest.mark.parametrize(("activation", "dropout", "change", "module"), [
    ("leaky_relu", 0.0, _set_slope, "layers.1"), ("gelu", 0.0, _set_approximate, "layers.1"),
    ("relu", 0.0, _replace_activation, "layers.1"), ("relu", 0.1, _set_dropout, "layers.2"),
])
def test_save_refuses_an_mlp_whose_modules_are_no_longer_what_its_config_builds(
        tmp_path, activation, dropout, change, module):
    """load rebuilds an MLP from its config: a slope set to 0.3 came back 0.01, a layer
    replaced by Tanh came back ReLU, a dropout's p 0.5 came back 0.1, each predicting
    something else with no error."""
    path = tmp_path / "m.npz"
    nn.save(nn.MLP([2, 4, 4, 3], seed=0), path)
    before = path.read_bytes()
    model = nn.MLP([2, 4, 4, 3], activation=activation, dropout=dropout, seed=0)
    nn.load(nn.save(model, tmp_path / "as_built.npz"))      # as built: saved and loaded
    change(model)
    with pytest.raises(ValueError, match=rf"save: module {module} is not what the MLP's config "
                                         rf"builds .* nothing was written"):
        nn.save(model, path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("name", ["allow_pickle", "file"])
def test_a_parameter_named_like_a_savez_argument_is_saved(tmp_path, name):
    """np.savez(archive, **arrays) took a parameter named allow_pickle as its own argument
    (left out of the file, which load then refused) and one named file as a TypeError."""
    class Scaler(nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, name, nn.Parameter(np.array([2.0], np.float32)))

        def forward(self, x):
            return x * getattr(self, name)

    model = Scaler()
    path = nn.save(model, tmp_path / "m.npz")
    other = Scaler()
    getattr(other, name).data[...] = 5.0
    nn.load(path, other)
    assert getattr(other, name).numpy().tolist() == [2.0]


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    nn.save(nn.MLP([2, 3, 2], seed=0), path)
    before = path.read_bytes()

    def broken_write(f, arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(serialization, "_write_npz", broken_write)
    with pytest.raises(OSError, match="disk full"):
        nn.save(nn.MLP([2, 3, 2], seed=1), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.npz"]          # no temporary file left behind


def test_unreadable_files_are_reported_with_their_path(tmp_path):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(nn.CheckpointError, match="garbage.npz"):
        nn.load(bad)
    plain = tmp_path / "plain.npz"
    np.savez(plain, w=np.zeros(3))
    with pytest.raises(nn.CheckpointError, match="not a handgrad checkpoint"):
        nn.load(plain)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        nn.load(tmp_path / "missing.npz")
    truncated = tmp_path / "cut.npz"
    good = nn.save(nn.MLP([2, 3, 2], seed=0), tmp_path / "good.npz").read_bytes()
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(nn.CheckpointError, match="cut.npz"):
        nn.load(truncated)


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(TypeError, match="JSON"):
        nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata={"x": object()})
    assert not list(tmp_path.iterdir())


def test_a_resumed_run_is_exact_with_numpy_number_hyperparameters(tmp_path):
    """lr = np.logspace(...)[1] is an np.float64: the update computed lr * buf in float64,
    the checkpoint gave lr back as a Python float and the resumed run computed in float32
    (6e-8 apart after 3 epochs). Groups keep Python numbers."""
    r = np.random.default_rng(1)
    X, y = r.normal(size=(128, 4)).astype(np.float32), r.integers(0, 3, 128)
    lr = np.logspace(-2, -1, 3)[1]

    def fresh():
        m = nn.MLP([4, 8, 3], seed=0)
        return m, nn.optim.SGD(m, lr=lr, momentum=np.float32(0.9))

    m, o = fresh()
    nn.fit(m, nn.CrossEntropyLoss(), o, (X, y), epochs=4, verbose=0, seed=0)
    m1, o1 = fresh()
    h = nn.fit(m1, nn.CrossEntropyLoss(), o1, (X, y), epochs=2, verbose=0, seed=0)
    nn.save(m1, tmp_path / "run.npz", optimizer=o1)
    m2, o2 = fresh()
    nn.load(tmp_path / "run.npz", m2, optimizer=o2)
    nn.fit(m2, nn.CrossEntropyLoss(), o2, (X, y), epochs=4, verbose=0, seed=0,
           initial_epoch=2, history=h)
    for a, b in zip(m.parameters(), m2.parameters()):
        np.testing.assert_array_equal(a.numpy(copy=True), b.numpy(copy=True))
    assert type(o2.param_groups[0]["lr"]) is float and type(o.param_groups[0]["momentum"]) is float


def test_a_resumed_run_is_exact_with_a_numpy_rate_set_in_a_group_by_hand(tmp_path):
    """group["lr"] = 0.1 * np.exp(-0.1 * e), a schedule of one's own (the way Optimizer.lr
    names for groups apart) is an np.float64: its updates computed in float64, the resumed
    run's in float32 (6e-8 apart). A group keeps the Python number, set by item too."""
    r = np.random.default_rng(1)
    X, y = r.normal(size=(64, 4)).astype(np.float32), r.integers(0, 3, 64)

    def run(m, o, epochs):
        for e in epochs:
            for group in o.param_groups:
                group["lr"] = 0.1 * np.exp(-0.1 * e)
            loss = nn.CrossEntropyLoss()(m(engine.Tensor(X)), y)
            o.zero_grad()
            loss.backward()
            o.step()

    def fresh():
        m = nn.MLP([4, 8, 3], seed=0)
        return m, nn.optim.SGD(m, lr=0.1, momentum=0.9)

    m, o = fresh()
    run(m, o, range(8))
    assert type(o.param_groups[0]["lr"]) is float
    m1, o1 = fresh()
    run(m1, o1, range(4))
    nn.save(m1, tmp_path / "run.npz", optimizer=o1)
    m2, o2 = fresh()
    nn.load(tmp_path / "run.npz", m2, optimizer=o2)
    run(m2, o2, range(4, 8))
    for a, b in zip(m.parameters(), m2.parameters(), strict=True):
        np.testing.assert_array_equal(a.numpy(copy=True), b.numpy(copy=True))
    group = o.param_groups[0]
    group.update(momentum=np.float32(0.5))
    group.setdefault("dampening", np.float64(0.0))
    assert type(group["momentum"]) is float and isinstance(group, dict)


def _adam_state_of_1e5(tmp_path):
    m32 = nn.Linear(2, 1, dtype=np.float32)
    opt32 = nn.optim.Adam(m32, lr=1e-3)
    for p in m32.parameters():
        p.grad = np.full(p.shape, 1e4, np.float32)
    opt32.step()
    for p in m32.parameters():                  # weights a float16 model holds exactly
        p.data = np.full(p.shape, 0.5, np.float32)
    return opt32.state_dict(), nn.save(m32, tmp_path / "ck.npz", optimizer=opt32)


def test_optimizer_state_a_float16_model_cannot_hold_is_refused_before_anything_changes(tmp_path):
    """Adam's v of 1e5 from a float32 run became Inf in a float16 optimizer, with no error,
    and the next step left the weights where they were (m / Inf = 0)."""
    state, path = _adam_state_of_1e5(tmp_path)
    m16 = nn.Linear(2, 1, dtype=np.float16)
    opt16 = nn.optim.Adam(m16, lr=1e-3)
    with pytest.raises(ValueError, match=r"Adam.load_state_dict: state 'v' of parameter 0 holds "
                                         r"100000.0.*float16 \(it would become Inf\)"):
        opt16.load_state_dict(state)
    assert opt16.state[id(m16.weight)] == {} and opt16.steps == 0
    weights = [p.numpy(copy=True) for p in m16.parameters()]
    with pytest.raises(nn.CheckpointError, match="parameter 0's 'v' is stored as float32 but the "
                                                 "parameter is float16, which cannot hold"):
        nn.load(path, m16, opt16, check_finite=True)
    for p, w in zip(m16.parameters(), weights, strict=True):
        np.testing.assert_array_equal(p.numpy(copy=True), w)


def test_a_save_into_a_missing_directory_says_it_is_missing(tmp_path):
    """It said "cannot write in the directory" (a PermissionError) for one that is not there."""
    model = nn.MLP([2, 2], seed=0)
    with pytest.raises(FileNotFoundError, match=f"the directory {tmp_path}/no/such does not exist"):
        nn.save(model, tmp_path / "no" / "such" / "m.npz")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=f"{tmp_path}/file is not a directory"):
        nn.save(model, tmp_path / "file" / "m.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_load_into_a_model_of_the_same_architecture_made_with_another_initializer(tmp_path):
    """The whole config was compared, initializer included: a checkpoint of an
    xavier_uniform MLP would not load into MLP(sizes), "he" not into "kaiming", and a model
    made with a callable init not into itself after a save and load."""
    path = nn.save(nn.MLP([3, 5, 2], init="xavier_uniform", seed=1), tmp_path / "m.npz")
    for model in (nn.MLP([3, 5, 2], seed=0), nn.MLP([3, 5, 2], init="kaiming", seed=0),
                  nn.MLP([3, 5, 2], init=lambda shape, rng: rng.normal(size=shape), seed=0)):
        nn.load(path, model)
        np.testing.assert_array_equal(model.layers[0].weight.numpy(copy=True),
                                      nn.load(path).layers[0].weight.numpy(copy=True))
    with pytest.raises(nn.CheckpointError, match="does not match the model"):
        nn.load(path, nn.MLP([3, 5, 2], activation="tanh", seed=0))


def test_rebuilding_a_model_from_a_file_leaves_the_global_generator_where_it_was(tmp_path):
    """nn.load(path) drew throw-away initial weights from nn.init's global generator, so the
    layers built after manual_seed(0) and a load were not those built after manual_seed(0)."""
    path = nn.save(nn.MLP([3, 4, 2], dropout=0.5, seed=0), tmp_path / "m.npz")
    nn.init.manual_seed(0)
    expected = nn.Linear(3, 3).weight.numpy(copy=True)
    nn.init.manual_seed(0)
    loaded = nn.load(path)
    np.testing.assert_array_equal(nn.Linear(3, 3).weight.numpy(copy=True), expected)
    dropout = [m for m in loaded.modules() if isinstance(m, nn.Dropout)][0]
    assert dropout.rng is nn.init.default_rng()          # masks from the global one, as before


def test_a_users_own_class_called_mlp_saves_and_loads(tmp_path):
    """A user's class named MLP was stored as "MLP", read back as handgrad's MLP, and its
    own config refused ("invalid MLP config"): the file could not be loaded at all."""
    class MLP(nn.Module):                              # the user's, not nn.MLP
        def __init__(self, hidden: int = 8):
            super().__init__()
            self.config = {"hidden": hidden}
            self.fc = nn.Linear(4, hidden)

        def forward(self, x):
            return self.fc(x)
    model = MLP()
    path = nn.save(model, tmp_path / "user.npz")
    loaded = nn.load(path, MLP())
    assert np.array_equal(loaded.fc.weight.data, model.fc.weight.data)
    with pytest.raises(nn.CheckpointError, match=r"MLP cannot be rebuilt from the file; create "
                                                 r"the model"):
        nn.load(path)
    assert nn.load(nn.save(nn.MLP([2, 3], seed=0), tmp_path / "ours.npz")).config["sizes"] == [2, 3]
