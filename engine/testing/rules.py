"""Checking derivative rules written outside handgrad: ``check_rule`` for plain numpy.

A ``Rule`` is a hand-written rule made checkable: an *unregistered* handgrad ``Op`` whose
forward calls the user's forward (and saves its cache, or its inputs), whose backward
calls the user's backward and whose jvp calls the user's jvp (when there is one), with
the ``OpSpec`` that samples it. ``run_op(rule.op, rule.spec)`` then runs every property
the built-in ops satisfy, unchanged; without a jvp the forward-mode properties (and the
forward-mode parts of the others) do not apply and report None.

Two styles of numpy rules::

    # "cache" (CS231n):                  # "inputs":
    out, cache = forward(x, w, b)        out = forward(x, w, b, **params)
    dx, dw, db = backward(dout, cache)   dx, dw, db = backward(dout, x, w, b, **params)
    dout_ = jvp(cache, dx, dw, db)       dout_ = jvp(x, w, b, dx, dw, db, **params)

The forward's positional parameters without a default are the inputs (arrays); those
with a default and the keyword-only ones are parameters (``functools.partial(f,
bn_param=...)`` turns a dict argument into one). ``backward`` returns one gradient per
input, in order (a bare array for a one-input rule); ``jvp`` takes what backward takes
after ``dout``, then the tangents (one per input), and returns the output's tangent.
"""
from __future__ import annotations

import copy
import functools
import inspect
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from ..op import Op, RuleContext
from ..plain import plain_repr
from .check import raise_for, run_op
from .specs import OpSpec

STYLES = ("cache", "inputs")
Fn = Callable[..., Any]
KinkExample = tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]]


@dataclass(frozen=True)
class Rule:
    """A hand-written derivative rule from anywhere, made checkable: an unregistered handgrad
    Op that runs the user's forward and rules, and the OpSpec that samples it."""

    name: str
    op: Op          # NOT registered (not in REGISTRY, not engine.<name>)
    spec: OpSpec    # sample strategy, reference, kink examples, tolerances
    kind: str       # "numpy", "torch", "jax" (for reports)


# --- the user's signatures -----------------------------------------------------------------

def _signature(name: str, what: str, fn: Fn) -> inspect.Signature:
    if not callable(fn):
        raise TypeError(f"{name}: {what} must be a function, got {type(fn).__name__}")
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: cannot read the signature of {what} {fn!r}; wrap it in a "
                        f"def or lambda that names its arguments") from None


def _op_forward_signature(name: str, forward: Fn) -> inspect.Signature:
    """The signature the Op's forward takes for the user's ``forward``: (self, ctx, inputs,
    *, params). Inputs are the positional parameters without a default (or ``*xs``);
    parameters those with a default and the keyword-only ones."""
    P = inspect.Parameter
    inputs: list[inspect.Parameter] = []
    params: list[inspect.Parameter] = []
    for p in _signature(name, "forward", forward).parameters.values():
        if p.kind is P.VAR_KEYWORD:
            raise TypeError(f"{name}: forward takes **{p.name}; list its parameters as keyword "
                            f"arguments with defaults (or wrap it in a lambda)")
        if p.kind is P.VAR_POSITIONAL:
            if inputs:
                raise TypeError(f"{name}: forward takes inputs and *{p.name}; use one or the other")
            inputs.append(p.replace(annotation=P.empty))
        elif p.kind is P.KEYWORD_ONLY or p.default is not P.empty:
            if p.kind is P.POSITIONAL_ONLY:
                raise TypeError(f"{name}: forward's positional-only parameter {p.name!r} has a "
                                f"default; parameters are passed by keyword")
            params.append(P(p.name, P.KEYWORD_ONLY, default=p.default))
        elif any(q.kind is P.VAR_POSITIONAL for q in inputs):
            raise TypeError(f"{name}: forward takes input {p.name!r} after *{inputs[0].name}")
        else:
            inputs.append(P(p.name, P.POSITIONAL_OR_KEYWORD))
    if not inputs:
        raise TypeError(f"{name}: forward takes no input (its positional parameters without "
                        f"a default are the inputs)")
    head = [P("self", P.POSITIONAL_OR_KEYWORD), P("ctx", P.POSITIONAL_OR_KEYWORD)]
    return inspect.Signature(head + inputs + params)


def detect_style(name: str, backward: Fn, inputs: Sequence[str]) -> str:
    """"cache" for ``backward(dout, cache)``, "inputs" for ``backward(dout, x, w, ...)``
    (one parameter after dout per input of forward, or their names); TypeError asking for
    ``style=`` when the signature does not tell."""
    P = inspect.Parameter
    params = list(_signature(name, "backward", backward).parameters.values())
    positional = [p.name for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    varargs = any(p.kind is P.VAR_POSITIONAL for p in params)
    if len(positional) == 2 and not varargs and "cache" in positional[1].lower():
        return "cache"
    if positional[1:] == list(inputs) or varargs and len(positional) == 1:
        return "inputs"
    if len(inputs) != 1 and not varargs:
        if len(positional) == 2:
            return "cache"
        if len(positional) == 1 + len(inputs):
            return "inputs"
    shown = f"backward{inspect.signature(backward)}"
    raise TypeError(f"{name}: cannot tell the style of {shown} for forward's inputs "
                    f"({', '.join(inputs)}): pass style='cache' (backward(dout, cache)) or "
                    f"style='inputs' (backward(dout, {', '.join(inputs)}))")


# --- the op that runs the user's functions -------------------------------------------------

def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    if isinstance(value, tuple):
        return f"a tuple of {len(value)}"
    return f"a {type(value).__name__}"


# ctx.needs_input_grad of the forward being run, for an adapter whose framework has its
# own (check_torch: which inputs require grad, which a Function's needs_input_grad reads).
_NEEDS_INPUT_GRAD: ContextVar[tuple[bool, ...] | None] = ContextVar("needs_input_grad", default=None)


def needs_input_grad() -> tuple[bool, ...] | None:
    """Which inputs of the rule whose forward is running need a gradient (its
    ``ctx.needs_input_grad``); None outside such a forward."""
    return _NEEDS_INPUT_GRAD.get()


class RuleOp(Op):
    """Base class of the ops ``numpy_rule`` builds (one subclass per rule, never
    registered): the user's functions are class attributes, so that the class can be
    instantiated again (mutation testing subclasses it)."""

    style: str = "cache"
    user_forward: Fn
    user_backward: Fn
    user_jvp: Fn | None = None
    promotes_integers = False      # an int64 index or a bool mask reaches the rule as drawn

    def run_forward(self, ctx: RuleContext, inputs: tuple[np.ndarray, ...], params: dict[str, Any]) -> Any:
        """The user's forward on the input arrays; saves what the rules are called with.
        ``needs_input_grad()`` gives it ``ctx.needs_input_grad`` meanwhile."""
        # A dict or list parameter is a copy for each call: CS231n's batchnorm writes its
        # running mean and variance into bn_param, and one sample's (of another width) made
        # the next sample's forward fail.
        params = _fresh(params)
        token = _NEEDS_INPUT_GRAD.set(tuple(ctx.needs_input_grad))
        try:
            result = type(self).user_forward(*inputs, **params)
        finally:
            _NEEDS_INPUT_GRAD.reset(token)
        if self.style == "cache":
            if not (isinstance(result, tuple) and len(result) == 2):
                raise TypeError(f"{self.name}: forward returned {_describe(result)}; in the "
                                f"cache style it returns (out, cache)")
            out, cache = result
            ctx.save(cache)
        else:
            if isinstance(result, tuple):
                raise TypeError(f"{self.name}: forward returned {_describe(result)}; in the "
                                f"inputs style it returns out alone (style='cache' for "
                                f"(out, cache))")
            out = result
            ctx.save_input(*inputs)
        if not isinstance(out, (np.ndarray, np.generic, int, float)) or isinstance(out, bool):
            raise TypeError(f"{self.name}: forward returned {_describe(out)} as its output; "
                            f"return a numpy array")
        return out

    def backward(self, ctx: RuleContext, grad: np.ndarray) -> tuple[np.ndarray | None, ...]:
        """The user's backward, its gradients checked: one per input, arrays of the inputs'
        shapes (None for an input that gets none)."""
        rule = type(self).user_backward
        if self.style == "cache":
            return self._gradients(ctx, rule(grad, ctx.saved[0]))
        return self._gradients(ctx, rule(grad, *ctx.saved, **ctx.params))

    def input_names(self, n: int) -> list[str]:
        """The forward's names of ``n`` inputs (``xs[0]``, ... for ``*xs``)."""
        sig = self.signature
        return [f"{sig.inputs[0] if sig.inputs else 'xs'}[{i}]" for i in range(n)] \
            if sig.varargs else list(sig.inputs[:n])

    def _gradients(self, ctx: RuleContext, result: Any) -> tuple[np.ndarray | None, ...]:
        shapes = [t.shape for t in ctx.inputs]
        names = self.input_names(len(shapes))
        inputs = ", ".join(f"{n} {s}" for n, s in zip(names, shapes, strict=True))
        if isinstance(result, (np.ndarray, np.generic)) and len(shapes) == 1:
            result = (result,)
        elif isinstance(result, list):
            result = tuple(result)
        if not isinstance(result, tuple):
            raise TypeError(f"{self.name}: backward returned {_describe(result)}; return one "
                            f"gradient per input (inputs: {inputs})")
        if len(result) != len(shapes):
            raise TypeError(f"{self.name}: backward returned {len(result)} gradients for "
                            f"{len(shapes)} inputs ({inputs}); return one per input, in "
                            f"forward's order")
        out: list[np.ndarray | None] = []
        for g, name in zip(result, names, strict=True):
            if isinstance(g, np.generic):
                g = np.asarray(g)
            if g is not None and not isinstance(g, np.ndarray):
                raise TypeError(f"{self.name}: backward returned {_describe(g)} for the "
                                f"gradient of {name}; return numpy arrays")
            out.append(g)
        wrong = [(n, g.shape, s) for n, g, s in zip(names, out, shapes, strict=True)
                 if g is not None and g.shape != s]
        if wrong:
            returned = ", ".join("None" if g is None else str(g.shape) for g in out)
            raise ValueError(f"{self.name}: backward returned the gradient of {wrong[0][0]} with "
                             f"shape {wrong[0][1]}, but {wrong[0][0]} has shape {wrong[0][2]} "
                             f"(returned shapes {returned}; inputs {inputs})")
        return tuple(out)


def _fresh(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with each dict or list one copied (deeply), for one call."""
    return {k: copy.deepcopy(v) if isinstance(v, (dict, list)) else v for k, v in params.items()}


def _forward(self: RuleOp, ctx: RuleContext, *inputs: np.ndarray, **params: Any) -> Any:
    return self.run_forward(ctx, inputs, params)


def _jvp(self: RuleOp, ctx: RuleContext, *tangents: np.ndarray | None) -> np.ndarray:
    """The user's jvp on the tangents (one per input): the output's tangent."""
    rule = type(self).user_jvp
    assert rule is not None
    if self.style == "cache":
        result = rule(ctx.saved[0], *tangents)
    else:
        result = rule(*ctx.saved, *tangents, **ctx.params)
    if isinstance(result, np.generic):
        result = np.asarray(result)
    if not isinstance(result, np.ndarray):
        raise TypeError(f"{self.name}: jvp returned {_describe(result)}; return the output's "
                        f"tangent, a numpy array")
    return result


def _default_name(forward: Fn) -> str:
    """``affine_forward`` -> ``affine`` (through a ``functools.partial`` too); a lambda ->
    ``rule``."""
    while isinstance(forward, functools.partial):
        forward = forward.func
    name = getattr(forward, "__name__", "").removesuffix("_forward").removeprefix("forward_")
    return name if name.isidentifier() else "rule"


def _rule_op(name: str, forward: Fn, backward: Fn, jvp: Fn | None, style: str,
             signature: inspect.Signature, kind: str) -> RuleOp:
    """An instance of a new RuleOp subclass for these functions (not registered). Its
    forward carries the constructed ``signature``, which ``Signature`` reads."""
    def forward_method(self: RuleOp, ctx: RuleContext, *inputs: np.ndarray, **params: Any) -> Any:
        return _forward(self, ctx, *inputs, **params)

    forward_method.__signature__ = signature  # type: ignore[attr-defined]
    body: dict[str, Any] = {
        "__doc__": f"{name}: a hand-written {kind} rule ({getattr(backward, '__qualname__', backward)}), "
                   f"checked by handgrad.engine.testing (not registered).",
        "__module__": getattr(forward, "__module__", __name__),
        "name": name,
        "rule": f"{kind} rule, {style} style",
        "style": style,
        "user_forward": staticmethod(forward),
        "user_backward": staticmethod(backward),
        "forward": forward_method,
    }
    if jvp is not None:
        body["user_jvp"] = staticmethod(jvp)
        body["jvp"] = _jvp
    cls = type(f"{name.title().replace('_', '')}Rule", (RuleOp,), body)
    op = cls()
    assert isinstance(op, RuleOp)
    return op


def _forward_reference(forward: Fn, style: str) -> Fn:
    """Without a reference the user's forward is taken as right (the derivative properties
    check the rules against it): its value, computed on copies of the inputs."""
    def reference(*args: Any, **params: Any) -> Any:
        # A partial's dict argument, as the op's parameters, is a copy for each call
        # (RuleOp.run_forward): the forward may write into it.
        fn = copy.deepcopy(forward) if isinstance(forward, functools.partial) else forward
        result = fn(*[np.array(a, copy=True) for a in args], **_fresh(params))
        return result[0] if style == "cache" else result
    return reference


# --- the public functions ------------------------------------------------------------------

def numpy_rule(forward: Fn, backward: Fn, *, sample: st.SearchStrategy, jvp: Fn | None = None,
               reference: Fn | None = None, name: str | None = None, style: str | None = None,
               kink_examples: Sequence[KinkExample] = (), atol: float | None = None,
               rtol: float | None = None, accurate_to: float | None = 1e-9, why: str = "",
               kind: str = "numpy") -> Rule:
    """A ``Rule`` for a numpy forward and its hand-written backward (and jvp, optional).

    sample:         a hypothesis strategy of ``(args, params)``, as ``OpSpec.sample``
                    (``unary(...)``, ``binary(...)``, ``st.tuples(st.tuples(a, b), st.just({}))``).
    style:          "cache" (``out, cache = forward(...)``; ``backward(dout, cache)``) or
                    "inputs" (``out = forward(...)``; ``backward(dout, *inputs, **params)``);
                    None detects it from ``backward``'s signature.
    reference:      numpy reference of the forward; None takes the forward as right.
    kink_examples, atol, rtol, accurate_to, why: as in ``OpSpec``.
    """
    label = name if name is not None else _default_name(forward)
    if not isinstance(label, str) or not label.strip() or any(c in label for c in ("::", "[", "]")):
        # it names the rule in reports and pytest ids (test_x.py::name[property])
        raise ValueError(f"numpy_rule: name must be a non-empty string without '::', '[' or "
                         f"']' (it names the rule in reports and pytest test ids), got {label!r}")
    if not isinstance(sample, st.SearchStrategy):
        raise TypeError(f"{label}: sample must be a hypothesis strategy of (args, params), got "
                        f"{type(sample).__name__}")
    signature = _op_forward_signature(label, forward)
    if jvp is not None:
        _signature(label, "jvp", jvp)
    if style is None:
        P = inspect.Parameter
        inputs = [p.name for p in list(signature.parameters.values())[2:]
                  if p.kind in (P.POSITIONAL_OR_KEYWORD, P.VAR_POSITIONAL)]
        style = detect_style(label, backward, inputs)
    elif style not in STYLES:
        raise ValueError(f"{label}: style must be 'cache' or 'inputs', got {plain_repr(style)}")
    else:
        _signature(label, "backward", backward)
    op = _rule_op(label, forward, backward, jvp, style, signature, kind)
    spec = OpSpec(label, sample, reference if reference is not None else _forward_reference(forward, style),
                  kinks="see the kink examples" if kink_examples else "none stated",
                  atol=atol, rtol=rtol, accurate_to=accurate_to, why=why,
                  kink_examples=tuple(kink_examples), module=op.__module__)
    return Rule(label, op, spec, kind)


def check(rule: Rule, max_examples: int = 50) -> bool:
    """Run every property on ``max_examples`` samples of ``rule`` (derandomized, as
    ``check_op``), plus its kink examples. Returns True or raises OpCheckError with the
    smallest failing sample hypothesis finds."""
    profile = settings(database=None, derandomize=True, deadline=None)
    report = run_op(rule.op, rule.spec, max_examples=max_examples, profile=profile)
    raise_for(report, f"{rule.kind} rule ")
    return True


def check_rule(forward: Fn, backward: Fn, *, sample: st.SearchStrategy, jvp: Fn | None = None,
               reference: Fn | None = None, name: str | None = None, style: str | None = None,
               kink_examples: Sequence[KinkExample] = (), atol: float | None = None,
               rtol: float | None = None, accurate_to: float | None = 1e-9, why: str = "",
               max_examples: int = 50) -> bool:
    """Check a numpy forward and its hand-written backward (and jvp) with every property
    of the built-in ops: ``check(numpy_rule(...))``. Returns True or raises OpCheckError
    with the shrunk sample. See ``numpy_rule`` for the arguments."""
    rule = numpy_rule(forward, backward, sample=sample, jvp=jvp, reference=reference, name=name,
                      style=style, kink_examples=kink_examples, atol=atol, rtol=rtol,
                      accurate_to=accurate_to, why=why)
    return check(rule, max_examples=max_examples)
