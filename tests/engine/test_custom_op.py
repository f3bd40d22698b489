"""User-defined ops: one class with forward, backward (VJP) and jvp rules, a docstring and
a ``rule``, registered with ``@engine.register``, works like a built-in op (engine.<name>,
a Tensor method, graph, backward, forward mode, gradcheck, positional parameters bound by
the signature) and is removed again with ``engine.unregister``. ``register`` refuses, with
the reason, every op that breaks the contract.

Each test registers its op through a fixture that always unregisters it: the suite
checks that every op left in ``engine.REGISTRY`` has a test specification."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine


class Cube(engine.Op):
    """cube(x) = x^3, elementwise."""

    name = "cube"
    rule = "d/dx = 3 x^2"

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
    """squared_distance(a, b) = (a - b)^2 elementwise, with numpy broadcasting."""

    name = "squared_distance"
    rule = "d/da = 2 (a - b), d/db = -2 (a - b), each summed back to its input's shape"

    def check(self, a, b):
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise self.error(f"shapes {a.shape} and {b.shape} cannot be broadcast together") from None

    def forward(self, ctx, a, b):
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
    """scale(x, weights) = x * weights, where weights are fixed (not differentiable)."""

    name = "scale"
    rule = "d/dx = weights"
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


class SoftClip(engine.Op):
    """soft_clip(x, limit=1.0, sharpness=1.0) = limit * tanh(sharpness * x / limit): two
    parameters, keyword-only in forward."""

    name = "soft_clip"
    rule = "d/dx = sharpness (1 - tanh(sharpness x / limit)^2)"

    def check(self, x, *, limit=1.0, sharpness=1.0):
        if not limit > 0:
            raise self.error(f"limit must be positive, got {limit}")

    def forward(self, ctx, x, *, limit=1.0, sharpness=1.0):
        t = np.tanh(sharpness * x / limit)
        ctx.save(t)
        return limit * t

    def backward(self, ctx, grad):
        (t,) = ctx.saved
        return (grad * ctx.params["sharpness"] * (1 - t * t),)

    def jvp(self, ctx, dx):
        (t,) = ctx.saved
        return dx * ctx.params["sharpness"] * (1 - t * t)


class Double(engine.Op):
    """double(x) = 2 x: linear, so it needs no jvp rule (J u = double(u))."""

    name = "double"
    rule = "d/dx = 2"
    linear = True

    def forward(self, ctx, x):
        return 2 * x

    def backward(self, ctx, grad):
        return (2 * grad,)


def leaf(values):
    return engine.Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# --- registering: the registry, engine.<name>, the Tensor method ------------------------------

def test_the_decorator_registers_exports_and_unregister_removes_everything(registered):
    assert "cube" not in engine.REGISTRY and not hasattr(engine, "cube")
    cube = registered(Cube, method=True)
    assert isinstance(cube, Cube) and engine.REGISTRY["cube"] is cube and engine.cube is cube
    x = leaf([1.0, 2.0])
    np.testing.assert_array_equal(x.cube().data, [1.0, 8.0])       # the attached method
    engine.unregister("cube")
    assert "cube" not in engine.REGISTRY and not hasattr(engine, "cube")
    assert not hasattr(engine.Tensor, "cube")


def test_used_as_a_plain_decorator_it_returns_the_class():
    try:
        decorated = engine.register(Cube)
        assert decorated is Cube and isinstance(engine.cube, Cube)
    finally:
        engine.unregister("cube")


def test_every_built_in_public_op_is_exactly_its_registered_object():
    for name, op in engine.REGISTRY.items():
        assert getattr(engine, name) is op, name
    assert engine.pow is engine.REGISTRY["pow"] and engine.dropout is engine.REGISTRY["dropout"]
    for gone in ("power", "pow_tensor", "dropout_op", "permute"):
        assert not hasattr(engine, gone), gone


def test_custom_op_forward_records_a_node(registered):
    cube = registered(Cube)
    x = leaf([1.0, -2.0])
    y = cube(x)
    np.testing.assert_array_equal(y.data, [1.0, -8.0])
    assert y.node.op is cube and y.node.inputs[0] is x
    assert "op=cube" in repr(y)
    # Numbers and arrays are accepted like in any op; without a gradient there is no node.
    np.testing.assert_array_equal(cube(np.array([2.0])).data, [8.0])
    assert cube(np.array([2.0])).node is None


def test_custom_op_backward_and_forward_mode(registered):
    cube = registered(Cube)
    x = leaf([1.0, 2.0, -0.5])
    (cube(x.tanh()) * 2.0).sum().backward()
    t = np.tanh(x.data)
    np.testing.assert_allclose(x.grad, 6 * t ** 2 * (1 - t ** 2), rtol=1e-14)
    u = np.array([1.0, -1.0, 4.0])
    out, tangent = engine.jvp(cube, (x.data,), (u,))
    np.testing.assert_array_equal(tangent, 3 * x.data ** 2 * u)
    assert engine.gradcheck(cube, [np.array([0.5, -1.2, 2.0])], check_forward_mode=True)


# --- parameters: keyword-only in forward, bound once from the signature -------------------------

def test_a_parameter_passed_positionally_binds_by_the_signature(registered):
    soft_clip = registered(SoftClip)
    x = leaf([0.5, -3.0])
    by_keyword = soft_clip(x, limit=2.0, sharpness=3.0)
    by_position = soft_clip(x, 2.0, 3.0)
    mixed = soft_clip(x, 2.0, sharpness=3.0)
    for out in (by_position, mixed):
        np.testing.assert_array_equal(out.data, by_keyword.data)
        assert len(out.node.inputs) == 1                       # never a phantom graph input
        assert out.node.params == {"limit": 2.0, "sharpness": 3.0}
    by_position.sum().backward()
    np.testing.assert_allclose(x.grad, 3.0 * (1 - np.tanh(1.5 * x.data) ** 2), rtol=1e-14)
    assert soft_clip(x).node.params == {"limit": 1.0, "sharpness": 1.0}   # the defaults


def test_calls_that_do_not_fit_the_signature_are_type_errors_naming_the_op(registered):
    soft_clip = registered(SoftClip)
    x = leaf([0.5])
    with pytest.raises(TypeError, match=r"^soft_clip: takes inputs \(x\) and parameters "
                                        r"\(limit=1.0, sharpness=1.0\), got 4 positional"):
        soft_clip(x, 1.0, 2.0, 3.0)
    with pytest.raises(TypeError, match=r"^soft_clip: unexpected keyword argument 'slope'"):
        soft_clip(x, slope=2.0)
    with pytest.raises(TypeError, match=r"^soft_clip: got two values for parameter 'limit'"):
        soft_clip(x, 2.0, limit=3.0)
    with pytest.raises(TypeError, match=r"^soft_clip: missing 'x'"):
        soft_clip(limit=2.0)


def test_a_built_in_parameter_passed_positionally_is_a_parameter():
    x = leaf([-1.0, 2.0])
    y = engine.leaky_relu(x, 0.2)
    assert len(y.node.inputs) == 1 and y.node.params == {"negative_slope": 0.2}
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [0.2, 1.0])
    np.testing.assert_array_equal(engine.clip(x, 0, 1).data, [0.0, 1.0])
    np.testing.assert_array_equal(engine.sum(x, 0).data, 1.0)
    with pytest.raises(TypeError, match=r"^leaky_relu: takes inputs \(x\) and parameters "
                                        r"\(negative_slope=0.01\), got 3 positional"):
        engine.leaky_relu(x, 0.2, 0.3)


def test_the_check_hook_runs_before_forward(registered):
    soft_clip = registered(SoftClip)
    with pytest.raises(ValueError, match=r"^soft_clip: limit must be positive, got -1"):
        soft_clip(leaf([0.5]), limit=-1.0)


class Positive(engine.Op):
    """positive(x) = x, for x >= 0 only: a value-reading validation."""

    name = "positive"
    rule = "d/dx = 1"
    linear = True

    def check(self, x):
        if x.ndim != 1:
            raise self.error(f"needs a vector, got shape {x.shape}")

    def validate(self, x):
        if (x < 0).any():
            raise self.error(f"needs x >= 0, got {x.min()}")

    def forward(self, ctx, x):
        return x.copy()

    def backward(self, ctx, grad):
        return (grad,)


def test_the_validate_hook_runs_after_check_and_before_forward_on_every_call(registered):
    positive = registered(Positive)
    np.testing.assert_array_equal(positive(leaf([0.0, 2.0])).data, [0.0, 2.0])
    with pytest.raises(ValueError, match=r"^positive: needs x >= 0, got -1.0"):
        positive(leaf([1.0, -1.0]))
    with pytest.raises(ValueError, match=r"^positive: needs a vector, got shape \(1, 1\)"):
        positive(leaf([[-1.0]]))                  # check first: validate may trust shapes


def test_an_array_parameter_is_copied_when_the_node_is_made(registered):
    soft_clip = registered(SoftClip)
    limit = np.array(2.0)
    out = soft_clip(leaf([0.5]), limit=limit)
    limit[...] = 100.0                                          # the caller changes theirs
    assert out.node.params["limit"] == 2.0


# --- linear ops need no JVP rule ----------------------------------------------------------------

def test_a_linear_op_gets_its_jvp_from_its_forward(registered):
    double = registered(Double)
    x, u = np.array([1.0, -2.0]), np.array([0.5, 4.0])
    _, tangent = engine.jvp(lambda x: double(x).sum(), (x,), (u,))
    assert tangent == pytest.approx(2 * u.sum())
    assert engine.jvpcheck(double, [x])


def test_built_in_linear_ops_share_the_jvp_rule():
    shared = engine.Op.jvp
    linear = {name for name, op in engine.REGISTRY.items() if op.linear}
    assert linear >= {"add", "sub", "neg", "sum", "mean", "reshape", "flatten", "transpose",
                      "getitem", "concat", "stack", "broadcast_to", "where"}
    for name in linear:
        assert type(engine.REGISTRY[name]).jvp is shared, name


# --- broadcasting and non-differentiable inputs -------------------------------------------------

def test_two_input_op_sums_its_gradients_back_to_broadcast_shapes(registered):
    squared_distance = registered(SquaredDistance)
    a = leaf([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])     # (2, 3)
    b = leaf([1.0, 0.0, -1.0])                        # (3,), broadcast over the rows
    squared_distance(a, b).sum().backward()
    diff = a.data - b.data
    np.testing.assert_array_equal(a.grad, 2 * diff)
    np.testing.assert_array_equal(b.grad, (-2 * diff).sum(axis=0))
    rng = np.random.default_rng(0)
    assert engine.gradcheck(squared_distance, [rng.standard_normal((2, 3)), rng.standard_normal((1, 3))],
                            check_forward_mode=True)
    with pytest.raises(ValueError, match=r"^squared_distance: shapes \(2,\) and \(3,\)"):
        squared_distance(np.ones(2), np.ones(3))


def test_nondiff_input_gets_no_gradient(registered):
    scale = registered(Scale)
    x = leaf([1.0, 2.0])
    weights = leaf([3.0, -1.0])         # requires grad, but sits in a nondiff position
    y = scale(x, weights)
    assert y.node.needs_input_grad == (True, False)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, -1.0])
    assert weights.grad is None
    _, tangent = engine.jvp(lambda x: scale(x, weights), (x.data,), (np.ones(2),))
    np.testing.assert_array_equal(tangent, [3.0, -1.0])


def test_refuses_grad_makes_a_nondiff_input_that_requires_grad_an_error(registered):
    class Strict(Scale):
        """scale(x, weights) = x * weights; weights that require grad are refused."""
        refuses_grad = (1,)
    strict = registered(Strict)
    x, weights = leaf([1.0, 2.0]), leaf([3.0, -1.0])
    with pytest.raises(ValueError, match=r"^scale: input 1 \(weights\) requires grad, but scale "
                                         r"does not differentiate it"):
        strict(x, weights)
    np.testing.assert_array_equal(strict(x, weights.detach()).data, [3.0, -2.0])


# --- what register refuses ----------------------------------------------------------------------

def _op(name="bad", rule="d/dx = 1", doc="bad(x) = x.", forward=None, jvp=True, **attrs):
    body = {"__doc__": doc, "name": name, "rule": rule,
            "forward": forward or (lambda self, ctx, x: x),
            "backward": lambda self, ctx, grad: (grad,), **attrs}
    if jvp:
        body["jvp"] = lambda self, ctx, dx: dx
    return type("Bad", (engine.Op,), body)


@pytest.mark.parametrize("cls, message", [
    (_op(name=""), "needs a `name` that is a Python identifier"),
    (_op(name="two words"), "needs a `name` that is a Python identifier"),
    (_op(doc=""), "needs a docstring"),
    (_op(rule=""), "needs a `rule`"),
    (_op(rule="d/dx = 1\nand more"), "needs a `rule`"),
    (_op(jvp=False), "defines no jvp rule"),
    (_op(nondiff=(1,)), r"nondiff \(1,\) names positions outside its inputs"),
    (_op(refuses_grad=(0,)), r"refuses_grad \(0,\) names positions that are not nondiff \(\)"),
    (_op(name="grad"), r"op name 'grad' is taken by engine.grad"),
    (_op(check_values=True), r"sets check_values, which handgrad no longer reads: `check` "
                             r"reads shapes, dtypes and parameters only; move validation that "
                             r"reads values into a `validate"),
])
def test_register_refuses_an_op_that_breaks_the_contract(cls, message):
    with pytest.raises(ValueError, match=message):
        engine.register(cls)
    assert cls.name not in engine.REGISTRY or cls.name == ""


@pytest.mark.parametrize("forward, message", [
    (lambda self, ctx, x, **params: x, r"\*\*params is not allowed"),
    (lambda self, ctx, x, slope=0.1: x, "may default only to None"),
    (lambda self, ctx: 0, "needs at least one input"),
])
def test_register_refuses_a_forward_that_breaks_the_signature_rules(forward, message):
    with pytest.raises(TypeError, match=message):
        engine.register(_op(forward=forward))


def test_register_refuses_something_that_is_not_an_op_class():
    with pytest.raises(TypeError, match="class decorator"):
        engine.register(lambda x: x ** 3)
    with pytest.raises(TypeError, match="class decorator"):
        engine.register(Cube())           # an instance: decorate the class instead


def test_register_refuses_another_class_under_an_existing_name():
    class FakeAdd(engine.Op):
        """add(a, b) = a - b, a wrong op that would shadow the built-in add."""

        name = "add"
        rule = "d/da = 1, d/db = -1"

        def forward(self, ctx, a, b):
            return a - b

        def backward(self, ctx, grad):
            return grad, -grad

        def jvp(self, ctx, da, db):
            return da - db

    built_in = engine.REGISTRY["add"]
    with pytest.raises(ValueError, match="already registered"):
        engine.register(FakeAdd)
    assert engine.REGISTRY["add"] is built_in and engine.add is built_in


def test_registering_the_same_class_again_replaces_the_op(registered):
    first = registered(Cube)
    second = registered(Cube)          # e.g. re-running a notebook cell
    assert engine.REGISTRY["cube"] is second and engine.cube is second and second is not first
