"""Energy model: presets, closed forms, the paper's 3.718 W / 0.424 W ballpark, firing-rate bookkeeping."""
import numpy as np
import pytest

from hybridjax.eval import energy, firing
from hybridjax.models import LIF_LAYERS, ModelConfig

PAPER = ModelConfig.preset("paper")


def test_paper_preset_reproduces_the_ann_power_exactly():
    e_mac = energy.PAPER.ann_pj_per_mac
    assert e_mac == pytest.approx(1.64513, rel=1e-5)  # 3.718 W / 100 Hz / 22.6e9 MACs
    assert energy.ann_energy_j(22.6e9, energy.PAPER) * 100.0 == pytest.approx(3.718, rel=1e-12)
    assert energy.PAPER.snn_pj_per_op == 0.38
    assert energy.preset("horowitz45_fp32") == energy.EnergyPreset("horowitz45_fp32", 0.9, 4.6)
    with pytest.raises(ValueError, match="unknown energy preset"):
        energy.preset("loihi")


def test_dense_snn_macs_per_step_total():
    total = sum(energy.paper_snn_layer_macs().values())
    assert total == pytest.approx(24016.57e6, rel=1e-9)


def test_conv_input_rates_weighting():
    neurons = firing.lif_neuron_counts(PAPER, 256, 256)
    rates = dict.fromkeys(firing.LIF_LAYERS, 0.0)
    rates.update(static=0.3, up3=0.1, res1=0.05, down3=0.2, res2=0.4)
    conv_rates = energy.conv_input_rates(rates, neurons, event_input_rate=0.02)
    assert conv_rates["static"] == 0.02
    assert conv_rates["down1"] == 0.3
    assert conv_rates["res2"] == 0.05
    assert conv_rates["head"] == pytest.approx(0.2)  # equal neuron counts -> plain mean
    assert conv_rates["up1"] == pytest.approx(0.3)  # mean of res2 (0.4) and down3 (0.2)
    # Unequal parts weigh by neurons: 1 neuron at rate 1 and 3 at rate 0 -> 0.25.
    skewed = dict(neurons, res2=1, down3=3)
    skewed_rates = energy.conv_input_rates(dict(rates, res2=1.0, down3=0.0), skewed, 1.0)
    assert skewed_rates["up1"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="res2"):
        energy.conv_input_rates({k: v for k, v in rates.items() if k != "res2"}, neurons, 1.0)


def test_snn_energy_closed_form():
    macs = energy.paper_snn_layer_macs()
    rates = {conv: 0.1 for conv in energy.SNN_CONVS}
    expected = 0.1 * 24016.57e6 * 0.38e-12  # J per step
    assert energy.snn_energy_per_step_j(macs, rates, energy.PAPER) == pytest.approx(expected, rel=1e-9)
    breakdown = energy.snn_energy_breakdown_j(macs, dict(rates, up1=0.0), energy.HOROWITZ45_FP32)
    assert breakdown["up1"] == 0.0
    assert breakdown["head"] == pytest.approx(0.1 * 54.5e6 * 0.9e-12)


def test_paper_hybrid_power_ballpark_with_plausible_rates():
    """ANN 10 Hz + SNN 100 Hz at a uniform ~3.4 % input rate gives the paper's 0.424 W and ~88 % saving."""
    macs = energy.paper_snn_layer_macs()
    neurons = firing.lif_neuron_counts(PAPER, 256, 256)
    rate = 0.034
    conv_rates = energy.conv_input_rates(dict.fromkeys(firing.LIF_LAYERS, rate), neurons, rate)
    e_snn = energy.snn_energy_per_step_j(macs, conv_rates, energy.PAPER)
    summary = energy.hybrid_power(ann_macs=22.6e9, initialiser_macs=1.3e9, snn_energy_per_step=e_snn,
                                  output_rate_hz=100.0, ann_rate_hz=10.0, energy=energy.PAPER)
    assert summary.ann_power_w == pytest.approx(3.718, rel=1e-9)
    closed_form = 23.9e9 * energy.PAPER.ann_pj_per_mac * 1e-12 * 10 + rate * 24016.57e6 * 0.38e-12 * 100
    assert summary.hybrid_power_w == pytest.approx(closed_form, rel=1e-9)
    assert summary.hybrid_power_w == pytest.approx(0.424, abs=0.002)
    assert summary.power_reduction == pytest.approx(1 - 0.424 / 3.718, abs=0.001)  # "88 % less power"
    assert summary.snn_power_w == pytest.approx(e_snn * 100)
    # Units: J per inference times Hz is W; at 200 Hz the ANN doubles, the SNN part doubles.
    at_200 = energy.hybrid_power(ann_macs=22.6e9, initialiser_macs=1.3e9, snn_energy_per_step=e_snn,
                                 output_rate_hz=200.0, ann_rate_hz=10.0, energy=energy.PAPER)
    assert at_200.ann_power_w == pytest.approx(2 * 3.718)
    assert at_200.hybrid_power_w - summary.hybrid_power_w == pytest.approx(100 * e_snn)
    with pytest.raises(ValueError, match="positive"):
        energy.hybrid_power(ann_macs=1, initialiser_macs=1, snn_energy_per_step=1, output_rate_hz=0,
                            ann_rate_hz=1, energy=energy.PAPER)


def test_horowitz_preset_closed_form():
    summary = energy.hybrid_power(ann_macs=22.6e9, initialiser_macs=1.3e9, snn_energy_per_step=0.0,
                                  output_rate_hz=100.0, ann_rate_hz=10.0, energy=energy.HOROWITZ45_FP32)
    assert summary.ann_energy_j == pytest.approx(22.6e9 * 4.6e-12)
    assert summary.hybrid_power_w == pytest.approx(23.9e9 * 4.6e-12 * 10)
    assert summary.power_reduction == pytest.approx(1 - 23.9 / 226.0)


def test_lif_layers_are_the_models():
    assert firing.LIF_LAYERS == LIF_LAYERS


def test_lif_neuron_counts_paper():
    neurons = firing.lif_neuron_counts(PAPER, 256, 256)
    assert neurons == {"static": 256 * 256 * 32, "down1": 128 * 128 * 64, "down2": 64 * 64 * 128,
                       "down3": 32 * 32 * 256, "res1": 32 * 32 * 256, "res2": 32 * 32 * 256,
                       "up1": 64 * 64 * 128, "up2": 128 * 128 * 64, "up3": 256 * 256 * 32}


def test_firing_rates_and_accumulator():
    neurons = dict(zip(firing.LIF_LAYERS, [10, 20, 30, 40, 50, 60, 70, 80, 90], strict=True))
    counts = np.zeros((2, 9, 3))
    counts[0, 0] = [1, 2, 3]  # 6 spikes over 3 samples x 10 neurons
    counts[1, 8] = [9, 0, 0]  # 9 spikes over 3 x 90
    rates = firing.firing_rates(counts, neurons)
    assert rates.shape == (2, 9)
    assert rates[0, 0] == pytest.approx(0.2) and rates[1, 8] == pytest.approx(9 / 270)
    assert rates.sum() == pytest.approx(0.2 + 9 / 270)
    acc = firing.FiringAccumulator(neurons)
    events = np.zeros((2, 3, 4, 4, 2))
    events[0, 0, 0, 0, 0] = 5.0
    acc.add(counts[:, :, :2], events[:, :2])
    acc.add(counts[:, :, 2:], events[:, 2:])
    np.testing.assert_allclose(acc.rates(), rates)
    assert acc.mean_rates()["static"] == pytest.approx(0.1)
    np.testing.assert_allclose(acc.event_rates(), [1 / 96, 0.0])
    np.testing.assert_allclose(firing.event_input_rate(events), [1 / 96, 0.0])
    with pytest.raises(ValueError, match="spike_counts"):
        acc.add(np.zeros((2, 8, 1)))
