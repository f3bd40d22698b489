"""handgrad's engine: tensors, an explicit compute graph, and ops that carry their own
forward, backward (VJP) and forward-mode (JVP) rules.

``from handgrad import engine`` needs numpy alone. Pictures live in ``engine.viz``
(graphviz) and the property-based test tools in ``engine.testing`` (hypothesis); both load
on first attribute access. Every registered op is ``engine.<name>`` (``engine.exp``,
``engine.softmax_cross_entropy``).
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .tensor import Tensor, as_tensor, from_numpy, inplace  # first: tensor.py pulls in op.py
from .broadcast import sum_to
from .graph import Node, backward_steps, topological_order
from .modes import (current_scope, detect_anomaly, enable_grad, is_anomaly_enabled,
                    is_grad_enabled, name_scope, no_grad, pop_scope, push_scope,
                    set_grad_enabled)
from .op import REGISTRY, Op, register, unregister
from . import ops  # noqa: F401  (registers every built-in op as engine.<name>)
from .transforms import grad, jvp, vjp
from .gradcheck import GradcheckError, gradcheck, jvpcheck
from .capture import CaptureError, Plan, capture

from .. import __version__

__all__ = ["Tensor", "as_tensor", "from_numpy", "inplace", "Node", "Op", "REGISTRY",
           "register", "unregister", "no_grad", "enable_grad", "set_grad_enabled",
           "is_grad_enabled", "detect_anomaly", "is_anomaly_enabled", "name_scope",
           "push_scope", "pop_scope", "current_scope", "topological_order", "backward_steps", "grad", "jvp", "vjp",
           "gradcheck", "jvpcheck", "GradcheckError", "sum_to", "capture", "Plan", "CaptureError", *sorted(REGISTRY)]


_SUBPACKAGES = ("viz", "testing")      # loaded on first attribute access: engine.viz.draw(...)


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
