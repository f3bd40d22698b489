"""Peak memory of one training step (784-256-128-10, batch 128, float32): numpy by hand,
handgrad eager and compiled, measured with tracemalloc (numpy reports its array
allocations to it). The peak is taken over a step after a warm-up step, so optimizer
buffers already exist in all three.

    python benchmarks/memory.py [--smoke]
"""
from __future__ import annotations

import tracemalloc

import numpy as np
from common import parser, save, table
from numpy_mlp import NumpyMLP  # noqa: E402

from handgrad import (
    engine,  # noqa: E402
    nn,  # noqa: E402
)

SIZES = [784, 256, 128, 10]


def peak_bytes(step, repeats: int = 3) -> int:
    step()                                   # warm-up: optimizer state allocated
    peaks = []
    for _ in range(repeats):
        tracemalloc.start()
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        step()
        peaks.append(tracemalloc.get_traced_memory()[1] - base)
        tracemalloc.stop()
    return min(peaks)


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    batch = 32 if args.smoke else 128
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    ref = NumpyMLP(SIZES, np.random.default_rng(0))
    model = nn.MLP(SIZES, seed=0)
    opt = nn.optim.SGD(model, lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def handgrad_step():
        loss = loss_fn(model(engine.Tensor(x, copy=False)), y)   # share, as numpy by hand does
        opt.zero_grad()
        loss.backward()
        opt.step()

    compiled_model = nn.MLP(SIZES, seed=0)
    compiled_opt = nn.optim.SGD(compiled_model, lr=0.01, momentum=0.9)
    step = nn.compile_step(compiled_model, loss_fn, compiled_opt, check_finite=False)

    rows = [{"variant": "numpy by hand", "peak KiB": peak_bytes(lambda: ref.step(x, y, 0.01, 0.9)) / 1024}]
    eager_peak = peak_bytes(handgrad_step)
    rows.append({"variant": "handgrad eager", "peak KiB": eager_peak / 1024})
    compiled_peak = peak_bytes(lambda: step(x, y))
    rows.append({"variant": "handgrad compiled",
                 "peak KiB": compiled_peak / 1024})
    for r in rows:
        r["vs numpy"] = r["peak KiB"] / rows[0]["peak KiB"]
    params_kib = sum(p.data.nbytes for p in model.parameters()) / 1024
    acts_kib = sum(batch * n * 4 for n in SIZES) / 1024
    print(f"Peak memory allocated during one step: MLP {SIZES}, batch {batch}, float32 "
          f"(parameters {params_kib:.0f} KiB, activations {acts_kib:.0f} KiB)")
    print(table(rows, ["variant", "peak KiB", "vs numpy"]))
    path = save("memory", {"sizes": SIZES, "batch": batch, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
