"""Synchronised BatchNorm: statistics averaged over a named axis equal those of the concatenated batch.

``jax.vmap(..., axis_name=...)`` binds the same collectives (``pmean``/``psum``) as ``jax.pmap`` but runs
in this process's single CPU device, so the shards here are vmapped; the pmapped training step on four
forced devices is checked against the one-device step in tests/test_train_multidevice.py. Comparisons are
in float64, where the spiking thresholds cannot flip on rounding differences.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax.models import HybridModel, ModelConfig, SNNModel, init_variables
from hybridjax.models.layers import batch_norm
from hybridjax.train.state import StepSettings, TrainState, adam
from hybridjax.train.steps import step_model

SHARDS = 4
AXIS = "shards"


def _split(x, axis):
    """``[..., SHARDS * n, ...] -> [..., SHARDS, n, ...]`` along ``axis`` (contiguous shards, like pmap)."""
    return x.reshape(x.shape[:axis] + (SHARDS, x.shape[axis] // SHARDS) + x.shape[axis + 1:])


def _merge(x, axis):
    return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:])


def _max_rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("shape, reduce_axes, batch_axis", [
    ((8, 4, 6, 5), (0, 1, 2), 0),  # [B, H, W, C]: one BatchNorm (state initialisers, step mode)
    ((3, 8, 4, 4, 5), (1, 2, 3), 1),  # [T, B, H, W, C]: statistics per step (layer mode)
])
def test_batch_norm_over_vmapped_shards_equals_global_batch(shape, reduce_axes, batch_axis):
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(1.5, 2.0, shape))
        channels = shape[-1]
        params = {"scale": jnp.asarray(rng.uniform(0.5, 2, channels)), "bias": jnp.asarray(rng.normal(size=channels))}
        stats = {"mean": jnp.zeros(channels), "var": jnp.ones(channels)}
        weight = jnp.asarray(rng.normal(size=shape))
        stat_weight = jnp.asarray(rng.normal(size=(2,) + tuple(shape[a] for a in range(len(shape) - 1)
                                                               if a not in reduce_axes) + (channels,)))

        def stats_loss(b):
            # The loss also depends on the returned statistics, so their gradient path is checked too.
            return jnp.sum(stat_weight[0] * b["mean"]) + jnp.sum(stat_weight[1] * b["var"])

        def whole(x, params):
            y, b = batch_norm(x, params, stats, train=True, reduce_axes=reduce_axes)
            return jnp.sum(weight * y ** 2) + stats_loss(b), (y, b)

        def sharded(axis_name):
            def one_shard(x_d, w_d, params):
                y, b = batch_norm(x_d, params, stats, train=True, reduce_axes=reduce_axes, axis_name=axis_name)
                # Statistics are equal on every shard; each shard adds 1/SHARDS of their loss term.
                partial = jnp.sum(w_d * y ** 2) + stats_loss(b) / SHARDS
                return partial, (y, b)

            def total(x, params):
                parts, (y, b) = jax.vmap(one_shard, in_axes=(batch_axis, batch_axis, None),
                                         out_axes=(0, (batch_axis, 0)), axis_name=axis_name or "unused")(
                    _split(x, batch_axis), _split(weight, batch_axis), params)
                return jnp.sum(parts), (_merge(y, batch_axis), b)
            return total

        (loss_ref, (y_ref, b_ref)), grads_ref = jax.value_and_grad(whole, (0, 1), has_aux=True)(x, params)
        (loss_sync, (y_sync, b_sync)), grads_sync = jax.value_and_grad(sharded(AXIS), (0, 1), has_aux=True)(x, params)
        assert y_sync.dtype == jnp.float64
        np.testing.assert_allclose(y_sync, y_ref, rtol=1e-12, atol=1e-12)
        for name in ("mean", "var"):  # identical on every shard and equal to the global batch's
            for d in range(SHARDS):
                np.testing.assert_allclose(b_sync[name][d], b_ref[name], rtol=1e-12, atol=1e-12)
        # Unbiased variance of the global batch: count = every reduced element of all shards.
        flat = np.moveaxis(np.asarray(x), [*reduce_axes], list(range(len(reduce_axes))))
        flat = flat.reshape((-1,) + flat.shape[len(reduce_axes):])
        np.testing.assert_allclose(b_ref["var"], np.var(flat, axis=0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(loss_sync, loss_ref, rtol=1e-12)
        np.testing.assert_allclose(grads_sync[0], grads_ref[0], rtol=1e-10, atol=1e-12)
        for name in ("scale", "bias"):
            np.testing.assert_allclose(grads_sync[1][name], grads_ref[1][name], rtol=1e-10, atol=1e-12)

        # Without the axis every shard normalises with its own statistics: clearly not the global batch.
        _, (y_local, b_local) = sharded(None)(x, params)
        assert _max_rel(y_local, y_ref) > 1e-2
        assert _max_rel(b_local["var"][0], b_ref["var"]) > 1e-2


def _inputs(t, b, h, w, seed=0):
    rng = np.random.default_rng(seed)
    ann = jnp.asarray(rng.uniform(0, 3, (b, h, w, 20)))
    events = jnp.asarray(rng.poisson(0.6, (t, b, h, w, 2)).astype(np.float64))
    return ann, events


@pytest.mark.parametrize("with_grads", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_hybrid_train_mode_with_synchronised_bn_equals_global_batch(with_grads):
    """Hybrid (SNN blocks and state initialisers), layer mode: vmapped shards == the whole batch.

    The gradient variant compiles two backward passes (~1 min on 2 cores): slow; the pmapped training
    step's gradients are compared with the one-device step in tests/test_train_multidevice.py.
    """
    with jax.enable_x64(True):
        cfg = ModelConfig.preset("tiny")
        ann, events = _inputs(t=2, b=8, h=32, w=32)
        variables = init_variables("hybrid", cfg, jax.random.key(3), jnp.float64)
        weight = jnp.asarray(np.random.default_rng(1).normal(size=(2, 8, 32, 32, cfg.num_joints)))

        def run(config, params, ann_in, events_in, w):
            model = HybridModel(config)
            out, new = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, ann_in, events_in,
                                   train=True, mutable=["batch_stats"])
            loss = jnp.sum(w * out.heatmaps) + sum(jnp.sum(v ** 2) for v in out.v_last.values())
            return loss, (out.heatmaps, new["batch_stats"])

        def whole(params):
            return run(cfg, params, ann, events, weight)

        def sharded(params):
            synced = dataclasses.replace(cfg, batch_norm_axis_name=AXIS)
            losses, (heat, stats) = jax.vmap(
                lambda a, e, w: run(synced, params, a, e, w), in_axes=(0, 1, 1), out_axes=(0, (1, 0)),
                axis_name=AXIS)(_split(ann, 0), _split(events, 1), _split(weight, 1))
            return jnp.sum(losses), (_merge(heat, 1), stats)

        if with_grads:
            (loss_ref, (heat_ref, stats_ref)), grads_ref = jax.jit(jax.value_and_grad(whole, has_aux=True))(
                variables["params"])
            (loss_sync, (heat_sync, stats_sync)), grads_sync = jax.jit(jax.value_and_grad(sharded, has_aux=True))(
                variables["params"])
        else:
            loss_ref, (heat_ref, stats_ref) = jax.jit(whole)(variables["params"])
            loss_sync, (heat_sync, stats_sync) = jax.jit(sharded)(variables["params"])
        np.testing.assert_allclose(loss_sync, loss_ref, rtol=1e-11)
        np.testing.assert_allclose(heat_sync, heat_ref, rtol=1e-10, atol=1e-10)
        moved = 0.0
        for (path, ref), sync, init in zip(jax.tree_util.tree_leaves_with_path(stats_ref),
                                           jax.tree_util.tree_leaves(stats_sync),
                                           jax.tree_util.tree_leaves(variables["batch_stats"]), strict=True):
            for d in range(SHARDS):
                np.testing.assert_allclose(sync[d], ref, rtol=1e-10, atol=1e-12, err_msg=jax.tree_util.keystr(path))
            moved = max(moved, float(np.max(np.abs(ref - init))))
        assert moved > 1e-2  # the running statistics did move in train mode
        if not with_grads:
            return
        # Relative to the largest gradient: a conv bias in front of a BatchNorm has gradient 0 up to rounding.
        scale = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(grads_ref))
        for (path, ref), sync in zip(jax.tree_util.tree_leaves_with_path(grads_ref),
                                     jax.tree_util.tree_leaves(grads_sync), strict=True):
            assert float(np.max(np.abs(np.asarray(sync) - ref))) <= 1e-10 * scale, jax.tree_util.keystr(path)
        assert float(np.max(np.abs(grads_ref["snn"]["up3"]["conv"]["kernel"]))) > 0


def test_pure_snn_step_mode_with_synchronised_bn_equals_global_batch():
    """Pure SNN (incl. the head BatchNorm), step mode: vmapped shards == the whole batch."""
    with jax.enable_x64(True):
        cfg = dataclasses.replace(ModelConfig.preset("tiny_10ms"), snn_mode="step")
        _, events = _inputs(t=3, b=8, h=32, w=32, seed=2)
        variables = init_variables("snn", cfg, jax.random.key(4), jnp.float64)

        def run(config, events_in):
            out, new = SNNModel(config).apply(variables, events_in, train=True, mutable=["batch_stats"])
            return out.heatmaps, new["batch_stats"]

        heat_ref, stats_ref = jax.jit(run, static_argnums=0)(cfg, events)
        synced = dataclasses.replace(cfg, batch_norm_axis_name=AXIS)
        heat_sync, stats_sync = jax.jit(jax.vmap(lambda e: run(synced, e), in_axes=1, out_axes=(1, 0),
                                                 axis_name=AXIS))(_split(events, 1))
        np.testing.assert_allclose(_merge(heat_sync, 1), heat_ref, rtol=1e-10, atol=1e-10)
        head_ref, head_sync = stats_ref["snn"]["head"], stats_sync["snn"]["head"]
        for d in range(SHARDS):
            jax.tree_util.tree_map(lambda s, r, d=d: np.testing.assert_allclose(s[d], r, rtol=1e-10, atol=1e-12),
                                   stats_sync, stats_ref)
        assert float(np.max(np.abs(head_ref["var"] - 1.0))) > 1e-3
        assert float(np.max(np.abs(head_sync["var"][0] - head_ref["var"]))) <= 1e-10 * float(np.max(head_ref["var"]))


def test_step_model_sets_the_axis_only_in_the_traced_copy():
    cfg = ModelConfig.preset("tiny")
    model = SNNModel(cfg)

    def state(axis_name, model=model):
        return TrainState.create(model=model, tx=adam(1e-3), params={}, settings=StepSettings(axis_name=axis_name))

    synced = step_model(state("batch"))
    assert synced.config == dataclasses.replace(cfg, batch_norm_axis_name="batch")
    assert model.config.batch_norm_axis_name is None and cfg.batch_norm_axis_name is None
    assert step_model(state(None)) is model
    # Under jit (no axis) a stored axis name is dropped: there is nothing to average over.
    stored = SNNModel(dataclasses.replace(cfg, batch_norm_axis_name="batch"))
    assert step_model(state(None, stored)).config == cfg
    hybrid = HybridModel(cfg, freeze_ann=False)
    assert step_model(state("batch", hybrid)).freeze_ann is False


def test_model_config_rejects_an_empty_axis_name():
    with pytest.raises(ValueError, match="batch_norm_axis_name"):
        ModelConfig(batch_norm_axis_name="")
