"""Shared benchmark plumbing: the machine description, interleaved timing with medians,
tables on stdout and JSON under benchmarks/results/."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))  # run from a clone without installing


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (CI)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repetitions per variant")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/<name>.json)")
    return p


def blas_name() -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        return "unknown"


def machine() -> dict[str, Any]:
    return {
        "date": _dt.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": blas_name(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }


def torch_or_none(disabled: bool = False) -> Any:
    if disabled:
        return None
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def interleaved(variants: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Run each variant once per round, rounds ``repeats`` times, so that drift in the
    machine's speed (other load, thermal) hits every variant alike. Seconds per call."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def print_notes(notes: list[str], torch: Any, jax: Any) -> None:
    """Print the run's notes, adding one for each comparison library that is missing."""
    if torch is None:
        notes.append("PyTorch not installed: its rows are skipped")
    if jax is None:
        notes.append("JAX not installed: its row is skipped")
    for note in notes:
        print(f"({note})")


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)
    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(items: list[str]) -> str:
        return "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"

    return "\n".join([line(columns), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *(line(r) for r in cells)])


def save(name: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    path.write_text(json.dumps(payload, indent=1, default=float))
    return path


def fashion_mnist(n_train: int | None, smoke: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """Fashion-MNIST as float32 (N, 784) in [0, 1], or random data of the same shape (with a
    note) when the files are not installed. Returns x_train, y_train, x_test, y_test, source."""
    from handgrad.nn.data import DatasetError, load_dataset
    try:
        s = load_dataset("fashion-mnist", n=n_train)
        return s.x_train, s.y_train, s.x_test, s.y_test, "fashion-mnist"
    except DatasetError:
        rng = np.random.default_rng(0)
        n = n_train or 60000
        x = rng.random((n + 2000, 784), dtype=np.float32)
        y = rng.integers(0, 10, n + 2000)
        return x[:n], y[:n], x[n:], y[n:], "random (fashion-mnist not installed)"
