"""The jitted predict functions :func:`hybridjax.eval.evaluate.evaluate` calls on every batch.

:meth:`Predictors.from_variables` builds them from a hybrid's variables (and optionally a separately trained
pure SNN's); any other source of predictions (another model, a converted checkpoint) can fill the record
itself. The variables are arguments of the compiled functions, not constants folded into them.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax

from hybridjax.metrics import predicted_landmarks
from hybridjax.models import ANNUNet, HybridModel, ModelConfig, SNNModel


@dataclasses.dataclass(frozen=True)
class Predictors:
    """Predict functions of the hybrid and its baselines, landmarks in full-resolution pixels.

    ``hybrid(ann_input [B,H,W,20], events [T,B,H,W,2])`` -> ``{"hybrid", "snn_alone": [T,B,J,2], "ann_held":
    [B,J,2], "spikes_hybrid", "spikes_snn_alone": [T,9,B]}``; ``ann(ann_input)`` -> ``[B,J,2]``;
    ``snn(events)`` -> ``([T,B,J,2], [T,9,B])`` or None when there is no trained pure SNN.
    """

    config: ModelConfig  # of the models (neuron counts and MACs of the report)
    downsample: int  # the factor the inputs are sum-pooled by
    hybrid: Callable
    ann: Callable
    snn: Callable | None = None

    @classmethod
    def from_variables(cls, config: ModelConfig, variables: dict, downsample: int = 1,
                       snn_variables: dict | None = None) -> Predictors:
        """From ``HybridModel(config)`` variables (the ANN baselines use ``params["ann"]``) and optional
        ``SNNModel(config)`` variables."""
        hybrid = functools.partial(_hybrid_fn(config, downsample), variables)
        ann = functools.partial(_ann_fn(config, downsample), {"params": {"ann": variables["params"]["ann"]}})
        snn = None if snn_variables is None else functools.partial(_snn_fn(config, downsample), snn_variables)
        return cls(config=config, downsample=downsample, hybrid=hybrid, ann=ann, snn=snn)


def _hybrid_fn(config: ModelConfig, downsample: int):
    model = HybridModel(config)

    @jax.jit
    def run(variables, ann_input, events):
        out = model.apply(variables, ann_input, events, train=False)
        alone = model.apply(variables, ann_input, events, train=False, init_mode="zeros")
        return {
            "hybrid": predicted_landmarks(out.heatmaps, downsample),
            "ann_held": predicted_landmarks(out.ann_heatmap, downsample),
            "snn_alone": predicted_landmarks(alone.heatmaps, downsample),
            "spikes_hybrid": out.spike_counts,
            "spikes_snn_alone": alone.spike_counts,
        }

    return run


def _ann_fn(config: ModelConfig, downsample: int):
    model = ANNUNet(config)
    return jax.jit(lambda variables, ann_input: predicted_landmarks(model.apply(variables, ann_input), downsample))


def _snn_fn(config: ModelConfig, downsample: int):
    model = SNNModel(config)

    @jax.jit
    def run(variables, events):
        out = model.apply(variables, events, train=False)
        return predicted_landmarks(out.heatmaps, downsample), out.spike_counts

    return run
