"""The handgrad command line: the main job, its outputs, evaluate, and its errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from handgrad import nn
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
    (["draw", "--html", "--out", "{dir}/page.jpg"], "--html writes an HTML page; name it .html"),
    (["draw", "--html", "--out", "{dir}/page"], "--html writes an HTML page; name it .html"),
    (["draw", "--html", "--format", "svg"], "--format does not apply to --html"),
    (["draw", "--out", "{dir}/page.html"], "add --html"),
])
def test_draw_paths_and_formats_that_contradict_are_one_line(argv, message, tmp_path, capsys):
    argv = [a.format(dir=tmp_path) for a in argv]
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err


def test_draw_out_with_an_extension_of_no_picture_format_is_one_line_and_writes_nothing(
        tmp_path, capsys):
    """--out graph.jpg wrote SVG text into graph.jpg (exit 0): the command chose svg for any
    extension it did not know, where render's format_for refuses it. It uses format_for."""
    status, err = run_cli(["draw", "--out", str(tmp_path / "graph.jpg")], capsys)
    assert status == 2 and len(err) == 1, err
    assert f"--out {tmp_path / 'graph.jpg'}: cannot tell the picture's format from the " \
           f"extension .jpg" in err[0] and "--format" in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--batch", "100"], "--batch 100: --dataset xor has only 4 rows (the XOR table's four "
                         "corners); give --batch 4 or less"),
    (["--dataset", "circles", "--batch", "50000"],
     "--batch 50000: --dataset circles has only 320 training examples; give --batch 320 or less"),
])
def test_draw_batch_larger_than_the_data_is_one_line_and_writes_nothing(argv, message, tmp_path,
                                                                         capsys):
    """--batch 100 on XOR drew N = 4 rows (circles: 320 of 50000) without a word: the
    picture's N was not the batch asked for."""
    status, err = run_cli(["draw", *argv, "--out", str(tmp_path / "g.dot")], capsys)
    assert status == 2 and err == [f"handgrad: error: {message}"], err
    assert list(tmp_path.iterdir()) == []
    assert run_cli(["draw", "--batch", "3", "--out", str(tmp_path / "g.dot")], capsys)[0] == 0
    assert "N = 3 rows" in (tmp_path / "g.dot").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--html", "--out", "{dir}/p.html", "--pdf", "{dir}/nodir/h.pdf"],
     "--pdf {dir}/nodir/h.pdf: the folder {dir}/nodir does not exist"),
    (["--html", "--out", "{dir}/p.html", "--steps", "{dir}/afile/steps"],
     "--steps {dir}/afile/steps: {dir}/afile is a file, not a folder"),
    (["--html", "--out", "{dir}/nodir/p.html"], "--out {dir}/nodir/p.html: the folder "
                                                 "{dir}/nodir does not exist"),
    (["--out", "{dir}/afile/g.svg"], "--out {dir}/afile/g.svg: the folder {dir}/afile is not "
                                     "a folder"),
    # the handout was written, announced, then removed as an earlier export's step picture
    (["--html", "--out", "{dir}/p.html", "--pdf", "{dir}/s/step-00.pdf", "--steps", "{dir}/s"],
     "--pdf {dir}/s/step-00.pdf is named as a step picture in --steps {dir}/s, which keeps "
     "only this export's step pictures; give the handout another name"),
    # the page was written, then a traceback
    (["--html", "--out", "{dir}/p.html", "--steps", "{dir}/p.html"],
     "--steps {dir}/p.html is the page's --out; give the step pictures a folder of their own"),
])
def test_draw_checks_every_output_path_before_writing_any(argv, message, tmp_path, capsys):
    """--html --out p.html --pdf nodir/h.pdf wrote p.html, then failed on the PDF with a
    bare "No such file or directory": every path is checked first, naming its option."""
    (tmp_path / "afile").write_text("keep me")
    argv = [a.format(dir=tmp_path) for a in argv]
    status, err = run_cli(["draw", *argv], capsys)
    assert status == 2 and err == [f"handgrad: error: {message.format(dir=tmp_path)}"], err
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]
    assert (tmp_path / "afile").read_text() == "keep me"


def test_draw_layer_level_with_no_activation_between_layers_is_one_line(tmp_path, capsys):
    """--activation identity puts no activation between the layers, so BP2 has no f′(z):
    a UsageError naming both options, not a traceback about dropout."""
    status, err = run_cli(["draw", "--activation", "identity", "--html", "--level", "layer",
                           "--out", str(tmp_path / "page.html")], capsys)
    assert status == 2 and len(err) == 1, err
    assert "--level layer" in err[0] and "--activation identity" in err[0]
    assert "dropout" not in err[0] and not (tmp_path / "page.html").exists()


@pytest.mark.parametrize("argv, message", [
    (["draw", "--font-size", "3"], "--font-size: must be a number of points in [4, 72], got 3"),
    (["draw", "--font-size", "2", "--html", "--out", "{dir}/a.html"],
     "--font-size: must be a number of points in [4, 72], got 2"),
    (["draw", "--font-size", "100"], "--font-size: must be a number of points in [4, 72], got 100"),
    (["draw", "--seed", "-1", "--format", "dot", "--out", "{dir}/g.dot"],
     "--seed: must be an integer in [0, 4294967295], got -1"),
    (["draw", "--seed", str(2**32), "--format", "dot", "--out", "{dir}/g.dot"],
     "--seed: must be an integer in [0, 4294967295]"),
])
def test_draw_font_sizes_and_seeds_out_of_range_are_one_line(argv, message, tmp_path, capsys):
    """--font-size 3 reached draw's [4, 72] ValueError and --seed -1 numpy's, both as
    tracebacks (exit 1): the options are range-checked like train's, naming the range."""
    argv = [a.format(dir=tmp_path) for a in argv]
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flags, named", [
    (["--numeric"], "--numeric"), (["--rules", "--collapse"], "--rules, --collapse"),
    (["--rankdir", "LR"], "--rankdir"), (["--font-size", "20"], "--font-size"),
    (["--backward-order"], "--backward-order"),
    (["--numeric", "--rules", "--collapse", "--rankdir", "BT", "--font-size", "9",
      "--backward-order"],
     "--numeric, --rules, --collapse, --backward-order, --rankdir, --font-size"),
])
def test_draw_layer_level_refuses_the_op_graphs_options_it_would_drop(flags, named, tmp_path,
                                                                      capsys):
    """--level layer wrote the very page it writes without --numeric, --rules, --collapse,
    --rankdir, --font-size and --backward-order (exit 0, no word): the equation slides have
    no use for them, so each is refused by name, one line, status 2, before any work."""
    page = tmp_path / "bp.html"
    status, err = run_cli(["draw", "--html", "--level", "layer", "--out", str(page), *flags],
                          capsys)
    assert status == 2 and len(err) == 1, err
    assert f"--level layer shows the equations BP1-BP4, not the op graph, so {named} would " \
           f"change nothing" in err[0] and "--level op" in err[0]
    assert not page.exists()


@pytest.mark.parametrize("args, message", [
    (["draw", "--html", "--backward-order"], "--backward-order numbers the nodes of one picture"),
    (["draw", "--preset", "slide", "--rankdir", "LR"], "--preset slide draws top to bottom: "
                                                      "--rankdir LR would change nothing"),
    (["draw", "--preset", "slide", "--font-size", "10"], "--preset slide uses at least 24 pt: "
                                                        "--font-size 10 would change nothing"),
    (["draw", "--steps-format", "png"], "--steps-format is the format of the --steps pictures"),
    (["draw", "--data-dir", "somewhere"], "--dataset xor is generated: leave --data-dir out"),
    (["train", "--dataset", "spirals", "--data-dir", "somewhere", "--epochs", "1"],
     "--dataset spirals is generated: leave --data-dir out"),
])
def test_an_option_that_would_change_nothing_is_refused(args, message, tmp_path, capsys,
                                                         monkeypatch):
    """Each of these ran with exit 0 and an output identical to the one without it."""
    monkeypatch.chdir(tmp_path)
    out = ["--out", str(tmp_path / ("page.html" if "--html" in args else "picture.svg"))]
    status, err = run_cli([*args, *(out if args[0] == "draw" else [])], capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_evaluate_refuses_a_data_dir_for_a_generated_dataset(tmp_path, capsys):
    path = tmp_path / "run"
    assert cli.main(["train", "--dataset", "moons", "--epochs", "1", "--quiet",
                     "--out", str(path)]) == 0
    capsys.readouterr()
    status, err = run_cli(["evaluate", str(path / "model.npz"), "--data-dir", "x"], capsys)
    assert status == 2 and "--dataset moons is generated: leave --data-dir out" in err[0], err


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


# --- issue 19: the probes that were tracebacks -------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["train", "--n", "2"], "--n 2: spirals needs at least 3 examples"),
    (["train", "--dataset", "xor", "--n", "3"], "--n 3: xor needs at least 4 examples"),
    (["train", "--n", "3"], "--val-fraction 0.1 of 2 training examples (--n 3) is no example"),
    (["train", "--n", "4"], "--val-fraction 0.1 of 3 training examples (--n 4) is no example"),
    (["train", "--n", "5"], "--val-fraction 0.1 of 4 training examples (--n 5) is no example"),
    (["train", "--dataset", "moons", "--n", "2", "--val-fraction", "0"],
     "--n 2 leave 2 training and 0 test examples"),
    (["train", "--val-fraction", "0.999"], "--val-fraction 0.999 of 480 training examples (the "
                                           "600 examples of spirals) leaves none to train on"),
    (["train", "--seed", "-1"], "--seed: must be an integer in [0, 4294967295], got -1"),
    (["train", "--seed", str(2**32)], "--seed: must be an integer in [0, 4294967295]"),
    (["evaluate", "x.npz", "--seed", "-1"], "--seed: must be an integer in [0, 4294967295]"),
])
def test_too_few_examples_and_bad_seeds_are_one_line_before_training(argv, message, capsys,
                                                                     monkeypatch):
    monkeypatch.setattr(cli, "fit", _no_training)
    status, err = run_cli(argv + (["--quiet"] if argv[0] == "train" else []), capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err


def _no_training(*args, **kwargs):
    raise AssertionError("the error must come before any training")


@pytest.mark.parametrize("argv, message", [
    (["train", "--hidden", "100000000"], "--hidden 100000000: MLP [2, 100000000, 3] on 600 "
                                         "examples at once needs at least"),
    (["train", "--dataset", "mnist", "--hidden", "100000,100000", "--batch-size", "64"],
     "--hidden 100000,100000 --batch-size 64: MLP [784, 100000, 100000, 10]"),
    (["train", "--n", str(10**12)], "--hidden 64,64 --n 1000000000000: MLP [2, 64, 64, 3]"),
    (["demo", "vanishing", "--width", "1000000"], "--depth 8 --width 1000000: MLP [2, 1000000"),
])
def test_models_too_big_for_memory_are_one_line_before_anything_is_allocated(argv, message,
                                                                            capsys, monkeypatch):
    monkeypatch.setattr(cli.plan_, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(cli.data_, "load_dataset", _no_data)
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert "but 16.0 GiB is available" in err[0]


@pytest.mark.parametrize("argv, message", [
    (["demo", "vanishing", "--depth", "100000", "--width", "100000"],
     "--depth 100000 --width 100000: MLP [2, 100000 (100000 layers), 3] on 480 examples"),
    (["train", "--hidden", ",".join(["5000"] * 3000)],
     "--hidden 5000,5000,5000,5000,5000,5000,5000,5000,… (3000 sizes): MLP [2, 5000 (3000 "
     "layers), 3] on 600"),
    (["train", "--hidden", ",".join(map(str, range(10**5, 10**5 + 3000)))],
     "MLP [2, 100000, 100001, 100002, … 2996 more …, 102999, 3] on 600 examples"),
])
def test_a_deep_model_too_big_for_memory_is_summarised_on_one_short_line(argv, message, capsys,
                                                                         monkeypatch):
    """demo vanishing --depth 100000 --width 100000 printed every layer size: an 800 KB
    error line. Runs of equal sizes are counted and a long list is cut, with the bytes."""
    monkeypatch.setattr(cli.plan_, "available_memory", lambda: 16 * 2**30)
    monkeypatch.setattr(cli.data_, "load_dataset", _no_data)
    status, err = run_cli(argv, capsys)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert "GiB of memory, but 16.0 GiB is available" in err[0] and len(err[0]) < 300


def test_a_model_that_fits_in_memory_is_not_refused(monkeypatch, capsys):
    monkeypatch.setattr(cli.plan_, "available_memory", lambda: 2**16)   # 64 KiB: too little
    assert run_cli(["train", "--dataset", "xor", "--epochs", "1", "--quiet"], capsys)[0] == 2
    monkeypatch.setattr(cli.plan_, "available_memory", lambda: 2**20)
    assert run_cli(["train", "--dataset", "xor", "--epochs", "1", "--quiet"], capsys)[0] == 0


def test_the_shapes_known_before_loading_are_the_loaded_ones():
    for name in cli.data_.GENERATORS:
        splits = cli.data_.load_dataset(name)
        assert cli.plan_.SHAPES[name] == (splits.input_shape[0], splits.num_classes)
        assert cli.plan_.examples(name, None) == len(splits.x_train) + len(splits.x_test)
        least = cli.plan_.MIN_EXAMPLES[name]
        cli.data_.GENERATORS[name](n=least)
        with pytest.raises(ValueError):
            cli.data_.GENERATORS[name](n=least - 1)


@pytest.mark.parametrize("n, val_fraction", [(None, 0.1), (40, 0.3), (7, 0.2), (None, 0.0)])
def test_the_cli_splits_exactly_as_load_dataset(n, val_fraction):
    run = {"dataset": "moons", "n": n, "seed": 3, "val_fraction": val_fraction}
    ours = cli.load_splits(run, None)
    theirs = cli.data_.load_dataset("moons", n=n, seed=3, val_fraction=val_fraction)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        a, b = getattr(ours, field), getattr(theirs, field)
        assert (a is None and b is None) or np.array_equal(a, b), field


def test_evaluate_on_a_dataset_that_does_not_fit_the_model_is_one_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "xor", "--epochs", "1", "--out", str(out),
                     "--quiet"]) == 0
    capsys.readouterr()
    for dataset, message in [("spirals", "--dataset spirals has 2 inputs and 3 classes, but the "
                                         "model in"),
                             ("mnist", "--dataset mnist has 784 inputs and 10 classes")]:
        status, err = run_cli(["evaluate", str(out / "model.npz"), "--dataset", dataset], capsys)
        assert status == 2 and len(err) == 1 and message in err[0], err
        assert "takes 2 inputs and scores 2 classes" in err[0]


@pytest.mark.parametrize("run", [["--dataset", "spirals", "--n", "300"],
                                 ["--dataset", "moons", "--n", "50", "--val-fraction", "0",
                                  "--seed", "7"]])
def test_evaluate_scores_the_test_split_train_recorded(tmp_path, capsys, monkeypatch, run):
    """For a generated dataset --n decides the test split: evaluate rebuilds it from the
    recorded run and scores an unchanged checkpoint exactly as train did."""
    scores: list[dict[str, float]] = []
    real = cli.evaluate
    monkeypatch.setattr(cli, "evaluate", lambda *a, **k: scores.append(real(*a, **k)) or scores[-1])
    out = tmp_path / "run"
    assert cli.main(["train", *run, "--hidden", "16", "--epochs", "20", "--quiet",
                     "--out", str(out)]) == 0
    trained = capsys.readouterr().out.strip().splitlines()
    assert cli.main(["evaluate", str(out / "model.npz")]) == 0
    evaluated = capsys.readouterr().out.strip().splitlines()
    n_test = int(run[3]) - int(round(int(run[3]) * 0.8))
    assert f"on {run[1]} ({n_test} test examples)" in evaluated[0]
    assert evaluated[-2:] == trained[-2:]           # the test loss and accuracy lines
    recorded = cli.serialization.read(out / "model.npz")[0]["metadata"]["test"]
    assert scores == [recorded, recorded]           # train's evaluation, then evaluate's
    # another seed: another draw of the same recorded size
    assert cli.main(["evaluate", str(out / "model.npz"), "--seed", "1"]) == 0
    assert f"({n_test} test examples)" in capsys.readouterr().out


def test_evaluate_scores_a_label_smoothed_run_with_the_loss_it_trained_with(tmp_path, capsys):
    """train records the test loss of its own loss function: with --label-smoothing,
    evaluate scored plain cross-entropy instead, another number under the same name."""
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "spirals", "--hidden", "16", "--epochs", "5",
                     "--label-smoothing", "0.2", "--quiet", "--out", str(out)]) == 0
    trained = capsys.readouterr().out.strip().splitlines()
    assert cli.main(["evaluate", str(out / "model.npz")]) == 0
    evaluated = capsys.readouterr().out.strip().splitlines()
    assert evaluated[-2:] == trained[-2:]
    assert evaluated[-2].endswith("(cross-entropy with label smoothing 0.2, as trained)")


def test_evaluate_on_another_dataset_does_not_take_the_recorded_n(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", "moons", "--n", "50", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.npz"), "--dataset", "xor"]) == 0
    n = cli.plan_.examples("xor", None)
    assert f"on xor ({n - int(round(n * 0.8))} test examples)" in capsys.readouterr().out


@pytest.mark.parametrize("dataset, n, message", [
    ("spirals", 2, "records --n 2: spirals needs at least 3 examples"),
    ("moons", 2, "records --n 2, which leaves no test example of moons"),
    ("spirals", 10**12, "records --n 1000000000000: 1000000000000 examples of spirals need at "
                        "least 14,901.2 GiB of memory, but 16.0 GiB is available"),
])
def test_a_recorded_n_that_cannot_be_rebuilt_is_one_line(tmp_path, capsys, monkeypatch,
                                                         dataset, n, message):
    """The metadata is untrusted: a recorded --n no run could have had is refused before
    any data is made."""
    from handgrad import nn
    out = tmp_path / "run"
    assert cli.main(["train", "--dataset", dataset, "--hidden", "4", "--epochs", "1",
                     "--quiet", "--out", str(out)]) == 0
    model = nn.load(out / "model.npz")
    meta = cli.serialization.metadata_of(model)
    meta["run"]["n"] = n
    nn.save(model, tmp_path / "edited.npz", metadata=meta)
    monkeypatch.setattr(cli.plan_, "available_memory", lambda: 16 * 2**30)
    status, err = run_cli(["evaluate", str(tmp_path / "edited.npz")], capsys)
    assert status == 2 and err == [f"handgrad: error: {tmp_path / 'edited.npz'} {message}"], err


def test_a_diverging_learning_rate_is_one_line_without_numpy_warnings():
    run = subprocess.run([sys.executable, "-W", "default", "-m", "handgrad", "train",
                          "--lr", "1e308", "--epochs", "3", "--quiet"],
                         capture_output=True, text=True, timeout=120)
    err = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0].startswith("handgrad: error: fit: ") and "RuntimeWarning" not in run.stderr


@pytest.mark.parametrize("redirect, message", [
    (">&-", "standard output is closed; nothing could show the results"),
    ("> /dev/full", "cannot write to standard output: No space left on device"),
])
def test_a_closed_or_full_stdout_is_one_line_and_status_2(redirect, message, tmp_path):
    if redirect.endswith("/dev/full") and not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    run = subprocess.run(f"{sys.executable} -m handgrad train --dataset xor --epochs 2 --quiet "
                         f"{redirect}", shell=True, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [f"handgrad: error: "
                                                                      f"{message}"], run.stderr


def test_user_errors_share_one_base_class_and_bugs_keep_their_traceback(monkeypatch):
    from handgrad.nn import data, errors, serialization, train
    for cls in (cli.UsageError, data.DatasetError, serialization.CheckpointError,
                train.TrainingError, cli.rundir.RunDirError, cli.OutputError):
        assert issubclass(cls, errors.UserInputError)
    # a plain ValueError from inside handgrad is a bug, not the user's input
    def broken(*args, **kwargs):
        raise ValueError("a bug inside load_dataset")
    monkeypatch.setattr(cli.data_, "load_dataset", broken)
    with pytest.raises(ValueError, match="a bug inside load_dataset"):
        cli.main(["train", "--quiet"])


def test_evaluate_takes_a_file_of_ones_own_whose_keys_look_like_a_runs(tmp_path, capsys):
    """Keys of the user's (a file nn.save wrote, no "run") are not handgrad train's: a
    "test_data" there made evaluate say the test data found differs, and such a file could
    not even be saved with {"dataset": "cifar10"}."""
    path = nn.save(nn.MLP([2, 8, 2], seed=0), tmp_path / "mine.npz",
                   metadata={"dataset": "moons", "seed": 3, "test_data": "abc"})
    assert cli.main(["evaluate", str(path)]) == 0
    assert "on moons (80 test examples) from generated (seed 3)" in capsys.readouterr().out
    other = nn.save(nn.MLP([2, 8, 2], seed=0), tmp_path / "cifar.npz", metadata={"dataset": "cifar10"})
    assert cli.main(["evaluate", str(other)]) == 2
    assert "the recorded dataset 'cifar10' is not one of" in capsys.readouterr().err


def test_the_summary_of_an_early_stopped_run_names_the_epoch_the_test_scores(capsys):
    """It gave the last epoch's metrics right above the test lines of the best epoch's
    weights, with no word of which epoch those were."""
    args = ["train", "--quiet", "--n", "300", "--hidden", "16", "--epochs", "200",
            "--batch-size", "32", "--lr", "0.1", "--early-stopping", "3"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    kept = re.search(r"the model keeps epoch (\d+)'s weights \(early stopping: .*val_loss "
                     r"([0-9.]+).*\), which the test below scores", out)
    trained = re.search(r"trained (\d+) epochs", out)
    assert kept and trained and int(kept.group(1)) < int(trained.group(1))


@pytest.mark.parametrize("argv, weight_decay", [
    (["train", "--optimizer", "adamw"], 1e-2),       # nn.optim.AdamW's and PyTorch's default
    (["train", "--optimizer", "adamw", "--weight-decay", "0"], 0.0),
    (["train", "--optimizer", "adam"], 0.0),
    (["train"], 0.0),
])
def test_adamw_decays_its_weights_by_default_as_its_class_does(argv, weight_decay):
    """`--optimizer adamw` without --weight-decay trained with weight decay 0: Adam under
    another name (nn.optim.AdamW and torch.optim.AdamW default to 0.01)."""
    run = cli.run_config(cli.build_parser().parse_args(argv))
    assert run["weight_decay"] == weight_decay
    opt = cli._optimizer(run, nn.MLP([2, 3], seed=0))
    assert opt.param_groups[0]["weight_decay"] == weight_decay
