"""Matrix products for compiled code: a blocked GEMM on 8-wide float64 vectors.

Inside numba, `a @ b` calls the BLAS that SciPy ships, which picks its kernel once per process
(or as `OPENBLAS_CORETYPE` says). This module is tracegrad's own product for float64 matrices,
written the way BLIS and GotoBLAS write theirs: B is packed into panels 16 columns wide, A's
blocks 6 rows high are read in place, and a micro-kernel keeps a 6×16 block of C in twelve vector registers
while it runs down the shared dimension. LLVM does not find that form in scalar loops (it
vectorizes the wrong loop, measured), so the vectors are spelled out with a few intrinsics over
an LLVM `<8 x double>` type. On a CPU with AVX-512 each vector is one register; elsewhere the
`tg_matmul` is plain `a @ b`, BLAS's product. A float32 product is always BLAS's (see the end).
TRACEGRAD_GEMM (`config.gemm_choice`) forces either float64 path; `GEMM_PATH` names the one this
process runs.
"""
from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, overload, register_model

from . import disk_cache
from .config import gemm_choice
from .numba_jit import jit_compile
from .warn import warn

MR, NR = 6, 16  # the micro-kernel's block of C: 6 rows by 2 vectors of 8
KC = 256  # the shared dimension in chunks of 256: a packed panel of B (256 × 16) is 32 KB, in L1
NC = 256  # columns of B packed at once: 256 × 256 doubles is 512 KB, in L2
THREADS = numba.config.NUMBA_NUM_THREADS  # a constant: numba cannot cache a function that asks at run time


class Float64x8(types.Type):
    """Eight float64 in one LLVM vector: a value, held in a register."""

    def __init__(self):
        super().__init__(name="float64x8")


float64x8 = Float64x8()
VECTOR = ir.VectorType(ir.DoubleType(), 8)
register_model(Float64x8)(lambda dmm, fe_type: models.PrimitiveModel(dmm, fe_type, VECTOR))


def is_flat_float64(array) -> bool:
    return isinstance(array, types.Array) and array.dtype == types.float64 and array.layout == "C"


def vector_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [index]), VECTOR.as_pointer())


@intrinsic
def load8(typingctx, array, index):
    """array.flat[index:index + 8] of a C-contiguous float64 array, as one vector (unchecked)."""
    if is_flat_float64(array) and isinstance(index, types.Integer):
        return float64x8(array, index), lambda context, builder, sig, args: builder.load(
            vector_pointer(context, builder, sig.args[0], *args), align=8)


@intrinsic
def store8(typingctx, array, index, vector):
    """array.flat[index:index + 8] = vector (unchecked)."""
    def codegen(context, builder, sig, args):
        builder.store(args[2], vector_pointer(context, builder, sig.args[0], args[0], args[1]), align=8)
        return context.get_dummy_value()

    if is_flat_float64(array) and isinstance(index, types.Integer) and vector == float64x8:
        return types.none(array, index, vector), codegen


@intrinsic
def zeros8(typingctx):
    return float64x8(), lambda context, builder, sig, args: ir.Constant(VECTOR, [0.0] * 8)


@intrinsic
def broadcast8(typingctx, array, index):
    """array.flat[index] in all eight lanes (unchecked)."""
    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        lanes = builder.insert_element(ir.Constant(VECTOR, ir.Undefined), builder.load(builder.gep(data, [args[1]])),
                                       ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(lanes, ir.Constant(VECTOR, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 8), [0] * 8))

    if is_flat_float64(array) and isinstance(index, types.Integer):
        return float64x8(array, index), codegen


@intrinsic
def fma8(typingctx, x, y, z):
    """x * y + z lane by lane, in one rounding."""
    def codegen(context, builder, sig, args):
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(VECTOR, [VECTOR] * 3), "llvm.fma.v8f64")
        return builder.call(fma, args)

    if x == y == z == float64x8:
        return float64x8(x, y, z), codegen


@intrinsic
def add8(typingctx, x, y):
    if x == float64x8 and y == float64x8:
        return float64x8(x, y), lambda context, builder, sig, args: builder.fadd(*args)


def micro_kernel(a, a_start, a_row_step, a_k_step, b_packed, b_start, depth, c, c_start, c_stride, accumulate):
    """c[6 rows, 16 columns] (+)= a[6 rows, depth] @ a packed panel of b (depth × 16).

    Row i, column k of the a block is a.flat[a_start + i * a_row_step + k * a_k_step]: so the
    kernel reads A in place, whether it is row-major or a transposed row-major matrix."""
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = zeros8()
    for k in range(depth):
        b0 = load8(b_packed, b_start + k * NR)
        b1 = load8(b_packed, b_start + k * NR + 8)
        at = a_start + k * a_k_step
        a0, a1, a2 = broadcast8(a, at), broadcast8(a, at + a_row_step), broadcast8(a, at + 2 * a_row_step)
        a3, a4 = broadcast8(a, at + 3 * a_row_step), broadcast8(a, at + 4 * a_row_step)
        a5 = broadcast8(a, at + 5 * a_row_step)
        c00, c01 = fma8(a0, b0, c00), fma8(a0, b1, c01)
        c10, c11 = fma8(a1, b0, c10), fma8(a1, b1, c11)
        c20, c21 = fma8(a2, b0, c20), fma8(a2, b1, c21)
        c30, c31 = fma8(a3, b0, c30), fma8(a3, b1, c31)
        c40, c41 = fma8(a4, b0, c40), fma8(a4, b1, c41)
        c50, c51 = fma8(a5, b0, c50), fma8(a5, b1, c51)
    store_row(c, c_start, c00, c01, accumulate)
    store_row(c, c_start + c_stride, c10, c11, accumulate)
    store_row(c, c_start + 2 * c_stride, c20, c21, accumulate)
    store_row(c, c_start + 3 * c_stride, c30, c31, accumulate)
    store_row(c, c_start + 4 * c_stride, c40, c41, accumulate)
    store_row(c, c_start + 5 * c_stride, c50, c51, accumulate)


def store_row(c, at, left, right, accumulate):
    """c.flat[at:at + 16] (+)= the two vectors."""
    if accumulate:
        left, right = add8(load8(c, at), left), add8(load8(c, at + 8), right)
    store8(c, at, left)
    store8(c, at + 8, right)


def pack_panels(b_rows, transposed, row0, depth, col0, cols, out):
    """b[row0:row0 + depth, col0:col0 + cols] as panels 16 columns wide, each depth × 16, zero-padded.

    b_rows is b, or b.T when b is a transposed matrix, row-major. A whole panel's row of b is two
    8-wide copies; a transposed b is read along its rows of memory."""
    for panel in range((cols + NR - 1) // NR):
        start, first = panel * depth * NR, col0 + panel * NR
        width = min(NR, col0 + cols - first)
        if transposed:
            for j in range(NR):
                for k in range(depth):
                    out[start + k * NR + j] = b_rows[first + j, row0 + k] if j < width else 0.0
        elif width == NR:
            for k in range(depth):
                at = (row0 + k) * b_rows.shape[1] + first
                store8(out, start + k * NR, load8(b_rows, at))
                store8(out, start + k * NR + 8, load8(b_rows, at + 8))
        else:
            for k in range(depth):
                for j in range(NR):
                    out[start + k * NR + j] = b_rows[row0 + k, first + j] if j < width else 0.0


def pack_sliver(a_flat, row_step, k_step, i0, rows, k0, depth, out):
    """out[k * 6 + i] = a[i0 + i, k0 + k] for a block of 6 rows of a (zeros past its last row).

    Element [i, k] of a is a_flat[i * row_step + k * k_step]. In a transposed matrix (row_step 1) the
    6 values of one k are neighbours: one 8-wide copy each, the 2 extra overwritten next (out has 2
    spare at its end), where the 8 stay inside a's row."""
    if row_step == 1 and rows == MR and i0 + 8 <= k_step:
        for k in range(depth):
            store8(out, k * MR, load8(a_flat, i0 + (k0 + k) * k_step))
        return
    for k in range(depth):
        for i in range(MR):
            out[k * MR + i] = a_flat[(i0 + i) * row_step + (k0 + k) * k_step] if i < rows else 0.0


def blas_operand(x):
    """x as BLAS takes it: row- or column-major as it is, copied only when it is a strided view."""
    return x if x.flags.c_contiguous or x.flags.f_contiguous else np.ascontiguousarray(x)


@overload(blas_operand)
def blas_operand_compiled(x):
    """Decided on x's type, so numba never compiles its slow strided `np.dot` (and its warning)."""
    if isinstance(x, types.Array):
        return (lambda x: x) if x.layout in "CF" else (lambda x: np.ascontiguousarray(x))


def blocked_matmul(a, b):
    """a @ b for float64 matrices, each row-major or a transposed row-major one; a fresh row-major result."""
    return blocked_matmul_into(a, b, np.empty((a.shape[0], b.shape[1])))


def blocked_matmul_into(a, b, c):
    """c = a @ b, c a row-major matrix of the right shape (not a or b); returns c."""
    if blas_is_faster(a, b):
        return np.dot(blas_operand(a), blas_operand(b), c)
    a_flat, a_row_step, a_k_step, b_rows, b_transposed = operands(a, b)
    multiply_rows(a_flat, a_row_step, a_k_step, b_rows, b_transposed, c, 0, a.shape[0])
    return c


def parallel_matmul(a, b):
    return parallel_matmul_into(a, b, np.empty((a.shape[0], b.shape[1])))


def parallel_matmul_into(a, b, c):
    """blocked_matmul_into with c's rows shared out among numba's threads, each packing its own copy of b."""
    if blas_is_faster(a, b):
        return np.dot(blas_operand(a), blas_operand(b), c)
    a_flat, a_row_step, a_k_step, b_rows, b_transposed = operands(a, b)
    m = a.shape[0]
    slivers = (m + MR - 1) // MR
    parts = min(THREADS, slivers)
    for part in numba.prange(parts):
        first, last = slivers * part // parts * MR, min(m, slivers * (part + 1) // parts * MR)
        if first < last:
            multiply_rows(a_flat, a_row_step, a_k_step, b_rows, b_transposed, c, first, last)
    return c


def blas_is_faster(a, b):
    """Small, thin or near a vector (measured per shape)."""
    m, depth, n = a.shape[0], a.shape[1], b.shape[1]
    few_rows = m < 64  # too few to pay for packing a thin or transposed b
    return (m == 1 or n < 8 or depth < 4 or m * n * depth < 8192
            or (few_rows and (n < NR or (b.flags.f_contiguous and not b.flags.c_contiguous))))


def operands(a, b):
    """a as a flat array with the steps of its rows and columns; b (or b.T, when b is transposed) row-major."""
    m, depth = a.shape
    if a.flags.f_contiguous and not a.flags.c_contiguous:  # a transposed matrix: read its rows as columns
        a_flat, a_row_step, a_k_step = np.ascontiguousarray(a.T).reshape(-1), 1, m
    else:
        a_flat, a_row_step, a_k_step = np.ascontiguousarray(a).reshape(-1), depth, 1
    b_transposed = b.flags.f_contiguous and not b.flags.c_contiguous
    b_rows = np.ascontiguousarray(b.T) if b_transposed else np.ascontiguousarray(b)
    return a_flat, a_row_step, a_k_step, b_rows, b_transposed


def multiply_rows(a_flat, a_row_step, a_k_step, b_rows, b_transposed, c, row_start, row_end):
    """c[row_start:row_end] = a[row_start:row_end] @ b, row_start a multiple of 6."""
    depth_total = b_rows.shape[0] if not b_transposed else b_rows.shape[1]
    n = c.shape[1]
    b_packed = np.empty(min(KC, depth_total) * min(NC, (n + NR - 1) // NR * NR))
    # 6 rows of a, copied to be read in order: the last rows when m is not a multiple of 6, and the rows
    # of a transposed matrix when several panels read them (one row of memory per k: a whole block
    # read in place maps onto a few sets of the L1 cache)
    a_sliver = np.empty(MR * KC + 2)
    edge_tile = np.empty(MR * NR)  # a block of c that sticks out of c: computed whole, its inner part stored
    for j0 in range(0, n, NC):
        cols = min(NC, n - j0)
        for k0 in range(0, depth_total, KC):
            depth = min(KC, depth_total - k0)
            pack_panels(b_rows, b_transposed, k0, depth, j0, cols, b_packed)
            for i0 in range(row_start, row_end, MR):
                rows = min(MR, row_end - i0)
                a_block, a_start, row_step, k_step = a_flat, i0 * a_row_step + k0 * a_k_step, a_row_step, a_k_step
                if rows < MR or (a_row_step == 1 and cols > NR):
                    pack_sliver(a_flat, a_row_step, a_k_step, i0, rows, k0, depth, a_sliver)
                    a_block, a_start, row_step, k_step = a_sliver, 0, 1, MR
                for panel in range((cols + NR - 1) // NR):
                    first = j0 + panel * NR
                    width = min(NR, n - first)
                    if rows == MR and width == NR:
                        micro_kernel(a_block, a_start, row_step, k_step, b_packed, panel * depth * NR, depth,
                                     c, i0 * n + first, n, k0 > 0)
                        continue
                    micro_kernel(a_block, a_start, row_step, k_step, b_packed, panel * depth * NR, depth,
                                 edge_tile, 0, NR, False)
                    for i in range(rows):
                        for j in range(width):
                            total = edge_tile[i * NR + j]
                            c[i0 + i, first + j] = c[i0 + i, first + j] + total if k0 > 0 else total


def blas_matmul(a, b):
    return blas_operand(a) @ blas_operand(b)


def blas_matmul_into(a, b, c):
    return np.dot(blas_operand(a), blas_operand(b), c)


def has_avx512() -> bool:
    import llvmlite.binding as llvm

    return llvm.get_host_cpu_features().get("avx512f", False)


CACHE = disk_cache.numba_directory("gemm")  # None when the cache is off
store_row = jit_compile(store_row, CACHE)  # each compiled at first use; numba links them together
micro_kernel = jit_compile(micro_kernel, CACHE, inline=True)
pack_panels = jit_compile(pack_panels, CACHE)
pack_sliver = jit_compile(pack_sliver, CACHE)
blas_is_faster = jit_compile(blas_is_faster, CACHE)
operands = jit_compile(operands, CACHE)
multiply_rows = jit_compile(multiply_rows, CACHE)
blocked_matmul_into = jit_compile(blocked_matmul_into, CACHE)
blocked_matmul = jit_compile(blocked_matmul, CACHE)
parallel_matmul_into = jit_compile(parallel_matmul_into)  # never cached: see codegen.uses_threads
parallel_matmul = jit_compile(parallel_matmul)
def blocked_kernel_chosen() -> bool:
    """Whether float64 products run this module's kernel (TRACEGRAD_GEMM, `config.gemm_choice`)."""
    choice = gemm_choice()
    if choice == "blocked" and not has_avx512():
        warn("tracegrad: TRACEGRAD_GEMM=blocked needs a CPU with AVX-512, which this one lacks: "
             "float64 products call BLAS instead")
    return choice != "blas" and has_avx512()


# the float64 product: into a fresh array, or into `c`; with tg.config.parallel, for a large product, on all cores
USES_BLOCKED_KERNEL = blocked_kernel_chosen()
GEMM_PATH = "tracegrad's AVX-512 kernel" if USES_BLOCKED_KERNEL else "BLAS"  # what benchmarks print
if USES_BLOCKED_KERNEL:
    float64_matmul, float64_matmul_into = blocked_matmul, blocked_matmul_into
    tg_parallel_matmul, tg_parallel_matmul_into = parallel_matmul, parallel_matmul_into
else:  # BLAS, which has threads of its own
    float64_matmul, float64_matmul_into = jit_compile(blas_matmul, CACHE), jit_compile(blas_matmul_into, CACHE)
    tg_parallel_matmul, tg_parallel_matmul_into = float64_matmul, float64_matmul_into


# A float32 product is BLAS's sgemm. This module's kernel made float32 (16 lanes, panels 32 wide) took
# 0.94-1.19 (batch 256) and 1.01-1.06 (batch 4,096) of sgemm's time summed over the eight products of
# W5's and W6's step in two runs, single products from 0.3 to 4.3 of it either way
# (benchmarks/suite/products.py, on the shared AVX-512 machine): no faster, so one kernel is kept, for
# float64, and float32 calls BLAS.
def product_by_dtype(a, b):
    """a @ b in compiled code: float32 matrices by BLAS's sgemm, float64 ones by `float64_matmul`."""
    raise NotImplementedError("called from numba-compiled code only")


def product_by_dtype_into(a, b, c):
    """c = a @ b in compiled code, as `product_by_dtype` chooses."""
    raise NotImplementedError("called from numba-compiled code only")


@overload(product_by_dtype)
def product_by_dtype_compiled(a, b):
    if a.dtype == types.float32 and b.dtype == types.float32:
        return lambda a, b: blas_operand(a) @ blas_operand(b)
    return lambda a, b: float64_matmul(a, b)


@overload(product_by_dtype_into)
def product_by_dtype_into_compiled(a, b, c):
    if a.dtype == types.float32 and b.dtype == types.float32:
        return lambda a, b, c: np.dot(blas_operand(a), blas_operand(b), c)
    return lambda a, b, c: float64_matmul_into(a, b, c)


def matmul(a, b):
    return product_by_dtype(a, b)


def matmul_into(a, b, c):
    return product_by_dtype_into(a, b, c)


# what generated numba code calls for a matrix product of float64 or float32 matrices
tg_matmul, tg_matmul_into = jit_compile(matmul, CACHE), jit_compile(matmul_into, CACHE)
