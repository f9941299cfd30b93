"""Streaming latency (batch 1) and data-pipeline throughput measurements."""
from __future__ import annotations

import dataclasses
import pathlib
import statistics
import time

import jax
import numpy as np

from hybridjax.data import BatchLoader, DHP19Config, DHP19Dataset, measure_throughput
from hybridjax.data import representations as rep
from hybridjax.models import ModelConfig, init_variables
from hybridjax.runtime import StreamingConfig, StreamingPoseEstimator


def synthetic_stream(duration_ms: int, events_per_ms: int, *, crop=rep.DHP19_CROP, seed: int = 0):
    """Sorted uniform events ``(x, y, p, t)`` over the crop (0-based sensor pixels, microseconds)."""
    rng = np.random.default_rng(seed)
    n = duration_ms * events_per_ms
    t = np.sort(rng.integers(0, duration_ms * 1000, n)).astype(np.int64)
    row0, col0, height, width = crop
    return (rng.integers(col0, col0 + width, n), rng.integers(row0, row0 + height, n), rng.integers(0, 2, n), t)


def step_cpu_ms(estimator: StreamingPoseEstimator, *, steps: int = 200, steps_per_call: int = 1,
                trials: int = 10) -> float:
    """CPU ms per SNN step of the estimator's jitted step in a tight loop (batch 1, no event handling).

    ``steps_per_call > 1`` times the multi-step scan of that length (a power of two up to
    ``max_steps_per_call``). The loop starts from an ANN initialisation on an empty frame and feeds a fixed
    Poisson(0.5) count map. Returns the smallest of ``trials`` repetitions of ``steps`` steps: the machine may be
    shared, and the minimum is the least disturbed measurement of the same work.
    """
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.5, (steps_per_call,) + estimator.grid_hw + (2,)).astype(np.float32)
    frame = np.zeros(estimator.grid_hw + (2 * estimator.streaming.ann_bins,), np.float32)
    if steps_per_call == 1:
        def call(state):
            state, (argmax_uv, _) = estimator._step(state, counts[0])
            return state, argmax_uv
    elif steps_per_call in estimator._scan_lengths:
        def call(state):
            state, (argmax_uv, _) = estimator._steps(state, counts)
            return state, argmax_uv
    else:
        raise ValueError(f"steps_per_call {steps_per_call}: compiled scan lengths are {estimator._scan_lengths}")
    state = estimator._ann_init(estimator.variables, frame)
    calls = max(steps // steps_per_call, 1)
    best = float("inf")
    for _ in range(trials):
        start = time.process_time()
        for _ in range(calls):
            state, argmax_uv = call(state)
            np.asarray(argmax_uv)  # the pose reaches the host, as in push()
        best = min(best, (time.process_time() - start) / (calls * steps_per_call))
    return 1e3 * best


def streaming_latency(cfg: ModelConfig, *, resolution: int = 256, duration_ms: int = 300, events_per_ms: int = 100,
                      reinit_ms: float = 100.0, downsample: int = 1, variables: dict | None = None,
                      chunk_ms: int = 1, streaming: StreamingConfig | None = None, tight_loop_steps: int = 0) -> dict:
    """Replays a synthetic stream through :class:`StreamingPoseEstimator` at batch 1 and times it.

    The first ``reinit_ms`` only fill the ANN buffer (7500 events are needed), then every step produces a pose.
    Events are pushed in chunks of ``chunk_ms`` milliseconds of events (1: a sensor driver's rate, one step per
    push; more: several steps per push, run ``max_steps_per_call`` at a time). Returns median / p90 latency per
    SNN step and per ANN initialisation, the real-time factor (stream duration covered by steps / wall time
    spent inside :meth:`push`, histogramming and ANN inits included), the process CPU time per produced pose
    and, with ``tight_loop_steps``, :func:`step_cpu_ms` of the single step and of the longest scan.
    ``streaming``: runtime settings (``reinit_ms``, ``crop`` and ``downsample`` are set from the arguments).
    """
    crop = (2, 34, resolution, resolution)
    variables = variables or init_variables("hybrid", cfg, jax.random.key(0))
    settings = dataclasses.replace(streaming or StreamingConfig(), reinit_ms=reinit_ms, crop=crop,
                                   downsample=downsample)
    estimator = StreamingPoseEstimator(variables, cfg, settings)
    x, y, p, t = synthetic_stream(duration_ms, events_per_ms, crop=crop)
    chunk = max(events_per_ms * chunk_ms, 1)  # chunk_ms of events per push (uniform rate)
    start, cpu_start = time.perf_counter(), time.process_time()
    poses = []
    for i in range(0, t.size, chunk):
        poses += estimator.push(x[i:i + chunk], y[i:i + chunk], p[i:i + chunk], t[i:i + chunk])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    steps = np.asarray(estimator.step_latency_s)
    inits = np.asarray(estimator.ann_latency_s)
    stream_ms = len(poses) * cfg.step_ms
    tight = {}
    if tight_loop_steps:
        longest = max(estimator._scan_lengths, default=1)
        tight = {"tight_loop_cpu_ms_per_step": step_cpu_ms(estimator, steps=tight_loop_steps),
                 "tight_loop_scan_length": longest,
                 "tight_loop_scan_cpu_ms_per_step": step_cpu_ms(estimator, steps=tight_loop_steps,
                                                                steps_per_call=longest)}
    return {
        "resolution": resolution, "downsample": downsample, "step_ms": cfg.step_ms, "steps": len(poses),
        "chunk_ms": chunk_ms, "fold_params": settings.fold_params, "max_steps_per_call": settings.max_steps_per_call,
        "ann_inits": len(inits), "step_latency_median_ms": 1e3 * float(np.median(steps)),
        "step_latency_p90_ms": 1e3 * float(np.percentile(steps, 90)),
        "ann_init_latency_median_ms": 1e3 * float(np.median(inits)) if inits.size else None,
        "push_wall_s": wall, "real_time_factor": (stream_ms / 1e3) / wall if wall > 0 else None,
        # CPU time of the whole replay per produced pose (all threads; robust to other processes' load)
        "cpu_ms_per_step": 1e3 * cpu / max(len(poses), 1),
        **tight,
    }


def data_throughput(root: str | pathlib.Path, *, batch_size: int = 2, num_workers: int = 2, bin_mode: str = "exact",
                    step_ms: float = 1.0, epochs: int = 2) -> dict:
    """Windows per second that :class:`hybridjax.data.BatchLoader` (the loader training uses) delivers from a
    DHP19 folder (train split, every field of the hybrid stage).

    Uses :func:`hybridjax.data.measure_throughput` over whole epochs (the fixture has few windows); reports the
    median over ``epochs``.
    """
    root = pathlib.Path(root)
    dataset = DHP19Dataset(root, "train", p_matrix_dir=root / "P_matrices",
                           config=DHP19Config(bin_mode=bin_mode, step_ms=step_ms))
    rates = []
    with BatchLoader(dataset, batch_size, num_workers=num_workers, prefetch=max(2, num_workers)) as loader:
        n = len(loader)
        if n < 1:
            raise ValueError(f"{root}: fewer than {batch_size} training windows")
        for epoch in range(epochs):
            rates.append(measure_throughput(loader, n, epoch=epoch))
    return {"root": str(root), "windows": len(dataset), "batch_size": batch_size, "num_workers": num_workers,
            "bin_mode": bin_mode, "step_ms": step_ms, "windows_per_s": statistics.median(rates)}
