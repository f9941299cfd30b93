"""Writers of an evaluation result: JSON, a markdown report, the PNG plots and the sample arrays.

:func:`write_report` is what a CLI calls after :func:`hybridjax.eval.evaluate.evaluate`; the pieces
(:func:`to_json_ready`, :func:`markdown_report`) are usable on their own.
"""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from hybridjax.eval import plots
from hybridjax.eval.tradeoff import tradeoff_markdown

# The paper's DHP19 numbers (SPEC section 5), printed beside ours.
PAPER_REFERENCE = {
    "ann_every_label": "5.03 px, 3.718 W @ 100 Hz",
    "ann_held": "5.84 px (5.08 -> 6.73 over 100 ms)",
    "hybrid": "5.19 px, 0.424 W @ 100 Hz; 3-D 58-71 mm",
    "snn_alone": "21.4 px (45.6 first step, 15.5 tenth)",
    "snn_trained": "21.4 px",
}


def to_json_ready(value):
    """Numpy scalars and arrays -> Python; NaN / inf -> None; tuples -> lists; drops the ``samples`` key."""
    if isinstance(value, dict):
        return {str(k): to_json_ready(v) for k, v in value.items() if k != "samples"}
    if isinstance(value, list | tuple):
        return [to_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _si(value, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")):
        if abs(value) >= factor or factor == 1e-12:
            return f"{value / factor:.4g} {prefix}{unit}"
    return f"{value:.4g} {unit}"


def _has_paper_reference(setup: dict) -> bool:
    """The paper's numbers are DHP19 numbers: shown beside DHP19-layout results only."""
    return "H36M" not in str(setup.get("dataset", ""))


def _with_interval(value, interval: dict | None) -> str:
    """``12.34 [11.90, 12.80]``: a mean with its 95% bootstrap interval over windows (when known)."""
    if not interval:
        return _fmt(value)
    return f"{_fmt(value)} [{_fmt(interval['ci_low'])}, {_fmt(interval['ci_high'])}]"


def _mpjpe_table(summaries: dict, models, unit: str, headline_ms, reference: dict = PAPER_REFERENCE) -> list[str]:
    lines = [f"| model | mean, first {headline_ms:g} ms [{unit}] [95% CI] | mean, whole window [{unit}] | first "
             f"scored step [{unit}] | windows | joints scored | paper |", "|---|---|---|---|---|---|---|"]
    for model in models:
        if model not in summaries:
            continue
        s = summaries[model]
        per_step = [v for v in s["per_step"] if v is not None and math.isfinite(v)]
        first = per_step[0] if per_step else None
        lines.append(f"| {plots.MODEL_LABELS.get(model, model)} | "
                     f"{_with_interval(s['mean_headline'], s.get('interval_headline'))} | {_fmt(s['mean'])} "
                     f"| {_fmt(first)} | {s.get('windows', 'n/a')} | {s['count']} | {reference.get(model, '')} |")
    return lines


def _paired_table(paired: dict | None, unit: str, headline_ms) -> list[str]:
    """Paired per-window differences (model - baseline) of the headline means with their intervals."""
    if not paired:
        return []
    lines = ["", f"Paired per-window differences of the first-{headline_ms:g}-ms means (negative: the first model "
             "is better), 95% bootstrap intervals over the same windows:", "",
             f"| difference | estimate [{unit}] | 95% CI | windows | interval below 0 |", "|---|---|---|---|---|"]
    for name, iv in paired.items():
        a, b = (plots.MODEL_LABELS.get(m, m) for m in name.split(" - "))
        below = iv["ci_high"] is not None and iv["ci_high"] < 0
        lines.append(f"| {a} - {b} | {_fmt(iv['mean'])} | [{_fmt(iv['ci_low'])}, {_fmt(iv['ci_high'])}] | "
                     f"{iv['windows']} | {'yes' if below else 'no'} |")
    return lines


def markdown_report(result: dict, title: str = "hybridjax evaluation", images: dict | None = None) -> str:
    """The report as markdown (tables of accuracy, firing, MACs, energy; links to ``images``)."""
    r = to_json_ready(result)
    setup = r["setup"]
    models = setup["models"]
    headline = setup["headline_ms"]
    out = [f"# {title}", ""]
    out.append(f"{setup['num_windows']} windows, cameras {setup['cameras']} (main {setup['main_camera']}), "
               f"{setup['num_steps']} SNN steps of {setup['step_ms']:g} ms per {setup['window_ms']:g} ms window, "
               f"input {setup['height']}x{setup['width']} "
               f"(pooled x{setup['eval_config']['downsample']} for the model). "
               f"Headline averages cover the first {headline:g} ms "
               f"({setup['headline_steps']} steps) of each window, i.e. one ANN period. "
               f"Evaluation took {_fmt(setup.get('wall_seconds'), 1)} s.")
    reference = PAPER_REFERENCE if _has_paper_reference(setup) else {}
    frame = "the 256 crop" if setup["height"] == setup["width"] else f"the {setup['width']}x{setup['height']} frame"
    out += ["", f"## 2-D MPJPE, camera {setup['main_camera']} (pixels of {frame})", ""]
    if not reference:
        out += ["The paper column is empty: its numbers are for DHP19.", ""]
    out += ["Errors are scored at the labelled steps (100 Hz), where every model has a prediction. Intervals: 95% "
            "percentile bootstrap over windows (hybridjax.eval.statistics).", ""]
    out += _mpjpe_table(r["mpjpe_2d_main"], models, "px", headline, reference)
    out += _paired_table(r.get("paired_2d_main"), "px", headline)
    if r.get("mpjpe_2d_every_step"):
        out += ["", f"### Every {setup['step_ms']:g} ms step, camera {setup['main_camera']} (labels linearly "
                "interpolated between the 100 Hz labels)", ""]
        out += _mpjpe_table(r["mpjpe_2d_every_step"], models, "px", headline, reference)
    for camera, summaries in r["mpjpe_2d"].items():
        if int(camera) != setup["main_camera"]:
            out += ["", f"### camera {camera}", ""] + _mpjpe_table(summaries, models, "px", headline, reference)
    if r.get("mpjpe_3d") is not None:
        m3 = r["mpjpe_3d"]
        out += ["", f"## 3-D MPJPE, cameras {m3['cameras']} triangulated ({m3['windows']} windows, mm)", ""]
        out += _mpjpe_table(m3, models, "mm", headline, reference)
        out += _paired_table(r.get("paired_3d"), "mm", headline)
    elif setup.get("mpjpe_3d_note"):
        out += ["", "## 3-D MPJPE", "", f"3-D MPJPE {setup['mpjpe_3d_note']}."]
    out += ["", "## Firing rates (spikes per neuron per step, mean over the first "
            f"{headline:g} ms / whole window)", ""]
    spiking = list(r["firing"])
    out.append("| layer | " + " | ".join(plots.MODEL_LABELS.get(s, s) for s in spiking) + " |")
    out.append("|---|" + "---|" * len(spiking))
    for layer in r["firing"][spiking[0]]["mean"]:
        cells = [f"{r['firing'][s]['mean_headline'][layer]:.4f} / {r['firing'][s]['mean'][layer]:.4f}"
                 for s in spiking]
        out.append(f"| {layer} | " + " | ".join(cells) + " |")
    event_rates = [np.mean(r["firing"][s]["event_input_rate"]) for s in spiking[:1]]
    out.append(f"| event input (non-zero fraction) | {event_rates[0]:.4f} |" + " |" * (len(spiking) - 1))
    macs = r["macs"]
    out += ["", f"## MACs per sample at {macs['height']}x{macs['width']} (counted from the model's jaxpr)", ""]
    out += ["| part | MACs |", "|---|---|", f"| ANN, one inference | {macs['ann'] / 1e9:.3f} G |",
            f"| state initialisers, one inference | {macs['initialisers'] / 1e9:.3f} G |",
            f"| SNN, one step (dense) | {macs['snn_step_total'] / 1e6:.2f} M |"]
    out += [f"| SNN conv {conv} | {value / 1e6:.2f} M |" for conv, value in macs["snn_per_step"].items()]
    e = r["energy"]
    out += ["", f"## Energy and power (output {e['output_rate_hz']:g} Hz, hybrid ANN {e['ann_rate_hz']:g} Hz, "
            f"static conv input: {e['event_input']})", "",
            f"SNN energies use the firing rates of the first {headline:g} ms of each window; the hybrid "
            "charges the ANN and the initialisers once per ANN period.", ""]
    presets = [k for k in e if isinstance(e[k], dict) and "preset" in e[k]]
    out.append("| quantity | " + " | ".join(presets) + " |")
    out.append("|---|" + "---|" * len(presets))
    rows = [
        ("ANN energy per inference", lambda p: _si(e[p]["hybrid"]["ann_energy_j"], "J")),
        ("initialiser energy per ANN inference", lambda p: _si(e[p]["hybrid"]["initialiser_energy_j"], "J")),
        ("hybrid SNN energy per step", lambda p: _si(e[p]["hybrid"]["snn_energy_per_step_j"], "J")),
        ("hybrid energy per ANN period", lambda p: _si(e[p]["hybrid"]["energy_per_ann_period_j"], "J")),
        ("hybrid power", lambda p: _si(e[p]["hybrid"]["hybrid_power_w"], "W")),
        ("ANN power at the output rate", lambda p: _si(e[p]["ann_every_label"]["power_w"], "W")),
        ("ANN held power (ANN rate)", lambda p: _si(e[p]["ann_held"]["power_w"], "W")),
        ("SNN alone power", lambda p: _si(e[p]["snn_alone"]["snn_power_w"], "W")),
        ("hybrid power reduction vs ANN", lambda p: f"{100 * e[p]['hybrid']['power_reduction']:.1f} %"),
    ]
    if "snn_trained" in e[presets[0]]:
        rows.insert(-1, ("pure SNN (trained) power", lambda p: _si(e[p]["snn_trained"]["snn_power_w"], "W")))
    for label, cell in rows:
        out.append(f"| {label} | " + " | ".join(cell(p) for p in presets) + " |")
    out += ["", "Paper (DHP19, camera 3): ANN 3.718 W at 100 Hz, hybrid 0.424 W (88 % less); energy per "
            "synaptic operation 0.38 pJ; see hybridjax.eval.energy for the model and the ANN per-MAC figure."]
    if r.get("tradeoff"):
        image = pathlib.Path(images["power_vs_mpjpe"]).name if images and "power_vs_mpjpe" in images else None
        out += [""] + tradeoff_markdown(r["tradeoff"], image)
    if images:
        out += ["", "## Figures", ""]
        out += [f"![{name}]({pathlib.Path(path).name})" for name, path in images.items() if name != "power_vs_mpjpe"]
    return "\n".join(out) + "\n"


def write_report(result: dict, out_dir, title: str = "hybridjax evaluation", plots_enabled: bool = True
                 ) -> dict[str, pathlib.Path]:
    """Writes ``results.json``, ``report.md``, ``samples.npz`` and the PNG plots into ``out_dir``.

    Returns name -> path of everything written.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, pathlib.Path] = {}
    images: dict[str, pathlib.Path] = {}
    if plots_enabled:
        images["mpjpe_over_time"] = plots.plot_mpjpe_over_time(result, out_dir / "mpjpe_over_time.png")
        images["firing_rates"] = plots.plot_firing_rates(result, out_dir / "firing_rates.png")
        images["energy_vs_accuracy"] = plots.plot_energy_vs_accuracy(result, out_dir / "energy_vs_accuracy.png")
        if result.get("tradeoff"):
            images["power_vs_mpjpe"] = plots.plot_power_vs_mpjpe(result["tradeoff"], out_dir / "power_vs_mpjpe.png")
        if result.get("samples"):
            images["skeletons"] = plots.plot_skeletons(result["samples"], out_dir / "skeletons.png")
    written.update(images)
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(to_json_ready(result), indent=1, allow_nan=False))
    written["json"] = json_path
    md_path = out_dir / "report.md"
    md_path.write_text(markdown_report(result, title, images))
    written["markdown"] = md_path
    if result.get("samples"):
        arrays = {}
        for i, sample in enumerate(result["samples"]):
            arrays[f"sample{i}_event_frames"] = sample["event_frames"]
            arrays[f"sample{i}_landmarks"] = sample["landmarks"]
            arrays[f"sample{i}_steps"] = np.asarray(sample["steps"])
            for model, uv in sample["predictions"].items():
                arrays[f"sample{i}_pred_{model}"] = uv
        npz_path = out_dir / "samples.npz"
        np.savez_compressed(npz_path, **arrays)
        written["samples"] = npz_path
    return written
