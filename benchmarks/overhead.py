"""Per-step overhead: a tiny MLP 784-32-10 with batch 32, where Python work per graph node
dominates the arithmetic; steps per second for numpy by hand, a bare graph engine with no
checks (benchmarks/bare_engine.py: the floor for any graph engine in Python), handgrad
eager and compiled, PyTorch eager and torch.compile, JAX jit (the last three when
installed). Every variant is compared with numpy by hand at the same BLAS thread count:
one thread (what ``fit`` picks for this model, and PyTorch limited to one), and, for numpy,
the README's loop and ``fit``, also OpenBLAS's default count ("left alone": two threads
here, which speed numpy up on an idle machine and slow it down on a busy one, so a ratio
against it swings with the load). Then the cost of graph nodes: per op, one forward +
backward of a single node (which includes the fixed cost of a backward() call), and the
marginal cost of one node in a chain of 100, next to numpy doing the same arithmetic
without a graph.

    python benchmarks/overhead.py [--smoke]
"""
from __future__ import annotations

import time
import timeit
from typing import Any, Callable

import numpy as np
from bare_engine import BareMLP
from common import median, parser, print_notes, save, table, torch_or_none
from numpy_mlp import NumpyMLP  # noqa: E402

from handgrad import (
    engine,  # noqa: E402
    nn,  # noqa: E402
)
from handgrad.nn.threads import blas_threads

ONE = 1              # a variant's BLAS threads: one, or None for OpenBLAS's default count
LEFT_ALONE = None

SIZES = [784, 32, 10]
BATCH = 32
LR, MOMENTUM = 0.01, 0.9


def tiny_variants(x: np.ndarray, y: np.ndarray, steps: int, torch: Any, jax: Any,
                  notes: list[str]) -> dict[str, tuple[Callable[[], float], int | None]]:
    """Each variant trains a fresh model for ``steps`` steps and returns the seconds taken;
    each comes with the BLAS thread count it runs on (``ONE`` or ``LEFT_ALONE``).
    Longer runs on one fixed batch would let the momentum of dead units decay into
    subnormal numbers, whose slow arithmetic (the same in every variant) swamps the
    per-step overhead this benchmark measures."""
    loss_fn = nn.CrossEntropyLoss()
    xt = engine.Tensor(x)

    def numpy_steps():
        ref = NumpyMLP(SIZES, np.random.default_rng(0))
        start = time.perf_counter()
        for _ in range(steps):
            ref.step(x, y, LR, MOMENTUM)
        return time.perf_counter() - start

    def bare_engine_steps():
        """The floor for a graph engine in Python (benchmarks/bare_engine.py): the same
        arithmetic recorded as graph nodes and walked back, with no check of any kind."""
        ref = BareMLP(SIZES, np.random.default_rng(0))
        start = time.perf_counter()
        for _ in range(steps):
            ref.step(x, y, LR, MOMENTUM)
        return time.perf_counter() - start

    def handgrad_steps():
        model = nn.MLP(SIZES, seed=0)
        opt = nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(xt), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def readme_loop_steps():
        """A loop wrapping the batch in a Tensor at every step (a copy); the README's loop
        wraps it once, as ``handgrad_steps`` does."""
        model = nn.MLP(SIZES, seed=0)
        opt = nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)
        start = time.perf_counter()
        for _ in range(steps):
            loss = loss_fn(model(engine.Tensor(x)), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.perf_counter() - start

    def fit_steps(threads: Any = "auto") -> float:
        """nn.fit over ``steps`` batches in one epoch: its checks (loss, gradients, update
        finite) and bookkeeping included; each batch a fresh copy of its rows of the
        (steps x 32, 784) array, which fit adopts. ``threads="auto"`` (fit's default) runs
        this model on one BLAS thread; None leaves the count as it finds it."""
        model = nn.MLP(SIZES, seed=0)
        opt = nn.optim.SGD(model, lr=LR, momentum=MOMENTUM)
        start = time.perf_counter()
        nn.fit(model, loss_fn, opt, (xs, ys), epochs=1, batch_size=BATCH, shuffle=False,
               verbose=0, threads=threads)
        return time.perf_counter() - start

    def numpy_fresh_batches():
        """numpy by hand fed as fit is: each step a fresh copy of the next 32 rows of the
        same (steps x 32, 784) array (9.6 MB at 300 steps: it does not stay in cache), rather
        than one batch that does."""
        ref = NumpyMLP(SIZES, np.random.default_rng(0))
        start = time.perf_counter()
        for i in range(0, steps * BATCH, BATCH):
            ref.step(xs[i:i + BATCH].copy(), ys[i:i + BATCH], LR, MOMENTUM)
        return time.perf_counter() - start

    xs, ys = np.tile(x, (steps, 1)), np.tile(y, steps)

    def compiled_steps():
        model = nn.MLP(SIZES, seed=0)
        step = nn.compile_step(model, loss_fn, nn.optim.SGD(model, lr=LR, momentum=MOMENTUM),
                               check_finite=False)       # numpy by hand does not check either
        start = time.perf_counter()             # the capture (first step) is included
        for _ in range(steps):
            step(x, y)
        return time.perf_counter() - start

    variants: dict[str, tuple[Callable[[], float], int | None]] = {
        "numpy by hand": (numpy_steps, ONE),
        "bare graph engine, no checks (the floor)": (bare_engine_steps, ONE),
        "handgrad eager": (handgrad_steps, ONE),
        "handgrad eager, Tensor(x) each step": (readme_loop_steps, ONE),
        "handgrad fit": (fit_steps, ONE), "handgrad compiled": (compiled_steps, ONE),
        "numpy by hand, fit's fresh batches": (numpy_fresh_batches, ONE),
        "numpy by hand, BLAS threads left alone": (numpy_steps, LEFT_ALONE),
        "handgrad eager, BLAS threads left alone": (handgrad_steps, LEFT_ALONE),
        "handgrad fit, BLAS threads left alone": (lambda: fit_steps(None), LEFT_ALONE)}
    if torch is not None:
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        tl = torch.nn.CrossEntropyLoss()

        def torch_model():
            torch.manual_seed(0)
            tm = torch.nn.Sequential(torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
            return tm, torch.optim.SGD(tm.parameters(), lr=LR, momentum=MOMENTUM)

        def torch_steps(compiled: bool = False):
            tm, to = torch_model()
            forward = torch.compile(tm) if compiled else tm
            threads = torch.get_num_threads()
            torch.set_num_threads(1)            # as numpy by hand: one thread
            try:
                start = time.perf_counter()
                for _ in range(steps):
                    loss = tl(forward(tx), ty)
                    to.zero_grad()
                    loss.backward()
                    to.step()
                return time.perf_counter() - start
            finally:
                torch.set_num_threads(threads)

        variants["pytorch eager"] = (torch_steps, ONE)
        try:
            torch_steps(compiled=True)          # compiles once (cached for later rounds)
            variants["torch.compile"] = (lambda: torch_steps(compiled=True), ONE)
        except Exception as e:  # noqa: BLE001 - no C compiler, unsupported platform, ...
            notes.append(f"torch.compile unavailable here ({type(e).__name__})")
    if jax is not None:
        jnp = jax.numpy

        def jax_loss(params, xb, yb):
            (W1, b1), (W2, b2) = params
            logits = jax.nn.relu(xb @ W1 + b1) @ W2 + b2
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), yb[:, None], axis=1))

        @jax.jit
        def jax_step(params, vel, xb, yb):
            grads = jax.grad(jax_loss)(params, xb, yb)
            vel = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, vel, grads)
            return jax.tree_util.tree_map(lambda p, v: p - LR * v, params, vel), vel

        def jax_steps():
            ref = NumpyMLP(SIZES, np.random.default_rng(0))
            params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in zip(ref.W, ref.b)]
            vel = jax.tree_util.tree_map(jnp.zeros_like, params)
            xj, yj = jnp.asarray(x), jnp.asarray(y)
            start = time.perf_counter()
            for _ in range(steps):
                params, vel = jax_step(params, vel, xj, yj)
            jax.block_until_ready(params)
            return time.perf_counter() - start

        jax_steps()                              # compiles once
        variants["jax jit"] = (jax_steps, ONE)
        notes.append("jax jit on XLA's own threads, against numpy on one")
    return variants


def tiny_rows(variants: dict[str, tuple[Callable[[], float], int | None]],
              times: dict[str, list[float]], steps: int) -> list[dict[str, Any]]:
    """One row per variant: medians, and the ratio of its steps/s to numpy by hand's on the
    same BLAS thread count."""
    numpy_at = {ONE: "numpy by hand", LEFT_ALONE: "numpy by hand, BLAS threads left alone"}
    rows = []
    for name, v in times.items():
        threads = variants[name][1]
        base = median(times[numpy_at[threads]])
        rows.append({"variant": name, "BLAS threads": "one" if threads == ONE else "left alone",
                     "steps/s": steps / median(v), "µs/step": median(v) / steps * 1e6,
                     "vs numpy": base / median(v)})
    return rows


def chain_cost(number: int) -> list[dict[str, Any]]:
    """The marginal cost of a node: a chain of 100 tanh nodes on a (4, 4) array, forward and
    backward, per node; numpy doing the same arithmetic (tanh, then g * (1 - y^2)) beside."""
    n = 100
    a = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    x = engine.Tensor(a, requires_grad=True)

    def chain():
        y = x
        for _ in range(n):
            y = y.tanh()
        y.sum().backward()
        x.grad = None

    def numpy_chain():
        ys, y = [], a
        for _ in range(n):
            y = np.tanh(y)
            ys.append(y)
        g = np.ones_like(y)
        for y in reversed(ys):
            g = g * (1 - y * y)

    t = min(timeit.repeat(chain, number=number, repeat=9)) / number / n * 1e6
    t_np = min(timeit.repeat(numpy_chain, number=number, repeat=9)) / number / n * 1e6
    return [{"op": "tanh, one node of a chain of 100", "µs per forward+backward": t,
             "numpy arithmetic alone": t_np, "graph overhead": t - t_np}]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    steps = 50 if args.smoke else 300
    rounds = 1 if args.smoke else 3 * args.repeats
    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 784), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    torch = torch_or_none(args.no_torch)
    try:
        import jax
        jax.config.update("jax_platforms", "cpu")
    except ImportError:
        jax = None
    notes: list[str] = []
    variants = tiny_variants(x, y, steps, torch, jax, notes)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(rounds):                     # interleaved: drift hits every variant alike
        for name, (run, threads) in variants.items():
            with blas_threads(threads):
                times[name].append(run())
    rows = tiny_rows(variants, times, steps)
    print(f"Tiny MLP {SIZES}, batch {BATCH}: {rounds} interleaved rounds of {steps} steps, "
          f"fresh models each round")
    print_notes(notes, torch, jax)
    print(table(rows, ["variant", "BLAS threads", "steps/s", "µs/step", "vs numpy"]))

    # Per-op cost: one forward + backward of a single node on a (32, 32) float32 array.
    a = engine.Tensor(rng.standard_normal((32, 32)).astype(np.float32), requires_grad=True)
    b = engine.Tensor(rng.standard_normal((32, 32)).astype(np.float32), requires_grad=True)
    ops = {"add": lambda: a + b, "mul": lambda: a * b, "exp": lambda: a.exp(),
           "tanh": lambda: a.tanh(), "relu": lambda: a.relu(), "sigmoid": lambda: a.sigmoid(),
           "matmul": lambda: a @ b, "sum(axis=0)": lambda: a.sum(axis=0)}
    number = 200 if args.smoke else 5000
    op_rows = []
    for name, make in ops.items():
        grad = np.ones_like(make().numpy())

        def fwd_bwd(make=make, grad=grad):
            make().backward(grad)

        t = min(timeit.repeat(fwd_bwd, number=number, repeat=9)) / number
        op_rows.append({"op": f"{name}, a single node", "µs per forward+backward": t * 1e6})
    t_np = min(timeit.repeat(lambda: a.numpy() + b.numpy(), number=number, repeat=9)) / number
    op_rows.append({"op": "(numpy a + b, no graph)", "µs per forward+backward": t_np * 1e6})
    op_rows += chain_cost(20 if args.smoke else 500)
    print(table(op_rows, ["op", "µs per forward+backward", "numpy arithmetic alone",
                          "graph overhead"]))
    path = save("overhead", {"sizes": SIZES, "batch": BATCH, "steps": steps, "rounds": rounds,
                             "rows": rows, "ops": op_rows, "times": times, "notes": notes},
                args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
