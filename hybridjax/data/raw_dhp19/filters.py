"""The event filters of DHP19's ``extract_from_aedat.m`` (SensorsINI/DHP19), re-implemented from their rules.

They work on the four cameras side by side, as the MATLAB code does: ``X = (346 - x_raw) + 346 * camera``
in 1..1384 and ``y = 260 - y_raw`` in 1..260 (1-based, flipped), timestamps in raw microseconds, events in
file order. Applied in this order to the events of the cut, after the out-of-range ones are gone:

1. Hot pixels (``HotPixelFilter.m``): every event of a pixel with ``>= 10 000`` events in the cut is removed.
2. Background activity (``BackgroundFilter.m``, ``dt = 70 ms``): a map ``last[X, y]`` starts at 0. For each
   event in file order: it is removed if ``t - last[X, y] > dt`` (the MATLAB difference is uint32, so an
   earlier map time than ``t`` never removes); then, unless the event is on the border of the 1384 x 260
   image (``X`` in {1, 1384} or ``y`` in {1, 260}), its 8 neighbours (not the pixel itself) get
   ``last = t``. Removed events update the map too. The neighbourhood crosses camera seams (camera c's
   column 346 touches camera c + 1's column 1), as in the MATLAB image.
3. IR-reflection masks (``maskRegionFilter.m``, strict inequalities): events with ``780 < X < 810`` and
   ``115 < y < 145`` (camera channel 2, x 89..117, y 116..144) and with ``1252 < X < 1259`` and
   ``136 < y < 144`` (channel 3, x 215..220, y 137..143) are removed.

Each function returns a boolean *keep* mask over its input.
"""
from __future__ import annotations

import numpy as np

SENSOR_WIDTH = 346
SENSOR_HEIGHT = 260
NUM_CAMERAS = 4
IMAGE_WIDTH = SENSOR_WIDTH * NUM_CAMERAS  # the four cameras side by side
HOT_PIXEL_THRESHOLD = 10_000  # events per pixel (thrEventHotPixel)
BACKGROUND_DT_US = 70_000  # dt of the background-activity filter
# (xmin, xmax, ymin, ymax) on the side-by-side image, exclusive bounds (Generate_DHP19.m's masks).
IR_MASKS = {
    "ir_mask_channel2": (780, 810, 115, 145),
    "ir_mask_channel3": (SENSOR_WIDTH * 3 + 214, SENSOR_WIDTH * 3 + 221, 136, 144),
}
_NEIGHBOURS = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if (dx, dy) != (0, 0)]


def side_by_side_x(camera: np.ndarray, x_raw: np.ndarray) -> np.ndarray:
    """``X = (346 - x_raw) + 346 * camera`` (1-based)."""
    return (SENSOR_WIDTH - np.asarray(x_raw, dtype=np.int64)) + SENSOR_WIDTH * np.asarray(camera, dtype=np.int64)


def hot_pixel_keep(x: np.ndarray, y: np.ndarray, threshold: int = HOT_PIXEL_THRESHOLD) -> np.ndarray:
    """False for every event of a pixel that has at least ``threshold`` events."""
    pixel = (np.asarray(x, dtype=np.int64) - 1) * SENSOR_HEIGHT + (np.asarray(y, dtype=np.int64) - 1)
    counts = np.bincount(pixel, minlength=IMAGE_WIDTH * SENSOR_HEIGHT)
    return counts[pixel] < threshold


def background_activity_keep(x: np.ndarray, y: np.ndarray, t: np.ndarray, dt: int = BACKGROUND_DT_US,
                             chunk: int = 1 << 22) -> np.ndarray:
    """The background-activity filter (module docstring), vectorised.

    The map value event ``i`` at pixel ``p`` reads was written by the latest earlier event (file order) at
    one of the 8 neighbours ``q`` of ``p`` that is not on the border. With the events sorted by
    (pixel, index), the latest event at ``q`` before ``i`` is a binary search for (q, i); taken in that
    sorted order the searches for one neighbour offset are ascending, which keeps them fast. The latest over
    the 8 neighbours gives the time read (0 when there is none). Searches run in blocks of ``chunk`` events.
    """
    x = np.asarray(x, dtype=np.int64) - 1
    y = np.asarray(y, dtype=np.int64) - 1
    t = np.asarray(t, dtype=np.int64)
    size = t.size
    keys = (x * SENSOR_HEIGHT + y) * size + np.arange(size, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    keep = np.empty(size, dtype=bool)
    for begin in range(0, size, chunk):
        index = order[begin:begin + chunk]  # events in (pixel, index) order
        writer = np.full(index.size, -1, dtype=np.int64)  # latest earlier event that wrote this pixel
        for dx, dy in _NEIGHBOURS:
            qx, qy = x[index] + dx, y[index] + dy
            interior = (qx > 0) & (qx < IMAGE_WIDTH - 1) & (qy > 0) & (qy < SENSOR_HEIGHT - 1)
            pixel = qx * SENSOR_HEIGHT + qy
            found = np.searchsorted(keys, pixel * size + index) - 1
            hit = interior & (found >= 0)
            hit[hit] = keys[found[hit]] // size == pixel[hit]
            writer[hit] = np.maximum(writer[hit], keys[found[hit]] % size)
        seen = np.where(writer >= 0, t[np.maximum(writer, 0)], 0)
        keep[index] = t[index] - seen <= dt
    return keep


def ir_mask_keep(x: np.ndarray, y: np.ndarray, mask: str) -> np.ndarray:
    """False inside the IR-reflection mask ``mask`` (a key of :data:`IR_MASKS`; bounds exclusive)."""
    xmin, xmax, ymin, ymax = IR_MASKS[mask]
    return ~((x > xmin) & (x < xmax) & (y > ymin) & (y < ymax))


def dhp19_filters(camera: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, dict]:
    """All DHP19 filters in order on side-by-side coordinates; ``(keep, removed per filter per camera)``."""
    keep = np.ones(t.size, dtype=bool)
    removed = {}

    def apply(name, keep_subset):
        index = np.flatnonzero(keep)
        dropped = index[~keep_subset]
        keep[dropped] = False
        removed[name] = np.bincount(camera[dropped], minlength=NUM_CAMERAS)[:NUM_CAMERAS].tolist()

    apply("hot_pixel", hot_pixel_keep(x[keep], y[keep]))
    apply("background_activity", background_activity_keep(x[keep], y[keep], t[keep]))
    for mask in IR_MASKS:
        apply(mask, ir_mask_keep(x[keep], y[keep], mask))
    return keep, removed
