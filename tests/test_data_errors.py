"""Bad DHP19 input: every case gives a DataError naming the file and the problem, or a documented,
logged handling (skip with a warning, NaN joints masked, zero histograms for empty windows)."""
import logging
import shutil

import h5py
import numpy as np
import pytest

from hybridjax.data.dhp19 import DHP19Dataset, DHP19FrameDataset
from hybridjax.data.errors import DataError

RATE_PER_MS = 30  # 30 events per ms: t[7500] at 250 ms -> first window at 300 ms
DURATION_MS = 1000


def make_events(duration_ms=DURATION_MS, rate=RATE_PER_MS, seed=0):
    rng = np.random.default_rng(seed)
    count = duration_ms * rate
    return {
        "x": rng.integers(1, 347, count).astype(np.uint16),
        "y": rng.integers(1, 261, count).astype(np.uint16),
        "p": rng.integers(0, 2, count).astype(np.uint8),
        "t": np.sort(rng.integers(0, duration_ms * 1000, count)).astype(np.int64),
    }


def ms_table(t, duration_ms=DURATION_MS):
    return np.searchsorted(t, np.arange(duration_ms) * 1000, side="left").astype(np.int64)


@pytest.fixture(scope="module")
def poses(shared_dir):
    with h5py.File(shared_dir / "fixtures" / "dhp19_mini" / "S1_session1_mov1_events_label.h5", "r") as file:
        return file["XYZ/3d_poses"][()]  # (100, 3, 13), 1 s at 100 Hz


@pytest.fixture()
def folder(tmp_path, shared_dir):
    shutil.copytree(shared_dir / "fixtures" / "dhp19_mini" / "P_matrices", tmp_path / "P_matrices")
    return tmp_path


def write_recording(folder, poses, name="S1_session1_mov1", events=None, ms_to_idx=None, labels=None,
                    timestamps=None, skip=(), camera=3):
    """Writes one recording (one camera) in the official layout; ``skip`` leaves datasets out."""
    events = make_events() if events is None else events
    ms_to_idx = ms_table(events["t"]) if ms_to_idx is None else ms_to_idx
    labels = poses if labels is None else labels
    timestamps = np.arange(len(labels)) * 10_000 if timestamps is None else timestamps
    with h5py.File(folder / f"{name}_events.h5", "w") as file:
        if "group" not in skip:
            for field, values in events.items():
                if field not in skip:
                    file[f"cam{camera}_events/{field}"] = values
        if "ms_to_idx" not in skip:
            file[f"cam{camera}_ms_to_idx"] = ms_to_idx
    if "label_file" not in skip:
        with h5py.File(folder / f"{name}_events_label.h5", "w") as file:
            file["XYZ/3d_poses"] = labels
            if "timestamps" not in skip:
                file["XYZ/timestamps"] = timestamps
    return events


def test_good_recording_baseline(folder, poses):
    write_recording(folder, poses)
    dataset = DHP19Dataset(folder, "train")
    assert len(dataset) == (1000 - 300 - 100) // 100  # cc_start = ceil(250 / 100) * 100
    assert dataset[0]["window_start_ms"] == 300 and not dataset.skipped


def test_missing_folder_and_empty_folder(tmp_path, folder):
    with pytest.raises(DataError, match="dataset folder does not exist"):
        DHP19Dataset(tmp_path / "nowhere", "train", p_matrix_dir=folder / "P_matrices")
    with pytest.raises(DataError, match="no S.*events.h5 files found"):
        DHP19Dataset(folder, "train")


def test_unreadable_events_file(folder, poses):
    write_recording(folder, poses)
    (folder / "S1_session1_mov1_events.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(DataError, match=r"S1_session1_mov1_events\.h5: cannot be opened as HDF5"):
        DHP19Dataset(folder, "train")


@pytest.mark.parametrize(
    ("skip", "message"),
    [
        (("t",), "missing dataset 'cam3_events/t'"),
        (("group",), "missing group 'cam3_events'"),
        (("ms_to_idx",), "missing dataset 'cam3_ms_to_idx'"),
    ],
)
def test_missing_event_datasets(folder, poses, skip, message):
    write_recording(folder, poses, skip=skip)
    with pytest.raises(DataError, match=message) as err:
        DHP19Dataset(folder, "train")
    assert err.value.path.endswith("S1_session1_mov1_events.h5")


def test_missing_label_file_and_label_dataset(folder, poses):
    write_recording(folder, poses, skip=("label_file",))
    with pytest.raises(DataError, match="no recordings found in .*ignored: events file without its label file "
                                        "S1_session1_mov1_events_label.h5"):
        DHP19Dataset(folder, "train")
    write_recording(folder, poses, skip=("timestamps",))
    with pytest.raises(DataError, match="events_label.h5: missing dataset 'XYZ/timestamps'"):
        DHP19Dataset(folder, "train")


def test_length_mismatch_and_wrong_dtype(folder, poses):
    events = make_events()
    events["p"] = events["p"][:-1]
    write_recording(folder, poses, events=events)
    with pytest.raises(DataError, match="'cam3_events' arrays differ in length"):
        DHP19Dataset(folder, "train")
    events = make_events()
    events["x"] = events["x"].astype(np.float32)
    write_recording(folder, poses, events=events)
    with pytest.raises(DataError, match="'cam3_events/x' has dtype float32"):
        DHP19Dataset(folder, "train")


def test_bad_ms_to_idx(folder, poses):
    events = make_events()
    table = ms_table(events["t"])
    table[500] = table[499] - 1
    write_recording(folder, poses, events=events, ms_to_idx=table)
    with pytest.raises(DataError, match="cam3_ms_to_idx is not a non-decreasing index"):
        DHP19Dataset(folder, "train")
    table = ms_table(events["t"])
    table[500] += 3  # still monotone, but disagrees with t: caught by the full check and per window
    write_recording(folder, poses, events=events, ms_to_idx=table)
    with pytest.raises(DataError, match=r"cam3_ms_to_idx\[500\]"):
        DHP19Dataset(folder, "train", validate="full")
    dataset = DHP19Dataset(folder, "train")
    with pytest.raises(DataError, match="ms_to_idx disagrees with t"):
        dataset.item("S1_session1_mov1", 2)  # window 500..600 ms


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("x", 347, r"x outside \[1, 346\]"), ("y", 0, r"y outside \[1, 260\]"), ("p", 2, "polarity outside")],
)
def test_values_out_of_range(folder, poses, field, value, message):
    events = make_events()
    events[field][ms_table(events["t"])[450]] = value  # inside window 1 (400..500 ms)
    write_recording(folder, poses, events=events)
    dataset = DHP19Dataset(folder, "train")
    dataset[0]  # window 0 (300..400 ms) is clean
    with pytest.raises(DataError, match=f"S1_session1_mov1_events.h5: camera 3, window 1 .*{message}"):
        dataset[1]
    with pytest.raises(DataError, match=message):
        DHP19Dataset(folder, "train", validate="full")


def test_unsorted_timestamps(folder, poses, caplog):
    events = make_events()
    start = ms_table(events["t"])[620]
    events["t"][start], events["t"][start + 5] = events["t"][start + 5], events["t"][start]
    write_recording(folder, poses, events=events)
    write_recording(folder, poses, name="S2_session1_mov1")
    dataset = DHP19Dataset(folder, "train")
    with pytest.raises(DataError, match="camera 3, window 3 .*timestamps not sorted"):
        dataset.item("S1_session1_mov1", 3)
    # The full check finds it at open time and leaves the recording out, with a warning.
    with caplog.at_level(logging.WARNING):
        checked = DHP19Dataset(folder, "train", validate="full")
    assert checked.recording_names() == ["S2_session1_mov1"]
    assert checked.skipped[0][0] == "S1_session1_mov1" and "not sorted" in checked.skipped[0][1]
    assert "skipping S1_session1_mov1" in caplog.text


def test_too_few_events(folder, poses, caplog):
    write_recording(folder, poses, events=make_events(rate=7))  # 7000 events in total
    write_recording(folder, poses, name="S2_session1_mov1")
    with caplog.at_level(logging.WARNING):
        dataset = DHP19Dataset(folder, "train")
    assert dataset.recording_names() == ["S1_session1_mov1", "S2_session1_mov1"]
    assert dataset.num_windows("S1_session1_mov1", 3) == 0 and len(dataset) == 6
    assert "only 7000 events" in caplog.text
    (folder / "S2_session1_mov1_events.h5").unlink()
    with pytest.raises(DataError, match="the train split has no items .*only 7000 events"):
        DHP19Dataset(folder, "train")
    with pytest.raises(DataError, match="no items"):
        DHP19FrameDataset(folder, "train")


def test_fewer_than_7500_events_before_a_window(folder, poses, caplog):
    # 7000 events before 200 ms, then 1000 events at exactly 200 ms: t[7500] = 200 ms gives cc_start = 200,
    # but only 7000 events lie before it. That window is dropped (the official loader would assert).
    events = make_events()
    t = np.concatenate([np.linspace(0, 199_000, 7000).astype(np.int64), np.full(1000, 200_000),
                        np.linspace(200_001, 999_000, 20000).astype(np.int64)])
    events = {k: v[: len(t)] for k, v in events.items()}
    events["t"] = t
    write_recording(folder, poses, events=events)
    with caplog.at_level(logging.WARNING):
        dataset = DHP19Dataset(folder, "train")
    assert dataset[0]["window_start_ms"] == 300
    assert len(dataset) == (1000 - 200 - 100) // 100 - 1
    assert "dropped 1 leading window" in caplog.text


def test_empty_window_gives_zero_events(folder, poses):
    events = make_events()
    keep = (events["t"] < 400_000) | (events["t"] >= 500_000)  # nothing happens in 400..500 ms
    write_recording(folder, poses, events={k: v[keep] for k, v in events.items()})
    item = DHP19Dataset(folder, "train")[1]
    assert item["window_start_ms"] == 400
    assert item["events"].shape == (10, 256, 256, 2) and not item["events"].any()
    assert item["ann_input"].sum() > 0  # the ANN input still sees the 7500 events before 400 ms


def test_nan_and_missing_joints(folder, poses):
    labels = poses.copy()
    labels[35, :, 4] = np.nan  # label of step 5 of window 0 (300 ms + 50 ms), joint elbowL
    write_recording(folder, poses, labels=labels)
    item = DHP19Dataset(folder, "train")[0]
    assert np.isnan(item["landmarks"][5, 4]).all() and np.isnan(item["joints_3d"][5, 4]).all()
    assert np.isfinite(item["landmarks"][5, :4]).all() and np.isfinite(item["landmarks"][4]).all()
    write_recording(folder, poses, labels=poses[:, :, :12])
    with pytest.raises(DataError, match=r"XYZ/3d_poses has shape \(100, 3, 12\), expected \(N, 3, 13\)"):
        DHP19Dataset(folder, "train")
    write_recording(folder, poses, timestamps=np.arange(100)[::-1] * 10_000)
    with pytest.raises(DataError, match="timestamps are not finite and strictly increasing"):
        DHP19Dataset(folder, "train")


def test_labels_shorter_than_events(folder, poses):
    write_recording(folder, poses, labels=poses[:70])  # labels end at 690 ms -> sequence length 700 ms
    dataset = DHP19Dataset(folder, "train")
    assert len(dataset) == (700 - 300 - 100) // 100
    test_view = DHP19Dataset(folder, "test", test_subject_min=1)
    assert len(test_view) == (700 - 300 - 100) // 100
    last = test_view[len(test_view) - 1]
    assert last["window_start_ms"] + 200 == 700 and np.isfinite(last["joints_3d"]).all()


def test_bad_projection_matrices(folder, poses):
    write_recording(folder, poses)
    np.save(folder / "P_matrices" / "P2.npy", np.ones((4, 4)))
    with pytest.raises(DataError, match=r"P2\.npy: projection matrix has shape \(4, 4\)"):
        DHP19Dataset(folder, "train")
    (folder / "P_matrices" / "P2.npy").unlink()
    with pytest.raises(DataError, match=r"P2\.npy: projection matrix file does not exist"):
        DHP19Dataset(folder, "train")
