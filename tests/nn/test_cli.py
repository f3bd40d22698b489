"""The handgrad command line: the main job, its outputs, evaluate, and its errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from handgrad.nn import cli


def test_default_train_runs_on_spirals_and_ends_with_the_test_accuracy(capsys):
    assert cli.main(["train", "--quiet"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("test accuracy: ")
    assert float(lines[-1].split(": ")[1]) > 0.9


def test_train_writes_checkpoint_history_and_curves_then_evaluate_agrees(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--dataset", "moons", "--epochs", "30", "--hidden", "16", "--seed", "3",
            "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    train_out = capsys.readouterr().out.strip().splitlines()
    assert (out / "model.npz").exists() and (out / "resume.npz").exists()
    history = json.loads((out / "history.json").read_text())
    assert len(history["epochs"]) == 30 and history["steps"]
    pytest.importorskip("matplotlib")
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["evaluate", str(out / "model.npz")]) == 0
    eval_out = capsys.readouterr().out.strip().splitlines()
    assert eval_out[-1] == train_out[-1]          # same test accuracy line


@pytest.mark.parametrize("argv,message", [
    (["train", "--lr", "-1"], "--lr: must be positive"),
    (["train", "--dataset", "cifar"], "invalid choice: 'cifar'"),
    (["train", "--hidden", "64,x"], "comma-separated"),
    (["train", "--epochs", "0"], "positive integer"),
    (["train", "--bogus"], "unrecognized arguments"),
    (["evaluate"], "required: checkpoint"),
])
def test_invalid_options_give_one_line_and_status_2(argv, message, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("handgrad")


def test_runtime_errors_are_one_line_too(tmp_path, capsys):
    assert cli.main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "handgrad: error:" in err[0] and str(tmp_path) in err[0]
    assert cli.main(["evaluate", str(tmp_path / "none.npz")]) == 2
    assert "none.npz" in capsys.readouterr().err


def test_console_entry_points():
    run = subprocess.run([sys.executable, "-m", "handgrad", "train", "--epochs", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "handgrad", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "train" in run.stdout


# --- every user error: one line on stderr, status 2, before any training ------------------------

def run_cli(argv, capsys):
    """(status, stderr lines) of cli.main, whether it returns or exits through argparse."""
    try:
        status = cli.main(argv)
    except SystemExit as e:
        status = e.code
    return status, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "nan"], "--lr: must be a finite number, got nan"),
    (["train", "--lr", "inf"], "--lr: must be a finite number"),
    (["train", "--weight-decay", "-0.1"], "--weight-decay: must be zero or positive, got -0.1"),
    (["train", "--momentum", "1.5"], "--momentum: must be in [0, 1), got 1.5"),
    (["train", "--dropout", "-0.2"], "--dropout: must be in [0, 1)"),
    (["train", "--label-smoothing", "2"], "--label-smoothing: must be in [0, 1]"),
    (["train", "--val-fraction", "1"], "--val-fraction: must be in [0, 1)"),
    (["train", "--clip-grad-norm", "0"], "--clip-grad-norm: must be positive"),
    (["train", "--hidden", ""], "--hidden: expected comma-separated sizes"),
    (["train", "--hidden", "64,"], "--hidden: expected comma-separated sizes"),
    (["train", "--hidden", "0"], "--hidden: sizes must be positive integers"),
    (["train", "--batch-size", "-3"], "--batch-size: must be a positive integer"),
    (["train", "--optimizer", "adam", "--momentum", "0.5"], "--momentum is not used by adam"),
    (["train", "--early-stopping", "3", "--val-fraction", "0"], "--early-stopping needs validation"),
])
def test_bad_values_and_combinations_are_one_line_before_any_data_is_read(argv, message, capsys,
                                                                        monkeypatch):
    monkeypatch.setattr(cli.data_, "load_dataset", _no_data)
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err


def _no_data(*args, **kwargs):
    raise AssertionError("the error must come before any data is loaded")


def test_out_that_is_an_existing_file_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli.data_, "load_dataset", _no_data)
    existing = tmp_path / "results.txt"
    existing.write_text("keep me")
    status, err = run_cli(["train", "--out", str(existing)], capsys)
    assert status == 2 and err == [f"handgrad: error: --out {existing} is an existing file; "
                                   f"give a directory"]
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("make_file", [
    lambda p: p.write_bytes(b"PK\x03\x04 not really a zip"),                  # crafted
    lambda p: p.write_bytes(b""),                                             # empty
    lambda p: p.write_bytes(b"\x93NUMPY" + bytes(100)),                       # not a zip
])
def test_evaluate_on_a_corrupt_checkpoint_is_one_line(tmp_path, capsys, make_file):
    path = tmp_path / "model.npz"
    make_file(path)
    status, err = run_cli(["evaluate", str(path)], capsys)
    assert status == 2 and len(err) == 1 and str(path) in err[0]
    assert "Traceback" not in "\n".join(err)


def test_evaluate_on_a_truncated_checkpoint_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "xor", "--epochs", "2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    data = (out / "model.npz").read_bytes()
    (out / "model.npz").write_bytes(data[: len(data) // 2])
    status, err = run_cli(["evaluate", str(out / "model.npz")], capsys)
    assert status == 2 and len(err) == 1 and "model.npz" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["draw", "--out", "{dir}"], "is a directory; give a file name"),
    (["draw", "--format", "png", "--out", "{dir}/graph.svg"], "--format png contradicts"),
    (["draw", "--html", "--out", "{dir}/graph.svg"], "names a .svg file, but --html"),
    (["draw", "--html", "--format", "svg"], "--format does not apply to --html"),
    (["draw", "--out", "{dir}/page.html"], "add --html"),
])
def test_draw_paths_and_formats_that_contradict_are_one_line(argv, message, tmp_path, capsys):
    argv = [a.format(dir=tmp_path) for a in argv]
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err


def test_piping_into_head_exits_quietly():
    code = ("import sys; sys.argv = ['handgrad', 'train', '--dataset', 'xor', '--epochs', '3', "
            "'--quiet']; from handgrad.nn.cli import main; sys.exit(main())")
    run = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 10", shell=True,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stderr == "", run.stderr


def test_a_bug_still_shows_its_traceback(monkeypatch):
    """Programming errors are not swallowed into one line: only user errors are."""
    def broken(*args, **kwargs):
        raise TypeError("a bug inside handgrad")
    monkeypatch.setattr(cli, "run_config", broken)
    with pytest.raises(TypeError, match="a bug inside handgrad"):
        cli.main(["train", "--quiet"])
