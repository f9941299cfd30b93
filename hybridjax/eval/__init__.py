"""Evaluation: the evaluation loop, triangulation, MAC counting, the energy model, firing rates, the report.

Modules: :mod:`~hybridjax.eval.evaluate` (:func:`evaluate`: accumulators and summary),
:mod:`~hybridjax.eval.predict` (the jitted predict functions it calls), :mod:`~hybridjax.eval.protocol` (what
it asks of a dataset), :mod:`~hybridjax.eval.triangulation` (3-D from two cameras), :mod:`~hybridjax.eval.macs`
(MACs from a jaxpr), :mod:`~hybridjax.eval.energy` (the paper's energy model and presets),
:mod:`~hybridjax.eval.firing` (firing rates), :mod:`~hybridjax.eval.report` and :mod:`~hybridjax.eval.plots`
(writers; they import matplotlib, so they are not imported here). Nothing here imports :mod:`hybridjax.train`.
"""
from hybridjax.eval.energy import ENERGY_PRESETS, EnergyPreset, hybrid_power
from hybridjax.eval.evaluate import EvalConfig, evaluate
from hybridjax.eval.macs import count_macs, hybrid_macs
from hybridjax.eval.predict import Predictors
from hybridjax.eval.protocol import CalibratedWindowDataset, WindowDataset
from hybridjax.eval.triangulation import mpjpe_3d, triangulate

__all__ = [
    "ENERGY_PRESETS", "CalibratedWindowDataset", "EnergyPreset", "EvalConfig", "Predictors", "WindowDataset",
    "count_macs", "evaluate", "hybrid_macs", "hybrid_power", "mpjpe_3d", "triangulate",
]
