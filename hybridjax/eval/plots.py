"""PNG figures of an evaluation result (matplotlib's object API with the Agg canvas; no pyplot state).

Every function takes the dict returned by :func:`hybridjax.eval.evaluate.evaluate` (or its JSON form) and a
path, draws one figure and returns the path.
"""
from __future__ import annotations

import math
import pathlib

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

from hybridjax.eval.ablation import PAPER_ABLATION, VARIANT_LABELS
from hybridjax.eval.tradeoff import MODEL_NAMES, PAPER_POINTS, fmt_rate

# DHP19 joints: head, shoulderR, shoulderL, elbowR, elbowL, hipR, hipL, handR, handL, kneeR, kneeL, footR, footL.
BONES = (
    (0, 1), (0, 2), (1, 2),  # head and shoulders
    (1, 3), (3, 7), (2, 4), (4, 8),  # arms
    (1, 5), (2, 6), (5, 6),  # torso
    (5, 9), (9, 11), (6, 10), (10, 12),  # legs
)
MODEL_LABELS = {
    "hybrid": "hybrid ANN-SNN",
    "ann_every_label": "ANN every label",
    "ann_held": "ANN held",
    "snn_alone": "SNN alone (zero init)",
    "snn_trained": "pure SNN (trained)",
}
MODEL_COLORS = {"hybrid": "tab:red", "ann_every_label": "tab:blue", "ann_held": "tab:cyan",
                "snn_alone": "tab:green", "snn_trained": "tab:olive"}


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def _values(per_step) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in per_step], dtype=np.float64)


def _step_times(result: dict) -> np.ndarray:
    """Time of every step's end in ms after the window start."""
    setup = result["setup"]
    return (np.arange(setup["num_steps"]) + 1) * setup["step_ms"]


def plot_mpjpe_over_time(result: dict, path) -> pathlib.Path:
    """2-D MPJPE per step within a window (main camera), one line per model; 3-D beside it when present."""
    camera = result["setup"]["main_camera"]
    panels = [("mpjpe_2d_main", f"2-D MPJPE at the labels, camera {camera} [px]")]
    if result.get("mpjpe_2d_every_step"):
        panels.append(("mpjpe_2d_every_step", f"2-D MPJPE every {result['setup']['step_ms']:g} ms, camera "
                       f"{camera} [px]\n(labels interpolated)"))
    if result.get("mpjpe_3d") is not None:
        panels.append(("mpjpe_3d", "3-D MPJPE [mm]"))
    fig = _figure(1.0 + 5.0 * len(panels), 4)
    times = _step_times(result)
    for i, (key, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        dense = key == "mpjpe_2d_every_step"
        for model in result["setup"]["models"]:
            if model not in result[key]:
                continue
            values = _values(result[key][model]["per_step"])
            valid = np.isfinite(values)
            ax.plot(times[valid], values[valid], marker=None if dense else "o", markersize=3,
                    label=MODEL_LABELS.get(model, model), color=MODEL_COLORS.get(model))
        ax.axvline(result["setup"]["headline_ms"], color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("time in window [ms]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_firing_rates(result: dict, path) -> pathlib.Path:
    """Firing rate of every LIF layer per step, one panel per spiking model."""
    spiking = list(result["firing"])
    fig = _figure(5.5 * len(spiking), 4)
    times = _step_times(result)
    cmap = colormaps["viridis"]
    for i, name in enumerate(spiking):
        ax = fig.add_subplot(1, len(spiking), i + 1)
        layers = list(result["firing"][name]["per_step"])
        for j, layer in enumerate(layers):
            ax.plot(times, result["firing"][name]["per_step"][layer], label=layer,
                    color=cmap(j / max(len(layers) - 1, 1)))
        ax.set_title(MODEL_LABELS.get(name, name))
        ax.set_xlabel("time in window [ms]")
        ax.set_ylabel("spikes per neuron per step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def energy_accuracy_points(result: dict, preset: str = "paper") -> dict[str, tuple[float, float]]:
    """Model -> (power in W at the output rate, headline 2-D MPJPE) for the models with a power figure."""
    entry = result["energy"][preset]
    mpjpe = result["mpjpe_2d_main"]
    power = {
        "hybrid": entry["hybrid"]["hybrid_power_w"],
        "ann_every_label": entry["ann_every_label"]["power_w"],
        "ann_held": entry["ann_held"]["power_w"],
        "snn_alone": entry["snn_alone"]["snn_power_w"],
    }
    if "snn_trained" in entry:
        power["snn_trained"] = entry["snn_trained"]["snn_power_w"]
    return {m: (p, mpjpe[m]["mean_headline"]) for m, p in power.items() if m in mpjpe}


def plot_energy_vs_accuracy(result: dict, path, preset: str = "paper") -> pathlib.Path:
    """Power (log scale) against headline 2-D MPJPE, one point per model."""
    fig = _figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for model, (power, error) in energy_accuracy_points(result, preset).items():
        if power is None or error is None or not (math.isfinite(power) and math.isfinite(error)) or power <= 0:
            continue
        ax.scatter([power], [error], s=50, color=MODEL_COLORS.get(model), label=MODEL_LABELS.get(model, model))
        ax.annotate(f"{power:.3g} W", (power, error), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    rate = result["energy"]["output_rate_hz"]
    ax.set_xlabel(f"power at {rate:g} Hz output [W] ({preset} preset)")
    ax.set_ylabel(f"2-D MPJPE, first {result['setup']['headline_ms']:g} ms [px]")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def _draw_skeleton(ax, uv, color: str, label: str) -> None:
    uv = np.asarray(uv, dtype=np.float64)
    for a, b in BONES:
        if np.all(np.isfinite(uv[[a, b]])):
            ax.plot(uv[[a, b], 0], uv[[a, b], 1], color=color, linewidth=1.5)
    valid = np.all(np.isfinite(uv), axis=-1)
    ax.scatter(uv[valid, 0], uv[valid, 1], s=8, color=color, label=label)


def plot_skeletons(samples: list[dict], path, model: str = "hybrid", num_frames: int = 3) -> pathlib.Path:
    """Event frames with the true (green) and predicted (red) skeletons at a few steps of a few windows.

    Each sample holds ``steps [L]`` (the labelled steps), ``event_frames [L, H, W]`` (events since the
    previous labelled step), ``landmarks [T, J, 2]`` and ``predictions[model] [T, J, 2]``. The shown steps
    are spread over the labelled steps.
    """
    if not samples:
        raise ValueError("plot_skeletons: no samples (evaluate keeps EvalConfig.keep_samples windows)")
    fig = _figure(3.2 * num_frames, 3.2 * len(samples))
    for row, sample in enumerate(samples):
        landmarks = np.asarray(sample["landmarks"])
        steps = np.asarray(sample["steps"])
        if len(sample["event_frames"]) != len(steps):
            raise ValueError(f"plot_skeletons: sample {row} has {len(sample['event_frames'])} event frames "
                             f"for {len(steps)} labelled steps")
        picks = np.unique(np.linspace(0, len(steps) - 1, num_frames).round().astype(int))
        for col, pick in enumerate(picks):
            step = int(steps[pick])
            ax = fig.add_subplot(len(samples), num_frames, row * num_frames + col + 1)
            frame = np.asarray(sample["event_frames"][pick])
            ax.imshow(frame, cmap="gray_r", vmin=0, vmax=max(float(frame.max()), 1.0))
            _draw_skeleton(ax, landmarks[step], "tab:green", "true")
            _draw_skeleton(ax, sample["predictions"][model][step], "tab:red", MODEL_LABELS.get(model, model))
            ax.set_title(f"{sample['recording']} cam {sample['camera']}\n"
                         f"{sample['window_start_ms']} ms + step {step}", fontsize=7)
            ax.set_xlim(0, frame.shape[1])
            ax.set_ylim(frame.shape[0], 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0 and col == 0:
                ax.legend(fontsize=6, loc="lower left")
    return _save(fig, path)


# ----------------------------------------------------------------------------------- trade-off and ablation

def _error_bar(ax, power, mpjpe: dict, **kwargs):
    low, high = mpjpe.get("ci_low"), mpjpe.get("ci_high")
    yerr = None
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        yerr = [[mpjpe["mean"] - low], [high - mpjpe["mean"]]]
    ax.errorbar([power], [mpjpe["mean"]], yerr=yerr, capsize=2, **kwargs)


def plot_power_vs_mpjpe(tradeoff: dict, path) -> pathlib.Path:
    """The sweep of :func:`hybridjax.eval.tradeoff.evaluate_tradeoff`: power (log) against 2-D MPJPE.

    One curve per model (the hybrid: one per output rate), every point labelled with its rates and drawn
    with its 95% interval; the paper's DHP19 points as black stars, labelled as the paper's.
    """

    fig = _figure(8, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    points = [p for p in tradeoff["points"] if p["power_w"] and p["mpjpe"]["mean"] is not None
              and math.isfinite(p["mpjpe"]["mean"])]
    curves: dict[tuple, list[dict]] = {}
    for p in points:
        key = (p["model"], p["output_rate_hz"]) if p["model"] == "hybrid" else (p["model"], None)
        curves.setdefault(key, []).append(p)
    cmap = colormaps["Reds"]
    hybrid_rates = sorted(r for m, r in curves if m == "hybrid")
    for (model, rate), members in curves.items():
        members = sorted(members, key=lambda p: p["power_w"])
        if model == "hybrid":
            color = cmap(0.45 + 0.5 * hybrid_rates.index(rate) / max(len(hybrid_rates) - 1, 1))
            label = f"{MODEL_NAMES[model]}, {fmt_rate(rate)} output"
        else:
            color = {"ann_held": "tab:cyan", "ann_at_rate": "tab:blue"}[model]
            label = MODEL_NAMES[model]
        ax.plot([p["power_w"] for p in members], [p["mpjpe"]["mean"] for p in members], color=color, label=label,
                linewidth=1.2)
        for p in members:
            _error_bar(ax, p["power_w"], p["mpjpe"], color=color, marker="o", markersize=4)
            text = (f"ANN {fmt_rate(1000.0 / p['period_ms'])}" if model != "ann_at_rate"
                    else fmt_rate(p["output_rate_hz"]))
            ax.annotate(text, (p["power_w"], p["mpjpe"]["mean"]), textcoords="offset points", fontsize=7,
                        xytext=(4, -11) if model == "hybrid" else (4, 5), color=color)
    for i, (label, power, mpjpe) in enumerate(PAPER_POINTS):
        ax.scatter([power], [mpjpe], marker="*", s=120, color="black", zorder=5,
                   label="paper's points (DHP19, real data)" if i == 0 else None)
        ax.annotate(label, (power, mpjpe), textcoords="offset points", xytext=(-6, 6 + 9 * i), fontsize=7,
                    ha="right")
    ax.set_xscale("log")
    setup = tradeoff["setup"]
    ax.set_xlabel(f"power [W] ({setup['energy_preset']} energy preset, model at "
                  f"{setup['height']}x{setup['width']})")
    ax.set_ylabel(f"2-D MPJPE, camera {setup['camera']} [px] (95% CI, {setup['num_windows']} windows)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def plot_ablation(ablation: dict, path) -> pathlib.Path:
    """The paper's ablation figure redrawn: MPJPE over the first ANN period per variant, ours and the paper's.

    Left: ours (per-step mean with its 95% interval band). Right: the paper's DHP19 numbers (SPEC section 5),
    which give only the first and the tenth step of each curve (joined by a straight dashed line).
    """

    fig = _figure(12, 4.5)
    ours = fig.add_subplot(1, 2, 1)
    cmap = colormaps["tab10"]
    for i, (name, entry) in enumerate(ablation["variants"].items()):
        steps = [s for s in entry["per_step"] if s["mean"] is not None and math.isfinite(s["mean"])]
        times = np.array([s["time_ms"] for s in steps])
        mean = np.array([s["mean"] for s in steps])
        ours.plot(times, mean, marker="o", markersize=3, color=cmap(i), label=VARIANT_LABELS.get(name, name))
        low = np.array([np.nan if s["ci_low"] is None else s["ci_low"] for s in steps], dtype=np.float64)
        high = np.array([np.nan if s["ci_high"] is None else s["ci_high"] for s in steps], dtype=np.float64)
        ours.fill_between(times, low, high, color=cmap(i), alpha=0.15)
    setup = ablation["setup"]
    ours.set_title(f"hybridjax on {setup['dataset']} ({setup['num_windows']} windows, 95% CI)", fontsize=9)
    ours.set_yscale("log")
    ours.set_xlabel("time since the ANN initialisation [ms]")
    ours.set_ylabel("2-D MPJPE [px of the 256 crop]")
    ours.grid(alpha=0.3, which="both")
    ours.legend(fontsize=7)
    paper = fig.add_subplot(1, 2, 2)
    for i, (name, (first, tenth, note)) in enumerate(PAPER_ABLATION.items()):
        paper.plot([10, 100], [first, tenth], linestyle="--", marker="s", color=cmap(i),
                   label=f"{VARIANT_LABELS.get(name, name)} ({note})")
    paper.set_title("the paper's DHP19 results (camera 3; first and tenth step only)", fontsize=9)
    paper.set_xlabel("time since the ANN initialisation [ms]")
    paper.set_ylabel("2-D MPJPE [px of the 256 crop]")
    paper.set_yscale("log")
    paper.grid(alpha=0.3, which="both")
    paper.legend(fontsize=6)
    for ax in (ours, paper):  # plain numbers on the log axes
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="y", which="minor", labelsize=7)
    return _save(fig, path)
