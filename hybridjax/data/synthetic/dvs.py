"""A vectorised DVS (event camera) simulator on log intensity, plus sensor noise.

Each pixel keeps a reference level ``ref`` of its log intensity ``L = log(I + eps)``. Between two rendered
frames at ``t0`` and ``t0 + dt`` the log intensity is taken to change linearly from ``L0`` to ``L1``. With
ON/OFF contrast thresholds ``C_on``, ``C_off`` (per pixel, drawn around the nominal value) a pixel with
``L1 - ref >= C_on`` crosses the levels ``ref + j C_on`` for ``j = 1 .. k``, ``k = floor((L1 - ref) / C_on)``,
at the interpolated times

    t_j = t0 + (ref + j C_on - L0) / (L1 - L0) * dt  =  a + j * delta,   delta = C_on / (L1 - L0) * dt

(OFF events mirror this with ``-C_off``), and its reference moves to ``ref + k C_on``. Between steps
``ref - C_off < L < ref + C_on`` always holds, so ``t_j`` lies in ``(t0, t0 + dt]``.

Refractory period ``R``: an event less than ``R`` after the pixel's previous *emitted* event is dropped (the
reference still advances, as the pixel's comparator would have reset). Because the crossings of one step
are equally spaced, the greedy rule has a closed form: the first kept crossing is
``j0 = max(1, ceil((t_last + R - a) / delta))`` and then every ``m = max(1, ceil(R / delta))``-th one, so
``n = floor((k - j0) / m) + 1`` events are kept when ``j0 <= k``.

Noise (:func:`noise_events`): background activity as a Poisson process per pixel (random polarity) and a
few hot pixels firing at high Poisson rates with a fixed polarity.
"""
from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class DvsParams:
    """Sensor model parameters (log intensity, microseconds)."""

    threshold: float = 0.2  # nominal contrast threshold in log intensity (both polarities)
    threshold_sigma: float = 0.03  # per-pixel standard deviation of the thresholds (mismatch)
    min_threshold: float = 0.05  # lower clip of the per-pixel thresholds
    refractory_us: float = 500.0  # refractory period after an emitted event
    log_eps: float = 0.02  # L = log(I + log_eps): keeps dark pixels finite and less noisy
    background_rate_hz: float = 0.03  # background-activity noise, events per second per pixel
    hot_pixels: int = 3  # number of hot pixels per camera
    hot_pixel_rate_hz: tuple[float, float] = (20.0, 120.0)  # range of a hot pixel's event rate


def crossing_events(l0, l1, ref, c_on, c_off, last_t, t0: float, dt: float, refractory: float):
    """One linear step of the simulator for flat pixel arrays (see the module docstring).

    Returns ``(pixel, t, polarity, new_ref, new_last_t)``: the events as pixel indices into the input
    arrays, float times (us) and polarity 0/1, sorted by pixel then time, plus the updated state.
    """
    l0 = np.asarray(l0, dtype=np.float64)
    l1 = np.asarray(l1, dtype=np.float64)
    diff = l1 - ref
    on = diff >= c_on
    off = diff <= -c_off
    active = np.flatnonzero(on | off)
    new_ref = np.array(ref, dtype=np.float64, copy=True)
    new_last = np.array(last_t, dtype=np.float64, copy=True)
    if active.size == 0:
        empty = np.zeros(0)
        return active, empty, active.astype(np.uint8), new_ref, new_last
    is_on = on[active]
    threshold = np.where(is_on, c_on[active], c_off[active])
    sign = np.where(is_on, 1.0, -1.0)
    slope = l1[active] - l0[active]  # same sign as the crossing (see the docstring invariant)
    count = np.floor(np.abs(diff[active]) / threshold).astype(np.int64)
    first_time = t0 + (ref[active] - l0[active]) / slope * dt  # a: the time the reference level is passed
    spacing = sign * threshold / slope * dt  # delta > 0
    new_ref[active] = ref[active] + sign * count * threshold
    if refractory > 0:
        first = np.maximum(1, np.ceil((last_t[active] + refractory - first_time) / spacing - 1e-9)).astype(np.int64)
        stride = np.maximum(1, np.ceil(refractory / spacing - 1e-9)).astype(np.int64)
    else:
        first = np.ones_like(count)
        stride = np.ones_like(count)
    kept = np.where(first <= count, (count - first) // stride + 1, 0)
    last_index = first + (kept - 1) * stride
    has = kept > 0
    new_last[active[has]] = first_time[has] + last_index[has] * spacing[has]
    total = int(kept.sum())
    owner = np.repeat(np.arange(active.size), kept)
    rank = np.arange(total) - np.repeat(np.cumsum(kept) - kept, kept)
    crossing = first[owner] + rank * stride[owner]
    times = first_time[owner] + crossing * spacing[owner]
    return active[owner], times, is_on[owner].astype(np.uint8), new_ref, new_last


class EventSimulator:
    """Full-sensor state of one camera; feed it log-intensity patches frame by frame."""

    def __init__(self, initial_grey: np.ndarray, params: DvsParams, rng: np.random.Generator):
        self.params = params
        self.shape = initial_grey.shape
        self.log_intensity = np.log(initial_grey + params.log_eps)
        size = initial_grey.shape
        spread = params.threshold_sigma
        self.c_on = np.maximum(params.min_threshold, params.threshold + spread * rng.standard_normal(size))
        self.c_off = np.maximum(params.min_threshold, params.threshold + spread * rng.standard_normal(size))
        # Random initial residuals desynchronise the pixels (real sensors start at arbitrary levels).
        self.ref = self.log_intensity + rng.uniform(-0.45, 0.45, size) * np.minimum(self.c_on, self.c_off)
        self.last_t = np.full(size, -np.inf)
        self._pixels, self._times, self._polarity = [], [], []

    def log(self, grey: np.ndarray) -> np.ndarray:
        """The simulator's log intensity ``log(I + eps)`` of grey levels."""
        return np.log(grey + np.asarray(self.params.log_eps, dtype=grey.dtype))

    def step(self, t0: float, dt: float, region: tuple, grey_patch: np.ndarray, log_patch=None) -> None:
        """Advances from ``t0`` to ``t0 + dt`` where ``region`` = (r0, r1, c0, c1) took the new grey levels.

        ``log_patch`` (optional) is ``self.log(grey_patch)`` computed by the caller for many frames at once.
        """
        r0, r1, c0, c1 = region
        if r0 >= r1 or c0 >= c1:
            return
        window = (slice(r0, r1), slice(c0, c1))
        new_log = self.log(grey_patch) if log_patch is None else log_patch
        diff = new_log - self.ref[window]
        # Only pixels past a threshold take part (the closed form of crossing_events on a gathered subset).
        rows, cols = np.nonzero((diff >= self.c_on[window]) | (diff <= -self.c_off[window]))
        if rows.size:
            rows += r0
            cols += c0
            pixel, times, polarity, ref, last = crossing_events(
                self.log_intensity[rows, cols], new_log[rows - r0, cols - c0], self.ref[rows, cols],
                self.c_on[rows, cols], self.c_off[rows, cols], self.last_t[rows, cols],
                t0, dt, self.params.refractory_us)
            self.ref[rows, cols] = ref
            self.last_t[rows, cols] = last
            self._pixels.append(rows[pixel] * self.shape[1] + cols[pixel])
            self._times.append(times)
            self._polarity.append(polarity)
        self.log_intensity[window] = new_log

    def step_many(self, t0: float, dt: float, region: tuple, log_patches: np.ndarray) -> None:
        """K consecutive steps ``t0 + k dt -> t0 + (k + 1) dt`` on one region, given log patches ``(K, h, w)``.

        Equivalent to K calls of :meth:`step`, but only pixels that pass a threshold at some frame of the
        chunk (against their reference at the chunk start) are stepped; the others cannot fire, because a
        pixel's reference only moves when it crosses a level.
        """
        r0, r1, c0, c1 = region
        if r0 >= r1 or c0 >= c1:
            return
        window = (slice(r0, r1), slice(c0, c1))
        diff = log_patches - self.ref[window]
        candidate = (diff.max(axis=0) >= self.c_on[window]) | (diff.min(axis=0) <= -self.c_off[window])
        rows, cols = np.nonzero(candidate)
        if rows.size:
            levels = log_patches[:, rows, cols]
            rows += r0
            cols += c0
            previous = self.log_intensity[rows, cols]
            ref, last = self.ref[rows, cols], self.last_t[rows, cols]
            c_on, c_off = self.c_on[rows, cols], self.c_off[rows, cols]
            flat = rows * self.shape[1] + cols
            for k in range(levels.shape[0]):
                pixel, times, polarity, ref, last = crossing_events(
                    previous, levels[k], ref, c_on, c_off, last, t0 + k * dt, dt, self.params.refractory_us)
                previous = levels[k]
                if pixel.size:
                    self._pixels.append(flat[pixel])
                    self._times.append(times)
                    self._polarity.append(polarity)
            self.ref[rows, cols] = ref
            self.last_t[rows, cols] = last
        self.log_intensity[window] = log_patches[-1]

    def events(self):
        """All events so far as ``(flat pixel index, time us float, polarity uint8)``, in step order."""
        if not self._pixels:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.uint8)
        return np.concatenate(self._pixels), np.concatenate(self._times), np.concatenate(self._polarity)


def noise_events(rng: np.random.Generator, params: DvsParams, duration_us: float, shape: tuple):
    """Background-activity and hot-pixel events ``(flat pixel, time us float, polarity)`` over the recording."""
    num_pixels = shape[0] * shape[1]
    count = int(rng.poisson(params.background_rate_hz * num_pixels * duration_us * 1e-6))
    pixels = [rng.integers(0, num_pixels, count)]
    times = [rng.uniform(0.0, duration_us, count)]
    polarity = [rng.integers(0, 2, count).astype(np.uint8)]
    for _ in range(params.hot_pixels):
        rate = rng.uniform(*params.hot_pixel_rate_hz)
        hot_count = int(rng.poisson(rate * duration_us * 1e-6))
        pixels.append(np.full(hot_count, rng.integers(0, num_pixels)))
        times.append(rng.uniform(0.0, duration_us, hot_count))
        polarity.append(np.full(hot_count, rng.integers(0, 2), dtype=np.uint8))
    return np.concatenate(pixels), np.concatenate(times), np.concatenate(polarity)
