r"""The accuracy-versus-power trade-off: the hybrid's ANN re-initialisation period and SNN output rate swept.

A point of the sweep is an ANN period ``P`` (the hybrid re-initialises its SNN from the ANN every ``P`` ms)
and an output rate ``R`` (one SNN step, hence one prediction, every ``1000 / R`` ms). Three models:

* ``hybrid``: on every test window the ANN runs at ``s, s + P, s + 2P, ...`` (the constant-count input
  ending at that time) and the SNN runs over the events of each period from what the ANN hands it;
* ``ann_held``: the ANN's prediction at each re-initialisation held for the period;
* ``ann_at_rate``: the ANN run at the output rate. With 100 Hz labels every rate >= 100 Hz has an ANN output
  at each label time, the one of the frame ending at the end of the label's 10 ms slot (the every-label
  baseline of :mod:`hybridjax.eval.evaluate`), so its accuracy is the same at every such rate; its power
  grows with ``R``.

The SNN step of a point is ``1000 / R`` ms. A model trained at step ``d`` runs at a step that is a whole
multiple ``g d``: the events of ``g`` consecutive bins are summed (exact for event counts) and the time
constants, stored per 10 ms (:class:`~hybridjax.models.ModelConfig`), are converted to the new step; rates
whose step is not such a multiple, or does not divide ``P``, are skipped and listed. Only ``g = 1`` is the
step the model was trained at.

Power (:func:`tradeoff_power`, energies of :mod:`hybridjax.eval.energy`, the SNN's from the firing rates
measured at that point):

.. math::

    P_{hybrid} = (E_{ANN} + E_{init}) \frac{1000}{P} + E_{SNN} R,\qquad
    P_{ANN\ held} = E_{ANN} \frac{1000}{P},\qquad P_{ANN}(R) = E_{ANN} R.

MPJPE is scored on every labelled step of the test windows (each lies in some period), with a 95%
bootstrap interval over windows (:mod:`hybridjax.eval.statistics`).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from hybridjax.data.batch import pool_pixels
from hybridjax.eval import energy as energy_model
from hybridjax.eval import firing
from hybridjax.eval.evaluate import _select_items
from hybridjax.eval.macs import hybrid_macs
from hybridjax.eval.statistics import WindowErrors, format_interval
from hybridjax.metrics import predicted_landmarks
from hybridjax.models import ANNUNet, HybridModel

PERIODS_MS = (20, 50, 100, 200)  # ANN re-initialisation periods swept (ms)
OUTPUT_RATES_HZ = (100.0, 200.0, 1000.0)  # SNN output rates swept (Hz)
# The paper's DHP19 points (SPEC section 5): (label, power W, 2-D MPJPE px).
PAPER_POINTS = (
    ("paper hybrid, 100 Hz (ANN 10 Hz)", 0.424, 5.19),
    ("paper hybrid, 200 Hz (ANN 10 Hz)", 0.432, 5.16),
    ("paper ANN, 100 Hz", 3.718, 5.03),
)


@dataclasses.dataclass(frozen=True)
class TradeoffConfig:
    """Options of :func:`evaluate_tradeoff`."""

    periods_ms: tuple[int, ...] = PERIODS_MS  # ANN re-initialisation periods (each must divide the window)
    output_rates_hz: tuple[float, ...] = OUTPUT_RATES_HZ  # SNN output rates (step = 1000 / rate ms)
    energy_preset: str = "paper"  # hybridjax.eval.energy preset of the power figures
    event_input: str = "binary"  # static conv input rate: "binary" (non-zero fraction) or "dense" (1.0)
    batch_size: int = 4  # windows per jitted call (the last batch is padded)
    max_windows: int | None = None  # at most this many windows per camera, spread over the split; None: all
    downsample: int = 1  # sum-pool inputs by this factor (models trained on pooled inputs)
    camera: int | None = 3  # camera scored (None or absent: the dataset's first)


@dataclasses.dataclass(frozen=True)
class SweepPoint:
    """One (period, rate) point the model's step allows."""

    period_ms: int  # ANN re-initialisation period
    output_rate_hz: float  # predictions (SNN steps) per second
    step_ms: float  # SNN step = 1000 / output_rate_hz
    factor: int  # dataset bins summed into one step


def tradeoff_power(*, ann_macs: float, initialiser_macs: float, snn_energy_per_step_j: float, period_ms: float,
                   output_rate_hz: float, energy: energy_model.EnergyPreset) -> dict[str, float]:
    """Power in W of the three models of the sweep at one point (the equations of the module docstring)."""
    if period_ms <= 0:
        raise ValueError(f"tradeoff_power: period_ms must be positive, got {period_ms}")
    ann_rate = 1000.0 / period_ms
    summary = energy_model.hybrid_power(ann_macs=ann_macs, initialiser_macs=initialiser_macs,
                                        snn_energy_per_step=snn_energy_per_step_j, output_rate_hz=output_rate_hz,
                                        ann_rate_hz=ann_rate, energy=energy)
    return {"hybrid": summary.hybrid_power_w, "ann_at_rate": summary.ann_power_w,
            "ann_held": summary.ann_energy_j * ann_rate, "snn": summary.snn_power_w}


def sweep_points(model_step_ms: float, window_ms: float, periods_ms, output_rates_hz
                 ) -> tuple[list[SweepPoint], list[dict]]:
    """The points the model's step and the window allow, and the skipped ones with the reason."""
    points, skipped = [], []
    for period in periods_ms:
        for rate in output_rates_hz:
            step = 1000.0 / rate
            factor = step / model_step_ms
            reason = None
            if window_ms % period:
                reason = f"the {period} ms period does not divide the {window_ms:g} ms test window"
            elif abs(factor - round(factor)) > 1e-9 or round(factor) < 1:
                reason = (f"a {step:g} ms step is not a whole multiple of the model's {model_step_ms:g} ms step")
            elif abs(period / step - round(period / step)) > 1e-9:
                reason = f"the {period} ms period is not a whole number of {step:g} ms steps"
            if reason:
                skipped.append({"period_ms": period, "output_rate_hz": rate, "reason": reason})
            else:
                points.append(SweepPoint(int(period), float(rate), step, int(round(factor))))
    return points, skipped


def rebin_events(events: np.ndarray, factor: int) -> np.ndarray:
    """Sums ``factor`` consecutive steps of ``events [T, ...]`` -> ``[T / factor, ...]``.

    A coarse step ``c`` covers the dataset's steps ``c * factor .. (c + 1) * factor - 1``; its prediction is
    scored against the label of the dataset step inside it (at most one for steps up to the 10 ms label
    period), as a model trained at the coarse step would be scored.
    """
    steps = events.shape[0]
    if steps % factor:
        raise ValueError(f"rebin_events: {steps} steps are not a whole number of groups of {factor}")
    if factor == 1:
        return events
    return events.reshape((steps // factor, factor) + events.shape[1:]).sum(axis=1)


def _periods_as_batch(x: np.ndarray, segments: int) -> np.ndarray:
    """``[T, B, ...]`` -> ``[T / S, S * B, ...]``: the S periods of a window become batch entries."""
    t, b = x.shape[:2]
    per = t // segments
    x = x.reshape((segments, per, b) + x.shape[2:])
    return np.swapaxes(x, 0, 1).reshape((per, segments * b) + x.shape[3:])


def _periods_back(x: np.ndarray, segments: int) -> np.ndarray:
    """Inverse of :func:`_periods_as_batch`: ``[n, S * B, ...]`` -> ``[S * n, B, ...]``."""
    n, sb = x.shape[:2]
    b = sb // segments
    x = np.swapaxes(x.reshape((n, segments, b) + x.shape[2:]), 0, 1)
    return x.reshape((segments * n, b) + x.shape[3:])


def evaluate_tradeoff(model_variables, config, dataset, tc: TradeoffConfig | None = None, *,
                      log=None) -> dict:
    """Runs the sweep on ``dataset`` (a :class:`~hybridjax.eval.protocol.WindowDataset`).

    ``model_variables``: ``HybridModel(config)`` variables; ``config``: its ModelConfig, trained at
    ``config.step_ms`` (the dataset's bins must have that length). Returns a JSON-ready dict (``setup``,
    ``points``: one entry per model and point with ``mpjpe {mean, ci_low, ci_high, windows}`` and
    ``power_w``, ``skipped``).
    """

    tc = tc or TradeoffConfig()
    preset = energy_model.preset(tc.energy_preset)
    if tc.event_input not in ("binary", "dense"):
        raise ValueError(f"TradeoffConfig.event_input must be 'binary' or 'dense', got {tc.event_input!r}")
    started = time.perf_counter()
    first = dataset[0]
    num_steps = first["events"].shape[0]
    window_ms = dataset.window_ms
    if abs(window_ms / num_steps - config.step_ms) > 1e-9:
        raise ValueError(f"evaluate_tradeoff: the dataset's steps are {window_ms / num_steps:g} ms, the model's "
                         f"{config.step_ms:g} ms")
    points, skipped = sweep_points(config.step_ms, window_ms, tc.periods_ms, tc.output_rates_hz)
    if not points:
        raise ValueError(f"evaluate_tradeoff: no point of the sweep fits the model's {config.step_ms:g} ms step "
                         f"and the {window_ms:g} ms window: {skipped}")
    cameras = tuple(dataset.cameras)
    camera = tc.camera if tc.camera in cameras else cameras[0]
    index = dataset.index()
    indices = [i for i in _select_items(dataset, tc.max_windows) if index[i][0] == camera]

    def ann_inputs(recording, cam, ms_list):
        return np.stack([dataset.ann_input_at(recording, cam, int(ms)) for ms in ms_list])

    label_steps = np.flatnonzero(np.asarray(first["step_has_label"], bool))
    f = tc.downsample
    height, width = first["events"].shape[1] // f, first["events"].shape[2] // f
    neurons = firing.lif_neuron_counts(config, height, width)

    runners = {}
    for point in points:
        model = HybridModel(dataclasses.replace(config, step_ms=point.step_ms))
        runners[point] = jax.jit(lambda v, a, e, model=model: _hybrid_run(model, v, a, e, f))
    ann = ANNUNet(config)
    run_ann = jax.jit(lambda v, a: predicted_landmarks(ann.apply(v, a), f))
    ann_variables = {"params": {"ann": model_variables["params"]["ann"]}}

    errors = {("hybrid", p): WindowErrors(num_steps) for p in points}
    errors.update({("ann_held", p.period_ms): WindowErrors(num_steps) for p in points})
    errors["ann_at_rate"] = WindowErrors(num_steps)
    spikes = {p: firing.FiringAccumulator(neurons) for p in points}

    first_of_period = {p.period_ms: p for p in reversed(points)}  # the run that also scores ann_held
    step_has_label = np.asarray(first["step_has_label"], bool)
    unlabelled = ~step_has_label[:, None, None]
    for batch_number, start in enumerate(range(0, len(indices), tc.batch_size)):
        items = [dataset[i] for i in indices[start:start + tc.batch_size]]
        real = len(items)
        items = items + [items[-1]] * (tc.batch_size - real)
        events = pool_pixels(np.stack([it["events"] for it in items], axis=1), f)  # [T, B, h, w, 2]
        truth = [np.asarray(it["landmarks"], np.float64) for it in items[:real]]  # [T, J, 2] each
        frames = {}  # period -> [S * B, h, w, 20]: the ANN inputs of every re-initialisation, period-major
        for point in points:
            segments = int(round(window_ms / point.period_ms))
            if point.period_ms not in frames:
                times = [[int(it["window_start_ms"]) + j * point.period_ms for j in range(segments)] for it in items]
                per_item = np.stack([ann_inputs(it["recording"], it["camera"], ms) for it, ms in zip(items, times)])
                pooled = pool_pixels(np.swapaxes(per_item, 0, 1), f)  # [S, B, h, w, 20]
                frames[point.period_ms] = pooled.reshape((-1,) + pooled.shape[2:])
            run_events = _periods_as_batch(rebin_events(events, point.factor), segments)  # [n, S * B, h, w, 2]
            out = jax.device_get(runners[point](model_variables, frames[point.period_ms], run_events))
            # Each coarse prediction stands for the dataset steps it covers; only the labelled ones are scored.
            hybrid_uv = np.repeat(_periods_back(out["hybrid"], segments), point.factor, axis=0)  # [T, B, J, 2]
            spikes[point].add(_real_windows(out["spikes"], 2, segments, real),
                              _real_windows(run_events, 1, segments, real))
            for b in range(real):
                errors["hybrid", point].add(np.where(unlabelled, np.nan, hybrid_uv[:, b]), truth[b])
            if first_of_period[point.period_ms] == point:
                held = out["ann"].reshape((segments, tc.batch_size) + out["ann"].shape[1:])  # [S, B, J, 2]
                held_uv = np.repeat(held, num_steps // segments, axis=0)  # [T, B, J, 2]
                for b in range(real):
                    errors["ann_held", point.period_ms].add(np.where(unlabelled, np.nan, held_uv[:, b]), truth[b])
        every_label = [ann_inputs(it["recording"], it["camera"], dataset.label_times_ms(int(it["window_start_ms"])))
                       for it in items]  # [L, H, W, 20] each
        every = np.full((num_steps, tc.batch_size) + truth[0].shape[1:], np.nan)
        for k, step in enumerate(label_steps):
            every[step] = jax.device_get(run_ann(ann_variables, pool_pixels(np.stack([x[k] for x in every_label]), f)))
        for b in range(real):
            errors["ann_at_rate"].add(every[:, b], truth[b])
        if log is not None:
            log(f"tradeoff: batch {batch_number + 1}, {min(start + tc.batch_size, len(indices))} / "
                f"{len(indices)} windows")

    counted = hybrid_macs(config, height, width)
    result_points = []
    for point in points:
        acc = spikes[point]
        event_rate = 1.0 if tc.event_input == "dense" else float(np.mean(acc.event_rates()))
        rates = acc.mean_rates()
        e_step = energy_model.snn_energy_per_step_j(
            counted.snn_per_step, energy_model.conv_input_rates(rates, neurons, event_rate), preset)
        power = tradeoff_power(ann_macs=counted.ann, initialiser_macs=counted.initialisers,
                               snn_energy_per_step_j=e_step, period_ms=point.period_ms,
                               output_rate_hz=point.output_rate_hz, energy=preset)
        result_points.append({"model": "hybrid", **dataclasses.asdict(point), "power_w": power["hybrid"],
                              "snn_power_w": power["snn"], "snn_energy_per_step_j": e_step,
                              "mean_firing_rate": float(np.mean(list(rates.values()))),
                              "mpjpe": errors["hybrid", point].over_steps(label_steps)})
    for period in sorted({p.period_ms for p in points}):
        power = energy_model.ann_energy_j(counted.ann, preset) * 1000.0 / period
        result_points.append({"model": "ann_held", "period_ms": period, "output_rate_hz": None, "power_w": power,
                              "mpjpe": errors["ann_held", period].over_steps(label_steps)})
    ann_accuracy = errors["ann_at_rate"].over_steps(label_steps)
    for rate in sorted({p.output_rate_hz for p in points}):
        result_points.append({"model": "ann_at_rate", "period_ms": None, "output_rate_hz": rate,
                              "power_w": energy_model.ann_energy_j(counted.ann, preset) * rate,
                              "mpjpe": ann_accuracy})
    return {
        "setup": {"periods_ms": list(tc.periods_ms), "output_rates_hz": list(tc.output_rates_hz),
                  "model_step_ms": config.step_ms, "window_ms": window_ms, "camera": camera,
                  "num_windows": len(indices), "energy_preset": tc.energy_preset, "event_input": tc.event_input,
                  "height": height, "width": width, "downsample": f, "macs": counted.as_dict(),
                  "wall_seconds": time.perf_counter() - started},
        "points": result_points,
        "skipped": skipped,
    }


def _real_windows(x: np.ndarray, axis: int, segments: int, real: int) -> np.ndarray:
    """The entries of the ``real`` (unpadded) windows along a period-major ``S * B`` axis of ``x``."""
    batch = x.shape[axis] // segments
    split = x.reshape(x.shape[:axis] + (segments, batch) + x.shape[axis + 1:])
    kept = np.take(split, np.arange(real), axis=axis + 1)
    return kept.reshape(x.shape[:axis] + (segments * real,) + x.shape[axis + 1:])


def _hybrid_run(model, variables, ann_input, events, downsample):
    out = model.apply(variables, ann_input, events, train=False)
    return {"hybrid": predicted_landmarks(out.heatmaps, downsample),
            "ann": predicted_landmarks(out.ann_heatmap, downsample), "spikes": out.spike_counts}


def fmt_rate(rate_hz: float) -> str:
    """``100 Hz``, ``1 kHz``."""
    return f"{rate_hz / 1000:g} kHz" if rate_hz >= 1000 else f"{rate_hz:g} Hz"


def _watts(value: float) -> str:
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n")):
        if abs(value) >= factor:
            return f"{value / factor:.4g} {prefix}W"
    return f"{value:.3g} W"


MODEL_ORDER = ("hybrid", "ann_held", "ann_at_rate")
MODEL_NAMES = {"hybrid": "hybrid ANN-SNN", "ann_held": "ANN held for the period",
               "ann_at_rate": "ANN at the output rate"}


def tradeoff_markdown(result: dict, image: str | None = None) -> list[str]:
    """The trade-off section of a report (markdown lines): a table of every point and the plot."""
    setup = result["setup"]
    lines = ["## Accuracy versus power: ANN period and output rate", "",
             f"{setup['num_windows']} test windows of camera {setup['camera']} ({setup['window_ms']:g} ms each, all "
             "labelled steps scored); 2-D MPJPE in pixels of the 256 crop with its 95% bootstrap interval over "
             f"windows; power with the {setup['energy_preset']} energy preset at the model's "
             f"{setup['height']}x{setup['width']} input, the SNN's energy from the firing rates measured at each "
             f"point. The model was trained with {setup['model_step_ms']:g} ms steps; other steps sum its bins and "
             "convert its time constants (no retraining).", "",
             "| model | ANN period [ms] (ANN rate) | output rate (SNN step) | 2-D MPJPE [px] | windows | power |"
             " SNN part | mean firing rate |", "|---|---|---|---|---|---|---|---|"]
    for model in MODEL_ORDER:
        for p in sorted((p for p in result["points"] if p["model"] == model),
                        key=lambda p: (p["output_rate_hz"] or 0, p["period_ms"] or 0)):
            period = f"{p['period_ms']} ({fmt_rate(1000.0 / p['period_ms'])})" if p["period_ms"] else "-"
            if p["output_rate_hz"]:
                rate = fmt_rate(p["output_rate_hz"]) + (f" ({p['step_ms']:g} ms)" if "step_ms" in p else "")
            else:
                rate = "-"
            snn = _watts(p["snn_power_w"]) if "snn_power_w" in p else "-"
            firing_rate = f"{p['mean_firing_rate']:.4f}" if "mean_firing_rate" in p else "-"
            lines.append(f"| {MODEL_NAMES[model]} | {period} | {rate} | {format_interval(p['mpjpe'])} | "
                         f"{p['mpjpe']['windows']} | {_watts(p['power_w'])} | {snn} | {firing_rate} |")
    lines += ["", "Paper (DHP19, camera 3, paper model at 256x256): hybrid 0.424 W / 5.19 px at 100 Hz and 0.432 W / "
              "5.16 px at 200 Hz (ANN at 10 Hz); ANN 3.718 W / 5.03 px at 100 Hz."]
    if result.get("skipped"):
        by_reason: dict[str, list[str]] = {}
        for s in result["skipped"]:
            by_reason.setdefault(s["reason"], []).append(f"{fmt_rate(s['output_rate_hz'])} at {s['period_ms']} ms")
        lines += ["", "Not allowed, hence skipped: " + "; ".join(f"{', '.join(points)} ({reason})"
                                                          for reason, points in by_reason.items()) + "."]
    lines += ["", f"Sweep time: {setup['wall_seconds']:.0f} s."]
    if image:
        lines += ["", f"![accuracy versus power]({image})"]
    return lines
