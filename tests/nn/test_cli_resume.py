"""handgrad train: Ctrl-C saves the run, --resume continues it bit-for-bit."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from handgrad.nn import cli, losses, serialization

RUN = ["--dataset", "moons", "--hidden", "16", "--dropout", "0.2", "--optimizer", "sgd",
       "--momentum", "0.8", "--schedule", "exponential", "--batch-size", "32", "--seed", "4",
       "--quiet"]


def _members(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files if k != "__handgrad__"}


def _assert_same_run(a: Path, b: Path) -> None:
    for name in ("model.npz", "resume.npz"):
        ma, mb = _members(a / name), _members(b / name)
        assert ma.keys() == mb.keys()
        for k in ma:
            assert np.array_equal(ma[k], mb[k]), f"{name}: {k} differs"
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    for record in ha["epochs"] + hb["epochs"]:
        record.pop("seconds")
    assert ha == hb


def test_resume_continues_a_run_bit_for_bit(tmp_path, capsys):
    assert cli.main(["train", *RUN, "--epochs", "9", "--out", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *RUN, "--epochs", "4", "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "9",
                     "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "resuming after epoch 4" in out
    _assert_same_run(tmp_path / "whole", tmp_path / "part")


def test_resume_under_early_stopping_stops_where_the_whole_run_stops(tmp_path, capsys):
    run = ["--dataset", "moons", "--optimizer", "adam", "--lr", "0.3", "--early-stopping", "3",
           "--quiet"]
    assert cli.main(["train", *run, "--epochs", "200", "--out", str(tmp_path / "whole")]) == 0
    whole = json.loads((tmp_path / "whole" / "history.json").read_text())
    assert whole["stopped_early"] and whole["best_epoch"] < len(whole["epochs"]) - 1
    # stop after the best epoch but before the patience runs out, then resume
    assert cli.main(["train", *run, "--epochs", str(whole["best_epoch"] + 1),
                     "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "200",
                     "--quiet"]) == 0
    _assert_same_run(tmp_path / "whole", tmp_path / "part")
    # model.npz is the best epoch's model (what the test metrics describe), resume.npz the last
    assert cli.main(["evaluate", str(tmp_path / "part" / "model.npz")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == [x for x in lines if x.startswith("test accuracy")][-2]
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "300"]) == 2
    assert "the run stopped early" in capsys.readouterr().err


def _spy_blas_limits(monkeypatch) -> list[int | None]:
    """The BLAS thread limit of every fit the command runs, in order."""
    from handgrad.nn import threads
    limits: list[int | None] = []
    real = threads.blas_threads
    monkeypatch.setattr("handgrad.nn.train.blas_threads",
                        lambda limit: limits.append(limit) or real(limit))
    return limits


def test_resume_keeps_the_threads_the_run_was_started_with(tmp_path, capsys, monkeypatch):
    """--threads is recorded: the documented resume (no --threads) uses the run's setting,
    not the default (auto, one thread for this model), whose float32 products round
    differently from two threads' (the uninterrupted run's)."""
    run = ["--hidden", "128,128", "--optimizer", "adam", "--threads", "2", "--quiet"]
    limits = _spy_blas_limits(monkeypatch)
    assert cli.main(["train", *run, "--epochs", "12", "--out", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *run, "--epochs", "4", "--out", str(tmp_path / "part")]) == 0
    assert cli.main(["train", "--resume", str(tmp_path / "part"), "--epochs", "12",
                     "--quiet"]) == 0
    assert limits == [2, 2, 2]
    assert capsys.readouterr().err == ""
    for name in ("model.npz", "resume.npz"):
        assert serialization.read(tmp_path / "part" / name)[0]["metadata"]["run"]["threads"] == 2
    _assert_same_run(tmp_path / "whole", tmp_path / "part")


@pytest.mark.parametrize("started, resumed", [(["--threads", "2"], "1"), ([], "2"),
                                              ([], "none"), (["--threads", "none"], "auto")])
def test_resume_refuses_another_thread_setting(tmp_path, capsys, started, resumed):
    assert cli.main(["train", *RUN, *started, "--epochs", "2", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path), "--epochs", "4",
                     "--threads", resumed]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    recorded = started[1] if started else "auto"
    assert len(err) == 1 and err[0].startswith(
        f"handgrad: error: --threads {resumed} differs from the run being resumed ({recorded}); "
        f"--resume continues a run as it was (float32 products split over other BLAS threads")
    # the same setting given again is no change
    assert cli.main(["train", "--resume", str(tmp_path), "--epochs", "3", "--quiet",
                     *(started or ["--threads", "auto"])]) == 0


class _CtrlCAt(losses.CrossEntropyLoss):
    """The CLI's loss, pressing Ctrl-C (``presses`` times) at its n-th call (a training step)."""
    at = 0
    calls = 0
    presses = 1
    signum = signal.SIGINT

    def forward(self, out, y):
        type(self).calls += 1
        if type(self).calls == self.at:
            for _ in range(self.presses):
                os.kill(os.getpid(), self.signum)
        return super().forward(out, y)


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_save_the_run_as_ctrl_c_does(tmp_path, capsys, monkeypatch, name):
    """What `timeout`, `docker stop`, Slurm and systemd send: it killed the process with
    every trained epoch unsaved (an empty --out after 150 of 200 epochs)."""
    signum = getattr(signal, name)
    previous = signal.getsignal(signum)
    monkeypatch.setattr(_CtrlCAt, "at", 30)
    monkeypatch.setattr(_CtrlCAt, "calls", 0)
    monkeypatch.setattr(_CtrlCAt, "signum", signum)
    monkeypatch.setattr(cli, "CrossEntropyLoss", _CtrlCAt)
    status = cli.main(["train", *RUN, "--epochs", "30", "--out", str(tmp_path / "cut")])
    assert status == 130 and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signum) is previous
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert 1 <= len(saved["epochs"]) < 30


def test_ctrl_c_saves_the_last_complete_epoch_and_resume_finishes_the_run(tmp_path, capsys,
                                                                          monkeypatch):
    assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "whole")]) == 0
    steps_per_epoch = len(json.loads((tmp_path / "whole" / "history.json").read_text())
                          ["steps"]) // 6
    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(_CtrlCAt, "at", 3 * steps_per_epoch + 2)    # inside epoch 3 or 4
    monkeypatch.setattr(cli, "CrossEntropyLoss", _CtrlCAt)
    capsys.readouterr()
    status = cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "cut")])
    captured = capsys.readouterr()
    assert status == 130
    assert signal.getsignal(signal.SIGINT) is previous
    assert "interrupted" in captured.err and f"--resume {tmp_path / 'cut'}" in captured.err
    for name in ("model.npz", "resume.npz", "history.json"):
        assert (tmp_path / "cut" / name).exists()
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert 1 <= len(saved["epochs"]) < 6
    assert len(saved["steps"]) == len(saved["epochs"]) * steps_per_epoch   # whole epochs only
    assert saved["interrupted"] is True           # it said false, the metadata beside it true
    done = len(saved["epochs"])
    monkeypatch.setattr(cli, "CrossEntropyLoss", losses.CrossEntropyLoss)
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    # what this invocation trained, not "trained 6 epochs" in the time of the last few
    assert f"trained epochs {done + 1}-6 (resumed after epoch {done}) in " in capsys.readouterr().out
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")
    assert json.loads((tmp_path / "cut" / "history.json").read_text())["interrupted"] is False


def test_resume_refuses_changed_options_and_files_it_did_not_write(tmp_path, capsys):
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    cases = [
        (["--lr", "0.5", "--epochs", "4"], "--lr 0.5 differs from the run being resumed"),
        (["--epochs", "2"], "the run already has 2 epochs"),
    ]
    for extra, message in cases:
        assert cli.main(["train", "--resume", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    (tmp_path / "run" / "resume.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4"]) == 2
    err = capsys.readouterr().err
    assert "resume.npz" in err and len(err.strip().splitlines()) == 1


def test_train_says_where_its_data_came_from(capsys):
    assert cli.main(["train", "--dataset", "xor", "--epochs", "1", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("handgrad: xor from ")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"),
                    reason="the Debian fashion-mnist package is not installed")
def test_train_names_the_idx_directory_it_read(capsys):
    assert cli.main(["train", "--dataset", "fashion-mnist", "--n", "256", "--epochs", "1",
                     "--hidden", "8", "--val-fraction", "0", "--quiet"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "from /usr/share/datasets/fashion-mnist" in first


# --- issue 19: the run directory is one unit -------------------------------------------------

def _bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_resume_refuses_a_model_npz_older_than_resume_npz(tmp_path, capsys):
    """The issue's failure: a save stopped between the two checkpoints left the previous
    epoch's model.npz (the best weights) beside a newer resume.npz."""
    run = ["--dataset", "moons", "--optimizer", "adam", "--lr", "0.3", "--early-stopping", "3",
           "--quiet", "--out", str(tmp_path / "run")]
    assert cli.main(["train", *run, "--epochs", "2"]) == 0
    old_model = (tmp_path / "run" / "model.npz").read_bytes()
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4", "--quiet"]) == 0
    (tmp_path / "run" / "model.npz").write_bytes(old_model)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "8", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.npz is not the file saved with epoch 4" in err[0], err


def test_a_read_only_file_in_out_is_refused_before_training(tmp_path, capsys, monkeypatch):
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    (tmp_path / "run" / "model.npz").chmod(0o444)
    before = _bytes(tmp_path / "run")
    monkeypatch.setattr(cli, "fit", _no_training)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.npz is read-only; it was not replaced" in err[0], err
    assert _bytes(tmp_path / "run") == before


def _no_training(*args, **kwargs):
    raise AssertionError("the error must come before any training")


def test_a_full_disk_during_the_save_is_one_line_and_keeps_the_old_files(tmp_path, capsys):
    import resource
    import subprocess
    import sys
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    before = _bytes(tmp_path / "run")

    def small_files():          # writing more than 4 KiB to any file fails (EFBIG)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    done = subprocess.run([sys.executable, "-m", "handgrad", "train", "--resume",
                           str(tmp_path / "run"), "--epochs", "4", "--quiet"],
                          preexec_fn=small_files, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1, done.stderr
    assert err[0].startswith(f"handgrad: error: cannot save the run in {tmp_path / 'run'}: "
                             f"File too large; it still holds the run saved after epoch 2")
    assert _bytes(tmp_path / "run") == before
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4", "--quiet"]) == 0


def test_ctrl_c_during_the_final_write_saves_every_epoch(tmp_path, capsys, monkeypatch):
    assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "whole")]) == 0
    save = cli.serialization.save

    def save_and_press_ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return save(*args, **kwargs)

    monkeypatch.setattr(cli.serialization, "save", save_and_press_ctrl_c)
    capsys.readouterr()
    assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted after") and "the finished run is saved in" in err[-1]
    assert "Traceback" not in "\n".join(err)
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_ctrl_c_while_loading_data_is_status_130_without_a_traceback(tmp_path, capsys,
                                                                     monkeypatch):
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    before = _bytes(tmp_path / "run")

    def ctrl_c(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("not reached: SIGINT raises KeyboardInterrupt")

    monkeypatch.setattr(cli.data_, "load_dataset", ctrl_c)
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--epochs", "4"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["handgrad: interrupted"]
    assert _bytes(tmp_path / "run") == before


class _TwiceCtrlCAt(_CtrlCAt):
    """Ctrl-C twice at the n-th call: the second makes fit abort in the middle of a step."""
    at = 0
    calls = 0
    presses = 2


def test_a_second_ctrl_c_still_saves_the_last_complete_epoch(tmp_path, capsys, monkeypatch):
    assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "whole")]) == 0
    steps_per_epoch = len(json.loads((tmp_path / "whole" / "history.json").read_text())
                          ["steps"]) // 6
    monkeypatch.setattr(_TwiceCtrlCAt, "at", 3 * steps_per_epoch + 2)
    monkeypatch.setattr(cli, "CrossEntropyLoss", _TwiceCtrlCAt)
    capsys.readouterr()
    assert cli.main(["train", *RUN, "--epochs", "6", "--out", str(tmp_path / "cut")]) == 130
    err = capsys.readouterr().err
    saved = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert 1 <= len(saved["epochs"]) < 6 and "Traceback" not in err
    assert f"the state after epoch {len(saved['epochs'])} is saved" in err
    assert len(saved["steps"]) == len(saved["epochs"]) * steps_per_epoch   # whole epochs only
    monkeypatch.setattr(cli, "CrossEntropyLoss", losses.CrossEntropyLoss)
    assert cli.main(["train", "--resume", str(tmp_path / "cut"), "--quiet"]) == 0
    _assert_same_run(tmp_path / "whole", tmp_path / "cut")


def test_a_model_npz_of_another_architecture_in_a_resume_directory_is_one_line(tmp_path, capsys):
    """Even with a manifest that vouches for it (written by hand), a model.npz whose
    architecture is not the run's is refused with one line, not a KeyError."""
    from handgrad.nn import rundir
    run = ["--dataset", "moons", "--optimizer", "adam", "--lr", "0.3", "--early-stopping", "3",
           "--epochs", "2", "--quiet"]
    assert cli.main(["train", *run, "--hidden", "4", "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["train", *run, "--hidden", "5", "--out", str(tmp_path / "b")]) == 0
    (tmp_path / "a" / "model.npz").write_bytes((tmp_path / "b" / "model.npz").read_bytes())
    manifest = json.loads((tmp_path / "a" / rundir.MANIFEST).read_text())
    manifest["files"]["model.npz"] = rundir.fingerprint(tmp_path / "a" / "model.npz")
    (tmp_path / "a" / rundir.MANIFEST).write_text(json.dumps(manifest))
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(tmp_path / "a"), "--epochs", "4", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.npz" in err[0] and "architecture" in err[0], err


def test_train_out_says_which_files_it_wrote_and_which_it_skipped(tmp_path, capsys, monkeypatch):
    from handgrad.nn import plots

    def no_matplotlib(*args, **kwargs):
        raise plots.MatplotlibMissing('plot_history needs matplotlib, which is not installed: '
                                      'pip install "handgrad[plot]"', name="matplotlib")

    monkeypatch.setattr(plots, "plot_history", no_matplotlib)
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "run")]) == 0
    lines = capsys.readouterr().out.splitlines()
    wrote = next(line for line in lines if line.startswith("wrote "))
    assert "model.npz" in wrote and "resume.npz" in wrote and "grad_norms.png" in wrote
    assert "curves.png" not in wrote and not (tmp_path / "run" / "curves.png").exists()
    skipped = next(line for line in lines if line.startswith("skipped "))
    assert skipped == 'skipped curves.png (matplotlib is not installed: pip install "handgrad[plot]")'


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def test_a_new_run_stopped_before_its_first_epoch_keeps_the_run_already_in_out(
        tmp_path, capsys, monkeypatch):
    """Ctrl-C in the first epoch of a new run: the finished run in --out stays as it was
    (it used to be replaced by the new run's untrained weights), and the message says so."""
    out = tmp_path / "run"
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 0
    before = _files(out)
    monkeypatch.setattr(_CtrlCAt, "at", 2)                       # inside the first epoch
    monkeypatch.setattr(_CtrlCAt, "calls", 0)
    monkeypatch.setattr(cli, "CrossEntropyLoss", _CtrlCAt)
    capsys.readouterr()
    assert cli.main(["train", *RUN, "--epochs", "6", "--seed", "7", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"no epoch completed, so nothing was saved and {out} keeps the files "
                            f"that were there")
    assert _files(out) == before


@pytest.mark.parametrize("stop", ["ctrl-c", "nan"])
def test_a_new_run_stopped_before_its_first_epoch_keeps_files_without_a_manifest(
        tmp_path, capsys, monkeypatch, stop):
    """An --out holding a run's files but no run.json (an older handgrad's run, the user's
    own model.npz): a new run stopped by Ctrl-C or a NaN in its first epoch used to replace
    model.npz by untrained weights and delete curves.png."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.npz").write_bytes(b"the user's trained model")
    (out / "curves.png").write_bytes(b"the user's curves")
    before = _files(out)
    if stop == "ctrl-c":
        monkeypatch.setattr(_CtrlCAt, "at", 2)
        monkeypatch.setattr(_CtrlCAt, "calls", 0)
        monkeypatch.setattr(cli, "CrossEntropyLoss", _CtrlCAt)
        assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 130
        last = capsys.readouterr().err.strip().splitlines()[-1]
    else:
        assert cli.main(["train", "--dataset", "moons", "--optimizer", "sgd", "--momentum", "0",
                         "--lr", "1e38", "--epochs", "2", "--quiet", "--out", str(out)]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.endswith(f"nothing was saved and {out} keeps the files that were there"), last
    assert _files(out) == before


def test_a_new_run_stopped_before_its_first_epoch_into_an_empty_out_can_be_resumed(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr(_CtrlCAt, "at", 2)
    monkeypatch.setattr(_CtrlCAt, "calls", 0)
    monkeypatch.setattr(cli, "CrossEntropyLoss", _CtrlCAt)
    assert cli.main(["train", *RUN, "--epochs", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith(f"the state after epoch 0 is saved: continue with handgrad train "
                            f"--resume {out}")
    monkeypatch.setattr(cli, "CrossEntropyLoss", losses.CrossEntropyLoss)
    assert cli.main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0


def test_a_finished_run_whose_test_loss_overflows_is_saved_and_one_line(tmp_path, capsys):
    """Every epoch completed, then the test loss was Inf: evaluate's NonFiniteEvaluation
    escaped as a traceback (exit 1) before the save, and the trained epoch was lost."""
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "spirals", "--n", "200", "--hidden", "32",
                     "--activation", "tanh", "--optimizer", "sgd", "--lr", "1e38",
                     "--epochs", "1", "--quiet", "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "training ended, but on the test set the loss is inf" in last, last
    assert last.endswith(f"the trained run is saved in {out}, without a test result"), last
    assert {"model.npz", "resume.npz", "run.json"} <= {p.name for p in out.iterdir()}


def _idx_dir(directory: Path, value: int) -> Path:
    """Tiny MNIST-format files: 40 training and 10 test images of one gray ``value``."""
    from handgrad.nn import data
    directory.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("t10k", 10)):
        data.write_idx(directory / f"{split}-images-idx3-ubyte", np.full((n, 28, 28), value, np.uint8))
        data.write_idx(directory / f"{split}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return directory


def test_resume_refuses_other_data_than_the_runs(tmp_path, capsys):
    """A run started on one --data-dir continued silently on another (inverted images, same
    options), exit 0. The run records a checksum of its splits, and --resume compares it."""
    first, other = _idx_dir(tmp_path / "a", 10), _idx_dir(tmp_path / "b", 200)
    run = ["--dataset", "mnist", "--hidden", "8", "--batch-size", "16", "--quiet"]
    out = str(tmp_path / "run")
    assert cli.main(["train", *run, "--data-dir", str(first), "--epochs", "1", "--out", out]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--resume", out, "--data-dir", str(other), "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert f"--data-dir {other} is not the data the run was trained on" in err
    assert cli.main(["train", "--resume", out, "--data-dir", str(first), "--epochs", "2",
                     "--quiet"]) == 0


def test_evaluate_refuses_test_data_other_than_the_models_unless_asked_for(tmp_path, capsys,
                                                                          monkeypatch):
    """A model trained with --data-dir was scored on whatever the default search found
    (there, Debian's full Fashion-MNIST: 1.146 for the 1.034 train reported), exit 0. The
    saved model records a checksum of its test split; evaluate refuses other data found by
    the search, and scores other data given with --data-dir with a note."""
    first, other = _idx_dir(tmp_path / "a", 10), _idx_dir(tmp_path / "b", 200)
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "mnist", "--hidden", "8", "--data-dir", str(first),
                     "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HANDGRAD_DATA", str(other))          # what the default search finds
    assert cli.main(["evaluate", str(out / "model.npz")]) == 2
    assert "is not the test data the model was trained with" in capsys.readouterr().err
    assert cli.main(["evaluate", str(out / "model.npz"), "--data-dir", str(other)]) == 0
    assert "(not the test data the model was trained with)" in capsys.readouterr().out
    assert cli.main(["evaluate", str(out / "model.npz"), "--data-dir", str(first)]) == 0
    shown = capsys.readouterr().out
    assert f"from {first}" in shown and "not the test data" not in shown
    # --seed changes nothing in an official test split: refused, not taken and ignored
    assert cli.main(["evaluate", str(out / "model.npz"), "--data-dir", str(first), "--seed", "3"]) == 2
    assert "the test split of mnist is its official one" in capsys.readouterr().err


def test_resume_of_a_missing_folder_or_a_file_says_so(tmp_path, capsys):
    """They read "no run.json ... a first save that was interrupted" and "run.json: cannot
    read (Not a directory)"."""
    (tmp_path / "afile").write_text("x")
    for target, what in ((tmp_path / "nothing", "does not exist"), (tmp_path / "afile", "is not a directory")):
        assert cli.main(["train", "--resume", str(target)]) == 2
        assert f"--resume {target}: {what}" in capsys.readouterr().err


def test_a_run_that_fails_before_training_leaves_no_empty_folders(tmp_path, capsys):
    """--out and its parents were created by the checks before training: a bad --data-dir
    left them behind, empty."""
    out = tmp_path / "new" / "run"
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path / "nodata"),
                     "--out", str(out), "--quiet"]) == 2
    capsys.readouterr()
    assert not (tmp_path / "new").exists()
    assert cli.main(["train", "--epochs", "1", "--out", str(out), "--quiet"]) == 0   # made when saved
    assert (out / "model.npz").exists()


def test_ctrl_c_while_the_command_line_is_read_is_status_130(monkeypatch, capsys):
    """Building the parser imports graphviz (about half a second): a Ctrl-C then was a
    KeyboardInterrupt traceback, not "interrupted" with status 130."""
    def interrupted():
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "build_parser", interrupted)
    assert cli.main(["train"]) == 130
    assert capsys.readouterr().err == "handgrad: interrupted\n"


def test_the_command_starts_through_a_launcher_that_takes_ctrl_c_while_importing(monkeypatch, capsys):
    """The `handgrad` script and `python -m handgrad` import the command line inside
    handgrad.__main__.run, which turns a Ctrl-C during the imports into status 130."""
    import builtins

    from handgrad import __main__ as launcher
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'handgrad = "handgrad.__main__:run"' in pyproject      # (no tomllib on 3.10)
    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        if name == "handgrad.nn.cli":
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", importing)
    assert launcher.run() == 130
    assert capsys.readouterr().err == "handgrad: interrupted\n"
