"""DHP19 loaders and event representations: parity with the official loaders on the shared fixture, the
exact-time bin mode, camera access, and closed-form checks of the representations."""
import numpy as np
import pytest

from hybridjax.data import representations as rep
from hybridjax.data.dhp19 import CAMERA_TO_MATRIX, DHP19Dataset, DHP19FrameDataset, project_joints

FIELDS_TRAIN = ("events", "ann_input", "ann_input_next", "landmarks", "joints_3d", "ann_landmarks")


@pytest.fixture(scope="module")
def fixture_paths(shared_dir):
    root = shared_dir / "fixtures" / "dhp19_mini"
    expected = np.load(shared_dir / "fixtures" / "dhp19_mini_expected.npz")
    return root, expected


@pytest.fixture(scope="module")
def train_set(fixture_paths):
    return DHP19Dataset(fixture_paths[0], "train")


def _onehot_indices(landmarks):
    """(t, joint, v, u) of the one-hot label maps implied by [T, J, 2] landmarks (NaN = empty map)."""
    steps, joints = np.nonzero(~np.isnan(landmarks[..., 0]))
    rows = np.stack(
        [steps, joints, landmarks[steps, joints, 1].astype(int), landmarks[steps, joints, 0].astype(int)], 1
    )
    return rows[np.lexsort(rows.T[::-1])]


@pytest.mark.parametrize("split", ["train", "test"])
def test_window_dataset_matches_official_loader(fixture_paths, split):
    root, expected = fixture_paths
    dataset = DHP19Dataset(root, split)
    assert len(dataset) == int(expected[f"snn_{split}_len"])
    steps = 10 if split == "train" else 20
    for i in range(3):
        key = f"snn_{split}_{i}_"
        item = dataset[i]
        # official (T, 2, H, W) -> ours [T, H, W, 2]
        official_events = np.transpose(expected[key + "event_representation"], (0, 2, 3, 1)).astype(np.float32)
        assert item["events"].shape == (steps, 256, 256, 2) and item["events"].dtype == np.float32
        np.testing.assert_array_equal(item["events"], official_events)
        cnn_input = np.moveaxis(expected[key + "cnn_input"], -3, -1).astype(np.float32)  # C,H,W -> H,W,C
        if split == "train":
            np.testing.assert_array_equal(item["ann_input"], cnn_input[0])
            np.testing.assert_array_equal(item["ann_input_next"], cnn_input[1])
        else:
            assert "ann_input_next" not in item
            np.testing.assert_array_equal(item["ann_input"], cnn_input)
        # official landmarks (2, T, 13) = (u, v) -> ours [T, 13, 2]
        np.testing.assert_array_equal(item["landmarks"], np.transpose(expected[key + "landmarks"], (1, 2, 0)))
        np.testing.assert_array_equal(
            item["joints_3d"], np.transpose(expected[key + "label_3d"], (0, 2, 1)).astype(np.float32)
        )
        np.testing.assert_array_equal(item["ann_landmarks"], expected[key + "cnn_landmarks"].T)
        np.testing.assert_array_equal(_onehot_indices(item["landmarks"]), expected[key + "label_nonzero"])
        assert item["window_start_ms"] == int(expected[key + "ms_start"])
        assert item["step_has_label"].dtype == bool and item["step_has_label"].all()
        assert item["camera"] == 3 and item["window_index"] == i
        assert item["recording"] == ("S1_session1_mov1" if split == "train" else "S13_session1_mov1")


@pytest.mark.parametrize("split", ["train", "test"])
def test_frame_dataset_matches_official_cnn_loader(fixture_paths, split):
    root, expected = fixture_paths
    dataset = DHP19FrameDataset(root, split)
    assert len(dataset) == int(expected[f"cnn_{split}_len"])
    for i in range(3):
        key = f"cnn_{split}_{i}_"
        item = dataset[i]
        np.testing.assert_array_equal(
            item["ann_input"], np.moveaxis(expected[key + "event_representation"], 0, -1).astype(np.float32)
        )
        np.testing.assert_array_equal(item["ann_landmarks"], expected[key + "landmarks"].T)
        assert item["timestamp_ms"] == float(expected[key + "timestamp_ms"])
        assert item["recording"] + "_events_label" == str(expected[key + "filename"])
        assert item["window_start_ms"] == item["timestamp_ms"] + 10


def test_exact_one_ms_bins_redistribute_the_same_events(fixture_paths, train_set):
    exact = DHP19Dataset(fixture_paths[0], "train", bin_mode="exact", step_ms=1.0)
    assert len(exact) == len(train_set)
    paper, item = train_set[1], exact[1]
    assert item["events"].shape == (100, 256, 256, 2)
    # Same event slice, different binning: per-pixel totals agree exactly.
    np.testing.assert_array_equal(item["events"].sum(0), paper["events"].sum(0))
    np.testing.assert_array_equal(item["ann_input"], paper["ann_input"])
    # 100 Hz labels land on every 10th 1 ms step; the rest is unlabelled (NaN, mask False).
    expected_mask = np.zeros(100, bool)
    expected_mask[::10] = True
    np.testing.assert_array_equal(item["step_has_label"], expected_mask)
    np.testing.assert_array_equal(item["landmarks"][::10], paper["landmarks"])
    np.testing.assert_array_equal(item["joints_3d"][::10], paper["joints_3d"])
    assert np.isnan(item["landmarks"][~expected_mask]).all()


def test_exact_bins_count_events_by_absolute_time(fixture_paths):
    import h5py

    root = fixture_paths[0]
    dataset = DHP19Dataset(root, "test", bin_mode="exact", step_ms=2.5)
    item = dataset[0]  # window 200..400 ms, 80 steps of 2.5 ms
    assert item["events"].shape == (80, 256, 256, 2)
    with h5py.File(root / "S13_session1_mov1_events.h5", "r") as file:
        ms_to_idx = file["cam3_ms_to_idx"][()]
        t = file["cam3_events/t"][ms_to_idx[200]:ms_to_idx[400]]
        x = file["cam3_events/x"][ms_to_idx[200]:ms_to_idx[400]].astype(int) - 1
        y = file["cam3_events/y"][ms_to_idx[200]:ms_to_idx[400]].astype(int) - 1
    inside = (x >= 34) & (x < 290) & (y >= 2) & (y < 258)
    per_step = np.bincount((t[inside] - 200_000) // 2500, minlength=80)
    np.testing.assert_array_equal(item["events"].sum((1, 2, 3)), per_step)
    np.testing.assert_array_equal(np.flatnonzero(item["step_has_label"]), np.arange(0, 80, 4))


def test_long_exact_steps_take_the_earliest_label(fixture_paths, train_set):
    coarse = DHP19Dataset(fixture_paths[0], "train", bin_mode="exact", step_ms=20.0)
    item, paper = coarse[0], train_set[0]
    assert item["events"].shape[0] == 5 and item["step_has_label"].all()
    np.testing.assert_array_equal(item["landmarks"], paper["landmarks"][::2])


def test_invalid_exact_step_is_rejected(fixture_paths):
    with pytest.raises(ValueError, match="step_ms"):
        DHP19Dataset(fixture_paths[0], "train", bin_mode="exact", step_ms=3.0)  # 3 ms does not divide 100
    with pytest.raises(ValueError, match="multiples of the 10 ms label period"):
        DHP19Dataset(fixture_paths[0], "train", window_ms=105)


def test_longer_windows_and_steps(fixture_paths, train_set):
    # 300 ms windows stepping 50 ms: 30 steps; window i starts at cc_start + 50 i; labels s/10 .. s/10 + 29.
    dataset = DHP19Dataset(fixture_paths[0], "train", window_ms=300, window_step_ms=50, ann_next=False)
    assert len(dataset) == min((1000 - 100 - 50) // 50, (1000 - 100 - 300) // 50 + 1)
    item = dataset[2]
    assert item["window_start_ms"] == 200 and item["events"].shape == (30, 256, 256, 2)
    np.testing.assert_array_equal(item["joints_3d"][:10], train_set[1]["joints_3d"])
    assert "ann_input_next" not in item


def test_cameras_item_lookup_and_matrices(fixture_paths, train_set):
    root = fixture_paths[0]
    both = DHP19Dataset(root, "train", cameras=(2, 3))
    only2 = DHP19Dataset(root, "train", cameras=(2,))
    assert len(both) == len(train_set) + len(only2)
    # Camera-major order: camera 2's windows first, then camera 3's.
    assert [both[i]["camera"] for i in (0, len(only2))] == [2, 3]
    paired = both.item("S1_session1_mov1", 1, camera=3)
    np.testing.assert_array_equal(paired["events"], train_set[1]["events"])
    np.testing.assert_array_equal(both.item("S1_session1_mov1", 1, camera=2)["events"], only2[1]["events"])
    positions = np.load(root / "P_matrices" / "camera_positions.npy")
    for camera, number in CAMERA_TO_MATRIX.items():
        matrix = both.projection_matrix(camera)
        np.testing.assert_array_equal(matrix, np.load(root / "P_matrices" / f"P{number}.npy"))
        centre = both.camera_position(camera)
        np.testing.assert_array_equal(centre, positions[number - 1])
        # The centre projects to the null vector of P (it is the camera's own centre).
        assert np.abs(matrix @ np.append(centre, 1.0)).max() < 1e-6 * np.abs(matrix[:, 3]).max()
    with pytest.raises(KeyError):
        train_set.item("S13_session1_mov1", 0)
    with pytest.raises(IndexError):
        train_set.item("S1_session1_mov1", len(train_set))


def test_subject_split_is_overridable(fixture_paths):
    root = fixture_paths[0]
    assert DHP19Dataset(root, "train", test_subject_min=14).recording_names() == [
        "S1_session1_mov1", "S13_session1_mov1"
    ]
    assert DHP19Dataset(root, "test", test_subject_min=1).recording_names() == [
        "S1_session1_mov1", "S13_session1_mov1"
    ]


def test_project_joints_masks_and_truncates():
    matrix = np.array([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1.0]])  # u = X, v = 260 - Y
    joints = np.array(
        [[40.7, 250.2, 0], [33.9, 100, 0], [100, 2.5, 0], [np.nan, 100, 0], [289.99, 3.0, 0], [100, 1.0, 0]]
    )
    uv = project_joints(joints, matrix)
    np.testing.assert_allclose(uv[0], [6, 7])  # u 40.7 - 34 -> 6; v = 260 - 250.2 = 9.8, - 2 -> 7
    assert np.isnan(uv[1]).all()  # u < 34
    np.testing.assert_array_equal(uv[2], [66, 255])  # v = 257.5 < 258 is kept
    assert np.isnan(uv[3]).all()  # missing joint
    np.testing.assert_array_equal(uv[4], [255, 255])  # u 289.99 -> 255, v = 257 -> 255
    assert np.isnan(uv[5]).all()  # v = 259 >= 258


def test_stacked_histogram_closed_form():
    # t span 0..10, 2 bins: 0 -> bin 0, 5 -> bin 1, 10 -> bin 2 clamped to 1.
    x, y = np.array([40, 40, 41]), np.array([3, 3, 3])
    hist = rep.stacked_histogram(x, y, np.array([1, 0, 1]), np.array([0, 5, 10]), 2)
    assert hist.shape == (2, 256, 256, 2) and hist.sum() == 3
    assert hist[0, 1, 6, 1] == 1 and hist[1, 1, 6, 0] == 1 and hist[1, 1, 7, 1] == 1
    # Events outside the crop are dropped (row 1 < 2, column 300 > 289).
    assert rep.stacked_histogram(np.array([40, 300]), np.array([1, 5]), np.array([0, 0]),
                                 np.array([0, 1]), 2).sum() == 0
    # All events at one timestamp: bin 0 (the official code would divide by zero).
    same = rep.stacked_histogram(x, y, np.array([0, 0, 0]), np.array([7, 7, 7]), 4)
    assert same[0].sum() == 3 and same[1:].sum() == 0
    assert rep.stacked_histogram(x[:0], y[:0], x[:0], x[:0], 3).shape == (3, 256, 256, 2)


def test_span_bins_use_float32_like_the_official_code():
    # (1717703 / 1908559) * 10 = 8.99999... exactly, but 9.0 in float32 (torch int / int -> float32).
    np.testing.assert_array_equal(rep.span_bin_index(np.array([0, 1717703, 1908559]), 10), [0, 9, 9])


def test_ann_frame_channel_order():
    t = np.arange(10)
    frame = rep.ann_frame(np.full(10, 50), np.full(10, 10), np.array([0] * 5 + [1] * 5), t, n_bins=5)
    assert frame.shape == (256, 256, 10)
    # span 9: bins floor(t / 9 * 5) = 0 0 1 1 2 | 2 3 3 4 5->4; polarity 0 first, then polarity 1
    np.testing.assert_array_equal(frame[8, 16], [2, 2, 1, 0, 0, 0, 0, 1, 2, 2])


def test_fixed_time_histogram_and_voxel_grid():
    x, y, p = np.array([40, 40, 40]), np.array([3, 3, 3]), np.array([0, 0, 1])
    hist = rep.fixed_time_histogram(x, y, p, np.array([1000, 1999, 2000]), 1000, 1000, 3)
    np.testing.assert_array_equal(hist[:, 1, 6], [[2, 0], [0, 1], [0, 0]])
    with pytest.raises(ValueError, match="outside"):
        rep.fixed_time_histogram(x, y, p, np.array([1000, 1999, 4000]), 1000, 1000, 3)
    voxel = rep.voxel_grid(x, y, p, np.array([0, 25, 100]), 3)  # tau = 0, 0.5, 2
    np.testing.assert_allclose(voxel[:, 1, 6], [[1.5, 0], [0.5, 0], [0, 1]])
    assert voxel.sum() == pytest.approx(3.0)


def test_voxel_representation_option(fixture_paths, train_set):
    voxel = DHP19Dataset(fixture_paths[0], "train", representation="voxel")
    item = voxel[0]
    assert item["events"].shape == (10, 256, 256, 2)
    # Bilinear weights of each event sum to one: the total equals the histogram's event count.
    assert item["events"].sum() == pytest.approx(train_set[0]["events"].sum(), rel=1e-5)


def test_align_cameras_pairs_windows_by_time(fixture_paths, train_set):
    root = fixture_paths[0]
    # In the fixture's train recording camera 2 starts at 200 ms, camera 3 at 100 ms (its own cc_start).
    unaligned = DHP19Dataset(root, "train", cameras=(2, 3))
    assert [unaligned.window_start_ms("S1_session1_mov1", 0, c) for c in (2, 3)] == [200, 100]
    np.testing.assert_array_equal(
        unaligned.item_at("S1_session1_mov1", 200, camera=3)["events"], train_set[1]["events"]
    )
    with pytest.raises(KeyError, match="no window starts at 150 ms"):
        unaligned.item_at("S1_session1_mov1", 150, camera=3)
    aligned = DHP19Dataset(root, "train", cameras=(2, 3), align_cameras=True)
    assert aligned.num_windows("S1_session1_mov1", 2) == aligned.num_windows("S1_session1_mov1", 3) == 7
    pair = [aligned.item("S1_session1_mov1", 0, camera=c) for c in (2, 3)]
    assert [p["window_start_ms"] for p in pair] == [200, 200]
    np.testing.assert_array_equal(pair[0]["joints_3d"], pair[1]["joints_3d"])
    np.testing.assert_array_equal(pair[1]["events"], train_set[1]["events"])
