"""Training: configuration and presets, per-stage steps (jit / pmap), checkpoints, the loop.

``train(config)`` runs ann -> snn -> hybrid; see :mod:`hybridjax.train.loop` and ``experiments/train.py``.
"""
from hybridjax.train.config import DataConfig, StageConfig, TrainConfig, paper_preset, preset, tiny_preset
from hybridjax.train.loop import (
    MissingCheckpointError,
    NonFiniteLossError,
    StageResult,
    TrainingInterrupted,
    restore_stage_state,
    run_stage,
    train,
)
from hybridjax.train.state import StepSettings, TrainState

__all__ = [
    "DataConfig", "MissingCheckpointError", "NonFiniteLossError", "StageConfig", "StageResult", "StepSettings",
    "TrainConfig", "TrainState", "TrainingInterrupted", "paper_preset", "preset", "restore_stage_state",
    "run_stage", "tiny_preset", "train",
]
