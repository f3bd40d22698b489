"""handgrad's engine: tensors, an explicit compute graph, and ops that carry their own
forward, backward (VJP) and forward-mode (JVP) rules."""
from .broadcast import sum_to, unbroadcast
from .graph import (Node, detect_anomaly, enable_grad, is_grad_enabled, name_scope, no_grad,
                    topological_order)
from .tensor import Tensor, as_tensor  # first: tensor.py pulls in op.py and the ops
from .op import REGISTRY, Op, register, unregister
from .ops import *  # noqa: F401,F403  (every op is a function of the engine namespace)
from .ops import __all__ as _ops_all
from .transforms import grad, jvp, vjp
from .gradcheck import GradcheckError, gradcheck, jvpcheck
from .viz import GraphvizNotFound, backward_frames, draw, render, save_backward_html

__version__ = "0.1.0"

__all__ = ["Tensor", "as_tensor", "Node", "Op", "REGISTRY", "register", "unregister", "no_grad",
           "enable_grad", "is_grad_enabled", "detect_anomaly", "name_scope", "topological_order",
           "grad", "jvp", "vjp", "gradcheck", "jvpcheck", "GradcheckError",
           "draw", "backward_frames", "save_backward_html", "render", "GraphvizNotFound", "sum_to", "unbroadcast", *_ops_all]
