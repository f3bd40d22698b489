"""nn.data: swapped train/test files, forged or trailing gzip bytes, and the arguments of
batches, standardize and the seeded helpers."""
from __future__ import annotations

import gzip
import re
import struct
import tracemalloc

import numpy as np
import pytest

from handgrad.nn import data as D

from .test_data import _fake_mnist, _idx_bytes


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
@pytest.mark.parametrize(("split", "stem", "holds"), [
    ("train", "train-labels-idx1-ubyte", "test"),     # train and test files swapped
    ("test", "t10k-labels-idx1-ubyte", "train"),      # the train files copied as the test files
])
def test_one_splits_files_in_place_of_the_other_are_an_error(tmp_path, name, split, stem, holds):
    """Fashion-MNIST with its train and t10k files swapped trained on the official test set
    and reported "test accuracy" on the training images, without a word."""
    labels = np.array(D.FIRST_LABELS[(name, holds)] * 2, np.uint8)
    _fake_mnist(tmp_path, **{stem: labels[:20 if split == "train" else 10]})
    with pytest.raises(D.DatasetError) as info:
        D.load_mnist(name, data_dir=tmp_path)
    message = str(info.value)
    assert message.startswith(str(tmp_path / f"{stem}.gz") + ": ") and "\n" not in message
    assert f"these look like {name}'s {holds} labels, not its {split} labels" in message


def _forged_isize(path, payload_bytes: int) -> int:
    """A .gz of random bytes whose IDX header declares about 1000 times the file, with the
    recorded length (ISIZE) forged to match; the declared total."""
    payload = np.random.default_rng(0).integers(0, 256, payload_bytes, np.uint8).tobytes()
    n = 1000 * payload_bytes // 784
    head = bytes([0, 0, 8, 3]) + struct.pack(">III", n, 28, 28)
    z = bytearray(gzip.compress(head + payload, compresslevel=1))
    total = len(head) + n * 784
    assert total <= D.MAX_DEFLATE_RATIO * len(z)          # past the ratio check
    z[-4:] = struct.pack("<I", total % 2**32)
    path.write_bytes(z)
    return total


def test_a_forged_gzip_length_is_a_dataset_error_without_allocating_the_declared_size(tmp_path):
    """read_idx called GzipFile.read(declared + 1), which allocates that much before reading:
    a 25 MB file declaring 25.7 GB was a MemoryError traceback."""
    path = tmp_path / "train-images-idx3-ubyte.gz"
    declared = _forged_isize(path, 64 * 1024)              # 64 KB declaring 64 MB
    tracemalloc.start()
    try:
        with pytest.raises(D.DatasetError, match=r"corrupt gzip stream") as info:
            D.read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: ")
    assert peak < declared / 8, f"{peak} bytes allocated for a file declaring {declared}"


@pytest.mark.parametrize("tail", [b"\x01", b"\n", b"\x01\x02", b"junk"])
def test_bytes_after_the_last_gzip_member_are_called_that_not_truncation(tmp_path, tail):
    """One stray byte was "truncated gzip stream: it breaks off after 40 of the 40 bytes",
    two or more "corrupt gzip stream: ... incorrect header check"."""
    path = tmp_path / "images-idx3-ubyte.gz"
    good = gzip.compress(_idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)))
    path.write_bytes(good + bytes(3) + tail)          # zero padding is skipped, the rest is not
    plural = "s" if len(tail) > 1 else ""
    with pytest.raises(D.DatasetError, match=rf"^{re.escape(str(path))}: {len(tail)} unexpected byte{plural} "
                                             rf"after the gzip data \(from byte {len(good) + 3} on"):
        D.read_idx(path)


def test_a_second_gzip_member_whose_magic_straddles_two_reads_is_read(tmp_path):
    """The stream is counted in 64 KiB reads: a member starting at the last byte of one read
    has half its magic there, and is no stray byte."""
    arr = np.random.default_rng(0).integers(0, 256, 70_000, np.uint8)
    raw = _idx_bytes(arr)
    cut = next(k for k in range(65_400, 65_536)               # stored blocks: 1 byte per byte
               if len(gzip.compress(raw[:k], compresslevel=0)) == (1 << 16) - 1)
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw[:cut], compresslevel=0) + gzip.compress(raw[cut:]))
    assert np.array_equal(D.read_idx(path), arr)


def test_batches_takes_lists_and_names_itself_for_a_scalar():
    """batches(lists) was numpy's "only integer scalar arrays can be converted to a scalar
    index", batches(np.float64(3.0), [1]) "object of type 'numpy.float64' has no len()"."""
    X, y = [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], [0, 1, 0]
    got = list(D.batches(X, y, 2, shuffle=False))
    assert [b[0].tolist() for b in got] == [X[:2], X[2:]] and [b[1].tolist() for b in got] == [y[:2], y[2:]]
    with pytest.raises(ValueError, match=r"batches: the inputs must be an array with one example "
                                         r"per row, got 3.0"):
        next(D.batches(np.float64(3.0), [1], 2))
    with pytest.raises(ValueError, match=r"batches: 3 inputs but 2 targets"):
        next(D.batches(X, y[:2], 2))


X4, Y4 = np.arange(8.0).reshape(4, 2), np.array([0, 1, 0, 1])
SEEDED = {
    "train_val_split": lambda seed: D.train_val_split(X4, Y4, 0.5, seed=seed),
    "load_dataset": lambda seed: D.load_dataset("moons", n=20, seed=seed),
    "spirals": lambda seed: D.spirals(30, seed=seed),
    "moons": lambda seed: D.moons(20, seed=seed),
    "circles": lambda seed: D.circles(20, seed=seed),
    "xor": lambda seed: D.xor(20, seed=seed),
    "blobs": lambda seed: D.blobs(30, seed=seed),
}


@pytest.mark.parametrize("owner", SEEDED)
@pytest.mark.parametrize("seed", [None, True, -1, 1.0])
def test_seeded_helpers_refuse_a_seed_that_is_not_a_non_negative_integer(owner, seed):
    """seed=None gave other data (or another split) on every call, True was seed 1, and -1
    was numpy's "expected non-negative integer", naming neither function nor argument."""
    with pytest.raises(ValueError, match=rf"^{owner}: seed must be a non-negative integer, "
                                         rf"got {seed}$"):
        SEEDED[owner](seed)


@pytest.mark.parametrize("owner", SEEDED)
def test_seeded_helpers_take_python_and_numpy_integers_alike(owner):
    first, again = SEEDED[owner](3), SEEDED[owner](np.int64(3))
    if owner == "load_dataset":
        first, again = (first.fingerprint(),), (again.fingerprint(),)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


@pytest.mark.parametrize("x_train", [np.empty((0, 3), np.float32), np.float32(2.0)])
def test_standardize_without_training_examples_is_an_error(x_train):
    """An empty training set gave all-NaN test data (a "Mean of empty slice" warning only)."""
    with pytest.raises(ValueError, match=r"standardize: x_train must hold at least one example "
                                         rf"\(row\) to take the statistics of, got shape "
                                         rf"{re.escape(str(np.shape(x_train)))}"):
        D.standardize(x_train, np.ones((2, 3), np.float32))
