"""3-D pose from two or more cameras: crop <-> sensor pixels, projection, back-projection, ray intersection.

Conventions (SPEC section 4). A 3-D joint ``X`` (millimetres) projects with the 3x4 matrix ``P`` as

    p = P @ [X; 1],   u_sensor = p0 / p2,   w_sensor = p1 / p2,   v_sensor = 260 - w_sensor

and the 256x256 crop keeps sensor rows 2..257 and columns 34..289, so

    u_crop = u_sensor - 34,  v_crop = v_sensor - 2
    <=>  u_sensor = u_crop + 34,  w_sensor = 260 - (v_crop + 2).

Back-projection: ``pinv(P) @ [u_sensor, w_sensor, 1]`` is a homogeneous point ``X_h`` with ``P X_h = x``,
i.e. a point on the viewing ray of that pixel. The ray starts at the camera centre ``c``
(``camera_positions.npy``) and points along ``d ~ X_h[:3] - X_h[3] c`` (= ``X_h[3] (X - c)`` with
``X = X_h[:3] / X_h[3]``; this form stays finite when ``X_h[3]`` is close to zero).

Intersection: the point minimising the summed squared distance to N >= 2 lines ``(c_i, d_i)`` (unit d_i)
solves

    sum_i (I - d_i d_i^T) X = sum_i (I - d_i d_i^T) c_i,

a 3x3 linear system, closed form. All functions are numpy float64, vectorised over leading axes and NaN-aware:
a ray whose pixel is NaN is left out, and a point seen by fewer than two valid, non-parallel rays is NaN.
"""
from __future__ import annotations

import numpy as np

# Sensor height in pixels (rows); the v axis of the projection rule is flipped against it.
SENSOR_HEIGHT = 260
# Sensor width in pixels (columns).
SENSOR_WIDTH = 346
# First sensor column kept by the 256x256 crop.
CROP_COLUMN_OFFSET = 34
# First sensor row kept by the 256x256 crop.
CROP_ROW_OFFSET = 2
# Side of the square crop in pixels.
CROP_SIZE = 256
# Relative size of the smallest eigenvalue of the normal matrix below which the rays count as parallel.
PARALLEL_TOLERANCE = 1e-12


def _check_matrices(projection_matrices, camera_positions) -> tuple[np.ndarray, np.ndarray]:
    projection_matrices = np.asarray(projection_matrices, dtype=np.float64)
    camera_positions = np.asarray(camera_positions, dtype=np.float64)
    if projection_matrices.ndim != 3 or projection_matrices.shape[1:] != (3, 4):
        raise ValueError(
            f"projection_matrices: expected [num_cameras, 3, 4], got shape {projection_matrices.shape}"
        )
    if camera_positions.shape != (projection_matrices.shape[0], 3):
        raise ValueError(
            f"camera_positions: expected [{projection_matrices.shape[0]}, 3] (one centre per projection "
            f"matrix), got shape {camera_positions.shape}"
        )
    return projection_matrices, camera_positions


def crop_to_sensor(uv_crop) -> np.ndarray:
    """(u, v) of the 256 crop -> (u_sensor, w_sensor) = (u + 34, 260 - (v + 2)), the pixel that P produces."""
    uv_crop = np.asarray(uv_crop, dtype=np.float64)
    if uv_crop.shape[-1] != 2:
        raise ValueError(f"uv_crop: expected a last axis of 2 (u, v), got shape {uv_crop.shape}")
    u_sensor = uv_crop[..., 0] + CROP_COLUMN_OFFSET
    w_sensor = SENSOR_HEIGHT - (uv_crop[..., 1] + CROP_ROW_OFFSET)
    return np.stack([u_sensor, w_sensor], axis=-1)


def sensor_to_crop(uw_sensor) -> np.ndarray:
    """Inverse of :func:`crop_to_sensor`: (u_sensor, w_sensor) -> (u_sensor - 34, 260 - w_sensor - 2)."""
    uw_sensor = np.asarray(uw_sensor, dtype=np.float64)
    if uw_sensor.shape[-1] != 2:
        raise ValueError(f"uw_sensor: expected a last axis of 2, got shape {uw_sensor.shape}")
    u_crop = uw_sensor[..., 0] - CROP_COLUMN_OFFSET
    v_crop = SENSOR_HEIGHT - uw_sensor[..., 1] - CROP_ROW_OFFSET
    return np.stack([u_crop, v_crop], axis=-1)


def project_to_crop(
    points_3d, projection_matrix, truncate: bool = False, mask_outside: bool = True
) -> np.ndarray:
    """Projects 3-D points ``[..., 3]`` (mm) into (u, v) crop pixels ``[..., 2]`` with the SPEC rule.

    ``truncate=True`` reproduces the label pipeline (integer pixels after the crop shift);
    ``mask_outside=True`` gives NaN for points whose sensor pixel lies outside the crop
    (u_sensor outside [34, 290) or v_sensor outside [2, 258)) and for NaN input.
    """
    points_3d = np.asarray(points_3d, dtype=np.float64)
    projection_matrix = np.asarray(projection_matrix, dtype=np.float64)
    if points_3d.shape[-1] != 3:
        raise ValueError(f"points_3d: expected a last axis of 3 (X, Y, Z), got shape {points_3d.shape}")
    if projection_matrix.shape != (3, 4):
        raise ValueError(f"projection_matrix: expected [3, 4], got shape {projection_matrix.shape}")
    homogeneous = points_3d @ projection_matrix[:, :3].T + projection_matrix[:, 3]
    u_sensor = homogeneous[..., 0] / homogeneous[..., 2]
    v_sensor = SENSOR_HEIGHT - homogeneous[..., 1] / homogeneous[..., 2]
    outside = ~(np.isfinite(u_sensor) & np.isfinite(v_sensor))
    if mask_outside:
        outside |= (u_sensor < CROP_COLUMN_OFFSET) | (u_sensor >= CROP_COLUMN_OFFSET + CROP_SIZE)
        outside |= (v_sensor < CROP_ROW_OFFSET) | (v_sensor >= CROP_ROW_OFFSET + CROP_SIZE)
    uv = np.stack([u_sensor - CROP_COLUMN_OFFSET, v_sensor - CROP_ROW_OFFSET], axis=-1)
    if truncate:
        uv = np.trunc(uv)
    uv[outside] = np.nan
    return uv


def back_project(uv_crop, projection_matrix, camera_position) -> tuple[np.ndarray, np.ndarray]:
    """Viewing rays of crop pixels ``[..., 2]``: returns (origins ``[..., 3]``, unit directions ``[..., 3]``).

    Directions are NaN where the pixel is NaN; origins are the camera centre everywhere.
    """
    projection_matrix = np.asarray(projection_matrix, dtype=np.float64)
    camera_position = np.asarray(camera_position, dtype=np.float64)
    if projection_matrix.shape != (3, 4):
        raise ValueError(f"projection_matrix: expected [3, 4], got shape {projection_matrix.shape}")
    if camera_position.shape != (3,):
        raise ValueError(f"camera_position: expected [3], got shape {camera_position.shape}")
    uw = crop_to_sensor(uv_crop)
    pixel = np.concatenate([uw, np.ones(uw.shape[:-1] + (1,))], axis=-1)
    point_h = pixel @ np.linalg.pinv(projection_matrix).T  # [..., 4]
    direction = point_h[..., :3] - point_h[..., 3:4] * camera_position
    direction = direction / np.linalg.norm(direction, axis=-1, keepdims=True)
    origin = np.broadcast_to(camera_position, direction.shape).copy()
    return origin, direction


def intersect_rays(origins, directions) -> np.ndarray:
    """Least-squares intersection of N lines: origins, unit directions ``[..., N, 3]`` -> points ``[..., 3]``.

    Solves ``sum_i (I - d_i d_i^T) X = sum_i (I - d_i d_i^T) o_i``. Rays with any NaN are ignored; the result
    is NaN where fewer than two valid rays remain or they are (numerically) parallel.
    """
    origins = np.asarray(origins, dtype=np.float64)
    directions = np.asarray(directions, dtype=np.float64)
    if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.ndim < 2:
        raise ValueError(
            "origins / directions: expected equal shapes [..., N, 3], "
            f"got {origins.shape} and {directions.shape}"
        )
    valid = np.all(np.isfinite(directions), axis=-1) & np.all(np.isfinite(origins), axis=-1)  # [..., N]
    d = np.where(valid[..., None], directions, 0.0)
    o = np.where(valid[..., None], origins, 0.0)
    eye = np.eye(3)
    # Projector onto the plane orthogonal to each ray; invalid rays contribute zero.
    projector = valid[..., None, None] * (eye - d[..., :, None] * d[..., None, :])  # [..., N, 3, 3]
    normal = projector.sum(axis=-3)  # [..., 3, 3]
    rhs = np.einsum("...nij,...nj->...i", projector, o)  # [..., 3]
    smallest = np.linalg.eigvalsh(normal)[..., 0]
    scale = np.maximum(np.trace(normal, axis1=-2, axis2=-1), 1.0)
    solvable = (valid.sum(axis=-1) >= 2) & (smallest > PARALLEL_TOLERANCE * scale)
    safe_normal = np.where(solvable[..., None, None], normal, eye)
    points = np.linalg.solve(safe_normal, rhs[..., None])[..., 0]
    return np.where(solvable[..., None], points, np.nan)


def triangulate(uv_crop_per_camera, projection_matrices, camera_positions) -> np.ndarray:
    """3-D points from crop pixels of several cameras.

    Args:
      uv_crop_per_camera: ``[num_cameras, ..., 2]`` (u, v) crop pixels per camera, NaN where missing
        (e.g. ``[2, T, B, J, 2]``).
      projection_matrices: ``[num_cameras, 3, 4]`` (the P of each camera, in the same order).
      camera_positions: ``[num_cameras, 3]`` camera centres in mm.
    Returns:
      ``[..., 3]`` points in mm, NaN where fewer than two cameras see the joint.
    """
    projection_matrices, camera_positions = _check_matrices(projection_matrices, camera_positions)
    uv = np.asarray(uv_crop_per_camera, dtype=np.float64)
    if uv.ndim < 2 or uv.shape[0] != projection_matrices.shape[0] or uv.shape[-1] != 2:
        raise ValueError(
            f"uv_crop_per_camera: expected [{projection_matrices.shape[0]}, ..., 2] (one entry per camera), "
            f"got shape {uv.shape}"
        )
    rays = [back_project(uv[i], projection_matrices[i], camera_positions[i]) for i in range(uv.shape[0])]
    origins = np.stack([origin for origin, _ in rays], axis=-2)
    directions = np.stack([direction for _, direction in rays], axis=-2)
    return intersect_rays(origins, directions)


def mpjpe_3d(pred_xyz, true_xyz) -> float:
    """Mean per-joint position error in mm over joints where both points are finite (NaN if none are)."""
    errors = joint_errors_3d(pred_xyz, true_xyz)
    valid = np.isfinite(errors)
    return float(errors[valid].mean()) if valid.any() else float("nan")


def joint_errors_3d(pred_xyz, true_xyz) -> np.ndarray:
    """Euclidean error per joint ``[...]`` in mm; NaN where either point has a NaN coordinate."""
    pred_xyz = np.asarray(pred_xyz, dtype=np.float64)
    true_xyz = np.asarray(true_xyz, dtype=np.float64)
    if pred_xyz.shape != true_xyz.shape or pred_xyz.shape[-1] != 3:
        raise ValueError(
            f"pred_xyz / true_xyz: expected equal shapes [..., 3], got {pred_xyz.shape}, {true_xyz.shape}"
        )
    return np.linalg.norm(pred_xyz - true_xyz, axis=-1)
