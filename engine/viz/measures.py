"""What the pictures measure about arrays, taking infinities and NaNs as they are and
never warning.

``norm`` scales by the largest magnitude before squaring, so a gradient [1e-300, 0] has
the norm 1e-300 (its square underflows to 0) and [1e300, 1] the norm 1e+300 (its square
overflows to inf): every norm a picture states is this one.

``agreement`` says two arrays are equal when they have the same shape, NaN at the same
places, the same infinities (sign and place), and their finite entries lie within the
rounding tolerance: inf − inf and nan − nan are no difference, and a NaN in the largest
difference never makes equal values "differ".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def norm(a: np.ndarray) -> float:
    """The Euclidean (Frobenius) norm in float64, computed as m·‖a/m‖ with m the largest
    |entry|, so that no finite entry underflows or overflows when squared; nan when an
    entry is NaN, else inf when one is infinite."""
    x = np.abs(np.asarray(a, dtype=np.float64).reshape(-1))
    if x.size == 0:
        return 0.0
    if np.isnan(x).any():
        return float("nan")
    big = float(np.max(x))
    if big == 0.0 or not np.isfinite(big):
        return big
    with np.errstate(under="ignore"):      # entries far below the largest count as 0
        scaled = x / big
        return big * float(np.sqrt(np.dot(scaled, scaled)))


def mean(a: np.ndarray, axis: int | None = None) -> np.ndarray | float:
    """The mean in float64 (over ``axis``, or all entries), computed as m·mean(a/m) with m
    the largest finite |entry|, so that a sum of finite entries never overflows (an array
    of 1.5e308 has the mean 1.5e308, not inf); inf and nan stay what they make a mean."""
    x = np.asarray(a, dtype=np.float64)
    if x.size == 0 and axis is None:
        return float("nan")
    big = finite_max(x) or 1.0
    with np.errstate(all="ignore"):         # inf − inf in a mean is the nan it shows
        m = big * np.mean(x / big, axis=axis)
    return float(m) if axis is None else m


def finite_max(a: np.ndarray | None) -> float:
    """The largest finite |entry| of ``a`` (0 for none): the scale a rounding tolerance is
    taken from, where an infinite entry would make every difference "within" it."""
    if a is None:
        return 0.0
    x = np.abs(np.asarray(a, dtype=np.float64))
    return float(np.max(x, where=np.isfinite(x), initial=0.0))


@dataclass(frozen=True)
class Agreement:
    """How a recomputed right-hand side compares with the engine's value. ``diff`` is the
    largest |difference| over the entries finite in both (0 for none); ``mismatch`` says
    in words where the non-finite entries or the shapes differ (None: they agree);
    ``non_finite`` is True when either side holds an inf or a NaN."""

    equal: bool
    diff: float
    tolerance: float
    mismatch: str | None
    non_finite: bool

    def gap(self) -> str:
        """Why they differ, in words: "nan at different places", "largest difference
        2.0e-03"; both when both hold."""
        parts = [] if self.mismatch is None else [self.mismatch]
        if self.diff > self.tolerance or not parts:
            what = "largest difference of the finite entries" if self.non_finite \
                else "largest difference"
            parts.append(f"{what} {self.diff:.1e}")
        return "; ".join(parts)


def agreement(rhs: np.ndarray, value: np.ndarray, tolerance: float) -> Agreement:
    """Compare ``rhs`` (float64) with the engine's ``value``: equal when the shapes match,
    NaN sits at the same places, the infinities are the same (sign and place) and the
    finite entries differ by at most ``tolerance``."""
    r, v = np.asarray(rhs, np.float64), np.asarray(value, np.float64)
    if r.shape != v.shape:
        return Agreement(False, float("nan"), tolerance,
                         f"shape {tuple(r.shape)} against the engine's {tuple(v.shape)}",
                         False)
    r_nan, v_nan = np.isnan(r), np.isnan(v)
    r_inf, v_inf = np.isinf(r), np.isinf(v)
    non_finite = bool(r_nan.any() or v_nan.any() or r_inf.any() or v_inf.any())
    problems = []
    if not np.array_equal(r_nan, v_nan):
        problems.append("nan at different places")
    if not np.array_equal(r_inf, v_inf) or not np.array_equal(r[r_inf], v[r_inf]):
        problems.append("different infinities (sign or place)")
    both = np.isfinite(r) & np.isfinite(v)
    gaps = np.zeros(r.shape)
    with np.errstate(over="ignore"):       # 1e308 − (−1e308) is an infinite difference
        np.subtract(r, v, out=gaps, where=both)  # inf − inf and nan − nan are not computed
    diff = float(np.max(np.abs(gaps), initial=0.0))
    mismatch = "; ".join(problems) or None
    return Agreement(mismatch is None and diff <= tolerance, diff, tolerance, mismatch,
                     non_finite)
