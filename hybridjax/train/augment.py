"""Data augmentation of ANN training frames on the device: a random mirror and a random shift per frame.

The synthetic training split has few subjects, so each test movement is seen from one or two bodies; the
ANN then learns the training bodies (train error ~half the test error). Mirroring and shifting the frames
multiply the poses and positions it sees at no data cost.

For a frame ``x`` ``[B, H, W, C]`` pooled by ``f`` from the 256-pixel crop and landmarks ``(u, v)`` in crop
pixels (NaN = missing), per frame:

* mirror (probability 1/2): ``x[:, :, ::-1]``; ``u -> f W - 1 - u`` (pooled cell ``k`` goes to ``W - 1 - k``,
  and pixel ``u`` of cell ``k`` to a pixel of cell ``W - 1 - k``); left and right joints swap names
  (:data:`MIRROR_JOINTS`, DHP19 order). Event polarity and time bins are unchanged by a mirror.
* shift by ``(dy, dx)`` pooled pixels, each uniform in ``-s .. s``: ``x'[i, j] = x[i - dy, j - dx]`` with
  zeros shifted in; ``(u, v) -> (u + f dx, v + f dy)``; a joint shifted out of the crop becomes NaN.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# DHP19 joints: head, shoulderR, shoulderL, elbowR, elbowL, hipR, hipL, handR, handL, kneeR, kneeL, footR, footL;
# the index each joint takes in a mirrored frame.
MIRROR_JOINTS = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11)


def _shift(frame: jax.Array, dy: jax.Array, dx: jax.Array, s: int) -> jax.Array:
    """``frame`` [H, W, C] moved by ``(dy, dx)`` pixels, zeros shifted in (``|dy|, |dx| <= s``)."""
    h, w, _ = frame.shape
    padded = jnp.pad(frame, ((s, s), (s, s), (0, 0)))
    return jax.lax.dynamic_slice(padded, (s - dy, s - dx, 0), (h, w, frame.shape[2]))


def mirror_and_shift(rng: jax.Array, x: jax.Array, landmarks: jax.Array, downsample: int, max_shift: int):
    """``(x, landmarks)`` of a batch ``[B, H, W, C]``, ``[B, J, 2]`` mirrored and shifted per frame."""
    batch, height, width, _ = x.shape
    flip_key, shift_key = jax.random.split(rng)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch,))
    shifts = jax.random.randint(shift_key, (batch, 2), -max_shift, max_shift + 1)
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)
    if landmarks.shape[-2] != len(MIRROR_JOINTS):
        raise ValueError(f"mirror_and_shift: needs the {len(MIRROR_JOINTS)} DHP19 joints, got {landmarks.shape}")
    mirrored = landmarks[:, jnp.array(MIRROR_JOINTS)]
    mirrored = mirrored.at[..., 0].set(downsample * width - 1 - mirrored[..., 0])
    landmarks = jnp.where(flip[:, None, None], mirrored, landmarks)
    if max_shift > 0:
        x = jax.vmap(lambda frame, d: _shift(frame, d[0], d[1], max_shift))(x, shifts)
        moved = landmarks + downsample * shifts[:, None, ::-1].astype(landmarks.dtype)  # (dy, dx) -> (u, v)
        inside = ((moved[..., 0] >= 0) & (moved[..., 0] < downsample * width)
                  & (moved[..., 1] >= 0) & (moved[..., 1] < downsample * height))
        landmarks = jnp.where(inside[..., None], moved, jnp.nan)
    return x, landmarks
