"""Bootstrap intervals over windows: closed-form cases and the normal approximation."""
from __future__ import annotations

import numpy as np
import pytest

from hybridjax.eval.statistics import WindowErrors, bootstrap_ratio_ci, mean_with_ci


def test_one_window_has_a_zero_width_interval_and_no_joints_give_nan():
    assert bootstrap_ratio_ci([6.0], [3.0]) == (2.0, 2.0)
    assert all(np.isnan(bootstrap_ratio_ci([0.0, 0.0], [0.0, 0.0])))
    with pytest.raises(ValueError, match="equal 1-D"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0])


def test_two_windows_span_both_window_means():
    # Resampling 2 windows: both a (p 1/4), the mean (1/2), both b (1/4): the 2.5 / 97.5 % quantiles are a, b.
    low, high = bootstrap_ratio_ci([2.0, 8.0], [1.0, 1.0], num_resamples=4000)
    assert (low, high) == (2.0, 8.0)
    stats = mean_with_ci([2.0, 8.0], [1.0, 1.0])
    assert stats["mean"] == 5.0 and stats["windows"] == 2


def test_many_windows_match_the_normal_interval():
    rng = np.random.default_rng(0)
    per_window = rng.normal(10.0, 2.0, 400)
    low, high = bootstrap_ratio_ci(per_window, np.ones(400), seed=1)
    half = 1.96 * per_window.std(ddof=1) / np.sqrt(400)
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(per_window.mean(), abs=0.05)


def test_window_errors_sum_per_window_and_skip_nan_joints():
    acc = WindowErrors(2)
    true = np.zeros((2, 2, 2))
    pred = np.array([[[3.0, 4.0], [0.0, 1.0]], [[0.0, 2.0], [np.nan, 0.0]]])
    acc.add(pred, true)
    acc.add(np.zeros((2, 2, 2)), np.full((2, 2, 2), np.nan))  # a window without valid joints
    sums, counts = acc.arrays()
    np.testing.assert_array_equal(sums, [[6.0, 2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(counts, [[2.0, 1.0], [0.0, 0.0]])
    assert acc.over_steps([0, 1]) == {"mean": 8.0 / 3.0, "ci_low": 8.0 / 3.0, "ci_high": 8.0 / 3.0, "windows": 1}
    assert acc.per_step()[1]["mean"] == 2.0


def test_two_point_windows_match_the_exact_binomial_quantiles():
    # 50 windows of error 0 and 50 of error 1: a resampled mean is Binomial(100, 1/2) / 100 exactly, whose
    # 2.5 % and 97.5 % quantiles are 0.40 and 0.60 (P(X <= 39) = 0.018 < 0.025 < P(X <= 40) = 0.028).
    low, high = bootstrap_ratio_ci(np.repeat([0.0, 1.0], 50), np.ones(100), num_resamples=20000, seed=1)
    assert (low, high) == (pytest.approx(0.40, abs=1e-12), pytest.approx(0.60, abs=1e-12))


def test_paired_difference_cancels_the_shared_window_spread():
    from hybridjax.eval.statistics import paired_difference_ci

    rng = np.random.default_rng(3)
    counts = rng.integers(5, 14, size=60).astype(float)
    per_window = rng.uniform(2.0, 30.0, size=60)  # a large spread shared by both models
    diff = paired_difference_ci(per_window * counts, counts, (per_window + 1.5) * counts, counts)
    assert diff["windows"] == 60
    assert diff["mean"] == pytest.approx(-1.5) and diff["ci_low"] == pytest.approx(-1.5)
    assert diff["ci_high"] == pytest.approx(-1.5)
    alone = mean_with_ci(per_window * counts, counts)  # unpaired, 1.5 px is buried in the spread
    assert alone["ci_high"] - alone["ci_low"] > 2.0
    noisy = paired_difference_ci(per_window * counts, counts, (per_window + rng.normal(0, 1, 60)) * counts, counts)
    assert noisy["ci_low"] < noisy["mean"] < noisy["ci_high"]
    with pytest.raises(ValueError, match="equal 1-D"):
        paired_difference_ci([1.0], [1.0], [1.0, 2.0], [1.0, 1.0])
