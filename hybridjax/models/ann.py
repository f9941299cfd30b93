"""The ANN: a SuperSloMo-style U-Net on the dense constant-count event frame (pure functions).

``conv1 7x7 -> conv2 7x7 -> down1..down5 (avgpool, two convs) -> up1..up5 (bilinear x2, conv, concat skip,
conv) -> conv3 3x3``; every conv has a bias and is followed by LeakyReLU(0.1) except ``conv3`` (the
heatmaps). Widths come from :attr:`ModelConfig.ann_widths` (``c0..c5``); the paper uses
``(32, 64, 128, 256, 512, 512)``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hybridjax.models.config import ModelConfig
from hybridjax.models.layers import avg_pool2, conv2d, init_conv, leaky_relu, sample_params, upsample_bilinear2x

# ANN feature maps the state initialisers read, in U-Net order.
ANN_FEATURES = ("conv2", "down1", "down2", "down3", "down4", "up1", "up2", "up3", "up4", "up5")
_DOWN_KERNELS = (5, 3, 3, 3, 3)


def ann_blocks(cfg: ModelConfig) -> dict[str, tuple[int, int, int]]:
    """``block -> (in_channels, out_channels, kernel)`` of every two-conv block of the U-Net."""
    c = cfg.ann_widths
    blocks = {}
    for i in range(5):
        blocks[f"down{i + 1}"] = (c[i], c[i + 1], _DOWN_KERNELS[i])
    up_in = c[5]
    for i, out in enumerate((c[4], c[3], c[2], c[1], c[0])):
        blocks[f"up{i + 1}"] = (up_in, out, 3)
        up_in = out
    return blocks


def init_ann_params(key: jax.Array, cfg: ModelConfig, dtype=None) -> dict:
    """Xavier-normal kernels and zero biases for every conv of the ANN U-Net."""
    return sample_params(lambda sampler: _build_ann_params(sampler, cfg), key, dtype or jnp.float32)


def _build_ann_params(sampler, cfg: ModelConfig) -> dict:
    c0 = cfg.ann_widths[0]
    params = {
        "conv1": init_conv(sampler, 7, cfg.ann_in_channels, c0, bias=True),
        "conv2": init_conv(sampler, 7, c0, c0, bias=True),
    }
    for name, (cin, cout, k) in ann_blocks(cfg).items():
        second_in = 2 * cout if name.startswith("up") else cout  # up blocks concatenate the skip
        params[name] = {"conv1": init_conv(sampler, k, cin, cout, bias=True),
                        "conv2": init_conv(sampler, k, second_in, cout, bias=True)}
    params["conv3"] = init_conv(sampler, 3, c0, cfg.num_joints, bias=True)
    return params


def ann_forward(params: dict, x: jax.Array, *, operand_dtype=None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``[B, H, W, Cin] -> (heatmaps [B, H, W, J], features)``; features are named by :data:`ANN_FEATURES`.

    ``operand_dtype``: mixed precision of every convolution (:func:`hybridjax.models.layers.conv2d`).
    """
    def conv(x, p):
        return conv2d(x, p, operand_dtype=operand_dtype)

    def down(x, p):
        x = leaky_relu(conv(avg_pool2(x), p["conv1"]))
        return leaky_relu(conv(x, p["conv2"]))

    def up(x, skip, p):
        x = leaky_relu(conv(upsample_bilinear2x(x), p["conv1"]))
        return leaky_relu(conv(jax.numpy.concatenate([x, skip], axis=-1), p["conv2"]))

    feats = {}
    x = leaky_relu(conv(x, params["conv1"]))
    x = feats["conv2"] = leaky_relu(conv(x, params["conv2"]))
    for i in range(1, 6):
        x = down(x, params[f"down{i}"])
        if i < 5:
            feats[f"down{i}"] = x
    skips = (feats["down4"], feats["down3"], feats["down2"], feats["down1"], feats["conv2"])
    for i, skip in enumerate(skips, start=1):
        x = feats[f"up{i}"] = up(x, skip, params[f"up{i}"])
    return conv(x, params["conv3"]), feats
