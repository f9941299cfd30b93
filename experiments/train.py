"""Train the hybrid ANN-SNN: ann -> snn -> hybrid, then write the evaluation report.

The main job (synthetic DHP19, SNN at 1 ms steps after 10 ms pre-training; 2 CPU cores: 10 min 38 s from a fresh
clone incl. install and data generation on the quiet machine, 1032 CPU-s; hybrid 9.13 px, ANN every label 9.16, ANN held
10.04, SNN alone 40.44, pure SNN 29.59 over the 158 camera-3 test windows, intervals in the README)::

    python experiments/train.py

The preset is an option (``--preset NAME`` or NAME first) with a default per data set: ``paper`` for
``--dataset dhp19`` and ``--dataset h36m``, ``tiny`` for the synthetic data (the default). Override any field::

    python experiments/train.py --dataset dhp19                       # paper recipe, data in data/dhp19
    python experiments/train.py --dataset dhp19 --data-dir /data/dhp19_h5 --workdir runs/paper
    python experiments/train.py tiny --stage hybrid --hybrid-fine-tune.num-steps 20 --workdir runs/tiny

Without data at the data folder it stops with one message saying where it looked and how to get DHP19.
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
        run_evaluation(EvaluateArgs(workdir=config.workdir, max_items=config.max_eval_items,
                                    window_ms=config.eval_window_ms))
    return 0


if __name__ == "__main__":
    run_cli(lambda: main(parse_cli(sys.argv[1:], description=__doc__)))
