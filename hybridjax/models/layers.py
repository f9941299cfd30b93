"""Pure NHWC layer functions shared by the ANN, the spiking U-Net and the state initialisers.

Parameters are plain pytrees: a conv is ``{"kernel": [kh, kw, Cin, Cout], "bias": [Cout]?}``, a BatchNorm
``{"scale": [C], "bias": [C]}`` with running statistics ``{"mean": [C], "var": [C]}`` kept separately
(``batch_stats``). Semantics follow PyTorch where the official code relies on them: symmetric zero
padding, bilinear x2 upsampling with ``align_corners=False``, BatchNorm with eps 1e-5 and momentum 0.1
(running variance updated with the unbiased batch variance).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

BN_EPS = 1e-5
BN_MOMENTUM = 0.1
LEAKY_SLOPE = 0.1


def conv2d(x: jax.Array, params: dict, *, stride: int = 1, padding: int | None = None,
           operand_dtype=None) -> jax.Array:
    """2-D convolution ``[..., H, W, Cin] -> [..., H', W', Cout]`` with zero padding (default ``k // 2``).

    Leading axes beyond one batch axis (e.g. time-major ``[T, B, ...]``) are folded into the batch.
    ``operand_dtype`` (e.g. ``jnp.bfloat16``; :attr:`hybridjax.models.ModelConfig.operand_dtype`): mixed
    precision, the input and kernel are rounded to it and the products accumulated in the input's type, which
    the result keeps (also in the backward pass: see :func:`conv_nhwc`). None: everything in the input's type.
    """
    kernel = params["kernel"]
    kh, kw = kernel.shape[:2]
    pad_h = kh // 2 if padding is None else padding
    pad_w = kw // 2 if padding is None else padding
    lead = x.shape[:-3]
    x4 = x.reshape((math.prod(lead),) + x.shape[-3:])
    pads = ((pad_h, pad_h), (pad_w, pad_w))
    if operand_dtype is None:
        kernel = kernel.astype(x.dtype)
    if x.shape[-3] < kh or x.shape[-2] < kw:
        y = conv_as_matmul(x4, kernel, stride, pads, operand_dtype)
    else:
        y = conv_nhwc(x4, kernel, stride, pads, operand_dtype)
    if "bias" in params:
        y = y + params["bias"].astype(y.dtype)
    return y.reshape(lead + y.shape[1:])


def conv_as_matmul(x: jax.Array, kernel: jax.Array, stride: int,
                   pads: tuple[tuple[int, int], tuple[int, int]], operand_dtype=None) -> jax.Array:
    r"""The same convolution as :func:`conv_nhwc`, as one matrix product of the im2col patches.

    .. math::

        y[n, u, v, o] = \sum_{a, b, i} x_{pad}[n, u s + a, v s + b, i]\, W[a, b, i, o]
                     = (P\, \mathrm{vec}(W))[n u v, o], \quad P[n u v, (a b i)] = x_{pad}[n, u s + a, v s + b, i]

    :func:`conv2d` uses it for maps smaller than the kernel (the ANN's 3x3 convolutions on the 2x2 map of a
    64x64 input): XLA:CPU leaves its fast convolution path there and measured ~2 GFLOP/s (19.5 ms for a 3x3
    512 -> 512 conv at 2x2, batch 2, against 0.32 ms as a matmul). The patches repeat each input pixel at most
    ``kh kw`` times, which is cheap exactly when the map is small. Plain jnp ops: autodiff gives a dot-based
    backward pass. ``operand_dtype``: as in :func:`conv2d` (patches and kernel rounded, result in ``x``'s type).
    """
    kh, kw, cin, cout = kernel.shape
    (top, bottom), (left, right) = pads
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, hp, wp, _ = xp.shape
    ho, wo = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    taps = [jax.lax.slice(xp, (0, a, b, 0), (n, a + (ho - 1) * stride + 1, b + (wo - 1) * stride + 1, cin),
                          (1, stride, stride, 1)) for a in range(kh) for b in range(kw)]
    patches = jnp.concatenate(taps, axis=-1).reshape(n * ho * wo, kh * kw * cin)  # tap-major, as W.reshape
    weights = kernel.reshape(kh * kw * cin, cout)
    if operand_dtype is None:
        return jnp.dot(patches, weights).reshape(n, ho, wo, cout)
    y = jnp.dot(patches.astype(operand_dtype), weights.astype(operand_dtype), preferred_element_type=x.dtype)
    return y.reshape(n, ho, wo, cout)


def _conv_raw(x, kernel, stride, pads, lhs_dilation=(1, 1), rhs_dilation=(1, 1), result_dtype=None):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), pads, lhs_dilation=lhs_dilation,
                                        rhs_dilation=rhs_dilation, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=result_dtype)


def mixed(a: jax.Array, operand_dtype) -> jax.Array:
    """``a`` as a convolution / matmul operand: rounded to ``operand_dtype`` (None: unchanged)."""
    return a if operand_dtype is None else a.astype(operand_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def conv_nhwc(x, kernel, stride: int, pads: tuple[tuple[int, int], tuple[int, int]], operand_dtype=None):
    r"""NHWC x HWIO convolution, zero padding ``pads = ((top, bottom), (left, right))``, whose backward pass is
    written as two convolutions in the canonical layout.

    Autodiff would express both gradients as convolutions with permuted dimension labels; XLA:CPU runs
    those fast only after it rewrites them to the canonical NHWC/HWIO form, which it does not do inside a
    loop body (a scanned step's backward then falls back to a naive loop nest, ~20-30x slower). Here the
    permutations are explicit and held by optimisation barriers so they cannot be folded back:

    .. math::

        g_x &= \mathrm{conv}(\mathrm{dilate}_s(g),\ \mathrm{flip}(W)^{\top_{io}}),\
               \text{pad } (k - 1 - p_{lo},\ H - 1 + p_{lo} - (h_g - 1) s)\\
        g_W[a, b, i, o] &= \sum_{n, u, v} x_{pad}[n, u s + a, v s + b, i]\, g[n, u, v, o]
               \quad(\text{a conv with batch } i\text{, features } n\text{, kernel } g\text{ dilated by } s)

    The results are the exact adjoints (the same sums, in the same precision). The backward pads follow from
    the leading pads and the shapes, so per-side (asymmetric) padding needs nothing else.

    ``operand_dtype`` (mixed precision, e.g. bfloat16): ``x``, ``W`` and, in the backward pass, ``g`` are
    rounded to it; every convolution accumulates in ``x``'s type and returns it (``g_W`` in the kernel's type).
    The saved residual is the rounded ``x`` (half the memory in bfloat16).
    """
    return _conv_raw(mixed(x, operand_dtype), mixed(kernel, operand_dtype), stride, pads,
                     result_dtype=None if operand_dtype is None else x.dtype)


def _conv_nhwc_fwd(x, kernel, stride, pads, operand_dtype):
    return conv_nhwc(x, kernel, stride, pads, operand_dtype), (mixed(x, operand_dtype), kernel)


def _conv_nhwc_bwd(stride, pads, operand_dtype, residuals, g):
    (pad_h, _), (pad_w, _) = pads
    x, kernel = residuals  # x already in the operand type
    kh, kw = kernel.shape[:2]
    (_, h, w, _), (_, gh, gw, _) = x.shape, g.shape
    grad_type, kernel_type = (None, None) if operand_dtype is None else (g.dtype, kernel.dtype)
    g, kernel_op = mixed(g, operand_dtype), mixed(kernel, operand_dtype)
    barrier = jax.lax.optimization_barrier
    flipped = barrier(jnp.transpose(jnp.flip(kernel_op, (0, 1)), (0, 1, 3, 2)))  # [kh, kw, Cout, Cin]
    grad_x = _conv_raw(g, flipped, 1, ((kh - 1 - pad_h, h - 1 + pad_h - (gh - 1) * stride),
                                       (kw - 1 - pad_w, w - 1 + pad_w - (gw - 1) * stride)),
                       lhs_dilation=(stride, stride), result_dtype=grad_type)
    x_t = barrier(jnp.transpose(x, (3, 1, 2, 0)))  # [Cin, H, W, N]: Cin as batch, N as features
    g_t = barrier(jnp.transpose(g, (1, 2, 0, 3)))  # [gh, gw, N, Cout]: the "kernel"
    grad_k = _conv_raw(x_t, g_t, 1, ((pad_h, kh + (gh - 1) * stride - h - pad_h),
                                     (pad_w, kw + (gw - 1) * stride - w - pad_w)),
                       rhs_dilation=(stride, stride), result_dtype=kernel_type)  # [Cin, kh, kw, Cout]
    return grad_x, jnp.transpose(grad_k, (1, 2, 0, 3))


conv_nhwc.defvjp(_conv_nhwc_fwd, _conv_nhwc_bwd)


def leaky_relu(x: jax.Array) -> jax.Array:
    """LeakyReLU with slope 0.1 (the official ANN's activation)."""
    return jnp.where(x >= 0, x, LEAKY_SLOPE * x)


def avg_pool2(x: jax.Array) -> jax.Array:
    """2 x 2 average pooling, stride 2 (H and W must be even)."""
    *lead, h, w, c = x.shape
    return x.reshape(*lead, h // 2, 2, w // 2, 2, c).mean(axis=(-4, -2))


def _upsample_axis2(x: jax.Array, axis: int) -> jax.Array:
    # align_corners=False x2: output 2i samples source i - 1/4, output 2i+1 samples i + 1/4, clamped at
    # the borders, i.e. out[2i] = 0.25 x[i-1] + 0.75 x[i], out[2i+1] = 0.75 x[i] + 0.25 x[i+1].
    n = x.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis=axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis=axis)
    even = 0.25 * prev + 0.75 * x
    odd = 0.75 * x + 0.25 * nxt
    stacked = jnp.stack([even, odd], axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = 2 * n
    return stacked.reshape(shape)


def upsample_bilinear2x(x: jax.Array) -> jax.Array:
    """Bilinear x2 upsampling of ``[..., H, W, C]`` with PyTorch's ``align_corners=False`` semantics."""
    return _upsample_axis2(_upsample_axis2(x, x.ndim - 3), x.ndim - 2)


def batch_norm(x: jax.Array, params: dict, stats: dict, *, train: bool, reduce_axes: tuple[int, ...],
               axis_name: str | None = None) -> tuple[jax.Array, dict]:
    r"""BatchNorm over the channel (last) axis.

    train=False: normalise with the running statistics; returns them unchanged.
    train=True: normalise with the biased batch statistics over ``reduce_axes``; the returned statistics
    are the batch mean and the *unbiased* batch variance (PyTorch's running-variance convention), with
    whatever axes were not reduced (e.g. time) kept, so the caller can fold them into the running averages
    with :func:`update_running_stats`.

    ``axis_name`` (train mode only; the name of a ``pmap`` / ``vmap`` / shard axis over which the batch is
    split): synchronised BatchNorm, the statistics of the *global* batch. With ``D`` members of the axis,
    each holding ``n`` of the reduced elements (every member has the same static shape, so the shards are
    equal by construction and averages of shard averages are global averages), in two passes:

    .. math::

        \mu = \tfrac{1}{D}\sum_d \operatorname{mean}_n(x_d), \qquad
        \sigma^2 = \tfrac{1}{D}\sum_d \operatorname{mean}_n\big((x_d - \mu)^2\big), \qquad
        \sigma^2_{\text{unbiased}} = \sigma^2 \, \frac{nD}{nD - 1}

    (each average over devices is a ``jax.lax.pmean``; ``D = psum(1)``). The second pass is taken about the
    global mean, so no ``E[x^2] - mu^2`` cancellation. Normalisation and the returned statistics then equal
    those of one device holding the concatenated batch; gradients flow through the collectives, so the
    cross-device dependence of ``mu`` and ``sigma^2`` on every shard is differentiated exactly.
    """
    if train:
        mean = jnp.mean(x, axis=reduce_axes, keepdims=True)
        if axis_name is not None:
            mean = jax.lax.pmean(mean, axis_name)
        var = jnp.mean(jnp.square(x - mean), axis=reduce_axes, keepdims=True)
        count = math.prod(x.shape[a] for a in reduce_axes)
        if axis_name is not None:
            var = jax.lax.pmean(var, axis_name)
            count = count * jax.lax.psum(1, axis_name)  # a Python int: the axis size is static
        unbiased = var * (count / max(count - 1, 1))
        batch = {"mean": jnp.squeeze(mean, reduce_axes), "var": jnp.squeeze(unbiased, reduce_axes)}
    else:
        mean, var = stats["mean"].astype(x.dtype), stats["var"].astype(x.dtype)
        batch = stats
    y = (x - mean) * jax.lax.rsqrt(var + BN_EPS) * params["scale"].astype(x.dtype) + params["bias"].astype(x.dtype)
    return y, batch


def update_running_stats(running: dict, batch: dict, *, sequential_axis: bool) -> dict:
    """Folds batch statistics into running ones: ``r <- (1 - m) r + m b`` with momentum ``m = 0.1``.

    ``sequential_axis``: the batch statistics carry a leading step axis (a BatchNorm run once per SNN step);
    the updates are applied in step order, in closed form:
    ``r_T = (1 - m)^T r_0 + sum_t m (1 - m)^(T - 1 - t) b_t``.
    """
    m = BN_MOMENTUM

    def fold(r, b):
        b = b.astype(r.dtype)
        if not sequential_axis:
            return (1.0 - m) * r + m * b
        steps = b.shape[0]
        weights = m * (1.0 - m) ** jnp.arange(steps - 1, -1, -1, dtype=r.dtype)
        return (1.0 - m) ** steps * r + jnp.tensordot(weights, b, axes=1)

    return jax.tree_util.tree_map(fold, running, batch)


class _ShapeRecorder:
    """First pass of :func:`sample_params`: counts the normal draws a builder asks for."""

    def __init__(self):
        self.total = 0

    def normal(self, shape):
        self.total += math.prod(shape)
        return np.zeros(shape, np.float32)


class _NormalPool:
    """Second pass: hands out consecutive slices of one standard-normal vector."""

    def __init__(self, flat):
        # Concrete draws are sliced with numpy (no per-shape compilation); traced ones with jax.numpy.
        self.flat = flat if isinstance(flat, jax.core.Tracer) else np.asarray(flat)
        self.offset = 0

    def normal(self, shape):
        n = math.prod(shape)
        out = self.flat[self.offset:self.offset + n].reshape(shape)
        self.offset += n
        return out


def sample_params(build, key: jax.Array, dtype=jnp.float32):
    """Runs ``build(sampler)`` with all its normal draws taken from ONE ``jax.random.normal`` call.

    Drawing each kernel separately compiles a random-number program per shape (seconds each on CPU); one
    draw sliced in order gives the same distribution at the cost of one small program.
    """
    recorder = _ShapeRecorder()
    build(recorder)
    flat = jax.random.normal(key, (max(recorder.total, 1),), jnp.float32)
    tree = build(_NormalPool(flat))
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def init_conv(sampler, kernel_size: int, cin: int, cout: int, *, bias: bool) -> dict:
    """A conv with a Xavier-normal HWIO kernel (std = sqrt(2 / (fan_in + fan_out)), the official init) and a
    zero bias. ``sampler.normal(shape)`` supplies standard normals (see :func:`sample_params`, which casts the
    whole tree to the requested dtype once)."""
    shape = (kernel_size, kernel_size, cin, cout)
    std = math.sqrt(2.0 / (cin * kernel_size * kernel_size + cout * kernel_size * kernel_size))
    p = {"kernel": sampler.normal(shape) * std}
    if bias:
        p["bias"] = np.zeros((cout,), np.float32)
    return p


def init_bn(channels: int) -> tuple[dict, dict]:
    """BatchNorm ``(params, running_stats)``: scale 1, bias 0, mean 0, var 1."""
    return ({"scale": np.ones((channels,), np.float32), "bias": np.zeros((channels,), np.float32)},
            {"mean": np.zeros((channels,), np.float32), "var": np.ones((channels,), np.float32)})
