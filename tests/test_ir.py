"""Golden tests: the printed IR and the generated source, so a diff shows what changed."""
import ast

import numpy as np
import pytest

import tracegrad as tg
import tracegrad.numpy as tnp
from tracegrad import passes
from tracegrad.ir import Aval, IRTypeError, Literal, Namer, Op, Program, Var, variable_names
from tracegrad.primitives import add_p, exp_p


def f(a, b, c):
    return -a**3 + tnp.sin(3 * b) - 1.0 / c + b**2.5 - a**0.5


F_LINE = f.__code__.co_firstlineno + 1

F_IR = """\
{ lambda a:f64[] b:f64[] c:f64[] . let
    d:f64[] = pow a 3.0
    e:f64[] = neg d
    f:f64[] = mul 3.0 b
    g:f64[] = sin f
    h:f64[] = add e g
    i:f64[] = div 1.0 c
    j:f64[] = sub h i
    k:f64[] = pow b 2.5
    l:f64[] = add j k
    m:f64[] = pow a 0.5
    n:f64[] = sub l m
  in ( n ) }"""

GRAD_F_IR = """\
{ lambda a:f64[] b:f64[] c:f64[] . let
    d:f64[] = mul 3.0 b
    e:f64[] = div 1.0 c
    f:f64[] = pow a -0.5
    g:f64[] = mul -0.5 f
    h:f64[] = pow b 1.5
    i:f64[] = mul 2.5 h
    j:f64[] = div e c
    k:f64[] = cos d
    l:f64[] = mul k 3.0
    m:f64[] = add i l
    n:f64[] = pow a 2.0
    o:f64[] = mul -3.0 n
    p:f64[] = add g o
  in ( p m j ) }"""

GRAD_F_SOURCE = """\
def grad_f(a, b, c):
    # test_ir.py:{line}
    d = 3.0 * b
    e = 1.0 / c
    # Grad of: a**0.5  (pow, test_ir.py:{line})
    f = a ** (-0.5)
    g = (-0.5) * f
    # Grad of: b**2.5  (pow, test_ir.py:{line})
    h = b ** 1.5
    i = 2.5 * h
    # Grad of: 1.0 / c  (div, test_ir.py:{line})
    j = e / c
    # Grad of: tnp.sin(3 * b)  (sin, test_ir.py:{line})
    k = np.cos(d)
    # Grad of: 3 * b  (mul, test_ir.py:{line})
    l = k * 3.0
    m = i + l
    # Grad of: a**3  (pow, test_ir.py:{line})
    n = a * a
    o = (-3.0) * n
    p = g + o
    return (p, m, j, )
"""


def test_printed_ir_of_the_exercise():
    assert str(tg.make_ir(f)(2.0, 3.0, 4.0)) == F_IR


def test_printed_ir_of_its_gradient():
    assert str(tg.make_ir(tg.grad(f, argnums=(0, 1, 2)))(2.0, 3.0, 4.0)) == GRAD_F_IR


def test_generated_source_of_the_gradient():
    source = tg.grad(f, argnums=(0, 1, 2)).lower(2.0, 3.0, 4.0).source
    assert source == GRAD_F_SOURCE.format(line=F_LINE)


def test_constants_shapes_and_params_print():
    weights = np.ones((2, 3))
    program = tg.make_ir(lambda x: tnp.sum(x @ weights, axis=0))(np.ones((4, 2)))
    assert str(program) == """\
{ lambda a:f64[2,3] ; b:f64[4,2] . let
    c:f64[4,3] = matmul b a
    d:f64[3] = reduce_sum[axes=(0,)] c
  in ( d ) }"""


def test_names_skip_python_keywords_and_np():
    names = [name for _, name in zip(range(26 * 30), variable_names())]
    assert len(set(names)) == len(names)
    assert not {"if", "in", "is", "or", "np", "as", "def", "for"} & set(names)
    assert names[:3] == ["a", "b", "c"] and names[26] == "ba"


def test_programs_are_immutable_and_vars_compare_by_identity():
    program = tg.make_ir(f)(2.0, 3.0, 4.0)
    with pytest.raises(AttributeError):
        program.ops = ()
    assert Var(Aval(())) != Var(Aval(()))
    assert Literal(1.0) == Literal(1.0)


def test_typecheck_rejects_broken_programs():
    x = Var(Aval((3,)))
    out = Var(Aval((4,)))  # wrong shape for an elementwise op on f64[3]
    with pytest.raises(IRTypeError, match="rule gives"):
        tg.typecheck(Program((), (x,), (Op(exp_p, (x,), out),), (out,)))
    undefined = Var(Aval((3,)))
    y = Var(Aval((3,)))
    with pytest.raises(IRTypeError, match="before it is defined"):
        tg.typecheck(Program((), (x,), (Op(add_p, (x, undefined), y),), (y,)))


def test_every_pass_output_typechecks():
    def mlp_loss(w, x):
        return tnp.mean((tnp.tanh(x @ w) - 1.0) ** 2) + tnp.sum(w * w) * 1e-4

    traced = [tg.jit(f).lower(2.0, 3.0, 4.0), tg.grad(f, argnums=(0, 1, 2)).lower(2.0, 3.0, 4.0),
              tg.grad(tg.grad(f)).lower(2.0, 3.0, 4.0), tg.value_and_grad(mlp_loss).lower(np.ones((3, 2)), np.ones((4, 3)))]
    for lowered in traced:
        tg.typecheck(lowered.ir)
        program = lowered.compiled.traced
        for each_pass in (passes.simplify, passes.eliminate_common_subexpressions, passes.eliminate_dead_code,
                          passes.schedule_for_fusion):
            program = each_pass(program)
            tg.typecheck(program.program)
        tg.typecheck(passes.optimize(lowered.compiled.traced).program)
        tg.typecheck(lowered.optimized_ir)


def test_numba_source_fuses_elementwise_runs_into_one_loop():
    def layer(x, w, b):
        return tnp.tanh(x @ w + b) * 2.0

    line = layer.__code__.co_firstlineno + 1
    source = tg.jit(layer).lower(np.ones((2, 3)), np.ones((3, 4)), np.ones(4)).source
    assert source == f"""\
def jit_layer(a, b, c):
    # test_ir.py:{line}
    d = tg_matmul(a, b)
    g = np.empty((2, 4), np.float64)
    for _i0 in range(2):
        for _i1 in range(4):
            # test_ir.py:{line}
            _e = d[_i0, _i1] + c[_i1]
            _f = np.tanh(_e)
            _g = _f * 2.0
            g[_i0, _i1] = _g
    return (g, )
"""
    x, w, b = np.arange(6.0).reshape(2, 3) / 10, np.ones((3, 4)) / 3, np.linspace(-1, 1, 4)
    np.testing.assert_allclose(tg.jit(layer)(x, w, b), np.tanh(x @ w + b) * 2.0, rtol=1e-14)


def test_large_arrays_take_numpys_simd_tanh_in_place_when_the_input_dies():
    def layer(x, w):
        h = x @ w
        return tnp.tanh(h * 2.0) + tnp.exp(h)  # h lives on: exp may not overwrite it

    line = layer.__code__.co_firstlineno
    x, w = np.linspace(-1, 1, 32 * 16).reshape(32, 16), np.linspace(-1, 1, 16 * 32).reshape(16, 32)
    source = tg.jit(layer).lower(x, w).source
    assert source == f"""\
def jit_layer(a, b):
    # test_ir.py:{line + 1}
    c = tg_matmul(a, b)
    d = np.empty((32, 32), np.float64)
    for _i0 in range(32):
        for _i1 in range(32):
            # test_ir.py:{line + 2}
            _d = c[_i0, _i1] * 2.0
            d[_i0, _i1] = _d
    # test_ir.py:{line + 2}
    e = d
    with numba.objmode():  # NumPy's SIMD loop: many times faster than numba's per-element call
        np.tanh(d, out=e)
    # test_ir.py:{line + 2}
    f = np.empty((32, 32), np.float64)
    with numba.objmode():  # NumPy's SIMD loop: many times faster than numba's per-element call
        np.exp(c, out=f)
    g = np.empty((32, 32), np.float64)
    for _i0 in range(32):
        for _i1 in range(32):
            # test_ir.py:{line + 2}
            _g = e[_i0, _i1] + f[_i0, _i1]
            g[_i0, _i1] = _g
    return (g, )
"""
    h = x @ w
    np.testing.assert_allclose(tg.jit(layer)(x, w), np.tanh(h * 2.0) + np.exp(h), rtol=1e-14)


def test_parallel_runs_long_elementwise_loops_over_cores_and_agrees():
    def affine(x, y):  # 65,536 sines: worth the threads; the product's loop is plain arithmetic
        return tnp.sin(x) * 2.0 + y, tnp.sum(x * y, axis=1)

    x, y = np.linspace(-1, 1, 256 * 256).reshape(256, 256), np.linspace(2, 3, 256)
    serial = tg.jit(affine)
    tg.config.parallel = True
    try:
        parallel = tg.jit(affine)
    finally:
        tg.config.parallel = False
    assert "numba.prange" not in serial.lower(x, y).source
    source = parallel.lower(x, y).source
    assert "for _i0 in numba.prange(256):" in source
    assert "= jit_affine_loop0(a, b)" in source  # a function of its own: the rest stays serial
    for by_threads, by_one in zip(parallel(x, y), serial(x, y)):
        np.testing.assert_allclose(by_threads, by_one, rtol=1e-13)  # sums may add in another order
    assert source.count("numba.prange") == 1
    assert "numba.prange" not in parallel.lower(x[:16], y).source  # too few sines to pay for threads


def test_a_sum_of_a_fused_value_is_an_accumulator_in_its_loop():
    def energy(x):
        return tnp.sum(x * x) * 0.5

    line = energy.__code__.co_firstlineno + 1
    x = np.linspace(-1, 1, 6).reshape(2, 3)
    source = tg.jit(energy).lower(x).source
    assert source == f"""\
def jit_energy(a):
    c = 0.0
    for _i0 in range(2):
        for _i1 in range(3):
            # test_ir.py:{line}
            _b = a[_i0, _i1] * a[_i0, _i1]
            c += _b
    # test_ir.py:{line}
    d = c * 0.5
    return (d, )
"""
    assert tg.jit(energy)(x) == pytest.approx(0.5 * np.sum(x * x), rel=1e-15)


def test_long_scalar_programs_are_written_as_a_tape(monkeypatch):
    from tracegrad import tape

    monkeypatch.setattr(tape, "TAPE_MIN_OPS", 2)  # the real threshold is thousands of ops

    def f(x, y):
        return tnp.where(x > y, tnp.tanh(x) * 2.0, y)

    lowered = tg.jit(f).lower(0.5, 0.25)
    source = lowered.source
    assert source.startswith("import base64\nimport zlib\n\nRUN_IN_PYTHON = ('jit_f',)")
    # one opcode per primitive of the program, each written from its element template in tracegrad.lowering
    assert source[source.index("def jit_f_run_tape("):] == """\
def jit_f_run_tape(tape, values):
    for k in range(tape.shape[0]):
        code, out = tape[k, 0], tape[k, 1]
        x, y, z = values[tape[k, 2]], values[tape[k, 3]], values[tape[k, 4]]
        if code == 0:  # gt
            values[out] = x > y
        elif code == 1:  # mul
            values[out] = x * y
        elif code == 2:  # tanh
            values[out] = np.tanh(x)
        elif code == 3:  # where
            values[out] = y if x else z


def jit_f(a, b):
    # 4 scalar ops, run from a tape by jit_f_run_tape: compiled one statement
    # each, they would take numba minutes. The tape, row by row:
    #   c = a > b
    #   d = np.tanh(a)
    #   e = d * 2.0
    #   f = e if c else b
    values = jit_f_START.copy()
    values[0] = a
    values[1] = b
    jit_f_run_tape(jit_f_TAPE, values)
    return (float(values[6]), )
"""
    assert lowered(0.5, 0.25) == pytest.approx(2.0 * np.tanh(0.5), rel=1e-15)
    assert lowered(0.1, 0.25) == 0.25


def test_the_tape_keeps_bool_and_literal_outputs(monkeypatch):
    from tracegrad import tape

    monkeypatch.setattr(tape, "TAPE_MIN_OPS", 2)

    def f(x, flag):
        y = tnp.where(flag, x * 2.0, -x)
        return y > 0.5, y, 3.0

    lowered = tg.jit(f).lower(0.5, True)
    assert "jit_f_run_tape(jit_f_TAPE, values)" in lowered.source
    assert lowered(0.5, True) == (True, 1.0, 3.0)
    assert lowered(0.5, False) == (False, -0.5, 3.0)
    assert type(lowered(0.5, True)[0]) is bool


# -- the source speaks the IR's language ----------------------------------------------------


def mlp_loss(params, x, y):
    return tnp.mean((tnp.tanh(x @ params["W"] + params["b"]) - y) ** 2)


def mlp_step(params, x, y):  # the README's seed step
    grads = tg.grad(mlp_loss)(params, x, y)
    return tg.tree_map(lambda p, g: p - 0.1 * g, params, grads)


LOSS_LINE = mlp_loss.__code__.co_firstlineno + 1
UPDATE_LINE = mlp_step.__code__.co_firstlineno + 2


def defined_names(source: str) -> set[str]:
    """The names the source assigns or takes as parameters, each as the Var it stands for: `_f` (an
    element in a loop) and `m_0_in` (a helper of m's code) are f and m; loop indices are left out."""
    tree = ast.parse(source)
    loop_indices = {node.target.id for node in ast.walk(tree) if isinstance(node, ast.For)}
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    return {name.lstrip("_").split("_")[0] for name in names - loop_indices - {"_workspace"}}


def program_names(program) -> set[str]:
    return set(Namer.of(program).names.values())


MLP_STEP_IR = """\
{ lambda a:f64[3,1] b:f64[1] c:f64[4,3] d:f64[4,1] . let
    e:f64[4,1] = matmul c a
    f:f64[4,1] = add e b
    g:f64[4,1] = tanh f
    h:f64[4,1] = sub g d
    i:f64[4,1] = mul 0.5 h
    j:f64[4,1] = mul g g
    k:f64[4,1] = sub 1.0 j
    l:f64[4,1] = mul i k
    m:f64[1] = reduce_sum[axes=(0,)] l
    n:f64[3,4] = transpose[perm=(1,0)] c
    o:f64[3,1] = matmul n l
    p:f64[3,1] = mul 0.1 o
    q:f64[3,1] = sub a p
    r:f64[1] = mul 0.1 m
    s:f64[1] = sub b r
  in ( q s ) }"""

MLP_STEP_SOURCE = """\
def jit_mlp_step(a, b, c, d):
    # test_ir.py:{loss}
    e = tg_matmul(c, a)
    l = e
    m = np.zeros((1,), np.float64)
    for _i0 in range(4):
        for _i1 in range(1):
            # test_ir.py:{loss}
            _f = e[_i0, _i1] + b[_i1]
            _g = np.tanh(_f)
            _h = _g - d[_i0, _i1]
            # Grad of: (tnp.tanh(x @ params["W"] + params["b"]) - y) ** 2  (pow, test_ir.py:{loss})
            _i = 0.5 * _h
            # Grad of: tnp.tanh(x @ params["W"] + params["b"])  (tanh, test_ir.py:{loss})
            _j = _g * _g
            _k = 1.0 - _j
            _l = _i * _k
            l[_i0, _i1] = _l
            # Grad of: x @ params["W"] + params["b"]  (add, test_ir.py:{loss})
            m[_i1] += _l
    # Grad of: x @ params["W"]  (matmul, test_ir.py:{loss})
    n = c.T
    o = tg_matmul(n, l)
    q = np.empty((3, 1), np.float64)
    for _i0 in range(3):
        for _i1 in range(1):
            # test_ir.py:{update}
            _p = 0.1 * o[_i0, _i1]
            _q = a[_i0, _i1] - _p
            q[_i0, _i1] = _q
    s = np.empty((1,), np.float64)
    for _i0 in range(1):
        # test_ir.py:{update}
        _r = 0.1 * m[_i0]
        _s = b[_i0] - _r
        s[_i0] = _s
    return (q, s, )
"""


def test_the_seed_mlp_steps_source_and_program_share_every_name():
    tg.config.backend, saved = "numba", tg.config.backend
    try:
        params = {"W": np.zeros((3, 1)), "b": np.zeros(1)}
        lowered = tg.jit(mlp_step).lower(params, np.ones((4, 3)), np.ones((4, 1)))
    finally:
        tg.config.backend = saved
    assert str(lowered.optimized_ir) == MLP_STEP_IR
    assert lowered.source == MLP_STEP_SOURCE.format(loss=LOSS_LINE, update=UPDATE_LINE)
    assert defined_names(lowered.source) == program_names(lowered.optimized_ir)


def test_the_exercises_source_and_program_share_every_name():
    for lowered in (tg.grad(f, argnums=(0, 1, 2)).lower(2.0, 3.0, 4.0), tg.jit(f).lower(2.0, 3.0, 4.0),
                    tg.value_and_grad(f, argnums=(0, 1, 2)).lower(2.0, 3.0, 4.0)):
        assert defined_names(lowered.source) == program_names(lowered.optimized_ir)
    optimized = GRAD_F_IR.replace("n:f64[] = pow a 2.0", "n:f64[] = mul a a")  # the only op the passes change
    assert str(tg.grad(f, argnums=(0, 1, 2)).lower(2.0, 3.0, 4.0).optimized_ir) == optimized


def test_no_local_is_named_like_its_function(monkeypatch):
    from tracegrad import tape

    monkeypatch.setattr(tape, "TAPE_MIN_OPS", 2)

    def f(x, y):  # its program's sixth value is named f
        return tnp.where(x > y, tnp.tanh(x) * 2.0, y)

    for lowered in (tg.jit(f).lower(0.5, 0.25), tg.grad(f).lower(0.5, 0.25)):
        functions = {node.name for node in ast.walk(ast.parse(lowered.source)) if isinstance(node, ast.FunctionDef)}
        assert "f" in program_names(lowered.optimized_ir) and not functions & program_names(lowered.optimized_ir)


def test_each_group_of_ops_is_found_once(monkeypatch):
    from tracegrad import codegen

    calls = []
    groups = codegen.SourceWriter.groups
    monkeypatch.setattr(codegen.SourceWriter, "groups", lambda self, ops: calls.append(len(ops)) or groups(self, ops))
    tg.config.backend, saved = "numba", tg.config.backend
    try:
        params = {"W": np.zeros((3, 1)), "b": np.zeros(1)}
        tg.jit(mlp_step).lower(params, np.ones((40, 3)), np.ones((40, 1))).source
    finally:
        tg.config.backend = saved
    assert len(calls) == 1
