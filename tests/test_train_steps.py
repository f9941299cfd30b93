"""One training step per stage on the DHP19 fixture with the tiny model (inputs pooled to 32 x 32)."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hybridjax import losses
from hybridjax.data.loader import BatchLoader
from hybridjax.metrics import predicted_landmarks
from hybridjax.models import ModelConfig
from hybridjax.train import data as data_lib
from hybridjax.train import steps
from hybridjax.train.config import DataConfig, StageConfig, TrainConfig
from hybridjax.train.loop import fresh_state
from hybridjax.train.stages import stage as stage_record

DOWNSAMPLE = 8


def fixture_config(shared_dir, workdir="unused") -> TrainConfig:
    stage = StageConfig(learning_rate=1e-3, batch_size=2, num_steps=2)
    return TrainConfig(
        dataset="dhp19", data_dir=shared_dir / "fixtures" / "dhp19_mini", workdir=pathlib.Path(workdir),
        model=ModelConfig.preset("tiny_10ms"), data=DataConfig(downsample=DOWNSAMPLE, max_val_items=2),
        ann=stage, snn=stage, hybrid=stage, progress=False, evaluate_at_end=False,
    )


def first_batch(config, stage):
    dataset = data_lib.build_dataset(config, stage, "train", config.data_dir)
    loader = BatchLoader(dataset, 2, fields=stage_record(stage).train_fields, seed=config.seed, downsample=DOWNSAMPLE)
    return loader.batch(0)


def leaves_differ(a, b):
    return [not np.array_equal(np.asarray(x), np.asarray(y))
            for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)]


@pytest.mark.parametrize("stage", ["ann", "snn"])
def test_one_step_changes_every_parameter(shared_dir, stage):
    config = fixture_config(shared_dir)
    state = fresh_state(config, stage)
    before = jax.device_get(state.arrays())
    batch = first_batch(config, stage)
    new_state, metrics = jax.jit(stage_record(stage).train_step)(state, batch, jax.random.PRNGKey(0))
    assert np.isfinite(float(metrics["loss"])) and float(metrics["loss"]) > 0
    assert int(new_state.step) == 1
    changed = leaves_differ(before["params"], new_state.params)
    assert all(changed), f"{changed.count(False)} parameter tensors did not move"
    if stage == "snn":  # BatchNorm running statistics are updated in train mode
        assert all(leaves_differ(before["batch_stats"], new_state.batch_stats))
    assert float(metrics["mpjpe_count"]) > 0 and np.isfinite(float(metrics["mpjpe"]))


def test_hybrid_step_keeps_ann_frozen(shared_dir):
    config = fixture_config(shared_dir)
    state = fresh_state(config, "hybrid")
    assert set(state.params) == {"initialisers", "snn"} and set(state.frozen_params) == {"ann"}
    # Adam holds moments for the trainable tree only.
    opt_paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]]
    assert opt_paths and not any("'ann'" in p for p in opt_paths)
    assert any("'initialisers'" in p for p in opt_paths) and any("'snn'" in p for p in opt_paths)
    before = jax.device_get(state.arrays())
    batch = first_batch(config, "hybrid")
    assert batch["events"].shape[1:] == (2, 32, 32, 2) and batch["ann_input_next"].shape == (2, 32, 32, 20)
    new_state, metrics = jax.jit(steps.hybrid_train_step)(state, batch, jax.random.PRNGKey(0))
    for name in ("loss", "out_loss", "mp_loss"):
        assert np.isfinite(float(metrics[name])), name
    # The loss is the official 0.95 / 0.05 mix of its parts.
    np.testing.assert_allclose(float(metrics["loss"]),
                               0.95 * float(metrics["out_loss"]) + 0.05 * float(metrics["mp_loss"]), rtol=1e-5)
    assert all(leaves_differ(before["params"], new_state.params))
    assert not any(leaves_differ(before["frozen_params"], new_state.frozen_params))
    assert all(leaves_differ(before["batch_stats"]["initialisers"], new_state.batch_stats["initialisers"]))


def test_sequence_targets_only_labelled_steps_count(shared_dir):
    """The SNN loss equals the per-step MSE averaged over the labelled steps, computed independently."""
    config = fixture_config(shared_dir)
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, bin_mode="exact"),
                                 model=ModelConfig.preset("tiny"))  # 1 ms steps: labels every 10th step
    batch = first_batch(config, "snn")
    mask = batch["step_has_label"]
    assert mask.shape == (100,) and mask.sum() == 10
    state = fresh_state(config, "snn")
    out = state.model.apply(state.variables(), batch["events"], train=True, mutable=["batch_stats"])[0]
    targets = steps.heatmap_targets(jnp.asarray(batch["landmarks"]), 32, 32, DOWNSAMPLE)
    per_step = [float(losses.heatmap_mse(out.heatmaps[t], targets[t])) for t in np.flatnonzero(mask)]
    _, metrics = jax.jit(steps.snn_train_step)(state, batch, jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(metrics["loss"]), np.mean(per_step), rtol=1e-5)


def test_targets_and_errors_on_the_pooled_grid():
    landmarks = jnp.array([[[100.0, 140.0], [np.nan, np.nan]]])  # [B=1, J=2, 2] full-resolution (u, v)
    targets = steps.heatmap_targets(landmarks, 32, 32, downsample=8)
    assert targets.shape == (1, 32, 32, 2)
    # floor(100 / 8) = 12 (column), floor(140 / 8) = 17 (row); the missing joint has an all-zero map.
    assert float(targets[0, 17, 12, 0]) == 1.0 and float(jnp.max(targets[..., 1])) == 0.0
    pred = predicted_landmarks(targets, downsample=8)
    np.testing.assert_allclose(np.asarray(pred[0, 0]), [12 * 8 + 3.5, 17 * 8 + 3.5])
    total, count = steps.error_sum_and_count(pred, landmarks)
    assert float(count) == 1.0
    np.testing.assert_allclose(float(total), np.hypot(99.5 - 100.0, 139.5 - 140.0), rtol=1e-6)


def test_ann_augmentation_moves_frames_and_landmarks_together():
    from hybridjax.train import augment

    f, width, frames = 4, 16, 16
    rng = np.random.default_rng(0)
    x = np.zeros((frames, width, width, 1), np.float32)
    landmarks = np.zeros((frames, 13, 2), np.float32)
    for b in range(frames):  # joint j marks its own pooled cell with the value 100 + j
        for j, cell in enumerate(rng.choice(width * width, 13, replace=False)):
            row, col = divmod(int(cell), width)
            x[b, row, col, 0] = 100 + j
            landmarks[b, j] = [col * f + rng.integers(0, f), row * f + rng.integers(0, f)]
    xa, la = map(np.asarray, augment.mirror_and_shift(jax.random.key(3), jnp.asarray(x), jnp.asarray(landmarks),
                                                      f, 3))
    mirrored = 0
    for b in range(frames):
        valid = [j for j in range(13) if np.isfinite(la[b, j]).all()]
        read = {j: xa[b, int(la[b, j, 1] // f), int(la[b, j, 0] // f), 0] for j in valid}
        as_is = all(read[j] == 100 + j for j in valid)
        as_mirror = all(read[j] == 100 + augment.MIRROR_JOINTS[j] for j in valid)
        assert as_is or as_mirror, b  # every joint sits on the cell its source joint marked
        mirrored += as_mirror and not as_is
        assert np.isnan(la[b]).any() == (len(valid) < 13)
    assert 0 < mirrored < frames


@pytest.mark.parametrize("stage", ["snn", "hybrid"])
def test_frozen_batch_norm_trains_with_the_running_statistics_and_keeps_them(shared_dir, stage):
    config = fixture_config(shared_dir)
    config = dataclasses.replace(config, **{stage: dataclasses.replace(config.stage_config(stage),
                                                                        freeze_batch_norm=True)})
    state = fresh_state(config, stage)
    assert state.settings.freeze_batch_norm
    batch = first_batch(config, stage)
    inputs = (batch["events"],) if stage == "snn" else (batch["ann_input"], batch["events"])
    # running variances of 0.01: eval-mode BatchNorm (10x the currents of unit variance) differs from train
    # mode, and every layer fires, so that every parameter gets a gradient
    stats = jax.tree_util.tree_map_with_path(
        lambda path, s: s * 0.01 if jax.tree_util.keystr(path).endswith("['var']") else s, state.batch_stats)
    state = state.replace(batch_stats=stats)
    before = jax.device_get(state.arrays())
    new_state, metrics = jax.jit(stage_record(stage).train_step)(state, batch, jax.random.PRNGKey(0))
    assert not any(leaves_differ(before["batch_stats"], new_state.batch_stats))
    assert all(leaves_differ(before["params"], new_state.params))
    # the loss is the eval-mode model's loss (what evaluation will see), not the train-mode one
    f = DOWNSAMPLE
    events, mask = batch["events"], batch["step_has_label"]
    targets = steps.heatmap_targets(batch["landmarks"], events.shape[2], events.shape[3], f)
    heat = state.model.apply(state.variables(), *inputs, train=False).heatmaps
    expected = losses.sequence_loss(heat, targets, mask)
    if stage == "hybrid":
        expected = config.output_loss_weight * expected
        np.testing.assert_allclose(float(metrics["out_loss"]), float(losses.sequence_loss(heat, targets, mask)),
                                   rtol=1e-5)
    else:
        np.testing.assert_allclose(float(metrics["loss"]), float(expected), rtol=1e-5)
    train_mode = state.model.apply(state.variables(), *inputs, train=True, mutable=["batch_stats"])[0].heatmaps
    assert not np.allclose(np.asarray(train_mode), np.asarray(heat), atol=1e-4)
