"""The training loop: ``train(config)`` runs the stages ann -> snn -> hybrid with checkpoints and resume.

Per stage (folder ``<workdir>/<stage>``): ``config.json`` (the resolved configuration), ``checkpoints/``
(orbax; last N + best validation MPJPE), ``metrics.jsonl`` and ``tensorboard/``. A stage whose checkpoint
already reached its final step is skipped, so re-running the same command after a crash, a SIGTERM or a
Ctrl-C continues where the run stopped and ends with the same parameters as an uninterrupted run (batches
and step keys are functions of (seed, step), see :mod:`hybridjax.train.data`).

The hybrid stage loads the ANN (frozen) from ``<workdir>/ann`` and, when ``hybrid_from_snn``, the SNN
weights from ``<workdir>/snn`` (matching entries: the pure SNN's head BatchNorm has no hybrid counterpart).
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

import jax
import jax.numpy as jnp
import numpy as np

from hybridjax.data.batch import shard_for_devices
from hybridjax.data.loader import BatchLoader, spread_indices
from hybridjax.errors import ConfigError, Interrupted, UserError
from hybridjax.train import data as data_lib
from hybridjax.train import distributed
from hybridjax.train.checkpoint import VAL_METRIC, StageCheckpointer
from hybridjax.train.config import STAGE_ORDER, TrainConfig
from hybridjax.train.logging import MetricLogger
from hybridjax.train.state import StepSettings, TrainState, adam
from hybridjax.train.steps import compile_eval_step, compile_train_step

VALIDATION_WINDOW_MS = 100  # SNN / hybrid validation windows during training (the training window length)


class MissingCheckpointError(UserError, FileNotFoundError):
    """A stage needs the checkpoint of an earlier stage that is not in the workdir."""


class NonFiniteLossError(UserError, FloatingPointError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


class TrainingInterrupted(Interrupted):
    """SIGTERM / SIGINT arrived; a checkpoint was saved and the run stopped (re-run to resume)."""


# ------------------------------------------------------------------------------------ models and states


def input_hw(config: TrainConfig) -> tuple[int, int]:
    """``(height, width)`` of the network input: the crop (DHP19 256 x 256, Event-H3.6M 256 x 320) pooled."""
    height, width = (256, 320) if config.dataset == "h36m" else (256, 256)
    return height // config.data.downsample, width // config.data.downsample


def build_model(config: TrainConfig, stage: str):
    from hybridjax.models import ANNUNet, HybridModel, SNNModel

    return {"ann": ANNUNet, "snn": SNNModel, "hybrid": HybridModel}[stage](config.model)


@functools.cache
def _variable_initialiser(model, stage: str, height: int, width: int):
    """Jitted ``key -> variables`` of ``model`` for inputs of ``height x width`` (cached: compiled once)."""
    cfg = model.config
    ann_input = jnp.zeros((1, height, width, cfg.ann_in_channels), jnp.float32)
    events = jnp.zeros((1, 1, height, width, cfg.snn_in_channels), jnp.float32)
    if stage == "ann":
        return jax.jit(lambda key: model.init(key, ann_input))
    if stage == "snn":
        return jax.jit(lambda key: model.init(key, events))
    return jax.jit(lambda key: model.init(key, ann_input, events))


def settings_for(config: TrainConfig, stage: str, num_devices: int) -> StepSettings:
    return StepSettings(
        stage=stage, downsample=config.data.downsample, output_loss_weight=config.output_loss_weight,
        membrane_loss_weight=config.membrane_loss_weight, axis_name="batch" if num_devices > 1 else None,
    )


def initial_state(config: TrainConfig, stage: str, num_devices: int = 1) -> TrainState:
    """A freshly initialised state of ``stage`` (Xavier-normal convs, seed-derived key)."""
    model = build_model(config, stage)
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), STAGE_ORDER.index(stage))
    variables = _variable_initialiser(model, stage, *input_hw(config))(key)
    params = dict(variables["params"])
    frozen = {"ann": params.pop("ann")} if stage == "hybrid" else {}
    sc = config.stage_config(stage)
    return TrainState.create(
        model=model, tx=adam(sc.learning_rate, sc.grad_clip_norm), settings=settings_for(config, stage, num_devices),
        params=params, frozen_params=frozen, batch_stats=dict(variables.get("batch_stats", {})),
    )


def stage_dir(config: TrainConfig, stage: str) -> pathlib.Path:
    return pathlib.Path(config.workdir) / stage


def checkpointer_for(config: TrainConfig, stage: str, *, read_only: bool = False) -> StageCheckpointer:
    return StageCheckpointer(stage_dir(config, stage) / "checkpoints", config.keep_last, read_only=read_only)


def restore_stage_state(config: TrainConfig, stage: str, which: str = "best", num_devices: int = 1):
    """``(state, step)`` of a trained stage from the workdir: ``which`` = "best" (validation MPJPE, falling
    back to the latest) or "latest". Raises :class:`MissingCheckpointError` when there is none."""
    folder = stage_dir(config, stage) / "checkpoints"
    if not folder.is_dir() or not any(p.name.isdigit() for p in folder.iterdir()):
        raise MissingCheckpointError(
            f"no {stage} checkpoint in {folder}: train that stage first "
            f"(python experiments/train.py ... --stage {stage} --workdir {config.workdir})"
        )
    ckpt = checkpointer_for(config, stage)
    step = (ckpt.best_step() if which == "best" else None) or ckpt.latest_step()
    state = initial_state(config, stage, num_devices)
    state = state.with_arrays(ckpt.restore(step, state.arrays()))
    ckpt.close()
    return state, step


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


def hybrid_start_state(config: TrainConfig, num_devices: int, log=print) -> TrainState:
    """The hybrid's initial state: the trained ANN (frozen) and, optionally, the trained SNN's weights."""
    state = initial_state(config, "hybrid", num_devices)
    ann_state, ann_step = restore_stage_state(config, "ann", "best")
    frozen = {"ann": ann_state.params["ann"]}
    log(f"hybrid: ANN (frozen) from {stage_dir(config, 'ann')} step {ann_step}")
    params, batch_stats = state.params, state.batch_stats
    if config.hybrid_from_snn:
        try:
            snn_state, snn_step = restore_stage_state(config, "snn", "best")
        except MissingCheckpointError:
            log("hybrid: no SNN checkpoint, the SNN starts from its fresh initialisation")
        else:
            snn, loaded, kept = transfer_matching(snn_state.params["snn"], params["snn"])
            stats, _, _ = transfer_matching(snn_state.batch_stats["snn"], batch_stats["snn"])
            params = dict(params, snn=snn)
            batch_stats = dict(batch_stats, snn=stats)
            log(f"hybrid: SNN weights from {stage_dir(config, 'snn')} step {snn_step} "
                f"({len(loaded)} tensors loaded, {len(kept)} kept fresh: {', '.join(kept) or 'none'})")
    if config.hybrid_zero_head:
        head = params["snn"]["head"]
        zeroed = jax.tree_util.tree_map(jnp.zeros_like, head)
        params = dict(params, snn=dict(params["snn"], head=zeroed))
        log("hybrid: SNN head set to zero (the hybrid starts as the ANN held over the window)")
    return TrainState.create(model=state.model, tx=state.tx, settings=state.settings, params=params,
                             frozen_params=frozen, batch_stats=batch_stats)


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


# ------------------------------------------------------------------------------------ one stage


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


def evaluate_state(state: TrainState, dataset, config: TrainConfig, stage: str, batch_size: int) -> dict:
    """Validation MPJPE (pixels of the 256 crop) of a single-device state over the validation subset."""
    state = state.replace(settings=dataclasses.replace(state.settings, axis_name=None))
    fn = compile_eval_step(1)
    error, count, per_step_error, per_step_count = 0.0, 0.0, None, None
    loader = BatchLoader(dataset, batch_size, fields=data_lib.EVAL_KEYS[stage], shuffle=False,
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


def _num_steps(config: TrainConfig, stage: str, batches_per_epoch: int) -> int:
    sc = config.stage_config(stage)
    if sc.num_epochs > 0:
        return sc.num_epochs * batches_per_epoch
    return sc.num_steps


def _host_state(state: TrainState, replicated: bool) -> TrainState:
    if not replicated:
        return state
    return state.with_arrays(distributed.unreplicate(state.arrays()))


def run_stage(config: TrainConfig, stage: str, data_dir: pathlib.Path, *, log=print,
              stop_after: int | None = None) -> StageResult:
    """Trains one stage (resuming from its latest checkpoint) and returns its summary.

    ``stop_after``: leave (without the final checkpoint) once this step is reached: a simulated crash,
    used by the resume tests.
    """
    started = time.time()
    sc = config.stage_config(stage)
    process_index, process_count = jax.process_index(), jax.process_count()
    is_main = process_index == 0
    num_devices = config.num_devices or jax.local_device_count()
    if num_devices > jax.local_device_count():
        raise ConfigError(f"--num-devices {num_devices}: this machine has only {jax.local_device_count()} local "
                          "device(s)")
    global_devices = num_devices * process_count
    if sc.batch_size % global_devices:
        raise ConfigError(f"--{stage}.batch-size {sc.batch_size} is not divisible by {global_devices} devices")
    folder = stage_dir(config, stage)
    if is_main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(config.to_json())

    train_set = data_lib.build_dataset(config, stage, "train", data_dir)
    # Validation windows as long as the training windows (one ANN period for the hybrid, whose ANN
    # re-initialises it every 100 ms); the final report also scores the official 200 ms test windows.
    val_set = data_lib.build_dataset(config, stage, "test", data_dir,
                                     window_ms=None if stage == "ann" else VALIDATION_WINDOW_MS)
    batches = BatchLoader(
        train_set, sc.batch_size, fields=data_lib.STAGE_KEYS[stage], seed=config.seed + STAGE_ORDER.index(stage),
        downsample=config.data.downsample, num_workers=config.data.num_workers, prefetch=config.data.prefetch,
        process_index=process_index, process_count=process_count,
    )
    total = _num_steps(config, stage, len(batches))
    ckpt = checkpointer_for(config, stage)
    if not config.resume and ckpt.all_steps():
        ckpt.close()
        raise ValueError(f"--no-resume, but {ckpt.directory} already holds checkpoints {ckpt.all_steps()}: "
                         "use a fresh --workdir or delete them")
    latest = ckpt.latest_step() if config.resume else None

    if latest is not None:
        state = initial_state(config, stage, num_devices)
        state = state.with_arrays(ckpt.restore(latest, state.arrays()))
        log(f"{stage}: resuming from {ckpt.directory} step {latest}")
    elif stage == "hybrid":
        state = hybrid_start_state(config, num_devices, log)
    else:
        state = initial_state(config, stage, num_devices)
    start = int(state.step)
    logger = MetricLogger(folder, stage, enabled=is_main, resume_step=start)

    val_result = {VAL_METRIC: math.nan}
    if start >= total:
        log(f"{stage}: already trained ({start} / {total} steps), skipping")
        best = ckpt.best_step()
        result = StageResult(stage, start, ckpt.metrics(start).get(VAL_METRIC, math.nan), best,
                             ckpt.metrics(best).get(VAL_METRIC) if best is not None else None,
                             str(ckpt.directory), time.time() - started)
        ckpt.close()
        logger.close()
        return result

    replicated = num_devices > 1
    step_fn = compile_train_step(stage, num_devices)
    if replicated:
        state = state.with_arrays(distributed.replicate(state.arrays(), jax.local_devices()[:num_devices]))
    base_key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 100 + STAGE_ORDER.index(stage))
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=stage, disable=not (config.progress and is_main),
               dynamic_ncols=True)
    all_finite = jnp.asarray(True)
    last_good = latest

    def check_finite(step):
        if not bool(jax.device_get(all_finite)):
            raise NonFiniteLossError(
                f"{stage}: the loss became NaN/inf before step {step}; stopped. The last good checkpoint "
                f"(step {last_good}) is kept in {ckpt.directory}. Lower {stage}.learning_rate or set "
                f"{stage}.grad_clip_norm, then re-run (it resumes from that checkpoint)."
            )

    def save(step, metrics):
        nonlocal last_good
        check_finite(step)
        ckpt.save(step, _host_state(state, replicated).arrays(), metrics)
        last_good = step

    try:
        with _StopRequest() as stop:
            for step, batch in batches.steps(start, total):
                rng = jax.random.fold_in(base_key, step)
                if replicated:
                    batch = shard_for_devices(batch, num_devices)
                    rng = distributed.replicated_rng(rng, num_devices)
                state, metrics = step_fn(state, batch, rng)
                loss = metrics["loss"][0] if replicated else metrics["loss"]
                all_finite = all_finite & jnp.isfinite(loss)
                done = step + 1
                bar.update(1)
                if done % sc.log_every == 0 or done == total:
                    check_finite(done)
                    host = jax.device_get(metrics)
                    host = {k: (np.asarray(v)[0] if replicated else v) for k, v in host.items()}
                    row = logger.log(done, "train", host)
                    bar.set_postfix(loss=f"{row['loss']:.3g}", mpjpe=f"{row['mpjpe']:.2f}")
                evaluate_now = done == total or (sc.eval_every and done % sc.eval_every == 0)
                if evaluate_now:
                    check_finite(done)
                    val_result = evaluate_state(_host_state(state, replicated), val_set, config, stage,
                                                max(sc.batch_size, 4))
                    logger.log(done, "val", {k: v for k, v in val_result.items() if not isinstance(v, list)})
                    bar.set_postfix(loss=f"{float(np.asarray(loss)):.3g}",
                                    val_mpjpe=f"{val_result[VAL_METRIC]:.2f}")
                if stop_after is not None and done >= stop_after and done < total:
                    raise TrainingInterrupted(f"{stage}: simulated crash after step {done}", 0)
                if done == total or done % sc.checkpoint_every == 0:
                    save(done, val_result if evaluate_now else None)
                if stop.signum is not None:
                    if last_good != done:
                        save(done, val_result if evaluate_now else None)
                    raise TrainingInterrupted(
                        f"{stage}: stopped by signal {signal.Signals(stop.signum).name} at step {done}; "
                        f"checkpoint saved in {ckpt.directory}; re-run the same command to resume",
                        stop.signum,
                    )
    finally:
        batches.close()
        bar.close()
        logger.close()
        ckpt.close()

    best = checkpointer_for(config, stage)
    best_step = best.best_step()
    result = StageResult(stage, total, val_result[VAL_METRIC], best_step,
                         best.metrics(best_step).get(VAL_METRIC) if best_step is not None else None,
                         str(best.directory), time.time() - started)
    best.close()
    log(f"{stage}: done, {total} steps, validation MPJPE {result.val_mpjpe:.2f} px "
        f"(best {result.best_val_mpjpe} at step {best_step}), {result.seconds:.0f} s")
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
    for stage in config.stages():
        has_own = (stage_dir(config, stage) / "checkpoints").is_dir()
        if stage == "hybrid" and not has_own and not (stage_dir(config, "ann") / "checkpoints").is_dir():
            raise MissingCheckpointError(
                f"the hybrid stage needs a trained ANN in {stage_dir(config, 'ann') / 'checkpoints'}: run "
                f"--stage ann first (or --stage all) with --workdir {workdir}"
            )
        results[stage] = run_stage(config, stage, data_dir, log=log)
    if jax.process_index() == 0:
        summary_path = workdir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        summary.update({k: v.to_dict() for k, v in results.items()})
        summary_path.write_text(json.dumps(summary, indent=2))
    return results


def _shared_data_dir(config: TrainConfig, log) -> pathlib.Path:
    """The data folder; in a multi-process run process 0 generates synthetic data and the others wait."""
    if jax.process_count() == 1 or config.data_dir is not None or jax.process_index() == 0:
        path = data_lib.resolve_data_dir(config, log)
    else:
        path = data_lib.synthetic_cache_dir(config)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("hybridjax data ready")
    return path
