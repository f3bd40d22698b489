"""Module, Parameter and Sequential: registration, traversal, modes and state dicts."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine
from handgrad import nn


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


def test_sequential_indexing_and_errors():
    seq = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[1], nn.ReLU) and isinstance(seq[-1], nn.Linear)
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq(np.ones((4, 2), dtype=np.float32)).shape == (4, 1)
    with pytest.raises(TypeError, match="item 1"):
        nn.Sequential(nn.ReLU(), lambda x: x)


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
