"""check_jax: functions with jax.custom_vjp / jax.custom_jvp rules checked with handgrad's
property suite (issue 22), in JAX's x64 mode scoped to the check."""
from __future__ import annotations

import re
import sys
from functools import partial

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("hypothesis")

import jax.numpy as jnp  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from handgrad.engine.testing import (  # noqa: E402
    FrameworkMissing,
    OpCheckError,
    check_jax,
    jax_rule,
    strategies,
    unary,
)

from ..readme_examples import expected_output, framework_example, run_as_printed  # noqa: E402
from .framework_samples import linear_reference, linear_samples, one_vector  # noqa: E402

EXAMPLES = 20
FRAMEWORK = "jax"


def make_linear(transposed: bool = False):
    """x @ w + b with a custom_vjp rule (w's gradient transposed if asked)."""
    @jax.custom_vjp
    def linear(x, w, b):
        return x @ w + b

    def linear_fwd(x, w, b):
        return x @ w + b, (x, w)

    def linear_bwd(saved, g):
        x, w = saved
        dw = (x.T @ g).T if transposed else x.T @ g
        return g @ w.T, dw, g.sum(0)

    linear.defvjp(linear_fwd, linear_bwd)
    return linear


def make_cube(factor: float = 3.0):
    """x^3 with a custom_jvp rule (d/dx = factor x^2: right for 3)."""
    @jax.custom_jvp
    def cube(x):
        return x ** 3

    @cube.defjvp
    def cube_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return x ** 3, factor * x ** 2 * dx

    return cube


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def leaky_relu(x, slope=0.01):
    return jnp.where(x > 0, x, slope * x)


@leaky_relu.defjvp
def leaky_relu_jvp(slope, primals, tangents):
    (x,), (dx,) = primals, tangents
    return leaky_relu(x, slope), jnp.where(x > 0, dx, slope * dx)


def test_a_right_custom_vjp_rule_passes():
    assert check_jax(make_linear(), sample=linear_samples(), reference=linear_reference,
                     max_examples=EXAMPLES)


def test_a_right_custom_jvp_rule_passes():
    assert check_jax(make_cube(), sample=unary(strategies.reals), reference=lambda x: x ** 3,
                     max_examples=EXAMPLES)


def test_parameters_are_passed_by_keyword():
    sample = unary(lambda shape: strategies.values(shape, avoid=[0.0]),
                   slope=st.sampled_from([0.1, 0.3]))
    assert check_jax(leaky_relu, sample=sample, max_examples=EXAMPLES,
                     reference=lambda x, slope: np.where(x > 0, x, slope * x))


def test_a_transposed_custom_vjp_gradient_fails_and_is_diagnosed():
    with pytest.raises(OpCheckError, match="linear: property vjp_matches_finite_differences") as e:
        check_jax(make_linear(transposed=True), sample=linear_samples(),
                  reference=linear_reference, max_examples=EXAMPLES)
    assert "likely: transposed: input 1's gradient is transposed" in str(e.value)


def test_a_wrong_custom_jvp_rule_fails():
    with pytest.raises(OpCheckError, match="cube: property"):
        check_jax(make_cube(factor=2.0), sample=one_vector(), reference=lambda x: x ** 3,
                  max_examples=EXAMPLES)


def test_a_custom_vjp_function_has_no_forward_mode():
    """jax.jvp refuses a custom_vjp function: its JVP is not checked (forward_mode=True
    asks for it anyway and fails with JAX's reason)."""
    assert type(jax_rule(make_linear(), sample=linear_samples()).op).user_jvp is None
    assert type(jax_rule(make_cube(), sample=one_vector()).op).user_jvp is not None
    one = st.just(((np.ones((2, 2)), np.eye(2), np.zeros(2)), {}))
    with pytest.raises(OpCheckError, match="its JVP rule failed in JAX"):
        check_jax(make_linear(), sample=one, reference=linear_reference, forward_mode=True,
                  max_examples=EXAMPLES)


def test_float64_samples_run_in_float64_and_float32_stays_float32():
    rule = jax_rule(make_cube(), sample=one_vector())
    forward = type(rule.op).user_forward
    x = np.array([0.1, 1 / 3])
    out, _ = forward(x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, x ** 3, rtol=1e-15)     # not rounded to float32 (1e-8)
    out32, cache = forward(x.astype(np.float32))
    (grad32,) = type(rule.op).user_backward(np.ones(2, np.float32), cache)
    assert out32.dtype == grad32.dtype == np.float32


@pytest.fixture
def user_x64():
    """The user's own JAX 64-bit mode, on for the test."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def test_a_rule_leaving_float32_fails(user_x64):
    @jax.custom_jvp
    def cube64(x):
        return x.astype(jnp.float64) ** 3

    cube64.defjvp(lambda p, t: (cube64(p[0]), 3 * p[0].astype(jnp.float64) ** 2 * t[0]))
    with pytest.raises(OpCheckError, match="float32 inputs gave a float64 output"):
        check_jax(cube64, sample=one_vector(), reference=lambda x: x ** 3,
                  max_examples=EXAMPLES)


def test_float32_samples_run_in_the_users_mode_not_in_64_bit_mode():
    """A numpy float64 constant (the tanh-GELU's sqrt(2/pi)) keeps float32 maths float32
    in JAX's default mode; the checker ran every sample in 64-bit mode, where it makes the
    output float64, and failed this correct rule for it."""
    c = np.sqrt(2 / np.pi)

    @jax.custom_vjp
    def scaled_square(x):
        return c * x * x

    scaled_square.defvjp(lambda x: (c * x * x, x), lambda x, g: (2 * c * x * g,))
    assert not jax.config.jax_enable_x64
    check_jax(scaled_square, sample=one_vector(), reference=lambda x: c * x * x,
              max_examples=EXAMPLES)


@pytest.mark.parametrize("enabled", [False, True])
def test_the_x64_setting_is_unchanged(enabled):
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        check_jax(make_cube(), sample=one_vector(), reference=lambda x: x ** 3, max_examples=3)
        with pytest.raises(OpCheckError):
            check_jax(make_cube(2.0), sample=one_vector(), reference=lambda x: x ** 3,
                      max_examples=3)
        assert jax.config.jax_enable_x64 is enabled
        assert jnp.asarray(np.ones(1)).dtype == (np.float64 if enabled else np.float32)
    finally:
        jax.config.update("jax_enable_x64", before)


def test_without_jax_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)        # import jax now fails
    with pytest.raises(FrameworkMissing, match=re.escape('pip install "handgrad[jax]"')):
        check_jax(lambda x: x, sample=one_vector())
    with pytest.raises(FrameworkMissing, match="^check_jax and jax_rule need jax"):
        jax_rule(lambda x: x, sample=one_vector())


def test_the_readme_example_runs_as_printed(tmp_path):
    code = framework_example(FRAMEWORK)
    assert expected_output(code)                 # it promises some output
    run_as_printed(code, tmp_path, f"README example for {FRAMEWORK}")


def test_a_wrong_primal_output_of_fwd_or_of_a_jvp_rule_fails():
    """Under jax.grad / value_and_grad (a training step) the value is what a custom_vjp's
    fwd or a custom_jvp's rule returns, not the primal function's: a wrong one fails, on
    the property that first differentiates."""
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    softplus.defvjp(lambda x: (jnp.logaddexp(x, 1.0), x),       # 1.0 for 0.0
                    lambda x, g: (g * jax.nn.sigmoid(x),))

    @jax.custom_jvp
    def cube(x):
        return x ** 3

    cube.defjvp(lambda p, t: (p[0] ** 2, 3 * p[0] ** 2 * t[0]))  # primal x^2 for x^3

    for f, reference in ((softplus, lambda x: np.logaddexp(x, 0.0)), (cube, lambda x: x ** 3)):
        with pytest.raises(OpCheckError, match=r"the primal output of jax\.(vjp|jvp) .*differs "
                                               r"from f's output"):
            check_jax(f, sample=one_vector(), reference=reference, max_examples=EXAMPLES)


def test_a_static_argument_without_a_default_is_named_when_the_rule_is_made():
    """Drawn as an input, it was traced, and JAX said a Tracer was passed to nondiff_argnums
    (the user passed none), without saying what to change."""
    from functools import partial

    @partial(jax.custom_vjp, nondiff_argnums=(1,))
    def sum_along(x, axis):
        return x.sum(axis)
    sum_along.defvjp(lambda x, axis: (x.sum(axis), x.shape),
                     lambda axis, shape, g: (jax.numpy.broadcast_to(jax.numpy.expand_dims(g, axis), shape),))
    with pytest.raises(TypeError, match=r"argument 'axis' is static \(nondiff_argnums\).*give it a default"):
        jax_rule(sum_along, sample=one_vector())
