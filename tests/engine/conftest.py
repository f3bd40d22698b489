"""Fixtures shared by the engine tests."""
import pytest

import engine


@pytest.fixture
def registered():
    """``registered(op)`` registers a test-only op and always unregisters it afterwards."""
    names = []

    def register(op):
        names.append(op.name)
        return engine.register(op)

    try:
        yield register
    finally:
        for name in names:
            engine.unregister(name)
