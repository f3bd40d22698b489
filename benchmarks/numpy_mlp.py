"""The baseline: an MLP written by hand in vectorized numpy, the classic from-scratch way.

Forward pass storing every activation; output delta p - y (softmax + cross-entropy);
the recursive delta between layers; weight gradient = previous activation^T delta, bias
gradient = delta summed over the batch, all averaged over the batch; SGD with momentum.
This is what handgrad is measured against: same network, same update, same float32.
"""
from __future__ import annotations

import numpy as np


class NumpyMLP:
    """ReLU hidden layers, a linear output layer, softmax cross-entropy; weights (in, out)."""

    def __init__(self, sizes: list[int], rng: np.random.Generator, dtype=np.float32):
        self.W = [(rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype)
                  for a, b in zip(sizes[:-1], sizes[1:])]
        self.b = [np.zeros(b, dtype=dtype) for b in sizes[1:]]
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]

    def forward(self, x: np.ndarray) -> list[np.ndarray]:
        """All activations a_0 = x, a_1, ..., a_L (a_L = logits)."""
        acts = [x]
        for i, (W, b) in enumerate(zip(self.W, self.b)):
            z = acts[-1] @ W
            z += b
            if i < len(self.W) - 1:
                np.maximum(z, 0, out=z)
            acts.append(z)
        return acts

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, momentum: float) -> float:
        """One SGD-with-momentum step on the batch; returns the mean cross-entropy."""
        acts = self.forward(x)
        logits = acts[-1]
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        s = e.sum(axis=1, keepdims=True)
        n = len(x)
        rows = np.arange(n)
        loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, y]))
        delta = e / s                                   # p
        delta[rows, y] -= 1                             # p - y
        delta /= n                                      # averaged over the batch
        for i in range(len(self.W) - 1, -1, -1):
            gW = acts[i].T @ delta
            gb = delta.sum(axis=0)
            if i > 0:
                delta = delta @ self.W[i].T
                delta *= acts[i] > 0                    # relu'(z) = [z > 0]
            self.vW[i] *= momentum
            self.vW[i] += gW
            self.W[i] -= lr * self.vW[i]
            self.vb[i] *= momentum
            self.vb[i] += gb
            self.b[i] -= lr * self.vb[i]
        return loss

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)[-1].argmax(axis=1)
