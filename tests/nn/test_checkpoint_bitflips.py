"""Every corruption of a checkpoint is detected or harmless: each single-bit flip either
loads exactly the saved data or raises CheckpointError naming the file (never another
exception, never different weights)."""
from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from handgrad import engine, nn
from handgrad.nn import optim, serialization
from handgrad.nn.serialization import CheckpointError


def _checkpoint(path: Path, sizes: list[int], with_optimizer: bool = True) -> Path:
    """A checkpoint with parameters, metadata and optimizer state (after one step)."""
    model = nn.MLP(sizes, seed=0)
    opt = optim.SGD(model, lr=0.1, momentum=0.9)
    x = np.ones((4, sizes[0]), np.float32)
    nn.CrossEntropyLoss()(model(engine.Tensor(x)), np.zeros(4, np.int64)).backward()
    opt.step()
    return nn.save(model, path, metadata={"dataset": "xor", "seed": 0},
                   optimizer=opt if with_optimizer else None)


def _same(a: Any, b: Any) -> bool:
    """Equal, bit for bit and type for type."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and a.tobytes() == b.tobytes())
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _flip(good: bytes, bit: int) -> bytes:
    spoiled = bytearray(good)
    spoiled[bit // 8] ^= 1 << (bit % 8)
    return bytes(spoiled)


def _check_flips(good: bytes, bits: Any, target: Path, sizes: list[int]) -> dict[str, int]:
    """Load the file with each bit of ``bits`` flipped; count what happened."""
    target.write_bytes(good)
    reference = serialization.read_checkpoint(target)
    outcome = {"same": 0, "refused": 0}
    for bit in bits:
        target.write_bytes(_flip(good, int(bit)))
        try:
            ck = serialization.read_checkpoint(target)
        except CheckpointError as e:
            assert str(target) in str(e), f"bit {bit}: {e}"
            outcome["refused"] += 1
            continue
        assert _same(ck.meta, reference.meta), f"bit {bit}: metadata differs"
        assert _same(ck.params, reference.params), f"bit {bit}: parameters differ"
        assert _same(ck.optimizer_state, reference.optimizer_state), f"bit {bit}: optimizer"
        model = nn.MLP(sizes, seed=1)                                     # the full path too
        with_optimizer = reference.optimizer_state is not None
        nn.load(target, model, optim.SGD(model, lr=0.1, momentum=0.9) if with_optimizer else None)
        assert _same(dict(model.state_dict()), reference.params), f"bit {bit}: model differs"
        outcome["same"] += 1
    return outcome


def test_every_single_bit_flip_of_a_small_checkpoint_is_refused_or_harmless(tmp_path):
    sizes = [2, 2]       # the optimizer's members are in the next test's sample
    good = _checkpoint(tmp_path / "good.npz", sizes, with_optimizer=False).read_bytes()
    assert len(good) < 2000                 # every bit: ~14,000 loads, about 10 s
    outcome = _check_flips(good, range(8 * len(good)), tmp_path / "flipped.npz", sizes)
    # the harmless flips are in fields zipfile does not use (the local headers' copies of
    # the sizes and CRC, times, the end record's entry counts)
    assert outcome["refused"] > 0.8 * 8 * len(good) and outcome["same"] > 0


def _member_span(good: bytes, name: str) -> tuple[int, int]:
    """Where the stored bytes of member ``name`` start in the file, and how many there are."""
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        info = zf.getinfo(name)
    name_len, extra_len = struct.unpack("<HH", good[info.header_offset + 26:info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def test_bit_flips_in_a_checkpoint_with_a_member_over_4_kib(tmp_path):
    sizes = [3, 400, 2]                      # layers.0.weight: 4,800 bytes of float32
    good = _checkpoint(tmp_path / "good.npz", sizes).read_bytes()
    start, size = _member_span(good, "layers.0.weight.npy")
    assert size > 4096
    header = range(8 * (start - 100), 8 * (start + 128))    # its zip and .npy headers, all
    sample = np.random.default_rng(0).choice(8 * len(good), 1500, replace=False)
    outcome = _check_flips(good, [*header, *sample], tmp_path / "flipped.npz", sizes)
    assert outcome["refused"] > 0.8 * (len(header) + len(sample))


def _spoil_npy_header(good: bytes, member: str, old: bytes, new: bytes) -> bytes:
    """``good`` with bytes of one member's .npy header replaced in place (the zip CRC is
    left as it was: what a disk or a transfer does)."""
    start, _ = _member_span(good, member)
    at = good.index(old, start, start + 128)
    assert len(old) == len(new)
    return good[:at] + new + good[at + len(old):]


@pytest.mark.parametrize("old,new", [
    pytest.param(b"'<f4'", b"'<f2'", id="dtype-f2-half-read"),
    pytest.param(struct.pack("<H", 118), struct.pack("<H", 102), id="header-length-shifted"),
])
def test_a_one_byte_change_in_the_header_of_a_big_member_is_refused(tmp_path, old, new):
    # 48 KB of weights: zipfile reads ahead 4 KiB at most, so a read that stops short of
    # the member's end never reached the CRC check before
    good = _checkpoint(tmp_path / "good.npz", [3, 4000, 2]).read_bytes()
    with zipfile.ZipFile(io.BytesIO(good)) as zf:   # the header length is what np.save wrote
        assert zf.read("layers.0.weight.npy")[8:10] == struct.pack("<H", 118)
    path = tmp_path / "spoiled.npz"
    path.write_bytes(_spoil_npy_header(good, "layers.0.weight.npy", old, new))
    with pytest.raises(CheckpointError, match=r"spoiled.npz: .*Bad CRC-32"):
        nn.load(path)


# --- every failure of the container and header parsers is a CheckpointError --------------

def _npz(path: Path, members: dict[str, bytes]) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return path.read_bytes()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _raw_header(text: bytes) -> bytes:
    """A version 1.0 .npy header holding ``text`` (a correct zip CRC around it)."""
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


@pytest.mark.parametrize("header", [
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (3,",    # tokenize: EOF in statement
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4)} ]",   # a syntax error
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), 'x': 1}",
    b"[1, 2, 3]",
    b"{'descr': 'f4,f4', 'fortran_order': False, 'shape': (1,)}",      # structured
    b"{'descr': '<U0', 'fortran_order': False, 'shape': (10**12,)}",   # zero itemsize
    b"{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}",        # 8 bytes, 4 held
])
def test_a_malformed_array_header_is_a_checkpoint_error(tmp_path, header):
    path = tmp_path / "h.npz"
    _npz(path, {"w": _raw_header(header + b"\n") + b"\0" * 4,
                serialization.META_KEY: _npy(np.array("{}"))})
    with pytest.raises(CheckpointError, match="h.npz"):
        serialization.read_checkpoint(path)


def _patch_directory(good: bytes, offset_in_entry: int, fmt: str, value: int) -> bytes:
    """``good`` with a field of the first central directory entry set to ``value``."""
    at = good.index(b"PK\x01\x02") + offset_in_entry
    return good[:at] + struct.pack(fmt, value) + good[at + struct.calcsize(fmt):]


@pytest.mark.parametrize("offset,fmt,value,raised", [
    (10, "<H", 99, "NotImplementedError"),             # an unknown compression method
    (8, "<H", 0x1, "RuntimeError"),                     # encrypted: zipfile wants a password
    (8, "<H", 0x40, "NotImplementedError"),             # strong encryption
    (6, "<H", 99, "NotImplementedError"),               # needs zip version 9.9
])
def test_container_fields_zipfile_does_not_support_are_checkpoint_errors(tmp_path, offset, fmt,
                                                                         value, raised):
    good = _checkpoint(tmp_path / "good.npz", [2, 2]).read_bytes()
    path = tmp_path / "odd.npz"
    path.write_bytes(_patch_directory(good, offset, fmt, value))
    with pytest.raises(CheckpointError, match=f"odd.npz: not a readable handgrad checkpoint "
                                              f"\\({raised}"):
        nn.load(path)
