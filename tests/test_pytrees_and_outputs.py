"""Pytrees of dataclasses, attrs classes and registered classes; grad of a one-element output."""
import dataclasses

import attrs
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp


@dataclasses.dataclass
class Layer:
    w: np.ndarray
    b: np.ndarray


@attrs.frozen
class Model:
    layers: list
    _scale: float  # attrs' argument is `scale`


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


tg.register_pytree_node(Point, lambda p: ((p.x, p.y), "point"), lambda aux, children: Point(*children))


def loss(model, x):
    h = x
    for layer in model.layers:
        h = tnp.tanh(h @ layer.w + layer.b)
    return tnp.sum(h) * model._scale


def test_dataclasses_and_attrs_classes_are_nodes(python_backend):
    model = Model([Layer(np.full((3, 2), 0.1), np.zeros(2)), Layer(np.full((2, 1), 0.2), np.zeros(1))], 2.0)
    x = np.linspace(-1, 1, 12).reshape(4, 3)
    grads = tg.grad(loss)(model, x)
    assert isinstance(grads, Model) and isinstance(grads.layers[1], Layer)
    flat = lambda m: np.concatenate([np.ravel(leaf) for leaf in tg.tree_leaves(m)])
    leaves, tree = tg.tree_flatten(model)
    assert len(leaves) == 5
    numeric = []
    for i in range(len(flat(model))):  # central differences over every leaf element
        bump = np.zeros(len(flat(model)))
        bump[i] = 1e-6
        split = np.split(flat(model) + bump, np.cumsum([np.size(l) for l in leaves])[:-1])
        plus = tg.tree_unflatten(tree, [s.reshape(np.shape(l)) if np.ndim(l) else float(s[0]) for s, l in zip(split, leaves)])
        split = np.split(flat(model) - bump, np.cumsum([np.size(l) for l in leaves])[:-1])
        minus = tg.tree_unflatten(tree, [s.reshape(np.shape(l)) if np.ndim(l) else float(s[0]) for s, l in zip(split, leaves)])
        numeric.append((loss(plus, x) - loss(minus, x)) / 2e-6)
    np.testing.assert_allclose(flat(grads), numeric, rtol=1e-6, atol=1e-9)
    same = tg.jit(lambda m: m)(model)
    assert isinstance(same, Model) and same._scale == 2.0
    np.testing.assert_array_equal(same.layers[0].w, model.layers[0].w)


def test_registered_classes(python_backend):
    grads = tg.grad(lambda p: p.x * p.y ** 2)(Point(2.0, 3.0))
    assert isinstance(grads, Point) and (grads.x, grads.y) == (9.0, 12.0)
    out = tg.vmap(lambda p: p.x + p.y)(Point(np.array([1.0, 2.0]), np.array([3.0, 4.0])))
    np.testing.assert_array_equal(out, [4.0, 6.0])


def test_grad_of_a_one_element_array_output(backend):
    grad = tg.grad(lambda x: x[:1] * 3.0)(np.array([2.0, 5.0]))
    np.testing.assert_array_equal(grad, [3.0, 0.0])
    value, grad = tg.value_and_grad(lambda w: (w @ np.ones((2, 1))).reshape(1, 1))(np.array([[1.0, 2.0]]))
    assert np.shape(value) == (1, 1) and value[0, 0] == 3.0
    np.testing.assert_array_equal(grad, [[1.0, 1.0]])
    with pytest.raises(tg.errors.NonScalarOutputError, match="one element"):
        tg.grad(lambda x: x * 2.0)(np.ones(2))
