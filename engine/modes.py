"""Per-thread switches: grad mode (``no_grad`` / ``enable_grad``), anomaly detection, and
the name scope that tags new graph nodes with the module that made them.

All three live in one ``threading.local``: each thread has its own copy, so an evaluation
or monitoring thread inside ``no_grad()`` never changes what a training thread records.

The name scope is the hook through which a library above the engine (``nn``) tells the
graph who made a node: code running inside ``name_scope("layers.0")`` creates nodes whose
``node.scope`` is ``"layers.0"``. The engine knows nothing else about modules.

``no_grad``, ``enable_grad``, ``set_grad_enabled`` and ``detect_anomaly`` are context
managers and decorators. Decorating a generator function applies the mode while the
generator's own code runs (each ``next``), not to the code that consumes it.
"""
from __future__ import annotations

import functools
import inspect
import itertools
import threading
from typing import Any, Callable, Generator, TypeVar, cast

# One sequence numbers the nodes (``graph.Node.index``, their creation order) and the
# hand-outs of arrays (``memory.hand_out``): a hand-out's number is above that of every node
# made before it and below that of every node made after (``memory.forward_change``).
SEQUENCE = itertools.count()

F = TypeVar("F", bound=Callable[..., Any])


class _ThreadState(threading.local):
    """Each thread starts with these values (``__init__`` runs once per thread)."""

    def __init__(self) -> None:
        self.grad_enabled = True
        self.anomaly = False
        self.scope: str | None = None
        self.tape: Any = None          # a capture.Tape while engine.capture runs a function
        # The leaves (ids) of each transform (engine.jvp, vjp) running its function here:
        # a backward pass inside that reaches one is refused (graph.backward_steps).
        self.transform_leaves: tuple[frozenset[int], ...] = ()


STATE = _ThreadState()


def is_grad_enabled() -> bool:
    """Whether ops in this thread record graph nodes."""
    return STATE.grad_enabled


def is_anomaly_enabled() -> bool:
    """Whether this thread runs under ``detect_anomaly()``."""
    return STATE.anomaly


def current_scope() -> str | None:
    """The dotted name scope new nodes in this thread are tagged with."""
    return STATE.scope


class _Saved(threading.local):
    """What a context object's ``__enter__`` replaced, to put back at ``__exit__``: a
    stack per thread, so that one object (``NO_GRAD = engine.no_grad()`` at module level)
    entered by two threads, or twice by one, gives each block its own."""

    def __init__(self) -> None:
        self.items: list[Any] = []


class _Mode:
    """Set one field of this thread's state for a ``with`` block, or for every call of a
    decorated function. Subclasses set ``field`` and ``value``."""

    field = ""
    value: Any = None

    def __init__(self) -> None:
        self._previous = _Saved()

    def _fresh(self) -> "_Mode":
        """A new context with the same setting: a decorator makes one per call."""
        fresh = object.__new__(type(self))
        fresh.__dict__.update(self.__dict__)
        fresh._previous = _Saved()
        return fresh

    def __enter__(self) -> None:
        self._previous.items.append(getattr(STATE, self.field))
        setattr(STATE, self.field, self.value)

    def __exit__(self, *exc: object) -> None:
        setattr(STATE, self.field, self._previous.items.pop())

    def __call__(self, fn: F) -> F:
        if inspect.isgeneratorfunction(fn):
            return cast(F, _wrap_generator(self._fresh, fn))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)
        return cast(F, wrapper)           # functools.wraps keeps fn's signature


_Gen = Generator[Any, Any, Any]


def _wrap_generator(context: Callable[[], _Mode],
                    fn: Callable[..., _Gen]) -> Callable[..., _Gen]:
    """A generator function whose body runs inside ``context()`` at every resumption and
    outside it while suspended (the consumer's code between two ``next`` calls keeps its
    own mode)."""

    @functools.wraps(fn)
    def generator(*args: Any, **kwargs: Any) -> _Gen:
        with context():
            inner = fn(*args, **kwargs)
            try:
                response = inner.send(None)
            except StopIteration as stop:
                return stop.value
        while True:
            try:
                request = yield response
            except GeneratorExit:
                with context():
                    inner.close()
                raise
            except BaseException as error:  # thrown in by the consumer: pass it on
                with context():
                    try:
                        response = inner.throw(error)
                    except StopIteration as stop:
                        return stop.value
            else:
                with context():
                    try:
                        response = inner.send(request)
                    except StopIteration as stop:
                        return stop.value
    return generator


class set_grad_enabled(_Mode):
    """``with set_grad_enabled(False):`` records no graph in the block; ``True`` records it
    again. As in PyTorch, a plain call ``set_grad_enabled(False)`` sets this thread's mode
    at once and keeps it (a ``with`` block puts back the mode from before the call, and a
    decorator leaves the mode as it found it, applying it at each call)."""

    field = "grad_enabled"

    def __init__(self, mode: bool) -> None:
        super().__init__()
        self.value = bool(mode)
        # What the call replaced, in the thread that made it: the first ``with`` block
        # entered there puts it back at its end, a decorator at once.
        self._called: tuple[int, bool] | None = None
        if type(self) is set_grad_enabled:        # no_grad() and enable_grad() set nothing
            self._called = (threading.get_ident(), STATE.grad_enabled)
            STATE.grad_enabled = self.value

    def _before_call(self) -> bool | None:
        """The mode the call replaced, if this thread made it and nothing took it yet."""
        called, self._called = self._called, None
        return called[1] if called is not None and called[0] == threading.get_ident() else None

    def __enter__(self) -> None:
        before = self._before_call()
        super().__enter__()
        if before is not None:
            self._previous.items[-1] = before

    def __call__(self, fn: F) -> F:
        before = self._before_call()
        if before is not None:
            STATE.grad_enabled = before
        return super().__call__(fn)


class no_grad(set_grad_enabled):
    """Ops inside record no graph: evaluation, and updating parameters in place."""

    def __init__(self) -> None:
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Record the graph again inside a ``no_grad`` block."""

    def __init__(self) -> None:
        super().__init__(True)


class detect_anomaly(_Mode):
    """Debugging mode, per thread: raise at the first op whose forward or backward turns
    finite inputs into NaN or Inf, and check that no array saved for backward changed
    (a checksum per saved tensor array, compared before its node's backward rule runs)."""

    field = "anomaly"
    value = True


def push_scope(name: str, nested: bool = True) -> str | None:
    """Enter scope ``name``; returns the scope to restore with ``pop_scope``. Nested scopes
    join with '.' ("layers" then "0" gives "layers.0"); ``nested=False`` sets the full
    dotted name as given (a module that knows its own path). The pair ``name_scope`` wraps;
    modules call it directly because every module call enters a scope."""
    state = STATE
    outer = state.scope
    state.scope = f"{outer}.{name}" if outer and nested else name
    return outer


def pop_scope(outer: str | None) -> None:
    """Leave the scope entered by the matching ``push_scope``."""
    STATE.scope = outer


class name_scope:
    """``with name_scope("layers"):`` nodes created inside are tagged with the scope."""

    __slots__ = ("name", "_outer")

    def __init__(self, name: str):
        self.name = name
        self._outer = _Saved()                 # per thread: the scopes to return to

    def __enter__(self) -> None:
        self._outer.items.append(push_scope(self.name))

    def __exit__(self, *exc: object) -> None:
        pop_scope(self._outer.items.pop())
