"""Hand-written layers as a student writes them (numpy, CS231n style), right and wrong:
the source text the command-line and pytest-plugin tests put into a user's module."""
import textwrap

LAYERS = textwrap.dedent('''
    def affine_forward(x, w, b):
        return x @ w + b, (x, w, b)


    def affine_backward(dout, cache):
        x, w, b = cache
        return dout @ w.T, x.T @ dout, dout.sum(axis=0)


    def sigmoid(x):
        return 1 / (1 + np.exp(-x))


    def sigmoid_backward(dout, x):
        s = sigmoid(x)
        return dout * s * (1 - s)


    def sigmoid_backward_buggy(dout, x):
        return dout * sigmoid(x)                    # the factor (1 - s) forgotten
''')
