r"""Moving a trained spiking U-Net to another SNN step length (10 ms pre-training -> 1 ms fine-tuning).

:class:`hybridjax.models.ModelConfig` stores the time constants per 10 ms, so a model run at a finer step
leaks as much over any stretch of time as the coarse one. Two gains still change with the step length, and a
network trained at ``from_ms`` and run at ``to_ms`` without correcting them is far off (measured below):

* **Currents.** An event bin or spike map of the finer step holds ``to_ms / from_ms`` of the activity of a
  coarse one, while the LIF charge ``H = V + (X - V) / tau`` moves the membrane by only ``1 / tau`` of the
  way per step (``tau`` 3 -> 25.2 steps for the hybrid): the currents of the coarse model barely reach
  threshold at the fine step, and its BatchNorm running statistics (of coarse-step currents) shift them
  further down. Every block convolution (``static`` .. ``up3``) is scaled by the spike gain

  .. math:: g_s = \mathrm{from\_ms} / \mathrm{to\_ms}

  so that the fine model's per-step currents have the coarse model's per-step mean under the same running
  statistics, and its neurons fire at about the coarse per-step rates.
* **Output integration (hybrid).** ``out_k = d * out_{k-1} + head_k`` has the DC gain ``1 / (1 - d)``: 5 at
  10 ms (``d = 0.8``), 45.3 at 1 ms (``d = 0.8 ** 0.1``). With the blocks firing at the coarse per-step
  rates, the head's current per step is the coarse one, so the head convolution is scaled by

  .. math:: g_h = (1 - d_\mathrm{to}) / (1 - d_\mathrm{from})

  (0.1103 for 10 ms -> 1 ms) to keep the integrated heatmaps, and so the balance with the ANN's ``out_0``.
  The pure SNN's read-out is a leaky integrator with ``decay_input`` (unit DC gain at any step) behind a
  BatchNorm; its head is left as it is.

BatchNorm parameters and running statistics are kept. Measured on the ``tiny`` preset's 10 ms pre-training
(24 camera-3 test windows, first 100 ms, px; ANN held 9.97): at 10 ms the hybrid scores 9.32 and the pure SNN
25.15; run at 1 ms unchanged 10.57 and 123.9; with ``g_s`` on the input conv only 13.47 / 78.0; with ``g_s``
on every block 13.49 / 37.2 (hybrid heatmaps 9x too strong); with ``g_s`` and ``g_h`` 9.25 / 37.2.
``g_s = 5`` or ``3`` instead of 10 gave 9.9-11.5 / 51.7-76.6.
"""
from __future__ import annotations

from hybridjax.models.config import ModelConfig
from hybridjax.snn.lif import per_step_retention

BLOCK_CONVS = ("static", "down1", "down2", "down3", "res1", "res2", "up1", "up2", "up3")


def step_gains(config: ModelConfig, from_ms: float, to_ms: float, *, pure_snn: bool) -> tuple[float, float]:
    """``(spike gain g_s, head gain g_h)`` for moving a spiking U-Net from ``from_ms`` to ``to_ms`` steps."""
    if from_ms <= 0 or to_ms <= 0:
        raise ValueError(f"step lengths must be positive, got {from_ms} -> {to_ms} ms")
    spike_gain = from_ms / to_ms
    if pure_snn:
        return spike_gain, 1.0
    decay_from = per_step_retention(config.output_decay_at_10ms, from_ms)
    decay_to = per_step_retention(config.output_decay_at_10ms, to_ms)
    if decay_from >= 1.0 or decay_to >= 1.0:
        raise ValueError("output_decay_at_10ms = 1 integrates without leak: no DC gain to match")
    return spike_gain, (1.0 - decay_to) / (1.0 - decay_from)


def convert_step_length(snn_params: dict, config: ModelConfig, from_ms: float, to_ms: float, *,
                        pure_snn: bool) -> dict:
    """The spiking U-Net parameters (``params["snn"]`` of a hybrid or pure SNN) trained at ``from_ms`` steps,
    rescaled to run at ``to_ms`` steps (see the module docs); unchanged (the same dict) when the steps agree."""
    if from_ms == to_ms:
        return snn_params
    spike_gain, head_gain = step_gains(config, from_ms, to_ms, pure_snn=pure_snn)
    missing = [name for name in (*BLOCK_CONVS, "head") if name not in snn_params]
    if missing:
        raise ValueError(f"convert_step_length: no spiking U-Net parameters for {', '.join(missing)}")
    converted = dict(snn_params)
    for name in (*BLOCK_CONVS, "head"):
        gain = head_gain if name == "head" else spike_gain
        block = snn_params[name]
        converted[name] = {**block, "conv": {**block["conv"], "kernel": block["conv"]["kernel"] * gain}}
    return converted
