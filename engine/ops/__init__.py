"""Every op handgrad knows, one family a module. ``REGISTRY`` maps each op's name to it."""
from ..op import REGISTRY, Op, register, unregister
from .activation import (dropout, dropout_op, elu, gelu, leaky_relu, log_softmax, relu, sigmoid,
                         softmax, softplus, tanh)
from .elementwise import (abs, add, clip, div, exp, log, maximum, minimum, mul, neg, pow_scalar,
                          pow_tensor, power, sqrt, sub, where)
from .linalg import linear, matmul
from .loss import mse, sigmoid_binary_cross_entropy, softmax_cross_entropy
from .reduce import logsumexp, max, mean, min, sum, var
from .shape import broadcast_to, concat, flatten, getitem, permute, reshape, stack, transpose

pow = power

__all__ = [
    "REGISTRY", "Op", "register", "unregister",
    "add", "sub", "mul", "div", "neg", "power", "pow", "pow_tensor", "pow_scalar", "exp", "log",
    "sqrt", "abs", "maximum", "minimum", "clip", "where",
    "matmul", "linear",
    "transpose", "permute", "reshape", "flatten", "getitem", "concat", "stack", "broadcast_to",
    "sum", "mean", "max", "min", "var", "logsumexp",
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "gelu", "softmax", "log_softmax",
    "dropout", "dropout_op",
    "mse", "softmax_cross_entropy", "sigmoid_binary_cross_entropy",
]
