"""Per-step overhead: a tiny MLP 784-32-10 with batch 32, where Python work per graph node
dominates the arithmetic; steps per second for handgrad, numpy by hand and PyTorch. Then a
per-op microbenchmark: microseconds per forward+backward node on small arrays.

    python benchmarks/overhead.py [--smoke]
"""
from __future__ import annotations

import time
import timeit

import numpy as np

from common import median, parser, save, table, torch_or_none

import engine  # noqa: E402
import nn  # noqa: E402
from numpy_mlp import NumpyMLP  # noqa: E402

SIZES = [784, 32, 10]
BATCH = 32


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    # Each round trains fresh models for STEPS steps. Longer runs on one fixed batch let the
    # momentum of dead units decay into subnormal numbers, whose slow arithmetic (the same
    # in every variant) would swamp the per-step overhead this benchmark measures.
    steps = 50 if args.smoke else 300
    rounds = 1 if args.smoke else 3 * args.repeats
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    torch = torch_or_none(args.no_torch)
    loss_fn = nn.CrossEntropyLoss()
    xt = engine.Tensor(x)

    def handgrad_steps():
        model = nn.MLP(SIZES, seed=0)
        opt = nn.optim.SGD(model, lr=0.01, momentum=0.9)
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(xt), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def numpy_steps():
        ref = NumpyMLP(SIZES, np.random.default_rng(0))
        start = time.perf_counter()
        for _ in range(steps):
            ref.step(x, y, 0.01, 0.9)
        return time.perf_counter() - start

    variants = {"numpy by hand": numpy_steps, "handgrad": handgrad_steps}
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        tl = torch.nn.CrossEntropyLoss()

        def torch_steps():
            torch.manual_seed(0)
            tm = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
            to = torch.optim.SGD(tm.parameters(), lr=0.01, momentum=0.9)
            start = time.perf_counter()
            for _ in range(steps):
                loss = tl(tm(tx), ty)
                to.zero_grad()
                loss.backward()
                to.step()
            return time.perf_counter() - start

        variants["pytorch eager"] = torch_steps
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):                     # interleaved: drift hits every variant alike
        for name, run in variants.items():
            times[name].append(run())
    base = steps / median(times["numpy by hand"])
    rows = [{"variant": k, "steps/s": steps / median(v), "vs numpy": (steps / median(v)) / base}
            for k, v in times.items()]
    print(f"Tiny MLP {SIZES}, batch {BATCH}: {rounds} interleaved rounds of {steps} steps, "
          f"fresh models each round")
    if torch is None:
        print("(PyTorch not installed: its row is skipped)")
    print(table(rows, ["variant", "steps/s", "vs numpy"]))

    # Per-op cost: one forward + backward of a single node on a (32, 32) float32 array.
    a = engine.Tensor(rng.standard_normal((32, 32)).astype(np.float32), requires_grad=True)
    b = engine.Tensor(rng.standard_normal((32, 32)).astype(np.float32), requires_grad=True)
    ops = {"add": lambda: a + b, "mul": lambda: a * b, "exp": lambda: a.exp(),
           "tanh": lambda: a.tanh(), "relu": lambda: a.relu(), "sigmoid": lambda: a.sigmoid(),
           "matmul": lambda: a @ b, "sum(axis=0)": lambda: a.sum(axis=0)}
    number = 200 if args.smoke else 5000
    op_rows = []
    for name, make in ops.items():
        grad = np.ones_like(make().data)

        def fwd_bwd():
            make().backward(grad)

        t = min(timeit.repeat(fwd_bwd, number=number, repeat=3)) / number
        op_rows.append({"op": name, "µs per forward+backward": t * 1e6})
    t_np = min(timeit.repeat(lambda: a.data + b.data, number=number, repeat=3)) / number
    op_rows.append({"op": "(numpy a + b, no graph)", "µs per forward+backward": t_np * 1e6})
    print(table(op_rows, ["op", "µs per forward+backward"]))
    path = save("overhead", {"sizes": SIZES, "batch": BATCH, "steps": steps, "rounds": rounds,
                             "rows": rows, "ops": op_rows, "times": times}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
