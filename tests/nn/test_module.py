"""Module, Parameter and Sequential: registration, traversal, modes and state dicts."""
from __future__ import annotations

import copy
import pickle
import threading

import numpy as np
import pytest

from handgrad import engine, nn


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = nn.Linear(3, 4, rng=np.random.default_rng(0))
        self.act = nn.Tanh()
        self.second = nn.Linear(4, 2, rng=np.random.default_rng(1))
        self.scale = nn.Parameter(np.ones(2, dtype=np.float32))
        self.not_a_param = np.zeros(3)            # plain arrays are not registered

    def forward(self, x):
        return self.second(self.act(self.first(x))) * self.scale


def test_parameters_are_registered_on_assignment_in_order():
    m = TwoLayer()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "second.weight", "second.bias"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in m.parameters())
    assert m.num_parameters() == 2 + 3 * 4 + 4 + 4 * 2 + 2


def test_reassigning_and_deleting_attributes_updates_the_registry():
    m = TwoLayer()
    m.scale = None
    assert "scale" not in dict(m.named_parameters())
    del m.second
    assert [n for n, _ in m.named_modules()] == ["", "first", "act"]


def test_shared_parameters_are_listed_once():
    m = nn.Module()
    lin = nn.Linear(2, 2)
    m.a, m.b = lin, lin
    assert len(m.parameters()) == 2


def test_module_must_call_super_init():
    class Forgot(nn.Module):
        def __init__(self):
            self.x = 1

    with pytest.raises(AttributeError, match="super"):
        Forgot()


def test_zero_grad_train_eval():
    m = TwoLayer()
    m(np.ones((5, 3), dtype=np.float32)).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    m.eval()
    assert not any(mod.training for mod in m.modules())
    m.train()
    assert all(mod.training for mod in m.modules())


@pytest.mark.parametrize("mode", ["no", 0, 1, None, np.array([True])])
def test_train_takes_true_or_false_only(mode):
    """train(mode) used bool(mode): train("no") switched training on. As train_mode, a
    non-bool is a TypeError, and nothing changes."""
    m = nn.MLP([2, 3, 2], dropout=0.5)
    m.eval()
    with pytest.raises(TypeError, match=r"^train: mode must be True or False"):
        m.train(mode)
    with pytest.raises(TypeError, match=r"^training: mode must be True or False"):
        m.layers[2].training = mode
    assert not any(mod.training for mod in m.modules())
    assert all(mod.training for mod in m.train(np.bool_(True)).modules())
    m.layers[2].training = np.False_
    assert m.layers[2].training is False and m.layers[0].training is True


def test_state_dict_round_trip_and_copies():
    a, b = TwoLayer(), TwoLayer()
    b.first.weight.data[...] = 7
    state = a.state_dict()
    state["first.weight"][...] = -1                # a copy: the model is unchanged
    assert not np.any(a.first.weight.data == -1)
    b.load_state_dict(a.state_dict())
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and np.array_equal(pa.data, pb.data)
    assert b.first.weight.data.dtype == np.float32


def test_load_state_dict_errors_name_the_keys_and_shapes_and_change_nothing():
    m = TwoLayer()
    before = m.state_dict()
    state = m.state_dict()
    del state["second.bias"]
    state["extra.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['second.bias'\].*unexpected keys \['extra.weight'\]"):
        m.load_state_dict(state)
    bad = m.state_dict()
    bad["first.weight"] = np.zeros((4, 3))
    bad["first.bias"] = np.full(4, 9.0)
    with pytest.raises(ValueError, match=r"first.weight has shape \(3, 4\) in the model but \(4, 3\)"):
        m.load_state_dict(bad)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    m.load_state_dict({"first.bias": np.ones(4)}, strict=False)
    assert np.array_equal(m.first.bias.data, np.ones(4))


@pytest.mark.parametrize("read_only", [
    lambda a: np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape),
    lambda a: np.broadcast_to(a[:1], a.shape),
], ids=["frombuffer", "broadcast_to"])
def test_load_state_dict_into_a_read_only_parameter_changes_nothing(read_only):
    # The write into the last parameter raised numpy's "assignment destination is
    # read-only" after the parameters before it were overwritten.
    m = TwoLayer()
    m.second.bias.data = read_only(m.second.bias.data.copy())
    before = m.state_dict()
    new = {k: v + 1 for k, v in before.items()}
    with pytest.raises(ValueError, match=r"second\.bias \(shape \(2,\)\) is read-only.*"
                                         r"Nothing was loaded"):
        m.load_state_dict(new)
    for k, v in m.state_dict().items():
        assert np.array_equal(v, before[k]), k
    m.load_state_dict({k: v for k, v in new.items() if k != "second.bias"}, strict=False)
    assert np.array_equal(m.first.weight.data, new["first.weight"])


def test_load_state_dict_into_a_parameter_a_live_graph_locked_writes_it():
    # Read-only only because a graph saved it while its array is held: the load unlocks
    # it (a backward through that graph then raises), so it is not refused.
    m = TwoLayer()
    held = m.first.weight.data
    out = m(engine.Tensor(np.ones((2, 3), np.float32)))
    assert not held.flags.writeable
    new = {k: v + 1 for k, v in m.state_dict().items()}
    m.load_state_dict(new)
    assert np.array_equal(m.first.weight.data, new["first.weight"])
    with pytest.raises(RuntimeError):
        out.sum().backward()


def test_sequential_indexing_and_errors():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and isinstance(seq[-1], nn.Linear)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq(np.ones((4, 2), dtype=np.float32)).shape == (4, 1)
    with pytest.raises(TypeError, match="item 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)


def test_a_slice_of_a_sequential_is_a_sequential_of_the_same_modules():
    """seq[0:2] was a list, so model.layers[:2](x) (the hidden layers' output) failed."""
    seq = nn.Sequential(nn.Linear(2, 3, rng=np.random.default_rng(0)), nn.ReLU(),
                        nn.Linear(3, 1, rng=np.random.default_rng(1)))
    head = seq[0:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2
    assert head[0] is seq[0] and head[1] is seq[1] and isinstance(seq[0], nn.Linear)
    x = engine.Tensor(np.ones((4, 2), dtype=np.float32))
    np.testing.assert_array_equal(head(x).numpy(), seq[1](seq[0](x)).numpy())
    np.testing.assert_array_equal(seq[2](head(x)).numpy(), seq(x).numpy())
    tail = seq[1:]
    assert [n for n, _ in tail.named_parameters()] == ["2.weight", "2.bias"]   # torch's names
    assert [type(m) for m in seq[::-1]] == [nn.Linear, nn.ReLU, nn.Linear] and len(seq[5:]) == 0


def test_nodes_are_tagged_with_the_module_that_created_them():
    model = nn.MLP([3, 4, 2], seed=0)
    out = model(np.ones((2, 3), dtype=np.float32))
    assert out.node.scope == "layers.2"
    hidden = out.node.inputs[0]
    assert hidden.node.op.name == "relu" and hidden.node.scope == "layers.1"
    assert hidden.node.inputs[0].node.scope == "layers.0"
    assert engine.current_scope() is None


def test_repr_shows_the_tree():
    text = repr(nn.MLP([3, 4, 2], seed=0))
    assert "(layers): Sequential" in text and "(0): Linear(3→4, bias=True)" in text


def test_attaching_a_module_counts_the_tree_version_under_a_lock(monkeypatch):
    """The tree version (what a root's names and a compiled step's module lists are cached
    on) was `+= 1` on a global with no lock: two threads attaching modules at once could
    both add 1 to the same value, one change lost to those caches. The lock is replaced by
    one that records the version on entry and exit: the update happens inside it."""
    from handgrad.nn import module as module_
    model = TwoLayer()
    seen = []

    class RecordingLock:
        def __enter__(self):
            seen.append(("enter", module_.tree_version()))

        def __exit__(self, *exc_info):
            seen.append(("exit", module_.tree_version()))

    monkeypatch.setattr(module_, "_TREE_EDITS", RecordingLock(), raising=False)
    before = module_.tree_version()
    model.head = nn.ReLU()
    # the module's own assignment count, then the tree version, each under the lock
    assert seen == [("enter", before), ("exit", before), ("enter", before), ("exit", before + 1)]
    assert module_.tree_version() == before + 1


def test_an_assignment_is_counted_once_it_is_made(monkeypatch):
    """A compiled step keys its plans on the modules' assignment counts and the tree
    version. Counted before the change was made, a capture in another thread could read
    the new count with the old value and file that plan under it, to be replayed after the
    change. The counting lock is replaced by one that looks at the module on entry: the
    assignment (and the new submodule) is already there."""
    from handgrad.nn import module as module_
    model = TwoLayer()
    seen = []

    class LookingLock:
        def __enter__(self):
            seen.append((model.__dict__.get("rate"), "extra" in model._modules))

        def __exit__(self, *exc_info):
            pass

    monkeypatch.setattr(module_, "_TREE_EDITS", LookingLock())
    model.rate = 0.25
    assert seen == [(0.25, False)]
    seen.clear()
    model.extra = nn.ReLU()
    assert seen == [(0.25, True), (0.25, True)]      # the assignment, then the tree version
    seen.clear()
    del model.extra
    assert seen == [(0.25, False), (0.25, False)]


def test_a_module_attached_while_the_root_names_its_tree_is_named_at_the_next_call():
    """A root named its tree and then recorded the version as it was after the walk: a
    module another thread attached during the walk counted as named, and kept no name in
    this root's tree. The walk is made to attach one (as another thread could): the next
    call names the tree again, the new module included."""
    from handgrad.nn import module as module_
    model = nn.Sequential(nn.Linear(2, 2))
    late = nn.Sequential(nn.Linear(2, 2))
    walk = model.named_modules

    def walk_while_another_thread_attaches():
        yield from walk()
        if not hasattr(model, "1"):
            setattr(model, "1", late)          # (a plain Sequential walks its items in place)

    object.__setattr__(model, "named_modules", walk_while_another_thread_attaches)
    x = engine.Tensor(np.ones((1, 2), np.float32))
    model(x)
    assert getattr(model, "1") is late
    object.__delattr__(model, "named_modules")
    out = model(x)
    assert model._paths_for == module_.tree_version()
    assert out.node.scope == "1.0"


# --- train/eval mode per thread ------------------------------------------------------------

def test_eval_mode_holds_in_this_thread_only_and_for_the_block_only():
    model = nn.MLP([2, 4, 2], dropout=0.5, seed=0)
    seen_elsewhere = []
    with model.eval_mode():
        assert not any(m.training for m in model.modules())
        model.train()                              # the flag; the block still wins here
        assert not model.layers[2].training
        with model.layers.train_mode():            # blocks nest
            assert model.layers[2].training and not model.training
        assert not model.layers[2].training
        other = threading.Thread(target=lambda: seen_elsewhere.extend(
            m.training for m in model.modules()))
        other.start()
        other.join()
    assert seen_elsewhere and all(seen_elsewhere)  # another thread: the flags
    assert all(m.training for m in model.modules())
    model.eval()
    with model.train_mode():
        assert model.training
    assert not model.training and model._training is False
    with pytest.raises(TypeError, match="mode must be True or False, got 'no'"):
        model.train_mode("no")


class _Gate(nn.Module):
    """The identity; called in ``monitor``'s thread, it holds that forward open until the
    test lets it go on (so the other thread's forward surely runs in between)."""

    def __init__(self):
        super().__init__()
        object.__setattr__(self, "monitor", None)
        object.__setattr__(self, "inside", threading.Event())
        object.__setattr__(self, "go_on", threading.Event())

    def forward(self, x):
        if threading.current_thread() is self.monitor:
            self.inside.set()
            assert self.go_on.wait(10)
        return x


def test_predict_in_a_monitoring_thread_leaves_the_training_threads_dropout_on():
    """predict used to switch the model to eval for everyone while it ran: the training
    thread's steps in that window ran without dropout (349 of 380 steps in the report)."""
    gate = _Gate()
    model = nn.Sequential(nn.Dropout(0.5, rng=np.random.default_rng(0)), gate)
    x = np.ones((200, 5), dtype=np.float32)
    got = {}
    monitor = threading.Thread(target=lambda: got.update(pred=nn.predict(model, x)))
    object.__setattr__(gate, "monitor", monitor)
    monitor.start()
    try:
        assert gate.inside.wait(10)                # predict is inside the model's forward
        out = model(x).numpy()                     # a training step's forward, meanwhile
    finally:
        gate.go_on.set()
        monitor.join()
    assert model.training and model[0].training
    assert (out == 0).mean() > 0.3 and set(np.unique(out)) == {0.0, 2.0}   # dropout ran
    assert np.array_equal(got["pred"], x)          # the monitor's forward: eval mode


# --- depth ---------------------------------------------------------------------------------

def test_two_thousand_nested_sequentials_work_without_recursion():
    inner = nn.Linear(2, 3, rng=np.random.default_rng(0))
    model = inner
    for _ in range(2000):
        model = nn.Sequential(model, nn.Identity())
    x = np.ones((4, 2), dtype=np.float32)
    out = model(x)
    assert np.array_equal(out.numpy(), inner(x).numpy())
    prefix = ".".join(["0"] * 2000)
    assert out.node.scope == prefix                # the Linear's own name scope
    assert [n for n, _ in model.named_parameters()] == [f"{prefix}.weight", f"{prefix}.bias"]
    assert len(model.parameters()) == 2 and len(list(model.named_modules())) == 4001
    assert list(model.state_dict()) == [f"{prefix}.weight", f"{prefix}.bias"]
    text = repr(model)
    assert text.count("\n") == 2 * 2000 + 2000 and text.endswith("\n)")
    assert " " * 4000 + "(0): Linear(2→3, bias=True)" in text
    twin = copy.deepcopy(model)
    assert np.array_equal(twin(x).numpy(), out.numpy())
    assert twin.parameters()[0] is not inner.weight


def test_deepcopy_of_a_module_keeps_shared_modules_shared_and_copies_the_parameters():
    shared = nn.Linear(2, 2, rng=np.random.default_rng(0))
    model = nn.Sequential(shared, nn.ReLU(), shared, nn.Dropout(0.5, rng=np.random.default_rng(1)))
    model(np.ones((1, 2), dtype=np.float32))       # named: the copy names itself again
    model.eval()
    twin = copy.deepcopy(model)
    assert twin[0] is twin[2] and twin[0] is not shared
    assert twin[0].weight is not shared.weight
    assert np.array_equal(twin[0].weight.numpy(), shared.weight.numpy())
    assert not twin.training and twin[3].rng is not model[3].rng
    assert twin._named_by is None and twin._paths_for is None
    out = twin(np.ones((1, 2), dtype=np.float32))
    assert out.node.scope == "3" and out.node.inputs[0].node.scope == "0"   # named again
    (w,) = engine.inplace(twin[0].weight)
    w[...] = 0
    assert not np.array_equal(twin[0].weight.numpy(), shared.weight.numpy())


def test_a_model_pickles_after_a_forward_pass_and_the_copy_runs_and_trains():
    """The first call names the tree (a weak reference to the root in every module, the
    root's map keyed by id()): pickle refused the weakref. The copy drops those caches."""
    model = nn.MLP([2, 4, 3], dropout=0.25, seed=0)
    x = np.linspace(-1, 1, 10, dtype=np.float32).reshape(5, 2)
    y = np.array([0, 1, 2, 1, 0])
    model(x)                                        # named: _named_by, _paths set
    twin = pickle.loads(pickle.dumps(model))
    assert all(m._named_by is None and m._paths is None for m in twin.modules())
    assert model.layers[0]._named_by is not None    # the original keeps its names
    model.eval(), twin.eval()
    out = twin(x)
    assert np.array_equal(out.numpy(), model(x).numpy())
    assert out.node.scope == "layers.3"             # the copy names its own tree
    for m in (model, twin):
        m.train()
        opt = nn.optim.SGD(m.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            nn.CrossEntropyLoss()(m(x), y).backward()
            opt.step()
    assert all(np.array_equal(a, b) for a, b in
               zip(model.state_dict().values(), twin.state_dict().values(), strict=True))


@pytest.mark.parametrize("check_finite", [False, True])
def test_a_value_beyond_the_parameters_dtype_is_refused_not_loaded_as_inf(check_finite):
    model = nn.MLP([2, 3], seed=0)
    state = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    state["layers.0.weight"][0, 0] = 1e300                    # float32 holds at most ~3.4e38
    before = [p.numpy(copy=True) for p in model.parameters()]
    with pytest.raises(ValueError, match=r"layers.0.weight holds 1e\+300.* float32 .*Nothing was loaded"):
        model.load_state_dict(state, check_finite=check_finite)
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before, strict=True))
    state["layers.0.weight"][0, 0] = 0.25                     # in range: loaded, rounded to float32
    model.load_state_dict(state, check_finite=check_finite)
    assert model.layers[0].weight.numpy()[0, 0] == np.float32(0.25)


def test_a_shared_module_keeps_the_name_of_the_model_its_thread_runs():
    """A Linear shared by two models: model1's "1", model2's "1.0". Thread A runs model1
    and pauses just before the shared layer while the main thread calls model2 once (which
    names its tree). The layer's name used to be one attribute, rewritten by model2: A's
    node was tagged "1.0". Name scopes are per thread, so it is model1's "1"."""
    inside, go_on = threading.Event(), threading.Event()

    class Pause(nn.Module):
        def forward(self, x):
            if threading.current_thread().name == "A":
                inside.set()
                assert go_on.wait(10)
            return x

    shared = nn.Linear(3, 3, rng=np.random.default_rng(0))
    model1 = nn.Sequential(Pause(), shared)
    model2 = nn.Sequential(nn.Linear(3, 3, rng=np.random.default_rng(1)), nn.Sequential(shared))
    x = engine.Tensor(np.ones((2, 3), dtype=np.float32))
    assert model1(x).node.scope == "1" and model2(x).node.scope == "1.0"
    got = {}
    a = threading.Thread(target=lambda: got.update(a=model1(x).node.scope), name="A")
    a.start()
    assert inside.wait(10)
    assert model2(x).node.scope == "1.0"          # in the main thread, while A is inside model1
    go_on.set()
    a.join(10)
    assert got["a"] == "1"
    assert model1(x).node.scope == "1" and model2(x).node.scope == "1.0"


# --- from a hunt of the Module API, against PyTorch ------------------------------------------

def test_a_nested_sequential_runs_a_forward_set_on_the_instance():
    """Sequential walks a nested plain Sequential in place (no recursion); it decided that
    from the class alone and skipped a forward set on the instance (an ablation patch)."""
    inner = nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0)))
    inner.forward = lambda x: x * 0.0
    x = engine.Tensor(np.ones((1, 2), np.float32))
    assert nn.Sequential(inner)(x).numpy().tolist() == [[0.0, 0.0]]


def test_a_shallow_copy_has_registries_of_its_own():
    """copy.copy shared _parameters with the original: a Parameter assigned on the copy
    replaced the original's in parameters() and state_dict, while its forward kept the
    old one."""
    layer = nn.Linear(2, 2)
    twin = copy.copy(layer)
    twin.weight = nn.Parameter(np.zeros((2, 2), np.float32))
    assert layer.parameters()[0] is layer.weight and layer.state_dict()["weight"].any()
    assert twin.parameters()[0] is twin.weight and twin.bias is layer.bias


def test_a_layer_or_parameter_set_to_none_and_back_keeps_its_place():
    """Through None, a replaced layer moved to the end: the Sequential ran ReLU, Linear,
    Linear, s[0] was the ReLU, parameters() no longer matched the optimizer's order."""
    s = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
    setattr(s, "0", None)
    assert list(s._modules) == ["1", "2"] and isinstance(s[0], nn.ReLU)
    setattr(s, "0", nn.Linear(3, 3))
    assert list(s._modules) == ["0", "1", "2"] and isinstance(s[0], nn.Linear)
    layer = nn.Linear(2, 2)
    layer.weight = None
    layer.weight = nn.Parameter(np.zeros((2, 2), np.float32))
    assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"]


def test_through_none_a_plain_tensor_still_cannot_take_a_parameters_place():
    """``l.bias = None; l.bias = Tensor(...)``: the forward used the tensor, but it was in
    neither parameters() nor state_dict (never trained or saved). As in PyTorch, a
    parameter's or submodule's name takes a Parameter or Module (or None) until deleted."""
    layer = nn.Linear(2, 3)
    layer.bias = None
    with pytest.raises(TypeError, match=r"Linear.bias, a parameter of the module \(None now\)"):
        layer.bias = engine.Tensor(np.ones(3, np.float32), requires_grad=True)
    s = nn.Sequential(nn.Linear(2, 2))
    s.extra = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Sequential.extra, a submodule of the module"):
        s.extra = np.zeros(3)
    del s.extra
    s.extra = np.zeros(3)                       # deleted first: a plain attribute now
    assert [n for n, _ in s.named_parameters()] == ["0.weight", "0.bias"]


def test_children_lists_a_module_registered_twice_once():
    layer = nn.Linear(2, 2)
    assert len(list(nn.Sequential(layer, nn.ReLU(), layer).children())) == 2


def test_a_non_strict_load_returns_the_keys_it_let_pass():
    """load_state_dict(strict=False) returned None: a key it ignored was invisible."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    state = model.state_dict()
    state["2.weight"] = state.pop("1.weight")
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["1.weight"] and result.unexpected_keys == ["2.weight"]
    assert model.load_state_dict(model.state_dict()) == ([], [])


@pytest.mark.parametrize("decay", [-1.0, float("nan"), float("inf"), True])
def test_l2_penalty_refuses_a_weight_decay_that_is_not_a_finite_number_at_least_0(decay):
    """A negative weight decay silently rewarded large weights (the optimizers refuse it)."""
    with pytest.raises(ValueError, match="l2_penalty: weight_decay must be a finite number >= 0"):
        nn.l2_penalty(nn.MLP([3, 4, 2], seed=0), decay)


def test_a_module_tree_with_a_cycle_is_shown_once_and_its_forward_raises():
    """A module holding its parent: repr ran until memory ran out, and the Sequential's
    forward (which walks nested Sequentials in place) would never end."""
    parent, child = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.ReLU())
    parent.child = child
    child.back = parent
    assert repr(parent).splitlines()[-3:] == [
        "    (back): <Sequential: a cycle, shown above>", "  )", ")"]
    with pytest.raises(RecursionError, match="a Sequential contains itself"):
        parent(np.ones((1, 2), np.float32))


class _KeptInEval(nn.Dropout):
    """A layer that stays in eval mode whatever its model's (PyTorch's idiom)."""

    def train(self, mode=True):
        return super().train(False)


def test_train_calls_a_sub_modules_own_train_as_pytorch_does():
    """model.train() set every sub-module's flag itself: a layer overriding train() to stay
    in eval (a frozen block, a deterministic dropout) dropped half its inputs in fit."""
    kept = _KeptInEval(0.5)
    inner = nn.Sequential(nn.Linear(2, 2), kept)
    model = nn.Sequential(inner, nn.Dropout(0.5))
    model.eval().train()
    assert model.training and inner.training and model[1].training and not kept.training
    x = engine.Tensor(np.ones((4, 2)))
    assert np.array_equal(kept(x).data, x.data)               # kept in eval: no mask


@pytest.mark.parametrize("name", ["a.b", ""])
def test_names_that_would_collide_in_state_dict_are_refused(name):
    """setattr(m, "a.b", p) gave p the dotted name of submodule a's b: state_dict kept one
    of the two and nn.save saved the other's values under both (PyTorch refuses)."""
    m = nn.Module()
    m.a = nn.Linear(2, 2)
    with pytest.raises(KeyError, match="can contain no '.' and cannot be empty"):
        setattr(m, name, nn.Parameter(np.zeros(2)))
    with pytest.raises(KeyError, match="can contain no '.'"):
        setattr(m, name, nn.Linear(2, 2))
    assert [n for n, _ in m.named_parameters()] == ["a.weight", "a.bias"]


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copied_dropout_draws_from_the_shared_generator_as_the_original(how):
    """A Dropout built without rng draws from nn.init's generator. Its copies (deepcopy,
    pickle) got a copy of that generator: original and copy drew the same masks (an
    ensemble made by deepcopy shared its dropout noise), and manual_seed missed the copy."""
    original = nn.Dropout(0.5)
    clone = copy.deepcopy(original) if how == "deepcopy" else pickle.loads(pickle.dumps(original))
    assert clone.rng is nn.init.default_rng() and original.rng is nn.init.default_rng()
    x = engine.Tensor(np.ones(1000))
    nn.init.manual_seed(123)
    first = clone(x).data
    nn.init.manual_seed(123)
    assert np.array_equal(clone(x).data, first)            # manual_seed reaches the copy
    assert not np.array_equal(original(x).data, clone(x).data)
    own = nn.Dropout(0.5, rng=np.random.default_rng(0))    # a generator of its own: copied
    assert copy.deepcopy(own).rng is not own.rng


class _Cached(nn.Module):
    """A module whose __getstate__ leaves out a lock and a cache (rebuilt by __setstate__)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 2)
        self.lock, self.cache = threading.Lock(), {}

    def __getstate__(self):
        state = super().__getstate__()
        del state["lock"], state["cache"]
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.lock, self.cache = threading.Lock(), {}


@pytest.mark.parametrize("how", [copy.deepcopy, copy.copy, lambda m: pickle.loads(pickle.dumps(m))])
def test_copies_go_through_a_modules_getstate_and_setstate(how):
    """deepcopy copied __dict__ as it was (a lock: TypeError; a cache: carried over) and
    copy.copy skipped __setstate__; pickle and PyTorch use both hooks."""
    m = _Cached()
    m.cache["stale"] = True
    clone = how(m)
    assert clone.cache == {} and clone.lock is not m.lock
    assert np.array_equal(clone.linear.weight.data, m.linear.weight.data)
