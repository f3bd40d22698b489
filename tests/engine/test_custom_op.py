"""User-defined ops: a class with forward, backward (VJP) and jvp rules and a docstring,
registered with ``engine.register``, works like a built-in op (graph, backward, forward
mode, gradcheck) and is removed again with ``engine.unregister``. ``register`` refuses
ops it could not document or that would shadow another op.

Each test registers its op through a fixture that always unregisters it: the suite
checks that every op left in ``engine.REGISTRY`` has a test specification."""
from __future__ import annotations

import numpy as np
import pytest

import engine


class Cube(engine.Op):
    """cube(x) = x^3.   d/dx = 3 x^2."""

    name = "cube"

    def forward(self, ctx, x):
        ctx.save(x)
        return x ** 3

    def backward(self, ctx, grad):
        (x,) = ctx.saved
        return (grad * 3 * x ** 2,)

    def jvp(self, ctx, dx):
        (x,) = ctx.saved
        return dx * 3 * x ** 2


class SquaredDistance(engine.Op):
    """squared_distance(a, b) = (a - b)^2 elementwise, with numpy broadcasting.
    d/da = 2 (a - b), d/db = -2 (a - b), each summed back to its input's shape."""

    name = "squared_distance"

    def forward(self, ctx, a, b):
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.error(f"shapes {a.shape} and {b.shape} cannot be broadcast together") from None
        diff = a - b
        ctx.save(diff)
        return diff ** 2

    def backward(self, ctx, grad):
        (diff,) = ctx.saved
        a, b = ctx.inputs
        return (engine.sum_to(grad * 2 * diff, a.shape),
                engine.sum_to(grad * -2 * diff, b.shape))

    def jvp(self, ctx, da, db):
        (diff,) = ctx.saved
        return 2 * diff * (da - db)     # diff has the output's shape, so this broadcasts to it


class Scale(engine.Op):
    """scale(x, weights) = x * weights, where weights are fixed (not differentiable).
    d/dx = weights."""

    name = "scale"
    nondiff = (1,)

    def forward(self, ctx, x, weights):
        ctx.save(weights)
        return x * weights

    def backward(self, ctx, grad):
        (weights,) = ctx.saved
        return grad * weights, None

    def jvp(self, ctx, dx, dweights):
        assert dweights is None        # the engine never gives a tangent for a nondiff input
        (weights,) = ctx.saved
        return dx * weights


def leaf(values):
    return engine.Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# --- a unary op --------------------------------------------------------------------------------

def test_a_registered_op_is_in_the_registry_until_unregistered(registered):
    assert "cube" not in engine.REGISTRY
    cube = registered(Cube())
    assert isinstance(cube, Cube) and engine.REGISTRY["cube"] is cube
    engine.unregister("cube")
    assert "cube" not in engine.REGISTRY


def test_custom_op_forward_records_a_node(registered):
    cube = registered(Cube())
    x = leaf([1.0, -2.0])
    y = cube(x)
    np.testing.assert_array_equal(y.data, [1.0, -8.0])
    assert y.node.op is cube and y.node.inputs[0] is x
    assert "op=cube" in repr(y)
    # Numbers and arrays are accepted like in any op; without a gradient there is no node.
    np.testing.assert_array_equal(cube(np.array([2.0])).data, [8.0])
    assert cube(np.array([2.0])).node is None


def test_custom_op_backward(registered):
    cube = registered(Cube())
    x = leaf([1.0, 2.0, -0.5])
    cube(x).sum().backward()
    np.testing.assert_array_equal(x.grad, 3 * x.data ** 2)


def test_custom_op_inside_a_graph_of_built_in_ops(registered):
    # loss = sum(2 * cube(tanh(x))); d/dx = 2 * 3 tanh(x)^2 * (1 - tanh(x)^2).
    cube = registered(Cube())
    x = leaf([0.3, -1.2, 2.0])
    (cube(x.tanh()) * 2.0).sum().backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, 6 * t ** 2 * (1 - t ** 2), rtol=1e-14)


def test_custom_op_forward_mode(registered):
    cube = registered(Cube())
    x, u = np.array([1.0, 2.0, -0.5]), np.array([1.0, -1.0, 4.0])
    out, tangent = engine.jvp(cube, (x,), (u,))
    np.testing.assert_array_equal(out.data, x ** 3)
    np.testing.assert_array_equal(tangent, 3 * x ** 2 * u)


def test_custom_op_passes_gradcheck(registered):
    cube = registered(Cube())
    assert engine.gradcheck(cube, [np.array([0.5, -1.2, 2.0])], check_forward_mode=True)


# --- a binary op with broadcasting -------------------------------------------------------------

def test_two_input_op_sums_its_gradients_back_to_broadcast_shapes(registered):
    squared_distance = registered(SquaredDistance())
    a = leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])     # (2, 3)
    b = leaf([1.0, 0.0, -1.0])                        # (3,), broadcast over the rows
    squared_distance(a, b).sum().backward()

    diff = a.data - b.data
    np.testing.assert_array_equal(a.grad, 2 * diff)
    np.testing.assert_array_equal(b.grad, (-2 * diff).sum(axis=0))
    assert b.grad.shape == (3,)


def test_two_input_op_forward_mode_and_gradcheck(registered):
    squared_distance = registered(SquaredDistance())
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((1, 3))
    da, db = rng.standard_normal((2, 3)), rng.standard_normal((1, 3))

    _, tangent = engine.jvp(squared_distance, (a, b), (da, db))
    np.testing.assert_allclose(tangent, 2 * (a - b) * (da - db), rtol=1e-15)
    assert engine.gradcheck(squared_distance, [a, b], check_forward_mode=True)


def test_custom_op_errors_name_the_op(registered):
    squared_distance = registered(SquaredDistance())
    with pytest.raises(ValueError, match=r"^squared_distance: shapes \(2,\) and \(3,\)"):
        squared_distance(np.ones(2), np.ones(3))


# --- a non-differentiable input ----------------------------------------------------------------

def test_nondiff_input_gets_no_gradient(registered):
    scale = registered(Scale())
    x = leaf([1.0, 2.0])
    weights = leaf([3.0, -1.0])         # requires grad, but sits in a nondiff position
    y = scale(x, weights)
    assert y.node.needs_input_grad == (True, False)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, -1.0])
    assert weights.grad is None

    _, tangent = engine.jvp(lambda x: scale(x, weights), (x.data,), (np.ones(2),))
    np.testing.assert_array_equal(tangent, [3.0, -1.0])


# --- what register refuses ---------------------------------------------------------------------

def test_register_refuses_an_op_without_a_name():
    class Nameless(engine.Op):
        """nameless(x) = x."""

    with pytest.raises(ValueError, match="name"):
        engine.register(Nameless())


def test_register_refuses_an_op_without_a_docstring():
    class Undocumented(engine.Op):
        name = "undocumented"

    with pytest.raises(ValueError, match="docstring"):
        engine.register(Undocumented())
    assert "undocumented" not in engine.REGISTRY


def test_register_refuses_something_that_is_not_an_op():
    with pytest.raises(TypeError, match="Op instance"):
        engine.register(lambda x: x ** 3)
    with pytest.raises(TypeError, match="Op instance"):
        engine.register(Cube)            # the class, not an instance


def test_register_refuses_another_class_under_an_existing_name():
    class FakeAdd(engine.Op):
        """add(a, b) = a - b, a wrong op that would shadow the built-in add."""

        name = "add"

    built_in = engine.REGISTRY["add"]
    with pytest.raises(ValueError, match="already registered"):
        engine.register(FakeAdd())
    assert engine.REGISTRY["add"] is built_in


def test_registering_the_same_class_again_replaces_the_instance(registered):
    first = registered(Cube())
    second = registered(Cube())          # e.g. re-running a notebook cell
    assert engine.REGISTRY["cube"] is second and second is not first
