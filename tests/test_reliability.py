"""Reliability: every case of issue 14 (bad input, damaged files, interrupted runs), each with the message it
must give or the proof that nothing is lost. Grouped by component; each test is small and fast."""
from __future__ import annotations

import dataclasses

import jax
import numpy as np
import pytest

from hybridjax.models import ModelConfig, init_variables
from hybridjax.runtime import StreamingConfig, StreamingPoseEstimator

# ---- streaming runtime: polarity, coordinates and timestamps are checked per chunk (case 7) ----------------
_STREAM_CFG = ModelConfig.preset("tiny")
_CROP = (40, 90, 64, 64)


@pytest.fixture(scope="module")
def stream_variables():
    return init_variables("hybrid", _STREAM_CFG, jax.random.key(3))


def _estimator(variables, **changes):
    settings = StreamingConfig(reinit_ms=10.0, crop=_CROP, warmup=False, **changes)
    return StreamingPoseEstimator(variables, _STREAM_CFG, settings)


def _stream(n=14_000, seed=0):
    """Sorted events in the crop; 6 in 7 fall in the first 10 ms (enough for the first ANN frame)."""
    rng = np.random.default_rng(seed)
    t = np.sort(np.concatenate([rng.integers(0, 10_000, n - n // 7), rng.integers(10_000, 12_000, n // 7)]))
    x = rng.integers(_CROP[1], _CROP[1] + _CROP[3], n)
    y = rng.integers(_CROP[0], _CROP[0] + _CROP[2], n)
    return x, y, rng.integers(0, 2, n), t


@pytest.mark.parametrize("field, value, message", [
    ("p", 2, r"invalid event 5 .*p=2.*polarity must be 0 or 1"),
    ("p", -1, r"invalid event 5 .*polarity must be 0 or 1"),
    ("x", 346, r"invalid event 5 .*x=346.*x must be in \[0, 346\)"),
    ("y", -3, r"invalid event 5 .*y=-3.*y must be in \[0, 260\)"),
])
def test_streaming_rejects_an_invalid_event_naming_it(stream_variables, field, value, message):
    estimator = _estimator(stream_variables)
    x, y, p, t = _stream(n=20)
    chunk = {"x": x, "y": y, "p": p, "t": t}
    chunk[field] = chunk[field].copy()
    chunk[field][5] = value
    with pytest.raises(ValueError, match=message):
        estimator.push(chunk["x"], chunk["y"], chunk["p"], chunk["t"])
    assert estimator._recent.size == 0  # nothing of the rejected chunk was kept


def test_streaming_polarity_at_the_last_crop_pixel_is_an_error_not_a_crash(stream_variables):
    # Before: p=7 at the last pixel of the crop indexed past the histogram ("cannot reshape array of size 8198").
    estimator = _estimator(stream_variables)
    row0, col0, height, width = _CROP
    with pytest.raises(ValueError, match="polarity must be 0 or 1"):
        estimator.push([col0 + width - 1], [row0 + height - 1], [7], [10])


def test_streaming_drop_mode_drops_and_counts_invalid_events(stream_variables):
    x, y, p, t = _stream()
    bad = np.zeros(t.size, bool)
    bad[::7] = True  # every 7th event is outside the sensor (before: kept in the ANN buffer, dropped by the SNN)
    x_bad = np.where(bad, 400, x)
    p_bad = np.where(np.arange(t.size) % 11 == 3, 2, p)  # and some have polarity 2
    bad |= p_bad == 2
    estimator = _estimator(stream_variables, on_invalid="drop", max_steps_per_call=1)
    got = estimator.push(x_bad, y, p_bad, t) + estimator.advance_to(t[-1] + 1)
    assert estimator.dropped_events == int(bad.sum()) > 1000
    estimator.reset()  # the same stream without the invalid events gives the same poses
    want = estimator.push(x[~bad], y[~bad], p[~bad], t[~bad]) + estimator.advance_to(t[-1] + 1)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a.step_end_us == b.step_end_us
        np.testing.assert_array_equal(a.uv, b.uv)


def test_streaming_rejects_unknown_on_invalid(stream_variables):
    with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'drop'"):
        _estimator(stream_variables, on_invalid="ignore")
