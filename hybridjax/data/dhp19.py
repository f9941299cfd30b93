"""DHP19 in the official preprocessed h5 layout (SPEC section 4), as windows for the hybrid ANN-SNN.

Folder: ``S{s}_session{k}_mov{m}_events.h5`` (per camera ``cam{c}_events/{x,y,p,t}`` and ``cam{c}_ms_to_idx``)
beside ``S{s}_session{k}_mov{m}_events_label.h5`` (``XYZ/3d_poses`` (N, 3, 13) mm, ``XYZ/timestamps`` (N,) us,
100 Hz), and a folder with ``P1.npy .. P4.npy`` (3x4) and ``camera_positions.npy`` (4x3).

Windows (constant-count mode of the paper). With ``cc_start = ceil(t[7500] / 1000 / 100) * 100`` ms, window
``i`` starts at ``s = cc_start + 100 i`` ms; there are ``floor((L - cc_start - 100) / 100)`` windows where
``L = min(len(ms_to_idx), int(timestamps[-1] / 1000 + 10))`` (further capped so that a window never reaches
past ``L``). Its events are ``ms_to_idx[s] .. ms_to_idx[s + window_ms]`` (t in ``[s, s + window_ms)`` ms).

SNN bins:
* ``paper``: ``window_ms / 10`` stacked-histogram bins, each an equal fraction of the span between the
  window's first and last event (the official loader). Step ``k`` is scored against label ``s / 10 + k``.
* ``exact``: bins of exactly ``step_ms`` (``bin = floor((t - s) / step)``). Label ``i`` (the 10 ms slot ``i``,
  time ``10 i`` ms) is attached to the step containing ``10 i`` ms; ``step_has_label`` marks those steps
  (with steps longer than 10 ms the earliest label of the step is used, matching the paper's convention of
  scoring a bin against the label at its start).

ANN input (constant count): the 7500 events ending at ``ms_to_idx[s]``, a 10-bin stacked histogram over
their own span, channels polarity 0 bins 0..9 then polarity 1 bins 0..9; ``ann_input_next`` is the same
at ``s + 100`` ms (the training target of the membrane-potential loss). ``ann_landmarks`` is label
``s / 10 - 1``, the pose just before the window.

Labels: ``p = P @ [X; 1]``, ``u = p0 / p2``, ``v = 260 - p1 / p2``; a joint is masked (NaN) when missing or
outside columns [34, 290) / rows [2, 258); otherwise ``(u - 34, v - 2)`` truncated to integers.

One deliberate difference: a window that ends exactly at ``L`` reads up to ``ms_to_idx[L]`` (or to the last
event when ``L == len(ms_to_idx)``); the official loader reads ``[start:-1]`` there, which drops the file's last
event or, when the labels end early, runs past the window to the end of the file.

Bad input raises :class:`DataError` naming the file and the problem (among them a degenerate projection
matrix: rank < 3, or one that sends every joint of the split outside the crop; an ``ms_to_idx`` that disagrees
with ``t``, checked on every window and frame read; an empty folder: "no recordings found in DIR").
Recordings that cannot give a single valid window (too few events, no complete window, unsorted timestamps
found by ``validate='full'``, no valid joint in any label) and orphan files (a label file without its events
file or the reverse) are skipped with a logged warning naming them and listed in ``dataset.skipped``.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import pathlib
import re
from typing import Literal

import numpy as np

from . import representations as rep
from ._h5 import HandlePool, open_h5, require_dataset
from .errors import DataError

log = logging.getLogger(__name__)

SENSOR_H, SENSOR_W = rep.DHP19_SENSOR_HW
CROP_ROW0, CROP_COL0, CROP_H, CROP_W = rep.DHP19_CROP
NUM_JOINTS = 13
JOINT_NAMES = (
    "head", "shoulderR", "shoulderL", "elbowR", "elbowL", "hipR", "hipL",
    "handR", "handL", "kneeR", "kneeL", "footR", "footL",
)
# Camera channel c of the h5 files is seen through P{CAMERA_TO_MATRIX[c]}.npy (the official mapping).
CAMERA_TO_MATRIX = {0: 4, 1: 1, 2: 3, 3: 2}
LABEL_PERIOD_MS = 10  # labels are 100 Hz: label i belongs to the 10 ms slot i
US_PER_MS = 1000
RECORDING_PATTERN = re.compile(r"^S(\d+)_session(\d+)_mov(\d+)_events\.h5$")


@dataclasses.dataclass(frozen=True)
class DHP19Config:
    """Options of :class:`DHP19Dataset` (defaults = the paper's setting)."""

    cameras: tuple[int, ...] = (3,)  # camera channels 0..3 (channel 3 -> P2 is the paper's main view)
    test_subject_min: int = 13  # subjects with a number >= this form the test split, the others train
    subjects: tuple[int, ...] | None = None  # if set, only these subjects (after the split filter)
    exclude: tuple[str, ...] = ("S16_session2_mov1",)  # recordings left out (official: unsorted timestamps)
    window_ms: int | None = None  # SNN window length; None -> 100 ms for train, 200 ms for test
    window_step_ms: int = 100  # distance between window starts (the official loaders support only 100)
    bin_mode: Literal["paper", "exact"] = "paper"  # span-fraction bins (official) or fixed-length bins
    step_ms: float = 1.0  # exact mode: SNN step length in ms (whole microseconds, divides window_ms)
    representation: Literal["histogram", "voxel"] = "histogram"  # SNN input: counts or time-bilinear voxels
    ann_next: bool | None = None  # also build the ANN input of the next window start; None -> only for train
    align_cameras: bool = False  # same window grid (starts) for every camera of a recording, for triangulation
    validate: Literal["window", "full"] = "window"  # full: read and check all events at open time
    max_open_files: int = 64  # open h5 handles kept per loader thread


def parse_recording_name(path) -> tuple[int, int, int] | None:
    """``S12_session3_mov4_events.h5`` -> (12, 3, 4); None if the name does not follow the pattern."""
    match = RECORDING_PATTERN.match(pathlib.Path(path).name)
    return None if match is None else tuple(int(g) for g in match.groups())


def load_projection_matrices(p_matrix_dir) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Reads ``P1..P4.npy`` and ``camera_positions.npy``; returns ({camera channel: P}, positions (4, 3)).

    Row ``k`` of ``camera_positions.npy`` is the centre of ``P{k+1}``, so channel ``c`` sits at row
    ``CAMERA_TO_MATRIX[c] - 1``.
    """
    folder = pathlib.Path(p_matrix_dir)
    matrices = {}
    for camera, number in CAMERA_TO_MATRIX.items():
        path = folder / f"P{number}.npy"
        try:
            matrix = np.load(path)
        except FileNotFoundError as err:
            raise DataError(path, "projection matrix file does not exist") from err
        except (OSError, ValueError) as err:
            raise DataError(path, f"cannot be read as a .npy array ({err})") from err
        if matrix.shape != (3, 4) or not np.issubdtype(matrix.dtype, np.number):
            raise DataError(
                path, f"projection matrix has shape {matrix.shape}, dtype {matrix.dtype}; expected (3, 4)"
            )
        if not np.all(np.isfinite(matrix)):
            raise DataError(path, "projection matrix holds NaN or inf")
        rank = int(np.linalg.matrix_rank(matrix))
        if rank < 3:  # e.g. all zeros: every joint would project to NaN (0 / 0)
            raise DataError(path, f"projection matrix is degenerate (rank {rank}, a camera matrix has rank 3)")
        matrices[camera] = matrix.astype(np.float64)
    path = folder / "camera_positions.npy"
    try:
        positions = np.load(path)
    except FileNotFoundError as err:
        raise DataError(path, "camera position file does not exist") from err
    except (OSError, ValueError) as err:
        raise DataError(path, f"cannot be read as a .npy array ({err})") from err
    if positions.shape != (4, 3):
        raise DataError(path, f"camera positions have shape {positions.shape}, expected (4, 3)")
    return matrices, positions.astype(np.float64)


def project_joints(joints_xyz: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """3-D joints ``[..., J, 3]`` (mm) -> crop pixels ``[..., J, 2]`` (u, v), NaN where masked.

    ``p = P @ [X; 1]``, ``u = p0 / p2``, ``v = 260 - p1 / p2``; masked when NaN or ``u`` outside [34, 290) or
    ``v`` outside [2, 258); kept joints become ``trunc(u - 34), trunc(v - 2)`` (the one-hot target pixel).
    """
    xyz = np.asarray(joints_xyz, dtype=np.float64)
    homogeneous = np.concatenate([xyz, np.ones(xyz.shape[:-1] + (1,))], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        image = np.einsum("rk,...jk->...jr", matrix, homogeneous)
        u = image[..., 0] / image[..., 2]
        v = SENSOR_H - image[..., 1] / image[..., 2]
        valid = (
            np.isfinite(u) & np.isfinite(v)
            & (u >= CROP_COL0) & (u < CROP_COL0 + CROP_W) & (v >= CROP_ROW0) & (v < CROP_ROW0 + CROP_H)
        )
        uv = np.stack([np.trunc(u - CROP_COL0), np.trunc(v - CROP_ROW0)], axis=-1)
    uv[~valid] = np.nan
    return uv


class _Recording:
    """One recording: validated metadata, cached ``ms_to_idx`` per camera and all labels (both small)."""

    def __init__(self, events_path: pathlib.Path, cameras, validate: str):
        self.events_path = events_path
        self.name = events_path.name[: -len("_events.h5")]
        self.subject, self.session, self.movement = parse_recording_name(events_path)
        self.label_path = events_path.with_name(self.name + "_events_label.h5")
        self.ms_to_idx: dict[int, np.ndarray] = {}
        self.num_events: dict[int, int] = {}
        self.cc_start_ms: dict[int, int] = {}
        self._read_labels()
        with open_h5(events_path) as file:
            for camera in cameras:
                self._read_camera(file, camera, validate)

    def _read_labels(self) -> None:
        if not self.label_path.exists():
            raise DataError(self.label_path, f"label file of recording {self.name} does not exist")
        with open_h5(self.label_path) as file:
            poses = require_dataset(file, self.label_path, "XYZ/3d_poses", ndim=3, kind="f")
            stamps = require_dataset(file, self.label_path, "XYZ/timestamps", ndim=1, kind="iuf")
            if poses.shape[1:] != (3, NUM_JOINTS):
                raise DataError(
                    self.label_path, f"XYZ/3d_poses has shape {poses.shape}, expected (N, 3, {NUM_JOINTS})"
                )
            if poses.shape[0] != stamps.shape[0] or poses.shape[0] == 0:
                raise DataError(
                    self.label_path,
                    f"XYZ/3d_poses has {poses.shape[0]} labels but XYZ/timestamps {stamps.shape[0]} "
                    "(need equal, > 0)",
                )
            # [N, J, 3] in hybridjax order; NaN joints stay NaN and are masked when projected.
            self.joints = np.ascontiguousarray(np.transpose(poses[()], (0, 2, 1))).astype(np.float64)
            self.timestamps_us = stamps[()].astype(np.float64)
        if np.any(~np.isfinite(self.timestamps_us)) or np.any(np.diff(self.timestamps_us) <= 0):
            raise DataError(self.label_path, "XYZ/timestamps are not finite and strictly increasing")
        slots = np.arange(len(self.timestamps_us)) * LABEL_PERIOD_MS * US_PER_MS
        off_grid = (self.timestamps_us < slots) | (self.timestamps_us >= slots + LABEL_PERIOD_MS * US_PER_MS)
        if np.any(off_grid):
            log.warning(
                "%s: %d label timestamps lie outside their 10 ms slot; labels are used by index (slot i = "
                "label i) as in the official loaders", self.label_path, int(off_grid.sum()),
            )
        # The official sequence length: labels may end before the events (then the events are cut).
        self.label_ms_len = min(
            int(self.timestamps_us[-1] / 1e3 + 10), len(self.timestamps_us) * LABEL_PERIOD_MS
        )

    def _read_camera(self, file, camera: int, validate: str) -> None:
        path = self.events_path
        group = f"cam{camera}_events"
        if group not in file:
            raise DataError(path, f"missing group '{group}' (camera {camera})")
        lengths = {}
        for field in ("x", "y", "p", "t"):
            lengths[field] = require_dataset(file, path, f"{group}/{field}", ndim=1, kind="iu").shape[0]
        if len(set(lengths.values())) != 1:
            raise DataError(path, f"'{group}' arrays differ in length: {lengths}")
        num_events = lengths["t"]
        ms_node = require_dataset(file, path, f"cam{camera}_ms_to_idx", ndim=1, kind="iu")
        ms_to_idx = ms_node[()].astype(np.int64)
        if ms_to_idx.size == 0:
            raise DataError(path, f"cam{camera}_ms_to_idx is empty")
        if np.any(np.diff(ms_to_idx) < 0) or ms_to_idx[0] < 0 or ms_to_idx[-1] > num_events:
            raise DataError(
                path, f"cam{camera}_ms_to_idx is not a non-decreasing index into the {num_events} events"
            )
        if validate == "full":
            self._validate_full(file, camera, ms_to_idx)
        self.ms_to_idx[camera] = ms_to_idx
        self.num_events[camera] = num_events
        if num_events > rep.ANN_EVENT_COUNT:
            t_count = int(file[f"{group}/t"][rep.ANN_EVENT_COUNT])
            self.cc_start_ms[camera] = math.ceil(t_count / 1e3 / 100) * 100

    def _validate_full(self, file, camera: int, ms_to_idx: np.ndarray) -> None:
        path = self.events_path
        group = f"cam{camera}_events"
        events = {field: file[f"{group}/{field}"][()] for field in ("x", "y", "p", "t")}
        problem = check_event_values(events["x"], events["y"], events["p"], events["t"])
        if problem:
            raise DataError(path, f"camera {camera}: {problem}")
        expected = np.searchsorted(events["t"], np.arange(len(ms_to_idx)) * US_PER_MS, side="left")
        if not np.array_equal(expected, ms_to_idx):
            first = int(np.flatnonzero(expected != ms_to_idx)[0])
            raise DataError(
                path,
                f"cam{camera}_ms_to_idx[{first}] = {ms_to_idx[first]} but the first event with "
                f"t >= {first} ms is {expected[first]}",
            )

    def seq_ms_len(self, camera: int) -> int:
        return min(len(self.ms_to_idx[camera]), self.label_ms_len)

    def event_slice_end(self, camera: int, ms: int) -> int:
        """Index one past the last event before ``ms`` (``ms`` may equal the recording length)."""
        table = self.ms_to_idx[camera]
        return int(table[ms]) if ms < len(table) else self.num_events[camera]


def check_event_values(x, y, p, t, sensor_hw=(SENSOR_H, SENSOR_W), one_based: bool = True) -> str | None:
    """Returns what is wrong with an event slice (ranges, polarity, sortedness) or None if it is fine."""
    if len(t) == 0:
        return None
    low = 1 if one_based else 0
    height, width = sensor_hw
    if int(np.min(x)) < low or int(np.max(x)) > width - 1 + low:
        return f"x outside [{low}, {width - 1 + low}] (min {int(np.min(x))}, max {int(np.max(x))})"
    if int(np.min(y)) < low or int(np.max(y)) > height - 1 + low:
        return f"y outside [{low}, {height - 1 + low}] (min {int(np.min(y))}, max {int(np.max(y))})"
    if int(np.min(p)) < 0 or int(np.max(p)) > 1:
        return f"polarity outside {{0, 1}} (min {int(np.min(p))}, max {int(np.max(p))})"
    steps = np.diff(np.asarray(t, dtype=np.int64))
    if steps.size and int(steps.min()) < 0:
        return f"timestamps not sorted (first decrease after event {int(np.argmax(steps < 0))} of the slice)"
    return None


def _discover(root: pathlib.Path) -> tuple[list[pathlib.Path], list[tuple[str, str]]]:
    """The events files of ``root`` (sorted by subject, session, movement) and the orphans: ``(name, why)`` of
    each label file without its events file and each events file without its label file (warned about)."""
    if not root.is_dir():
        raise DataError(root, "dataset folder does not exist")
    found, orphans = [], []
    for path in sorted(root.glob("*_events.h5")):
        if parse_recording_name(path) is None:
            log.warning("%s: name does not follow S<subject>_session<k>_mov<m>_events.h5; ignored", path)
            continue
        label = path.with_name(path.name[: -len(".h5")] + "_label.h5")
        if not label.exists():
            orphans.append((path.name[: -len("_events.h5")], f"events file without its label file {label.name}"))
            continue
        found.append(path)
    for label in sorted(root.glob("*_events_label.h5")):
        events = label.with_name(label.name[: -len("_label.h5")] + ".h5")
        if not events.exists():
            orphans.append((label.name[: -len("_events_label.h5")],
                            f"label file {label.name} without its events file {events.name}"))
    orphans.sort()
    for name, why in orphans:
        log.warning("DHP19 %s: skipping %s: %s", root, name, why)
    if not found:
        left = f"; ignored: {'; '.join(why for _, why in orphans)}" if orphans else ""
        raise DataError(root, f"no recordings found in {root} (no S*_session*_mov*_events.h5 files found with "
                              f"their _events_label.h5{left})")
    return sorted(found, key=parse_recording_name), orphans


class _DHP19Base:
    """Shared by the window and frame datasets: discovery, split, validation, file access, projection."""

    def __init__(self, root, split: str, p_matrix_dir, cameras, test_subject_min, subjects, exclude, validate,
                 max_open_files):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        for camera in cameras:
            if camera not in CAMERA_TO_MATRIX:
                raise ValueError(f"camera channel {camera} is not one of 0..3")
        if len(cameras) == 0:
            raise ValueError("at least one camera channel is needed")
        self.root = pathlib.Path(root)
        self.split = split
        self.cameras = tuple(cameras)
        default_matrices = self.root / "P_matrices"
        self.p_matrix_dir = pathlib.Path(p_matrix_dir if p_matrix_dir is not None else default_matrices)
        paths, orphans = _discover(self.root)  # first: an empty folder is "no recordings", not "P4.npy missing"
        self._matrices, self._positions = load_projection_matrices(self.p_matrix_dir)
        self._pool = HandlePool(max_open_files)
        self.skipped: list[tuple[str, str]] = []
        self.recordings: list[_Recording] = []
        for name, why in orphans:  # warned about by _discover; listed when split, subjects and exclude take them
            subject = parse_recording_name(name + "_events.h5")[0]
            if ((subject >= test_subject_min) == (split == "test") and name not in exclude
                    and (subjects is None or subject in subjects)):
                self.skipped.append((name, why))
        for path in paths:
            subject = parse_recording_name(path)[0]
            in_split = (subject >= test_subject_min) == (split == "test")
            name = path.name[: -len("_events.h5")]
            if not in_split or (subjects is not None and subject not in subjects):
                continue
            if name in exclude:
                self._skip(name, "listed in exclude")
                continue
            try:
                recording = _Recording(path, self.cameras, validate)
            except DataError as err:
                if validate == "full" and "not sorted" in err.problem:
                    self._skip(name, err.problem)
                    continue
                raise
            self.recordings.append(recording)
        self._check_labels()
        self._by_name = {recording.name: recording for recording in self.recordings}

    def _check_labels(self) -> None:
        """Skips recordings without a single valid joint; a camera matrix that sends every joint of the split
        to infinity / NaN (``p2 = 0``) is an error (rank < 3 is caught when the matrices are read)."""
        usable = []
        for recording in self.recordings:
            if np.isfinite(recording.joints).all(axis=-1).any():
                usable.append(recording)
            else:
                self._skip(recording.name, f"no valid joint in any of its {len(recording.joints)} labels "
                                           "(all NaN)")
        self.recordings = usable
        if not usable:
            return
        joints = np.concatenate([r.joints[np.isfinite(r.joints).all(axis=-1)] for r in usable])  # [N, 3]
        homogeneous = np.concatenate([joints, np.ones((len(joints), 1))], axis=-1)
        for camera in self.cameras:
            depth = homogeneous @ self._matrices[camera][2]
            if not np.any(np.isfinite(depth) & (depth != 0)):
                raise DataError(self.p_matrix_dir / f"P{CAMERA_TO_MATRIX[camera]}.npy",
                                f"projects every joint of the {len(usable)} recording(s) of the {self.split} "
                                f"split to infinity / NaN (third row gives 0; camera {camera}); wrong matrix?")

    def _skip(self, name: str, why: str) -> None:
        log.warning("DHP19 %s split: skipping %s: %s", self.split, name, why)
        self.skipped.append((name, why))

    def _require_items(self, count: int) -> None:
        """An empty split is almost always a wrong path or filter: say so instead of training on nothing."""
        if count == 0:
            skipped = "; ".join(f"{name}: {why}" for name, why in self.skipped) or "none"
            raise DataError(self.root, f"the {self.split} split has no items (skipped: {skipped})")

    # -- cameras -------------------------------------------------------------------------------------
    def projection_matrix(self, camera: int) -> np.ndarray:
        """The 3x4 matrix of camera channel ``camera`` (sensor pixels, v measured from the bottom row)."""
        return self._matrices[camera].copy()

    def camera_position(self, camera: int) -> np.ndarray:
        """Centre (mm) of camera channel ``camera`` (row ``CAMERA_TO_MATRIX[camera] - 1`` of the file)."""
        return self._positions[CAMERA_TO_MATRIX[camera] - 1].copy()

    # -- reading -------------------------------------------------------------------------------------
    def _read_events(self, recording: _Recording, camera: int, start: int, stop: int, what: str):
        """Events ``start:stop`` of one camera with 0-based pixels; checked (ranges, polarity, order)."""
        file = self._pool.get(recording.events_path)
        group = f"cam{camera}_events"
        x, y, p, t = (file[f"{group}/{field}"][start:stop] for field in ("x", "y", "p", "t"))
        problem = check_event_values(x, y, p, t)
        if problem:
            raise DataError(recording.events_path, f"camera {camera}, {what}: {problem}")
        return x.astype(np.int64) - 1, y.astype(np.int64) - 1, p.astype(np.int64), t.astype(np.int64)

    def _ann_frame(self, recording: _Recording, camera: int, ms: int, what: str) -> np.ndarray:
        """The constant-count ANN input ending at ``ms_to_idx[ms]`` -> ``[256, 256, 20]``."""
        end = recording.event_slice_end(camera, ms)
        if end < rep.ANN_EVENT_COUNT:
            raise DataError(
                recording.events_path,
                f"camera {camera}, {what}: only {end} events before {ms} ms, the ANN input needs "
                f"{rep.ANN_EVENT_COUNT}",
            )
        x, y, p, t = self._read_events(recording, camera, end - rep.ANN_EVENT_COUNT, end, what)
        if t.size and t[-1] >= ms * US_PER_MS:
            raise DataError(
                recording.events_path,
                f"camera {camera}, {what}: event at t={t[-1]} us is not before {ms} ms "
                "(ms_to_idx disagrees with t)",
            )
        # ... and the frame must end at the last event before ms: the next event is at or after ms.
        if end < recording.num_events[camera]:
            next_t = int(self._pool.get(recording.events_path)[f"cam{camera}_events/t"][end])
            if next_t < ms * US_PER_MS:
                raise DataError(
                    recording.events_path,
                    f"camera {camera}, {what}: event {end} at t={next_t} us is before {ms} ms but "
                    f"cam{camera}_ms_to_idx[{ms}] = {end} ends the frame before it (ms_to_idx disagrees with t)",
                )
        return rep.ann_frame(x, y, p, t)

    def _pixels(self, joints: np.ndarray, camera: int) -> np.ndarray:
        return project_joints(joints, self._matrices[camera]).astype(np.float32)

    def recording_names(self) -> list[str]:
        return [recording.name for recording in self.recordings]

    def close(self) -> None:
        """Closes the file handles of every thread (call it once the loaders reading it are closed); the
        dataset stays usable, files are reopened on the next read."""
        self._pool.close_all()


class DHP19Dataset(_DHP19Base):
    """Windows of the hybrid ANN-SNN (see the module docstring); ``dataset[i]`` is a dict of numpy arrays.

    Keys (T = SNN steps, J = 13, crop 256 x 256):
    ``events`` [T, 256, 256, 2] float32, ``ann_input`` [256, 256, 20] float32 (``ann_input_next`` too when
    ``ann_next``), ``landmarks`` [T, J, 2] (u, v) float32 NaN where masked or unlabelled, ``step_has_label``
    [T] bool, ``joints_3d`` [T, J, 3] float32 mm, ``ann_landmarks`` [J, 2], ``window_start_ms``, ``camera``,
    ``window_index`` ints, ``recording`` str. Items are ordered camera-major, then recording, then window.
    """

    def __init__(self, root, split: str = "train", p_matrix_dir=None, config: DHP19Config | None = None,
                 **overrides):
        config = dataclasses.replace(config or DHP19Config(), **overrides)
        self.config = config
        self.window_ms = config.window_ms or (100 if split == "train" else 200)
        self.ann_next = config.ann_next if config.ann_next is not None else split == "train"
        if config.window_step_ms <= 0 or self.window_ms <= 0:
            raise ValueError("window_ms and window_step_ms must be positive")
        if self.window_ms % LABEL_PERIOD_MS or config.window_step_ms % LABEL_PERIOD_MS:
            raise ValueError(
                f"window_ms {self.window_ms} and window_step_ms {config.window_step_ms} must be multiples of the "
                "10 ms label period (windows start and end on label slots)"
            )
        if config.validate not in ("window", "full"):
            raise ValueError(f"validate must be 'window' or 'full', got {config.validate!r}")
        if config.bin_mode == "paper":
            self.num_steps = self.window_ms // LABEL_PERIOD_MS
        elif config.bin_mode == "exact":
            self.step_us = round(config.step_ms * US_PER_MS)
            if self.step_us <= 0 or abs(self.step_us - config.step_ms * US_PER_MS) > 1e-6 or (
                self.window_ms * US_PER_MS % self.step_us
            ):
                raise ValueError(
                    f"step_ms {config.step_ms} must be a whole number of microseconds dividing window_ms "
                    f"{self.window_ms}"
                )
            self.num_steps = self.window_ms * US_PER_MS // self.step_us
        else:
            raise ValueError(f"bin_mode must be 'paper' or 'exact', got {config.bin_mode!r}")
        if config.representation not in ("histogram", "voxel"):
            raise ValueError(f"representation must be 'histogram' or 'voxel', got {config.representation!r}")
        super().__init__(root, split, p_matrix_dir, config.cameras, config.test_subject_min, config.subjects,
                         config.exclude, config.validate, config.max_open_files)
        self.step_has_label = self._label_steps()
        self._windows: dict[tuple[str, int], tuple[int, int]] = {}  # (recording, camera) -> (first ms, count)
        for recording in list(self.recordings):
            for camera in self.cameras:
                why = self._plan_windows(recording, camera)
                if why:
                    self._skip(f"{recording.name} camera {camera}", why)
            if config.align_cameras:
                self._align(recording)
        # Flat index: camera-major, then recording, then window.
        self._blocks: list[tuple[int, _Recording]] = []
        self._offsets: list[int] = [0]
        for camera in self.cameras:
            for recording in self.recordings:
                if (recording.name, camera) in self._windows:
                    self._blocks.append((camera, recording))
                    self._offsets.append(self._offsets[-1] + self._windows[recording.name, camera][1])
        self._require_items(len(self))

    def _label_steps(self) -> np.ndarray:
        """Which steps carry a label; the same for every window since windows start on the 10 ms grid."""
        if self.config.bin_mode == "paper":
            return np.ones(self.num_steps, dtype=bool)
        steps = np.zeros(self.num_steps, dtype=bool)
        steps[self._label_step_of_slot()] = True
        return steps

    def _label_step_of_slot(self) -> np.ndarray:
        """Exact mode: step of the k-th label of a window (label time 10 k ms after the window start)."""
        slot_us = np.arange(self.window_ms // LABEL_PERIOD_MS) * LABEL_PERIOD_MS * US_PER_MS
        return slot_us // self.step_us

    def _plan_windows(self, recording: _Recording, camera: int) -> str | None:
        """Records (first window start, number of windows) or returns why the recording has none."""
        if camera not in recording.cc_start_ms:
            return f"only {recording.num_events[camera]} events, the ANN input needs > {rep.ANN_EVENT_COUNT}"
        step = self.config.window_step_ms
        length = recording.seq_ms_len(camera)
        first = recording.cc_start_ms[camera]
        count = min((length - first - step) // step, (length - first - self.window_ms) // step + 1)
        # The official loader asserts >= 7500 events before each window; drop leading windows that lack them.
        dropped = 0
        while count > 0 and recording.event_slice_end(camera, first) < rep.ANN_EVENT_COUNT:
            first, count, dropped = first + step, count - 1, dropped + 1
        if dropped:
            log.warning("%s camera %d: dropped %d leading window(s) with fewer than %d events before them",
                        recording.events_path, camera, dropped, rep.ANN_EVENT_COUNT)
        if count <= 0:
            return f"no complete {self.window_ms} ms window (length {length} ms, first start {first} ms)"
        self._windows[recording.name, camera] = (first, count)
        return None

    def _align(self, recording: _Recording) -> None:
        """Restricts every camera of ``recording`` to the windows all of them have (same starts)."""
        plans = [self._windows.get((recording.name, camera)) for camera in self.cameras]
        if any(plan is None for plan in plans):
            for camera in self.cameras:
                if self._windows.pop((recording.name, camera), None) is not None:
                    self._skip(f"{recording.name} camera {camera}", "another camera has no windows (align_cameras)")
            return
        step = self.config.window_step_ms
        first = max(start for start, _ in plans)
        stop = min(start + count * step for start, count in plans)
        if any((first - start) % step for start, _ in plans):
            raise ValueError(f"{recording.name}: camera window grids are offset, cannot align them")
        for camera in self.cameras:
            self._windows[recording.name, camera] = (first, max((stop - first) // step, 0))
            if stop <= first:
                del self._windows[recording.name, camera]
                self._skip(f"{recording.name} camera {camera}", "cameras share no window (align_cameras)")

    def __len__(self) -> int:
        return self._offsets[-1]

    def window_start_ms(self, recording: str, window_index: int, camera: int | None = None) -> int:
        """Start (ms) of window ``window_index`` of ``recording`` for ``camera``."""
        camera = self.cameras[0] if camera is None else camera
        first, _ = self._windows[recording, camera]
        return first + window_index * self.config.window_step_ms

    def item_at(self, recording: str, start_ms: int, camera: int | None = None) -> dict:
        """The window of ``recording`` starting at ``start_ms`` seen by ``camera`` (KeyError if none)."""
        camera = self.cameras[0] if camera is None else camera
        if (recording, camera) not in self._windows:
            raise KeyError(f"recording {recording!r} has no windows for camera {camera}")
        first, count = self._windows[recording, camera]
        index, offset = divmod(start_ms - first, self.config.window_step_ms)
        if offset or not 0 <= index < count:
            raise KeyError(f"{recording} camera {camera}: no window starts at {start_ms} ms")
        return self.item(recording, index, camera)

    def num_windows(self, recording: str, camera: int) -> int:
        """Number of windows of ``recording`` seen by ``camera`` (0 if it was skipped)."""
        return self._windows.get((recording, camera), (0, 0))[1]

    def index(self) -> list[tuple[int, str, int]]:
        """(camera, recording, window_index) of every item, in item order."""
        return [
            (camera, recording.name, w)
            for camera, recording in self._blocks
            for w in range(self._windows[recording.name, camera][1])
        ]

    # -- what evaluation asks of a window dataset (hybridjax.eval.protocol.CalibratedWindowDataset) ----
    has_3d_labels = True  # joints_3d and the camera calibration are there: 3-D MPJPE is defined

    @property
    def window_step_ms(self) -> int:
        """ms between the starts of consecutive windows."""
        return self.config.window_step_ms

    def label_times_ms(self, window_start_ms: int) -> list[int]:
        """Label times (ms) of the window's labelled steps: the k-th label slot ends at ``s + 10 (k + 1)``.

        The ANN of the every-label baseline sees the 7500 events ending there (the official ANN pairing of
        a frame ending at ``m`` ms with label ``m / 10 - 1``).
        """
        count = int(np.count_nonzero(self.step_has_label))
        return [int(window_start_ms) + LABEL_PERIOD_MS * (k + 1) for k in range(count)]

    def ann_input_at(self, recording: str, camera: int, ms: int) -> np.ndarray:
        """ANN input [256, 256, 20] of the 7500 events of ``camera`` ending at ``ms`` of ``recording``."""
        if recording not in self._by_name:
            raise KeyError(f"recording {recording!r} is not in the {self.split} split")
        return self._ann_frame(self._by_name[recording], camera, int(ms), f"ANN input at {ms} ms")

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} windows")
        block = bisect.bisect_right(self._offsets, i) - 1
        camera, recording = self._blocks[block]
        return self.item(recording.name, i - self._offsets[block], camera)

    def item(self, recording: str, window_index: int, camera: int | None = None) -> dict:
        """Window ``window_index`` of ``recording`` seen by ``camera`` (default: the first configured one).

        Window indices count from each camera's own first window (its ``cc_start``), so the same index can
        mean different times in two cameras unless ``align_cameras`` is set; :meth:`item_at` pairs windows
        by start time instead.
        """
        camera = self.cameras[0] if camera is None else camera
        if recording not in self._by_name:
            raise KeyError(f"recording {recording!r} is not in the {self.split} split")
        if (recording, camera) not in self._windows:
            raise KeyError(f"recording {recording!r} has no windows for camera {camera}")
        first, count = self._windows[recording, camera]
        if not 0 <= window_index < count:
            raise IndexError(f"{recording} camera {camera}: window {window_index} outside 0..{count - 1}")
        rec = self._by_name[recording]
        start = first + window_index * self.config.window_step_ms
        end = start + self.window_ms
        what = f"window {window_index} ({start}-{end} ms)"
        item = {"events": self._snn_events(rec, camera, start, end, what)}
        item["ann_input"] = self._ann_frame(rec, camera, start, what + " ANN input")
        if self.ann_next:
            # The next window's ANN input; the official loader steps back one ms when that start is the length
            # of ms_to_idx (one past its last entry).
            next_ms = min(start + self.config.window_step_ms, len(rec.ms_to_idx[camera]) - 1)
            item["ann_input_next"] = self._ann_frame(rec, camera, next_ms, what + " next ANN input")
        item.update(self._labels(rec, camera, start))
        item.update(
            window_start_ms=start, camera=camera, recording=rec.name, window_index=window_index,
        )
        return item

    def _snn_events(self, rec: _Recording, camera: int, start: int, end: int, what: str) -> np.ndarray:
        begin, stop = rec.event_slice_end(camera, start), rec.event_slice_end(camera, end)
        x, y, p, t = self._read_events(rec, camera, begin, stop, what)
        if t.size and (t[0] < start * US_PER_MS or t[-1] >= end * US_PER_MS):
            raise DataError(
                rec.events_path,
                f"camera {camera}, {what}: events at t in [{t[0]}, {t[-1]}] us, outside the window "
                "(ms_to_idx disagrees with t)",
            )
        n = self.num_steps
        if self.config.bin_mode == "paper":
            if self.config.representation == "voxel":
                return rep.voxel_grid(x, y, p, t, n)
            return rep.stacked_histogram(x, y, p, t, n)
        if self.config.representation == "voxel":
            return rep.voxel_grid(x, y, p, t, n, t_range=(start * US_PER_MS, end * US_PER_MS))
        return rep.fixed_time_histogram(x, y, p, t, start * US_PER_MS, self.step_us, n)

    def _labels(self, rec: _Recording, camera: int, start: int) -> dict:
        first_label = start // LABEL_PERIOD_MS
        per_window = self.window_ms // LABEL_PERIOD_MS
        joints = rec.joints[first_label:first_label + per_window]  # [L, J, 3]
        if joints.shape[0] != per_window:
            raise DataError(
                rec.label_path, f"labels {first_label}..{first_label + per_window - 1} do not exist"
            )
        pixels = self._pixels(joints, camera)  # [L, J, 2]
        if self.config.bin_mode == "paper":
            landmarks, joints_3d = pixels, joints.astype(np.float32)
        else:
            landmarks = np.full((self.num_steps, NUM_JOINTS, 2), np.nan, dtype=np.float32)
            joints_3d = np.full((self.num_steps, NUM_JOINTS, 3), np.nan, dtype=np.float32)
            # Where several labels share a step (steps longer than 10 ms) the earliest one is kept.
            steps, earliest = np.unique(self._label_step_of_slot(), return_index=True)
            landmarks[steps] = pixels[earliest]
            joints_3d[steps] = joints[earliest]
        # The ANN input is scored against the label just before the window (label 0 for a window at 0 ms).
        ann_label = max(first_label - 1, 0)
        return {
            "landmarks": landmarks,
            "step_has_label": self.step_has_label.copy(),
            "joints_3d": joints_3d,
            "ann_landmarks": self._pixels(rec.joints[ann_label], camera),
        }


class DHP19FrameDataset(_DHP19Base):
    """The official ANN-only dataset: one constant-count frame per 100 ms and the label just before it.

    Frame ``k`` of a recording ends at ``s = cc_start + 100 k`` ms (7500 events ending at ``ms_to_idx[s]``,
    10 bins, 20 channels); its label is ``s / 10 - 1``. There are ``floor((L - cc_start) / 100)`` frames.
    Keys (named as in :class:`DHP19Dataset`, so the ANN trains on either): ``ann_input`` [256, 256, 20]
    float32, ``ann_landmarks`` [J, 2] float32 (u, v) NaN where masked, ``ann_joints_3d`` [J, 3] float32,
    ``timestamp_ms`` float (of the label), ``window_start_ms``, ``camera``, ``window_index`` ints,
    ``recording`` str.
    """

    def __init__(self, root, split: str = "train", p_matrix_dir=None, cameras=(3,),
                 test_subject_min: int = 13, subjects=None, exclude=(), validate: str = "window",
                 frame_step_ms: int = 100, max_open_files: int = 64):
        super().__init__(root, split, p_matrix_dir, cameras, test_subject_min, subjects, exclude, validate,
                         max_open_files)
        self.frame_step_ms = frame_step_ms
        self._blocks: list[tuple[int, _Recording, int]] = []
        self._offsets = [0]
        for camera in self.cameras:
            for recording in self.recordings:
                if camera not in recording.cc_start_ms:
                    self._skip(f"{recording.name} camera {camera}",
                               f"only {recording.num_events[camera]} events, need > {rep.ANN_EVENT_COUNT}")
                    continue
                first = recording.cc_start_ms[camera]
                count = (recording.seq_ms_len(camera) - first) // frame_step_ms
                while count > 0 and recording.event_slice_end(camera, first) < rep.ANN_EVENT_COUNT:
                    first, count = first + frame_step_ms, count - 1
                if count <= 0:
                    self._skip(f"{recording.name} camera {camera}", "no frame with 7500 events before it")
                    continue
                self._blocks.append((camera, recording, first))
                self._offsets.append(self._offsets[-1] + count)
        self._require_items(len(self))

    def __len__(self) -> int:
        return self._offsets[-1]

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} frames")
        block = bisect.bisect_right(self._offsets, i) - 1
        camera, rec, first = self._blocks[block]
        k = i - self._offsets[block]
        ms = first + k * self.frame_step_ms
        label = ms // LABEL_PERIOD_MS - 1
        return {
            "ann_input": self._ann_frame(rec, camera, ms, f"frame {k} ({ms} ms)"),
            "ann_landmarks": self._pixels(rec.joints[label], camera),
            "ann_joints_3d": rec.joints[label].astype(np.float32),
            "timestamp_ms": float(rec.timestamps_us[label] / 1e3),
            "window_start_ms": ms,
            "camera": camera,
            "recording": rec.name,
            "window_index": k,
        }
