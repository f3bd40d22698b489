"""The errors that describe what the user gave handgrad: options, files, data, a training
run that cannot go on. ``handgrad`` reports any of them as one line on stderr with exit
status 2; every other exception is a bug in handgrad and keeps its traceback.

Each concrete class also derives from the built-in type it refines (``ValueError`` for a
bad file, ``FloatingPointError`` for a loss that became NaN), so existing ``except``
clauses keep working.
"""
from __future__ import annotations


class UserInputError(Exception):
    """Base class: something the user gave (an option, a file, a dataset, a learning rate
    that makes training diverge) cannot be used. The message is one line naming it."""
