"""tg.export: a compiled function as a module that runs without tracegrad and gives its numbers."""
import json
import py_compile
import subprocess
import sys

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def exercise(a, b, c):  # the micrograd exercise's function
    return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5


def mlp_loss(params, x, y):
    return tnp.mean((tnp.tanh(x @ params["W"] + params["b"]) - y) ** 2)


def mlp_step(params, x, y):  # the README's seed step
    grads = tg.grad(mlp_loss)(params, x, y)
    return tg.tree_map(lambda p, g: p - 0.1 * g, params, grads)


RUN_WITHOUT_TRACEGRAD = """
import json, sys
sys.modules["tracegrad"] = None  # importing tracegrad now fails
sys.path.insert(0, sys.argv[1])
import numpy as np
import exercise_grad, mlp_step
params = {"W": np.array(json.loads(sys.argv[2])), "b": np.array([0.25])}
x, y = np.array(json.loads(sys.argv[3])), np.array(json.loads(sys.argv[4]))
step = mlp_step.mlp_step(params, x, y)
print(json.dumps({"exercise": list(exercise_grad.grad_exercise(2, 3, 4)),
                  "W": step["W"].tolist(), "b": step["b"].tolist()}))
exercise_grad.self_check()
mlp_step.self_check()
"""


def test_exported_modules_run_without_tracegrad_and_give_its_numbers(tmp_path):
    rng = np.random.default_rng(0)
    params = {"W": rng.standard_normal((3, 1)), "b": np.array([0.1])}
    x, y = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
    exercise_path = tg.export(tg.grad(exercise, argnums=(0, 1, 2)), 2, 3, 4, path=tmp_path / "exercise_grad.py")
    step_path = tg.jit(mlp_step).lower(params, x, y).export(tmp_path / "mlp_step.py", params, x, y)
    for path in (exercise_path, step_path):
        py_compile.compile(path, doraise=True)
        text = open(path).read()
        assert "import tracegrad" not in text and "from tracegrad" not in text
        assert "import numba" in text and "def self_check" in text
    assert "params['W']: float64[3, 1]" in open(step_path).read()  # the docstring gives the signature

    other_w = rng.standard_normal((3, 1))  # new numbers of the same signature
    other_x, other_y = rng.standard_normal((4, 3)), rng.standard_normal((4, 1))
    run = subprocess.run([sys.executable, "-c", RUN_WITHOUT_TRACEGRAD, str(tmp_path), json.dumps(other_w.tolist()),
                          json.dumps(other_x.tolist()), json.dumps(other_y.tolist())],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    got = json.loads(run.stdout.splitlines()[0])
    assert "self-check passed" in run.stdout
    np.testing.assert_allclose(got["exercise"], tg.grad(exercise, argnums=(0, 1, 2))(2, 3, 4), rtol=1e-13)
    expected = mlp_step({"W": other_w, "b": np.array([0.25])}, other_x, other_y)
    np.testing.assert_allclose(got["W"], expected["W"], rtol=1e-12)
    np.testing.assert_allclose(got["b"], expected["b"], rtol=1e-12)


def test_an_exported_module_checks_its_arguments_and_refuses_what_it_cannot_write(tmp_path):
    path = tg.export(lambda x: tnp.sum(x * x), np.ones(3), path=tmp_path / "square.py")
    sys.path.insert(0, str(tmp_path))
    try:
        import square
    finally:
        sys.path.remove(str(tmp_path))
    assert square.fun(np.arange(3.0)) == 5.0
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        square.fun(np.ones(4))
    with pytest.raises(tg.errors.UnsupportedLeafError, match="static"):
        tg.export(tg.jit(lambda x, n: x * n, static_argnums=1), 1.0, 2, path=tmp_path / "static.py")
