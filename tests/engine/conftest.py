"""Fixtures shared by the engine tests."""
import pytest

from handgrad import engine


@pytest.fixture
def registered():
    """``registered(OpClass)`` registers a test-only op class and returns the op; it is
    always unregistered afterwards (so no test op is left without a spec)."""
    names = []

    def register(cls, **kwargs):
        engine.register(cls, **kwargs)
        names.append(cls.name)
        return engine.REGISTRY[cls.name]

    try:
        yield register
    finally:
        for name in names:
            engine.unregister(name)
