"""check_torch: a torch.autograd.Function checked with handgrad's property suite (issue 22).

A right Function passes; a transposed gradient, a backward that writes into grad_output,
a gradient of the wrong shape, a wrong jvp and a forward that leaves float32 each fail."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("hypothesis")

from hypothesis import strategies as st  # noqa: E402

from handgrad.engine.testing import (  # noqa: E402
    FrameworkMissing,
    OpCheckError,
    check_torch,
    run_op,
    strategies,
    torch_rule,
    unary,
)
from handgrad.engine.testing.properties import rules_leave_their_arguments_alone  # noqa: E402

from ..readme_examples import expected_output, framework_example, run_as_printed  # noqa: E402
from .framework_samples import linear_reference, linear_samples, one_vector  # noqa: E402

EXAMPLES = 20
FRAMEWORK = "torch"


class Linear(torch.autograd.Function):
    """x @ w + b, the backward by hand (no jvp: the forward-mode properties do not apply)."""

    @staticmethod
    def forward(ctx, x, w, b):
        ctx.save_for_backward(x, w)
        return x @ w + b

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        return grad_output @ w.T, x.T @ grad_output, grad_output.sum(0)


class LinearTransposed(Linear):
    """w's gradient transposed: (x^T g)^T, the right shape for a square w."""

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        return grad_output @ w.T, (x.T @ grad_output).T, grad_output.sum(0)


class Cube(torch.autograd.Function):
    """x^3, new style (setup_context), with a jvp."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * 3 * x ** 2

    @staticmethod
    def jvp(ctx, dx):
        (x,) = ctx.saved_tensors
        return dx * 3 * x ** 2


class CubeWrongJvp(Cube):
    @staticmethod
    def jvp(ctx, dx):
        (x,) = ctx.saved_tensors
        return dx * 2 * x ** 2


class CubeWritesGradOutput(Cube):
    """The gradient computed in place in grad_output, the caller's array."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output.mul_(3 * x ** 2)


class CubeInFloat64(Cube):
    """Computes in float64 whatever its input's precision."""

    @staticmethod
    def forward(x):
        return x.double() ** 3


class SumRows(torch.autograd.Function):
    """x.sum(0), with a backward that returns the gradient transposed: the wrong shape."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.sum(0)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.expand(ctx.shape).T.contiguous()


class LeakyRelu(torch.autograd.Function):
    """A parameter (a forward argument with a default) from the sample's params."""

    @staticmethod
    def forward(ctx, x, slope=0.01):
        ctx.save_for_backward(x)
        ctx.slope = slope
        return torch.where(x > 0, x, slope * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad_output, ctx.slope * grad_output), None


def away_from_zero(shape):
    return strategies.values(shape, avoid=[0.0])


def cube_sample():
    return unary(strategies.reals)


def test_a_right_function_passes():
    assert check_torch(Linear, sample=linear_samples(), reference=linear_reference, max_examples=EXAMPLES)


def test_a_right_function_with_a_jvp_passes():
    assert check_torch(Cube, sample=cube_sample(), reference=lambda x: x ** 3,
                       max_examples=EXAMPLES)


def test_parameters_are_passed_after_the_inputs():
    sample = unary(away_from_zero, slope=st.sampled_from([0.1, 0.3]))
    assert check_torch(LeakyRelu, sample=sample, max_examples=EXAMPLES,
                       reference=lambda x, slope: np.where(x > 0, x, slope * x))


def test_a_transposed_gradient_fails_and_is_diagnosed():
    with pytest.raises(OpCheckError, match="LinearTransposed") as e:
        check_torch(LinearTransposed, sample=linear_samples(), reference=linear_reference,
                    max_examples=EXAMPLES)
    assert "likely: transposed: input 1's gradient is transposed" in str(e.value)


def test_a_backward_writing_into_grad_output_fails():
    """grad_output shares handgrad's gradient array: the no-writes property sees the write
    (another property may fail first: the write also spoils the gradient it was given)."""
    with pytest.raises(OpCheckError):
        check_torch(CubeWritesGradOutput, sample=one_vector(), reference=lambda x: x ** 3,
                    max_examples=EXAMPLES)
    rule = torch_rule(CubeWritesGradOutput, sample=one_vector())
    report = run_op(rule.op, rule.spec, max_examples=EXAMPLES, shrink=False,
                    properties=(rules_leave_their_arguments_alone,))
    assert report.failure is not None
    assert "its backward rule (called with a random gradient) wrote into the incoming " \
           "gradient" in report.failure


class ClipsItsInput(torch.autograd.Function):
    """Clips its input in place (as label smoothing applied to the caller's targets)."""

    @staticmethod
    def forward(ctx, x):
        x.clamp_(-1, 1)
        return 2 * x

    @staticmethod
    def backward(ctx, grad_output):
        return 2 * grad_output


def test_a_forward_writing_into_its_input_fails():
    """The input tensors share handgrad's arrays: the write shows."""
    rule = torch_rule(ClipsItsInput, sample=one_vector())
    report = run_op(rule.op, rule.spec, max_examples=EXAMPLES, shrink=False,
                    properties=(rules_leave_their_arguments_alone,))
    assert report.failure is not None
    assert "ClipsItsInput: its forward wrote into input 0" in report.failure


def test_a_gradient_of_the_wrong_shape_says_so():
    sample = st.tuples(st.tuples(strategies.reals((2, 3))), st.just({}))
    with pytest.raises(OpCheckError) as e:
        check_torch(SumRows, sample=sample, max_examples=EXAMPLES)
    message = str(e.value)
    assert "SumRows.backward failed in torch" in message
    assert "got [3, 2] but expected shape compatible with [2, 3]" in message
    assert "forward's inputs have shapes (2, 3), grad_output (3,)" in message


def test_a_wrong_jvp_fails():
    with pytest.raises(OpCheckError, match="jvp"):
        check_torch(CubeWrongJvp, sample=cube_sample(), reference=lambda x: x ** 3,
                    max_examples=EXAMPLES)


def test_float32_inputs_stay_float32():
    """The float32 property sees a Function that computes in float64: the adapter does not
    convert float32 inputs."""
    with pytest.raises(OpCheckError, match="float32 inputs gave a float64 output"):
        check_torch(CubeInFloat64, sample=one_vector(), reference=lambda x: x ** 3,
                    max_examples=EXAMPLES)


def test_the_rule_is_a_torch_rule_with_a_jvp_only_when_defined():
    with_jvp = torch_rule(Cube, sample=cube_sample())
    without = torch_rule(Linear, sample=linear_samples())
    assert (with_jvp.kind, with_jvp.name, without.name) == ("torch", "Cube", "Linear")
    assert type(with_jvp.op).user_jvp is not None and type(without.op).user_jvp is None


def test_apply_instead_of_the_class_is_a_clear_error():
    with pytest.raises(TypeError, match=r"pass the class Cube, not Cube\.apply"):
        check_torch(Cube.apply, sample=cube_sample())


def test_keyword_only_forward_arguments_are_refused():
    class KeywordOnly(Cube):
        @staticmethod
        def forward(x, *, power=3):
            return x ** power

    with pytest.raises(TypeError, match="give parameters a default instead"):
        torch_rule(KeywordOnly, sample=cube_sample())


def test_without_torch_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch now fails
    with pytest.raises(FrameworkMissing, match=re.escape('pip install "handgrad[torch]"')):
        check_torch(Cube, sample=cube_sample())
    # torch_rule (what --module and the plugin call) named check_torch alone
    with pytest.raises(FrameworkMissing, match="^check_torch and torch_rule need torch"):
        torch_rule(Cube, sample=cube_sample())


def test_the_engine_imports_without_torch_or_jax():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['jax'] = None\n"
            "from handgrad import engine\n"
            "import handgrad.engine.testing as T\n"
            "T.check_torch; T.check_jax\n"
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None\n"
            "print('ok')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parent, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_the_readme_example_runs_as_printed(tmp_path):
    code = framework_example(FRAMEWORK)
    assert expected_output(code)                 # it promises some output
    run_as_printed(code, tmp_path, f"README example for {FRAMEWORK}")


class SwappedNeedsLinear(Linear):
    """Reads ctx.needs_input_grad in the wrong order (x's flag for w's gradient and the
    other way round): with w frozen, x gets no gradient."""

    @staticmethod
    def backward(ctx, grad_output):
        x, w = ctx.saved_tensors
        need_w, need_x, need_b = ctx.needs_input_grad
        return (grad_output @ w.T if need_x else None, x.T @ grad_output if need_w else None,
                grad_output.sum(0) if need_b else None)


def test_needs_input_grad_is_what_the_property_asks_for():
    """constant_inputs_change_nothing makes some inputs constants: the Function sees
    them so in ctx.needs_input_grad (every input required grad on every call)."""
    with pytest.raises(OpCheckError, match="constant_inputs_change_nothing"):
        check_torch(SwappedNeedsLinear, sample=linear_samples(), reference=linear_reference,
                    max_examples=EXAMPLES)
    assert check_torch(Linear, sample=linear_samples(), reference=linear_reference,
                       max_examples=EXAMPLES)


class CubeBackwardInFloat64(Cube):
    """The backward computes in float64 whatever its input's precision (torch casts the
    result back to float32 before autograd.grad returns it)."""

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output.double() * 3 * x.double() ** 2


def test_a_backward_computing_float32_in_float64_fails():
    with pytest.raises(OpCheckError, match="(?s)rules_compute_in_float32.*backward rule returned "
                                           "float64"):
        check_torch(CubeBackwardInFloat64, sample=one_vector(), reference=lambda x: x ** 3,
                    max_examples=EXAMPLES)


class LinearVjp(torch.autograd.Function):
    """Linear with its rule named vjp (torch's other name for backward)."""

    forward = Linear.forward

    @staticmethod
    def vjp(ctx, grad_output):
        return Linear.backward(ctx, grad_output)


def test_a_function_defining_vjp_instead_of_backward_is_checked_alike():
    assert check_torch(LinearVjp, sample=linear_samples(), reference=linear_reference,
                       max_examples=EXAMPLES)


class ClassCube(torch.autograd.Function):
    """x ** 3 with x kept on the class, not in ctx: right for one call, wrong for two before
    a backward (two layers). check_torch passed it: the re-entrancy property ran only for
    rules with parameters."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ClassCube.x = inputs[0]

    @staticmethod
    def backward(ctx, g):
        return g * 3 * ClassCube.x ** 2


def test_a_torch_rule_keeping_its_input_on_the_class_fails():
    with pytest.raises(OpCheckError, match="(?s)rules_read_their_own_parameters.*a call on other "
                                           "inputs: a rule reads a value the forward saved"):
        check_torch(ClassCube, sample=unary(strategies.reals))


def test_an_array_given_to_a_parameter_is_refused_not_left_unchecked():
    """PyTorch's own LinearFunction takes bias=None: given the bias as a parameter (an
    argument with a default), its gradient was never checked, and a doubled bias gradient
    passed."""
    class LinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w, bias=None):
            ctx.save_for_backward(x, w, bias)
            return x @ w.t() + (0 if bias is None else bias)

        @staticmethod
        def backward(ctx, g):
            x, w, bias = ctx.saved_tensors
            return g @ w, g.t() @ x, None if bias is None else 2 * g.sum(0)

    sample = st.tuples(st.tuples(strategies.values((2, 3)), strategies.values((4, 3))),
                       st.fixed_dictionaries({"bias": strategies.values((4,))}))
    with pytest.raises(OpCheckError, match=r"the parameter 'bias' was given an array"):
        check_torch(LinearFunction, sample=sample, reference=lambda x, w, bias=None: x @ w.T + bias)


def test_an_output_marked_non_differentiable_is_named_as_such():
    """The adapter returned zero gradients for it, and the failure read "unclassified ...
    no known pattern", with figures that contradicted the line above."""
    class MarkedCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            y = x ** 3
            ctx.mark_non_differentiable(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * 3 * x ** 2
    with pytest.raises(OpCheckError, match=r"forward marked it non-differentiable"):
        check_torch(MarkedCube, sample=cube_sample(), reference=lambda x: x ** 3)


class MulForgetsY(torch.autograd.Function):
    """x * y whose backward forgets y's gradient (returns None for it)."""

    @staticmethod
    def forward(ctx, x, y):
        ctx.save_for_backward(x, y)
        return x * y

    @staticmethod
    def backward(ctx, g):
        x, y = ctx.saved_tensors
        return g * y, None


def test_a_gradient_returned_as_none_is_diagnosed_as_none():
    """torch's None was checked as zeros, and the diagnosis said "unclassified" where the
    same numpy rule gets "no gradient"."""
    sample = st.tuples(st.tuples(strategies.values((2, 3)), strategies.values((2, 3))), st.just({}))
    with pytest.raises(OpCheckError, match="MulForgetsY") as e:
        check_torch(MulForgetsY, sample=sample, max_examples=EXAMPLES)
    assert "likely: no gradient: the rule returns no gradient (None) for input 1" in str(e.value)
