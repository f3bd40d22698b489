"""Plain numbers in messages: ``0.75``, not ``np.float64(0.75)``.

numpy 2 writes its scalars with their type (``repr(np.float64(0.75))`` is
``'np.float64(0.75)'``), and so does a list or tuple that holds them. Error messages format
values through ``plain_repr``, which writes them as the Python numbers they equal.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """``value`` with every numpy scalar (also inside tuples, lists, sets and dicts) made the
    Python number or bool it equals; arrays and everything else unchanged."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple) and hasattr(value, "_fields"):       # a namedtuple
        return type(value)(*(plain(v) for v in value))
    if isinstance(value, (tuple, list, set, frozenset)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def plain_repr(value: Any) -> str:
    """``repr(plain(value))``: ``plain_repr(np.float64(0.75)) == '0.75'``,
    ``plain_repr([np.int64(2), 3]) == '[2, 3]'``, ``plain_repr('mean') == "'mean'"``."""
    return repr(plain(value))
