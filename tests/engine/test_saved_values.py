"""No silent wrong gradients when values change between the forward and the backward pass.

Each way a saved value can change gives the right gradient or a clear error, never a
wrong number (engine/memory.py explains the guards):

* arrays handed in are copied: the numpy array you wrapped, op constants, index arrays;
* handgrad's own in-place writes (``t += 1``, optimizer steps, load_state_dict) are
  stamped, and a backward through a graph that saved the old values raises;
* memory handed out (``t.data``) is read-only while a live graph saved it; handed out
  after the forward pass, it is checked by checksum;
* memory numpy does not own (a np.memmap's file, a bytearray under np.frombuffer), which
  no flag can make read-only, is checksummed by the nodes that save it;
* under detect_anomaly, checksums also catch writes through numpy views.
"""
from __future__ import annotations

import gc
import operator

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.engine import Tensor, memory

READ_ONLY = "read-only"
MODIFIED = r"was modified by an in-place operation after the forward pass"


def leaf(values):
    return Tensor(np.array(values, dtype=np.float64), requires_grad=True)


# --- arrays handed in are copied ------------------------------------------------------------

def test_changing_the_wrapped_numpy_array_after_the_forward_leaves_the_gradient_right():
    a = np.array([1.0, 2.0, 3.0])
    x = Tensor(a, requires_grad=True)
    y = (x * x).sum()
    a[:] = 100.0                                    # the caller's own array
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0, 6.0])


def test_changing_an_array_given_to_an_op_as_a_constant_leaves_the_gradient_right():
    x = leaf([1.0, 2.0])
    w = np.array([3.0, -1.0])
    y = (x * w).sum()                               # mul saves both of its inputs
    w[:] = 0.0
    y.backward()
    np.testing.assert_array_equal(x.grad, [3.0, -1.0])


@pytest.mark.parametrize("make_index", [
    lambda: np.array([0, 2, 2]),
    lambda: (np.array([0, 1]), np.array([2, 2])),
    lambda: np.array([True, False, True]),
    lambda: Tensor(np.array([0, 2, 2])),
])
def test_changing_an_index_array_after_the_forward_leaves_the_gradient_right(make_index):
    x = Tensor(np.arange(9.0).reshape(3, 3), requires_grad=True)
    index = make_index()
    y = x[index]
    expected = np.zeros((3, 3))
    np.add.at(expected, index.data if isinstance(index, Tensor) else index, 1.0)
    for part in (index.data if isinstance(index, Tensor) else index,):
        for arr in (part if isinstance(part, tuple) else (part,)):
            arr[...] = np.flip(arr)                  # scramble the caller's index
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, expected)


# --- t.data[...] = v, and references to the array kept from earlier ---------------------------

def test_writing_through_data_after_the_forward_is_an_error_naming_the_op_and_tensor():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    x.data[0] = 5.0           # the array was handed out only now: checked by checksum
    with pytest.raises(RuntimeError, match=r"input 0 \(Tensor of shape \(2,\), dtype float64\), "
                                           r"saved for the backward of op 'mul'.*written through "
                                           r"its numpy array"):
        y.backward()


def test_reading_data_after_the_forward_is_not_an_error():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    assert x.data.sum() == 3.0                     # handed out, not changed
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_an_array_handed_out_before_the_forward_is_read_only_while_the_graph_lives():
    x = leaf([1.0, 2.0])
    kept = x.data                                   # a reference kept from earlier
    y = (x * x).sum()
    with pytest.raises(ValueError, match=READ_ONLY):
        kept[0] = 5.0
    with pytest.raises(ValueError, match=READ_ONLY):
        x.data[0] = 5.0
    with pytest.raises(ValueError, match=READ_ONLY):
        kept -= 0.1                                 # the micrograd update, too early
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])
    kept[0] = 5.0                                   # writeable again once backward ran
    x.data -= 0.5
    np.testing.assert_array_equal(x.data, [4.5, 1.5])


def test_memory_shared_with_copy_false_is_read_only_while_saved():
    a = np.array([1.0, 2.0])
    for x in (Tensor(a, copy=False, requires_grad=True), engine.from_numpy(a)):
        x.requires_grad = True
        y = (x * x).sum()
        with pytest.raises(ValueError, match=READ_ONLY):
            a[0] = 7.0
        y.backward()
        np.testing.assert_array_equal(x.grad, 2 * a)
        assert a.flags.writeable                    # the caller's array is theirs again


def test_a_graph_dropped_without_backward_gives_its_arrays_back():
    x = leaf([1.0, 2.0])
    kept = x.data
    y = (x * x).sum()
    assert memory.is_locked(x)
    del y
    gc.collect()
    assert not memory.is_locked(x)
    kept[0] = 3.0


def test_retain_graph_keeps_arrays_read_only_until_the_graph_is_dropped():
    x = leaf([1.0, 2.0])
    kept = x.data
    y = (x * x).sum()
    y.backward(retain_graph=True)
    with pytest.raises(ValueError, match=READ_ONLY):
        kept[0] = 3.0
    del y
    kept[0] = 3.0


def test_an_outputs_array_saved_by_its_own_op_is_protected():
    x = leaf([0.5, 1.0])
    e = x.exp()                                     # exp saves its output
    loss = e.sum()
    e.data[0] = 0.0                                 # handed out after the forward
    with pytest.raises(RuntimeError, match=r"the output of op 'exp'.*written through"):
        loss.backward()


def test_replacing_data_keeps_the_old_values_for_graphs_computed_before():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    x.data = np.array([10.0, 20.0])                 # a new array; the graph saved the old one
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


# --- handgrad's own in-place writes ----------------------------------------------------------

def test_optimizer_step_before_backward_is_an_error_naming_the_op_and_parameter():
    model = nn.MLP([2, 3, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    X, Y = np.random.default_rng(0).random((4, 2)).astype(np.float32), np.array([0, 1, 0, 1])
    loss = nn.CrossEntropyLoss()(model(X), Y)
    opt.zero_grad()
    loss.backward()
    opt.step()                                      # a normal step: gradients exist now
    loss = nn.CrossEntropyLoss()(model(X), Y)
    opt.step()                                      # the bug: stepping before backward
    with pytest.raises(RuntimeError, match=r"Parameter 'weight' of shape \(3, 2\).*saved for the "
                                           r"backward of op 'linear'.*" + MODIFIED):
        loss.backward()


def test_in_place_arithmetic_on_a_parameter_is_refused_while_recording():
    p = nn.Parameter(np.ones(3, np.float32))
    p.grad = np.full(3, 2.0, np.float32)
    for update in (lambda: p.__isub__(0.1 * p.grad), lambda: p.__iadd__(1.0),
                   lambda: p.__imul__(2.0), lambda: p.__itruediv__(2.0)):
        with pytest.raises(RuntimeError, match=r"a leaf that requires grad.*engine.no_grad"):
            update()
    np.testing.assert_array_equal(p.data, np.ones(3))        # nothing changed


def test_in_place_arithmetic_under_no_grad_updates_the_same_tensor():
    model = nn.Sequential(nn.Linear(2, 2, rng=np.random.default_rng(0)))
    p = model[0].weight
    before = p.data.copy()
    p.grad = np.ones((2, 2), np.float32)
    with engine.no_grad():
        p -= 0.5 * p.grad                           # the micrograd update, on the tensor
    assert model[0].weight is p                     # not rebound: still in the model
    assert model.parameters()[0] is p
    np.testing.assert_allclose(p.data, before - 0.5)


def test_in_place_arithmetic_on_data_saved_by_a_graph_makes_its_backward_raise():
    x = leaf([1.0, 2.0])
    c = Tensor([3.0, 4.0])                          # no grad: in place is allowed any time
    y = (x * c).sum()
    same = c
    c += 1.0
    assert c is same and np.array_equal(c.data, [4.0, 5.0])
    with pytest.raises(RuntimeError, match=r"input 1 \(Tensor of shape \(2,\).*'mul'.*" + MODIFIED):
        y.backward()


def test_in_place_on_a_view_counts_as_a_write_to_its_base():
    x = leaf(np.arange(6.0))
    y = (x * x).sum()
    with engine.no_grad():
        view = x.reshape(2, 3)
        view += 1.0
    np.testing.assert_array_equal(x.data, np.arange(6.0) + 1)
    with pytest.raises(RuntimeError, match=r"'mul'.*" + MODIFIED):
        y.backward()
    z = x.reshape(3, 2)
    loss = (z * z).sum()
    with engine.no_grad():
        d = x.detach()
        d *= 2.0                                    # detach shares the memory too
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_in_place_on_a_graph_tensor_while_recording_is_refused():
    x = leaf([1.0, 2.0])
    h = x * 2
    with pytest.raises(RuntimeError, match=r"\+= on a tensor computed by op 'mul'.*t = t \+ x"):
        h += 1


def test_in_place_arithmetic_checks_shape_and_dtype():
    t = Tensor(np.zeros(3))
    with pytest.raises(ValueError, match=r"\+=: a value of shape \(2,\) cannot update Tensor of "
                                         r"shape \(3,\)"):
        t += np.ones(2)
    with pytest.raises(ValueError, match=r"cannot update"):
        t += np.ones((2, 3))                        # would broadcast t to a bigger shape
    i = Tensor(np.arange(3))
    with pytest.raises(TypeError, match=r"\+=: the result of int64 \+ float64 does not fit"):
        i += 0.5
    with pytest.raises(TypeError, match=r"\(@=\) is not supported"):
        t @= np.eye(3)
    t += np.ones(1)                                 # broadcasting into t's own shape is fine
    np.testing.assert_array_equal(t.data, np.ones(3))


def test_in_place_arithmetic_numpy_cannot_do_is_refused_before_any_write():
    """Integer true division is float64 (numpy's result_type said int64, so numpy's bare
    casting error escaped), bool - bool has no numpy loop, and an integer to a negative power
    raised midway through the array, some elements written."""
    i = Tensor([1, 2, 3])
    cases = [
        (i, operator.itruediv, 2, TypeError, r"^/=: the result of int64 / int64 does not fit Tensor of "
                                r"shape \(3,\), dtype int64: it is float64.*write t = t / x"),
        (Tensor([True, False]), operator.isub, True, TypeError,
         r"^-=: bool - bool is not defined for Tensor .*dtype bool.*t = t\.astype\(np\.int64\) - x"),
        (Tensor([True, False]), operator.ipow, True, TypeError,
         r"^\*\*=: the result of bool \*\* bool does not fit .*it is int8"),
        (i, operator.ipow, np.array([2, 2, -1]), ValueError,
         r"^\*\*=: an integer to a negative integer power .*t\.astype\(np\.float64\) \*\* x"),
    ]
    for t, update, value, error, message in cases:
        before, stamp = t.numpy(copy=True), engine.write_stamp(t)
        with pytest.raises(error, match=message):
            update(t, value)
        assert engine.write_stamp(t) == stamp       # no write stamped
        np.testing.assert_array_equal(t.numpy(copy=True), before)
    i **= np.array([2, 2, 0])                        # non-negative powers stay integers
    np.testing.assert_array_equal(i.numpy(), [1, 4, 1])


def test_item_assignment_writes_like_in_place_arithmetic_or_refuses_before_writing():
    """`x[:2] *= 10` is getitem, *= on the result, then x.__setitem__: the *= wrote through
    the slice's view, then the missing __setitem__ raised, x changed all the same (and with
    an integer index, whose getitem copies, nothing changed). Item assignment is an in-place
    write under the rules of +=."""
    x = Tensor([1.0, 2.0, 3.0])
    x[:2] *= 10
    x[2] *= 10                                      # an integer index: a copy, written back
    x[[0]] += 1
    x[Tensor([False, True, False])] = -1
    np.testing.assert_array_equal(x.numpy(copy=True), [11, -1, 30])
    c = Tensor([1.0, 2.0])
    y = leaf([3.0, 4.0]) * c                        # saves c
    c[0] = 5.0                                      # a tracked write: the backward sees it
    with pytest.raises(RuntimeError, match=MODIFIED):
        y.backward(np.ones(2))

    w = leaf([1.0, 2.0, 3.0])
    i = Tensor([1, 2])
    refused = [
        (w, lambda: w.__setitem__(slice(0, 2), w[:2] * 10), RuntimeError,
         r"^t\[\.\.\.\] = on Tensor .* a leaf that requires grad.*no_grad"),
        (w, lambda: operator.imul(w[:2], 10), RuntimeError, r"^\*= on a tensor computed by op 'getitem'"),
        (w, lambda: operator.imul(w[0], 10), RuntimeError, r"^\*= on a tensor computed by op 'getitem'"),
        (x, lambda: x.__setitem__(0, w[0]), RuntimeError, r"^t\[\.\.\.\] =: the value requires grad"),
        (i, lambda: i.__setitem__(0, 2.5), TypeError,
         r"^t\[\.\.\.\] =: a value of dtype float64 does not fit Tensor of shape \(2,\), dtype int64"),
        (x, lambda: x.__setitem__(3, 0.0), IndexError, r"^t\[\.\.\.\] =: index 3 is invalid"),
        (x, lambda: x.__setitem__(slice(0, 2), np.ones(3)), ValueError,
         r"^t\[\.\.\.\] =: a value of shape \(3,\) cannot be written .* selects shape \(2,\)"),
    ]
    for t, write, error, message in refused:
        before, stamp = t.numpy(copy=True), engine.write_stamp(t)
        assert stamp is not None                    # never handed out: writes move it
        with pytest.raises(error, match=message):
            write()
        assert engine.write_stamp(t) == stamp       # nothing written, nothing stamped
        np.testing.assert_array_equal(t.numpy(copy=True), before)
    with engine.no_grad():                          # a parameter update, as optimizers do
        w[:2] *= 10
        w[2] = 0.0
    np.testing.assert_array_equal(w.data, [10, 20, 0])


def test_an_item_assignment_numpy_refuses_is_refused_before_the_write_is_stamped():
    """`w[0] = np.array([0.1])` (a (1,) value into one element) passed the engine's shape
    check, then numpy refused it inside the tracked write: nothing changed, yet the graph
    that saved w raised "modified by an in-place operation" in its backward. So did a 2-D
    value under a boolean mask (numpy's TypeError) and a write into read-only memory."""
    x = leaf([1.0, 2.0, 3.0])
    w = Tensor([1.0, 1.0, 1.0])
    m = Tensor(np.ones((2, 2)))
    r = Tensor(np.broadcast_to(np.ones(1), (3,)), copy=False)
    loss = (x * w).sum()                            # saves w
    refused = [
        (w, lambda: w.__setitem__(0, np.array([0.1])), r"^t\[\.\.\.\] =: a value of shape "
         r"\(1,\) cannot be written into Tensor of shape \(3,\).* at index 0, which selects "
         r"shape \(\); an element takes a single number"),
        (m, lambda: m.__setitem__((1, 0), [[2.0]]), r"value of shape \(1, 1\) cannot be written"),
        (m, lambda: m.__setitem__(np.ones((2, 2), bool), np.ones((1, 4))),
         r"(?s)value of shape \(1, 4\) cannot be written .* selects shape \(4,\)"),
        (r, lambda: r.__setitem__(0, 2.0), r"^t\[\.\.\.\] =: cannot write into .* read-only"),
    ]
    for t, write, message in refused:
        before, stamp = t.numpy(copy=True), engine.write_stamp(t)
        with pytest.raises(ValueError, match=message):
            write()
        assert engine.write_stamp(t) == stamp       # nothing written, nothing stamped
        np.testing.assert_array_equal(t.numpy(copy=True), before)
    loss.backward()                                 # w never changed
    np.testing.assert_array_equal(x.grad, np.ones(3))
    w[0:1] = np.array([[0.5]])                      # a slice of one element takes it, as in numpy
    m[m.numpy() > 0] = np.array([4.0])
    np.testing.assert_array_equal(w.numpy(), [0.5, 1, 1])
    np.testing.assert_array_equal(m.numpy(), np.full((2, 2), 4.0))


def test_an_in_place_operator_on_read_only_memory_is_refused_before_the_write_is_stamped():
    """`r += 1` on a tensor sharing a read-only broadcast view was stamped as written, then
    numpy refused it: nothing changed, yet the graph that saved r raised "modified by an
    in-place operation" in its backward."""
    x = leaf([1.0, 2.0, 3.0])
    r = Tensor(np.broadcast_to(np.full(1, 2.0), (3,)), copy=False)
    loss = (x * r).sum()                            # saves r
    stamp = engine.write_stamp(r)
    for write in (r.__iadd__, r.__imul__, r.__ipow__):
        with pytest.raises(ValueError, match=r"cannot write into .* read-only"):
            write(1.0)
        assert engine.write_stamp(r) == stamp       # nothing written, nothing stamped
    loss.backward()
    np.testing.assert_array_equal(x.grad, np.full(3, 2.0))


def test_a_python_int_written_in_place_takes_the_tensor_dtype_and_must_fit_it():
    """The int went through np.asarray (int64, or uint64 from 2**63) and a same_kind cast:
    int8 `x[0] = 300` and `x += 300` wrapped to 44, int64 `y[0] = 2**64 - 1` to -1, while
    uint8 `u[0] = 1` was refused (int64 does not fit uint8). As in numpy 2 (NEP 50) and
    PyTorch, a Python int takes an integer tensor's dtype and must fit it."""
    x = Tensor(np.zeros(3, np.int8))
    y = Tensor(np.array([1, 2]))
    refused = [
        (x, lambda: x.__setitem__(0, 300), r"^t\[\.\.\.\] =: the integer 300 is too large for int8 "
                                            r"\(-128 to 127\)"),
        (x, lambda: operator.iadd(x, 300), r"^\+=: the integer 300 is too large for int8"),
        (x, lambda: x.__setitem__(slice(None), -129), r"the integer -129 is too small for int8"),
        (y, lambda: y.__setitem__(0, 2**64 - 1), r"the integer 18446744073709551615 is too large "
                                                 r"for int64"),
        (y, lambda: operator.isub(y, 2**63), r"^-=: the integer 9223372036854775808 is too large"),
    ]
    for t, write, message in refused:
        before, stamp = t.numpy(copy=True), engine.write_stamp(t)
        with pytest.raises(OverflowError, match=message):
            write()
        assert engine.write_stamp(t) == stamp       # nothing written, nothing stamped
        np.testing.assert_array_equal(t.numpy(copy=True), before)
    u = Tensor(np.zeros(3, np.uint8))
    u[0] = 1
    u[1:] = 255
    u += 1                                          # computed in uint8, as in numpy
    u[2] *= 2
    assert u.dtype == np.uint8
    np.testing.assert_array_equal(u.numpy(), [2, 0, 0])
    x[0] = 127
    x[1] = -128
    np.testing.assert_array_equal(x.numpy(), [127, -128, 0])
    big = Tensor(np.zeros(2, np.uint64))
    big[0] = 2**64 - 1
    assert big.numpy()[0] == 2**64 - 1
    with pytest.raises(TypeError, match=r"a value of dtype float64 does not fit"):
        x[0] = 1.0                                  # a float into an integer tensor: as before


def test_load_state_dict_between_forward_and_backward_is_caught():
    model = nn.MLP([2, 2], seed=0)
    state = model.state_dict()
    loss = model(np.ones((1, 2), np.float32)).sum()
    model.load_state_dict(state)                   # same values, but written in place
    with pytest.raises(RuntimeError, match=MODIFIED):
        loss.backward()


def test_forward_mode_through_a_changed_graph_raises_too():
    x = leaf([1.0, 2.0])
    c = Tensor([3.0, 4.0])
    y = x * c
    c += 1.0
    with pytest.raises(RuntimeError, match=MODIFIED):
        engine.graph.forward_tangents([y], {id(x): np.ones(2)})


# --- memory numpy does not own: checksummed ----------------------------------------------------

FOREIGN = r"input 1 .*'mul'.*changed after the forward pass \(its checksum differs\)"


def _memmap(tmp_path, values):
    path = tmp_path / "values.dat"
    m = np.memmap(path, dtype=np.float64, mode="w+", shape=(len(values),))
    m[:] = values
    return m, path


def _bytearray_backed(values):
    buffer = bytearray(np.array(values, dtype=np.float64).tobytes())
    return np.frombuffer(buffer, dtype=np.float64), buffer


@pytest.mark.parametrize("share", [engine.from_numpy, lambda a: Tensor(a, copy=False)],
                         ids=["from_numpy", "copy=False"])
def test_a_memmap_written_through_its_file_after_the_forward_makes_backward_raise(tmp_path, share):
    m, path = _memmap(tmp_path, [2.0, 2.0])
    w = leaf([1.0, 1.0])
    loss = (w * share(m)).sum()                       # d loss / d w = m = 2
    other = np.memmap(path, dtype=np.float64, mode="r+", shape=(2,))
    other[:] = 200.0                                  # the same file, no flag of m can stop it
    other.flush()
    with pytest.raises(RuntimeError, match=FOREIGN + r".*np.memmap"):
        loss.backward()


@pytest.mark.parametrize("share", [engine.from_numpy, lambda a: Tensor(a, copy=False)],
                         ids=["from_numpy", "copy=False"])
def test_a_bytearray_written_after_the_forward_makes_backward_raise(share):
    a, buffer = _bytearray_backed([2.0, 2.0])
    w = leaf([1.0, 1.0])
    loss = (w * share(a)).sum()
    buffer[:] = np.array([200.0, 200.0]).tobytes()    # through the bytearray, not the array
    with pytest.raises(RuntimeError, match=FOREIGN + r".*bytearray"):
        loss.backward()


def test_a_write_into_the_array_under_as_strided_makes_backward_raise():
    base = np.array([2.0, 2.0, 2.0, 2.0])
    strided = np.lib.stride_tricks.as_strided(base, shape=(2,), strides=(16,))
    w = leaf([1.0, 1.0])
    loss = (w * engine.from_numpy(strided)).sum()
    base[:] = 200.0                                   # as_strided's base chain ends outside numpy
    with pytest.raises(RuntimeError, match=FOREIGN):
        loss.backward()


def test_an_as_strided_array_that_numpy_cannot_unlock_is_left_writeable_and_checksummed():
    base = np.array([2.0, 3.0, 4.0, 5.0])
    strided = np.lib.stride_tricks.as_strided(base, shape=(2,), strides=(16,))
    w = leaf([1.0, 1.0])
    x = engine.from_numpy(strided)
    (w * x * x[::-1]).sum().backward()               # read-only and back would be refused
    np.testing.assert_array_equal(w.grad, [8.0, 8.0])
    assert strided.flags.writeable
    loss = (w * x).sum()
    strided[0] = 7.0                                  # not locked: the checksum sees it
    with pytest.raises(RuntimeError, match=FOREIGN):
        loss.backward()


def test_a_write_into_a_memmap_under_a_view_op_makes_backward_raise(tmp_path):
    m, path = _memmap(tmp_path, [2.0, 2.0, 2.0])
    w = leaf([1.0, 1.0])
    loss = (w * engine.from_numpy(m)[1:]).sum()       # mul saves a getitem view of the memmap
    other = np.memmap(path, dtype=np.float64, mode="r+", shape=(3,))
    other[2] = 200.0
    with pytest.raises(RuntimeError, match=FOREIGN):
        loss.backward()


def test_unchanged_foreign_memory_gives_the_right_gradients_in_both_modes(tmp_path):
    m, _ = _memmap(tmp_path, [2.0, 3.0])
    a, buffer = _bytearray_backed([5.0, 7.0])
    w = leaf([1.0, 1.0])
    loss = (w * engine.from_numpy(m) * engine.from_numpy(a)).sum()
    (tangent,) = engine.graph.forward_tangents([loss], {id(w): np.ones(2)})
    assert tangent == 2.0 * 5.0 + 3.0 * 7.0
    loss.backward()
    np.testing.assert_array_equal(w.grad, [10.0, 21.0])
    buffer[:8] = np.float64(9.0).tobytes()            # after backward: a new graph sees it
    w.grad = None
    (w * engine.from_numpy(a)).sum().backward()
    np.testing.assert_array_equal(w.grad, [9.0, 7.0])


def test_forward_mode_through_changed_foreign_memory_raises():
    a, buffer = _bytearray_backed([2.0, 2.0])
    w = leaf([1.0, 1.0])
    y = w * engine.from_numpy(a)
    buffer[:8] = np.float64(200.0).tobytes()
    with pytest.raises(RuntimeError, match=FOREIGN):
        engine.graph.forward_tangents([y], {id(w): np.ones(2)})


def test_which_memory_is_foreign():
    assert memory.foreign(np.frombuffer(bytearray(8)))
    assert memory.foreign(np.lib.stride_tricks.as_strided(np.zeros(4), shape=(2,), strides=(16,)))
    assert not memory.foreign(np.zeros(3))
    assert not memory.foreign(np.frombuffer(b"\0" * 8))   # bytes are immutable: nothing to guard


def test_a_copy_of_foreign_memory_needs_no_checksum(tmp_path):
    m, path = _memmap(tmp_path, [2.0, 2.0])
    w = leaf([1.0, 1.0])
    loss = (w * Tensor(m)).sum()                      # Tensor(array) copies
    np.memmap(path, dtype=np.float64, mode="r+", shape=(2,))[:] = 200.0
    assert not any(memory.holds_anything(n) for n in _nodes(loss))
    loss.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 2.0])


# --- detect_anomaly: checksums ------------------------------------------------------------------

def test_detect_anomaly_catches_a_write_through_a_numpy_view_taken_before_the_forward():
    x = leaf(np.arange(4.0))
    early_view = x.data[1:]              # a numpy view made before the forward keeps its own
    with engine.detect_anomaly():        # writeable flag: only the checksum can see this write
        y = (x * x).sum()
        early_view[0] = 100.0
        with pytest.raises(RuntimeError, match=r"detect_anomaly: input 0.*'mul'.*checksum differs"):
            y.backward()


def test_under_detect_anomaly_an_unchanged_graph_backpropagates_normally():
    x = leaf([1.0, 2.0])
    with engine.detect_anomaly():
        (x.exp() * x).sum().backward()
    np.testing.assert_allclose(x.grad, np.exp(x.data) * (1 + x.data))


# --- stale gradients ------------------------------------------------------------------------

def test_a_stale_grad_of_another_shape_is_an_error_not_broadcast():
    x = leaf([1.0, 2.0, 3.0])
    x.grad = np.ones(1)                              # would broadcast into (3,) silently
    with pytest.raises(RuntimeError, match=r"stale .grad of shape \(1,\).*zero_grad"):
        (x * x).sum().backward()
    x.data = np.ones((2, 3))                         # the data changed shape after a backward
    x.grad = np.ones(3)
    with pytest.raises(RuntimeError, match=r"stale .grad of shape \(3,\), but its new gradient "
                                           r"has shape \(2, 3\)"):
        (x * x).sum().backward()


def test_the_training_loop_touches_no_flag_when_nobody_holds_the_arrays():
    """The common case pays nothing: nothing handed out, nothing locked."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.1, momentum=0.9)
    x = Tensor(np.random.default_rng(0).random((5, 3)).astype(np.float32))
    y = np.array([0, 1, 0, 1, 1])
    for _ in range(3):
        loss = nn.CrossEntropyLoss()(model(x), y)
        assert not any(memory.is_locked(p) for p in model.parameters())
        assert not any(memory.holds_anything(n) for n in _nodes(loss))
        opt.zero_grad()
        loss.backward()
        opt.step()


def _nodes(root):
    return [t.node for t in engine.topological_order([root]) if t.node is not None]


# --- costs that do not depend on what was read before -------------------------------------------

@pytest.fixture
def checksums(monkeypatch):
    """Counts the checksums engine/memory.py takes."""
    calls = []
    original = memory.checksum

    def counting(array):
        calls.append(array.size)
        return original(array)

    monkeypatch.setattr(memory, "checksum", counting)
    return calls


def test_reading_data_no_live_graph_saved_takes_no_checksum_and_moves_no_clock(checksums):
    x = leaf(np.arange(1000.0))
    (x * x).sum().backward()                         # a graph that is gone
    before = memory.write_tick
    assert x.data.shape == (1000,) and x.numpy().shape == (1000,)
    assert np.asarray(x).shape == (1000,) and x.detach().data.shape == (1000,)
    assert memory.write_tick == before and checksums == []


def test_a_micrograd_update_through_data_does_not_make_later_steps_lock():
    model = nn.MLP([3, 4, 2], seed=0)
    x = Tensor(np.random.default_rng(0).random((5, 3)).astype(np.float32))
    y = np.array([0, 1, 0, 1, 1])
    for step in range(3):
        loss = nn.CrossEntropyLoss()(model(x), y)
        if step > 0:                                 # after one update through .data
            assert not any(memory.is_locked(p) for p in model.parameters())
            assert not any(memory.holds_anything(n) for n in _nodes(loss))
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= 0.1 * p.grad                   # the classic update, arrays handed out


def test_after_one_update_through_data_the_next_forward_hands_every_parameter_back():
    """Biases too, which no node saves: memory nobody outside holds stops counting as
    handed out, so later forwards skip it and later updates can be proven finite
    (``engine.write_stamp`` is not None)."""
    model = nn.MLP([3, 4, 2], seed=0)
    x = Tensor(np.random.default_rng(0).random((5, 3)).astype(np.float32))
    y = np.array([0, 1, 0, 1, 1])
    nn.CrossEntropyLoss()(model(x), y).backward()
    for p in model.parameters():
        p.data -= 0.1 * p.grad
    assert all(engine.write_stamp(p) is None for p in model.parameters())
    nn.CrossEntropyLoss()(model(x), y)
    assert all(engine.write_stamp(p) is not None for p in model.parameters())
    held = model.layers[0].bias.data                  # still held: stays handed out
    nn.CrossEntropyLoss()(model(x), y)
    assert engine.write_stamp(model.layers[0].bias) is None and held.flags.writeable


def test_an_array_handed_out_and_dropped_is_not_locked_by_the_next_graph():
    x = leaf([1.0, 2.0])
    kept = x.data
    del kept
    y = (x * x).sum()
    assert not memory.is_locked(x)
    assert not any(memory.holds_anything(n) for n in _nodes(y))
    y.backward()
    np.testing.assert_array_equal(x.grad, [2.0, 4.0])


def test_reading_every_value_of_a_graph_changes_nothing_for_the_next_step(checksums):
    """What drawing a graph does (engine.viz reads .data of every tensor): the next step
    takes no checksum and holds nothing."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = nn.optim.SGD(model, lr=0.1)
    x = Tensor(np.random.default_rng(0).random((5, 3)).astype(np.float32))
    y = np.array([0, 1, 0, 1, 1])
    loss = nn.CrossEntropyLoss()(model(x), y)
    values = [t.data.copy() for t in engine.topological_order([loss], everything=True)]
    opt.zero_grad()
    loss.backward()                                  # the graph that was read: checked
    opt.step()
    del values
    checksums.clear()
    tick = memory.write_tick
    loss = nn.CrossEntropyLoss()(model(x), y)
    assert not any(memory.holds_anything(n) for n in _nodes(loss))
    assert all(n.memory is memory.write_tick for n in _nodes(loss))  # the walker's fast path
    opt.zero_grad()
    loss.backward()
    assert checksums == [] and memory.write_tick == tick


def test_replacing_data_with_another_tensor_shares_its_writes():
    y = Tensor([1.0, 2.0])
    x = leaf([0.0, 0.0])
    x.data = y                                       # one memory, one record
    loss = (x * x).sum()
    y += 1.0                                         # a tracked write through the other tensor
    with pytest.raises(RuntimeError, match=r"'mul'.*" + MODIFIED):
        loss.backward()


# --- engine.adopt: arrays given away ---------------------------------------------------------------

def test_an_adopted_array_is_taken_without_a_copy_or_a_lock():
    batch = np.random.default_rng(0).random((4, 3))
    x = engine.adopt(batch)
    w = leaf(np.ones((3, 2)))
    loss = (x @ w).sum()                             # the caller still holds `batch`
    assert not any(memory.holds_anything(n) for n in _nodes(loss))
    assert batch.flags.writeable
    loss.backward()
    assert np.shares_memory(x.numpy(), batch) and x.dtype == batch.dtype
    np.testing.assert_allclose(w.grad, np.repeat(batch.sum(0)[:, None], 2, axis=1))
    p = engine.adopt(np.zeros(2), requires_grad=True, name="p")
    assert p.requires_grad and p.name == "p" and p.is_leaf


def test_adopt_refuses_what_is_not_a_numeric_array():
    with pytest.raises(TypeError, match=r"adopt expects a numpy array, got list"):
        engine.adopt([1.0, 2.0])
    with pytest.raises(TypeError, match=r"adopt: dtype <U1 .*is not supported"):
        engine.adopt(np.array(["a"]))


def test_adopting_another_tensors_handed_out_array_still_sees_its_writes():
    c = Tensor([3.0, 4.0])
    twin = engine.adopt(c.data)                      # not fresh: c's memory
    x = leaf([1.0, 2.0])
    loss = (x * twin).sum()
    c += 1.0
    with pytest.raises(RuntimeError, match=r"'mul'.*" + MODIFIED):
        loss.backward()


def test_adopted_foreign_memory_is_still_checksummed():
    a, buffer = _bytearray_backed([2.0, 2.0])
    w = leaf([1.0, 1.0])
    loss = (w * engine.adopt(a)).sum()
    buffer[:] = np.array([200.0, 200.0]).tobytes()
    with pytest.raises(RuntimeError, match=FOREIGN + r".*bytearray"):
        loss.backward()


def test_an_array_held_only_through_a_weak_reference_is_protected_too():
    """A weakref gives the array back whenever asked: it counts as a holder."""
    import weakref
    x = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    ref = weakref.ref(w.data)
    loss = (x * w).sum()
    with pytest.raises(ValueError, match=READ_ONLY):
        ref()[...] = 100.0
    loss.backward()
    np.testing.assert_array_equal(x.grad, [0.5, -1.0, 2.0])


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_of_a_locked_leaf_is_locked_by_its_own_graphs(how):
    """The copy's array is new memory: the original's lock must not come with it (a
    record saying "locked" over a writeable array stopped the copy's graphs locking it)."""
    import copy
    import pickle
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    held = w.data                                   # held while a graph saves it: locked
    loss1 = (Tensor(np.ones(3)) * w).sum()
    w2 = copy.deepcopy(w) if how == "deepcopy" else pickle.loads(pickle.dumps(w))
    b = w2.data
    loss2 = (w2 * w2).sum()
    with pytest.raises(ValueError, match=READ_ONLY):
        b[...] = 100.0
    loss2.backward()
    np.testing.assert_array_equal(w2.grad, [1.0, -2.0, 4.0])
    del held, loss1


def test_a_shallow_copy_shares_the_memory_and_its_tracking():
    import copy
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    loss = (w * w).sum()
    alias = copy.copy(w)
    with engine.no_grad():
        alias += 1.0                                # a tracked write to w's memory
    with pytest.raises(RuntimeError, match="modified by an in-place operation"):
        loss.backward()


def test_an_op_output_viewing_foreign_memory_is_checksummed_when_saved():
    """A user op whose forward returns a view of its input and saves it as its output: on
    memory numpy does not own (a bytearray) the saved output must be checksummed too (it
    shared its input's record only after the node had looked at what it saved)."""

    @engine.register
    class ViewOfInput(engine.Op):
        """view_of_input_test(x) = x, read back as a saved output by its rule."""
        name = "view_of_input_test"
        rule = "d/dx = y (the saved output, for the test)"

        def forward(self, ctx, x):
            y = x.reshape(x.shape)
            ctx.save_output(y)
            return y

        def backward(self, ctx, grad):
            return (grad * ctx.saved[0],)

        def jvp(self, ctx, dx):
            return dx * ctx.saved[0]

    try:
        buffer = bytearray(np.array([0.5, -1.0, 2.0]).tobytes())
        w = engine.from_numpy(np.frombuffer(buffer, dtype=np.float64))
        w.requires_grad = True
        loss = engine.view_of_input_test(w).sum()
        buffer[:] = np.full(3, 100.0).tobytes()
        with pytest.raises(RuntimeError, match="output of op 'view_of_input_test'.*checksum differs"):
            loss.backward()
    finally:
        engine.unregister("view_of_input_test")


def test_arrays_kept_from_inplace_are_locked_by_a_later_graph():
    """A hand-written optimizer that keeps engine.inplace's arrays and writes them after
    the next forward pass (a step before the backward): an error, as the README says."""
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    (kept,) = engine.inplace(w)
    loss = (x * w * w).sum()
    with pytest.raises(ValueError, match=READ_ONLY):
        kept -= 0.5
    loss.backward()
    np.testing.assert_array_equal(w.grad, [1.0, -4.0, 12.0])
    del kept
    loss = (x * w * w).sum()                   # nothing kept: nothing locked
    assert not memory.is_locked(w)
    loss.backward()


def _replace_then_write_kept(w):
    old = w.data
    w.data = np.array([9.0, 9.0, 9.0])
    old[...] = 100.0


def _replace_then_write_a_detached(w, d):
    w.data = np.array([9.0, 9.0, 9.0])
    with engine.no_grad():
        d += 100.0


@pytest.mark.parametrize("how", ["kept array", "detached tensor"])
def test_a_write_to_memory_a_tensor_left_after_the_forward_pass_is_seen(how):
    """``w.data = new`` between the passes: the node saved w's old array, and a write to it
    (through an array kept from w.data, or a w.detach() made before) must still raise."""
    x = Tensor(np.array([1.0, 2.0, 3.0]))
    w = Tensor(np.array([0.5, -1.0, 2.0]), requires_grad=True)
    d = w.detach()
    loss = (x * w * w).sum()
    if how == "kept array":
        _replace_then_write_kept(w)
    else:
        _replace_then_write_a_detached(w, d)
    with pytest.raises(RuntimeError, match="whose .data was replaced since"):
        loss.backward()


def test_memory_a_tensor_left_is_not_kept_once_nothing_references_it():
    import weakref
    w = Tensor(np.ones(3), requires_grad=True)
    held = w.data
    loss = (w * w).sum()
    w.data = np.zeros(3)                       # the old memory: saved and held, so kept
    kept = weakref.ref(next(r for r in memory._RETIRED if r.owner is held))
    loss.backward()
    del held, loss
    w.data = np.full(3, 2.0)                   # nothing references it any more: dropped
    gc.collect()
    assert kept() is None


@pytest.mark.parametrize("view", [lambda x: x.detach()[0], lambda x: x.detach().T,
                                  lambda x: x.detach().reshape(6)])
def test_a_view_tensor_made_while_a_graph_locks_its_memory_is_writeable_after_backward(view):
    """numpy makes a view of a read-only array read-only; unlocking made only the arrays
    handgrad had locked writeable again, so `row += 1` after backward() (no graph alive)
    was refused as "read-only memory: copy it first"."""
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    held = x.data
    y = (x * x).sum()                       # saves x: the held array is locked
    v = view(x)
    assert not held.flags.writeable
    y.backward()
    with engine.no_grad():
        v += 1.0
    assert held.flags.writeable and held.sum() == 15.0 + v.size


def test_a_broadcast_view_made_while_locked_stays_read_only_after_backward():
    x = Tensor(np.arange(3.0), requires_grad=True)
    held = x.data
    y = (x * x).sum()
    b = engine.broadcast_to(x.detach(), (2, 3))
    y.backward()
    assert held.flags.writeable and not b.numpy().flags.writeable
