"""What a ``handgrad`` run needs, checked before any array is allocated or any training
starts: enough examples for every split, and enough memory for the model.

Each check raises ``UsageError`` (one line, exit status 2) naming the options involved.
"""
from __future__ import annotations

import inspect
import itertools
import os

from . import data as data_
from .cli_args import UsageError

# (inputs, classes) of each dataset, known without loading it.
SHAPES = {"spirals": (2, 3), "moons": (2, 2), "circles": (2, 2), "xor": (2, 2), "blobs": (2, 3),
          "mnist": (784, 10), "fashion-mnist": (784, 10)}
# The fewest examples each generator accepts (one per class; xor one per corner).
MIN_EXAMPLES = {"spirals": 3, "moons": 2, "circles": 2, "xor": 4, "blobs": 3}
MNIST_TRAIN = 60_000
# Arrays of state per parameter each optimizer keeps (a lower bound: SGD without momentum).
OPTIMIZER_SLOTS = {"sgd": 1, "rmsprop": 1, "adam": 2, "adamw": 2, "adagrad": 1, "adadelta": 2}


def examples(dataset: str, n: int | None) -> int:
    """How many examples the dataset will have before the test split (at most, for MNIST)."""
    if dataset in data_.GENERATORS:
        return n if n is not None else inspect.signature(data_.GENERATORS[dataset]).parameters["n"].default
    return MNIST_TRAIN if n is None else min(n, MNIST_TRAIN)


def check_data_dir(dataset: str, data_dir: str | None) -> None:
    """--data-dir says where MNIST-format files are read from: with a generated dataset it
    would change nothing, so it is a UsageError rather than an option taken and ignored."""
    if data_dir is not None and dataset in data_.GENERATORS:
        raise UsageError(f"--data-dir is where the MNIST-format files are read from, but "
                         f"--dataset {dataset} is generated: leave --data-dir out")


def check_examples(dataset: str, n: int | None, what: str | None = None) -> None:
    """--n below what a generated dataset can be made of; ``what`` names where ``n`` comes
    from (default: the option)."""
    least = MIN_EXAMPLES.get(dataset)
    if n is not None and least is not None and n < least:
        raise UsageError(f"{what or f'--n {n}'}: {dataset} needs at least {least} examples")


def check_split(dataset: str, n: int | None, n_train: int, n_test: int,
                val_fraction: float) -> None:
    """Every split the run uses must hold at least one example: the test split, and the
    training and validation parts of the training set (split as data.train_val_split does)."""
    given = f"--n {n}" if n is not None else f"the {n_train + n_test} examples of {dataset}"
    if n_test == 0 or n_train == 0:
        raise UsageError(f"{given} leave {n_train} training and {n_test} test examples; "
                         f"both splits need at least one (give a larger --n)")
    if val_fraction:
        n_val = int(round(n_train * val_fraction))
        if n_val == 0:
            raise UsageError(f"--val-fraction {val_fraction} of {n_train} training examples "
                             f"({given}) is no example at all; give a larger --n or "
                             f"--val-fraction, or --val-fraction 0")
        if n_val == n_train:
            raise UsageError(f"--val-fraction {val_fraction} of {n_train} training examples "
                             f"({given}) leaves none to train on; give a smaller --val-fraction")


def training_bytes(sizes: list[int], rows: int, slots: int, data_bytes: int = 0) -> int:
    """A lower bound of the memory a training run of an MLP with layer ``sizes`` needs:
    the parameters, their gradients, the optimizer's ``slots`` and one saved copy (float32),
    the float64 draw of the widest layer at initialisation, the activations and their
    gradients for ``rows`` examples at once, and the data."""
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    params = sum(a * b + b for a, b in pairs)
    widest = max(a * b for a, b in pairs)
    return 4 * params * (3 + slots) + 8 * widest + 4 * 2 * sum(sizes) * rows + data_bytes


def available_memory() -> int | None:
    """Bytes that allocations can still get (MemAvailable + SwapFree), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if
                    line.split()[1:2] and line.split()[1].isdigit()}
        if "MemAvailable" in info:
            return info["MemAvailable"] + info.get("SwapFree", 0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(what: str, sizes: list[int], rows: int, slots: int, data_bytes: int = 0) -> None:
    """Refuse a model that cannot fit in memory, naming ``what`` (the options that size it)."""
    need = training_bytes(sizes, rows, slots, data_bytes)
    have = available_memory()
    if have is not None and need > have:
        raise UsageError(f"{what}: MLP {sizes_text(sizes)} on {rows} examples at once needs "
                         f"at least {_gib(need)} of memory, but {_gib(have)} is available")


MAX_GROUPS = 8           # sizes_text shows at most this many entries (and the count left out)


def sizes_text(sizes: list[int]) -> str:
    """Layer sizes for a one-line message, short whatever the depth: [2, 64, 64, 3] as
    given; a run of 3 or more equal sizes as "64 (8 layers)"; still more than MAX_GROUPS
    entries, the first 4 and the last 2 around "… k more …" (``--depth 100000`` listed
    every layer: an 800 KB line)."""
    groups: list[str] = []
    for size, run in itertools.groupby(sizes):
        n = len(list(run))
        groups += [f"{size} ({n} layers)"] if n >= 3 else [str(size)] * n
    if len(groups) > MAX_GROUPS:
        groups = [*groups[:4], f"… {len(groups) - 6} more …", *groups[-2:]]
    return "[" + ", ".join(groups) + "]"


def check_data_memory(what: str, dataset: str, n: int | None) -> None:
    """Refuse a dataset of more examples than memory holds, naming ``what`` (where ``n``
    comes from)."""
    need = data_bytes(dataset, examples(dataset, n))
    have = available_memory()
    if have is not None and need > have:
        raise UsageError(f"{what}: {examples(dataset, n)} examples of {dataset} need at least "
                         f"{_gib(need)} of memory, but {_gib(have)} is available")


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def data_bytes(dataset: str, n_examples: int) -> int:
    """The memory the dataset itself takes once loaded (float64 while generated)."""
    inputs, _ = SHAPES[dataset]
    per_value = 8 if dataset in data_.GENERATORS else 5       # float64, or uint8 + float32
    return n_examples * inputs * per_value
