"""The classic from-scratch experiments, reproduced with handgrad, then a modern recipe.

The teaching series trains on (Fashion-)MNIST with plain gradient descent, exactly as the
derivations present it:

1. softmax regression 784-10, full-batch gradient descent, lr 0.3, 100 iterations;
2. 784-50-10 with a sigmoid hidden layer, full-batch gradient descent, lr 0.3, 1000
   iterations (test accuracy recorded after 500 and after 1000);
3. the same network by minibatch SGD, batch 20, lr 0.3, 30,000 iterations;
4. a modern recipe from the same library: 784-512-256-10 ReLU with dropout 0.2, AdamW
   (lr 1e-3, weight decay 1e-4), cosine schedule, label smoothing 0.1, batch 128, inputs
   standardized, 20 epochs, compiled steps.

Every run records its test accuracy, its time and its training error (cross-entropy) per
iteration; one figure shows all the curves.

    python benchmarks/classic_experiments.py                     # Fashion-MNIST (~15 min)
    python benchmarks/classic_experiments.py --mnist-dir DIR     # also MNIST, from IDX files
    python benchmarks/classic_experiments.py --smoke             # seconds, for CI

Writes benchmarks/results/classic_experiments.json and classic_experiments.png.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, save, table

from handgrad import nn  # noqa: E402

LR = 0.3


def full_batch(sizes: list[int], activation: str, x: np.ndarray, y: np.ndarray,
               iterations: int, checkpoints: tuple[int, ...], evaluate) -> dict[str, Any]:
    """Full-batch gradient descent: every iteration sees all of x."""
    model = nn.MLP(sizes, activation=activation, seed=0)
    opt = nn.optim.SGD(model, lr=LR)
    step = nn.compile_step(model, nn.CrossEntropyLoss(), opt)
    curve, accuracy = [], {}
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        curve.append(step(x, y))
        if it in checkpoints:
            accuracy[it] = evaluate(model)
    return {"seconds": time.perf_counter() - start, "curve": curve, "accuracy": accuracy}


def minibatch(sizes: list[int], activation: str, x: np.ndarray, y: np.ndarray,
              iterations: int, batch: int, evaluate) -> dict[str, Any]:
    """Minibatch SGD: each iteration one batch, drawn by reshuffling every epoch."""
    model = nn.MLP(sizes, activation=activation, seed=0)
    step = nn.compile_step(model, nn.CrossEntropyLoss(), nn.optim.SGD(model, lr=LR))
    rng = np.random.default_rng(0)
    curve: list[float] = []
    order = np.empty(0, dtype=np.int64)
    start = time.perf_counter()
    for _ in range(iterations):
        if len(order) < batch:
            order = rng.permutation(len(x))
        idx, order = order[:batch], order[batch:]
        curve.append(step(x[idx], y[idx]))
    return {"seconds": time.perf_counter() - start, "curve": curve, "minibatch": True,
            "accuracy": {iterations: evaluate(model)}}


def modern(x: np.ndarray, y: np.ndarray, epochs: int, evaluate_std) -> dict[str, Any]:
    """A modern recipe with the same library (see the module docstring)."""
    mean, std = x.mean(axis=0), x.std(axis=0) + 0.1     # +0.1: empty border pixels stay tame
    xs = (x - mean) / std
    model = nn.MLP([x.shape[1], 512, 256, 10], activation="relu", dropout=0.2, seed=0)
    opt = nn.optim.AdamW(model, lr=1e-3, weight_decay=1e-4)
    curve: list[float] = []
    start = time.perf_counter()
    history = nn.fit(model, nn.CrossEntropyLoss(label_smoothing=0.1), opt, (xs, y),
                     epochs=epochs, batch_size=128, scheduler=nn.optim.CosineAnnealingLR(opt, epochs),
                     progress=False, compile=True)
    curve = history.steps
    return {"seconds": time.perf_counter() - start, "curve": curve, "minibatch": True,
            "accuracy": {len(curve): evaluate_std(model, mean, std)}}


def run_dataset(name: str, data_dir: str | None, smoke: bool) -> list[dict[str, Any]]:
    n = 2000 if smoke else None
    splits = nn.load_dataset(name, data_dir=data_dir, n=n, val_fraction=0)
    x = splits.x_train.reshape(len(splits.x_train), -1).astype(np.float32)
    y = splits.y_train.astype(np.int64)
    xt = splits.x_test.reshape(len(splits.x_test), -1).astype(np.float32)
    yt = splits.y_test.astype(np.int64)

    def evaluate(model):
        return nn.accuracy(nn.predict(model, xt), yt)

    def evaluate_std(model, mean, std):
        return nn.accuracy(nn.predict(model, (xt - mean) / std), yt)

    scale = 100 if smoke else 1                              # smoke: 1/100 of the iterations
    runs = []
    r = full_batch([784, 10], "identity", x, y, max(1, 100 // scale), (max(1, 100 // scale),), evaluate)
    runs.append({"run": "softmax regression 784-10, full batch, lr 0.3", **r})
    its = max(2, 1000 // scale)
    r = full_batch([784, 50, 10], "sigmoid", x, y, its, (its // 2, its), evaluate)
    runs.append({"run": "784-50-10 sigmoid, full batch, lr 0.3", **r})
    r = minibatch([784, 50, 10], "sigmoid", x, y, max(10, 30000 // scale), 20, evaluate)
    runs.append({"run": "784-50-10 sigmoid, minibatch SGD batch 20, lr 0.3", **r})
    r = modern(x, y, 1 if smoke else 20, evaluate_std)
    runs.append({"run": "modern: 784-512-256-10 ReLU, dropout, AdamW, cosine, label smoothing "
                        "0.1, 20 epochs", **r})
    for run in runs:
        run["dataset"] = name
        run["source"] = str(splits.source)
    return runs


def plot(runs: list[dict[str, Any]], path: Path) -> Path | None:
    """One figure: the training error per iteration of every run (log iterations). The
    noisy minibatch curves are drawn as a running mean; full-batch curves as they are."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7.5 * len(datasets), 4.8), squeeze=False)
    for ax, name in zip(axes[0], datasets):
        for r in (r for r in runs if r["dataset"] == name):
            curve, stride = np.asarray(r["curve"]), r.get("curve_stride", 1)
            x = np.arange(len(curve)) * stride + 1
            label = r["run"]
            if r.get("minibatch") and len(curve) > 200:
                window = max(1, min(100, len(curve) // 20))
                c = np.concatenate([[0.0], np.cumsum(curve)])
                k = np.arange(1, len(curve) + 1)
                lo = np.maximum(k - window, 0)
                curve = (c[k] - c[lo]) / (k - lo)       # the mean of the last `window` points
                label += f" (mean of the last {window * stride})"
            ax.plot(x, curve, label=label, linewidth=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("iteration (one gradient step)")
        ax.set_ylabel("training error (cross-entropy)")
        ax.set_title(f"{name}: the classic experiments")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a tiny subset, for CI")
    p.add_argument("--mnist-dir", help="directory with the MNIST IDX files (also run MNIST)")
    p.add_argument("--data-dir", help="directory with the Fashion-MNIST IDX files")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/...)")
    p.add_argument("--replot", type=Path, metavar="JSON",
                   help="only redraw the figure from a results file")
    args = p.parse_args()
    if args.replot is not None:
        import json
        runs = json.loads(args.replot.read_text())["runs"]
        print(plot(runs, args.replot.with_suffix(".png")))
        return
    runs = run_dataset("fashion-mnist", args.data_dir, args.smoke)
    if args.mnist_dir:
        runs += run_dataset("mnist", args.mnist_dir, args.smoke)
    rows = []
    for r in runs:
        for it, acc in sorted(r["accuracy"].items()):
            rows.append({"dataset": r["dataset"], "run": r["run"], "iterations": it,
                         "test accuracy": acc, "seconds (whole run)": r["seconds"],
                         "training error, last 100 iterations": float(np.mean(r["curve"][-100:]))})
    print(table(rows, ["dataset", "run", "iterations", "test accuracy", "seconds (whole run)",
                       "training error, last 100 iterations"]))
    out = args.out or RESULTS / "classic_experiments.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    png = plot(runs, out.with_suffix(".png"))
    for r in runs:       # the curves at most 2,000 points each in the JSON
        stride = max(1, len(r["curve"]) // 2000)
        r["curve"] = [float(v) for v in r["curve"][::stride]]
        r["curve_stride"] = stride
        r["accuracy"] = {str(k): v for k, v in r["accuracy"].items()}
    path = save("classic_experiments", {"rows": rows, "runs": runs}, out)
    print(f"wrote {path}" + (f" and {png}" if png else ""))


if __name__ == "__main__":
    main()
