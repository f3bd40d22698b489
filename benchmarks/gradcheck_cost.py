"""Cost of correctness: gradcheck in full vs directional mode as the input grows, and the
wall time of the whole per-op property suite.

    python benchmarks/gradcheck_cost.py [--smoke]
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
from common import ROOT, parser, save, table

from handgrad import engine  # noqa: E402


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    sizes = [4, 16] if args.smoke else [4, 16, 64, 256, 1024]
    rng = np.random.default_rng(0)

    def fn(a, b):
        return (a @ b).tanh().sum(axis=0)

    rows = []
    for n in sizes:
        a = rng.standard_normal((n, 8))
        b = rng.standard_normal((8, 4))
        row = {"input elements": a.size + b.size}
        for mode in ("full", "directional"):
            if mode == "full" and a.size > 4096:
                row[f"{mode} s"] = float("nan")
                continue
            start = time.perf_counter()
            engine.gradcheck(fn, [a, b], mode=mode)
            row[f"{mode} s"] = time.perf_counter() - start
        rows.append(row)
    print("gradcheck of (a @ b).tanh().sum(axis=0), a: (n, 8), b: (8, 4), float64")
    print(table(rows, ["input elements", "full s", "directional s"]))

    suite = {}
    if not args.smoke:
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/engine/test_op_properties.py"], cwd=ROOT,
                             capture_output=True, text=True, env={**os.environ, "CI": "true"})
        suite = {"seconds": time.perf_counter() - start,
                 "summary": run.stdout.strip().splitlines()[-1] if run.stdout else run.stderr[-200:]}
        print(f"per-op property suite (CI profile): {suite['seconds']:.1f} s — {suite['summary']}")
    path = save("gradcheck_cost", {"rows": rows, "property_suite": suite}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
