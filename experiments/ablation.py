"""The paper's ablation (what the ANN initialises): trains A-D and the hybrid from scratch, writes one report.

Pick a training preset (the recipe every variant trains with), then override any field::

    python experiments/ablation.py tiny                                  # synthetic, CPU
    python experiments/ablation.py tiny --reuse-workdir runs/tiny        # reuse the main job's stages
    python experiments/ablation.py paper --train.data-dir /data/dhp19_h5 --workdir runs/ablation_paper

Variants: snn (A, pure SNN), output_init (B), state_init (C), full (D, the hybrid), scratch (the hybrid
without the pretrained SNN). The report (table with 95% intervals, the figure redrawn beside the paper's
numbers) goes to <workdir>/report. Re-running the same command resumes.
"""
from __future__ import annotations

import dataclasses

import tyro

from hybridjax.ablation_study import AblationConfig, run_ablation
from hybridjax.cli import run_cli
from hybridjax.train.config import preset_choices


def presets() -> dict[str, tuple[str, AblationConfig]]:
    """One ablation preset per training preset (its recipe), working in runs/ablation_<name>."""
    return {name: (f"the {name} training recipe: {description}",
                   AblationConfig(train=dataclasses.replace(cfg, progress=False),
                                  workdir=cfg.workdir.parent / f"ablation_{name}"))
            for name, (description, cfg) in preset_choices().items()}


def main(config: AblationConfig) -> int:
    run_ablation(config)  # a SIGTERM / Ctrl-C stop exits via run_cli with 128 + signal; re-running resumes
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(tyro.extras.overridable_config_cli(presets(), description=__doc__)))
