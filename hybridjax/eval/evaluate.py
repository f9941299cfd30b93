"""Evaluation of a trained hybrid on a window dataset: accuracy per step, firing rates, energy and power.

:func:`evaluate` runs, on every window of the dataset (batched, jitted):

* ``hybrid``: the hybrid ANN-SNN (ANN at the window start, SNN every step);
* ``ann_every_label``: the ANN alone run at every label time: for the k-th labelled step the constant-count
  input of the 7500 events ending at the dataset's ``label_times_ms(s)[k]`` (DHP19: ``s + 10 (k + 1)`` ms,
  the end of that label's 10 ms slot, the official ANN convention of a frame ending at ``m`` ms scored
  against label ``m / 10 - 1``; Event-Human3.6M: ``s + 20 (k + 1)`` ms, its official pairing of a frame
  ending at ``m`` with the label at ``m``). This is the "ANN at the output rate" baseline;
* ``ann_held``: the ANN's prediction at the window start held for every step;
* ``snn_alone``: the hybrid's SNN from zero membranes and a zero output (``init_mode="zeros"``);
* ``snn_trained`` (optional): a separately trained pure SNN (``SNNModel``) when its variables are given.

Errors are 2-D MPJPE in pixels of the 256 crop per step (NaN-aware: mean over valid joints of all windows),
per camera; 3-D MPJPE in mm from two cameras (``EvalConfig.cameras_3d``) triangulated per window when the
dataset holds both views of it and has 3-D labels (``has_3d_labels``; otherwise the result says why there
is no 3-D MPJPE in ``setup["mpjpe_3d_note"]``). Firing rates per LIF layer and step come
from the models' spike counts.
Energy and power follow :mod:`hybridjax.eval.energy` with MACs counted from the model
(:func:`hybridjax.eval.macs.hybrid_macs`).

The work is split in three: the jitted predict functions (:class:`hybridjax.eval.predict.Predictors`,
:func:`predict_batch`), the accumulators (:class:`Accumulators`) and :func:`summarise`. Datasets are read only
through :class:`hybridjax.eval.protocol.WindowDataset`, batches through the one loader.

The headline averages (``mean_headline``) cover the first ``headline_ms`` of each window (default: one ANN
period, ``window_step_ms`` = 100 ms, the paper's "hybrid at 100 Hz with the ANN every 100 ms"); ``mean``
covers every labelled step of the window.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import jax
import numpy as np

from hybridjax.data.loader import BatchLoader, spread_indices
from hybridjax.eval import energy as energy_model
from hybridjax.eval import firing, statistics, triangulation
from hybridjax.eval.macs import hybrid_macs
from hybridjax.eval.predict import Predictors
from hybridjax.eval.protocol import CalibratedWindowDataset, WindowDataset

log = logging.getLogger(__name__)

# Model names in report order.
MODELS = ("hybrid", "ann_every_label", "ann_held", "snn_alone", "snn_trained")
# Paired per-window differences reported with their bootstrap intervals: (model, baseline).
PAIRED = (("hybrid", "ann_held"), ("hybrid", "ann_every_label"), ("hybrid", "snn_alone"),
          ("hybrid", "snn_trained"))
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
    """Accumulates per-step sums of joint errors and valid-joint counts (exact NaN-aware means).

    Every :meth:`add` is one window: its per-step sums and counts are also kept as a row, so that
    :meth:`summary` can give bootstrap intervals over windows (:mod:`hybridjax.eval.statistics`) and two
    accumulators fed the same windows in the same order can be compared window by window.
    """

    def __init__(self, num_steps: int):
        self.sums = np.zeros(num_steps, dtype=np.float64)  # summed joint errors per step
        self.counts = np.zeros(num_steps, dtype=np.int64)  # valid joints per step
        self.window_sums: list[np.ndarray] = []  # one [T] row of error sums per added window
        self.window_counts: list[np.ndarray] = []  # one [T] row of valid-joint counts per added window

    def add(self, pred, true) -> None:
        """Adds one window: ``pred``, ``true`` of shape ``[T, J, D]`` (D = 2 pixels or 3 mm); NaN truth is
        skipped."""
        pred = np.asarray(pred, dtype=np.float64)
        true = np.asarray(true, dtype=np.float64)
        if pred.shape != true.shape or pred.shape[0] != self.sums.shape[0]:
            raise ValueError(f"StepErrors.add: pred {pred.shape} and true {true.shape} must be equal with "
                             f"{self.sums.shape[0]} steps first")
        err = np.linalg.norm(pred - true, axis=-1)
        valid = np.isfinite(err)
        axes = tuple(range(1, err.ndim))
        sums = np.where(valid, err, 0.0).sum(axis=axes)
        counts = valid.sum(axis=axes)
        self.sums += sums
        self.counts += counts
        self.window_sums.append(sums)
        self.window_counts.append(counts)

    def window_totals(self, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-window error sums and valid counts over the first ``steps`` steps (all when None): ``[N]``."""
        if not self.window_sums:
            return np.zeros(0), np.zeros(0)
        return (np.stack(self.window_sums)[:, :steps].sum(axis=1),
                np.stack(self.window_counts)[:, :steps].sum(axis=1))

    def interval(self, steps: int | None = None) -> dict | None:
        """:func:`~hybridjax.eval.statistics.mean_with_ci` of the first ``steps`` steps: the 95% bootstrap
        interval over windows of :meth:`mean` (``None`` without a valid joint)."""
        sums, counts = self.window_totals(steps)
        if counts.sum() == 0:
            return None
        return statistics.mean_with_ci(sums, counts)

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
                "mean_headline": self.mean(headline_steps), "count": int(self.counts.sum()),
                "interval_headline": self.interval(headline_steps), "windows": len(self.window_sums)}


def paired_differences(errors: dict, pairs, headline_steps: int) -> dict:
    """``{"a - b": interval}`` of the paired per-window difference of headline means (same windows, same
    order in both accumulators), for each ``(a, b)`` of ``pairs`` present in ``errors``."""
    out = {}
    for a, b in pairs:
        if a in errors and b in errors and errors[a].window_sums:
            sums_a, counts_a = errors[a].window_totals(headline_steps)
            sums_b, counts_b = errors[b].window_totals(headline_steps)
            if ((counts_a > 0) & (counts_b > 0)).any():
                out[f"{a} - {b}"] = statistics.paired_difference_ci(sums_a, counts_a, sums_b, counts_b)
    return out


def interpolate_labels(values: np.ndarray, label_steps: np.ndarray) -> np.ndarray:
    """Linear interpolation in time of ``[T, J, D]`` values known at ``label_steps`` onto every step.

    Steps before the first or after the last labelled step, and steps next to a missing (NaN) label, stay
    NaN. This is the ground truth of the every-step (1 ms) curves: DHP19 labels come at 100 Hz.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full_like(values, np.nan)
    if label_steps.size == 0:
        return out
    out[label_steps] = values[label_steps]
    for left, right in zip(label_steps[:-1], label_steps[1:], strict=True):
        if right - left < 2:
            continue
        w = (np.arange(left + 1, right) - left) / (right - left)
        out[left + 1:right] = (1.0 - w)[:, None, None] * values[left] + w[:, None, None] * values[right]
    return out


def _select_items(dataset: WindowDataset, max_windows: int | None) -> list[int]:
    """Indices to evaluate: all windows, or ``max_windows`` per camera spread evenly over the split.

    Evenly spread (the training validation's rule, ``hybridjax.data.loader.spread_indices``) rather than the
    first ones: the first windows of a split all come from one recording's first seconds. Every camera gets
    the same positions in its own window list, so the views of a recording stay paired for triangulation.
    """
    if max_windows is None:
        return list(range(len(dataset)))
    per_camera: dict[int, list[int]] = {}
    for i, (camera, _, _) in enumerate(dataset.index()):
        per_camera.setdefault(camera, []).append(i)
    chosen = []
    for indices in per_camera.values():
        chosen += [indices[k] for k in spread_indices(len(indices), max_windows)]
    return sorted(chosen)


def _label_period_frames(events, label_steps: np.ndarray) -> np.ndarray:
    """Event counts (both polarities) accumulated since the previous labelled step: ``[L, H, W]``."""
    per_step = np.asarray(events, dtype=np.float32).sum(axis=-1)  # [T, H, W]
    cumulative = np.cumsum(per_step, axis=0)
    ends = cumulative[label_steps]
    starts = np.concatenate([np.zeros_like(ends[:1]), cumulative[label_steps[:-1]]], axis=0)
    return ends - starts


@dataclasses.dataclass(frozen=True)
class EvalSetup:
    """What one evaluation knows before the first batch: the window geometry, cameras and models."""

    num_steps: int  # SNN steps per window
    height: int  # input frame height (before pooling)
    width: int
    step_ms: float
    window_ms: int
    window_step_ms: int  # the hybrid's ANN period
    headline_ms: float
    headline_steps: int  # steps of the headline averages
    label_steps: np.ndarray  # indices of the labelled steps
    cameras: tuple[int, ...]
    main_camera: int
    models: tuple[str, ...]  # in report order
    note_3d: str | None  # why there is no 3-D MPJPE (None: it is computed)

    @classmethod
    def of(cls, dataset: WindowDataset, ec: EvalConfig, predictors: Predictors) -> EvalSetup:
        first = dataset[0]
        num_steps, height, width = first["events"].shape[:3]
        step_ms = dataset.window_ms / num_steps
        headline_ms = ec.headline_ms if ec.headline_ms is not None else dataset.window_step_ms
        cameras = tuple(dataset.cameras)
        models = ("hybrid",) + ("ann_every_label",) * ec.ann_every_label + ("ann_held", "snn_alone")
        return cls(
            num_steps=num_steps, height=height, width=width, step_ms=step_ms, window_ms=dataset.window_ms,
            window_step_ms=dataset.window_step_ms, headline_ms=headline_ms,
            headline_steps=max(1, min(num_steps, int(round(headline_ms / step_ms)))),
            label_steps=np.flatnonzero(np.asarray(first["step_has_label"], dtype=bool)), cameras=cameras,
            main_camera=ec.main_camera if ec.main_camera in cameras else cameras[0],
            models=models + ("snn_trained",) * (predictors.snn is not None), note_3d=_why_no_3d(dataset, ec, cameras),
        )

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "note_3d"}
        out.update(label_steps=self.label_steps.tolist(), cameras=list(self.cameras), models=list(self.models))
        return out


def _why_no_3d(dataset: WindowDataset, ec: EvalConfig, cameras: tuple[int, ...]) -> str | None:
    if ec.cameras_3d is None:
        return "not requested (EvalConfig.cameras_3d is None)"
    if not dataset.has_3d_labels or not isinstance(dataset, CalibratedWindowDataset):
        return f"not defined: {type(dataset).__name__} has no 3-D labels or camera calibration (joints_3d is NaN)"
    if not all(c in cameras for c in ec.cameras_3d):
        return f"not computed: cameras {list(ec.cameras_3d)} are not all among the evaluated {list(cameras)}"
    return None


class _WithLabelInputs:
    """The dataset's windows plus ``ann_label_inputs [L, H, W, 20]``: the ANN inputs at every label time
    (read by the loader's worker thread, with the window)."""

    def __init__(self, dataset: WindowDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.dataset[i])
        times = self.dataset.label_times_ms(int(item["window_start_ms"]))
        item["ann_label_inputs"] = np.stack([self.dataset.ann_input_at(item["recording"], item["camera"], ms)
                                             for ms in times])
        return item


def predict_batch(predictors: Predictors, batch: dict, setup: EvalSetup) -> tuple[dict, dict]:
    """Predictions ``{model: [T, B, J, 2]}`` and spike counts ``{model: [T, 9, B]}`` of one padded batch."""
    out = jax.device_get(predictors.hybrid(batch["ann_input"], batch["events"]))
    preds = {"hybrid": out["hybrid"], "ann_held": np.broadcast_to(out["ann_held"][None], out["hybrid"].shape),
             "snn_alone": out["snn_alone"]}
    spikes = {"hybrid": out["spikes_hybrid"], "snn_alone": out["spikes_snn_alone"]}
    if predictors.snn is not None:
        preds["snn_trained"], spikes["snn_trained"] = jax.device_get(predictors.snn(batch["events"]))
    if "ann_every_label" in setup.models:
        every = np.full(out["hybrid"].shape, np.nan, dtype=np.float32)
        for k, step in enumerate(setup.label_steps):
            every[step] = jax.device_get(predictors.ann(batch["ann_label_inputs"][k]))
        preds["ann_every_label"] = every
    return preds, spikes


class Accumulators:
    """Per-camera 2-D errors, 3-D errors of camera pairs, firing rates and the plot samples of the windows
    seen so far."""

    def __init__(self, setup: EvalSetup, dataset: WindowDataset, ec: EvalConfig, neurons: dict[str, int]):
        self.setup, self.dataset, self.ec, self.neurons = setup, dataset, ec, neurons
        self.errors_2d = {camera: {m: StepErrors(setup.num_steps) for m in setup.models} for camera in setup.cameras}
        # Every-step curves (1 ms steps) against labels interpolated between the 100 Hz labels, for the models
        # that predict at every step; only when the steps are finer than the labels.
        self.errors_every_step = ({m: StepErrors(setup.num_steps) for m in setup.models if m != "ann_every_label"}
                                  if len(setup.label_steps) < setup.num_steps else {})
        self.spiking = {m: firing.FiringAccumulator(neurons) for m in ("hybrid", "snn_alone", "snn_trained")
                        if m in setup.models}
        self.views = (None if setup.note_3d is not None
                      else _StereoErrors(dataset, ec.cameras_3d, setup.models, setup.num_steps, setup.label_steps))
        self.samples: list[dict] = []

    def add(self, batch: dict, preds: dict, spikes: dict, indices: list[int]) -> None:
        """Adds the real (unpadded) windows ``indices`` of ``batch``."""
        real = len(indices)
        for name, acc in self.spiking.items():
            acc.add(spikes[name][:, :, :real], batch["events"][:, :real])
        for b, index in enumerate(indices):
            truth = np.asarray(batch["landmarks"][:, b], dtype=np.float64)  # [T, J, 2]
            camera = int(batch["camera"][b])
            kept = {m: np.asarray(preds[m][:, b], dtype=np.float64) for m in self.setup.models}
            for m in self.setup.models:
                self.errors_2d[camera][m].add(kept[m], truth)
            if self.errors_every_step and camera == self.setup.main_camera:
                dense_truth = interpolate_labels(truth, np.asarray(self.setup.label_steps))
                for m, acc in self.errors_every_step.items():
                    acc.add(kept[m], dense_truth)
            if self.views is not None and camera in self.ec.cameras_3d:
                self.views.add(batch["recording"][b], int(batch["window_start_ms"][b]), camera,
                               batch["joints_3d"][:, b], kept)
            if camera == self.setup.main_camera and len(self.samples) < self.ec.keep_samples:
                self.samples.append(self._sample(index, truth, kept))

    def _sample(self, index: int, truth: np.ndarray, predictions: dict) -> dict:
        item = self.dataset[index]  # again, for the full-resolution events of the plot
        steps = self.setup.label_steps
        return {"recording": item["recording"], "camera": item["camera"],
                "window_start_ms": int(item["window_start_ms"]), "steps": steps,
                "event_frames": _label_period_frames(item["events"], steps), "landmarks": truth,
                "predictions": predictions}


def evaluate(predictors: Predictors, dataset: WindowDataset, eval_config: EvalConfig | None = None) -> dict:
    """Evaluates the hybrid (and its baselines) on the windows of ``dataset``; returns a JSON-ready dict.

    Args:
      predictors: the jitted predict functions (:meth:`Predictors.from_variables`).
      dataset: a test split meeting :class:`hybridjax.eval.protocol.WindowDataset`.
      eval_config: :class:`EvalConfig`.

    Returns:
      ``{"setup", "mpjpe_2d": {camera: {model: summary}}, "mpjpe_2d_main": {model: summary},
      "mpjpe_3d": {model: summary} | None, "firing": {...}, "macs": {...}, "energy": {preset: {...}},
      "samples": [...]}`` where a summary is ``{"per_step", "mean", "mean_headline", "count"}`` (see
      :class:`StepErrors`). ``samples`` holds numpy arrays for the plots (dropped from the JSON).
    """
    ec = eval_config or EvalConfig()
    _check(ec, dataset, predictors)
    wall_start = time.perf_counter()
    setup = EvalSetup.of(dataset, ec, predictors)
    f = ec.downsample
    neurons = firing.lif_neuron_counts(predictors.config, setup.height // f, setup.width // f)
    accumulators = Accumulators(setup, dataset, ec, neurons)
    indices = _select_items(dataset, ec.max_windows)
    fields = ("events", "ann_input", "landmarks", "joints_3d", "camera", "recording", "window_start_ms")
    items = _WithLabelInputs(dataset) if ec.ann_every_label else dataset
    loader = BatchLoader(items, ec.batch_size, fields=fields + ("ann_label_inputs",) * ec.ann_every_label,
                         shuffle=False, items=indices, pad_last=True, downsample=f, num_workers=1)
    with loader:
        for number, batch in enumerate(loader):
            preds, spikes = predict_batch(predictors, batch, setup)
            accumulators.add(batch, preds, spikes, indices[number * ec.batch_size:(number + 1) * ec.batch_size])
            if ec.progress:
                log.info("evaluate: batch %d / %d", number + 1, len(loader))
    result = summarise(accumulators, predictors.config, len(indices))
    result["setup"]["wall_seconds"] = time.perf_counter() - wall_start
    return result


def _check(ec: EvalConfig, dataset, predictors: Predictors) -> None:
    """Fails early, naming the problem, on a bad configuration or a dataset that misses the protocol."""
    if ec.event_input not in ("binary", "dense"):
        raise ValueError(f"EvalConfig.event_input must be 'binary' or 'dense', got {ec.event_input!r}")
    for name in ec.energy_presets:
        energy_model.preset(name)  # raises on an unknown preset
    missing = [name for name in ("window_ms", "window_step_ms", "cameras", "has_3d_labels", "index",
                                 "label_times_ms", "ann_input_at") if not hasattr(dataset, name)]
    if missing:
        raise TypeError(f"evaluate: {type(dataset).__name__} does not meet hybridjax.eval.protocol.WindowDataset "
                        f"(missing {', '.join(missing)})")
    if len(dataset) == 0:
        raise ValueError("evaluate: the dataset has no windows")
    if predictors.downsample != ec.downsample:
        raise ValueError(f"evaluate: the predictors map landmarks from inputs pooled by {predictors.downsample}, "
                         f"EvalConfig.downsample is {ec.downsample}")


def summarise(accumulators: Accumulators, config, num_windows: int) -> dict:
    """The result dict (see :func:`evaluate`) from the accumulated errors, firing rates, MACs and energy."""
    setup, ec = accumulators.setup, accumulators.ec
    headline = setup.headline_steps
    result = {
        "setup": dict(setup.as_dict(), dataset=type(accumulators.dataset).__name__, num_windows=num_windows,
                      model_config=_plain(dataclasses.asdict(config)), eval_config=_plain(dataclasses.asdict(ec)),
                      mpjpe_3d_note=setup.note_3d),
        "mpjpe_2d": {str(camera): {m: acc.summary(headline) for m, acc in per_model.items()}
                     for camera, per_model in accumulators.errors_2d.items()},
    }
    result["mpjpe_2d_main"] = result["mpjpe_2d"][str(setup.main_camera)]
    result["paired_2d_main"] = paired_differences(accumulators.errors_2d[setup.main_camera], PAIRED, headline)
    every = accumulators.errors_every_step
    result["mpjpe_2d_every_step"] = {m: acc.summary(headline) for m, acc in every.items()} if every else None
    views = accumulators.views
    result["mpjpe_3d"] = views.summary(headline) if views is not None else None
    result["paired_3d"] = paired_differences(views.errors, PAIRED, headline) if views is not None else None
    result["firing"] = {name: _firing_summary(acc, headline) for name, acc in accumulators.spiking.items()}
    counted = hybrid_macs(config, setup.height // ec.downsample, setup.width // ec.downsample)
    result["macs"] = counted.as_dict()
    output_rate = ec.output_rate_hz or 1000.0 / setup.step_ms
    ann_rate = ec.ann_rate_hz or 1000.0 / setup.window_step_ms
    result["energy"] = _energy(result["firing"], accumulators.neurons, counted, ec, output_rate, ann_rate, headline)
    result["samples"] = accumulators.samples
    return result


def _firing_summary(acc: firing.FiringAccumulator, headline_steps: int) -> dict:
    rates = acc.rates()
    return {"per_step": {layer: rates[:, i].tolist() for i, layer in enumerate(firing.LIF_LAYERS)},
            "mean": acc.mean_rates(),
            "mean_headline": dict(zip(firing.LIF_LAYERS, rates[:headline_steps].mean(axis=0).tolist(), strict=True)),
            "event_input_rate": acc.event_rates().tolist()}


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

    def add(self, recording: str, window_start_ms: int, camera: int, joints_3d, predictions: dict) -> None:
        """One camera's predictions ``{model: [T, J, 2]}`` for a window with labels ``joints_3d [T, J, 3]``."""
        steps = self.label_steps
        entry = {m: np.asarray(predictions[m])[steps].astype(np.float32) for m in self.models}
        entry["joints_3d"] = np.asarray(joints_3d, dtype=np.float32)[steps]
        key = (recording, window_start_ms)
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
            power = energy_model.hybrid_power(ann_macs=counted.ann, initialiser_macs=counted.initialisers,
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
                    energy_per_ann_period_j=power.ann_energy_j + power.initialiser_energy_j + steps_per_ann * e_step,
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

