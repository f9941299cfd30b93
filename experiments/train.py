"""Train the hybrid ANN-SNN: ann -> snn -> hybrid, then write the evaluation report.

Pick a preset, then override any field::

    python experiments/train.py tiny                       # synthetic data, 2 CPU cores, ~15 min
    python experiments/train.py paper --data-dir /data/dhp19_h5 --workdir runs/paper
    python experiments/train.py tiny --stage hybrid --hybrid.num-steps 100 --workdir runs/tiny

Re-running the same command resumes from the checkpoints in the workdir (also after SIGTERM / Ctrl-C).
"""
from __future__ import annotations

import sys

import jax

from hybridjax.cli import run_cli
from hybridjax.train.config import TrainConfig, parse_cli
from hybridjax.train.loop import train
from hybridjax.workflow import EvaluateArgs, run_evaluation


def main(config: TrainConfig) -> int:
    train(config)  # a SIGTERM / Ctrl-C stop (TrainingInterrupted) exits via run_cli with 128 + signal
    if config.evaluate_at_end and config.stage in ("all", "hybrid") and jax.process_index() == 0:
        run_evaluation(EvaluateArgs(workdir=config.workdir, max_items=config.max_eval_items))
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(parse_cli(sys.argv[1:], description=__doc__)))
