"""Error messages print plain numbers (``0.75``), never numpy 2's ``np.float64(0.75)``."""
from __future__ import annotations

from collections import namedtuple

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine.plain import plain, plain_repr


def test_plain_repr_writes_numpy_scalars_as_python_numbers():
    assert plain_repr(np.float64(0.75)) == "0.75"
    assert plain_repr(np.float32(0.5)) == "0.5"
    assert plain_repr(np.int64(3)) == "3"
    assert plain_repr(np.True_) == "True"
    assert plain_repr([np.float64(0.25), 1, (np.int64(2), "a")]) == "[0.25, 1, (2, 'a')]"
    assert plain_repr({"p": np.float64(1.5)}) == "{'p': 1.5}"
    Pair = namedtuple("Pair", "a b")
    assert plain(Pair(np.int64(1), 2)) == Pair(1, 2)
    assert plain_repr("mean") == "'mean'" and plain_repr(None) == "None"
    assert plain_repr(np.array([0.5, 1.0])) == "array([0.5, 1. ])"        # arrays unchanged


@pytest.mark.parametrize("call, message", [
    (lambda: engine.dropout(engine.Tensor(np.ones(3)), p=np.float64(1.5)),
     "dropout: p must be in [0, 1), got 1.5"),
    (lambda: engine.Tensor(np.ones((2, 2))).sum(axis=(np.int64(0), np.int64(0))),
     "sum: repeated axis in (0, 0)"),
    (lambda: engine.leaky_relu(engine.Tensor(np.ones(3)), np.float64("nan")),
     "leaky_relu: negative_slope must be a finite real number, got nan"),
    (lambda: engine.mse(engine.Tensor(np.ones(3)), np.ones(3), reduction=np.float64(1.0)),
     "mse: reduction must be one of ('mean', 'sum', 'none'), got 1.0"),
    (lambda: nn.Linear(np.int64(0), 3), "Linear: in_features must be a positive integer, got 0"),
    (lambda: nn.MLP([np.int64(2), np.int64(-1)]),
     "MLP: sizes must be positive integers, got -1 at position 1 of [2, -1]"),
])
def test_messages_print_numpy_arguments_as_plain_numbers(call, message):
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    assert str(caught.value) == message


def _linear() -> nn.Linear:
    return nn.Linear(2, 1, rng=np.random.default_rng(0))


def _fit(**options):
    model = _linear()
    data = (np.ones((4, 2)), np.ones((4, 1)))
    return nn.fit(model, nn.MSELoss(), nn.optim.SGD(model), data, verbose=0, **options)


@pytest.mark.parametrize("call, message", [
    (lambda: nn.optim.SGD(_linear(), lr=np.float64(-0.5)),
     "SGD: learning rate must be finite and >= 0, got -0.5"),
    (lambda: nn.optim.Adam(_linear(), betas=(np.float64(0.9), np.float64(1.5))),
     "Adam: beta2 must be a finite number in [0, 1), got 1.5"),
    (lambda: nn.optim.SGD(_linear(), nesterov=np.True_, momentum=0.9),
     "SGD: nesterov must be True or False, got True"),
    (lambda: nn.optim.StepLR(nn.optim.SGD(_linear()), step_size=np.int64(0)),
     "StepLR: step_size must be a positive integer, got 0"),
    (lambda: nn.data.DataLoader(np.ones((4, 2)), np.ones(4), batch_size=np.int64(-2)),
     "DataLoader: batch_size must be a positive integer, got -2"),
    (lambda: nn.metrics.accuracy(np.ones((2, 1)), np.ones(2), threshold=np.float64("inf")),
     "accuracy: threshold must be a finite number, got inf"),
    (lambda: _linear().train_mode(np.float64(1.0)),
     "train_mode: mode must be True or False, got 1.0"),
    (lambda: _fit(epochs=1, clip_grad_norm=np.float64(-1.0)),
     "fit: clip_grad_norm must be finite and positive, got -1.0"),
    (lambda: _fit(epochs=np.int64(0)), "fit: epochs must be a positive integer, got 0"),
    (lambda: _fit(epochs=2, initial_epoch=np.int64(5)),
     "fit: initial_epoch must be an integer in [0, 2), got 5"),
    (lambda: nn.compile_step(_linear(), nn.MSELoss(), nn.optim.SGD(_linear()),
                             clip_grad_norm=np.float64(-1.0)),
     "compile_step: clip_grad_norm must be finite and positive, got -1.0"),
])
def test_nn_messages_print_numpy_hyperparameters_as_plain_numbers(call, message):
    with pytest.raises((ValueError, TypeError)) as caught:
        call()
    assert str(caught.value) == message


def test_a_gradcheck_failure_prints_plain_numbers():
    # eps = 0.1 makes the central difference of exp at 0.5 off by 0.17%: over atol = rtol = 0.
    numerical = (np.exp(0.6) - np.exp(0.4)) / 0.2
    with pytest.raises(engine.GradcheckError) as caught:
        engine.gradcheck(lambda x: x.exp(), [np.array([0.5])], eps=0.1, atol=0, rtol=0)
    message = str(caught.value)
    assert f"analytic {float(np.exp(0.5))!r} vs numerical {float(numerical)!r}," in message
    assert "np.float64" not in message
