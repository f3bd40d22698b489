"""The handgrad command line: the main job, its outputs, evaluate, and its errors."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nn import cli


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
    assert (out / "model.npz").exists()
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
    run = subprocess.run([sys.executable, "-m", "nn", "train", "--epochs", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "nn", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "train" in run.stdout
