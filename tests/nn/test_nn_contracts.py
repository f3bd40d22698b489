"""nn's contracts with careless callers: binary accuracy never guesses, class labels are
integers, parameters cannot silently drop out of a module, layer sizes are integers, a
shared module has one name, optimizers and schedules validate everything up front, take
parameter groups and resume exactly from their state_dict."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import optim
from handgrad.nn.module import Parameter

# --- metrics ----------------------------------------------------------------------------------

def test_binary_accuracy_with_one_logit_or_one_probability_per_example():
    y = np.array([1, 0, 1, 0])
    logits = np.array([2.0, -1.0, 0.5, -3.0])
    assert nn.accuracy(logits, y) == 1.0                        # outside [0, 1]: logits
    assert nn.accuracy(logits[:, None], y) == 1.0               # (N, 1) too
    probs = np.array([0.9, 0.2, 0.6, 0.4])
    with pytest.raises(ValueError, match="could be probabilities or logits; pass threshold= or logits="):
        nn.accuracy(probs, y)                                   # never a guess
    assert nn.accuracy(probs, y, logits=False) == 1.0           # threshold 0.5
    assert nn.accuracy(probs, y, logits=True) == 0.5            # all >= 0: all predicted 1
    assert nn.accuracy(probs, y, threshold=0.7) == 0.75
    with pytest.raises(ValueError, match="binary targets must be 0 or 1"):
        nn.accuracy(logits, np.array([0.5, 0, 1, 0]))
    two_class = np.array([[0.1, 0.9], [0.8, 0.2]])              # probability rows: argmax
    assert nn.accuracy(two_class, np.array([1, 0])) == 1.0


def test_confusion_matrix_and_precision_recall_refuse_non_integer_labels():
    with pytest.raises(ValueError, match=r"confusion_matrix: class labels must be whole numbers, got 2.7"):
        nn.confusion_matrix(np.array([0.0, 2.7]), np.array([0, 2]))
    with pytest.raises(TypeError, match="class labels must be integers, got dtype <U1"):
        nn.confusion_matrix(np.array(["a", "b"]), np.array([0, 1]))
    np.testing.assert_array_equal(nn.confusion_matrix(np.array([0.0, 1.0]), np.array([0, 1])),
                                  np.eye(2, dtype=int))         # whole floats are fine
    with pytest.raises(ValueError, match="precision_recall: class labels must be whole numbers"):
        nn.precision_recall(np.array([0.9, 0.1]), np.array([0.5, 1.0]))


# --- modules ----------------------------------------------------------------------------------

def test_assigning_a_tensor_over_a_parameter_is_a_type_error_and_keeps_it_registered():
    lin = nn.Linear(3, 2, rng=np.random.default_rng(0))
    weight = lin.weight
    for value in (engine.Tensor(np.zeros((3, 2), np.float32)), np.zeros((3, 2)), 0.0):
        with pytest.raises(TypeError, match=r"cannot assign a \w+ to Linear.weight, which holds a Parameter"):
            lin.weight = value
    assert lin.weight is weight and lin.parameters()[0] is weight
    lin.weight = Parameter(np.ones((3, 2), np.float32))        # a new Parameter is fine
    assert lin.parameters()[0] is lin.weight
    with engine.no_grad():
        w = lin.weight
        w -= 0.5                                                # in place: same object
        lin.weight = w
    assert lin.parameters()[0] is w


@pytest.mark.parametrize("sizes", [[4, 2.7, 3], [4, "2", 3], [4, True, 3], [4, 0, 3], [4, 3.0, 2]])
def test_layer_sizes_must_be_positive_integers(sizes):
    with pytest.raises(ValueError, match="MLP: sizes must be positive integers"):
        nn.MLP(sizes)
    assert nn.MLP([4, np.int64(3), 2]).config["sizes"] == [4, 3, 2]


def test_a_shared_module_has_one_name_in_state_dicts_and_in_the_graph():
    shared = nn.Linear(2, 2, rng=np.random.default_rng(0))

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = nn.Sequential(shared, nn.Tanh())
            self.second = nn.Sequential(nn.Tanh(), shared)

        def forward(self, x):
            return self.second(self.first(x))

    model = Twice()
    assert list(model.state_dict()) == ["first.0.weight", "first.0.bias"]
    out = model(engine.Tensor(np.ones((1, 2), np.float32)))
    scopes = [t.node.scope for t in engine.topological_order([out]) if t.node is not None
              and t.node.op.name == "linear"]
    assert scopes == ["first.0", "first.0"]                     # called through both parents


def test_two_roots_sharing_a_module_each_name_it_in_their_own_tree(monkeypatch):
    """A module shared by two models is named in the tree of the root being run, however
    the calls alternate; roots with trees of their own (a model and its loss, called in
    turn at every step) name their trees once, not at every call."""
    shared = nn.Linear(2, 2, rng=np.random.default_rng(0))
    a = nn.Sequential(shared, nn.Tanh())
    b = nn.Sequential(nn.Tanh(), nn.Tanh(), shared)
    x = engine.Tensor(np.ones((1, 2), np.float32))

    def linear_scope(out):
        return [t.node.scope for t in engine.topological_order([out])
                if t.node is not None and t.node.op.name == "linear"]
    for _ in range(2):
        assert linear_scope(a(x)) == ["0"]
        assert linear_scope(b(x)) == ["2"]

    calls = []
    original = nn.Module._resolve_paths
    monkeypatch.setattr(nn.Module, "_resolve_paths",
                        lambda self: calls.append(type(self).__name__) or original(self))
    model, loss_fn = nn.MLP([2, 3, 2], seed=0), nn.CrossEntropyLoss()
    for _ in range(5):
        loss_fn(model(x), np.array([1]))
    assert calls == ["MLP", "CrossEntropyLoss"]


# --- optimizers ---------------------------------------------------------------------------------

def test_a_single_parameter_is_a_type_error_not_iterated_by_rows():
    p = Parameter(np.zeros((3, 2)))
    with pytest.raises(TypeError, match=r"got a single tensor; pass a list \(\[p\]\) or a Module"):
        optim.SGD(p, lr=0.1)
    with pytest.raises(TypeError, match="must be tensors that require grad"):
        optim.SGD([np.zeros(2)], lr=0.1)


def test_duplicate_parameters_are_kept_once_with_a_warning():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    with pytest.warns(UserWarning, match=r"2 parameter\(s\) given more than once"):
        opt = optim.SGD([p, q, p, p], lr=0.1)
    assert opt.params == [p, q]


@pytest.mark.parametrize("make, message", [
    (lambda ps: optim.SGD(ps, lr=float("nan")), "learning rate must be finite and >= 0, got nan"),
    (lambda ps: optim.SGD(ps, lr=float("inf")), "learning rate must be finite"),
    (lambda ps: optim.SGD(ps, lr=-1), "learning rate must be finite and >= 0, got -1"),
    (lambda ps: optim.SGD(ps, lr=0.1, momentum=1.5), r"momentum must be a finite number in \[0, 1\), got 1.5"),
    (lambda ps: optim.SGD(ps, lr=0.1, dampening=2), "dampening"),
    (lambda ps: optim.SGD(ps, lr=0.1, weight_decay=float("inf")), "weight_decay must be a finite"),
    (lambda ps: optim.Adam(ps, betas=(0.9, 1.0)), "beta2"),
    (lambda ps: optim.Adam(ps, betas=(0.9,)), "betas must be a pair"),
    (lambda ps: optim.Adam(ps, eps=0.0), r"eps must be a finite number in \(0, inf\]"),
    (lambda ps: optim.RMSprop(ps, eps=float("nan")), "eps"),
    (lambda ps: optim.SGD([{"params": ps, "lr": -0.5}], lr=0.1), "learning rate"),
    (lambda ps: optim.SGD([{"params": ps, "betas": (0.9, 0.9)}], lr=0.1), "unknown hyperparameters"),
])
def test_hyperparameters_are_validated_with_the_value_named(make, message):
    with pytest.raises(ValueError, match=message):
        make([Parameter(np.zeros(2))])


def test_a_learning_rate_of_zero_is_allowed():
    p = Parameter(np.ones(2))
    opt = optim.SGD([p], lr=0.0)
    p.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(p.data, [1.0, 1.0])


@pytest.mark.parametrize("make, message", [
    (lambda o: optim.StepLR(o, step_size=0), "step_size must be a positive integer, got 0"),
    (lambda o: optim.StepLR(o, step_size=2.5), "step_size must be a positive integer, got 2.5"),
    (lambda o: optim.StepLR(o, step_size=2, gamma=float("nan")), "gamma"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=0), "T_max must be a positive integer"),
    (lambda o: optim.LinearWarmup(o, warmup_steps=1.5), "warmup_steps must be a positive integer"),
])
def test_schedules_validate_their_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make(optim.SGD([Parameter(np.zeros(2))], lr=0.1))


def test_clip_grad_norm_validates_before_touching_gradients():
    p = Parameter(np.zeros(2))
    p.grad = np.array([3.0, 4.0])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="clip_grad_norm_: max_norm"):
            optim.clip_grad_norm_([p], bad)
        np.testing.assert_array_equal(p.grad, [3.0, 4.0])


def test_parameter_groups_have_their_own_learning_rate_and_weight_decay():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 1.0}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, 1 - 0.1)
    np.testing.assert_allclose(b.data, 1 - 0.5 * (1 + 1.0))     # g + wd w
    schedule = optim.StepLR(opt, step_size=1, gamma=0.1)
    schedule.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.05])


CASES = [
    (optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.2)),
    (optim.Adam, dict(lr=0.05)),
    (optim.AdamW, dict(lr=0.05)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (optim.Adagrad, dict(lr=0.1, initial_accumulator_value=0.1)),
    (optim.Adadelta, dict(lr=1.0)),
]


def _run(model, opt, steps, rng):
    for _ in range(steps):
        x = rng.standard_normal((5, 3)).astype(np.float32)
        loss = (model(x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("cls, kwargs", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_state_dict_resumes_an_optimizer_bit_for_bit(cls, kwargs):
    straight = nn.MLP([3, 4, 2], seed=0)
    opt = cls(straight, **kwargs)
    _run(straight, opt, 7, np.random.default_rng(1))

    first = nn.MLP([3, 4, 2], seed=0)
    opt1 = cls(first, **kwargs)
    rng = np.random.default_rng(1)
    _run(first, opt1, 4, rng)
    state, params = opt1.state_dict(), first.state_dict()
    resumed = nn.MLP([3, 4, 2], seed=5)                         # other weights, fresh state
    resumed.load_state_dict(params)
    opt2 = cls(resumed, **kwargs)
    opt2.load_state_dict(state)
    _run(resumed, opt2, 3, rng)
    for k, v in straight.state_dict().items():
        assert np.array_equal(v, resumed.state_dict()[k]), k


def test_a_bad_optimizer_state_changes_nothing():
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.05)
    _run(model, opt, 2, np.random.default_rng(0))
    good = opt.state_dict()
    bad = opt.state_dict()
    bad["state"][1]["m"] = np.zeros(7, np.float32)
    before = {k: {kk: np.array(vv, copy=True) for kk, vv in v.items()} for k, v in opt.state.items()}
    with pytest.raises(ValueError, match=r"state 'm' of parameter 1 has shape \(7,\)"):
        opt.load_state_dict(bad)
    for k, v in opt.state.items():
        for kk, vv in v.items():
            assert np.array_equal(vv, before[k][kk])
    with pytest.raises(ValueError, match="the state is for 'Adam', not SGD"):
        optim.SGD(model, lr=0.1).load_state_dict(good)


def test_a_schedule_resumes_where_it_left_off():
    def make():
        opt = optim.SGD([Parameter(np.zeros(1))], lr=1.0)
        return opt, optim.LinearWarmup(opt, 3, then=optim.CosineAnnealingLR(opt, T_max=5))

    opt, schedule = make()
    lrs = [schedule.step() for _ in range(6)]
    opt2, schedule2 = make()
    for _ in range(2):
        schedule2.step()
    saved = schedule2.state_dict()
    opt3, schedule3 = make()
    schedule3.load_state_dict(saved)
    assert [schedule3.step() for _ in range(4)] == lrs[2:]
    with warnings.catch_warnings():
        with pytest.raises(ValueError, match="malformed state"):
            schedule3.load_state_dict({"type": "LinearWarmup", "t": -1, "base_lrs": [1.0]})


INCOMPLETE = [
    (optim.Adam, {"m"}, r"lacks \['v', 't'\] \(it holds \['m'\]; every non-empty state of Adam "
                        r"holds \['m', 'v', 't'\]\)"),
    (optim.Adam, {"m", "t"}, r"lacks \['v'\]"),
    (optim.AdamW, {"v", "m"}, r"lacks \['t'\]"),
    (optim.Adadelta, {"v"}, r"lacks \['u'\]"),
    (optim.Adadelta, {"u"}, r"lacks \['v'\]"),
    (optim.RMSprop, {"momentum", "mean_g"}, r"lacks \['v'\]"),
]


@pytest.mark.parametrize("cls, keep, message", INCOMPLETE,
                         ids=[f"{c.__name__}-{'+'.join(sorted(k))}" for c, k, _ in INCOMPLETE])
def test_a_parameter_state_missing_part_of_what_its_optimizer_keeps_is_refused(cls, keep, message):
    """A state that holds some of the keys its optimizer's first update creates together
    (Adam's 'm' without 'v' and 't') failed later, in step(), with a bare KeyError: it is an
    error naming what is missing, before anything changes. An empty state is fine."""
    kwargs = {"momentum": 0.5, "centered": True} if cls is optim.RMSprop else {}
    model = nn.MLP([3, 4, 2], seed=0)
    opt = cls(model, lr=0.05, **kwargs)
    _run(model, opt, 2, np.random.default_rng(0))
    bad = opt.state_dict()
    bad["state"][1] = {k: v for k, v in bad["state"][1].items() if k in keep}
    before = opt.state_dict()
    with pytest.raises(ValueError, match=rf"{cls.__name__}\.load_state_dict: the state of "
                                         rf"parameter 1 {message}"):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    for i, state in before["state"].items():
        assert set(after["state"][i]) == set(state)
        for key, value in state.items():
            assert np.array_equal(after["state"][i][key], value), (i, key)
    bad["state"][1] = {}                                            # empty: as before a step
    opt.load_state_dict(bad)
    _run(model, opt, 1, np.random.default_rng(1))


def test_a_state_entry_of_the_wrong_kind_is_refused():
    """Adam's step count must be an integer, its moments arrays (an array 't' made the bias
    correction an array; an int 'm' was never updated in place)."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.05)
    _run(model, opt, 2, np.random.default_rng(0))
    for key, value, message in [("t", np.ones(4, np.float32), r"state 't' of parameter 1 is .*, not a step count"),
                                ("t", -1, r"not a step count"),
                                ("t", True, r"not a step count"),
                                ("m", 3, r"state 'm' of parameter 1 is 3, not an array")]:
        bad = opt.state_dict()
        bad["state"][1][key] = value
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(bad)


def test_an_rmsprop_state_saved_before_momentum_was_switched_on_still_loads():
    """RMSprop makes 'mean_g' and 'momentum' at the first update that needs them: a state
    with 'v' alone is its own after momentum or centering is switched on mid-training."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.RMSprop(model, lr=0.01)
    _run(model, opt, 2, np.random.default_rng(0))
    for group in opt.param_groups:
        group.update(momentum=0.5, centered=True)
    state = opt.state_dict()
    assert set(state["state"][0]) == {"v"}
    optim.RMSprop(nn.MLP([3, 4, 2], seed=0), lr=0.01, momentum=0.5, centered=True).load_state_dict(state)
