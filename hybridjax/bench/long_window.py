"""Memory (and optionally time) of the hybrid training step versus window length and rematerialisation.

The variants (``REMAT_VARIANTS``) are the ways the SNN can be scanned for a long 1 ms window:

* ``layer``: layer mode, nothing rematerialised (activations of every conv for all T steps are stored);
* ``layer_chunk<k>_remat``: layer mode in scanned chunks of k steps, each chunk rematerialised (the backward
  keeps the chunk boundaries and one chunk's activations);
* ``step``: step mode, residuals of every step stored;
* ``step_remat``: step mode with every step rematerialised (only the carry, i.e. the membranes, per step).

Memory is XLA's buffer assignment of the compiled step (temporaries + arguments + outputs): exact for what
the executable allocates, measured without running it, so even configurations that would not fit can be
reported.
"""
from __future__ import annotations

import dataclasses

from hybridjax.bench.training import benchmark_train_step
from hybridjax.models import ModelConfig


def remat_variant(cfg: ModelConfig, name: str) -> ModelConfig:
    """``cfg`` with the SNN execution of the named variant (see the module docstring)."""
    if name == "layer":
        return dataclasses.replace(cfg, snn_mode="layer", remat=False, time_chunk=None)
    if name == "step":
        return dataclasses.replace(cfg, snn_mode="step", remat=False, time_chunk=None)
    if name == "step_remat":
        return dataclasses.replace(cfg, snn_mode="step", remat=True, time_chunk=None)
    prefix, suffix = "layer_chunk", "_remat"
    if name.startswith(prefix) and name.endswith(suffix) and name[len(prefix):-len(suffix)].isdigit():
        return dataclasses.replace(cfg, snn_mode="layer", remat=True, time_chunk=int(name[len(prefix):-len(suffix)]))
    raise ValueError(f"unknown remat variant {name!r}: use layer, step, step_remat or layer_chunk<k>_remat")


def sweep(cfg: ModelConfig, *, resolution: int, batch_size: int, steps: tuple[int, ...], variants: tuple[str, ...],
          repeats: int = 0, timed_steps: tuple[int, ...] = (), log=print) -> list[dict]:
    """One record per (steps, variant): peak bytes of the compiled hybrid step and, for ``timed_steps``, time."""
    records = []
    for num_steps in steps:
        for variant in variants:
            bench = benchmark_train_step("hybrid", remat_variant(cfg, variant), resolution=resolution,
                                         batch_size=batch_size, num_steps=num_steps,
                                         repeats=repeats if num_steps in timed_steps else 0)
            record = dict(bench.to_dict(), variant=variant)
            log(f"T={num_steps:4d} {variant:22s} peak {record['peak_bytes'] / 2**30:6.2f} GiB"
                + ("" if record["median_wall_s"] is None else f"  step {record['median_wall_s']:.2f} s"))
            records.append(record)
    return records
