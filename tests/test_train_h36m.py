"""Event-Human3.6M end to end: the training command (ann -> snn -> hybrid) on a synthetic tree in the official
layout, then its evaluation report (hybrid, ANN at every label, ANN held, SNN alone, pure SNN; no 3-D)."""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np

from hybridjax.data.h36m import EventH36MDataset
from hybridjax.data.synthetic.h36m_writer import write_synthetic_event_h36m
from hybridjax.train.logging import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[1]
STAGES = ("ann", "snn", "hybrid")


def _reject_nan(token):
    raise ValueError(f"results.json holds {token}")


def test_train_and_evaluate_event_h36m(tmp_path):
    data_dir, workdir = tmp_path / "data", tmp_path / "run"
    write_synthetic_event_h36m(data_dir)  # S1 S5 train, S9 S11 test, camera views 2 and 3
    command = [
        sys.executable, str(REPO / "experiments" / "train.py"), "tiny", "--dataset", "h36m",
        "--data-dir", str(data_dir), "--workdir", str(workdir), "--data.cameras", "2", "3",
        # 256 x 320 pooled to 128 x 160 (the coarsest grid the five ANN poolings allow); 20 ms steps.
        "--data.downsample", "2", "--model.step-ms", "20", "--data.max-val-items", "1", "--max-eval-items", "1",
        "--no-progress", "--pretrain-step-ms", "None", "--eval-window-ms", "0",  # one pass, official test windows
    ]
    for stage in STAGES:
        command += [f"--{stage}.batch-size", "1", f"--{stage}.num-steps", "2", f"--{stage}.eval-every", "0",
                    f"--{stage}.checkpoint-every", "2", f"--{stage}.log-every", "1"]
    # A lower XLA optimisation level halves the compile time of the three train steps (2 steps each run).
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_backend_optimization_level=0",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    summary = json.loads((workdir / "summary.json").read_text())
    for stage in STAGES:
        assert summary[stage]["final_step"] == 2 and math.isfinite(summary[stage]["val_mpjpe"])
        assert (workdir / stage / "checkpoints" / "2").is_dir()
        rows = read_metrics(workdir / stage / "metrics.jsonl")
        train_rows = [r for r in rows if r["split"] == "train"]
        assert [r["step"] for r in train_rows] == [1, 2]
        assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train_rows)
        val = [r for r in rows if r["split"] == "val"]
        # One validation window (100 ms windows for snn/hybrid): 13 joints, of which those inside the frame.
        assert len(val) == 1 and 0 < val[0]["val_joints"] <= (13 if stage == "ann" else 5 * 13)
    assert "hybrid: ANN (frozen) from" in done.stdout and "SNN weights from" in done.stdout

    report = workdir / "report"
    result = json.loads((report / "results.json").read_text(), parse_constant=_reject_nan)
    setup = result["setup"]
    assert setup["dataset"] == "EventH36MDataset" and setup["cameras"] == [2, 3] and setup["main_camera"] == 3
    assert (setup["height"], setup["width"]) == (256, 320) and (result["macs"]["height"], result["macs"]["width"]) \
        == (128, 160)
    # 200 ms test windows in 20 ms steps; 50 Hz labels end every step.
    assert setup["num_steps"] == 10 and setup["window_ms"] == 200 and setup["label_steps"] == list(range(10))
    assert setup["models"] == ["hybrid", "ann_every_label", "ann_held", "snn_alone", "snn_trained"]
    assert setup["num_windows"] == 2 and result["mpjpe_3d"] is None
    assert "no 3-D labels" in setup["mpjpe_3d_note"]

    # Scored entries = labelled (step, joint) pairs inside the frame of the first window of each camera.
    test_set = EventH36MDataset(data_dir, "test", bin_mode="exact", step_ms=20.0)
    first_of = {}
    for i, (camera, _, _) in enumerate(test_set.index()):
        first_of.setdefault(camera, i)
    for camera, i in first_of.items():
        expected = int(np.isfinite(test_set[i]["landmarks"]).all(-1).sum())
        for model in setup["models"]:
            summary_2d = result["mpjpe_2d"][str(camera)][model]
            assert summary_2d["count"] == expected > 100, (camera, model)
            assert len(summary_2d["per_step"]) == 10
            assert all(v is not None and 0 < v < 400 for v in summary_2d["per_step"])  # px of the 320 x 256 frame
            assert 0 < summary_2d["mean"] < 400 and 0 < summary_2d["mean_headline"] < 400
    assert result["mpjpe_2d_main"] == result["mpjpe_2d"]["3"]
    hybrid_power = result["energy"]["paper"]["hybrid"]["hybrid_power_w"]
    assert math.isfinite(hybrid_power) and hybrid_power > 0

    markdown = (report / "report.md").read_text()
    assert "pixels of the 320x256 frame" in markdown and "3-D MPJPE not defined" in markdown
    assert "5.19 px" not in markdown  # the paper's DHP19 numbers are not printed beside Human3.6M results
    for name in ("mpjpe_over_time", "firing_rates", "energy_vs_accuracy", "skeletons"):
        assert (report / f"{name}.png").is_file()
    with np.load(report / "samples.npz") as samples:
        assert samples["sample0_event_frames"].shape == (10, 256, 320)


def test_h36m_training_windows_keep_the_bin_length(tmp_path):
    from hybridjax.models import ModelConfig
    from hybridjax.train.config import DataConfig, TrainConfig
    from hybridjax.train.data import build_dataset

    write_synthetic_event_h36m(tmp_path)
    for bin_mode, step_ms in (("paper", 10.0), ("exact", 20.0)):
        cfg = TrainConfig(dataset="h36m", data_dir=tmp_path, data=DataConfig(cameras=(2, 3), bin_mode=bin_mode),
                          model=ModelConfig(step_ms=step_ms))
        # 200 ms training / test windows and the 100 ms validation windows of the loop: ~10 or 20 ms steps.
        steps = 200 // int(step_ms)
        train_set = build_dataset(cfg, "hybrid", "train", tmp_path)
        val_set = build_dataset(cfg, "hybrid", "test", tmp_path, window_ms=100)
        assert (train_set.num_steps, val_set.num_steps) == (steps, steps // 2)
        assert "ann_input_next" in train_set[0] and "ann_input_next" not in val_set[0]
        label_steps = np.flatnonzero(val_set[0]["step_has_label"])
        np.testing.assert_array_equal(label_steps, np.arange(1, 10, 2) if bin_mode == "paper" else np.arange(5))
