"""micrograd's demo: a 2-16-16-1 MLP separating two moons with a max-margin loss, on arrays.

Run: python examples/moons.py [output.png]   (the picture needs matplotlib:
pip install -e ".[examples]")
"""
import sys

import numpy as np

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import nn


def make_moons(n: int = 100, noise: float = 0.1, seed: int = 1):
    """Two interleaving half circles with Gaussian noise; labels -1 and +1."""
    rng = np.random.default_rng(seed)
    n_outer = n // 2
    outer = np.linspace(0, np.pi, n_outer)
    inner = np.linspace(0, np.pi, n - n_outer)
    points = np.concatenate([np.stack([np.cos(outer), np.sin(outer)], axis=1),
                             np.stack([1 - np.cos(inner), 0.5 - np.sin(inner)], axis=1)])
    labels = np.concatenate([-np.ones(n_outer), np.ones(n - n_outer)])
    return points + rng.normal(scale=noise, size=points.shape), labels


def score(params, x):
    return nn.mlp(params, x, activation=nn.relu)[:, 0]  # relu, relu, linear


def loss(params, x, y):
    margin = nn.hinge(score(params, x), y)  # mean(relu(1 - y * score))
    l2 = sum(tnp.sum(p * p) for p in tg.tree_leaves(params))
    return margin + 1e-4 * l2


@tg.jit
def train_step(params, x, y, learning_rate):
    value, grads = tg.value_and_grad(loss)(params, x, y)
    return value, tg.tree_map(lambda p, g: p - learning_rate * g, params, grads)


def accuracy(params, x, y) -> float:
    return float(np.mean((tg.jit(score)(params, x) > 0) == (y > 0)))


def plot(params, x, y, filename: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no picture: matplotlib is not installed; pip install -e ".[examples]")')
        return
    grid_x, grid_y = np.meshgrid(np.linspace(-2, 3, 200), np.linspace(-1.5, 2, 200))
    grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)
    scores = tg.jit(score)(params, grid).reshape(grid_x.shape)
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.contourf(grid_x, grid_y, scores > 0, cmap=plt.cm.Spectral, alpha=0.7)
    axes.scatter(x[:, 0], x[:, 1], c=y, s=30, cmap=plt.cm.Spectral, edgecolors="k")
    axes.set_title("decision boundary after training")
    figure.savefig(filename, dpi=100, bbox_inches="tight")
    print(f"decision boundary written to {filename}")


def main(steps: int = 100, picture: str | None = "moons.png", verbose: bool = True) -> dict:
    x, y = make_moons()
    params = nn.init_mlp([2, 16, 16, 1], seed=0, init="he")
    for k in range(steps):
        value, params = train_step(params, x, y, 1.0 - 0.9 * k / 100)
        if verbose and (k % 10 == 0 or k == steps - 1):
            print(f"step {k:3d}  loss {value:.4f}  accuracy {accuracy(params, x, y):.0%}")
    if picture:
        plot(params, x, y, picture)
    return {"loss": value, "accuracy": accuracy(params, x, y)}


if __name__ == "__main__":
    main(picture=sys.argv[1] if len(sys.argv) > 1 else "moons.png")
