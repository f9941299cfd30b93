"""Prediction and error metrics: argmax landmarks and NaN-aware 2-D MPJPE (pixels of the crop)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def argmax_landmarks(heatmaps: jax.Array) -> jax.Array:
    """``[..., H, W, J] -> [..., J, 2]`` (u, v) = (column, row) of each joint's maximum (first on ties)."""
    *lead, h, w, j = heatmaps.shape
    flat = jnp.moveaxis(heatmaps.reshape(*lead, h * w, j), -1, -2)  # [..., J, H*W]
    idx = jnp.argmax(flat, axis=-1)
    return jnp.stack([idx % w, idx // w], axis=-1).astype(jnp.float32)


def predicted_landmarks(heatmaps: jax.Array, downsample: int = 1) -> jax.Array:
    """Arg-max (u, v) of ``[..., H, W, J]`` heatmaps in full-resolution pixels (centre of a pooled cell).

    ``downsample``: the factor the inputs were sum-pooled by; cell ``k`` covers pixels ``f k .. f k + f - 1``.
    """
    uv = argmax_landmarks(heatmaps)
    if downsample == 1:
        return uv
    return uv * downsample + (downsample - 1) / 2.0


def joint_errors(pred_uv: jax.Array, true_uv: jax.Array) -> jax.Array:
    """Euclidean error per joint ``[..., J]``; NaN where the true joint is missing."""
    return jnp.sqrt(jnp.sum(jnp.square(pred_uv - true_uv), axis=-1))


def mpjpe_2d(pred_uv: jax.Array, true_uv: jax.Array, axis=None) -> jax.Array:
    """Mean per-joint position error over the valid (non-NaN) true joints; NaN if none is valid.

    axis: reduce only these axes of the ``[..., J]`` error array (default: all).
    """
    err = joint_errors(pred_uv, true_uv)
    valid = jnp.isfinite(err)
    total = jnp.sum(jnp.where(valid, err, 0.0), axis=axis)
    count = jnp.sum(valid, axis=axis)
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


def mpjpe_sums(pred_uv: jax.Array, true_uv: jax.Array, axis) -> tuple[jax.Array, jax.Array]:
    """``(sum of valid joint errors, number of valid joints)`` over ``axis``: accumulate these across batches."""
    err = joint_errors(pred_uv, true_uv)
    valid = jnp.isfinite(err)
    return jnp.sum(jnp.where(valid, err, 0.0), axis=axis), jnp.sum(valid, axis=axis)


__all__ = ["argmax_landmarks", "joint_errors", "mpjpe_2d", "mpjpe_sums", "predicted_landmarks"]
