"""Event-Human3.6M loader on a tiny tree in the official layout, written by the test itself."""
import logging

import h5py
import numpy as np
import pytest

from hybridjax.data.errors import DataError
from hybridjax.data.h36m import EventH36MDataset
from hybridjax.data.loader import BatchLoader

NS = 1_000_000
DURATION_MS = 1000
CAMCODES = {0: "54138969", 1: "55011271"}


def write_sequence(root, subject, action_folder, view, seed, duration_ms=DURATION_MS, rate=30, cam_view=None,
                   events=None):
    folder = root / subject / "upsample" / f"{action_folder}.{CAMCODES[view]}"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    count = duration_ms * rate
    if events is None:
        events = {
            "x": rng.integers(0, 320, count).astype(np.uint16),
            "y": rng.integers(0, 256, count).astype(np.uint16),
            "p": rng.integers(0, 2, count).astype(np.uint8),
            "t": np.sort(rng.integers(0, duration_ms * NS, count)).astype(np.int64),
        }
    with h5py.File(folder / "events.h5", "w") as file:
        for field, values in events.items():
            file[f"events/{field}"] = values
        file["ms_to_idx"] = np.searchsorted(events["t"], np.arange(duration_ms) * NS).astype(np.int64)
        file["cam_view"] = view if cam_view is None else cam_view
    return events


def write_labels(root, entries, duration_ms=DURATION_MS):
    """entries: {(subject, action): {view: (N, 2, 13) pixels}}; timestamps 0, 20, .. ms."""
    with h5py.File(root / "labels.h5", "w") as file:
        for (subject, action), views in entries.items():
            for view, pixels in views.items():
                file[f"{subject}/{action}/cam_view_{view}"] = pixels
            file[f"{subject}/{action}/timestamps_ms"] = np.arange(len(pixels)) * 20.0


def label_track(seed, count=DURATION_MS // 20):
    rng = np.random.default_rng(seed)
    pixels = np.stack([rng.uniform(10, 310, (count, 13)), rng.uniform(10, 250, (count, 13))], axis=1)
    pixels[:, 0, 12] = 330.0  # joint 12 always leaves the frame (u >= 320): masked
    return pixels


@pytest.fixture()
def tree(tmp_path):
    events = {
        "walk0": write_sequence(tmp_path, "S1", "Walking_1", 0, seed=1),
        "walk1": write_sequence(tmp_path, "S1", "Walking_1", 1, seed=2),
    }
    write_sequence(tmp_path, "S1", "_ALL", 0, seed=3)  # no labels: skipped like the official list
    write_sequence(tmp_path, "S9", "Eating", 0, seed=4)
    write_sequence(tmp_path, "S11", "Directions", 0, seed=5)  # excluded by default (official: corrupt)
    labels = {
        ("S1", "Walking 1"): {0: label_track(10), 1: label_track(11)},
        ("S9", "Eating"): {0: label_track(12)},
        ("S11", "Directions"): {0: label_track(13)},
    }
    write_labels(tmp_path, labels)
    return tmp_path, events, labels


def test_windows_labels_and_inputs(tree, caplog):
    root, events, labels = tree
    with caplog.at_level(logging.WARNING):
        dataset = EventH36MDataset(root, "train")
    assert dataset.recording_names() == ["S1/Walking 1.54138969", "S1/Walking 1.55011271"]
    assert "no labels at /S1/ ALL" in caplog.text
    # t[7500] at 250 ms -> cc_start 300; L = min(1000, last label 980) -> (980 - 300 - 200) // 100 + 1 = 5
    assert len(dataset) == 10
    item = dataset[1]
    assert item["window_start_ms"] == 400 and item["camera"] == 0 and item["recording"] == "S1/Walking 1.54138969"
    assert item["events"].shape == (20, 256, 320, 2) and item["events"].dtype == np.float32
    t = events["walk0"]["t"]
    inside = (t >= 400 * NS) & (t < 600 * NS)
    # Per-pixel totals equal a direct count of the window's events (binning only redistributes them).
    direct = np.zeros((256, 320, 2))
    np.add.at(direct, (events["walk0"]["y"][inside], events["walk0"]["x"][inside], events["walk0"]["p"][inside]), 1)
    np.testing.assert_array_equal(item["events"].sum(0), direct)
    assert item["ann_input"].shape == (256, 320, 20) and item["ann_input"].sum() == 7500
    assert item["ann_input_next"].sum() == 7500
    # Labels at 420, 440, .., 600 ms on the steps ending there: 1, 3, .., 19.
    np.testing.assert_array_equal(item["step_has_label"], np.arange(20) % 2 == 1)
    expected = np.round(np.transpose(labels["S1", "Walking 1"][0], (0, 2, 1)))[21:31].astype(np.float32)
    expected[:, 12] = np.nan
    np.testing.assert_array_equal(item["landmarks"][1::2], expected)
    assert np.isnan(item["landmarks"][0::2]).all() and np.isnan(item["joints_3d"]).all()
    ann_expected = np.round(labels["S1", "Walking 1"][0][20].T).astype(np.float32)
    ann_expected[12] = np.nan
    np.testing.assert_array_equal(item["ann_landmarks"], ann_expected)
    # The same window through camera 1.
    other = dataset.item("S1/Walking 1.55011271", 1)
    assert other["camera"] == 1 and other["window_start_ms"] == 400


def test_exact_bins_and_split(tree):
    root, events, _ = tree
    dataset = EventH36MDataset(root, "train", bin_mode="exact", step_ms=1.0, cameras=(0,))
    item = dataset[0]  # 300..500 ms in 200 steps of 1 ms
    t = events["walk0"]["t"]
    window = t[(t >= 300 * NS) & (t < 500 * NS)]
    np.testing.assert_array_equal(item["events"].sum((1, 2, 3)), np.bincount((window - 300 * NS) // NS, minlength=200))
    np.testing.assert_array_equal(np.flatnonzero(item["step_has_label"]), np.arange(19, 200, 20))
    test_set = EventH36MDataset(root, "test")
    assert test_set.recording_names() == ["S9/Eating.54138969"]
    assert "ann_input_next" not in test_set[0]
    assert [name for name, _ in test_set.skipped] == ["S11/Directions.54138969"]
    batch = next(BatchLoader(test_set, 2, shuffle=False, num_workers=1).iter_epoch(0))
    assert batch["events"].shape == (20, 2, 256, 320, 2) and batch["landmarks"].shape == (20, 2, 13, 2)


def test_bad_h36m_input(tmp_path):
    write_sequence(tmp_path, "S1", "Walking", 0, seed=1, cam_view=3)
    with pytest.raises(DataError, match="labels.h5: label file does not exist"):
        EventH36MDataset(tmp_path, "train")
    write_labels(tmp_path, {("S1", "Walking"): {0: label_track(1)}})
    with pytest.raises(DataError, match="cam_view 3 does not match camera code 54138969"):
        EventH36MDataset(tmp_path, "train")


def test_h36m_values_out_of_range(tmp_path):
    rng = np.random.default_rng(0)
    events = {
        "x": rng.integers(0, 320, 30000).astype(np.uint16),
        "y": rng.integers(0, 256, 30000).astype(np.uint16),
        "p": rng.integers(0, 2, 30000).astype(np.uint8),
        "t": np.sort(rng.integers(0, DURATION_MS * NS, 30000)).astype(np.int64),
    }
    events["y"][np.searchsorted(events["t"], 450 * NS)] = 256
    write_sequence(tmp_path, "S1", "Walking", 0, seed=0, events=events)
    write_labels(tmp_path, {("S1", "Walking"): {0: label_track(1)}})
    dataset = EventH36MDataset(tmp_path, "train")
    with pytest.raises(DataError, match=r"events.h5: window 0 \(300-500 ms\): y outside \[0, 255\]"):
        dataset[0]
