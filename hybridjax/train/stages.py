"""The stage registry: the one place that knows the training stages.

A :class:`Stage` record says everything the loop, the data loader, the benchmark and the checkpoints need
to know about a stage: the model it trains, the batch fields its steps read, its pure train and evaluation
steps, the parameter collections it keeps frozen, the inputs that initialise its variables, the stages
whose checkpoints it starts from and how. Nothing else branches on a stage's name; a new stage (an
ablation variant of the hybrid, another model) is one more record in :data:`STAGES`.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from hybridjax.models import ANNUNet, HybridModel, ModelConfig, SNNModel
from hybridjax.train import steps
from hybridjax.train.checkpoint import MissingCheckpointError
from hybridjax.train.state import StepSettings, TrainState

# restore(stage name) -> (trained state, step), raising MissingCheckpointError when there is none
Restore = Callable[[str], tuple[TrainState, int]]


def frame_inputs(cfg: ModelConfig, height: int, width: int) -> tuple:
    """``(ann_input [1, H, W, 20],)``: what initialises a model that reads ANN frames."""
    return (jnp.zeros((1, height, width, cfg.ann_in_channels), jnp.float32),)


def event_inputs(cfg: ModelConfig, height: int, width: int) -> tuple:
    """``(events [1, 1, H, W, 2],)``: one step of one window."""
    return (jnp.zeros((1, 1, height, width, cfg.snn_in_channels), jnp.float32),)


def hybrid_inputs(cfg: ModelConfig, height: int, width: int) -> tuple:
    """``(ann_input, events)``."""
    return frame_inputs(cfg, height, width) + event_inputs(cfg, height, width)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One training stage."""

    name: str  # as on the command line (--stage) and the workdir folder
    seed_index: int  # folded into the run's seed for this stage's initialisation, shuffling and step keys
    model: Callable[[ModelConfig], object]  # ModelConfig -> the Flax module the stage trains
    train_fields: tuple[str, ...]  # batch fields its train step reads (the loader collates these)
    eval_fields: tuple[str, ...]  # batch fields its evaluation step reads
    train_step: Callable  # pure (state, batch, rng) -> (state, metrics)
    eval_step: Callable  # pure (state, batch) -> error sums and counts
    dummy_inputs: Callable[[ModelConfig, int, int], tuple]  # (config, height, width) -> model.init inputs
    frozen: tuple[str, ...] = ()  # parameter collections used but never updated (outside the optimiser)
    requires: tuple[str, ...] = ()  # stages whose checkpoints must exist before this one starts
    # (config, fresh state, restore, log) -> the state training starts from; None: the fresh state
    warm_start: Callable | None = None
    pure_snn: bool = False  # trains the pure SNN (read-out: BatchNorm + leaky integrator), not a hybrid head

    @property
    def reads_events(self) -> bool:
        """Whether the stage trains on event windows (else on ANN frames)."""
        return "events" in self.train_fields

    @property
    def reads_next_input(self) -> bool:
        """Whether the train step needs the next window's ANN input (the hybrid's membrane loss)."""
        return "ann_input_next" in self.train_fields


def initial_state(stage: Stage, model_config: ModelConfig, key: jax.Array, *, height: int, width: int,
                  tx: optax.GradientTransformation, settings: StepSettings) -> TrainState:
    """A freshly initialised state of ``stage`` for inputs of ``height x width`` (Xavier-normal convs)."""
    model = stage.model(model_config)
    variables = _initialiser(model, stage.dummy_inputs, height, width)(key)
    params = dict(variables["params"])
    frozen = {name: params.pop(name) for name in stage.frozen}
    return TrainState.create(model=model, tx=tx, settings=settings, params=params, frozen_params=frozen,
                             batch_stats=dict(variables.get("batch_stats", {})))


@functools.cache
def _initialiser(model, dummy_inputs, height: int, width: int):
    """Jitted ``key -> variables`` of ``model`` (cached per model and input size: compiled once)."""
    inputs = dummy_inputs(model.config, height, width)
    return jax.jit(lambda key: model.init(key, *inputs))


def transfer_matching(source: dict, target: dict) -> tuple[dict, list[str], list[str]]:
    """``target`` with every leaf replaced by the ``source`` leaf of the same path and shape.

    Returns ``(merged, loaded paths, kept paths)``.
    """
    flat_src = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}
    loaded, kept = [], []

    def pick(path, leaf):
        name = jax.tree_util.keystr(path)
        if name in flat_src and np.shape(flat_src[name]) == np.shape(leaf):
            loaded.append(name)
            return jnp.asarray(flat_src[name], dtype=leaf.dtype)
        kept.append(name)
        return leaf

    return jax.tree_util.tree_map_with_path(pick, target), loaded, kept


def hybrid_warm_start(config, state: TrainState, restore: Restore, log=print) -> TrainState:
    """The hybrid's start: the trained ANN (frozen) and, with ``config.hybrid_from_snn``, the trained SNN's
    weights (matching entries: the pure SNN's head BatchNorm has no hybrid counterpart); with
    ``config.hybrid_zero_head`` the SNN's output head at zero."""
    ann_state, ann_step = restore("ann")
    log(f"hybrid: ANN (frozen) from the ann stage, step {ann_step}")
    params, batch_stats = state.params, state.batch_stats
    if config.hybrid_from_snn:
        try:
            snn_state, snn_step = restore("snn")
        except MissingCheckpointError:
            log("hybrid: no SNN checkpoint, the SNN starts from its fresh initialisation")
        else:
            snn, loaded, kept = transfer_matching(snn_state.params["snn"], params["snn"])
            stats, _, _ = transfer_matching(snn_state.batch_stats["snn"], batch_stats["snn"])
            params = dict(params, snn=snn)
            batch_stats = dict(batch_stats, snn=stats)
            log(f"hybrid: SNN weights from the snn stage, step {snn_step} "
                f"({len(loaded)} tensors loaded, {len(kept)} kept fresh: {', '.join(kept) or 'none'})")
    if config.hybrid_zero_head:
        zeroed = jax.tree_util.tree_map(jnp.zeros_like, params["snn"]["head"])
        params = dict(params, snn=dict(params["snn"], head=zeroed))
        log("hybrid: SNN head set to zero (the hybrid starts as the ANN held over the window)")
    return TrainState.create(model=state.model, tx=state.tx, settings=state.settings, params=params,
                             frozen_params={"ann": ann_state.params["ann"]}, batch_stats=batch_stats)


def snn_warm_start(config, state: TrainState, restore: Restore, log=print) -> TrainState:
    """The pure SNN's start: the fresh state, with ``config.snn_zero_head`` its output BatchNorm (scale and
    bias, before the integrator) at zero, so that its heatmaps start at zero instead of unit-variance noise."""
    if not config.snn_zero_head:
        return state
    head = state.params["snn"]["head"]
    norm = jax.tree_util.tree_map(jnp.zeros_like, head["bn"])
    params = dict(state.params, snn=dict(state.params["snn"], head=dict(head, bn=norm)))
    log("snn: output BatchNorm scale and bias set to zero (the pure SNN starts from an all-zero output)")
    return TrainState.create(model=state.model, tx=state.tx, settings=state.settings, params=params,
                             frozen_params=state.frozen_params, batch_stats=state.batch_stats)


_SEQUENCE = ("events", "landmarks", "step_has_label")

STAGES: dict[str, Stage] = {
    "ann": Stage(
        name="ann", seed_index=0, model=ANNUNet, train_fields=("ann_input", "ann_landmarks"),
        eval_fields=("ann_input", "ann_landmarks"), train_step=steps.ann_train_step, eval_step=steps.ann_eval_step,
        dummy_inputs=frame_inputs,
    ),
    "snn": Stage(
        name="snn", seed_index=1, model=SNNModel, pure_snn=True, train_fields=_SEQUENCE, eval_fields=_SEQUENCE,
        train_step=steps.snn_train_step, eval_step=steps.snn_eval_step, dummy_inputs=event_inputs,
        warm_start=snn_warm_start,
    ),
    "hybrid": Stage(
        name="hybrid", seed_index=2, model=HybridModel, train_fields=("ann_input", "ann_input_next") + _SEQUENCE,
        eval_fields=("ann_input",) + _SEQUENCE, train_step=steps.hybrid_train_step,
        eval_step=steps.hybrid_eval_step, dummy_inputs=hybrid_inputs, frozen=("ann",), requires=("ann",),
        warm_start=hybrid_warm_start,
    ),
}


def stage(name: str) -> Stage:
    """The registered stage ``name`` (ValueError naming the known ones otherwise)."""
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; expected one of {tuple(STAGES)}")
    return STAGES[name]
