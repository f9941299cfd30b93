"""Training: configuration and presets, the stage registry, per-stage steps (jit / pmap), checkpoints, the loop.

``train(config)`` runs ann -> snn -> hybrid; see :mod:`hybridjax.train.loop` and ``experiments/train.py``; the
stages are the records of :mod:`hybridjax.train.stages`.
"""
from hybridjax.train.config import DataConfig, StageConfig, TrainConfig, paper_preset, preset, tiny_preset
from hybridjax.train.loop import (
    MissingCheckpointError,
    NonFiniteLossError,
    StageResult,
    TrainingInterrupted,
    fresh_state,
    restore_stage_state,
    run_stage,
    train,
)
from hybridjax.train.stages import STAGES, Stage, initial_state
from hybridjax.train.state import StepSettings, TrainState

__all__ = [
    "STAGES", "DataConfig", "MissingCheckpointError", "NonFiniteLossError", "Stage", "StageConfig", "StageResult",
    "StepSettings", "TrainConfig", "TrainState", "TrainingInterrupted", "fresh_state", "initial_state",
    "paper_preset", "preset", "restore_stage_state", "run_stage", "tiny_preset", "train",
]
