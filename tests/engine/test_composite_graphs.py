"""Random expression DAGs built by hypothesis from registered ops, with fan-out (a tensor
used by several later ops), checked end to end against central differences in reverse
mode and forward mode. Per-op checks prove each rule; this proves the engine chains them
(accumulation on fan-out, broadcasting between ops, topological order)."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import engine
from engine.testing import strategies as S

# Building blocks that map (n, n) tensors to an (n, n) tensor and are smooth on all reals.
UNARY = {
    "tanh": lambda x: x.tanh(),
    "sigmoid": lambda x: x.sigmoid(),
    "softplus": lambda x: x.softplus(),
    "gelu": lambda x: x.gelu(),
    "neg": lambda x: -x,
    "square": lambda x: x ** 2,
    "exp_tanh": lambda x: x.tanh().exp(),
    "softmax": lambda x: x.softmax(axis=-1),
    "log_softmax": lambda x: x.log_softmax(axis=0),
    "transpose": lambda x: x.T,
    "center": lambda x: x - x.mean(axis=0, keepdims=True),        # broadcasting in backward
    "scale_rows": lambda x: x * x.sum(axis=1, keepdims=True),      # fan-out inside one block
    "lse_shift": lambda x: x - engine.logsumexp(x, axis=1, keepdims=True),
    "var_cols": lambda x: x + x.var(axis=0),
    "reshape": lambda x: x.reshape(-1).reshape(x.shape),
    "slices": lambda x: engine.concat([x[1:], x[:1]], axis=0),
    "stack_mean": lambda x: engine.stack([x, x.tanh()], axis=0).mean(axis=0),
}
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (b.softplus() + 1),                    # denominator >= 1
    "matmul": lambda a, b: a @ b,
    "linear": lambda a, b: engine.linear(a, b, b[0]),
    "where": lambda a, b: engine.where(np.eye(a.shape[0], dtype=bool), a, b),
    "row_bcast": lambda a, b: a + b[0],                             # (n, n) + (n,)
}


@st.composite
def programs(draw):
    """A list of steps (kind, name, operand indices) over a pool that starts with the leaves;
    operands are drawn with replacement, so tensors get reused (fan-out)."""
    n_leaves = draw(st.integers(1, 3))
    steps, pool = [], n_leaves
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            steps.append(("unary", draw(st.sampled_from(sorted(UNARY))), (draw(st.integers(0, pool - 1)),)))
        else:
            operands = (draw(st.integers(0, pool - 1)), draw(st.integers(0, pool - 1)))
            steps.append(("binary", draw(st.sampled_from(sorted(BINARY))), operands))
        pool += 1
    return n_leaves, steps


def run(steps, leaves):
    pool = list(leaves)
    for kind, name, operands in steps:
        fn = UNARY[name] if kind == "unary" else BINARY[name]
        pool.append(fn(*(pool[i] for i in operands)))
    # The scalar output also reads an earlier tensor: one more fan-out edge.
    return pool[-1].sum() + 0.5 * (pool[len(pool) // 2] * pool[-1]).mean()


@settings(max_examples=60)
@given(program=programs(), n=st.integers(1, 3), data=st.data())
def test_random_graph_gradients_match_finite_differences(program, n, data):
    n_leaves, steps = program
    leaves = [data.draw(S.reals((n, n), 1.5)) for _ in range(n_leaves)]
    assert engine.gradcheck(lambda *xs: run(steps, xs), leaves, mode="full",
                            check_forward_mode=True)
