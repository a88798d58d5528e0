"""micrograd's final notebook model, MLP(3, [4, 4, 1]) with tanh neurons, trained functionally.

The parameters are a pytree, the model and the loss are pure functions of it, and one
tg.jit-ed step maps old parameters to new ones. There is no .grad and no zero_grad().

Run: python examples/micrograd_mlp.py
"""
import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import nn

XS = np.array([[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]])
YS = np.array([1.0, -1.0, -1.0, 1.0])


def predict(params, x):
    """Every layer is tanh(x @ W + b), as micrograd's neurons are."""
    return nn.mlp(params, x, activation=nn.tanh, final_activation=nn.tanh)[:, 0]


def loss(params, x, y):
    return tnp.sum((predict(params, x) - y) ** 2)


@tg.jit
def train_step(params, x, y, learning_rate):
    value, grads = tg.value_and_grad(loss)(params, x, y)
    return value, tg.tree_map(lambda p, g: p - learning_rate * g, params, grads)


def main(steps: int = 50, learning_rate: float = 0.1, seed: int = 0, verbose: bool = True) -> dict:
    params = nn.init_mlp([3, 4, 4, 1], seed=seed, init="uniform")  # micrograd's init: uniform in [-1, 1]
    for step in range(steps):
        value, params = train_step(params, XS, YS, learning_rate)
        if verbose:
            print(f"step {step:3d}  loss {value:.6f}")
    predictions = tg.jit(predict)(params, XS)
    if verbose:
        print("predictions:", np.round(predictions, 4).tolist(), " targets:", YS.tolist())
        print("\nThe loss as a program:")
        print(tg.make_ir(loss)(params, XS, YS))
        print("\nmicrograd's common mistake, forgetting zero_grad() so gradients pile up across steps, cannot "
              "happen here: a gradient is the return value of a pure function, computed from scratch on every call.")
    return {"loss": float(loss(params, XS, YS)), "predictions": predictions}


if __name__ == "__main__":
    main()
