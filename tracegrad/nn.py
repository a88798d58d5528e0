"""Neural-network helpers as pure functions over pytrees: initialisers, activations, losses.

Everything here is traceable, so it works inside `tg.grad` and `tg.jit`, and also computes
directly on NumPy arrays outside them.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from . import numpy as tnp
from . import primitives as prims
from .core import bind

# -- parameters --------------------------------------------------------------------------

INITIALISERS = {
    # micrograd's choice: every weight and bias uniform in [-1, 1]
    "uniform": lambda rng, n_in, n_out: (rng.uniform(-1, 1, (n_in, n_out)), rng.uniform(-1, 1, n_out)),
    # Glorot/Xavier uniform, zero biases: keeps tanh layers' variance steady
    "glorot": lambda rng, n_in, n_out: (rng.uniform(-1, 1, (n_in, n_out)) * np.sqrt(6 / (n_in + n_out)),
                                        np.zeros(n_out)),
    # He normal, zero biases: for relu layers
    "he": lambda rng, n_in, n_out: (rng.standard_normal((n_in, n_out)) * np.sqrt(2 / n_in), np.zeros(n_out)),
}


def init_dense(rng: np.random.Generator, n_in: int, n_out: int, init: str = "glorot", dtype=np.float64) -> dict:
    """A dense layer's parameters `{"W": (n_in, n_out) array, "b": (n_out,) array}` of `dtype`
    (float64, or float32: drawn in float64 and rounded, so both start from the same numbers)."""
    if init not in INITIALISERS:
        raise ValueError(f"unknown initialiser {init!r}; choose one of {sorted(INITIALISERS)}")
    weights, bias = INITIALISERS[init](rng, n_in, n_out)
    return {"W": weights.astype(dtype), "b": bias.astype(dtype)}


def init_mlp(sizes: list[int], seed: int = 0, init: str = "glorot", dtype=np.float64) -> list[dict]:
    """Parameters of an MLP with layer widths `sizes` (inputs first), as a list of dense layers of `dtype`."""
    rng = np.random.default_rng(seed)
    return [init_dense(rng, n_in, n_out, init, dtype) for n_in, n_out in zip(sizes, sizes[1:])]


def dense(params: dict, x):
    """x @ W + b."""
    return x @ params["W"] + params["b"]


def mlp(params: list[dict], x, activation: Callable = None, final_activation: Callable = None):
    """Dense layers with `activation` (tanh by default) between them and `final_activation` after the last."""
    activation = activation or tanh
    for layer in params[:-1]:
        x = activation(dense(layer, x))
    x = dense(params[-1], x)
    return final_activation(x) if final_activation else x


# -- convolutional layers ----------------------------------------------------------------
# Images are NHWC (examples, height, width, channels) and kernels HWIO (height, width, in, out),
# as `jax.lax.conv_general_dilated` with dimension_numbers ("NHWC", "HWIO", "NHWC") and flax take them.

def init_conv(rng: np.random.Generator, kernel_size: int | tuple[int, int], c_in: int, c_out: int,
              init: str = "he", dtype=np.float64) -> dict:
    """A convolution's parameters `{"W": (kh, kw, c_in, c_out) kernel, "b": (c_out,) bias}` of
    `dtype`, initialised as a dense layer of fan-in kh * kw * c_in."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    params = init_dense(rng, kh * kw * c_in, c_out, init, dtype)
    return {"W": params["W"].reshape(kh, kw, c_in, c_out), "b": params["b"]}


def conv2d(x, kernel, bias=None, stride: int = 1, padding: str = "SAME"):
    """The 2-d convolution (a cross-correlation, as deep-learning libraries define it) of NHWC
    images `x` with an HWIO `kernel`, plus `bias` per output channel.

    `padding` is "SAME" (zeros around, so that the output has ceil(size / stride) rows and
    columns, split as JAX splits them) or "VALID" (none). Written as one gather, which lays every
    output pixel's window out as a row (im2col), and one matrix product with the kernel, so every
    transformation differentiates and batches it as those two ops (the gather's gradient adds the
    rows back into place)."""
    n, height, width, c_in = tnp.shape(x)
    kh, kw, kernel_c_in, c_out = tnp.shape(kernel)
    if kernel_c_in != c_in:
        raise ValueError(f"conv2d: images with {c_in} channels and a kernel for {kernel_c_in} (kernel shape "
                         f"{tnp.shape(kernel)}, HWIO)")
    if padding == "SAME":
        out_h, out_w = -(-height // stride), -(-width // stride)
        pad_h = max((out_h - 1) * stride + kh - height, 0)
        pad_w = max((out_w - 1) * stride + kw - width, 0)
        top, left = pad_h // 2, pad_w // 2
        padded_shape = (n, height + pad_h, width + pad_w, c_in)
        x = bind(prims.pad_p, x, shape=padded_shape,
                 index=((0, n, 1), (top, top + height, 1), (left, left + width, 1), (0, c_in, 1)))
    elif padding == "VALID":
        out_h, out_w = (height - kh) // stride + 1, (width - kw) // stride + 1
    else:
        raise ValueError(f'conv2d: padding must be "SAME" or "VALID", not {padding!r}')
    rows = tnp.reshape(x, (-1, c_in))[window_rows(tnp.shape(x), kh, kw, out_h, out_w, stride)]
    out = tnp.reshape(rows, (n * out_h * out_w, kh * kw * c_in)) @ tnp.reshape(kernel, (kh * kw * c_in, c_out))
    out = tnp.reshape(out, (n, out_h, out_w, c_out))
    return out if bias is None else out + bias


def window_rows(shape: tuple[int, ...], kh: int, kw: int, out_h: int, out_w: int, stride: int) -> np.ndarray:
    """For images of `shape` (NHWC) seen as rows of channels, the row of every (image, output row,
    output column, kernel row, kernel column), in that order: `rows[window_rows(...)]` lays each
    output pixel's window out as one row of the product (im2col, as one gather)."""
    n, height, width, _ = shape
    image = np.arange(n).reshape(n, 1, 1, 1, 1) * (height * width)
    row = (np.arange(out_h) * stride).reshape(1, out_h, 1, 1, 1) + np.arange(kh).reshape(1, 1, 1, kh, 1)
    column = (np.arange(out_w) * stride).reshape(1, 1, out_w, 1, 1) + np.arange(kw).reshape(1, 1, 1, 1, kw)
    return (image + row * width + column).reshape(-1)


def max_pool2d(x, window: int = 2, stride: int | None = None):
    """The maximum over each `window` x `window` patch of NHWC images, moving by `stride` (the
    window by default), without padding (as "VALID"). The gradient goes to each patch's largest
    element, as `tnp.max` routes it."""
    stride = window if stride is None else stride
    n, height, width, channels = tnp.shape(x)
    out_h, out_w = (height - window) // stride + 1, (width - window) // stride + 1
    if stride == window and height % window == 0 and width % window == 0:  # patches tile the image
        patches = tnp.reshape(x, (n, out_h, window, out_w, window, channels))
        return tnp.max(patches, axis=(2, 4))
    windows = [x[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride, :]
               for i in range(window) for j in range(window)]
    return tnp.max(tnp.stack(windows, axis=0), axis=0)


def layer_norm(x, scale=None, offset=None, axis=-1, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) over `axis` (an int or a tuple), times `scale` plus `offset`."""
    mean = tnp.mean(x, axis=axis, keepdims=True)
    centred = x - mean
    variance = tnp.mean(centred * centred, axis=axis, keepdims=True)
    normalised = centred / tnp.sqrt(variance + eps)
    if scale is not None:
        normalised = normalised * scale
    return normalised if offset is None else normalised + offset


def embedding(table, ids):
    """Rows of `table` (vocabulary x features) at the integer `ids`, of any shape: ids.shape +
    (features,). The gradient adds into the rows looked up."""
    ids = np.asarray(ids) if not isinstance(ids, tnp.Tracer) else ids
    flat = tnp.reshape(ids, (-1,)) if tnp.ndim(ids) != 1 else ids
    rows = table[flat]
    return tnp.reshape(rows, tuple(tnp.shape(ids)) + tuple(tnp.shape(table)[1:]))


def one_hot(labels, num_classes: int):
    """float64 rows with a 1.0 at each integer label: labels.shape + (num_classes,)."""
    labels = tnp.asarray(labels) if not isinstance(labels, tnp.Tracer) else labels
    classes = np.arange(num_classes)
    return tnp.where(tnp.expand_dims(labels, -1) == classes, 1.0, 0.0)


# -- activations -------------------------------------------------------------------------

def relu(x):
    """max(x, 0), with gradient 0 at 0 (as micrograd)."""
    return tnp.where(x > 0.0, x, 0.0)


def tanh(x):
    return tnp.tanh(x)


def gelu(x):
    """The Gaussian error linear unit in its tanh form, `jax.nn.gelu`'s default:
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + tnp.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * (x * x * x))))


def sigmoid(x):
    """1 / (1 + e^-x), computed as (1 + tanh(x/2)) / 2, which never overflows."""
    return 0.5 * (tnp.tanh(0.5 * x) + 1.0)


def logsumexp(x, axis=-1, keepdims: bool = False):
    """log(sum(exp(x))) along `axis`, shifted by the maximum so it never overflows.

    The shift cancels out of the value, so no gradient needs to flow through it.
    """
    shift = tnp.stop_gradient(tnp.max(x, axis=axis, keepdims=True))
    summed = tnp.sum(tnp.exp(x - shift), axis=axis, keepdims=keepdims)
    return tnp.log(summed) + tnp.reshape(shift, tnp.shape(summed))


def log_softmax(x, axis=-1):
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    return tnp.exp(log_softmax(x, axis=axis))


# -- losses ------------------------------------------------------------------------------

def mse(prediction, target):
    """Mean squared error."""
    return tnp.mean((prediction - target) ** 2)


def softmax_cross_entropy(logits, labels):
    """Mean negative log-likelihood of integer `labels` under softmax(`logits`), rows are examples."""
    n = tnp.shape(logits)[0]
    return -tnp.mean(log_softmax(logits, axis=-1)[np.arange(n), labels])


def hinge(scores, targets):
    """micrograd's SVM max-margin loss: mean(relu(1 - target * score)), targets in {-1, +1}."""
    return tnp.mean(relu(1.0 - targets * scores))


def accuracy(logits, labels) -> float:
    """Fraction of rows whose largest logit is at the label (on concrete arrays)."""
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)))


# -- dropout (random numbers from tracegrad.random) -----------------------------------------

from . import random  # noqa: E402  (this block's own imports, kept with it)
from .source_info import user_source, where_text  # noqa: E402


def dropout(key, x, rate):
    """Inverted dropout: each entry of x zeroed with probability `rate`, the others divided by
    1 - rate, so the expected value is x. `key` is a tg.random key (pass a new one on each step:
    `tg.random.fold_in(key, step)`); rate 0 returns x itself, rate 1 zeros. `rate` may be traced."""
    if isinstance(rate, (int, float)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"dropout: rate must lie in [0, 1], got {rate} (at {where_text(user_source())})")
        if rate == 0.0:
            return x
        if rate == 1.0:
            return tnp.zeros_like(x)
    keep = random.bernoulli(key, 1.0 - rate, tnp.shape(x))
    return tnp.where(keep, x / (1.0 - rate), 0.0)
