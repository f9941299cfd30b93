r"""Bilinear x2 upsampling followed by a 5x5 convolution, computed on the low-resolution map (polyphase form).

The spiking U-Net's up blocks compute ``conv2d(upsample_bilinear2x(x), K, padding=2)`` with a 5x5 kernel
``K``. Every output pixel of that composition is a fixed linear combination of a 4 x 4 window of the
low-resolution input, so it can be computed without materialising the upsampled map, with 4 x 16 = 64
kernel taps per 2 x 2 output block instead of 4 x 25 = 100 (36% fewer multiply-accumulates). The function
is the same; only the floating-point summation order differs.

**Upsampling** (PyTorch ``align_corners=False``, per axis, indices clamped to ``[0, n)``):

.. math::

    U[2i] = \tfrac14 x[i-1] + \tfrac34 x[i], \qquad U[2i+1] = \tfrac34 x[i] + \tfrac14 x[i+1].

**Extended input.** Each spatial axis of ``x`` (length ``n``) is extended by one edge copy and then one zero
per side, ``z = (0, x_0, x_0, \dots, x_{n-1}, x_{n-1}, 0)`` (``z`` indices ``-2 \dots n+1``), and ``U'`` is
the *unclamped* upsampling formula applied to ``z`` on ``[-2, 2n+2)``. Then ``U' = U`` on ``[0, 2n)`` (the
edge copies reproduce the clamping), while the ring that the convolution's zero padding sets to 0 is
``U'[-2] = \tfrac34 x_0``, ``U'[-1] = x_0``, ``U'[2n] = x_{n-1}``, ``U'[2n+1] = \tfrac34 x_{n-1}``.

**Polyphase main term.** With the 5-tap kernel index ``d = -2..2`` and output ``p = 2r + a`` (phase ``a``):

.. math::

    \sum_d K[d]\, U'[2r + a + d] = \sum_t \Big(\sum_d C_a[t, d]\, K[d]\Big)\, z[r + t],

where phase 0 reads ``z[r-2 .. r+1]`` and phase 1 reads ``z[r-1 .. r+2]`` with the coefficient matrices
:data:`PHASE_COEFFICIENTS` (``C_1`` is ``C_0`` mirrored). In 2-D the phase kernels are
``K_ab[t, s] = sum_{d,e} C_a[t, d] C_b[s, e] K[d, e]``: four 4x4 convolutions of the edge-padded input
``x_e`` (``n + 2`` samples; the outer zeros of ``z`` are the convolution's own padding, ``(1, 0)`` for phase
0 and ``(0, 1)`` for phase 1), interleaved. They run as one convolution with the four kernels side by side
(``4 Cout`` features, padding ``(1, 1)``, one extra output row and column) whose crops are the phases.
They are built from ``K`` inside the function, so gradients flow to the 5x5 kernel.

**Border correction.** The main term is ``conv_K(U')``; the composition is ``conv_K`` of the zero-padded
``U``. Their difference is ``conv_K`` of the ring of ``U'``: rows ``-2, -1, 2H, 2H+1`` over the full width
plus columns ``-2, -1, 2W, 2W+1`` over rows ``[0, 2H)``. With ``U'[-2] = 0.75 U'[-1]`` the top rows give

.. math::

    y[0, q] = y_{poly}[0, q] - \sum_e (0.75 K[-2, e] + K[-1, e])\, U'[-1, q + e], \qquad
    y[1, q] = y_{poly}[1, q] - \sum_e K[-2, e]\, U'[-1, q + e],

and likewise the bottom rows (``K[2]`` and ``K[1] + 0.75 K[2]`` on ``U'[2H]``) and the columns (restricted to
rows ``[0, 2H)``, i.e. the clamped upsampling of the border column, zero padded). Each correction is a
1x5 (5x1) convolution of one upsampled border row (column): ``~40 (H + W)`` taps per feature pair against
``64 H W`` for the main term.

All convolutions are canonical NHWC/HWIO with a backward pass of two canonical convolutions (as
:func:`hybridjax.models.layers.conv2d`; XLA:CPU is slow on autodiff's permuted convolutions inside scans).
The phase convolutions read the edge-padded input with a zero padding of 1 on one side rather than a valid
convolution of ``z``: XLA:CPU's YNNPACK path measured ~3.5x slower on 4x4 convolutions without any padding
than on the same work with padding (the one-row ring convolutions are valid ones; measured at full speed).
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.models.layers import conv_nhwc, mixed

# C_a[t, d]: weight of z[r + t] (t = -2..1 for phase 0, -1..2 for phase 1) in U'[2r + a + d], d = -2..2.
PHASE_COEFFICIENTS = np.array([
    [[0.25, 0.00, 0.00, 0.00, 0.00],
     [0.75, 0.75, 0.25, 0.00, 0.00],
     [0.00, 0.25, 0.75, 0.75, 0.25],
     [0.00, 0.00, 0.00, 0.25, 0.75]],
    [[0.75, 0.25, 0.00, 0.00, 0.00],
     [0.25, 0.75, 0.75, 0.25, 0.00],
     [0.00, 0.00, 0.25, 0.75, 0.75],
     [0.00, 0.00, 0.00, 0.00, 0.25]],
])


def _conv(x, kernel, pads, lhs_dilation=(1, 1), rhs_dilation=(1, 1), operand_dtype=None, result_dtype=None):
    return jax.lax.conv_general_dilated(mixed(x, operand_dtype), mixed(kernel, operand_dtype), (1, 1), pads,
                                        lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        preferred_element_type=None if operand_dtype is None else result_dtype)


def flip_kernel(kernel: jax.Array) -> jax.Array:
    """``flip(W)^{T_io}``: the kernel of the input-gradient convolution, ``[kh, kw, Cout, Cin]``."""
    return jnp.transpose(jnp.flip(kernel, (0, 1)), (0, 1, 3, 2))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_flipped(x, kernel, flipped, pads, operand_dtype):
    return _conv(x, kernel, pads, operand_dtype=operand_dtype, result_dtype=x.dtype)


def _conv_flipped_fwd(x, kernel, flipped, pads, operand_dtype):
    return _conv_flipped(x, kernel, flipped, pads, operand_dtype), (mixed(x, operand_dtype), kernel, flipped)


def _conv_flipped_bwd(pads, operand_dtype, residuals, g):
    x, kernel, flipped = residuals  # x already in the operand type
    kh, kw = kernel.shape[:2]
    (top, bottom), (left, right) = pads
    barrier = jax.lax.optimization_barrier
    grad_type, g = g.dtype, mixed(g, operand_dtype)  # g has the primal x's type
    grad_x = _conv(g, flipped, ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right)),
                   operand_dtype=operand_dtype, result_dtype=grad_type)
    x_t = barrier(jnp.transpose(x, (3, 1, 2, 0)))  # [Cin, H, W, N]: Cin as batch, N as features
    g_t = barrier(jnp.transpose(g, (1, 2, 0, 3)))  # [gh, gw, N, Cout]: the "kernel"
    grad_k = _conv(x_t, g_t, pads, operand_dtype=operand_dtype, result_dtype=kernel.dtype)  # [Cin, kh, kw, Cout]
    # The flipped kernel is a function of the kernel computed by the caller: its cotangent is the kernel's.
    return grad_x, jnp.transpose(grad_k, (1, 2, 0, 3)), jnp.zeros_like(flipped)


_conv_flipped.defvjp(_conv_flipped_fwd, _conv_flipped_bwd)


def conv_padded(x: jax.Array, kernel: jax.Array, pads: tuple[tuple[int, int], tuple[int, int]],
                flipped: jax.Array | None = None, operand_dtype=None) -> jax.Array:
    r"""Stride-1 NHWC x HWIO convolution with per-side zero padding ``((top, bottom), (left, right))``.

    The backward pass is two canonical convolutions (:func:`hybridjax.models.layers.conv_nhwc`, stride 1), the
    permutations held by optimisation barriers:

    .. math::

        g_x = \mathrm{conv}(g,\ \mathrm{flip}(W)^{\top_{io}}),\ \text{pad } (k - 1 - p_{lo},\ k - 1 - p_{hi}), \qquad
        g_W = \mathrm{conv}(x^{\top_{bn}},\ g^{\top}),\ \text{pad } (p_{lo},\ p_{hi}).

    ``flipped``: :func:`flip_kernel` of ``kernel`` computed by the caller (e.g. once outside a time scan, where
    XLA would otherwise redo the transpose in every step's backward); its cotangent is returned as zeros (the
    kernel's own cotangent is the gradient). When None it is computed in the backward pass.
    ``operand_dtype``: mixed precision as in :func:`hybridjax.models.layers.conv_nhwc`.
    """
    if flipped is None:
        return conv_nhwc(x, kernel, 1, pads, operand_dtype)
    return _conv_flipped(x, kernel, flipped, pads, operand_dtype)


def _combine(kernel: jax.Array, axis: int) -> list[jax.Array]:
    """``[stack_t sum_d C_a[t, d] K[.., d, ..]]`` for a = 0, 1 along ``axis`` (0 rows, 1 columns) of a kernel.

    Weighted sums of kernel slices (elementwise, so XLA fuses them, and no dot is traced: the MAC counter of
    :mod:`hybridjax.eval.macs` sees only the convolutions).
    """
    taps = [jax.lax.index_in_dim(kernel, d, axis=axis, keepdims=False) for d in range(5)]
    out = []
    for a in (0, 1):
        per_tap = []
        for t in range(4):
            terms = [float(c) * taps[d] for d, c in enumerate(PHASE_COEFFICIENTS[a, t]) if c != 0.0]
            per_tap.append(functools.reduce(jnp.add, terms))
        out.append(jnp.stack(per_tap, axis=axis))
    return out


def phase_kernels(kernel: jax.Array) -> list[list[jax.Array]]:
    """``K_ab = sum_{d,e} C_a[t, d] C_b[s, e] K[d, e]`` (``[4, 4, Cin, Cout]``, indexed ``[a][b]``) of a 5x5 kernel."""
    return [_combine(by_rows, 1) for by_rows in _combine(kernel, 0)]


@jax.custom_vjp
def edge_pad1(x: jax.Array) -> jax.Array:
    """``[N, H, W, C] -> [N, H + 2, W + 2, C]``: one edge copy per side of both spatial axes (``mode="edge"``).

    The backward pass adds the border rows and columns of the cotangent onto the input's border in place
    (``jnp.pad``'s own transpose builds full-size padded maps of the border pieces: ~10 ms per up block on
    [20, 34, 34, 128] in the layer-mode training step).
    """
    return jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")


def _edge_pad1_fwd(x):
    return edge_pad1(x), None


def _edge_pad1_bwd(_, g):
    h, w = g.shape[1] - 2, g.shape[2] - 2
    rows = g[:, 1:h + 1]  # [N, H, W + 2, C]: interior rows, border columns still attached
    grad = rows[:, :, 1:w + 1]
    grad = grad.at[:, :, 0].add(rows[:, :, 0]).at[:, :, w - 1].add(rows[:, :, w + 1])
    top = g[:, 0, 1:w + 1].at[:, 0].add(g[:, 0, 0]).at[:, w - 1].add(g[:, 0, w + 1])  # corners fold in too
    bottom = g[:, h + 1, 1:w + 1].at[:, 0].add(g[:, h + 1, 0]).at[:, w - 1].add(g[:, h + 1, w + 1])
    grad = grad.at[:, 0].add(top).at[:, h - 1].add(bottom)
    return (grad,)


edge_pad1.defvjp(_edge_pad1_fwd, _edge_pad1_bwd)


def _upsample_extended(z: jax.Array, axis: int) -> jax.Array:
    """``U'`` on ``[-2, 2n+2)`` from the extended ``z`` (``n + 4`` samples) with the unclamped formula."""
    m = z.shape[axis] - 4

    def part(start):
        return jax.lax.slice_in_dim(z, start, start + m + 2, axis=axis)

    even = 0.25 * part(0) + 0.75 * part(1)  # U'[2j], j = -1..n
    odd = 0.75 * part(1) + 0.25 * part(2)  # U'[2j + 1], j = -1..n
    stacked = jnp.stack([even, odd], axis=axis + 1)
    shape = list(z.shape)
    shape[axis] = 2 * m + 4
    return stacked.reshape(shape)


def _two_outputs(y: jax.Array, axis: int) -> jax.Array:
    """``[..., 2C]`` (two correction rows / columns as channel halves) -> the two along ``axis``."""
    c = y.shape[-1] // 2
    return jnp.concatenate([y[..., :c], y[..., c:]], axis=axis)


POLYPHASE_KEY = "polyphase"  # conv-params key of the kernels precomputed by with_polyphase_kernels
# Smallest low-resolution side for which the spiking U-Net uses the polyphase form. Below it the saving is
# small (MACs incl. the ring corrections and the input gradient over the edge-padded map: 86% of the dense
# count at 8x8, 75% at 16x16, 69% at 32x32) and the extra small convolutions cost more than they save:
# measured fwd+bwd over a 10-step scan at batch 2 (CPU time, polyphase / dense): 1.29 at 8x8 (512 -> 128),
# 0.81 at 16x16 (256 -> 64), 0.71 at 32x32 (128 -> 32).
FUSED_MIN_SIZE = 16


def polyphase_kernels(kernel: jax.Array) -> dict:
    """Every kernel :func:`upsample2x_conv2d` convolves with, as linear combinations of the 5x5 ``kernel``.

    ``phases``: the 4x4 main-term kernels ``K_ab`` side by side, ``[4, 4, Cin, 4 Cout]`` (phase ``2a + b`` in
    features ``[(2a + b) Cout, (2a + b + 1) Cout)``); ``top``/``bottom`` ``[1, 5, Cin, 2 Cout]`` and
    ``left``/``right`` ``[5, 1, Cin, 2 Cout]``: the ring corrections for output rows (0, 1) / (2H-2, 2H-1) and
    columns (0, 1) / (2W-2, 2W-1), as channel halves; ``flipped``: the same entries as :func:`flip_kernel`
    (the input-gradient kernels, so that a time scan does not transpose them again in every step).
    """
    if tuple(kernel.shape[:2]) != (5, 5):
        raise ValueError(f"upsample2x_conv2d: needs a 5x5 kernel, got kernel shape {tuple(kernel.shape)}")
    # The four phase kernels side by side along the output features, in phase order (0,0), (0,1), (1,0), (1,1).
    phases = jnp.concatenate([k for row in phase_kernels(kernel) for k in row], axis=-1)
    ring = {
        "top": jnp.concatenate([0.75 * kernel[0] + kernel[1], kernel[0]], axis=-1)[None],
        "bottom": jnp.concatenate([kernel[4], kernel[3] + 0.75 * kernel[4]], axis=-1)[None],
        "left": jnp.concatenate([0.75 * kernel[:, 0] + kernel[:, 1], kernel[:, 0]], axis=-1)[:, None],
        "right": jnp.concatenate([kernel[:, 4], kernel[:, 3] + 0.75 * kernel[:, 4]], axis=-1)[:, None],
    }
    # The input-gradient kernels (no gradient of their own: conv_padded routes it through the kernels).
    flipped = jax.tree_util.tree_map(lambda k: flip_kernel(jax.lax.stop_gradient(k)), {"phases": phases, **ring})
    return {"phases": phases, **ring, "flipped": flipped}


def with_polyphase_kernels(params: dict) -> dict:
    """``params`` plus its precomputed :func:`polyphase_kernels` under :data:`POLYPHASE_KEY`.

    For a scan over time steps: computed once outside the loop body (XLA does not hoist them: they are larger
    than the kernel), their gradients accumulate over the steps and flow to the 5x5 kernel once.
    """
    return {**params, POLYPHASE_KEY: polyphase_kernels(params["kernel"])}


def upsample2x_conv2d(x: jax.Array, params: dict, *, padding: int | None = None, operand_dtype=None) -> jax.Array:
    """``conv2d(upsample_bilinear2x(x), params, padding=2)`` for a 5x5 kernel, without the upsampled map.

    ``x``: ``[..., H, W, Cin]`` (leading axes folded into the batch, as :func:`layers.conv2d` does);
    ``params``: ``{"kernel": [5, 5, Cin, Cout], "bias": [Cout]?, "polyphase": ...?}`` (the last from
    :func:`with_polyphase_kernels`; computed here when absent); returns ``[..., 2H, 2W, Cout]``.
    Only the 5x5 kernel with padding 2 (the default) has a polyphase saving and is supported.
    ``operand_dtype``: mixed precision as in :func:`hybridjax.models.layers.conv2d` (every convolution here).
    """
    kernel = params["kernel"]
    if padding not in (None, 2):
        raise ValueError(f"upsample2x_conv2d: only padding 2 (same size) is supported, got padding={padding}")
    if x.ndim < 3 or x.shape[-1] != kernel.shape[2]:
        raise ValueError(f"upsample2x_conv2d: input {tuple(x.shape)} does not end in [H, W, {kernel.shape[2]}]")
    kernels = params.get(POLYPHASE_KEY)
    if kernels is None:
        kernels = polyphase_kernels(kernel)
    if operand_dtype is None:
        kernels = jax.tree_util.tree_map(lambda k: k.astype(x.dtype), kernels)
    lead = x.shape[:-3]
    h, w, _ = x.shape[-3:]
    cout = kernel.shape[3]
    x4 = x.reshape((math.prod(lead),) + x.shape[-3:])
    n = x4.shape[0]

    # Main term: phase (a, b) = 4x4 conv of the edge-padded input with zero padding (1 - a, a) x (1 - b, b).
    # All four in one convolution with 4 Cout features and padding (1, 1): its output (r, c) reads the window
    # of phase (0, 0) at (r, c) and of phase (a, b) at (r - a, c - b), so phase (a, b) is the crop
    # [a : a + H, b : b + W] of its features. The one wide convolution costs (H+1)(W+1)/(HW) of the separate
    # ones (+13% at 16x16, +6% at 32x32) but XLA:CPU (YNNPACK) runs convolutions with <= 64 output features on
    # one core and wider ones on both: measured fwd 11.2 -> 6.9 ms, bwd 19.9 -> 15.1 ms (128 -> 4 x 32 at
    # 32x32, batch 2) on the 2-core machine.
    x_edge = edge_pad1(x4)
    flipped = kernels["flipped"]
    # [N, H+1, W+1, 4 Cout]
    wide = conv_padded(x_edge, kernels["phases"], ((1, 1), (1, 1)), flipped["phases"], operand_dtype)
    rows = [jnp.stack([wide[:, a:a + h, b:b + w, (2 * a + b) * cout:(2 * a + b + 1) * cout] for b in (0, 1)],
                      axis=3) for a in (0, 1)]  # [N, H, W, 2, Cout] per row phase
    y = jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, cout)

    # Ring rows U'[-1] (x row 0) and U'[2H] (x row H-1) over the full width [-2, 2W+2); U'[-2] = 0.75 U'[-1].
    z_rows = jnp.pad(x_edge[:, 1:h + 1:max(h - 1, 1)], ((0, 0), (0, 0), (1, 1), (0, 0)))  # rows 0, H-1 (W+4)
    ring_rows = _upsample_extended(z_rows, 2)  # [N, 1 or 2, 2W+4, Cin]
    no_pad = ((0, 0), (0, 0))
    top = _two_outputs(conv_padded(ring_rows[:, :1], kernels["top"], no_pad, flipped["top"],
                                     operand_dtype), 1)
    bottom = _two_outputs(conv_padded(ring_rows[:, -1:], kernels["bottom"], no_pad, flipped["bottom"],
                                     operand_dtype), 1)
    # Subtracted in place on the two border rows (a zero-padded full-size map per correction measured as four
    # extra passes over the output).
    y = y.at[:, :2].add(-top).at[:, 2 * h - 2:].add(-bottom)

    # Ring columns U'[:, -1] and U'[:, 2W] on rows [0, 2H) (the ring rows are above): the clamped upsampling of
    # x's border columns along H, zero padded by the convolution.
    z_cols = jnp.pad(x_edge[:, :, 1:w + 1:max(w - 1, 1)], ((0, 0), (1, 1), (0, 0), (0, 0)))  # cols 0, W-1
    ring_cols = _upsample_extended(z_cols, 1)[:, 2:2 * h + 2]  # [N, 2H, 1 or 2, Cin]
    rows_pad = ((2, 2), (0, 0))
    left = _two_outputs(conv_padded(ring_cols[:, :, :1], kernels["left"], rows_pad,
                                    flipped["left"], operand_dtype), 2)
    right = _two_outputs(conv_padded(ring_cols[:, :, -1:], kernels["right"], rows_pad,
                                    flipped["right"], operand_dtype), 2)
    y = y.at[:, :, :2].add(-left).at[:, :, 2 * w - 2:].add(-right)

    if "bias" in params:
        y = y + params["bias"].astype(x.dtype)
    return y.reshape(lead + y.shape[1:])


__all__ = ["FUSED_MIN_SIZE", "PHASE_COEFFICIENTS", "POLYPHASE_KEY", "conv_padded", "edge_pad1", "flip_kernel",
           "phase_kernels", "polyphase_kernels", "upsample2x_conv2d", "with_polyphase_kernels"]
