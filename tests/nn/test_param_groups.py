"""Optimizer.add_param_group, as in PyTorch: a group added later gets the constructor's
hyperparameters where it names none, is checked before anything changes, and a schedule
made before the group was added refuses to skip it."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad.nn import optim
from handgrad.nn.module import Parameter


def params(*sizes):
    return [Parameter(np.ones(n)) for n in sizes]


def test_an_added_group_takes_the_defaults_and_its_own_hyperparameters():
    a, b = params(2, 3)
    opt = optim.SGD([a], lr=0.1, momentum=0.9)
    opt.add_param_group({"params": [b], "lr": 0.5})
    assert opt.params == [a, b] and len(opt.param_groups) == 2
    assert opt.param_groups[1] == {**opt.defaults, "lr": 0.5, "params": [b]}
    a.grad, b.grad = np.ones(2), np.ones(3)
    opt.step()
    np.testing.assert_array_equal(a.data, 1 - 0.1)
    np.testing.assert_array_equal(b.data, 1 - 0.5)
    assert set(opt.state[id(b)]) == {"momentum"}
    state = opt.state_dict()                               # and it round-trips
    assert [g["params"] for g in state["param_groups"]] == [[0], [1]]
    again = optim.SGD([a], lr=0.1, momentum=0.9)
    again.add_param_group({"params": (p for p in [b]), "lr": 0.5})    # any iterable
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.state[id(b)]["momentum"], opt.state[id(b)]["momentum"])


@pytest.mark.parametrize("group, error, message", [
    ([Parameter(np.ones(2))], TypeError,
     r"a parameter group is a dict \{'params': \[...\], ...\}, got list"),
    ({"lr": 0.1}, ValueError, "a parameter group needs a 'params' entry"),
    ({"params": Parameter(np.ones(2))}, TypeError, "a group's params must be a list, not one tensor"),
    ({"params": []}, ValueError, "the new group has no parameters"),
    ({"params": [np.ones(2)]}, TypeError, "parameters must be tensors that require grad"),
    ({"params": None}, TypeError, "a group's params must be a list of parameters, got None"),
    ({"params": [Parameter(np.ones(2))], "betas": (0.9, 0.99)}, ValueError,
     r"unknown hyperparameters \['betas'\] in a parameter group \(known: \['dampening', 'lr', "
     r"'momentum', 'nesterov', 'weight_decay'\]\)"),
    ({"params": [Parameter(np.ones(2))], "lr": -1.0}, ValueError,
     "learning rate must be finite and >= 0, got -1.0"),
    ({"params": [Parameter(np.ones(2))], "momentum": 1.5}, ValueError, "momentum must be"),
])
def test_a_bad_group_is_refused_and_nothing_changes(group, error, message):
    a, = params(2)
    opt = optim.SGD([a], lr=0.1)
    with pytest.raises(error, match=message):
        opt.add_param_group(group)
    assert opt.params == [a] and len(opt.param_groups) == 1 and list(opt.state) == [id(a)]


def test_a_parameter_belongs_to_one_group():
    a, b, c = params(2, 3, 4)
    opt = optim.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}])
    with pytest.raises(ValueError, match=r"Adam\.add_param_group: parameter 1 of the new group "
                                         r"\(shape \(3,\)\) is already in group 1; a parameter "
                                         r"belongs to one group"):
        opt.add_param_group({"params": [c, b]})
    assert opt.params == [a, b]
    with pytest.warns(UserWarning, match=r"1 parameter\(s\) given more than once were kept once"):
        opt.add_param_group({"params": [c, c]})
    assert opt.params == [a, b, c] and opt.param_groups[2]["params"] == [c]


def test_a_schedule_made_before_a_group_was_added_refuses_to_skip_it():
    a, b = params(2, 2)
    opt = optim.SGD([a], lr=0.1)
    schedule = optim.StepLR(opt, step_size=1, gamma=0.5)
    opt.add_param_group({"params": [b], "lr": 1.0})
    with pytest.raises(ValueError, match=r"StepLR: the optimizer has 2 parameter groups, the "
                                         r"schedule was made for 1"):
        schedule.step()
    assert schedule.t == 0 and [g["lr"] for g in opt.param_groups] == [0.1, 1.0]
    fresh = optim.StepLR(opt, step_size=1, gamma=0.5)
    fresh.step()
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.5]
