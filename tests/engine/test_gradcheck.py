"""The checkers themselves: they pass correct rules, and they FAIL wrong ones. A checker
that cannot fail is worthless, so each kind of mistake a student makes in a derivative
rule (a wrong factor, a missing transpose, a forgotten un-broadcast sum, a wrong sign, a
wrong forward-mode rule) is planted in a copy of a real op and must be caught."""
from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.broadcast import sum_to
from engine.gradcheck import GradcheckError, gradcheck, jvpcheck
from engine.ops.activation import Tanh
from engine.ops.elementwise import Add, Exp, Sub
from engine.ops.linalg import MatMul
from engine.ops.reduce import Sum
from engine.testing import SPECS, OpCheckError, check_op

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 3))
B = rng.standard_normal((3, 3))
ROW = rng.standard_normal((1, 3))


# --- correct rules pass --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["full", "directional"])
def test_correct_rules_pass_in_every_mode(mode):
    fn = lambda a, b: ((a @ b).tanh() * b).sum(axis=0)
    assert gradcheck(fn, [A, B], mode=mode, check_forward_mode=True)
    assert jvpcheck(fn, [A, B], mode=mode)


def test_complex_step_is_exact_to_rounding_for_analytic_ops():
    fn = lambda a, b: (a @ b).tanh().exp() / (1 + b * b)
    assert gradcheck(fn, [A, B], mode="complex", atol=1e-13, rtol=1e-12)


def test_integer_labels_and_constant_tensors_are_not_perturbed():
    labels = np.array([0, 2, 1])
    mask = engine.Tensor(rng.random((3, 3)) > 0.5)          # bool: never differentiated
    probs = engine.Tensor(np.full((3, 3), 1 / 3))           # float, but requires_grad=False
    fn = lambda z, y, m, p: engine.softmax_cross_entropy(engine.where(m, z, 2 * z), y) + (z * p).sum()
    assert gradcheck(fn, [A, labels, mask, probs])


def test_float_targets_in_a_nondifferentiable_position_are_skipped():
    """The loss does depend on y, but the op declares y non-differentiable: y is skipped."""
    y = rng.random((3, 3))
    assert gradcheck(engine.sigmoid_binary_cross_entropy, [A, y], check_forward_mode=True)


def test_float32_inputs_are_checked_in_float64_with_a_warning():
    with pytest.warns(UserWarning, match="float32"):
        assert gradcheck(lambda a: a.tanh(), [A.astype(np.float32)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        gradcheck(lambda a: a, [A], mode="sideways")
    with pytest.raises(ValueError, match="no floating-point input"):
        gradcheck(lambda y: engine.Tensor(y.data * 1.0), [np.array([1, 2])])
    with pytest.raises(TypeError, match="must return a Tensor"):
        gradcheck(lambda a: a.data, [A])


def test_failure_message_names_input_element_values_and_error():
    class BadExp(Exp):
        def derivative(self, ctx):
            d = super().derivative(ctx).copy()
            d[1, 2] *= 2                       # one wrong entry
            return d

    with pytest.raises(GradcheckError) as info:
        gradcheck(BadExp(), [A])
    msg = str(info.value)
    assert "input 0" in msg and "d input(1, 2)" in msg and "d output(1, 2)" in msg
    assert "analytic" in msg and "numerical" in msg and "error" in msg
    assert "1 of 81 entries disagree" in msg


# --- wrong rules fail ----------------------------------------------------------------------

class ScaledExp(Exp):
    """exp with a backward 10% too large."""

    def backward(self, ctx, grad):
        return (1.1 * grad * ctx.saved[0],)


class UntransposedMatMul(MatMul):
    """grad_a = grad @ b instead of grad @ b^T (same shape for square matrices)."""

    def backward(self, ctx, grad):
        a, b = ctx.saved
        return grad @ b, a.T @ grad


class MeanInsteadOfSumAdd(Add):
    """un-broadcasts b's gradient with a mean instead of a sum: right shape, wrong value."""

    def backward(self, ctx, grad):
        a, b = ctx.inputs
        return sum_to(grad, a.shape), grad.mean(axis=0, keepdims=True)


class NoUnbroadcastAdd(Add):
    """forgets to sum the gradient back to b's shape."""

    def backward(self, ctx, grad):
        return grad, grad


class WrongSignSub(Sub):
    """d(a - b)/db = +1: the classic sign slip."""

    def backward(self, ctx, grad):
        a, b = ctx.inputs
        return sum_to(grad, a.shape), sum_to(grad, b.shape)


class WrongJvpTanh(Tanh):
    """forward mode uses 1 - tanh instead of 1 - tanh^2; the backward is right."""

    def jvp(self, ctx, dx):
        (y,) = ctx.saved
        return dx * (1 - y)


class WrongJvpSum(Sum):
    """forward mode forgets keepdims handling and scales: sums twice."""

    def jvp(self, ctx, dx):
        return 2 * super().jvp(ctx, dx)


WRONG_BACKWARD = [
    (ScaledExp(), [A], "exp"),
    (UntransposedMatMul(), [A, B], "matmul"),
    (MeanInsteadOfSumAdd(), [A, ROW], "add"),
    (WrongSignSub(), [A, ROW], "sub"),
]


@pytest.mark.parametrize("op,inputs,spec", WRONG_BACKWARD, ids=lambda x: type(x).__name__)
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_wrong_backward_rules_fail_gradcheck(op, inputs, spec, mode):
    with pytest.raises(GradcheckError):
        gradcheck(op, inputs, mode=mode)


@pytest.mark.parametrize("op,inputs,spec", WRONG_BACKWARD, ids=lambda x: type(x).__name__)
def test_wrong_backward_rules_fail_check_op(op, inputs, spec):
    with pytest.raises(OpCheckError):
        check_op(op, spec=SPECS[spec], max_examples=30)


def test_missing_unbroadcast_is_caught_by_the_engine_shape_assertion():
    with pytest.raises(RuntimeError, match="add.*shape.*sum_to"):
        gradcheck(NoUnbroadcastAdd(), [A, ROW])
    with pytest.raises(OpCheckError, match="RuntimeError.*sum_to"):
        check_op(NoUnbroadcastAdd(), spec=SPECS["add"], max_examples=30)


@pytest.mark.parametrize("op,inputs,spec", [(WrongJvpTanh(), [A], "tanh"),
                                             (WrongJvpSum(), [A], "sum")],
                         ids=lambda x: type(x).__name__)
def test_wrong_jvp_rules_fail_jvpcheck_and_check_op(op, inputs, spec):
    assert gradcheck(op, inputs)                  # the backward rule is right...
    with pytest.raises(GradcheckError):
        jvpcheck(op, inputs)                      # ...the forward-mode rule is not
    with pytest.raises(GradcheckError):
        gradcheck(op, inputs, check_forward_mode=True)
    with pytest.raises(OpCheckError, match="jvp"):
        check_op(op, spec=SPECS[spec], max_examples=30)


def test_directional_tolerance_still_catches_a_one_percent_error():
    class OnePercentExp(Exp):
        def backward(self, ctx, grad):
            return (1.01 * grad * ctx.saved[0],)

    big = rng.standard_normal((20, 20)) * 0.5
    assert gradcheck(engine.exp, [big], mode="directional")
    with pytest.raises(GradcheckError):
        gradcheck(OnePercentExp(), [big], mode="directional")


# --- check_op on a user's op ---------------------------------------------------------------

def test_check_op_passes_a_correct_user_op_and_reports_a_shrunk_counterexample():
    from engine.testing import strategies as S
    from engine.testing import unary

    class Cube(engine.Op):
        """cube(x) = x^3.   d/dx = 3 x^2."""

        name = "test_cube"

        def forward(self, ctx, x):
            ctx.save(x)
            return x ** 3

        def backward(self, ctx, grad):
            return (grad * 3 * ctx.saved[0] ** 2,)

        def jvp(self, ctx, dx):
            return dx * 3 * ctx.saved[0] ** 2

    class WrongCube(Cube):
        def backward(self, ctx, grad):
            return (grad * 3 * ctx.saved[0],)     # forgot the square

    spec = engine.testing.OpSpec("test_cube", unary(S.reals), lambda x: x ** 3, complex_step=True)
    assert check_op(Cube(), spec=spec, max_examples=20)
    with pytest.raises(OpCheckError, match="vjp_matches_finite_differences") as info:
        check_op(WrongCube(), spec=spec, max_examples=20)
    assert "sample" in str(info.value)


def test_check_op_without_a_spec_says_how_to_add_one():
    class Nameless(Exp):
        name = "test_unspecified"

    with pytest.raises(KeyError, match="engine.testing.spec"):
        check_op(Nameless())
