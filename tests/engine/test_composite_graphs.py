"""Random expression DAGs built by hypothesis from registered ops, with fan-out (a tensor
used by several later ops), checked end to end against central differences in reverse
mode and forward mode. Per-op checks prove each rule; this proves the engine chains them
(accumulation on fan-out, broadcasting between ops, topological order), through smooth
and non-smooth ops and with constant operands.

Non-smooth ops need their input away from the kink, and inside a random graph that input
is an intermediate value no strategy controls. So the blocks build it at a known distance:
s = P * (0.5 + x * x), with P a constant pattern of signs, is never closer than 0.5 to 0
(relu, leaky_relu, abs), and two such values of opposite signs never tie (maximum,
minimum). For clip(-0.25, 0.25), a pattern of -1, 0, +1 puts each entry either outside
the bounds by >= 0.25 or inside them by >= 0.15 (0.1 tanh(x) where the pattern is 0).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from handgrad import engine
from handgrad.engine.testing import profiles
from handgrad.engine.testing import strategies as S


class Constants(NamedTuple):
    """Constant (n, n) operands, drawn with each example."""

    signs: np.ndarray      # entries -1 or +1
    pattern: np.ndarray    # entries -1, 0 or +1
    values: np.ndarray     # any reals


def away_from_zero(x, c):
    return (x * x + 0.5) * c.signs                       # |s| >= 0.5


# Building blocks that map (n, n) tensors to an (n, n) tensor.
UNARY = {
    "tanh": lambda x, c: x.tanh(),
    "sigmoid": lambda x, c: x.sigmoid(),
    "softplus": lambda x, c: x.softplus(),
    "gelu": lambda x, c: x.gelu(),
    "neg": lambda x, c: -x,
    "square": lambda x, c: x ** 2,
    "exp_tanh": lambda x, c: x.tanh().exp(),
    "softmax": lambda x, c: x.softmax(axis=-1),
    "log_softmax": lambda x, c: x.log_softmax(axis=0),
    "transpose": lambda x, c: x.T,
    "center": lambda x, c: x - x.mean(axis=0, keepdims=True),     # broadcasting in backward
    "scale_rows": lambda x, c: x * x.sum(axis=1, keepdims=True),   # fan-out inside one block
    "lse_shift": lambda x, c: x - engine.logsumexp(x, axis=1, keepdims=True),
    "var_cols": lambda x, c: x + x.var(axis=0),
    "reshape": lambda x, c: x.reshape(-1).reshape(x.shape),
    "slices": lambda x, c: engine.concat([x[1:], x[:1]], axis=0),
    "stack_mean": lambda x, c: engine.stack([x, x.tanh()], axis=0).mean(axis=0),
    # non-smooth, kept off their kinks (see the module docstring)
    "relu": lambda x, c: away_from_zero(x, c).relu(),
    "leaky_relu": lambda x, c: away_from_zero(x, c).leaky_relu(0.1),
    "abs": lambda x, c: away_from_zero(x, c).abs() * x.tanh(),
    "clip": lambda x, c: engine.clip((x * x + 0.5) * c.pattern
                                     + (x.tanh() * 0.1) * (1 - np.abs(c.pattern)),
                                     min=-0.25, max=0.25),
    # constant operands
    "const_mul": lambda x, c: x * c.values,
    "const_add": lambda x, c: c.values + x,
}
BINARY = {
    "add": lambda a, b, c: a + b,
    "sub": lambda a, b, c: a - b,
    "mul": lambda a, b, c: a * b,
    "div": lambda a, b, c: a / (b.softplus() + 1),                 # denominator >= 1
    "matmul": lambda a, b, c: a @ b,
    "linear": lambda a, b, c: engine.linear(a, b, b[0]),
    "where": lambda a, b, c: engine.where(np.eye(a.shape[0], dtype=bool), a, b),
    "row_bcast": lambda a, b, c: a + b[0],                          # (n, n) + (n,)
    # never tied: one side >= 0.5, the other <= -0.5, entry by entry
    "maximum": lambda a, b, c: engine.maximum(away_from_zero(a, c), -away_from_zero(b, c)),
    "minimum": lambda a, b, c: engine.minimum(away_from_zero(a, c), -away_from_zero(b, c)),
    # add sends one gradient array to both operands; the relus' masks alternate (each
    # passes what the previous one blocks), whatever the signs drawn
    "relu_sum": lambda a, b, c: (away_from_zero(a, c).relu() + (-away_from_zero(b, c)).relu()
                                 + away_from_zero(b, c).relu()),
}


@st.composite
def programs(draw):
    """A list of steps (kind, name, operand indices) over a pool that starts with the leaves
    and one constant tensor; operands are drawn with replacement, so tensors get reused
    (fan-out)."""
    n_leaves = draw(st.integers(1, 3))
    steps, pool = [], n_leaves + 1
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), (draw(st.integers(0, pool - 1)),)))
        else:
            operands = (draw(st.integers(0, pool - 1)), draw(st.integers(0, pool - 1)))
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))), operands))
        pool += 1
    return n_leaves, steps


def constants(n):
    signs = hnp.arrays(np.float64, (n, n), elements=st.sampled_from([-1.0, 1.0]))
    pattern = hnp.arrays(np.float64, (n, n), elements=st.sampled_from([-1.0, 0.0, 1.0]))
    return st.builds(Constants, signs, pattern, S.reals((n, n)))


def run(steps, inputs, c):
    pool = list(inputs)
    for kind, name, operands in steps:
        fn = UNARY[name] if kind == "unary" else BINARY[name]
        pool.append(fn(*(pool[i] for i in operands), c))
    # The scalar output also reads an earlier tensor (one more fan-out edge) and the
    # first leaf (so it depends on some leaf even if the last steps read only constants).
    return pool[-1].sum() + 0.5 * (pool[len(pool) // 2] * pool[-1]).mean() + 0.1 * pool[0].sum()


EXAMPLES = 150   # small graphs: about 5 ms each


def check_random_graph(program, n, data):
    n_leaves, steps = program
    leaves = [data.draw(S.reals((n, n), 1.5)) for _ in range(n_leaves)]
    constant = engine.Tensor(data.draw(S.reals((n, n))))          # requires_grad=False
    c = data.draw(constants(n))
    assert engine.gradcheck(lambda *xs: run(steps, xs, c), leaves + [constant], mode="full",
                            check_forward_mode=True)


@settings(max_examples=profiles.examples(EXAMPLES))
@given(program=programs(), n=st.integers(1, 3), data=st.data())
def test_random_graph_gradients_match_finite_differences(program, n, data):
    check_random_graph(program, n, data)
