"""Evaluate a trained workdir and write the report (markdown, JSON, PNG plots) into <workdir>/report.

    python experiments/evaluate.py --workdir runs/tiny
    python experiments/evaluate.py --workdir runs/paper --which latest --max-items 200

Reads ``<workdir>/config.json`` (written by experiments/train.py), restores the hybrid checkpoint (best
validation MPJPE by default) and, when present, the pure SNN, and evaluates on the test split: the hybrid,
the ANN at every label, the ANN held over the window, the SNN alone (see hybridjax.workflow).
"""
from __future__ import annotations

import tyro

from hybridjax.cli import run_cli
from hybridjax.workflow import EvaluateArgs, run_evaluation

if __name__ == "__main__":
    run_cli(lambda: run_evaluation(tyro.cli(EvaluateArgs, description=__doc__)))
