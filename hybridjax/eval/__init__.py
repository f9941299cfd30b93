"""Evaluation: triangulation, MAC counting, energy model, firing rates, the evaluation loop and its report.

Modules: :mod:`~hybridjax.eval.triangulation` (3-D from two cameras), :mod:`~hybridjax.eval.macs` (MACs from
a jaxpr), :mod:`~hybridjax.eval.energy` (the paper's energy model and presets), :mod:`~hybridjax.eval.firing`
(firing rates), :mod:`~hybridjax.eval.evaluate` (:func:`evaluate`), :mod:`~hybridjax.eval.report` and
:mod:`~hybridjax.eval.plots` (writers). The names below resolve lazily (PEP 562) so that importing the
package does not import JAX models or matplotlib until they are used.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "EvalConfig": "evaluate",
    "evaluate": "evaluate",
    "write_report": "report",
    "markdown_report": "report",
    "count_macs": "macs",
    "hybrid_macs": "macs",
    "triangulate": "triangulation",
    "mpjpe_3d": "triangulation",
    "EnergyPreset": "energy",
    "ENERGY_PRESETS": "energy",
    "hybrid_power": "energy",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hybridjax.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
