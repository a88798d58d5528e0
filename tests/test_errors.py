"""Misuse of the API gets a tracegrad.errors class whose message names the user's line and the fix."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import errors

pytestmark = pytest.mark.usefixtures("python_backend")
HERE = "test_errors.py"


def test_argnums_out_of_range():
    with pytest.raises(errors.ArgnumsError, match=rf"out of range.*{HERE}:\d+"):
        tg.grad(lambda x: x, argnums=3)(1.0)


def test_argnums_at_an_integer_array():
    with pytest.raises(errors.NonDifferentiableArgumentError, match=rf"i64\[2\].*{HERE}:\d+.*float values"):
        tg.grad(lambda x, labels: x, argnums=1)(1.0, np.array([1, 2]))


def test_a_leaf_of_an_unsupported_type():
    with pytest.raises(errors.UnsupportedLeafError, match=rf"type str.*{HERE}:\d+.*static"):
        tg.grad(lambda x: x)("a")
    with pytest.raises(errors.UnsupportedLeafError, match=rf"returned a leaf of type str.*{HERE}:\d+"):
        tg.jit(lambda x: (x, "label"))(1.0)


def test_tree_map_over_different_structures():
    with pytest.raises(errors.TreeStructureError, match=rf"TreeDef\(\[\*\]\) and TreeDef\(\(\*,\)\).*{HERE}:\d+"):
        tg.tree_map(lambda a, b: a, [1.0], (1.0,))


def test_grad_of_a_vector_or_a_missing_aux_names_the_function_and_the_call():
    def vector(x):
        return x * 2.0

    with pytest.raises(errors.NonScalarOutputError, match=rf"vector \(defined at .*{HERE}:\d+\).*f64\[3\].*{HERE}:\d+"):
        tg.grad(vector)(np.ones(3))
    with pytest.raises(TypeError, match=rf"has_aux=True, vector .*must return a pair.*{HERE}:\d+"):
        tg.grad(vector, has_aux=True)(1.0)


@pytest.mark.parametrize("misuse, error", [
    (lambda x: tnp.transpose(x, (0, 0)), errors.ShapeError),
    (lambda x: tnp.stack([x, x[0]]), errors.ShapeError),
    (lambda x: x[..., ...], errors.IndexingError),
    (lambda x: x[0, 0, 0], errors.IndexingError),
    (lambda x: len(tnp.sum(x)), TypeError),
    (lambda x: x + np.array(["a"]), TypeError),
], ids=["transpose", "stack", "ellipsis", "too-many-indices", "len", "dtype"])
def test_every_tracing_error_names_the_line(misuse, error):
    with pytest.raises(error, match=rf"{HERE}:\d+"):
        tg.jit(misuse)(np.ones((2, 2)))


def test_error_classes_keep_the_builtin_bases():
    assert issubclass(errors.ArgnumsError, ValueError)
    assert issubclass(errors.NonDifferentiableArgumentError, TypeError)
    assert issubclass(errors.UnsupportedLeafError, TypeError)
    assert issubclass(errors.TreeStructureError, ValueError)
    assert issubclass(errors.IndexingError, IndexError) and issubclass(errors.IndexingError, errors.ShapeError)
