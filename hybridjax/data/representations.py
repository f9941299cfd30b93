"""Event representations: dense tensors from event slices, in hybridjax layout ``[bins, H, W, 2]``.

All functions take 0-based pixel coordinates ``x`` (column) and ``y`` (row) on the sensor, polarity ``p`` in
{0, 1} and integer timestamps ``t`` (any unit), and return float32 arrays. Counting is vectorised with
``np.bincount``; events outside the crop are dropped (that *is* the crop). ``crop = (row0, col0, height,
width)`` selects rows ``row0 .. row0 + height - 1`` and columns ``col0 .. col0 + width - 1``; the result is
the same as building the full-sensor histogram and slicing it, which is what the official loaders do.
"""
from __future__ import annotations

import numpy as np

# DHP19 (DAVIS346): the sensor is 260 rows x 346 columns; the networks see rows 2..257, columns 34..289.
DHP19_SENSOR_HW = (260, 346)
DHP19_CROP = (2, 34, 256, 256)
# Constant-count ANN input: this many events, this many bins per polarity (so 2 * 10 = 20 channels).
ANN_EVENT_COUNT = 7500
ANN_BINS = 10


def _cropped_pixel_index(x, y, crop):
    """Flat pixel index ``row * width + col`` inside the crop, and the mask of events that lie inside it."""
    row0, col0, height, width = crop
    rows = np.asarray(y, dtype=np.int64) - row0
    cols = np.asarray(x, dtype=np.int64) - col0
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    return rows * width + cols, inside


def _check_slice(x, y, p, t):
    if not (len(x) == len(y) == len(p) == len(t)):
        raise ValueError(f"event arrays differ in length: x {len(x)}, y {len(y)}, p {len(p)}, t {len(t)}")
    if not np.issubdtype(np.asarray(t).dtype, np.integer):
        raise ValueError(f"timestamps must be integers, got dtype {np.asarray(t).dtype}")


def _scatter_counts(flat: np.ndarray, size: int) -> np.ndarray:
    """``np.bincount(flat, minlength=size)`` as float32, without the int64 intermediate for sparse input.

    A window holds far fewer events than the tensor has cells, so sorting the few indices and writing the
    run lengths into a zeroed float32 array moves much less memory than a dense int64 count + cast.
    """
    if flat.size * 8 >= size:
        return np.bincount(flat, minlength=size).astype(np.float32)
    out = np.zeros(size, dtype=np.float32)
    if flat.size:
        ordered = np.sort(flat)
        starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
        out[ordered[starts]] = np.diff(np.append(starts, ordered.size))
    return out


def _count(bin_index, pixel_index, polarity, keep, n_bins, crop, bins_last: bool = False) -> np.ndarray:
    """Counts of the kept events -> float32 ``[n_bins, H, W, 2]`` (or ``[H, W, 2, n_bins]`` if ``bins_last``)."""
    _, _, height, width = crop
    bins, pixels, pols = bin_index[keep], pixel_index[keep], np.asarray(polarity)[keep]
    if bins_last:
        flat = (pixels * 2 + pols) * n_bins + bins
        return _scatter_counts(flat, n_bins * height * width * 2).reshape(height, width, 2, n_bins)
    flat = (bins * (height * width) + pixels) * 2 + pols
    return _scatter_counts(flat, n_bins * height * width * 2).reshape(n_bins, height, width, 2)


def span_bin_index(t, n_bins: int) -> np.ndarray:
    """Bin of each event when the slice's own time span is cut into ``n_bins`` equal fractions.

    ``bin = min(floor((t - t_first) / (t_last - t_first) * n_bins), n_bins - 1)`` with ``t_first = t[0]`` and
    ``t_last = t[-1]`` (the slice is assumed sorted). The arithmetic is float32, as in the official PyTorch
    code (integer tensors divided with ``/`` give float32), so that events on a bin boundary land in the
    same bin. When ``t_last == t_first`` (one event, or all events in one timestamp) the official code
    divides by zero; here every event goes to bin 0, which is the limit of the formula.
    """
    t = np.asarray(t)
    if t.size == 0:
        return np.zeros(0, dtype=np.int64)
    span = int(t[-1]) - int(t[0])
    if span == 0:
        return np.zeros(t.shape, dtype=np.int64)
    offsets = (t.astype(np.int64) - np.int64(t[0])).astype(np.float32)
    scaled = (offsets / np.float32(span)) * np.float32(n_bins)
    return np.minimum(np.floor(scaled).astype(np.int64), n_bins - 1)


def stacked_histogram(x, y, p, t, n_bins: int, crop=DHP19_CROP) -> np.ndarray:
    """Stacked histogram over the slice's own time span (the official representation).

    Returns float32 ``[n_bins, H, W, 2]``: ``out[b, r, c, q]`` = number of events with polarity ``q`` at crop
    pixel ``(r, c)`` whose :func:`span_bin_index` is ``b``. An empty slice gives zeros.
    """
    _check_slice(x, y, p, t)
    bins = span_bin_index(t, n_bins)
    pixel, inside = _cropped_pixel_index(x, y, crop)
    return _count(bins, pixel, np.asarray(p, dtype=np.int64), inside, n_bins, crop)


def fixed_time_histogram(
    x, y, p, t, t_start: int, bin_length: int, n_bins: int, crop=DHP19_CROP
) -> np.ndarray:
    """Histogram with bins of exact length: ``bin = floor((t - t_start) / bin_length)``.

    Unlike :func:`stacked_histogram` the bins are fixed in absolute time (e.g. exactly 1 ms each), so the
    SNN sees a constant time step. Every event must fall in ``[t_start, t_start + n_bins * bin_length)``;
    an event outside means the caller read the wrong slice, which raises a ValueError.
    """
    _check_slice(x, y, p, t)
    if bin_length <= 0 or n_bins <= 0:
        raise ValueError(f"bin_length ({bin_length}) and n_bins ({n_bins}) must be positive")
    offsets = np.asarray(t, dtype=np.int64) - np.int64(t_start)
    bins = offsets // np.int64(bin_length)
    if bins.size and (bins[0] < 0 or bins.min() < 0 or bins.max() >= n_bins):
        raise ValueError(
            f"events at t in [{int(np.min(t))}, {int(np.max(t))}] fall outside the binned interval "
            f"[{t_start}, {t_start + n_bins * bin_length})"
        )
    pixel, inside = _cropped_pixel_index(x, y, crop)
    return _count(bins, pixel, np.asarray(p, dtype=np.int64), inside, n_bins, crop)


def voxel_grid(x, y, p, t, n_bins: int, crop=DHP19_CROP, t_range=None) -> np.ndarray:
    """Polarity-separated voxel grid, bilinear in time.

    Each event's time is mapped to ``tau = (n_bins - 1) * (t - t0) / (t1 - t0)`` (``(t0, t1)`` = ``t_range``
    or the slice's first and last timestamps) and its unit weight is split between bins ``floor(tau)`` and
    ``floor(tau) + 1`` with weights ``1 - (tau - floor(tau))`` and ``tau - floor(tau)``. Polarities keep
    separate channels (``[n_bins, H, W, 2]``) so the result drops into the same slot as a histogram; the
    values sum to the event count. With ``t1 == t0`` all weight goes to bin 0.
    """
    _check_slice(x, y, p, t)
    t = np.asarray(t, dtype=np.int64)
    pixel, inside = _cropped_pixel_index(x, y, crop)
    _, _, height, width = crop
    out = np.zeros(n_bins * height * width * 2, dtype=np.float64)
    if t.size == 0:
        return out.astype(np.float32).reshape(n_bins, height, width, 2)
    t0, t1 = (int(t[0]), int(t[-1])) if t_range is None else (int(t_range[0]), int(t_range[1]))
    if t1 > t0:
        tau = (n_bins - 1) * (t - t0).astype(np.float64) / float(t1 - t0)
    else:
        tau = np.zeros(t.shape, dtype=np.float64)
    lower = np.floor(tau).astype(np.int64)
    frac = tau - lower
    polarity = np.asarray(p, dtype=np.int64)
    for bin_index, weight in ((lower, 1.0 - frac), (lower + 1, frac)):
        keep = inside & (bin_index >= 0) & (bin_index < n_bins)
        flat = (bin_index[keep] * (height * width) + pixel[keep]) * 2 + polarity[keep]
        out += np.bincount(flat, weights=weight[keep], minlength=out.size)
    return out.astype(np.float32).reshape(n_bins, height, width, 2)


def ann_frame(x, y, p, t, n_bins: int = ANN_BINS, crop=DHP19_CROP) -> np.ndarray:
    """Constant-count ANN input: the stacked histogram as channels ``[H, W, 2 * n_bins]``.

    Channel order is polarity 0 bins ``0..n-1`` then polarity 1 bins ``0..n-1`` (the official 20-channel
    order, which the converted U-Net weights expect).
    """
    _check_slice(x, y, p, t)
    bins = span_bin_index(t, n_bins)
    pixel, inside = _cropped_pixel_index(x, y, crop)
    counts = _count(bins, pixel, np.asarray(p, dtype=np.int64), inside, n_bins, crop, bins_last=True)
    return counts.reshape(crop[2], crop[3], 2 * n_bins)  # [H, W, 2, n] -> channel = polarity * n + bin
