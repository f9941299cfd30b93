"""Writes a synthetic dataset in the official preprocessed DHP19 layout (SPEC section 4).

Files in ``out_dir``: ``S{s}_session{k}_mov{m}_events.h5`` (per camera channel c: ``cam{c}_events/{x,y,p,t}``
uint16/uint16/uint8/int64 and ``cam{c}_ms_to_idx`` int64) beside ``S{s}_session{k}_mov{m}_events_label.h5``
(``XYZ/3d_poses`` float64 (N, 3, 13) mm with NaN dropouts, ``XYZ/timestamps`` int64 us at 100 Hz), and
``P_matrices/P1..P4.npy`` (3x4 float64) with ``P_matrices/camera_positions.npy`` (4x3, row i = centre of
P{i+1}). Everything is a deterministic function of the seed: each subject, recording and camera draws from
its own ``numpy.random.SeedSequence`` branch, so changing one recording never shifts another.

Per recording the body pose is evaluated at every rendered frame (``frame_step_ms``) and at every 10 ms
label slot (label i is the pose at ``t = 10 i`` ms); event times run from 0 over ``duration_s`` and
``ms_to_idx`` has ``duration_ms + 1`` entries, ``ms_to_idx[k] = #events with t < 1000 k``.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import pathlib
import shutil
import time

import h5py
import numpy as np
from tqdm import tqdm

from .body import JOINT_NAMES, forward_kinematics, sample_proportions
from .cameras import CHANNEL_TO_MATRIX, SENSOR_HEIGHT, SENSOR_WIDTH, Camera, dhp19_like_rig
from .dvs import DvsParams, EventSimulator, noise_events
from .motions import MOTION_NAMES, motion_channels, sample_motion
from .render import BodyRenderer, make_background

# Bumped whenever the generated data changes for an unchanged config (invalidates cached datasets).
GENERATOR_VERSION = 1
# SeedSequence branches (first entropy word after the seed), fixed forever for reproducibility.
_RIG, _SUBJECT, _RECORDING, _CAMERA, _BACKGROUND, _MOTION_ORDER = range(6)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; :meth:`preset` gives the named sizes."""

    seed: int = 0  # master seed; the whole dataset is a deterministic function of it
    train_subjects: tuple[int, ...] = (1, 2, 3, 4)  # subject numbers < 13 (the official train split)
    test_subjects: tuple[int, ...] = (13, 14)  # subject numbers >= 13 (the official test split)
    recordings_per_subject: int = 3  # movements per subject, written as session1_mov1 .. movN
    duration_s: float = 3.0  # length of each recording in seconds (whole milliseconds)
    motions: tuple[str, ...] = MOTION_NAMES  # movement pool; subjects cycle through a shuffled copy
    frame_step_ms: float = 2.0  # rendering step; log intensity is interpolated linearly in between
    dvs: DvsParams = DvsParams()  # event-sensor model
    dropout_runs: tuple[int, int] = (1, 3)  # min, max number of NaN runs (one joint each) per recording
    dropout_ms: tuple[int, int] = (50, 400)  # min, max length of one NaN run in milliseconds
    label_noise_mm: float = 1.5  # Gaussian Vicon marker jitter added to the labels (not to the rendering)

    @classmethod
    def preset(cls, name: str, **overrides) -> SyntheticConfig:
        """``"default"`` (4 + 2 subjects x 3 movements x 3 s), ``"tiny"`` (for tests: 1 + 1 subjects x 1 x 1.5 s)
        or ``"large"`` (8 + 4 subjects x 6 movements x 8 s); keyword overrides replace fields."""
        presets = {
            "default": {},
            "tiny": {"train_subjects": (1,), "test_subjects": (13,), "recordings_per_subject": 1,
                     "duration_s": 1.5},
            "large": {"train_subjects": tuple(range(1, 9)), "test_subjects": (13, 14, 15, 16),
                      "recordings_per_subject": 6, "duration_s": 8.0},
        }
        if name not in presets:
            raise ValueError(f"unknown synthetic preset '{name}'; choose one of {', '.join(presets)}")
        return dataclasses.replace(cls(), **{**presets[name], **overrides})

    def validate(self) -> None:
        if any(s >= 13 or s < 1 for s in self.train_subjects):
            raise ValueError(f"train_subjects {self.train_subjects} must be in 1..12 (the split is by number)")
        if any(s < 13 for s in self.test_subjects):
            raise ValueError(f"test_subjects {self.test_subjects} must be >= 13 (the split is by number)")
        if len(set(self.train_subjects + self.test_subjects)) != len(self.train_subjects + self.test_subjects):
            raise ValueError("a subject number appears twice")
        if self.duration_s * 1000 != round(self.duration_s * 1000) or self.duration_s < 0.5:
            raise ValueError(f"duration_s={self.duration_s} must be whole milliseconds and >= 0.5 s")
        steps = self.duration_s * 1000 / self.frame_step_ms
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"frame_step_ms={self.frame_step_ms} must divide the duration ({self.duration_s} s)")
        unknown = set(self.motions) - set(MOTION_NAMES)
        if unknown or not self.motions:
            raise ValueError(f"motions {sorted(unknown) or '()'} unknown; choose from {', '.join(MOTION_NAMES)}")


def _rng(seed: int, *branch: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *branch]))


def _motion_index(config: SyntheticConfig, subject: int, recording: int) -> int:
    """Deals the movement pool (in a seeded order) round-robin: train recordings first, then test ones.

    So the train split covers the whole library as soon as it has as many recordings as there are
    movements, and the test split continues the deal (different movements first, then all of them).
    """
    order = _rng(config.seed, _MOTION_ORDER).permutation(len(config.motions))
    if subject in config.train_subjects:
        slot = config.train_subjects.index(subject) * config.recordings_per_subject + recording
    else:
        offset = len(config.train_subjects) * config.recordings_per_subject
        slot = offset + config.test_subjects.index(subject) * config.recordings_per_subject + recording
    return int(order[slot % len(config.motions)])


def _albedo(rng: np.random.Generator) -> dict:
    """Clothing far from the mid-grey background (dark or light), skin in between."""
    def cloth():
        return float(rng.uniform(0.08, 0.22) if rng.random() < 0.5 else rng.uniform(0.75, 0.95))
    return {"shirt": cloth(), "trousers": cloth(), "skin": float(rng.uniform(0.5, 0.8)),
            "shoes": float(rng.uniform(0.05, 0.15))}


def add_dropouts(poses: np.ndarray, rng: np.random.Generator, runs: tuple, length_ms: tuple) -> list:
    """Sets NaN runs (one joint, all three coordinates) in ``poses`` (N, 3, 13) in place; returns them."""
    num = poses.shape[0]
    dropouts = []
    for _ in range(int(rng.integers(runs[0], runs[1] + 1))):
        joint = int(rng.integers(0, poses.shape[2]))
        length = int(np.clip(rng.integers(length_ms[0], length_ms[1] + 1) // 10, 1, max(1, num // 3)))
        start = int(rng.integers(0, max(1, num - length)))
        poses[start:start + length, :, joint] = np.nan
        dropouts.append((joint, start, length))
    return dropouts


def simulate_camera_events(camera: Camera, body, frame_joints: np.ndarray, frame_step_us: float,
                           background: np.ndarray, albedo: dict, dvs: DvsParams, rng: np.random.Generator,
                           chunk: int = 16):
    """Events ``(x, y, p, t)`` (official dtypes, 1-based, sorted by t) of one camera for one recording.

    Frames are rendered ``chunk`` at a time (vectorised over time) on the union of their body boxes.
    """
    renderer = BodyRenderer(camera, body, frame_joints, background, albedo, rng)
    full = (0, SENSOR_HEIGHT, 0, SENSOR_WIDTH)
    simulator = EventSimulator(renderer.render(0, full), dvs, rng)
    for chunk_start in range(1, renderer.num_frames, chunk):
        frames = np.arange(chunk_start, min(chunk_start + chunk, renderer.num_frames))
        region = renderer.region(chunk_start - 1, *frames)
        log_patches = simulator.log(renderer.render_frames(frames, region))
        simulator.step_many((frames[0] - 1) * frame_step_us, frame_step_us, region, log_patches)
    duration_us = (renderer.num_frames - 1) * frame_step_us
    pixel, times, polarity = simulator.events()
    noise_pixel, noise_times, noise_polarity = noise_events(rng, dvs, duration_us, background.shape)
    pixel = np.concatenate([pixel, noise_pixel])
    t = np.floor(np.concatenate([times, noise_times])).astype(np.int64)
    polarity = np.concatenate([polarity, noise_polarity])
    order = np.argsort(t, kind="stable")
    pixel, t, polarity = pixel[order], t[order], polarity[order]
    x = (pixel % SENSOR_WIDTH + 1).astype(np.uint16)
    y = (pixel // SENSOR_WIDTH + 1).astype(np.uint16)
    return x, y, polarity.astype(np.uint8), t


def ms_to_idx(t: np.ndarray, duration_ms: int) -> np.ndarray:
    """``[#events with t < 1000 k for k in 0 .. duration_ms]`` (index of the first event at or after k ms)."""
    return np.searchsorted(t, 1000 * np.arange(duration_ms + 1, dtype=np.int64), side="left").astype(np.int64)


def write_camera_matrices(cameras: dict, out_dir: pathlib.Path) -> None:
    folder = out_dir / "P_matrices"
    folder.mkdir(parents=True, exist_ok=True)
    for number, camera in cameras.items():
        np.save(folder / f"P{number}.npy", camera.projection.astype(np.float64))
    np.save(folder / "camera_positions.npy", np.stack([cameras[n].centre for n in (1, 2, 3, 4)]).astype(np.float64))


def _scene(seed: int) -> tuple[dict, dict]:
    """The camera rig and per-camera backgrounds (shared by all recordings of a seed)."""
    cameras = dhp19_like_rig(_rng(seed, _RIG))
    backgrounds = {n: make_background(_rng(seed, _BACKGROUND, n)) for n in (1, 2, 3, 4)}
    return cameras, backgrounds


def write_recording(config: SyntheticConfig, out_dir, subject: int, recording: int, on_camera=None) -> dict:
    """Writes recording ``recording`` (0-based) of ``subject``: ``S{subject}_session1_mov{recording + 1}``.

    Depends only on (config, subject, recording), so recordings can be generated in any order or in
    parallel. ``on_camera`` is called after each camera (progress). Returns the summary entry.
    """
    out_dir = pathlib.Path(out_dir)
    cameras, backgrounds = _scene(config.seed)
    duration_ms = int(round(config.duration_s * 1000))
    num_frames = int(round(duration_ms / config.frame_step_ms)) + 1
    frame_times = np.arange(num_frames) * config.frame_step_ms * 1e-3
    label_times = np.arange(duration_ms // 10) * 0.01

    subject_rng = _rng(config.seed, _SUBJECT, subject)
    body = sample_proportions(subject_rng)
    albedo = _albedo(subject_rng)
    motion = config.motions[_motion_index(config, subject, recording)]
    rec_rng = _rng(config.seed, _RECORDING, subject, recording)
    sample = sample_motion(motion, rec_rng)
    root_xy = (float(rec_rng.uniform(-120, 120)), float(rec_rng.uniform(-120, 120)))
    base_yaw = float(rec_rng.uniform(-12.0, 12.0))
    frame_joints, labels = (
        forward_kinematics(body, motion_channels(motion, sample, times), times.size, root_xy=root_xy,
                           base_yaw_deg=base_yaw)
        for times in (frame_times, label_times)
    )
    labels += config.label_noise_mm * rec_rng.standard_normal(labels.shape)
    poses = np.ascontiguousarray(np.transpose(labels, (0, 2, 1)))  # (N, 3, 13)
    dropouts = add_dropouts(poses, rec_rng, config.dropout_runs, config.dropout_ms)

    name = f"S{subject}_session1_mov{recording + 1}"
    counts = []
    with h5py.File(out_dir / f"{name}_events.h5", "w") as events_file:
        for channel, number in enumerate(CHANNEL_TO_MATRIX):
            x, y, p, t = simulate_camera_events(
                cameras[number], body, frame_joints, config.frame_step_ms * 1000.0, backgrounds[number],
                albedo, config.dvs, _rng(config.seed, _CAMERA, subject, recording, number))
            group = events_file.create_group(f"cam{channel}_events")
            group.create_dataset("x", data=x)
            group.create_dataset("y", data=y)
            group.create_dataset("p", data=p)
            group.create_dataset("t", data=t)
            events_file.create_dataset(f"cam{channel}_ms_to_idx", data=ms_to_idx(t, duration_ms))
            counts.append(int(t.size))
            if on_camera is not None:
                on_camera()
        events_file.attrs["synthetic_motion"] = motion
    with h5py.File(out_dir / f"{name}_events_label.h5", "w") as label_file:
        label_file.create_dataset("XYZ/3d_poses", data=poses.astype(np.float64))
        label_file.create_dataset("XYZ/timestamps", data=(np.arange(poses.shape[0], dtype=np.int64) * 10000))
    return {"name": name, "subject": subject, "split": "train" if subject < 13 else "test", "motion": motion,
            "events_per_channel": counts,
            "dropouts": [{"joint": JOINT_NAMES[j], "start": s, "labels": n} for j, s, n in dropouts]}


def write_synthetic_dhp19(
    out_dir, config: SyntheticConfig | None = None, *, progress: bool = True, workers: int = 1, **overrides
) -> dict:
    """Generates the dataset of ``config`` (default preset, with keyword ``overrides``) into ``out_dir``.

    ``workers > 1`` generates recordings in that many processes (spawned, so it is safe from a process that
    already runs JAX); the output is identical for any number of workers.
    Returns a summary: ``files`` (one dict per recording: name, motion, events per channel, dropouts),
    ``total_events``, ``seconds`` (wall time) and the config as a dict; it is also saved as
    ``synthetic_summary.json`` (without timing, so the folder is byte-for-byte reproducible).
    """
    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    config.validate()
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    jobs = [(s, r) for s in config.train_subjects + config.test_subjects for r in range(config.recordings_per_subject)]
    planned = {f"S{s}_session1_mov{r + 1}_events.h5" for s, r in jobs}
    stale = sorted(p.name for p in out_dir.glob("*_events.h5") if p.name not in planned)
    if stale:  # a loader would mix them into the splits
        raise FileExistsError(f"{out_dir}: holds recordings this config does not write ({', '.join(stale[:3])}"
                              f"{', ...' if len(stale) > 3 else ''}); use an empty folder")
    write_camera_matrices(_scene(config.seed)[0], out_dir)
    bar = None
    if progress:
        bar = tqdm(total=len(jobs) * 4, desc="synthetic DHP19", unit="camera")
    if workers <= 1:
        summary_files = [write_recording(config, out_dir, s, r, on_camera=bar.update if bar else None)
                         for s, r in jobs]
    else:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(write_recording, config, out_dir, s, r) for s, r in jobs]
            for future in concurrent.futures.as_completed(futures):
                future.result()
                if bar is not None:
                    bar.update(4)
            summary_files = [future.result() for future in futures]
    if bar is not None:
        bar.close()
    total_events = sum(sum(entry["events_per_channel"]) for entry in summary_files)
    summary = {"generator_version": GENERATOR_VERSION, "config": dataclasses.asdict(config), "files": summary_files,
               "total_events": total_events}
    (out_dir / "synthetic_summary.json").write_text(json.dumps(summary, indent=1, default=list))
    summary["seconds"] = time.perf_counter() - started
    return summary


def _only_synthetic(folder: pathlib.Path, summary: dict) -> bool:
    """True when ``folder`` holds nothing but what a synthetic summary lists (safe to replace)."""
    allowed = {"synthetic_summary.json", "P_matrices"}
    allowed |= {f"{entry['name']}{suffix}" for entry in summary.get("files", [])
                for suffix in ("_events.h5", "_events_label.h5")}
    matrices = {f"P{n}.npy" for n in (1, 2, 3, 4)} | {"camera_positions.npy"}
    for path in folder.iterdir():
        if path.name not in allowed or (path.is_dir() != (path.name == "P_matrices")):
            return False
    folder_matrices = folder / "P_matrices"
    return not folder_matrices.exists() or all(p.name in matrices for p in folder_matrices.iterdir())


def ensure_synthetic_dhp19(out_dir, config: SyntheticConfig | None = None, *, progress: bool = True,
                           workers: int = 1, **overrides) -> pathlib.Path:
    """Returns ``out_dir`` after generating the dataset there unless an identical one is already present.

    "Identical" means ``synthetic_summary.json`` records the same config and generator version and every
    file it lists exists. A folder holding only an outdated synthetic dataset is replaced; any other
    non-empty folder is refused. The data is written to ``out_dir.partial`` first and renamed, so an
    interrupted run never looks complete.
    """
    config = dataclasses.replace(config or SyntheticConfig(), **overrides)
    out_dir = pathlib.Path(out_dir)
    summary_path = out_dir / "synthetic_summary.json"
    wanted = json.loads(json.dumps(dataclasses.asdict(config), default=list))
    replace = False
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        complete = all((out_dir / f"{entry['name']}{suffix}").is_file()
                       for entry in summary["files"] for suffix in ("_events.h5", "_events_label.h5"))
        if (summary.get("config") == wanted and summary.get("generator_version") == GENERATOR_VERSION
                and complete and (out_dir / "P_matrices" / "P4.npy").is_file()):
            return out_dir
        replace = _only_synthetic(out_dir, summary)
    if out_dir.exists() and any(out_dir.iterdir()) and not replace:
        raise FileExistsError(f"{out_dir}: not empty and not the requested synthetic dataset; choose another folder "
                              "or delete it")
    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    write_synthetic_dhp19(partial, config, progress=progress, workers=workers)
    if out_dir.exists():
        outdated = out_dir.with_name(out_dir.name + ".outdated")
        if outdated.exists():
            shutil.rmtree(outdated)
        out_dir.rename(outdated)
        partial.rename(out_dir)
        shutil.rmtree(outdated)
    else:
        partial.rename(out_dir)
    return out_dir
