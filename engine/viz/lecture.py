"""The op view as a lecture tells it: tensors named with the lecture's symbols (x = a⁰,
z¹, a¹, …, L) and each backward step's local rule written with the batch's own numbers.

Every number comes from the engine: the gradients its backward walker sent
(``gradients.Step``) and f′ through the engine's own backward. A formula is written with
"=" only when it holds: its right-hand side is recomputed here with numpy from the
recorded forward values and compared with the engine's value against the rounding the
engine's dtype allows; a formula that does not hold is shown as "differs". An op without
a value form gets its rule in words and the shapes it sends, never made-up numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..graph import Node
from ..tensor import Tensor
from . import labels, losses, measures
from .layers import mlp_layers, sup

CAPTION_NUMBERS = 6       # numbers a caption shows of one array before "…"


def lecture_names(root: Tensor) -> dict[int, str]:
    """id(tensor) -> its symbol in a lecture on MLPs: the input a⁰, each layer's zˡ, aˡ,
    Wˡ and bˡ, the targets y and the loss L; empty unless ``root`` is a fused loss on an
    MLP chain (``mlp_layers``)."""
    try:
        layers = mlp_layers(root)
    except ValueError:
        return {}
    assert root.node is not None                 # mlp_layers found the loss node
    names = {id(layers[0].a_prev): "a⁰", id(root): "L"}
    if len(root.node.inputs) > 1:
        names[id(root.node.inputs[1])] = "y"
    # A weight or bias shared by several layers (tied) is named after each of them, W¹,³:
    # its gradient is the sum of their parts, which W³ alone would not say.
    uses: dict[int, tuple[str, list[int]]] = {}
    for layer in layers:
        s = sup(layer.index)
        names.update({id(layer.z): f"z{s}"})
        for letter, t in (("W", layer.W), ("b", layer.b)):
            if t is not None:
                uses.setdefault(id(t), (letter, []))[1].append(layer.index)
        if layer.a is not None:
            names[id(layer.a)] = f"a{s}"
    for key, (letter, indices) in uses.items():
        names[key] = letter + ",".join(sup(i) for i in indices)
    return names


def delta_symbol(symbol: str) -> str:
    """The gradient of a tensor named ``symbol``, as the lecture writes it: δˡ for zˡ."""
    if symbol.startswith("z") and len(symbol) > 1 and all(c in "⁰¹²³⁴⁵⁶⁷⁸⁹" for c in symbol[1:]):
        return "δ" + symbol[1:]
    return f"∂L/∂{symbol}"


# --- numbers in one line ---------------------------------------------------------------------

def inline(a: np.ndarray, limit: int = CAPTION_NUMBERS) -> str:
    """An array on one line in 4 significant digits, nested as its axes are, at most
    ``limit`` numbers ("…" for the rest; a big array also says its shape)."""
    a = np.asarray(a)
    if a.ndim == 0:
        return labels.number(a.item())
    left = [limit]

    def text(x: np.ndarray) -> str:
        parts = []
        for item in x:
            if left[0] <= 0:
                parts.append("…")
                break
            if x.ndim == 1:
                parts.append(labels.number(item))
                left[0] -= 1
            else:
                parts.append(text(item))
        return "[" + ", ".join(parts) + "]"

    body = text(a)
    return body if a.size <= limit else f"{body} {labels.shape_text(a.shape)}"


# --- a clause: "lhs = formula = values", checked ---------------------------------------------

@dataclass
class Clause:
    """One equation of a step: ``lhs = formula = value``. ``value`` is the engine's;
    ``rhs`` the formula recomputed with numpy (None: no formula, the value alone);
    ``scale`` the formula on absolute values and ``terms`` the numbers summed into one
    entry, for the rounding tolerance."""

    lhs: str
    formula: str | None
    value: np.ndarray
    rhs: np.ndarray | None = None
    scale: np.ndarray | None = None
    terms: int = 1

    def tolerance(self) -> float:
        """How far ``rhs`` (float64) may lie from the engine's value by rounding alone."""
        dtype = np.asarray(self.value).dtype
        eps = float(np.finfo(dtype if dtype.kind == "f" else np.float64).eps)
        base = self.rhs if self.scale is None else self.scale
        if base is None:
            return 0.0
        return 8 * (self.terms + 2) * eps * measures.finite_max(base)

    def agreement(self) -> measures.Agreement | None:
        """How the formula compares with the engine's value (None: no formula): equal
        with NaN and infinities at the same places and finite entries within the
        tolerance."""
        if self.rhs is None:
            return None
        return measures.agreement(self.rhs, self.value, self.tolerance())

    def holds(self) -> bool:
        """True when the formula gives the engine's value (or there is no formula)."""
        found = self.agreement()
        return found is None or found.equal

    def text(self, limit: int = CAPTION_NUMBERS) -> str:
        value = inline(self.value, limit)
        if self.formula is None or self.rhs is None:
            return f"{self.lhs} = {value}"
        found = self.agreement()
        if found is None or found.equal:
            return f"{self.lhs} = {self.formula} = {value}"
        rhs = np.asarray(self.rhs, np.float64)
        gap = (found.gap() if rhs.shape == np.shape(self.value)
               else f"shape {labels.shape_text(rhs.shape)}")
        return (f"{self.lhs} = {value} (engine), but {self.formula} = {inline(rhs, limit)} "
                f"differs ({gap})")


# --- each op's local rule with values --------------------------------------------------------

@dataclass
class Context:
    """What a rule with values needs: the node, the names, the gradients."""

    node: Node
    out: Tensor                              # the node's output
    grad: np.ndarray                         # ∂L/∂out, the gradient the rule receives
    sent: Sequence[np.ndarray | None]        # what the rule sent to each input (the engine's)
    symbol: Callable[[Tensor], str]          # tensor -> the name formulas use
    shared: Callable[[Tensor], bool]         # True: the tensor feeds more than this one use

    @property
    def g(self) -> str:
        """The symbol of the incoming gradient: "δ²", "∂L/∂a¹"."""
        return delta_symbol(self.symbol(self.out))

    def x(self, i: int) -> np.ndarray:
        return np.asarray(self.node.inputs[i]._data, dtype=np.float64)

    def lhs(self, i: int) -> str:
        """What input i receives: its whole gradient, or, when it has other uses too, this
        op's part of it (the parts add up once every use has run)."""
        t = self.node.inputs[i]
        whole = delta_symbol(self.symbol(t))
        used_twice = sum(u is t for u in self.node.inputs) > 1
        return f"{whole} (this op's part)" if self.shared(t) or used_twice else whole


def derivative(node: Node) -> np.ndarray:
    """f′ at the node's input for an elementwise activation node (with its parameters),
    through the engine's own backward: the gradient of Σ f(z) is f′(z) elementwise."""
    from ..transforms import grad

    z = Tensor(node.inputs[0]._data, requires_grad=True)
    (d,) = grad(node.op.apply(z, **node.params).sum(), [z])
    return d


# f′ written as a formula of the activation's output a (or its input z) where one exists
Formula = Callable[[np.ndarray, np.ndarray], np.ndarray]
# Each activation's f′ as text and as a function of (z, a), and that function on absolute
# values (``Clause.scale``): 1 − a² rounds on the scale of 1 + a², not of its own tiny
# value where every unit saturates.
ACTIVATION_FORMULAS: dict[str, tuple[str, Formula, Formula]] = {
    "tanh": ("1 − ({a})²", lambda z, a: 1 - a * a, lambda z, a: 1 + a * a),
    "sigmoid": ("{a}(1 − {a})", lambda z, a: a * (1 - a), lambda z, a: np.abs(a) * (1 + np.abs(a))),
    "relu": ("[{z} > 0]", lambda z, a: (z > 0).astype(np.float64), lambda z, a: np.ones_like(a)),
}
ELEMENTWISE_ACTIVATIONS = ("tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus", "gelu")


def activation_clauses(c: Context) -> list[Clause]:
    """f′(z) (its formula where it has one, else its values alone), then the chain rule."""
    if c.sent[0] is None:
        return []
    name, z_sym, a_sym = c.node.op.name, c.symbol(c.node.inputs[0]), c.symbol(c.out)
    fprime = derivative(c.node)
    f = {"sigmoid": "σ"}.get(name, name)
    lhs = f"{f}′({z_sym})"
    if name in ACTIVATION_FORMULAS:
        text, formula, on_magnitudes = ACTIVATION_FORMULAS[name]
        z, a = c.x(0), np.asarray(c.out._data, np.float64)
        first = Clause(lhs, text.format(a=a_sym, z=z_sym), fprime, formula(z, a),
                       scale=on_magnitudes(z, a))
    else:
        first = Clause(lhs, None, fprime)
    chain = Clause(c.lhs(0), f"{c.g} ⊙ {lhs}", c.sent[0], np.asarray(c.grad, np.float64) * fprime)
    return [first, chain]


def sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` summed over the axes numpy broadcast it along to reach its shape from ``shape``."""
    a = np.asarray(a, dtype=np.float64)
    lead = a.ndim - len(shape)
    a = a.sum(axis=tuple(range(lead))) if lead > 0 else a
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


def broadcast_note(c: Context, i: int) -> str:
    """" summed over its broadcast axes" when input i is smaller than the output."""
    return "" if c.node.inputs[i].shape == c.out.shape else ", summed over the broadcast axes"


def elementwise_clauses(c: Context) -> list[Clause]:
    """add, sub, mul, div, neg: each input's gradient from the incoming one."""
    name, g = c.node.op.name, np.asarray(c.grad, np.float64)
    syms = [c.symbol(t) for t in c.node.inputs]
    forms: dict[str, list[tuple[str, Callable[[], np.ndarray]]]] = {
        "add": [(c.g, lambda: g), (c.g, lambda: g)],
        "sub": [(c.g, lambda: g), (f"−{c.g}", lambda: -g)],
        "mul": [(f"{c.g} ⊙ {syms[-1]}", lambda: g * c.x(1)),
                (f"{c.g} ⊙ {syms[0]}", lambda: g * c.x(0))],
        "div": [(f"{c.g} / {syms[-1]}", lambda: g / c.x(1)),
                (f"−{c.g} ⊙ {syms[0]} / {syms[-1]}²", lambda: -g * c.x(0) / c.x(1) ** 2)],
        "neg": [(f"−{c.g}", lambda: -g)],
    }
    out = []
    for i, (text, rhs) in enumerate(forms[name]):
        sent = c.sent[i] if i < len(c.sent) else None
        if sent is not None:
            out.append(Clause(c.lhs(i), text + broadcast_note(c, i), sent,
                              sum_to(rhs(), c.node.inputs[i].shape)))
    return out


def reduction_clauses(c: Context) -> list[Clause]:
    """sum and mean: the incoming gradient copied back (and divided by n for a mean)."""
    if c.sent[0] is None:
        return []
    x = c.node.inputs[0]
    axis, keepdims = c.node.params.get("axis"), c.node.params.get("keepdims", False)
    axes = tuple(range(x.ndim)) if axis is None else tuple(
        a % x.ndim for a in (axis if isinstance(axis, tuple) else (axis,)))
    g = np.asarray(c.grad, np.float64)
    spread = np.broadcast_to(g if keepdims else np.expand_dims(g, axes), x.shape)
    if c.node.op.name == "sum":
        return [Clause(c.lhs(0), f"{c.g} copied to every summed entry", c.sent[0], spread)]
    n = int(np.prod([x.shape[a] for a in axes]))
    # "/ 12", not "/ n, n = 12": the caption goes on "= <values>", which would read 12 = [[…]]
    return [Clause(c.lhs(0), f"{c.g} / {n}", c.sent[0], spread / n)]


def product_clauses(c: Context) -> list[Clause]:
    """linear (z = a W + b) and matmul of two matrices: the lecture's BP3/BP4 and δ Wᵀ."""
    a, W = c.x(0), c.x(1)
    g = np.asarray(c.grad, np.float64)
    if c.node.op.name == "matmul" and (a.ndim != 2 or W.ndim != 2):
        return []                                   # batched or vector: the rule in words
    a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
    sa, sw = c.symbol(c.node.inputs[0]), c.symbol(c.node.inputs[1])
    out = []
    if c.sent[0] is not None:
        out.append(Clause(c.lhs(0), f"{c.g} {sw}ᵀ", c.sent[0], (g2 @ W.T).reshape(a.shape),
                          (np.abs(g2) @ np.abs(W.T)).reshape(a.shape), W.shape[1]))
    if c.sent[1] is not None:
        out.append(Clause(c.lhs(1), f"{sa}ᵀ {c.g}", c.sent[1], a2.T @ g2,
                          np.abs(a2.T) @ np.abs(g2), a2.shape[0]))
    if len(c.sent) > 2 and c.sent[2] is not None:
        out.append(Clause(c.lhs(2), f"Σₙ {c.g}", c.sent[2], g2.sum(axis=0),
                          np.abs(g2).sum(axis=0), g2.shape[0]))
    return out


def loss_clauses(c: Context) -> list[Clause]:
    """A fused loss (its delta for its reduction, p·Σy when targets do not sum to 1) or mse;
    a reduction="none" loss gets its rule in words."""
    reduction = c.node.params.get("reduction", "mean")
    g = float(np.asarray(c.grad).reshape(-1)[0]) if np.size(c.grad) == 1 else None
    if reduction == "none" or g is None:
        return []
    times = "" if g == 1 else f"{c.g} · "
    if c.node.op.name == "mse":
        pred, target = c.x(0), c.x(1)
        n = pred.size if reduction == "mean" else 1
        over = f"/{n}" if n != 1 else ""
        forms = [(f"{times}2 ({c.symbol(c.node.inputs[0])} − {c.symbol(c.node.inputs[1])}){over}",
                  g * 2 * (pred - target) / n),
                 (f"{times}−2 ({c.symbol(c.node.inputs[0])} − {c.symbol(c.node.inputs[1])}){over}",
                  -g * 2 * (pred - target) / n)]
        return [Clause(c.lhs(i), text, sent, np.broadcast_to(rhs, c.node.inputs[i].shape))
                for i, ((text, rhs), sent) in enumerate(zip(forms, c.sent, strict=True)) if sent is not None]
    delta = losses.output_delta(c.node)
    core = ("σ(z) − y" if c.node.op.name == "sigmoid_binary_cross_entropy"
            else "p − y" if delta.y_sum is None else "p·Σy − y")
    formula = (f"{times}({core})/{labels.number(delta.N)}" if delta.N != 1
               else f"{times}({core})")
    sent = c.sent[0]
    if sent is None:
        return []
    return [Clause(c.lhs(0), formula, sent, g * delta.rhs(),
                   g * (np.abs(delta.p if delta.y_sum is None else delta.p * delta.y_sum)
                        + np.abs(delta.y)) / delta.N, 2)]


RULES: dict[str, Callable[[Context], list[Clause]]] = {
    **{name: activation_clauses for name in ELEMENTWISE_ACTIVATIONS},
    **{name: elementwise_clauses for name in ("add", "sub", "mul", "div", "neg")},
    "sum": reduction_clauses, "mean": reduction_clauses,
    "linear": product_clauses, "matmul": product_clauses,
    **{name: loss_clauses for name in (*losses.FUSED_LOSSES, "mse")},
}


def step_clauses(node: Node, out: Tensor, grad: np.ndarray, sent: Sequence[np.ndarray | None],
                 symbol: Callable[[Tensor], str], shared: Callable[[Tensor], bool]
                 ) -> list[Clause]:
    """The equations of one backward step with the engine's values ([] when the op's rule
    has no value form here)."""
    rule = RULES.get(node.op.name)
    if rule is None:
        return []
    with np.errstate(all="ignore"):    # inf · 0 in a recomputed formula is the NaN it shows
        return rule(Context(node, out, grad, sent, symbol, shared))
