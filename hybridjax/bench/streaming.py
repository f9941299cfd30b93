"""Streaming latency (batch 1) and data-pipeline throughput measurements."""
from __future__ import annotations

import pathlib
import statistics
import time

import jax
import numpy as np

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


def streaming_latency(cfg: ModelConfig, *, resolution: int = 256, duration_ms: int = 300, events_per_ms: int = 100,
                      reinit_ms: float = 100.0, downsample: int = 1, variables: dict | None = None) -> dict:
    """Replays a synthetic stream through :class:`StreamingPoseEstimator` at batch 1 and times it.

    The first ``reinit_ms`` only fill the ANN buffer (7500 events are needed), then every step produces a pose.
    Returns median / p90 latency per SNN step and per ANN initialisation, the real-time factor (stream
    duration covered by steps / wall time spent inside :meth:`push`, histogramming and ANN inits included)
    and the process CPU time per produced pose.
    """
    crop = (2, 34, resolution, resolution)
    variables = variables or init_variables("hybrid", cfg, jax.random.key(0))
    estimator = StreamingPoseEstimator(variables, cfg, StreamingConfig(reinit_ms=reinit_ms, crop=crop,
                                                                       downsample=downsample))
    x, y, p, t = synthetic_stream(duration_ms, events_per_ms, crop=crop)
    chunk = max(events_per_ms, 1)  # about one chunk per millisecond, as a sensor driver would deliver them
    start, cpu_start = time.perf_counter(), time.process_time()
    poses = []
    for i in range(0, t.size, chunk):
        poses += estimator.push(x[i:i + chunk], y[i:i + chunk], p[i:i + chunk], t[i:i + chunk])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    steps = np.asarray(estimator.step_latency_s)
    inits = np.asarray(estimator.ann_latency_s)
    stream_ms = len(poses) * cfg.step_ms
    return {
        "resolution": resolution, "downsample": downsample, "step_ms": cfg.step_ms, "steps": len(poses),
        "ann_inits": len(inits), "step_latency_median_ms": 1e3 * float(np.median(steps)),
        "step_latency_p90_ms": 1e3 * float(np.percentile(steps, 90)),
        "ann_init_latency_median_ms": 1e3 * float(np.median(inits)) if inits.size else None,
        "push_wall_s": wall, "real_time_factor": (stream_ms / 1e3) / wall if wall > 0 else None,
        # CPU time of the whole replay per produced pose (all threads; robust to other processes' load)
        "cpu_ms_per_step": 1e3 * cpu / max(len(poses), 1),
    }


def data_throughput(root: str | pathlib.Path, *, batch_size: int = 2, num_workers: int = 2, bin_mode: str = "exact",
                    step_ms: float = 1.0, epochs: int = 2) -> dict:
    """Windows per second that :class:`hybridjax.data.BatchLoader` delivers from a DHP19 folder (train split).

    Uses :func:`hybridjax.data.measure_throughput` over whole epochs (the fixture has few windows); reports the
    median over ``epochs``.
    """
    from hybridjax.data import BatchLoader, DHP19Config, DHP19Dataset, measure_throughput

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
