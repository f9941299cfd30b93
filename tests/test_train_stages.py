"""The stage registry and the periodic actions of the training loop, each on its own."""
import dataclasses
import math
import signal

import jax
import jax.numpy as jnp
import pytest

from hybridjax.data.batch import FIELDS
from hybridjax.models import ModelConfig
from hybridjax.train import loop, stages
from hybridjax.train.checkpoint import VAL_METRIC
from hybridjax.train.config import STAGE_ORDER, StageConfig, TrainConfig
from hybridjax.train.state import StepSettings, adam

TINY = ModelConfig.preset("tiny_10ms")


def test_the_registry_knows_every_configured_stage():
    assert tuple(stages.STAGES) == STAGE_ORDER
    assert [s.seed_index for s in stages.STAGES.values()] == [0, 1, 2]  # the seeds of the runs so far
    for record in stages.STAGES.values():
        assert set(record.train_fields) | set(record.eval_fields) <= set(FIELDS), record.name
    hybrid = stages.stage("hybrid")
    assert hybrid.reads_events and hybrid.reads_next_input and hybrid.requires == ("ann",)
    assert not stages.stage("ann").reads_events and not stages.stage("snn").reads_next_input
    with pytest.raises(ValueError, match=r"unknown stage 'nope'; expected one of \('ann', 'snn', 'hybrid'\)"):
        stages.stage("nope")


def test_initial_state_keeps_the_frozen_parts_out_of_the_optimiser():
    state = stages.initial_state(stages.stage("hybrid"), TINY, jax.random.key(0), height=32, width=32,
                                 tx=adam(1e-3), settings=StepSettings())
    assert set(state.params) == {"initialisers", "snn"} and set(state.frozen_params) == {"ann"}
    assert set(state.variables()["params"]) == {"initialisers", "snn", "ann"}
    adam_moments = jax.tree_util.tree_leaves(state.opt_state)
    assert sum(x.size for x in adam_moments) == 2 * sum(x.size for x in jax.tree_util.tree_leaves(state.params)) + 1
    ann = stages.initial_state(stages.stage("ann"), TINY, jax.random.key(0), height=32, width=32, tx=adam(1e-3),
                               settings=StepSettings())
    assert set(ann.params) == {"ann"} and ann.frozen_params == {} and ann.variables().keys() == {"params"}


class _Recorder:
    """Stands in for the logger, the checkpointer and the progress bar; records the calls."""

    directory = "ckpt-dir"

    def __init__(self):
        self.calls = []

    def log(self, step, split, values):
        self.calls.append(("log", step, split))
        return {"loss": 0.5, "mpjpe": 3.0}

    def save(self, step, arrays, metrics, config_json=None):
        self.calls.append(("save", step, metrics))

    def set_postfix(self, **values):
        pass

    def close(self):
        pass


class _State:
    def arrays(self):
        return {}


def _run(total=6, last_good=None, **schedule) -> loop.StageRun:
    sc = StageConfig(learning_rate=1e-3, batch_size=2, **schedule)
    config = TrainConfig(ann=sc, progress=False)
    recorder = _Recorder()
    return loop.StageRun(config=config, stage=stages.stage("ann"), state=_State(), start=0, total=total,
                         loader=None, val_set=None, ckpt=recorder, logger=recorder, num_devices=1,
                         last_good=last_good, metrics={"loss": jnp.asarray(0.5), "mpjpe": jnp.asarray(3.0)})


def _drive(action, run, steps):
    for done in steps:
        action(run, done)
    return run.logger.calls


def test_log_metrics_every_log_every_steps_and_at_the_end():
    run = _run(total=7, log_every=3)
    assert _drive(loop.log_metrics, run, range(1, 8)) == [("log", 3, "train"), ("log", 6, "train"),
                                                        ("log", 7, "train")]


def test_validate_every_eval_every_steps_and_at_the_end(monkeypatch):
    seen = []
    monkeypatch.setattr(loop, "evaluate_state", lambda state, ds, cfg, stage, bs: seen.append(bs) or {VAL_METRIC: 2.5})
    run = _run(total=5, eval_every=2)
    assert _drive(loop.validate, run, range(1, 6)) == [("log", 2, "val"), ("log", 4, "val"), ("log", 5, "val")]
    assert run.validated_at == 5 and run.val_result == {VAL_METRIC: 2.5} and seen == [4, 4, 4]
    never = _run(total=5, eval_every=0)
    assert _drive(loop.validate, never, range(1, 6)) == [("log", 5, "val")]


def test_save_checkpoint_every_checkpoint_every_steps_with_the_metrics_of_that_step():
    run = _run(total=5, checkpoint_every=2)
    run.val_result, run.validated_at = {VAL_METRIC: 1.5}, 4
    assert _drive(loop.save_checkpoint, run, range(1, 6)) == [("save", 2, None), ("save", 4, {VAL_METRIC: 1.5}),
                                                            ("save", 5, None)]
    assert run.last_good == 5


def test_a_non_finite_loss_stops_before_saving():
    run = _run(total=4, last_good=2)
    run.all_finite = jnp.asarray(False)
    with pytest.raises(loop.NonFiniteLossError, match=r"before step 4.*last good checkpoint \(step 2\)"):
        run.save(4)
    assert run.ckpt.calls == []


def test_stop_on_signal_saves_once_and_leaves():
    class Stop:
        signum = None

    stop = Stop()
    run = _run(total=9, last_good=3)
    check = loop.stop_on_signal(stop)
    check(run, 3)
    assert run.ckpt.calls == []
    stop.signum = signal.SIGTERM
    with pytest.raises(loop.TrainingInterrupted, match="SIGTERM at step 4") as stopped:
        check(run, 4)
    assert stopped.value.signum == signal.SIGTERM and run.ckpt.calls == [("save", 4, None)]
    with pytest.raises(loop.TrainingInterrupted):
        check(run, 4)  # already saved at this step: no second checkpoint
    assert run.ckpt.calls == [("save", 4, None)]


def test_crash_after_leaves_only_before_the_end():
    run = _run(total=5)
    crash = loop.crash_after(3)
    crash(run, 2)
    with pytest.raises(loop.TrainingInterrupted, match="simulated crash after step 3"):
        crash(run, 3)
    crash(run, 5)  # the last step finishes normally
    loop.crash_after(None)(run, 4)
    assert math.isnan(run.val_result[VAL_METRIC]) and dataclasses.is_dataclass(run)
