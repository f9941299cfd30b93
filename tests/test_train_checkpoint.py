"""Checkpoints: exact round trip, retention (last N + best), mismatch errors; resume after a crash / SIGTERM."""
import dataclasses
import json
import os
import signal

import jax
import numpy as np
import pytest

from hybridjax.models import ModelConfig
from hybridjax.train import data as data_lib
from hybridjax.train.checkpoint import CheckpointMismatchError, StageCheckpointer
from hybridjax.train.config import DataConfig, StageConfig, TrainConfig
from hybridjax.train.loop import (
    MissingCheckpointError,
    NonFiniteLossError,
    TrainingInterrupted,
    fresh_state,
    restore_stage_state,
    run_stage,
    train,
)


def ann_config(shared_dir, workdir, **stage_overrides) -> TrainConfig:
    stage = StageConfig(learning_rate=1e-3, batch_size=2, num_steps=4, eval_every=0, checkpoint_every=2,
                        log_every=1, **stage_overrides)
    return TrainConfig(
        dataset="dhp19", data_dir=shared_dir / "fixtures" / "dhp19_mini", workdir=workdir, stage="ann",
        model=ModelConfig.preset("tiny_10ms"), data=DataConfig(downsample=8, max_val_items=2),
        ann=stage, progress=False, evaluate_at_end=False, keep_last=2,
    )


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

class ReadHook:
    """Wraps a dataset: ``on_read(n, item) -> item`` sees every item read (n counts reads from 1)."""

    def __init__(self, dataset, on_read):
        self.dataset, self.on_read, self.reads = dataset, on_read, 0

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.reads += 1
        return self.on_read(self.reads, self.dataset[i])


def hook_dataset_reads(monkeypatch, on_read):
    """Makes the training loop read every dataset through :class:`ReadHook`; returns the original builder."""
    build = data_lib.build_dataset
    monkeypatch.setattr(data_lib, "build_dataset",
                        lambda cfg, stage, split, d, **kw: ReadHook(build(cfg, stage, split, d, **kw), on_read))
    return build



def test_round_trip_retention_and_mismatch(tmp_path):
    cfg = TrainConfig(workdir=tmp_path, model=ModelConfig.preset("tiny_10ms"), data=DataConfig(downsample=8))
    state = fresh_state(cfg, "hybrid")
    arrays = jax.device_get(state.arrays())
    ckpt = StageCheckpointer(tmp_path / "ckpt", keep_last=2)
    for step, val in [(1, 9.0), (2, 4.0), (3, None), (4, 6.0), (5, None)]:
        ckpt.save(step, dict(arrays, step=np.int32(step)), {"val_mpjpe": val} if val else None)
    assert ckpt.all_steps() == [2, 4, 5]  # the last two plus the best (step 2, 4.0 px)
    assert ckpt.best_step() == 2 and ckpt.latest_step() == 5
    restored = ckpt.restore(5, state.arrays())
    assert int(restored["step"]) == 5
    assert_trees_equal({k: v for k, v in restored.items() if k != "step"},
                       {k: v for k, v in arrays.items() if k != "step"})
    # Another width: the error names the offending entries and their shapes.
    other = fresh_state(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, snn_widths=(8, 12, 16, 32))),
                          "hybrid")
    pattern = (r"batch_stats/initialisers/down3/bn1/mean: checkpoint has shape \(24,\) float32, "
               r"the configuration expects \(32,\)")
    with pytest.raises(CheckpointMismatchError, match=pattern):
        ckpt.restore(5, other.arrays())
    ckpt.close()


def test_hybrid_without_ann_checkpoint_is_a_clear_error(shared_dir, tmp_path):
    cfg = dataclasses.replace(ann_config(shared_dir, tmp_path), stage="hybrid")
    with pytest.raises(MissingCheckpointError, match="needs a trained ANN"):
        train(cfg)
    with pytest.raises(MissingCheckpointError, match="no snn checkpoint"):
        restore_stage_state(cfg, "snn")


def test_resume_after_crash_matches_uninterrupted_run(shared_dir, tmp_path, monkeypatch):
    data_dir = shared_dir / "fixtures" / "dhp19_mini"
    straight = ann_config(shared_dir, tmp_path / "straight")
    run_stage(straight, "ann", data_dir, log=lambda *_: None)
    reference, _ = restore_stage_state(straight, "ann", "latest")

    # Simulated crash after step 3: the checkpoint of step 2 survives, the rerun resumes from it.
    crashed = ann_config(shared_dir, tmp_path / "crashed")
    with pytest.raises(TrainingInterrupted, match="after step 3"):
        run_stage(crashed, "ann", data_dir, log=lambda *_: None, stop_after=3)
    assert StageCheckpointer(tmp_path / "crashed" / "ann" / "checkpoints").all_steps() == [2]
    messages = []
    run_stage(crashed, "ann", data_dir, log=messages.append)
    assert any("resuming" in m and "step 2" in m for m in messages)
    resumed, _ = restore_stage_state(crashed, "ann", "latest")
    assert_trees_equal(resumed.arrays(), reference.arrays())
    rows = [json.loads(line) for line in (tmp_path / "crashed" / "ann" / "metrics.jsonl").read_text().splitlines()]
    straight_rows = (tmp_path / "straight" / "ann" / "metrics.jsonl").read_text().splitlines()
    assert [r["step"] for r in rows] == [json.loads(line)["step"] for line in straight_rows]  # no duplicates


def test_recreated_states_share_one_compiled_step(tmp_path):
    # jit keys on the state's pytree structure, optimiser included: a resumed or re-created state must equal
    # the first one there, or every resume (and the SIGTERM test below) compiles the train step again.
    cfg = TrainConfig(workdir=tmp_path, model=ModelConfig.preset("tiny_10ms"), data=DataConfig(downsample=8))
    first, again = fresh_state(cfg, "ann"), fresh_state(cfg, "ann")
    assert jax.tree_util.tree_structure(first) == jax.tree_util.tree_structure(again)
    other_lr = dataclasses.replace(cfg, ann=dataclasses.replace(cfg.ann, learning_rate=2e-4))
    assert jax.tree_util.tree_structure(fresh_state(other_lr, "ann")) != jax.tree_util.tree_structure(first)


def test_resume_after_sigterm_matches_uninterrupted_run(shared_dir, tmp_path, monkeypatch):
    data_dir = shared_dir / "fixtures" / "dhp19_mini"
    straight = ann_config(shared_dir, tmp_path / "straight")
    run_stage(straight, "ann", data_dir, log=lambda *_: None)
    reference, _ = restore_stage_state(straight, "ann", "latest")

    # SIGTERM while the second batch is being read: the handler saves the step reached, then stops.
    def sigterm_on_third_read(reads, item):
        if reads == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return item

    build = hook_dataset_reads(monkeypatch, sigterm_on_third_read)
    killed = ann_config(shared_dir, tmp_path / "killed")
    with pytest.raises(TrainingInterrupted, match="SIGTERM") as stop:
        run_stage(killed, "ann", data_dir, log=lambda *_: None)
    assert stop.value.signum == signal.SIGTERM
    saved = StageCheckpointer(tmp_path / "killed" / "ann" / "checkpoints").all_steps()
    assert saved and max(saved) < 4
    monkeypatch.setattr(data_lib, "build_dataset", build)
    run_stage(killed, "ann", data_dir, log=lambda *_: None)
    final, _ = restore_stage_state(killed, "ann", "latest")
    assert_trees_equal(final.arrays(), reference.arrays())


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(shared_dir, tmp_path, monkeypatch):
    def nan_from_the_seventh_read(reads, item):  # steps 0-2 read 6 items with batch 2
        if reads <= 6:
            return item
        return dict(item, ann_input=np.full_like(item["ann_input"], np.nan))

    hook_dataset_reads(monkeypatch, nan_from_the_seventh_read)
    cfg = ann_config(shared_dir, tmp_path)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, prefetch=1))
    with pytest.raises(NonFiniteLossError, match=r"NaN/inf before step 4.*last good checkpoint \(step 2\)"):
        run_stage(cfg, "ann", cfg.data_dir, log=lambda *_: None)
    assert StageCheckpointer(tmp_path / "ann" / "checkpoints").all_steps() == [2]


def test_pretrain_at_10ms_then_fine_tune_starts_from_the_pretrained_weights(shared_dir, tmp_path):
    from hybridjax.models.step_conversion import convert_step_length
    from hybridjax.train.loop import warm_start_state

    step = StageConfig(learning_rate=1e-3, batch_size=2, num_steps=2, eval_every=0, checkpoint_every=2)
    cfg = dataclasses.replace(
        ann_config(shared_dir, tmp_path), stage="snn", pretrain_step_ms=10.0,
        model=dataclasses.replace(ModelConfig.preset("tiny"), step_ms=5.0),
        snn=step, snn_fine_tune=dataclasses.replace(step, num_steps=1), hybrid_fine_tune=step)
    pre, fine = cfg.passes()
    assert pre.model.step_ms == 10.0 and pre.workdir == tmp_path / "pretrain" and fine.model.step_ms == 5.0
    assert fine.snn.num_steps == 1 and fine.warm_start_dir == pre.workdir
    messages = []
    results = train(cfg, log=messages.append)
    assert list(results) == ["snn@10ms", "snn@5ms"]
    assert StageCheckpointer(tmp_path / "pretrain" / "snn" / "checkpoints").all_steps() == [2]
    assert StageCheckpointer(tmp_path / "snn" / "checkpoints").all_steps() == [1]
    assert any("fine-tuning at 5 ms steps" in m for m in messages)
    pretrained, _ = restore_stage_state(pre, "snn", "latest")
    logged = []
    started = warm_start_state(fine, "snn", 1, log=logged.append)
    assert int(started.step) == 0 and started.model.config.step_ms == 5.0
    # the pre-trained weights, moved from 10 ms to 5 ms steps (hybridjax.models.step_conversion)
    converted = convert_step_length(pretrained.params["snn"], fine.model, 10.0, 5.0, pure_snn=True)
    assert_trees_equal(started.params, {"snn": converted})
    assert converted["down1"]["conv"]["kernel"] is not pretrained.params["snn"]["down1"]["conv"]["kernel"]
    assert any("trained at 10 ms; spike gain 2, head gain 1" in m for m in messages + logged)
    assert_trees_equal(started.batch_stats, pretrained.batch_stats)
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_snn_zero_head_starts_the_pure_snn_from_a_zero_output(shared_dir, tmp_path):
    from hybridjax.train.stages import snn_warm_start

    cfg = dataclasses.replace(ann_config(shared_dir, tmp_path), stage="snn", snn_zero_head=True)
    state = snn_warm_start(cfg, fresh_state(cfg, "snn"), restore=None, log=lambda *_: None)
    assert all(not np.any(np.asarray(leaf)) for leaf in jax.tree_util.tree_leaves(state.params["snn"]["head"]["bn"]))
    kernel = state.params["snn"]["head"]["conv"]["kernel"]
    assert np.any(np.asarray(kernel))  # only the output normalisation is zeroed
    events = np.ones((3, 1, 32, 32, 2), np.float32)
    out = state.model.apply(state.variables(state.params), events, train=False)
    np.testing.assert_array_equal(np.asarray(out.heatmaps), 0.0)
