"""tnp.linalg: NumPy's linear algebra on traced values, with gradients (`np.linalg.solve(t, b)` comes here too).

Six primitives, each on a stack of matrices (leading batch axes, as NumPy's linalg takes them):
`solve`, `det`, `slogdet`, `cholesky`, `eigh` and `qr`; `inv` is `solve` against the identity
and `norm` is built from elementwise ops and reductions (its matrix 2-norm from `eigh`). Their
derivatives are the standard matrix-calculus rules, as JAX's `jax/_src/lax/linalg.py` has them:
solve's VJP is another solve, det's is det * inv^T, and cholesky's, eigh's and qr's come from
their JVPs. `cholesky` and `eigh` read the lower triangle only, as NumPy's do, so the gradient
of an entry above the diagonal is zero (a symmetric perturbation gets JAX's derivative).

This module builds on core, primitives and the tracer's operators, not on tracegrad.numpy,
which imports it to offer it as `tnp.linalg` and to dispatch NumPy's functions here.
"""
from __future__ import annotations

import collections

import numpy as np

from .core import (Tracer, abstract_eval_rules, aval_of, batch_rules, bind, forward_vjp_rules, impl_rules,
                   jvp_rules, vjp_rules)
from .errors import ShapeError
from .ir import FLOAT_DTYPES, Aval, Primitive
from .primitives import (abs_p, broadcast_to_p, convert, matmul_p, ne_p, reduce_max_p, reduce_sum_p, reshape_p,
                         sqrt_p, transpose_p, where_p)
from .source_info import user_source, where_text

EighResult = collections.namedtuple("EighResult", ["eigenvalues", "eigenvectors"])
SlogdetResult = collections.namedtuple("SlogdetResult", ["sign", "logabsdet"])
QRResult = collections.namedtuple("QRResult", ["Q", "R"])

# -- matrix helpers on stacks of matrices (..., n, m), traced or concrete ----------------------


def shape_of(x) -> tuple[int, ...]:
    return aval_of(x).shape


def swap(x):
    """The transpose of each matrix: the last two axes swapped."""
    rank = len(shape_of(x))
    return bind(transpose_p, x, perm=tuple(range(rank - 2)) + (rank - 1, rank - 2))


def mm(x, y):
    """The product of each pair of matrices, the batch axes broadcast."""
    x_shape, y_shape = shape_of(x), shape_of(y)
    if len(x_shape) == 2 and len(y_shape) == 2:
        return bind(matmul_p, x, y)
    if len(y_shape) == 2:  # one product, the stack's rows one after another
        rows = bind(reshape_p, x, shape=(int(np.prod(x_shape[:-1])), x_shape[-1]))
        return bind(reshape_p, bind(matmul_p, rows, y), shape=x_shape[:-1] + y_shape[-1:])
    terms = bind(reshape_p, x, shape=x_shape + (1,)) * bind(reshape_p, y, shape=y_shape[:-2] + (1,) + y_shape[-2:])
    return bind(reduce_sum_p, terms, axes=(len(shape_of(terms)) - 2,))


def solve_stack(a, b):
    return bind(solve_p, a, b)


def constant_like(x, array: np.ndarray) -> np.ndarray:
    """A constant matrix in x's float dtype, so that it never widens a float32 computation."""
    return array.astype(np.float32) if dtype_of(x) == "f32" else array


def dtype_of(x) -> str:
    return aval_of(x).dtype if isinstance(x, Tracer) else ("f32" if np.asarray(x).dtype == np.float32 else "f64")


def eye_like(x):
    """The identity, broadcast to the shape of the stack of square matrices x."""
    return bind(broadcast_to_p, constant_like(x, np.eye(shape_of(x)[-1])), shape=shape_of(x))


def diagonal(x):
    """The diagonal of each square matrix (..., n)."""
    return bind(reduce_sum_p, x * constant_like(x, np.eye(shape_of(x)[-1])), axes=(len(shape_of(x)) - 1,))


def diagonal_matrix(v):
    """Each vector (..., n) as a diagonal matrix (..., n, n)."""
    v_shape = shape_of(v)
    return bind(reshape_p, v, shape=v_shape[:-1] + (1,) + v_shape[-1:]) * constant_like(v, np.eye(v_shape[-1]))


def trace(x):
    return bind(reduce_sum_p, diagonal(x), axes=(len(shape_of(x)) - 2,))


def lower(x, k: int = 0):
    """The entries on and below diagonal k of each matrix (np.tril), the others zero."""
    n, m = shape_of(x)[-2:]
    return x * constant_like(x, np.tril(np.ones((n, m)), k))


def scalars_as_matrices(s):
    """A number per matrix (...), shaped (..., 1, 1) to broadcast over the matrices."""
    return bind(reshape_p, s, shape=shape_of(s) + (1, 1))


def lower_read_cotangent(s):
    """The cotangent of a matrix whose lower triangle is read as a symmetric one (NumPy's cholesky
    and eigh), given `s` with <s, dA> the derivative along a symmetric dA: the entries below the
    diagonal stand for both of their places, those above for none."""
    return lower(s + swap(s), -1) + s * constant_like(s, np.eye(shape_of(s)[-1]))


def symmetric_from_lower(t):
    """The symmetric tangent that a tangent t of a lower-read matrix stands for."""
    return lower(t) + swap(lower(t, -1))


def all_batched(values, batched, size):
    """Every operand with the batch axis: the unbatched ones broadcast over it."""
    return [v if b else bind(broadcast_to_p, v, shape=(size,) + shape_of(v)) for v, b in zip(values, batched)]


def stack_batch(primitive: Primitive):
    """A primitive on stacks of matrices batches as itself, the examples one more stack axis."""
    def rule(values, batched, size, **params):
        out = bind(primitive, *all_batched(values, batched, size), **params)
        return out, ([True] * len(out) if primitive.multiple_results else True)
    return rule


# -- the primitives ----------------------------------------------------------------------


def square_stack(name: str, a: Aval) -> None:
    if a.ndim < 2 or a.shape[-1] != a.shape[-2] or a.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"{name}: needs float square matrices (..., n, n), got {a}")


def solve_rule(a: Aval, b: Aval) -> Aval:
    square_stack("solve", a)
    if b.ndim != a.ndim or b.shape[:-1] != a.shape[:-1] or b.dtype != a.dtype:
        raise ShapeError(f"solve: cannot solve {a} against {b} (need (..., n, n) and (..., n, k))")
    return b


def solve_jvp(primals, tangents):
    (a, b), (ta, tb) = primals, tangents
    out = solve_stack(a, b)
    rhs = tb if ta is None else (-mm(ta, out) if tb is None else tb - mm(ta, out))
    return out, solve_stack(a, rhs)


def solve_vjp(g, out, a, b):
    gb = solve_stack(swap(a), g)
    return -mm(gb, swap(out)), gb


def solve_batch(values, batched, size):
    # one matrix against every example's right-hand sides: a single solve, the examples' columns side by side
    (a, b), (a_batched, b_batched) = values, batched
    if b_batched and not a_batched:
        b_shape = shape_of(b)
        axes = len(b_shape) - 1  # b (size, ..., n, k) -> (..., n, size, k) -> (..., n, size * k)
        perm = tuple(range(1, axes)) + (0, axes)
        columns = bind(transpose_p, b, perm=perm)
        columns = bind(reshape_p, columns, shape=b_shape[1:-1] + (size * b_shape[-1],))
        out = bind(reshape_p, solve_stack(a, columns), shape=b_shape[1:-1] + (size, b_shape[-1]))
        return bind(transpose_p, out, perm=(axes - 1,) + tuple(range(axes - 1)) + (axes,)), True
    return solve_stack(*all_batched(values, batched, size)), True


# solve: x with a @ x = b for each matrix of the stacks a (..., n, n) and b (..., n, k); the VJP is a
# solve with a^T, the JVP a solve of db - da @ x
solve_p = Primitive("solve")
abstract_eval_rules[solve_p] = solve_rule
impl_rules[solve_p] = np.linalg.solve
vjp_rules[solve_p] = solve_vjp
jvp_rules[solve_p] = solve_jvp
batch_rules[solve_p] = solve_batch


def determinant_rule(name: str):
    def rule(a: Aval):
        square_stack(name, a)
        return Aval(a.shape[:-2], a.dtype) if name == "det" else (Aval(a.shape[:-2], a.dtype), Aval(a.shape[:-2], a.dtype))
    return rule


def inverse_transpose(a):
    return swap(solve_stack(a, eye_like(a)))


def det_jvp(primals, tangents):
    (a,), (ta,) = primals, tangents
    out = bind(det_p, a)
    return out, out * trace(solve_stack(a, ta))


# det: the determinant of each matrix; d det = det * trace(a^-1 da), so the VJP is g * det * a^-T
# (nan at a singular matrix, where JAX computes the cofactors instead)
det_p = Primitive("det")
abstract_eval_rules[det_p] = determinant_rule("det")
impl_rules[det_p] = np.linalg.det
vjp_rules[det_p] = lambda g, out, a: (scalars_as_matrices(g * out) * inverse_transpose(a),)
jvp_rules[det_p] = det_jvp
batch_rules[det_p] = stack_batch(det_p)


def slogdet_forward_vjp(primals, differentiated):
    (a,) = primals
    sign, logabsdet = bind(slogdet_p, a)

    def backward(g):  # the sign is piecewise constant: only log|det|'s cotangent flows
        return (None if g[1] is None else scalars_as_matrices(g[1]) * inverse_transpose(a),)
    return [sign, logabsdet], backward


def slogdet_jvp(primals, tangents):
    (a,), (ta,) = primals, tangents
    sign, logabsdet = bind(slogdet_p, a)
    return [sign, logabsdet], [None, trace(solve_stack(a, ta))]


# slogdet: (sign, log|det|) of each matrix; d log|det| = trace(a^-1 da), the sign has no derivative
slogdet_p = Primitive("slogdet", multiple_results=True)
abstract_eval_rules[slogdet_p] = determinant_rule("slogdet")
impl_rules[slogdet_p] = lambda a: list(np.linalg.slogdet(a))
forward_vjp_rules[slogdet_p] = slogdet_forward_vjp
jvp_rules[slogdet_p] = slogdet_jvp
batch_rules[slogdet_p] = stack_batch(slogdet_p)


def square_same(name: str):
    def rule(a: Aval) -> Aval:
        square_stack(name, a)
        return a
    return rule


def lower_halved(x):
    """Below the diagonal as it is, the diagonal halved, above it zero (the Cholesky factor's Phi)."""
    n = shape_of(x)[-1]
    return x * constant_like(x, np.tril(np.ones((n, n)), -1) + 0.5 * np.eye(n))


def cholesky_jvp(primals, tangents):
    # dL = L Phi(L^-1 dA L^-T), dA the symmetric tangent the lower triangle stands for
    (a,), (ta,) = primals, tangents
    factor = bind(cholesky_p, a)
    left = solve_stack(factor, symmetric_from_lower(ta))  # L^-1 dA
    return factor, mm(factor, lower_halved(solve_stack(factor, swap(left))))  # L^-1 (L^-1 dA)^T = L^-1 dA L^-T


def cholesky_vjp(g, factor, a):
    # <g, dL> = <L^-T Phi(L^T g) L^-1, dA> for symmetric dA
    left = solve_stack(swap(factor), lower_halved(mm(swap(factor), g)))  # L^-T Phi(L^T g)
    return (lower_read_cotangent(swap(solve_stack(swap(factor), swap(left)))),)  # (L^-T left^T)^T = left L^-1


# cholesky: the lower factor L of each symmetric positive-definite matrix (its lower triangle read, as
# NumPy reads it); derivatives from dL = L Phi(L^-1 dA L^-T), Phi keeping the lower triangle, diagonal halved
cholesky_p = Primitive("cholesky")
abstract_eval_rules[cholesky_p] = square_same("cholesky")
impl_rules[cholesky_p] = np.linalg.cholesky
vjp_rules[cholesky_p] = cholesky_vjp
jvp_rules[cholesky_p] = cholesky_jvp
batch_rules[cholesky_p] = stack_batch(cholesky_p)


def eigh_rule(a: Aval):
    square_stack("eigh", a)
    return Aval(a.shape[:-1], a.dtype), a


def eigenvalue_gaps(w):
    """F with F[i, j] = 1 / (w[j] - w[i]) off the diagonal and 0 on it (inf for repeated eigenvalues)."""
    w_shape = shape_of(w)
    eye = constant_like(w, np.eye(w_shape[-1]))
    rows = bind(reshape_p, w, shape=w_shape[:-1] + (1,) + w_shape[-1:])
    columns = bind(reshape_p, w, shape=w_shape + (1,))
    return 1.0 / (eye + rows - columns) - eye


def eigh_jvp(primals, tangents):
    # with M = V^T dA V: dw = diag(M), dV = V (F * M)
    (a,), (ta,) = primals, tangents
    w, v = bind(eigh_p, a)
    rotated = mm(mm(swap(v), symmetric_from_lower(ta)), v)
    return [w, v], [diagonal(rotated), mm(v, eigenvalue_gaps(w) * rotated)]


def eigh_forward_vjp(primals, differentiated):
    (a,) = primals
    w, v = bind(eigh_p, a)

    def backward(g):
        # <gw, dw> + <gV, dV> = <V (diag(gw) + F * (V^T gV)) V^T, dA> for symmetric dA
        gw, gv = g
        inner = None if gw is None else diagonal_matrix(gw)
        if gv is not None:
            gaps = eigenvalue_gaps(w) * mm(swap(v), gv)
            inner = gaps if inner is None else inner + gaps
        return (lower_read_cotangent(mm(mm(v, inner), swap(v))),)
    return [w, v], backward


# eigh: the eigenvalues (ascending) and eigenvectors (columns) of each symmetric matrix (its lower
# triangle read, as NumPy's UPLO="L"); derivatives as JAX's, undefined where eigenvalues repeat
eigh_p = Primitive("eigh", multiple_results=True)
abstract_eval_rules[eigh_p] = eigh_rule
impl_rules[eigh_p] = lambda a: list(np.linalg.eigh(a))
forward_vjp_rules[eigh_p] = eigh_forward_vjp
jvp_rules[eigh_p] = eigh_jvp
batch_rules[eigh_p] = stack_batch(eigh_p)


def qr_rule(a: Aval):
    if a.ndim < 2 or a.dtype not in FLOAT_DTYPES:
        raise ShapeError(f"qr: needs float matrices (..., m, n), got {a}")
    m, n = a.shape[-2:]
    k = min(m, n)
    return Aval(a.shape[:-2] + (m, k), a.dtype), Aval(a.shape[:-2] + (k, n), a.dtype)


def check_tall(a) -> None:
    m, n = shape_of(a)[-2:]
    if m < n:
        raise NotImplementedError(f"the derivative of qr of a wide matrix ({m} x {n}) is not implemented, as in "
                                  f"JAX (at {where_text(user_source())}); differentiate qr of its transpose")


def right_solve_transposed(z, r):
    """z R^-T: the solve of R y^T = z^T, transposed back."""
    return swap(solve_stack(r, swap(z)))


def qr_jvp(primals, tangents):
    # JAX's rule (j-towns.github.io/papers/qr-derivative.pdf): with C = Q^T dA R^-1 and
    # Omega = tril(C, -1) - tril(C, -1)^T: dQ = Q (Omega - C) + dA R^-1, dR = (C - Omega) R
    (a,), (ta,) = primals, tangents
    check_tall(a)
    q, r = bind(qr_p, a)
    ta_r_inverse = swap(solve_stack(swap(r), swap(ta)))  # dA R^-1
    c = mm(swap(q), ta_r_inverse)
    omega = lower(c, -1) - swap(lower(c, -1))
    return [q, r], [mm(q, omega - c) + ta_r_inverse, mm(c - omega, r)]


def qr_forward_vjp(primals, differentiated):
    (a,) = primals
    check_tall(a)
    q, r = bind(qr_p, a)

    def backward(g):
        # the JVP transposed: with M = Q^T gQ - gR R^T and N = tril(M - M^T, -1) - M,
        # gA = (Q N + gQ) R^-T
        gq, gr = g
        m = None if gq is None else mm(swap(q), gq)
        if gr is not None:
            m = -mm(gr, swap(r)) if m is None else m - mm(gr, swap(r))
        n = lower(m - swap(m), -1) - m
        z = mm(q, n) if gq is None else mm(q, n) + gq
        return (right_solve_transposed(z, r),)
    return [q, r], backward


# qr: the reduced QR decomposition of each matrix (Q (..., m, k), R (..., k, n), k = min(m, n)), with
# LAPACK's signs, as NumPy gives it; derivatives as JAX's, for m >= n
qr_p = Primitive("qr", multiple_results=True)
abstract_eval_rules[qr_p] = qr_rule
impl_rules[qr_p] = lambda a: list(np.linalg.qr(a))
forward_vjp_rules[qr_p] = qr_forward_vjp
jvp_rules[qr_p] = qr_jvp
batch_rules[qr_p] = stack_batch(qr_p)

# -- the functions, with NumPy's signatures ----------------------------------------------------------


def as_float(x):
    """x as a float: float32 and float64 as they are, an integer or boolean value as float64."""
    if isinstance(x, Tracer):
        return x if x.aval.dtype in FLOAT_DTYPES else convert(x, "f64")
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def square_matrices(name: str, a) -> tuple[int, ...]:
    a_shape = shape_of(a)
    if len(a_shape) < 2 or a_shape[-1] != a_shape[-2]:
        raise np.linalg.LinAlgError(f"{name}: needs square matrices (..., n, n), got shape {a_shape} "
                                    f"(at {where_text(user_source())})")
    return a_shape


def broadcast_stacks(a, b):
    """a (..., n, n) and b (..., n, k) with their batch axes broadcast to one shape."""
    batch = np.broadcast_shapes(shape_of(a)[:-2], shape_of(b)[:-2])
    grown = lambda x: x if shape_of(x)[:-2] == batch else bind(broadcast_to_p, x, shape=batch + shape_of(x)[-2:])
    return grown(a), grown(b)


def solve(a, b):
    """x with a @ x = b (np.linalg.solve): a (..., n, n); b (n,) or a stack (..., n, k)."""
    a, b = as_float(a), as_float(b)
    if dtype_of(a) != dtype_of(b):  # float32 with float64 is float64, as np.result_type says
        a, b = (convert(x, "f64") if isinstance(x, Tracer) else np.asarray(x, np.float64) for x in (a, b))
    a_shape, b_shape = square_matrices("solve", a), shape_of(b)
    vector = len(b_shape) == 1
    if vector:
        b = bind(reshape_p, b, shape=b_shape + (1,))
    if len(shape_of(b)) < 2 or shape_of(b)[-2] != a_shape[-1]:
        raise ShapeError(f"solve: cannot solve matrices of shape {a_shape} against b of shape {b_shape} "
                         f"(at {where_text(user_source())}); b must be (n,) or (..., n, k)")
    x = solve_stack(*broadcast_stacks(a, b))
    return bind(reshape_p, x, shape=shape_of(x)[:-1]) if vector else x


def inv(a):
    """The inverse of each matrix (np.linalg.inv): the solve of a @ x = I."""
    a = as_float(a)
    square_matrices("inv", a)
    return solve_stack(a, eye_like(a))


def det(a):
    """The determinant of each matrix (np.linalg.det)."""
    a = as_float(a)
    square_matrices("det", a)
    return bind(det_p, a)


def slogdet(a):
    """(sign, log|det|) of each matrix (np.linalg.slogdet), as a namedtuple (sign, logabsdet)."""
    a = as_float(a)
    square_matrices("slogdet", a)
    return SlogdetResult(*bind(slogdet_p, a))


def cholesky(a, upper: bool = False):
    """The Cholesky factor of each symmetric positive-definite matrix (np.linalg.cholesky): lower, reading
    the lower triangle; with `upper=True` the upper factor, reading the upper triangle."""
    a = as_float(a)
    square_matrices("cholesky", a)
    return swap(bind(cholesky_p, swap(a))) if upper else bind(cholesky_p, a)


def eigh(a, UPLO: str = "L"):
    """Eigenvalues (ascending) and eigenvectors (columns) of each symmetric matrix (np.linalg.eigh), as a
    namedtuple (eigenvalues, eigenvectors); UPLO says which triangle is read."""
    a = as_float(a)
    square_matrices("eigh", a)
    if UPLO not in ("L", "U"):
        raise ValueError(f"eigh: UPLO must be 'L' or 'U', got {UPLO!r} (at {where_text(user_source())})")
    return EighResult(*bind(eigh_p, a if UPLO == "L" else swap(a)))


def qr(a, mode: str = "reduced"):
    """The QR decomposition of each matrix (np.linalg.qr) with mode "reduced" (a namedtuple (Q, R)),
    "r" (R alone), or "complete" where that is the reduced one (m <= n)."""
    a = as_float(a)
    a_shape = shape_of(a)
    if len(a_shape) < 2:
        raise np.linalg.LinAlgError(f"qr: needs matrices (..., m, n), got shape {a_shape} "
                                    f"(at {where_text(user_source())})")
    if mode not in ("reduced", "r", "complete") or (mode == "complete" and a_shape[-2] > a_shape[-1]):
        raise NotImplementedError(f"qr: mode {mode!r} is not supported on traced values for a {a_shape} matrix "
                                  f"(at {where_text(user_source())}); use mode='reduced' or 'r'")
    q, r = bind(qr_p, a)
    return r if mode == "r" else QRResult(q, r)


def reduce(primitive: Primitive, x, axes: tuple[int, ...]):
    return bind(primitive, x, axes=tuple(sorted(axes)))


def vector_norm(x, ord, axis: int):
    magnitude = bind(abs_p, x)
    if ord is None or ord == 2:
        return bind(sqrt_p, reduce(reduce_sum_p, x * x, (axis,)))
    if ord == np.inf:
        return reduce(reduce_max_p, magnitude, (axis,))
    if ord == -np.inf:
        return -reduce(reduce_max_p, -magnitude, (axis,))
    if ord == 0:  # how many entries are nonzero: no derivative
        return reduce(reduce_sum_p, bind(where_p, bind(ne_p, x, 0.0), 1.0, 0.0), (axis,))
    if ord == 1:
        return reduce(reduce_sum_p, magnitude, (axis,))
    if isinstance(ord, str):
        raise ValueError(f"norm: invalid norm order {ord!r} for vectors (at {where_text(user_source())})")
    return reduce(reduce_sum_p, magnitude ** float(ord), (axis,)) ** (1.0 / ord)


def spectral_norm(x, row_axis: int, col_axis: int):
    """The largest singular value: the square root of the largest eigenvalue of the smaller Gram matrix."""
    rank = len(shape_of(x))
    others = [i for i in range(rank) if i not in (row_axis, col_axis)]
    matrices = bind(transpose_p, x, perm=tuple(others) + (row_axis, col_axis))
    m, n = shape_of(matrices)[-2:]
    gram = mm(swap(matrices), matrices) if n <= m else mm(matrices, swap(matrices))
    eigenvalues = bind(eigh_p, gram)[0]
    largest = bind(reshape_p, eigenvalues[..., -1:], shape=shape_of(eigenvalues)[:-1])
    return bind(sqrt_p, largest)


def matrix_norm(x, ord, row_axis: int, col_axis: int):
    magnitude = bind(abs_p, x)
    if ord is None or ord == "fro":
        return bind(sqrt_p, reduce(reduce_sum_p, x * x, (row_axis, col_axis)))
    if ord in (1, -1, np.inf, -np.inf):
        summed_axis, extreme_axis = (row_axis, col_axis) if ord in (1, -1) else (col_axis, row_axis)
        sums = reduce(reduce_sum_p, magnitude, (summed_axis,))
        extreme_axis -= extreme_axis > summed_axis
        return reduce(reduce_max_p, sums, (extreme_axis,)) if ord > 0 else -reduce(reduce_max_p, -sums, (extreme_axis,))
    if ord == 2:
        return spectral_norm(x, row_axis, col_axis)
    if ord in (-2, "nuc"):
        raise NotImplementedError(f"norm: ord={ord!r} needs the singular values, which tracegrad does not compute "
                                  f"(at {where_text(user_source())}); ord=2 (the largest) is supported")
    raise ValueError(f"norm: invalid norm order {ord!r} for matrices (at {where_text(user_source())})")


def norm(x, ord=None, axis=None, keepdims: bool = False):
    """A vector or matrix norm (np.linalg.norm): for vectors ord None/2, 1, inf, -inf, 0 or any other
    number p; for matrices None/"fro", 1, -1, inf, -inf and 2. Subgradients as JAX's: |x|'s is sign(x),
    a max's goes to the entries that attain it (shared at ties)."""
    x = as_float(x)
    rank = len(shape_of(x))
    if axis is None:
        if ord is None:  # the 2-norm of all the entries
            axes = tuple(range(rank))
            out = bind(sqrt_p, reduce(reduce_sum_p, x * x, axes)) if rank else bind(abs_p, x)
            return bind(reshape_p, out, shape=(1,) * rank) if keepdims and rank else out
        if rank not in (1, 2):
            raise ValueError(f"norm: improper number of dimensions ({rank}) to norm with ord={ord!r} "
                             f"(at {where_text(user_source())}); give the axis")
        axis = tuple(range(rank))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    if not all(-rank <= a < rank for a in axes) or len({a % rank for a in axes}) != len(axes):
        raise ShapeError(f"norm: axis {axis} is invalid for a value of rank {rank} (at {where_text(user_source())})")
    axes = tuple(int(a) % rank for a in axes)
    if len(axes) == 1:
        out = vector_norm(x, ord, axes[0])
    elif len(axes) == 2:
        out = matrix_norm(x, ord, *axes)
    else:
        raise ValueError(f"norm: improper number of axes ({len(axes)}) to norm (at {where_text(user_source())})")
    if keepdims:
        out = bind(reshape_p, out, shape=tuple(1 if i in axes else n for i, n in enumerate(shape_of(x))))
    return out


# np.linalg's functions on traced values come here (tracegrad.numpy's dispatch reads this table)
NUMPY_FUNCTIONS = {np.linalg.norm: norm, np.linalg.solve: solve, np.linalg.inv: inv, np.linalg.det: det,
                   np.linalg.slogdet: slogdet, np.linalg.cholesky: cholesky, np.linalg.eigh: eigh, np.linalg.qr: qr}
