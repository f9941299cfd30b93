"""Firing rates of the spiking U-Net's LIF layers per step, from the model's spike counts.

The model reports ``out.spike_counts [T, 9, B]`` (spikes per LIF layer, in :data:`LIF_LAYERS` order, per step
and sample). The firing rate of layer ``l`` at step ``t`` is

    rate[t, l] = sum_b spike_counts[t, l, b] / (B * neurons[l])

with ``neurons[l]`` the layer's neurons per sample (:func:`lif_neuron_counts`). :class:`FiringAccumulator`
sums counts over batches so the test-set rate is the spike total over the neuron-steps, not a mean of
per-batch means.
"""
from __future__ import annotations

import numpy as np

from hybridjax.models.snn_unet import LIF_LAYERS, lif_shapes

__all__ = ["LIF_LAYERS", "FiringAccumulator", "event_input_rate", "firing_rates", "lif_neuron_counts"]


def lif_neuron_counts(config, height: int, width: int) -> dict[str, int]:
    """Neurons per sample of every LIF layer (``h * w * c`` of the model's membrane shapes)."""
    return {layer: int(np.prod(shape)) for layer, shape in lif_shapes(config, height, width).items()}


def firing_rates(spike_counts, neurons: dict[str, int]) -> np.ndarray:
    """``spike_counts [T, 9, B]`` -> batch-mean rate ``[T, 9]`` (spikes per neuron per step)."""
    counts = np.asarray(spike_counts, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[1] != len(LIF_LAYERS):
        raise ValueError(f"spike_counts: expected [T, {len(LIF_LAYERS)}, B], got shape {counts.shape}")
    per_layer = np.array([neurons[layer] for layer in LIF_LAYERS], dtype=np.float64)
    return counts.sum(axis=2) / (counts.shape[2] * per_layer)


def event_input_rate(events) -> np.ndarray:
    """Fraction of non-zero elements of the event input per step: ``events [T, B, H, W, C] -> [T]``.

    The first conv's input read as binary spikes (see :mod:`hybridjax.eval.energy`).
    """
    events = np.asarray(events)
    if events.ndim != 5:
        raise ValueError(f"events: expected a time-major [T, B, H, W, C] array, got shape {events.shape}")
    return (events != 0).reshape(events.shape[0], -1).mean(axis=1)


class FiringAccumulator:
    """Sums spike counts (and non-zero event inputs) over batches; reports rates per step and layer."""

    def __init__(self, neurons: dict[str, int]):
        missing = [layer for layer in LIF_LAYERS if layer not in neurons]
        if missing:
            raise ValueError(f"FiringAccumulator: neuron counts missing for {missing}")
        self.neurons = np.array([neurons[layer] for layer in LIF_LAYERS], dtype=np.float64)
        self.spikes: np.ndarray | None = None  # [T, 9] spike totals
        self.samples = 0  # samples seen
        self.event_nonzero: np.ndarray | None = None  # [T] non-zero event inputs
        self.event_elements = 0  # event input elements per step seen

    def add(self, spike_counts, events=None) -> None:
        """Adds one batch: ``spike_counts [T, 9, B]`` and optionally its ``events [T, B, H, W, C]``."""
        counts = np.asarray(spike_counts, dtype=np.float64)
        if counts.ndim != 3 or counts.shape[1] != len(LIF_LAYERS):
            raise ValueError(f"spike_counts: expected [T, {len(LIF_LAYERS)}, B], got shape {counts.shape}")
        totals = counts.sum(axis=2)
        if self.spikes is None:
            self.spikes = totals
        elif self.spikes.shape != totals.shape:
            raise ValueError(
                f"spike_counts: {counts.shape[0]} steps, earlier batches had {self.spikes.shape[0]}"
            )
        else:
            self.spikes = self.spikes + totals
        self.samples += counts.shape[2]
        if events is not None:
            events = np.asarray(events)
            nonzero = (events != 0).reshape(events.shape[0], -1).sum(axis=1).astype(np.float64)
            self.event_nonzero = nonzero if self.event_nonzero is None else self.event_nonzero + nonzero
            self.event_elements += int(np.prod(events.shape[1:]))

    def rates(self) -> np.ndarray:
        """``[T, 9]`` spikes per neuron per step over everything added."""
        if self.spikes is None:
            raise ValueError("FiringAccumulator.rates: no batch was added")
        return self.spikes / (self.samples * self.neurons)

    def mean_rates(self) -> dict[str, float]:
        """Layer -> rate averaged over the steps."""
        return dict(zip(LIF_LAYERS, self.rates().mean(axis=0).tolist(), strict=True))

    def event_rates(self) -> np.ndarray:
        """``[T]`` fraction of non-zero event inputs per step (needs events passed to :meth:`add`)."""
        if self.event_nonzero is None:
            raise ValueError("FiringAccumulator.event_rates: no events were added")
        return self.event_nonzero / self.event_elements
