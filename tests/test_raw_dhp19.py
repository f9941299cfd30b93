"""Raw DHP19 converter: hand-made AEDAT 2.0 / Vicon files with the documented bit layout, exact outputs."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

import h5py
import numpy as np
import pytest

from hybridjax.data.errors import DataError
from hybridjax.data.raw_dhp19 import (
    JOINT_NAMES,
    convert_raw_dhp19,
    find_recordings,
    format_summary,
    load_vicon,
    read_aedat2,
    select_cut,
    unwrap_timestamps,
)

scipy_io = pytest.importorskip("scipy.io")

HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
          b"# Data format is int32 address, int32 timestamp\r\n")


def address(camera, x_raw, y_raw, polarity):
    """The documented DAVIS346 address of a polarity event (camera in the low 4 bits)."""
    return np.uint32(camera | (polarity << 11) | (x_raw << 12) | (y_raw << 22))


SPECIAL = np.uint32(0x400)
APS = np.uint32(0x80000000 | (5 << 12) | (7 << 22))


def write_aedat(path: pathlib.Path, events: list, trailing: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs = np.array(events, dtype=np.uint64).astype(">u4").reshape(-1, 2)
    path.write_bytes(HEADER + pairs.tobytes() + trailing)


def write_vicon(path: pathlib.Path, poses: np.ndarray, drop_joint: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {name: poses[:, :, j] for j, name in enumerate(JOINT_NAMES) if name != drop_joint}
    scipy_io.savemat(path, {"XYZPOS": struct})


def make_poses(num: int, seed: int = 0) -> np.ndarray:
    poses = np.random.default_rng(seed).normal(0.0, 500.0, (num, 3, 13))
    poses[3, :, 7] = np.nan  # a Vicon gap survives the conversion
    return poses


START = 5_000_000
# (camera, x_raw, y_raw, polarity, timestamp) of the polarity events, in file order (cameras interleaved,
# camera 1 out of time order); the first and last are outside the cut.
POLARITY = [
    (0, 10, 20, 1, START - 500),
    (0, 0, 0, 1, START),
    (1, 345, 259, 0, START + 1_500),
    (2, 100, 50, 1, START + 999),
    (1, 3, 4, 1, START + 1_200),
    (3, 172, 130, 0, START + 2_000),
    (0, 5, 6, 0, START + 3_000),
    (2, 101, 51, 0, START + 249_000),
    (3, 173, 131, 1, START + 250_000),
    (0, 7, 7, 1, START + 250_001),
]


def build_events(extra_special_times=()) -> list:
    events = [(int(address(c, x, y, p)), ts) for c, x, y, p, ts in POLARITY]
    # Sync pulses: the start pulse repeated twice at one instant (as in the release), one stop special.
    events.insert(1, (int(SPECIAL), START))
    events.insert(2, (int(SPECIAL), START))
    events.append((int(SPECIAL), START + 250_000))
    events.insert(5, (int(APS), START + 100))  # APS sample: dropped
    events.insert(6, (int(address(6, 1, 1, 1)), START + 110))  # camera 6 does not exist: dropped
    events.extend((int(SPECIAL), t) for t in extra_special_times)
    return events


def make_raw_tree(root: pathlib.Path) -> np.ndarray:
    poses = make_poses(25)
    write_aedat(root / "DVS_movies" / "S1" / "session1" / "mov1.aedat", build_events())
    write_vicon(root / "Vicon_data" / "S1_1_1.mat", poses)
    return poses


def test_conversion_is_exact(tmp_path):
    poses = make_raw_tree(tmp_path / "raw")
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False)
    assert [entry["name"] for entry in summary["converted"]] == ["S1_session1_mov1"]
    assert summary["converted"][0]["dropped_events"] == 1 and summary["skipped"] == []
    with h5py.File(tmp_path / "out" / "S1_session1_mov1_events.h5") as events:
        for channel in range(4):
            inside = sorted((ts - START, 346 - x, 260 - y, p) for c, x, y, p, ts in POLARITY
                            if c == channel and START <= ts <= START + 250_000)
            t, x, y, p = (events[f"cam{channel}_events/{k}"][:] for k in "txyp")
            assert (t.dtype, x.dtype, y.dtype, p.dtype) == (np.int64, np.uint16, np.uint16, np.uint8)
            np.testing.assert_array_equal(t, [e[0] for e in inside])
            np.testing.assert_array_equal(x, [e[1] for e in inside])
            np.testing.assert_array_equal(y, [e[2] for e in inside])
            np.testing.assert_array_equal(p, [e[3] for e in inside])
            ms = events[f"cam{channel}_ms_to_idx"][:]
            assert ms.shape == (251,) and ms.dtype == np.int64
            np.testing.assert_array_equal(ms, [np.sum(t < 1000 * k) for k in range(251)])
        # Camera 1 was out of order in the file and comes out sorted; x = 346 - x_raw, y = 260 - y_raw.
        np.testing.assert_array_equal(events["cam1_events/t"][:], [1_200, 1_500])
        np.testing.assert_array_equal(events["cam1_events/x"][:], [343, 1])
        np.testing.assert_array_equal(events["cam1_events/y"][:], [256, 1])
        np.testing.assert_array_equal(events["cam0_events/x"][:], [346, 341])
    with h5py.File(tmp_path / "out" / "S1_session1_mov1_events_label.h5") as labels:
        np.testing.assert_array_equal(labels["XYZ/3d_poses"][:], poses)
        assert labels["XYZ/3d_poses"].dtype == np.float64
        np.testing.assert_array_equal(labels["XYZ/timestamps"][:], np.arange(25) * 10_000)


def test_single_sync_pulse_uses_the_label_length():
    events = np.array([100, 200, 5_000_000], dtype=np.int64)
    assert select_cut(np.array([150, 150]), events, num_labels=30) == (150, 150 + 300_000)
    # A pulse nearer the end of the stream is the stop marker.
    assert select_cut(np.array([4_900_000]), events, num_labels=30) == (4_600_000, 4_900_000)
    assert select_cut(np.array([10, 10, 11, 900_000]), events, num_labels=3) == (10, 900_000)
    with pytest.raises(DataError, match="no special"):
        select_cut(np.array([], dtype=np.int64), events, 3)
    with pytest.raises(DataError, match="corrupt: 3 special events in 3 sync pulses"):
        select_cut(np.array([0, 10_000, 20_000]), events, 3)


def test_timestamps_wrapping_around_are_unwrapped():
    raw = np.array([4_294_967_000, 4_294_967_290, 5, 100, 80], dtype=np.uint32)
    np.testing.assert_array_equal(unwrap_timestamps(raw),
                                  [4_294_967_000, 4_294_967_290, 2**32 + 5, 2**32 + 100, 2**32 + 80])


def test_bad_recordings_are_skipped_with_reasons(tmp_path):
    raw = tmp_path / "raw"
    make_raw_tree(raw)
    good_events = build_events()
    write_aedat(raw / "DVS_movies" / "S2" / "session1" / "mov1.aedat", good_events)  # no Vicon file
    write_aedat(raw / "DVS_movies" / "S3" / "session2" / "mov4.aedat", good_events, trailing=b"\x00\x01\x02")
    write_vicon(raw / "Vicon_data" / "S3_2_4.mat", make_poses(25))
    no_sync = [e for e in good_events if e[0] != int(SPECIAL)]
    write_aedat(raw / "DVS_movies" / "S13" / "session1" / "mov2.aedat", no_sync)
    write_vicon(raw / "Vicon_data" / "S13_1_2.mat", make_poses(25))
    write_aedat(raw / "DVS_movies" / "S14" / "session5" / "mov3.aedat",
                build_events(extra_special_times=(START + 100_000,)))
    write_vicon(raw / "Vicon_data" / "S14_5_3.mat", make_poses(25))
    write_aedat(raw / "DVS_movies" / "S15" / "session1" / "mov1.aedat", good_events)
    write_vicon(raw / "Vicon_data" / "S15_1_1.mat", make_poses(25), drop_joint="kneeL")

    assert [r.name for r in find_recordings(raw)] == [
        "S1_session1_mov1", "S2_session1_mov1", "S3_session2_mov4", "S13_session1_mov2", "S14_session5_mov3",
        "S15_session1_mov1"]
    summary = convert_raw_dhp19(raw, tmp_path / "out", progress=False)
    assert [entry["name"] for entry in summary["converted"]] == ["S1_session1_mov1"]
    reasons = {entry["name"]: entry["reason"] for entry in summary["skipped"]}
    assert reasons["S2_session1_mov1"].startswith("missing labels: no Vicon file S2_1_1.mat")
    assert reasons["S3_session2_mov4"] == "truncated: 3 trailing bytes after 15 events"
    assert reasons["S13_session1_mov2"].startswith("no special (sync) events")
    assert reasons["S14_session5_mov3"] == "corrupt: 4 special events in 3 sync pulses"
    assert reasons["S15_session1_mov1"] == "XYZPOS lacks joint(s) kneeL"
    written = sorted(p.name for p in (tmp_path / "out").glob("*.h5"))
    assert written == ["S1_session1_mov1_events.h5", "S1_session1_mov1_events_label.h5"]
    text = format_summary(summary)
    assert "converted 1 recording(s), 0 already present, skipped 5" in text
    assert "truncated: 3 trailing bytes" in text
    assert "camera matrices: no complete set of P1..P4" in text
    # A second run keeps what exists.
    again = convert_raw_dhp19(raw, tmp_path / "out", progress=False)
    assert again["existing"] == ["S1_session1_mov1"] and again["converted"] == []


def test_camera_matrices_from_text_files(tmp_path, shared_dir):
    raw = tmp_path / "raw"
    make_raw_tree(raw)
    fixture = shared_dir / "fixtures" / "dhp19_mini" / "P_matrices"
    (raw / "P_matrices").mkdir()
    for number in (1, 2, 3, 4):
        np.savetxt(raw / "P_matrices" / f"P{number}.txt", np.load(fixture / f"P{number}.npy"))
    convert_raw_dhp19(raw, tmp_path / "out", progress=False)
    for number in (1, 2, 3, 4):
        got = np.load(tmp_path / "out" / "P_matrices" / f"P{number}.npy")
        assert got.dtype == np.float64 and got.shape == (3, 4)
        np.testing.assert_allclose(got, np.load(fixture / f"P{number}.npy"), rtol=1e-15)
    # Without camera_positions the centres are recovered from the matrices (they match the release's).
    np.testing.assert_allclose(np.load(tmp_path / "out" / "P_matrices" / "camera_positions.npy"),
                               np.load(fixture / "camera_positions.npy"), atol=1e-6)


def test_reader_errors_name_the_problem(tmp_path):
    path = tmp_path / "v3.aedat"
    path.write_bytes(b"#!AER-DAT3.1\r\n" + bytes(16))
    with pytest.raises(DataError, match="AEDAT version 3.1 is not supported"):
        read_aedat2(path)
    path.write_bytes(b"#!AER-DAT2.0\r\n# Data form")
    with pytest.raises(DataError, match="header line without end"):
        read_aedat2(path)
    path.write_bytes(HEADER)
    with pytest.raises(DataError, match="no events after the header"):
        read_aedat2(path)
    write_aedat(path, [(int(address(2, 3, 4, 1)), 77)])
    address_read, ts = read_aedat2(path)
    np.testing.assert_array_equal(address_read, [2 | (1 << 11) | (3 << 12) | (4 << 22)])
    np.testing.assert_array_equal(ts, [77])
    mat = tmp_path / "bad.mat"
    scipy_io.savemat(mat, {"POS": np.zeros((2, 3))})
    with pytest.raises(DataError, match="no struct 'XYZPOS'"):
        load_vicon(mat)


def test_command_line_entry_point(tmp_path, capsys, monkeypatch):
    make_raw_tree(tmp_path / "raw")
    script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "convert_dhp19.py"
    spec = importlib.util.spec_from_file_location("convert_dhp19", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "convert_dhp19", module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    summary = module.main(module.ConvertArgs(raw_root=tmp_path / "raw", out_dir=tmp_path / "out"))
    assert len(summary["converted"]) == 1
    assert "converted 1 recording(s)" in capsys.readouterr().out
