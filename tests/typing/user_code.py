"""Code a user writes with handgrad, type-checked with ``mypy --strict`` by .ci/typecheck
(not run by pytest): each line once failed to type-check although it runs, because of an
annotation in handgrad that was wrong or too narrow."""
from __future__ import annotations

import numpy as np

from handgrad import engine, nn

X = np.random.default_rng(0).standard_normal((8, 3))
W = engine.Tensor(np.ones((3, 2)), requires_grad=True)
b = engine.Tensor(np.zeros(2), requires_grad=True)

# A numpy array on the left of an operator gives a Tensor (it was typed as an ndarray).
logits: engine.Tensor = X @ W + b
shifted: engine.Tensor = np.ones((8, 2)) - logits
mask: engine.Tensor = np.zeros((8, 2)) < logits

# Op inputs: a list of labels, a numpy scalar.
loss = engine.softmax_cross_entropy(engine.maximum(logits, np.float32(0)), [0, 1, 1, 0, 1, 0, 0, 1])
loss.backward()

# The README's update by hand: an in-place operator returns the tensor itself.
with engine.no_grad():
    for p in (W, b):
        assert p.grad is not None
        p -= 0.1 * p.grad

# train() and eval() return the model itself, with its own type.
model: nn.MLP = nn.MLP([3, 4, 2], seed=0).eval()
model = model.train()
nn.CrossEntropyLoss()(model(engine.Tensor(X)), np.zeros(8, np.int64)).backward()
with engine.no_grad():
    for q in model.parameters():          # Parameters: -= keeps the type
        if q.grad is not None:
            q -= 0.1 * q.grad

# Hand-built tensors for the helpers that take parameters; Adam's betas as a list.
penalty: engine.Tensor = nn.l2_penalty([W, b], weight_decay=1e-4)
norm: float = nn.optim.clip_grad_norm_([W, b], max_norm=1.0)
opt = nn.optim.Adam(model, lr=1e-3, betas=[0.9, 0.999])


# An op written as the op contract says (inputs positional, parameters keyword-only): its
# forward and jvp are narrower than the base class's, which a type checker accepts.
@engine.register
class UserCube(engine.Op):
    """user_cube(x) = x^3, elementwise."""

    name = "user_cube"
    rule = "d/dx = 3 x^2"

    def forward(self, ctx: engine.RuleContext, x: np.ndarray) -> np.ndarray:
        ctx.save_input(x)
        out: np.ndarray = x ** 3
        return out

    def backward(self, ctx: engine.RuleContext, grad: np.ndarray) -> tuple[np.ndarray]:
        g: np.ndarray = grad * 3 * ctx.saved[0] ** 2
        return (g,)

    def jvp(self, ctx: engine.RuleContext, dx: np.ndarray) -> np.ndarray:
        t: np.ndarray = dx * 3 * ctx.saved[0] ** 2
        return t
