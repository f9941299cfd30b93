"""Raw DHP19 converter: hand-made AEDAT 2.0 / Vicon files with the documented bit layout, exact outputs.

Every stream is written here byte by byte (not with the library's writer), and every expected event list is
derived here from DHP19's rules (Generate_DHP19.m / extract_from_aedat.m), never from the converter.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import h5py
import numpy as np
import pytest

from hybridjax.data.errors import DataError
from hybridjax.data.raw_dhp19 import (
    JOINT_NAMES,
    ConvertOptions,
    convert_raw_dhp19,
    cut_times,
    find_recordings,
    format_summary,
    load_vicon,
    read_aedat2,
    unwrap_timestamps,
)
from hybridjax.data.raw_dhp19.filters import background_activity_keep, hot_pixel_keep, ir_mask_keep

scipy_io = pytest.importorskip("scipy.io")

HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
          b"# Data format is int32 address, int32 timestamp\r\n")
SPECIAL = 0x400
APS = 0x80000000 | (5 << 12) | (7 << 22)
NONE = ConvertOptions(filter="none")


def address(camera, x_raw, y_raw, polarity):
    """The documented DAVIS346 address of a polarity event (camera in the low 4 bits)."""
    return camera | (polarity << 11) | (x_raw << 12) | (y_raw << 22)


def write_aedat(path: pathlib.Path, records: list, trailing: bytes = b"") -> None:
    """Header + big-endian (address, timestamp) uint32 pairs, written by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(int(a).to_bytes(4, "big") + int(t).to_bytes(4, "big") for a, t in records)
    path.write_bytes(HEADER + body + trailing)


def write_vicon(path: pathlib.Path, poses: np.ndarray, drop_joint: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    struct = {name: poses[:, :, j] for j, name in enumerate(JOINT_NAMES) if name != drop_joint}
    scipy_io.savemat(path, {"XYZPOS": struct})


def make_poses(num: int, seed: int = 0) -> np.ndarray:
    poses = np.random.default_rng(seed).normal(0.0, 500.0, (num, 3, 13))
    poses[3, :, 7] = np.nan  # a Vicon gap survives the conversion
    return poses


def add_recording(root, name: tuple[int, int, int], records, num_labels=25, trailing=b""):
    s, k, m = name
    write_aedat(root / "DVS_movies" / f"S{s}" / f"session{k}" / f"mov{m}.aedat", records, trailing)
    write_vicon(root / "Vicon_data" / f"S{s}_{k}_{m}.mat", make_poses(num_labels))


def read_camera(path, channel):
    with h5py.File(path) as events:
        return tuple(events[f"cam{channel}_events/{k}"][:] for k in "txyp") + (events[f"cam{channel}_ms_to_idx"][:],)


def expected_events(polarity, start, stop, channel):
    """DHP19's cut of a polarity list (file order): the index range from the first event with ts > start to the
    last with ts < stop, in-range cameras / pixels only, then sorted by time (stable)."""
    times = [e[4] for e in polarity]
    first = next(i for i, ts in enumerate(times) if ts > start)
    last = max(i for i, ts in enumerate(times) if ts < stop)
    inside = [(ts - start, 346 - x, 260 - y, p) for c, x, y, p, ts in polarity[first:last + 1]
              if c == channel and x <= 345 and y <= 259]
    return sorted(inside, key=lambda e: e[0])


START = 5_000_000
STOP = START + 250_000
# (camera, x_raw, y_raw, polarity, timestamp), file order (cameras interleaved, camera 1 out of time order).
POLARITY = [
    (0, 10, 20, 1, START - 500),
    (0, 0, 0, 1, START),  # at the start special: outside the strict cut
    (1, 345, 259, 0, START + 1_500),
    (2, 100, 50, 1, START + 999),
    (1, 3, 4, 1, START + 1_200),
    (3, 172, 130, 0, START + 2_000),
    (6, 1, 1, 1, START + 2_100),  # camera 6 does not exist: dropped
    (0, 5, 6, 0, START + 3_000),
    (2, 346, 6, 0, START + 3_100),  # x_raw 346 is off the sensor: dropped
    (2, 101, 51, 0, START + 249_000),
    (3, 173, 131, 1, STOP),  # at the stop special: outside
    (0, 7, 7, 1, STOP + 1),
]


def regular_records(polarity=POLARITY, specials=(START, START, STOP), first=(APS, 0)):
    """File order: a first record (DHP19's reader skips it), then polarity events with the specials placed
    at their times and an APS sample."""
    records = [first]
    pending = sorted(specials)
    for c, x, y, p, ts in polarity:
        while pending and pending[0] <= ts:
            records.append((SPECIAL, pending.pop(0)))
        records.append((address(c, x, y, p), ts))
    records.extend((SPECIAL, t) for t in pending)
    records.insert(4, (APS, START + 100))  # APS sample: dropped
    return records


def test_conversion_is_exact(tmp_path):
    first = (address(0, 9, 9, 1), START + 50)  # a polarity event as the first record: skipped like DHP19
    add_recording(tmp_path / "raw", (1, 1, 1), regular_records(first=first))
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False, options=NONE)
    entry = summary["converted"][0]
    assert entry["name"] == "S1_session1_mov1" and summary["skipped"] == [] and summary["modified"] == []
    assert (entry["start_us"], entry["stop_us"], entry["rule"]) == (START, STOP, "3 special events: first to last")
    assert entry["dropped_out_of_range"] == 2 and entry["removed_per_channel"] == {}
    events_path = tmp_path / "out" / "S1_session1_mov1_events.h5"
    for channel in range(4):
        t, x, y, p, ms = read_camera(events_path, channel)
        assert (t.dtype, x.dtype, y.dtype, p.dtype, ms.dtype) == (np.int64, np.uint16, np.uint16, np.uint8, np.int64)
        want = expected_events(POLARITY, START, STOP, channel)
        np.testing.assert_array_equal(np.stack([t, x, y, p], 1).reshape(-1, 4), np.array(want).reshape(-1, 4))
        assert ms.shape == (251,)
        np.testing.assert_array_equal(ms, [np.sum(t < 1000 * k) for k in range(251)])
    # By hand: camera 1 was out of order in the file and comes out sorted; x = 346 - x_raw, y = 260 - y_raw;
    # camera 0 lost the events at the start special and after the stop, and the skipped first record.
    t, x, y, _, _ = read_camera(events_path, 1)
    np.testing.assert_array_equal(t, [1_200, 1_500])
    np.testing.assert_array_equal(x, [343, 1])
    np.testing.assert_array_equal(y, [256, 1])
    t, x, _, _, _ = read_camera(events_path, 0)
    np.testing.assert_array_equal(t, [3_000])
    np.testing.assert_array_equal(x, [341])
    assert entry["events_per_channel"] == [1, 2, 2, 1]
    with h5py.File(tmp_path / "out" / "S1_session1_mov1_events_label.h5") as labels:
        np.testing.assert_array_equal(labels["XYZ/3d_poses"][:], make_poses(25))
        assert labels["XYZ/3d_poses"].dtype == np.float64
        np.testing.assert_array_equal(labels["XYZ/timestamps"][:], np.arange(25) * 10_000)


# ----------------------------------------------------------------------------- special-event cases


def test_cut_times_follow_generate_dhp19():
    events = np.array([100, 200, 5_000_000], dtype=np.int64)
    n = 30 * 10_000
    # One special: the nearer stream end decides (min / max of the events).
    assert cut_times(np.array([150]), events, 30)[:2] == (150, 150 + n)
    assert cut_times(np.array([4_900_000]), events, 30)[:2] == (4_900_000 - n, 4_900_000)
    # Two or four (one repeated pulse): the first special, stream ends events[0] / events[-1].
    assert cut_times(np.array([150, 150]), events, 30)[:2] == (150, 150 + n)
    assert cut_times(np.array([4_900_000] * 3 + [4_900_001]), events, 30)[:2] == (4_900_000 - n, 4_900_000)
    # Three or five: first to last.
    assert cut_times(np.array([10, 10, 900_000]), events, 3)[:2] == (10, 900_000)
    assert cut_times(np.array([10, 10, 10, 11, 900_000]), events, 3)[:2] == (10, 900_000)
    # None: the whole recording, with a note.
    start, stop, _, notes = cut_times(np.array([], dtype=np.int64), events, 3)
    assert (start, stop) == (100, 5_000_000) and "no special" in notes[0]
    # A stop pulse earlier than the label length: the uint32 cast clips the start at 0.
    start, stop, _, notes = cut_times(np.array([4_000_000]), np.array([0, 10, 4_000_100]), 500)
    assert (start, stop) == (0, 4_000_000) and "clipped" in notes[0]
    with pytest.raises(DataError, match="corrupt: 6 special events"):
        cut_times(np.array([0, 1, 2, 3, 4, 5]), events, 3)
    # Overflow (last event below the first) with one pulse: special to the largest timestamp.
    wrapped = np.array([4_294_000_000, 4_294_900_000, 50, 60], dtype=np.int64)
    assert cut_times(np.array([4_294_000_000, 4_294_000_000]), wrapped, 3)[:2] == (4_294_000_000, 4_294_900_000)


def _stream(specials, num_labels=25):
    """Polarity events every 10 ms of camera 3 from 1 s to 2 s (pixel x_raw = y_raw = 100) and the specials."""
    times = list(range(1_000_000, 2_000_001, 10_000))
    polarity = [(3, 100, 100, 1, t) for t in times]
    return polarity, regular_records(polarity, specials)


@pytest.mark.parametrize("specials, start, stop, noted", [
    ((), 1_000_000, 2_000_000, "no special (sync) events: the whole recording is used (labels from its first event)"),
    ((1_200_000,), 1_200_000, 1_450_000, None),
    ((1_900_000,), 1_650_000, 1_900_000, None),
    ((1_300_000, 1_300_001), 1_300_000, 1_550_000, None),
    ((1_700_000,) * 3 + (1_700_001,), 1_450_000, 1_700_000, None),
    ((1_100_000,) * 3 + (1_100_001, 1_800_000), 1_100_000, 1_800_000, None),
])
def test_special_event_cases(tmp_path, specials, start, stop, noted):
    polarity, records = _stream(specials)
    add_recording(tmp_path / "raw", (2, 1, 1), records)
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False, options=NONE)
    entry = summary["converted"][0]
    assert (entry["start_us"], entry["stop_us"]) == (start, stop)
    t, *_ = read_camera(tmp_path / "out" / "S2_session1_mov1_events.h5", 3)
    # Strictly inside: e.g. 1.2 s .. 1.45 s keeps 1.21 .. 1.44 s (24 events).
    np.testing.assert_array_equal(t, [ts - start for *_, ts in polarity if start < ts < stop])
    if noted:
        assert summary["modified"] == [{"name": "S2_session1_mov1", "notes": [noted]}]
    else:
        assert summary["modified"] == []


def test_corrupt_truncated_and_skipped_recordings_are_reported(tmp_path):
    raw = tmp_path / "raw"
    add_recording(raw, (1, 1, 1), regular_records())
    _, many = _stream(tuple(1_000_000 + 1_000 * k for k in range(6)))
    add_recording(raw, (4, 3, 4), many)  # more than 5 specials: skipped
    add_recording(raw, (3, 2, 4), regular_records(), trailing=b"\x00\x01\x02")  # converted, noted
    write_aedat(raw / "DVS_movies" / "S2" / "session1" / "mov1.aedat", regular_records())  # no Vicon file
    write_aedat(raw / "DVS_movies" / "S15" / "session1" / "mov1.aedat", regular_records())
    write_vicon(raw / "Vicon_data" / "S15_1_1.mat", make_poses(25), drop_joint="kneeL")
    assert [r.name for r in find_recordings(raw)] == [
        "S1_session1_mov1", "S2_session1_mov1", "S3_session2_mov4", "S4_session3_mov4", "S15_session1_mov1"]

    summary = convert_raw_dhp19(raw, tmp_path / "out", progress=False, options=NONE)
    assert [e["name"] for e in summary["converted"]] == ["S1_session1_mov1", "S3_session2_mov4"]
    reasons = {entry["name"]: entry["reason"] for entry in summary["skipped"]}
    assert reasons["S2_session1_mov1"].startswith("missing labels: no Vicon file S2_1_1.mat")
    assert reasons["S4_session3_mov4"].startswith("corrupt: 6 special events (more than 5")
    assert reasons["S15_session1_mov1"] == "XYZPOS lacks joint(s) kneeL"
    assert summary["modified"] == [
        {"name": "S3_session2_mov4", "notes": ["3 trailing byte(s) after the last whole event ignored"]}]
    # The truncated file gives the same events as the whole one.
    for channel in range(4):
        for a, b in zip(read_camera(tmp_path / "out" / "S1_session1_mov1_events.h5", channel),
                        read_camera(tmp_path / "out" / "S3_session2_mov4_events.h5", channel)):
            np.testing.assert_array_equal(a, b)
    written = sorted(p.name for p in (tmp_path / "out").glob("*.h5"))
    assert written == ["S1_session1_mov1_events.h5", "S1_session1_mov1_events_label.h5",
                       "S3_session2_mov4_events.h5", "S3_session2_mov4_events_label.h5"]
    report = json.loads((tmp_path / "out" / "conversion_report.json").read_text())
    assert report["options"] == {"filter": "none", "overflow": "cut"}
    assert {e["name"] for e in report["skipped"]} == {"S2_session1_mov1", "S4_session3_mov4", "S15_session1_mov1"}
    assert report["modified"] == summary["modified"]
    text = format_summary(summary)
    assert "converted 2 recording(s), 0 already present, skipped 3, modified 1 (filter none" in text
    assert "modified S3_session2_mov4: 3 trailing byte(s)" in text
    assert "camera matrices: no complete set of P1..P4" in text
    # A second run keeps what exists and carries the entries over; other options are flagged.
    again = convert_raw_dhp19(raw, tmp_path / "out", progress=False)
    assert again["existing"] == ["S1_session1_mov1", "S3_session2_mov4"]
    assert [e["name"] for e in again["converted"]] == again["existing"] and len(again["modified"]) == 1
    assert "converted with other options" in again["problems"][0]


def test_timestamp_overflow_cut_there_or_unwrapped(tmp_path):
    wrap = 1 << 32
    times = [wrap - 30_000 + 5_000 * k for k in range(6)] + [5_000 * k + 1_000 for k in range(6)]  # wraps at 2^32
    polarity = [(0, 10, 10, 0, t) for t in times]
    special = wrap - 30_000
    records = [(APS, 0), (SPECIAL, special), (SPECIAL, special)] + [(address(*e[:4]), e[4]) for e in polarity]
    records.insert(4, (address(0, 11, 11, 1), special))  # an event at the special's time: where DHP19 starts
    add_recording(tmp_path / "raw", (14, 1, 1), records, num_labels=10)
    cut = convert_raw_dhp19(tmp_path / "raw", tmp_path / "cut", progress=False, options=NONE)
    entry = cut["converted"][0]
    # DHP19: start = special, stop = max(events) = the last event before the overflow, both included.
    assert (entry["start_us"], entry["stop_us"]) == (special, wrap - 5_000)
    t, x, *_ = read_camera(tmp_path / "cut" / "S14_session1_mov1_events.h5", 0)
    np.testing.assert_array_equal(t, [0, 0, 5_000, 10_000, 15_000, 20_000, 25_000])
    np.testing.assert_array_equal(x, [336, 335, 336, 336, 336, 336, 336])
    assert "events kept only up to it" in cut["modified"][0]["notes"][0]
    # unwrap: the timestamps continue past 2^32; two specials nearer the start -> stop = start + 10 labels.
    more = convert_raw_dhp19(tmp_path / "raw", tmp_path / "unwrap", progress=False,
                             options=ConvertOptions(filter="none", overflow="unwrap"))
    entry = more["converted"][0]
    assert (entry["start_us"], entry["stop_us"]) == (special, special + 100_000)
    t, *_ = read_camera(tmp_path / "unwrap" / "S14_session1_mov1_events.h5", 0)
    np.testing.assert_array_equal(t, [5_000, 10_000, 15_000, 20_000, 25_000] + [31_000 + 5_000 * k for k in range(6)])
    assert "unwrapped" in more["modified"][0]["notes"][0]


def test_out_of_order_event_before_the_start_is_dropped_and_noted(tmp_path):
    # The index range starts at the first event after the start; a later record that is earlier in time
    # falls inside the range (DHP19 keeps it) but would get t < 0.
    polarity = [(0, 1, 1, 1, START + 10), (1, 2, 2, 0, START - 5), (1, 3, 3, 1, START + 20)]
    add_recording(tmp_path / "raw", (1, 1, 1), regular_records(polarity, (START, START, STOP)))
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False, options=NONE)
    entry = summary["converted"][0]
    assert entry["dropped_before_start"] == 1 and entry["events_per_channel"] == [1, 1, 0, 0]
    assert summary["modified"][0]["notes"] == [
        "1 event(s) inside the cut but before its start in time (out of file order) dropped"]
    t, x, *_ = read_camera(tmp_path / "out" / "S1_session1_mov1_events.h5", 1)
    np.testing.assert_array_equal(t, [20])
    np.testing.assert_array_equal(x, [343])


def test_timestamps_wrapping_around_are_unwrapped():
    raw = np.array([4_294_967_000, 4_294_967_290, 5, 100, 80], dtype=np.uint32)
    np.testing.assert_array_equal(unwrap_timestamps(raw),
                                  [4_294_967_000, 4_294_967_290, 2**32 + 5, 2**32 + 100, 2**32 + 80])


# ------------------------------------------------------------------------------------------- filters


def test_hot_pixel_filter_threshold():
    x = np.array([5] * 4 + [6] * 3 + [5])
    y = np.array([5] * 4 + [5] * 3 + [6])
    np.testing.assert_array_equal(hot_pixel_keep(x, y, threshold=4), [False] * 4 + [True] * 4)
    # The DHP19 threshold: 10 000 events at one pixel are removed, 9 999 at another kept.
    x = np.array([100] * 10_000 + [101] * 9_999)
    keep = hot_pixel_keep(x, np.full(x.size, 50))
    assert keep[:10_000].sum() == 0 and keep[10_000:].all()


# (X, y, t) in file order on the side-by-side 1384 x 260 image and whether each event survives (by hand).
BACKGROUND_CASE = [
    (10, 10, 100_000, False),  # nothing written yet: 100 ms - 0 > 70 ms
    (11, 10, 150_000, True),   # (10, 10) wrote its neighbours at 100 ms: 50 ms
    (10, 10, 160_000, True),   # (11, 10) wrote (10, 10) at 150 ms
    (12, 10, 230_001, False),  # last write of (12, 10): (11, 10) at 150 ms -> 80.001 ms
    (1, 50, 300_000, False),   # border pixel: reads but never writes
    (2, 50, 300_010, False),   # so its neighbour still reads 0
    (11, 11, 140_000, True),   # earlier than the write it reads (230.001 ms): the difference saturates at 0
    (346, 100, 400_000, False),  # camera 0, last column
    (347, 100, 400_050, True),   # camera 1, first column: written across the camera seam
    (500, 100, 500_000, False),
    (500, 100, 500_010, False),  # an event does not write its own pixel
    (700, 200, 60_000, True),    # t <= 70 ms passes against the initial 0
]


def test_background_activity_filter_by_hand():
    x, y, t, want = (np.array(column) for column in zip(*BACKGROUND_CASE))
    np.testing.assert_array_equal(background_activity_keep(x, y, t), want)
    np.testing.assert_array_equal(background_activity_keep(x, y, t, chunk=3), want)


def reference_background(x, y, t, dt=70_000, width=1384, height=260):
    """BackgroundFilter.m's loop, written out from its rules."""
    last = {}
    keep = []
    for xs, ys, ts in zip(x.tolist(), y.tolist(), t.tolist()):
        keep.append(ts - last.get((xs, ys), 0) <= dt)
        if not (xs == 1 or xs == width or ys == 1 or ys == height):
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    if dx or dy:
                        last[xs + dx, ys + dy] = ts
    return np.array(keep)


def test_background_activity_filter_matches_the_loop_across_chunks():
    rng = np.random.default_rng(3)
    size = 3_000
    x = rng.integers(1, 9, size)  # a small patch, including the border column 1
    x[::7] = rng.integers(344, 350, x[::7].size)  # across the seam of cameras 0 and 1
    y = rng.integers(1, 8, size)
    t = np.cumsum(rng.integers(0, 20_000, size)) + rng.integers(-30_000, 30_000, size)  # not quite sorted
    want = reference_background(x, y, t)
    assert 0.2 < want.mean() < 0.95  # both outcomes occur
    for chunk in (1, 17, 1_000, 1 << 18):
        np.testing.assert_array_equal(background_activity_keep(x, y, t, chunk=chunk), want)


def test_ir_masks_bounds_are_exclusive():
    # Channel 2 mask: 780 < X < 810, 115 < y < 145 (camera 2 x 89..117, y 116..144).
    x = np.array([780, 781, 809, 810, 795, 795, 795, 795])
    y = np.array([130, 130, 130, 130, 115, 116, 144, 145])
    np.testing.assert_array_equal(ir_mask_keep(x, y, "ir_mask_channel2"),
                                  [True, False, False, True, True, False, False, True])
    # Channel 3 mask: 1252 < X < 1259, 136 < y < 144 (camera 3 x 215..220, y 137..143).
    x = np.array([1252, 1253, 1258, 1259, 1255, 1255, 1255, 1255])
    y = np.array([140, 140, 140, 140, 136, 137, 143, 144])
    np.testing.assert_array_equal(ir_mask_keep(x, y, "ir_mask_channel3"),
                                  [True, False, False, True, True, False, False, True])


def test_dhp19_filters_in_the_converter(tmp_path):
    """Hot pixel, then background activity, then the masks, on a stream built for each to act."""
    start, stop = 1_000_000, 1_300_000
    polarity = []
    for k in range(10_000):  # a hot pixel in camera 1 (x = 346 - 50 = 296, y = 260 - 60 = 200)
        polarity.append((1, 50, 60, 1, start + 1 + k * 29))
    for k in range(40):  # camera 0: a pair of neighbours firing every 5 ms (both survive but the first)
        polarity.append((0, 200, 100, 1, start + 10 + 5_000 * k))
        polarity.append((0, 201, 100, 0, start + 11 + 5_000 * k))
    for k in range(20):  # camera 2: neighbours inside the channel-2 IR spot (x 100, y 130): masked
        polarity.append((2, 246, 130, 1, start + 20 + 5_000 * k))
        polarity.append((2, 245, 130, 1, start + 21 + 5_000 * k))
    for k in range(20):  # camera 3: a pair at x 218-219, y 140 (channel-3 spot), one just outside at x 221-222
        polarity.append((3, 128, 120, 1, start + 30 + 5_000 * k))
        polarity.append((3, 127, 120, 1, start + 31 + 5_000 * k))
        polarity.append((3, 125, 120, 0, start + 32 + 5_000 * k))
        polarity.append((3, 124, 120, 0, start + 33 + 5_000 * k))
    polarity.append((0, 30, 30, 1, start + 200_000))  # isolated: background activity
    polarity.sort(key=lambda e: e[4])
    add_recording(tmp_path / "raw", (1, 1, 1), regular_records(polarity, (start, start, stop)))
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False)
    entry = summary["converted"][0]
    assert summary["options"]["filter"] == "dhp19" and summary["options"]["hot_pixel_threshold"] == 10_000
    # By hand: camera 1's 10 000 events at one pixel; per pixel pair, the first event of the first pair has
    # nothing written before it; the isolated event; camera 2 keeps nothing inside its spot, camera 3 keeps
    # its outside pair (x = 221, 222; the mask is 215..220) but the first event.
    removed = entry["removed_per_channel"]
    assert removed["hot_pixel"] == [0, 10_000, 0, 0]
    assert removed["background_activity"] == [2, 0, 1, 2]
    assert removed["ir_mask_channel2"] == [0, 0, 39, 0]
    assert removed["ir_mask_channel3"] == [0, 0, 0, 39]
    assert entry["events_in_cut_per_channel"] == [81, 10_000, 40, 80]
    assert entry["events_per_channel"] == [79, 0, 0, 39]
    t, x, y, _, _ = read_camera(tmp_path / "out" / "S1_session1_mov1_events.h5", 3)
    assert set(x.tolist()) == {221, 222} and set(y.tolist()) == {140} and (t[0], x[0]) == (33, 222)
    # filter='none' keeps all of them.
    plain = convert_raw_dhp19(tmp_path / "raw", tmp_path / "plain", progress=False, options=NONE)
    assert plain["converted"][0]["events_per_channel"] == [81, 10_000, 40, 80]


# ------------------------------------------------------------------------------------ other inputs


def test_camera_matrices_from_text_files(tmp_path, shared_dir):
    raw = tmp_path / "raw"
    add_recording(raw, (1, 1, 1), regular_records())
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
    path.write_bytes(HEADER + bytes(7))
    with pytest.raises(DataError, match="no events after the header"):
        read_aedat2(path)
    write_aedat(path, [(address(2, 3, 4, 1), 77)], trailing=b"\x01\x02\x03\x04\x05")
    stream = read_aedat2(path)
    np.testing.assert_array_equal(stream.address, [2 | (1 << 11) | (3 << 12) | (4 << 22)])
    np.testing.assert_array_equal(stream.timestamp, [77])
    assert stream.trailing_bytes == 5
    mat = tmp_path / "bad.mat"
    scipy_io.savemat(mat, {"POS": np.zeros((2, 3))})
    with pytest.raises(DataError, match="no struct 'XYZPOS'"):
        load_vicon(mat)


def test_command_line_entry_point(tmp_path, capsys, monkeypatch):
    add_recording(tmp_path / "raw", (1, 1, 1), regular_records())
    script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "convert_dhp19.py"
    spec = importlib.util.spec_from_file_location("convert_dhp19", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "convert_dhp19", module)  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    summary = module.main(module.ConvertArgs(raw_root=tmp_path / "raw", out_dir=tmp_path / "out", filter="none"))
    assert len(summary["converted"]) == 1
    out = capsys.readouterr().out
    assert "converted 1 recording(s)" in out and "conversion_report.json" in out
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "nowhere"), str(tmp_path / "out2")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith("nowhere: raw DHP19 root is not a folder")


def test_round_trip_of_the_fixture_recording(tmp_path, shared_dir):
    """The fixture's h5 recording written back as AEDAT (start special 1 us before its time 0) converts to
    the same events, 1 us later."""
    from hybridjax.data.raw_dhp19 import records_from_events_h5

    source = shared_dir / "fixtures" / "dhp19_mini" / "S1_session1_mov1"
    address_, timestamp = records_from_events_h5(f"{source}_events.h5", offset_us=START)
    with h5py.File(f"{source}_events_label.h5") as labels:
        poses = labels["XYZ/3d_poses"][:]
    stop = START + 1_000_000
    pairs = np.concatenate([[[APS, 0], [SPECIAL, START - 1], [SPECIAL, START - 1]],
                            np.stack([address_, timestamp], 1), [[SPECIAL, stop]]]).astype(">u4")
    path = tmp_path / "raw" / "DVS_movies" / "S1" / "session1" / "mov1.aedat"
    path.parent.mkdir(parents=True)
    path.write_bytes(HEADER + pairs.tobytes())
    write_vicon(tmp_path / "raw" / "Vicon_data" / "S1_1_1.mat", poses)
    summary = convert_raw_dhp19(tmp_path / "raw", tmp_path / "out", progress=False, options=NONE)
    assert summary["converted"][0]["duration_ms"] == 1000
    with h5py.File(f"{source}_events.h5") as original:
        for channel in range(4):
            t, x, y, p, ms = read_camera(tmp_path / "out" / "S1_session1_mov1_events.h5", channel)
            group = original[f"cam{channel}_events"]
            np.testing.assert_array_equal(t, group["t"][:] + 1)
            np.testing.assert_array_equal(x, group["x"][:])
            np.testing.assert_array_equal(y, group["y"][:])
            np.testing.assert_array_equal(p, group["p"][:])
            np.testing.assert_array_equal(ms, np.searchsorted(group["t"][:] + 1, 1000 * np.arange(1001)))
