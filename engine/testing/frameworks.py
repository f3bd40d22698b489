"""Checking derivative rules written in PyTorch and JAX with handgrad's property suite.

    import handgrad.engine.testing as T
    T.check_torch(MyCube, sample=T.unary(T.strategies.reals), reference=lambda x: x ** 3)
    T.check_jax(my_cube, sample=T.unary(T.strategies.reals), reference=lambda x: x ** 3)

Each wraps the foreign rule in numpy-in, numpy-out adapters of the CS231n ("cache") style
and hands them to ``rules.numpy_rule``, so every property of the suite applies unchanged:
``out, cache = forward(*inputs, **params)``, ``grads = backward(dout, cache)`` and, when the
framework's rule has a forward mode, ``tangent = jvp(cache, *tangents)``.

* PyTorch (``torch_rule``/``check_torch``): a ``torch.autograd.Function`` subclass, run on
  the CPU in the inputs' precision (float64 samples run in float64, float32 stays
  float32). ``forward``'s arguments without a default are the inputs, those with one
  (``forward(ctx, x, slope=0.01)``) the parameters, drawn by name in the sample's params;
  ``Function.apply`` takes positional arguments only, so they are passed after the
  inputs in forward's order (a missing one keeps its default). The incoming
  gradient and the inputs share memory with handgrad's arrays, so a ``backward`` that
  writes into ``grad_output`` (or a ``forward`` into its input) is caught by the
  no-writes property. The JVP is checked when the Function defines ``jvp`` (forward-mode
  AD through ``torch.autograd.forward_ad``).
* JAX (``jax_rule``/``check_jax``): a function with ``jax.custom_vjp`` or
  ``jax.custom_jvp`` rules, called as ``f(*inputs, **params)`` (its arguments without a
  default are the inputs, the others the parameters): float64 samples inside JAX's x64
  mode (scoped to the call: the user's setting is left as it was), float32 samples in the
  user's own mode (``x64``). The backward is ``jax.vjp``'s pullback; the JVP (``jax.jvp``) is checked unless
  ``f`` is a ``custom_vjp`` function, which has no forward mode (``forward_mode=`` says
  it explicitly for a plain function wrapping one). ``f`` and both rules are
  ``jax.jit``-compiled (per parameters, and by JAX per shape): eagerly each call costs
  milliseconds and the properties make thousands.

torch and jax are imported only when these are called: ``handgrad.engine`` needs neither.
Without them the call raises ``FrameworkMissing`` (a ModuleNotFoundError) naming the extra
to install, ``handgrad[torch]`` or ``handgrad[jax]``.
"""
from __future__ import annotations

import inspect
import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Callable

import numpy as np
from hypothesis import strategies as st

from .properties import FLOAT32_RTOL
from .rules import Rule, check, needs_input_grad, numpy_rule

TORCH_INSTALL = 'pip install "handgrad[torch]"'
JAX_INSTALL = 'pip install "handgrad[jax]"'


class FrameworkMissing(ModuleNotFoundError):
    """check_torch or check_jax was called without PyTorch or JAX installed."""


def _require(module: str, what: str, install: str) -> Any:
    """Import ``module``, or raise FrameworkMissing saying that ``what`` (the functions
    that need it: "check_torch and torch_rule") need it, and what to install."""
    try:
        return import_module(module)
    except ModuleNotFoundError as e:
        if e.name is None or e.name.split(".")[0] != module.split(".")[0]:
            raise
        raise FrameworkMissing(f"{what} need {module.split('.')[0]}, which is not installed: "
                               f"{install}", name=e.name) from None


def _shapes(arrays: Any) -> str:
    return ", ".join(str(tuple(np.shape(a))) for a in arrays)


# --- PyTorch ---------------------------------------------------------------------------------

@dataclass
class TorchCall:
    """What the torch forward adapter keeps for the rules (the cache): the input tensors
    (sharing memory with handgrad's arrays), the parameters as passed, and the output
    tensor with its autograd graph."""

    inputs: tuple[Any, ...]
    params: tuple[Any, ...]
    out: Any
    diff: tuple[int, ...]      # the float inputs' positions (the ones that get gradients)
    needs: tuple[int, ...]     # those that require grad in this call (the others get zeros)


def _shared_tensor(torch: Any, a: Any) -> Any:
    """A CPU tensor sharing ``a``'s memory where torch can (a writeable array with
    non-negative strides), so that writes into it show in handgrad's array; a copy
    otherwise. The dtype is kept."""
    a = np.asarray(a)
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = a.copy()
    return torch.from_numpy(a)


def _numpy_copy(t: Any) -> np.ndarray:
    return np.array(t.detach().cpu().numpy(), copy=True)


def _torch_function(torch: Any, function: Any) -> str:
    """The Function's name; a TypeError for anything but a torch.autograd.Function subclass."""
    if not (isinstance(function, type) and issubclass(function, torch.autograd.Function)):
        owner = getattr(function, "__self__", None)
        hint = (f" (pass the class {owner.__name__}, not {owner.__name__}.apply)"
                if isinstance(owner, type) else "")
        raise TypeError(f"check_torch: expected a torch.autograd.Function subclass, got "
                        f"{function!r}{hint}")
    return function.__name__


def _torch_signature(torch: Any, function: Any, name: str) -> tuple[inspect.Signature, list[inspect.Parameter]]:
    """The adapter's signature, from ``function.forward`` without ``ctx`` (none with
    ``setup_context``): the arguments without a default are the inputs, those with one the
    parameters. Also the parameters, in forward's order (``apply`` passes them positionally)."""
    P = inspect.Parameter
    args = list(inspect.signature(function.forward).parameters.values())
    if function.setup_context is torch.autograd.Function.setup_context:
        args = args[1:]                         # forward(ctx, ...): the old style
    for p in args:
        if p.kind in (P.KEYWORD_ONLY, P.VAR_KEYWORD):
            raise TypeError(f"check_torch: {name}.forward takes {p}, which Function.apply "
                            f"cannot pass (it is positional only): give parameters a default "
                            f"instead (forward(ctx, x, slope=0.01))")
    params = [p for p in args if p.default is not P.empty]
    return inspect.Signature([p.replace(annotation=P.empty) for p in args]), params


class _Returned:
    """What the observed Function's backward returned at its last call."""

    value: Any = None


def _observed(torch: Any, function: Any) -> tuple[Any, _Returned]:
    """A subclass of ``function`` whose backward (or vjp, whichever it defines) is the
    Function's own, keeping what it returns: torch casts each returned gradient to its
    input's dtype before ``autograd.grad`` gives it, which would hide a float32 rule that
    computes in float64 from ``rules_compute_in_float32``."""
    base = torch.autograd.Function
    which = "vjp" if function.vjp is not base.vjp else "backward"
    rule = getattr(function, which)
    returned = _Returned()

    def kept(ctx: Any, *grads: Any) -> Any:
        returned.value = rule(ctx, *grads)
        return returned.value

    return type(function.__name__, (function,), {which: staticmethod(kept)}), returned


def _as_returned(torch: Any, g: Any, raw: Any) -> np.ndarray:
    """Gradient ``g`` as the Function's backward returned it (``raw``): its dtype, and its
    values where torch changed no more than the dtype (torch also sums a gradient of a
    broadcast shape down to its input's)."""
    if not isinstance(raw, torch.Tensor) or raw.dtype == g.dtype:
        return _numpy_copy(g)
    if tuple(raw.shape) == tuple(g.shape):
        return _numpy_copy(raw)
    try:
        dtype = np.dtype(str(raw.dtype).removeprefix("torch."))
    except TypeError:                               # bfloat16: no numpy dtype to show
        return _numpy_copy(g)
    return _numpy_copy(g).astype(dtype)


def _torch_forward(torch: Any, function: Any, name: str,
                   observed: Any) -> Callable[..., tuple[np.ndarray, TorchCall]]:
    signature, params = _torch_signature(torch, function, name)

    def forward(*inputs: Any, **given: Any) -> tuple[np.ndarray, TorchCall]:
        tensors = tuple(_shared_tensor(torch, x) for x in inputs)
        diff = tuple(i for i, t in enumerate(tensors) if t.is_floating_point())
        # As the handgrad call asks (every float input outside one): the Function's
        # ctx.needs_input_grad then says which inputs are constants, as in torch.
        asked = needs_input_grad()
        needs = tuple(i for i in diff if asked is None or asked[i])
        for i in needs:
            tensors[i].requires_grad_(True)
        values = tuple(given.get(p.name, p.default) for p in params)   # positional, in order
        for p, value in zip(params, values, strict=True):
            _not_an_array(f"{name}.forward", p.name, value)
        with torch.enable_grad():
            out = observed.apply(*tensors, *values)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"{name}.forward returned {type(out).__name__}; check_torch "
                            f"checks Functions with one output tensor")
        return _numpy_copy(out), TorchCall(tensors, values, out, diff, needs)

    forward.__signature__ = signature  # type: ignore[attr-defined]
    forward.__module__ = getattr(function, "__module__", __name__)
    return forward


def _torch_backward(torch: Any, name: str,
                    returned: _Returned) -> Callable[[np.ndarray, TorchCall], tuple[np.ndarray | None, ...]]:
    def backward(dout: np.ndarray, cache: TorchCall) -> tuple[np.ndarray | None, ...]:
        out, inputs = cache.out, cache.inputs
        grads: list[np.ndarray | None] = [None] * len(inputs)
        for i in cache.diff:
            grads[i] = np.zeros_like(inputs[i].detach().numpy())
        if not cache.needs:                            # no input asks for a gradient
            return tuple(grads)
        if not out.requires_grad:        # a Function's output requires grad when an input does
            raise ValueError(f"{name}: its output does not require grad although inputs "
                             f"{list(cache.needs)} do: forward marked it non-differentiable "
                             f"(ctx.mark_non_differentiable), so torch gives no gradient to "
                             f"check")
        dout = np.asarray(dout)
        if tuple(dout.shape) != tuple(out.shape):
            raise ValueError(f"{name}: the gradient of the output has shape {dout.shape}, "
                             f"the output {tuple(out.shape)}")
        grad_output = _shared_tensor(torch, dout)      # shared: writes into it are caught
        if grad_output.dtype != out.dtype:
            grad_output = grad_output.to(out.dtype)
        returned.value = None
        try:
            got = torch.autograd.grad(out, [inputs[i] for i in cache.needs], grad_outputs=grad_output,
                                      retain_graph=True, allow_unused=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0]
            hint = ("; backward must return one gradient per input of forward, each of its "
                    "input's shape, None for a parameter"
                    if "invalid gradient" in first or "number of gradients" in first else "")
            raise ValueError(f"{name}.backward failed in torch: {first} (forward's inputs "
                             f"have shapes {_shapes(inputs)}, grad_output "
                             f"{tuple(out.shape)}{hint})") from None
        raw = returned.value if isinstance(returned.value, tuple) else (returned.value,)
        for i, g in zip(cache.needs, got, strict=True):
            # None where the rule returned None: the diagnosis says "no gradient", as for a
            # numpy rule (compared as zeros, it was "unclassified")
            grads[i] = None if g is None else _as_returned(torch, g, raw[i] if i < len(raw) else None)
        return tuple(grads)
    return backward


def _torch_jvp(torch: Any, function: Any, name: str) -> Callable[..., np.ndarray]:
    forward_ad = import_module("torch.autograd.forward_ad")

    def jvp(cache: TorchCall, *tangents: np.ndarray | None) -> np.ndarray:
        args = [t.detach() for t in cache.inputs]
        with warnings.catch_warnings(), forward_ad.dual_level():
            # torch's first dual tensor loads its JVP decompositions through torch.jit.script,
            # which recent torch deprecates: torch's own warning, not the user's.
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                                    category=DeprecationWarning)
            for i in cache.diff:
                if tangents[i] is not None:
                    tangent = _shared_tensor(torch, tangents[i])  # shared: writes are caught
                    args[i] = forward_ad.make_dual(args[i], tangent.to(args[i].dtype))
            out = function.apply(*args, *cache.params)
            tangent_out = forward_ad.unpack_dual(out).tangent
        if tangent_out is None:                  # the output does not depend on the inputs
            return np.zeros_like(out.detach().numpy())
        return _numpy_copy(tangent_out)
    return jvp


def torch_rule(function: Any, *, sample: st.SearchStrategy, reference: Callable[..., Any] | None = None,
               name: str | None = None, **options: Any) -> Rule:
    """A checkable ``Rule`` for the ``torch.autograd.Function`` subclass ``function``: its
    forward, its backward and (when it defines one) its jvp, through numpy adapters.
    ``sample`` draws ``(args, params)`` as for ``check_op``: ``forward``'s arguments with a
    default are the parameters, passed to ``function.apply`` positionally after the inputs,
    in forward's order. ``options`` go to ``numpy_rule`` (kink_examples, atol, rtol,
    accurate_to, why)."""
    torch = _require("torch", "check_torch and torch_rule", TORCH_INSTALL)
    label = _torch_function(torch, function)
    has_jvp = function.jvp is not torch.autograd.Function.jvp
    observed, returned = _observed(torch, function)
    return numpy_rule(_torch_forward(torch, function, label, observed),
                      _torch_backward(torch, label, returned),
                      sample=sample, jvp=_torch_jvp(torch, function, label) if has_jvp else None,
                      reference=reference, name=name or label, style="cache", kind="torch",
                      **options)


def check_torch(function: Any, *, sample: st.SearchStrategy, reference: Callable[..., Any] | None = None,
                name: str | None = None, max_examples: int = 50, **options: Any) -> bool:
    """Check a ``torch.autograd.Function`` subclass with every property of the suite (see
    ``torch_rule``). Returns True or raises OpCheckError with the shrunk failing sample;
    FrameworkMissing when torch is not installed."""
    return check(torch_rule(function, sample=sample, reference=reference, name=name, **options),
                 max_examples=max_examples)


# --- JAX -------------------------------------------------------------------------------------

@dataclass
class JaxCall:
    """What the JAX forward adapter keeps (the cache): the inputs as JAX arrays (a snapshot),
    the parameters and the output's dtype and shape. The VJP and JVP are computed from them
    when a rule is called (compiled once per shape: see ``JaxRunner``)."""

    args: tuple[Any, ...]
    params: dict[str, Any]
    diff: tuple[int, ...]        # the float inputs' positions
    out_dtype: Any
    out_shape: tuple[int, ...]
    out: np.ndarray              # f's output, which the rules' primal outputs must equal
    wide: bool                   # 64-bit inputs: JAX's x64 mode on (``x64``)


def x64(jax: Any, wide: bool) -> AbstractContextManager[Any]:
    """For a sample with float64 (complex128) inputs (``wide``), which JAX would cut to
    float32, JAX's 64-bit mode for the duration of a ``with`` block: ``jax.enable_x64``
    (JAX 0.8 and later), ``jax.experimental.enable_x64`` before; scoped (thread-local), so
    the user's own setting is what it was afterwards. Other samples run in the user's own
    mode (off by default): in 64-bit mode a numpy float64 constant (``np.sqrt(2 / np.pi)``)
    turns float32 arithmetic into float64, and a rule was checked in a precision it never
    runs in (a correct one failed for its float64 output)."""
    if not wide:
        return nullcontext()
    scoped = getattr(jax, "enable_x64", None)
    if scoped is None:
        scoped = import_module("jax.experimental").enable_x64
    return scoped(True)


def _wide(inputs: tuple[Any, ...]) -> bool:
    """Whether a sample needs JAX's 64-bit mode: a float64 or complex128 input."""
    return any(np.asarray(x).dtype in (np.float64, np.complex128) for x in inputs)


def _hashable(value: Any) -> Any:
    """A parameter as a dictionary key (arrays by dtype, shape and bytes)."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, (tuple, list)):
        return (type(value).__name__, tuple(_hashable(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


class JaxRunner:
    """Runs ``f`` for one rule: the forward ``f(*inputs, **params)`` (a ``custom_vjp`` or
    ``custom_jvp`` function evaluates its primal function), the VJP (``jax.vjp``: the
    primal output, which a custom_vjp's fwd or a custom_jvp's rule computes, and the
    pullback of ``dout``) and the JVP (``jax.jvp``: primal and tangent outputs, from the
    custom_jvp rule), each ``jax.jit``-compiled once
    per parameters and float positions (and by JAX per shape and dtype): eagerly a call
    costs milliseconds, and the properties make thousands (finite differences, one
    pullback per row of a Jacobian). So ``f`` and its rules run as in a jitted training
    step: they must be traceable."""

    def __init__(self, jax: Any, f: Callable[..., Any], name: str):
        self.jax, self.f, self.name = jax, f, name
        self.compiled: dict[Any, tuple[Callable[..., Any], ...]] = {}

    def rules(self, args: tuple[Any, ...], params: dict[str, Any]) -> tuple[Callable[..., Any], ...]:
        """The compiled (forward, vjp, jvp) for these inputs' float positions and parameters."""
        diff = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
        key = (diff, len(args), _hashable(params))
        if key not in self.compiled:
            self.compiled[key] = self._compile(diff, params)
        return self.compiled[key]

    def _compile(self, diff: tuple[int, ...], params: dict[str, Any]) -> tuple[Callable[..., Any], ...]:
        jax, f = self.jax, self.f

        def forward(args: tuple[Any, ...]) -> Any:
            return f(*args, **params)

        def of_primals(args: tuple[Any, ...]) -> Callable[..., Any]:
            def g(*primals: Any) -> Any:
                full = list(args)
                for i, p in zip(diff, primals, strict=True):
                    full[i] = p
                return f(*full, **params)
            return g

        def vjp(args: tuple[Any, ...], dout: Any) -> Any:
            primal, pullback = jax.vjp(of_primals(args), *[args[i] for i in diff])
            return primal, pullback(dout)

        def jvp(args: tuple[Any, ...], tangents: tuple[Any, ...]) -> Any:
            return jax.jvp(of_primals(args), tuple(args[i] for i in diff), tangents)

        return jax.jit(forward), jax.jit(vjp), jax.jit(jvp)


def _not_an_array(owner: str, parameter: str, value: Any) -> None:
    """A parameter (an argument with a default) given a floating-point array is a
    TypeError: its gradient would never be checked (PyTorch's own LinearFunction takes
    ``bias=None``, and a wrong bias gradient passed). Integer and boolean arrays (an index,
    a mask) are parameters as any other."""
    if not (hasattr(value, "shape") and hasattr(value, "dtype")) or not len(value.shape):
        return
    floating = value.is_floating_point() if hasattr(value, "is_floating_point") \
        else np.dtype(value.dtype).kind in "fc"
    if floating:
        raise TypeError(f"{owner}: the parameter {parameter!r} was given an array; an argument "
                        f"with a default is a parameter, whose gradient is not checked. Check "
                        f"it as an input: a wrapper whose {parameter} has no default, drawn "
                        f"among the sample's inputs")


def _static_arguments_have_defaults(f: Any, label: str) -> None:
    """A custom_vjp/custom_jvp's static arguments (``nondiff_argnums``) must be parameters
    (arguments with a default, set by the sample's params): drawn as inputs, the checker
    would trace them and JAX would say a Tracer was passed, not what to change."""
    static = tuple(getattr(f, "nondiff_argnums", ()) or ())
    if not static:
        return
    try:
        arguments = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return
    for i in static:
        if i < len(arguments) and arguments[i].default is inspect.Parameter.empty:
            raise TypeError(f"check_jax: {label}'s argument {arguments[i].name!r} is static "
                            f"(nondiff_argnums), so it cannot be an input the checker "
                            f"differentiates around: give it a default (a parameter, set by "
                            f"the sample's params)")


def _jax_forward(jax: Any, runner: JaxRunner) -> Callable[..., tuple[np.ndarray, JaxCall]]:
    name, f = runner.name, runner.f

    def forward(*inputs: Any, **params: Any) -> tuple[np.ndarray, JaxCall]:
        for key, value in params.items():
            _not_an_array(name, key, value)
        wide = _wide(inputs)
        with x64(jax, wide):
            args = tuple(jax.numpy.asarray(x) for x in inputs)        # dtypes kept
            out = runner.rules(args, params)[0](args)
        if not hasattr(out, "shape") or not hasattr(out, "dtype"):
            raise TypeError(f"{name} returned {type(out).__name__}; check_jax checks functions "
                            f"with one output array")
        diff = tuple(i for i, a in enumerate(args) if a.dtype.kind == "f")
        value = np.array(out)
        return value, JaxCall(args, params, diff, out.dtype, tuple(out.shape), value.copy(), wide)

    # f's own signature: its arguments without a default are the inputs, the others the
    # parameters (the sample's params, passed by keyword).
    try:
        forward.__signature__ = inspect.signature(f)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise TypeError(f"check_jax: cannot read the signature of {f!r}; wrap it in a def "
                        f"that names its arguments") from None
    forward.__module__ = getattr(f, "__module__", None) or __name__
    return forward


def _jax_backward(jax: Any, runner: JaxRunner) -> Callable[[np.ndarray, JaxCall], tuple[np.ndarray | None, ...]]:
    name = runner.name

    def backward(dout: np.ndarray, cache: JaxCall) -> tuple[np.ndarray | None, ...]:
        dout = np.asarray(dout)
        if tuple(dout.shape) != cache.out_shape:
            raise ValueError(f"{name}: the gradient of the output has shape {dout.shape}, "
                             f"the output {cache.out_shape}")
        try:
            with x64(jax, cache.wide):
                vjp = runner.rules(cache.args, cache.params)[1]
                primal, got = vjp(cache.args, jax.numpy.asarray(dout, dtype=cache.out_dtype))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: its VJP rule failed in JAX: {e} (the inputs have "
                             f"shapes {_shapes(cache.args)})") from None
        _same_primal(name, "jax.vjp (a custom_vjp's fwd, a custom_jvp's rule)", primal, cache)
        grads: list[np.ndarray | None] = [None] * len(cache.args)
        for i, g in zip(cache.diff, got, strict=True):
            grads[i] = np.array(g)
        return tuple(grads)
    return backward


def _jax_jvp(jax: Any, runner: JaxRunner) -> Callable[..., np.ndarray]:
    def jvp(cache: JaxCall, *tangents: np.ndarray | None) -> np.ndarray:
        with x64(jax, cache.wide):
            ts = tuple(jax.numpy.zeros_like(cache.args[i]) if tangents[i] is None
                       else jax.numpy.asarray(tangents[i], dtype=cache.args[i].dtype)
                       for i in cache.diff)
            try:
                jvp_rule = runner.rules(cache.args, cache.params)[2]
                primal, tangent = jvp_rule(cache.args, ts)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{runner.name}: its JVP rule failed in JAX: {e}") from None
        _same_primal(runner.name, "jax.jvp (the custom_jvp rule)", primal, cache)
        return np.array(tangent)
    return jvp


# The primal output of a rule and f's own output are the same math computed by two
# functions: in float64 a few ulps apart (as the forward and its numpy reference, to
# 1e-12); in float32 within float32 rounding (1e-4, float32_agrees_with_float64's bound),
# relative, and absolute times the inputs' magnitude.
PRIMAL_RTOL = {np.dtype(np.float64): 1e-12}


def _same_primal(name: str, where: str, primal: Any, cache: JaxCall) -> None:
    """The primal output the differentiated ``f`` computes (what ``jax.grad`` and
    ``jax.value_and_grad`` see: the value of a training step) equals ``f``'s output."""
    primal = np.asarray(primal)
    assert primal.shape == cache.out.shape, (
        f"{name}: the primal output of {where} has shape {primal.shape}, f's output "
        f"{cache.out.shape}")
    tol = PRIMAL_RTOL.get(cache.out.dtype, FLOAT32_RTOL)
    magnitude = max([1.0] + [float(np.max(np.abs(np.asarray(cache.args[i])), initial=0))
                             for i in cache.diff])
    np.testing.assert_allclose(
        primal, cache.out, rtol=tol, atol=tol * magnitude,
        err_msg=f"{name}: the primal output of {where} differs from f's output (under "
                f"jax.grad or value_and_grad, in a training step, that is the value)")


def _forward_mode(jax: Any, f: Any, forward_mode: bool | None) -> bool:
    """Whether to check ``f``'s JVP: as given, else all but ``custom_vjp`` functions."""
    if forward_mode is not None:
        return forward_mode
    return not isinstance(f, jax.custom_vjp)


def jax_rule(f: Callable[..., Any], *, sample: st.SearchStrategy, reference: Callable[..., Any] | None = None,
             name: str | None = None, forward_mode: bool | None = None, **options: Any) -> Rule:
    """A checkable ``Rule`` for ``f``, a function with ``jax.custom_vjp`` or
    ``jax.custom_jvp`` rules, called as ``f(*inputs, **params)`` (compiled with ``jax.jit``:
    see ``JaxRunner``): float64 samples in JAX's x64 mode (scoped to each call), float32
    ones in the user's own mode (``x64``).
    Its JVP is checked unless ``f`` is a
    ``custom_vjp`` function or ``forward_mode=False``. ``options`` go to ``numpy_rule``
    (kink_examples, atol, rtol, accurate_to, why)."""
    jax = _require("jax", "check_jax and jax_rule", JAX_INSTALL)
    if not callable(f):
        raise TypeError(f"check_jax: expected a function with jax.custom_vjp or jax.custom_jvp "
                        f"rules, got {f!r}")
    label = str(name or getattr(f, "__name__", None) or getattr(getattr(f, "fun", None), "__name__", "f"))
    _static_arguments_have_defaults(f, label)
    runner = JaxRunner(jax, f, label)
    return numpy_rule(_jax_forward(jax, runner), _jax_backward(jax, runner), sample=sample,
                      jvp=_jax_jvp(jax, runner) if _forward_mode(jax, f, forward_mode) else None,
                      reference=reference, name=label, style="cache", kind="jax", **options)


def check_jax(f: Callable[..., Any], *, sample: st.SearchStrategy, reference: Callable[..., Any] | None = None,
              name: str | None = None, forward_mode: bool | None = None, max_examples: int = 50,
              **options: Any) -> bool:
    """Check a function with JAX custom derivative rules with every property of the suite
    (see ``jax_rule``). Returns True or raises OpCheckError with the shrunk failing sample;
    FrameworkMissing when jax is not installed."""
    return check(jax_rule(f, sample=sample, reference=reference, name=name,
                          forward_mode=forward_mode, **options), max_examples=max_examples)
