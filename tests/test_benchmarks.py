"""The benchmark scripts run from a clone (tiny sizes, seconds) and write their JSON, so
they do not rot. No timing is asserted: speed is measured by the benchmarks themselves."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = ["train_throughput", "overhead", "memory", "scaling", "gradcheck_cost", "classic_experiments",
           "subnormal", "busy_machine"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_smoke_run(name, tmp_path):
    out = tmp_path / f"{name}.json"
    run = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), "--smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == name and result["machine"]["cores"] >= 1
    assert "|" in run.stdout                      # printed a table


def test_hand_written_numpy_mlp_and_handgrad_agree_step_by_step():
    """The baseline is the same computation: from the same weights, on full batches,
    handgrad's training trajectory equals the hand-written one bit for bit."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import numpy as np
        import train_throughput as T
        rng = np.random.default_rng(0)
        x = rng.random((512, 784), dtype=np.float32)
        y = rng.integers(0, 10, 512)
        ref = T.NumpyMLP(T.SIZES, np.random.default_rng(0))
        model, opt = T.handgrad_model(ref)
        by_hand = T.NumpyMLP(T.SIZES, np.random.default_rng(0))
        for epoch in range(2):
            assert T.numpy_epoch(by_hand, x, y, epoch) == T.handgrad_epoch(model, opt, x, y, epoch)
        for W, layer in zip(by_hand.W, model.layers[::2]):
            assert np.array_equal(W, layer.weight.data)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_bare_engine_floor_computes_what_numpy_by_hand_does():
    """benchmarks/overhead.py's floor (a graph engine with no checks) times the same
    arithmetic as numpy by hand: the same losses and weights, bit for bit, step by step."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import numpy as np
        from bare_engine import BareMLP
        from numpy_mlp import NumpyMLP
        rng = np.random.default_rng(1)
        x = rng.random((32, 784), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        by_hand = NumpyMLP([784, 32, 10], np.random.default_rng(0))
        bare = BareMLP([784, 32, 10], np.random.default_rng(0))
        for _ in range(5):
            assert by_hand.step(x, y, 0.01, 0.9) == bare.step(x, y, 0.01, 0.9)
        for W, b, (w2, b2) in zip(by_hand.W, by_hand.b, zip(bare.params[::2], bare.params[1::2])):
            assert np.array_equal(W, w2.data) and np.array_equal(b, b2.data)
    finally:
        sys.path.remove(str(BENCHMARKS))
