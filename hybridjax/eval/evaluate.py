"""Evaluation of a trained hybrid on a window dataset: accuracy per step, firing rates, energy and power.

:func:`evaluate` runs, on every window of the dataset (batched, jitted):

* ``hybrid``: the hybrid ANN-SNN (ANN at the window start, SNN every step);
* ``ann_every_label``: the ANN alone run at every label time: for the k-th labelled step (label time
  ``s + 10 k`` ms in a window starting at ``s``) the constant-count input of the 7500 events ending at
  ``s + 10 (k + 1)`` ms, i.e. the end of that label's 10 ms slot (the official ANN convention: a frame ending
  at ``m`` ms is scored against label ``m / 10 - 1``). A dataset with ``label_times_ms(window_start)``
  (Event-Human3.6M: labels at ``s + 20 (k + 1)`` ms) gets inputs ending at those times instead (its official
  pairing of a frame ending at ``m`` with the label at ``m``). This is the "ANN at the output rate" baseline;
* ``ann_held``: the ANN's prediction at the window start held for every step;
* ``snn_alone``: the hybrid's SNN from zero membranes and a zero output (``init_mode="zeros"``);
* ``snn_trained`` (optional): a separately trained pure SNN (``SNNModel``) when its variables are given.

Errors are 2-D MPJPE in pixels of the 256 crop per step (NaN-aware: mean over valid joints of all windows),
per camera; 3-D MPJPE in mm from two cameras (``EvalConfig.cameras_3d``) triangulated per window when the
dataset holds both views of it and has 3-D labels (``has_3d_labels``, default True; otherwise the result
says why there is no 3-D MPJPE in ``setup["mpjpe_3d_note"]``). Firing rates per LIF layer and step come
from the models' spike counts.
Energy and power follow :mod:`hybridjax.eval.energy` with MACs counted from the model
(:func:`hybridjax.eval.macs.hybrid_macs`).

The headline averages (``mean_headline``) cover the first ``headline_ms`` of each window (default: one ANN
period, ``window_step_ms`` = 100 ms, the paper's "hybrid at 100 Hz with the ANN every 100 ms"); ``mean``
covers every labelled step of the window.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from hybridjax.data.batch import pool_pixels
from hybridjax.data.loader import spread_indices
from hybridjax.eval import energy as energy_model
from hybridjax.eval import firing, triangulation
from hybridjax.eval.macs import hybrid_macs
from hybridjax.train.steps import predicted_landmarks

log = logging.getLogger(__name__)

# Model names in report order.
MODELS = ("hybrid", "ann_every_label", "ann_held", "snn_alone", "snn_trained")
# The 2-D label period of DHP19 (labels at 100 Hz).
LABEL_PERIOD_MS = 10


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Options of :func:`evaluate`."""

    batch_size: int = 4  # windows per jitted call (the last batch is padded)
    main_camera: int | None = 3  # camera of the headline 2-D numbers (None: the dataset's first camera)
    cameras_3d: tuple[int, int] | None = (2, 3)  # camera pair triangulated for 3-D MPJPE (None: skip)
    ann_every_label: bool = True  # run the ANN baseline at every label time (one ANN call per label)
    energy_presets: tuple[str, ...] = ("paper", "horowitz45_fp32")  # hybridjax.eval.energy presets
    output_rate_hz: float | None = None  # prediction rate for power; None: 1000 / SNN step length
    ann_rate_hz: float | None = None  # hybrid ANN re-initialisation rate; None: 1000 / window_step_ms
    headline_ms: float | None = None  # span of the headline averages; None: window_step_ms (one ANN period)
    event_input: str = "binary"  # static conv input rate: "binary" (non-zero fraction) or "dense" (1.0)
    max_windows: int | None = None  # at most this many windows per camera (quick runs); None: all
    downsample: int = 1  # sum-pool inputs by this factor (models trained on pooled inputs)
    keep_samples: int = 3  # windows of the main camera kept for the skeleton plots
    progress: bool = False  # log progress every batch


class StepErrors:
    """Accumulates per-step sums of joint errors and valid-joint counts (exact NaN-aware means)."""

    def __init__(self, num_steps: int):
        self.sums = np.zeros(num_steps, dtype=np.float64)  # summed joint errors per step
        self.counts = np.zeros(num_steps, dtype=np.int64)  # valid joints per step

    def add(self, pred, true) -> None:
        """Adds ``pred``, ``true`` of shape ``[T, ..., J, D]`` (D = 2 pixels or 3 mm); NaN truth is skipped."""
        pred = np.asarray(pred, dtype=np.float64)
        true = np.asarray(true, dtype=np.float64)
        if pred.shape != true.shape or pred.shape[0] != self.sums.shape[0]:
            raise ValueError(f"StepErrors.add: pred {pred.shape} and true {true.shape} must be equal with "
                             f"{self.sums.shape[0]} steps first")
        err = np.linalg.norm(pred - true, axis=-1)
        valid = np.isfinite(err)
        axes = tuple(range(1, err.ndim))
        self.sums += np.where(valid, err, 0.0).sum(axis=axes)
        self.counts += valid.sum(axis=axes)

    def per_step(self) -> np.ndarray:
        """Mean error per step, NaN where no joint was valid."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.nan)

    def mean(self, steps: int | None = None) -> float:
        """Mean over every valid joint of the first ``steps`` steps (all when None); NaN if there are none."""
        sums, counts = self.sums[:steps], self.counts[:steps]
        total = counts.sum()
        return float(sums.sum() / total) if total else float("nan")

    def summary(self, headline_steps: int) -> dict:
        return {"per_step": self.per_step().tolist(), "mean": self.mean(),
                "mean_headline": self.mean(headline_steps), "count": int(self.counts.sum())}


def dhp19_ann_inputs(dataset) -> Callable[[str, int, Sequence[int]], np.ndarray]:
    """``(recording, camera, ms list) -> [L, 256, 256, 20]`` constant-count ANN inputs ending at each ms.

    Uses the dataset's public ``ann_input_at(recording, camera, ms)`` when it has one, otherwise the
    DHP19 dataset's frame builder (the same function that builds ``item["ann_input"]``).
    """
    public = getattr(dataset, "ann_input_at", None)
    if public is not None:
        return lambda recording, camera, ms_list: np.stack([public(recording, camera, ms) for ms in ms_list])
    if not (hasattr(dataset, "_ann_frame") and hasattr(dataset, "_by_name")):
        raise TypeError(f"{type(dataset).__name__} cannot build ANN inputs at arbitrary times "
                        "(needs ann_input_at(recording, camera, ms))")

    def build(recording, camera, ms_list):
        rec = dataset._by_name[recording]
        return np.stack([dataset._ann_frame(rec, camera, int(ms), f"ANN baseline input at {ms} ms")
                         for ms in ms_list])

    return build


def _select_items(dataset, max_windows: int | None) -> list[int]:
    """Indices to evaluate: all windows, or ``max_windows`` per camera spread evenly over the split.

    Evenly spread (the training validation's rule, ``hybridjax.data.loader.spread_indices``) rather than the
    first ones: the first windows of a split all come from one recording's first seconds. Every camera gets
    the same positions in its own window list, so the views of a recording stay paired for triangulation.
    """
    if max_windows is None:
        return list(range(len(dataset)))
    if hasattr(dataset, "index"):
        per_camera: dict[int, list[int]] = {}
        for i, (camera, _, _) in enumerate(dataset.index()):
            per_camera.setdefault(camera, []).append(i)
        chosen = []
        for indices in per_camera.values():
            chosen += [indices[k] for k in spread_indices(len(indices), max_windows)]
        return sorted(chosen)
    return spread_indices(len(dataset), max_windows)


def _batches(indices: list[int], batch_size: int):
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def _stack_batch(items: list[dict], batch_size: int, downsample: int) -> tuple[dict, int]:
    """Time-major batch padded to ``batch_size`` by repeating the last item; returns (batch, real size)."""
    real = len(items)
    padded = items + [items[-1]] * (batch_size - real)
    events = np.stack([it["events"] for it in padded], axis=1)  # [T, B, H, W, 2]
    ann_input = np.stack([it["ann_input"] for it in padded])  # [B, H, W, 20]
    return {"events": pool_pixels(events, downsample), "ann_input": pool_pixels(ann_input, downsample)}, real


def _label_period_frames(events, label_steps: np.ndarray) -> np.ndarray:
    """Event counts (both polarities) accumulated since the previous labelled step: ``[L, H, W]``."""
    per_step = np.asarray(events, dtype=np.float32).sum(axis=-1)  # [T, H, W]
    cumulative = np.cumsum(per_step, axis=0)
    ends = cumulative[label_steps]
    starts = np.concatenate([np.zeros_like(ends[:1]), cumulative[label_steps[:-1]]], axis=0)
    return ends - starts


def evaluate(model_variables, config, dataset, eval_config: EvalConfig | None = None, *,
             snn_variables=None, ann_inputs_fn: Callable | None = None) -> dict:
    """Evaluates the hybrid (and its baselines) on every window of ``dataset``; returns a JSON-ready dict.

    Args:
      model_variables: ``HybridModel(config)`` variables ``{"params": {"ann", "initializers", "snn"},
        "batch_stats": {...}}``; the ANN baselines use ``params["ann"]``.
      config: the :class:`hybridjax.models.ModelConfig` of the model.
      dataset: a window dataset (``hybridjax.data.DHP19Dataset``): ``len``, ``[i]`` -> dict with ``events``
        ``[T, H, W, 2]``, ``ann_input``, ``landmarks [T, J, 2]``, ``step_has_label``, ``joints_3d``,
        ``camera``, ``recording``, ``window_start_ms``; ``projection_matrix(camera)`` and
        ``camera_position(camera)`` for 3-D.
      eval_config: :class:`EvalConfig`.
      snn_variables: optional ``SNNModel(config)`` variables (adds ``snn_trained``).
      ann_inputs_fn: ``(recording, camera, ms list) -> [L, H, W, 20]`` for the every-label ANN baseline;
        default :func:`dhp19_ann_inputs`.

    Returns:
      ``{"setup", "mpjpe_2d": {camera: {model: summary}}, "mpjpe_2d_main": {model: summary},
      "mpjpe_3d": {model: summary} | None, "firing": {...}, "macs": {...}, "energy": {preset: {...}},
      "samples": [...]}`` where a summary is ``{"per_step", "mean", "mean_headline", "count"}`` (see
      :class:`StepErrors`). ``samples`` holds numpy arrays for the plots (dropped from the JSON).
    """
    from hybridjax.models import ANNUNet, HybridModel, SNNModel

    ec = eval_config or EvalConfig()
    if ec.event_input not in ("binary", "dense"):
        raise ValueError(f"EvalConfig.event_input must be 'binary' or 'dense', got {ec.event_input!r}")
    for name in ec.energy_presets:
        energy_model.preset(name)  # fails early on an unknown preset
    if len(dataset) == 0:
        raise ValueError("evaluate: the dataset has no windows")
    wall_start = time.perf_counter()
    first = dataset[0]
    num_steps, height, width = first["events"].shape[0], first["events"].shape[1], first["events"].shape[2]
    step_has_label = np.asarray(first["step_has_label"], dtype=bool)
    window_ms = getattr(dataset, "window_ms", None) or num_steps * LABEL_PERIOD_MS
    step_ms = window_ms / num_steps
    window_step_ms = getattr(getattr(dataset, "config", None), "window_step_ms", 100)
    headline_ms = ec.headline_ms if ec.headline_ms is not None else window_step_ms
    headline_steps = max(1, min(num_steps, int(round(headline_ms / step_ms))))
    label_steps = np.flatnonzero(step_has_label)
    cameras = tuple(getattr(dataset, "cameras", (first["camera"],)))
    main_camera = ec.main_camera if ec.main_camera in cameras else cameras[0]
    f = ec.downsample
    models = ["hybrid", "ann_held", "snn_alone"]
    if ec.ann_every_label:
        models.insert(1, "ann_every_label")
        ann_inputs_fn = ann_inputs_fn or dhp19_ann_inputs(dataset)
    if snn_variables is not None:
        models.append("snn_trained")

    hybrid = HybridModel(config)
    ann = ANNUNet(config)
    ann_variables = {"params": {"ann": model_variables["params"]["ann"]}}

    @jax.jit
    def run_hybrid(variables, ann_input, events):
        out = hybrid.apply(variables, ann_input, events, train=False)
        alone = hybrid.apply(variables, ann_input, events, train=False, init_mode="zeros")
        return {
            "hybrid": predicted_landmarks(out.heatmaps, f),
            "ann_held": predicted_landmarks(out.ann_heatmap, f),
            "snn_alone": predicted_landmarks(alone.heatmaps, f),
            "spikes_hybrid": out.spike_counts,
            "spikes_snn_alone": alone.spike_counts,
        }

    @jax.jit
    def run_ann(variables, ann_input):
        return predicted_landmarks(ann.apply(variables, ann_input), f)

    snn_model = SNNModel(config)

    @jax.jit
    def run_snn(variables, events):
        out = snn_model.apply(variables, events, train=False)
        return predicted_landmarks(out.heatmaps, f), out.spike_counts

    neurons = firing.lif_neuron_counts(config, height // f, width // f)
    spiking = {name: firing.FiringAccumulator(neurons) for name in ("hybrid", "snn_alone", "snn_trained")
               if name in models}
    errors_2d = {camera: {m: StepErrors(num_steps) for m in models} for camera in cameras}
    samples = []
    want_3d, note_3d = False, None
    if ec.cameras_3d is None:
        note_3d = "not requested (EvalConfig.cameras_3d is None)"
    elif not getattr(dataset, "has_3d_labels", True) or not hasattr(dataset, "projection_matrix"):
        note_3d = (f"not defined: {type(dataset).__name__} has no 3-D labels or camera calibration "
                   "(joints_3d is NaN)")
    elif not all(c in cameras for c in ec.cameras_3d):
        note_3d = f"not computed: cameras {list(ec.cameras_3d)} are not all among the evaluated {list(cameras)}"
    else:
        want_3d = True
    label_times_fn = getattr(dataset, "label_times_ms", None)
    views = _StereoErrors(dataset, ec.cameras_3d, models, num_steps, label_steps) if want_3d else None

    def load(chunk):
        # Runs in a worker thread: reads the windows (and the every-label ANN inputs) of the next batch
        # while the device computes the current one.
        items = [dataset[i] for i in chunk]
        batch, real = _stack_batch(items, ec.batch_size, f)
        frames = None
        if "ann_every_label" in models:
            per_item = [ann_inputs_fn(it["recording"], it["camera"], _every_label_ms(it["window_start_ms"]))
                        for it in items]
            per_item += [per_item[-1]] * (ec.batch_size - real)
            frames = pool_pixels(np.stack(per_item, axis=1), f)  # [L, B, H, W, 20]
        return items, batch, real, frames

    def _every_label_ms(start: int) -> list[int]:
        if label_times_fn is not None:
            return [int(ms) for ms in label_times_fn(int(start))]
        return [int(start) + LABEL_PERIOD_MS * (k + 1) for k in range(len(label_steps))]

    def evaluate_batch(items, batch, real, frames, batch_number):
        out = jax.device_get(run_hybrid(model_variables, batch["ann_input"], batch["events"]))
        preds = {
            "hybrid": out["hybrid"],  # [T, B, J, 2]
            "ann_held": np.broadcast_to(out["ann_held"][None], out["hybrid"].shape),
            "snn_alone": out["snn_alone"],
        }
        spiking["hybrid"].add(out["spikes_hybrid"][:, :, :real], batch["events"][:, :real])
        spiking["snn_alone"].add(out["spikes_snn_alone"][:, :, :real], batch["events"][:, :real])
        if "snn_trained" in models:
            uv, counts = jax.device_get(run_snn(snn_variables, batch["events"]))
            preds["snn_trained"] = uv
            spiking["snn_trained"].add(counts[:, :, :real], batch["events"][:, :real])
        if "ann_every_label" in models:
            every = np.full(out["hybrid"].shape, np.nan, dtype=np.float32)
            for k, step in enumerate(label_steps):
                every[step] = jax.device_get(run_ann(ann_variables, frames[k]))
            preds["ann_every_label"] = every
        for b, item in enumerate(items):
            truth = np.asarray(item["landmarks"], dtype=np.float64)  # [T, J, 2]
            camera = item["camera"]
            kept = {m: np.asarray(preds[m][:, b], dtype=np.float64) for m in models}
            for m in models:
                errors_2d[camera][m].add(kept[m], truth)
            if views is not None and camera in ec.cameras_3d:
                views.add(item, kept)
            if camera == main_camera and len(samples) < ec.keep_samples:
                samples.append({"recording": item["recording"], "camera": camera,
                                "window_start_ms": int(item["window_start_ms"]), "steps": label_steps,
                                "event_frames": _label_period_frames(item["events"], label_steps),
                                "landmarks": truth, "predictions": kept})
        if ec.progress:
            log.info("evaluate: batch %d, %d / %d windows", batch_number + 1,
                     min((batch_number + 1) * ec.batch_size, len(indices)), len(indices))


    indices = _select_items(dataset, ec.max_windows)
    chunks = list(_batches(indices, ec.batch_size))
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, chunks[0])
        for batch_number in range(len(chunks)):
            items, batch, real, frames = pending.result()
            if batch_number + 1 < len(chunks):
                pending = pool.submit(load, chunks[batch_number + 1])
            evaluate_batch(items, batch, real, frames, batch_number)

    result = {
        "setup": {
            "dataset": type(dataset).__name__,
            "num_windows": len(indices), "cameras": list(cameras), "main_camera": main_camera,
            "num_steps": num_steps, "step_ms": step_ms, "window_ms": window_ms,
            "window_step_ms": window_step_ms, "headline_steps": headline_steps, "headline_ms": headline_ms,
            "label_steps": label_steps.tolist(), "height": height, "width": width, "models": models,
            "model_config": _plain(dataclasses.asdict(config)), "eval_config": _plain(dataclasses.asdict(ec)),
        },
        "mpjpe_2d": {str(camera): {m: acc.summary(headline_steps) for m, acc in per_model.items()}
                     for camera, per_model in errors_2d.items()},
    }
    result["mpjpe_2d_main"] = result["mpjpe_2d"][str(main_camera)]
    result["mpjpe_3d"] = views.summary(headline_steps) if views is not None else None
    result["setup"]["mpjpe_3d_note"] = note_3d
    result["firing"] = {
        name: {"per_step": {layer: acc.rates()[:, i].tolist() for i, layer in enumerate(firing.LIF_LAYERS)},
               "mean": acc.mean_rates(),
               "mean_headline": dict(zip(firing.LIF_LAYERS, acc.rates()[:headline_steps].mean(axis=0).tolist(),
                                         strict=True)),
               "event_input_rate": acc.event_rates().tolist()}
        for name, acc in spiking.items()
    }
    counted = hybrid_macs(config, height // f, width // f)
    result["macs"] = counted.as_dict()
    output_rate = ec.output_rate_hz or 1000.0 / step_ms
    ann_rate = ec.ann_rate_hz or 1000.0 / window_step_ms
    result["energy"] = _energy(result["firing"], neurons, counted, ec, output_rate, ann_rate, headline_steps)
    result["samples"] = samples
    result["setup"]["wall_seconds"] = time.perf_counter() - wall_start
    return result


class _StereoErrors:
    """3-D errors of windows seen by both cameras of a pair, triangulated as soon as both views arrived.

    Only the labelled steps of a window are kept while it waits for its other view (float32), so memory stays
    small for long 1 ms windows.
    """

    def __init__(self, dataset, cameras, models, num_steps: int, label_steps: np.ndarray):
        self.cameras = tuple(cameras)
        self.matrices = np.stack([dataset.projection_matrix(c) for c in self.cameras])
        self.centres = np.stack([dataset.camera_position(c) for c in self.cameras])
        self.models = list(models)
        self.num_steps = num_steps
        self.label_steps = label_steps
        self.errors = {m: StepErrors(num_steps) for m in self.models}
        self.waiting: dict[tuple[str, int], tuple[int, dict]] = {}  # (recording, start) -> (camera, views)
        self.pairs = 0

    def add(self, item: dict, predictions: dict) -> None:
        """One camera's predictions ``{model: [T, J, 2]}`` for the window ``item``."""
        steps = self.label_steps
        entry = {m: np.asarray(predictions[m])[steps].astype(np.float32) for m in self.models}
        entry["joints_3d"] = np.asarray(item["joints_3d"], dtype=np.float32)[steps]
        key = (item["recording"], int(item["window_start_ms"]))
        camera = item["camera"]
        if key not in self.waiting:
            self.waiting[key] = (camera, entry)
            return
        other_camera, other = self.waiting.pop(key)
        if other_camera == camera:
            raise ValueError(f"evaluate: window {key} of camera {camera} was seen twice")
        views = {camera: entry, other_camera: other}
        truth = np.full((self.num_steps,) + entry["joints_3d"].shape[1:], np.nan)
        truth[steps] = views[self.cameras[0]]["joints_3d"]
        for m in self.models:
            points = np.full_like(truth, np.nan)
            uv = np.stack([views[c][m] for c in self.cameras])  # [2, L, J, 2]
            points[steps] = triangulation.triangulate(uv, self.matrices, self.centres)
            self.errors[m].add(points, truth)
        self.pairs += 1

    def summary(self, headline_steps: int) -> dict:
        out = {m: acc.summary(headline_steps) for m, acc in self.errors.items()}
        out["windows"] = self.pairs
        out["cameras"] = list(self.cameras)
        return out


def _energy(firing_result: dict, neurons: dict, counted, ec: EvalConfig, output_rate: float, ann_rate: float,
            headline_steps: int) -> dict:
    """Energy per inference and power for every preset, from the headline-span firing rates."""
    out = {"output_rate_hz": output_rate, "ann_rate_hz": ann_rate, "event_input": ec.event_input}
    for name in ec.energy_presets:
        preset = energy_model.preset(name)
        entry = {"preset": dataclasses.asdict(preset)}
        for model in ("hybrid", "snn_alone", "snn_trained"):
            if model not in firing_result:
                continue
            rates = firing_result[model]["mean_headline"]
            event_rate = (1.0 if ec.event_input == "dense"
                          else float(np.mean(firing_result[model]["event_input_rate"][:headline_steps])))
            conv_rates = energy_model.conv_input_rates(rates, neurons, event_rate)
            breakdown = energy_model.snn_energy_breakdown_j(counted.snn_per_step, conv_rates, preset)
            e_step = sum(breakdown.values())
            power = energy_model.hybrid_power(ann_macs=counted.ann, initializer_macs=counted.initializers,
                                              snn_energy_per_step=e_step, output_rate_hz=output_rate,
                                              ann_rate_hz=ann_rate, energy=preset)
            entry[model] = {
                "conv_input_rates": conv_rates,
                "snn_energy_breakdown_j": breakdown,
                "snn_energy_per_step_j": e_step,
                "snn_power_w": power.snn_power_w,
            }
            if model == "hybrid":
                steps_per_ann = output_rate / ann_rate
                entry[model].update(
                    power.as_dict(),
                    energy_per_ann_period_j=power.ann_energy_j + power.initializer_energy_j + steps_per_ann * e_step,
                )
        ann_j = energy_model.ann_energy_j(counted.ann, preset)
        entry["ann_every_label"] = {"energy_per_inference_j": ann_j, "power_w": ann_j * output_rate}
        entry["ann_held"] = {"energy_per_inference_j": ann_j, "power_w": ann_j * ann_rate}
        out[name] = entry
    return out


def _plain(value):
    """Dataclass fields -> JSON-friendly values (tuples to lists)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value

