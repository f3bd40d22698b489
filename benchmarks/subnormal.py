"""Subnormal moments and BLAS threads: the two speed seams of the optimizers and fit.

1. Subnormal arithmetic. A momentum buffer of a unit that gets no gradient decays by its
   factor every step into the subnormal range, where x86 arithmetic takes a slow microcode
   path. Times ``buf *= 0.9`` over a 784x256 buffer with 2.3% subnormal values (the share
   measured on Fashion-MNIST after a few epochs) against the same buffer without them, then
   one SGD-momentum and one Adam step on such a buffer through the plain lines and through
   the subnormal-exact path (forced on, whatever ``subnormal.slow_here()`` says about this
   CPU, which the JSON records). Interleaved, medians of ``--repeats`` rounds.

2. BLAS threads. Times ``a @ b`` products of the sizes small and mid-size MLPs make, on
   one and on two threads (threadpoolctl), to place ``threads.SMALL_WORK``.

    python benchmarks/subnormal.py [--repeats 7] [--smoke]
"""
from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np
from common import interleaved, median, parser, save, table

from handgrad import nn
from handgrad.nn import subnormal, threads

SHAPE = (784, 256)
SUBNORMAL_SHARE = 0.023


def buffer_with_subnormals(rng: np.random.Generator, shape: tuple[int, ...], share: float) -> np.ndarray:
    buf = (rng.standard_normal(shape) * 1e-2).astype(np.float32)
    dead = rng.random(shape) < share
    buf[dead] = np.float32(1e-40)                     # subnormal: below 2^-126 ~ 1.2e-38
    return buf


def per_call(fn: Callable[[], Any], calls: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(calls):
            fn()
    return run


def multiply_rows(shape: tuple[int, ...], calls: int, repeats: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    with_sub = buffer_with_subnormals(rng, shape, SUBNORMAL_SHARE)
    without = (rng.standard_normal(shape) * 1e-2).astype(np.float32)
    # multiply by 1: the values (and the subnormals) stay as they are across calls
    times = interleaved({"normal values": per_call(lambda: np.multiply(without, np.float32(1.0), out=without), calls),
                         f"{SUBNORMAL_SHARE:.1%} subnormal": per_call(
                             lambda: np.multiply(with_sub, np.float32(1.0), out=with_sub), calls)},
                        repeats)
    return [{"case": f"buf *= c over {shape[0]}x{shape[1]}", "variant": k,
             "us_per_call": median(v) / calls * 1e6} for k, v in times.items()]


def optimizer_rows(shape: tuple[int, ...], calls: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    cases = [("SGD momentum 0.9", lambda ps, e: nn.optim.SGD(ps, lr=0.01, momentum=0.9, exact_subnormals=e),
              "momentum"),
             ("Adam", lambda ps, e: nn.optim.Adam(ps, lr=1e-3, exact_subnormals=e), "m")]
    for name, make, moment in cases:
        variants = {}
        for exact in (True, False):
            # exact=True forces the subnormal-exact path; exact=False runs the plain lines
            rng = np.random.default_rng(1)
            p = nn.Parameter(rng.standard_normal(shape).astype(np.float32))
            opt = make([p], exact)
            p.grad = np.zeros(shape, dtype=np.float32)
            opt.step()                                       # creates the buffers
            state = opt.state[id(p)]
            state[moment][...] = buffer_with_subnormals(rng, shape, SUBNORMAL_SHARE)
            dead = state[moment] == np.float32(1e-40)
            grad = (rng.standard_normal(shape) * 1e-2).astype(np.float32)
            grad[dead] = 0.0                                 # dead units stay dead

            def step(p: Any = p, opt: Any = opt, grad: np.ndarray = grad) -> None:
                p.grad = grad
                opt.step()
            for _ in range(40):                               # the hints' first rescan
                step()
            variants["subnormal-exact path" if exact else "plain lines"] = per_call(step, calls)
        probe = subnormal.slow_here
        subnormal.slow_here = lambda: True         # type: ignore[assignment]  # force the path
        try:
            times = interleaved(variants, repeats)
        finally:
            subnormal.slow_here = probe            # type: ignore[assignment]
        rows += [{"case": f"{name} step, {shape[0]}x{shape[1]}", "variant": k,
                  "us_per_call": median(v) / calls * 1e6} for k, v in times.items()]
    return rows


def thread_rows(repeats: int) -> list[dict[str, Any]]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return []
    rng = np.random.default_rng(2)
    rows = []
    for n, k, m in [(4, 2, 8), (32, 32, 32), (64, 64, 64), (32, 784, 16), (64, 128, 64), (64, 784, 32),
                    (128, 784, 128)]:
        a, b = rng.standard_normal((n, k)).astype(np.float32), rng.standard_normal((k, m)).astype(np.float32)
        calls = max(1, int(2e7 / (n * k * m)))
        result: dict[str, Any] = {"product": f"({n}, {k}) @ ({k}, {m})", "multiply_adds": n * k * m}
        for count in (1, 2):
            best = []
            for _ in range(repeats):
                with threadpool_limits(count, user_api="blas"):
                    start = time.perf_counter()
                    for _ in range(calls):
                        a @ b
                    best.append((time.perf_counter() - start) / calls)
            result[f"us_{count}_thread"] = min(best) * 1e6
        result["one_thread_is_chosen"] = n * k * m < threads.SMALL_WORK
        rows.append(result)
    return rows


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    shape = (64, 32) if args.smoke else SHAPE
    repeats = 1 if args.smoke else args.repeats
    calls = 2 if args.smoke else 50
    rows = multiply_rows(shape, calls, repeats) + optimizer_rows(shape, calls, repeats)
    print(table(rows, ["case", "variant", "us_per_call"]))
    thread_table = thread_rows(1 if args.smoke else 5)
    if thread_table:
        print(table(thread_table, ["product", "multiply_adds", "us_1_thread", "us_2_thread",
                                   "one_thread_is_chosen"]))
    slow = subnormal.slow_here()
    print(f"subnormal arithmetic slow on this CPU (the probe): {slow}")
    path = save("subnormal", {"repeats": repeats, "calls_per_round": calls, "subnormal_share": SUBNORMAL_SHARE,
                              "slow_here": slow,
                              "note": "medians of interleaved rounds (subnormal rows); minima (thread rows)",
                              "rows": rows, "blas_threads": thread_table}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
