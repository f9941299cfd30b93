r"""Training targets and losses of the official recipe (NHWC, time-major).

* Target heatmap: the one-hot joint pixel blurred by a normalised Gaussian (sigma 2, 11 taps on
  x = -5..5, ``k(x) = exp(-x^2 / (2 sigma^2)) / sum``, separable, reflect padding) and divided by its own
  maximum; an all-zero map (missing joint) stays zero. From landmarks, :func:`landmark_targets` builds the
  same targets separably (outer product of two normalised 1-D blurs) without the full-size 2-D blur.
* Heatmap loss: mean squared error over every element.
* Membrane-potential loss: ``L_mp = mean over the 9 LIF layers of MSE(v_init(next window), V_last)``; the
  target is not detached (gradients reach the state initialisers through both sides).
* Hybrid loss: ``0.95 * mean_over_steps(MSE(out_k, target_k)) + 0.05 * L_mp``.
"""
from __future__ import annotations

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
    return _divide_by_peak(blurred, axis=(-3, -2))


def _divide_by_peak(blurred: jax.Array, axis) -> jax.Array:
    """``blurred / max over axis``; a map whose max is 0 (a missing joint) stays all zero."""
    peak = jnp.max(blurred, axis=axis, keepdims=True)
    return jnp.where(peak > 0, blurred / jnp.where(peak > 0, peak, 1.0), 0.0)


def _landmark_pixels(landmarks: jax.Array, height: int, width: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The pixel rule of the targets: ``(row, column, valid)`` of landmarks ``[..., J, 2]`` = (u, v).

    A joint is valid where both coordinates are finite and ``0 <= u < width``, ``0 <= v < height``; its
    pixel is ``[int(v), int(u)]`` (truncation, as the official targets). Invalid joints get pixel (0, 0)
    and ``valid`` False.
    """
    u, v = landmarks[..., 0], landmarks[..., 1]
    valid = jnp.isfinite(u) & jnp.isfinite(v) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
    ui = jnp.where(valid, u, 0).astype(jnp.int32)
    vi = jnp.where(valid, v, 0).astype(jnp.int32)
    return vi, ui, valid


def landmarks_to_onehot(landmarks: jax.Array, height: int, width: int, dtype=jnp.float32) -> jax.Array:
    """One-hot maps ``[..., H, W, J]`` from landmarks ``[..., J, 2]`` = (u, v) pixels; NaN or outside -> zeros.

    Coordinates are truncated to integers (the official targets put the one at ``[int(v), int(u)]``).
    """
    vi, ui, valid = _landmark_pixels(landmarks, height, width)
    rows = jax.nn.one_hot(vi, height, dtype=dtype)  # [..., J, H]
    cols = jax.nn.one_hot(ui, width, dtype=dtype)  # [..., J, W]
    maps = rows[..., :, None] * cols[..., None, :] * valid[..., None, None].astype(dtype)  # [..., J, H, W]
    return jnp.moveaxis(maps, -3, -1)


def _normalised_blur_1d(onehot: jax.Array, kernel: jax.Array) -> jax.Array:
    """Blur ``[..., N]`` along its last axis (reflect padding) and divide by its max; all-zero stays zero."""
    return _divide_by_peak(_blur_axis(onehot, kernel, onehot.ndim - 1), axis=-1)


def landmark_targets(landmarks: jax.Array, height: int, width: int, sigma: float = BLUR_SIGMA,
                     taps: int = BLUR_TAPS, dtype=jnp.float32) -> jax.Array:
    r"""Blurred, max-normalised targets ``[..., H, W, J]`` straight from landmarks ``[..., J, 2]`` = (u, v).

    Equals ``gaussian_targets(landmarks_to_onehot(landmarks, height, width, dtype), sigma, taps)`` (same
    pixel rule: truncation, NaN or outside -> an all-zero map) without building or blurring the 2-D map.
    The one-hot map of joint j is an outer product ``e_r e_c^T`` of a one-hot row vector
    ``e_r \in R^H`` (1 at ``int(v)``) and column vector ``e_c \in R^W`` (1 at ``int(u)``); the blur is
    separable with reflect padding applied per axis, so

        ``G * (e_r e_c^T) = (g * e_r)(g * e_c)^T``,

    and, all entries being non-negative, ``max(G * (e_r e_c^T)) = max(g * e_r) max(g * e_c)``. Hence

        ``target = [(g * e_r) / max(g * e_r)] [(g * e_c) / max(g * e_c)]^T``,

    two 1-D blurs of length H and W per joint and one broadcasted multiply that writes the output once.
    Matches the 2-D route up to float rounding (~1e-16 in float64, ~1e-7 in float32).
    """
    vi, ui, valid = _landmark_pixels(landmarks, height, width)
    kernel = gaussian_kernel_1d(sigma, taps, dtype)
    present = valid[..., None].astype(dtype)
    rows = _normalised_blur_1d(jax.nn.one_hot(vi, height, dtype=dtype) * present, kernel)  # [..., J, H]
    cols = _normalised_blur_1d(jax.nn.one_hot(ui, width, dtype=dtype) * present, kernel)  # [..., J, W]
    rows = jnp.swapaxes(rows, -1, -2)[..., :, None, :]  # [..., H, 1, J]
    cols = jnp.swapaxes(cols, -1, -2)[..., None, :, :]  # [..., 1, W, J]
    return rows * cols


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
    "landmark_targets", "landmarks_to_onehot", "masked_step_mean", "membrane_loss", "per_step_mse", "sequence_loss",
]
