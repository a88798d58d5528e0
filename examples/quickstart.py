"""tracegrad in one screen: gradients of plain Python, the program behind them, a training loop.

Run: pip install -e . && python examples/quickstart.py
"""
import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp


# 1. The micrograd exercise: a scalar function of three inputs.
def f(a, b, c):
    return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5


print("df/da, df/db, df/dc at (2, 3, 4):", tg.grad(f, argnums=(0, 1, 2))(2.0, 3.0, 4.0))
print("expected:                         [-12.353553390593273, 10.25699027111255, 0.0625]")


# 2. micrograd-style code runs unchanged: a softmax and its negative log likelihood.
def nll(logits):
    counts = [logit.exp() for logit in logits]
    denominator = sum(counts)
    probs = [c / denominator for c in counts]
    return -probs[3].log()


loss, grads = tg.value_and_grad(nll)([0.0, 3.0, -2.0, 1.0])
print(f"\nsoftmax NLL {loss:.12f}, gradient {np.round(grads, 6).tolist()}")

# 3. The traced program and its adjoint: printable, like a jaxpr.
print("\nThe program of f:")
print(tg.make_ir(f)(2.0, 3.0, 4.0))
print("\nThe program of grad(f): forward and adjoint in one op list")
print(tg.make_ir(tg.grad(f))(2.0, 3.0, 4.0))

# 4. Training with no .grad and no zero_grad: a pure step function, traced and compiled once.
xs = np.array([[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]])
ys = np.array([1.0, -1.0, -1.0, 1.0])
rng = np.random.default_rng(0)
sizes = [3, 4, 4, 1]
params = [{"W": rng.uniform(-1, 1, (m, n)), "b": rng.uniform(-1, 1, n)} for m, n in zip(sizes, sizes[1:])]


def predict(params, x):
    for layer in params:
        x = tnp.tanh(x @ layer["W"] + layer["b"])
    return x[:, 0]


def squared_error(params, x, y):
    return tnp.sum((predict(params, x) - y) ** 2)


@tg.jit
def train_step(params, x, y):
    loss, grads = tg.value_and_grad(squared_error)(params, x, y)
    return loss, tg.tree_map(lambda p, g: p - 0.1 * g, params, grads)


print("\nTraining micrograd's MLP 3-4-4-1 (the first steps run as NumPy code while numba compiles):")
for step in range(100):
    loss, params = train_step(params, xs, ys)
    if step % 20 == 0 or step == 99:
        print(f"  step {step:3d}  loss {loss:.6f}")
print("predictions:", np.round(tg.jit(predict)(params, xs), 3).tolist(), " targets:", ys.tolist())
