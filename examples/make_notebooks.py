"""Write the notebooks of this folder from the cells below (stored without outputs).

    python examples/make_notebooks.py

Edit the cells here, not the .ipynb files: tests/test_notebooks.py runs every notebook in
a fresh kernel and checks that the files are what this script writes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip("\n"))


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip("\n"))


FASHION_MNIST = [
    md("""
# Train an MLP on Fashion-MNIST

handgrad as a library: load the images, build a multilayer perceptron, train it with Adam,
evaluate it and save it. A few thousand training images and two epochs keep this notebook
to seconds; `handgrad train --dataset fashion-mnist` trains on all 60,000.

Needs: `pip install "handgrad[plot]"` (matplotlib, for the pictures) and the Fashion-MNIST
IDX files: Debian's `apt-get install dataset-fashion-mnist`, or the four
`*-ubyte.gz` files in a folder named by `$HANDGRAD_DATA` (or `data_dir=`). Nothing is
downloaded.
"""),
    code("""
import matplotlib.pyplot as plt
import numpy as np

from handgrad import engine, nn

data = nn.load_dataset("fashion-mnist", n=6000, val_fraction=0.1, seed=0)
print("read from", data.source)
print("train", data.x_train.shape, data.x_train.dtype, "labels", data.y_train.shape, data.y_train.dtype)
print("validation", data.x_val.shape, "test", data.x_test.shape)
"""),
    md("""
Each image is a row of 784 pixels in [0, 1]; each label one of ten classes.
"""),
    code("""
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]

fig, axes = plt.subplots(1, 8, figsize=(12, 2))
for ax, image, label in zip(axes, data.x_train, data.y_train, strict=False):   # the first 8
    ax.imshow(image.reshape(28, 28), cmap="gray_r")
    ax.set_title(CLASSES[label], fontsize=9)
    ax.axis("off")
plt.show()
"""),
    md("""
## The model and the training run

`nn.MLP([784, 128, 10])` is `Linear(784, 128)`, ReLU, `Linear(128, 10)`, initialised from a
seed (He for the ReLU layer, Xavier for the output layer). `CrossEntropyLoss` is the fused
softmax and cross-entropy: one node whose backward is the output delta
`(softmax(z) - y) / N`. `fit` shuffles the batches, steps the optimizer, and records the
loss of every step and the metrics of every epoch.
"""),
    code("""
model = nn.MLP([784, 128, 10], activation="relu", seed=0)
print(model)
print(model.num_parameters(), "parameters")

loss_fn = nn.CrossEntropyLoss()
optimizer = nn.optim.Adam(model, lr=1e-3)
history = nn.fit(model, loss_fn, optimizer, (data.x_train, data.y_train), epochs=2,
                 batch_size=64, val_data=(data.x_val, data.y_val), seed=0, verbose=2)
history
"""),
    code("""
fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(history.steps, linewidth=0.8)
ax.set_xlabel("step")
ax.set_ylabel("training loss")
plt.show()
"""),
    md("""
## Evaluate

`evaluate` gives the test loss and accuracy; `predict` the scores, whose argmax is the
predicted class. The confusion matrix shows which classes the model mixes up (shirts,
T-shirts, pullovers and coats, mostly).
"""),
    code("""
test = nn.evaluate(model, loss_fn, (data.x_test, data.y_test))
print(f"test loss {test['loss']:.3f}, test accuracy {test['accuracy']:.3f}")
assert test["accuracy"] > 0.7

scores = nn.predict(model, data.x_test)
with engine.no_grad():                           # the model is a function of Tensors too
    logits = model(engine.Tensor(data.x_test[:5]))
print("first five:", [CLASSES[k] for k in logits.numpy().argmax(axis=1)],
      "labels:", [CLASSES[k] for k in data.y_test[:5]])
cm = nn.confusion_matrix(data.y_test, scores)
for i, (name, row) in enumerate(zip(CLASSES, cm, strict=True)):
    others = row.copy()
    others[i] = 0
    mistaken = CLASSES[int(others.argmax())]
    print(f"{name:>12}: {row[i] / row.sum():4.0%} right, most often taken for {mistaken}")
"""),
    md("""
## Save and load

A checkpoint is an `.npz` file (no pickle); `nn.load` rebuilds the MLP from it.
"""),
    code("""
nn.save(model, "fashion_mnist_mlp.npz", metadata={"dataset": "fashion-mnist"})
same = nn.load("fashion_mnist_mlp.npz")
print(np.array_equal(nn.predict(same, data.x_test), scores))
"""),
    md("""
Going further: all 60,000 images (`n=None`), more epochs, `compile=True` (the same numbers,
faster), a learning-rate schedule from `nn.optim`, or the command line:
`handgrad train --dataset fashion-mnist --hidden 256,128 --epochs 10 --out runs/fmnist`.
"""),
]

GRAPH_AND_BACKWARD = [
    md("""
# The compute graph and the backward pass, step by step

handgrad for teaching: draw the graph behind a loss with every tensor's shape, value and
gradient; play the backward pass one rule at a time; then the derivation BP1–BP4, layer
by layer, with the numbers of the batch.

Needs: `pip install handgrad` and the Graphviz `dot` program for the pictures
(`apt-get install graphviz`, `brew install graphviz` or `conda install graphviz`).
"""),
    code("""
import numpy as np

from handgrad import engine, nn
from handgrad.engine.viz import backward_playback, derivation, draw

model = nn.MLP([2, 3, 2], activation="tanh", seed=0)
x = engine.Tensor(np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32), name="x")
y = np.array([0, 1, 1, 0])                      # XOR
loss = nn.CrossEntropyLoss()(model(x), y)
print(loss)
"""),
    md("""
## The graph

`draw` returns a `graphviz.Digraph`, which Jupyter displays. Draw **before**
`loss.backward()`: the gradients shown (on intermediates too) come from one extra backward
pass that keeps the graph and leaves `.grad` alone. `model=model` names the parameters
and groups each layer.
"""),
    code("""
draw(loss, model=model)
"""),
    md("""
`backward_order=True` numbers the ops in the order backward runs their rules and draws
each gradient as its own red arrow; `rules=True` writes each op's derivative rule.
"""),
    code("""
draw(loss, model=model, backward_order=True, rules=True, rankdir="LR")
"""),
    md("""
## The walker

`loss.backward()` is one generator, `engine.backward_steps`: it visits the tensors outputs
first and runs each node's rule once that node's gradient is complete. Walking it by hand
(keeping the graph, for the pictures below):
"""),
    code("""
names = {id(p): name for name, p in model.named_parameters()}
seed = np.ones((), dtype=loss.dtype)
for tensor, grad, node, _sent in engine.backward_steps([loss], [seed], retain_graph=True):
    what = f"runs the backward of {node.op.name}" if node is not None else "a leaf: its gradient is complete"
    print(f"{names.get(id(tensor), tensor.name or 'intermediate'):>16}  grad {str(grad.shape):<7} {what}")
"""),
    md("""
## The backward pass as a player

`backward_playback` shows the same graph at every step: the op whose rule runs is
highlighted, gradients fill in. Use the buttons (or the arrow keys once it is selected).
"""),
    code("""
playback = backward_playback(loss, model=model)
for caption, _ in playback.frames:
    print(caption)
playback
"""),
    md("""
## BP1–BP4, layer by layer

For an MLP ending in a fused loss, `level="layer"` plays the derivation itself, one slide
per equation: BP1 the output delta `δᴸ = (p − y)/N`, BP2 `δˡ = (δˡ⁺¹ Wˡ⁺¹ᵀ) ⊙ f′(zˡ)`,
BP3 `∂L/∂bˡ = Σₙ δˡ`, BP4 `∂L/∂Wˡ = aˡ⁻¹ᵀ δˡ`. Each slide recomputes its right-hand
side with numpy and states the largest difference from the engine's gradient.
"""),
    code("""
slides = backward_playback(loss, level="layer", model=model)
for caption, _ in slides.frames:
    print(caption)
slides
"""),
    md("""
The same quantities as arrays: `derivation(loss)` lists the layers from the output back,
with the engine's own gradients. The four equations, checked by hand (handgrad stores `W`
as `(in, out)`, so `z = a W + b`):
"""),
    code("""
out, hidden = derivation(loss)
bp1 = (out["p"] - out["y"]) / out["N"]
bp2 = (hidden["delta_next"] @ hidden["W_next"].T) * hidden["fprime"]
for layer in (out, hidden):
    bp3 = layer["delta"].sum(axis=0)
    bp4 = layer["a_prev"].T @ layer["delta"]
    print(f"layer {layer['l']}: BP3 off by {np.abs(bp3 - layer['gb']).max():.1e}, "
          f"BP4 off by {np.abs(bp4 - layer['gW']).max():.1e}")
print(f"BP1 off by {np.abs(bp1 - out['delta']).max():.1e}, "
      f"BP2 off by {np.abs(bp2 - hidden['delta']).max():.1e}")
"""),
    md("""
Finally the real backward pass: the gradients in `.grad` are the BP4 and BP3 above.
"""),
    code("""
loss.backward()
print(np.allclose(model.layers[0].weight.grad, hidden["gW"]),
      np.allclose(model.layers[2].bias.grad, out["gb"]))
"""),
    md("""
From the command line, the same pictures: `handgrad draw`, `handgrad draw --html --out
backward.html`, `handgrad draw --html --level layer --out bp.html`.
"""),
]

WRITE_AN_OP = [
    md("""
# Write an op and check it

handgrad as a gradient-check suite: write an op (one class with its forward, backward and
forward-mode rules), give it a spec (how to draw valid inputs, a numpy reference), run
every property the built-in ops satisfy with `check_op`, then ask whether the spec is
strong enough: `run_mutants` plants bugs in the op and reports any the spec lets through.

Needs: `pip install "handgrad[check]"` (hypothesis).
"""),
    md("""
## The op: SiLU (swish)

`silu(x) = x σ(x)`, with derivative `σ(x) (1 + x (1 − σ(x)))`. `forward` keeps its input
with `ctx.save_input` (handgrad then guards it against in-place writes) and σ(x), which it
computed itself, with `ctx.save`, for the rules; `derivative` is the one thing an elementwise op must say, as in
`engine/ops/_base.py`'s `UnaryElementwise`; written out here so that all the contract is
in view.
"""),
    code("""
import numpy as np

from handgrad import engine
from handgrad.engine.testing import OpCheckError, check_op, run_mutants, spec, strategies, unary


@engine.register(method=True)
class SiLU(engine.Op):
    \"\"\"silu(x) = x * sigmoid(x), elementwise (also called swish).\"\"\"

    name = "silu"
    rule = "d/dx = s (1 + x (1 - s)), s = sigmoid(x)"

    def forward(self, ctx, x):
        s = 1 / (1 + np.exp(-x))
        ctx.save_input(x)
        ctx.save(s)
        return x * s

    def backward(self, ctx, grad):              # VJP: one gradient per input
        x, s = ctx.saved
        return (grad * (s * (1 + x * (1 - s))),)

    def jvp(self, ctx, dx):                     # JVP: the output's tangent
        x, s = ctx.saved
        return dx * (s * (1 + x * (1 - s)))


x = engine.Tensor([-2.0, 0.0, 1.5], requires_grad=True)
x.silu().sum().backward()
print(engine.silu(np.array([-2.0, 0.0, 1.5])).numpy().round(4), x.grad.round(4))
print(engine.gradcheck(engine.silu, [np.array([-2.0, 0.0, 1.5])], check_forward_mode=True))
"""),
    md("""
## Its spec, and every property

The sample draws arrays of any small shape with values in [-3, 3]; the reference is numpy.
`complex_step=True` adds the complex-step derivative (exact to rounding): the forward is
analytic and accepts complex input. `check_op` runs forward against the reference, VJP and
JVP against central differences and against each other, accuracy to 1e-9, float32,
and that no rule writes into its arguments.
"""),
    code("""
spec("silu", unary(strategies.reals), lambda x: x / (1 + np.exp(-x)), complex_step=True)
print(check_op(engine.silu, max_examples=25))
"""),
    md("""
## A wrong rule is caught

The same op with the derivative's second term forgotten (`d/dx = s`, a classic slip):
`check_op` raises `OpCheckError` with the smallest failing sample hypothesis finds.
"""),
    code("""
@engine.register
class SiLUWrong(engine.Op):
    \"\"\"silu_wrong(x) = x * sigmoid(x), with a wrong derivative (for the demonstration).\"\"\"

    name = "silu_wrong"
    rule = "d/dx = s (wrong: the x s (1 - s) term is missing)"

    def forward(self, ctx, x):
        s = 1 / (1 + np.exp(-x))
        ctx.save(s)
        return x * s

    def backward(self, ctx, grad):
        return (grad * ctx.saved[0],)

    def jvp(self, ctx, dx):
        return dx * ctx.saved[0]


spec("silu_wrong", unary(strategies.reals), lambda x: x / (1 + np.exp(-x)))
try:
    check_op(engine.silu_wrong, max_examples=25)
except OpCheckError as e:
    print("caught:", str(e).splitlines()[0])
"""),
    md("""
## Is the spec strong enough? Mutants

`run_mutants` plants generic bugs in the op (the VJP scaled by 1.01, negated, transposed,
an input's gradient dropped, the JVP ignoring a tangent, the rule writing into its
gradient), runs the spec on each, and says which it caught and by which property.
"""),
    code("""
report = run_mutants(engine.silu, max_examples=25)
for result in report.results:
    verdict = "caught" if result.caught else "MISSED"
    print(f"{verdict:>7}  {result.mutant.name:<20} {result.caught_by or result.reason}")
print(len(report.missed), "missed")
"""),
    md("""
A spec that draws vectors only cannot tell a gradient from its transpose: the
"vjp transposed" mutant gets through, and the report says what sample would show it.
"""),
    code("""
def silu_reference(x):
    return x / (1 + np.exp(-x))


weak = spec("silu", unary(strategies.reals, max_dims=1), silu_reference, complex_step=True)
for result in run_mutants(engine.silu, weak, max_examples=25).missed:
    print("MISSED", result.mutant.name, "-", result.reason)
strong = spec("silu", unary(strategies.reals), silu_reference, complex_step=True)   # the strong spec again
"""),
    md("""
## From the command line

Saved in a file of its own (op and spec), the same checks are `handgrad check --module
myops.py` and `handgrad check --mutants --module myops.py`:
"""),
    code("""
from pathlib import Path

Path("myops.py").write_text('''
import numpy as np
from handgrad import engine
from handgrad.engine.testing import spec, strategies, unary


@engine.register
class SiLU(engine.Op):
    \"\"\"silu(x) = x * sigmoid(x), elementwise.\"\"\"

    name = "silu"
    rule = "d/dx = s (1 + x (1 - s)), s = sigmoid(x)"

    def forward(self, ctx, x):
        s = 1 / (1 + np.exp(-x))
        ctx.save_input(x)
        ctx.save(s)
        return x * s

    def backward(self, ctx, grad):
        x, s = ctx.saved
        return (grad * (s * (1 + x * (1 - s))),)

    def jvp(self, ctx, dx):
        x, s = ctx.saved
        return dx * (s * (1 + x * (1 - s)))


spec("silu", unary(strategies.reals), lambda x: x / (1 + np.exp(-x)), complex_step=True)
''')
"""),
    code("""
import subprocess
import sys

run = subprocess.run([sys.executable, "-m", "handgrad", "check", "--mutants", "--module", "myops.py",
                      "--profile", "ci"], capture_output=True, text=True)
print(run.stdout or run.stderr)
print("exit status", run.returncode)
"""),
]

NOTEBOOKS = {
    "01_fashion_mnist_mlp.ipynb": FASHION_MNIST,
    "02_graph_and_backward_pass.ipynb": GRAPH_AND_BACKWARD,
    "03_write_and_check_an_op.ipynb": WRITE_AN_OP,
}


def notebook(cells: list[nbformat.NotebookNode]) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"          # stable ids: the same script writes the same files
    return nb


def text(cells: list[nbformat.NotebookNode]) -> str:
    """The file's exact contents."""
    return nbformat.writes(notebook(cells)) + "\n"


def main(argv: list[str]) -> int:
    for name, cells in NOTEBOOKS.items():
        (HERE / name).write_text(text(cells), encoding="utf-8")
        print(f"wrote examples/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
