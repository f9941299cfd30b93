"""The ablation study of the paper (issue 12): A-D and the hybrid from scratch, trained and evaluated together.

Application layer (it trains with :mod:`hybridjax.train` and evaluates with :mod:`hybridjax.eval`); the
command is ``experiments/ablation.py``. Every variant trains with the same recipe (one ``TrainConfig``, the
same data and seed) and the stages are shared where the recipe allows:

* ``base/``: the ANN, the pure SNN (A) and the full hybrid (D, started from that SNN);
* ``output_init/`` (B) and ``state_init/`` (C): only their hybrid stage, from the same ANN and SNN
  (``ann`` and ``snn`` link to ``base/``);
* ``scratch/``: the full hybrid whose SNN starts from a fresh initialisation (``hybrid_from_snn=False``);
* ``report/``: ``report.md``, ``results.json`` and ``ablation.png``.

``reuse_workdir`` (e.g. the main job's ``runs/tiny``): when its ``config.json`` is this recipe, its ``ann``,
``snn`` and ``hybrid`` (= D) stage folders are copied into ``base/`` instead of being trained again. Every
stage resumes from its checkpoints, so re-running the command continues an interrupted study.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil
import time

from hybridjax.eval import plots
from hybridjax.eval.ablation import VARIANTS, ablation_markdown, evaluate_ablation, variant_predictor
from hybridjax.eval.report import to_json_ready
from hybridjax.models import ModelConfig
from hybridjax.train import data as data_lib
from hybridjax.train.config import DataConfig, StageConfig, TrainConfig
from hybridjax.train.loop import restore_stage_state, train

# Variant -> (folder, ModelConfig.hybrid_variant, hybrid_from_snn); the pure SNN (A) is base's snn stage.
HYBRID_RUNS = {
    "full": ("base", "full", True),
    "output_init": ("output_init", "output_init", True),
    "state_init": ("state_init", "state_init", True),
    "scratch": ("scratch", "full", False),
}
# TrainConfig fields that do not change what is trained (ignored when matching a workdir to reuse).
_NOT_RECIPE = ("workdir", "stage", "progress", "evaluate_at_end", "max_eval_items", "resume", "keep_last",
               "num_devices", "distributed", "coordinator_address", "num_processes", "process_id")


@dataclasses.dataclass(frozen=True)
class AblationConfig:
    """The ablation command: one training recipe, the variants, where to work and what to reuse."""

    train: TrainConfig  # the recipe every variant trains with (a train.py preset); its workdir is not used
    workdir: pathlib.Path = pathlib.Path("runs/ablation")  # base/, one folder per variant, report/
    reuse_workdir: pathlib.Path | None = None  # a train.py workdir whose stages are copied when its recipe matches
    variants: tuple[str, ...] = VARIANTS  # snn (A), output_init (B), state_init (C), full (D), scratch
    max_eval_items: int = 64  # test windows of the main camera scored, spread over the split (0 = all)
    eval_batch_size: int = 4  # windows per jitted evaluation call
    plots: bool = True  # draw ablation.png

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown or not self.variants:
            raise ValueError(f"AblationConfig.variants: {unknown or 'none given'}; choose from {VARIANTS}")


def tiny_10ms_recipe() -> TrainConfig:
    """The CPU recipe of the README's ablation: 64 x 64 inputs, 10 ms steps, ANN 600 / SNN 150 / hybrid 300 steps.

    The ``tiny`` training preset until it moved to 1 ms steps with 10 ms pre-training (the same fields; the
    ablation trains four hybrids, so it keeps the cheaper recipe). Measured: 21 min wall, 603 CPU-s for the
    whole ablation on the shared 2-core VM.
    """
    return TrainConfig(
        dataset="synthetic", workdir=pathlib.Path("runs/tiny_10ms"), model=ModelConfig.preset("tiny_10ms"),
        data=DataConfig(bin_mode="exact", downsample=4, max_val_items=16),
        ann=StageConfig(learning_rate=2e-3, batch_size=8, num_steps=600, eval_every=300, checkpoint_every=300),
        snn=StageConfig(learning_rate=2e-3, batch_size=4, num_steps=150, eval_every=150, checkpoint_every=150),
        hybrid=StageConfig(learning_rate=1e-3, batch_size=4, num_steps=300, eval_every=150, checkpoint_every=150),
        hybrid_zero_head=True, output_loss_weight=1.0, membrane_loss_weight=0.0, max_eval_items=16, progress=False,
    )


def stage_config(config: AblationConfig, variant: str) -> TrainConfig:
    """The TrainConfig that trains ``variant`` (A: base's ann + snn stages; the others: one hybrid stage)."""
    base = dataclasses.replace(config.train, workdir=pathlib.Path(config.workdir) / "base", evaluate_at_end=False)
    if variant == "snn":
        return dataclasses.replace(base, stage="snn")
    folder, hybrid_variant, from_snn = HYBRID_RUNS[variant]
    return dataclasses.replace(base, workdir=pathlib.Path(config.workdir) / folder, stage="hybrid",
                               model=dataclasses.replace(base.model, hybrid_variant=hybrid_variant),
                               hybrid_from_snn=from_snn)


def recipe_matches(workdir: pathlib.Path, recipe: TrainConfig) -> tuple[bool, str]:
    """Whether ``workdir/config.json`` trained with ``recipe`` (fields of :data:`_NOT_RECIPE` aside)."""
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        return False, f"{path} does not exist"
    theirs = json.loads(TrainConfig.from_json(path.read_text()).to_json())
    ours = json.loads(recipe.to_json())
    differ = sorted(k for k in set(theirs) | set(ours) if k not in _NOT_RECIPE and theirs.get(k) != ours.get(k))
    return (not differ), ("same recipe" if not differ else f"different {', '.join(differ)}")


def _reuse_stages(config: AblationConfig, log) -> list[str]:
    """Copies the reusable stage folders of ``reuse_workdir`` into ``base/``; returns the stages copied."""
    if config.reuse_workdir is None:
        return []
    source = pathlib.Path(config.reuse_workdir)
    ok, why = recipe_matches(source, config.train)
    if not ok:
        log(f"ablation: not reusing {source}: {why}")
        return []
    base = pathlib.Path(config.workdir) / "base"
    copied = []
    for stage in ("ann", "snn", "hybrid"):
        if (source / stage / "checkpoints").is_dir() and not (base / stage).exists():
            shutil.copytree(source / stage, base / stage, symlinks=True)
            copied.append(stage)
    log(f"ablation: reusing {', '.join(copied) or 'nothing'} from {source} ({why})")
    return copied


def _link_shared_stages(workdir: pathlib.Path) -> None:
    """``workdir/ann`` and ``workdir/snn`` -> ``../base/...`` (the stages a variant shares)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stage in ("ann", "snn"):
        link = workdir / stage
        if not link.exists() and not link.is_symlink():
            os.symlink(pathlib.Path("..") / "base" / stage, link, target_is_directory=True)


def train_variants(config: AblationConfig, log=print) -> dict[str, dict]:
    """Trains the shared stages and every variant's hybrid (resuming); ``{variant: stage summary}``."""

    _reuse_stages(config, log)
    summaries = {}
    hybrids = [v for v in config.variants if v != "snn"]
    shared = ("ann", "snn") if "snn" in config.variants or any(HYBRID_RUNS[v][2] for v in hybrids) else ("ann",)
    base = stage_config(config, "snn")
    for stage in shared:
        result = train(dataclasses.replace(base, stage=stage), log=log)[stage]
        if stage == "snn":
            summaries["snn"] = result.to_dict()
    for variant in hybrids:
        cfg = stage_config(config, variant)
        if cfg.workdir != base.workdir:
            _link_shared_stages(pathlib.Path(cfg.workdir))
        log(f"ablation: training {variant} in {cfg.workdir}")
        summaries[variant] = train(cfg, log=log)["hybrid"].to_dict()
    return summaries


def evaluate_variants(config: AblationConfig, log=print) -> dict:
    """Restores every variant's best checkpoint and runs :func:`hybridjax.eval.ablation.evaluate_ablation`."""

    base = stage_config(config, "snn")
    downsample = base.data.downsample
    predictors, steps = {}, {}
    for variant in config.variants:
        cfg = stage_config(config, variant)
        stage = "snn" if variant == "snn" else "hybrid"
        state, steps[variant] = restore_stage_state(cfg, stage, "best")
        predictors[variant] = variant_predictor(stage, cfg.model, state.variables(), downsample)
    dataset = data_lib.build_dataset(base, "hybrid", "test", data_lib.resolve_data_dir(base, log))
    cameras = tuple(base.data.cameras)
    result = evaluate_ablation(predictors, dataset, batch_size=config.eval_batch_size,
                               max_windows=config.max_eval_items or None, downsample=downsample,
                               camera=3 if 3 in cameras else cameras[-1], log=log)
    result["setup"]["checkpoint_steps"] = steps
    return result


def run_ablation(config: AblationConfig, log=print) -> dict:
    """Trains and evaluates every variant and writes ``<workdir>/report``; returns the result dict."""

    started, cpu_started = time.perf_counter(), time.process_time()
    workdir = pathlib.Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    training = train_variants(config, log)
    result = evaluate_variants(config, log)
    result["training"] = training
    result["setup"]["recipe"] = json.loads(config.train.to_json())
    result["setup"]["wall_seconds_total"] = time.perf_counter() - started
    result["setup"]["cpu_seconds_total"] = time.process_time() - cpu_started
    out = workdir / "report"
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# hybridjax ablation: what the ANN initialises", ""]
    lines += ablation_markdown(result, title="2-D MPJPE over the first ANN period")
    if config.plots:
        plots.plot_ablation(result, out / "ablation.png")
        lines += ["", "![ablation](ablation.png)"]
    lines += ["", "## Training", "",
              "| variant | folder | final step | best validation MPJPE [px] | seconds in this invocation |",
              "|---|---|---|---|---|"]
    for variant, summary in training.items():
        best = summary.get("best_val_mpjpe")
        lines.append(f"| {variant} | {pathlib.Path(summary['checkpoint_dir']).parent.parent.name} | "
                     f"{summary['final_step']} | {'n/a' if best is None else f'{best:.2f}'} | "
                     f"{summary['seconds']:.0f} |")
    lines += ["", f"Whole command: {result['setup']['wall_seconds_total']:.0f} s wall, "
              f"{result['setup']['cpu_seconds_total']:.0f} s CPU (this process)."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps(to_json_ready(result), indent=1, allow_nan=False))
    log(f"ablation: report written to {out / 'report.md'}")
    return result
