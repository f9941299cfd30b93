"""Per-step MPJPE aggregation with known answers, and the JSON / markdown / PNG writers on a synthetic result."""
import json

import numpy as np
import pytest

from hybridjax.data.batch import pool_pixels as pool_inputs
from hybridjax.eval import energy, plots, report
from hybridjax.eval.evaluate import StepErrors

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_offset_prediction_gives_exact_mpjpe():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 255, size=(5, 4, 13, 2))  # [T, B, J, 2]
    acc = StepErrors(5)
    acc.add(truth + np.array([3.0, 0.0]), truth)
    np.testing.assert_allclose(acc.per_step(), 3.0)
    assert acc.mean() == pytest.approx(3.0)
    acc345 = StepErrors(5)
    acc345.add(truth + np.array([3.0, -4.0]), truth)
    assert acc345.mean() == pytest.approx(5.0)


def test_nan_truth_is_skipped_and_means_pool_joints():
    truth = np.zeros((3, 2, 2))  # [T, J, 2]
    pred = np.zeros((3, 2, 2))
    pred[0, 0] = [6.0, 8.0]  # error 10 at step 0, joint 0; joint 1 exact
    pred[1] = [[1.0, 0.0], [2.0, 0.0]]  # errors 1 and 2
    truth[2] = np.nan  # step 2 unlabelled
    pred[2] = 100.0
    acc = StepErrors(3)
    acc.add(pred, truth)
    per_step = acc.per_step()
    np.testing.assert_allclose(per_step[:2], [5.0, 1.5])
    assert np.isnan(per_step[2])
    assert acc.mean() == pytest.approx((10 + 0 + 1 + 2) / 4)  # pooled over valid joints, not steps
    assert acc.mean(1) == pytest.approx(5.0)
    acc.add(pred, truth)  # a second batch leaves the means unchanged and doubles the counts
    assert acc.mean() == pytest.approx(13 / 4) and acc.counts.tolist() == [4, 4, 0]
    summary = acc.summary(headline_steps=1)
    assert summary["mean_headline"] == pytest.approx(5.0) and summary["count"] == 8
    with pytest.raises(ValueError, match="steps first"):
        acc.add(pred[:2], truth[:2])


def test_pool_inputs():
    x = np.arange(2 * 4 * 4 * 1, dtype=float).reshape(2, 4, 4, 1)
    pooled = pool_inputs(x, 2)
    assert pooled.shape == (2, 2, 2, 1)
    assert pooled[0, 0, 0, 0] == 0 + 1 + 4 + 5
    assert pooled.sum() == x.sum()


def _synthetic_result(num_steps=4):
    """A result dict shaped like evaluate()'s with round numbers."""
    models = ["hybrid", "ann_every_label", "ann_held", "snn_alone"]
    means = {"hybrid": 3.0, "ann_every_label": 2.5, "ann_held": 4.0, "snn_alone": 20.0}

    def summary(value, nan_last=False):
        per_step = [value] * num_steps
        if nan_last:
            per_step[-1] = float("nan")
        return {"per_step": per_step, "mean": value, "mean_headline": value, "count": 13 * num_steps,
                "interval_headline": {"mean": value, "ci_low": value - 0.6, "ci_high": value + 0.6, "windows": 2},
                "windows": 2}

    layers = ["static", "down1", "down2", "down3", "res1", "res2", "up1", "up2", "up3"]
    fire = {"per_step": {layer: [0.01 * (i + 1)] * num_steps for i, layer in enumerate(layers)},
            "mean": {layer: 0.01 * (i + 1) for i, layer in enumerate(layers)},
            "mean_headline": {layer: 0.01 * (i + 1) for i, layer in enumerate(layers)},
            "event_input_rate": [0.02] * num_steps}
    snn_macs = {k: int(v) for k, v in energy.paper_snn_layer_macs().items()}
    energy_entry = {"output_rate_hz": 100.0, "ann_rate_hz": 10.0, "event_input": "binary"}
    for preset in (energy.PAPER, energy.HOROWITZ45_FP32):
        power = energy.hybrid_power(ann_macs=22.6e9, initialiser_macs=1.3e9, snn_energy_per_step=3e-4,
                                    output_rate_hz=100.0, ann_rate_hz=10.0, energy=preset)
        ann_j = energy.ann_energy_j(22.6e9, preset)
        energy_entry[preset.name] = {
            "preset": {"name": preset.name},
            "hybrid": dict(power.as_dict(), energy_per_ann_period_j=1.0, snn_energy_per_step_j=3e-4),
            "snn_alone": {"snn_power_w": 0.02, "snn_energy_per_step_j": 2e-4},
            "ann_every_label": {"energy_per_inference_j": ann_j, "power_w": ann_j * 100},
            "ann_held": {"energy_per_inference_j": ann_j, "power_w": ann_j * 10},
        }
    rng = np.random.default_rng(1)
    truth = rng.uniform(40, 200, size=(num_steps, 13, 2))
    sample = {"recording": "S13_session1_mov1", "camera": 3, "window_start_ms": 200,
              "steps": np.arange(num_steps), "event_frames": rng.poisson(0.05, size=(num_steps, 256, 256)),
              "landmarks": truth, "predictions": {m: truth + 3.0 for m in models}}
    return {
        "setup": {"num_windows": 2, "cameras": [3], "main_camera": 3, "num_steps": num_steps, "step_ms": 10.0,
                  "window_ms": 10.0 * num_steps, "window_step_ms": 100, "headline_steps": num_steps,
                  "headline_ms": 10.0 * num_steps, "label_steps": list(range(num_steps)), "height": 256,
                  "width": 256, "models": models, "eval_config": {"downsample": 1}, "wall_seconds": 1.5},
        "mpjpe_2d": {"3": {m: summary(means[m]) for m in models}},
        "mpjpe_2d_main": {m: summary(means[m]) for m in models},
        "paired_2d_main": {"hybrid - ann_held": {"mean": -0.5, "ci_low": -0.8, "ci_high": -0.2, "windows": 2}},
        "mpjpe_2d_every_step": {m: summary(means[m] + 1.0) for m in models if m != "ann_every_label"},
        "mpjpe_3d": dict({m: summary(60.0, nan_last=True) for m in models}, windows=2, cameras=[2, 3]),
        "firing": {"hybrid": fire, "snn_alone": fire},
        "macs": {"height": 256, "width": 256, "ann": 22601007104, "initialisers": 1275068416,
                 "snn_per_step": snn_macs, "snn_step_total": sum(snn_macs.values())},
        "energy": energy_entry,
        "samples": [sample],
    }


def test_to_json_ready_handles_nan_numpy_and_samples():
    ready = report.to_json_ready({"a": np.float32(1.5), "b": [float("nan"), np.int64(3)], "c": np.arange(2),
                                  "samples": [1], "d": (1, 2)})
    assert ready == {"a": 1.5, "b": [None, 3], "c": [0, 1], "d": [1, 2]}
    json.dumps(ready, allow_nan=False)


def test_write_report_files_and_contents(tmp_path):
    result = _synthetic_result()
    written = report.write_report(result, tmp_path / "out")
    for name in ("mpjpe_over_time", "firing_rates", "energy_vs_accuracy", "skeletons"):
        data = written[name].read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, name
    loaded = json.loads(written["json"].read_text())
    assert loaded["mpjpe_2d_main"]["hybrid"]["mean"] == 3.0
    assert loaded["mpjpe_3d"]["hybrid"]["per_step"][-1] is None  # NaN -> null
    assert "samples" not in loaded
    assert loaded["energy"]["paper"]["ann_every_label"]["power_w"] == pytest.approx(3.718)
    markdown = written["markdown"].read_text()
    assert "| ANN held | 4.00 [3.40, 4.60] |" in markdown  # headline with its bootstrap interval
    assert "| hybrid ANN-SNN - ANN held | -0.50 | [-0.80, -0.20] | 2 | yes |" in markdown
    assert "### Every 10 ms step" in markdown
    assert "| hybrid ANN-SNN | 3.00 [2.40, 3.60] | 3.00 |" in markdown
    assert "| SNN alone (zero init) | 20.00 [19.40, 20.60] |" in markdown
    assert "3.718 W" in markdown  # ANN power at 100 Hz with the paper preset
    assert "![skeletons](skeletons.png)" in markdown
    samples = np.load(written["samples"])
    np.testing.assert_allclose(samples["sample0_pred_hybrid"], result["samples"][0]["landmarks"] + 3.0)


def test_energy_accuracy_points():
    points = plots.energy_accuracy_points(_synthetic_result(), "paper")
    assert points["ann_every_label"] == (pytest.approx(3.718), 2.5)
    assert points["ann_held"] == (pytest.approx(0.3718), 4.0)
    assert points["snn_alone"] == (0.02, 20.0)


def test_bones_connect_all_13_joints():
    joints = {j for bone in plots.BONES for j in bone}
    assert joints == set(range(13))
    assert len(plots.BONES) == 14


def test_stereo_errors_pair_views_in_any_order():
    """Exact projections of the truth triangulate back to it; unpaired windows and unlabelled steps are ignored."""
    from hybridjax.eval import triangulation
    from hybridjax.eval.evaluate import _StereoErrors

    class TwoCameras:
        def __init__(self):
            self.matrices = {}
            self.centres = {}
            for camera, centre in ((2, [3000.0, 0.0, 1000.0]), (3, [0.0, 3000.0, 1000.0])):
                centre = np.array(centre)
                forward = -centre / np.linalg.norm(centre)
                right = np.cross(forward, [0.0, 0.0, 1.0])
                right /= np.linalg.norm(right)
                rotation = np.stack([right, np.cross(forward, right), forward])
                k = np.array([[300.0, 0, 173], [0, 300.0, 130], [0, 0, 1]])
                self.matrices[camera] = k @ np.concatenate([rotation, (-rotation @ centre)[:, None]], axis=1)
                self.centres[camera] = centre

        def projection_matrix(self, camera):
            return self.matrices[camera]

        def camera_position(self, camera):
            return self.centres[camera]

    cams = TwoCameras()
    steps = np.array([0, 2])  # labelled steps of a 3-step window
    rng = np.random.default_rng(0)
    joints = rng.uniform([-300, -300, 500], [300, 300, 1500], size=(3, 13, 3))
    joints[1] = np.nan  # unlabelled step
    stereo = _StereoErrors(cams, (2, 3), ["hybrid"], 3, steps)

    def view(camera, start, offset=0.0):
        uv = triangulation.project_to_crop(joints, cams.projection_matrix(camera), mask_outside=False) + offset
        return "S13", start, camera, joints, {"hybrid": uv}

    stereo.add(*view(3, 100))
    stereo.add(*view(2, 100))  # pairs with the camera-3 view
    stereo.add(*view(2, 200))  # never paired
    summary = stereo.summary(headline_steps=1)
    assert summary["windows"] == 1 and summary["cameras"] == [2, 3]
    assert summary["hybrid"]["mean"] < 1e-3  # float32 storage of the pixels
    assert summary["hybrid"]["count"] == 2 * 13
    assert np.isnan(summary["hybrid"]["per_step"][1])  # unlabelled step
    with pytest.raises(ValueError, match="seen twice"):
        stereo.add(*view(2, 200))
