r"""Inference-time rewrites of the spiking U-Net's parameters (same function, less work per streamed step).

**BatchNorm folding.** In eval mode a block computes ``BN(conv_K(x))`` with the running statistics, an affine
map per output channel ``o``:

.. math::

    g_o = \frac{\gamma_o}{\sqrt{\sigma^2_o + \epsilon}}, \qquad
    \mathrm{BN}(\mathrm{conv}_K(x))_o = \mathrm{conv}_{K'}(x)_o + b'_o, \qquad
    K'[\dots, o] = g_o K[\dots, o], \qquad b'_o = \beta_o - \mu_o g_o

(``epsilon`` = :data:`hybridjax.models.layers.BN_EPS`; a conv that already has a bias ``b`` gets
``b'_o = \beta_o + (b_o - \mu_o) g_o``). :func:`fold_batch_norms` rewrites every block so; the network then
runs with the conv implementation ``BlockConvs(batch_norm=False)`` (:func:`folded_convs`), which applies no
BatchNorm after the convs. Only rounding differs (one multiply-add less per activation).

**Space-to-depth convolution.** A ``k x k`` convolution (zero padding ``k // 2``, stride ``s``) of a map with
very few input channels (the event histogram: 2) is slow on CPU. With the input regrouped into ``f x f``
blocks (``f = 2``; pixel ``f I + r`` of an axis is block ``I``, channel group ``r``), every output pixel
``o = (f / s) I + a`` reads input ``s o + d - k // 2 = f I + (s a + d - k // 2)``, i.e. block
``I + floor((s a + d - k//2) / f)`` at offset ``(s a + d - k//2) mod f``. So the same convolution is a small
stride-1 convolution of the block map with ``f^2 C_in`` input and ``(f/s)^2 C_out`` output channels (one per
output phase ``a``), whose kernel places ``K[d]`` at (block offset, input offset, output phase):

.. math::

    \tilde K[\lfloor (s a + d - p) / f \rfloor - \ell,\ (s a + d - p) \bmod f,\ a] \mathrel{+}= K[d]
    \quad (\text{per axis}, p = k // 2, \ell = \min \lfloor (s a + d - p) / f \rfloor),

padded by ``-ell`` blocks before and by the largest block offset after; the output blocks are then
regrouped into pixels. The multiply-adds grow (e.g. 5x5 -> 3x3 blocks of 2x2: x1.44 for stride 1) but the
shapes suit the CPU kernels (2 -> 8 channels at 64x64 becomes 8 -> 32 at 32x32; measured 0.40 -> 0.08 ms).
:class:`SpaceToDepthConv` holds such a kernel; the conv implementation of :func:`folded_convs` calls it for the
blocks it names (``own_kernels``) instead of :func:`hybridjax.models.layers.conv2d`.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.models.config import ModelConfig
from hybridjax.models.layers import BN_EPS
from hybridjax.models.snn_unet import BlockConvs


def fold_batch_norm(conv: dict, bn: dict, stats: dict, eps: float = BN_EPS) -> dict:
    """``{"kernel", "bias"}`` of the conv whose output equals eval-mode ``BN(conv(x))`` (module docstring)."""
    kernel = jnp.asarray(conv["kernel"])
    gain = jnp.asarray(bn["scale"]) * jax.lax.rsqrt(jnp.asarray(stats["var"]) + eps)
    bias = jnp.asarray(conv["bias"]) if "bias" in conv else jnp.zeros_like(gain)
    return {"kernel": kernel * gain.astype(kernel.dtype),
            "bias": (jnp.asarray(bn["bias"]) + (bias - jnp.asarray(stats["mean"])) * gain).astype(kernel.dtype)}


def fold_batch_norms(params: dict, stats: dict) -> tuple[dict, dict]:
    """The spiking U-Net's ``(params, stats)`` with every block's eval BatchNorm folded into its conv.

    The head is kept as it is (the hybrid's has no BatchNorm; the pure SNN's is applied by the network
    explicitly); the returned ``stats`` keep only the entries of blocks that still have a BatchNorm. The folded
    tree is for eval mode only.
    """
    folded, kept_stats = {}, {}
    for name, block in params.items():
        if "bn" in block and name != "head":
            rest = {k: v for k, v in block.items() if k not in ("conv", "bn")}
            folded[name] = {"conv": fold_batch_norm(block["conv"], block["bn"], stats[name]), **rest}
        else:
            folded[name] = dict(block)
            if name in stats:
                kept_stats[name] = stats[name]
    return folded, kept_stats


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SpaceToDepthConv:
    """A ``k x k`` conv (padding ``k // 2``, stride ``stride``) run on ``factor x factor`` pixel blocks.

    Built by :func:`space_to_depth_conv` from an ordinary conv; ``self(x, stride=...)`` equals
    ``conv2d(x, conv, stride=stride)`` for ``x [..., H, W, Cin]`` with ``H``, ``W`` multiples of ``factor``.
    """

    kernel: jax.Array  # [nb, nb, factor^2 Cin, (factor / stride)^2 Cout] block kernel
    bias: jax.Array | None  # [Cout] or None
    stride: int = dataclasses.field(metadata=dict(static=True))  # the original conv's stride
    factor: int = dataclasses.field(metadata=dict(static=True))  # block size f (a multiple of the stride)
    pads: tuple[int, int] = dataclasses.field(metadata=dict(static=True))  # block padding before / after

    def __call__(self, x: jax.Array, *, stride: int) -> jax.Array:
        if stride != self.stride:
            raise ValueError(f"SpaceToDepthConv built for stride {self.stride} called with stride {stride}")
        f, phases = self.factor, self.factor // self.stride
        *lead, h, w, cin = x.shape
        if h % f or w % f:
            raise ValueError(f"SpaceToDepthConv: input {h}x{w} is not a multiple of the block size {f}")
        n = int(np.prod(lead, dtype=np.int64))
        blocks = x.reshape(n, h // f, f, w // f, f, cin).transpose(0, 1, 3, 2, 4, 5)
        blocks = blocks.reshape(n, h // f, w // f, f * f * cin)
        y = jax.lax.conv_general_dilated(blocks, self.kernel.astype(x.dtype), (1, 1), (self.pads, self.pads),
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        cout = self.kernel.shape[-1] // (phases * phases)
        y = y.reshape(n, h // f, w // f, phases, phases, cout).transpose(0, 1, 3, 2, 4, 5)
        y = y.reshape(*lead, h // f * phases, w // f * phases, cout)
        if self.bias is not None:
            y = y + self.bias.astype(x.dtype)
        return y


def space_to_depth_conv(conv: dict, *, stride: int = 1, factor: int = 2) -> SpaceToDepthConv:
    """The :class:`SpaceToDepthConv` equal to ``conv2d(., conv, stride=stride)`` (padding ``k // 2``)."""
    kernel = np.asarray(conv["kernel"])
    k, k2, cin, cout = kernel.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"space_to_depth_conv: needs a square odd kernel, got shape {kernel.shape}")
    if factor % stride:
        raise ValueError(f"space_to_depth_conv: block size {factor} must be a multiple of the stride {stride}")
    pad, phases = k // 2, factor // stride
    offsets = [(stride * a + d - pad) for a in range(phases) for d in range(k)]
    first, last = min(o // factor for o in offsets), max(o // factor for o in offsets)
    size = last - first + 1
    blocks = np.zeros((size, size, factor, factor, cin, phases, phases, cout), kernel.dtype)
    for a in range(phases):
        for b in range(phases):
            for dy in range(k):
                for dx in range(k):
                    (by, ry), (bx, rx) = divmod(stride * a + dy - pad, factor), divmod(stride * b + dx - pad, factor)
                    blocks[by - first, bx - first, ry, rx, :, a, b, :] += kernel[dy, dx]
    block_kernel = jnp.asarray(blocks.reshape(size, size, factor * factor * cin, phases * phases * cout))
    bias = jnp.asarray(conv["bias"]) if "bias" in conv else None
    return SpaceToDepthConv(block_kernel, bias, stride=stride, factor=factor, pads=(-first, last))


def streaming_snn_params(params: dict, stats: dict, *, space_to_depth: tuple[str, ...] = ("static",),
                         strides: dict[str, int] | None = None) -> tuple[dict, dict]:
    """The SNN parameters the streaming runtime runs: BatchNorms folded, ``space_to_depth`` blocks rewritten.

    ``strides``: each rewritten block's stride (default: 2 for ``down1..3``, 1 otherwise).
    """
    folded, kept = fold_batch_norms(params, stats)
    strides = strides or {"down1": 2, "down2": 2, "down3": 2}
    for name in space_to_depth:
        if name not in folded:
            raise ValueError(f"streaming_snn_params: no block {name!r} (blocks: {sorted(folded)})")
        folded[name] = {**folded[name], "conv": space_to_depth_conv(folded[name]["conv"],
                                                                   stride=strides.get(name, 1))}
    return folded, kept


def folded_convs(cfg: ModelConfig, space_to_depth: tuple[str, ...] = ()) -> BlockConvs:
    """The conv implementation of parameters from :func:`fold_batch_norms` / :func:`streaming_snn_params`
    (``space_to_depth``: the blocks rewritten as :class:`SpaceToDepthConv`)."""
    return BlockConvs(polyphase=cfg.fused_upsample_conv, batch_norm=False, own_kernels=tuple(space_to_depth),
                      operand_dtype=cfg.operand_dtype)


__all__ = ["SpaceToDepthConv", "fold_batch_norm", "fold_batch_norms", "folded_convs", "space_to_depth_conv",
           "streaming_snn_params"]
