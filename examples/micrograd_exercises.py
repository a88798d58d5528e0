"""The micrograd exercises, done with tracegrad: no Value objects, gradients as return values.

Run: python examples/micrograd_exercises.py
"""
import math

import tracegrad as tg
import tracegrad.numpy as tnp

EXPECTED_GRAD = [-12.353553390593273, 10.25699027111255, 0.0625]
EXPECTED_SOFTMAX_GRAD = [0.041772570515350445, 0.8390245074625319, 0.005653302662216329, -0.8864503806400986]
TOLERANCE = 1e-5


def report(expected, got, tolerance=TOLERANCE) -> bool:
    """Print a line per dimension, as the exercises do; True when all agree."""
    ok = True
    for i, (e, g) in enumerate(zip(expected, got)):
        agree = bool(abs(e - g) < tolerance)
        ok &= agree
        print(f"{'OK' if agree else 'WRONG!'} for dim {i}: expected {e}, yours returns {g}")
    return ok


# -- section 1: a function of three scalars ------------------------------------------------

def f(a, b, c):
    return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5


def gradient_by_hand(a, b, c):
    return [-3 * a**2 - 0.5 * a**-0.5, 3 * math.cos(3 * b) + 2.5 * b**1.5, c**-2]


def one_sided(fun, args, h=1e-6):
    base = fun(*args)
    return [(fun(*[x + h if j == i else x for j, x in enumerate(args)]) - base) / h for i in range(len(args))]


def symmetric(fun, args, h=1e-6):
    return [(fun(*[x + h if j == i else x for j, x in enumerate(args)])
             - fun(*[x - h if j == i else x for j, x in enumerate(args)])) / (2 * h) for i in range(len(args))]


def section_1() -> dict:
    args = (2.0, 3.0, 4.0)
    print("== 1. f(a, b, c) = -a**3 + sin(3*b) - 1.0/c + b**2.5 - a**0.5 at (2, 3, 4)")
    results = {}
    for label, gradient in [("analytic gradient", gradient_by_hand(*args)),
                            ("tg.grad", list(tg.grad(f, argnums=(0, 1, 2))(*args))),
                            ("one-sided numerical estimate", one_sided(f, args)),
                            ("symmetric numerical estimate", symmetric(f, args))]:
        print(f"-- {label}")
        results[label] = report(EXPECTED_GRAD, gradient)
    for label, estimate in [("one-sided", one_sided(f, args)), ("symmetric", symmetric(f, args))]:
        error = float(max(abs(e - g) for e, g in zip(EXPECTED_GRAD, estimate)))
        results[f"{label} error"] = error
        print(f"largest error of the {label} estimate: {error:.2e}")
    return results


# -- section 2: softmax and negative log likelihood -----------------------------------------

def softmax(logits):
    # the exercise's own softmax, unchanged: it works on tracegrad values as it did on micrograd's
    counts = [logit.exp() for logit in logits]
    denominator = sum(counts)
    out = [c / denominator for c in counts]
    return out


def nll(logits):
    probs = softmax(logits)
    return -probs[3].log()  # the negative log likelihood of the correct class, 3


def section_2() -> dict:
    logits = [0.0, 3.0, -2.0, 1.0]
    print("\n== 2. softmax and negative log likelihood of class 3, logits", logits)
    loss, grads = tg.value_and_grad(nll)(logits)
    print(f"loss {loss}")
    results = {"softmax tg.grad": report(EXPECTED_SOFTMAX_GRAD, grads)}
    tg.check_grads(nll, (logits,), order=2)  # where the exercise checked with PyTorch
    print("tg.check_grads: first and second order gradients agree with central differences")
    results["softmax check_grads"] = True
    return results


def main() -> dict:
    return {**section_1(), **section_2()}


if __name__ == "__main__":
    main()
