"""Function transforms: ``engine.grad`` (reverse mode without side effects), ``engine.vjp``
and ``engine.jvp`` (forward mode). Expected values come from Jacobians written out by hand
for small functions, or from the other mode: <v, J u> is the same number whether it is
computed as <J^T v, u> (reverse) or <v, J u> (forward)."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor

# Sums of a few float64 products of numbers of order 1: rounding errors are ~1e-16 each.
TIGHT = dict(rtol=1e-12, atol=1e-12)


def leaf(values, name=None):
    return engine.Tensor(np.array(values, dtype=np.float64), requires_grad=True, name=name)


# --- engine.grad -------------------------------------------------------------------------------

def test_grad_returns_gradients_and_leaves_dot_grad_alone():
    x, w = leaf([1.0, 2.0, 3.0]), leaf([4.0, 5.0, 6.0])
    w.grad = np.full(3, 7.0)                       # an earlier gradient must survive
    h = x * w
    h.retain_grad()
    loss = h.sum()                                  # d/dx = w, d/dw = x

    gx, gw = engine.grad(loss, (x, w))
    np.testing.assert_array_equal(gx, w.data)
    np.testing.assert_array_equal(gw, x.data)
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, [7.0, 7.0, 7.0])
    assert h.grad is None


def test_grad_of_a_single_input_is_a_one_element_tuple():
    x = leaf([1.0, -1.0])
    result = engine.grad((x * x).sum(), x)
    assert isinstance(result, tuple) and len(result) == 1
    np.testing.assert_array_equal(result[0], [2.0, -2.0])


def test_grad_of_an_input_the_output_does_not_use_is_an_error_unless_allowed():
    x, unused = leaf([1.0, 2.0]), leaf(np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"^grad: input 1 \(Tensor of shape \(2, 3\), dtype float64\) "
                                           r"is not used in the graph.*allow_unused=True"):
        engine.grad((x * x).sum(), (x, unused))
    gx, gu = engine.grad((x * x).sum(), (x, unused), allow_unused=True)
    np.testing.assert_array_equal(gx, [2.0, 4.0])
    np.testing.assert_array_equal(gu, np.zeros((2, 3)))
    assert gu.dtype == unused.dtype


def test_grad_of_an_intermediate_tensor():
    # loss = sum(h^2) with h = 3x: d loss / dh = 2h.
    x = leaf([1.0, 2.0])
    h = x * 3.0
    (gh,) = engine.grad((h * h).sum(), h)
    np.testing.assert_array_equal(gh, 2 * h.data)


def test_grad_outputs_for_a_non_scalar_output():
    # y = x^2 elementwise; the gradient of <v, y> is 2 x v.
    x = leaf([1.0, 2.0, 3.0])
    v = np.array([1.0, -1.0, 0.5])
    (gx,) = engine.grad(x ** 2, x, grad_outputs=v)
    np.testing.assert_array_equal(gx, 2 * x.data * v)

    with pytest.raises(ValueError, match="grad_outputs"):
        engine.grad(x ** 2, x)


def test_grad_of_several_outputs_adds_their_contributions():
    x = leaf([1.0, 2.0])
    gx = engine.grad([(x * x).sum(), (3.0 * x).sum()], x)[0]
    np.testing.assert_array_equal(gx, 2 * x.data + 3.0)


def test_grad_returns_arrays_the_caller_owns():
    # d sum(x)/dx is "ones broadcast back to x's shape", and the gradient of a reshape is
    # the incoming gradient reshaped: neither may come back as a read-only view or as a
    # view of the caller's grad_outputs array.
    x = leaf([1.0, 2.0, 3.0])
    (g,) = engine.grad(x.sum(), x)
    g *= 0.5                                      # an in-place update, as an optimizer does
    np.testing.assert_array_equal(g, [0.5, 0.5, 0.5])

    v = np.array([1.0, 2.0, 3.0])
    (g,) = engine.grad(x.reshape(3, 1), x, grad_outputs=v.reshape(3, 1))
    g[:] = 0.0
    np.testing.assert_array_equal(v, [1.0, 2.0, 3.0])


def test_grad_frees_the_graph_unless_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    engine.grad(y, x, retain_graph=True)
    np.testing.assert_array_equal(engine.grad(y, x)[0], [2.0, 4.0])
    with pytest.raises(RuntimeError, match="retain_graph"):
        engine.grad(y, x)


def test_grad_of_an_output_without_graph_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        engine.grad(engine.Tensor(1.0), leaf(1.0))


# --- engine.vjp ---------------------------------------------------------------------------------

def tanh_matmul(a, b):
    return (a @ b).tanh()


def test_vjp_matches_the_hand_derived_gradient_and_backward():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    ct = rng.standard_normal((2, 4))

    out, vjp_fn = engine.vjp(tanh_matmul, a, b)
    ga, gb = vjp_fn(ct)

    # y = tanh(a @ b): d<ct, y> = <ct * (1 - y^2), da @ b + a @ db>.
    delta = ct * (1 - np.tanh(a @ b) ** 2)
    np.testing.assert_allclose(out.data, np.tanh(a @ b), **TIGHT)
    np.testing.assert_allclose(ga, delta @ b.T, **TIGHT)
    np.testing.assert_allclose(gb, a.T @ delta, **TIGHT)

    ta, tb = leaf(a), leaf(b)
    tanh_matmul(ta, tb).backward(ct)
    np.testing.assert_allclose(ga, ta.grad, **TIGHT)
    np.testing.assert_allclose(gb, tb.grad, **TIGHT)


def test_vjp_fn_can_be_called_several_times():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    ct1, ct2 = rng.standard_normal((2, 4)), rng.standard_normal((2, 4))
    _, vjp_fn = engine.vjp(tanh_matmul, a, b)

    first = vjp_fn(ct1)
    other = vjp_fn(ct2)
    again = vjp_fn(ct1)
    for g1, g2 in zip(first, again):
        np.testing.assert_array_equal(g1, g2)      # same graph, same arithmetic: identical
    # the VJP is linear in the cotangent
    both = vjp_fn(ct1 + ct2)
    for g1, g2, g12 in zip(first, other, both):
        np.testing.assert_allclose(g12, g1 + g2, **TIGHT)


def test_vjp_does_not_touch_the_grad_of_tensors_passed_as_primals():
    x = leaf([1.0, 2.0])
    _, vjp_fn = engine.vjp(lambda t: t * t, x)
    (gx,) = vjp_fn(np.ones(2))
    np.testing.assert_array_equal(gx, [2.0, 4.0])
    assert x.grad is None


def test_vjp_takes_the_primals_as_separate_arguments_as_jax_and_torch_func():
    """vjp(f, *primals) (jax.vjp, torch.func.vjp); the old tuple form is a clear error,
    never f run on one stacked array."""
    a, b = np.array([1.0, 2.0]), np.array([3.0, 5.0])
    out, vjp_fn = engine.vjp(lambda x, y: x * y, a, b)
    np.testing.assert_array_equal(out.data, [3.0, 10.0])
    ga, gb = vjp_fn(np.ones(2))
    np.testing.assert_array_equal(ga, b)
    np.testing.assert_array_equal(gb, a)
    with pytest.raises(TypeError, match=r"^vjp: primal 0 is a tuple; pass each primal as its "
                                        r"own argument, vjp\(fn, x, y\)"):
        engine.vjp(lambda x: x * 2, (a,))
    with pytest.raises(TypeError, match=r"^vjp: primal 1 is a list"):
        engine.vjp(lambda x, y: x * y, a, [a, b])


# --- engine.jvp ---------------------------------------------------------------------------------

def test_jvp_equals_the_jacobian_times_the_tangent():
    # f(x) = tanh(x @ W + b) maps R^3 to R^2; J[i, j] = (1 - y_i^2) W[j, i].
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((3, 2)), rng.standard_normal(2)
    x, u = rng.standard_normal(3), rng.standard_normal(3)

    out, tangent = engine.jvp(lambda x: (x @ W + b).tanh(), (x,), (u,))

    y = np.tanh(x @ W + b)
    J = (1 - y ** 2)[:, None] * W.T
    assert J.shape == (2, 3)
    np.testing.assert_allclose(out.data, y, **TIGHT)
    np.testing.assert_allclose(tangent, J @ u, **TIGHT)
    assert isinstance(tangent, np.ndarray) and tangent.shape == (2,)


def test_jvp_with_respect_to_several_primals():
    # With tangents u for x and dW for W: d tanh(x @ W) = (1 - y^2) * (u @ W + x @ dW).
    rng = np.random.default_rng(3)
    x, W = rng.standard_normal(3), rng.standard_normal((3, 2))
    u, dW = rng.standard_normal(3), rng.standard_normal((3, 2))

    _, tangent = engine.jvp(lambda x, W: (x @ W).tanh(), (x, W), (u, dW))
    y = np.tanh(x @ W)
    np.testing.assert_allclose(tangent, (1 - y ** 2) * (u @ W + x @ dW), **TIGHT)


def test_jvp_of_a_function_with_tuple_outputs():
    x = np.array([1.0, 2.0, 3.0])
    u = np.array([0.5, -1.0, 2.0])
    (total, doubled), (t_total, t_doubled) = engine.jvp(lambda x: (x.sum(), x * 2.0), (x,), (u,))
    assert total.item() == 6.0
    np.testing.assert_array_equal(doubled.data, 2 * x)
    assert t_total == u.sum()
    np.testing.assert_array_equal(t_doubled, 2 * u)


def test_jvp_returns_output_tangents_that_share_no_memory():
    """``jvp(lambda a: (a, a.reshape(6)))``: the second tangent was a view of the first
    (reshape's rule reruns its forward on the tangent), so ``t1 *= 0`` zeroed t2 too; an
    output returned twice gave one array twice."""
    x, t = np.arange(6.0).reshape(2, 3), np.ones((2, 3))
    _, (t1, t2, t3) = engine.jvp(lambda a: (a, a.reshape(6), a), (x,), (t,))
    t1 *= 0.0
    assert t2.tolist() == [1.0] * 6 and t3.tolist() == [[1.0] * 3] * 2
    assert not np.shares_memory(t2, t3) and not np.shares_memory(t, t3)


def test_jvp_agrees_with_vjp():
    # <v, J u> from forward mode equals <J^T v, u> from reverse mode.
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    ua, ub = rng.standard_normal((2, 3)), rng.standard_normal((3, 4))
    v = rng.standard_normal((2, 4))

    _, tangent = engine.jvp(tanh_matmul, (a, b), (ua, ub))
    _, vjp_fn = engine.vjp(tanh_matmul, a, b)
    ga, gb = vjp_fn(v)
    np.testing.assert_allclose(np.sum(v * tangent), np.sum(ga * ua) + np.sum(gb * ub), **TIGHT)


def test_a_constant_operand_adds_nothing_to_a_jvp_even_where_its_partial_is_infinite():
    """A constant's tangent is zeros, and 0 * inf is NaN: jvp(1/x) at 0 was NaN where its
    VJP (and PyTorch's forward mode) is -inf; so were 2x at inf, x/0, and C @ x or
    linear(x, C) with an inf in the constant C. Reverse mode never forms such a term."""
    ones = np.ones(2)
    with np.errstate(divide="ignore"):
        _, t = engine.jvp(lambda a: 1.0 / a, [np.array([0.0, 2.0])], [ones])
        np.testing.assert_array_equal(t, [-np.inf, -0.25])
        _, t = engine.jvp(lambda a: a / 0.0, [np.array([1.0, -2.0])], [ones])
        np.testing.assert_array_equal(t, [np.inf, np.inf])          # d/da = 1/(+0)
    _, t = engine.jvp(lambda a: a * 2.0, [np.array([np.inf, 1.0])], [ones])
    np.testing.assert_array_equal(t, [2.0, 2.0])
    C = np.array([[np.inf, 1.0], [0.0, 1.0]])
    # OpenBLAS's kernels on some CPUs (AVX-512) raise the invalid flag for a product with
    # an inf operand though no element is NaN (numpy's own C @ ones does): not checked here.
    with np.errstate(invalid="ignore"):
        _, t = engine.jvp(lambda a: engine.Tensor(C) @ a, [np.ones((2, 3))], [np.ones((2, 3))])
        np.testing.assert_array_equal(t, C @ np.ones((2, 3)))
        _, t = engine.jvp(lambda v: engine.linear(v, engine.Tensor(C), engine.Tensor(ones)),
                          [np.ones((3, 2))], [np.ones((3, 2))])
        np.testing.assert_array_equal(t, np.ones((3, 2)) @ C)
        _, t = engine.jvp(lambda b: engine.linear(engine.Tensor(np.ones((3, 2))), engine.Tensor(C), b),
                          [ones], [np.array([1.0, 2.0])])
        np.testing.assert_array_equal(t, np.tile([1.0, 2.0], (3, 1)))  # the bias alone moves


def test_jvp_tangent_of_the_wrong_shape_is_a_value_error():
    with pytest.raises(ValueError, match=r"jvp: tangent 0 has shape \(2,\) but its primal has shape \(3,\)"):
        engine.jvp(lambda x: x * 2.0, (np.ones(3),), (np.ones(2),))


def test_jvp_needs_one_tangent_per_primal():
    with pytest.raises(ValueError, match="2 primals but 1 tangents"):
        engine.jvp(lambda x, y: x * y, (np.ones(3), np.ones(3)), (np.ones(3),))


def test_jvp_of_an_integer_primal_is_a_type_error():
    with pytest.raises(TypeError, match="jvp: primal 0 must be floating point"):
        engine.jvp(lambda x: x * 2.0, (np.arange(3),), (np.ones(3),))


# --- the example from the issue, exactly as written there ----------------------------------------

def test_the_issue_example():
    np.random.seed(0)   # the example draws from numpy's global generator; fix it for the test
    x = engine.Tensor(np.random.randn(4, 3), requires_grad=True, name="x")
    W = engine.Tensor(np.random.randn(3, 5), requires_grad=True, name="W")
    b = engine.Tensor(np.zeros(5), requires_grad=True, name="b")
    logits = (x @ W + b).tanh()
    loss = engine.softmax_cross_entropy(logits, np.array([0, 2, 1, 4]))
    loss.backward()
    assert W.grad.shape == W.shape and W.grad.dtype == W.dtype
    assert loss.node.op.name == "softmax_cross_entropy"

    # The same gradients by hand: delta = (softmax(logits) - onehot) / N at the loss,
    # times tanh' = 1 - logits^2, then the matmul rule.
    h = logits.data
    p = np.exp(h) / np.exp(h).sum(axis=1, keepdims=True)
    delta = (p - np.eye(5)[[0, 2, 1, 4]]) / 4 * (1 - h ** 2)
    np.testing.assert_allclose(W.grad, x.data.T @ delta, **TIGHT)
    np.testing.assert_allclose(b.grad, delta.sum(axis=0), **TIGHT)
    np.testing.assert_allclose(x.grad, delta @ W.data.T, **TIGHT)

    out, tangent = engine.jvp(lambda x: (x @ W).tanh().sum(), (x,), (np.ones((4, 3)),))

    np.testing.assert_allclose(out.item(), np.tanh(x.data @ W.data).sum(), **TIGHT)
    (g,) = engine.grad((x @ W).tanh().sum(), x)        # reverse mode, for comparison
    np.testing.assert_allclose(tangent, np.sum(g * np.ones((4, 3))), **TIGHT)


# --- wrong arguments are errors, never a broadcast or a truncated zip ---------------------------

def test_grad_outputs_must_match_the_outputs_in_number_and_exact_shape():
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    with pytest.raises(ValueError, match=r"^grad: gradient output 0 has shape \(1,\) but output 0 "
                                         r"has shape \(3,\)"):
        engine.grad(y, x, grad_outputs=np.ones(1), retain_graph=True)      # would broadcast
    with pytest.raises(ValueError, match=r"^grad: 2 gradient outputs for 1 outputs"):
        engine.grad(y, x, grad_outputs=(np.ones(3), np.ones(3)), retain_graph=True)
    with pytest.raises(ValueError, match=r"^grad: 1 gradient outputs for 2 outputs"):
        engine.grad((y, y * 3), x, grad_outputs=[np.ones(3)], retain_graph=True)
    with pytest.raises(TypeError, match=r"gradient output 0 must be numeric"):
        engine.grad(y, x, grad_outputs=np.array(["a", "b", "c"]), retain_graph=True)


def test_grad_of_an_input_that_does_not_require_grad_is_an_error():
    x, c = leaf([1.0, 2.0]), engine.Tensor([3.0, 4.0])
    with pytest.raises(RuntimeError, match=r"^grad: input 1 \(Tensor of shape \(2,\), dtype float64\) "
                                           r"does not require grad"):
        engine.grad((x * c).sum(), (x, c))
    with pytest.raises(TypeError, match=r"^grad: input 0 must be a Tensor, got ndarray"):
        engine.grad((x * c).sum(), np.ones(2))


def test_grad_of_an_input_used_only_where_no_gradient_flows_is_unused():
    z = leaf([[1.0, 2.0]])
    condition = leaf([[0.5, 0.5]])          # reaches the output only through a comparison
    out = engine.where(condition > 0, z, z * 2).sum()
    with pytest.raises(RuntimeError, match="input 1 .* is not used in the graph"):
        engine.grad(out, (z, condition), retain_graph=True)
    gz, gc = engine.grad(out, (z, condition), allow_unused=True)
    np.testing.assert_array_equal(gc, np.zeros((1, 2)))


def test_vjp_fn_checks_its_cotangents():
    out, vjp_fn = engine.vjp(lambda a: a * 2, np.ones(3))
    with pytest.raises(ValueError, match=r"^vjp: gradient output 0 has shape \(2,\)"):
        vjp_fn(np.ones(2))
    with pytest.raises(ValueError, match=r"^vjp: 2 gradient outputs for 1 outputs"):
        vjp_fn((np.ones(3), np.ones(3)))
    (g,) = vjp_fn(np.full(3, 0.5))
    np.testing.assert_array_equal(g, np.ones(3))


def test_vjp_gives_zeros_for_a_primal_the_function_ignores():
    _, vjp_fn = engine.vjp(lambda a, b: a * 3, np.ones(2), np.ones(4))
    ga, gb = vjp_fn(np.ones(2))
    np.testing.assert_array_equal(ga, [3.0, 3.0])
    np.testing.assert_array_equal(gb, np.zeros(4))


def test_jvp_checks_tangent_dtypes():
    with pytest.raises(TypeError, match=r"^jvp: tangent 0 must be numeric"):
        engine.jvp(lambda a: a * 2, (np.ones(2),), (np.array(["x", "y"]),))


def test_transforms_do_not_nest_silently():
    """jvp of a function using vjp's output (or vjp of jvp's) gave zero derivatives: the
    inner transform differentiated at a fresh copy of the outer one's leaf."""
    x = np.array([0.5, 1.0])

    def through_vjp(t):
        out, _ = engine.vjp(lambda a: a.exp(), t)
        return out

    def through_jvp(t):
        out, _ = engine.jvp(lambda a: a.exp(), (t,), (np.ones(2),))
        return out

    with pytest.raises(RuntimeError, match="transforms do not nest"):
        engine.jvp(through_vjp, (x,), (np.ones(2),))
    with pytest.raises(RuntimeError, match="transforms do not nest"):
        engine.vjp(through_jvp, x)
    # outside a transform a tensor that requires grad is a value, as before
    w = leaf([1.0, 2.0])
    _, tangent = engine.jvp(lambda a: a * a, (w,), (np.ones(2),))
    np.testing.assert_array_equal(tangent, [2.0, 4.0])


def test_jvp_keeps_a_list_of_outputs_a_list_and_refuses_a_tuple_primal():
    x = np.array([1.0, 2.0])
    outs, tangents = engine.jvp(lambda a: [a * 2, a * 3], (x,), (np.ones(2),))
    assert isinstance(outs, list) and isinstance(tangents, list)
    outs, tangents = engine.jvp(lambda a: (a * 2, a * 3), (x,), (np.ones(2),))
    assert isinstance(tangents, tuple)
    with pytest.raises(TypeError, match="jvp: primal 0 is a tuple"):
        engine.jvp(lambda a: a, ((x, x),), ((x, x),))


def test_a_backward_pass_inside_a_transformed_function_reaching_its_inputs_is_refused():
    """A Hessian-vector product written as jvp of grad returned 0 (JAX: [6, 0, 9] for
    sum(x**3) at [1, 0, 1.5] along [1, 1, 1]); vjp of it, and backward() inside, too."""
    x0, t0 = np.array([1.0, 0.0, 1.5]), np.ones(3)

    def grad_of_cube(x):
        return Tensor(engine.grad((x * x * x).sum(), [x])[0])

    def backward_inside(x):
        (x * x * x).sum().backward()
        return Tensor(x.grad)

    for fn in (grad_of_cube, backward_inside):
        with pytest.raises(RuntimeError, match="runs inside a function engine.jvp or vjp"):
            engine.jvp(fn, (x0,), (t0,))
        with pytest.raises(RuntimeError, match="runs inside a function engine.jvp or vjp"):
            engine.vjp(fn, x0)


def test_a_backward_pass_inside_a_transform_that_does_not_reach_its_inputs_runs():
    w = Tensor(np.array([2.0]), requires_grad=True)

    def fn(x):
        (w * w).sum().backward()                  # bookkeeping of its own: not through x
        return x * 3.0

    _, tangent = engine.jvp(fn, (np.array([1.0]),), (np.array([1.0]),))
    np.testing.assert_array_equal(tangent, [3.0])
    np.testing.assert_array_equal(w.grad, [4.0])
