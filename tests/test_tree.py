"""Pytrees: nested tuples, lists, dicts and None; gradients come back in the argument's structure."""
from collections import namedtuple

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp

Point = namedtuple("Point", "x y")
pytestmark = pytest.mark.usefixtures("python_backend")


def test_flatten_and_unflatten_round_trip():
    tree = {"b": [1.0, (2.0, None)], "a": Point(np.ones(2), 3.0), "c": ()}
    leaves, treedef = tg.tree_flatten(tree)
    assert [np.shape(leaf) for leaf in leaves] == [(2,), (), (), ()]  # dict keys sorted: a, b, c
    assert leaves[1:] == [3.0, 1.0, 2.0]
    rebuilt = tg.tree_unflatten(treedef, leaves)
    assert type(rebuilt["a"]) is Point and rebuilt["b"] == [1.0, (2.0, None)] and rebuilt["c"] == ()
    assert treedef.num_leaves == 4 and hash(treedef) == hash(tg.tree_flatten(tree)[1])
    with pytest.raises(ValueError, match="has 4 leaves, got 3"):
        tg.tree_unflatten(treedef, leaves[:3])


def test_tree_map_over_several_trees():
    a, b = {"w": np.ones(2), "s": 1.0}, {"w": np.full(2, 3.0), "s": 2.0}
    total = tg.tree_map(lambda x, y: x + 2 * y, a, b)
    np.testing.assert_array_equal(total["w"], [7.0, 7.0])
    assert total["s"] == 5.0
    assert tg.tree_leaves([None, (1.0, [2.0])]) == [1.0, 2.0]


def test_gradients_keep_the_argument_structure_and_leaf_types():
    params = {"layers": [{"W": np.ones((2, 2)), "b": np.zeros(2)}], "scale": 2.0, "pair": (1.0, np.ones(3))}

    def loss(p):
        layer = p["layers"][0]
        return p["scale"] * tnp.sum(layer["W"] @ layer["b"] + 1.0) + p["pair"][0] * tnp.sum(p["pair"][1])

    grads = tg.grad(loss)(params)
    assert type(grads) is dict and type(grads["layers"]) is list and type(grads["pair"]) is tuple
    assert type(grads["scale"]) is float and grads["scale"] == pytest.approx(2.0)
    assert grads["layers"][0]["W"].dtype == np.float64 and grads["layers"][0]["W"].shape == (2, 2)
    np.testing.assert_allclose(grads["layers"][0]["b"], [4.0, 4.0])
    np.testing.assert_allclose(grads["pair"][1], [1.0, 1.0, 1.0])


def test_has_aux_and_argnums_tuple():
    def loss(w, b):
        return w * b, {"w_times_b": w * b, "note": None}

    (value, aux), (dw, db) = tg.value_and_grad(loss, argnums=(0, 1), has_aux=True)(2.0, 5.0)
    assert (value, dw, db) == (10.0, 5.0, 2.0)
    assert aux == {"w_times_b": 10.0, "note": None}
