"""The compute graph itself: what an op application records, how backward adds up the
gradients of a tensor used several times, how long the graph lives (retain_graph),
grad mode (no_grad / enable_grad), anomaly detection, and the checks the engine makes
on the derivative rules it runs.

The gradients here are small enough to compute by hand; each test says how."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.ops.elementwise import Add, Mul


def leaf(values, name=None):
    """A float64 leaf tensor that requires a gradient."""
    return engine.Tensor(np.array(values, dtype=np.float64), requires_grad=True, name=name)


# --- what a node records ------------------------------------------------------------------

def test_an_op_application_records_op_inputs_and_params():
    x = leaf(np.arange(6.0).reshape(2, 3))
    y = x.sum(axis=1, keepdims=True)

    node = y.node
    assert node is not None and not y.is_leaf
    assert node.op is engine.REGISTRY["sum"]
    assert node.op.name == "sum"
    assert len(node.inputs) == 1 and node.inputs[0] is x   # the input tensor itself, not a copy
    assert node.params == {"axis": (1,), "keepdims": True}   # axis as check() normalised it
    assert node.needs_input_grad == (True,)
    assert y.requires_grad


def test_a_binary_op_records_both_inputs_and_which_one_needs_a_gradient():
    x = leaf([1.0, 2.0])
    c = engine.Tensor([3.0, 4.0])                 # a constant: requires_grad=False

    assert (x * c).node.inputs[0] is x and (x * c).node.inputs[1] is c
    assert (x * c).node.needs_input_grad == (True, False)
    assert (c * x).node.needs_input_grad == (False, True)

    # A Python number becomes a constant tensor input (in x's dtype), not a parameter.
    node = (x * 2.0).node
    assert node.op.name == "mul" and node.params == {}
    assert node.inputs[0] is x
    assert isinstance(node.inputs[1], engine.Tensor) and not node.inputs[1].requires_grad
    assert node.inputs[1].data == 2.0 and node.inputs[1].dtype == np.float64


def test_leaves_have_no_node():
    assert leaf([1.0]).node is None and leaf([1.0]).is_leaf
    assert engine.Tensor([1.0]).node is None


def test_no_node_is_recorded_when_no_input_requires_grad():
    a, b = engine.Tensor([1.0, 2.0]), engine.Tensor([3.0, 4.0])
    y = (a * b).exp().sum()
    assert y.node is None and not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_a_constant_input_gets_no_gradient():
    x, c = leaf([1.0, 2.0]), engine.Tensor([3.0, 4.0])
    (x * c).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 4.0])
    assert c.grad is None


# --- gradient accumulation on fan-out -------------------------------------------------------

def test_x_times_x_accumulates_both_uses():
    # d(x*x)/dx = x + x = 2x: one contribution per use of x.
    x = leaf([1.0, -2.0, 3.0])
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0, 6.0])


def test_x_plus_x_gives_two():
    x = leaf([1.0, -2.0, 3.0])
    (x + x).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])


def test_diamond_graph():
    #        a
    #      /   \
    #  b = a^2   c = 3a
    #      \   /
    #    d = b * c  = 3 a^3
    # dd/db = c = 3a, dd/dc = b = a^2, dd/da = dd/db * 2a + dd/dc * 3 = 6a^2 + 3a^2 = 9a^2.
    a = leaf([1.0, 2.0, -0.5])
    b = a ** 2
    c = 3 * a
    b.retain_grad()
    c.retain_grad()
    d = b * c
    d.sum().backward()

    np.testing.assert_allclose(a.grad, 9 * a.data ** 2, rtol=1e-15)
    np.testing.assert_allclose(b.grad, 3 * a.data, rtol=1e-15)
    np.testing.assert_allclose(c.grad, a.data ** 2, rtol=1e-15)
    # retain_grad is what fills .grad of the intermediates; d did not ask for it.
    assert d.grad is None


def test_intermediate_tensors_have_no_grad_unless_retain_grad():
    x = leaf([1.0, 2.0])
    h = x.exp()
    h.sum().backward()
    assert h.grad is None
    np.testing.assert_allclose(x.grad, np.exp(x.data), rtol=1e-15)


def test_grads_accumulate_across_backward_calls_until_zero_grad():
    x = leaf([1.0, 2.0])
    for _ in range(3):
        (x * 3.0).sum().backward()       # a new graph each time; d/dx = 3
    np.testing.assert_array_equal(x.grad, [9.0, 9.0])

    x.zero_grad()
    assert x.grad is None
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 3.0])


def test_backward_with_an_explicit_gradient_for_a_non_scalar_output():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(np.array([1.0, 0.0, -1.0]))    # grad of <v, x*x> = 2 x v
    np.testing.assert_array_equal(x.grad, [2.0, 0.0, -6.0])

    with pytest.raises(ValueError, match="one element"):
        (x * x).backward()                     # no implied gradient for a vector


@pytest.mark.parametrize("order", ["w first", "x first"])
def test_a_seed_that_is_a_leafs_grad_is_read_as_it_was_when_backward_began(order):
    """``y.backward(x.grad)`` with ``y = w * 3 + x``: the seed went to x's branch and
    w's as one array, x.grad (that array) was accumulated in place first, and w's branch
    then read the doubled seed: w.grad 6 where 3 is right (PyTorch gives 6 too)."""
    x, w = leaf([1.0, 2.0, 3.0]), leaf([1.0, 1.0, 1.0])
    x.sum().backward()                                  # x.grad = [1, 1, 1]
    y = w * 3.0 + x if order == "w first" else x + w * 3.0
    seed = x.grad
    y.backward(seed)
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(w.grad, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(seed, [1.0, 1.0, 1.0])  # the seed as given: x.grad was
    assert x.grad is not seed                           # added to out of place this once


# --- deep graphs and topological order ---------------------------------------------------------

DEPTH = 100_000


def test_a_chain_of_100_000_ops_backpropagates_without_recursion():
    # y = x * c * c * ... * c (DEPTH times), so dy/dx = c^DEPTH. Python's recursion limit is
    # about 1,000, so a recursive walk would fail long before the end of this chain.
    x = leaf([1.0, 2.0])
    c = engine.Tensor(1.0000001)
    y = x
    for _ in range(DEPTH):
        y = y * c

    order = engine.topological_order([y])
    assert len(order) == DEPTH + 1            # x and every product (the constant c needs no grad)
    assert order[0] is x and order[-1] is y

    y.sum().backward()
    # The backward multiplies by c DEPTH times; each float64 product rounds by at most
    # 2**-53 (1.1e-16) relatively, so the result is within DEPTH * 1.1e-16 = 1.1e-11 of c**DEPTH.
    np.testing.assert_allclose(x.grad, [1.0000001 ** DEPTH] * 2, rtol=2e-11)


def test_topological_order_puts_inputs_before_outputs():
    a = leaf([1.0, 2.0], name="a")
    b = a.exp()
    c = a * 2.0
    d = b * c
    e = d + b                       # b is used twice, by d and by e

    order = engine.topological_order([e])
    position = {id(t): i for i, t in enumerate(order)}
    assert len(order) == len(position) == 5          # each tensor once
    for t in (b, c, d, e):
        for inp, needed in zip(t.node.inputs, t.node.needs_input_grad):
            if needed:
                assert position[id(inp)] < position[id(t)]
    assert order[-1] is e


def test_topological_order_skips_tensors_that_need_no_gradient():
    x, c = leaf([1.0]), engine.Tensor([5.0])
    y = (x * c).exp()
    order = engine.topological_order([y])
    assert len(order) == 3 and all(t is not c for t in order)
    assert order[0] is x and order[-1] is y


def _post_order(roots, everything):
    """The reference: micrograd's recursive depth-first post-order, inputs left to right."""
    order, seen = [], set()

    def visit(t):
        if id(t) in seen:
            return
        seen.add(id(t))
        if t.node is not None:
            for inp, needed in zip(t.node.inputs, t.node.needs_input_grad):
                if everything or needed:
                    visit(inp)
        order.append(t)

    for root in roots:
        visit(root)
    return order


GRAPHS = st.tuples(
    st.lists(st.booleans(), max_size=3),                # more leaves: requires_grad or not
    st.lists(st.tuples(st.sampled_from(["add", "mul", "tanh"]), st.integers(0, 40),
                       st.integers(0, 40)), min_size=1, max_size=25),
    st.lists(st.integers(0, 40), min_size=1, max_size=3))               # roots


@given(GRAPHS, st.booleans())
def test_topological_order_is_the_recursive_post_order(graph, everything):
    """On random graphs (shared inputs, constants, several roots), the iterative walk gives
    exactly the order of the recursive one: the order backward runs the rules in."""
    flags, ops, picks = graph
    pool = [engine.Tensor(np.zeros(2), requires_grad=flag) for flag in [True, False, True, *flags]]
    pool += [pool[1] + pool[0], pool[2].tanh()]     # a constant beside a leaf; another branch
    for name, i, j in ops:          # inputs counted from the newest tensor; zeros: no overflow
        a, b = pool[-1 - i % len(pool)], pool[-1 - j % len(pool)]
        pool.append(a.tanh() if name == "tanh" else getattr(engine, name)(a, b))
    roots = [pool[-1 - k % len(pool)] for k in picks]
    got = engine.topological_order(roots, everything=everything)
    assert [id(t) for t in got] == [id(t) for t in _post_order(roots, everything)]


# --- graph lifetime: retain_graph ------------------------------------------------------------

def test_retain_graph_allows_a_second_backward_that_doubles_the_grad():
    x = leaf([1.0, -2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    np.testing.assert_array_equal(x.grad, [2.0, -4.0])
    assert not y.node.freed
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, -8.0])
    assert y.node.freed


def test_a_second_backward_without_retain_graph_raises():
    x = leaf([1.0, -2.0])
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, -4.0])    # the failed call added nothing


def test_backward_frees_the_saved_buffers_of_every_node():
    x = leaf([0.5, 1.5])
    y = (x.exp() * x).tanh().sum()
    nodes = {t.node.op.name: t.node for t in engine.topological_order([y]) if t.node is not None}
    assert sorted(nodes) == ["exp", "mul", "sum", "tanh"]
    assert not any(n.freed for n in nodes.values())
    assert len(nodes["exp"].saved) == 1        # exp saved its output for the derivative
    y.backward()
    assert all(n.freed for n in nodes.values())


# --- grad mode -------------------------------------------------------------------------------

def test_no_grad_as_a_context_manager():
    x = leaf([1.0, 2.0])
    assert engine.is_grad_enabled()
    with engine.no_grad():
        assert not engine.is_grad_enabled()
        y = x * 2.0
    assert engine.is_grad_enabled()
    assert y.node is None and not y.requires_grad
    np.testing.assert_array_equal(y.data, [2.0, 4.0])    # the forward still runs


def test_no_grad_as_a_decorator():
    @engine.no_grad()
    def double(t):
        assert not engine.is_grad_enabled()
        return t * 2.0

    x = leaf([1.0, 2.0])
    for _ in range(2):                       # the decorator works on every call
        y = double(x)
        assert y.node is None and not y.requires_grad
        assert engine.is_grad_enabled()


def test_enable_grad_inside_no_grad():
    x = leaf([1.0, 2.0])
    with engine.no_grad():
        with engine.enable_grad():
            assert engine.is_grad_enabled()
            inner = x * 2.0
        assert not engine.is_grad_enabled()
        outer = x * 2.0
    assert inner.node is not None and inner.requires_grad
    assert outer.node is None
    inner.sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with engine.no_grad():
            _ = 1 / 0
    assert engine.is_grad_enabled()


# --- detect_anomaly ----------------------------------------------------------------------------

def test_detect_anomaly_names_the_op_whose_forward_produced_inf():
    x = leaf([0.0, 1.0])
    with np.errstate(divide="ignore"), engine.detect_anomaly():
        with pytest.raises(FloatingPointError, match="forward of op 'log'"):
            x.log()


def test_detect_anomaly_names_the_op_whose_backward_produced_inf():
    # sqrt(0) = 0 is finite, but its derivative 0.5 / sqrt(0) = 0.5 / 0 is infinite.
    x = leaf([0.0, 4.0])
    with np.errstate(divide="ignore"), engine.detect_anomaly():
        y = x.sqrt().sum()                  # the forward is fine
        with pytest.raises(FloatingPointError, match="backward of op 'sqrt'"):
            y.backward()


def test_detect_anomaly_blames_the_producer_not_the_ops_downstream():
    # exp receives an Inf that was already in its input: that is not exp's fault.
    x = leaf([np.inf, 0.0])
    with engine.detect_anomaly():
        y = x.exp()
    assert np.isinf(y.data[0])


def test_without_detect_anomaly_non_finite_values_pass_silently():
    x = leaf([0.0, 4.0])
    with np.errstate(divide="ignore"):
        assert x.log().data[0] == -np.inf
        x.sqrt().sum().backward()
    assert x.grad[0] == np.inf and x.grad[1] == 0.25


# --- the engine checks the rules it runs ---------------------------------------------------------

class AddWithoutSumTo(Add):
    """broken_add(a, b) = a + b, with a backward rule that forgets to sum the gradient
    back to each input's shape (it should call sum_to)."""

    name = "broken_add"

    def backward(self, ctx, grad):
        return grad, grad


class MulReturningOneGradient(Mul):
    """broken_mul(a, b) = a * b, with a backward rule that returns one gradient for two inputs."""

    name = "broken_mul"

    def backward(self, ctx, grad):
        a, b = ctx.saved
        return (grad * b,)


class MulWithScalarTangent(Mul):
    """broken_mul_jvp(a, b) = a * b, with a JVP rule that sums the tangent to a scalar."""

    name = "broken_mul_jvp"

    def jvp(self, ctx, da, db):
        a, b = ctx.saved
        return (da * b + a * db).sum()


def test_a_gradient_of_the_wrong_shape_is_an_error_naming_the_op(registered):
    broken_add = registered(AddWithoutSumTo)
    a = leaf([1.0, 2.0, 3.0])                       # shape (3,), broadcast against (2, 3)
    b = leaf(np.ones((2, 3)))
    y = broken_add(a, b).sum()
    with pytest.raises(RuntimeError, match=r"op 'broken_add'.*shape \(2, 3\) for input 0.*\(3,\)"):
        y.backward()


def test_a_backward_returning_the_wrong_number_of_gradients_is_an_error(registered):
    broken_mul = registered(MulReturningOneGradient)
    y = broken_mul(leaf([1.0]), leaf([2.0])).sum()
    with pytest.raises(RuntimeError, match=r"op 'broken_mul': backward returned 1 gradients for 2 inputs"):
        y.backward()


def test_a_tangent_of_the_wrong_shape_is_an_error_naming_the_op(registered):
    broken = registered(MulWithScalarTangent)
    with pytest.raises(RuntimeError, match=r"op 'broken_mul_jvp': its jvp rule returned shape \(\)"):
        engine.jvp(lambda a: broken(a, a), (np.ones(3),), (np.ones(3),))


def test_a_leaf_frozen_between_forward_and_backward_gets_no_grad():
    """requires_grad set to False after the forward pass: its .grad was filled anyway;
    PyTorch leaves it None (and engine.grad refuses it)."""
    x = engine.Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    w = engine.Tensor(np.array([1.0, 1.0, 1.0]), requires_grad=True)
    y = (x * w).sum()
    x.requires_grad = False
    y.backward()
    assert x.grad is None
    np.testing.assert_array_equal(w.grad, [1.0, 2.0, 3.0])
