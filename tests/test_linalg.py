"""tnp.linalg and np.linalg on traced values: values against NumPy, gradients (first and second order) and JVPs
against central differences, vmap against a loop, on the python backend; one program of gradients through
every function compiled with numba (`jit(grad(...))`)."""
import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp

rng = np.random.default_rng(0)
normal = lambda *shape: rng.standard_normal(shape)


def well_conditioned(*batch, n=3):
    return normal(*batch, n, n) + n * np.eye(n)


def positive_definite(*batch, n=3):
    m = normal(*batch, n, n)
    return m @ np.swapaxes(m, -1, -2) + n * np.eye(n)


A, B, S, T = well_conditioned(), normal(3, 2), positive_definite(), normal(4, 3)
STACK, SPD_STACK = well_conditioned(2), positive_definite(2)


@pytest.fixture(autouse=True)
def python_backend_here(python_backend):
    """Breadth on the python backend; `test_jit_of_grad_on_numba` compiles one program with numba."""


def spectral(eigh):
    """A function of eigh's results that reads both and not the eigenvectors' signs."""
    def f(a):  # V diag(w + 0, 1, 2...) V^T, for each matrix of a stack
        w, v = eigh(a)
        scaled = v * (w + np.arange(w.shape[-1]))[..., None, :]
        return (scaled[..., :, None, :] * v[..., None, :, :]).sum(axis=-1)
    return f


def rescaled_q(qr):
    """A function of qr's results that reads both (Q and R are unique with LAPACK's signs)."""
    def f(a):
        q, r = qr(a)
        return q * r.sum(axis=-2, keepdims=True)
    return f


CASES = {  # name: (tnp's function, NumPy's, arguments)
    "solve": (tnp.linalg.solve, np.linalg.solve, (A, B)),
    "solve_vector": (tnp.linalg.solve, np.linalg.solve, (A, B[:, 0])),
    "solve_broadcast": (tnp.linalg.solve, np.linalg.solve, (STACK, B)),
    "inv": (tnp.linalg.inv, np.linalg.inv, (STACK,)),
    "det": (tnp.linalg.det, np.linalg.det, (STACK,)),
    "slogdet": (lambda a: tnp.linalg.slogdet(a).logabsdet * tnp.linalg.slogdet(a).sign,
                lambda a: np.linalg.slogdet(a).logabsdet * np.linalg.slogdet(a).sign, (-STACK,)),
    "cholesky": (tnp.linalg.cholesky, np.linalg.cholesky, (SPD_STACK,)),
    "cholesky_upper": (lambda a: tnp.linalg.cholesky(a, upper=True), lambda a: np.linalg.cholesky(a, upper=True), (S,)),
    "eigh": (spectral(tnp.linalg.eigh), spectral(np.linalg.eigh), (SPD_STACK,)),
    "eigh_upper": (lambda a: tnp.linalg.eigh(a, UPLO="U").eigenvalues,
                   lambda a: np.linalg.eigh(a, UPLO="U").eigenvalues, (S + np.triu(normal(3, 3), 1),)),
    "qr": (rescaled_q(tnp.linalg.qr), rescaled_q(np.linalg.qr), (normal(2, 4, 3),)),
    "qr_r": (lambda a: tnp.linalg.qr(a, mode="r"), lambda a: np.linalg.qr(a, mode="r"), (T,)),
    "norm": (tnp.linalg.norm, np.linalg.norm, (T,)),
}
NORMS = [(None, None), (2, 0), (1, 1), (np.inf, 1), (-np.inf, 0), (3.5, 1), (0, 1), ("fro", None), (1, None),
         (-1, None), (np.inf, None), (-np.inf, None), (2, None), (2, (1, 0)), (1, (-1, -2))]


@pytest.mark.parametrize("name", CASES)
def test_values_match_numpy(name):
    fun, reference, args = CASES[name]
    expected = reference(*args)
    np.testing.assert_allclose(fun(*args), expected, rtol=1e-12, atol=1e-12)  # NumPy evaluation
    np.testing.assert_allclose(tg.jit(fun)(*args), expected, rtol=1e-12, atol=1e-12)  # the python backend


@pytest.mark.parametrize("ord, axis", NORMS)
def test_norms_match_numpy_and_differentiate(ord, axis):
    expected = np.linalg.norm(T, ord, axis)
    np.testing.assert_allclose(tg.jit(lambda x: np.linalg.norm(x, ord, axis))(T), expected, rtol=1e-12)
    np.testing.assert_allclose(tnp.linalg.norm(T, ord, axis, keepdims=True),
                               np.linalg.norm(T, ord, axis, keepdims=True), rtol=1e-12)
    weights = np.linspace(1.0, 2.0, np.size(expected)).reshape(np.shape(expected))
    tg.check_grads(lambda x: tnp.sum(tnp.linalg.norm(x, ord, axis) * weights), (T,))


@pytest.mark.parametrize("name", CASES)
def test_gradients_match_central_differences(name):
    fun, _, args = CASES[name]
    weights = normal(*np.shape(fun(*args)))
    tg.check_grads(lambda *xs: tnp.sum(fun(*xs) * weights), args)


@pytest.mark.parametrize("name", ["solve", "inv", "det", "slogdet", "cholesky", "eigh", "qr"])
def test_second_derivatives_match_central_differences(name):
    fun, _, args = CASES[name]
    weights = normal(*np.shape(fun(*args)))
    tg.check_grads(lambda *xs: tnp.sum(fun(*xs) * weights), args, order=2, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CASES)
def test_jvp_matches_central_differences(name):
    fun, reference, args = CASES[name]
    directions = [normal(*np.shape(a)) for a in args]
    out, tangent = tg.jvp(fun, args, directions)
    h = 1e-6
    plus = reference(*(a + h * v for a, v in zip(args, directions)))
    minus = reference(*(a - h * v for a, v in zip(args, directions)))
    np.testing.assert_allclose(out, reference(*args), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tangent, (plus - minus) / (2 * h), rtol=1e-6, atol=1e-7)


def test_gradient_of_a_lower_read_matrix_is_zero_above_the_diagonal():
    """NumPy's cholesky and eigh read the lower triangle: the upper one gets no gradient (and the lower
    one gets what a symmetric perturbation would), as central differences of NumPy's functions say."""
    for fun in (lambda a: tnp.sum(tnp.linalg.cholesky(a) * 1.5), lambda a: tnp.sum(tnp.linalg.eigh(a)[0] ** 2)):
        gradient = tg.grad(fun)(S)
        np.testing.assert_array_equal(np.triu(gradient, 1), 0.0)
    symmetric = lambda b: tnp.sum(tnp.log(tnp.linalg.eigh(b @ b.T + np.eye(3))[0]))
    np.testing.assert_allclose(tg.grad(symmetric)(A), 2 * np.linalg.inv(A @ A.T + np.eye(3)) @ A, rtol=1e-10)


def test_vmap_matches_a_loop():
    stack = well_conditioned(4)
    rhs = normal(4, 3, 2)

    def loss(a, b):
        return (tnp.linalg.solve(a, b).sum() + tnp.linalg.slogdet(a).logabsdet + tnp.linalg.norm(a, 2)
                + tnp.linalg.inv(a)[0, 1] + tnp.linalg.det(a))

    expected = [loss(a, b) for a, b in zip(stack, rhs)]
    np.testing.assert_allclose(tg.vmap(loss)(stack, rhs), expected, rtol=1e-12)
    np.testing.assert_allclose(tg.vmap(loss, in_axes=(None, 0))(stack[0], rhs),  # one matrix, many right-hand sides
                               [loss(stack[0], b) for b in rhs], rtol=1e-12)
    np.testing.assert_allclose(tg.vmap(loss, in_axes=(0, None))(stack, rhs[0]), [loss(a, rhs[0]) for a in stack],
                               rtol=1e-12)
    per_example = tg.vmap(tg.grad(loss), in_axes=(0, 0))(stack, rhs)
    np.testing.assert_allclose(per_example, [tg.grad(loss)(a, b) for a, b in zip(stack, rhs)], rtol=1e-10)
    decompositions = tg.vmap(lambda a: (tnp.linalg.cholesky(a), *tnp.linalg.eigh(a), *tnp.linalg.qr(a)))(SPD_STACK)
    for got, expected in zip(decompositions, (np.linalg.cholesky(SPD_STACK), *np.linalg.eigh(SPD_STACK),
                                              *np.linalg.qr(SPD_STACK))):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def loss_through_everything(a, b, s, t):
    """A scalar reading every linear-algebra function (through NumPy's own functions)."""
    w, v = np.linalg.eigh(s)
    q, r = np.linalg.qr(t)
    return (np.sum(np.linalg.solve(a, b) ** 2) + np.linalg.inv(a)[0, 2] + np.linalg.det(a) + np.linalg.slogdet(a)[1]
            + np.sum(np.linalg.cholesky(s)) + np.sum(w * w) + np.sum(v[:, 2] ** 2 * w) + np.sum(q * r[0])
            + np.linalg.norm(t, 2) + np.linalg.norm(b, 1) + np.linalg.norm(t))


def common_loss(a, b, s):
    """The functions a model most often differentiates, for numba (each primitive's VJP is compiled
    with numba by tests/test_primitives.py's rows too)."""
    return (np.sum(np.linalg.solve(a, b) ** 2) + np.linalg.slogdet(s)[1] + np.sum(np.linalg.cholesky(s))
            + np.sum(np.linalg.eigh(s)[0] ** 2) + np.linalg.norm(b))


def test_jit_of_grad_matches_central_differences():
    args = (A, B, S, T)
    gradient = tg.jit(tg.grad(loss_through_everything, argnums=(0, 1, 2, 3)))(*args)
    for g, e in zip(gradient, tg.grad(loss_through_everything, argnums=(0, 1, 2, 3))(*args)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-12)
    tg.check_grads(loss_through_everything, args)


def test_numba_agrees_with_the_python_backend():
    """numba's code of a gradient, and of every function on stacks (a loop over the matrices)."""
    gradient = tg.grad(common_loss, argnums=(0, 1, 2))
    stacked = lambda a, s: (tnp.linalg.solve(a, a), tnp.linalg.det(a), *tnp.linalg.slogdet(a), tnp.linalg.cholesky(s),
                            *tnp.linalg.eigh(s), *tnp.linalg.qr(a))
    expected = tg.jit(gradient)(A, B, S), tg.jit(stacked)(STACK, SPD_STACK)
    tg.config.backend = "numba"
    got = tg.jit(gradient)(A, B, S), tg.jit(stacked)(STACK, SPD_STACK)
    for g, e in zip(tg.tree_leaves(got), tg.tree_leaves(expected)):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_integer_inputs_are_converted_and_results_are_numpys_namedtuples():
    ints = np.array([[2, 1], [1, 3]])
    np.testing.assert_allclose(tg.jit(np.linalg.inv)(ints), np.linalg.inv(ints), rtol=1e-12)
    result = tg.jit(np.linalg.eigh)(S)
    assert type(result).__name__ == "EighResult" and result.eigenvalues.shape == (3,)
    assert tg.jit(np.linalg.slogdet)(A)._fields == ("sign", "logabsdet")


def test_errors():
    with pytest.raises(np.linalg.LinAlgError, match="square.*test_linalg.py"):
        tg.jit(np.linalg.inv)(T)
    with pytest.raises(tg.errors.ShapeError, match="cannot solve"):
        tg.jit(np.linalg.solve)(A, normal(4))
    with pytest.raises(NotImplementedError, match="wide matrix"):
        tg.grad(lambda a: tnp.sum(tnp.linalg.qr(a)[1]))(T.T)
    with pytest.raises(NotImplementedError, match="singular values"):
        tg.jit(lambda t: np.linalg.norm(t, "nuc"))(T)
    with pytest.raises(ValueError, match="invalid norm order"):
        tg.jit(lambda t: np.linalg.norm(t[0], "fro"))(T)
    with pytest.raises(np.linalg.LinAlgError):  # a singular matrix, as NumPy
        tg.jit(np.linalg.solve)(np.ones((2, 2)), np.ones(2))
