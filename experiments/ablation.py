"""The paper's ablation (what the ANN initialises): trains A-D and the hybrid from scratch, writes one report.

Pick a training preset (the recipe every variant trains with), then override any field::

    python experiments/ablation.py tiny_10ms                             # synthetic, CPU, ~10 CPU-min
    python experiments/ablation.py tiny --reuse-workdir runs/tiny        # the main job's recipe, its stages reused
    python experiments/ablation.py paper --train.data-dir /data/dhp19_h5 --workdir runs/ablation_paper

Variants: snn (A, pure SNN), output_init (B), state_init (C), full (D, the hybrid), scratch (the hybrid
without the pretrained SNN). The report (table with 95% intervals, the figure redrawn beside the paper's
numbers) goes to <workdir>/report. Re-running the same command resumes.
"""
from __future__ import annotations

import dataclasses
import pathlib

import tyro

from hybridjax.ablation_study import AblationConfig, run_ablation, tiny_10ms_recipe
from hybridjax.cli import run_cli
from hybridjax.train.config import preset_choices


def presets() -> dict[str, tuple[str, AblationConfig]]:
    """One ablation preset per training preset (its recipe, in runs/ablation_<name>), plus ``tiny_10ms``."""
    choices = {name: (f"the {name} training recipe: {description}",
                      AblationConfig(train=dataclasses.replace(cfg, progress=False),
                                     workdir=cfg.workdir.parent / f"ablation_{name}"))
               for name, (description, cfg) in preset_choices().items()}
    description = " ".join(tiny_10ms_recipe.__doc__.split())
    choices["tiny_10ms"] = (f"the 10 ms CPU recipe of the README's ablation numbers ({description})",
                            AblationConfig(train=tiny_10ms_recipe(), workdir=pathlib.Path("runs/ablation_tiny_10ms")))
    return choices


def main(config: AblationConfig) -> int:
    run_ablation(config)  # a SIGTERM / Ctrl-C stop exits via run_cli with 128 + signal; re-running resumes
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(tyro.extras.overridable_config_cli(presets(), description=__doc__)))
