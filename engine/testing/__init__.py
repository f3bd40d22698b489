"""Testing tools: hypothesis strategies for op inputs and one test spec per op."""
from . import strategies
from .specs import SPECS, OpSpec, spec, spec_for

__all__ = ["strategies", "SPECS", "OpSpec", "spec", "spec_for"]
