"""Streaming runtime: same poses as the batched hybrid on the same window, independent of the chunk size."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.data import representations as rep
from hybridjax.metrics import argmax_landmarks
from hybridjax.models import HybridModel, ModelConfig, init_variables
from hybridjax.runtime import StreamingConfig, StreamingPoseEstimator

CFG = ModelConfig.preset("tiny")  # 1 ms steps
CROP = (40, 90, 64, 64)  # a 64 x 64 crop of the sensor keeps the test fast; the logic is the full one's
# Up to 4 steps per jitted call (a 10k-event chunk spans several steps: scans of 4, 2 and 1 steps).
STREAM = StreamingConfig(reinit_ms=10.0, crop=CROP, keep_heatmaps=True, max_steps_per_call=4)


def _variables():
    variables = init_variables("hybrid", CFG, jax.random.key(3))
    # Larger SNN weights so that the LIF layers actually spike (the default init is nearly silent).
    params = dict(variables["params"])
    params["snn"] = jax.tree_util.tree_map(lambda w: 4.0 * w, params["snn"])
    return {"params": params, "batch_stats": variables["batch_stats"]}


def _events(duration_ms=30, seed=0):
    """A sorted synthetic stream: 8000 events in the first 10 ms, then ~600 per ms, mostly inside the crop."""
    rng = np.random.default_rng(seed)
    counts = [8000] + [600] * (duration_ms - 10)
    t = np.concatenate([np.sort(rng.integers(0, 10_000, counts[0]))]
                       + [np.sort(rng.integers(10_000 + 1000 * k, 11_000 + 1000 * k, c))
                          for k, c in enumerate(counts[1:])])
    x = rng.integers(CROP[1] - 5, CROP[1] + CROP[3] + 5, t.size)  # a few fall outside the crop
    y = rng.integers(CROP[0] - 5, CROP[0] + CROP[2] + 5, t.size)
    p = rng.integers(0, 2, t.size)
    return x, y, p, t.astype(np.int64)


@pytest.fixture(scope="module")
def streamed():
    variables = _variables()
    x, y, p, t = _events()
    estimator = StreamingPoseEstimator(variables, CFG, STREAM)
    poses = []
    for start in range(0, t.size, 10_000):
        poses += estimator.push(x[start:start + 10_000], y[start:start + 10_000], p[start:start + 10_000],
                                t[start:start + 10_000])
    poses += estimator.advance_to(30_000)
    return variables, (x, y, p, t), poses, estimator


def test_streaming_equals_batched_hybrid_on_the_same_window(streamed):
    variables, (x, y, p, t), poses, _ = streamed
    # Initialisations at 10 ms and 20 ms (fewer than 7500 events before 0 ms), 10 steps each.
    assert [q.step_end_us for q in poses] == [11_000 + 1000 * k for k in range(20)]
    assert [q.steps_since_init for q in poses] == list(range(1, 11)) * 2
    batched = jax.jit(lambda v, a, e: HybridModel(CFG).apply(v, a, e))
    for window, start_ms in enumerate((10, 20)):
        before = np.flatnonzero(t < start_ms * 1000)[-7500:]
        ann_input = rep.ann_frame(x[before], y[before], p[before], t[before], crop=CROP)
        inside = (t >= start_ms * 1000) & (t < (start_ms + 10) * 1000)
        events = rep.fixed_time_histogram(x[inside], y[inside], p[inside], t[inside], start_ms * 1000, 1000, 10,
                                          crop=CROP)
        out = batched(variables, jnp.asarray(ann_input)[None], jnp.asarray(events)[:, None])
        heatmaps = np.asarray(out.heatmaps[:, 0])  # [10, H, W, J]
        got = poses[10 * window:10 * window + 10]
        np.testing.assert_allclose(np.stack([q.heatmap for q in got]), heatmaps, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(np.stack([q.uv for q in got]), np.asarray(argmax_landmarks(out.heatmaps[:, 0])))
        assert float(jnp.sum(out.spike_counts)) > 0  # the comparison exercised spiking layers
    rows_cols = np.stack([q.heatmap_argmax for q in poses])
    np.testing.assert_array_equal(rows_cols[..., ::-1], np.stack([q.uv for q in poses]).astype(np.int64))


def test_chunk_size_does_not_change_the_output(streamed):
    # 1-event chunks, one step per call, against the fixture's 10k-event chunks run as scans of several steps:
    # bit-identical heatmaps (the scan runs the same step function).
    variables, (x, y, p, t), poses, streamed_estimator = streamed
    # Chunk 1 closes steps 10-12 (after the init at 10 ms), chunk 2 steps 13-19 and 20-28 (init at 20 ms
    # between), advance_to(30 ms) step 29: runs of 3, 7, 9, 1 steps in calls of at most 4.
    assert streamed_estimator.steps_per_call[:9] == [2, 1, 4, 2, 1, 4, 4, 1, 1]
    estimator = StreamingPoseEstimator(variables, CFG, dataclasses.replace(STREAM, max_steps_per_call=1))
    one_by_one = []
    for i in range(t.size):
        one_by_one += estimator.push(x[i:i + 1], y[i:i + 1], p[i:i + 1], t[i:i + 1])
    one_by_one += estimator.advance_to(30_000)
    assert len(one_by_one) == len(poses) == 20 and estimator.steps_per_call == [1] * 20
    for a, b in zip(one_by_one, poses):
        assert a.step_end_us == b.step_end_us
        np.testing.assert_array_equal(a.uv, b.uv)
        np.testing.assert_array_equal(a.heatmap, b.heatmap)


def test_latencies_are_recorded_and_steps_complete_without_events(streamed):
    variables, _, _, estimator = streamed
    # Inits at 10, 20 and 30 ms (the last one when advance_to(30 ms) closed the step ending there).
    assert len(estimator.ann_latency_s) == 3 and len(estimator.step_latency_s) == 20
    quiet = estimator.advance_to(33_000)  # 3 more steps without events
    assert [q.step_end_us for q in quiet] == [31_000, 32_000, 33_000]
    assert [q.steps_since_init for q in quiet] == [1, 2, 3] and len(estimator.ann_latency_s) == 3
    # The warm-up compiled exactly what the stream ran (one step, scans of 2 and 4): nothing recompiled.
    assert estimator._step._cache_size() == 1 and estimator._steps._cache_size() == 2


def test_bad_input_is_rejected():
    variables = _variables()
    estimator = StreamingPoseEstimator(variables, CFG, dataclasses.replace(STREAM, warmup=False))
    with pytest.raises(ValueError, match="sorted"):
        estimator.push([100, 100], [50, 50], [0, 1], [20, 10])
    with pytest.raises(ValueError, match="integer microseconds"):
        estimator.push([100], [50], [0], [1.5])
    with pytest.raises(ValueError, match="multiple of the step"):
        StreamingPoseEstimator(variables, CFG, dataclasses.replace(STREAM, reinit_ms=2.5))
    with pytest.raises(ValueError, match="downsample"):
        StreamingPoseEstimator(variables, CFG, dataclasses.replace(STREAM, downsample=3))
    with pytest.raises(ValueError, match="max_steps_per_call"):
        StreamingPoseEstimator(variables, CFG, dataclasses.replace(STREAM, max_steps_per_call=0))


def test_ann_input_on_a_pooled_grid_equals_the_pooled_frame():
    variables = _variables()
    crop = (40, 90, 64, 64)
    estimator = StreamingPoseEstimator(variables, CFG, StreamingConfig(crop=crop, downsample=4, warmup=False))
    x, y, p, t = _events(duration_ms=12)
    estimator.push(x[:8000], y[:8000], p[:8000], t[:8000])  # the ANN frame needs 7500 events
    full = rep.ann_frame(x[500:8000], y[500:8000], p[500:8000], t[500:8000], crop=crop)
    pooled = full.reshape(16, 4, 16, 4, 20).sum(axis=(1, 3))
    np.testing.assert_array_equal(estimator.ann_input(), pooled)
    assert estimator.ann_input(before_us=int(t[100])) is None  # fewer than 7500 events before that instant
