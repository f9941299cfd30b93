"""Triangulation: synthetic cameras K[R|t], the SPEC projection rule, the closed-form ray intersection."""
import numpy as np
import pytest

from hybridjax.eval import triangulation as tri


def _look_at_camera(centre, target, focal=300.0, principal=(173.0, 130.0)):
    """P = K [R | -R c] for a camera at ``centre`` looking at ``target`` (rows of R: right, down, forward)."""
    centre = np.asarray(centre, float)
    forward = np.asarray(target, float) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rotation = np.stack([right, down, forward])
    k = np.array([[focal, 0, principal[0]], [0, focal, principal[1]], [0, 0, 1.0]])
    return k @ np.concatenate([rotation, (-rotation @ centre)[:, None]], axis=1)


def _rig():
    centres = np.array([[3000.0, 0.0, 1000.0], [0.0, 3000.0, 1200.0], [-2500.0, -1500.0, 900.0]])
    target = np.array([0.0, 0.0, 1000.0])
    return np.stack([_look_at_camera(c, target) for c in centres]), centres


def test_crop_sensor_round_trip_and_offsets():
    uv = np.array([[0.0, 0.0], [10.5, 20.25]])
    np.testing.assert_array_equal(tri.crop_to_sensor(uv), [[34.0, 258.0], [44.5, 237.75]])
    np.testing.assert_allclose(tri.sensor_to_crop(tri.crop_to_sensor(uv)), uv)


def test_noise_free_triangulation_recovers_points_to_1e6_mm():
    projections, centres = _rig()
    rng = np.random.default_rng(0)
    points = rng.uniform([-400, -400, 200], [400, 400, 1800], size=(5, 4, 13, 3))  # [T, B, J, 3]
    uv = np.stack([tri.project_to_crop(points, p, mask_outside=False) for p in projections])
    assert np.isfinite(uv).all()
    for cams in ([0, 1], [1, 2], [0, 1, 2]):
        recovered = tri.triangulate(uv[cams], projections[cams], centres[cams])
        assert recovered.shape == points.shape
        np.testing.assert_allclose(recovered, points, atol=1e-6, rtol=0)
        assert tri.mpjpe_3d(recovered, points) < 1e-6


def test_projection_matches_spec_formula_by_hand():
    projections, _ = _rig()
    point = np.array([120.0, -80.0, 1100.0])
    p = projections[0] @ np.append(point, 1.0)
    expected = [p[0] / p[2] - 34, 260 - p[1] / p[2] - 2]
    np.testing.assert_allclose(tri.project_to_crop(point, projections[0], mask_outside=False), expected)
    np.testing.assert_array_equal(
        tri.project_to_crop(point, projections[0], truncate=True, mask_outside=False), np.trunc(expected)
    )


def test_intersection_closed_form_two_skew_lines():
    # Line 1: the x axis. Line 2: parallel to y through (0, 0, 2). Closest points (0,0,0) and (0,0,2).
    origins = np.array([[5.0, 0.0, 0.0], [0.0, -3.0, 2.0]])
    directions = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    np.testing.assert_allclose(tri.intersect_rays(origins, directions), [0.0, 0.0, 1.0], atol=1e-12)


def test_nan_handling():
    projections, centres = _rig()
    point = np.array([[100.0, 50.0, 900.0], [0.0, 0.0, 1000.0]])
    uv = np.stack([tri.project_to_crop(point, p, mask_outside=False) for p in projections])
    uv[0, 0] = np.nan  # joint 0 missing in camera 0: still seen by cameras 1 and 2
    uv[1, 1] = np.nan
    uv[2, 1] = np.nan  # joint 1 seen only by camera 0: NaN
    result = tri.triangulate(uv, projections, centres)
    np.testing.assert_allclose(result[0], point[0], atol=1e-6)
    assert np.isnan(result[1]).all()
    # Parallel rays (same camera twice) cannot be intersected.
    twice = tri.triangulate(uv[[0, 0]], projections[[0, 0]], centres[[0, 0]])
    assert np.isnan(twice[1]).all()
    # mpjpe_3d ignores NaN joints; all-NaN gives NaN.
    truth = point + np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    assert tri.mpjpe_3d(result, truth) == pytest.approx(5.0, abs=1e-6)
    assert np.isnan(tri.mpjpe_3d(np.full((2, 3), np.nan), truth))


def test_masking_outside_the_crop():
    projections, _ = _rig()
    far_off = np.array([5000.0, -4000.0, 1000.0])
    assert np.isnan(tri.project_to_crop(far_off, projections[0])).all()


def test_bad_shapes_raise_clear_errors():
    projections, centres = _rig()
    with pytest.raises(ValueError, match="camera_positions"):
        tri.triangulate(np.zeros((3, 2)), projections, centres[:2])
    with pytest.raises(ValueError, match="uv_crop_per_camera"):
        tri.triangulate(np.zeros((2, 5, 2)), projections, centres)


def test_fixture_cameras_channels_2_and_3(shared_dir):
    """Real DHP19 geometry: labels projected (truncated to int) and triangulated back: pixel-level error."""
    folder = shared_dir / "fixtures" / "dhp19_mini" / "P_matrices"
    # Camera channel 2 -> P3, channel 3 -> P2 (SPEC section 4); positions are rows of camera_positions.npy.
    projections = np.stack([np.load(folder / "P3.npy"), np.load(folder / "P2.npy")])
    centres = np.load(folder / "camera_positions.npy")[[2, 1]]
    expected = np.load(shared_dir / "fixtures" / "dhp19_mini_expected.npz")
    joints = np.moveaxis(expected["snn_test_0_label_3d"], -1, -2)  # (T, 3, 13) -> (T, 13, 3)
    uv = np.stack([tri.project_to_crop(joints, p, truncate=True) for p in projections])
    # Channel 3's truncated landmarks are what the official loader returned.
    np.testing.assert_array_equal(uv[1], np.moveaxis(expected["snn_test_0_landmarks"], 0, -1))
    recovered = tri.triangulate(uv + 0.5, projections, centres)  # pixel centres
    errors = tri.joint_errors_3d(recovered, joints)
    assert np.isfinite(errors).any()
    assert np.nanmax(errors) < 30.0  # one pixel is ~10 mm at ~3 m with this focal length


def test_projection_agrees_with_the_data_loader():
    """project_to_crop(truncate=True) is the label rule of hybridjax.data.dhp19.project_joints."""
    from hybridjax.data.dhp19 import project_joints

    projections, _ = _rig()
    rng = np.random.default_rng(4)
    points = rng.uniform([-900, -900, 0], [900, 900, 2000], size=(50, 13, 3))
    points[3, 2] = np.nan
    for p in projections:
        np.testing.assert_array_equal(tri.project_to_crop(points, p, truncate=True), project_joints(points, p))
