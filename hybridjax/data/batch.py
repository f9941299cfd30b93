"""The one batch format: the fields and their layouts, collation (with padding), pooling and device shards.

Every loader, step and evaluation reads batches in this format (:mod:`hybridjax.layout`):

* time-major fields (``events [T, B, H, W, 2]``, ``landmarks [T, B, J, 2]``, ``joints_3d [T, B, J, 3]``,
  ``ann_label_inputs [L, B, H, W, 20]``) are stacked on axis 1 when the items are sequences; a frame
  dataset's ``landmarks [J, 2]`` stay batch-major ``[B, J, 2]`` (told apart by the item's rank);
* shared fields (``step_has_label [T]``) are one value for the whole batch, checked equal across items;
* every other array is stacked on axis 0 -> ``[B, ...]``; strings become lists;
* pixel fields (``events``, ``ann_input``, ``ann_input_next``, ``ann_label_inputs``) are sum-pooled over
  ``downsample x downsample`` blocks (the event counts of a coarser sensor); landmarks stay in pixels of
  the 256 crop;
* float64 arrays become float32;
* ``collate(..., pad_to=B)`` repeats the last item up to ``B`` and adds ``is_padding [B]`` (the last
  evaluation batch keeps the shape the jitted function was compiled for).

:func:`shard_for_devices` splits the batch axis of every field for ``jax.pmap`` (the loader already gives
each process its own slice of the global batch, see :mod:`hybridjax.data.loader`).
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Field:
    """How one batch field is laid out."""

    layout: str  # "time_major" ([T, B, ...] for sequences), "batch" ([B, ...]) or "shared" (one for the batch)
    sequence_rank: int | None = None  # time-major fields: the item rank of a sequence (lower rank: a frame)
    pixels: bool = False  # [..., H, W, C] counts that are sum-pooled by the downsample factor


FIELDS = {
    "events": Field("time_major", 4, pixels=True),  # [T, H, W, 2] -> [T, B, H, W, 2] event counts per step
    "landmarks": Field("time_major", 3),  # [T, J, 2] -> [T, B, J, 2] (u, v) pixels, NaN = missing
    "joints_3d": Field("time_major", 3),  # [T, J, 3] -> [T, B, J, 3] mm, NaN = missing
    "ann_label_inputs": Field("time_major", 4, pixels=True),  # [L, H, W, 20] ANN inputs at every label
    "step_has_label": Field("shared"),  # [T] bool, the same for every window of a dataset
    "ann_input": Field("batch", pixels=True),  # [H, W, 20] -> [B, H, W, 20] constant-count ANN input
    "ann_input_next": Field("batch", pixels=True),  # the next window's ANN input (hybrid L_mp target)
    "ann_landmarks": Field("batch"),  # [J, 2] -> [B, J, 2] the label of the ANN input
    "is_padding": Field("batch"),  # [B] bool, added by collate(pad_to=...)
}
BATCH_MAJOR = Field("batch")  # any other field (camera, window_start_ms, recording, ...)


def field(name: str) -> Field:
    """The layout of batch field ``name`` (batch-major unless declared in :data:`FIELDS`)."""
    return FIELDS.get(name, BATCH_MAJOR)


def batch_axis(name: str, value) -> int | None:
    """The batch axis of the collated ``value`` of field ``name`` (None: shared by the batch)."""
    spec = field(name)
    if spec.layout == "shared":
        return None
    if spec.layout == "time_major" and np.ndim(value) == spec.sequence_rank + 1:
        return 1
    return 0


def sum_pool(x: np.ndarray, factor: int, row_axis: int) -> np.ndarray:
    """Sums ``factor x factor`` pixel blocks of the axes ``row_axis`` and ``row_axis + 1``."""
    if factor == 1:
        return x
    shape = x.shape
    h, w = shape[row_axis], shape[row_axis + 1]
    if h % factor or w % factor:
        raise ValueError(f"cannot pool {h}x{w} by {factor}")
    split = shape[:row_axis] + (h // factor, factor, w // factor, factor) + shape[row_axis + 2:]
    return x.reshape(split).sum(axis=(row_axis + 1, row_axis + 3))


def pool_pixels(x: np.ndarray, factor: int) -> np.ndarray:
    """Sums ``[..., H, W, C]`` over ``factor x factor`` pixel blocks."""
    return sum_pool(x, factor, np.ndim(x) - 3)


def collate(items: list[dict], fields=None, *, downsample: int = 1, pad_to: int | None = None) -> dict:
    """Stacks item dicts into one batch (see the module docstring); ``fields`` None = every key of item 0."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    if pad_to is not None:
        if len(items) > pad_to:
            raise ValueError(f"{len(items)} items do not fit a batch padded to {pad_to}")
        padding = [False] * len(items) + [True] * (pad_to - len(items))
        items = [dict(item, is_padding=pad) for item, pad in zip(items + [items[-1]] * (pad_to - len(items)),
                                                                 padding, strict=True)]
        fields = None if fields is None else tuple(fields) + ("is_padding",)
    names = list(items[0]) if fields is None else list(fields)
    return {name: _stack(name, [_get(item, name, position) for position, item in enumerate(items)], downsample)
            for name in names}


def _get(item: dict, name: str, position: int):
    if name not in item:
        raise KeyError(f"batch field {name!r} missing from item {position} (it has {sorted(item)})")
    return item[name]


def _stack(name: str, values: list, downsample: int):
    if isinstance(values[0], str):
        return list(values)
    spec = field(name)
    if spec.layout == "shared":
        first = np.asarray(values[0])
        for position, value in enumerate(values[1:], start=1):
            if not np.array_equal(first, value):
                raise ValueError(f"batch field {name!r} differs between item 0 and item {position}; it must be "
                                 "shared (windows of one dataset have the same step pattern)")
        return first
    stacked = np.stack([np.asarray(value) for value in values])
    if batch_axis(name, stacked) == 1:
        stacked = np.moveaxis(stacked, 0, 1)  # [B, T, ...] -> [T, B, ...]
    if spec.pixels:
        stacked = pool_pixels(stacked, downsample)
    return stacked.astype(np.float32) if stacked.dtype == np.float64 else stacked


def batch_size(batch: dict) -> int:
    """The number of windows (or frames) in ``batch``."""
    for name, value in batch.items():
        if isinstance(value, list):
            return len(value)
        axis = batch_axis(name, value)
        if axis is not None and np.ndim(value) > axis:
            return np.shape(value)[axis]
    raise ValueError("batch has no batched field to read its size from")


def shard_for_devices(batch: dict, num_devices: int) -> dict:
    """Splits the batch axis of every field into ``num_devices`` shards along a new leading device axis.

    ``[B, ...]`` -> ``[D, B / D, ...]``; time-major ``[T, B, ...]`` -> ``[D, T, B / D, ...]``; shared ``[T]``
    -> ``[D, T]`` (repeated); string lists -> ``D`` lists. Raises when B is not a multiple of D.
    """
    sharded = {}
    for name, value in batch.items():
        if isinstance(value, list):
            if len(value) % num_devices:
                raise ValueError(f"batch field {name!r}: {len(value)} entries do not split over {num_devices} "
                                 "devices")
            per = len(value) // num_devices
            sharded[name] = [value[d * per:(d + 1) * per] for d in range(num_devices)]
            continue
        value = np.asarray(value)
        axis = batch_axis(name, value)
        if axis is None:
            sharded[name] = np.broadcast_to(value, (num_devices,) + value.shape)
            continue
        size = value.shape[axis]
        if size % num_devices:
            raise ValueError(f"batch field {name!r}: batch size {size} is not divisible by {num_devices} devices")
        split = value.reshape(value.shape[:axis] + (num_devices, size // num_devices) + value.shape[axis + 1:])
        sharded[name] = np.moveaxis(split, axis, 0)
    return sharded

