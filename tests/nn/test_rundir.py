"""nn.rundir: a run directory's files are committed together by one manifest."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from handgrad.nn import rundir


def _writer(text: str):
    def write(path: Path) -> Path:
        path.write_text(text)
        return path
    return write


def _commit(directory: Path, epoch: int) -> None:
    rundir.commit(directory, {"model.npz": _writer(f"model {epoch}"),
                              "resume.npz": _writer(f"resume {epoch}")}, epoch)


def test_commit_writes_the_files_and_a_manifest_that_verifies(tmp_path):
    _commit(tmp_path, 1)
    manifest, where = rundir.verify(tmp_path)
    assert manifest["epochs_done"] == 1 and where == {"model.npz": tmp_path / "model.npz",
                                                      "resume.npz": tmp_path / "resume.npz"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "resume.npz", "run.json"]


def test_a_failed_writer_leaves_the_previous_epoch(tmp_path):
    _commit(tmp_path, 1)

    def full_disk(path: Path) -> Path:
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        rundir.commit(tmp_path, {"model.npz": _writer("model 2"), "resume.npz": full_disk}, 2)
    assert rundir.verify(tmp_path)[0]["epochs_done"] == 1
    assert (tmp_path / "model.npz").read_text() == "model 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz", "resume.npz", "run.json"]


def test_a_commit_stopped_before_its_renames_is_verified_and_finished(tmp_path, monkeypatch):
    _commit(tmp_path, 1)
    real = os.replace

    def stop_after_the_manifest(src, dst):
        real(src, dst)
        if Path(dst).name == rundir.MANIFEST:
            raise KeyboardInterrupt            # the kill comes right after the commit
    monkeypatch.setattr(os, "replace", stop_after_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        _commit(tmp_path, 2)
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "model.npz").read_text() == "model 1"       # not renamed yet
    manifest, where = rundir.verify(tmp_path)
    assert manifest["epochs_done"] == 2 and where["model.npz"] == rundir.staged(tmp_path,
                                                                               "model.npz")
    rundir.settle(tmp_path)
    assert (tmp_path / "model.npz").read_text() == "model 2"
    assert rundir.verify(tmp_path)[1]["model.npz"] == tmp_path / "model.npz"


def test_verify_refuses_mixed_missing_and_malformed_directories(tmp_path):
    with pytest.raises(rundir.RunDirError, match="no run.json"):
        rundir.verify(tmp_path)
    _commit(tmp_path, 3)
    (tmp_path / "model.npz").write_text("model 2")
    with pytest.raises(rundir.RunDirError, match="model.npz is not the file saved with epoch 3"):
        rundir.verify(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"format": "handgrad-run", "version": 1,
                                                   "epochs_done": 3,
                                                   "files": {"../../etc/passwd": {}}}))
    with pytest.raises(rundir.RunDirError, match="not a handgrad run manifest"):
        rundir.verify(tmp_path)


def test_files_that_a_save_would_replace_are_checked_before_training(tmp_path):
    (tmp_path / "elsewhere.npz").write_text("x")
    (tmp_path / "model.npz").symlink_to(tmp_path / "elsewhere.npz")
    with pytest.raises(rundir.RunDirError, match="model.npz is a symbolic link"):
        rundir.check_writable(tmp_path)
    (tmp_path / "model.npz").unlink()
    (tmp_path / "history.json").mkdir()
    with pytest.raises(rundir.RunDirError, match="history.json exists and is not a regular file"):
        rundir.check_writable(tmp_path)
    (tmp_path / "history.json").rmdir()
    with pytest.raises(rundir.RunDirError, match="the run's files need at least"):
        rundir.check_writable(tmp_path, needed_bytes=2**62)
    rundir.check_writable(tmp_path)
