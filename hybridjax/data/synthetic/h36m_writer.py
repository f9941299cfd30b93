"""Writes a small synthetic Event-Human3.6M tree in the official layout (SPEC section 4; read by
:class:`hybridjax.data.h36m.EventH36MDataset`).

Files under ``root``: ``{subject}/upsample/{Action}.{camcode}/events.h5`` (``events/x``, ``events/y`` uint16
0-based on the 320 x 256 frame, ``events/p`` uint8, ``events/t`` int64 nanoseconds, ``ms_to_idx`` int64 with
``ms_to_idx[k]`` = index of the first event with ``t >= k`` ms for ``k = 0 .. duration_ms - 1``, scalar
``cam_view``), ``labels.h5`` (``/{subject}/{Action}/cam_view_{c}`` (N, 2, 13) float64 pixels (u, v) and
``/{subject}/{Action}/timestamps_ms`` (N,) float64 at 50 Hz: 0, 20, .., duration - 20) and
``synthetic_summary.json``. Spaces of action names become underscores in the folder names, as in the release.

The motion is the synthetic DHP19 body (:mod:`.body`, :mod:`.motions`): a subject-specific 13-joint stick
body performing one movement per action, seen by two to four pinhole cameras standing at the corners of
the room (camera view ``c`` at azimuth ``45 + 90 c`` degrees). A camera maps a world point ``X`` (mm) to

    p = K [R | -R C] [X; 1],   u = p0 / p2,   v = 256 - p1 / p2

(R's second row points up, K's principal point is the frame centre (160, 128)). Events are drawn around the
projected skeleton so that they follow the labels: in every millisecond ``m`` each bone ``A -> B`` of
:data:`BONES` emits ``Poisson(L (density + gain * speed))`` events, with ``L`` its projected length (px) and
``speed`` the mean projected speed of its ends (px / ms); an event sits at a uniform fraction ``s`` along the
bone at a uniform time inside the millisecond (ends interpolated linearly), displaced by isotropic Gaussian
noise of ``edge_sigma_px``; its polarity is 1 when the displacement points along the local motion (a
leading edge) and 0 otherwise. Uniform sensor noise (``noise_per_ms`` events / ms, random polarity) is
added. Events outside the frame are dropped. Labels are the exact projections (joints may leave the frame;
the loader masks them).

Everything is a deterministic function of the config: each (subject, action, view) draws from its own
``numpy.random.SeedSequence`` branch.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import h5py
import numpy as np

from .body import J, forward_kinematics, sample_proportions
from .cameras import look_at
from .motions import motion_channels, sample_motion

FRAME_H, FRAME_W = 256, 320
NS_PER_MS = 1_000_000
VIEW_TO_CAMCODE = {0: "54138969", 1: "55011271", 2: "58860488", 3: "60457274"}
# Human3.6M action names and the synthetic movement each one performs.
ACTIONS = (
    ("Walking", "walking_in_place"), ("Greeting", "wave"), ("Eating", "arm_circles"), ("Posing", "arm_abduction"),
    ("Discussion", "punches"), ("SittingDown", "squats"), ("Purchases", "side_bends"), ("WalkDog", "kicks"),
    ("Waiting", "jumping_jacks"), ("Sitting", "leg_abduction"),
)
# Skeleton bones as joint-index pairs; index 13 is the neck (mid-shoulder point) added to the 13 joints.
NECK = 13
BONES = (
    (J["head"], NECK), (J["shoulderR"], J["shoulderL"]), (J["shoulderR"], J["elbowR"]), (J["elbowR"], J["handR"]),
    (J["shoulderL"], J["elbowL"]), (J["elbowL"], J["handL"]), (J["shoulderR"], J["hipR"]),
    (J["shoulderL"], J["hipL"]), (J["hipR"], J["hipL"]), (J["hipR"], J["kneeR"]), (J["kneeR"], J["footR"]),
    (J["hipL"], J["kneeL"]), (J["kneeL"], J["footL"]),
)
_SUBJECT, _ACTION, _CAMERA, _EVENTS = range(4)  # SeedSequence branches (fixed forever)


@dataclasses.dataclass(frozen=True)
class SyntheticH36MConfig:
    """What :func:`write_synthetic_event_h36m` generates (defaults: a tree for quick tests, ~1 s to write)."""

    seed: int = 0  # master seed; the tree is a deterministic function of the config
    train_subjects: tuple[str, ...] = ("S1", "S5")  # subjects of the official train split (S1 S5 S6 S7 S8)
    test_subjects: tuple[str, ...] = ("S9", "S11")  # subjects of the official test split (S9 S11)
    actions_per_subject: int = 1  # actions per subject, dealt round-robin from ACTIONS (a second deal: "Name 1")
    cameras: tuple[int, ...] = (2, 3)  # camera views 0..3 to write (every action is seen by all of them)
    duration_ms: int = 1500  # length of each sequence in ms (labels at 0, 20, .., duration - 20)
    camera_distance_mm: float = 4500.0  # camera distance from the subject's vertical axis
    focal_px: float = 400.0  # focal length in pixels (a 1.75 m subject is ~150 px tall)
    density_per_px_ms: float = 0.02  # events per bone pixel per ms when still (texture, flicker)
    gain_per_px: float = 0.8  # extra events per bone pixel per pixel of motion
    edge_sigma_px: float = 2.0  # spread of the events around a bone
    noise_per_ms: float = 3.0  # uniform background events per ms

    def validate(self) -> None:
        for subject in self.train_subjects + self.test_subjects:
            if not (subject.startswith("S") and subject[1:].isdigit()):
                raise ValueError(f"SyntheticH36MConfig: subject {subject!r} must look like 'S<number>'")
        if set(self.train_subjects) & set(self.test_subjects):
            raise ValueError("SyntheticH36MConfig: a subject is in both splits")
        if not self.cameras or any(c not in VIEW_TO_CAMCODE for c in self.cameras):
            raise ValueError(f"SyntheticH36MConfig.cameras {self.cameras} must be views in 0..3")
        if self.duration_ms < 600 or self.duration_ms % 20:
            raise ValueError(f"SyntheticH36MConfig.duration_ms {self.duration_ms} must be a multiple of 20 >= 600")
        if self.actions_per_subject < 1:
            raise ValueError(f"SyntheticH36MConfig.actions_per_subject must be >= 1, got {self.actions_per_subject}")


def _rng(seed: int, *branch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *branch]))


def action_names(config: SyntheticH36MConfig, subject: str) -> list[tuple[str, str]]:
    """``[(action name, motion)]`` of ``subject``: actions dealt round-robin over all subjects in order."""
    subjects = config.train_subjects + config.test_subjects
    first = subjects.index(subject) * config.actions_per_subject
    out = []
    for k in range(config.actions_per_subject):
        base, motion = ACTIONS[(first + k) % len(ACTIONS)]
        take = (first + k) // len(ACTIONS)  # later deals of the same action are takes "Name 1", "Name 2", ..
        out.append((base if take == 0 else f"{base} {take}", motion))
    return out


def camera_for_view(config: SyntheticH36MConfig, view: int):
    """The pinhole camera of view ``view`` (jittered around its corner of the room)."""
    rng = _rng(config.seed, _CAMERA, view)
    azimuth = np.deg2rad(45.0 + 90.0 * view + rng.uniform(-5.0, 5.0))
    radius = config.camera_distance_mm * rng.uniform(0.95, 1.05)
    centre = np.array([radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(1400.0, 1700.0)])
    target = np.array([0.0, 0.0, rng.uniform(850.0, 950.0)])
    focal = config.focal_px * rng.uniform(0.97, 1.03)
    return look_at(centre, target, focal=focal, principal=(FRAME_W / 2, FRAME_H / 2))


def project(camera, points: np.ndarray) -> np.ndarray:
    """``(..., 3)`` world points (mm) -> ``(..., 2)`` pixels (u, v) of the 320 x 256 frame (module docstring)."""
    p = np.asarray(points, dtype=np.float64) @ camera.projection[:, :3].T + camera.projection[:, 3]
    return np.stack([p[..., 0] / p[..., 2], FRAME_H - p[..., 1] / p[..., 2]], axis=-1)


def skeleton_events(points: np.ndarray, config: SyntheticH36MConfig, rng: np.random.Generator):
    """Events ``(x, y, p, t)`` around a projected skeleton ``points`` [M + 1, 14, 2] sampled every ms.

    Returns official dtypes (uint16, uint16, uint8, int64 ns), sorted by time; see the module docstring.
    """
    num_ms = points.shape[0] - 1
    a_idx, b_idx = np.array(BONES).T
    start, stop = points[:-1], points[1:]  # [M, 14, 2] at the beginning and the end of each ms
    velocity = stop - start  # px / ms
    length = np.linalg.norm(start[:, a_idx] - start[:, b_idx], axis=-1)  # [M, bones]
    speed = 0.5 * (np.linalg.norm(velocity[:, a_idx], axis=-1) + np.linalg.norm(velocity[:, b_idx], axis=-1))
    counts = rng.poisson(length * (config.density_per_px_ms + config.gain_per_px * speed))
    flat = np.repeat(np.arange(counts.size), counts.ravel())
    ms, bone = np.divmod(flat, len(BONES))
    along = rng.random(flat.size)[:, None]
    frac_t = rng.random(flat.size)
    when = frac_t[:, None]
    end_a = start[ms, a_idx[bone]] + when * velocity[ms, a_idx[bone]]
    end_b = start[ms, b_idx[bone]] + when * velocity[ms, b_idx[bone]]
    local_velocity = (1 - along) * velocity[ms, a_idx[bone]] + along * velocity[ms, b_idx[bone]]
    offset = config.edge_sigma_px * rng.standard_normal((flat.size, 2))
    uv = (1 - along) * end_a + along * end_b + offset
    polarity = (np.sum(offset * local_velocity, axis=-1) > 0).astype(np.uint8)
    t = ((ms + frac_t) * NS_PER_MS).astype(np.int64)

    noise_count = int(rng.poisson(config.noise_per_ms * num_ms))
    noise_uv = rng.uniform((0.0, 0.0), (FRAME_W, FRAME_H), (noise_count, 2))
    noise_t = rng.integers(0, num_ms * NS_PER_MS, noise_count)
    noise_p = rng.integers(0, 2, noise_count).astype(np.uint8)

    uv = np.concatenate([uv, noise_uv])
    t = np.concatenate([t, noise_t])
    polarity = np.concatenate([polarity, noise_p])
    x, y = np.floor(uv[:, 0]), np.floor(uv[:, 1])
    inside = (x >= 0) & (x < FRAME_W) & (y >= 0) & (y < FRAME_H)
    order = np.argsort(t[inside], kind="stable")
    return (x[inside][order].astype(np.uint16), y[inside][order].astype(np.uint16), polarity[inside][order],
            t[inside][order])


def write_synthetic_event_h36m(root, config: SyntheticH36MConfig | None = None, **overrides) -> dict:
    """Writes the synthetic Event-Human3.6M tree of ``config`` (with keyword ``overrides``) under ``root``.

    Returns (and saves as ``synthetic_summary.json``) ``{"config", "sequences": [{"subject", "action",
    "motion", "split", "events_per_view": {view: count}}], "total_events"}``.
    """
    config = dataclasses.replace(config or SyntheticH36MConfig(), **overrides)
    config.validate()
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if (root / "labels.h5").exists():
        raise FileExistsError(f"{root}: already holds a labels.h5; use an empty folder")
    cameras = {view: camera_for_view(config, view) for view in config.cameras}
    times_s = np.arange(config.duration_ms + 1) * 1e-3  # joints every ms (events) ...
    label_ms = np.arange(0, config.duration_ms, 20)  # ... labels every 20 ms
    sequences = []
    with h5py.File(root / "labels.h5", "w") as labels_file:
        for subject in config.train_subjects + config.test_subjects:
            number = int(subject[1:])
            body = sample_proportions(_rng(config.seed, _SUBJECT, number))
            for k, (action, motion) in enumerate(action_names(config, subject)):
                action_rng = _rng(config.seed, _ACTION, number, k)
                sample = sample_motion(motion, action_rng)
                root_xy = (float(action_rng.uniform(-150, 150)), float(action_rng.uniform(-150, 150)))
                yaw = float(action_rng.uniform(-30.0, 30.0))
                joints = forward_kinematics(body, motion_channels(motion, sample, times_s), times_s.size,
                                            root_xy=root_xy, base_yaw_deg=yaw)  # [M + 1, 13, 3] mm
                with_neck = np.concatenate(
                    [joints, 0.5 * (joints[:, J["shoulderR"]] + joints[:, J["shoulderL"]])[:, None]], axis=1)
                group = f"{subject}/{action}"
                labels_file[f"{group}/timestamps_ms"] = label_ms.astype(np.float64)
                counts = {}
                for view, camera in cameras.items():
                    points = project(camera, with_neck)  # [M + 1, 14, 2]
                    labels_file[f"{group}/cam_view_{view}"] = np.transpose(points[label_ms, :13], (0, 2, 1))
                    x, y, p, t = skeleton_events(points, config, _rng(config.seed, _EVENTS, number, k, view))
                    folder = root / subject / "upsample" / f"{action.replace(' ', '_')}.{VIEW_TO_CAMCODE[view]}"
                    folder.mkdir(parents=True, exist_ok=True)
                    with h5py.File(folder / "events.h5", "w") as events_file:
                        for name, values in (("x", x), ("y", y), ("p", p), ("t", t)):
                            events_file.create_dataset(f"events/{name}", data=values)
                        events_file["ms_to_idx"] = np.searchsorted(
                            t, np.arange(config.duration_ms, dtype=np.int64) * NS_PER_MS).astype(np.int64)
                        events_file["cam_view"] = np.int64(view)
                    counts[view] = int(t.size)
                sequences.append({"subject": subject, "action": action, "motion": motion,
                                  "split": "train" if subject in config.train_subjects else "test",
                                  "events_per_view": counts})
    summary = {"config": dataclasses.asdict(config), "sequences": sequences,
               "total_events": sum(sum(s["events_per_view"].values()) for s in sequences)}
    (root / "synthetic_summary.json").write_text(json.dumps(summary, indent=1, default=list))
    return summary
