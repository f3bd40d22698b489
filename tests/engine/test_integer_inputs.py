"""Every registered op, given integer or bool inputs where its spec draws floats, either
computes what it computes on the same values as float64, or raises an error naming the op:
never a result truncated to integers (dropout scaling by 1/(1-p), gelu's CDF, ...), never a
float result computed in float16 or float32 (numpy's loop for int8, uint8, int16, bool),
never a difference of unsigned integers wrapped around inside a float result.

An integer (or bool) result follows numpy's and PyTorch's integer arithmetic: exact wherever
the float64 answer fits its dtype; beyond that it wraps around (int8 100 + 100 is -56,
uint8 1 - 2 is 255, bool True + True is True: + of bools is logical or)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from handgrad import engine
from handgrad.engine.testing import spec_for
from handgrad.engine.testing.properties import differentiable_positions

WIDTHS = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
DTYPES = [*WIDTHS, np.bool_]


def _dtype_id(dtype: type) -> str:
    return np.dtype(dtype).name


def as_integers(a: np.ndarray, dtype: type) -> np.ndarray:
    """Integers of ``dtype`` near the float sample ``a``: rounded away from 0 so no value
    becomes a new kink or pole, made non-negative for an unsigned dtype, clipped to the
    dtype's range; for bool, a > 0."""
    a = np.asarray(a)
    if dtype is np.bool_:
        return a > 0
    if np.dtype(dtype).kind == "u":
        a = np.abs(a)
    info = np.iinfo(dtype)
    return np.clip(np.where(a >= 0, np.ceil(a), np.floor(a)), info.min, info.max).astype(dtype)


def assert_integer_result_exact(result: np.ndarray, expected: np.ndarray, name: str) -> None:
    """Exact wherever the float64 answer fits the result's dtype (beyond it, integers wrap
    as numpy's and PyTorch's do; a wrapped sum still equals the answer where it fits)."""
    lo, hi = (0, 1) if result.dtype == np.bool_ else (np.iinfo(result.dtype).min,
                                                      np.iinfo(result.dtype).max)
    result, expected = np.broadcast_arrays(result, expected)
    fits = (expected >= lo) & (expected <= hi)
    np.testing.assert_array_equal(result[fits], expected[fits], err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name", sorted(engine.REGISTRY))
@settings(max_examples=15)
@given(data=st.data())
def test_integer_inputs_give_the_float64_answer_or_an_error(name, dtype, data):
    op = engine.REGISTRY[name]
    args, params = data.draw(spec_for(name).sample)
    diff = differentiable_positions(op, args)
    as_int = tuple(as_integers(a, dtype) if i in diff else a for i, a in enumerate(args))
    as_float = tuple(np.asarray(a, dtype=np.float64) if i in diff else a
                     for i, a in enumerate(as_int))
    with np.errstate(all="ignore"):
        try:
            result = op.apply(*as_int, **params)
        except (TypeError, ValueError) as e:
            assert str(e).startswith(f"{name}:"), f"{name}: the error does not name the op: {e}"
            return
        expected = op.apply(*as_float, **params)
    assert result.shape == expected.shape
    if result.dtype.kind in "iub":
        assert_integer_result_exact(result.data, expected.data, name)
    else:
        assert result.dtype == np.float64, f"{name} of {np.dtype(dtype)} computes in {result.dtype}"
        np.testing.assert_allclose(result.data, expected.data, rtol=1e-12, atol=0, err_msg=name)


# Every integer width, signed and unsigned, and bool. numpy alone computes float math on
# int8, uint8 and bool in float16 and on int16, uint16 in float32, and wraps differences
# of unsigned integers around: the ops must not.
VALUES = [0, 1, 2, 3, 12]          # exp(12) = 162754.79 is inf in float16
# Ops computing a floating-point result of one tensor.
FLOAT_RESULT = ["elu", "exp", "log", "log_softmax", "logsumexp", "sigmoid", "softmax", "sqrt", "tanh"]


def _small_values(dtype) -> np.ndarray:
    return np.array([False, True, True], np.bool_) if dtype is np.bool_ else np.array(VALUES, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
@pytest.mark.parametrize("name", FLOAT_RESULT)
def test_every_integer_width_and_bool_computes_in_float64(name, dtype):
    x = _small_values(dtype)
    with np.errstate(divide="ignore"):                  # log(0)
        result = engine.REGISTRY[name](x)
        expected = engine.REGISTRY[name](x.astype(np.float64))
    assert result.dtype == np.float64, f"{name} of {x.dtype} computes in {result.dtype}"
    np.testing.assert_array_equal(result.data, expected.data)


@pytest.mark.parametrize("dtype", DTYPES, ids=_dtype_id)
def test_mse_of_every_integer_width_and_bool_is_the_float64_answer(dtype):
    pred = _small_values(dtype)
    target = pred[::-1].copy()
    result = engine.mse(pred, target, reduction="none")
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result.data, (pred.astype(np.float64) - target) ** 2)


def test_mse_of_unsigned_and_int8_does_not_wrap_or_overflow():
    uint8 = engine.mse(np.array([0, 10], np.uint8), np.array([20, 0], np.uint8))
    assert uint8.item() == 250.0                          # not (236² + 10²) mod 256 / 2
    int8 = engine.mse(np.array([100], np.int8), np.array([-100], np.int8))
    assert int8.item() == 40000.0


@pytest.mark.parametrize("name, call", [("neg", lambda m: -m), ("sub", lambda m: m - m),
                                        ("sub", lambda m: engine.sub(m, True))])
def test_minus_of_booleans_is_an_error_naming_the_op(name, call):
    """numpy and PyTorch refuse - on bools too; a bool next to a number subtracts as 0/1."""
    mask = engine.Tensor(np.array([1.0, -2.0])) > 0
    with pytest.raises(TypeError, match=f"^{name}: cannot (negate a boolean tensor|subtract "
                                        f"boolean tensors) .*dtypes? bool"):
        call(mask)
    np.testing.assert_array_equal((1 - mask).data, [0, 1])
    np.testing.assert_array_equal((mask - 0.5).data, [0.5, -0.5])
