"""gradcheck and jvpcheck follow PyTorch's convention: ``raise_exception=False`` turns a
mismatch into a False result; the default raises GradcheckError with the evidence."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine


class WrongDouble(engine.Op):
    """twice(x) = 2 x, with a backward and a JVP that forget the 2."""

    name = "wrong_double_for_gradcheck"
    rule = "d/dx = 2 (written here as 1: a planted bug)"

    def forward(self, ctx, x):
        return 2 * x

    def backward(self, ctx, grad):
        return (grad,)

    def jvp(self, ctx, dx):
        return dx


def test_raise_exception_false_returns_false_on_a_mismatch(registered):
    op = registered(WrongDouble)
    x = [np.array([0.5, -1.0])]
    assert engine.gradcheck(lambda a: op(a).sum(), x, raise_exception=False) is False
    assert engine.jvpcheck(lambda a: op(a).sum(), x, raise_exception=False) is False
    with pytest.raises(engine.GradcheckError, match="wrong_double_for_gradcheck|0.5|1"):
        engine.gradcheck(lambda a: op(a).sum(), x)
    with pytest.raises(engine.GradcheckError):
        engine.jvpcheck(lambda a: op(a).sum(), x)


def test_raise_exception_false_returns_true_on_a_right_rule():
    x = [np.array([0.5, -1.0])]
    assert engine.gradcheck(lambda a: (a * a).sum(), x, raise_exception=False) is True
    assert engine.jvpcheck(lambda a: (a * a).sum(), x, raise_exception=False) is True
