"""Data: the IDX file format of MNIST, the MNIST-format datasets, teaching datasets
generated in code, preprocessing, and minibatch iteration.

Nothing here downloads anything: MNIST-format files are read from a directory you
point to (or Debian's Fashion-MNIST package); the teaching datasets are generated from
a seed, bit for bit the same on every machine.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from handgrad.engine.plain import plain_repr

from .errors import UserInputError
from .files import regular_file_size

DATASETS = ("spirals", "moons", "circles", "xor", "blobs", "mnist", "fashion-mnist")


class DatasetError(UserInputError, ValueError):
    """A dataset file that is missing, truncated or corrupt; the message names the path."""


# --- the IDX format ----------------------------------------------------------------------
# magic: 0x00 0x00 <type code> <number of dims>, then one big-endian uint32 per dim, then
# the data, big-endian, row-major.
IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"


# deflate cannot expand data by more than about 1032:1; a declared size beyond that many
# times the compressed file is a lie (a "zip bomb"), refused before inflating anything.
MAX_DEFLATE_RATIO = 1032


def regular_file(path: Path, what: str = "file") -> int:
    """The size of ``path`` if it is a regular file; a DatasetError naming it otherwise."""
    return regular_file_size(path, what, DatasetError)


def _header(path: Path, head: bytes) -> tuple[tuple[int, ...], np.dtype]:
    """Check magic, type code and dimensions; return (dims, dtype)."""
    if len(head) < 4:
        raise DatasetError(f"{path}: too short to be an IDX file ({len(head)} bytes)")
    if head[0] != 0 or head[1] != 0:
        raise DatasetError(f"{path}: bad magic number {head[:4].hex()} (an IDX file starts "
                           f"with two zero bytes)")
    code, ndim = head[2], head[3]
    if code not in IDX_TYPES:
        raise DatasetError(f"{path}: unknown IDX type code 0x{code:02x}")
    if not 1 <= ndim <= 4:
        raise DatasetError(f"{path}: unsupported number of dimensions {ndim}")
    if len(head) < 4 + 4 * ndim:
        raise DatasetError(f"{path}: truncated header: expected {4 + 4 * ndim} bytes, "
                           f"found {len(head)}")
    dims = tuple(int(d) for d in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    return dims, IDX_TYPES[code]


def _inflated_length(path: Path, limit: int) -> tuple[int, bool]:
    """How many bytes the gzip file ``path`` inflates to, every member counted (pigz, bgzip
    and ``cat a.gz b.gz`` write several; zero padding after one is skipped, as gzip.open
    does), and whether its last member ends properly. Counting stops once it passes
    ``limit``, so no more than ``limit + 1`` bytes are inflated, one chunk at a time and
    none kept. zlib.error for corrupt data, a bad CRC or a bad recorded length; a
    DatasetError for bytes after a member that do not start another one."""
    count, inflater, data = 0, None, b""
    with open(path, "rb") as f:
        while count <= limit:
            data = data or f.read(1 << 16)
            if not data:
                break
            if inflater is None:
                data = data.lstrip(b"\0")
                if not data:
                    continue
                if len(data) < 2:             # the magic may straddle two reads
                    data += f.read(1)
                if not data.startswith(_GZIP_MAGIC):
                    _trailing_bytes(path, f, data)
                inflater = zlib.decompressobj(wbits=31)
            count += len(inflater.decompress(data, limit + 1 - count))
            data = inflater.unconsumed_tail
            if inflater.eof:
                data, inflater = inflater.unused_data, None
    return count, inflater is None


def _trailing_bytes(path: Path, f: Any, data: bytes) -> None:
    """Raise a DatasetError for what is left of ``f`` from ``data`` on (already read):
    bytes after the last gzip member that are not another member (zlib would call one
    byte a truncated member, two or more an "incorrect header check")."""
    start = f.tell() - len(data)
    extra = os.fstat(f.fileno()).st_size - start
    raise DatasetError(f"{path}: {extra} unexpected byte{'s' * (extra != 1)} after the gzip "
                       f"data (from byte {start} on; not another gzip member)")


def _check_inflated_length(path: Path, head: int, expected: int, dims: tuple[int, ...]) -> None:
    """The gzip stream of ``path`` holds exactly the ``head`` bytes of the header and the
    ``expected`` bytes of data it declares, or a DatasetError stating the true sizes."""
    total = head + expected
    count, ended = _inflated_length(path, total)
    if count > total:
        raise DatasetError(f"{path}: the header declares {expected} bytes of data for shape "
                           f"{dims}, but the gzip stream holds a different amount: more than "
                           f"{total} bytes in all (the rest was not inflated)")
    if not ended:
        raise DatasetError(f"{path}: truncated gzip stream: it breaks off after {count} of the "
                           f"{total} bytes the header declares ({expected} of data for shape "
                           f"{dims}), before the end of its last member")
    if count < total:
        raise DatasetError(f"{path}: truncated: expected {expected} bytes of data for shape "
                           f"{dims}, found {max(count - head, 0)}")


def _read_at_most(f: Any, n: int, chunk: int = 1 << 20) -> bytes:
    """Up to ``n`` bytes of ``f``, a chunk at a time: ``f.read(n)`` allocates n bytes before
    reading any, and a forged gzip length (ISIZE) lets a small file declare gigabytes."""
    parts: list[bytes] = []
    while n > 0 and (part := f.read(min(n, chunk))):
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw, detected by content) into a numpy array
    of native byte order. The header is checked first: magic, type, dimensions, and the
    declared size against the file (for gzip, against the most deflate can expand, then
    against the length the last member records: when they differ, as in a valid file of
    several gzip members, the stream is counted through once, inflating no more than
    declared); only then is the body read, never more than declared."""
    path = Path(path)
    size = regular_file(path, "IDX file")
    with open(path, "rb") as f:
        compressed = f.read(2) == _GZIP_MAGIC
        if compressed:
            f.seek(max(size - 4, 0))
            recorded = int.from_bytes(f.read(4), "little")   # ISIZE: length mod 2**32
    try:
        opener = gzip.open if compressed else open
        with opener(path, "rb") as f:
            first = f.read(4)
            ndim = first[3] if len(first) == 4 else 0
            head = first + f.read(4 * ndim if 1 <= ndim <= 4 else 0)
            dims, dtype = _header(path, head)
            expected = math.prod(dims) * dtype.itemsize        # Python ints: no overflow
            total = len(head) + expected
            if compressed:
                if total > MAX_DEFLATE_RATIO * size:
                    raise DatasetError(f"{path}: the header declares {total} bytes, more than "
                                       f"{MAX_DEFLATE_RATIO}x the {size}-byte compressed file")
                if total % 2**32 != recorded:      # several members, or a wrong size
                    _check_inflated_length(path, len(head), expected, dims)
            elif total != size:
                found = size - len(head)
                what = "truncated: expected" if found < expected else f"{found - expected} " \
                    f"unexpected bytes after the data: expected"
                raise DatasetError(f"{path}: {what} {expected} bytes of data for shape {dims}, "
                                   f"found {found}")
            body = _read_at_most(f, expected + 1)  # one more: is there anything after?
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: corrupt gzip stream: {e}") from None
    if len(body) < expected:
        raise DatasetError(f"{path}: truncated: expected {expected} bytes of data for shape "
                           f"{dims}, found {len(body)}")
    if len(body) > expected:
        raise DatasetError(f"{path}: unexpected bytes after the data of shape {dims}")
    data = np.frombuffer(body, dtype=dtype, count=math.prod(dims))
    return data.reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzip when ``compress`` or the name ends in .gz)."""
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: c for c, dt in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"write_idx: dtype {array.dtype} has no IDX type code")
    if not 1 <= array.ndim <= 4:
        raise ValueError(f"write_idx: {array.ndim}-d arrays are not supported")
    code = codes[native]
    body = (bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
            + array.astype(IDX_TYPES[code]).tobytes())
    if compress or (compress is None and path.suffix == ".gz"):
        body = gzip.compress(body)
    path.write_bytes(body)
    return path


# --- MNIST-format datasets ---------------------------------------------------------------
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = 10
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
WHERE_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist, which puts "
                     "the files in /usr/share/datasets/fashion-mnist) or download the four files "
                     "from the zalandoresearch/fashion-mnist repository (data/fashion)",
    "mnist": "download the four original MNIST files (train-images-idx3-ubyte.gz, ...) from "
             "Yann LeCun's MNIST page or a mirror",
}


def _candidate_dirs(name: str, data_dir: str | os.PathLike | None) -> list[Path]:
    """Where to look, the dataset's own folders first: MNIST and Fashion-MNIST files have
    the same names, so a top-level directory (which may hold the other dataset's) comes
    last, and not at all when its ``name`` subfolder exists. With ``data_dir``, only that
    directory: ``data_dir/name``, then ``data_dir``. Otherwise ``$HANDGRAD_DATA/name``,
    Debian's package (for fashion-mnist), ``~/.cache/handgrad/name``, then
    ``$HANDGRAD_DATA``."""
    if data_dir is not None:
        return _own_then_top(Path(data_dir), name)
    env = os.environ.get("HANDGRAD_DATA")
    roots = _own_then_top(Path(env), name) if env else []
    dirs = roots[:1]
    if name == "fashion-mnist":
        dirs.append(DEBIAN_FASHION_MNIST)
    dirs.append(Path.home() / ".cache" / "handgrad" / name)
    return dirs + roots[1:]


def _own_then_top(root: Path, name: str) -> list[Path]:
    """``root/name``, then ``root`` itself unless that subfolder exists (its top-level
    files would then be another dataset's, or a fallback the user did not mean)."""
    own = root / name
    return [own] if own.is_dir() else [own, root]


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_mnist_files(name: str, data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """The four files of ``name`` from the first directory that holds all of them."""
    if name not in WHERE_TO_GET:
        raise ValueError(f"unknown MNIST-format dataset {name!r}; choose mnist or fashion-mnist")
    searched = _candidate_dirs(name, data_dir)
    for d in searched:
        found = {key: _find(d, stem) for key, stem in MNIST_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    files = ", ".join(f"{s}[.gz]" for s in MNIST_FILES.values())
    if data_dir is not None:
        skipped = "" if len(searched) > 1 else \
            f"; its top level was not read, since {searched[0]} exists"
        raise DatasetError(f"{name}: the directory {data_dir} given with data_dir/--data-dir does "
                           f"not hold the dataset (looked in {' and '.join(map(str, searched))} "
                           f"for {files}{skipped}). To get them, {WHERE_TO_GET[name]}.")
    env = os.environ.get("HANDGRAD_DATA")
    skipped = f" ({env} itself was not read, since {Path(env) / name} exists)" \
        if env and (Path(env) / name).is_dir() else ""
    raise DatasetError(f"{name}: files not found. Looked in: {', '.join(str(d) for d in searched)}"
                       f"{skipped}. Needed: {files}. To get them, {WHERE_TO_GET[name]}, then pass the "
                       f"directory with --data-dir or the HANDGRAD_DATA environment variable.")


def load_mnist(name: str = "mnist", data_dir: str | os.PathLike | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): uint8 images (N, 28, 28), N >= 1, and int64
    labels in 0..9, one per image (each file checked: DatasetError naming it)."""
    files = find_mnist_files(name, data_dir)
    out = []
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise DatasetError(f"{images_path}: expected uint8 images of shape "
                               f"(N, 28, 28), got {images.dtype} {images.shape}")
        if len(images) == 0:
            raise DatasetError(f"{images_path}: holds no images (shape {images.shape}); the "
                               f"{split} set needs at least one")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetError(f"{labels_path}: {labels.shape} labels for "
                               f"{len(images)} images in {images_path}")
        out += [images, class_labels(labels_path, labels, MNIST_CLASSES)]
        _check_not_the_other(name, split, labels_path, out[-1])
    return out[0], out[1], out[2], out[3]


# The first ten labels of each split of the two MNIST-format datasets: same file names, same
# sizes, so a directory of one passed for the other would load without complaint.
FIRST_LABELS = {("mnist", "train"): [5, 0, 4, 1, 9, 2, 1, 3, 1, 4],
                ("mnist", "test"): [7, 2, 1, 0, 4, 1, 4, 9, 5, 9],
                ("fashion-mnist", "train"): [9, 0, 0, 3, 0, 2, 7, 2, 5, 5],
                ("fashion-mnist", "test"): [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]}


def _check_not_the_other(name: str, split: str, path: Path, labels: np.ndarray) -> None:
    """A DatasetError when the labels asked for as ``name``'s ``split`` begin as the other
    dataset's do (its files, found under this name: a --data-dir pointing at the wrong
    one), or as ``name``'s other split's do (train and test files swapped, or one copied
    over the other: training on the test set, scoring on the training set)."""
    first = labels[:10].tolist()
    for other in ("mnist", "fashion-mnist"):
        if other != name and first == FIRST_LABELS[(other, split)]:
            raise DatasetError(f"{path}: these are {other}'s {split} labels (their first ten "
                               f"are {other}'s), not {name}'s: the directory holds the other "
                               f"dataset; pass {name}'s files, or --dataset {other}")
    swapped = "test" if split == "train" else "train"
    if first == FIRST_LABELS[(name, swapped)]:
        raise DatasetError(f"{path}: these look like {name}'s {swapped} labels, not its {split} "
                           f"labels (their first ten are {first}, as in the official {swapped} "
                           f"set): the {split} files are the {swapped} files, swapped or copied; "
                           f"put the official {split} files there")


def class_labels(path: Path, labels: np.ndarray, classes: int) -> np.ndarray:
    """``labels`` as int64 class indices, after checking that every value is an integer in
    [0, classes): a float label is never truncated, a negative one never wraps around."""
    if labels.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(labels) | (labels != np.round(labels)))
        if bad.size:
            raise DatasetError(f"{path}: label {labels[bad[0]]!s} at index {bad[0]} is not an "
                               f"integer class (the file holds {labels.dtype} values)")
    elif labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: labels must be integers, the file holds {labels.dtype}")
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if bad.size:
        raise DatasetError(f"{path}: label {labels[bad[0]]!s} outside 0..{classes - 1} (the "
                           f"classes), at index {bad[0]}")
    return labels.astype(np.int64)


# --- teaching datasets -------------------------------------------------------------------

def _classes_of(n: int, classes: int) -> np.ndarray:
    """n labels, as balanced as possible, in order 0, 0, ..., 1, 1, ..."""
    return np.repeat(np.arange(classes), [n // classes + (c < n % classes) for c in range(classes)])


def _finish(X: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(len(y))
    return X[order].astype(np.float32), y[order].astype(np.int64)


def _check_n(name: str, n: int, classes: int = 1) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < classes or n <= 0:
        raise ValueError(f"{name}: n must be an integer >= {max(classes, 1)}, got {plain_repr(n)}")


def _rng(owner: str, seed: int) -> np.random.Generator:
    """The generator of ``seed``, checked as ``fit`` checks its own: None (a seed drawn at
    random: other data on every call) and True are ValueErrors naming ``owner``."""
    check_count(f"{owner}: seed", seed)
    return np.random.default_rng(seed)


def spirals(n: int = 600, classes: int = 3, noise: float = 0.2,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``classes`` interleaved spiral arms in the plane (the CS231n toy problem)."""
    _check_n("spirals", n, classes)
    rng = _rng("spirals", seed)
    y = _classes_of(n, classes)
    t = np.concatenate([np.linspace(0, 1, int((y == c).sum())) for c in range(classes)])
    radius = t
    angle = y * (2 * np.pi / classes) + t * 4 + rng.standard_normal(n) * noise
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    return _finish(X, y, rng)


def moons(n: int = 400, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles."""
    _check_n("moons", n, 2)
    rng = _rng("moons", seed)
    y = _classes_of(n, 2)
    t = rng.uniform(0, np.pi, n)
    X = np.where(y[:, None] == 0, np.stack([np.cos(t), np.sin(t)], 1),
                 np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1))
    return _finish(X + rng.normal(0, noise, X.shape), y, rng)


def circles(n: int = 400, noise: float = 0.05, factor: float = 0.5,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A circle (class 0) around a smaller one (class 1), radius ratio ``factor``."""
    _check_n("circles", n, 2)
    if not 0 < factor < 1:
        raise ValueError(f"circles: factor must be in (0, 1), got {factor}")
    rng = _rng("circles", seed)
    y = _classes_of(n, 2)
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.where(y == 0, 1.0, factor)
    X = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    return _finish(X + rng.normal(0, noise, X.shape), y, rng)


def xor(n: int = 400, noise: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four clusters at the corners of the unit square; the label is x1 XOR x2."""
    _check_n("xor", n, 4)
    rng = _rng("xor", seed)
    corner = np.arange(n) % 4
    bits = np.stack([corner // 2, corner % 2], 1)
    y = bits[:, 0] ^ bits[:, 1]
    return _finish(bits + rng.normal(0, noise, (n, 2)), y, rng)


def blobs(n: int = 300, centers: int = 3, std: float = 0.5, dim: int = 2,
          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around ``centers`` random points in [-5, 5]^dim."""
    _check_n("blobs", n, centers)
    rng = _rng("blobs", seed)
    means = rng.uniform(-5, 5, (centers, dim))
    y = _classes_of(n, centers)
    return _finish(means[y] + rng.normal(0, std, (n, dim)), y, rng)


GENERATORS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "spirals": spirals, "moons": moons, "circles": circles, "xor": xor, "blobs": blobs}


# --- preprocessing -----------------------------------------------------------------------

def normalize_images(x: np.ndarray) -> np.ndarray:
    """uint8 pixels 0..255 as float32 in [0, 1]. Any other dtype is a TypeError: floats
    may be scaled already (a second division by 255 would silently squeeze them into
    [0, 0.004]), and wider integers need not stop at 255."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise TypeError(f"normalize_images: expected uint8 pixels 0..255, got dtype {x.dtype} "
                        f"(float images are used as they are; scale other integers yourself)")
    return x.astype(np.float32) / np.float32(255)


def _standardized_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype z-scores of ``dtype`` data come back in: a float dtype stays itself; booleans
    and integers become the smallest float that holds them exactly (numpy's promotion with
    float32): float32 for up to 16 bits (uint8 pixels), float64 for wider integers."""
    if dtype.kind == "f":
        return dtype
    if dtype.kind not in "biu":
        raise TypeError(f"standardize: x_train must hold numbers, got dtype {dtype}")
    return np.promote_types(dtype, np.float32)


def standardize(x_train: np.ndarray, *others: np.ndarray, eps: float = 1e-8) -> tuple[np.ndarray, ...]:
    """Subtract the training mean and divide by the training std (per feature), applying
    the same transform to ``others`` (validation, test).

    Every result has one floating dtype: ``x_train``'s own when it is floating; for
    integer or boolean ``x_train`` (uint8 pixels from ``read_idx``/``load_mnist``) float32
    up to 16 bits and float64 for wider integers, never the integer dtype itself.

    The statistics and the transform are computed in float64 whatever the input dtype (a
    float32 mean is an ulp off a constant, whose std then is that rounding error; float16
    cannot hold ``eps``), about the first training example: a feature that is constant in
    ``x_train`` becomes exactly 0 there, and is only shifted, not scaled (divided by 1, as
    scikit-learn's StandardScaler does): divided by its std of 0 plus ``eps``, any other
    value a test set has there would be 1e8 times its difference."""
    x_train = np.asarray(x_train)
    if x_train.ndim == 0 or len(x_train) == 0:
        raise ValueError(f"standardize: x_train must hold at least one example (row) to take "
                         f"the statistics of, got shape {x_train.shape}")
    dtype = _standardized_dtype(x_train.dtype)
    x64 = x_train.astype(np.float64)
    origin = x64[:1]                       # the first example
    shifted = x64 - origin                 # a constant feature: exactly 0 in every row
    mean = shifted.mean(axis=0)
    std = shifted.std(axis=0)
    std = np.where(std == 0, 1.0, std + eps)     # constant in x_train: shifted alone
    return tuple((((np.asarray(x).astype(np.float64) - origin) - mean) / std).astype(dtype)
                 for x in (x_train, *others))


def one_hot(y: Any, classes: int, dtype: Any = np.float32) -> np.ndarray:
    """Labels (N,) as rows of a (N, classes) identity."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise TypeError(f"one_hot: labels must be integers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"one_hot: labels must lie in [0, {classes}), got {y.min()}..{y.max()}")
    out = np.zeros(y.shape + (classes,), dtype=dtype)
    np.put_along_axis(out, y[..., None].astype(np.intp), 1, axis=-1)
    return out


def _strata(y: Any) -> np.ndarray:
    """The class of each example, for a stratified split: class labels (N,) or an (N, 1)
    column as they are; the argmax of one-hot or probability rows (N, C). Anything else
    (multi-label rows, rows not summing to 1, more axes) is a ValueError."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    if y.ndim == 1:
        return y
    if y.ndim != 2 or y.dtype.kind not in "biuf":
        raise ValueError(f"train_val_split: stratify needs class labels (N,) or one-hot/"
                         f"probability rows (N, C), got y of dtype {y.dtype} and shape {y.shape}")
    sums = np.add.reduce(y, axis=1, dtype=np.float64)
    bad = np.flatnonzero(np.any(y < 0, axis=1) | ~np.isclose(sums, 1.0, rtol=0, atol=1e-3))
    if bad.size:
        raise ValueError(f"train_val_split: stratify needs class labels (N,) or one-hot/"
                         f"probability rows (N, C), each non-negative and summing to 1; row "
                         f"{bad[0]} of y is {plain_repr(y[bad[0]].tolist())} (multi-label "
                         f"rows have no single class to stratify by)")
    return y.argmax(axis=1)


def _shares(counts: np.ndarray, total: int) -> list[int]:
    """How many of each class go to the validation part: ``total`` in all (what the
    fraction asks of the whole set), each class's share of it rounded down and the rest
    given one by one to the largest remainders (rounding each class on its own gave 20
    for 15 from 10 classes of 15)."""
    quotas = counts * (total / counts.sum())
    shares = np.floor(quotas).astype(np.int64)
    order = np.argsort(-(quotas - shares), kind="stable")
    shares[order[:total - int(shares.sum())]] += 1
    return [int(k) for k in shares]


def _arrays(owner: str, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` as arrays with one example per row, as many of each, or a ValueError
    naming ``owner`` (``len()`` of a 0-d array is a TypeError that names nothing)."""
    X, y = np.asarray(X), np.asarray(y)
    for name, a in (("inputs", X), ("targets", y)):
        if a.ndim == 0:
            raise ValueError(f"{owner}: the {name} must be an array with one example per row, "
                             f"got {plain_repr(a.item())}")
    if len(X) != len(y):
        raise ValueError(f"{owner}: {len(X)} inputs but {len(y)} targets")
    return X, y


def train_val_split(X: np.ndarray, y: np.ndarray, val_fraction: float = 0.1, seed: int = 0,
                    stratify: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A shuffled split into (x_train, y_train, x_val, y_val); ``stratify`` keeps the class
    proportions in both parts, the class of an example being its label, or the argmax of
    its row for one-hot or probability targets (N, C)."""
    X, y = _arrays("train_val_split", X, y)
    if not 0 < val_fraction < 1:
        raise ValueError(f"train_val_split: val_fraction must be in (0, 1), got {val_fraction}")
    rng = _rng("train_val_split", seed)
    if stratify:
        classes = _strata(y)
        values, counts = np.unique(classes, return_counts=True)
        shares = _shares(counts, int(round(len(y) * val_fraction)))
        val_idx = [rng.permutation(np.flatnonzero(classes == c))[:k]
                   for c, k in zip(values, shares, strict=True)]
        val = np.sort(np.concatenate(val_idx))
        train = np.setdiff1d(np.arange(len(y)), val)
        train, val = rng.permutation(train), rng.permutation(val)
    else:
        order = rng.permutation(len(y))
        n_val = int(round(len(y) * val_fraction))
        val, train = order[:n_val], order[n_val:]
    if len(val) == 0 or len(train) == 0:
        raise ValueError(f"train_val_split: val_fraction {val_fraction} of {len(y)} examples "
                         f"leaves an empty split")
    return X[train], y[train], X[val], y[val]


def batches(X: Any, y: Any, batch_size: int, shuffle: bool = True,
            rng: np.random.Generator | None = None, drop_last: bool = False
            ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Minibatches (xb, yb) covering every example once, in a shuffled order if asked."""
    X, y = _arrays("batches", X, y)
    check_positive("batches: batch_size", batch_size)
    check_flag("batches: shuffle", shuffle)
    check_flag("batches: drop_last", drop_last)
    n = len(X)
    order = (rng if rng is not None else np.random.default_rng()).permutation(n) if shuffle else None
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield X[start:start + batch_size], y[start:start + batch_size]
        else:
            idx = order[start:start + batch_size]
            yield X[idx], y[idx]


class DataLoader:
    """Iterable minibatches of (X, y). With ``shuffle``, the order of a pass is a function
    of (``seed``, its epoch) alone, as ``fit``'s order of an (X, y) pair is (the same
    permutation): passes are epochs 1, 2, 3, ... in turn, and ``set_epoch(e)`` makes the
    next pass epoch ``e``. ``fit`` calls it before each epoch, so a run resumed at epoch k
    with a new loader sees the batches the uninterrupted run saw; consecutive passes of one
    loader differ, and two loaders share no generator (two with the same seed over data of
    the same length shuffle alike: give each its own seed). ``seed=None`` draws a seed
    once, at random."""

    def __init__(self, X: Any, y: Any, batch_size: int = 32, shuffle: bool = True,
                 seed: int | None = 0, drop_last: bool = False):
        self.X, self.y = _arrays("DataLoader", X, y)
        check_positive("DataLoader: batch_size", batch_size)
        check_flag("DataLoader: shuffle", shuffle)
        check_flag("DataLoader: drop_last", drop_last)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]  # drawn: an int
        check_count("DataLoader: seed", seed)
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed, self.epoch = int(seed), 1      # the epoch of the next pass

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch ``epoch`` (counted from 1, as ``fit`` does): its order
        is a function of (seed, epoch); the passes after it are epoch + 1, epoch + 2, ...
        (the name of PyTorch's ``DistributedSampler.set_epoch``)."""
        check_count("DataLoader.set_epoch: epoch", epoch)
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        return batches(self.X, self.y, self.batch_size, self.shuffle, rng, self.drop_last)

    def __len__(self) -> int:
        n = len(self.X)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def check_positive(what: str, value: Any) -> int:
    """A positive integer (not a bool) as an int, or a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {plain_repr(value)}")
    return int(value)


def check_flag(what: str, value: Any) -> None:
    """True or False (a numpy bool too), or a ValueError naming ``what``: a string such as
    "no" is truthy, and would have turned the option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be True or False, got {plain_repr(value)}")


def check_count(what: str, value: Any) -> None:
    """A non-negative integer (not a bool), or a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {plain_repr(value)}")


# --- one entry point ---------------------------------------------------------------------

@dataclass(frozen=True)
class Splits:
    """A dataset ready for training: float32 inputs, int64 labels, train/val/test."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str = ""          # where the data came from: a directory, or how it was generated


    def fingerprint(self) -> str:
        """A checksum of every split (``checksum``): ``handgrad train --resume`` compares it
        with the run's, so that a run is never continued on other data (another --data-dir,
        files replaced) while looking like the same run."""
        return checksum(self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test)

    def test_fingerprint(self) -> str:
        """A checksum of the test split alone: ``handgrad evaluate`` compares it with the one
        the model was saved with, so that it never scores other data without saying so."""
        return checksum(self.x_test, self.y_test)


def checksum(*arrays: np.ndarray | None) -> str:
    """A CRC-32 of the arrays' values, shapes and dtypes (None skipped), as "crc32:<hex>":
    about 0.1 s for Fashion-MNIST's 70,000 float32 images."""
    crc = 0
    for a in arrays:
        if a is not None:
            a = np.ascontiguousarray(a)
            crc = zlib.crc32(f"{a.dtype.str}{a.shape}".encode(), crc)
            crc = zlib.crc32(a.data.cast("B") if a.size else b"", crc)
    return f"crc32:{crc:08x}"


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, n: int | None = None,
                 seed: int = 0, val_fraction: float = 0.0) -> Splits:
    """Load ``name`` (one of DATASETS). MNIST-format images become (N, 784) float32 in [0, 1]
    with the official test split (``n`` keeps the first n training examples); teaching
    datasets are generated from ``seed`` (``n`` examples, default per dataset) and split
    80/20. ``val_fraction`` > 0 carves a validation split out of the training set."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    check_count("load_dataset: seed", seed)
    if name in GENERATORS:
        X, y = GENERATORS[name](seed=seed) if n is None else GENERATORS[name](n=n, seed=seed)
        cut = int(round(len(y) * 0.8))
        x_train, y_train, x_test, y_test = X[:cut], y[:cut], X[cut:], y[cut:]
        num_classes = int(y.max()) + 1
        source = f"generated (seed {seed})"
    else:
        source = str(find_mnist_files(name, data_dir)["train_images"].parent)
        xtr, y_train, xte, y_test = load_mnist(name, data_dir)
        if n is not None:     # the first n (all of them when there are fewer)
            _check_n(name, n)
            xtr, y_train = xtr[:n], y_train[:n]
        x_train = normalize_images(xtr.reshape(len(xtr), -1))
        x_test = normalize_images(xte.reshape(len(xte), -1))
        num_classes = MNIST_CLASSES
    x_val = y_val = None
    if val_fraction:
        x_train, y_train, x_val, y_val = train_val_split(x_train, y_train, val_fraction, seed)
    return Splits(name, x_train, y_train, x_val, y_val, x_test, y_test, num_classes,
                  tuple(x_train.shape[1:]), source)
