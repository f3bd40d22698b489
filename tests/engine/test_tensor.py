"""The Tensor API: array facts, conversions to numpy and Python numbers, detach, repr,
operators mixing tensors with numpy arrays and Python numbers on either side,
comparisons, and the shape methods (T, transpose, permute, reshape)."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine
from handgrad.engine import Tensor


def leaf(values, name=None):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True, name=name)


# --- array facts ---------------------------------------------------------------------------------

def test_shape_ndim_dtype_size():
    t = Tensor(np.zeros((2, 3, 4), dtype=np.float32))
    assert t.shape == (2, 3, 4)
    assert t.ndim == 3
    assert t.dtype == np.float32
    assert t.size == 24
    assert Tensor(5.0).shape == () and Tensor(5.0).ndim == 0 and Tensor(5.0).size == 1


def test_a_tensor_copies_the_array_it_wraps_unless_told_to_share_it():
    data = np.arange(3.0)
    t = Tensor(data)
    assert t.data is not data and not np.shares_memory(t.data, data)
    data[0] = 100.0                                     # the caller's array is theirs
    assert t.data[0] == 0.0 and t.numpy() is t.data
    shared = Tensor(data, copy=False)
    assert shared.data is data and engine.from_numpy(data).data is data
    assert engine.as_tensor(data).data is data and engine.as_tensor(t) is t
    assert Tensor(t).data is not t.data                 # a tensor is copied too
    assert Tensor([1, 2]).dtype.kind == "i"             # numpy's dtype for a list of ints
    assert Tensor([1, 2], dtype=np.float32).dtype == np.float32


def test_only_floating_point_tensors_can_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require grad"):
        Tensor([1, 2], requires_grad=True)


def test_len():
    assert len(Tensor(np.zeros((4, 2)))) == 4
    with pytest.raises(TypeError, match="0-d"):
        len(Tensor(1.0))


def test_iterating_a_0d_tensor_is_an_error_as_in_numpy():
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        list(Tensor(2.0))
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(Tensor(np.float32(2.0), requires_grad=True))


def test_iterating_gives_the_rows_in_the_graph():
    x = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    rows = list(x)
    assert [r.shape for r in rows] == [(2,)] * 3
    np.testing.assert_array_equal(rows[2].data, [4.0, 5.0])
    assert rows[0].node.op.name == "getitem"
    (rows[0] * 10 + rows[2]).sum().backward()
    np.testing.assert_array_equal(x.grad, [[10.0, 10.0], [0.0, 0.0], [1.0, 1.0]])
    assert list(Tensor(np.zeros((0, 3)))) == []


# --- conversions ------------------------------------------------------------------------------------

def test_item_float_int():
    assert Tensor(2.5).item() == 2.5
    assert Tensor([[7.0]]).item() == 7.0                 # any shape with one element
    assert float(Tensor([2.5])) == 2.5
    assert int(Tensor([[3.0]])) == 3
    assert isinstance(float(Tensor(np.float32(1.5))), float)


def test_item_of_several_elements_is_an_error():
    with pytest.raises(ValueError, match=r"item: only a tensor with one element.*shape \(2,\)"):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(ValueError, match="one element"):
        float(Tensor([1.0, 2.0]))


def test_numpy_conversion_with_asarray():
    t = Tensor(np.arange(4.0))
    assert np.asarray(t) is t.data                       # no copy
    as32 = np.asarray(t, dtype=np.float32)
    assert as32.dtype == np.float32
    np.testing.assert_array_equal(as32, [0.0, 1.0, 2.0, 3.0])
    # copy=False with a dtype that needs a copy: numpy 2's ValueError, not a detached copy
    with pytest.raises(ValueError, match=r"np.asarray\(copy=False\): .* needs a copy to "
                                         r"become float32"):
        np.asarray(t, dtype=np.float32, copy=False)
    assert np.asarray(t, dtype=np.float64, copy=False) is t.data


def test_detach_shares_data_and_drops_the_graph():
    x = leaf([1.0, 2.0])
    y = x * 2.0
    d = y.detach()
    assert d.data is y.data
    assert d.node is None and not d.requires_grad and d.grad is None
    assert (d * x).node.needs_input_grad == (False, True)   # a constant from now on


def test_repr_shows_values_dtype_name_and_op():
    w = leaf([1.0, 2.0], name="w")
    r = repr(w)
    assert r.startswith("Tensor([1., 2.]") and "float64" in r
    assert "name='w'" in r and "requires_grad=True" in r
    assert "op=mul" in repr(w * 2.0)
    assert "op=" not in repr(Tensor([1.0]))


# --- operators ------------------------------------------------------------------------------------

def test_operators_between_tensors():
    a, b = Tensor([6.0, 8.0]), Tensor([2.0, 4.0])
    np.testing.assert_array_equal((a + b).data, [8.0, 12.0])
    np.testing.assert_array_equal((a - b).data, [4.0, 4.0])
    np.testing.assert_array_equal((a * b).data, [12.0, 32.0])
    np.testing.assert_array_equal((a / b).data, [3.0, 2.0])
    np.testing.assert_array_equal((b ** b).data, [4.0, 256.0])
    np.testing.assert_array_equal((-a).data, [-6.0, -8.0])
    np.testing.assert_array_equal((+a).data, [6.0, 8.0])
    np.testing.assert_array_equal(abs(Tensor([-1.0, 2.0])).data, [1.0, 2.0])
    assert (a @ b).item() == 6.0 * 2.0 + 8.0 * 4.0


@pytest.mark.parametrize("other", [2.0, 2, np.float64(2.0), np.array([2.0, 2.0])],
                         ids=["float", "int", "numpy scalar", "numpy array"])
def test_operators_with_numbers_and_arrays_on_either_side(other):
    t = Tensor([1.0, 4.0])
    cases = {
        "t + o": (t + other, [3.0, 6.0]), "o + t": (other + t, [3.0, 6.0]),
        "t - o": (t - other, [-1.0, 2.0]), "o - t": (other - t, [1.0, -2.0]),
        "t * o": (t * other, [2.0, 8.0]), "o * t": (other * t, [2.0, 8.0]),
        "t / o": (t / other, [0.5, 2.0]), "o / t": (other / t, [2.0, 0.5]),
        "t ** o": (t ** other, [1.0, 16.0]), "o ** t": (other ** t, [2.0, 16.0]),
    }
    for expr, (result, expected) in cases.items():
        assert isinstance(result, Tensor), expr       # never a numpy array of Tensors
        assert result.dtype == np.float64, expr
        np.testing.assert_array_equal(result.data, expected, err_msg=expr)


def test_numpy_array_on_the_left_gives_a_tensor():
    t = Tensor([1.0, 2.0, 3.0])
    result = np.ones(3) + t
    assert isinstance(result, Tensor)
    np.testing.assert_array_equal(result.data, [2.0, 3.0, 4.0])
    assert isinstance(np.eye(3) @ t, Tensor)


def test_reflected_operators_differentiate_the_tensor_on_the_right():
    # d(2 - t)/dt = -1, d(2 / t)/dt = -2 / t^2, d(2 ** t)/dt = 2^t log 2.
    t = leaf([1.0, 2.0])
    (g_sub,) = engine.grad((2 - t).sum(), t)
    (g_div,) = engine.grad((2 / t).sum(), t)
    (g_pow,) = engine.grad((2 ** t).sum(), t)
    np.testing.assert_array_equal(g_sub, [-1.0, -1.0])
    np.testing.assert_allclose(g_div, -2 / t.data ** 2, rtol=1e-15)
    np.testing.assert_allclose(g_pow, 2 ** t.data * np.log(2), rtol=1e-15)


def test_a_number_keeps_a_float32_tensor_float32():
    t = Tensor(np.array([1.0, 2.0], dtype=np.float32))
    for result in (t + 1.5, 1.5 * t, 2 - t, np.float64(3.0) / t, t ** 2):
        assert result.dtype == np.float32


# --- comparisons and hashing -------------------------------------------------------------------------

def test_comparisons_give_boolean_tensors():
    t = Tensor([1.0, 2.0, 3.0])
    other = Tensor([3.0, 2.0, 1.0])
    for result, expected in [(t < 2, [True, False, False]), (t <= 2, [True, True, False]),
                             (t > other, [False, False, True]), (t >= other, [False, True, True]),
                             (t < np.array([2.0, 2.0, 2.0]), [True, False, False])]:
        assert isinstance(result, Tensor) and result.dtype == bool
        assert result.node is None and not result.requires_grad
        np.testing.assert_array_equal(result.data, expected)
    # a comparison is a valid condition for where()
    np.testing.assert_array_equal(engine.where(t > 1.5, t, 0.0).data, [0.0, 2.0, 3.0])


def test_tensors_stay_hashable_and_compare_elementwise():
    a, b = Tensor([1.0, 2.0]), Tensor([1.0, 3.0])
    table = {a: "a", b: "b"}
    assert table[a] == "a" and table[b] == "b"
    assert len({a, b, a}) == 2
    for result, want in ((a == b, [True, False]), (a != b, [False, True]),
                         (a == 2.0, [False, True]), (2.0 == a, [False, True]),
                         (a != np.array([1.0, 0.0]), [False, True])):
        assert isinstance(result, Tensor) and result.dtype == np.bool_
        np.testing.assert_array_equal(result.data, want)
    assert (a == a).data.all()
    with pytest.raises(ValueError, match="ambiguous"):
        bool(a == b)                                  # as in numpy: no silent truth value


# --- shape methods -----------------------------------------------------------------------------------

def test_T_and_transpose():
    t = Tensor(np.arange(6.0).reshape(2, 3))
    for result in (t.T, t.transpose(), t.transpose(1, 0), t.transpose((1, 0))):
        assert result.shape == (3, 2)
        np.testing.assert_array_equal(result.data, t.data.T)


def test_transpose_and_permute_with_explicit_axes():
    data = np.arange(24.0).reshape(2, 3, 4)
    t = Tensor(data)
    for result in (t.permute(2, 0, 1), t.permute((2, 0, 1)), t.transpose(2, 0, 1),
                   engine.transpose(t, (2, 0, 1)), engine.transpose(t, axes=[2, 0, 1])):
        assert result.shape == (4, 2, 3)
        np.testing.assert_array_equal(result.data, data.transpose(2, 0, 1))
    assert t.T.shape == (4, 3, 2)                         # T reverses all axes


def test_permute_of_a_one_dimensional_tensor():
    t = Tensor([1.0, 2.0, 3.0])
    for result in (t.permute(0), t.transpose(0), t.permute((0,)), engine.transpose(t, (0,))):
        np.testing.assert_array_equal(result.data, t.data)


def test_reshape_takes_separate_ints_or_one_tuple():
    t = Tensor(np.arange(6.0))
    for result in (t.reshape(2, 3), t.reshape((2, 3)), t.reshape([2, 3]), t.reshape(2, -1)):
        assert result.shape == (2, 3)
        np.testing.assert_array_equal(result.data, np.arange(6.0).reshape(2, 3))
    assert t.reshape(6).shape == (6,)
    with pytest.raises(ValueError, match=r"^reshape: cannot reshape"):
        t.reshape(4, 2)


def test_shape_methods_record_their_op():
    x = leaf(np.ones((2, 3)))
    assert x.T.node.op.name == "transpose"
    assert x.permute(1, 0).node.op.name == "transpose"
    assert x.reshape(3, 2).node.op.name == "reshape"
    assert x.reshape(3, 2).node.params == {"shape": (3, 2)}


@pytest.mark.parametrize("axes", [(1.7, 0.2), (True, False), "10"])
def test_transpose_axes_must_be_ints(axes):
    """int() truncated 1.7 to 1 and read "10" as (1, 0): silently a transpose; numpy and
    torch raise TypeError."""
    with pytest.raises(TypeError, match="transpose: axes must be a sequence of ints"):
        Tensor(np.zeros((2, 3))).permute(axes)


def test_astype_of_a_tensor_that_requires_grad_is_refused_in_a_recorded_graph():
    """astype makes a new leaf: (h + h.astype(float64)).sum().backward() gave w.grad 3 where
    it is 6 (torch's .to(dtype) is differentiable); a parameter's copy took its gradient
    and the parameter none. Outside the graph (no_grad, detach) it converts as before."""
    w = Tensor([1.0, 2.0], requires_grad=True)
    h = w * 3
    for t in (h, w):
        with pytest.raises(RuntimeError, match="astype: .* requires grad, and astype makes a new leaf"):
            t.astype(np.float32)
    assert h.detach().astype(np.float32).dtype == np.float32
    with engine.no_grad():
        assert w.astype(np.float32).dtype == np.float32
    assert Tensor([1, 2]).astype(np.float64).dtype == np.float64
