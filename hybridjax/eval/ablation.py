"""The paper's ablation of what the ANN initialises, evaluated: MPJPE over one ANN period per variant.

Variants (SPEC section 5; the official figure ``experiments_dhp19/hybrid_ablation_plot.png`` labels B and C
'Hybrid - OI' and 'Hybrid - SI'):

* ``snn`` (A): the pure SNN trained alone, no ANN;
* ``output_init`` (B): the ANN gives only the output (SNN deltas on the ANN heatmap, membranes from 0);
* ``state_init`` (C): the ANN gives only the membranes (output integration from 0);
* ``full`` (D): the hybrid, both;
* ``scratch``: the full hybrid trained without starting from the pretrained SNN.

:func:`evaluate_ablation` receives one predict function per variant (``(ann_input, events) -> landmarks``,
built by :func:`variant_predictor` from a model's variables or by anything else) and a window dataset
(:class:`~hybridjax.eval.protocol.WindowDataset`), and scores every labelled step of the first ANN period of
each window: a table row per variant with the first-period mean, the first and the last labelled step of the period,
each with a 95% bootstrap interval over windows (:mod:`hybridjax.eval.statistics`), and the per-step curve.
"""
from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np

from hybridjax.data.batch import pool_pixels
from hybridjax.eval.evaluate import _select_items
from hybridjax.eval.statistics import WindowErrors, format_interval, paired_difference_ci
from hybridjax.metrics import predicted_landmarks
from hybridjax.models import HybridModel, SNNModel

VARIANTS = ("snn", "output_init", "state_init", "full", "scratch")  # report order: A, B, C, D, scratch
REFERENCE = "full"  # the variant the others are compared with, window by window (paired intervals)
VARIANT_LABELS = {
    "snn": "A: pure SNN (no ANN)",
    "output_init": "B: output init only (OI)",
    "state_init": "C: state init only (SI)",
    "full": "D: hybrid (output + state init)",
    "scratch": "hybrid trained from scratch (SNN not pretrained)",
}
# The paper's DHP19 numbers (SPEC section 5): variant -> (first step, tenth step, where from) in px.
PAPER_ABLATION = {
    "snn": (45.0, 15.0, "official figure"),
    "output_init": (5.7, 5.4, "plotted; final_plots.py 5.84 -> 9.11"),
    "state_init": (5.1, 7.2, "official figure"),
    "full": (5.2, 5.2, "final model ~5.2; final_plots.py 5.90 -> 5.92"),
    "scratch": (6.81, 7.26, "final_plots.py"),
}

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (ann_input [B,H,W,20], events [T,B,H,W,2]) -> [T,B,J,2]


def variant_predictor(kind: str, config, variables, downsample: int = 1) -> Predictor:
    """A jitted predict function: ``kind`` "hybrid" (``HybridModel(config)``, its variant from the config) or
    "snn" (``SNNModel(config)``, the ANN input ignored); landmarks in full-resolution pixels."""

    if kind == "hybrid":
        model = HybridModel(config)
        run = jax.jit(lambda v, a, e: predicted_landmarks(model.apply(v, a, e, train=False).heatmaps, downsample))
        return lambda ann_input, events: np.asarray(jax.device_get(run(variables, ann_input, events)))
    if kind == "snn":
        model = SNNModel(config)
        run = jax.jit(lambda v, e: predicted_landmarks(model.apply(v, e, train=False).heatmaps, downsample))
        return lambda ann_input, events: np.asarray(jax.device_get(run(variables, events)))
    raise ValueError(f"variant_predictor: kind must be 'hybrid' or 'snn', got {kind!r}")


def evaluate_ablation(predictors: dict[str, Predictor], dataset, *, period_ms: float | None = None,
                      batch_size: int = 4, max_windows: int | None = None, downsample: int = 1,
                      camera: int | None = 3, log=None) -> dict:
    """Scores every variant of ``predictors`` on the first ANN period of the dataset's windows.

    ``period_ms``: the span scored (None: the dataset's ``window_step_ms``, the hybrid's ANN period).
    Returns ``{"setup", "variants": {name: {"first_period", "first_step", "last_step", "per_step",
    "windows", "minus_full"}}}``, each statistic ``{"mean", "ci_low", "ci_high", "windows"}`` (per_step
    entries add ``time_ms``, the end of the step after the initialisation; ``minus_full``: the paired
    differences to D of the first three, when D is among the variants).
    """

    if not predictors:
        raise ValueError("evaluate_ablation: no variant to evaluate")
    started = time.perf_counter()
    first = dataset[0]
    num_steps = first["events"].shape[0]
    window_ms = dataset.window_ms
    step_ms = window_ms / num_steps
    period_ms = period_ms or dataset.window_step_ms
    period_steps = int(round(period_ms / step_ms))
    if not 1 <= period_steps <= num_steps:
        raise ValueError(f"evaluate_ablation: a {period_ms} ms period does not fit a {window_ms:g} ms window")
    labelled = np.flatnonzero(np.asarray(first["step_has_label"], bool)[:period_steps])
    cameras = tuple(dataset.cameras)
    camera = camera if camera in cameras else cameras[0]
    index = dataset.index()
    indices = [i for i in _select_items(dataset, max_windows) if index[i][0] == camera]
    errors = {name: WindowErrors(period_steps) for name in predictors}
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        real = len(items)
        items += [items[-1]] * (batch_size - real)
        events = pool_pixels(np.stack([it["events"][:period_steps] for it in items], axis=1), downsample)
        ann_input = pool_pixels(np.stack([it["ann_input"] for it in items]), downsample)
        for name, predict in predictors.items():
            uv = predict(ann_input, events)
            for b in range(real):
                truth = np.asarray(items[b]["landmarks"][:period_steps], np.float64)
                errors[name].add(np.where(_mask(labelled, period_steps), uv[:, b], np.nan), truth)
        if log is not None:
            log(f"ablation: {min(start + batch_size, len(indices))} / {len(indices)} windows")
    spans = {"first_period": labelled, "first_step": labelled[:1], "last_step": labelled[-1:]}
    variants = {}
    for name, acc in errors.items():
        per_step = []
        for t in labelled:
            entry = acc.over_steps([t])
            per_step.append({"step": int(t), "time_ms": float((t + 1) * step_ms), **entry})
        variants[name] = {"first_period": acc.over_steps(labelled), "first_step": per_step[0],
                          "last_step": per_step[-1], "per_step": per_step, "windows": acc.num_windows}
        if REFERENCE in errors and name != REFERENCE:
            variants[name]["minus_" + REFERENCE] = {key: _paired(acc, errors[REFERENCE], steps)
                                                   for key, steps in spans.items()}
    return {"setup": {"dataset": type(dataset).__name__, "camera": camera, "num_windows": len(indices),
                      "period_ms": float(period_ms), "step_ms": float(step_ms), "labelled_steps": labelled.tolist(),
                      "downsample": downsample, "wall_seconds": time.perf_counter() - started},
            "variants": variants}


def _paired(a: WindowErrors, b: WindowErrors, steps) -> dict:
    """Paired bootstrap interval of ``MPJPE_a - MPJPE_b`` over ``steps``, the windows resampled together."""
    (sa, ca), (sb, cb) = a.arrays(), b.arrays()
    return paired_difference_ci(sa[:, steps].sum(axis=1), ca[:, steps].sum(axis=1),
                                sb[:, steps].sum(axis=1), cb[:, steps].sum(axis=1))


def _mask(labelled: np.ndarray, steps: int) -> np.ndarray:
    mask = np.zeros(steps, bool)
    mask[labelled] = True
    return mask[:, None, None]


def ablation_markdown(result: dict, title: str = "Ablation: what the ANN initialises") -> list[str]:
    """The ablation table (markdown lines), with the paper's DHP19 numbers beside ours."""
    setup = result["setup"]
    first, last = setup["labelled_steps"][0], setup["labelled_steps"][-1]
    step = setup["step_ms"]
    lines = [f"## {title}", "",
             f"{setup['num_windows']} test windows of camera {setup['camera']} ({setup['dataset']}); 2-D MPJPE in "
             f"pixels of the 256 crop over the first ANN period ({setup['period_ms']:g} ms, steps of {step:g} ms), "
             "mean with its 95% bootstrap interval over windows. First / last step: the first and the last "
             f"labelled step of the period (ending {(first + 1) * step:g} and {(last + 1) * step:g} ms after the "
             "initialisation). Paper: DHP19 camera 3, first -> tenth 10 ms step (SPEC section 5).", "",
             "| variant | first-period mean [px] | first step [px] | last step [px] | windows | paper (DHP19) |",
             "|---|---|---|---|---|---|"]
    for name, entry in result["variants"].items():
        first_paper, tenth_paper, note = PAPER_ABLATION.get(name, (None, None, ""))
        paper = f"{first_paper:g} -> {tenth_paper:g} ({note})" if first_paper is not None else ""
        cells = [format_interval(entry[key]) for key in ("first_period", "first_step", "last_step")]
        row = [VARIANT_LABELS.get(name, name), *cells, str(entry["windows"]), paper]
        lines.append("| " + " | ".join(row) + " |")
    paired = {name: entry["minus_" + REFERENCE] for name, entry in result["variants"].items()
              if "minus_" + REFERENCE in entry}
    if paired:
        lines += ["", f"Difference to {VARIANT_LABELS[REFERENCE]} on the same windows (variant minus D, px; paired "
                  "bootstrap: an interval entirely above 0 means worse than D):", "",
                  "| variant | first-period mean | first step | last step |", "|---|---|---|---|"]
        for name, diff in paired.items():
            cells = [format_interval(diff[key]) for key in ("first_period", "first_step", "last_step")]
            lines.append("| " + " | ".join([VARIANT_LABELS.get(name, name), *cells]) + " |")
    return lines
