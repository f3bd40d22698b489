"""What ``handgrad train`` records in a checkpoint's metadata, checked as data.

``handgrad train --out`` saves ``dataset``, ``seed``, ``run`` (the run's settings),
``test`` (its test metrics), ``interrupted`` and, in ``resume.npz``, ``resume`` (the
schedule, the random generators, the epochs done and the history); ``handgrad evaluate``
and ``--resume`` read them back. ``check_metadata`` checks the type and range of each of
these fields that is present in a run's metadata (one with ``run`` or ``resume``; other
keys, and every key of a file of one's own, ``nn.save(..., metadata={"dataset": "cifar10"})``,
are the user's and are left alone: ``handgrad evaluate`` checks the dataset and seed it
reads from such a file itself), and that
the run describes the architecture the file stores, so that a file can never make the
command build a model bigger than the file or pass a NaN where a seed goes. It raises
ValueError naming the field; ``serialization`` turns that into a CheckpointError naming
the file.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .cli_args import MAX_SEED
from .data import DATASETS
from .init import INITIALIZERS
from .layers import ACTIVATIONS
from .optim import OPTIMIZERS

Check = Callable[[str, Any], None]

SCHEDULES = ("none", "step", "cosine", "exponential")


def _show(value: Any) -> str:
    """A short repr: the value may be anything a file holds."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fail(where: str, expected: str, value: Any) -> None:
    raise ValueError(f"{where} must be {expected}, got {_show(value)}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def integer(lo: int, hi: int | None = None, optional: bool = False) -> Check:
    """An int (not a bool) in [lo, hi]; None too if ``optional``."""
    expected = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"

    def check(where: str, value: Any) -> None:
        if optional and value is None:
            return
        if not _is_int(value) or value < lo or (hi is not None and value > hi):
            _fail(where, expected + (" or null" if optional else ""), value)
    return check


def number(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False,
           optional: bool = False) -> Check:
    """A finite int or float in the interval; None too if ``optional``."""
    expected = f"a finite number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    def check(where: str, value: Any) -> None:
        if optional and value is None:
            return
        ok = _is_number(value) and math.isfinite(value) and (lo < value if lo_open else lo <= value) \
            and (value < hi if hi_open else value <= hi)
        if not ok:
            _fail(where, expected + (" or null" if optional else ""), value)
    return check


def choice(options: Any, optional: bool = False) -> Check:
    """A string among ``options``; None too if ``optional``."""
    names = sorted(options)

    def check(where: str, value: Any) -> None:
        if optional and value is None:
            return
        if not isinstance(value, str) or value not in names:
            _fail(where, f"one of {', '.join(names)}" + (" or null" if optional else ""), value)
    return check


def boolean(where: str, value: Any) -> None:
    if not isinstance(value, bool):
        _fail(where, "true or false", value)


def thread_choice(where: str, value: Any) -> None:
    """``--threads``: "auto", "none" or a positive integer."""
    if value not in ("auto", "none") and not (_is_int(value) and value > 0):
        _fail(where, '"auto", "none" or a positive integer', value)


def sizes(where: str, value: Any) -> None:
    """Hidden layer sizes: a non-empty list of positive integers."""
    if not isinstance(value, list) or not value or not all(_is_int(n) and n > 0 for n in value):
        _fail(where, "a non-empty list of positive integers", value)


def numbers(where: str, value: Any) -> None:
    """A list of numbers (NaN and Inf allowed: a record, not a setting)."""
    if not isinstance(value, list) or not all(_is_number(x) for x in value):
        _fail(where, "a list of numbers", value)


def records(where: str, value: Any) -> None:
    """A dict of numbers by name (a metrics record)."""
    if not isinstance(value, dict) or not all(_is_number(x) for x in value.values()):
        _fail(where, "an object of numbers", value)


def optional_records(where: str, value: Any) -> None:
    if value is not None:
        records(where, value)


def optional_object(where: str, value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        _fail(where, "an object or null", value)


# The settings of a run (what ``handgrad train`` saves as ``run``), each with its check:
# the values the command's options accept (cli.RUN_KEYS, cli_args).
RUN_FIELDS: dict[str, Check] = {
    "dataset": choice(DATASETS), "n": integer(1, optional=True), "hidden": sizes,
    "activation": choice(ACTIVATIONS), "dropout": number(0, 1, hi_open=True),
    "init": choice(INITIALIZERS, optional=True), "optimizer": choice(OPTIMIZERS),
    "lr": number(0, lo_open=True), "momentum": number(0, 1, hi_open=True, optional=True),
    "weight_decay": number(0), "label_smoothing": number(0, 1), "schedule": choice(SCHEDULES),
    "clip_grad_norm": number(0, lo_open=True, optional=True), "epochs": integer(1),
    "batch_size": integer(1, optional=True), "val_fraction": number(0, 1, hi_open=True),
    "early_stopping": integer(1, optional=True), "seed": integer(0, MAX_SEED),
    "threads": thread_choice,
}
# Fields a run saved by an older handgrad may lack (cli.UNRECORDED_BEFORE says what such a
# run resumes with).
OPTIONAL_RUN_FIELDS = frozenset({"threads"})


def _exact_fields(where: str, value: Any, fields: Any) -> None:
    """``value`` is an object holding exactly ``fields``."""
    if not isinstance(value, dict):
        _fail(where, "an object", value)
    missing, extra = sorted(set(fields) - set(value)), sorted(set(value) - set(fields))
    if missing or extra:
        raise ValueError(f"{where}: " + "; ".join(
            ([f"missing fields {missing}"] if missing else [])
            + ([f"unknown fields {[_show(k) for k in extra]}"] if extra else [])))


def check_run(where: str, run: Any) -> None:
    if not isinstance(run, dict):
        _fail(where, "an object", run)
    _exact_fields(where, run, set(RUN_FIELDS) - (OPTIONAL_RUN_FIELDS - set(run)))
    for key, check in RUN_FIELDS.items():
        if key in run:
            check(f"{where}.{key}", run[key])


def check_history(where: str, history: Any) -> None:
    """What ``History.to_dict`` writes; ``grad_norms`` only when recorded."""
    if not isinstance(history, dict):
        _fail(where, "an object", history)
    fields = {"steps", "epochs", "stopped_early", "best_epoch", "interrupted"}
    _exact_fields(where, history, fields | ({"grad_norms"} & set(history)))
    numbers(f"{where}.steps", history["steps"])
    epochs = history["epochs"]
    if not isinstance(epochs, list):
        _fail(f"{where}.epochs", "a list of records", epochs)
    for i, record in enumerate(epochs):
        records(f"{where}.epochs[{i}]", record)
    boolean(f"{where}.stopped_early", history["stopped_early"])
    boolean(f"{where}.interrupted", history["interrupted"])
    integer(1, max(len(epochs), 1), optional=True)(f"{where}.best_epoch", history["best_epoch"])
    norms = history.get("grad_norms", {})
    if not isinstance(norms, dict):
        _fail(f"{where}.grad_norms", "an object of lists", norms)
    for name, values in norms.items():
        numbers(f"{where}.grad_norms[{_show(name)}]", values)


def checksum(where: str, value: Any) -> None:
    """A checksum of data as nn.data.checksum writes it ("crc32:<hex>")."""
    if not (isinstance(value, str) and value.startswith("crc32:")):
        _fail(where, 'a checksum of the data ("crc32:...")', value)


def text(where: str, value: Any) -> None:
    if not isinstance(value, str):
        _fail(where, "a string", value)


def check_resume(where: str, resume: Any) -> None:
    # "data", the checksum of the run's data, is absent from runs saved before it existed
    _exact_fields(where, resume, {"scheduler", "rng", "epochs_done", "history"} | ({"data"} & set(resume)))
    if "data" in resume:
        checksum(f"{where}.data", resume["data"])
    optional_object(f"{where}.scheduler", resume["scheduler"])
    rng = resume["rng"]
    if not isinstance(rng, list) or not all(isinstance(s, dict) for s in rng):
        _fail(f"{where}.rng", "a list of generator states", rng)
    integer(0)(f"{where}.epochs_done", resume["epochs_done"])
    check_history(f"{where}.history", resume["history"])
    done, recorded = resume["epochs_done"], len(resume["history"]["epochs"])
    if done != recorded:
        raise ValueError(f"{where}.epochs_done is {done} but the history records {recorded} epochs")


# The fields handgrad train writes at the top of the metadata.
METADATA_FIELDS: dict[str, Check] = {
    "dataset": choice(DATASETS), "seed": integer(0, MAX_SEED), "run": check_run,
    "test": optional_records, "interrupted": boolean, "resume": check_resume,
    "test_data": checksum, "data_source": text,   # (absent from runs saved before them)
}


def check_architecture(run: dict[str, Any], config: Any) -> None:
    """The run's architecture is the one the file stores (whose arrays bound its size)."""
    if not isinstance(config, dict):
        raise ValueError("metadata.run needs the MLP config of the file, which has none")
    stored = {"hidden": config["sizes"][1:-1], "activation": config["activation"],
              "dropout": config.get("dropout", 0.0)}
    for key, value in stored.items():
        if run[key] != value:
            raise ValueError(f"metadata.run.{key} is {_show(run[key])} but the model stored in "
                             f"the file has {_show(value)} (config {_show(config)})")
    if run["init"] is not None and run["init"] != config.get("init"):
        raise ValueError(f"metadata.run.init is {run['init']!r} but the model stored in the "
                         f"file was initialised with {config.get('init')!r}")


def check_metadata(metadata: Any, config: Any = None) -> None:
    """Check the fields of ``metadata`` that handgrad train writes (those present), and,
    for a run, that it describes the stored model (``config``: the file's MLP config,
    already checked against the stored arrays). Raises ValueError naming the field."""
    if not isinstance(metadata, dict):
        _fail("metadata", "an object", metadata)
    if "run" not in metadata and "resume" not in metadata:
        return        # not a run of handgrad train's (which writes "run"): every key is the user's
    for key, check in METADATA_FIELDS.items():
        if key in metadata:
            check(f"metadata.{key}", metadata[key])
    run = metadata.get("run")
    if run is not None:
        for key in ("dataset", "seed"):
            if key in metadata and metadata[key] != run[key]:
                raise ValueError(f"metadata.{key} is {_show(metadata[key])} but metadata.run.{key} "
                                 f"is {_show(run[key])}")
        check_architecture(run, config)
