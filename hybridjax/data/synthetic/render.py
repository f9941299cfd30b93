"""A cheap grey-level renderer: a textured static background and the body as shaded, textured capsules.

Each body part of :data:`.body.PRIMITIVES` is a capsule (a sphere when both ends coincide) between two
projected points ``A``, ``B`` with a pixel radius ``r = r_mm f / depth``. For a pixel centre ``q`` the
capsule's distance field is

    s = clip(<q - A, B - A> / |B - A|^2, 0, 1),   d = |q - A - s (B - A)|

and the part covers the pixel with anti-aliased coverage ``clip(r + 0.5 - d, 0, 1)``. Its grey level is
``albedo * (0.6 + 0.4 sqrt(1 - (d/r)^2)) * (1 + 0.3 sin(2 pi n s + phase))``: cylinder-like shading plus
stripes that travel with the limb (``n`` stripes per segment), so the inside of a moving limb produces
events as well as its outline. Parts are painted far to near (painter's algorithm on the mean depth).

Only the pixels inside each part's bounding box, intersected with the requested region, are touched, which
keeps a 1-2 ms time step affordable; the DVS simulator asks for the union of the body's bounding boxes of
two consecutive frames (outside it nothing changes).
"""
from __future__ import annotations

import numpy as np

from .body import PRIMITIVES, BodyProportions, primitive_points
from .cameras import SENSOR_HEIGHT, SENSOR_WIDTH, Camera


def _smooth_noise(rng: np.random.Generator, cells: tuple, shape: tuple) -> np.ndarray:
    """Bilinearly upsampled uniform noise on a ``cells`` grid, in [0, 1], of the given shape."""
    grid = rng.uniform(0.0, 1.0, (cells[0] + 1, cells[1] + 1))
    rows = np.linspace(0.0, cells[0], shape[0], endpoint=False) + 0.5 * cells[0] / shape[0]
    cols = np.linspace(0.0, cells[1], shape[1], endpoint=False) + 0.5 * cells[1] / shape[1]
    r0 = np.floor(rows).astype(int)
    c0 = np.floor(cols).astype(int)
    fr = (rows - r0)[:, None]
    fc = (cols - c0)[None, :]
    return ((1 - fr) * (1 - fc) * grid[r0][:, c0] + (1 - fr) * fc * grid[r0][:, c0 + 1]
            + fr * (1 - fc) * grid[r0 + 1][:, c0] + fr * fc * grid[r0 + 1][:, c0 + 1])


def make_background(rng: np.random.Generator, shape=(SENSOR_HEIGHT, SENSOR_WIDTH)) -> np.ndarray:
    """A static lab-like scene in [0.1, 0.9]: wall with smooth blotches, a floor band, a few panels."""
    height, width = shape
    image = 0.45 + 0.18 * (_smooth_noise(rng, (4, 5), shape) - 0.5) + 0.10 * (_smooth_noise(rng, (18, 24), shape) - 0.5)
    horizon = int(rng.uniform(0.62, 0.75) * height)
    image[horizon:] = 0.33 + 0.08 * (_smooth_noise(rng, (6, 40), (height - horizon, width)) - 0.5)
    for _ in range(int(rng.integers(3, 7))):  # doors, boards, cupboards
        r0 = int(rng.integers(0, horizon - 30))
        c0 = int(rng.integers(0, width - 20))
        r1 = min(horizon, r0 + int(rng.integers(20, 120)))
        c1 = min(width, c0 + int(rng.integers(12, 80)))
        image[r0:r1, c0:c1] = rng.uniform(0.2, 0.8) + 0.04 * (_smooth_noise(rng, (3, 3), (r1 - r0, c1 - c0)) - 0.5)
    return np.clip(image, 0.1, 0.9).astype(np.float64)


MATERIAL_STRIPES = {"shirt": 3.0, "trousers": 2.0, "skin": 0.0, "shoes": 0.0}


class BodyRenderer:
    """Renders one recording's body for one camera; ``render(n, region)`` gives frame n's grey levels."""

    def __init__(self, camera: Camera, body: BodyProportions, joints: np.ndarray, background: np.ndarray,
                 albedo: dict, rng: np.random.Generator):
        """``joints`` is ``(N, 13, 3)`` in mm (one pose per rendered frame), ``albedo`` grey per material."""
        points = primitive_points(body, joints)
        starts = np.stack([points[a] for a, _, _, _, _ in PRIMITIVES], axis=1)  # (N, P, 3)
        ends = np.stack([points[b] for _, b, _, _, _ in PRIMITIVES], axis=1)
        radius_mm = np.array([getattr(body, attr) * factor for _, _, attr, factor, _ in PRIMITIVES])
        depth = 0.5 * (camera.depth(starts) + camera.depth(ends))
        if np.any(depth < 100.0):
            raise ValueError("the body comes closer than 10 cm to a camera; the rig or the motion is wrong")
        self.start_px = camera.project(starts)
        self.end_px = camera.project(ends)
        self.radius_px = radius_mm * camera.focal / depth
        self.order = np.argsort(-depth, axis=1, kind="stable")  # far to near
        self.albedo = np.array([albedo[material] for *_, material in PRIMITIVES])
        self.stripes = np.array([MATERIAL_STRIPES[material] for *_, material in PRIMITIVES])
        self.stripe_phase = rng.uniform(0.0, 2 * np.pi, len(PRIMITIVES))
        self.is_head = np.array([a == b == "head_centre" for a, b, *_ in PRIMITIVES])
        self.background = background
        low = np.minimum(self.start_px, self.end_px) - self.radius_px[..., None] - 2.0
        high = np.maximum(self.start_px, self.end_px) + self.radius_px[..., None] + 2.0
        self.part_boxes = np.concatenate([low, high], axis=-1)  # (N, P, 4): u0, v0, u1, v1
        self.body_boxes = np.concatenate([low.min(axis=1), high.max(axis=1)], axis=-1)  # (N, 4)

    @property
    def num_frames(self) -> int:
        return self.start_px.shape[0]

    def region(self, *frames: int) -> tuple:
        """Pixel rows/cols ``(r0, r1, c0, c1)`` (end exclusive) covering the body in all given frames."""
        boxes = self.body_boxes[list(frames)]
        c0 = int(np.clip(np.floor(boxes[:, 0].min()), 0, SENSOR_WIDTH))
        r0 = int(np.clip(np.floor(boxes[:, 1].min()), 0, SENSOR_HEIGHT))
        c1 = int(np.clip(np.ceil(boxes[:, 2].max()) + 1, 0, SENSOR_WIDTH))
        r1 = int(np.clip(np.ceil(boxes[:, 3].max()) + 1, 0, SENSOR_HEIGHT))
        return r0, max(r0, r1), c0, max(c0, c1)

    def render(self, frame: int, region: tuple) -> np.ndarray:
        """Grey levels of ``region`` = (r0, r1, c0, c1) at frame ``frame`` (background plus body)."""
        return self.render_frames(np.array([frame]), region)[0].astype(np.float64)

    def render_frames(self, frames: np.ndarray, region: tuple) -> np.ndarray:
        """Grey levels ``(K, h, w)`` of ``region`` at the K consecutive ``frames``, vectorised over time.

        The painting order is the depth order of the first frame (parts swap depth rarely and slowly).
        """
        r0, r1, c0, c1 = region
        frames = np.asarray(frames)
        patch = np.repeat(self.background[None, r0:r1, c0:c1].astype(np.float32), frames.size, axis=0)
        boxes = self.part_boxes[frames]  # (K, P, 4)
        low = boxes[..., :2].min(axis=0)
        high = boxes[..., 2:].max(axis=0)
        for part in self.order[frames[0]]:
            pr0, pr1 = max(r0, int(low[part, 1])), min(r1, int(high[part, 1]) + 1)
            pc0, pc1 = max(c0, int(low[part, 0])), min(c1, int(high[part, 0]) + 1)
            if pr0 >= pr1 or pc0 >= pc1:
                continue
            # float32 halves the memory traffic; sub-pixel positions stay exact to ~1e-5 px.
            ax, ay = self.start_px[frames, part].T.astype(np.float32)[..., None, None]
            bx, by = self.end_px[frames, part].T.astype(np.float32)[..., None, None]
            radius = self.radius_px[frames, part].astype(np.float32)[:, None, None]
            qy = np.arange(pr0, pr1, dtype=np.float32)[None, :, None] + np.float32(0.5) - ay
            qx = np.arange(pc0, pc1, dtype=np.float32)[None, None, :] + np.float32(0.5) - ax
            abx, aby = bx - ax, by - ay
            inv_length2 = np.float32(1.0) / np.maximum(abx * abx + aby * aby, np.float32(1e-12))
            s = np.minimum(np.maximum((qx * abx + qy * aby) * inv_length2, np.float32(0.0)), np.float32(1.0))
            dx = qx - s * abx
            dy = qy - s * aby
            dist = np.sqrt(dx * dx + dy * dy)
            coverage = np.minimum(np.maximum(radius + np.float32(0.5) - dist, np.float32(0.0)), np.float32(1.0))
            rel = dist * (np.float32(1.0) / radius)
            shade = np.sqrt(np.maximum(np.float32(1.0) - rel * rel, np.float32(0.0)))
            grey = np.float32(0.6 * self.albedo[part]) + np.float32(0.4 * self.albedo[part]) * shade
            if self.stripes[part] > 0:
                stripes = np.sin(np.float32(2 * np.pi * self.stripes[part]) * s + np.float32(self.stripe_phase[part]))
                grey *= np.float32(1.0) + np.float32(0.3) * stripes
            if self.is_head[part]:  # darker hair on the upper part of the head (rows grow downwards)
                grey = np.where(dy < -0.25 * radius, np.float32(0.35) * grey, grey)
            view = patch[:, pr0 - r0:pr1 - r0, pc0 - c0:pc1 - c0]
            view += coverage * (grey - view)
        return patch
