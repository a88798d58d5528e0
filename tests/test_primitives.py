"""One row per primitive: forward against NumPy, VJP and JVP against central differences, vmap against a
loop over examples. The rules are the same on both backends, so JVP and vmap rows run on the python
backend only (numba compiles their programs in tests/test_forward.py, test_vmap.py and test_loops.py)."""
import math

import attrs
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import lowering
from tracegrad.core import abstract_eval_rules, batch_rules, bind, forward_vjp_rules, impl_rules, jvp_rules, vjp_rules
from tracegrad.primitives import optimization_barrier_p, pad_p, scatter_add_p
from tracegrad.random import argsort_keys_p

rng = np.random.default_rng(0)
normal = lambda *shape: rng.standard_normal(shape)
positive = lambda *shape: rng.uniform(0.5, 2.0, shape)
index = lambda *values: np.array(values, dtype=np.int64)
between = lambda low, high, *shape: rng.uniform(low, high, shape)


well_conditioned = lambda n: normal(n, n) + n * np.eye(n)
positive_definite = lambda n: (lambda m: m @ m.T + n * np.eye(n))(normal(n, n))
# functions of eigh's and qr's results that do not depend on the eigenvectors' or Q's signs, and read both results
spectral = lambda eigh: lambda a: (lambda w, v: (v * (w + np.arange(3.0))) @ v.T)(*eigh(a))
rescaled_q = lambda qr: lambda a: (lambda q, r: q * r.sum(axis=0))(*qr(a))


def padded(x, shape, where):
    out = np.zeros(shape)
    out[where] = x
    return out


@attrs.frozen
class Row:
    primitive: str
    fun: object  # traced with tnp
    reference: object  # plain NumPy
    args: tuple
    differentiated: object = None  # what the VJP differentiates, where not the reference itself


ROWS = [
    Row("neg", lambda x: -x, np.negative, (normal(3),)),
    Row("add", lambda x, y: x + y, np.add, (normal(3, 4), normal(4))),
    Row("sub", lambda x, y: x - y, np.subtract, (normal(3, 1), normal(4))),
    Row("mul", lambda x, y: x * y, np.multiply, (normal(3, 4), normal(3, 4))),
    Row("div", lambda x, y: x / y, np.divide, (normal(3, 4), positive(4))),
    Row("pow", lambda x, y: x ** y, np.power, (positive(3), normal(3))),
    Row("maximum", tnp.maximum, np.maximum, (normal(5), normal(5))),
    Row("minimum", tnp.minimum, np.minimum, (normal(2, 3), normal(3))),
    Row("exp", tnp.exp, np.exp, (normal(4),)),
    Row("log", tnp.log, np.log, (positive(4),)),
    Row("tanh", tnp.tanh, np.tanh, (normal(2, 3),)),
    Row("sin", tnp.sin, np.sin, (normal(4),)),
    Row("cos", tnp.cos, np.cos, (normal(4),)),
    Row("sqrt", tnp.sqrt, np.sqrt, (positive(4),)),
    Row("abs", tnp.abs, np.abs, (positive(4) * np.array([1, -1, 1, -1]),)),
    Row("stop_gradient", lambda x: tg.stop_gradient(x * x) + x, lambda x: x * x + x, (normal(4),),
        differentiated=lambda x: x),
    Row("sign", lambda x: tnp.sign(x) * x * x, lambda x: np.sign(x) * x * x, (normal(4),)),
    Row("gt", lambda x, y: tnp.where(x > y, x, y * 2.0), lambda x, y: np.where(x > y, x, y * 2.0), (normal(5), normal(5))),
    Row("lt", lambda x, y: tnp.where(x < y, x, y * 2.0), lambda x, y: np.where(x < y, x, y * 2.0), (normal(5), normal(5))),
    Row("ge", lambda x, y: tnp.where(x >= y, x, y * 2.0), lambda x, y: np.where(x >= y, x, y * 2.0), (normal(5), normal(5))),
    Row("le", lambda x, y: tnp.where(x <= y, x, y * 2.0), lambda x, y: np.where(x <= y, x, y * 2.0), (normal(5), normal(5))),
    Row("eq", lambda x, k: tnp.where(k == 2, x, x * 2.0), lambda x, k: np.where(k == 2, x, x * 2.0),
        (normal(3), index(1, 2, 2))),
    Row("ne", lambda x, k: tnp.where(k != 2, x, x * 2.0), lambda x, k: np.where(k != 2, x, x * 2.0),
        (normal(3), index(1, 2, 2))),
    Row("where", lambda x, y: tnp.where(x > 0.0, x * y, 3.0), lambda x, y: np.where(x > 0.0, x * y, 3.0),
        (normal(3, 4), normal(4))),
    Row("reduce_sum", lambda x: tnp.sum(x, axis=(0, 2))[:, None] + tnp.sum(x, axis=1)[0],
        lambda x: np.sum(x, axis=(0, 2))[:, None] + np.sum(x, axis=1)[0], (normal(2, 3, 4),)),
    Row("reduce_max", lambda x: tnp.max(x, axis=1) + tnp.max(x), lambda x: np.max(x, axis=1) + np.max(x),
        (normal(3, 4),)),
    Row("reshape", lambda x: x.T.reshape(12) * 2.0, lambda x: x.T.reshape(12) * 2.0, (normal(3, 4),)),
    Row("broadcast_to", lambda x: tnp.broadcast_to(x, (3, 4)), lambda x: np.broadcast_to(x, (3, 4)), (normal(4),)),
    Row("transpose", lambda x: tnp.transpose(x, (2, 0, 1)) + x.sum(axis=2)[None, :, :],
        lambda x: np.transpose(x, (2, 0, 1)) + x.sum(axis=2)[None, :, :], (normal(2, 3, 4),)),
    Row("matmul", lambda x, y: x @ y, np.matmul, (normal(3, 4), normal(4, 2))),
    Row("slice", lambda x: x[1:3, ::-2], lambda x: x[1:3, ::-2], (normal(4, 5),)),
    Row("pad", lambda x: bind(pad_p, x, shape=(4, 5), index=((1, 3, 1), (4, -1, -2))),
        lambda x: padded(x, (4, 5), np.s_[1:3, 4::-2]), (normal(2, 3),)),
    Row("gather", lambda x: x[index(0, 2, 1, 2), index(1, 1, 3, 1)], lambda x: x[[0, 2, 1, 2], [1, 1, 3, 1]],
        (normal(3, 4),)),
    Row("optimization_barrier", lambda x: bind(optimization_barrier_p, x) * 2.0, lambda x: x * 2.0, (normal(3, 2),)),
    Row("convert", lambda x, k: x * tnp.astype(k, np.float64) + tnp.astype(x, np.float32).astype(np.float64),
        lambda x, k: x * k.astype(np.float64) + x.astype(np.float32).astype(np.float64),
        (normal(3), index(1, 2, 3)), differentiated=lambda x, k: x * k.astype(np.float64) + x),
    Row("scatter_add", lambda g: bind(scatter_add_p, g, index(0, 2, 0), shape=(3, 2)),
        lambda g: np.array([g[0] + g[2], np.zeros(2), g[1]]), (normal(3, 2),)),
    # NumPy's surface (tests/test_numpy_surface.py checks the tnp functions built on these)
    Row("log1p", tnp.log1p, np.log1p, (positive(4),)),
    Row("expm1", tnp.expm1, np.expm1, (normal(4),)),
    Row("log2", tnp.log2, np.log2, (positive(4),)),
    Row("log10", tnp.log10, np.log10, (positive(2, 3),)),
    Row("exp2", tnp.exp2, np.exp2, (normal(4),)),
    Row("tan", tnp.tan, np.tan, (between(-1.2, 1.2, 4),)),
    Row("arcsin", tnp.arcsin, np.arcsin, (between(-0.7, 0.7, 4),)),
    Row("arccos", tnp.arccos, np.arccos, (between(-0.7, 0.7, 4),)),
    Row("arctan", tnp.arctan, np.arctan, (normal(4),)),
    Row("sinh", tnp.sinh, np.sinh, (normal(4),)),
    Row("cosh", tnp.cosh, np.cosh, (normal(4),)),
    Row("arcsinh", tnp.arcsinh, np.arcsinh, (normal(4),)),
    Row("arccosh", tnp.arccosh, np.arccosh, (1.0 + positive(4),)),
    Row("arctanh", tnp.arctanh, np.arctanh, (between(-0.7, 0.7, 4),)),
    Row("erf", tnp.erf, lambda x: np.vectorize(math.erf)(x), (normal(2, 3),)),
    Row("cbrt", tnp.cbrt, np.cbrt, (positive(4) * np.array([1, -1, 1, -1]),)),
    Row("arctan2", tnp.arctan2, np.arctan2, (normal(3, 4), normal(4))),
    Row("hypot", tnp.hypot, np.hypot, (normal(3, 4), normal(3, 1))),
    Row("mod", lambda x, y: x % y, np.mod, (between(-3.0, 3.0, 5) + 0.05, between(0.5, 1.0, 5))),
    Row("floor_divide", lambda x, y: (x // y) * x, lambda x, y: np.floor_divide(x, y) * x,
        (between(-3.0, 3.0, 5) + 0.05, between(0.5, 1.0, 5))),
    Row("floor", lambda x: tnp.floor(x) * x, lambda x: np.floor(x) * x, (between(-3.0, 3.0, 5) + 0.05,)),
    Row("ceil", lambda x: tnp.ceil(x) * x, lambda x: np.ceil(x) * x, (between(-3.0, 3.0, 5) + 0.05,)),
    Row("rint", lambda x: tnp.round(x) * x, lambda x: np.round(x) * x, (between(-3.0, 3.0, 5) + 0.05,)),
    Row("and", lambda x, y: tnp.where((x > 0.0) & (y > 0.0), x, y * 2.0),
        lambda x, y: np.where((x > 0.0) & (y > 0.0), x, y * 2.0), (normal(6), normal(6))),
    Row("or", lambda x, y: tnp.where((x > 0.0) | (y > 0.0), x, y * 2.0),
        lambda x, y: np.where((x > 0.0) | (y > 0.0), x, y * 2.0), (normal(6), normal(6))),
    Row("xor", lambda x, k: tnp.where((k ^ 1) == 2, x, x * 2.0), lambda x, k: np.where((k.astype(np.int64) ^ 1) == 2, x, x * 2.0),
        (normal(3), index(1, 3, 2))),
    Row("invert", lambda x: tnp.where(~(x > 0.0), x, x * 3.0), lambda x: np.where(~(x > 0.0), x, x * 3.0),
        (normal(6),)),
    Row("argmax", lambda x: x * tnp.argmax(x, axis=1)[:, None], lambda x: x * np.argmax(x, axis=1)[:, None],
        (normal(3, 4),)),
    Row("argsort", lambda x: tnp.sort(x, axis=0), lambda x: np.sort(x, axis=0), (normal(4, 3),)),
    Row("cumsum", lambda x: tnp.cumsum(x, axis=1), lambda x: np.cumsum(x, axis=1), (normal(3, 4),)),
    Row("batch_matmul", lambda x, y: x @ y, np.matmul, (normal(2, 3, 4), normal(2, 4, 5))),
    # random numbers and linear algebra (the references evaluate tg.random's NumPy rules, or call np.linalg)
    Row("threefry2x32", lambda key, x: x * tg.random.normal(key, (3,)),
        lambda key, x: x * tg.random.normal(key.astype(np.int64), (3,)), (tg.random.key(1), normal(3))),
    Row("argsort_keys", lambda x: x[bind(argsort_keys_p, x)] * 2.0, lambda x: np.sort(x) * 2.0, (normal(5),)),
    Row("solve", tnp.linalg.solve, np.linalg.solve, (well_conditioned(3), normal(3, 2))),
    Row("det", tnp.linalg.det, np.linalg.det, (well_conditioned(3),)),
    Row("slogdet", lambda a: tnp.linalg.slogdet(a).logabsdet * tnp.linalg.slogdet(a).sign,
        lambda a: np.linalg.slogdet(a).logabsdet * np.linalg.slogdet(a).sign, (well_conditioned(3),)),
    Row("cholesky", tnp.linalg.cholesky, np.linalg.cholesky, (positive_definite(3),)),
    Row("eigh", spectral(tnp.linalg.eigh), spectral(np.linalg.eigh), (positive_definite(3),)),
    Row("qr", rescaled_q(tnp.linalg.qr), rescaled_q(np.linalg.qr), (normal(4, 3),)),
]


# tests/test_loops.py checks the loops against the Python loops they replace; tests/test_custom.py the custom rules
LOOPS = {"scan", "while", "cond", "custom_vjp_call", "custom_jvp_call", "checkpoint_call"}


def test_every_primitive_has_a_row():
    names = {primitive.name for primitive in abstract_eval_rules}
    assert sorted(row.primitive for row in ROWS) == sorted(names - LOOPS) and LOOPS <= names


def test_every_primitive_has_its_rules_and_a_lowering():
    for primitive in abstract_eval_rules:
        reverse_mode = primitive in vjp_rules or primitive in forward_vjp_rules
        assert primitive in impl_rules and reverse_mode == primitive.differentiable, primitive
        assert (primitive in jvp_rules) == primitive.differentiable and primitive in batch_rules, primitive
        rule = lowering.rule_for(primitive)
        assert primitive.elementwise == (rule.element is not None), primitive  # fused loops and the tape need it


def uses_primitive(row: Row) -> bool:
    program = tg.make_ir(row.fun)(*row.args)
    return any(op.primitive.name == row.primitive for op in program.ops)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_forward_matches_numpy(row, backend):
    assert uses_primitive(row)
    np.testing.assert_allclose(tg.jit(row.fun)(*row.args), row.reference(*row.args), rtol=1e-12, atol=1e-12)


def inner(a, b) -> float:
    return float(np.sum(np.asarray(a) * np.asarray(b)))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_vjp_matches_central_differences(row, backend):
    """<u, J v> by the adjoint and by central differences, in a random direction v, float64."""
    is_float = [np.asarray(a).dtype == np.float64 for a in row.args]
    directions = [rng.standard_normal(np.shape(a)) if f else 0 for a, f in zip(row.args, is_float)]
    out, pullback = tg.vjp(row.fun, *row.args)
    cotangent = rng.standard_normal(np.shape(out))
    by_adjoint = sum(inner(c, v) for c, v, f in zip(pullback(cotangent), directions, is_float) if f)
    h = 1e-6
    differentiated = row.differentiated or row.reference
    plus = differentiated(*(a + h * v for a, v in zip(row.args, directions)))
    minus = differentiated(*(a - h * v for a, v in zip(row.args, directions)))
    by_differences = inner(cotangent, (plus - minus) / (2 * h))
    assert by_adjoint == pytest.approx(by_differences, rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_jvp_matches_central_differences(row, python_backend):
    """J v by forward mode and by central differences, in a random direction v, float64."""
    is_float = [np.asarray(a).dtype == np.float64 for a in row.args]
    directions = [rng.standard_normal(np.shape(a)) if f else np.zeros(np.shape(a)) for a, f in zip(row.args, is_float)]
    out, tangent = tg.jvp(row.fun, row.args, directions)
    h = 1e-6
    differentiated = row.differentiated or row.reference
    plus = differentiated(*(a + h * v if f else a for a, v, f in zip(row.args, directions, is_float)))
    minus = differentiated(*(a - h * v if f else a for a, v, f in zip(row.args, directions, is_float)))
    np.testing.assert_allclose(out, row.reference(*row.args), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tangent, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-8)


def examples(arg, count: int = 3) -> list:
    """`count` different arguments like `arg` (integer index arrays as they are)."""
    arg = np.asarray(arg)
    if arg.dtype != np.float64:
        return [arg] * count
    return [arg * (1.0 + 0.1 * k) + 0.05 * k for k in range(count)]


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_vmap_matches_a_loop_over_examples(row, python_backend):
    """Every argument batched, then only the first: the batching rule against one call per example."""
    per_argument = [examples(a) for a in row.args]
    stacked = [np.stack(each) for each in per_argument]
    expected = np.stack([row.reference(*example) for example in zip(*per_argument)])
    np.testing.assert_allclose(tg.vmap(row.fun)(*stacked), expected, rtol=1e-12, atol=1e-12)
    in_axes = (0,) + (None,) * (len(row.args) - 1)
    expected = np.stack([row.reference(first, *row.args[1:]) for first in per_argument[0]])
    np.testing.assert_allclose(tg.vmap(row.fun, in_axes=in_axes)(stacked[0], *row.args[1:]), expected,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("row", ROWS, ids=lambda row: row.primitive)
def test_every_pass_typechecks(row):
    tg.typecheck(tg.make_ir(row.fun)(*row.args))
    scalar = lambda *args: tnp.sum(row.fun(*args) * 1.5)
    floats = tuple(i for i, a in enumerate(row.args) if np.asarray(a).dtype == np.float64)
    tg.typecheck(tg.make_ir(tg.grad(scalar, argnums=floats))(*row.args))
