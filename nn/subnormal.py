"""SGD's momentum and Adam's first moment kept fast when they decay into subnormal
numbers, bit for bit.

Why it is needed. A hidden unit that stops receiving gradient (a ReLU unit that is off for
every example of the recent batches) still has its momentum multiplied by mu at every
step, ``b <- mu b + 0``. In float32 that reaches the subnormal range (|b| < 2^-126, about
1.2e-38) after a few hundred steps and stays there: the smallest subnormals are fixed
points (0.9 times 5 * 2^-149 rounds back to 5 * 2^-149). Many x86 CPUs (Intel's, in
particular) compute every operation with a subnormal operand or result through a slow
microcode assist, several times slower over a buffer with a few percent of subnormal
values; an SGD step makes three such passes (``b *= mu``, ``b += g``, ``lr * b``) and
Adam's first moment decays the same way (beta1 = 0.9). Others (the AMD EPYC this project's
benchmarks ran on last) compute them at full speed. ``benchmarks/subnormal.py`` measures
both and records them in ``benchmarks/results/subnormal.json``. (JAX avoids the cost by
flushing subnormals to zero, which changes the numbers; handgrad does not.)

When it is used. ``slow_here()`` probes the CPU once per process (well under a
millisecond); the optimizers (``Optimizer.run_kernel``, with ``exact_subnormals=True``, the
default) take the path below only where subnormal arithmetic is slow. Since it gives the
same bits as the plain lines, the choice changes speed, never results.

How, without changing a single bit. The positions of the subnormal values are found by a
scan every few steps (``Hints``). At those positions the update is computed apart, in
float64: the product of two float32 numbers is exact in float64, so rounding it once to
float32 gives exactly the float32 product, subnormal results included; a float64 sum or
quotient of two float32 numbers rounded to float32 is exactly their float32 sum or quotient
too (double rounding is harmless when the wider format has at least 2p + 2 bits:
53 >= 2 * 24 + 2). The float32 passes over the whole array then meet zeros at those
positions instead of subnormals. The positions are only a hint: the result is exact
whichever positions are listed, so a value that became subnormal since the last scan just
takes the slow path until the next.
"""
from __future__ import annotations

import functools
import time
import weakref
from typing import Any

import numpy as np

_EMPTY = np.empty(0, dtype=np.intp)
_F32, _F64 = np.dtype(np.float32), np.float64
_EXPONENT_ZERO = np.uint32(0x007FFFFF)   # largest |bits| of a subnormal float32


# Subnormal arithmetic counts as slow when a pass over subnormal values takes this many
# times as long as the same pass over normal ones (Intel microcode assists: 7x and more;
# CPUs that handle subnormals in hardware: 1.0-1.2x).
SLOW_RATIO = 3.0


@functools.cache
def slow_here() -> bool:
    """Whether this CPU computes float32 arithmetic on subnormal values slowly: the best of
    five timings of ``x * 0.9`` over 32,768 subnormal values against normal ones."""
    out = np.empty(1 << 15, dtype=np.float32)

    def best(value: float) -> float:
        a = np.full(out.shape, value, dtype=np.float32)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            np.multiply(a, np.float32(0.9), out=out)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(1e-40) > SLOW_RATIO * best(1e-3)


def subnormal_positions(a: np.ndarray) -> np.ndarray:
    """Flat indices of the subnormal values of a float32 array (zeros excluded): their bit
    patterns, sign dropped, lie in 1 .. 0x007FFFFF (exponent field zero)."""
    bits = a.reshape(-1).view(np.uint32) & np.uint32(0x7FFFFFFF)
    bits -= np.uint32(1)                   # zero wraps around to the largest uint32
    return np.flatnonzero(bits < _EXPONENT_ZERO)


class Hints:
    """Where each momentum buffer holds subnormal values, rescanned every ``every`` updates
    of that buffer (a scan costs about as much as four passes over it). Buffers that are
    not contiguous float32 arrays are never scanned: their positions stay empty."""

    def __init__(self, every: int = 32):
        self.every = every
        self._of: dict[int, list[Any]] = {}      # id(buffer) -> [weakref, positions, updates]

    def positions(self, buf: np.ndarray) -> np.ndarray:
        entry = self._of.get(id(buf))
        if entry is None or entry[0]() is not buf:
            entry = self._of[id(buf)] = [weakref.ref(buf), _EMPTY, 0]
        entry[2] += 1
        if entry[2] >= self.every:
            entry[2] = 0
            if buf.dtype == _F32 and buf.flags.c_contiguous:
                entry[1] = subnormal_positions(buf)
        return entry[1]


def applies(arrays: tuple[np.ndarray, ...], numbers: tuple[Any, ...]) -> bool:
    """Whether the updates below reproduce numpy's arithmetic here: contiguous float32 arrays
    of one shape (flat views index them), and Python numbers for the hyperparameters
    (numpy turns those into float32; a numpy float64 scalar would make it compute in
    float64)."""
    shape = arrays[0].shape
    return all(a.dtype == _F32 and a.shape == shape and a.flags.c_contiguous for a in arrays) \
        and all(type(c) in (float, int) for c in numbers)


def _exact(ufunc: np.ufunc, a: Any, b: Any) -> np.ndarray:
    """The float32 result of ``ufunc`` on float32 operands, computed in float64 and rounded
    once: the same bits as the float32 operation (see the module docstring)."""
    return ufunc(a, b, dtype=_F64).astype(np.float32)


def _f32(c: float) -> np.float64:
    """The float32 value numpy uses for a Python number next to a float32 array."""
    return _F64(np.float32(c))


def heavy_ball(w: np.ndarray, buf: np.ndarray, g: np.ndarray, mu: float, lr: float,
               positions: np.ndarray) -> None:
    """``buf *= mu; buf += g; w -= lr * buf``, in place, with the same bits as those three
    numpy lines, the values of ``buf`` at ``positions`` computed apart in float64."""
    flat_buf = buf.reshape(-1)
    b = flat_buf[positions]
    flat_buf[positions] = 0                            # the float32 passes meet zeros there
    buf *= mu
    buf += g                                           # buf = g at the positions
    b = _exact(np.add, _exact(np.multiply, b, _f32(mu)), g.reshape(-1)[positions])
    step = lr * buf                                    # lr * g at the positions: normal
    flat_buf[positions] = b
    step.reshape(-1)[positions] = _exact(np.multiply, b, _f32(lr))
    w -= step


def adam(w: np.ndarray, m: np.ndarray, v: np.ndarray, g: np.ndarray, b1: float, b2: float,
         step: float, bias2: float, eps: float, positions: np.ndarray) -> None:
    """Adam's lines, in place, with the same bits, the first moment ``m`` at ``positions``
    computed apart in float64 (the second moment decays a thousand times slower)::

        m *= b1; m += (1 - b1) * g; v *= b2; v += (1 - b2) * (g * g)
        w -= step * (m / (np.sqrt(v / bias2) + eps))
    """
    flat_m = m.reshape(-1)
    mp = flat_m[positions]
    flat_m[positions] = 0
    m *= b1
    scaled = (1 - b1) * g
    m += scaled                                        # m = (1 - b1) g at the positions
    v *= b2
    v += (1 - b2) * (g * g)
    denom = np.sqrt(v / bias2)
    denom += eps
    ratio = m / denom
    ratio.reshape(-1)[positions] = 0
    update = step * ratio
    mp = _exact(np.add, _exact(np.multiply, mp, _f32(b1)), scaled.reshape(-1)[positions])
    flat_m[positions] = mp
    ratio_p = _exact(np.divide, mp, denom.reshape(-1)[positions])
    update.reshape(-1)[positions] = _exact(np.multiply, ratio_p, _f32(step))
    w -= update
