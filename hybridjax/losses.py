r"""Training targets and losses of the official recipe (NHWC, time-major).

* Target heatmap: the one-hot joint pixel blurred by a normalised Gaussian (sigma 2, 11 taps on
  x = -5..5, ``k(x) = exp(-x^2 / (2 sigma^2)) / sum``, separable, reflect padding) and divided by its own
  maximum; an all-zero map (missing joint) stays zero.
* Heatmap loss: mean squared error over every element.
* Membrane-potential loss: ``L_mp = mean over the 9 LIF layers of MSE(v_init(next window), V_last)``; the
  target is not detached (gradients reach the state initialisers through both sides).
* Hybrid loss: ``0.95 * mean_over_steps(MSE(out_k, target_k)) + 0.05 * L_mp``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

BLUR_SIGMA = 2.0
BLUR_TAPS = 11
HYBRID_OUT_WEIGHT = 0.95
HYBRID_MP_WEIGHT = 0.05


def gaussian_kernel_1d(sigma: float = BLUR_SIGMA, taps: int = BLUR_TAPS, dtype=jnp.float32) -> jax.Array:
    """``exp(-x^2 / (2 sigma^2))`` on ``x = -(taps//2) .. taps//2``, normalised to sum 1."""
    x = jnp.arange(taps, dtype=dtype) - (taps // 2)
    k = jnp.exp(-jnp.square(x) / (2.0 * sigma * sigma))
    return k / jnp.sum(k)


def _blur_axis(x: jax.Array, kernel: jax.Array, axis: int) -> jax.Array:
    half = kernel.shape[0] // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    xp = jnp.pad(x, pad, mode="reflect")
    n = x.shape[axis]
    return sum(kernel[i] * jax.lax.slice_in_dim(xp, i, i + n, axis=axis) for i in range(kernel.shape[0]))


def gaussian_targets(onehot: jax.Array, sigma: float = BLUR_SIGMA, taps: int = BLUR_TAPS) -> jax.Array:
    """Blurred, max-normalised targets from one-hot maps ``[..., H, W, J]``."""
    kernel = gaussian_kernel_1d(sigma, taps, onehot.dtype)
    blurred = _blur_axis(_blur_axis(onehot, kernel, onehot.ndim - 3), kernel, onehot.ndim - 2)
    peak = jnp.max(blurred, axis=(-3, -2), keepdims=True)
    return jnp.where(peak > 0, blurred / jnp.where(peak > 0, peak, 1.0), 0.0)


def landmarks_to_onehot(landmarks: jax.Array, height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """One-hot maps ``[..., H, W, J]`` from landmarks ``[..., J, 2]`` = (u, v) pixels; NaN or outside -> zeros.

    Coordinates are truncated to integers (the official targets put the one at ``[int(v), int(u)]``).
    """
    u, v = landmarks[..., 0], landmarks[..., 1]
    valid = jnp.isfinite(u) & jnp.isfinite(v) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    ui = jnp.where(valid, u, 0).astype(jnp.int32)
    vi = jnp.where(valid, v, 0).astype(jnp.int32)
    rows = jax.nn.one_hot(vi, height, dtype=dtype)  # [..., J, H]
    cols = jax.nn.one_hot(ui, width, dtype=dtype)  # [..., J, W]
    maps = rows[..., :, None] * cols[..., None, :] * valid[..., None, None].astype(dtype)  # [..., J, H, W]
    return jnp.moveaxis(maps, -3, -1)


def heatmap_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over every element."""
    return jnp.mean(jnp.square(pred - target.astype(pred.dtype)))


def per_step_mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    """``[T]`` MSE of each step of time-major ``[T, ...]`` predictions."""
    return jnp.mean(jnp.square(pred - target.astype(pred.dtype)), axis=tuple(range(1, pred.ndim)))


def masked_step_mean(values: jax.Array, step_mask: jax.Array | None) -> jax.Array:
    """Mean of per-step values over the steps that carry a label (all steps when ``step_mask`` is None)."""
    if step_mask is None:
        return jnp.mean(values)
    mask = step_mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def membrane_loss(v_target: dict, v_last: dict) -> jax.Array:
    """``L_mp``: mean over layers of ``MSE(v_target[layer], v_last[layer])`` (target not detached)."""
    names = sorted(v_last)
    if set(names) != set(v_target):
        raise ValueError(f"membrane_loss: layers differ: {sorted(v_target)} vs {names}")
    return sum(heatmap_mse(v_last[n], v_target[n]) for n in names) / len(names)


def hybrid_loss(heatmaps: jax.Array, targets: jax.Array, v_target: dict, v_last: dict,
                step_mask: jax.Array | None = None, out_weight: float = HYBRID_OUT_WEIGHT,
                mp_weight: float = HYBRID_MP_WEIGHT) -> tuple[jax.Array, dict]:
    """The official hybrid loss ``0.95 * mean_steps(MSE) + 0.05 * L_mp``; returns ``(loss, parts)``.

    heatmaps, targets: ``[T, B, H, W, J]``; step_mask ``[T]`` selects the labelled steps (1 ms steps carry a
    100 Hz label only every 10th step).
    """
    out_loss = masked_step_mean(per_step_mse(heatmaps, targets), step_mask)
    mp_loss = membrane_loss(v_target, v_last)
    return out_weight * out_loss + mp_weight * mp_loss, {"out_loss": out_loss, "mp_loss": mp_loss}


def sequence_loss(heatmaps: jax.Array, targets: jax.Array, step_mask: jax.Array | None = None) -> jax.Array:
    """Pure-SNN loss: mean over labelled steps of the heatmap MSE."""
    return masked_step_mean(per_step_mse(heatmaps, targets), step_mask)


__all__ = [
    "BLUR_SIGMA", "BLUR_TAPS", "gaussian_kernel_1d", "gaussian_targets", "heatmap_mse", "hybrid_loss",
    "landmarks_to_onehot", "masked_step_mean", "membrane_loss", "per_step_mse", "sequence_loss",
]
_ = math
