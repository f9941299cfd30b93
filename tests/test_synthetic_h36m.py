"""The synthetic Event-Human3.6M writer: official layout, determinism, events that follow the labels."""
import h5py
import numpy as np
import pytest

from hybridjax.data.h36m import EventH36MDataset
from hybridjax.data.synthetic.h36m_writer import (
    VIEW_TO_CAMCODE,
    SyntheticH36MConfig,
    action_names,
    write_synthetic_event_h36m,
)

NS = 1_000_000


def read_sequence(root, subject, action, view):
    folder = root / subject / "upsample" / f"{action.replace(' ', '_')}.{VIEW_TO_CAMCODE[view]}"
    with h5py.File(folder / "events.h5") as file:
        return {name: file[f"events/{name}"][()] for name in "xypt"} | {
            "ms_to_idx": file["ms_to_idx"][()], "cam_view": int(file["cam_view"][()])}


def test_layout_and_determinism(tmp_path):
    config = SyntheticH36MConfig(duration_ms=800, actions_per_subject=11, train_subjects=("S1",),
                                 test_subjects=("S9",), cameras=(0, 3))
    summary = write_synthetic_event_h36m(tmp_path / "a", config)
    again = write_synthetic_event_h36m(tmp_path / "b", config)
    other = write_synthetic_event_h36m(tmp_path / "c", config, seed=1)
    assert summary == again and summary != other
    # Eleven actions: the ten names, then a second take of the first one ("Walking 1" -> folder Walking_1).
    names = [a for a, _ in action_names(config, "S1")]
    assert names[:2] == ["Walking", "Greeting"] and names[10] == "Walking 1"
    assert [a for a, _ in action_names(config, "S9")][0] == "Greeting 1"  # the deal continues after S1's 11
    assert (tmp_path / "a" / "S1" / "upsample" / "Walking_1.60457274" / "events.h5").is_file()
    with h5py.File(tmp_path / "a" / "labels.h5") as file:
        np.testing.assert_array_equal(file["S1/Walking 1/timestamps_ms"][()], np.arange(0, 800, 20))
        assert file["S1/Walking 1/cam_view_0"].shape == (40, 2, 13)
    first = read_sequence(tmp_path / "a", "S1", "Walking 1", 3)
    second = read_sequence(tmp_path / "b", "S1", "Walking 1", 3)
    for key in "xypt":
        np.testing.assert_array_equal(first[key], second[key])
    assert first["x"].dtype == np.uint16 and first["p"].dtype == np.uint8 and first["t"].dtype == np.int64
    assert first["cam_view"] == 3 and first["x"].max() < 320 and first["y"].max() < 256
    t = first["t"]
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < 800 * NS
    # ms_to_idx[k]: the first event at or after k ms.
    table = first["ms_to_idx"]
    assert table.shape == (800,)
    for k in (0, 1, 333, 799):
        assert np.all(t[:table[k]] < k * NS) and np.all(t[table[k]:] >= k * NS)
    with pytest.raises(FileExistsError, match="already holds a labels.h5"):
        write_synthetic_event_h36m(tmp_path / "a", config)
    with pytest.raises(ValueError, match="cameras"):
        write_synthetic_event_h36m(tmp_path / "d", config, cameras=(4,))


def test_loader_reads_it_and_events_follow_the_labels(tmp_path):
    write_synthetic_event_h36m(tmp_path)  # defaults: S1 S5 / S9 S11, views 2 and 3, 1.5 s
    train = EventH36MDataset(tmp_path, "train", cameras=(2, 3))
    test = EventH36MDataset(tmp_path, "test", bin_mode="exact", step_ms=20.0)
    assert train.recording_names() == ["S1/Walking.58860488", "S1/Walking.60457274", "S5/Greeting.58860488",
                                       "S5/Greeting.60457274"]
    assert test.recording_names() == ["S9/Eating.58860488", "S9/Eating.60457274", "S11/Posing.58860488",
                                      "S11/Posing.60457274"]
    assert test.cameras == (2, 3) and len(test.index()) == len(test)
    item = test[2]
    assert item["events"].shape == (10, 256, 320, 2) and item["step_has_label"].all()
    counts = item["events"].sum(-1)
    rows, cols = np.mgrid[:256, :320] + 0.5
    for step in range(10):
        joints = item["landmarks"][step]
        joints = joints[np.isfinite(joints).all(-1)]
        assert len(joints) >= 10
        near = np.min(np.hypot(cols[..., None] - joints[:, 0], rows[..., None] - joints[:, 1]), -1) < 15
        # About 10 % of the frame lies within 15 px of a joint, but most of the events do.
        assert near.mean() < 0.15 and counts[step][near].sum() > 0.6 * counts[step].sum()
    # The every-label ANN inputs of the evaluation: 7500 events ending at each label time.
    assert test.label_times_ms(500) == list(range(520, 720, 20))
    frame = test.ann_input_at(item["recording"], item["camera"], 520)
    assert frame.shape == (256, 320, 20) and frame.sum() == 7500
