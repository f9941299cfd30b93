"""Streaming pose estimation: events in, one pose per completed SNN step out.

:class:`StreamingPoseEstimator` keeps the hybrid's state between calls:

* Events arrive in chunks of any size (``x``, ``y`` 0-based sensor pixels of the DAVIS346 (346 x 260), polarity
  ``p`` in {0, 1}, timestamps ``t`` in microseconds, sorted). Each event is added to the count histogram
  ``[H, W, 2]`` of the step it falls in, ``k = floor((t - t0) / step_us)`` (the loader's exact 1 ms bins,
  :func:`hybridjax.data.representations.fixed_time_histogram`), and to a buffer of the most recent events.
* A step is complete when an event at or after its end arrives (or :meth:`advance_to` says time has passed);
  then the jitted :func:`hybridjax.models.snn_step` updates the membranes and the integrated output
  (state donated, so it is updated in place) and the pose is the arg-max of each joint's heatmap.
* Every ``reinit_ms`` (100 ms by default) the ANN re-initialises the SNN: its input is the constant-count
  frame of the last 7500 events before that instant (:func:`hybridjax.data.representations.ann_frame`, as the
  data loader builds it), the state initialisers give the membranes and the ANN heatmap the output. The
  first initialisation happens at the first re-initialisation instant with 7500 events before it; no pose is
  produced before.

So the poses of the steps after an initialisation at ``R`` equal what the batched :class:`HybridModel`
predicts for the window that starts at ``R`` (same ANN input, same 1 ms bins), whatever the chunking.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.data import representations as rep
from hybridjax.metrics import argmax_landmarks
from hybridjax.models import HybridModel, ModelConfig, snn_step

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
    warmup: bool = True  # compile both jitted functions at construction (latencies then exclude compilation)


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

    variables: the hybrid's variables ``{"params": {"ann", "initializers", "snn"}, "batch_stats": ...}``;
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
        self.variables = jax.device_put(variables)
        model = HybridModel(config)

        def ann_init(variables, ann_input):
            # (membranes, output) for a batch of one: the state initialisers' v_init and the ANN heatmap.
            return model.apply(variables, ann_input[None], method=HybridModel.ann_init)

        def step(state, snn_params, snn_stats, events_t):
            (v, out), _ = snn_step(snn_params, snn_stats, state, events_t[None], config, pure_snn=False)
            return (v, out), argmax_landmarks(out[0])

        self._ann_init = jax.jit(ann_init)
        self._step = jax.jit(step, donate_argnums=(0,))
        self._snn_args = (self.variables["params"]["snn"], self.variables["batch_stats"]["snn"])
        if streaming.warmup:
            frame = jnp.zeros(self.grid_hw + (2 * streaming.ann_bins,), jnp.float32)
            state = self._ann_init(self.variables, frame)
            jax.block_until_ready(self._step(state, *self._snn_args, jnp.zeros(self.grid_hw + (2,), jnp.float32)))
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forgets every event and the SNN state (the next poses wait for a new ANN initialisation)."""
        self._recent = tuple(np.zeros(0, np.int64) for _ in range(4))  # x, y, p, t of the latest events
        self._counts = np.zeros(self.grid_hw + (2,), np.float32)  # histogram of the step being filled
        self._state = None  # (membranes, output) on the device once initialised
        self._step_index = 0  # index (from origin) of the step being filled
        self._steps_since_init = 0
        self.ann_latency_s: list[float] = []  # wall time of each ANN initialisation (jitted, synchronous)
        self.step_latency_s: list[float] = []  # wall time of each SNN step update (jitted, synchronous)

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
        """Adds a chunk of events (sorted by ``t``, not before earlier chunks); returns the completed steps."""
        x, y, p, t = (np.asarray(a) for a in (x, y, p, t))
        if not (x.shape == y.shape == p.shape == t.shape) or x.ndim != 1:
            raise ValueError(f"x, y, p, t must be 1-D arrays of one length, got {x.shape}, {y.shape}, {p.shape}, "
                             f"{t.shape}")
        if t.size == 0:
            return []
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"timestamps must be integer microseconds, got dtype {t.dtype}")
        t = t.astype(np.int64)
        if np.any(np.diff(t) < 0) or (self._recent[3].size and t[0] < self._recent[3][-1]):
            raise ValueError("event timestamps must be sorted (within and across chunks)")
        if t[0] < self.streaming.origin_us:
            raise ValueError(f"event at t={int(t[0])} us is before the stream origin {self.streaming.origin_us} us")
        poses: list[PoseEstimate] = []
        start = 0
        while start < t.size:
            end_us = self._step_end_us(self._step_index)
            stop = start + int(np.searchsorted(t[start:], end_us, side="left"))
            self._add(x[start:stop], y[start:stop], p[start:stop], t[start:stop])
            start = stop
            if start < t.size:  # an event at or after the step's end: the step is complete
                poses.extend(self._complete_steps_until(int(t[start])))
        return poses

    def advance_to(self, t_us: int) -> list[PoseEstimate]:
        """Declares that no event before ``t_us`` is still to come: completes every step that ends by then."""
        return self._complete_steps_until(int(t_us))

    def _add(self, x, y, p, t) -> None:
        if t.size == 0:
            return
        row0, col0, height, width = self.streaming.crop
        rows, cols = y.astype(np.int64) - row0, x.astype(np.int64) - col0
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        f = self.streaming.downsample
        np.add.at(self._counts, (rows[inside] // f, cols[inside] // f, p[inside].astype(np.int64)), 1.0)
        keep = self.streaming.ann_event_count
        self._recent = tuple(np.concatenate([old, np.asarray(new, np.int64)])[-keep:]
                             for old, new in zip(self._recent, (x, y, p, t)))

    def _complete_steps_until(self, t_us: int) -> list[PoseEstimate]:
        poses = []
        while self._step_end_us(self._step_index) <= t_us:
            if self._state is not None:
                poses.append(self._run_step())
            self._counts = np.zeros_like(self._counts)
            self._step_index += 1
            if self._step_index % self.steps_per_init == 0:
                # The buffer holds exactly the events before this instant (later ones are not added yet).
                self._initialise()
        return poses

    # ------------------------------------------------------------------ model calls
    def ann_input(self) -> np.ndarray | None:
        """The constant-count ANN frame ``[H, W, 20]`` of the buffered events (None if there are too few)."""
        x, y, p, t = self._recent
        if t.size < self.streaming.ann_event_count:
            return None
        frame = rep.ann_frame(x, y, p, t, self.streaming.ann_bins, self.streaming.crop)
        f = self.streaming.downsample
        if f > 1:
            h, w, c = frame.shape
            frame = frame.reshape(h // f, f, w // f, f, c).sum(axis=(1, 3))
        return frame

    def _initialise(self) -> None:
        frame = self.ann_input()
        if frame is None:
            return
        start = time.perf_counter()
        state = self._ann_init(self.variables, jnp.asarray(frame))
        self._state = jax.block_until_ready(state)
        self.ann_latency_s.append(time.perf_counter() - start)
        self._steps_since_init = 0

    def _run_step(self) -> PoseEstimate:
        start = time.perf_counter()
        self._state, argmax_uv = self._step(self._state, *self._snn_args, jnp.asarray(self._counts))
        argmax_uv = np.asarray(argmax_uv)  # [J, 2] (u, v) on the grid; waits for the step
        self.step_latency_s.append(time.perf_counter() - start)
        self._steps_since_init += 1
        f = self.streaming.downsample
        uv = argmax_uv * f + (f - 1) / 2.0 if f > 1 else argmax_uv.astype(np.float32)
        return PoseEstimate(step_end_us=self._step_end_us(self._step_index), uv=uv,
                            heatmap_argmax=argmax_uv[:, ::-1].astype(np.int64),
                            steps_since_init=self._steps_since_init,
                            heatmap=self.heatmap if self.streaming.keep_heatmaps else None)
