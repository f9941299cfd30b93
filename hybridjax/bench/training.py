"""Training-step benchmarks of the three stages with the real step functions of :mod:`hybridjax.train`.

A step is ``jit(TRAIN_STEPS[stage], donate_argnums=0)``: value_and_grad of the stage's loss + the Adam
update (the hybrid's ANN is frozen: it sits outside the optimiser and under ``stop_gradient``, so no ANN
backward is computed). The batch is synthetic (sparse random events, landmarks in the image) with the
exact shapes the data loaders produce. FLOPs are counted twice: XLA's cost analysis of the compiled step
(which counts a loop body once) and ``2 x`` the dense conv/dot MACs of the step's jaxpr
(:func:`hybridjax.eval.macs.count_macs`, which multiplies scanned bodies by their length).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.bench.harness import Timing, compile_and_time
from hybridjax.eval.macs import count_macs
from hybridjax.models import ANNUNet, HybridModel, ModelConfig, SNNModel, init_variables
from hybridjax.train.state import StepSettings, TrainState, adam
from hybridjax.train.steps import TRAIN_STEPS

STAGE_MODELS = {"ann": ANNUNet, "snn": SNNModel, "hybrid": HybridModel}


def synthetic_batch(stage: str, cfg: ModelConfig, *, resolution: int, batch_size: int, num_steps: int,
                    event_rate: float = 0.02, seed: int = 0) -> dict:
    """A batch with the loader's keys and shapes: events ``[T,B,H,W,2]`` counts, ANN frames ``[B,H,W,20]``."""
    rng = np.random.default_rng(seed)
    h = w = resolution
    j = cfg.num_joints

    def frame():
        return rng.poisson(0.3, (batch_size, h, w, cfg.ann_in_channels)).astype(np.float32)

    landmarks = rng.uniform(4, resolution - 4, (num_steps, batch_size, j, 2)).astype(np.float32)
    if stage == "ann":
        return {"ann_input": jnp.asarray(frame()), "ann_landmarks": jnp.asarray(landmarks[0])}
    batch = {
        "events": jnp.asarray(rng.poisson(event_rate, (num_steps, batch_size, h, w, cfg.snn_in_channels))
                              .astype(np.float32)),
        "landmarks": jnp.asarray(landmarks),
        "step_has_label": jnp.ones((num_steps,), bool),
    }
    if stage == "hybrid":
        batch["ann_input"] = jnp.asarray(frame())
        batch["ann_input_next"] = jnp.asarray(frame())
    return batch


def initial_state(stage: str, cfg: ModelConfig, *, learning_rate: float = 1e-4, seed: int = 0) -> TrainState:
    """A fresh training state of the stage (the hybrid's ANN frozen, as in training)."""
    variables = init_variables(stage, cfg, jax.random.key(seed))
    params = dict(variables["params"])
    frozen = {"ann": params.pop("ann")} if stage == "hybrid" else {}
    return TrainState.create(model=STAGE_MODELS[stage](cfg), tx=adam(learning_rate),
                             settings=StepSettings(stage=stage), params=params, frozen_params=frozen,
                             batch_stats=dict(variables.get("batch_stats", {})))


@dataclasses.dataclass
class StepBenchmark:
    """A measured training step and what it consumes."""

    stage: str
    resolution: int
    batch_size: int
    num_steps: int  # SNN steps per window (1 for the ANN)
    timing: Timing
    jaxpr_flops: float  # 2 x dense conv/dot MACs of the whole step (forward + backward + update)

    @property
    def windows_per_s(self) -> float | None:
        """Training windows (or ANN frames) the step consumes per second at its median wall time."""
        wall = self.timing.median_wall_s
        return None if wall is None else self.batch_size / wall

    def to_dict(self) -> dict:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "timing"}
        out.update(self.timing.to_dict())
        wall = self.timing.median_wall_s
        out["windows_per_s"] = self.windows_per_s
        out["jaxpr_gflops_per_s"] = None if wall is None else self.jaxpr_flops / wall / 1e9
        return out


def benchmark_train_step(stage: str, cfg: ModelConfig, *, resolution: int, batch_size: int, num_steps: int,
                         repeats: int = 3) -> StepBenchmark:
    """Compiles and times one training step of ``stage`` (state donated, as in training)."""
    if stage not in TRAIN_STEPS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {sorted(TRAIN_STEPS)}")
    state = initial_state(stage, cfg)
    batch = synthetic_batch(stage, cfg, resolution=resolution, batch_size=batch_size, num_steps=num_steps)
    rng = jax.random.key(1)
    step = TRAIN_STEPS[stage]
    flops = 2.0 * count_macs(step, state, batch, rng)

    def carry(args, result):
        return (result[0],) + tuple(args[1:])

    label = f"{stage} train step {resolution}x{resolution} b{batch_size}" + ("" if stage == "ann" else f" T{num_steps}")
    timing = compile_and_time(label, step, (state, batch, rng), repeats=repeats, donate_argnums=(0,), carry=carry)
    return StepBenchmark(stage=stage, resolution=resolution, batch_size=batch_size,
                         num_steps=1 if stage == "ann" else num_steps, timing=timing, jaxpr_flops=flops)
