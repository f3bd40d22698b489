"""What a picture of the graph is made of: every tensor and op node reachable from a root,
in a fixed order, with stable ids, display names, kinds and module scopes.

Ids come from positions in a topological order (``t0, t1, ...`` for tensors, ``op0, op1,
...`` for op nodes), never from Python's ``id()``, so the same graph built twice gives the
same DOT text.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from ..graph import Node, topological_order
from ..memory import forward_change
from ..tensor import Tensor
from . import labels

# Tensor kinds, each drawn in its own style (see styles.py).
ROOT, PARAMETER, LEAF, DATA, INTERMEDIATE = "root", "parameter", "leaf", "data", "intermediate"


def is_parameter(tensor: Tensor) -> bool:
    """True for an ``nn.Parameter``, recognised by class name: the engine must not import nn."""
    return any(cls.__name__ == "Parameter" for cls in type(tensor).__mro__)


@dataclass
class GraphView:
    """The graph below ``root`` as the drawing code sees it."""

    root: Tensor
    model: Any = None
    tensors: list[Tensor] = field(default_factory=list)      # inputs before outputs
    nodes: list[Node] = field(default_factory=list)          # op nodes, same order
    ids: dict[int, str] = field(default_factory=dict)        # id(tensor or node) -> "t3", "op1"
    output: dict[int, Tensor] = field(default_factory=dict)  # id(node) -> the tensor it made
    param_names: dict[int, str] = field(default_factory=dict)  # id(param) -> "layers.0.weight"
    users: dict[int, list[Node]] = field(default_factory=dict)  # id(tensor) -> nodes using it
    lecture: dict[int, str] = field(default_factory=dict)  # id(tensor) -> "z¹", "W¹", "L" (an MLP)

    def dot_id(self, item: Tensor | Node) -> str:
        """The DOT node id: "t3" for a tensor, "op1" for an op node."""
        return self.ids[id(item)]

    def own_name(self, tensor: Tensor) -> str | None:
        """The model's dotted parameter name, else ``tensor.name`` (None: neither), on one
        line (``labels.one_line``)."""
        own = self.param_names.get(id(tensor)) or tensor.name
        return labels.one_line(own) if own else None

    def base_name(self, tensor: Tensor) -> str:
        """``own_name``, else the id."""
        return self.own_name(tensor) or self.dot_id(tensor)

    def symbol(self, tensor: Tensor) -> str:
        """The name a formula uses: the lecture's symbol (``z¹``, ``W¹``) in an MLP, ``L``
        for a scalar root with a graph (the loss the gradients are of), else ``base_name``."""
        if tensor is self.root and tensor.node is not None and tensor.size == 1:
            return "L"
        return self.lecture.get(id(tensor)) or self.base_name(tensor)

    def name(self, tensor: Tensor) -> str:
        """The name a box shows: in an MLP the lecture's symbol, with the code's own name
        when there is one ("W¹ = layers.0.weight", "x = a⁰"); else ``base_name``."""
        symbol = self.lecture.get(id(tensor))
        if symbol is None:
            return self.base_name(tensor)
        own = self.own_name(tensor)
        if symbol == "a⁰":                       # the input: "x = a⁰", as lectures write it
            # unless parameters of the model are outside the chain: frozen layers before
            # it may have computed a⁰ (without a graph), and it is not the model's input x
            outside = any(i not in self.lecture for i in self.param_names)
            return f"{own} = a⁰" if own else ("a⁰" if outside else "x = a⁰")
        return f"{symbol} = {own}" if own and own != symbol else symbol

    def kind(self, tensor: Tensor) -> str:
        if tensor is self.root and tensor.node is not None:
            return ROOT                    # a tensor without a graph is not "the loss"
        if tensor.node is not None:
            return INTERMEDIATE
        if id(tensor) in self.param_names or is_parameter(tensor):
            return PARAMETER
        return LEAF if tensor.requires_grad else DATA

    def scope(self, item: Tensor | Node) -> str | None:
        """The module path a node or tensor belongs to (None: outside every module), on
        one line (``labels.one_line``).

        An op node has the scope it was created in and its output shares it. A parameter
        belongs to the module that owns it (from ``model``) or, without a model, to the
        one scope all its consumers share. Other leaves (inputs, even ones that require
        grad, and data) stay outside every module.
        """
        scope = self._scope(item)
        return labels.one_line(scope) if scope else None

    def _scope(self, item: Tensor | Node) -> str | None:
        if isinstance(item, Node):
            return item.scope
        if item.node is not None:
            return item.node.scope
        name = self.param_names.get(id(item))
        if name is not None:
            return name.rpartition(".")[0] or None
        if not is_parameter(item):
            return None
        scopes = {n.scope for n in self.consumers(item)}
        return scopes.pop() if len(scopes) == 1 else None

    def consumers(self, tensor: Tensor) -> list[Node]:
        """The op nodes that take ``tensor`` as an input."""
        return self.users.get(id(tensor), [])

    @cached_property
    def modules(self) -> dict[str, Any]:
        """Scope (as ``scope`` gives it) -> module, when a model was given."""
        if self.model is None:
            return {}
        return {labels.one_line(name): m for name, m in self.model.named_modules()}

    @property
    def alive(self) -> bool:
        """True while no backward() has freed the buffers the rules need."""
        return not any(n.freed for n in self.nodes)


def build_view(root: Tensor, model: Any = None) -> GraphView:
    """Walk the graph below ``root`` and number everything in topological order."""
    if not isinstance(root, Tensor):
        raise TypeError(f"draw: expected a Tensor, got {type(root).__name__}")
    view = GraphView(root=root, model=model)
    if model is not None:
        view.param_names = {id(p): name for name, p in model.named_parameters()}
    view.tensors = topological_order([root], everything=True)  # constants and labels too
    from .lecture import lecture_names  # lecture.py reads the layers, which need this module
    view.lecture = lecture_names(root)
    for i, t in enumerate(view.tensors):
        view.ids[id(t)] = f"t{i}"
        if t.node is not None:
            view.ids[id(t.node)] = f"op{len(view.nodes)}"
            view.output[id(t.node)] = t
            view.nodes.append(t.node)
            for inp in t.node.inputs:
                users = view.users.setdefault(id(inp), [])
                if t.node not in users:
                    users.append(t.node)
    check_one_point(view)
    return view


def check_one_point(view: GraphView) -> None:
    """Refuse a graph whose tensors changed after the forward pass that read them
    (``memory.forward_change``: an optimizer step, ``t.data = new``, ...). Its values,
    the forward's results and the gradients would belong to two different points (new
    weights next to a gradient and activations of the old ones), and a numeric check
    would blame an exact gradient. ValueError naming the tensor."""
    for node in view.nodes:
        for t in (*node.inputs, view.output[id(node)]):
            how = forward_change(node, t)
            if how is not None:
                verb = "may have changed" if how.startswith("its array was handed out") \
                    else "changed"
                raise ValueError(
                    f"cannot draw this graph: {view.name(t)} {verb} after the forward pass "
                    f"that read it: {how}. The picture would mix its new values with the "
                    f"forward values and gradients of the old ones. Run the forward pass "
                    f"again (e.g. loss = loss_fn(model(x), y)) and draw the new loss.")
