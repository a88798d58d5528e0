"""The reference: forward and backward written by hand, compiled with numba (@njit).

Scalar code for W1 and W2; for the MLPs one compiled function per step with fused loops for
bias, activation and their adjoints, matrix products by loops when small and by BLAS (numba's
np.dot) when large, and tanh/exp of large arrays by NumPy's SIMD loops in object mode (numba's
own tanh is a scalar libm call, ~15x slower per element). A second implementation wraps the
same code so that it takes and returns the parameter pytree, as tracegrad does, to show what
the pytree handling costs.
"""
from __future__ import annotations

import math

import numba
import numpy as np

from .implementation import Implementation, Step, Unsupported

njit = numba.njit(cache=False, error_model="numpy")
LINEAR, TANH, RELU, EXP = 0, 1, 2, 3
SSE, SVM, XENT = 0, 1, 2
ACTIVATION_CODES = {"linear": LINEAR, "tanh": TANH, "relu": RELU}
LOSS_CODES = {"sse": SSE, "svm": SVM, "xent": XENT}
BLAS_FROM = 512  # multiply-adds from which a matrix product goes to BLAS instead of loops
SIMD_FROM = 512  # elements from which tanh and exp go to NumPy's SIMD loops (object mode costs ~1 µs)


@njit
def exercise_value_and_grad(a, b, c):
    """f(a, b, c) = -a**3 + sin(3b) - 1/c + b**2.5 - a**0.5; returns (f, (df/da, df/db, df/dc))."""
    a_sq, sqrt_a, sqrt_b, inv_c = a * a, math.sqrt(a), math.sqrt(b), 1.0 / c
    value = -a_sq * a + math.sin(3.0 * b) - inv_c + b * b * sqrt_b - sqrt_a
    return value, (-3.0 * a_sq - 0.5 / sqrt_a, 3.0 * math.cos(3.0 * b) + 2.5 * b * sqrt_b, inv_c * inv_c)


@njit
def softmax_nll_value_and_grad(l0, l1, l2, l3):
    """-log(softmax(l)[3]); its gradient is softmax(l) - onehot(3)."""
    e0, e1, e2, e3 = math.exp(l0), math.exp(l1), math.exp(l2), math.exp(l3)
    total = e0 + e1 + e2 + e3
    inv = 1.0 / total
    return math.log(total) - l3, (e0 * inv, e1 * inv, e2 * inv, e3 * inv - 1.0)


@njit
def matmul(a, b, transpose_a, transpose_b):
    """a @ b with either operand transposed: loops when small, BLAS (numba's np.dot) when large.

    The loops keep the innermost index on contiguous memory for every combination.
    """
    n, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    m = b.shape[0] if transpose_b else b.shape[1]
    if n * k * m >= BLAS_FROM:  # one branch per layout, so each product sees a contiguous operand type
        if transpose_a:
            return a.T @ b
        return a @ b.T if transpose_b else a @ b
    out = np.zeros((n, m))
    if transpose_b:  # rows of a against rows of b
        for i in range(n):
            for j in range(m):
                total = 0.0
                for p in range(k):
                    total += a[i, p] * b[j, p]
                out[i, j] = total
    elif transpose_a:  # out += outer(a[p], b[p]) for each row p
        for p in range(k):
            for i in range(n):
                a_pi = a[p, i]
                for j in range(m):
                    out[i, j] += a_pi * b[p, j]
    else:
        for i in range(n):
            for p in range(k):
                a_ip = a[i, p]
                for j in range(m):
                    out[i, j] += a_ip * b[p, j]
    return out


@njit
def vectorised_in_place(z, function):
    """z = tanh(z) or exp(z): NumPy's SIMD loop (in object mode) for large arrays, libm calls for small."""
    if z.size >= SIMD_FROM:
        with numba.objmode():
            (np.tanh if function == TANH else np.exp)(z, out=z)
        return
    flat = z.reshape(z.size)
    for i in range(flat.size):
        flat[i] = math.tanh(flat[i]) if function == TANH else math.exp(flat[i])


@njit
def dense(x, W, b, activation):
    """activation(x @ W + b)."""
    h = matmul(x, W, False, False)
    for i in range(h.shape[0]):
        for j in range(h.shape[1]):
            z = h[i, j] + b[j]
            h[i, j] = max(z, 0.0) if activation == RELU else z
    if activation == TANH:
        vectorised_in_place(h, TANH)
    return h


@njit
def dense_backward(x, W, h, d_h, activation, need_dx):
    """Cotangents (x, W, b) of h = activation(x @ W + b) given the cotangent d_h of h."""
    n, m = h.shape
    d_z = np.empty((n, m))
    d_b = np.zeros(m)
    for i in range(n):
        for j in range(m):
            if activation == TANH:
                d_z[i, j] = d_h[i, j] * (1.0 - h[i, j] * h[i, j])
            elif activation == RELU:
                d_z[i, j] = d_h[i, j] if h[i, j] > 0.0 else 0.0
            else:
                d_z[i, j] = d_h[i, j]
            d_b[j] += d_z[i, j]
    d_x = matmul(d_z, W, False, True) if need_dx else np.empty((0, 0))
    return d_x, matmul(x, d_z, True, False), d_b


@njit
def loss_and_cotangent(out, y, loss):
    """The loss of the network output and its cotangent: SSE, mean hinge or softmax cross-entropy."""
    n, m = out.shape
    d_out = np.zeros((n, m))
    value = 0.0
    if loss == SSE:
        for i in range(n):
            err = out[i, 0] - y[i]
            value += err * err
            d_out[i, 0] = 2.0 * err
    elif loss == SVM:
        for i in range(n):
            margin = 1.0 - y[i] * out[i, 0]
            if margin > 0.0:
                value += margin
                d_out[i, 0] = -y[i] / n
        value /= n
    else:
        shifts = np.empty(n)
        for i in range(n):
            shifts[i] = out[i].max()
            for j in range(m):
                d_out[i, j] = out[i, j] - shifts[i]
        vectorised_in_place(d_out, EXP)  # d_out is exp(out - shift) for now
        for i in range(n):
            total = d_out[i].sum()
            label = int(y[i])
            value += shifts[i] + math.log(total) - out[i, label]
            for j in range(m):
                d_out[i, j] /= total * n
            d_out[i, label] -= 1.0 / n
        value /= n
    return value, d_out


@njit
def add_weight_decay(p, d_p, l2):
    """d_p += 2 * l2 * p, in place; returns l2 * sum(p**2)."""
    p_flat, d_flat = p.reshape(p.size), d_p.reshape(d_p.size)
    total = 0.0
    for i in range(p_flat.size):
        total += p_flat[i] * p_flat[i]
        d_flat[i] += 2.0 * l2 * p_flat[i]
    return l2 * total


@njit
def mlp_value_and_grad(x, y, W1, b1, W2, b2, W3, b3, hidden, output, loss, l2):
    """(loss, dW1, db1, dW2, db2, dW3, db3) of a 3-layer MLP."""
    h1 = dense(x, W1, b1, hidden)
    h2 = dense(h1, W2, b2, hidden)
    out = dense(h2, W3, b3, output)
    value, d_out = loss_and_cotangent(out, y, loss)
    d_h2, d_W3, d_b3 = dense_backward(h2, W3, out, d_out, output, True)
    d_h1, d_W2, d_b2 = dense_backward(h1, W2, h2, d_h2, hidden, True)
    _, d_W1, d_b1 = dense_backward(x, W1, h1, d_h1, hidden, False)
    if l2 != 0.0:
        value += (add_weight_decay(W1, d_W1, l2) + add_weight_decay(b1, d_b1, l2) + add_weight_decay(W2, d_W2, l2)
                  + add_weight_decay(b2, d_b2, l2) + add_weight_decay(W3, d_W3, l2) + add_weight_decay(b3, d_b3, l2))
    return value, d_W1, d_b1, d_W2, d_b2, d_W3, d_b3


@njit
def mlp_sgd_step(x, y, W1, b1, W2, b2, W3, b3, hidden, output, loss, l2, lr):
    """(loss, W1, b1, W2, b2, W3, b3) after one SGD step."""
    value, d_W1, d_b1, d_W2, d_b2, d_W3, d_b3 = mlp_value_and_grad(x, y, W1, b1, W2, b2, W3, b3,
                                                                  hidden, output, loss, l2)
    return value, W1 - lr * d_W1, b1 - lr * d_b1, W2 - lr * d_W2, b2 - lr * d_b2, W3 - lr * d_W3, b3 - lr * d_b3


# -- adapters ------------------------------------------------------------------------------

def flat(params) -> tuple:
    if len(params) != 3:
        raise Unsupported("the hand-written numba MLP has exactly 3 layers")
    return tuple(layer[key] for layer in params for key in ("W", "b"))


def as_params(arrays) -> list[dict]:
    return [{"W": arrays[i], "b": arrays[i + 1]} for i in range(0, len(arrays), 2)]


def settings(workload) -> tuple:
    problem = workload.mlp
    return ACTIVATION_CODES[problem.hidden], ACTIVATION_CODES[problem.output], LOSS_CODES[problem.loss], problem.l2


def value_and_tree(result):
    return result[0], as_params(result[1:])


def build_step(workload) -> Step:
    if workload.kind == "exercise":
        return Step(exercise_value_and_grad, workload.args)
    if workload.kind == "softmax_nll":
        return Step(softmax_nll_value_and_grad, tuple(workload.args[0]))
    params, x, y = workload.args
    return Step(mlp_sgd_step, (x, y, *flat(params), *settings(workload), workload.lr), value_and_tree)


def build_pytree_step(workload) -> Step:
    codes = settings(workload)

    def step(params, x, y):
        return value_and_tree(mlp_sgd_step(x, y, *flat(params), *codes, workload.lr))
    return Step(step, workload.args)


def value_and_grad(workload):
    if workload.kind != "mlp":
        step = build_step(workload)
        return step.fn(*step.args)
    params, x, y = workload.args
    return value_and_tree(mlp_value_and_grad(x, y, *flat(params), *settings(workload)))


VERSION = f"numba {numba.__version__}"
IMPLEMENTATIONS = [
    Implementation("numba", "numba, hand-written (reference)", build_step, value_and_grad),
    Implementation("numba-tree", "numba, hand-written, pytree in/out", build_pytree_step, value_and_grad,
                   kinds=("mlp",)),
]
