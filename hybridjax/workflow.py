"""The application layer: evaluate a training workdir and write its report.

Restores the checkpoints that :mod:`hybridjax.train` wrote, builds the test split and the predict functions,
runs :func:`hybridjax.eval.evaluate.evaluate` and writes the report (markdown, JSON, PNG plots) into
``<workdir>/report``. Training and evaluation do not know each other; this module joins them. Used by
``experiments/evaluate.py`` (command line), at the end of ``experiments/train.py`` and by the Colab notebook.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Literal

from hybridjax.eval.evaluate import EvalConfig, evaluate
from hybridjax.eval.predict import Predictors
from hybridjax.eval.report import write_report
from hybridjax.eval.tradeoff import TradeoffConfig, evaluate_tradeoff
from hybridjax.train import data as data_lib
from hybridjax.train.config import TrainConfig
from hybridjax.train.loop import MissingCheckpointError, restore_stage_state


@dataclasses.dataclass(frozen=True)
class EvaluateArgs:
    """Options of the evaluation of a training workdir."""

    workdir: pathlib.Path  # the training workdir (config.json and <stage>/checkpoints)
    which: Literal["best", "latest"] = "best"  # checkpoint: lowest validation MPJPE or the last one
    out_dir: pathlib.Path | None = None  # where the report goes; None = <workdir>/report
    data_dir: pathlib.Path | None = None  # override the data folder of the training config
    max_items: int = 0  # evaluate at most this many test windows per camera (0 = all)
    # test window length in ms: 0 = the official 200 ms test windows; 100 = the same windows (same starts,
    # stepping 100 ms) scored over their first ANN period only, half the SNN work
    window_ms: int = 0
    batch_size: int = 4  # windows per jitted call
    include_snn: bool = True  # also evaluate the separately trained pure SNN when its checkpoint exists
    plots: bool = True  # write the PNG plots
    # Also sweep the ANN period (20-200 ms) and the output rate (100 Hz-1 kHz where the model's step allows) and
    # add the accuracy-versus-power section (hybridjax.eval.tradeoff) to the report
    tradeoff: bool = False
    tradeoff_max_items: int = 0  # windows of the main camera in the sweep (0 = max_items, or all)


def run_evaluation(args: EvaluateArgs, log=print) -> dict:
    """Evaluates the workdir; returns the result dict (also written as results.json / report.md)."""
    config_path = pathlib.Path(args.workdir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: is {args.workdir} a workdir of experiments/train.py?")
    config = TrainConfig.from_json(config_path.read_text())
    config = dataclasses.replace(config, workdir=pathlib.Path(args.workdir))
    if args.data_dir is not None:
        config = dataclasses.replace(config, data_dir=args.data_dir)
    data_dir = data_lib.resolve_data_dir(config, log)

    state, step = restore_stage_state(config, "hybrid", args.which)
    variables = state.variables()
    snn_variables = None
    if args.include_snn:
        try:
            snn_state, snn_step = restore_stage_state(config, "snn", args.which)
        except MissingCheckpointError:
            log("evaluate: no pure SNN checkpoint, skipping the trained-SNN baseline")
        else:
            snn_variables = snn_state.variables()
            log(f"evaluate: pure SNN from step {snn_step}")
    dataset = data_lib.build_dataset(config, "hybrid", "test", data_dir, window_ms=args.window_ms or None)
    cameras = tuple(config.data.cameras)
    eval_config = EvalConfig(
        batch_size=args.batch_size, main_camera=cameras[-1] if 3 not in cameras else 3,
        cameras_3d=(2, 3) if {2, 3} <= set(cameras) else None,
        max_windows=args.max_items or None, downsample=config.data.downsample,
    )
    log(f"evaluate: hybrid step {step} ({args.which}) on {len(dataset)} test windows"
        + (f" (at most {args.max_items} per camera)" if args.max_items else ""))
    predictors = Predictors.from_variables(config.model, variables, config.data.downsample, snn_variables)
    try:
        result = evaluate(predictors, dataset, eval_config)
        if args.tradeoff:
            sweep = TradeoffConfig(max_windows=args.tradeoff_max_items or args.max_items or None,
                                   batch_size=args.batch_size, downsample=config.data.downsample,
                                   camera=eval_config.main_camera)
            log(f"evaluate: trade-off sweep (ANN periods {list(sweep.periods_ms)} ms, output rates "
                f"{list(sweep.output_rates_hz)} Hz)")
            result["tradeoff"] = evaluate_tradeoff(variables, config.model, dataset, sweep)
            log(f"evaluate: sweep took {result['tradeoff']['setup']['wall_seconds']:.0f} s")
    finally:
        dataset.close()  # every thread's h5 handles, so none is left for interpreter shutdown
    result["setup"]["checkpoint_step"] = step
    result["setup"]["workdir"] = str(args.workdir)
    out_dir = args.out_dir or pathlib.Path(args.workdir) / "report"
    written = write_report(result, out_dir, title=f"hybridjax evaluation of {args.workdir}",
                           plots_enabled=args.plots)
    headline = {m: s.get("mean_headline") for m, s in result["mpjpe_2d_main"].items()}
    log("evaluate: 2-D MPJPE (px of the input frame, first ANN period): "
        + ", ".join(f"{m} {v:.2f}" for m, v in headline.items() if v is not None))
    log(f"evaluate: report written to {written['markdown']}")
    (out_dir / "headline.json").write_text(json.dumps(headline, indent=2))
    return result
