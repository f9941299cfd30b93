"""The accuracy-versus-power sweep: its power arithmetic, its grid, and one point against direct model calls."""
from __future__ import annotations

import jax
import numpy as np
import pytest

from hybridjax import metrics
from hybridjax.data.batch import pool_pixels
from hybridjax.eval import energy, firing
from hybridjax.eval.macs import hybrid_macs
from hybridjax.eval.tradeoff import (
    TradeoffConfig,
    _periods_as_batch,
    _periods_back,
    evaluate_tradeoff,
    rebin_events,
    sweep_points,
    tradeoff_power,
)
from hybridjax.models import HybridModel, ModelConfig

POOL = 8  # 32 x 32 inputs: the smallest the ANN's five poolings allow


def test_tradeoff_power_closed_form_and_the_papers_point():
    e_mac = energy.PAPER.ann_pj_per_mac * 1e-12
    power = tradeoff_power(ann_macs=2e9, initialiser_macs=1e8, snn_energy_per_step_j=1e-5, period_ms=50,
                           output_rate_hz=200, energy=energy.PAPER)
    assert power["hybrid"] == pytest.approx((2e9 + 1e8) * e_mac * 20 + 1e-5 * 200, rel=1e-12)
    assert power["ann_held"] == pytest.approx(2e9 * e_mac * 20, rel=1e-12)
    assert power["ann_at_rate"] == pytest.approx(2e9 * e_mac * 200, rel=1e-12)
    assert power["snn"] == pytest.approx(2e-3, rel=1e-12)
    # The paper's setting: 22.6 G + 1.3 G MACs at 10 Hz and 0.31 mJ per SNN step at 100 Hz -> 0.424 W;
    # the ANN at 100 Hz -> 3.718 W (the preset's per-MAC figure is derived from it).
    paper = tradeoff_power(ann_macs=22.6e9, initialiser_macs=1.3e9, snn_energy_per_step_j=0.31e-3, period_ms=100,
                           output_rate_hz=100, energy=energy.PAPER)
    assert paper["hybrid"] == pytest.approx(0.424, abs=1e-3)
    assert paper["ann_at_rate"] == pytest.approx(3.718, rel=1e-9)
    with pytest.raises(ValueError, match="period_ms"):
        tradeoff_power(ann_macs=1, initialiser_macs=1, snn_energy_per_step_j=1, period_ms=0, output_rate_hz=1,
                       energy=energy.PAPER)


def test_sweep_points_follow_the_models_step():
    periods, rates = (20, 50, 100, 200), (100.0, 200.0, 1000.0)
    ten, skipped = sweep_points(10.0, 200, periods, rates)
    assert [(p.period_ms, p.output_rate_hz, p.factor) for p in ten] == [(20, 100.0, 1), (50, 100.0, 1),
                                                                          (100, 100.0, 1), (200, 100.0, 1)]
    assert len(skipped) == 8 and "whole multiple" in skipped[0]["reason"]
    one, skipped = sweep_points(1.0, 200, periods, rates)
    assert len(one) == 12 and not skipped
    assert {(p.output_rate_hz, p.factor, p.step_ms) for p in one} == {(100.0, 10, 10.0), (200.0, 5, 5.0),
                                                                      (1000.0, 1, 1.0)}
    _, skipped = sweep_points(1.0, 200, (30,), (100.0,))
    assert "does not divide" in skipped[0]["reason"]


def test_rebinning_and_period_batching():
    rng = np.random.default_rng(0)
    x = rng.poisson(1.0, (20, 3, 4, 4, 2)).astype(np.float32)
    coarse = rebin_events(x, 5)
    np.testing.assert_array_equal(coarse[1], x[5:10].sum(axis=0))
    with pytest.raises(ValueError, match="whole number"):
        rebin_events(x, 3)
    batched = _periods_as_batch(x, 4)  # 4 periods of 5 steps
    assert batched.shape == (5, 12, 4, 4, 2)
    np.testing.assert_array_equal(batched[:, 2 * 3 + 1], x[10:15, 1])  # period 2 of window 1
    np.testing.assert_array_equal(_periods_back(batched, 4), x)


@pytest.fixture(scope="module")
def fixture_dataset(shared_dir):
    from hybridjax.data import DHP19Dataset

    return DHP19Dataset(shared_dir / "fixtures" / "dhp19_mini", "test", cameras=(3,), bin_mode="exact",
                        step_ms=10.0)


@pytest.mark.slow
def test_one_point_equals_two_direct_runs_of_the_hybrid(fixture_dataset):
    """About 40 CPU-s (two hybrid compilations), hence slow."""
    from test_eval_evaluate import _numpy_variables

    cfg = ModelConfig.preset("tiny_10ms")
    item = fixture_dataset[0]
    s = int(item["window_start_ms"])
    ann_inputs = pool_pixels(np.stack([fixture_dataset.ann_input_at(item["recording"], 3, ms) for ms in (s, s + 100)]),
                             POOL)
    events = pool_pixels(item["events"], POOL)  # [20, 32, 32, 2]
    halves = np.stack([events[:10], events[10:]], axis=1)  # [10, 2, ...]: the two ANN periods as a batch
    variables = _numpy_variables(HybridModel(cfg), ann_inputs, halves, seed=3)
    tc = TradeoffConfig(periods_ms=(100,), output_rates_hz=(100.0,), max_windows=1, batch_size=1, downsample=POOL)
    result = evaluate_tradeoff(variables, cfg, fixture_dataset, tc)

    out = jax.jit(HybridModel(cfg).apply)(variables, ann_inputs, halves)
    uv = np.asarray(metrics.argmax_landmarks(out.heatmaps)) * POOL + (POOL - 1) / 2  # [10, 2, J, 2]
    err = np.linalg.norm(np.concatenate([uv[:, 0], uv[:, 1]]) - item["landmarks"], axis=-1)
    held = np.asarray(metrics.argmax_landmarks(out.ann_heatmap)) * POOL + (POOL - 1) / 2  # [2, J, 2]
    held_err = np.linalg.norm(np.repeat(held, 10, axis=0) - item["landmarks"], axis=-1)
    by_model = {p["model"]: p for p in result["points"]}
    assert result["setup"]["num_windows"] == 1 and by_model["hybrid"]["mpjpe"]["windows"] == 1
    assert by_model["hybrid"]["mpjpe"]["mean"] == pytest.approx(np.nanmean(err), rel=1e-6)
    assert by_model["ann_held"]["mpjpe"]["mean"] == pytest.approx(np.nanmean(held_err), rel=1e-6)
    assert np.isfinite(by_model["ann_at_rate"]["mpjpe"]["mean"])

    neurons = firing.lif_neuron_counts(cfg, 32, 32)
    rates = dict(zip(firing.LIF_LAYERS, firing.firing_rates(out.spike_counts, neurons).mean(axis=0), strict=True))
    e_step = energy.snn_energy_per_step_j(
        hybrid_macs(cfg, 32, 32).snn_per_step,
        energy.conv_input_rates(rates, neurons, float(np.mean(halves != 0))), energy.PAPER)
    macs = hybrid_macs(cfg, 32, 32)
    expected = (macs.ann + macs.initialisers) * energy.PAPER.ann_pj_per_mac * 1e-12 * 10 + e_step * 100
    assert by_model["hybrid"]["power_w"] == pytest.approx(expected, rel=1e-6)
    assert by_model["ann_held"]["power_w"] == pytest.approx(macs.ann * energy.PAPER.ann_pj_per_mac * 1e-11)


def _point(model, period, rate, power, mean):
    p = {"model": model, "period_ms": period, "output_rate_hz": rate, "power_w": power,
         "mpjpe": {"mean": mean, "ci_low": mean - 0.5, "ci_high": mean + 0.4, "windows": 16}}
    if model == "hybrid":
        p.update(step_ms=1000.0 / rate, factor=1, snn_power_w=power / 10, snn_energy_per_step_j=1e-9,
                 mean_firing_rate=0.05)
    return p


def test_report_section_and_plot_of_a_sweep(tmp_path):
    from hybridjax.eval.plots import plot_power_vs_mpjpe
    from hybridjax.eval.tradeoff import tradeoff_markdown

    result = {"setup": {"camera": 3, "num_windows": 16, "window_ms": 200, "energy_preset": "paper", "height": 64,
                        "width": 64, "model_step_ms": 10.0, "wall_seconds": 12.0},
              "points": [_point("hybrid", 20, 100.0, 2e-3, 12.0), _point("hybrid", 100, 100.0, 1e-3, 13.0),
                         _point("ann_held", 100, None, 1.2e-3, 13.4), _point("ann_at_rate", None, 100.0, 1.2e-2, 13.1)],
              "skipped": [{"period_ms": 20, "output_rate_hz": 1000.0,
                           "reason": "a 1 ms step is not a whole multiple of the model's 10 ms step"}]}
    lines = tradeoff_markdown(result, "power_vs_mpjpe.png")
    rows = [line for line in lines if line.startswith("| hybrid") or line.startswith("| ANN")]
    assert rows[0] == ("| hybrid ANN-SNN | 20 (50 Hz) | 100 Hz (10 ms) | 12.00 [11.50, 12.40] | 16 | 2 mW | 200 uW "
                       "| 0.0500 |")
    assert rows[-1].startswith("| ANN at the output rate | - | 100 Hz | 13.10 [12.60, 13.50] | 16 | 12 mW |")
    assert ("Not allowed, hence skipped: 1 kHz at 20 ms (a 1 ms step is not a whole multiple of the model's 10 ms "
            "step).") in lines
    assert lines[-1] == "![accuracy versus power](power_vs_mpjpe.png)"
    assert plot_power_vs_mpjpe(result, tmp_path / "p.png").stat().st_size > 10_000
