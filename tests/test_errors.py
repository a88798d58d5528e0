"""Misuse of the API gets a tracegrad.errors class whose message names the user's line and the fix."""
import numpy as np
import pytest

import tracegrad as tg
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
    with pytest.raises(errors.UnsupportedLeafError, match="returned a leaf of type str"):
        tg.jit(lambda x: (x, "label"))(1.0)


def test_tree_map_over_different_structures():
    with pytest.raises(errors.TreeStructureError, match=r"TreeDef\(\[\*\]\) and TreeDef\(\(\*,\)\)"):
        tg.tree_map(lambda a, b: a, [1.0], (1.0,))


def test_error_classes_keep_the_builtin_bases():
    assert issubclass(errors.ArgnumsError, ValueError)
    assert issubclass(errors.NonDifferentiableArgumentError, TypeError)
    assert issubclass(errors.UnsupportedLeafError, TypeError)
    assert issubclass(errors.TreeStructureError, ValueError)
