r"""The paper's energy model: synaptic operations for the SNN, multiply-accumulates for the ANN.

SNN, per step (SPEC section 5):

.. math::

    E_{SNN} = \sum_{c \in convs} r_c \cdot MAC_c \cdot e_{op}

where ``MAC_c`` is the dense MAC count of conv ``c`` for one step of one sample and ``r_c`` the firing rate
(spikes per neuron per step) of the spikes that *feed* conv ``c``: a spike is charged once per synapse it
reaches, and a dense conv charges every input site, so ``r_c * MAC_c`` is the expected number of synaptic
operations. Which spikes feed which conv (:data:`CONV_INPUTS`):

Convs are named like the model's parameters (:func:`hybridjax.models.snn_unet.snn_convs`): each after the
LIF layer it drives, plus ``head``.

* ``down1`` <- static, ``down2`` <- down1, ``down3`` <- down2, residual ``res1`` <- down3,
  ``res2`` <- res1 (the mid LIF; its output also receives the residual current, not charged);
* ``up1`` <- concat[res2, down3], ``up2`` <- concat[up1, down2], ``up3`` <- concat[up2, down1],
  ``head`` <- concat[up3, static]: the rate of a concatenation is the neuron-weighted mean of its parts.
  The bilinear x2 upsampling between the concat and the up convs keeps the mean rate; we charge the spikes
  at that rate (the upsampled values are not binary; this is the usual reading of the paper's formula).
* ``static`` reads the event frame, not spikes. Its input counts as *binary*: a site with any event is one
  "spike". Its rate is the fraction of non-zero input elements (``event_input_rate``, measured by the
  evaluation); pass 1.0 to charge it densely. It is 0.4 % of the dense MACs at the paper size, so the
  choice moves the SNN energy by at most ``104.86 M * 0.38 pJ = 0.04 mJ`` per step.

ANN: ``E_ANN = MAC_ANN * e_mac`` per inference; the hybrid's state initialisers are charged at every ANN
inference the same way (``MAC_init * e_mac``).

Power at an output rate ``R`` (SNN steps per second) with the ANN re-initialising at ``r_ann``:

.. math::

    P_{hybrid} = (E_{ANN} + E_{init}) \cdot r_{ann} + E_{SNN} \cdot R,
    \qquad P_{ANN}(R) = E_{ANN} \cdot R,
    \qquad \text{reduction} = 1 - P_{hybrid} / P_{ANN}(R).

Presets (:class:`EnergyPreset`):

* ``paper``: 0.38 pJ per synaptic operation; for the ANN the per-MAC energy the paper's table implies,
  ``3.718 W / 100 Hz / 22.6 G MACs = 1.645 pJ`` (the paper states the 0.38 pJ, the 3.718 W ANN power at
  100 Hz and the 22.6 G MACs, but not the ANN's per-MAC figure; it is derived here). Check: the hybrid at
  100 Hz with the ANN at 10 Hz costs ``(22.6 + 1.3) G * 1.645 pJ * 10 Hz = 0.393 W`` before the SNN, so the
  paper's 0.424 W leaves 31 mW for the SNN: ``0.31 mJ`` per step, i.e. about 0.82 G synaptic operations or
  a mean input firing rate of about 3.4 % of the 24.0 G dense MACs per step.
* ``horowitz45_fp32``: Horowitz (ISSCC 2014), 45 nm, 32-bit float: MAC 4.6 pJ for the ANN, accumulate 0.9 pJ
  per synaptic operation for the SNN.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

# The paper's reference numbers (SPEC section 5), used to derive the paper preset's ANN per-MAC energy.
PAPER_ANN_POWER_W = 3.718  # ANN U-Net power at 100 Hz
PAPER_ANN_RATE_HZ = 100.0  # the rate of that figure
PAPER_ANN_MACS = 22.6e9  # ANN MACs per inference at 256x256 with 20 input channels
PAPER_INITIALISER_MACS = 1.3e9  # state initialisers' MACs per ANN inference
PAPER_SNN_PJ_PER_OP = 0.38  # energy per synaptic operation


@dataclasses.dataclass(frozen=True)
class EnergyPreset:
    """Energy per elementary operation."""

    name: str  # identifier used in reports
    snn_pj_per_op: float  # SNN: energy of one synaptic operation (an accumulate per spike and synapse), pJ
    ann_pj_per_mac: float  # ANN and state initialisers: energy of one multiply-accumulate, pJ


PAPER = EnergyPreset(
    name="paper",
    snn_pj_per_op=PAPER_SNN_PJ_PER_OP,
    ann_pj_per_mac=PAPER_ANN_POWER_W / PAPER_ANN_RATE_HZ / PAPER_ANN_MACS * 1e12,
)
HOROWITZ45_FP32 = EnergyPreset(name="horowitz45_fp32", snn_pj_per_op=0.9, ann_pj_per_mac=4.6)
ENERGY_PRESETS: dict[str, EnergyPreset] = {preset.name: preset for preset in (PAPER, HOROWITZ45_FP32)}

# The SNN's convolutions in forward order (the head is the final 1x1 conv).
SNN_CONVS = ("static", "down1", "down2", "down3", "res1", "res2", "up1", "up2", "up3", "head")
# Name standing for the event input of the first conv in CONV_INPUTS.
EVENT_INPUT = "events"
# conv -> the LIF layers (or the event input) whose output it reads, concatenated in this order.
CONV_INPUTS: dict[str, tuple[str, ...]] = {
    "static": (EVENT_INPUT,),
    "down1": ("static",),
    "down2": ("down1",),
    "down3": ("down2",),
    "res1": ("down3",),
    "res2": ("res1",),
    "up1": ("res2", "down3"),
    "up2": ("up1", "down2"),
    "up3": ("up2", "down1"),
    "head": ("up3", "static"),
}


def preset(name: str) -> EnergyPreset:
    """An energy preset by name (see :data:`ENERGY_PRESETS`)."""
    try:
        return ENERGY_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown energy preset {name!r}; choose one of {sorted(ENERGY_PRESETS)}") from None


def conv_input_rates(
    layer_rates: Mapping[str, float], neurons: Mapping[str, int], event_input_rate: float
) -> dict[str, float]:
    """Firing rate of the input of every SNN conv (:data:`CONV_INPUTS`).

    Args:
      layer_rates: LIF layer -> spikes per neuron per step.
      neurons: LIF layer -> neurons per sample (weights of a concatenation).
      event_input_rate: rate charged for the event input of ``static`` (fraction of non-zero inputs, or 1).
    """
    rates = {}
    for conv, sources in CONV_INPUTS.items():
        if sources == (EVENT_INPUT,):
            rates[conv] = float(event_input_rate)
            continue
        missing = [s for s in sources if s not in layer_rates or s not in neurons]
        if missing:
            raise ValueError(f"conv_input_rates: no rate or neuron count for {missing} (conv {conv})")
        total = sum(neurons[s] for s in sources)
        rates[conv] = sum(float(layer_rates[s]) * neurons[s] for s in sources) / total
    return rates


def snn_energy_breakdown_j(
    conv_macs: Mapping[str, float], input_rates: Mapping[str, float], energy: EnergyPreset
) -> dict[str, float]:
    """Energy per step of every SNN conv in joules: ``rate * MACs * e_op``."""
    missing = [c for c in SNN_CONVS if c not in conv_macs or c not in input_rates]
    if missing:
        raise ValueError(f"snn_energy_breakdown_j: MACs or input rate missing for conv(s) {missing}")
    return {c: float(input_rates[c]) * float(conv_macs[c]) * energy.snn_pj_per_op * 1e-12 for c in SNN_CONVS}


def snn_energy_per_step_j(
    conv_macs: Mapping[str, float], input_rates: Mapping[str, float], energy: EnergyPreset
) -> float:
    """``E_SNN = sum_c r_c * MAC_c * e_op`` in joules per step and sample."""
    return sum(snn_energy_breakdown_j(conv_macs, input_rates, energy).values())


def ann_energy_j(macs: float, energy: EnergyPreset) -> float:
    """``MACs * e_mac`` in joules (one ANN or initialiser inference)."""
    return float(macs) * energy.ann_pj_per_mac * 1e-12


@dataclasses.dataclass(frozen=True)
class PowerSummary:
    """Energy and power of the hybrid and the ANN at one output rate, for one preset."""

    preset: str  # energy preset name
    output_rate_hz: float  # SNN steps (= predictions) per second
    ann_rate_hz: float  # ANN re-initialisations per second
    ann_energy_j: float  # one ANN inference
    initialiser_energy_j: float  # the state initialisers at one ANN inference
    snn_energy_per_step_j: float  # one SNN step (mean over the window's steps)
    hybrid_power_w: float  # (E_ANN + E_init) * r_ann + E_SNN * R
    ann_power_w: float  # the ANN alone run at the output rate: E_ANN * R
    snn_power_w: float  # the SNN part alone: E_SNN * R
    power_reduction: float  # 1 - hybrid / ANN at the same output rate

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def hybrid_power(
    *,
    ann_macs: float,
    initialiser_macs: float,
    snn_energy_per_step: float,
    output_rate_hz: float,
    ann_rate_hz: float,
    energy: EnergyPreset,
) -> PowerSummary:
    """Power of the hybrid (ANN at ``ann_rate_hz``, SNN at ``output_rate_hz``) and of the ANN at ``R``."""
    if output_rate_hz <= 0 or ann_rate_hz <= 0:
        raise ValueError(f"rates must be positive, got output {output_rate_hz} Hz, ANN {ann_rate_hz} Hz")
    ann_j = ann_energy_j(ann_macs, energy)
    init_j = ann_energy_j(initialiser_macs, energy)
    hybrid_w = (ann_j + init_j) * ann_rate_hz + snn_energy_per_step * output_rate_hz
    ann_w = ann_j * output_rate_hz
    return PowerSummary(
        preset=energy.name,
        output_rate_hz=float(output_rate_hz),
        ann_rate_hz=float(ann_rate_hz),
        ann_energy_j=ann_j,
        initialiser_energy_j=init_j,
        snn_energy_per_step_j=float(snn_energy_per_step),
        hybrid_power_w=hybrid_w,
        ann_power_w=ann_w,
        snn_power_w=float(snn_energy_per_step) * output_rate_hz,
        power_reduction=1.0 - hybrid_w / ann_w,
    )


def paper_snn_layer_macs() -> dict[str, float]:
    """The SPEC's dense MACs per SNN step at 256x256 (paper widths), per conv of :data:`SNN_CONVS`."""
    millions = {"static": 104.86, "down1": 838.86, "down2": 838.86, "down3": 838.86, "res1": 603.98,
                "res2": 603.98, "up1": 6710.89, "up2": 6710.89, "up3": 6710.89, "head": 54.5}
    return {conv: value * 1e6 for conv, value in millions.items()}
