"""End to end: evaluate() with the tiny model on the DHP19 fixture, checked against direct model calls."""
import jax
import numpy as np
import pytest

from hybridjax import metrics
from hybridjax.data.batch import pool_pixels as pool_inputs
from hybridjax.eval import firing
from hybridjax.eval.evaluate import EvalConfig, evaluate
from hybridjax.eval.predict import Predictors
from hybridjax.eval.protocol import CalibratedWindowDataset, WindowDataset
from hybridjax.eval.report import write_report
from hybridjax.models import HybridModel, ModelConfig

POOL = 4  # evaluate at 64x64 (inputs sum-pooled by 4) to keep the test fast on CPU


@pytest.fixture(scope="module")
def fixture_dataset(shared_dir):
    from hybridjax.data import DHP19Dataset

    return DHP19Dataset(shared_dir / "fixtures" / "dhp19_mini", "test", cameras=(3, 2))


def _numpy_variables(model, *inputs, seed: int = 0):
    """Model variables with Xavier-normal kernels drawn by numpy (jitting the model's RNG init is slow on CPU).

    Shapes come from ``jax.eval_shape(model.init)``; BatchNorm scales and variances are ones, means and
    biases zeros.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), *inputs)

    def fill(path, leaf):
        name = str(path[-1].key)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean"):
            return np.zeros(leaf.shape, leaf.dtype)
        kh, kw, cin, cout = leaf.shape
        std = np.sqrt(2.0 / (kh * kw * (cin + cout)))
        return (std * rng.standard_normal(leaf.shape)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny_model(fixture_dataset):
    cfg = ModelConfig.preset("tiny_10ms")
    item = fixture_dataset[0]
    ann_input = pool_inputs(item["ann_input"][None], POOL)
    events = pool_inputs(item["events"][:, None], POOL)
    return cfg, _numpy_variables(HybridModel(cfg), ann_input, events, seed=3)


def test_the_datasets_meet_the_protocol(fixture_dataset):
    from hybridjax.data import EventH36MDataset

    assert isinstance(fixture_dataset, CalibratedWindowDataset)
    item = fixture_dataset[1]
    frame = fixture_dataset.ann_input_at(item["recording"], item["camera"], item["window_start_ms"])
    np.testing.assert_array_equal(frame, item["ann_input"])
    start = item["window_start_ms"]
    assert fixture_dataset.label_times_ms(start) == [start + 10 * (k + 1) for k in range(20)]
    assert fixture_dataset.window_step_ms == 100 and fixture_dataset.has_3d_labels
    members = [name for name in dir(WindowDataset) if not name.startswith("_") or name in ("__len__",)]
    assert all(hasattr(EventH36MDataset, name) or name in ("window_ms", "cameras") for name in members)
    with pytest.raises(TypeError, match="missing window_ms, window_step_ms"):
        evaluate(Predictors.from_variables(ModelConfig.preset("tiny_10ms"), {"params": {"ann": {}}}), [1, 2])


def test_evaluation_imports_nothing_from_training():
    import pathlib
    import re
    import subprocess
    import sys

    sources = pathlib.Path(__file__).resolve().parents[1] / "hybridjax" / "eval"
    importing = re.compile(r"^\s*(from|import) hybridjax\.train", re.MULTILINE)
    assert not [p.name for p in sources.glob("*.py") if importing.search(p.read_text())]
    code = ("import sys, hybridjax.eval, hybridjax.eval.report; "
            "print([m for m in sys.modules if 'hybridjax.train' in m])")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


class _OwnInputsAtEveryLabel:
    """The fixture dataset, except that the ANN input at every label time is the window's own input: the
    "ANN every label" predictions must then equal the "ANN held" ones exactly."""

    def __init__(self, dataset):
        self.dataset, self.calls = dataset, []

    def __getattr__(self, name):
        return getattr(self.dataset, name)

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i]

    def label_times_ms(self, start):
        # evaluate asks for a window's label times, then for the inputs at them (one loader thread)
        self.start = start
        times = self.dataset.label_times_ms(start)
        self.calls.append(times)
        return times

    def ann_input_at(self, recording, camera, ms):
        assert self.start < ms <= self.start + 200
        for i, (c, r, _) in enumerate(self.dataset.index()):
            item = self.dataset[i] if (c, r) == (camera, recording) else None
            if item is not None and item["window_start_ms"] == self.start:
                return item["ann_input"]
        raise AssertionError(f"no window of {recording} camera {camera} starts at {self.start} ms")


def test_evaluate_end_to_end(fixture_dataset, tiny_model, tmp_path):
    cfg, variables = tiny_model
    dataset = _OwnInputsAtEveryLabel(fixture_dataset)
    ec = EvalConfig(batch_size=3, max_windows=1, downsample=POOL, keep_samples=1)  # 2 windows, padded to 3
    result = evaluate(Predictors.from_variables(cfg, variables, POOL), dataset, ec)
    calls = dataset.calls

    setup = result["setup"]
    assert setup["num_windows"] == 2 and setup["num_steps"] == 20 and setup["headline_steps"] == 10
    item3 = fixture_dataset[0]
    start = item3["window_start_ms"]
    assert calls[0] == [start + 10 * (k + 1) for k in range(20)]
    main = result["mpjpe_2d_main"]
    np.testing.assert_array_equal(main["ann_every_label"]["per_step"], main["ann_held"]["per_step"])

    # The hybrid's per-step error recomputed directly from the model for the one camera-3 window.
    ann_input = pool_inputs(item3["ann_input"][None], POOL)
    events = pool_inputs(item3["events"][:, None], POOL)
    apply = jax.jit(HybridModel(cfg).apply)
    out = apply(variables, ann_input, events)
    uv = np.asarray(metrics.argmax_landmarks(out.heatmaps))[:, 0] * POOL + (POOL - 1) / 2
    err = np.linalg.norm(uv - item3["landmarks"], axis=-1)  # [T, J]
    np.testing.assert_allclose(main["hybrid"]["per_step"], np.nanmean(err, axis=1), rtol=1e-6)
    assert main["hybrid"]["mean_headline"] == pytest.approx(np.nanmean(err[:10]), rel=1e-6)
    assert main["hybrid"]["count"] == np.isfinite(err).sum()
    # One camera-3 window: its bootstrap interval collapses onto the mean; the paired difference is exact.
    interval = main["hybrid"]["interval_headline"]
    assert interval["windows"] == 1 and interval["ci_low"] == pytest.approx(interval["mean"])
    paired = result["paired_2d_main"]["hybrid - ann_held"]
    assert paired["mean"] == pytest.approx(main["hybrid"]["mean_headline"] - main["ann_held"]["mean_headline"])
    assert result["mpjpe_2d_every_step"] is None  # 10 ms steps: every step carries a label

    # Firing rates: the camera-3 and camera-2 windows pooled, vs the model's spike counts / neurons.
    item2 = fixture_dataset[fixture_dataset.index().index((2, item3["recording"], 0))]
    both_ann = np.concatenate([ann_input, pool_inputs(item2["ann_input"][None], POOL)])
    both_events = np.concatenate([events, pool_inputs(item2["events"][:, None], POOL)], axis=1)
    counts = np.asarray(apply(variables, both_ann, both_events).spike_counts)
    neurons = firing.lif_neuron_counts(cfg, 64, 64)
    expected_rates = firing.firing_rates(counts, neurons)
    got = np.array([result["firing"]["hybrid"]["per_step"][layer] for layer in firing.LIF_LAYERS]).T
    np.testing.assert_allclose(got, expected_rates, rtol=1e-6)

    # 3-D: the two first windows are the same time seen by both cameras.
    assert result["mpjpe_3d"]["windows"] == 1 and result["mpjpe_3d"]["cameras"] == [2, 3]
    assert np.isfinite(result["mpjpe_3d"]["hybrid"]["mean"])
    # Energy: MACs of the 64x64 model, both presets, a reduction below 1.
    assert result["macs"]["height"] == 64
    for preset in ("paper", "horowitz45_fp32"):
        hybrid = result["energy"][preset]["hybrid"]
        assert 0.0 < hybrid["power_reduction"] < 1.0
        assert hybrid["ann_power_w"] == pytest.approx(result["energy"][preset]["ann_every_label"]["power_w"])
    written = write_report(result, tmp_path)
    assert written["markdown"].read_text().startswith("# hybridjax evaluation")


@pytest.mark.slow
def test_evaluate_full_resolution_with_real_every_label_inputs_and_a_pure_snn(fixture_dataset):
    from hybridjax.models import SNNModel

    cfg = ModelConfig.preset("tiny_10ms")
    item = fixture_dataset[0]
    variables = _numpy_variables(HybridModel(cfg), item["ann_input"][None], item["events"][:, None])
    snn_variables = _numpy_variables(SNNModel(cfg), item["events"][:, None], seed=5)
    result = evaluate(Predictors.from_variables(cfg, variables, snn_variables=snn_variables), fixture_dataset,
                      EvalConfig(batch_size=2, max_windows=1))
    assert result["macs"]["height"] == 256
    assert result["setup"]["models"] == ["hybrid", "ann_every_label", "ann_held", "snn_alone", "snn_trained"]
    for model in result["setup"]["models"]:
        assert result["mpjpe_2d_main"][model]["count"] == 20 * 13, model
    assert result["energy"]["paper"]["snn_trained"]["snn_power_w"] >= 0.0


def test_window_selection_spreads_evenly_and_keeps_camera_views_paired():
    from hybridjax.eval.evaluate import _select_items

    class Windows:
        # Camera-major: 2 cameras x (recording A: 6 windows, recording B: 4 windows).
        entries = [(camera, rec, k) for camera in (2, 3) for rec, n in (("A", 6), ("B", 4)) for k in range(n)]

        def __len__(self):
            return len(self.entries)

        def index(self):
            return self.entries

    ds = Windows()
    chosen = _select_items(ds, 4)
    # Positions round(linspace(0, 9, 4)) = 0, 3, 6, 9 of each camera's ten windows.
    assert chosen == [0, 3, 6, 9, 10, 13, 16, 19]
    picked = [ds.entries[i] for i in chosen]
    assert [e[1:] for e in picked[:4]] == [e[1:] for e in picked[4:]] == [("A", 0), ("A", 3), ("B", 0), ("B", 3)]
    assert _select_items(ds, None) == list(range(20)) and _select_items(ds, 50) == list(range(20))


def test_interpolated_labels_and_paired_window_differences():
    from hybridjax.eval.evaluate import StepErrors, interpolate_labels, paired_differences

    values = np.full((21, 1, 2), np.nan)
    values[[0, 10, 20]] = np.array([[0.0, 0.0], [10.0, 20.0], [np.nan, np.nan]])[:, None]
    dense = interpolate_labels(values, np.array([0, 10, 20]))
    np.testing.assert_allclose(dense[:11, 0], np.stack([np.arange(11.0), 2 * np.arange(11.0)], axis=1))
    assert np.isnan(dense[11:]).all()  # next to a missing label: unknown

    errors = {m: StepErrors(2) for m in ("hybrid", "ann_held")}
    truth = np.zeros((2, 1, 2))
    for shift in (1.0, 5.0, 9.0):  # per-window spread shared by both models, the hybrid 0.5 px better
        errors["hybrid"].add(truth + [[[shift - 0.5, 0.0]]], truth)
        errors["ann_held"].add(truth + [[[shift, 0.0]]], truth)
    paired = paired_differences(errors, [("hybrid", "ann_held"), ("hybrid", "snn_alone")], headline_steps=1)
    assert list(paired) == ["hybrid - ann_held"]
    assert paired["hybrid - ann_held"]["mean"] == pytest.approx(-0.5)
    assert paired["hybrid - ann_held"]["ci_high"] == pytest.approx(-0.5)
    assert errors["hybrid"].summary(1)["interval_headline"]["ci_high"] > 5.0
