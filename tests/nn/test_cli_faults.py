"""Fault injection: ``handgrad train --resume`` killed (SIGKILL) at random points of its
save, then resumed again, either refuses with one line or reproduces the uninterrupted run
bit for bit.

Each trial forks the test process (everything is imported already, so a trial costs one
short training run) and kills the child at the k-th line executed inside the save, in
the CLI, the run directory and the checkpoint writer. The run uses early stopping, so a
``model.npz`` (the best epoch) older than ``resume.npz`` would show in the result. The
curves are drawn by a stand-in that writes the history's numbers (matplotlib would take
most of each trial's time; the files go through the same save).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from handgrad.nn import cli, plots, rundir, serialization

from .test_cli_resume import _assert_same_run

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

RUN = ["--dataset", "moons", "--n", "200", "--hidden", "8", "--dropout", "0.1", "--optimizer",
       "sgd", "--momentum", "0.8", "--lr", "0.1", "--early-stopping", "2", "--batch-size", "32",
       "--seed", "1", "--quiet"]
PART, KILLED, WHOLE = 4, 6, 8       # saved epochs; the killed run's target; the full run
TRIALS = 60
WATCHED = {os.path.realpath(m.__file__) for m in (cli, rundir, serialization)}


def _in_child(argv: list[str], kill_at: int | None, report: Path | None = None) -> int:
    """Run the CLI in a forked child; SIGKILL it at the kill_at-th traced line of the save.
    Without kill_at, write the number of traced lines to ``report``. Returns how the child
    ended: its exit status, or -9 for the kill."""
    pid = os.fork()
    if pid:
        _, status = os.waitpid(pid, 0)
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    try:                                         # the child: never returns into pytest
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        sys.stdout = sys.stderr = open(os.devnull, "w")
        count = [0]

        def local(frame, event, arg):
            if event == "line":
                count[0] += 1
                if count[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            return local

        def tracer(frame, event, arg):
            return local if os.path.realpath(frame.f_code.co_filename) in WATCHED else None

        save = cli._Run.save

        def traced_save(self, *args, **kwargs):
            sys.settrace(tracer)
            try:
                return save(self, *args, **kwargs)
            finally:
                sys.settrace(None)

        cli._Run.save = traced_save
        status = cli.main(argv)
        if report is not None:
            report.write_text(str(count[0]))
        os._exit(status)
    except BaseException:
        os._exit(99)


def _curves(history, path) -> Path:
    """A stand-in for the plots: a file that changes with every epoch of the history."""
    path = Path(path)
    path.write_bytes(repr([sorted(e.items()) for e in history.epochs]).encode())
    return path


def test_a_kill_anywhere_in_the_save_never_costs_the_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plots, "plot_history", _curves)
    monkeypatch.setattr(plots, "plot_gradient_norms", _curves)
    assert cli.main(["train", *RUN, "--epochs", str(WHOLE), "--out", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *RUN, "--epochs", str(PART), "--out", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    # How many lines the save runs, measured on one uninterrupted child.
    calibrate = tmp_path / "calibrate"
    shutil.copytree(tmp_path / "base", calibrate)
    lines = tmp_path / "lines"
    resume_to = ["train", "--resume", str(calibrate), "--epochs", str(KILLED), "--quiet"]
    assert _in_child(resume_to, None, lines) == 0
    total = int(lines.read_text())
    assert total > 200
    kill_points = np.random.default_rng(19).choice(np.arange(1, total + 1), TRIALS, replace=False)
    outcomes = {"refused": 0, "same": 0, "killed": 0}
    for k in sorted(int(k) for k in kill_points):
        trial = tmp_path / f"trial{k}"
        shutil.copytree(tmp_path / "base", trial)
        status = _in_child(["train", "--resume", str(trial), "--epochs", str(KILLED), "--quiet"], k)
        outcomes["killed"] += status == -signal.SIGKILL
        status = cli.main(["train", "--resume", str(trial), "--epochs", str(WHOLE), "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        if status == 2:
            assert len(err) == 1 and err[0].startswith("handgrad: error: "), (k, err)
            outcomes["refused"] += 1
        else:
            assert status == 0, (k, status, err)
            _assert_same_run(tmp_path / "whole", trial)
            assert rundir.verify(trial)[1] == {name: trial / name
                                               for name in rundir.read_manifest(trial)["files"]}
            outcomes["same"] += 1
        shutil.rmtree(trial)
    assert outcomes["killed"] == TRIALS          # every kill point lies inside the save
    assert outcomes["same"] == TRIALS, outcomes  # the journal never even needs to refuse
