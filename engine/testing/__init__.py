"""Testing tools: hypothesis strategies for op inputs, one test spec per op, the
properties every op must have, and ``check_op`` to run them on an op of your own."""
from . import strategies
from .check import OpCheckError, check_op
from .properties import PROPERTIES
from .specs import SPECS, OpSpec, binary, reduction, spec, spec_for, unary

__all__ = ["strategies", "SPECS", "OpSpec", "spec", "spec_for", "unary", "binary", "reduction",
           "PROPERTIES", "check_op", "OpCheckError"]
