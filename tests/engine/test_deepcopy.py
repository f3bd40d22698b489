"""copy.deepcopy of tensors: graph leaves are copied; a tensor computed by ops is refused
with a clear error, as in PyTorch (copying its graph recursed once per node)."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor


def test_a_leaf_is_deep_copied_with_its_values_flag_and_gradient():
    x = Tensor(np.arange(3.0), requires_grad=True, name="x")
    x.grad = np.ones(3)
    y = copy.deepcopy(x)
    assert y is not x and y.requires_grad and y.name == "x" and y.node is None
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    np.testing.assert_array_equal(y.grad, x.grad)
    (a,) = engine.inplace(y)
    a += 1
    np.testing.assert_array_equal(x.numpy(), np.arange(3.0))     # nothing shared


def test_a_tensor_with_a_deep_graph_is_refused_clearly_not_by_recursion_error():
    x = Tensor(np.ones(3), requires_grad=True)
    t = x
    for _ in range(40_000):
        t = t * 1.0
    with pytest.raises(RuntimeError, match=r"deepcopy: only graph leaves can be deep-copied, "
                                           r"and this tensor was computed by op 'mul'.*detach\(\)"):
        copy.deepcopy(t)
    y = copy.deepcopy(t.detach())
    assert y.node is None and not y.requires_grad
    np.testing.assert_array_equal(y.numpy(), np.ones(3))
