"""Recover a damped pendulum's parameters from a noisy recording of its angle.

The model integrates `theta'' = -damping * theta' - omega2 * sin(theta)` with RK4 in a
`tg.scan` (a loop that stays a loop: traced once, compiled as a `for` loop, differentiated by a
reverse scan), and SciPy's L-BFGS-B fits (damping, omega2, theta0) with the exact gradient of
the mean squared error from `tg.jit(tg.value_and_grad(loss))`.

Run: python examples/pendulum_fit.py [--out pendulum_fit.png]   (the picture needs matplotlib:
pip install -e ".[examples]")
"""
import argparse
import time

import numpy as np
from scipy.optimize import minimize

import tracegrad as tg
import tracegrad.numpy as tnp

DT = 0.01  # seconds per RK4 step
STEPS = 1000  # 10 s of recording
TRUE = np.array([0.3, 9.0, 1.2])  # damping (1/s), omega2 = g / length (1/s^2), initial angle (rad)
GUESS = np.array([0.1, 7.5, 0.8])
NAMES = ("damping", "omega2", "theta0")


def rk4_step(p, state):
    damping, omega2 = p[0], p[1]
    theta, velocity = state

    def f(theta, velocity):
        return velocity, -damping * velocity - omega2 * tnp.sin(theta)

    a1, b1 = f(theta, velocity)
    a2, b2 = f(theta + 0.5 * DT * a1, velocity + 0.5 * DT * b1)
    a3, b3 = f(theta + 0.5 * DT * a2, velocity + 0.5 * DT * b2)
    a4, b4 = f(theta + DT * a3, velocity + DT * b3)
    return (theta + DT / 6 * (a1 + 2 * a2 + 2 * a3 + a4), velocity + DT / 6 * (b1 + 2 * b2 + 2 * b3 + b4))


def simulate(p):
    """The angle after each of STEPS steps, starting at rest from theta0 = p[2]."""
    def step(state, _):
        state = rk4_step(p, state)
        return state, state[0]

    _, angles = tg.scan(step, (p[2], 0.0), length=STEPS)
    return angles


def loss(p, recorded):
    error = simulate(p) - recorded
    return tnp.mean(error * error)


def record(seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """The true pendulum's angle at every step, plus Gaussian noise."""
    return tg.jit(simulate)(TRUE) + np.random.default_rng(seed).normal(0.0, noise, STEPS)


def fit(recorded: np.ndarray, guess: np.ndarray = GUESS):
    value_and_grad = tg.jit(tg.value_and_grad(loss))

    def objective(p):
        value, grad = value_and_grad(p, recorded)
        return float(value), np.asarray(grad)

    return minimize(objective, guess, jac=True, method="L-BFGS-B",
                    bounds=[(0.0, None), (0.1, None), (-np.pi, np.pi)])


def plot(recorded: np.ndarray, guess: np.ndarray, fitted: np.ndarray, filename: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print('(no picture: matplotlib is not installed; pip install -e ".[examples]")')
        return
    trajectory = tg.jit(simulate)
    time_axis = DT * np.arange(1, STEPS + 1)
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.plot(time_axis, recorded, ".", color="0.6", markersize=2, label="noisy recording")
    axes.plot(time_axis, trajectory(guess), "--", color="tab:orange", label="initial guess")
    axes.plot(time_axis, trajectory(fitted), color="tab:blue", label="fit")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("angle (rad)")
    axes.set_title("damped pendulum: (damping, g/L, theta0) recovered with tg.scan + L-BFGS-B")
    axes.legend(loc="upper right")
    figure.savefig(filename, dpi=100, bbox_inches="tight")
    plt.close(figure)
    print(f"data, initial guess and fit drawn in {filename}")


def loss_value(p, recorded) -> float:
    return float(tg.jit(loss)(p, recorded))


def main(out: str | None = "pendulum_fit.png", verbose: bool = True) -> dict:
    start = time.perf_counter()
    recorded = record()
    result = fit(recorded)
    fitted = result.x
    seconds = time.perf_counter() - start
    if verbose:
        print(f"{'':8} {'true':>8} {'guess':>8} {'fitted':>8}")
        for name, true, guess, value in zip(NAMES, TRUE, GUESS, fitted):
            print(f"{name:8} {true:8.4f} {guess:8.4f} {value:8.4f}")
        print(f"loss {loss_value(GUESS, recorded):.5f} at the guess, {result.fun:.5f} fitted "
              f"(the noise alone gives about {0.05 ** 2:.5f}); {result.nfev} gradient evaluations, "
              f"{seconds:.1f} s")
    if out:
        plot(recorded, GUESS, fitted, out)
    return {"true": TRUE, "fitted": fitted, "loss": float(result.fun), "evaluations": result.nfev,
            "seconds": seconds}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="pendulum_fit.png", help="where to draw the picture (PNG)")
    main(out=parser.parse_args().out)
