"""Scaling: time per epoch-equivalent as the batch size (16 to 1024) and the width (64 to
2048) grow, handgrad vs numpy by hand, and the GFLOP/s each achieves against this
machine's measured numpy matmul peak.

    python benchmarks/scaling.py [--smoke]
"""
from __future__ import annotations

import time

import numpy as np
from common import interleaved, median, parser, save, table
from numpy_mlp import NumpyMLP  # noqa: E402

from handgrad import (
    engine,  # noqa: E402
    nn,  # noqa: E402
)


def matmul_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def training_flops(sizes: list[int], n: int) -> float:
    """Multiply-adds of forward (1x) and backward (2x: delta and weight gradient) per example."""
    return 3 * 2 * n * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def measure(sizes: list[int], batch: int, n: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    x = rng.random((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], n)
    ref = NumpyMLP(sizes, np.random.default_rng(0))
    model = nn.MLP(sizes, seed=0)
    opt = nn.optim.SGD(model, lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def hg():
        for i in range(0, n, batch):
            loss = loss_fn(model(engine.Tensor(x[i:i + batch], copy=False)), y[i:i + batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    def by_hand():
        for i in range(0, n, batch):
            ref.step(x[i:i + batch], y[i:i + batch], 0.01, 0.9)

    t = interleaved({"numpy": by_hand, "handgrad": hg}, repeats)
    flops = training_flops(sizes, n)
    return {"numpy s": median(t["numpy"]), "handgrad s": median(t["handgrad"]),
            "ratio": median(t["handgrad"]) / median(t["numpy"]),
            "handgrad GFLOP/s": flops / median(t["handgrad"]) / 1e9,
            "numpy GFLOP/s": flops / median(t["numpy"]) / 1e9}


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    repeats = 1 if args.smoke else 3
    n = 1024 if args.smoke else 8192
    batches = [16, 128] if args.smoke else [16, 32, 64, 128, 256, 512, 1024]
    widths = [64, 256] if args.smoke else [64, 128, 256, 512, 1024, 2048]
    peak = matmul_peak_gflops(256 if args.smoke else 1024)
    print(f"numpy float32 matmul peak on this machine: {peak:.1f} GFLOP/s; {n} examples per pass")

    batch_rows = []
    for b in batches:
        r = measure([784, 256, 128, 10], b, n, repeats)
        batch_rows.append({"batch": b, **r, "handgrad % of peak": 100 * r["handgrad GFLOP/s"] / peak})
    print("MLP 784-256-128-10, batch size sweep")
    cols = ["numpy s", "handgrad s", "ratio", "numpy GFLOP/s", "handgrad GFLOP/s", "handgrad % of peak"]
    print(table(batch_rows, ["batch", *cols]))

    width_rows = []
    for w in widths:
        r = measure([784, w, w, 10], 128, n // 2 if w >= 1024 else n, repeats)
        width_rows.append({"width": w, **r, "handgrad % of peak": 100 * r["handgrad GFLOP/s"] / peak})
    print("MLP 784-w-w-10, batch 128, width sweep")
    print(table(width_rows, ["width", *cols]))
    path = save("scaling", {"peak_gflops": peak, "n": n, "batch_sweep": batch_rows,
                            "width_sweep": width_rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
