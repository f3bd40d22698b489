"""Bad input gets a clear error raised by handgrad, naming the op and the shapes, dtypes or
values at fault, before numpy can fail confusingly or broadcast silently."""
from __future__ import annotations

import re

import numpy as np
import pytest

from handgrad import engine

T = engine.Tensor


def t(*shape, dtype=np.float64, grad=False):
    return T(np.ones(shape, dtype=dtype), requires_grad=grad)


@pytest.mark.parametrize("make,error,pattern", [
    # matmul
    (lambda: t(4, 3) @ t(4, 5), ValueError, r"matmul: inner dimensions do not match: shapes \(4, 3\) and \(4, 5\) \(3 != 4\)"),
    (lambda: t(3) @ t(4), ValueError, r"matmul: inner dimensions .*\(3,\) and \(4,\)"),
    (lambda: engine.matmul(t(), t(3)), ValueError, r"matmul: operands must have at least 1 dimension"),
    (lambda: t(2, 2, 3) @ t(3, 3, 4), ValueError, r"matmul: shapes \(2,\) and \(3,\) cannot be broadcast"),
    # broadcasting
    (lambda: t(2, 3) + t(4), ValueError, r"add: shapes \(2, 3\) and \(4,\) cannot be broadcast together"),
    (lambda: t(2, 3) * t(3, 2), ValueError, r"mul: shapes \(2, 3\) and \(3, 2\)"),
    (lambda: engine.where(np.ones((2, 3), bool), t(2, 3), t(4)), ValueError, r"where: shapes"),
    (lambda: engine.where(np.ones(3), t(3), t(3)), TypeError, r"where: condition must be boolean"),
    (lambda: engine.broadcast_to(t(3), (2, 4)), ValueError, r"broadcast_to: shapes \(3,\) and \(2, 4\)"),
    (lambda: engine.broadcast_to(t(2, 3), (3,)), ValueError, r"broadcast_to"),
    # shapes and axes
    (lambda: t(2, 3).reshape(4, 2), ValueError, r"reshape: cannot reshape a tensor of shape \(2, 3\) \(6 elements\) into shape \(4, 2\)"),
    (lambda: t(2, 3).sum(axis=2), ValueError, r"sum: axis 2 is out of range for a tensor with 2 dimension"),
    (lambda: t(2, 3).mean(axis=-3), ValueError, r"mean: axis -3 is out of range"),
    (lambda: t(2, 3).max(axis=(0, 0)), ValueError, r"max: repeated axis"),
    (lambda: t(2, 3).sum(axis=1.5), TypeError, r"sum: axis must be an int"),
    (lambda: engine.softmax(t(2, 3), axis=2), ValueError, r"softmax: axis 2 is out of range"),
    (lambda: engine.logsumexp(t(2), axis=1), ValueError, r"logsumexp: axis 1 is out of range"),
    (lambda: engine.concat([t(2, 3), t(2, 4)], axis=0), ValueError, r"concat: all shapes must match except along axis 0"),
    (lambda: engine.concat([t(2, 3)], axis=2), ValueError, r"concat: axis 2 is out of range"),
    (lambda: engine.stack([t(2), t(3)]), ValueError, r"stack: all tensors must have the same shape"),
    (lambda: engine.transpose(t(2, 3), (0, 0)), ValueError, r"transpose: axes \(0, 0\) are not a permutation"),
    (lambda: engine.flatten(t(2, 3, 4), start_dim=2, end_dim=1), ValueError, r"flatten: start_dim 2 comes after end_dim 1"),
    # an axis that must be one int: None and tuples raised a bare unpacking error, (1,) was
    # taken as 1, and a 0-d input's dims were never checked (numpy and torch refuse them)
    (lambda: engine.concat([t(2, 3), t(2, 3)], axis=None), TypeError, r"concat: axis must be an int, got None"),
    (lambda: engine.concat([t(2, 3), t(2, 3)], axis=(1,)), TypeError, r"concat: axis must be an int, got \(1,\)"),
    (lambda: engine.stack([t(2), t(2)], axis=(0, 1)), TypeError, r"stack: axis must be an int"),
    (lambda: engine.flatten(t(2, 3), start_dim=None), TypeError, r"flatten: start_dim must be an int, got None"),
    (lambda: engine.flatten(t(), start_dim=5), ValueError, r"flatten: start_dim of a 0-d tensor .* 5 is out of range"),
    (lambda: t(2, 3)[5], IndexError, r"getitem: index 5 is invalid for shape \(2, 3\)"),
    (lambda: engine.var(t(1, 3), axis=0, ddof=1), ValueError, r"var: needs more than ddof=1"),
    (lambda: engine.clip(t(3), 1.0, -1.0), ValueError, r"clip: min \(1.0\) must not exceed max \(-1.0\)"),
    (lambda: engine.clip(t(3)), ValueError, r"clip: at least one of min and max"),
    # fused layer
    (lambda: engine.linear(t(4, 3), t(5, 2)), ValueError, r"linear: input of shape \(4, 3\) does not fit weight of shape \(5, 2\)"),
    (lambda: engine.linear(t(4, 3), t(3, 2), t(3)), ValueError, r"linear: bias must have shape \(2,\), got \(3,\)"),
    (lambda: engine.linear(t(4, 3), t(3)), ValueError, r"linear: weight must be 2-D"),
    # tensors and gradients
    (lambda: T(np.arange(3), requires_grad=True), TypeError, r"only floating-point tensors can require grad, got dtype int64"),
    (lambda: t(2, 3, grad=True).exp().backward(), ValueError, r"backward: a gradient can be implied only for a tensor with one element .* shape \(2, 3\)"),
    (lambda: t(2, 3, grad=True).exp().backward(np.ones(3)), ValueError, r"backward: grad has shape \(3,\) but the tensor has shape \(2, 3\)"),
    (lambda: t(2).sum().backward(), RuntimeError, r"does not require grad"),
    (lambda: engine.add(t(2), "a"), TypeError, r"add: input 1 must be a Tensor"),
    (lambda: engine.add(t(2), None), TypeError, r"add: input 1 must be a Tensor"),
])
def test_bad_input_is_reported_by_handgrad(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("make,pattern", [
    (lambda z: engine.softmax_cross_entropy(z, np.array([0, 3, 1])), r"class label 3 is outside \[0, 3\) for logits of shape \(3, 3\)"),
    (lambda z: engine.softmax_cross_entropy(z, np.array([0, -1, 1])), r"class label -1 is outside"),
    (lambda z: engine.softmax_cross_entropy(z, np.array([0.0, 1.0, 2.0])), r"float labels\? class labels must be integers"),
    (lambda z: engine.softmax_cross_entropy(z, np.array([0, 1])), r"integer labels must have shape \(3,\)"),
    (lambda z: engine.softmax_cross_entropy(z, np.ones((3, 4)) / 4), r"probability targets must have the logits' shape \(3, 3\), got \(3, 4\)"),
    (lambda z: engine.sigmoid_binary_cross_entropy(z, np.ones((3, 2))), r"targets shape \(3, 2\) differs from logits shape \(3, 3\)"),
    (lambda z: engine.sigmoid_binary_cross_entropy(z, np.full((3, 3), 1.5)), r"targets must lie in \[0, 1\], got values from 1.5"),
    (lambda z: engine.mse(z, np.ones(3)), r"mse: prediction shape \(3, 3\) and target shape \(3,\) differ"),
    (lambda z: engine.mse(z, np.ones((3, 3)), reduction="avg"), r"mse: reduction must be one of"),
    (lambda z: engine.softmax_cross_entropy(z, np.array([0, 1, 2]), label_smoothing=2.0), r"label_smoothing must be in \[0, 1\]"),
])
def test_bad_targets_are_reported_before_any_arithmetic(make, pattern):
    z = t(3, 3, grad=True)
    with pytest.raises(ValueError, match=pattern):
        make(z)


@pytest.mark.parametrize("dtype", [">i8", ">i4", ">i2", "i1", "<i8", ">u4"])
def test_labels_in_either_byte_order_are_checked_by_their_values(dtype):
    """Big-endian labels (read from a file with an explicit byte order) were viewed as
    native unsigned integers: valid ones looked huge, and the check crashed (IndexError)."""
    z = engine.Tensor(np.zeros((4, 3), np.float32), requires_grad=True)
    loss = engine.softmax_cross_entropy(z, np.array([0, 1, 2, 1], dtype=dtype))
    assert loss.item() == pytest.approx(np.log(3))
    with pytest.raises(ValueError, match=r"class label 3 is outside \[0, 3\)"):
        engine.softmax_cross_entropy(z, np.array([0, 3, 2, 1], dtype=dtype))
    if np.dtype(dtype).kind == "i":
        with pytest.raises(ValueError, match=r"class label -1 is outside"):
            engine.softmax_cross_entropy(z, np.array([0, -1, 2, 1], dtype=dtype))


def test_bool_targets_are_a_type_error():
    with pytest.raises(TypeError, match="softmax_cross_entropy: targets must be integer class labels or float"):
        engine.softmax_cross_entropy(t(2, 3), np.ones((2, 3), bool))


def test_errors_come_from_handgrad_not_numpy():
    """Every message above starts with the op's name: none is numpy's own text."""
    with pytest.raises(ValueError) as info:
        t(4, 3) @ t(4, 5)
    assert str(info.value).startswith("matmul:")
    assert "gufunc" not in str(info.value) and "signature" not in str(info.value)


# --- an empty batch is an error, never a silent 0 ----------------------------------------------

@pytest.mark.parametrize("make, pattern", [
    (lambda: engine.sum(np.zeros((0, 3))), r"^sum: cannot reduce over no elements \(shape \(0, 3\)"),
    (lambda: engine.sum(np.zeros((0, 3)), axis=0), r"^sum: cannot reduce over no elements"),
    (lambda: engine.mean(np.zeros(0)), r"^mean: cannot reduce over no elements"),
    (lambda: engine.max(np.zeros((2, 0)), axis=1), r"^max: cannot reduce over no elements"),
    (lambda: engine.logsumexp(np.zeros(0)), r"^logsumexp: cannot reduce over no elements"),
    (lambda: engine.var(np.zeros(0)), r"^var: cannot reduce over no elements"),
    (lambda: engine.mse(np.zeros(0), np.zeros(0)), r"^mse: got an empty batch"),
    (lambda: engine.softmax_cross_entropy(np.zeros((0, 3)), np.zeros(0, dtype=int)),
     r"^softmax_cross_entropy: got an empty batch \(shape \(0, 3\)\)"),
    (lambda: engine.sigmoid_binary_cross_entropy(np.zeros((0, 2)), np.zeros((0, 2))),
     r"^sigmoid_binary_cross_entropy: got an empty batch"),
])
def test_reductions_and_losses_over_an_empty_batch_are_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_a_reduction_that_leaves_an_empty_result_is_not_an_error():
    # (0, 3) summed over axis 1: every one of the 0 sums adds 3 numbers; nothing is empty.
    assert engine.sum(np.zeros((0, 3)), axis=1).shape == (0,)


# --- softmax over an axis with no elements ----------------------------------------------------

@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((2, 0), -1), ((0,), 0), ((0, 3), 0)])
def test_softmax_over_an_axis_of_length_0_names_the_op_axis_and_shape(op, shape, axis):
    x = T(np.zeros(shape), requires_grad=True)
    pattern = (rf"^{op}: cannot normalize over an axis of length 0 "
               rf"\(shape {re.escape(str(shape))}, axis {axis}\)")
    with pytest.raises(ValueError, match=pattern):
        getattr(engine, op)(x, axis=axis)


@pytest.mark.parametrize("op", ["softmax", "log_softmax"])
def test_softmax_of_an_empty_batch_along_a_full_axis_is_empty(op):
    x = T(np.zeros((0, 3)), requires_grad=True)       # no rows, each of 3 classes: nothing empty
    y = getattr(engine, op)(x, axis=-1)
    assert y.shape == (0, 3)
    (y * 1.0).backward(np.zeros((0, 3)))
    assert x.grad.shape == (0, 3)


def test_max_and_min_over_an_axis_of_length_0_name_the_op():
    for op in (engine.max, engine.min):
        with pytest.raises(ValueError, match=rf"^{op.name}: cannot reduce over no elements "
                                             rf"\(shape \(2, 0\), axis -1\)"):
            op(T(np.zeros((2, 0))), axis=-1)


# --- only numbers make tensors ------------------------------------------------------------------

NOT_NUMBERS = [
    pytest.param(np.array(["a", "b"]), "<U1", id="str"),
    pytest.param(np.array([b"a", b"b"]), "|S1", id="bytes"),
    pytest.param(np.zeros(2, dtype="V8"), "|V8", id="void"),
    pytest.param(np.zeros(2, dtype=[("x", "f8")]), r"\[\('x', '<f8'\)\]", id="structured"),
    pytest.param(np.array(["2020-01-01", "2020-01-02"], dtype="M8[D]"), r"datetime64\[D\]", id="datetime"),
    pytest.param(np.array([1, 2], dtype="m8[s]"), r"timedelta64\[s\]", id="timedelta"),
    pytest.param(np.array([None, 1], dtype=object), r"object \(non-numeric Python objects\)", id="object"),
]
ACCEPTED = r"is not supported; a tensor holds bool, integers or floats"


@pytest.mark.parametrize("array, dtype", NOT_NUMBERS)
@pytest.mark.parametrize("copy", [True, False])
def test_a_tensor_of_a_non_numeric_dtype_is_a_type_error_naming_it(array, dtype, copy):
    with pytest.raises(TypeError, match=rf"^Tensor: cannot make a tensor from ndarray: dtype "
                                        rf"{dtype} {ACCEPTED}"):
        T(array, copy=copy)


@pytest.mark.parametrize("array, dtype", NOT_NUMBERS)
def test_a_non_numeric_array_as_an_op_constant_or_new_data_is_a_type_error(array, dtype):
    constant = (r"^mul: input 1 must be a Tensor, an array or a number, got ndarray"
                if array.dtype == object else rf"^mul: input 1: dtype {dtype} {ACCEPTED}")
    with pytest.raises(TypeError, match=constant):
        t(2) * array
    x = t(2)
    with pytest.raises(TypeError, match=rf"^data: dtype {dtype} {ACCEPTED}"):
        x.data = array


def test_a_string_or_bytes_value_is_a_type_error():
    with pytest.raises(TypeError, match=rf"dtype <U3 {ACCEPTED}"):
        T("abc")
    with pytest.raises(TypeError, match=rf"dtype \|S2 {ACCEPTED}"):
        T(b"ab")
    with pytest.raises(TypeError, match=rf"dtype <U1 {ACCEPTED}"):
        T(np.zeros(2), dtype="U1")


@pytest.mark.parametrize("dtype", [np.bool_, np.int8, np.uint64, np.float16, np.float32,
                                   np.float64, np.complex128])
def test_numeric_dtypes_stay_accepted(dtype):
    assert T(np.ones(2, dtype=dtype)).dtype == dtype
    assert T(np.ones(2, dtype=dtype), copy=False).dtype == dtype
