"""The floor for any graph engine written in Python: a micrograd-style engine over numpy
with the tiny MLP's three node types (linear, relu, softmax cross-entropy) and nothing
else. No checks of any kind: no copy of the batch, no shape or dtype validation, no
guard on values changed between forward and backward, no finite checks, no name scopes.

benchmarks/overhead.py runs it beside numpy by hand and handgrad: the gap between it and
numpy is what recording a graph and walking it costs in Python on the machine, before any
of handgrad's guarantees; handgrad's gap beyond it is what those guarantees cost.
Not a part of handgrad, and not for use: it exists to be timed.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class Value:
    """An array, the nodes it was computed from, and how to send a gradient back to them."""

    def __init__(self, data: np.ndarray, parents: tuple["Value", ...] = (),
                 backward: Callable[[np.ndarray], None] | None = None, needs_grad: bool = True):
        self.data, self.parents, self.backward_fn = data, parents, backward
        self.grad: np.ndarray | None = None
        self.needs_grad = needs_grad     # False for the batch: no gradient is computed for it

    def add_grad(self, g: np.ndarray) -> None:
        self.grad = g if self.grad is None else self.grad + g

    def backward(self) -> None:
        order: list[Value] = []
        seen: set[int] = set()
        stack: list[tuple[Value, bool]] = [(self, False)]
        while stack:                            # iterative post-order: a topological order
            v, done = stack.pop()
            if done:
                order.append(v)
            elif id(v) not in seen:
                seen.add(id(v))
                stack.append((v, True))
                stack.extend((p, False) for p in v.parents)
        self.grad = np.ones_like(self.data)
        for v in reversed(order):
            if v.backward_fn is not None and v.grad is not None:
                v.backward_fn(v.grad)


def linear(x: Value, w: Value, b: Value) -> Value:
    def backward(g: np.ndarray) -> None:
        w.add_grad(x.data.T @ g)
        b.add_grad(g.sum(axis=0))
        if x.needs_grad:
            x.add_grad(g @ w.data.T)
    out = x.data @ w.data
    out += b.data
    return Value(out, (x, w, b), backward)


def relu(x: Value) -> Value:
    mask = x.data > 0

    def backward(g: np.ndarray) -> None:
        x.add_grad(g * mask)
    return Value(np.maximum(x.data, 0), (x,), backward)


def cross_entropy(z: Value, y: np.ndarray) -> Value:
    shifted = z.data - z.data.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    norm = e.sum(axis=1, keepdims=True)
    rows = np.arange(len(y))
    loss = np.mean(np.log(norm[:, 0]) - shifted[rows, y])
    delta = e / norm
    delta[rows, y] -= 1
    delta /= len(y)

    def backward(g: np.ndarray) -> None:
        z.add_grad(g * delta)
    return Value(np.asarray(loss), (z,), backward)


class BareMLP:
    """ReLU hidden layers, weights (in, out), He-initialised as numpy_mlp.NumpyMLP."""

    def __init__(self, sizes: list[int], rng: np.random.Generator, dtype=np.float32):
        self.params = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            self.params += [Value((rng.standard_normal((a, b)) * np.sqrt(2.0 / a)).astype(dtype)),
                            Value(np.zeros(b, dtype=dtype))]
        self.velocity = [np.zeros_like(p.data) for p in self.params]

    def __call__(self, x: np.ndarray) -> Value:
        h = Value(x, needs_grad=False)
        pairs = list(zip(self.params[::2], self.params[1::2]))
        for i, (w, b) in enumerate(pairs):
            h = linear(h, w, b)
            if i < len(pairs) - 1:
                h = relu(h)
        return h

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, momentum: float) -> float:
        """One SGD-with-momentum step: the same update as NumpyMLP.step."""
        loss = cross_entropy(self(x), y)
        for p in self.params:
            p.grad = None
        loss.backward()
        for p, v in zip(self.params, self.velocity):
            v *= momentum
            v += p.grad
            p.data -= lr * v
        return float(loss.data)
