"""`handgrad train` on a busy machine: BLAS threads chosen by the work against numpy's default.

The default `handgrad train` (spirals, an MLP 2-64-64-3, full batch) runs as a command, as
a user runs it, with ``--threads auto`` (the default: one BLAS thread for a model this
small, nn/threads.py) and ``--threads none`` (OpenBLAS's own count: one per core). Each
variant runs ``--repeats`` times, interleaved, twice: on the machine as it is, and with
``--load`` processes spinning on the CPU besides (a shared machine, or a notebook running
something else). Wall-clock seconds per run; medians and minima.

    python benchmarks/busy_machine.py [--repeats 5] [--load 2] [--smoke]
"""
from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from typing import Any

from common import median, parser, save, table


def spin(stop: Any) -> None:
    """Keep one core busy until ``stop`` is set."""
    x = 0
    while not stop.is_set():
        for _ in range(10_000):
            x += 1


def run_train(threads: str, epochs: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "handgrad", "train", "--quiet", "--epochs", str(epochs),
                    "--threads", threads], check=True, capture_output=True)
    return time.perf_counter() - start


def measure(repeats: int, epochs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"auto": [], "none": []}
    for _ in range(repeats):
        for threads in times:
            times[threads].append(run_train(threads, epochs))
    return times


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--load", type=int, default=2, help="processes spinning besides (default 2)")
    args = p.parse_args()
    repeats = 1 if args.smoke else args.repeats
    epochs = 5 if args.smoke else 300                 # 300: the default run's own epochs
    rows = []
    for label, load in (("as it is", 0), (f"{args.load} spinning processes", args.load)):
        stop = multiprocessing.Event()
        spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(load)]
        for s in spinners:
            s.start()
        try:
            times = measure(repeats, epochs)
        finally:
            stop.set()
            for s in spinners:
                s.join()
        for threads, ts in times.items():
            rows.append({"machine": label, "--threads": threads, "median s": median(ts), "min s": min(ts),
                         "runs": len(ts)})
    print(f"handgrad train (spirals, {epochs} epochs), {repeats} interleaved runs per variant")
    print(table(rows, ["machine", "--threads", "median s", "min s", "runs"]))
    path = save("busy_machine", {"epochs": epochs, "repeats": repeats, "load": args.load, "rows": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
