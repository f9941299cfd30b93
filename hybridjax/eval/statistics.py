"""Confidence intervals of MPJPE over evaluation windows (percentile bootstrap, windows resampled).

An MPJPE over a set of windows is a ratio of sums: ``sum_w e_w / sum_w n_w`` with ``e_w`` the summed joint
errors of window ``w`` (over the steps being scored) and ``n_w`` its number of valid joints. The windows are
the independent units (joints and steps of one window are strongly correlated), so the bootstrap draws
``N`` windows with replacement, ``B`` times, recomputes the ratio for each draw and reports the
``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles. A draw is the multinomial count of each
window, so a resample is one matrix product: ``(W @ e) / (W @ n)`` with ``W ~ Multinomial(N, 1/N)^B``.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_RESAMPLES = 2000  # bootstrap draws (the quantiles move by ~0.01 px between seeds at this count)


def bootstrap_ratio_ci(sums, counts, *, confidence: float = 0.95, num_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``sum(sums) / sum(counts)`` over windows.

    Args:
      sums: ``[N]`` per-window summed errors.
      counts: ``[N]`` per-window numbers of valid joints (windows with none take part in the draws but add
        nothing).
    Returns ``(low, high)``; ``(nan, nan)`` without valid joints; a zero-width interval for one window.
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    if sums.shape != counts.shape or sums.ndim != 1:
        raise ValueError(f"bootstrap_ratio_ci: sums {sums.shape} and counts {counts.shape} must be equal 1-D")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ratio_ci: confidence must be in (0, 1), got {confidence}")
    if num_resamples < 1:
        raise ValueError(f"bootstrap_ratio_ci: num_resamples must be >= 1, got {num_resamples}")
    if counts.sum() <= 0:
        return float("nan"), float("nan")
    n = sums.size
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=num_resamples)
    valid = weights @ counts > 0
    ratios = (weights @ sums)[valid] / (weights @ counts)[valid]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return float(low), float(high)


def mean_with_ci(sums, counts, **kwargs) -> dict:
    """``{"mean", "ci_low", "ci_high", "windows"}`` of per-window error sums and joint counts ``[N]``.

    ``mean`` is the exact NaN-aware MPJPE ``sum(sums) / sum(counts)``; ``windows`` counts the windows with at
    least one valid joint. Keyword arguments go to :func:`bootstrap_ratio_ci`.
    """
    sums, counts = np.asarray(sums, np.float64), np.asarray(counts, np.float64)
    total = counts.sum()
    low, high = bootstrap_ratio_ci(sums, counts, **kwargs)
    return {"mean": float(sums.sum() / total) if total > 0 else float("nan"), "ci_low": low, "ci_high": high,
            "windows": int(np.count_nonzero(counts > 0))}


class WindowErrors:
    """Per-window, per-step sums of joint errors and valid-joint counts (the input of the intervals)."""

    def __init__(self, num_steps: int):
        self.num_steps = num_steps
        self._sums: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []

    def add(self, pred, true) -> None:
        """One window: ``pred``, ``true`` ``[T, J, D]``; joints whose truth (or prediction) is NaN are skipped."""
        pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)
        if pred.shape != true.shape or pred.shape[0] != self.num_steps or pred.ndim != 3:
            raise ValueError(f"WindowErrors.add: pred {pred.shape} and true {true.shape} must be equal "
                             f"[{self.num_steps}, J, D]")
        err = np.linalg.norm(pred - true, axis=-1)
        valid = np.isfinite(err)
        self._sums.append(np.where(valid, err, 0.0).sum(axis=1))
        self._counts.append(valid.sum(axis=1).astype(np.float64))

    @property
    def num_windows(self) -> int:
        return len(self._sums)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sums, counts)``, each ``[N, T]``."""
        if not self._sums:
            return np.zeros((0, self.num_steps)), np.zeros((0, self.num_steps))
        return np.stack(self._sums), np.stack(self._counts)

    def over_steps(self, steps, **kwargs) -> dict:
        """:func:`mean_with_ci` of the errors summed over ``steps`` (indices or a boolean mask) per window."""
        sums, counts = self.arrays()
        return mean_with_ci(sums[:, steps].sum(axis=1), counts[:, steps].sum(axis=1), **kwargs)

    def per_step(self, **kwargs) -> list[dict]:
        """:func:`mean_with_ci` of every step on its own."""
        return [self.over_steps([t], **kwargs) for t in range(self.num_steps)]


def paired_difference_ci(sums_a, counts_a, sums_b, counts_b, *, confidence: float = 0.95,
                         num_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> dict:
    """``{"mean", "ci_low", "ci_high", "windows"}`` of ``MPJPE_a - MPJPE_b`` for two models on the same windows.

    Both ratios are recomputed on the *same* draws of windows, so the window-to-window variation the two
    models share cancels; an interval entirely below zero says a is better than b on this population of
    windows. Only windows where both models have valid joints are used.
    """
    arrays = [np.asarray(a, np.float64) for a in (sums_a, counts_a, sums_b, counts_b)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError("paired_difference_ci: the four per-window arrays must be equal 1-D, got "
                         f"{[a.shape for a in arrays]}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"paired_difference_ci: confidence must be in (0, 1), got {confidence}")
    keep = (arrays[1] > 0) & (arrays[3] > 0)
    sa, ca, sb, cb = (a[keep] for a in arrays)
    if sa.size == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "windows": 0}
    n = sa.size
    weights = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=num_resamples)
    diffs = (weights @ sa) / (weights @ ca) - (weights @ sb) / (weights @ cb)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(diffs, [tail, 1.0 - tail])
    return {"mean": float(sa.sum() / ca.sum() - sb.sum() / cb.sum()), "ci_low": float(low), "ci_high": float(high),
            "windows": int(n)}


def format_interval(entry: dict, digits: int = 2) -> str:
    """``"12.34 [11.90, 12.81]"`` from a :func:`mean_with_ci` dict (``n/a`` without a mean; no interval part
    when it is missing)."""
    mean, low, high = entry.get("mean"), entry.get("ci_low"), entry.get("ci_high")
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
