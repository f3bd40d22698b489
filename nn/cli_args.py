"""Option values of the ``handgrad`` command. Each converter accepts one kind of value or
raises ``argparse.ArgumentTypeError`` with a one-line reason, so every bad option is
reported (one line, exit status 2) before any data is read or any training starts."""
from __future__ import annotations

import argparse
import math

from .errors import UserInputError

# numpy's generators take any non-negative integer; below 2**32 every seed also works with
# the legacy np.random.seed and fits any integer field a user may copy it into.
MAX_SEED = 2**32 - 1


class UsageError(UserInputError):
    """A bad combination of options, or a path that cannot be used: one line, status 2."""


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def threads(text: str) -> int | str:
    """``auto``, ``none`` or a positive thread count, as given (the run records it;
    ``fit(threads=...)`` takes None for ``none``)."""
    if text in ("auto", "none"):
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"must be auto, none or a positive integer, got {text!r}") from None


def seed(text: str) -> int:
    """A random seed: an integer in [0, 2**32)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], "
                                         f"got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, {MAX_SEED}], got {text}")
    return value


def font_points(text: str) -> float:
    """A font size in points, in the range the pictures accept (engine.viz's
    ``FONT_POINTS``, [4, 72])."""
    from handgrad.engine.viz.drawing import FONT_POINTS

    low, high = FONT_POINTS
    value = _number(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be a number of points in [{low}, {high}], "
                                         f"got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def nonnegative_float(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1): a probability of dropping, a share of the data, a momentum."""
    value = _number(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def unit_interval(text: str) -> float:
    """A number in [0, 1] (label smoothing)."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def sizes(text: str) -> list[int]:
    """"64,32" -> [64, 32]: at least one positive integer."""
    parts = [s for s in text.replace(" ", "").split(",")]
    if not any(parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated sizes like 64,32, got {text!r}")
    try:
        values = [int(s) for s in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 64,32, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"sizes must be positive integers, got {text!r}")
    return values
