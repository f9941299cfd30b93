"""Reliability: every case of issue 14 (bad input, damaged files, interrupted runs), each with the message it
must give or the proof that nothing is lost. Grouped by component; each test is small and fast."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import resource
import runpy
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import pytest
from test_data_errors import make_events, ms_table, write_recording
from test_data_h36m import label_track, write_labels, write_sequence
from test_train_checkpoint import ann_config

from hybridjax import convert
from hybridjax.cli import run_cli
from hybridjax.data.dhp19 import DHP19Dataset, DHP19FrameDataset
from hybridjax.data.errors import DataError
from hybridjax.data.h36m import EventH36MDataset
from hybridjax.errors import UserError
from hybridjax.models import ModelConfig, init_variables
from hybridjax.runtime import StreamingConfig, StreamingPoseEstimator
from hybridjax.train.checkpoint import CheckpointCorruptError, CheckpointMismatchError, StageCheckpointer
from hybridjax.train.config import ResumeConfigError
from hybridjax.train.logging import read_metrics
from hybridjax.train.loop import TrainingInterrupted, restore_stage_state, run_stage

# ---- streaming runtime: polarity, coordinates and timestamps are checked per chunk (case 7) ----------------
_STREAM_CFG = ModelConfig.preset("tiny")
_CROP = (40, 90, 64, 64)


@pytest.fixture(scope="module")
def stream_variables():
    return init_variables("hybrid", _STREAM_CFG, jax.random.key(3))


def _estimator(variables, **changes):
    settings = StreamingConfig(reinit_ms=10.0, crop=_CROP, warmup=False, **changes)
    return StreamingPoseEstimator(variables, _STREAM_CFG, settings)


def _stream(n=14_000, seed=0):
    """Sorted events in the crop; 6 in 7 fall in the first 10 ms (enough for the first ANN frame)."""
    rng = np.random.default_rng(seed)
    t = np.sort(np.concatenate([rng.integers(0, 10_000, n - n // 7), rng.integers(10_000, 12_000, n // 7)]))
    x = rng.integers(_CROP[1], _CROP[1] + _CROP[3], n)
    y = rng.integers(_CROP[0], _CROP[0] + _CROP[2], n)
    return x, y, rng.integers(0, 2, n), t


@pytest.mark.parametrize("field, value, message", [
    ("p", 2, r"invalid event 5 .*p=2.*polarity must be 0 or 1"),
    ("p", -1, r"invalid event 5 .*polarity must be 0 or 1"),
    ("x", 346, r"invalid event 5 .*x=346.*x must be in \[0, 346\)"),
    ("y", -3, r"invalid event 5 .*y=-3.*y must be in \[0, 260\)"),
])
def test_streaming_rejects_an_invalid_event_naming_it(stream_variables, field, value, message):
    estimator = _estimator(stream_variables)
    x, y, p, t = _stream(n=20)
    chunk = {"x": x, "y": y, "p": p, "t": t}
    chunk[field] = chunk[field].copy()
    chunk[field][5] = value
    with pytest.raises(ValueError, match=message):
        estimator.push(chunk["x"], chunk["y"], chunk["p"], chunk["t"])
    assert estimator._recent.size == 0  # nothing of the rejected chunk was kept


def test_streaming_polarity_at_the_last_crop_pixel_is_an_error_not_a_crash(stream_variables):
    # Before: p=7 at the last pixel of the crop indexed past the histogram ("cannot reshape array of size 8198").
    estimator = _estimator(stream_variables)
    row0, col0, height, width = _CROP
    with pytest.raises(ValueError, match="polarity must be 0 or 1"):
        estimator.push([col0 + width - 1], [row0 + height - 1], [7], [10])


def test_streaming_drop_mode_drops_and_counts_invalid_events(stream_variables):
    x, y, p, t = _stream()
    bad = np.zeros(t.size, bool)
    bad[::7] = True  # every 7th event is outside the sensor (before: kept in the ANN buffer, dropped by the SNN)
    x_bad = np.where(bad, 400, x)
    p_bad = np.where(np.arange(t.size) % 11 == 3, 2, p)  # and some have polarity 2
    bad |= p_bad == 2
    estimator = _estimator(stream_variables, on_invalid="drop", max_steps_per_call=1)
    got = estimator.push(x_bad, y, p_bad, t) + estimator.advance_to(t[-1] + 1)
    assert estimator.dropped_events == int(bad.sum()) > 1000
    estimator.reset()  # the same stream without the invalid events gives the same poses
    want = estimator.push(x[~bad], y[~bad], p[~bad], t[~bad]) + estimator.advance_to(t[-1] + 1)
    assert len(got) == len(want) > 0
    for a, b in zip(got, want):
        assert a.step_end_us == b.step_end_us
        np.testing.assert_array_equal(a.uv, b.uv)


def test_streaming_rejects_unknown_on_invalid(stream_variables):
    with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'drop'"):
        _estimator(stream_variables, on_invalid="ignore")


# ---- converter: load_torch_state_dict (case 10) and what convert_state_dict accepts (case 11) --------------
def _official_sd(kind):
    """A tiny-width state_dict with the official keys (hybridjax kind "ann" is the official "cnn")."""
    variables = init_variables("ann" if kind == "cnn" else kind, ModelConfig.preset("tiny"), jax.random.key(0))
    sd = {k: np.asarray(v, np.float32) for k, v in convert.export_state_dict(variables, kind).items()}
    for key in [k for k in sd if k.endswith(".running_mean")]:  # the official BatchNorms also save a counter
        sd[key.replace("running_mean", "num_batches_tracked")] = np.asarray(0, np.int64)
    return sd


def test_load_torch_state_dict_names_an_empty_or_text_file(tmp_path):
    # Before: an empty file gave a bare EOFError and a text file "KeyError: 101" (from inside torch).
    empty, text = tmp_path / "empty.pt", tmp_path / "notes.pt"
    empty.write_bytes(b"")
    text.write_text("epoch 10, loss 0.3\n")
    with pytest.raises(ValueError, match=r"empty\.pt is empty \(0 bytes\), not a PyTorch checkpoint"):
        convert.load_torch_state_dict(empty)
    with pytest.raises(ValueError, match=r"notes\.pt is not a PyTorch checkpoint"):
        convert.load_torch_state_dict(text)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        convert.load_torch_state_dict(tmp_path / "missing.pt")


def test_a_loaded_object_that_is_not_a_state_dict_of_tensors_is_named():
    # Before: {"conv1.weight": 3} gave "AttributeError: 'int' object has no attribute 'detach'".
    with pytest.raises(ValueError, match=r"w\.pt: not a state_dict of tensors: 'conv1\.weight' is a int"):
        convert.state_dict_arrays({"conv1.weight": 3, "conv1.bias": np.zeros(2)}, "w.pt")
    with pytest.raises(ValueError, match=r"w\.pt: expected a state_dict .* got list"):
        convert.state_dict_arrays([np.zeros(2)], "w.pt")
    arrays = convert.state_dict_arrays({"state_dict": {"module.conv1.bias": np.zeros(2)}}, "w.pt")
    assert list(arrays) == ["conv1.bias"]


@pytest.mark.parametrize("change, message", [
    (lambda v: np.where(np.arange(v.size).reshape(v.shape) == 3, np.nan, v), r"down2\.conv1\.weight has 1 non-finite"),
    (lambda v: v.astype(np.float16), r"down2\.conv1\.weight has dtype float16, expected float32 or float64"),
    (lambda v: v.astype(np.int64), r"down2\.conv1\.weight has dtype int64"),
    (lambda v: v.tolist(), r"down2\.conv1\.weight is a list, not an array"),
])
def test_converter_rejects_non_finite_non_float_and_non_array_weights(change, message):
    sd = _official_sd("cnn")
    sd["down2.conv1.weight"] = change(sd["down2.conv1.weight"])
    with pytest.raises(convert.CheckpointKeyError, match=message):
        convert.convert_state_dict(sd, "cnn")
    with pytest.raises(TypeError, match="must be a mapping"):
        convert.convert_state_dict([1, 2], "cnn")


@pytest.mark.parametrize("make_bad", [
    lambda w: w[:-1],  # one output channel short
    lambda w: np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0))),  # an HWIO kernel where OIHW belongs
])
def test_one_mis_shaped_conv_is_reported_as_itself(make_bad):
    # Before: widths were read from this very tensor, so ~20 correct tensors were reported instead.
    sd = _official_sd("cnn")
    sd["down2.conv1.weight"] = make_bad(sd["down2.conv1.weight"])
    with pytest.raises(convert.CheckpointKeyError) as info:
        convert.convert_state_dict(sd, "cnn")
    message = str(info.value)
    assert "down2.conv1.weight has shape" in message and message.count("has shape") == 1, message
    assert convert.infer_config(sd, "cnn").ann_widths == ModelConfig.preset("tiny").ann_widths


def test_hybrid_given_snn_weights_says_use_kind_snn():
    with pytest.raises(convert.CheckpointKeyError, match="this looks like a pure SNN state_dict; use kind='snn'"):
        convert.convert_state_dict(_official_sd("snn"), "hybrid")
    variables = convert.convert_state_dict(_official_sd("snn"), "snn")  # the right kind converts
    assert convert.infer_config(_official_sd("snn"), "snn").snn_widths == ModelConfig.preset("tiny").snn_widths
    assert set(variables) == {"params", "batch_stats"}


# ---- DHP19 data: nothing unusable is trained on silently (cases 4, 5, 6, 9, empty folder) ------------------
@pytest.fixture(scope="module")
def poses(shared_dir):
    import h5py
    with h5py.File(shared_dir / "fixtures" / "dhp19_mini" / "S1_session1_mov1_events_label.h5", "r") as file:
        return file["XYZ/3d_poses"][()]


@pytest.fixture()
def folder(tmp_path, shared_dir):
    shutil.copytree(shared_dir / "fixtures" / "dhp19_mini" / "P_matrices", tmp_path / "P_matrices")
    return tmp_path


def test_a_recording_without_any_valid_joint_is_skipped_and_listed(folder, poses, caplog):
    # Before: it trained with exit 0 ("mpjpe": 0.0 over 0 joints, validation NaN).
    write_recording(folder, poses)
    write_recording(folder, np.full_like(poses, np.nan), name="S2_session1_mov1")
    with caplog.at_level(logging.WARNING):
        for dataset in (DHP19Dataset(folder, "train"), DHP19FrameDataset(folder, "train")):
            assert dataset.recording_names() == ["S1_session1_mov1"]
            assert dataset.skipped == [("S2_session1_mov1", "no valid joint in any of its 100 labels (all NaN)")]
    assert "skipping S2_session1_mov1: no valid joint" in caplog.text
    (folder / "S1_session1_mov1_events.h5").unlink()
    (folder / "S1_session1_mov1_events_label.h5").unlink()
    with pytest.raises(DataError, match=r"no items \(skipped: .*S2_session1_mov1: no valid joint"):
        DHP19Dataset(folder, "train")


def test_an_h36m_sequence_without_any_valid_joint_is_skipped(tmp_path):
    write_sequence(tmp_path, "S1", "Walking_1", 0, seed=1)
    write_sequence(tmp_path, "S1", "Eating", 0, seed=2)
    write_labels(tmp_path, {("S1", "Walking 1"): {0: label_track(10)},
                            ("S1", "Eating"): {0: np.full_like(label_track(11), np.nan)}})
    dataset = EventH36MDataset(tmp_path, "train", cameras=(0,))
    assert dataset.recording_names() == ["S1/Walking 1.54138969"]
    assert ("S1/Eating.54138969", "no valid joint in any of its 50 labels (all NaN)") in dataset.skipped


def test_the_frame_dataset_checks_ms_to_idx_against_t(folder, poses):
    # Before: DHP19FrameDataset read frames 3 events early without a word (DHP19Dataset caught the same file).
    events = make_events()
    write_recording(folder, poses, events=events, ms_to_idx=np.maximum(ms_table(events["t"]) - 3, 0))
    with pytest.raises(DataError, match=r"frame 0 \(300 ms\): event .* is before 300 ms .*ms_to_idx disagrees"):
        DHP19FrameDataset(folder, "train")[0]
    write_recording(folder, poses, events=events)  # the exact table reads fine
    assert DHP19FrameDataset(folder, "train")[0]["ann_input"].sum() > 0


def test_orphan_label_and_events_files_are_named(folder, poses, caplog):
    # Before: a label file without its events file was ignored silently; alone, the error did not name it.
    write_recording(folder, poses, name="S2_session1_mov1")
    (folder / "S2_session1_mov1_events.h5").unlink()
    with pytest.raises(DataError, match=r"no recordings found in .*label file S2_session1_mov1_events_label\.h5 "
                                        r"without its events file S2_session1_mov1_events\.h5"):
        DHP19Dataset(folder, "train")
    write_recording(folder, poses)
    write_recording(folder, poses, name="S3_session1_mov1", skip=("label_file",))
    with caplog.at_level(logging.WARNING):
        dataset = DHP19Dataset(folder, "train")
    assert dataset.recording_names() == ["S1_session1_mov1"]
    assert [name for name, _ in dataset.skipped] == ["S2_session1_mov1", "S3_session1_mov1"]
    assert "skipping S2_session1_mov1: label file" in caplog.text
    assert "skipping S3_session1_mov1: events file without its label file" in caplog.text


def test_an_empty_folder_says_no_recordings(tmp_path):
    # Before: "P4.npy: projection matrix file does not exist".
    with pytest.raises(DataError, match=f"no recordings found in {tmp_path}"):
        DHP19Dataset(tmp_path, "train")


def test_a_degenerate_projection_matrix_is_an_error(folder, poses):
    # Before: an all-zero P2 was accepted and every landmark became NaN.
    write_recording(folder, poses)
    np.save(folder / "P_matrices" / "P2.npy", np.zeros((3, 4)))
    with pytest.raises(DataError, match=r"P2\.npy: projection matrix is degenerate \(rank 0"):
        DHP19Dataset(folder, "train")
    poses_on_plane = poses.copy()
    poses_on_plane[:, 2] = 0.0  # every joint at z = 0 ...
    write_recording(folder, poses_on_plane)
    np.save(folder / "P_matrices" / "P2.npy", np.eye(3, 4))  # ... and a rank-3 matrix with p2 = z: all at infinity
    with pytest.raises(DataError, match=r"P2\.npy: projects every joint .* to infinity / NaN"):
        DHP19Dataset(folder, "train")


# ---- command line: a user's mistake is one clear message and exit status 2 (case 13) -----------------------
REPO = pathlib.Path(__file__).resolve().parents[1]


def _run_script(monkeypatch, capsys, script, *args):
    """Runs experiments/<script> in this process as ``python experiments/<script> args``: (status, stderr)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "experiments" / script), run_name="__main__")
    return info.value.code, capsys.readouterr().err


def _tiny_dhp19_args(shared_dir, workdir, steps=1):
    return ["tiny", "--dataset", "dhp19", "--data-dir", str(shared_dir / "fixtures" / "dhp19_mini"),
            "--workdir", str(workdir), "--stage", "ann", "--ann.num-steps", str(steps), "--no-evaluate-at-end",
            "--no-progress", "--data.cameras", "3", "--data.ann-frame-step-ms", "100"]  # 9 frames


@pytest.mark.parametrize("args, message", [
    (["--data.cameras", "7"], "camera channels are 0, 1, 2 or 3"),
    (["--keep-last", "0"], "keep_last must be >= 1"),
    (["--model.step-ms", "0.3"], "step_ms 0.3: exact bins need a whole number of microseconds"),
    (["--num-devices", "-1"], "num_devices must be >= 0"),
])
def test_cli_config_mistakes_exit_2_without_a_traceback(monkeypatch, capsys, tmp_path, shared_dir, args, message):
    # Before: a ValueError traceback and exit 1 (from deep inside the loaders or the checkpointer).
    status, err = _run_script(monkeypatch, capsys, "train.py", *_tiny_dhp19_args(shared_dir, tmp_path), *args)
    assert status == 2 and "Traceback" not in err
    assert message in " ".join(err.replace("│", " ").split()), err


def test_cli_mistakes_found_at_run_time_exit_2_with_one_line(monkeypatch, capsys, tmp_path, shared_dir):
    args = _tiny_dhp19_args(shared_dir, tmp_path)
    status, err = _run_script(monkeypatch, capsys, "train.py", *args, "--ann.batch-size", "100000")
    assert status == 2 and "Traceback" not in err
    assert "error: batch size 100000 is larger than the split (9 items)" in err, err
    status, err = _run_script(monkeypatch, capsys, "train.py", *args, "--num-devices", "999")
    assert status == 2 and "Traceback" not in err and "error: --num-devices 999: this machine has only" in err, err
    # --debug keeps the traceback (for reporting a bug).
    monkeypatch.setattr(sys, "argv", ["train.py", *args, "--num-devices", "999", "--debug"])
    with pytest.raises(UserError, match="this machine has only"):
        runpy.run_path(str(REPO / "experiments" / "train.py"), run_name="__main__")


def test_cli_wrapper_keeps_tracebacks_for_bugs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["x"])

    def buggy():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_cli(buggy)
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: (_ for _ in ()).throw(DataError("f.h5", "bad")))
    assert info.value.code == 2 and capsys.readouterr().err == "error: f.h5: bad\n"


def test_cli_wrapper_exits_with_128_plus_the_signal_of_a_checkpointed_stop(monkeypatch, capsys):
    from hybridjax.train.loop import TrainingInterrupted

    monkeypatch.setattr(sys, "argv", ["x"])
    with pytest.raises(SystemExit) as info:
        run_cli(lambda: (_ for _ in ()).throw(TrainingInterrupted("hybrid: stopped by signal SIGTERM", 15)))
    assert info.value.code == 143 and capsys.readouterr().err == "hybrid: stopped by signal SIGTERM\n"


# ---- checkpoints: verified on restore, fall back to the newest good one (cases 3, 12) ----------------------
def _arrays(scale=1.0):
    rng = np.random.default_rng(0)
    return {"params": {"w": scale * rng.normal(size=(64, 128)).astype(np.float32)},
            "opt": {"mu": scale * rng.normal(size=(64, 128)).astype(np.float32)}, "step": np.asarray(3)}


def _saved(tmp_path, steps=(10, 20, 30)):
    ckpt = StageCheckpointer(tmp_path / "checkpoints", keep_last=5)
    for step in steps:
        ckpt.save(step, _arrays(step), {})
    return ckpt


def _largest_data_file(folder):
    return max((p for p in folder.rglob("*") if p.is_file() and "/d/" in str(p)), key=lambda p: p.stat().st_size)


def _garble(path, count=2000):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + count] = np.random.default_rng(1).integers(0, 256, count, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def test_garbled_checkpoint_bytes_are_detected(tmp_path):
    # Before: orbax restored the changed values (1820 entries of an Adam moment) without a word.
    ckpt = _saved(tmp_path, (10,))
    _garble(_largest_data_file(tmp_path / "checkpoints" / "10"))
    with pytest.raises(CheckpointCorruptError, match=r"checkpoint .*/10 (is corrupt: the content of 1 array|cannot)"):
        ckpt.restore(10, _arrays())
    ckpt.close()


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path):
    ckpt = _saved(tmp_path)
    _garble(_largest_data_file(tmp_path / "checkpoints" / "30"))
    messages = []
    step, arrays = ckpt.restore_newest_good(_arrays(), log=messages.append, move_damaged=True)
    assert step == 20
    np.testing.assert_array_equal(arrays["params"]["w"], _arrays(20)["params"]["w"])
    assert "checkpoints/30" in messages[0] and "trying an older checkpoint" in messages[0]
    assert (tmp_path / "damaged" / "30").is_dir() and ckpt.all_steps() == [10, 20]  # kept, not deleted
    ckpt.save(30, _arrays(30), {})  # the step can be saved again
    assert ckpt.restore(30, _arrays())["params"]["w"][0, 0] == _arrays(30)["params"]["w"][0, 0]
    ckpt.close()


@pytest.mark.parametrize("damage, reason", [
    (lambda f: shutil.rmtree(f / "default"), "cannot be read"),
    (lambda f: _largest_data_file(f).write_bytes(_largest_data_file(f).read_bytes()[:100]), "cannot be read"),
    (lambda f: (f / "default" / "_METADATA").unlink(), r"cannot be read: Metadata file \(named _METADATA\) does"),
    (lambda f: (f / "hybridjax_integrity.json").unlink(), "has no hybridjax_integrity.json: its save did not"),
])
def test_folder_damage_is_named_and_every_damaged_checkpoint_listed(tmp_path, damage, reason):
    # Before: "Unable to retrieve default item", a raw OUT_OF_RANGE, or a mismatch error blaming the preset.
    ckpt = _saved(tmp_path, (10, 20))
    for step in (10, 20):
        damage(tmp_path / "checkpoints" / str(step))
    messages = []
    try:
        with pytest.raises(CheckpointCorruptError, match=rf"no usable checkpoint .*every one is damaged:\n"
                                                         rf".*checkpoints/20 ({reason})(.|\n)*checkpoints/10"):
            ckpt.restore_newest_good(_arrays(), log=messages.append)
        assert not (tmp_path / "damaged").exists()  # nothing moved when nothing is good
    finally:
        ckpt.close()


def test_a_checkpoint_of_another_configuration_is_a_mismatch_not_damage(tmp_path):
    ckpt = _saved(tmp_path, (10,))
    other = {"params": {"w": np.zeros((64, 64), np.float32)}, "opt": _arrays()["opt"], "step": np.asarray(3)}
    with pytest.raises(CheckpointMismatchError, match=r"params/w: checkpoint has shape \(64, 128\)"):
        ckpt.restore(10, other)
    ckpt.close()


# ---- resuming a stage: verified, with the settings it was trained with (cases 3, 8) -----------------------
def test_resume_after_a_corrupt_final_checkpoint_retrains_from_the_newest_good_one(shared_dir, tmp_path):
    # Before: the stage said "already trained" on garbled bytes of its final checkpoint.
    config = ann_config(shared_dir, tmp_path)
    config = dataclasses.replace(config, ann=dataclasses.replace(config.ann, num_steps=2, checkpoint_every=1))
    run_stage(config, "ann", config.data_dir, log=lambda *_: None)
    reference, _ = restore_stage_state(config, "ann", "latest")
    _garble(_largest_data_file(tmp_path / "ann" / "checkpoints" / "2"))
    messages = []
    result = run_stage(config, "ann", config.data_dir, log=messages.append)
    text = "\n".join(messages)
    assert "checkpoints/2" in text and "trying an older checkpoint" in text and "resuming from" in text
    assert result.final_step == 2 and (tmp_path / "ann" / "damaged" / "2").is_dir()
    final, step = restore_stage_state(config, "ann", "latest")
    assert step == 2
    for got, want in zip(jax.tree_util.tree_leaves(final.arrays()), jax.tree_util.tree_leaves(reference.arrays())):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # bit-identical to the first run


def test_resuming_with_other_settings_stops_and_lists_them(shared_dir, tmp_path):
    # Before: --seed 7 --ann.learning-rate 0.5 resumed silently and overwrote config.json.
    config = ann_config(shared_dir, tmp_path)
    with pytest.raises(TrainingInterrupted):
        run_stage(config, "ann", config.data_dir, log=lambda *_: None, stop_after=3)  # checkpoint 2 saved
    changed = dataclasses.replace(config, seed=7, ann=dataclasses.replace(config.ann, learning_rate=0.002,
                                                                          log_every=2))
    listed = r"\n  ann\.learning_rate: 0\.001 -> 0\.002\n  seed: 2022 -> 7\n"
    with pytest.raises(ResumeConfigError, match=r"ann: the checkpoint .*checkpoints/2 was trained with other "
                                                rf"settings:{listed}Re-run with the original settings.*--force"):
        run_stage(changed, "ann", config.data_dir, log=lambda *_: None)
    assert json.loads((tmp_path / "ann" / "config.json").read_text())["seed"] == 2022  # not overwritten
    # Other widths: listed the same way (before: a CheckpointMismatchError traceback, exit 1, from the CLI).
    wider = dataclasses.replace(config, model=dataclasses.replace(config.model, ann_widths=(8, 12, 16, 24, 32, 48)))
    with pytest.raises(ResumeConfigError, match=r"model\.ann_widths: \[8, 12, 16, 24, 32, 32\] -> \[8, 12, 16, 24, "
                                                r"32, 48\]"):
        run_stage(wider, "ann", config.data_dir, log=lambda *_: None)
    # Other logging is no change; --force-resume continues and is recorded.
    run_stage(dataclasses.replace(changed, force_resume=True), "ann", config.data_dir, log=lambda *_: None)
    events = [row for row in read_metrics(tmp_path / "ann" / "metrics.jsonl") if row["split"] == "event"]
    assert events == [{"stage": "ann", "step": 2, "split": "event", "event": "force_resume",
                       "changed": ["ann.learning_rate: 0.001 -> 0.002", "seed: 2022 -> 7"]}]


# ---- no hang at exit: loader threads joined and h5 files closed on every path (cases 1, 2) ------------------
def _nan_stop_command(shared_dir, workdir):
    """The smallest training run that stops on a NaN loss (learning rate 1e12: NaN at step 2)."""
    return [sys.executable, str(REPO / "experiments" / "train.py"), *_tiny_dhp19_args(shared_dir, workdir, steps=30),
            "--data.downsample", "8", "--ann.learning-rate", "1e12", "--ann.batch-size", "2", "--ann.log-every", "1",
            "--ann.eval-every", "0", "--ann.checkpoint-every", "100"]


def _assert_nan_stop_exits(shared_dir, tmp_path, runs):
    # Before: after the NaN message, 1 run in 3 never exited (an h5py object freed at shutdown waited for a
    # lock held by a loader thread still alive).
    for run in range(runs):
        done = subprocess.run(_nan_stop_command(shared_dir, tmp_path / f"run{run}"), capture_output=True, text=True,
                              timeout=240, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2, done.stderr[-2000:]
        assert "error: ann: the loss became NaN/inf before step 2" in done.stderr and "Traceback" not in done.stderr


def test_the_nan_stop_exits_twice(shared_dir, tmp_path):
    _assert_nan_stop_exits(shared_dir, tmp_path, runs=2)


@pytest.mark.slow
def test_the_nan_stop_exits_ten_times(shared_dir, tmp_path):
    _assert_nan_stop_exits(shared_dir, tmp_path, runs=10)


def test_a_full_disk_fails_fast_and_keeps_the_previous_checkpoint(tmp_path):
    # Before: orbax stalled (> 2.5 min) or failed half-way, leaving only a <step>.orbax-checkpoint-tmp folder.
    script = f"""
import resource, numpy as np
from hybridjax.train.checkpoint import CheckpointSaveError, StageCheckpointer
ckpt = StageCheckpointer({str(tmp_path / "checkpoints")!r}, keep_last=1)
ckpt.save(10, {{"w": np.ones((100, 100), np.float32)}}, {{}})
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))  # like `ulimit -f 195`
try:
    ckpt.save(20, {{"w": np.random.default_rng(0).normal(size=(700, 700)).astype(np.float32)}}, {{}})
except CheckpointSaveError as err:
    print("refused:", err)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
print("steps", ckpt.all_steps(), "sum", float(ckpt.restore(10, {{"w": np.ones((100, 100), np.float32)}})["w"].sum()))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: cannot write a checkpoint of 2.2 MB into" in done.stdout and "File too large" in done.stdout
    assert "the earlier checkpoints are intact" in done.stdout
    assert "steps [10] sum 10000.0" in done.stdout
    assert not list((tmp_path / "checkpoints").glob("*tmp*"))


@pytest.mark.slow
def test_train_under_a_file_size_limit_stops_at_once_with_a_message(shared_dir, tmp_path):
    command = [sys.executable, str(REPO / "experiments" / "train.py"), *_tiny_dhp19_args(shared_dir, tmp_path, 4),
               "--data.downsample", "8", "--ann.checkpoint-every", "1", "--ann.eval-every", "0"]

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (600 * 1024, resource.RLIM_INFINITY))  # ulimit -f 600

    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=REPO, preexec_fn=limit,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "error: cannot write a checkpoint of" in done.stderr, done.stderr[-2000:]


def test_closing_joins_the_loader_threads_and_closes_every_threads_h5_files(shared_dir):
    # Before: the loader's close() only asked its daemon thread to stop; a read still running at exit held
    # h5py's lock while the interpreter freed the h5 objects (the hang of the NaN stop).
    from hybridjax.data.loader import BatchLoader

    dataset = DHP19FrameDataset(shared_dir / "fixtures" / "dhp19_mini", "train")
    loader = BatchLoader(dataset, 2, fields=("ann_input", "ann_landmarks"), num_workers=2, prefetch=2)
    for _ in loader.steps(0, 3):
        pass
    handles = [h for table in dataset._pool._all for h in table.values()]  # opened by the worker threads
    assert handles and all(h.id.valid for h in handles)
    loader.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("hybridjax-data") and t.is_alive()]
    dataset.close()
    assert not any(h.id.valid for h in handles)
    assert dataset[0]["ann_input"].shape == (256, 256, 20)  # still usable: files reopen on the next read
    dataset.close()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_stage_saves_and_exits(shared_dir, tmp_path, signum):
    command = [sys.executable, str(REPO / "experiments" / "train.py"), *_tiny_dhp19_args(shared_dir, tmp_path, 10_000),
               "--data.downsample", "8", "--ann.log-every", "1", "--ann.eval-every", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        metrics = tmp_path / "ann" / "metrics.jsonl"
        deadline = time.time() + 200
        while not (metrics.is_file() and metrics.read_text().count("\n") >= 2) and time.time() < deadline:
            time.sleep(0.5)
        process.send_signal(signum)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signum, err[-2000:]
    assert "checkpoint saved" in err and "Traceback" not in err
