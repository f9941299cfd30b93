"""State initialisers: small conv heads that map ANN feature maps to the SNN's initial membranes.

One per LIF layer: ``[bilinear x2 when the ANN map has half the resolution] -> conv1x1 -> BN ->
LeakyReLU(0.1) -> conv1x1 -> BN``. The table of which ANN map feeds which LIF layer is
:data:`INITIALISER_SOURCES` (official ``states_in``, ``states_1`` .. ``states_8``).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hybridjax.models.config import ModelConfig
from hybridjax.models.layers import (
    batch_norm,
    conv2d,
    init_bn,
    init_conv,
    leaky_relu,
    sample_params,
    upsample_bilinear2x,
)

# LIF layer -> (ANN feature it reads, official initialiser name, official v_init key)
INITIALISER_SOURCES: dict[str, tuple[str, str, str]] = {
    "static": ("conv2", "states_in", "v_in"),
    "down1": ("down1", "states_1", "v_1"),
    "down2": ("down2", "states_2", "v_2"),
    "down3": ("down3", "states_3", "v_3"),
    "res1": ("up1", "states_4", "v_4"),
    "res2": ("up2", "states_5", "v_5"),
    "up1": ("up3", "states_6", "v_6"),
    "up2": ("up4", "states_7", "v_7"),
    "up3": ("up5", "states_8", "v_8"),
}


def ann_feature_channels(cfg: ModelConfig) -> dict[str, int]:
    """Channels of every ANN feature map an initialiser reads."""
    c = cfg.ann_widths
    return {"conv2": c[0], "down1": c[1], "down2": c[2], "down3": c[3], "down4": c[4],
            "up1": c[4], "up2": c[3], "up3": c[2], "up4": c[1], "up5": c[0]}


def init_initialiser_params(key: jax.Array, cfg: ModelConfig, lif_channels: dict[str, int], dtype=None
                            ) -> tuple[dict, dict]:
    """Parameters and BatchNorm statistics of the nine state initialisers."""
    return sample_params(lambda sampler: _build(sampler, cfg, lif_channels), key, dtype or jnp.float32)


def _build(sampler, cfg: ModelConfig, lif_channels: dict[str, int]) -> tuple[dict, dict]:
    feat_ch = ann_feature_channels(cfg)
    params, stats = {}, {}
    for layer, (feature, _, _) in INITIALISER_SOURCES.items():
        cout = lif_channels[layer]
        bn1, s1 = init_bn(cout)
        bn2, s2 = init_bn(cout)
        params[layer] = {"conv1": init_conv(sampler, 1, feat_ch[feature], cout, bias=True),
                         "bn1": bn1,
                         "conv2": init_conv(sampler, 1, cout, cout, bias=True),
                         "bn2": bn2}
        stats[layer] = {"bn1": s1, "bn2": s2}
    return params, stats


def initial_states(params: dict, stats: dict, features: dict[str, jax.Array], target_shapes: dict,
                   *, train: bool, bn_axis_name: str | None = None, operand_dtype=None
                   ) -> tuple[dict[str, jax.Array], dict]:
    """``{LIF layer: v_init [B, h, w, c]}`` and the BatchNorm batch statistics (train) or ``stats`` (eval).

    ``target_shapes[layer]`` is the membrane's ``(h, w)``; an ANN map of half that size is upsampled.
    ``bn_axis_name``: synchronise train-mode BatchNorm statistics over this pmap axis
    (:attr:`ModelConfig.batch_norm_axis_name`; see :func:`hybridjax.models.layers.batch_norm`).
    ``operand_dtype``: mixed precision of the convolutions (:func:`hybridjax.models.layers.conv2d`).
    """
    v_init, batch_stats = {}, {}
    for layer, (feature, _, _) in INITIALISER_SOURCES.items():
        x = features[feature]
        h, w = target_shapes[layer]
        if x.shape[-3:-1] == (h // 2, w // 2):
            x = upsample_bilinear2x(x)
        elif x.shape[-3:-1] != (h, w):
            raise ValueError(f"initialiser {layer}: ANN map {feature} has shape {x.shape}, membrane is {(h, w)}")
        p, s = params[layer], stats[layer]
        y, b1 = batch_norm(conv2d(x, p["conv1"], operand_dtype=operand_dtype), p["bn1"], s["bn1"], train=train,
                           reduce_axes=(0, 1, 2), axis_name=bn_axis_name)
        y, b2 = batch_norm(conv2d(leaky_relu(y), p["conv2"], operand_dtype=operand_dtype), p["bn2"], s["bn2"],
                           train=train, reduce_axes=(0, 1, 2), axis_name=bn_axis_name)
        v_init[layer] = y
        batch_stats[layer] = {"bn1": b1, "bn2": b2}
    return v_init, batch_stats
