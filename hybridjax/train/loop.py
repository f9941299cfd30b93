"""The training loop: ``train(config)`` runs the stages ann -> snn -> hybrid with checkpoints and resume.

Per stage (folder ``<workdir>/<stage>``): ``config.json`` (the resolved configuration), ``checkpoints/``
(orbax; last N + best validation MPJPE), ``metrics.jsonl`` and ``tensorboard/``. A stage whose checkpoint
already reached its final step is skipped, so re-running the same command after a crash, a SIGTERM or a
Ctrl-C continues where the run stopped and ends with the same parameters as an uninterrupted run (batches
and step keys are functions of (seed, step), see :mod:`hybridjax.data.loader`).

What a stage trains and how it starts (the hybrid: the ANN frozen from ``<workdir>/ann`` and, when
``hybrid_from_snn``, the SNN weights from ``<workdir>/snn``) is in its record of the stage registry
(:mod:`hybridjax.train.stages`). :func:`run_stage` is a short loop: one train step, then the periodic actions
(:func:`log_metrics`, :func:`validate`, :func:`save_checkpoint`, :func:`stop_on_signal`), each a function of the
:class:`StageRun` and the number of steps done.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import signal
import threading
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm.auto import tqdm

from hybridjax.data.batch import shard_for_devices
from hybridjax.data.loader import BatchLoader, spread_indices
from hybridjax.errors import ConfigError, Interrupted, UserError
from hybridjax.models.step_conversion import convert_step_length, step_gains
from hybridjax.train import data as data_lib
from hybridjax.train import distributed
from hybridjax.train import stages as stage_lib
from hybridjax.train.checkpoint import CONFIG_FILE, VAL_METRIC, MissingCheckpointError, StageCheckpointer
from hybridjax.train.config import ResumeConfigError, StageConfig, TrainConfig, resume_differences
from hybridjax.train.logging import MetricLogger
from hybridjax.train.stages import Stage
from hybridjax.train.state import StepSettings, TrainState, adam
from hybridjax.train.steps import compile_eval_step, compile_train_step

__all__ = ["MissingCheckpointError", "NonFiniteLossError", "StageResult", "TrainingInterrupted", "fresh_state",
           "restore_stage_state", "run_stage", "train"]

VALIDATION_WINDOW_MS = 100  # SNN / hybrid validation windows during training (the training window length)


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Interrupted):
    """SIGTERM / SIGINT arrived; a checkpoint was saved and the run stopped (re-run to resume)."""


# ------------------------------------------------------------------------------------ states and checkpoints


def input_hw(config: TrainConfig) -> tuple[int, int]:
    """``(height, width)`` of the network input: the crop (DHP19 256 x 256, Event-H3.6M 256 x 320) pooled."""
    height, width = (256, 320) if config.dataset == "h36m" else (256, 256)
    return height // config.data.downsample, width // config.data.downsample


def fresh_state(config: TrainConfig, stage: str, num_devices: int = 1) -> TrainState:
    """A freshly initialised state of ``stage`` (:func:`hybridjax.train.stages.initial_state` with the
    configuration's input size, optimiser, step settings and seed-derived key)."""
    record = stage_lib.stage(stage)
    sc = config.stage_config(stage)
    settings = StepSettings(
        downsample=config.data.downsample, output_loss_weight=config.output_loss_weight,
        membrane_loss_weight=config.membrane_loss_weight, axis_name="batch" if num_devices > 1 else None,
        ann_augment_shift=config.ann_augment_shift if stage == "ann" else None,
        freeze_batch_norm=sc.freeze_batch_norm,
    )
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), record.seed_index)
    height, width = input_hw(config)
    return stage_lib.initial_state(record, config.model, key, height=height, width=width,
                                   tx=adam(sc.learning_rate, sc.grad_clip_norm), settings=settings)


def stage_dir(config: TrainConfig, stage: str) -> pathlib.Path:
    return pathlib.Path(config.workdir) / stage


def checkpointer_for(config: TrainConfig, stage: str, *, read_only: bool = False) -> StageCheckpointer:
    return StageCheckpointer(stage_dir(config, stage) / "checkpoints", config.keep_last, read_only=read_only)


def restore_stage_state(config: TrainConfig, stage: str, which: str = "best", num_devices: int = 1, log=print):
    """``(state, step)`` of a trained stage from the workdir: ``which`` = "best" (validation MPJPE, falling
    back to the latest) or "latest"; a damaged checkpoint is reported and the newest good one used instead.
    Raises :class:`MissingCheckpointError` when there is none."""
    folder = stage_dir(config, stage) / "checkpoints"
    if not folder.is_dir() or not any(p.name.isdigit() for p in folder.iterdir()):
        raise MissingCheckpointError(
            f"no {stage} checkpoint in {folder}: train that stage first "
            f"(python experiments/train.py ... --stage {stage} --workdir {config.workdir})"
        )
    ckpt = checkpointer_for(config, stage)
    state = fresh_state(config, stage, num_devices)
    try:
        step, arrays = ckpt.restore_newest_good(state.arrays(), first=ckpt.best_step() if which == "best" else None,
                                                log=log)
    finally:
        ckpt.close()
    return state.with_arrays(arrays), step


def start_state(config: TrainConfig, stage: Stage, ckpt: StageCheckpointer, num_devices: int, log
                ) -> tuple[TrainState, int | None]:
    """``(state, restored step)`` a stage trains from: its newest good checkpoint (resume; damaged newer ones
    are moved aside), else its warm start, else fresh (step None)."""
    state = fresh_state(config, stage.name, num_devices)
    if config.resume and ckpt.all_steps():
        step, arrays = ckpt.restore_newest_good(state.arrays(), log=log, move_damaged=jax.process_index() == 0)
        log(f"{stage.name}: resuming from {ckpt.directory} step {step}")
        return state.with_arrays(arrays), step
    if config.warm_start_dir is not None:  # the fine-tuning pass of pretrain_step_ms
        return warm_start_state(config, stage.name, num_devices, log), None
    if stage.warm_start is None:
        return state, None
    restore = functools.partial(_restore_best, config, log=log)
    return stage.warm_start(config, state, restore, log), None


def warm_start_state(config: TrainConfig, stage: str, num_devices: int, log=print) -> TrainState:
    """A fresh state (step 0, fresh optimiser) with the best weights and BatchNorm statistics of ``stage`` in
    ``config.warm_start_dir`` (the pre-training pass: same parameter shapes, another SNN step length)."""
    source = dataclasses.replace(config, workdir=config.warm_start_dir)
    trained, step = restore_stage_state(source, stage, "best", log=log)
    state = fresh_state(config, stage, num_devices)
    from_ms, to_ms = trained_step_ms(source, stage, step), config.model.step_ms
    params = dict(trained.params)
    pure_snn = stage_lib.stage(stage).pure_snn
    params["snn"] = convert_step_length(params["snn"], config.model, from_ms, to_ms, pure_snn=pure_snn)
    spike_gain, head_gain = step_gains(config.model, from_ms, to_ms, pure_snn=pure_snn)
    log(f"{stage}: fine-tuning at {to_ms:g} ms steps from {stage_dir(source, stage)} step {step} (trained at "
        f"{from_ms:g} ms; spike gain {spike_gain:.4g}, head gain {head_gain:.4g}, hybridjax.models.step_conversion)")
    return TrainState.create(model=state.model, tx=state.tx, settings=state.settings, params=params,
                             frozen_params=trained.frozen_params, batch_stats=trained.batch_stats)


def trained_step_ms(config: TrainConfig, stage: str, step: int) -> float:
    """The SNN step length checkpoint ``step`` of ``stage`` was trained at (its stored configuration; the
    stage folder's config.json for checkpoints written without one)."""
    folder = stage_dir(config, stage)
    for path in (folder / "checkpoints" / str(step) / CONFIG_FILE, folder / "config.json"):
        if path.is_file():
            return float(json.loads(path.read_text())["model"]["step_ms"])
    raise MissingCheckpointError(f"{folder / 'checkpoints' / str(step)}: no stored configuration, so the SNN step "
                                 "length it was trained at is unknown")


def _restore_best(config: TrainConfig, stage: str, log=print) -> tuple[TrainState, int]:
    return restore_stage_state(config, stage, "best", log=log)


def changed_settings(config: TrainConfig, stage: str, ckpt: StageCheckpointer, step: int) -> list[str]:
    """The settings that differ from those checkpoint ``step`` was trained with (see
    :func:`hybridjax.train.config.resume_differences`); raises :class:`ResumeConfigError` listing them unless
    ``config.force_resume``."""
    stored = ckpt.stored_config(step)
    if stored is None:  # a checkpoint written before configurations were stored with it
        legacy = stage_dir(config, stage) / "config.json"
        stored = legacy.read_text() if legacy.is_file() else None
    if stored is None:
        return []
    changed = resume_differences(json.loads(stored), json.loads(config.to_json()), stage)
    if changed and not config.force_resume:
        raise ResumeConfigError(
            f"{stage}: the checkpoint {ckpt.directory / str(step)} was trained with other settings:\n  "
            + "\n  ".join(changed)
            + "\nRe-run with the original settings, use a fresh --workdir, or add --force-resume to continue "
              "anyway (recorded in metrics.jsonl).")
    return changed


# ------------------------------------------------------------------------------------ signals


class _StopRequest:
    """Records SIGTERM / SIGINT so that the loop can save a checkpoint before leaving."""

    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


@dataclasses.dataclass
class StageResult:
    """Summary of a trained stage."""

    stage: str
    final_step: int
    val_mpjpe: float
    best_step: int | None
    best_val_mpjpe: float | None
    checkpoint_dir: str
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def evaluate_state(state: TrainState, dataset, config: TrainConfig, stage: Stage, batch_size: int) -> dict:
    """Validation MPJPE (pixels of the 256 crop) of a single-device state over the validation subset."""
    state = state.replace(settings=dataclasses.replace(state.settings, axis_name=None))
    fn = compile_eval_step(stage.eval_step, 1)
    error, count, per_step_error, per_step_count = 0.0, 0.0, None, None
    loader = BatchLoader(dataset, batch_size, fields=stage.eval_fields, shuffle=False,
                         items=spread_indices(len(dataset), config.data.max_val_items),
                         downsample=config.data.downsample, num_workers=config.data.num_workers,
                         prefetch=config.data.prefetch)
    with loader:
        outputs = [jax.device_get(fn(state, batch)) for batch in loader]
    for out in outputs:
        error += float(out["error_sum"])
        count += float(out["count"])
        if "error_sum_per_step" in out:
            e, c = np.asarray(out["error_sum_per_step"]), np.asarray(out["count_per_step"])
            per_step_error = e if per_step_error is None else per_step_error + e
            per_step_count = c if per_step_count is None else per_step_count + c
    result = {VAL_METRIC: error / count if count else math.nan, "val_joints": count}
    if per_step_error is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            result["val_mpjpe_per_step"] = (per_step_error / per_step_count).tolist()
    return result


# ------------------------------------------------------------------------------------ one stage


@dataclasses.dataclass
class StageRun:
    """What one stage's loop reads and updates: the state, its data, checkpointer, logger and bookkeeping."""

    config: TrainConfig
    stage: Stage
    state: TrainState
    start: int  # the step training starts at (0, or the resumed checkpoint's)
    total: int  # the step training ends at
    loader: BatchLoader
    val_set: object  # the validation windows
    ckpt: StageCheckpointer
    logger: MetricLogger
    num_devices: int  # local devices (> 1: pmap with a replicated state)
    last_good: int | None  # step of the latest checkpoint, all losses finite up to it
    bar: tqdm | None = None
    step_fn: Callable | None = None
    base_key: jax.Array | None = None
    metrics: dict | None = None  # of the latest step (on device)
    all_finite: jax.Array = dataclasses.field(default_factory=lambda: jnp.asarray(True))
    val_result: dict = dataclasses.field(default_factory=lambda: {VAL_METRIC: math.nan})
    validated_at: int | None = None  # step of the latest validation

    @property
    def sc(self) -> StageConfig:
        return self.config.stage_config(self.stage.name)

    @property
    def replicated(self) -> bool:
        return self.num_devices > 1

    def host_state(self) -> TrainState:
        """The state on the host (the first replica's copy under pmap)."""
        if not self.replicated:
            return self.state
        return self.state.with_arrays(distributed.unreplicate(self.state.arrays()))

    def train_step(self, step: int, batch: dict) -> None:
        """One optimiser update with the batch and the key of global step ``step``."""
        rng = jax.random.fold_in(self.base_key, step)
        if self.replicated:
            batch = shard_for_devices(batch, self.num_devices)
            rng = distributed.replicated_rng(rng, self.num_devices)
        self.state, self.metrics = self.step_fn(self.state, batch, rng)
        self.all_finite = self.all_finite & jnp.isfinite(self.host_metric("loss", on_device=True))
        if self.bar is not None:
            self.bar.update(1)

    def host_metric(self, name: str, on_device: bool = False):
        value = self.metrics[name][0] if self.replicated else self.metrics[name]
        return value if on_device else float(np.asarray(value))

    def check_finite(self, step: int) -> None:
        """Raises :class:`NonFiniteLossError` when a loss up to ``step`` was NaN or infinite."""
        if not bool(jax.device_get(self.all_finite)):
            name = self.stage.name
            kept = (f"The last good checkpoint (step {self.last_good}) is kept in {self.ckpt.directory}"
                    if self.last_good is not None else "No checkpoint was saved yet")
            raise NonFiniteLossError(
                f"{name}: the loss became NaN/inf before step {step}; stopped. {kept}. Lower {name}.learning_rate "
                f"or set {name}.grad_clip_norm, then re-run (it resumes from the newest checkpoint that passes "
                "verification)."
            )

    def save(self, step: int) -> None:
        """Checkpoints the state at ``step`` (with the validation metrics when they are of that step)."""
        self.check_finite(step)
        metrics = self.val_result if self.validated_at == step else None
        self.ckpt.save(step, self.host_state().arrays(), metrics, config_json=self.config.to_json())
        self.last_good = step

    def close(self) -> None:
        """On every path out of a stage: the loader's workers joined first, then every thread's h5 handles
        closed (none is left to be freed during interpreter shutdown, which could wait on a lock forever)."""
        self.loader.close()
        for dataset in (self.loader.dataset, self.val_set):
            if hasattr(dataset, "close"):
                dataset.close()
        if self.bar is not None:
            self.bar.close()
        self.logger.close()
        self.ckpt.close()


def log_metrics(run: StageRun, done: int) -> None:
    """Every ``log_every`` steps and at the end: the training metrics to JSONL / TensorBoard."""
    if done % run.sc.log_every and done != run.total:
        return
    run.check_finite(done)
    host = jax.device_get(run.metrics)
    host = {k: (np.asarray(v)[0] if run.replicated else v) for k, v in host.items()}
    row = run.logger.log(done, "train", host)
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{row['loss']:.3g}", mpjpe=f"{row['mpjpe']:.2f}")


def validate(run: StageRun, done: int) -> None:
    """Every ``eval_every`` steps (0: never) and at the end: the validation MPJPE."""
    if done != run.total and not (run.sc.eval_every and done % run.sc.eval_every == 0):
        return
    run.check_finite(done)
    run.val_result = evaluate_state(run.host_state(), run.val_set, run.config, run.stage, max(run.sc.batch_size, 4))
    run.validated_at = done
    run.logger.log(done, "val", {k: v for k, v in run.val_result.items() if not isinstance(v, list)})
    if run.bar is not None:
        run.bar.set_postfix(loss=f"{run.host_metric('loss'):.3g}", val_mpjpe=f"{run.val_result[VAL_METRIC]:.2f}")


def crash_after(stop_after: int | None) -> Callable[[StageRun, int], None]:
    """An action that leaves (without the final checkpoint) once ``stop_after`` steps are done: a simulated
    crash, used by the resume tests (None: never)."""
    def crash(run: StageRun, done: int) -> None:
        if stop_after is not None and stop_after <= done < run.total:
            raise TrainingInterrupted(f"{run.stage.name}: simulated crash after step {done}", 0)

    return crash


def save_checkpoint(run: StageRun, done: int) -> None:
    """Every ``checkpoint_every`` steps and at the end: a checkpoint."""
    if done == run.total or done % run.sc.checkpoint_every == 0:
        run.save(done)


def stop_on_signal(stop: _StopRequest) -> Callable[[StageRun, int], None]:
    """An action that, after SIGTERM / SIGINT, saves (unless this step is saved already) and leaves."""
    def check(run: StageRun, done: int) -> None:
        if stop.signum is None:
            return
        if run.last_good != done:
            run.save(done)
        raise TrainingInterrupted(
            f"{run.stage.name}: stopped by signal {signal.Signals(stop.signum).name} at step {done}; "
            f"checkpoint saved in {run.ckpt.directory}; re-run the same command to resume",
            stop.signum,
        )

    return check


def run_stage(config: TrainConfig, stage: str, data_dir: pathlib.Path, *, log=print,
              stop_after: int | None = None) -> StageResult:
    """Trains one stage (resuming from its latest checkpoint) and returns its summary.

    ``stop_after``: leave (without the final checkpoint) once this step is reached: a simulated crash,
    used by the resume tests.
    """
    started = time.time()
    run = prepare_stage(config, stage_lib.stage(stage), data_dir, log)
    if run.start >= run.total:
        log(f"{stage}: already trained ({run.start} / {run.total} steps), skipping")
        val_mpjpe = run.ckpt.metrics(run.start).get(VAL_METRIC, math.nan)
        run.close()
        return stage_result(run, started, val_mpjpe)
    is_main = jax.process_index() == 0
    run.bar = tqdm(total=run.total, initial=run.start, desc=stage, disable=not (config.progress and is_main),
                   dynamic_ncols=True)
    try:
        with _StopRequest() as stop:
            actions = (log_metrics, validate, crash_after(stop_after), save_checkpoint, stop_on_signal(stop))
            for step, batch in run.loader.steps(run.start, run.total):
                run.train_step(step, batch)
                for action in actions:
                    action(run, step + 1)
    finally:
        run.close()
    result = stage_result(run, started, run.val_result[VAL_METRIC])
    log(f"{stage}: done, {run.total} steps, validation MPJPE {result.val_mpjpe:.2f} px "
        f"(best {result.best_val_mpjpe} at step {result.best_step}), {result.seconds:.0f} s")
    return result


def prepare_stage(config: TrainConfig, stage: Stage, data_dir: pathlib.Path, log=print) -> StageRun:
    """Everything :func:`run_stage` needs: datasets, the loader, the checkpointer, the start state."""
    sc = config.stage_config(stage.name)
    num_devices = _check_devices(config, sc, stage.name)
    folder = stage_dir(config, stage.name)
    train_set = data_lib.build_dataset(config, stage, "train", data_dir)
    # Validation windows as long as the training windows (one ANN period for the hybrid, whose ANN
    # re-initialises it every 100 ms); the final report also scores the official 200 ms test windows.
    val_set = data_lib.build_dataset(config, stage, "test", data_dir,
                                     window_ms=VALIDATION_WINDOW_MS if stage.reads_events else None)
    loader = BatchLoader(
        train_set, sc.batch_size, fields=stage.train_fields, seed=config.seed + stage.seed_index,
        downsample=config.data.downsample, num_workers=config.data.num_workers, prefetch=config.data.prefetch,
        process_index=jax.process_index(), process_count=jax.process_count(),
    )
    total = sc.num_epochs * len(loader) if sc.num_epochs > 0 else sc.num_steps
    ckpt = checkpointer_for(config, stage.name)
    if not config.resume and ckpt.all_steps():
        ckpt.close()
        raise ConfigError(f"--no-resume, but {ckpt.directory} already holds checkpoints {ckpt.all_steps()}: "
                          "use a fresh --workdir or delete them")
    changed = []
    try:
        if config.resume and ckpt.all_steps() and ckpt.latest_step() < total:
            changed = changed_settings(config, stage.name, ckpt, ckpt.latest_step())  # unfinished: same settings
        state, latest = start_state(config, stage, ckpt, num_devices, log)
    except UserError:
        loader.close()
        ckpt.close()
        raise
    start = int(state.step)
    if jax.process_index() == 0:  # after the checks: a refused resume leaves the stored configuration as it was
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(config.to_json())
    logger = MetricLogger(folder, stage.name, enabled=jax.process_index() == 0, resume_step=start)
    if changed:
        log(f"{stage.name}: --force-resume: resuming step {start} with changed settings: {'; '.join(changed)}")
        logger.note(start, "force_resume", changed=changed)
    if num_devices > 1:
        state = state.with_arrays(distributed.replicate(state.arrays(), jax.local_devices()[:num_devices]))
    return StageRun(
        config=config, stage=stage, state=state, start=start, total=total, loader=loader, val_set=val_set,
        ckpt=ckpt, logger=logger,
        num_devices=num_devices, last_good=latest, step_fn=compile_train_step(stage.train_step, num_devices),
        base_key=jax.random.fold_in(jax.random.PRNGKey(config.seed), 100 + stage.seed_index),
    )


def _check_devices(config: TrainConfig, sc: StageConfig, name: str) -> int:
    """The local device count to use; the global batch must split evenly over all devices."""
    num_devices = config.num_devices or jax.local_device_count()
    if num_devices > jax.local_device_count():
        raise ConfigError(f"--num-devices {num_devices}: this machine has only {jax.local_device_count()} local "
                          "device(s)")
    global_devices = num_devices * jax.process_count()
    if sc.batch_size % global_devices:
        raise ConfigError(f"--{name}.batch-size {sc.batch_size} is not divisible by {global_devices} devices")
    return num_devices


def stage_result(run: StageRun, started: float, val_mpjpe: float) -> StageResult:
    """The summary of a (closed) stage run, with the best checkpoint read back from the folder."""
    best = checkpointer_for(run.config, run.stage.name)
    best_step = best.best_step()
    result = StageResult(run.stage.name, max(run.start, run.total), val_mpjpe, best_step,
                         best.metrics(best_step).get(VAL_METRIC) if best_step is not None else None,
                         str(best.directory), time.time() - started)
    best.close()
    return result


# ------------------------------------------------------------------------------------ all stages


def setup_processes(config: TrainConfig) -> None:
    """``jax.distributed.initialize`` when the configuration or the environment asks for it."""
    if distributed.wants_distributed(config.distributed):
        distributed.initialize(config.coordinator_address, config.num_processes, config.process_id)


def train(config: TrainConfig, *, log=print) -> dict[str, StageResult]:
    """Runs the configured stages in order; returns ``{stage: StageResult}`` and writes summary.json."""
    setup_processes(config)
    data_dir = _shared_data_dir(config, log)  # first: a run without data stops before writing anything
    workdir = pathlib.Path(config.workdir)
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "config.json").write_text(config.to_json())
    results = {}
    for run in config.passes():  # with pretrain_step_ms: the coarse-step pass, then the fine-tuning pass
        fine_tuning = run.warm_start_dir is not None
        for stage in run.stages():
            record = stage_lib.stage(stage)
            if fine_tuning and not record.reads_events:
                continue  # the ANN has no SNN step: trained once, in the pre-training pass
            if not fine_tuning:
                _check_required(run, record)
            name = f"{stage}@{run.model.step_ms:g}ms" if config.pretrain_step_ms is not None else stage
            results[name] = run_stage(run, stage, data_dir, log=log)
    if jax.process_index() == 0:
        summary_path = workdir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary.update({k: v.to_dict() for k, v in results.items()})
        summary_path.write_text(json.dumps(summary, indent=2))
    return results


def _check_required(config: TrainConfig, stage: Stage) -> None:
    """A stage that starts from other stages' checkpoints (and has none of its own) needs them in the workdir."""
    if (stage_dir(config, stage.name) / "checkpoints").is_dir():
        return
    for required in stage.requires:
        folder = stage_dir(config, required) / "checkpoints"
        if not folder.is_dir():
            raise MissingCheckpointError(
                f"the {stage.name} stage needs a trained {required.upper()} in {folder}: run --stage {required} "
                f"first (or --stage all) with --workdir {config.workdir}"
            )


def _shared_data_dir(config: TrainConfig, log) -> pathlib.Path:
    """The data folder; in a multi-process run process 0 generates synthetic data and the others wait."""
    if jax.process_count() == 1 or config.data_dir is not None or jax.process_index() == 0:
        path = data_lib.resolve_data_dir(config, log)
    else:
        path = data_lib.synthetic_cache_dir(config)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("hybridjax data ready")
    return path
