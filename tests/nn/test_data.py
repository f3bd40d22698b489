"""nn.data: the IDX reader and its errors, MNIST-format loading, teaching datasets,
preprocessing and batching."""
from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn import data as D


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 5)])
@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_idx_round_trip(tmp_path, dtype, shape, name):
    arr = (np.arange(np.prod(shape)) - 3).reshape(shape).astype(dtype)
    path = D.write_idx(tmp_path / name, arr)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
    back = D.read_idx(path)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def _idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes() + arr.tobytes()


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b"\x01" + b[1:], "bad magic"),
    (lambda b: b[:2] + b"\x07" + b[3:], "unknown IDX type code 0x07"),
    (lambda b: b[:-10], "truncated: expected 60 bytes of data for shape (3, 4, 5), found 50"),
    (lambda b: b + b"xx", "2 unexpected bytes"),
    (lambda b: b[:3] + b"\x09" + b[4:], "unsupported number of dimensions 9"),
    (lambda b: b[:6], "truncated header"),
    (lambda b: b"\x1f\x8b" + b"not gzip at all", "corrupt gzip"),
    (lambda b: gzip.compress(b)[:-8], "truncated gzip stream: it breaks off after 76 of the 76 "
                                      "bytes the header declares (60 of data for shape (3, 4, 5)), "
                                      "before the end of its last member"),   # no trailer
    (lambda b: gzip.compress(b)[:-12] + gzip.compress(b)[-8:], "corrupt gzip"),
])
def test_corrupt_idx_files_are_reported_with_their_path(tmp_path, mutate, message):
    good = _idx_bytes(np.zeros((3, 4, 5), np.uint8))
    path = tmp_path / "broken-images-idx3-ubyte"
    path.write_bytes(mutate(good))
    with pytest.raises(D.DatasetError) as info:
        D.read_idx(path)
    assert str(path) in str(info.value) and message in str(info.value)


def test_a_gzip_file_of_several_members_is_read_whole_and_its_errors_state_true_sizes(tmp_path):
    """pigz, bgzip and `cat a.gz b.gz` write several gzip members; the last one's recorded
    length (ISIZE) is not the stream's. Such a file was refused ("the gzip stream holds a
    different amount (1084 mod 2^32 bytes in all)") although it held exactly its data."""
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = _idx_bytes(arr)
    path = tmp_path / "images-idx3-ubyte.gz"
    parts = (raw[:500], raw[500:1000], raw[1000:])
    path.write_bytes(b"".join(gzip.compress(p) for p in parts))
    assert np.array_equal(D.read_idx(path), arr)
    path.write_bytes(gzip.compress(raw[:7]) + gzip.compress(raw[7:]) + bytes(5))   # zero padding
    assert np.array_equal(D.read_idx(path), arr)
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:-100]))      # data short
    with pytest.raises(D.DatasetError, match=r"truncated: expected 1568 bytes of data for shape "
                                             r"\(2, 28, 28\), found 1468"):
        D.read_idx(path)
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:] + b"xy"))
    with pytest.raises(D.DatasetError, match=r"holds a different amount: more than 1584 bytes"):
        D.read_idx(path)
    path.write_bytes(gzip.compress(raw[:500]) + gzip.compress(raw[500:])[:-8])     # no trailer
    with pytest.raises(D.DatasetError, match=r"truncated gzip stream: it breaks off after 1584 "
                                             r"of the 1584 bytes"):
        D.read_idx(path)


def _fake_mnist(directory: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, **override) -> None:
    rng = np.random.default_rng(0)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    files.update(override)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, arr in files.items():
        D.write_idx(directory / (stem + (".gz" if gz else "")), arr)


def test_load_mnist_from_a_directory_and_from_the_environment(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "files", gz=False)
    xtr, ytr, xte, yte = D.load_mnist("mnist", data_dir=tmp_path / "files")
    assert xtr.shape == (20, 28, 28) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert xte.shape == (10, 28, 28) and list(yte) == list(range(10))
    _fake_mnist(tmp_path / "root" / "mnist")
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "root"))
    assert D.load_mnist("mnist")[0].shape == (20, 28, 28)
    splits = D.load_dataset("mnist", n=8, val_fraction=0.25)
    assert splits.x_train.shape == (6, 784) and splits.x_val.shape == (2, 784)
    assert splits.x_train.dtype == np.float32 and 0 <= splits.x_train.min() and splits.x_train.max() <= 1
    assert splits.num_classes == 10 and splits.input_shape == (784,)


def test_missing_files_say_where_we_looked_and_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    monkeypatch.setattr(D.Path, "home", lambda: tmp_path / "home")
    with pytest.raises(D.DatasetError) as info:
        D.load_mnist("mnist")
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "--data-dir" in msg and "HANDGRAD_DATA" in msg
    with pytest.raises(D.DatasetError, match="apt-get install dataset-fashion-mnist"):
        D.load_mnist("fashion-mnist")


def test_an_explicit_data_dir_without_the_files_is_an_error_with_no_fallback(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "root" / "mnist")
    monkeypatch.setenv("HANDGRAD_DATA", str(tmp_path / "root"))      # would be found there
    typo = tmp_path / "mnsit"
    typo.mkdir()
    with pytest.raises(D.DatasetError) as info:
        D.load_dataset("mnist", data_dir=typo)
    msg = str(info.value)
    assert f"the directory {typo} given with data_dir/--data-dir does not hold the dataset" in msg
    assert "t10k-labels-idx1-ubyte" in msg
    assert D.load_dataset("mnist").source == str(tmp_path / "root" / "mnist")   # no dir: fallback
    assert D.load_dataset("xor", seed=3).source == "generated (seed 3)"


def _marked_mnist(directory, value):
    """The four files, every pixel ``value``: which directory was read shows in the data."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 4), ("t10k", 2)):
        D.write_idx(directory / f"{split}-images-idx3-ubyte", np.full((n, 28, 28), value, np.uint8))
        D.write_idx(directory / f"{split}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))


def test_a_datasets_own_folder_is_searched_before_a_top_level_holding_another_datasets_files(
        tmp_path, monkeypatch):
    """MNIST and Fashion-MNIST files have the same names. data_dir=D read D's top-level
    (MNIST) files as fashion-mnist although D/fashion-mnist held the right ones, and
    $HANDGRAD_DATA's top level shadowed Debian's Fashion-MNIST package."""
    root, debian = tmp_path / "root", tmp_path / "debian"
    _marked_mnist(root, 1)                                    # MNIST at the top level
    _marked_mnist(root / "fashion-mnist", 2)
    _marked_mnist(debian, 3)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", debian)
    monkeypatch.setattr(D.Path, "home", lambda: tmp_path / "home")
    monkeypatch.delenv("HANDGRAD_DATA", raising=False)

    def pixel(name, data_dir=None):
        return int(D.load_mnist(name, data_dir=data_dir)[0][0, 0, 0])

    assert pixel("fashion-mnist", root) == 2 and pixel("mnist", root) == 1
    monkeypatch.setenv("HANDGRAD_DATA", str(root))
    assert pixel("fashion-mnist") == 2 and pixel("mnist") == 1
    for stem in D.MNIST_FILES.values():                       # no fashion-mnist/ any more
        (root / "fashion-mnist" / stem).unlink()
    assert pixel("fashion-mnist") == 3                        # Debian's, not root's MNIST
    assert D.load_dataset("fashion-mnist").source == str(debian)
    # A fashion-mnist/ folder that exists without the files: the top level is not read.
    with pytest.raises(D.DatasetError, match="its top level was not read, since .*fashion-mnist "
                                             "exists"):
        D.load_mnist("fashion-mnist", data_dir=root)
    monkeypatch.setattr(D, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(D.DatasetError, match=r"root itself was not read, since .*fashion-mnist "
                                             r"exists"):
        D.load_mnist("fashion-mnist")
    # The documented layouts: the files at the top level of $HANDGRAD_DATA or data_dir.
    (root / "fashion-mnist").rmdir()
    assert pixel("fashion-mnist") == 1 and pixel("fashion-mnist", root) == 1


def test_a_gzip_bomb_is_refused_after_the_header_without_inflating(tmp_path):
    import time
    # The header declares 60 bytes; the stream then inflates to 200 MB of zeros.
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(_idx_bytes(np.zeros((3, 4, 5), np.uint8)))
        block = bytes(1 << 20)
        for _ in range(200):
            f.write(block)
    assert path.stat().st_size < 1_000_000
    start = time.perf_counter()
    with pytest.raises(D.DatasetError, match="the gzip stream holds a different amount"):
        D.read_idx(path)
    assert time.perf_counter() - start < 0.5


def test_a_header_declaring_more_than_deflate_can_hold_is_refused(tmp_path):
    # A 1-byte body claimed to be 60000 x 28 x 28, with a forged ISIZE matching the claim.
    header = bytes([0, 0, 0x08, 3]) + np.asarray((60000, 28, 28), ">u4").tobytes()
    raw = gzip.compress(header + b"\0")
    declared = len(header) + 60000 * 28 * 28
    forged = raw[:-4] + (declared % 2**32).to_bytes(4, "little")
    path = tmp_path / "liar-images-idx3-ubyte.gz"
    path.write_bytes(forged)
    with pytest.raises(D.DatasetError, match=r"more than 1032x the"):
        D.read_idx(path)


def test_a_fifo_or_a_directory_is_an_error_not_a_hang(tmp_path):
    with pytest.raises(D.DatasetError, match="is a directory"):
        D.read_idx(tmp_path)
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    fifo = tmp_path / "train-images-idx3-ubyte"
    os.mkfifo(fifo)
    with pytest.raises(D.DatasetError, match="not a regular file"):
        D.read_idx(fifo)                    # opening it would wait for a writer forever


def test_inconsistent_files_are_errors(tmp_path):
    _fake_mnist(tmp_path / "a", **{"train-labels-idx1-ubyte": np.zeros(19, np.uint8)})
    with pytest.raises(D.DatasetError, match="labels for 20 images"):
        D.load_mnist("mnist", data_dir=tmp_path / "a")
    _fake_mnist(tmp_path / "b", **{"t10k-labels-idx1-ubyte": np.full(10, 12, np.uint8)})
    with pytest.raises(D.DatasetError, match="label 12 outside 0..9"):
        D.load_mnist("mnist", data_dir=tmp_path / "b")
    _fake_mnist(tmp_path / "c", **{"train-images-idx3-ubyte": np.zeros((20, 14, 14), np.uint8)})
    with pytest.raises(D.DatasetError, match=r"\(N, 28, 28\)"):
        D.load_mnist("mnist", data_dir=tmp_path / "c")


@pytest.mark.parametrize("labels,message", [
    (np.array([0, 1, 2.7, 3] * 5, np.float32), r"label 2.7 at index 2 is not an integer class "
                                               r"\(the file holds float32 values\)"),
    (np.array([0, 1, np.nan, 3] * 5, np.float64), "label nan at index 2 is not an integer"),
    (np.array([0, 1, 2, -1] * 5, np.int8), r"label -1 outside 0..9 \(the classes\), at index 3"),
    (np.array([0, 1, 2, 10] * 5, np.int32), "label 10 outside 0..9"),
])
def test_labels_must_be_integer_classes_checked_at_load(tmp_path, labels, message):
    _fake_mnist(tmp_path, **{"train-labels-idx1-ubyte": labels})
    with pytest.raises(D.DatasetError, match=f"train-labels-idx1-ubyte.gz: {message}"):
        D.load_mnist("mnist", data_dir=tmp_path)
    with pytest.raises(D.DatasetError, match="train-labels-idx1-ubyte.gz"):
        D.load_dataset("mnist", data_dir=tmp_path)


def test_float_labels_holding_whole_numbers_are_those_classes(tmp_path):
    _fake_mnist(tmp_path, **{"train-labels-idx1-ubyte": (np.arange(20) % 10).astype(np.float64)})
    y_train = D.load_mnist("mnist", data_dir=tmp_path)[1]
    assert y_train.dtype == np.int64 and list(y_train) == list(np.arange(20) % 10)


@pytest.mark.parametrize("split", ["train", "t10k"])
def test_a_folder_with_zero_images_is_a_dataset_error(tmp_path, split):
    _fake_mnist(tmp_path, **{f"{split}-images-idx3-ubyte": np.zeros((0, 28, 28), np.uint8),
                             f"{split}-labels-idx1-ubyte": np.zeros(0, np.uint8)})
    with pytest.raises(D.DatasetError, match=rf"{split}-images-idx3-ubyte.gz: holds no images "
                                             rf"\(shape \(0, 28, 28\)\)"):
        D.load_dataset("mnist", data_dir=tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_dimensions_whose_product_overflows_int64_are_a_dataset_error(tmp_path, gz):
    # 65536**4 = 2**64 elements: wraps to 0 in int64, which matched a header-only file
    head = bytes([0, 0, 0x08, 4]) + np.full(4, 65536, ">u4").tobytes()
    path = tmp_path / ("huge-idx4-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(head) if gz else head)
    with pytest.raises(D.DatasetError, match=f"{path}: .*1844674407370955"):
        D.read_idx(path)


@pytest.mark.skipif(not D.DEBIAN_FASHION_MNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_real_fashion_mnist_from_the_debian_package():
    xtr, ytr, xte, yte = D.load_mnist("fashion-mnist")
    assert xtr.shape == (60000, 28, 28) and xte.shape == (10000, 28, 28)
    assert np.array_equal(np.bincount(ytr), np.full(10, 6000))
    assert np.array_equal(np.bincount(yte), np.full(10, 1000))
    s = D.load_dataset("fashion-mnist", n=1000)
    assert s.x_train.shape == (1000, 784) and s.x_test.shape == (10000, 784)


@pytest.mark.parametrize("name", ["spirals", "moons", "circles", "xor", "blobs"])
def test_teaching_datasets_are_deterministic_balanced_and_typed(name):
    gen = D.GENERATORS[name]
    X, y = gen(n=120, seed=3)
    X2, y2 = gen(n=120, seed=3)
    X3, _ = gen(n=120, seed=4)
    assert np.array_equal(X, X2) and np.array_equal(y, y2) and not np.array_equal(X, X3)
    assert X.dtype == np.float32 and y.dtype == np.int64 and len(X) == len(y) == 120
    counts = np.bincount(y)
    assert counts.max() - counts.min() <= 1
    s = D.load_dataset(name, seed=1)
    assert len(s.x_train) == 4 * len(s.x_test) and s.num_classes == counts.size


def test_a_small_mlp_can_learn_each_teaching_dataset():
    for name in ("moons", "circles", "xor", "blobs"):
        s = D.load_dataset(name, seed=0)
        model = nn.MLP([2, 32, s.num_classes], seed=0)
        nn.fit(model, nn.CrossEntropyLoss(), nn.optim.Adam(model, lr=0.03), (s.x_train, s.y_train),
               epochs=150, batch_size=None, progress=False)
        assert nn.evaluate(model, nn.CrossEntropyLoss(), (s.x_test, s.y_test))["accuracy"] > 0.9, name


@pytest.mark.parametrize(("asked", "files_of"), [("mnist", "fashion-mnist"),
                                                 ("fashion-mnist", "mnist")])
def test_the_other_datasets_files_under_one_name_are_an_error(tmp_path, asked, files_of):
    """MNIST asked for with a --data-dir holding Fashion-MNIST (same file names, same sizes)
    trained and reported test accuracy on Fashion-MNIST under the name mnist."""
    first = np.array(D.FIRST_LABELS[(files_of, "train")] * 2, np.uint8)
    _fake_mnist(tmp_path, **{"train-labels-idx1-ubyte": first})
    with pytest.raises(D.DatasetError, match=rf"these are {files_of}'s train labels .* not "
                                             rf"{asked}'s"):
        D.load_mnist(asked, data_dir=tmp_path)
    assert D.load_mnist(files_of, data_dir=tmp_path)[1][:10].tolist() == first[:10].tolist()


@pytest.mark.parametrize("n", [0, -5, True, 2.0])
def test_load_dataset_refuses_a_count_of_mnist_examples_that_is_not_a_positive_integer(tmp_path, n):
    """x_train[:n] took n = -5 as all but the last five and True as one example."""
    _fake_mnist(tmp_path)
    with pytest.raises(ValueError, match="mnist: n must be an integer >= 1"):
        D.load_dataset("mnist", data_dir=tmp_path, n=n)
    assert D.load_dataset("mnist", data_dir=tmp_path, n=100).x_train.shape == (20, 784)  # all there are


def test_normalize_images_takes_uint8_pixels_only():
    """Float images divided by 255 again were squeezed into [0, 0.004]; int64 1000 became 3.9."""
    once = D.normalize_images(np.array([0, 128, 255], np.uint8))
    for x in (once, np.array([1000]), np.array([[0.5]], np.float64)):
        with pytest.raises(TypeError, match="normalize_images: expected uint8"):
            D.normalize_images(x)


def test_preprocessing():
    assert D.normalize_images(np.array([0, 255], np.uint8)).tolist() == [0.0, 1.0]
    rng = np.random.default_rng(0)
    a, b = rng.normal(5, 3, (100, 4)), rng.normal(5, 3, (10, 4))
    sa, sb = D.standardize(a, b)
    np.testing.assert_allclose(sa.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(sa.std(axis=0), 1, rtol=1e-6)
    np.testing.assert_allclose(sb, (b - a.mean(0)) / (a.std(0) + 1e-8))
    np.testing.assert_array_equal(D.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        D.one_hot(np.array([3]), 3)
    with pytest.raises(TypeError):
        D.one_hot(np.array([0.5]), 3)


def test_standardize_of_integer_pixels_gives_float_z_scores_not_wrapped_integers():
    x = np.array([[0, 10], [255, 20], [128, 30]], dtype=np.uint8)
    test = np.array([[0, 40]], dtype=np.uint8)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-8
    sx, st = D.standardize(x, test)
    assert sx.dtype == st.dtype == np.float32
    np.testing.assert_allclose(sx, (x - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(st, (test - mean) / std, rtol=1e-6)      # negative: no wrap
    assert D.standardize(x.astype(np.int64))[0].dtype == np.float64      # wider than float32 holds
    with pytest.raises(TypeError, match="standardize: x_train must hold numbers"):
        D.standardize(np.array([["a"], ["b"]]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_standardize_makes_a_constant_feature_exactly_zero_in_any_float_dtype(dtype):
    """The statistics were computed in the input dtype: a constant float32 column came out
    +-1 (its mean an ulp off, the std that rounding error), a float16 one NaN (eps rounds to
    0 in float16, 0/0). They are computed in float64, about the first example."""
    rng = np.random.default_rng(0)
    x = np.stack([np.full(1000, 0.7), np.ones(1000), np.arange(1000.0), rng.normal(3, 2, 1000)],
                 axis=1).astype(dtype)
    test = x[:5].copy()
    with np.errstate(all="raise"):
        z, zt = D.standardize(x, test)
    assert z.dtype == zt.dtype == dtype
    assert not z[:, :2].any() and not zt[:, :2].any()          # exactly 0, not +-1 or NaN
    x64 = x.astype(np.float64)
    expected = (x64 - x64.mean(0)) / (x64.std(0) + 1e-8)
    np.testing.assert_allclose(z[:, 2:].astype(np.float64), expected[:, 2:],
                               rtol={np.float16: 2e-3}.get(dtype, 1e-6), atol=1e-6)


def test_train_val_split():
    X, y = np.arange(100)[:, None], np.arange(100) % 4
    xt, yt, xv, yv = D.train_val_split(X, y, 0.2, seed=1)
    assert len(xv) == 20 and len(xt) == 80
    assert set(xt[:, 0]) | set(xv[:, 0]) == set(range(100)) and not set(xt[:, 0]) & set(xv[:, 0])
    again = D.train_val_split(X, y, 0.2, seed=1)
    assert np.array_equal(again[2], xv)
    _, _, _, yv = D.train_val_split(X, y, 0.2, seed=1, stratify=True)
    assert np.array_equal(np.bincount(yv), [5, 5, 5, 5])
    for bad in (0, 1, 1.5):
        with pytest.raises(ValueError, match="val_fraction"):
            D.train_val_split(X, y, bad)
    with pytest.raises(ValueError, match="empty"):
        D.train_val_split(X[:3], y[:3], 0.1)


def test_a_stratified_split_of_one_hot_or_probability_targets_stratifies_by_each_rows_class():
    """np.unique and y == c ran elementwise over (N, C): flat indices used as rows, an
    IndexError here (or wrong rows when every index happened to be below N)."""
    X, y = np.arange(200).reshape(100, 2), np.arange(100) % 4
    expected = D.train_val_split(X, y, 0.2, seed=1, stratify=True)
    soft = np.full((100, 4), 0.1) + 0.6 * np.eye(4)[y]               # argmax: the label
    for targets in (D.one_hot(y, 4), np.eye(4, dtype=np.int64)[y], soft, y[:, None]):
        xt, yt, xv, yv = D.train_val_split(X, targets, 0.2, seed=1, stratify=True)
        assert np.array_equal(xt, expected[0]) and np.array_equal(xv, expected[2])
        assert np.array_equal(yt, targets[xt[:, 0] // 2]) and np.array_equal(yv, targets[xv[:, 0] // 2])
    multi = np.eye(4)[y]
    multi[7, 0] = 1.0
    with pytest.raises(ValueError, match=r"train_val_split: stratify needs class labels \(N,\) "
                                         r"or one-hot/probability rows \(N, C\), each non-negative "
                                         r"and summing to 1; row 7 of y is \[1.0, 0.0, 0.0, 1.0\]"):
        D.train_val_split(X, multi, 0.2, stratify=True)
    with pytest.raises(ValueError, match=r"got y of dtype float64 and shape \(100, 2, 2\)"):
        D.train_val_split(X, np.zeros((100, 2, 2)), 0.2, stratify=True)


def test_a_data_loaders_order_is_a_function_of_its_seed_and_epoch():
    """Each pass is the next epoch; set_epoch(e) makes a new loader's next pass the one
    an old loader made at its e-th pass (resuming a run), and the passes after it follow."""
    X, y = np.arange(50)[:, None], np.arange(50)

    def passes(loader, k):
        return [np.concatenate([b for _, b in loader]).tolist() for _ in range(k)]

    run = passes(D.DataLoader(X, y, batch_size=8, seed=4), 5)
    assert all(sorted(p) == list(range(50)) for p in run)
    assert len({tuple(p) for p in run}) == 5                     # consecutive passes differ
    resumed = D.DataLoader(X, y, batch_size=8, seed=4)
    resumed.set_epoch(3)
    assert passes(resumed, 3) == run[2:]
    order = np.random.default_rng([4, 2]).permutation(50).tolist()   # fit's (X, y) order
    assert run[1] == order
    assert passes(D.DataLoader(X, y, batch_size=8, seed=5), 1)[0] != run[0]
    assert passes(D.DataLoader(X, y, batch_size=8, shuffle=False), 2) == [list(range(50))] * 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="set_epoch: epoch must be a non-negative integer"):
            resumed.set_epoch(bad)
    with pytest.raises(ValueError, match="DataLoader: seed must be a non-negative integer"):
        D.DataLoader(X, y, seed=-1)
    a, b = D.DataLoader(X, y, seed=None), D.DataLoader(X, y, seed=None)
    assert a.seed != b.seed and passes(a, 1) != passes(b, 1)


@pytest.mark.parametrize("option, value, message", [
    ("shuffle", "no", "DataLoader: shuffle must be True or False, got 'no'"),
    ("drop_last", "no", "DataLoader: drop_last must be True or False, got 'no'"),
    ("batch_size", True, "DataLoader: batch_size must be a positive integer, got True"),
])
def test_a_data_loader_refuses_options_that_are_not_what_they_say(option, value, message):
    """shuffle="no" shuffled, drop_last="no" dropped the tail, batch_size=True was 1 (fit
    and PyTorch refuse them)."""
    X = y = np.arange(10)
    with pytest.raises(ValueError, match=re.escape(message)):
        D.DataLoader(X, y, **{option: value})
    assert D.DataLoader(X, y, shuffle=np.bool_(False)).shuffle is False


def test_batches_and_data_loader():
    X, y = np.arange(10)[:, None], np.arange(10)
    seen = np.concatenate([yb for _, yb in D.batches(X, y, 3, rng=np.random.default_rng(0))])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    assert [len(yb) for _, yb in D.batches(X, y, 3, shuffle=False, drop_last=True)] == [3, 3, 3]
    loader = D.DataLoader(X, y, batch_size=4, seed=5)
    assert len(loader) == 3
    first, second = [np.concatenate([b for _, b in loader]) for _ in range(2)]
    assert sorted(first) == sorted(second) and list(first) != list(second)
    again = np.concatenate([b for _, b in D.DataLoader(X, y, batch_size=4, seed=5)])
    assert np.array_equal(first, again)
    with pytest.raises(ValueError, match="batch_size"):
        D.DataLoader(X, y, batch_size=0)
    with pytest.raises(ValueError, match="10 inputs but 9"):
        D.DataLoader(X, y[:9])
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        D.load_dataset("cifar")


def test_standardize_only_shifts_a_feature_that_is_constant_in_training():
    """Divided by its std of 0 plus eps, a value 0.5 away in the test set became 5e7
    (1.28e10 on Fashion-MNIST's border pixels, and a test loss of 80921 for 0.738). Such a
    feature is divided by 1, as scikit-learn's StandardScaler does."""
    train = np.array([[1.0, 3.0], [1.0, 5.0], [1.0, 7.0]])
    test = np.array([[1.5, 5.0]])
    z_train, z_test = D.standardize(train, test)
    assert np.array_equal(z_train[:, 0], [0.0, 0.0, 0.0])
    assert z_test[0, 0] == 0.5 and z_test[0, 1] == pytest.approx(0.0, abs=1e-12)
    assert z_train[:, 1] == pytest.approx([-1.2247448, 0.0, 1.2247448], rel=1e-6)


@pytest.mark.parametrize("classes, each, fraction, asked", [
    (10, 15, 0.1, 15), (10, 25, 0.1, 25), (2, 5, 0.3, 3), (10, 10, 0.05, 5), (3, 7, 0.5, 10)])
def test_a_stratified_split_holds_the_fraction_of_the_whole_set(classes, each, fraction, asked):
    """Each class's share rounded on its own gave 20 for 15 (10 classes of 15), and an
    "empty split" error for 5 of 100. The shares now add up to round(N x fraction), the
    remainders going to the classes with the largest ones."""
    y = np.repeat(np.arange(classes), each)
    X = np.arange(len(y), dtype=np.float64)[:, None]
    _, y_train, _, y_val = D.train_val_split(X, y, fraction, stratify=True)
    assert len(y_val) == asked and len(y_train) == len(y) - asked
    counts = np.bincount(y_val, minlength=classes)
    assert counts.max() - counts.min() <= 1


def test_data_helpers_name_the_argument_at_fault():
    """DataLoader of a 0-d array or None (it was "len() of unsized object"), train_val_split
    of lists (a numpy indexing TypeError), batches' flags ("no" shuffled)."""
    X = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"DataLoader: the targets must be an array with one "
                                         r"example per row, got None"):
        D.DataLoader(X, None)
    with pytest.raises(ValueError, match=r"DataLoader: the inputs must be an array with one "
                                         r"example per row, got 3.0"):
        D.DataLoader(np.float64(3.0), [1])
    x_train, y_train, x_val, y_val = D.train_val_split(X.tolist(), [0, 1, 0, 1], 0.5)
    assert x_train.shape == (2, 2) and y_val.shape == (2,)
    with pytest.raises(ValueError, match=r"batches: shuffle must be True or False, got 'no'"):
        next(D.batches(X, np.zeros(4), 2, shuffle="no"))
    with pytest.raises(ValueError, match=r"batches: batch_size must be a positive integer, got True"):
        next(D.batches(X, np.zeros(4), True))
