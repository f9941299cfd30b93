"""Streaming pose estimation: events in, one pose per completed SNN step out.

:class:`StreamingPoseEstimator` keeps the hybrid's state between calls:

* Events arrive in chunks of any size (``x``, ``y`` 0-based sensor pixels of the DAVIS346 (346 x 260), polarity
  ``p`` in {0, 1}, timestamps ``t`` in microseconds, sorted). Each event is added to the count histogram
  ``[H, W, 2]`` of the step it falls in, ``k = floor((t - t0) / step_us)`` (the loader's exact 1 ms bins,
  :func:`hybridjax.data.representations.fixed_time_histogram`), and to a buffer of the most recent events.
* A step is complete when an event at or after its end arrives (or :meth:`advance_to` says time has passed);
  then the jitted :func:`hybridjax.models.snn_step` updates the membranes and the integrated output
  (state donated, so it is updated in place) and the pose is the arg-max of each joint's heatmap. When one
  call completes several steps (a chunk spanning many milliseconds, or :meth:`advance_to` over a gap), up to
  ``max_steps_per_call`` of them run in one jitted ``lax.scan`` of the same step function: the same
  operations in the same order, so the same poses (tested bit for bit), with less dispatch work per step.
* Every ``reinit_ms`` (100 ms by default) the ANN re-initialises the SNN: its input is the constant-count
  frame of the last 7500 events before that instant (:func:`hybridjax.data.representations.ann_frame`, as the
  data loader builds it), the state initialisers give the membranes and the ANN heatmap the output. The
  first initialisation happens at the first re-initialisation instant with 7500 events before it; no pose is
  produced before.

So the poses of the steps after an initialisation at ``R`` equal what the batched :class:`HybridModel`
predicts for the window that starts at ``R`` (same ANN input, same 1 ms bins), whatever the chunking.

Work per step (batch 1 on a CPU core; numbers in the benchmark notes): the SNN parameters are compile-time
constants of the jitted step (no per-call argument handling), with the eval BatchNorms folded into the convs
and the 2-channel input conv in space-to-depth form (:mod:`hybridjax.runtime.folding`; same function, only
rounding differs: ``StreamingConfig.fold_params``); the arg-max is a max and a masked min-index reduction
(:func:`first_argmax_uv`, cheaper on CPU than ``jnp.argmax``'s variadic reduce); the event histogram of a
step is one ``np.bincount``.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.data import representations as rep
from hybridjax.models import HybridModel, ModelConfig, snn_step
from hybridjax.models.snn_unet import BlockConvs
from hybridjax.runtime.folding import folded_convs, streaming_snn_params

US_PER_MS = 1000


@dataclasses.dataclass(frozen=True)
class StreamingConfig:
    """Timing and input settings of the streaming runtime."""

    reinit_ms: float = 100.0  # ANN re-initialisation period (a whole number of SNN steps)
    origin_us: int = 0  # time of the first possible initialisation; steps and re-inits are aligned to it
    ann_event_count: int = rep.ANN_EVENT_COUNT  # events in the constant-count ANN frame (official 7500)
    ann_bins: int = rep.ANN_BINS  # bins per polarity of the ANN frame (official 10 -> 20 channels)
    crop: tuple[int, int, int, int] = rep.DHP19_CROP  # (row0, col0, height, width) of the network input
    downsample: int = 1  # sum-pool the input by this factor (a model trained on pooled inputs); poses in crop px
    keep_heatmaps: bool = False  # also return each step's heatmaps [H, W, J] (a device -> host copy per step)
    warmup: bool = True  # compile the jitted functions at construction (latencies then exclude compilation)
    # run the SNN with its eval BatchNorms folded into the convs and the input conv in space-to-depth form
    # (hybridjax.runtime.folding: the same function, fewer operations; False = the parameters as trained)
    fold_params: bool = True
    # most steps one jitted call runs when a push / advance_to completes several (a lax.scan over the steps,
    # lengths 1, 2, 4, ... up to this, each compiled once); 1 = always one step per call
    max_steps_per_call: int = 8
    sensor_hw: tuple[int, int] = rep.DHP19_SENSOR_HW  # (rows, columns) of the sensor; x, y must lie inside
    # what push() does with a chunk holding an invalid event (polarity not 0/1, x/y outside the sensor, a
    # timestamp before the origin or before an earlier event): "raise" a ValueError naming the first one and
    # keep nothing of the chunk, or "drop" those events, keep the rest and count them in
    # StreamingPoseEstimator.dropped_events
    on_invalid: str = "raise"


@dataclasses.dataclass
class PoseEstimate:
    """The pose after one completed SNN step."""

    step_end_us: int  # end of the step (exclusive) in the stream's microseconds
    uv: np.ndarray  # [J, 2] (u, v) = (column, row) in crop pixels (full resolution)
    heatmap_argmax: np.ndarray  # [J, 2] (row, column) of each joint's maximum on the network's grid
    steps_since_init: int  # 1 for the first step after an ANN (re-)initialisation
    heatmap: np.ndarray | None = None  # [H, W, J] when StreamingConfig.keep_heatmaps


class StreamingPoseEstimator:
    """Runs a trained hybrid on an event stream, one SNN step at a time (see the module docstring).

    variables: the hybrid's variables ``{"params": {"ann", "initialisers", "snn"}, "batch_stats": ...}``;
    config: its :class:`ModelConfig` (``step_ms`` sets the step length; ``snn_mode`` does not matter here).
    """

    def __init__(self, variables: dict, config: ModelConfig, streaming: StreamingConfig | None = None):
        self.config = config
        self.streaming = streaming = streaming or StreamingConfig()
        self.step_us = int(round(config.step_ms * US_PER_MS))
        if self.step_us <= 0 or abs(self.step_us - config.step_ms * US_PER_MS) > 1e-6:
            raise ValueError(f"ModelConfig.step_ms {config.step_ms} must be a positive whole number of microseconds")
        reinit_us = streaming.reinit_ms * US_PER_MS
        if reinit_us <= 0 or reinit_us % self.step_us:
            raise ValueError(f"StreamingConfig.reinit_ms {streaming.reinit_ms} must be a positive multiple of the "
                             f"step ({config.step_ms} ms)")
        self.steps_per_init = int(reinit_us // self.step_us)
        row0, col0, height, width = streaming.crop
        f = streaming.downsample
        if f < 1 or height % f or width % f:
            raise ValueError(f"StreamingConfig.downsample {f} must divide the crop {height}x{width}")
        self.grid_hw = (height // f, width // f)
        if streaming.on_invalid not in ("raise", "drop"):
            raise ValueError(f"StreamingConfig.on_invalid must be 'raise' or 'drop', got {streaming.on_invalid!r}")
        if streaming.max_steps_per_call < 1:
            raise ValueError(f"StreamingConfig.max_steps_per_call must be >= 1, got {streaming.max_steps_per_call}")
        self.variables = jax.device_put(variables)
        model = HybridModel(config)

        def ann_init(variables, ann_input):
            # (membranes, output) for a batch of one: the state initialisers' v_init and the ANN heatmap.
            return model.apply(variables, ann_input[None], method=HybridModel.ann_init)

        snn_params, snn_stats = self.variables["params"]["snn"], self.variables["batch_stats"]["snn"]
        convs = BlockConvs.of(config)
        if streaming.fold_params:
            snn_params, snn_stats = streaming_snn_params(snn_params, snn_stats, space_to_depth=("static",))
            convs = folded_convs(config, space_to_depth=("static",))
        keep = streaming.keep_heatmaps

        def step(state, events_t):
            # The parameters are closed over: compile-time constants of the jitted step.
            (v, out), _ = snn_step(convs.prepare(snn_params), snn_stats, state, events_t[None], config,
                                   pure_snn=False, convs=convs)
            return (v, out), (first_argmax_uv(out[0]), out[0] if keep else None)

        def steps(state, events):
            return jax.lax.scan(step, state, events)

        self._ann_init = jax.jit(ann_init)
        self._step = jax.jit(step, donate_argnums=(0,))
        self._steps = jax.jit(steps, donate_argnums=(0,))  # one compilation per scan length (powers of two)
        self._scan_lengths = [2 ** i for i in range(1, streaming.max_steps_per_call.bit_length())
                              if 2 ** i <= streaming.max_steps_per_call]
        if streaming.warmup:  # with the argument types the stream passes (numpy), so nothing recompiles later
            frame = jnp.asarray(np.zeros(self.grid_hw + (2 * streaming.ann_bins,), np.float32))
            jax.block_until_ready(self._step(self._ann_init(self.variables, frame),
                                             np.zeros(self.grid_hw + (2,), np.float32)))
            for n in self._scan_lengths:
                jax.block_until_ready(self._steps(self._ann_init(self.variables, frame),
                                                  np.zeros((n,) + self.grid_hw + (2,), np.float32)))
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forgets every event and the SNN state (the next poses wait for a new ANN initialisation)."""
        self._recent = _EventBuffer(self.streaming.ann_event_count)  # the latest events (ANN input)
        self._counts = np.zeros(self.grid_hw + (2,), np.float32)  # histogram of the step being filled
        self._state = None  # (membranes, output) on the device once initialised
        self._step_index = 0  # index (from origin) of the step being filled
        self._steps_since_init = 0
        self.ann_latency_s: list[float] = []  # wall time of each ANN initialisation (jitted, synchronous)
        # wall time of each SNN step update (jitted, synchronous; a call running n steps counts 1/n per step)
        self.step_latency_s: list[float] = []
        self.steps_per_call: list[int] = []  # steps run by each jitted SNN call, in order
        self.dropped_events = 0  # invalid events removed by push() with StreamingConfig.on_invalid="drop"

    @property
    def initialised(self) -> bool:
        return self._state is not None

    @property
    def heatmap(self) -> np.ndarray | None:
        """The current integrated heatmaps ``[H, W, J]`` (None before the first initialisation)."""
        return None if self._state is None else np.asarray(self._state[1][0])

    def _step_end_us(self, index: int) -> int:
        return self.streaming.origin_us + (index + 1) * self.step_us

    # ------------------------------------------------------------------ input
    def push(self, x, y, p, t) -> list[PoseEstimate]:
        """Adds a chunk of events (sorted by ``t``, not before earlier chunks); returns the completed steps.

        Every event is checked first (see ``StreamingConfig.on_invalid``): ``p`` in {0, 1}, ``0 <= x < W`` and
        ``0 <= y < H`` of ``StreamingConfig.sensor_hw``, ``t`` integer, not before the origin nor before the
        previous event. With ``"raise"`` the error names the first bad event and the chunk is not used.
        """
        x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
        if not (x.shape == y.shape == p.shape == t.shape) or x.ndim != 1:
            raise ValueError(f"x, y, p, t must be 1-D arrays of one length, got {x.shape}, {y.shape}, {p.shape}, "
                             f"{t.shape}")
        if t.size == 0:
            return []
        for name, a in (("t (timestamps)", t), ("x", x), ("y", y), ("p", p)):
            if not np.issubdtype(a.dtype, np.integer):
                what = "integer microseconds" if name.startswith("t") else "integers"
                raise ValueError(f"{name} must be {what}, got dtype {a.dtype}")
        x, y, p, t = (a.astype(np.int64) for a in (x, y, p, t))
        bad = self._invalid_events(x, y, p, t)
        if bad is not None:
            if self.streaming.on_invalid == "raise":
                first = int(np.argmax(bad[0]))
                raise ValueError(f"invalid event {first} of the chunk (x={x[first]}, y={y[first]}, p={p[first]}, "
                                 f"t={t[first]} us): {bad[1]}; {int(bad[0].sum())} of {t.size} events "
                                 "are invalid (StreamingConfig.on_invalid='drop' drops them instead)")
            keep = ~bad[0]
            self.dropped_events += int(bad[0].sum())
            x, y, p, t = x[keep], y[keep], p[keep], t[keep]
            if t.size == 0:
                return []
        self._recent.append(x, y, p, t)
        # Step of each event (an event after advance_to() closed its step joins the step being filled) and
        # its histogram bin; events outside the crop count for the ANN buffer only.
        step_of = np.maximum((t - self.streaming.origin_us) // self.step_us, self._step_index)
        row0, col0, height, width = self.streaming.crop
        rows, cols = y - row0, x - col0
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        f = self.streaming.downsample
        grid_w = self.grid_hw[1]
        bins = ((rows[inside] // f) * grid_w + cols[inside] // f) * 2 + p[inside].astype(np.int64)
        # An event at or after a step's end completes that step: every step before the last event's.
        return self._complete_steps(int(step_of[-1]), step_of[inside], bins)

    def _invalid_events(self, x, y, p, t) -> tuple[np.ndarray, str] | None:
        """``(mask of the invalid events, why the first one is invalid)``, or None when every event is valid."""
        height, width = self.streaming.sensor_hw
        # An event must not precede any earlier one (those kept from earlier chunks included).
        start = self._recent.last_t if self._recent.size else t[0]
        previous = np.maximum.accumulate(np.concatenate([[start], t[:-1]]))
        checks = [((p != 0) & (p != 1), "polarity must be 0 or 1"),
                  ((x < 0) | (x >= width), f"x must be in [0, {width}) (sensor width)"),
                  ((y < 0) | (y >= height), f"y must be in [0, {height}) (sensor height)"),
                  (t < self.streaming.origin_us, f"timestamp before the stream origin {self.streaming.origin_us} us"),
                  (t < previous, "event timestamps must be sorted (within and across chunks)")]
        mask = np.logical_or.reduce([failed for failed, _ in checks])
        if not mask.any():
            return None
        first = int(np.argmax(mask))
        return mask, "; ".join(reason for failed, reason in checks if failed[first])

    def advance_to(self, t_us: int) -> list[PoseEstimate]:
        """Declares that no event before ``t_us`` is still to come: completes every step that ends by then."""
        stop = (int(t_us) - self.streaming.origin_us) // self.step_us  # steps [0, stop) end by t_us
        return self._complete_steps(stop, np.zeros(0, np.int64), np.zeros(0, np.int64))

    def _complete_steps(self, stop: int, step_of: np.ndarray, bins: np.ndarray) -> list[PoseEstimate]:
        """Completes steps ``[step_index, stop)`` with the new events ``(step_of, bins)`` (sorted by step).

        Runs them in calls of up to ``max_steps_per_call`` steps that never cross a re-initialisation; new
        events of step ``stop`` and later stay in the histogram of the step being filled.
        """
        poses: list[PoseEstimate] = []
        cells = self._counts.size
        done = 0  # new events already counted
        while self._step_index < stop:
            first = self._step_index
            last = min(stop, (first // self.steps_per_init + 1) * self.steps_per_init)
            if self._state is not None:
                last = min(last, first + self.streaming.max_steps_per_call)
            upto = done + int(np.searchsorted(step_of[done:], last, side="left"))
            if self._state is not None:
                counts = np.bincount((step_of[done:upto] - first) * cells + bins[done:upto],
                                     minlength=(last - first) * cells).astype(np.float32)
                counts = counts.reshape((last - first,) + self._counts.shape)
                counts[0] += self._counts
                poses.extend(self._run_steps(counts))
            done = upto
            self._counts = np.zeros_like(self._counts)
            self._step_index = last
            if last % self.steps_per_init == 0:
                # The buffer may hold later events too: the ANN takes those before this instant.
                self._initialise(self.streaming.origin_us + last * self.step_us)
        if done < step_of.size:
            self._counts += np.bincount(bins[done:], minlength=cells).reshape(self._counts.shape)
        return poses

    # ------------------------------------------------------------------ model calls
    def ann_input(self, before_us: int | None = None) -> np.ndarray | None:
        """The constant-count ANN frame ``[H, W, 20]`` of the latest buffered events (before ``before_us`` if
        given); None if there are too few."""
        x, y, p, t = self._recent.latest(self.streaming.ann_event_count, before_us)
        if t.size < self.streaming.ann_event_count:
            return None
        row0, col0, height, width = self.streaming.crop
        f = self.streaming.downsample
        # Sum-pooling by f = the histogram on the pooled grid: pixel (row0 + r, col0 + c) counts in cell
        # (r // f, c // f); events outside the crop stay outside (the time bins use all events, as before).
        x_cell, y_cell = col0 + (x - col0) // f, row0 + (y - row0) // f
        return rep.ann_frame(x_cell, y_cell, p, t, self.streaming.ann_bins, (row0, col0, height // f, width // f))

    def _initialise(self, at_us: int) -> None:
        frame = self.ann_input(at_us)
        if frame is None:
            return
        start = time.perf_counter()
        state = self._ann_init(self.variables, jnp.asarray(frame))
        self._state = jax.block_until_ready(state)
        self.ann_latency_s.append(time.perf_counter() - start)
        self._steps_since_init = 0

    def _run_steps(self, counts: np.ndarray) -> list[PoseEstimate]:
        """Runs the steps of ``counts [n, H, W, 2]`` (scans of 2^i steps, then single steps); their poses."""
        n, done, poses = counts.shape[0], 0, []
        while done < n:
            length = max((k for k in self._scan_lengths if k <= n - done), default=1)
            start = time.perf_counter()
            if length == 1:
                self._state, outputs = self._step(self._state, counts[done])  # numpy in: jit's fast path
                outputs = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], outputs)
            else:
                self._state, outputs = self._steps(self._state, counts[done:done + length])
            argmax_uv, heatmaps = jax.tree_util.tree_map(np.asarray, outputs)  # [length, J, 2]; waits
            self.step_latency_s.extend([(time.perf_counter() - start) / length] * length)
            self.steps_per_call.append(length)
            for i in range(length):
                poses.append(self._pose(argmax_uv[i], None if heatmaps is None else heatmaps[i],
                                        self._step_index + done + i))
            done += length
        return poses

    def _pose(self, argmax_uv: np.ndarray, heatmap: np.ndarray | None, index: int) -> PoseEstimate:
        self._steps_since_init += 1
        f = self.streaming.downsample
        uv = argmax_uv * f + (f - 1) / 2.0 if f > 1 else argmax_uv.astype(np.float32)
        return PoseEstimate(step_end_us=self._step_end_us(index), uv=uv,
                            heatmap_argmax=argmax_uv[:, ::-1].astype(np.int64),
                            steps_since_init=self._steps_since_init, heatmap=heatmap)


def first_argmax_uv(heatmaps: jax.Array) -> jax.Array:
    """``[..., H, W, J] -> [..., J, 2]``: :func:`hybridjax.metrics.argmax_landmarks`, exactly (first maximum
    in row-major order; first NaN if any), as a max and a min-index reduction:

    ``i* = min { i : h_i = max_k h_k  or  h_i is NaN }``, ``(u, v) = (i* mod W, i* div W)``.
    """
    *lead, h, w, j = heatmaps.shape
    flat = heatmaps.reshape(*lead, h * w, j)
    peak = jnp.max(flat, axis=-2, keepdims=True)  # NaN if the joint's map has a NaN
    index = jnp.arange(h * w, dtype=jnp.int32)[:, None]
    first = jnp.min(jnp.where((flat == peak) | jnp.isnan(flat), index, h * w), axis=-2)
    return jnp.stack([first % w, first // w], axis=-1).astype(jnp.float32)


class _EventBuffer:
    """The latest events ``(x, y, p, t)`` (at least ``keep`` of them), appended in amortised O(chunk)."""

    def __init__(self, keep: int):
        self.keep = keep
        self._data = np.zeros((4, 4 * max(keep, 1)), np.int64)  # rows x, y, p, t
        self._start = self._end = 0

    @property
    def size(self) -> int:
        return self._end - self._start

    @property
    def last_t(self) -> int:
        return int(self._data[3, self._end - 1])

    def append(self, x, y, p, t) -> None:
        n = t.size
        if self._end + n > self._data.shape[1]:  # move the kept tail to the front (grow for a big chunk)
            tail = self._data[:, max(self._start, self._end - self.keep):self._end]
            if tail.shape[1] + n > self._data.shape[1]:
                self._data = np.zeros((4, 2 * (tail.shape[1] + n)), np.int64)
            self._data[:, :tail.shape[1]] = tail.copy()
            self._start, self._end = 0, tail.shape[1]
        self._data[:, self._end:self._end + n] = (x, y, p, t)
        self._end += n

    def latest(self, count: int, before_us: int | None = None) -> tuple[np.ndarray, ...]:
        """``(x, y, p, t)`` of the ``count`` latest events (with ``t < before_us`` if given)."""
        end = self._end
        if before_us is not None:
            end = self._start + int(np.searchsorted(self._data[3, self._start:self._end], before_us, side="left"))
        return tuple(self._data[:, max(self._start, end - count):end])
