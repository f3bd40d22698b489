"""The checkers themselves: they pass correct rules, and they FAIL wrong ones. A checker
that cannot fail is worthless, so each kind of mistake a student makes in a derivative
rule (a wrong factor, a missing transpose, a forgotten un-broadcast sum, a wrong sign, a
wrong forward-mode rule) is planted in a copy of a real op and must be caught."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine.broadcast import sum_to
from handgrad.engine.gradcheck import (
    GradcheckError,
    accuracycheck,
    gradcheck,
    gradcheck_error,
    jvpcheck,
    jvpcheck_error,
)
from handgrad.engine.ops.activation import Tanh
from handgrad.engine.ops.elementwise import Add, Exp, Sub
from handgrad.engine.ops.linalg import MatMul
from handgrad.engine.ops.reduce import Sum
from handgrad.engine.testing import SPECS, OpCheckError, check_op

from .test_custom_op import Scale

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 3))
B = rng.standard_normal((3, 3))
ROW = rng.standard_normal((1, 3))


# --- correct rules pass --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["full", "directional"])
def test_correct_rules_pass_in_every_mode(mode):
    def fn(a, b):
        return ((a @ b).tanh() * b).sum(axis=0)

    assert gradcheck(fn, [A, B], mode=mode, check_forward_mode=True)
    assert jvpcheck(fn, [A, B], mode=mode)


def test_complex_step_is_exact_to_rounding_for_analytic_ops():
    def fn(a, b):
        return (a @ b).tanh().exp() / (1 + b * b)

    assert gradcheck(fn, [A, B], mode="complex", atol=1e-13, rtol=1e-12)


def test_integer_labels_and_constant_tensors_are_not_perturbed():
    labels = np.array([0, 2, 1])
    mask = engine.Tensor(rng.random((3, 3)) > 0.5)          # bool: never differentiated
    probs = engine.Tensor(np.full((3, 3), 1 / 3))           # float, but requires_grad=False
    def fn(z, y, m, p):
        return engine.softmax_cross_entropy(engine.where(m, z, 2 * z), y) + (z * p).sum()

    assert gradcheck(fn, [A, labels, mask, probs])


def test_float_inputs_in_a_nondifferentiable_position_are_passed_as_constants(registered):
    """The output does depend on w, but the op declares w non-differentiable (no gradient):
    given as a constant Tensor, w is not perturbed; given as an array it is differentiated
    like any float input, and its missing gradient (zeros) disagrees with the differences.
    A loss's targets, which the loss refuses to take requiring grad, are an error at once."""
    scale = registered(Scale)             # scale(x, weights) = x * weights, weights nondiff
    w, y = rng.random((3, 3)), rng.random((3, 3))
    assert gradcheck(scale, [A, engine.Tensor(w)], check_forward_mode=True)
    with pytest.raises(GradcheckError, match=r"input 1 \(the rules return no gradient for it"):
        gradcheck(scale, [A, w])
    with pytest.raises(GradcheckError, match="jvpcheck"):
        jvpcheck(scale, [A, w])
    assert gradcheck(engine.sigmoid_binary_cross_entropy, [A, engine.Tensor(y)],
                     check_forward_mode=True)
    for check in (gradcheck, jvpcheck):
        with pytest.raises(ValueError, match=r"input 1 \(y\) requires grad, but "
                                             r"sigmoid_binary_cross_entropy does not"):
            check(engine.sigmoid_binary_cross_entropy, [A, y])


class SignFlippedMul(engine.Op):
    """a * b, whose rules give b's derivative the wrong sign."""

    name = "sign_flipped_mul"
    rule = "d/da = b, d/db = a (written here as -a: a planted bug)"

    def forward(self, ctx, a, b):
        ctx.save_input(a, b)
        return a * b

    def backward(self, ctx, grad):
        a, b = ctx.saved
        return grad * b, -grad * a

    def jvp(self, ctx, da, db):
        a, b = ctx.saved
        return da * b - db * a


@pytest.mark.parametrize("given", [list, tuple])
@pytest.mark.parametrize("check", ["gradcheck", "directional", "jvpcheck", "accuracycheck"])
def test_a_float_list_input_is_differentiated_not_skipped(check, given):
    """A list or tuple of floats is an input like the array it makes: b's wrong derivative
    fails every check. (It was passed through unperturbed and uncompared, and passed.)"""
    op = SignFlippedMul()
    args = [X3, given(W3.tolist())]
    run = {"gradcheck": lambda: gradcheck(op, args, check_forward_mode=True),
           "directional": lambda: gradcheck(op, args, mode="directional"),
           "jvpcheck": lambda: jvpcheck(op, args),
           "accuracycheck": lambda: accuracycheck(op, args)}[check]
    with pytest.raises(GradcheckError):
        run()
    assert gradcheck(engine.mul, [X3, given(W3.tolist())], check_forward_mode=True)


def test_lists_without_floats_pass_through_and_ragged_float_lists_are_an_error():
    assert gradcheck(lambda x, index: x[index].sum(), [A, (slice(0, 2), 1)])
    with pytest.raises(ValueError, match=r"input 1 is a list holding floats"):
        gradcheck(lambda x, y: x.sum(), [A, [1.0, [2.0, 3.0]]])


class ForgetsW(engine.Op):
    """scale(x, w) = x * w, whose rules forget w: its backward returns None for w's
    gradient, its JVP ignores w's tangent."""

    name = "scale_forgets_w"
    rule = "d/dx = w, d/dw = x"

    def forward(self, ctx, x, w):
        ctx.save_input(x, w)
        return x * w

    def backward(self, ctx, grad):
        return grad * ctx.saved[1], None

    def jvp(self, ctx, dx, dw):
        return dx * ctx.saved[1]


X3 = np.array([0.5, -1.2, 2.0])
W3 = np.array([1.5, 0.3, -0.7])


@pytest.mark.parametrize("inputs", ["x, w", "w alone"])
@pytest.mark.parametrize("check", ["gradcheck", "directional", "jvpcheck", "accuracycheck"])
def test_a_rule_that_gives_an_input_no_gradient_fails(check, inputs):
    """Which inputs are compared is not the rule's to say: a None gradient is compared as
    zeros, here against d out / d w = diag(x). (With w alone nothing was compared at all,
    and every check passed; accuracycheck crashed on an empty max.)"""
    op = ForgetsW()
    fn, args = ((lambda x, w: op.apply(x, w)), [X3, W3]) if inputs == "x, w" else \
        ((lambda w: op.apply(X3, w)), [W3])
    run = {"gradcheck": lambda: gradcheck(fn, args, check_forward_mode=True),
           "directional": lambda: gradcheck(fn, args, mode="directional"),
           "jvpcheck": lambda: jvpcheck(fn, args),
           "accuracycheck": lambda: accuracycheck(fn, args)}[check]
    with pytest.raises(GradcheckError):
        run()


def test_a_none_gradient_where_the_derivative_is_zero_passes():
    """None means zero: an input the output truly does not depend on passes."""
    class Ignores(ForgetsW):
        name = "ignores_w"

        def forward(self, ctx, x, w):
            ctx.save_input(x, w)
            return 2 * x

        def backward(self, ctx, grad):
            return 2 * grad, None

        def jvp(self, ctx, dx, dw):
            return 2 * dx

    op = Ignores()
    assert gradcheck(lambda x, w: op.apply(x, w), [X3, W3], check_forward_mode=True)
    assert gradcheck(lambda x, w: op.apply(x, w), [X3, W3], mode="directional")
    assert accuracycheck(lambda x, w: op.apply(x, w), [X3, W3]) < 1e-9


@pytest.mark.parametrize("check", [gradcheck, jvpcheck, accuracycheck])
def test_a_check_with_nothing_to_compare_is_an_error_not_a_pass(check):
    with pytest.raises(ValueError, match="nothing to compare"):
        check(lambda a: a * 2, [np.zeros((0, 3))])


def test_float32_inputs_are_checked_in_float64_with_a_warning():
    with pytest.warns(UserWarning, match="float32"):
        assert gradcheck(lambda a: a.tanh(), [A.astype(np.float32)])


def test_big_endian_float64_inputs_are_checked_silently_and_as_little_endian_ones():
    def fn(a, b):
        return (a @ b).tanh().sum()

    big = [A.astype(">f8"), engine.Tensor(B.astype(">f8"), requires_grad=True)]
    little = [A, engine.Tensor(B, requires_grad=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # "too coarse" would be raised
        for check, modes in ((gradcheck_error, ("full", "directional", "complex")),
                             (jvpcheck_error, ("full", "directional"))):
            for mode in modes:
                assert check(fn, big, mode=mode) == check(fn, little, mode=mode)
        assert accuracycheck(fn, big) == accuracycheck(fn, little)


def test_big_endian_float32_inputs_warn_naming_float32():
    with pytest.warns(UserWarning, match=r"input 0 is float32; .* in float32 are too coarse"):
        assert gradcheck(lambda a: a.tanh(), [A.astype(">f4")])


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


class SecantJvpMul(engine.Op):
    """a * b, whose JVP is written as f(a + da, b + db) - f(a, b): right for one moving
    input, off by da db when both move (not linear in the tangents)."""

    name = "secant_jvp_mul"
    rule = "d(ab) = da b + a db"

    def forward(self, ctx, a, b):
        ctx.save_input(a, b)
        return a * b

    def backward(self, ctx, grad):
        a, b = ctx.saved
        return grad * b, grad * a

    def jvp(self, ctx, da, db):
        a, b = ctx.saved
        return (a + da) * (b + db) - a * b


class AbsGradRelu(engine.Op):
    """relu whose backward takes |grad|: right for every cotangent >= 0 (the basis ones)."""

    name = "abs_grad_relu"
    rule = "relu'(x) = [x > 0]"

    def forward(self, ctx, x):
        ctx.save_input(x)
        return np.maximum(x, 0)

    def backward(self, ctx, grad):
        return (np.abs(grad) * (ctx.saved[0] > 0),)

    def jvp(self, ctx, dx):
        return dx * (ctx.saved[0] > 0)


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_rules_not_linear_in_the_tangent_or_the_cotangent_fail(mode):
    """Full mode moved one basis vector of one input at a time (and e_i >= 0 for the VJP):
    both rules agreed with every one of them and passed. It also checks one random
    direction with mixed signs, all inputs moving at once, as the directional mode does."""
    x = np.array([-1.3, -0.4, 0.5, 1.7, 2.2])
    with pytest.raises(GradcheckError, match="random tangent|random unit tangent"):
        jvpcheck(SecantJvpMul(), [A, B], mode=mode)
    with pytest.raises(GradcheckError, match="random tangent|random unit tangent"):
        gradcheck(SecantJvpMul(), [A, B], mode=mode, check_forward_mode=True)
    with pytest.raises(GradcheckError, match="random cotangent|projection"):
        gradcheck(AbsGradRelu(), [x], mode=mode)
    assert gradcheck(SecantJvpMul(), [A, B], mode=mode)         # its VJP is right
    assert jvpcheck(AbsGradRelu(), [x], mode=mode)              # its JVP is right
    assert gradcheck(engine.relu, [x], mode=mode, check_forward_mode=True)
    assert gradcheck(engine.mul, [A, B], mode=mode, check_forward_mode=True)


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
    from handgrad.engine.testing import strategies as S
    from handgrad.engine.testing import unary

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


# --- subtle bugs: each class below passed the earlier property suite ------------------------
# Every planted op is a one-method change of a real op, the kind of slip people make by
# hand; check_op (every property and kink example of the op's real spec) must catch it,
# naming the property that does.

from handgrad.engine.ops.activation import GELU, ReLU, Softplus, stable_sigmoid  # noqa: E402
from handgrad.engine.ops.elementwise import Abs, Clip, Maximum, Mul, Pow  # noqa: E402
from handgrad.engine.ops.loss import SoftmaxCrossEntropy  # noqa: E402
from handgrad.engine.ops.shape import GetItem, Transpose  # noqa: E402


def caught(op, spec, match, max_examples=40):
    with pytest.raises(OpCheckError, match="(?s)" + match) as info:
        check_op(op, spec=SPECS[spec], max_examples=max_examples)
    return str(info.value)


# 1. forward and reverse mode disagreeing at a kink

class KinkJvpReLU(ReLU):
    """The JVP takes relu'(0) = 1; the VJP follows the documented relu'(0) = 0."""

    def jvp(self, ctx, dx):
        return dx * (ctx.inputs[0]._data >= 0)


class TieJvpMaximum(Maximum):
    """At a tie of maximum the JVP takes a's tangent; the VJP splits evenly."""

    def jvp(self, ctx, da, db):
        a, b = ctx.saved
        return np.where(a >= b, da, db)


@pytest.mark.parametrize("op,spec", [(KinkJvpReLU(), "relu"), (TieJvpMaximum(), "maximum")],
                         ids=["relu'(0)=1", "maximum tie"])
def test_a_jvp_that_breaks_the_kink_convention_is_caught(op, spec):
    caught(op, spec, r"forward mode \(JVP\) at the kink")


# 2. rules that write into their arguments or return saved memory

class MaskInPlaceReLU(ReLU):
    def backward(self, ctx, grad):
        grad *= ctx.saved[0]                 # "saves an allocation"
        return (grad,)


class TangentInPlaceReLU(ReLU):
    def jvp(self, ctx, dx):
        dx *= ctx.saved[0]
        return dx


class SignInPlaceAbs(Abs):
    """Overwrites the saved input with its sign (sign(sign(x)) = sign(x), so the rule's
    own results stay right, but the input's tensor now holds its signs)."""

    def derivative(self, ctx):
        x = ctx.saved[0]
        return np.sign(x, out=x)


class SavedDeltaSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """Returns its saved delta itself when the incoming gradient is 1 (loss.backward()):
    the leaf adopts it as .grad, and the next accumulation writes into the node's delta."""

    def backward(self, ctx, grad):
        delta, n = ctx.saved
        if ctx.params["reduction"] == "sum" and np.all(grad == 1):
            return delta, None
        return super().backward(ctx, grad)


@pytest.mark.parametrize("op,spec,match", [
    (MaskInPlaceReLU(), "relu", "backward rule .* wrote into the incoming gradient"),
    (TangentInPlaceReLU(), "relu", "jvp rule .* wrote into the tangent of input 0"),
    (SignInPlaceAbs(), "abs", "wrote into input 0, saved value 0"),
    (SavedDeltaSoftmaxCrossEntropy(), "softmax_cross_entropy",
     "returned an array for input 0 that shares memory with saved value 0"),
], ids=["grad *= mask", "dx *= mask", "writes saved", "returns saved"])
def test_a_rule_that_writes_into_its_arguments_or_returns_saved_memory_is_caught(op, spec, match):
    caught(op, spec, "rules_leave_their_arguments_alone.*" + match)


# 3. float64 accuracy: errors of 1e-7..3e-5, inside the central difference's tolerances

class FourDigitGELU(GELU):
    """sqrt(2/pi) typed as 0.7978 in the derivative (the forward has the exact constant)."""

    def derivative(self, ctx):
        x, t = ctx.saved
        if ctx.params["approximate"] != "tanh":
            return super().derivative(ctx)
        du = 0.7978 * (1 + 3 * 0.044715 * x * x)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du


class Float32Softplus(Softplus):
    """The derivative computed through a float32 copy of the input."""

    def derivative(self, ctx):
        x = ctx.saved[0]
        return stable_sigmoid(x.astype(np.float32)).astype(x.dtype)


@pytest.mark.parametrize("op,spec", [(FourDigitGELU(), "gelu"), (Float32Softplus(), "softplus")],
                         ids=["4-digit constant", "float32 step"])
def test_a_derivative_accurate_only_to_1e6_is_caught(op, spec):
    for mode in ("full", "directional"):          # the central difference cannot see it
        assert gradcheck(op, [A], mode=mode, check_forward_mode=True)
    caught(op, spec, "derivatives_are_accurate")


def test_a_spec_can_turn_the_accuracy_check_off_for_an_approximate_op():
    import dataclasses
    # The 4-digit constant puts the derivative off by up to 3e-5 on [-3, 3] (2.6e-5 at
    # x = -1, where it is -0.083): an approximate op states that accuracy in its spec, and
    # turns off the 1e-9 check that no approximation can pass.
    approximate = dataclasses.replace(SPECS["gelu"], accurate_to=None, atol=1e-4,
                                      why="the derivative uses a 4-digit constant on purpose")
    assert check_op(FourDigitGELU(), spec=approximate, max_examples=10)


# 4. a rule that computes in float64 for float32 inputs (the engine's cast hides it)

class Float64Tanh(Tanh):
    def derivative(self, ctx):
        (y,) = ctx.saved
        return 1 - y.astype(np.float64) ** 2


def test_a_rule_computing_float32_inputs_in_float64_is_caught():
    x = engine.Tensor(A.astype(np.float32), requires_grad=True)
    Float64Tanh()(x).sum().backward()
    assert x.grad.dtype == np.float32                  # what the engine shows is fine...
    caught(Float64Tanh(), "tanh", "rules_compute_in_float32.*backward rule returned float64")


# 4b. a rule wrong only for float32 inputs (every derivative check runs in float64)

class Float32FastPathTanh(Tanh):
    """A float32 "fast path" that forgets the square: 1 - y instead of 1 - y^2, in the
    backward rule, or in the JVP rule, only."""

    wrong = "backward"

    def fast(self, ctx, rule):
        (y,) = ctx.saved
        return 1 - y if rule == self.wrong and y.dtype == np.float32 else 1 - y * y

    def backward(self, ctx, grad):
        return (grad * self.fast(ctx, "backward"),)

    def jvp(self, ctx, dx):
        return dx * self.fast(ctx, "jvp")


class Float32FastPathTanhJvp(Float32FastPathTanh):
    wrong = "jvp"


@pytest.mark.parametrize("op", [Float32FastPathTanh(), Float32FastPathTanhJvp()],
                         ids=["backward", "jvp"])
def test_a_rule_wrong_only_for_float32_is_caught(op):
    assert gradcheck(op, [A], check_forward_mode=True)    # float64: right
    assert accuracycheck(op, [A]) < 1e-9
    what = "VJP" if op.wrong == "backward" else "JVP"
    caught(op, "tanh", rf"float32_agrees_with_float64.*float32 .*{what}.* disagrees with float64",
           max_examples=10)

# 5. needs_input_grad read in the wrong order

class SwappedNeedsMul(Mul):
    def backward(self, ctx, grad):
        a, b = ctx.inputs
        da, db = self.partials(ctx)
        need_b, need_a = ctx.needs_input_grad          # swapped
        return (sum_to(grad * da, a.shape) if need_a else None,
                sum_to(grad * db, b.shape) if need_b else None)


def test_needs_input_grad_read_in_the_wrong_order_is_caught():
    assert gradcheck(SwappedNeedsMul(), [A, ROW])      # every input requires grad: fine
    caught(SwappedNeedsMul(), "mul", "constant_inputs_change_nothing")


# 6. samples that cover each op's documented domain

class TruthyBoundsClip(Clip):
    """`if lo:` instead of `if lo is not None:`: a bound of exactly 0 is ignored."""

    def derivative(self, ctx):
        (x,) = ctx.saved
        lo, hi = ctx.params["min"], ctx.params["max"]
        inside = np.ones(x.shape, dtype=bool)
        if lo:
            inside &= x >= lo
        if hi:
            inside &= x <= hi
        return inside.astype(x.dtype)


class LogOfZeroPow(Pow):
    """d/db = a^b log(a) without the documented a == 0 case: NaN at a base of 0."""

    def partials(self, ctx):
        a, b, out = ctx.saved
        with np.errstate(divide="ignore", invalid="ignore"):
            return b * a ** (b - 1), out * np.log(a)


class UnnormalizedTranspose(Transpose):
    """Keeps negative axes as given: argsort of (-1, 0) is not the inverse permutation."""

    def check(self, x, *, axes=None):
        return {"axes": tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)}


class AssigningGetItem(GetItem):
    """Treats every tuple index as basic: g[index] = grad, so repeated entries of an index
    array inside a tuple (x[:, [0, 0, 1]]) keep one contribution instead of adding up."""

    def backward(self, ctx, grad):
        index = ctx.params["index"]
        if not isinstance(index, tuple):
            return super().backward(ctx, grad)
        g = np.zeros(ctx.inputs[0].shape, dtype=grad.dtype)
        g[index] = grad
        return (g,)


class NormalizedTargetsSoftmaxCrossEntropy(SoftmaxCrossEntropy):
    """The delta p - y, right only when each row of y sums to 1."""

    def forward(self, ctx, z, y, *, reduction="mean", label_smoothing=0.0):
        out = super().forward(ctx, z, y, reduction=reduction, label_smoothing=label_smoothing)
        if y.dtype.kind == "f":
            delta, n = ctx.saved
            t = (1 - label_smoothing) * y.astype(z.dtype) + label_smoothing / z.shape[-1]
            shifted = z - z.max(axis=-1, keepdims=True)
            p = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
            ctx.save(p - t, n)
        return out


class UnstableSoftplus(Softplus):
    """softplus' = e^x / (1 + e^x): inf / inf = NaN for x beyond ~710."""

    def derivative(self, ctx):
        x = ctx.saved[0]
        with np.errstate(over="ignore", invalid="ignore"):
            return np.exp(x) / (1 + np.exp(x))


@pytest.mark.parametrize("op,spec", [
    (TruthyBoundsClip(), "clip"),
    (LogOfZeroPow(), "pow"),
    (UnnormalizedTranspose(), "transpose"),
    (AssigningGetItem(), "getitem"),
    (NormalizedTargetsSoftmaxCrossEntropy(), "softmax_cross_entropy"),
    (UnstableSoftplus(), "softplus"),
], ids=["clip bound 0", "pow base 0", "negative axes", "tuple index repeats",
        "soft targets not summing to 1", "extreme magnitudes"])
def test_a_bug_outside_the_old_samples_is_caught_by_the_wider_ones(op, spec):
    caught(op, spec, "")


# 7. fan-out through non-smooth ops (random composite graphs)

def _with_relu_fan_out(program):
    """The random program, ending in relu_sum (add's one gradient array fanned out to
    relus whose masks alternate): whether 150 random programs contain such a step
    depends on how the values' draws shape hypothesis's choices, not on the checker."""
    n_leaves, steps = program
    return n_leaves, steps + [("binary", "relu_sum", (0, len(steps) + n_leaves))]


def test_composite_graphs_through_relu_catch_an_in_place_mask(monkeypatch):
    """add sends one gradient array to both of its inputs; a relu rule that masks it in
    place corrupts what the other input receives (or, where the gradient is a read-only
    broadcast view, crashes). Only a graph shows it."""
    from hypothesis import Phase, given, settings
    from hypothesis import strategies as st

    from tests.engine import test_composite_graphs as composite

    @settings(max_examples=composite.EXAMPLES, phases=[Phase.generate], derandomize=True,
              database=None, deadline=None)
    @given(program=composite.programs().map(_with_relu_fan_out), n=st.integers(1, 3),
           data=st.data())
    def random_graphs(program, n, data):          # the suite's test, without shrinking
        composite.check_random_graph(program, n, data)

    relu = engine.REGISTRY["relu"]
    monkeypatch.setattr(relu, "backward", MaskInPlaceReLU.backward.__get__(relu))
    with pytest.raises((GradcheckError, ValueError)):
        random_graphs()


# --- false passes found by a hunt ------------------------------------------------------------

class _ConstantLogRule(engine.ops.elementwise.Log):
    """log with the derivative -123 everywhere: wrong at every x."""

    def derivative(self, ctx):
        return np.full_like(ctx.saved[0], -123.0)


def test_an_infinite_numerical_derivative_passes_no_wrong_rule():
    """At x = 1e-6, log(x - eps) is -inf: the difference was inf, its tolerance inf, and
    inf <= inf passed any gradient (torch's gradcheck fails it)."""
    x = np.array([1e-6])
    with np.errstate(divide="ignore"):            # log(0) at x - eps, as numpy warns
        with pytest.raises(GradcheckError, match="numerical derivative is not finite"):
            gradcheck(_ConstantLogRule(), [x])
        with pytest.raises(GradcheckError, match="numerical derivative is not finite"):
            jvpcheck(_ConstantLogRule(), [x])
        assert not gradcheck(_ConstantLogRule(), [x], mode="directional", raise_exception=False)


class _LogTimesTwo(engine.ops.elementwise.Log):
    def derivative(self, ctx):
        return 2.0 / ctx.saved[0]


class _LogFourDigits(engine.ops.elementwise.Log):
    def derivative(self, ctx):
        return 1.0001 / ctx.saved[0]


@pytest.mark.parametrize("scale", [1.0, 1e4, 1e6])
def test_accuracycheck_rounding_does_not_hide_wrong_rules_at_large_inputs(scale):
    """The rounding allowance took max|x| once per output, as if outputs moved 1:1 with
    the inputs: at x ~ 1e6 it was above log's derivative itself, and 2/x passed."""
    x = np.array([1.3, 2.1, 0.7]) * scale
    assert accuracycheck(engine.log, [x]) < 1e-6
    for wrong in (_LogTimesTwo(), _LogFourDigits()):
        with pytest.raises(GradcheckError, match="accuracycheck"):
            accuracycheck(wrong, [x])


class _ExpForgetsOneEntry(Exp):
    name = "exp_forgets_one_entry"

    def backward(self, ctx, grad):
        g = grad * ctx.saved[0]
        g[51] = 0.0
        return (g,)


def test_directional_mode_catches_an_error_in_one_entry_of_400():
    """One projection weighed entry 51 too little with seed 0, every time; three do not."""
    x = np.random.default_rng(1).standard_normal(400) * 0.5
    op = _ExpForgetsOneEntry()
    for seed in range(5):
        assert not gradcheck(lambda a: op(a).sum(), [x], mode="directional", seed=seed,
                             raise_exception=False)


class _SoftsignForgetsAbs(engine.Op):
    """softsign(x) = x / (1 + |x|), with a rule forgetting the chain through |x|."""

    name = "softsign_forgets_abs"
    rule = "d/dx = 1 / (1 + |x|) (wrong: 1 / (1 + |x|)^2)"

    def forward(self, ctx, x):
        ctx.save_input(x)
        return x / (1 + np.abs(x))

    def backward(self, ctx, grad):
        (x,) = ctx.saved
        return (grad / (1 + np.abs(x)),)


def test_complex_mode_refuses_a_function_that_is_not_analytic():
    """Im|x + ih| / h = 0: the complex step treated |x| as a constant, so this wrong rule
    passed at 1e-12 (and a right sigmoid, written with -|x|, failed blaming its rule)."""
    x = np.array([-1.3, -0.4, 0.5, 1.7])
    for fn in (_SoftsignForgetsAbs(), engine.sigmoid):
        with pytest.raises(GradcheckError, match=r"gradcheck \(complex\): the function is not "
                                                 r"analytic at these inputs"):
            gradcheck(fn, [x], mode="complex", atol=1e-12, rtol=1e-12)
    assert gradcheck(engine.tanh, [x], mode="complex", atol=1e-12, rtol=1e-12)


def test_a_smooth_function_has_no_kink_where_its_derivative_is_large():
    """exp at 7 and 10: one-sided derivatives 1.1e-3 and 2.2e-2 apart (|f''| h), above an
    absolute 1e-3, so a picture called a wrong rule there "a convention: both are right".
    The jump is relative to the derivative; relu's and abs's kinks stay kinks."""
    from handgrad.engine.gradcheck import at_kink, one_sided_derivatives
    x = np.array([1.0, 7.0, 10.0])
    left, right = one_sided_derivatives(lambda a: float(np.exp(a).sum()), x, 1e-6)
    assert not at_kink(left, right).any()
    for f in (lambda a: float(np.maximum(a, 0).sum()), lambda a: float(np.abs(a).sum())):
        left, right = one_sided_derivatives(f, np.array([0.0, 1.0]), 1e-6)
        assert at_kink(left, right).tolist() == [True, False]


class _DropoutMaskInBackward(engine.Op):
    """x * mask / 0.5, the mask drawn again in backward: wrong, and right by luck now and
    then (a quarter to half of the checks passed)."""

    name = "dropout_mask_in_backward"
    rule = "d/dx = mask / 0.5, the mask drawn afresh (wrong)"
    rng = np.random.default_rng(0)

    def forward(self, ctx, x):
        return x * (self.rng.random(x.shape) < 0.5) / 0.5

    def backward(self, ctx, grad):
        return (grad * (self.rng.random(grad.shape) < 0.5) / 0.5,)


def test_a_backward_that_draws_random_numbers_is_refused():
    with pytest.raises(GradcheckError, match="differs between two backward passes"):
        gradcheck(_DropoutMaskInBackward(), [np.linspace(-1, 1, 6)])


def test_a_failure_at_a_kink_says_so():
    """relu at 0: the rule's convention (0) against the central difference's average (0.5)
    failed with a message blaming the rule; it names the kink and its one-sided
    derivatives. Away from kinks the message is as before."""
    with pytest.raises(GradcheckError, match=r"within eps = 1e-06 of a kink of the function "
                                             r"\(one-sided derivatives 0.0 from the left, 1.0"):
        gradcheck(engine.relu, [np.array([0.0, 1.0])])
    with pytest.raises(GradcheckError) as info:
        gradcheck(_LogTimesTwo(), [np.array([1.5, 2.0])])
    assert "kink" not in str(info.value)
