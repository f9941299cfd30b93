"""Synthetic DHP19: layout against the official fixture, determinism, label/event consistency, DVS maths."""
from __future__ import annotations

import dataclasses
import math
import pathlib

import h5py
import numpy as np
import pytest

from hybridjax.data.synthetic import (
    CHANNEL_TO_MATRIX,
    DvsParams,
    EventSimulator,
    SyntheticConfig,
    crossing_events,
    dhp19_like_rig,
    ensure_synthetic_dhp19,
    noise_events,
    project_points,
    write_synthetic_dhp19,
)
from hybridjax.data.synthetic.body import (
    JOINT_NAMES,
    J,
    forward_kinematics,
    limb_direction,
    sample_proportions,
)
from hybridjax.data.synthetic.motions import MOTION_NAMES, motion_channels, sample_motion

BONES = [("head", "neck"), ("shoulderR", "shoulderL"), ("neck", "pelvis"), ("hipR", "hipL"),
         ("shoulderR", "elbowR"), ("elbowR", "handR"), ("shoulderL", "elbowL"), ("elbowL", "handL"),
         ("hipR", "kneeR"), ("kneeR", "footR"), ("hipL", "kneeL"), ("kneeL", "footL")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    out = tmp_path_factory.mktemp("synthetic_tiny")
    summary = write_synthetic_dhp19(out, SyntheticConfig.preset("tiny"), progress=False)
    return out, summary


def _recordings(folder: pathlib.Path) -> list[str]:
    return sorted(p.name[: -len("_events.h5")] for p in folder.glob("*_events.h5"))


def test_layout_matches_the_official_fixture(tiny, shared_dir):
    out, summary = tiny
    names = _recordings(out)
    assert names == ["S13_session1_mov1", "S1_session1_mov1"]
    fixture = shared_dir / "fixtures" / "dhp19_mini"
    with h5py.File(fixture / "S1_session1_mov1_events.h5") as ref_events, \
            h5py.File(fixture / "S1_session1_mov1_events_label.h5") as ref_labels:
        ref_event_layout = {k: ref_events[k].dtype for k in _datasets(ref_events)}
        ref_label_layout = {k: ref_labels[k].dtype for k in _datasets(ref_labels)}
    for name in names:
        with h5py.File(out / f"{name}_events.h5") as events, h5py.File(out / f"{name}_events_label.h5") as labels:
            assert {k: events[k].dtype for k in _datasets(events)} == ref_event_layout
            assert {k: labels[k].dtype for k in _datasets(labels)} == ref_label_layout
            for c in range(4):
                x, y, p, t = (events[f"cam{c}_events/{k}"][:] for k in "xypt")
                assert x.shape == y.shape == p.shape == t.shape and t.size > 7500
                assert x.min() >= 1 and x.max() <= 346 and y.min() >= 1 and y.max() <= 260
                assert set(np.unique(p)) == {0, 1}
                assert t[0] >= 0 and np.all(np.diff(t) >= 0) and t[-1] <= 1_500_000
                ms = events[f"cam{c}_ms_to_idx"][:]
                assert ms.shape == (1501,)
                np.testing.assert_array_equal(ms, [np.sum(t < 1000 * k) for k in range(1501)])
                # The official windows exist: cc_start from the 7500th event, then >= 3 windows of 100 ms.
                cc_start = math.ceil(t[7500] / 1000 / 100) * 100
                assert (1500 - cc_start - 100) // 100 >= 3, (name, c, cc_start)
            poses = labels["XYZ/3d_poses"][:]
            stamps = labels["XYZ/timestamps"][:]
            assert poses.shape == (150, 3, 13)
            np.testing.assert_array_equal(stamps, np.arange(150) * 10000)
    for number in (1, 2, 3, 4):
        matrix = np.load(out / "P_matrices" / f"P{number}.npy")
        assert matrix.shape == (3, 4) and matrix.dtype == np.float64
    positions = np.load(out / "P_matrices" / "camera_positions.npy")
    assert positions.shape == (4, 3) and positions.dtype == np.float64
    for number in (1, 2, 3, 4):  # camera_positions row i is the centre of P{i+1}: P [C; 1] = 0
        matrix = np.load(out / "P_matrices" / f"P{number}.npy")
        np.testing.assert_allclose(matrix @ np.append(positions[number - 1], 1.0), 0.0, atol=1e-6)
    assert {entry["split"] for entry in summary["files"]} == {"train", "test"}


def _datasets(file: h5py.File) -> list[str]:
    found = []
    file.visititems(lambda name, node: found.append(name) if isinstance(node, h5py.Dataset) else None)
    return sorted(found)


def test_labels_have_nan_dropout_runs(tiny):
    out, summary = tiny
    for entry in summary["files"]:
        with h5py.File(out / f"{entry['name']}_events_label.h5") as labels:
            poses = labels["XYZ/3d_poses"][:]
        missing = np.isnan(poses)
        assert missing.any()
        # A dropout removes all three coordinates of a joint, never a single one.
        np.testing.assert_array_equal(missing.any(axis=1), missing.all(axis=1))
        for dropout in entry["dropouts"]:
            joint = JOINT_NAMES.index(dropout["joint"])
            assert np.isnan(poses[dropout["start"]:dropout["start"] + dropout["labels"], 0, joint]).all()


def _segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points (E, 2) to the segment a-b."""
    ab = b - a
    s = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-9), 0.0, 1.0)
    return np.linalg.norm(points - a - s[:, None] * ab, axis=1)


def _events_and_skeletons(out: pathlib.Path, name: str) -> list:
    """(event pixel centres (E, 2), projected bone segments (B, 2, 2)) per label, channels 2 and 3.

    Events within 15 ms of every 7th label; joints projected with SPEC's rule u = p0/p2, v = 260 - p1/p2.
    """
    pairs = []
    with h5py.File(out / f"{name}_events.h5") as events, h5py.File(out / f"{name}_events_label.h5") as labels:
        poses = labels["XYZ/3d_poses"][:]
        for channel in (2, 3):
            projection = np.load(out / "P_matrices" / f"P{CHANNEL_TO_MATRIX[channel]}.npy")
            ms = events[f"cam{channel}_ms_to_idx"][:]
            x = events[f"cam{channel}_events/x"][:].astype(np.float64)
            y = events[f"cam{channel}_events/y"][:].astype(np.float64)
            for i in range(20, poses.shape[0] - 2, 7):
                joints = poses[i].T
                if np.isnan(joints).any():
                    continue
                uv = project_points(projection, joints)
                named = {n: uv[J[n]] for n in JOINT_NAMES}
                named["neck"] = 0.5 * (named["shoulderR"] + named["shoulderL"])
                named["pelvis"] = 0.5 * (named["hipR"] + named["hipL"])
                lo, hi = ms[10 * i - 15], ms[10 * i + 15]
                # Event pixel centres in sensor coordinates: 1-based address -> (x - 1 + 0.5, y - 1 + 0.5).
                points = np.stack([x[lo:hi] - 0.5, y[lo:hi] - 0.5], axis=1)
                pairs.append((points, np.array([[named[a], named[b]] for a, b in BONES])))
    return pairs


def _fraction_near(pairs: list, shift=(0.0, 0.0), radius: float = 20.0) -> float:
    """Fraction of events within ``radius`` px of the skeleton moved by ``shift`` (du, dv)."""
    near = total = 0
    for points, bones in pairs:
        moved = bones + np.asarray(shift)
        distance = np.min([_segment_distance(points, a, b) for a, b in moved], axis=0)
        near += int(np.sum(distance < radius))
        total += points.shape[0]
    return near / total


def test_events_lie_on_the_projected_skeleton(tiny):
    out, _ = tiny
    for name in _recordings(out):
        pairs = _events_and_skeletons(out, name)
        correct = _fraction_near(pairs)
        assert correct > 0.6, (name, correct)  # the rest is background noise and hot pixels
        # Moved 30 px diagonally the skeleton misses most events (any limb direction).
        shifted = np.mean([_fraction_near(pairs, shift) for shift in ((30, 30), (-30, 30), (30, -30), (-30, -30))])
        assert shifted < 0.7 * correct, (name, shifted, correct)
        # The best alignment is at zero offset: to 2 px across the body (left-right symmetric), to 6 px
        # vertically (the torso and feet capsules extend below the hip and foot joints).
        scores = {du: _fraction_near(pairs, (du, 0), radius=8.0) for du in range(-6, 7, 2)}
        assert abs(max(scores, key=scores.get)) <= 2, (name, scores)
        scores = {dv: _fraction_near(pairs, (0, dv), radius=8.0) for dv in range(-12, 13, 3)}
        assert abs(max(scores, key=scores.get)) <= 6, (name, scores)


def test_generation_is_deterministic(tmp_path):
    config = SyntheticConfig.preset("tiny", duration_s=0.5, seed=7)
    first = write_synthetic_dhp19(tmp_path / "a", config, progress=False)
    second = write_synthetic_dhp19(tmp_path / "b", config, progress=False, workers=2)  # same bytes in parallel
    other = write_synthetic_dhp19(tmp_path / "c", config, progress=False, seed=8)
    assert first["files"] == second["files"]
    for name in ["S1_session1_mov1_events.h5", "S1_session1_mov1_events_label.h5", "S13_session1_mov1_events.h5"]:
        with h5py.File(tmp_path / "a" / name) as a, h5py.File(tmp_path / "b" / name) as b:
            keys = _datasets(a)
            assert keys == _datasets(b)
            for key in keys:
                assert a[key][:].tobytes() == b[key][:].tobytes(), key
    for number in (1, 2, 3, 4):
        assert (np.load(tmp_path / "a" / "P_matrices" / f"P{number}.npy").tobytes()
                == np.load(tmp_path / "b" / "P_matrices" / f"P{number}.npy").tobytes())
    assert first["files"][0]["events_per_channel"] != other["files"][0]["events_per_channel"]


def test_crossing_events_closed_form():
    threshold = 0.1
    c = np.array([threshold])
    # Log intensity rises by 3.5 C in one step from the reference: 3 ON events at t0 + j / 3.5 * dt.
    pixel, t, polarity, ref, last = crossing_events(
        np.array([0.0]), np.array([3.5 * threshold]), np.array([0.0]), c, c, np.array([-np.inf]),
        t0=1000.0, dt=700.0, refractory=0.0)
    np.testing.assert_array_equal(pixel, [0, 0, 0])
    np.testing.assert_allclose(t, 1000.0 + 700.0 * np.array([1, 2, 3]) / 3.5)
    np.testing.assert_array_equal(polarity, [1, 1, 1])
    np.testing.assert_allclose(ref, [3 * threshold])
    np.testing.assert_allclose(last, [1600.0])
    # OFF: the reference sits 0.04 above L0; falling to -0.27 crosses ref - C, ref - 2C and ref - 3C.
    pixel, t, polarity, ref, _ = crossing_events(
        np.array([0.0]), np.array([-0.27]), np.array([0.04]), c, c, np.array([-np.inf]),
        t0=0.0, dt=1000.0, refractory=0.0)
    np.testing.assert_allclose(t, np.array([0.06, 0.16, 0.26]) / 0.27 * 1000.0)
    np.testing.assert_array_equal(polarity, [0, 0, 0])
    np.testing.assert_allclose(ref, [0.04 - 0.3])
    # Refractory 200 us with crossings every 1000 / 10.5 = 95.2 us: keep j = 1, 4, 7, 10.
    _, t, _, ref, last = crossing_events(
        np.array([0.0]), np.array([1.05]), np.array([0.0]), c, c, np.array([-np.inf]),
        t0=0.0, dt=1000.0, refractory=200.0)
    np.testing.assert_allclose(t, np.array([1, 4, 7, 10]) * 1000.0 / 10.5)
    np.testing.assert_allclose(ref, [1.0])  # the reference advances past dropped crossings
    # ... and with a previous event at t = -100 the first allowed crossing is j = 2 (t >= 100).
    _, t, _, _, last = crossing_events(
        np.array([0.0]), np.array([1.05]), np.array([0.0]), c, c, np.array([-100.0]),
        t0=0.0, dt=1000.0, refractory=200.0)
    np.testing.assert_allclose(t, np.array([2, 5, 8]) * 1000.0 / 10.5)
    np.testing.assert_allclose(last, [8 * 1000.0 / 10.5])


def _reference_simulation(logs, ref, c_on, c_off, dt, refractory):
    """Per-pixel, crossing-by-crossing loop (the definition) over a sequence of log-intensity frames."""
    events = []
    ref = ref.copy()
    last = np.full(ref.shape, -np.inf)
    for step in range(1, logs.shape[0]):
        for i in range(ref.size):
            l0, l1 = logs[step - 1, i], logs[step, i]
            while True:
                if l1 - ref[i] >= c_on[i]:
                    level, polarity, ref[i] = ref[i] + c_on[i], 1, ref[i] + c_on[i]
                elif ref[i] - l1 >= c_off[i]:
                    level, polarity, ref[i] = ref[i] - c_off[i], 0, ref[i] - c_off[i]
                else:
                    break
                t = (step - 1) * dt + (level - l0) / (l1 - l0) * dt
                if t - last[i] >= refractory - 1e-6:
                    events.append((t, i, polarity))
                    last[i] = t
    return sorted(events)


def test_event_simulator_matches_a_crossing_by_crossing_loop():
    rng = np.random.default_rng(3)
    params = DvsParams(threshold=0.15, threshold_sigma=0.03, refractory_us=300.0, log_eps=0.02)
    steps, shape = 40, (3, 5)
    grey = np.clip(0.5 + np.cumsum(rng.normal(0, 0.08, (steps,) + shape), axis=0), 0.02, 1.0)
    simulator = EventSimulator(grey[0], params, np.random.default_rng(0))
    ref0, c_on, c_off = simulator.ref.copy(), simulator.c_on.copy(), simulator.c_off.copy()
    for n in range(1, steps):
        simulator.step((n - 1) * 1000.0, 1000.0, (0, shape[0], 0, shape[1]), grey[n])
    pixel, t, polarity = simulator.events()
    got = sorted(zip(t.tolist(), pixel.tolist(), polarity.tolist(), strict=True))
    logs = np.log(grey + params.log_eps).reshape(steps, -1)
    expected = _reference_simulation(logs, ref0.ravel(), c_on.ravel(), c_off.ravel(), 1000.0, 300.0)
    assert len(got) == len(expected) > 100
    np.testing.assert_allclose([e[0] for e in got], [e[0] for e in expected], rtol=0, atol=1e-6)
    assert [e[1:] for e in got] == [e[1:] for e in expected]


def test_noise_has_hot_pixels_and_background_rate():
    params = DvsParams(background_rate_hz=0.1, hot_pixels=3, hot_pixel_rate_hz=(200.0, 300.0))
    pixel, t, polarity = noise_events(np.random.default_rng(1), params, 2e6, (260, 346))
    counts = np.bincount(pixel, minlength=260 * 346)
    hot = np.sort(counts)[-3:]
    assert np.all(hot >= 300) and np.sort(counts)[-4] < 10
    background = counts.sum() - hot.sum()
    assert abs(background - 0.1 * 2 * 260 * 346) < 5 * math.sqrt(0.1 * 2 * 260 * 346)
    assert t.min() >= 0 and t.max() < 2e6 and set(np.unique(polarity)) == {0, 1}


def test_limb_directions_and_segment_lengths():
    d = limb_direction(np.array([0.0, 90.0, 180.0, 0.0]), np.array([0.0, 0.0, 0.0, 90.0]), side=-1.0)
    np.testing.assert_allclose(d, [[0, 0, -1], [0, -1, 0], [0, 0, 1], [1, 0, 0]], atol=1e-12)
    rng = np.random.default_rng(0)
    body = sample_proportions(rng)
    t = np.linspace(0.0, 3.0, 301)
    for name in MOTION_NAMES:
        joints = forward_kinematics(body, motion_channels(name, sample_motion(name, rng), t), t.size)
        for a, b, length in (("shoulderR", "elbowR", body.upper_arm), ("elbowL", "handL", body.forearm),
                             ("hipR", "kneeR", body.thigh), ("kneeL", "footL", body.shin)):
            np.testing.assert_allclose(np.linalg.norm(joints[:, J[a]] - joints[:, J[b]], axis=1), length)
        np.testing.assert_allclose(np.linalg.norm(joints[:, J["hipR"]] - joints[:, J["hipL"]], axis=1),
                                   2 * body.hip_half_width)
        lowest = np.minimum(joints[:, J["footR"], 2], joints[:, J["footL"], 2])
        assert np.all(lowest >= body.ankle_height - 1e-9), name
        # Facing +x: the left shoulder is at larger y than the right one (up to the sway yaw).
        assert np.all(joints[:, J["shoulderL"], 1] > joints[:, J["shoulderR"], 1]), name


def test_every_motion_stays_inside_the_crop_of_channels_2_and_3():
    for seed in range(3):
        rig = dhp19_like_rig(np.random.default_rng(seed))
        rng = np.random.default_rng(100 + seed)
        t = np.linspace(0.0, 4.0, 201)
        for name in MOTION_NAMES:
            body = sample_proportions(rng, height_range=(1900.0, 1920.0))  # tall subjects are the hard case
            joints = forward_kinematics(body, motion_channels(name, sample_motion(name, rng), t), t.size,
                                        root_xy=(120.0, -120.0), base_yaw_deg=12.0)
            for channel in (2, 3):
                uv = project_points(rig[CHANNEL_TO_MATRIX[channel]].projection, joints)
                assert uv[..., 0].min() >= 34 + 5 and uv[..., 0].max() < 290 - 5, (seed, name, channel)
                assert uv[..., 1].min() >= 2 + 5 and uv[..., 1].max() < 258 - 5, (seed, name, channel)


def test_camera_matrices_follow_the_release_convention():
    rig = dhp19_like_rig(np.random.default_rng(0))
    for camera in rig.values():
        projection = camera.projection
        np.testing.assert_allclose(projection @ np.append(camera.centre, 1.0), 0.0, atol=1e-6)
        assert np.linalg.det(camera.rotation) == pytest.approx(-1.0)
        # A point above the optical axis appears higher in the image (smaller row v).
        forward, up = camera.rotation[2], camera.rotation[1]
        centre_uv = project_points(projection, camera.centre + 3000 * forward)
        above_uv = project_points(projection, camera.centre + 3000 * forward + 300 * up)
        assert above_uv[1] < centre_uv[1] - 20
    # P2 and P3 (channels 3 and 2) look at the subject's front, which faces +x.
    assert rig[2].centre[0] > 0 and rig[3].centre[0] > 0 and rig[1].centre[0] < 0 and rig[4].centre[0] < 0


def test_config_rejects_wrong_splits():
    with pytest.raises(ValueError, match="train_subjects"):
        SyntheticConfig(train_subjects=(13,)).validate()
    with pytest.raises(ValueError, match="test_subjects"):
        SyntheticConfig(test_subjects=(2,)).validate()
    with pytest.raises(ValueError, match="unknown synthetic preset"):
        SyntheticConfig.preset("huge")


def test_the_dhp19_loader_reads_the_synthetic_dataset(tiny):
    from hybridjax.data.dhp19 import DHP19Config, DHP19Dataset

    out, _ = tiny
    for split in ("train", "test"):
        dataset = DHP19Dataset(out, split=split, config=DHP19Config(cameras=(2, 3), validate="full"))
        assert dataset.skipped == [] and len(dataset) >= 6
        item = dataset[len(dataset) // 2]
        landmarks = item["landmarks"][0]
        visible = landmarks[~np.isnan(landmarks).any(axis=1)]
        assert visible.shape[0] >= 10  # the body is inside the 256 x 256 crop
        counts = item["events"].sum(axis=(0, 3))
        rows, cols = np.mgrid[:256, :256]
        distance = np.min(np.hypot(cols[..., None] + 0.5 - visible[:, 0], rows[..., None] + 0.5 - visible[:, 1]), -1)
        assert counts.sum() > 500
        assert counts[distance < 25].sum() > 0.6 * counts.sum()


def test_ensure_generates_once_replaces_outdated_and_refuses_foreign_folders(tmp_path):
    config = SyntheticConfig.preset("tiny", test_subjects=(), duration_s=0.5)
    root = ensure_synthetic_dhp19(tmp_path / "data", config, progress=False)
    stamp = (root / "S1_session1_mov1_events.h5").stat().st_mtime_ns
    assert ensure_synthetic_dhp19(tmp_path / "data", config, progress=False) == root
    assert (root / "S1_session1_mov1_events.h5").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert not (tmp_path / "data.partial").exists()
    with pytest.raises(FileExistsError, match="holds recordings this config does not write"):
        write_synthetic_dhp19(tmp_path / "data", config, progress=False, train_subjects=(2,))
    # An outdated synthetic dataset (another seed) is replaced as a whole.
    ensure_synthetic_dhp19(tmp_path / "data", config, progress=False, train_subjects=(2,))
    assert sorted(p.name for p in root.glob("*.h5")) == ["S2_session1_mov1_events.h5",
                                                         "S2_session1_mov1_events_label.h5"]
    assert not (tmp_path / "data.outdated").exists()
    # A folder with anything else in it is never touched.
    (root / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not the requested synthetic dataset"):
        ensure_synthetic_dhp19(tmp_path / "data", config, progress=False, seed=5)
    assert (root / "notes.txt").read_text() == "mine"


def test_chunked_steps_equal_single_steps():
    rng = np.random.default_rng(5)
    params = DvsParams(threshold=0.2, refractory_us=150.0)
    grey = np.clip(0.5 + np.cumsum(rng.normal(0, 0.05, (25, 12, 9)), axis=0), 0.02, 1.0).astype(np.float32)
    single = EventSimulator(grey[0], params, np.random.default_rng(1))
    chunked = EventSimulator(grey[0], params, np.random.default_rng(1))
    region = (2, 10, 1, 8)
    for n in range(1, 25):
        single.step((n - 1) * 500.0, 500.0, region, grey[n, 2:10, 1:8])
    for start in range(1, 25, 8):
        chunked.step_many((start - 1) * 500.0, 500.0, region, chunked.log(grey[start:start + 8, 2:10, 1:8]))
    def sorted_events(simulator):
        pixel, t, polarity = simulator.events()
        order = np.lexsort((pixel, t))  # by time, then pixel
        return pixel[order], t[order], polarity[order]

    got_single, got_chunked = sorted_events(single), sorted_events(chunked)
    assert got_single[0].size > 50
    for a, b in zip(got_single, got_chunked, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(single.ref, chunked.ref)
    np.testing.assert_array_equal(single.last_t, chunked.last_t)


def test_default_preset_covers_the_movement_library():
    from hybridjax.data.synthetic.writer import _motion_index

    config = SyntheticConfig.preset("default")
    train = {config.motions[_motion_index(config, s, r)] for s in config.train_subjects for r in range(3)}
    test = [config.motions[_motion_index(config, s, r)] for s in config.test_subjects for r in range(3)]
    assert train == set(MOTION_NAMES) and len(MOTION_NAMES) == 10
    assert len(set(test)) == 6  # six different movements in the six test recordings


def test_each_movement_does_what_its_name_says():
    rng = np.random.default_rng(11)
    body = sample_proportions(rng, height_range=(1750.0, 1750.0))
    t = np.linspace(0.0, 6.0, 601)  # at least two repetitions of the slowest movement
    rest = forward_kinematics(body, {}, 1)[0]

    def run(name):
        sample = dataclasses.replace(sample_motion(name, rng), amplitude=1.0, side=1)
        joints = forward_kinematics(body, motion_channels(name, sample, t), t.size)
        return {n: joints[:, J[n]] for n in JOINT_NAMES}

    up = run("arm_abduction")
    assert up["handL"][:, 2].max() > rest[J["head"], 2] - 50  # hand raised to head height
    squat = run("squats")
    assert squat["hipR"][:, 2].min() < rest[J["hipR"], 2] - 250
    jacks = run("jumping_jacks")
    assert np.minimum(jacks["footR"][:, 2], jacks["footL"][:, 2]).max() > body.ankle_height + 50  # airborne
    assert jacks["handR"][:, 2].max() > rest[J["head"], 2]
    assert (jacks["footL"][:, 1] - jacks["footR"][:, 1]).max() > rest[J["footL"], 1] - rest[J["footR"], 1] + 150
    kick = run("kicks")
    assert np.maximum(kick["footR"][:, 2], kick["footL"][:, 2]).max() > 450
    march = run("walking_in_place")
    assert march["kneeR"][:, 2].max() > rest[J["kneeR"], 2] + 150
    punch = run("punches")
    reach = punch["handR"][:, 0] - punch["shoulderR"][:, 0]
    assert reach.max() > 0.8 * (body.upper_arm + body.forearm) and reach.min() < 0.5 * reach.max()
    circles = run("arm_circles")
    assert np.all(np.abs(circles["handL"][:, 2] - circles["shoulderL"][:, 2]) < body.upper_arm + body.forearm)
    assert np.ptp(circles["handL"][:, 2]) > 300 and np.ptp(circles["handL"][:, 0]) > 100  # a circle
    wave = run("wave")
    assert np.all(wave["handL"][:, 2] > rest[J["head"], 2]) and np.ptp(wave["handL"][:, 1]) > 150
    legs = run("leg_abduction")
    assert (legs["footL"][:, 1] - legs["footR"][:, 1]).max() > rest[J["footL"], 1] - rest[J["footR"], 1] + 250
    bends = run("side_bends")
    assert np.ptp(bends["head"][:, 1]) > 300
