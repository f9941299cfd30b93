"""The one array layout of hybridjax, stated once and checked at the boundaries.

* Images and feature maps are NHWC: ``[B, H, W, C]``.
* Sequences are time-major: ``[T, B, H, W, C]`` (T = SNN steps).
* Per-step labels are time-major too: landmarks ``[T, B, J, 2]`` as (u, v) = (column, row) pixels of
  the crop, NaN where a joint is missing; 3-D joints ``[T, B, J, 3]`` in millimetres.
* Heatmaps are ``[B, H, W, J]`` (one channel per joint) or ``[T, B, H, W, J]`` per step.

The official PyTorch code is NCHW and batch-major ``[B, T, C, H, W]``; :func:`from_official_sequence`
and :func:`from_official_image` convert at the boundary.
"""
from __future__ import annotations

import numpy as np

IMAGE = "BHWC"
SEQUENCE = "TBHWC"
# Height and width must be divisible by this: the ANN U-Net halves the resolution five times.
RESOLUTION_MULTIPLE = 32


def check_image(x, name: str, channels: int | None = None) -> None:
    """Raises a ValueError naming ``name`` unless ``x`` is ``[B, H, W, C]`` (with C == channels if given)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected a [B, H, W, C] array, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channels in the last axis (NHWC), got shape {tuple(x.shape)}"
        )


def check_sequence(x, name: str, channels: int | None = None) -> None:
    """Raises a ValueError naming ``name`` unless ``x`` is time-major ``[T, B, H, W, C]``."""
    if x.ndim != 5:
        raise ValueError(f"{name}: expected a time-major [T, B, H, W, C] array, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[-1] != channels:
        raise ValueError(
            f"{name}: expected {channels} channels in the last axis (NHWC), got shape {tuple(x.shape)}"
        )


def check_resolution(height: int, width: int, name: str = "input") -> None:
    """Raises unless both sides are positive multiples of :data:`RESOLUTION_MULTIPLE`."""
    for side, value in (("height", height), ("width", width)):
        if value <= 0 or value % RESOLUTION_MULTIPLE:
            raise ValueError(
                f"{name}: {side} {value} is not a positive multiple of {RESOLUTION_MULTIPLE} "
                "(the ANN U-Net pools five times)"
            )


def from_official_image(x) -> np.ndarray:
    """``[B, C, H, W]`` (PyTorch) -> ``[B, H, W, C]``."""
    return np.moveaxis(np.asarray(x), 1, -1)


def from_official_sequence(x) -> np.ndarray:
    """``[B, T, C, H, W]`` (PyTorch batch-major) -> ``[T, B, H, W, C]``."""
    return np.transpose(np.asarray(x), (1, 0, 3, 4, 2))


def to_official_image(x) -> np.ndarray:
    """``[B, H, W, C]`` -> ``[B, C, H, W]``."""
    return np.moveaxis(np.asarray(x), -1, 1)
