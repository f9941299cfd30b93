"""Training-step benchmarks of the three stages with the real step functions of :mod:`hybridjax.train`.

A step is ``jit(stage.train_step, donate_argnums=0)`` of the stage's record in the registry
(:mod:`hybridjax.train.stages`): value_and_grad of the stage's loss + the Adam update (the hybrid's ANN is
frozen: it sits outside the optimiser and under ``stop_gradient``, so no ANN backward is computed). The
batch is synthetic (sparse random events, landmarks in the image) with the exact shapes the data loaders
produce. FLOPs are counted twice: XLA's cost analysis of the compiled step (which counts a loop body once)
and ``2 x`` the dense conv/dot MACs of the step's jaxpr (:func:`hybridjax.eval.macs.count_macs`, which
multiplies scanned bodies by their length).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.bench.harness import Timing, compile_and_time
from hybridjax.eval.macs import count_macs
from hybridjax.models import ModelConfig
from hybridjax.train import stages
from hybridjax.train.state import StepSettings, TrainState, adam


def synthetic_batch(stage: str, cfg: ModelConfig, *, resolution: int, batch_size: int, num_steps: int,
                    event_rate: float = 0.02, seed: int = 0) -> dict:
    """The fields the stage's train step reads, with the loader's shapes: events ``[T,B,H,W,2]`` counts,
    ANN frames ``[B,H,W,20]``, landmarks in the image."""
    rng = np.random.default_rng(seed)
    h = w = resolution
    landmarks = rng.uniform(4, resolution - 4, (num_steps, batch_size, cfg.num_joints, 2)).astype(np.float32)
    fields = {
        "ann_input": lambda: rng.poisson(0.3, (batch_size, h, w, cfg.ann_in_channels)),
        "ann_input_next": lambda: rng.poisson(0.3, (batch_size, h, w, cfg.ann_in_channels)),
        "events": lambda: rng.poisson(event_rate, (num_steps, batch_size, h, w, cfg.snn_in_channels)),
        "landmarks": lambda: landmarks,
        "ann_landmarks": lambda: landmarks[0],
    }
    batch = {name: jnp.asarray(fields[name]().astype(np.float32)) for name in stages.stage(stage).train_fields
             if name in fields}
    if "step_has_label" in stages.stage(stage).train_fields:
        batch["step_has_label"] = jnp.ones((num_steps,), bool)
    return batch


def benchmark_state(stage: str, cfg: ModelConfig, *, resolution: int, learning_rate: float = 1e-4,
                    seed: int = 0) -> TrainState:
    """A fresh training state of the stage as training builds it (the hybrid's ANN frozen)."""
    return stages.initial_state(stages.stage(stage), cfg, jax.random.key(seed), height=resolution,
                                width=resolution, tx=adam(learning_rate), settings=StepSettings())


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
    step = stages.stage(stage).train_step  # ValueError naming the stages for an unknown one
    state = benchmark_state(stage, cfg, resolution=resolution)
    batch = synthetic_batch(stage, cfg, resolution=resolution, batch_size=batch_size, num_steps=num_steps)
    rng = jax.random.key(1)
    flops = 2.0 * count_macs(step, state, batch, rng)

    def carry(args, result):
        return (result[0],) + tuple(args[1:])

    label = f"{stage} train step {resolution}x{resolution} b{batch_size}" + ("" if stage == "ann" else f" T{num_steps}")
    timing = compile_and_time(label, step, (state, batch, rng), repeats=repeats, donate_argnums=(0,), carry=carry)
    return StepBenchmark(stage=stage, resolution=resolution, batch_size=batch_size,
                         num_steps=1 if stage == "ann" else num_steps, timing=timing, jaxpr_flops=flops)
