"""Training throughput: Fashion-MNIST, MLP 784-256-128-10 (ReLU), batch 128, SGD momentum
0.9, float32. One epoch per variant, interleaved, several rounds; medians and ratios. Then
5 epochs of each with the test accuracy.

    python benchmarks/train_throughput.py            # the full run (a few minutes)
    python benchmarks/train_throughput.py --smoke    # seconds, for CI

All variants start from the same weights and see the batches in the same order, so they
compute the same thing: handgrad and the numpy MLP agree bit for bit while every batch has
128 examples (tests/test_benchmarks.py checks it); the last, smaller batch of an epoch
(60000 = 468 x 128 + 96) divides by 96, which the two round differently, so after it the
trajectories drift apart by float32 rounding. The table shows each final batch loss.
"""
from __future__ import annotations

import time

import numpy as np

from common import fashion_mnist, interleaved, median, parser, save, table, torch_or_none

import engine  # noqa: E402
import nn  # noqa: E402
from numpy_mlp import NumpyMLP  # noqa: E402

SIZES = [784, 256, 128, 10]
LR, MOMENTUM, BATCH = 0.05, 0.9, 128


def batch_order(n: int, epoch: int) -> list[np.ndarray]:
    perm = np.random.default_rng(epoch).permutation(n)
    return [perm[i:i + BATCH] for i in range(0, n, BATCH)]


def handgrad_model(reference: NumpyMLP) -> tuple[nn.MLP, nn.optim.SGD]:
    model = nn.MLP(SIZES, activation="relu", seed=0)
    for layer, W, b in zip(model.layers[::2], reference.W, reference.b):
        layer.weight.data[...] = W
        layer.bias.data[...] = b
    return model, nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)


def handgrad_epoch(model: nn.MLP, opt: nn.optim.SGD, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss_fn = nn.CrossEntropyLoss()
    loss = None
    for idx in batch_order(len(x), epoch):
        loss = loss_fn(model(engine.Tensor(x[idx], copy=False)), y[idx])   # a fresh batch: no copy
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.item())


def numpy_epoch(model: NumpyMLP, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss = 0.0
    for idx in batch_order(len(x), epoch):
        loss = model.step(x[idx], y[idx], LR, MOMENTUM)
    return loss


def torch_setup(torch, reference: NumpyMLP):
    layers = []
    for i, (W, b) in enumerate(zip(reference.W, reference.b)):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W.T.copy()))
            lin.bias.copy_(torch.from_numpy(b.copy()))
        layers.append(lin)
        if i < len(reference.W) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers)
    return model, torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def torch_epoch(torch, model, opt, x: np.ndarray, y: np.ndarray, epoch: int) -> float:
    loss_fn = torch.nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    loss = None
    for idx in batch_order(len(x), epoch):
        i = torch.from_numpy(idx)
        loss = loss_fn(model(xt[i]), yt[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.item())


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    n = 2048 if args.smoke else None
    repeats = 1 if args.smoke else args.repeats
    x, y, xt, yt, source = fashion_mnist(n, args.smoke)
    y, yt = y.astype(np.int64), yt.astype(np.int64)
    torch = torch_or_none(args.no_torch)

    ref = NumpyMLP(SIZES, np.random.default_rng(0))
    hg_model, hg_opt = handgrad_model(ref)
    np_model = NumpyMLP(SIZES, np.random.default_rng(0))
    last: dict[str, float] = {}
    counter = {"epoch": 0}

    def run(name, fn):
        def call():
            last[name] = fn(counter["epoch"])
        return call

    variants = {
        "numpy by hand": run("numpy by hand", lambda e: numpy_epoch(np_model, x, y, e)),
        "handgrad": run("handgrad", lambda e: handgrad_epoch(hg_model, hg_opt, x, y, e)),
    }
    if torch is not None:
        t_model, t_opt = torch_setup(torch, ref)
        variants["pytorch eager"] = run("pytorch eager", lambda e: torch_epoch(torch, t_model, t_opt, x, y, e))

    # Each round trains every variant for the same epoch (same batches), so the three
    # models follow the same trajectory while being timed.
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(repeats):
        counter["epoch"] = r
        for k, v in interleaved(variants, 1).items():
            times[k] += v
    base = median(times["numpy by hand"])
    rows = [{"variant": k, "epoch s (median)": median(v), "min s": min(v),
             "vs numpy": median(v) / base, "final batch loss": last[k]} for k, v in times.items()]

    # Accuracy after 5 epochs (1 in smoke mode), each variant trained from the same start.
    epochs = 1 if args.smoke else 5
    accuracy = {}
    ref = NumpyMLP(SIZES, np.random.default_rng(1))
    m, o = handgrad_model(ref)
    npm = NumpyMLP(SIZES, np.random.default_rng(1))
    start = time.perf_counter()
    for e in range(epochs):
        handgrad_epoch(m, o, x, y, 100 + e)
    accuracy["handgrad"] = (nn.accuracy(nn.predict(m, xt), yt), time.perf_counter() - start)
    start = time.perf_counter()
    for e in range(epochs):
        numpy_epoch(npm, x, y, 100 + e)
    accuracy["numpy by hand"] = (float(np.mean(npm.predict(xt) == yt)), time.perf_counter() - start)
    if torch is not None:
        tm, to = torch_setup(torch, ref)
        start = time.perf_counter()
        for e in range(epochs):
            torch_epoch(torch, tm, to, x, y, 100 + e)
        with torch.no_grad():
            pred = tm(torch.from_numpy(xt)).argmax(1).numpy()
        accuracy["pytorch eager"] = (float(np.mean(pred == yt)), time.perf_counter() - start)
    for row in rows:
        row[f"test acc ({epochs} ep)"], row[f"{epochs} ep s"] = accuracy[row["variant"]]

    print(f"Training throughput: {source}, {len(x)} train / {len(xt)} test, MLP {SIZES}, "
          f"batch {BATCH}, SGD momentum {MOMENTUM}, float32, {repeats} interleaved rounds")
    if torch is None:
        print("(PyTorch not installed: its row is skipped)")
    columns = ["variant", "epoch s (median)", "min s", "vs numpy", "final batch loss",
               f"test acc ({epochs} ep)", f"{epochs} ep s"]
    print(table(rows, columns))
    path = save("train_throughput", {"data": source, "n_train": len(x), "sizes": SIZES,
                                     "batch": BATCH, "repeats": repeats, "rows": rows,
                                     "times": times}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
