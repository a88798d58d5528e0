"""tg.random: random numbers from explicit keys, as jax.random gives them.

A key is an int64 array of shape (2,) holding two 32-bit words. Every draw is a pure function
of its key: the same key gives the same numbers when NumPy evaluates it, in the python backend
and in numba's code, and there is no hidden state. A program that needs new numbers on each call
takes a key as an argument (or a step number to `fold_in`); keys and seeds may be traced values.

The numbers come from Threefry-2x32 (20 rounds; Salmon et al., "Parallel random numbers: as
easy as 1, 2, 3", 2011, the generator JAX uses), a block cipher run in counter mode: block `j`
of a key is the encryption of the 64-bit counter `j` under it, two 32-bit words. One primitive,
`threefry2x32`, computes the blocks of counters `start, start + 1, ...`; every function here is
ordinary arithmetic on its words, so gradients flow through `minval`/`maxval` and through what
is done with the numbers, never into the key.

    key(seed)        the block of counter `seed` under the key (0, 0)
    split(key, num)  the blocks of counters 0 .. num-1: `num` new keys
    fold_in(key, d)  the block of counter `d` under a key derived from `key` (its block at counter -1),
                     so folded-in keys and split ones are blocks of different keys
    uniform          one block per number: hi * 2**-32 + lo * 2**-64 (53 significant bits) in [0, 1)
    normal           two uniforms per number (blocks 0 .. n-1 and n .. 2n-1), by Box-Muller

Drawing with a key and also splitting it reuses its blocks, as in JAX: split first, use each key once.

NumPy's module-level samplers (`np.random.normal`, `np.random.default_rng`, ...) called while a
function is traced draw their numbers once, into the program, so every call of the compiled
function repeats them. Called then, they warn (`FrozenRandomnessWarning`) at the user's line;
see `warn_when_traced` for what is caught.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from . import numpy as tnp
from .core import Tracer, abstract_eval_rules, aval_of, batch_rules, bind, impl_rules, tracing
from .errors import ShapeError
from .ir import Aval, Primitive
from .primitives import broadcast_to_p, reshape_p
from .source_info import user_source, where_text
from .warn import warn

# -- the block cipher --------------------------------------------------------------------

WORD = 0xFFFFFFFF  # a 32-bit word, held in an int64
KEY_PARITY = 0x1BD11BDA  # Threefry's third key word is k0 ^ k1 ^ this
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32's rotations, alternating every four rounds


def encrypt(k0, k1, x0, x1):
    """Threefry-2x32 with 20 rounds on int64 values (NumPy arrays or numbers) holding 32-bit words:
    five groups of four rounds, the key injected after each group."""
    schedule = (k0, k1, k0 ^ k1 ^ KEY_PARITY)
    x0, x1 = (x0 + k0) & WORD, (x1 + k1) & WORD
    for group in range(5):
        for rotation in ROTATIONS[group % 2]:
            x0 = (x0 + x1) & WORD
            x1 = (((x1 << rotation) | (x1 >> (32 - rotation))) & WORD) ^ x0
        x0 = (x0 + schedule[(group + 1) % 3]) & WORD
        x1 = (x1 + schedule[(group + 2) % 3] + group + 1) & WORD
    return x0, x1


def threefry2x32_rule(keys: Aval, start: Aval, shape) -> Aval:
    if keys.dtype != "i64" or keys.ndim < 1 or keys.shape[-1] != 2:
        raise ShapeError(f"threefry2x32: keys must be int64 arrays of shape (..., 2), got {keys}")
    if start.dtype != "i64" or start.shape not in ((), keys.shape[:-1]):
        raise ShapeError(f"threefry2x32: the start counter must be an int64 number or one per key, got {start}")
    return Aval(keys.shape[:-1] + tuple(shape) + (2,), "i64")


def threefry2x32_impl(keys, start, shape):
    keys = np.asarray(keys, np.int64) & WORD
    counters = np.asarray(start, np.int64)[..., None] + np.arange(math.prod(shape), dtype=np.int64)
    words = encrypt(keys[..., 0, None], keys[..., 1, None], counters >> 32, counters)
    return np.stack(words, axis=-1).reshape(keys.shape[:-1] + tuple(shape) + (2,))


def threefry2x32_batch(values, batched, size, shape):
    # every example's keys are one more leading key axis; a per-example start is spread over its keys
    (keys, start), (keys_batched, start_batched) = values, batched
    key_axes = aval_of(keys).shape[:-1][1 if keys_batched else 0:]
    if not keys_batched:
        keys = bind(broadcast_to_p, keys, shape=(size,) + key_axes + (2,))
    start_shape = aval_of(start).shape
    if start_batched and start_shape != (size,) + key_axes:
        start = bind(broadcast_to_p, bind(reshape_p, start, shape=(size,) + (1,) * len(key_axes)),
                     shape=(size,) + key_axes)
    elif not start_batched and start_shape != ():
        start = bind(broadcast_to_p, start, shape=(size,) + key_axes)
    return bind(threefry2x32_p, keys, start, shape=shape), True


# threefry2x32[shape]: keys (..., 2) and a start counter (a number, or one per key) -> for each key the
# blocks of counters start, start + 1, ... laid out as `shape`, two 32-bit words each (..., *shape, 2);
# integers only, so no cotangent flows
threefry2x32_p = Primitive("threefry2x32", differentiable=False)
abstract_eval_rules[threefry2x32_p] = threefry2x32_rule
impl_rules[threefry2x32_p] = threefry2x32_impl
batch_rules[threefry2x32_p] = threefry2x32_batch

# argsort_keys: the stable order that sorts float keys along the last axis (tg.random.permutation's
# sort; numba has np.argsort for 1-d arrays); integers, so no cotangent flows
argsort_keys_p = Primitive("argsort_keys", differentiable=False)
abstract_eval_rules[argsort_keys_p] = lambda x: Aval(x.shape, "i64")
impl_rules[argsort_keys_p] = lambda x: np.argsort(x, axis=-1, kind="stable")
batch_rules[argsort_keys_p] = lambda values, batched, size: (bind(argsort_keys_p, values[0]), True)

# -- keys --------------------------------------------------------------------------------

ROOT_KEY = np.zeros(2, np.int64)  # `key(seed)` is the block of counter `seed` under it


def check_key(key, name: str) -> None:
    aval = aval_of(key)
    if aval.dtype != "i64" or aval.shape != (2,):
        advice = (" To draw with each of a batch of keys, map over them with tg.vmap." if aval.dtype == "i64"
                  and aval.shape[-1:] == (2,) else " Make one with tg.random.key(seed).")
        raise TypeError(f"tg.random.{name}: a key is an int64 array of shape (2,), got {aval} "
                        f"(at {where_text(user_source())}).{advice}")


def check_integer(value, what: str, name: str) -> None:
    if isinstance(value, (bool, np.bool_)) or aval_of(value).dtype != "i64" or aval_of(value).shape != ():
        raise TypeError(f"tg.random.{name}: {what} must be an integer, got {aval_of(value)} "
                        f"(at {where_text(user_source())})")


def key(seed):
    """A key (an int64 array of shape (2,)) from an integer seed, which may be a traced int."""
    check_integer(seed, "the seed", "key")
    return bind(threefry2x32_p, ROOT_KEY, seed, shape=())


def split(key, num: int = 2):
    """`num` new keys from `key`, as an int64 array of shape (num, 2); `split(key)[i]` is the i-th."""
    check_key(key, "split")
    return bind(threefry2x32_p, key, 0, shape=(int(num),))


def fold_in(key, data):
    """A new key from `key` and an integer (a step number, an example's index), which may be traced."""
    check_key(key, "fold_in")
    check_integer(data, "the data folded in", "fold_in")
    return bind(threefry2x32_p, bind(threefry2x32_p, key, -1, shape=()), data, shape=())


# -- distributions -----------------------------------------------------------------------

LARGEST_BELOW_ONE = 1.0 - 2.0 ** -53


def shape_tuple(shape) -> tuple[int, ...]:
    return (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)


def unit_uniform(key, shape: tuple[int, ...], start: int = 0):
    """Floats in [0, 1) of `shape` from the key's blocks at counters start, start + 1, ...: the high
    word's 32 bits, then the low word's."""
    blocks = bind(threefry2x32_p, key, start, shape=shape)
    high, low = blocks[..., 0], blocks[..., 1]
    # exact sum of two exact products, rounded once; the rounding can reach 1.0, which is kept out
    return tnp.minimum(high * 2.0 ** -32 + low * 2.0 ** -64, LARGEST_BELOW_ONE)


def check_broadcasts(name: str, shape: tuple[int, ...], *shapes: tuple[int, ...]) -> None:
    """Raise unless every one of `shapes` (of parameters) broadcasts to `shape`."""
    try:
        fits = np.broadcast_shapes(shape, *shapes) == shape
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"tg.random.{name}: parameters of shapes {', '.join(map(str, shapes))} do not "
                         f"broadcast to the shape {shape} (at {where_text(user_source())})")


def uniform(key, shape=(), minval=0.0, maxval=1.0):
    """Floats uniform in [minval, maxval) of `shape`; minval and maxval broadcast to it and may be
    traced (the gradient flows through them as through `minval + (maxval - minval) * u`)."""
    check_key(key, "uniform")
    shape = shape_tuple(shape)
    check_broadcasts("uniform", shape, tnp.shape(minval), tnp.shape(maxval))
    u = unit_uniform(key, shape)
    return tnp.maximum(minval, minval + (maxval - minval) * u)  # rounding never takes it below minval


def normal(key, shape=()):
    """Standard normal floats of `shape` (Box-Muller on two uniforms per number); scale and shift
    them with ordinary arithmetic (`mean + std * normal(key, shape)`), which gradients flow through."""
    check_key(key, "normal")
    shape = shape_tuple(shape)
    first, second = unit_uniform(key, shape), unit_uniform(key, shape, start=math.prod(shape))
    radius = tnp.sqrt(-2.0 * tnp.log(1.0 - first))  # 1 - first lies in (0, 1]
    return radius * tnp.cos(2.0 * np.pi * second)


def bernoulli(key, p=0.5, shape=None):
    """Booleans, True with probability `p` (which broadcasts to `shape`, by default its own shape)."""
    check_key(key, "bernoulli")
    shape = tnp.shape(p) if shape is None else shape_tuple(shape)
    check_broadcasts("bernoulli", shape, tnp.shape(p))
    return unit_uniform(key, shape) < p


def argmax(x, axis: int):
    """The first index of the maximum along `axis` (an int64 array), from comparisons and reductions."""
    size = tnp.shape(x)[axis]
    at_max = x == tnp.max(x, axis=axis, keepdims=True)
    positions = np.arange(size, dtype=np.int64).reshape((size,) + (1,) * (tnp.ndim(x) - 1 - axis % tnp.ndim(x)))
    return tnp.min(tnp.where(at_max, positions, size), axis=axis)


def categorical(key, logits, axis: int = -1, shape=None):
    """Category indices drawn with probabilities softmax(logits) along `axis` (by the Gumbel-max trick,
    as JAX draws them); `shape` (default: the logits' shape without `axis`) may add leading axes."""
    check_key(key, "categorical")
    logits_shape = tnp.shape(logits)
    if not -len(logits_shape) <= axis < len(logits_shape):
        raise ShapeError(f"tg.random.categorical: axis {axis} is out of range for logits of shape {logits_shape} "
                         f"(at {where_text(user_source())})")
    axis = axis - len(logits_shape) if axis >= 0 else axis  # counted from the end: leading axes may be added
    batch_shape = logits_shape[:len(logits_shape) + axis] + logits_shape[len(logits_shape) + axis + 1:]
    shape = batch_shape if shape is None else shape_tuple(shape)
    check_broadcasts("categorical", shape, batch_shape)
    prefix = shape[:len(shape) - len(batch_shape)]
    noise_shape = list(shape[len(prefix):])
    noise_shape.insert(len(noise_shape) + axis + 1, logits_shape[axis])
    tiny = np.finfo(np.float64).tiny  # -log(-log(u)) is finite for u in [tiny, 1)
    gumbel = -tnp.log(-tnp.log(uniform(key, prefix + tuple(noise_shape), minval=tiny)))
    return argmax(gumbel + logits, axis)


def permutation(key, x, axis: int = 0):
    """A random permutation of `range(x)` for an int `x`; of an array's entries along `axis` otherwise.

    The order sorts one uniform float per entry (a stable sort: equal floats, which 53-bit
    numbers make vanishingly rare, keep their order)."""
    check_key(key, "permutation")
    if isinstance(x, Tracer) and x.ndim == 0:
        raise TypeError(f"tg.random.permutation: the length of a permutation must be a concrete int, not a traced "
                        f"{x.aval} (at {where_text(user_source())}); pass it as a static argument")
    if isinstance(x, (int, np.integer)):
        return bind(argsort_keys_p, unit_uniform(key, (int(x),)))
    if tnp.ndim(x) == 0:
        raise ShapeError(f"tg.random.permutation: x must be an int or an array of at least one axis "
                         f"(at {where_text(user_source())})")
    rows = tnp.moveaxis(x, axis, 0)
    order = bind(argsort_keys_p, unit_uniform(key, (tnp.shape(rows)[0],)))
    return tnp.moveaxis(tnp.getitem(rows, order), 0, axis)


# -- NumPy's own random numbers, called while tracing --------------------------------------


class FrozenRandomnessWarning(UserWarning):
    """np.random was called while a function was traced: the numbers it drew are constants of the program."""


# what is not a draw: seeding and state
NOT_DRAWS = frozenset({"seed", "get_state", "set_state", "get_bit_generator", "set_bit_generator"})


def warn_when_traced(name: str, function):
    """`np.random.<name>`, warning when it is called while a function is traced.

    Caught: the module's functions (`np.random.normal(...)`, `np.random.rand(...)`, ...,
    `np.random.default_rng(...)`) looked up on the module when called, after tracegrad is
    imported. Not caught: a Generator's or RandomState's methods (`rng.normal(...)`: NumPy's
    types cannot be changed; make the Generator inside the traced function and its creation is
    caught), and functions bound to a name before tracegrad was imported
    (`from numpy.random import normal`).
    """
    @functools.wraps(function)
    def checked(*args, **kwargs):
        if tracing():
            warn(f"np.random.{name} was called while tracing (at {where_text(user_source())}): its numbers are "
                 "drawn once, into the traced program, and every call of the compiled function repeats them. "
                 "Use tg.random with a key passed in as an argument (tg.random.split, or tg.random.fold_in(key, "
                 "step)) for new numbers on each call.", FrozenRandomnessWarning)
        return function(*args, **kwargs)

    checked.warns_when_traced = True
    return checked


for _name in np.random.__all__:
    _function = getattr(np.random, _name)
    if (_name not in NOT_DRAWS and callable(_function) and not isinstance(_function, type)
            and not getattr(_function, "warns_when_traced", False)):
        setattr(np.random, _name, warn_when_traced(_name, _function))
