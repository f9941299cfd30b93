"""Pure training and evaluation steps, one per stage.

Every train step has the signature ``step(state, batch, rng) -> (state, metrics)`` and every evaluation
step ``step(state, batch) -> metrics``; both are plain functions of their arguments: what differs between
one device and many lives in the static :class:`~hybridjax.train.state.StepSettings` of the state, and
which steps a stage uses is recorded in the stage registry (:mod:`hybridjax.train.stages`).
:func:`compile_train_step` wraps a step in ``jax.jit`` (one device) or ``jax.pmap`` (all local devices,
replicated state, batch shards), donating the state in both cases.

Losses (SPEC section 3), with targets built on device from the landmarks by :mod:`hybridjax.losses`
(one-hot joint pixel, Gaussian blur sigma 2, divided by its own max):

* ANN:    ``L = MSE(ann(x), target)``.
* SNN:    ``L = sum_t m_t MSE(out_t, target_t) / sum_t m_t`` where ``m_t`` marks the steps that carry a
  label (every step for 10 ms bins, every tenth for 1 ms steps).
* hybrid: ``L = 0.95 * L_out + 0.05 * L_mp`` with ``L_out`` as for the SNN and
  ``L_mp = mean_l MSE(v_init_l(ann_input_next), v_last_l)`` over the 9 LIF layers; the initialisers run on
  the next window's ANN input in train mode and the target is not detached. The ``output_init`` variant
  (:attr:`~hybridjax.models.ModelConfig.hybrid_variant`) has no state initialisers and no ``L_mp``. The
  ANN is frozen (outside the optimiser, see :class:`~hybridjax.train.state.TrainState`).

With ``settings.axis_name`` set (under ``pmap``) the gradients and the metrics are averaged over that axis
with ``jax.lax.pmean``; shards have equal size, so the mean of the shard means is the mean over the global
batch. BatchNorm is synchronised: the train steps trace the model with
``ModelConfig.batch_norm_axis_name = settings.axis_name`` (:func:`step_model`), so every train-mode
BatchNorm (SNN blocks, pure-SNN head, state initialisers) normalises with the mean and variance of the
*global* batch (:func:`hybridjax.models.layers.batch_norm`) and the running statistics are updated with
them; a pmapped step therefore equals the one-device step on the concatenated batch (up to float
rounding). MPJPE is accumulated as (sum of errors, count) and summed, so it is the exact global
NaN-aware mean.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import optax

from hybridjax import losses
from hybridjax.metrics import predicted_landmarks
from hybridjax.train import augment
from hybridjax.train.state import TrainState

Batch = dict
Metrics = dict


# --------------------------------------------------------------------------- targets and errors


def _grid_landmarks(landmarks: jax.Array, downsample: int) -> jax.Array:
    """Full-resolution (u, v) -> (u, v) on the grid the inputs were pooled to (pixel index floor(u / f))."""
    if downsample == 1:
        return landmarks
    return jnp.floor(landmarks / downsample)


def heatmap_targets(landmarks: jax.Array, height: int, width: int, downsample: int = 1) -> jax.Array:
    """``[..., J, 2]`` landmarks (NaN = missing) -> blurred, max-normalised ``[..., H, W, J]`` targets.

    Built separably by :func:`hybridjax.losses.landmark_targets` (two 1-D blurs per joint and one outer
    product) instead of blurring full-size one-hot maps.
    """
    return losses.landmark_targets(_grid_landmarks(landmarks, downsample), height, width)


def error_sum_and_count(pred_uv: jax.Array, true_uv: jax.Array, weight: jax.Array | None = None):
    """Sum of Euclidean pixel errors over valid joints and their number.

    A joint is valid where its true landmark is finite (and ``weight`` > 0, broadcast over the leading
    axes). ``sum / count`` is :func:`hybridjax.metrics.mpjpe_2d`; the pair can be summed across devices.
    """
    valid = jnp.all(jnp.isfinite(true_uv), axis=-1)
    if weight is not None:
        valid = valid & (jnp.reshape(weight, weight.shape + (1,) * (valid.ndim - weight.ndim)) > 0)
    diff = jnp.where(valid[..., None], pred_uv - jnp.nan_to_num(true_uv), 0.0)
    error = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    return jnp.sum(jnp.where(valid, error, 0.0)), jnp.sum(valid).astype(jnp.float32)


# --------------------------------------------------------------------------- cross-device reduction


def _mean_over_devices(tree, axis_name: str | None):
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def _sum_over_devices(tree, axis_name: str | None):
    return tree if axis_name is None else jax.lax.psum(tree, axis_name)


def step_model(state: TrainState):
    """The state's model as a train step traces it: BatchNorm synchronised over ``settings.axis_name``.

    Under ``pmap`` (``axis_name`` set) the model's config gets ``batch_norm_axis_name = axis_name``; under
    ``jit`` it gets None, whatever the stored config says (there is no axis to average over). Only the
    traced copy changes: ``state.model``, the training configuration and what is saved beside the
    checkpoints keep their device-count independent config.
    """
    model, axis = state.model, state.settings.axis_name
    if model.config.batch_norm_axis_name == axis:
        return model
    return model.clone(config=dataclasses.replace(model.config, batch_norm_axis_name=axis))


def _finish(state: TrainState, grads, new_batch_stats, loss_terms: dict, error_sum, count):
    """Averages over devices, applies the optimiser update and assembles the metrics dict.

    ``new_batch_stats`` need no averaging: synchronised BatchNorm (:func:`step_model`) already gives every
    device the global batch statistics, hence the same running averages.
    """
    axis = state.settings.axis_name
    grads = _mean_over_devices(grads, axis)
    loss_terms = _mean_over_devices(loss_terms, axis)
    error_sum, count = _sum_over_devices((error_sum, count), axis)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(
        step=state.step + 1, params=params, batch_stats=new_batch_stats, opt_state=opt_state
    )
    out = dict(loss_terms)
    out["grad_norm"] = optax.tree.norm(grads)
    out["mpjpe"] = error_sum / jnp.maximum(count, 1.0)
    out["mpjpe_count"] = count
    return new_state, out


# --------------------------------------------------------------------------- training steps


def _apply_training(state: TrainState, model, variables: dict, *inputs, **kwargs):
    """``(output, new batch_stats)`` of the model in a training step: BatchNorm in train mode (per-step batch
    statistics, running averages updated), or with ``settings.freeze_batch_norm`` in eval mode (the running
    statistics normalise and are kept; gradients still reach the BatchNorm scales and biases)."""
    if state.settings.freeze_batch_norm:
        return model.apply(variables, *inputs, train=False, **kwargs), variables["batch_stats"]
    out, updated = model.apply(variables, *inputs, train=True, mutable=["batch_stats"], **kwargs)
    return out, updated["batch_stats"]


def ann_train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One Adam step of the ANN on frames: ``batch['ann_input']`` [B,H,W,20], ``['ann_landmarks']`` [B,J,2]."""
    f = state.settings.downsample
    x, landmarks = batch["ann_input"], batch["ann_landmarks"]
    if state.settings.ann_augment_shift is not None:
        x, landmarks = augment.mirror_and_shift(jax.random.fold_in(rng, 1), x, landmarks, f,
                                                state.settings.ann_augment_shift)
    targets = heatmap_targets(landmarks, x.shape[1], x.shape[2], f)

    def loss_fn(params):
        heat = step_model(state).apply(state.variables(params), x, rngs={"dropout": rng})
        return losses.heatmap_mse(heat, targets), heat

    (loss, heat), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    error_sum, count = error_sum_and_count(predicted_landmarks(heat, f), landmarks)
    return _finish(state, grads, state.batch_stats, {"loss": loss}, error_sum, count)


def snn_train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One step of the pure SNN on ``batch['events']`` [T,B,H,W,2] with ``['landmarks']`` [T,B,J,2]."""
    f = state.settings.downsample
    events, mask = batch["events"], batch["step_has_label"]
    targets = heatmap_targets(batch["landmarks"], events.shape[2], events.shape[3], f)

    def loss_fn(params):
        out, batch_stats = _apply_training(state, step_model(state), state.variables(params), events)
        return losses.sequence_loss(out.heatmaps, targets, mask), (out, batch_stats)

    (loss, (out, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    error_sum, count = error_sum_and_count(
        predicted_landmarks(out.heatmaps, f), batch["landmarks"], mask
    )
    terms = {"loss": loss, "spike_rate": jnp.mean(out.spike_rates)}
    return _finish(state, grads, batch_stats, terms, error_sum, count)


def hybrid_train_step(state: TrainState, batch: Batch, rng: jax.Array) -> tuple[TrainState, Metrics]:
    """One step of the hybrid (initialisers + SNN; ANN frozen) with the official 0.95 / 0.05 loss.

    ``batch``: ``ann_input`` and ``ann_input_next`` [B,H,W,20], ``events`` [T,B,H,W,2],
    ``landmarks`` [T,B,J,2], ``step_has_label`` [T].
    """
    settings = state.settings
    f = settings.downsample
    events, mask = batch["events"], batch["step_has_label"]
    targets = heatmap_targets(batch["landmarks"], events.shape[2], events.shape[3], f)
    model = step_model(state)

    def loss_fn(params):
        variables = state.variables(params)
        out, batch_stats = _apply_training(state, model, variables, batch["ann_input"], events)
        if not model.config.initialises_state:
            # output_init (ablation B): no state initialisers, hence no L_mp; the loss is the output term.
            out_loss = losses.sequence_loss(out.heatmaps, targets, mask)
            return settings.output_loss_weight * out_loss, (out, batch_stats, out_loss, jnp.zeros_like(out_loss))
        # The L_mp target: initial membranes from the next window's ANN input, in train mode (the
        # initialisers' BatchNorms see that batch too), gradient kept (official: not detached).
        v_next, batch_stats = _apply_training(state, model, dict(variables, batch_stats=batch_stats),
                                              batch["ann_input_next"], method="initial_states")
        loss, parts = losses.hybrid_loss(
            out.heatmaps, targets, v_next, out.v_last, mask,
            out_weight=settings.output_loss_weight, mp_weight=settings.membrane_loss_weight,
        )
        return loss, (out, batch_stats, parts["out_loss"], parts["mp_loss"])

    (loss, (out, batch_stats, out_loss, mp_loss)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params
    )
    error_sum, count = error_sum_and_count(
        predicted_landmarks(out.heatmaps, f), batch["landmarks"], mask
    )
    terms = {"loss": loss, "out_loss": out_loss, "mp_loss": mp_loss, "spike_rate": jnp.mean(out.spike_rates)}
    return _finish(state, grads, batch_stats, terms, error_sum, count)


# --------------------------------------------------------------------------- evaluation steps


def ann_eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Validation errors of ANN frames in inference mode: ``error_sum`` and ``count`` (summed over devices
    under pmap); MPJPE = error_sum / count."""
    heat = state.model.apply(state.variables(), batch["ann_input"])
    error_sum, count = error_sum_and_count(predicted_landmarks(heat, state.settings.downsample),
                                           batch["ann_landmarks"])
    return _sum_over_devices({"error_sum": error_sum, "count": count}, state.settings.axis_name)


def snn_eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Validation errors of the pure SNN on event windows (see :func:`sequence_errors`)."""
    out = state.model.apply(state.variables(), batch["events"], train=False)
    return sequence_errors(state, out.heatmaps, batch)


def hybrid_eval_step(state: TrainState, batch: Batch) -> Metrics:
    """Validation errors of the hybrid on event windows (see :func:`sequence_errors`)."""
    out = state.model.apply(state.variables(), batch["ann_input"], batch["events"], train=False)
    return sequence_errors(state, out.heatmaps, batch)


def sequence_errors(state: TrainState, heatmaps: jax.Array, batch: Batch) -> Metrics:
    """``error_sum`` and ``count`` over the labelled steps, and ``error_sum_per_step`` / ``count_per_step``
    along the window (inference mode, BatchNorm running statistics; summed over devices under pmap)."""
    pred = predicted_landmarks(heatmaps, state.settings.downsample)
    per_step = jax.vmap(error_sum_and_count)(pred, batch["landmarks"])
    mask = batch["step_has_label"].astype(jnp.float32)
    result = {
        "error_sum": jnp.sum(per_step[0] * mask),
        "count": jnp.sum(per_step[1] * mask),
        "error_sum_per_step": per_step[0] * mask,
        "count_per_step": per_step[1] * mask,
    }
    return _sum_over_devices(result, state.settings.axis_name)


# --------------------------------------------------------------------------- compilation


def compile_train_step(step, num_devices: int):
    """``jax.jit`` (``num_devices == 1``) or ``jax.pmap`` over axis ``'batch'`` of the train ``step``.

    The state is donated. Under pmap the state must be replicated (leading device axis), the batch
    sharded (see :func:`hybridjax.data.batch.shard_for_devices`) and ``rng`` replicated; the state's
    settings must carry ``axis_name='batch'``.
    """
    if num_devices == 1:
        return jax.jit(step, donate_argnums=(0,))
    return jax.pmap(step, axis_name="batch", donate_argnums=(0,))


@functools.cache
def compile_eval_step(step, num_devices: int):
    """``jax.jit`` or ``jax.pmap`` of the evaluation ``step`` (state not donated; compiled once per step)."""
    if num_devices == 1:
        return jax.jit(step)
    return jax.pmap(step, axis_name="batch")
