"""Pinhole cameras with the DHP19 projection convention and a DHP19-like four-camera rig.

A DHP19 P matrix maps a world point (mm) to ``p = P [X; 1]`` with sensor column ``u = p0 / p2`` and sensor
row ``v = 260 - p1 / p2`` (SPEC section 4): the second image axis of P points *up*. We therefore build

    P = K [R | -R C],   K = [[f, 0, cx], [0, f, cy], [0, 0, 1]],   R = [right; up; forward]

where C is the camera centre, ``forward`` the unit optical axis, ``right = forward x z`` and
``up = right x forward``; R has determinant -1 (a reflection), exactly like the released matrices, because
rows grow downwards while ``up`` grows upwards. Pixel column j covers ``u in [j, j + 1)`` and row i covers
``v in [i, i + 1)``, so the 1-based event address of a point is ``(x, y) = (floor(u) + 1, floor(v) + 1)``.

Camera channel c of the h5 files uses matrix ``P{CHANNEL_TO_MATRIX[c]}`` (0 -> P4, 1 -> P1, 2 -> P3,
3 -> P2). As in the release, P2 and P3 look at the subject's front (it faces +x), P1 and P4 from behind.
"""
from __future__ import annotations

import dataclasses

import numpy as np

SENSOR_WIDTH = 346
SENSOR_HEIGHT = 260
CHANNEL_TO_MATRIX = (4, 1, 3, 2)


@dataclasses.dataclass(frozen=True)
class Camera:
    """One calibrated DAVIS346 (all lengths in mm, all pixel quantities in sensor pixels)."""

    intrinsics: np.ndarray  # K, 3x3
    rotation: np.ndarray  # R, 3x3, rows = right, up, forward (det -1)
    centre: np.ndarray  # C, camera centre in world coordinates, (3,)

    @property
    def projection(self) -> np.ndarray:
        """P = K [R | -R C], 3x4 float64."""
        return self.intrinsics @ np.concatenate([self.rotation, -(self.rotation @ self.centre)[:, None]], 1)

    @property
    def focal(self) -> float:
        return float(self.intrinsics[0, 0])

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Distance along the optical axis of world points ``(..., 3)``."""
        return (points - self.centre) @ self.rotation[2]

    def project(self, points: np.ndarray) -> np.ndarray:
        """Sensor (u, v) of world points ``(..., 3)`` with the DHP19 rule; returns ``(..., 2)``."""
        return project_points(self.projection, points)


def project_points(projection: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``u = p0 / p2``, ``v = 260 - p1 / p2`` with ``p = P [X; 1]`` (SPEC section 4), shape ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    p = points @ projection[:, :3].T + projection[:, 3]
    return np.stack([p[..., 0] / p[..., 2], SENSOR_HEIGHT - p[..., 1] / p[..., 2]], axis=-1)


def look_at(centre, target, focal: float, principal=(SENSOR_WIDTH / 2, SENSOR_HEIGHT / 2), roll_deg=0.0) -> Camera:
    """A camera at ``centre`` whose optical axis passes through ``target``, rolled by ``roll_deg``."""
    centre = np.asarray(centre, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - centre
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    roll = np.deg2rad(roll_deg)
    right, up = np.cos(roll) * right + np.sin(roll) * up, -np.sin(roll) * right + np.cos(roll) * up
    intrinsics = np.array([[focal, 0.0, principal[0]], [0.0, focal, principal[1]], [0.0, 0.0, 1.0]])
    return Camera(intrinsics=intrinsics, rotation=np.stack([right, up, forward]), centre=centre)


def dhp19_like_rig(rng: np.random.Generator) -> dict:
    """Four cameras ``{matrix number 1..4: Camera}`` around a subject standing at the origin facing +x.

    Cameras stand 3.2-3.6 m from the subject's vertical axis at 1.0-1.5 m height, P2/P3 at azimuth
    +-(30..42) deg in front, P1/P4 at 180 -+(28..40) deg behind, all aimed at ~0.95 m height with
    a focal length of ~280 px (a 4.5-5 mm lens on 18.5 um pixels) and up to 2 degrees of roll.
    """
    azimuths = {
        1: 180.0 - rng.uniform(28.0, 40.0), 2: rng.uniform(30.0, 42.0),
        3: -rng.uniform(30.0, 42.0), 4: -180.0 + rng.uniform(28.0, 40.0),
    }
    cameras = {}
    for number in (1, 2, 3, 4):
        azimuth = np.deg2rad(azimuths[number])
        radius = rng.uniform(3200.0, 3600.0)
        centre = np.array([radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(1000.0, 1500.0)])
        target = np.array([rng.uniform(-80.0, 80.0), rng.uniform(-80.0, 80.0), rng.uniform(900.0, 1000.0)])
        principal = (SENSOR_WIDTH / 2 + rng.uniform(-4.0, 4.0), SENSOR_HEIGHT / 2 + rng.uniform(-4.0, 4.0))
        cameras[number] = look_at(centre, target, focal=float(rng.uniform(270.0, 290.0)), principal=principal,
                                  roll_deg=float(rng.uniform(-2.0, 2.0)))
    return cameras
