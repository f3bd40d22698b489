"""Checkpoints are untrusted files: validated before anything changes or is allocated, and
saving never loses what the user had."""
from __future__ import annotations

import io
import json
import os
import stat
import threading
import tracemalloc
import zipfile

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import optim, serialization
from handgrad.nn.serialization import CheckpointError


def _arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in model.state_dict().items()}


def _same(model: nn.Module, arrays: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(v, arrays[k]) for k, v in model.state_dict().items())


def _write_npz(path, members: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _meta(config=None, cls="MLP") -> bytes:
    return _npy(np.array(json.dumps({"format": serialization.FORMAT,
                                     "version": serialization.VERSION, "class": cls,
                                     "config": config, "metadata": {}, "optimizer": None})))


def _train(model, opt, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = rng.standard_normal((8, 3)).astype(np.float32)
        y = rng.integers(0, 2, 8)
        opt.zero_grad()
        nn.CrossEntropyLoss()(model(engine.Tensor(x)), y).backward()
        opt.step()


# --- a failed load changes nothing --------------------------------------------------------

@pytest.mark.parametrize("spoil", ["shape", "missing", "extra", "nan", "complex"])
def test_a_failed_load_leaves_the_model_exactly_as_it_was(tmp_path, spoil):
    source = nn.MLP([3, 4, 2], seed=1)
    state = _arrays(source)
    last = list(state)[-1]
    if spoil == "shape":
        state[last] = np.zeros(5, np.float32)
    elif spoil == "missing":
        del state[last]
    elif spoil == "extra":
        state["layers.9.weight"] = np.zeros(2, np.float32)
    elif spoil == "nan":
        state[last] = np.full_like(state[last], np.nan)
    else:
        state[last] = state[last].astype(np.complex64)
    target = nn.MLP([3, 4, 2], seed=2)
    before = _arrays(target)
    with pytest.raises((KeyError, ValueError), match=last if spoil != "extra" else "layers.9.weight"):
        target.load_state_dict(state, check_finite=True)
    assert _same(target, before)
    # the same through a file: the first parameters are fine, the last one is not
    members = {k: _npy(v) for k, v in state.items()}
    members[serialization.META_KEY] = _meta(source.config)
    _write_npz(tmp_path / "bad.npz", members)
    with pytest.raises(CheckpointError, match="bad.npz"):
        nn.load(tmp_path / "bad.npz", target, check_finite=True)
    assert _same(target, before)


def test_a_bad_optimizer_state_in_a_checkpoint_changes_neither_model_nor_optimizer(tmp_path):
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    # rewrite one optimizer array with the wrong shape
    with np.load(path) as data:
        members = {k: _npy(data[k]) for k in data.files}
    name = next(k for k in members if k.startswith(serialization.OPTIMIZER_PREFIX))
    members[name] = _npy(np.zeros(7, np.float32))
    _write_npz(tmp_path / "bad.npz", members)

    other = nn.MLP([3, 4, 2], seed=5)
    other_opt = optim.Adam(other, lr=0.01)
    _train(other, other_opt, 1, seed=3)
    before, before_opt = _arrays(other), other_opt.state_dict()
    with pytest.raises(CheckpointError, match="optimizer state"):
        nn.load(tmp_path / "bad.npz", other, optimizer=other_opt)
    assert _same(other, before)
    after_opt = other_opt.state_dict()
    for i, entry in before_opt["state"].items():
        for k, v in entry.items():
            assert np.array_equal(after_opt["state"][i][k], v)


def test_check_finite_refuses_nan_in_the_optimizer_state_too(tmp_path):
    """check_finite=True refused NaN parameters but loaded a NaN in Adam's v, and the next
    step of a hand-written loop wrote NaN into the weights."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    state = opt.state_dict()
    state["state"][0]["v"][0, 0] = np.nan
    path = nn.save(model, tmp_path / "m.npz", optimizer_state=state)
    other = nn.MLP([3, 4, 2], seed=5)
    other_opt = optim.Adam(other, lr=0.01)
    _train(other, other_opt, 1, seed=3)
    before, before_opt = _arrays(other), other_opt.state_dict()
    with pytest.raises(CheckpointError, match=r"optimizer state: parameter 0's 'v' holds NaN "
                                              r"or Inf \(check_finite=True\)"):
        nn.load(path, other, optimizer=other_opt, check_finite=True)
    assert _same(other, before) and _optimizer_as_it_was(other_opt, before_opt)
    nn.load(path, other, optimizer=other_opt)             # asked for no check: loaded as saved
    assert np.isnan(other_opt.state_dict()["state"][0]["v"][0, 0])


def _optimizer_as_it_was(opt, before) -> bool:
    after = opt.state_dict()
    return after["steps"] == before["steps"] and after["state"].keys() == before["state"].keys() \
        and all(np.array_equal(after["state"][i][k], v)
                for i, entry in before["state"].items() for k, v in entry.items())


def test_a_load_into_a_read_only_parameter_changes_neither_model_nor_optimizer(tmp_path):
    # The last weight on read-only memory: the write raised numpy's ValueError after the
    # optimizer was restored and the parameters before it were overwritten.
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    _train(model, opt, 3, seed=1)
    w = model.layers[2].weight
    w.data = np.frombuffer(w.data.tobytes(), dtype=w.dtype).reshape(w.shape)
    before, before_opt = _arrays(model), opt.state_dict()
    with pytest.raises(CheckpointError, match=r"m\.npz: .*layers\.2\.weight .*is read-only"):
        nn.load(path, model, optimizer=opt)
    assert _same(model, before) and _optimizer_as_it_was(opt, before_opt)


def test_the_optimizer_is_restored_only_once_the_model_is_written(tmp_path, monkeypatch):
    # Whatever fails while the parameters are written, the optimizer keeps its own state.
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    _train(model, opt, 3, seed=1)
    before_opt = opt.state_dict()

    def failing_write(self, state, strict=True, check_finite=False):
        raise MemoryError("the write failed")

    monkeypatch.setattr(nn.Module, "load_state_dict", failing_write)
    with pytest.raises(MemoryError):
        nn.load(path, model, optimizer=opt)
    assert _optimizer_as_it_was(opt, before_opt)


def test_optimizer_state_in_a_checkpoint_continues_training_bit_for_bit(tmp_path):
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.SGD(model, lr=0.1, momentum=0.9, nesterov=True)
    _train(model, opt, 3)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    again = nn.MLP([3, 4, 2], seed=7)
    again_opt = optim.SGD(again, lr=0.1, momentum=0.9, nesterov=True)
    nn.load(path, again, optimizer=again_opt)
    _train(model, opt, 3, seed=1)
    _train(again, again_opt, 3, seed=1)
    assert _same(again, _arrays(model))


def test_load_with_an_optimizer_but_no_model_is_refused_before_anything_changes(tmp_path):
    # A rebuilt model has new parameters: the optimizer would keep updating its own, and
    # training the returned model with it would silently never change it.
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    fresh = nn.MLP([3, 4, 2], seed=5)
    fresh_opt = optim.Adam(fresh, lr=0.01)
    with pytest.raises(ValueError, match=r"m\.npz.*optimizer= needs model=.*nothing was loaded"):
        nn.load(path, optimizer=fresh_opt)
    assert fresh_opt.steps == 0 and not fresh_opt.state_dict()["state"]
    assert nn.load(path, fresh, optimizer=fresh_opt) is fresh and fresh_opt.steps == 2


def test_load_refuses_an_optimizer_that_updates_another_model(tmp_path):
    """nn.load(path, model, optimizer=opt) with opt made for another model restored opt's
    state and returned, silently: training the loaded model with opt never changed it. It
    is refused before the file is read; an optimizer over part of the model is the model's."""
    model = nn.MLP([3, 4, 2], seed=0)
    opt = optim.Adam(model, lr=0.01)
    _train(model, opt, 2)
    path = nn.save(model, tmp_path / "m.npz", optimizer=opt)
    other = nn.MLP([3, 4, 2], seed=5)
    other_before, opt_before = other.state_dict(), opt.state_dict()
    with pytest.raises(ValueError, match=r"m\.npz', model, optimizer=\.\.\.\): the Adam updates "
                                         r"parameters that are not the model's \(its parameter 0, "
                                         r"of shape \(3, 4\).*nothing was loaded"):
        nn.load(path, other, optimizer=opt)
    assert all(np.array_equal(other_before[k], v) for k, v in other.state_dict().items())
    assert opt.steps == opt_before["steps"] == 2
    mixed = optim.SGD([*other.parameters()[:2], *model.parameters()[2:]], lr=0.1)
    with pytest.raises(ValueError, match="its parameter 0, of shape"):
        nn.load(path, model, optimizer=mixed)
    # Its own model: loaded; part of it (the output layer, as when fine-tuning) too.
    assert nn.load(path, other, optimizer=optim.Adam(other, lr=0.01)) is other
    head = nn.MLP([3, 4, 2], seed=1)
    head_opt = optim.SGD(head.layers[2].parameters(), lr=0.1)
    head_path = nn.save(head, tmp_path / "h.npz", optimizer=head_opt)
    assert nn.load(head_path, head, optimizer=head_opt) is head


# --- small files never ask for big allocations --------------------------------------------

def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_an_array_header_declaring_terabytes_is_refused_before_allocation(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)})
    members = {"layers.0.weight": header.getvalue() + b"\0" * 64,
               serialization.META_KEY: _meta()}
    _write_npz(tmp_path / "huge.npz", members)
    assert os.path.getsize(tmp_path / "huge.npz") < 2048

    def load():
        with pytest.raises(CheckpointError, match=r"huge.npz: layers.0.weight.npy declares shape "
                                                  r"\(1000000, 1000000\)"):
            nn.load(tmp_path / "huge.npz")
    assert _peak_bytes(load) < 1 << 20


def test_a_header_whose_size_overflows_int64_is_refused(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(   # 2**32 * 2**32 * 8 bytes wraps to 0 in int64
        header, {"descr": "<f8", "fortran_order": False, "shape": (2**32, 2**32)})
    _write_npz(tmp_path / "wrap.npz", {"w": header.getvalue(), serialization.META_KEY: _meta()})
    with pytest.raises(CheckpointError, match="declares shape"):
        nn.load(tmp_path / "wrap.npz")


def test_members_declaring_more_than_the_file_holds_are_refused(tmp_path):
    # deflate makes 40 MB of zeros into a few tens of KB: more than MAX_EXPANSION allows
    _write_npz(tmp_path / "bomb.npz", {"w": _npy(np.zeros(5_000_000)),
                                       serialization.META_KEY: _meta()}, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(tmp_path / "bomb.npz") < 100_000
    with pytest.raises(CheckpointError, match="declare .* bytes, more than 4x"):
        nn.load(tmp_path / "bomb.npz")


def test_the_config_is_checked_against_the_stored_arrays_before_building(tmp_path):
    small = nn.MLP([3, 4, 2], seed=0)
    members = {k: _npy(v) for k, v in small.state_dict().items()}
    huge = dict(small.config, sizes=[784, 10**9, 10])       # 3 TB of float32 if built
    members[serialization.META_KEY] = _meta(huge)
    _write_npz(tmp_path / "liar.npz", members)

    def load():
        with pytest.raises(CheckpointError, match=r"liar.npz: the config .* implies parameters"):
            nn.load(tmp_path / "liar.npz")
    assert _peak_bytes(load) < 1 << 20


@pytest.mark.parametrize("config", [
    {"sizes": [3, 2.5, 2]}, {"sizes": [3, -4, 2]}, {"sizes": "34"},
    {"sizes": [3, 4, 2], "activation": "__import__"}, {"sizes": [3, 4, 2], "evil": 1},
])
def test_invalid_configs_are_checkpoint_errors(tmp_path, config):
    members = {k: _npy(v) for k, v in nn.MLP([3, 4, 2], seed=0).state_dict().items()}
    members[serialization.META_KEY] = _meta(config)
    _write_npz(tmp_path / "c.npz", members)
    with pytest.raises(CheckpointError, match="c.npz"):
        nn.load(tmp_path / "c.npz")


def test_a_corrupt_compressed_member_is_a_checkpoint_error(tmp_path):
    model = nn.MLP([3, 40, 2], seed=0)
    members = {k: _npy(v) for k, v in model.state_dict().items()}
    members[serialization.META_KEY] = _meta(model.config)
    path = tmp_path / "z.npz"
    _write_npz(path, members, zipfile.ZIP_DEFLATED)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("layers.0.weight.npy")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 10, start + info.compress_size - 10):    # scramble the deflate data
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="z.npz: not a readable handgrad checkpoint"):
        nn.load(path)


def test_a_fifo_or_a_directory_is_a_clear_error_not_a_hang(tmp_path):
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    result: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(result, lambda: nn.load(fifo)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():                  # unblock the reader before failing the test
        with open(fifo, "wb"):
            pass
        pytest.fail("nn.load blocked on a FIFO")
    assert isinstance(result[0], CheckpointError) and "is not a regular file" in str(result[0])
    with pytest.raises(CheckpointError, match="is a directory"):
        nn.load(tmp_path)


def _catch(into: list, fn) -> None:
    try:
        fn()
    except BaseException as e:       # noqa: BLE001 - handed to the test thread
        into.append(e)


# --- saving keeps what the user had -------------------------------------------------------

@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_new_checkpoints_get_normal_permissions_from_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_saving_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "store" / "model.npz"
    real.parent.mkdir()
    nn.save(nn.MLP([2, 2], seed=0), real)
    link = tmp_path / "latest.npz"
    link.symlink_to(real)
    model = nn.MLP([2, 2], seed=9)
    nn.save(model, link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert _same(nn.load(real), _arrays(model))


def test_a_read_only_checkpoint_is_not_replaced(tmp_path):
    path = nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz")
    os.chmod(path, 0o444)
    before = path.read_bytes()
    with pytest.raises(PermissionError, match="read-only; it was not replaced"):
        nn.save(nn.MLP([2, 2], seed=1), path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]       # no temporary file left behind


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_a_device_is_refused_not_read_forever():
    with pytest.raises(CheckpointError, match="/dev/zero: is not a regular file"):
        nn.load("/dev/zero")
    with pytest.raises(nn.data.DatasetError, match="/dev/zero"):
        nn.data.read_idx("/dev/zero")


def test_evaluate_on_a_crafted_oversized_checkpoint_is_one_line(tmp_path, capsys):
    from handgrad.nn import cli
    small = nn.MLP([3, 4, 2], seed=0)
    members = {k: _npy(v) for k, v in small.state_dict().items()}
    members[serialization.META_KEY] = _meta(dict(small.config, sizes=[784, 10**9, 10]))
    _write_npz(tmp_path / "crafted.npz", members)
    assert cli.main(["evaluate", str(tmp_path / "crafted.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crafted.npz: the config" in err[0]
