"""A checkpoint's metadata is untrusted data: parsed with bounded nesting and integers,
every field type-checked, and the run a resume file describes checked against the model
it stores, all before anything is built."""
from __future__ import annotations

import io
import json
import math
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from handgrad import nn
from handgrad.nn import cli, run_metadata, rundir, serialization
from handgrad.nn.serialization import CheckpointError

META = serialization.META_KEY + ".npy"


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def _write(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _with_meta_text(src: Path, dst: Path, text: str) -> Path:
    """``src`` with its JSON entry replaced by ``text``."""
    return _write(dst, {**_members(src), META: _npy(np.array(text))})


def _edited(src: Path, dst: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """``src`` with ``edit`` applied to its parsed JSON entry."""
    meta = json.loads(str(np.load(io.BytesIO(_members(src)[META]))))
    edit(meta)
    return _with_meta_text(src, dst, json.dumps(meta))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """What handgrad train --out writes for a small run (dropout: a generator state too)."""
    out = tmp_path_factory.mktemp("run")
    assert cli.main(["train", "--dataset", "moons", "--hidden", "4", "--dropout", "0.1",
                     "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    return out


@pytest.fixture()
def small(tmp_path) -> Path:
    return nn.save(nn.MLP([2, 3, 2], seed=0), tmp_path / "small.npz",
                   metadata={"dataset": "moons", "seed": 3})


# --- the JSON itself ------------------------------------------------------------------------

def test_deeply_nested_metadata_is_refused_not_a_recursion_error(tmp_path, small):
    deep = "[" * 100_000 + "]" * 100_000
    text = json.dumps(json.loads(str(np.load(io.BytesIO(_members(small)[META])))))
    path = _with_meta_text(small, tmp_path / "deep.npz",
                           text.replace('"metadata": {', f'"metadata": {{"x": {deep}, '))
    with pytest.raises(CheckpointError, match=r"deep.npz: corrupt metadata \(JSON nested 100002 "
                                              r"deep, at most 32\)"):
        nn.load(path)


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path, small):
    model = nn.MLP([2, 3, 2], seed=0)
    path = nn.save(model, tmp_path / "s.npz", metadata={"note": "[" * 100 + '\\"{'})
    assert nn.load(path).checkpoint_metadata == {"note": "[" * 100 + '\\"{'}


@pytest.mark.parametrize("digits", [101, 5000])
def test_integers_in_the_metadata_are_bounded(tmp_path, small, digits):
    path = _edited(small, tmp_path / "int.npz", lambda m: m["metadata"].update(x=0))
    text = json.dumps(json.loads(str(np.load(io.BytesIO(_members(path)[META])))))
    path = _with_meta_text(small, path, text.replace('"x": 0', '"x": ' + "7" * digits))
    with pytest.raises(CheckpointError, match=f"int.npz: corrupt metadata \\(an integer of "
                                              f"{digits} digits \\(at most 100\\)"):
        nn.load(path)


@pytest.mark.parametrize("edit,message", [
    (lambda m: m.update(metadata=[1, 2]), "the metadata's 'metadata' must be an object, got list"),
    (lambda m: m.update(optimizer=[]), "the metadata's 'optimizer' must be an object, got list"),
    (lambda m: m.update({"class": 7}), "the metadata's 'class' must be a string, got int"),
    (lambda m: m.update(extra=1), "metadata fields"),
    (lambda m: m["config"].update(init={"name": "he"}), "invalid MLP config"),
    (lambda m: m["config"].update(activation=["relu"]), "invalid MLP config"),
    (lambda m: m["config"].update(dtype={"names": ["a"]}), "invalid MLP config"),
    (lambda m: m["config"].update(dropout=math.nan), "invalid MLP config"),
    (lambda m: m["config"].update(sizes=[2, 3, 2.0]), "invalid MLP config"),
])
def test_every_field_of_the_file_is_type_checked(tmp_path, small, edit, message):
    path = _edited(small, tmp_path / "typed.npz", edit)
    with pytest.raises(CheckpointError, match=f"typed.npz: {message}"):
        nn.load(path)


# --- what handgrad train records ------------------------------------------------------------

def test_what_handgrad_train_writes_passes(run_dir):
    for name in ("model.npz", "resume.npz"):
        ck = serialization.read_checkpoint(run_dir / name)
        serialization.validate_metadata(run_dir / name, ck.meta["metadata"], ck.meta["config"])
    assert "resume" in ck.meta["metadata"]


def test_the_run_fields_are_the_ones_the_command_saves():
    assert set(run_metadata.RUN_FIELDS) == set(cli.RUN_KEYS)


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        target = meta["metadata"]
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
    return edit


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    def edit(meta: dict[str, Any]) -> None:
        target = meta["metadata"]
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("seed", value=math.nan), r"metadata.seed must be an integer in \[0, 4294967295\], "
                                   r"got nan"),
    (_set("dataset", value="cifar"), "metadata.dataset must be one of blobs, circles, "),
    (_set("dataset", value=["moons"]), "metadata.dataset must be one of"),
    (_set("run", "init", value={"name": "he"}), "metadata.run.init must be one of .* or null, "
                                               "got {'name': 'he'}"),
    (_set("run", "seed", value=1.5), "metadata.run.seed must be an integer"),
    (_set("run", "lr", value=-0.1), r"metadata.run.lr must be a finite number in \(0, inf\]"),
    (_set("run", "lr", value="0.1"), "metadata.run.lr must be a finite number"),
    (_set("run", "momentum", value=math.inf), "metadata.run.momentum must be a finite number"),
    (_set("run", "epochs", value=True), "metadata.run.epochs must be an integer >= 1"),
    (_set("run", "hidden", value=[]), "metadata.run.hidden must be a non-empty list"),
    (_set("run", "hidden", value=[4, "4"]), "metadata.run.hidden must be a non-empty list"),
    (_set("run", "hidden", value=[100_000, 100_000]),
     r"metadata.run.hidden is \[100000, 100000\] but the model stored in the file has \[4\]"),
    (_set("run", "activation", value="tanh"), "metadata.run.activation is 'tanh' but the model"),
    (_set("run", "dropout", value=0.5), "metadata.run.dropout is 0.5 but the model"),
    (_set("run", "init", value="zeros"), "metadata.run.init is 'zeros' but the model"),
    (_set("run", "seed", value=5), "metadata.seed is 0 but metadata.run.seed is 5"),
    (_drop("run", "epochs"), r"metadata.run: missing fields \['epochs'\]"),
    (_set("run", "threads", value=0),
     r'metadata.run.threads must be "auto", "none" or a positive integer, got 0'),
    (_set("run", "threads", value="2"), "metadata.run.threads must be"),
    (_set("run", "threads", value=None), "metadata.run.threads must be"),
    (_set("run", "colour", value=1), r"metadata.run: unknown fields \[\"'colour'\"\]"),
    (_set("run", value=[]), "metadata.run must be an object"),
    (_set("test", value={"loss": "low"}), "metadata.test must be an object of numbers"),
    (_set("interrupted", value="no"), "metadata.interrupted must be true or false"),
    (_set("resume", "epochs_done", value=5),
     "metadata.resume.epochs_done is 5 but the history records 2 epochs"),
    (_set("resume", "rng", value="state"), "metadata.resume.rng must be a list of generator"),
    (_set("resume", "scheduler", value=3), "metadata.resume.scheduler must be an object or null"),
    (_set("resume", "history", "steps", value=[0.5, None]),
     "metadata.resume.history.steps must be a list of numbers"),
    (_set("resume", "history", "best_epoch", value=9),
     r"metadata.resume.history.best_epoch must be an integer in \[1, 2\] or null"),
    (_set("resume", "history", "epochs", value=[{"loss": "x"}, {}]),
     r"metadata.resume.history.epochs\[0\] must be an object of numbers"),
    (_set("resume", "history", "grad_norms", value={"w": "x"}),
     r"metadata.resume.history.grad_norms\['w'\] must be a list of numbers"),
])
def test_every_field_handgrad_train_writes_is_checked(tmp_path, run_dir, edit, message):
    path = _edited(run_dir / "resume.npz", tmp_path / "resume.npz", edit)
    with pytest.raises(CheckpointError, match=f"{tmp_path}/resume.npz: {message}"):
        serialization.read(path)
    meta, _ = serialization.read(run_dir / "resume.npz")
    edit(meta)                  # the public function says the same about the parsed fields
    with pytest.raises(CheckpointError, match=f"where.npz: {message}"):
        serialization.validate_metadata("where.npz", meta["metadata"], meta["config"])


def test_a_resume_file_asking_for_a_huge_model_is_refused_before_allocating(tmp_path, run_dir):
    path = _edited(run_dir / "resume.npz", tmp_path / "resume.npz",
                   _set("run", "hidden", value=[100_000, 100_000]))
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="metadata.run.hidden"):
            serialization.read(path)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20


def test_handgrad_train_resume_of_such_a_file_is_one_line(tmp_path, run_dir, capsys):
    directory = tmp_path / "run"
    directory.mkdir()
    for name in ("model.npz", "history.json", rundir.MANIFEST):
        (directory / name).write_bytes((run_dir / name).read_bytes())
    _edited(run_dir / "resume.npz", directory / "resume.npz",
            _set("run", "hidden", value=[100_000, 100_000]))
    manifest = json.loads((directory / rundir.MANIFEST).read_text())  # a consistent directory
    manifest["files"] = {k: v for k, v in manifest["files"].items()
                         if k in ("model.npz", "resume.npz", "history.json")}
    manifest["files"]["resume.npz"] = rundir.fingerprint(directory / "resume.npz")
    (directory / rundir.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(directory), "--epochs", "3", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "resume.npz: metadata.run.hidden is [100000, 100000]" in err[0]


def _as_saved_before_threads_were_recorded(src: Path, directory: Path) -> Path:
    """A copy of the run directory ``src`` whose files record no ``run.threads``, as an
    older handgrad wrote them (the manifest re-fingerprinted: a consistent directory)."""
    directory.mkdir()
    (directory / "history.json").write_bytes((src / "history.json").read_bytes())
    for name in ("model.npz", "resume.npz"):
        _edited(src / name, directory / name, _drop("run", "threads"))
    manifest = json.loads((src / rundir.MANIFEST).read_text())
    manifest["files"] = {name: rundir.fingerprint(directory / name)
                         for name in ("model.npz", "resume.npz", "history.json")}
    (directory / rundir.MANIFEST).write_text(json.dumps(manifest))
    return directory


def test_a_run_saved_before_threads_were_recorded_still_resumes(tmp_path, capsys, monkeypatch):
    """It resumes with the --threads given, else with auto (the default it then had), and
    says so: only the one who started it knows whether it was given another."""
    whole, part = tmp_path / "whole", tmp_path / "part"
    run = ["--dataset", "moons", "--hidden", "4", "--dropout", "0.1", "--quiet"]
    assert cli.main(["train", *run, "--epochs", "4", "--out", str(whole)]) == 0
    assert cli.main(["train", *run, "--epochs", "2", "--out", str(part)]) == 0
    meta, _ = serialization.read(_as_saved_before_threads_were_recorded(part, tmp_path / "old")
                                 / "resume.npz")
    assert "threads" not in meta["metadata"]["run"]
    from handgrad.nn import threads
    limits: list[int | None] = []
    real = threads.blas_threads
    monkeypatch.setattr("handgrad.nn.train.blas_threads",
                        lambda limit: limits.append(limit) or real(limit))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "old"), "--epochs", "4", "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"handgrad: note: {tmp_path / 'old'} does not record --threads (saved by an "
                   f"older handgrad); resuming with --threads auto, the default then: if the "
                   f"run was started with another --threads, give it for a bit-for-bit resume"]
    for name in ("model.npz", "resume.npz"):
        recorded, resumed = (serialization.read(d / name)[0]["metadata"]
                             for d in (whole, tmp_path / "old"))
        assert resumed["run"] == recorded["run"] and resumed["run"]["threads"] == "auto"
        assert resumed["test"] == recorded["test"]
        with np.load(whole / name) as a, np.load(tmp_path / "old" / name) as b:
            assert all(np.array_equal(a[k], b[k]) for k in a.files if k != META[:-4])
    _as_saved_before_threads_were_recorded(part, tmp_path / "old2")
    assert cli.main(["train", "--resume", str(tmp_path / "old2"), "--epochs", "3", "--quiet",
                     "--threads", "2"]) == 0
    assert capsys.readouterr().err == ""
    assert limits == [1, 2]          # auto: one thread for this model; then the one given
    assert serialization.read(tmp_path / "old2" / "resume.npz")[0]["metadata"]["run"][
        "threads"] == 2


def test_user_metadata_beside_the_recorded_fields_is_left_alone(tmp_path):
    model = nn.MLP([2, 3, 2], seed=0)
    extra = {"dataset": "spirals", "note": [1, {"a": None}], "score": math.nan}
    loaded = nn.load(nn.save(model, tmp_path / "m.npz", metadata=extra))
    assert loaded.checkpoint_metadata.keys() == extra.keys()
    assert math.isnan(loaded.checkpoint_metadata["score"])


@pytest.mark.parametrize("metadata,message", [
    ({"dataset": "cifar", "run": {}}, "metadata.dataset must be one of"),
    ({"seed": -1, "resume": {}}, r"metadata.seed must be an integer in \[0, 4294967295\]"),
    ([("dataset", "xor")], "metadata must be an object"),
])
def test_save_refuses_metadata_that_load_would_refuse(tmp_path, metadata, message):
    with pytest.raises(ValueError, match=f"save: {message}.*load would refuse the file"):
        nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata=metadata)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("metadata,message", [
    ({"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
     "JSON nested 34 deep, at most 32"),
    ({"x": 10**100}, r"an integer of 101 digits \(at most 100\)"),
])
def test_save_refuses_json_that_load_would_refuse(tmp_path, metadata, message):
    with pytest.raises(ValueError, match=f"save: metadata: {message}.*load would refuse"):
        nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata=metadata)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("metadata,message", [
    # an int key beside the same number as a string: one of the two values would be lost
    ({"epoch_acc": {1: 0.5, "1": 0.75}},
     r"metadata\['epoch_acc'\] has the int key 1, which load would give back as the string '1'"),
    ({True: "flag"}, "metadata has the bool key True, .* as the string 'true'"),
    ({"a": [{"b": {None: 1}}]}, r"metadata\['a'\]\[0\]\['b'\] has the NoneType key None"),
    ({"classes": ("cat", "dog")}, r"metadata\['classes'\] is a tuple, .* as a list"),
    ({"x": [1, (2,)]}, r"metadata\['x'\]\[1\] is a tuple"),
])
def test_save_refuses_metadata_that_load_would_not_give_back(tmp_path, metadata, message):
    path = nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata={"kept": "yes"})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=f"save: {message}"):
        nn.save(nn.MLP([2, 2], seed=1), path, metadata=metadata)
    assert path.read_bytes() == before and list(tmp_path.iterdir()) == [path]


def test_metadata_save_accepts_comes_back_from_load_unchanged(tmp_path):
    metadata = {"a": [1, 2.5, None, True, "x", {"b": [], "c": {}}], "d": {"1": 0.75}}
    loaded = nn.load(nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata=metadata))
    assert serialization.metadata_of(loaded) == metadata


@pytest.mark.parametrize("metadata", [{"dataset": "cifar10"}, {"seed": None}, {"seed": 12345678901},
                                      {"test": "held-out 2023"}, {"interrupted": "no", "data_source": 3}])
def test_a_file_of_ones_own_keeps_the_keys_handgrad_train_uses_as_the_users(tmp_path, metadata):
    """Keys handgrad train writes are checked in a run's metadata (with "run" or "resume");
    a file of one's own, such as the README's metadata={"dataset": "spirals"}, was refused
    for {"dataset": "cifar10"}."""
    loaded = nn.load(nn.save(nn.MLP([2, 2], seed=0), tmp_path / "m.npz", metadata=metadata))
    assert loaded.checkpoint_metadata == metadata
