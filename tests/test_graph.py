"""micrograd's draw_dot view: DOT text with each value's data and gradient."""
import re

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


def test_dot_shows_every_value_with_data_and_gradient():
    def f(a, b):
        c = a * b
        return tnp.tanh(c + c)

    dot = tg.to_dot(f)(2.0, -0.3)
    assert dot.startswith("digraph program {") and dot.rstrip().endswith("}")
    records = dict(re.findall(r'  (\w+) \[shape=record, label="\{ (.*?) \}"\];', dot))
    assert set(records) == {"a", "b", "c", "d", "e"}
    t = np.tanh(-1.2)
    assert records["a"] == f"a: f64[] | data 2.0000 | grad {2 * -0.3 * (1 - t * t):.4f}"
    assert records["b"] == f"b: f64[] | data -0.3000 | grad {2 * 2.0 * (1 - t * t):.4f}"
    assert records["c"].endswith(f"grad {2 * (1 - t * t):.4f}")  # used twice: both cotangents summed
    assert records["e"] == f"e: f64[] | data {t:.4f} | grad 1.0000"
    ops = re.findall(r'  (op\d+) \[shape=oval, label="(.*?)"\];', dot)
    assert [label for _, label in ops] == ["mul a b", "add c c", "tanh d"]  # as the IR prints them
    assert dot.count("c -> op1;") == 2
    assert "a -> op0;" in dot and "op2 -> e;" in dot


def test_the_inputs_gradients_are_tg_grads():
    def f(a, b, c):  # pow on either side, sin, division
        return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5

    records = dict(re.findall(r'  (\w+) \[shape=record, label="\{ (.*?) \}"\];', tg.to_dot(f)(2.0, 3.0, 4.0)))
    for name, gradient in zip("abc", tg.grad(f, argnums=(0, 1, 2))(2.0, 3.0, 4.0)):
        assert records[name].endswith(f"grad {gradient:.4f}")


def test_gradients_through_pow_on_numpy_values_are_the_true_ones():
    # to_dot runs reverse mode on NumPy values, not on a trace: pow's rule must give cotangents there too
    records = lambda dot: dict(re.findall(r'  (\w+) \[shape=record, label="\{ (.*?) \}"\];', dot))
    assert records(tg.to_dot(lambda a: a ** 2.5)(2.0))["a"].endswith(f"grad {2.5 * 2.0 ** 1.5:.4f}")
    both = records(tg.to_dot(lambda a, b: a ** b)(2.0, 3.0))
    assert both["a"].endswith(f"grad {3.0 * 2.0 ** 2:.4f}") and both["b"].endswith(f"grad {np.log(2.0) * 8.0:.4f}")
    x = records(tg.to_dot(lambda x: tnp.sum(x ** 2.5))(np.array([1.0, 0.0, 4.0])))["a"]
    assert x.endswith("grad [2.5000, 0.0000, 20.0000]")
    # safe at 0: x ** 0.0 is constant, and d/dy 0 ** y is 0 for y > 0 (no nan from 0 * inf or log 0)
    assert records(tg.to_dot(lambda a: a ** 0.0)(0.0))["a"].endswith("grad 0.0000")
    both = records(tg.to_dot(lambda a, b: a ** b)(0.0, 2.0))
    assert both["a"].endswith("grad 0.0000") and both["b"].endswith("grad 0.0000")


def test_dot_of_arrays_and_a_vector_output():
    dot = tg.to_dot(lambda x, w: tnp.tanh(x @ w))(np.ones((2, 3)), np.full((3, 1), 0.1))
    assert "a: f64[2,3] | data mean 1.0000 }" in dot  # no gradients for a vector output
    assert 'label="matmul a b"' in dot and "grad" not in dot


def test_draw_explains_what_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_graphviz(name, *args, **kwargs):
        if name == "graphviz":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_graphviz)
    with pytest.raises(ImportError, match="pip install graphviz"):
        tg.draw(lambda a: a * 2.0, str(tmp_path / "g.svg"))(1.0)


def test_a_loop_is_one_node_with_a_value_node_per_result():
    xs = np.linspace(0, 1, 5)
    f = lambda w: tg.scan(lambda c, x: (tnp.sin(c * w + x), c), 0.1, xs)[0]
    dot = tg.to_dot(f)(0.5)
    assert "scan[body=\\<3 ops\\>," in dot and "op0 -> c;" in dot and "op0 -> d;" in dot
    assert f"grad {tg.grad(f)(0.5):.4f}" in dot
