"""Event-Human3.6M in the official layout (SPEC section 4), as windows with the same item keys as DHP19.

Layout: ``{root}/{subject}/upsample/{Action}.{camcode}/events.h5`` holds ``events/{x,y,p,t}`` (x, y 0-based on
the 320 x 256 frame, t in nanoseconds), ``ms_to_idx`` (index of the first event with ``t >= k`` ms) and a
scalar ``cam_view``; ``{root}/labels.h5`` holds ``/{subject}/{Action}/cam_view_{c}`` (N, 2, 13) pixels
(u, v) and ``/{subject}/{Action}/timestamps_ms`` (50 Hz). Spaces in action names are underscores in the
folder names (``SittingDown_2.54138969`` -> ``SittingDown 2``).

Windows: ``cc_start = ceil(t[7500] / 1e6 / 100) * 100`` ms; window ``i`` starts at ``s = cc_start + 100 i``
and lasts 200 ms; there are ``floor((L - cc_start - 200) / 100) + 1`` windows with
``L = min(len(ms_to_idx), last label time)``. The paper setting cuts a window into 20 span-fraction bins
(``bin_mode='paper'``); ``bin_mode='exact'`` uses bins of exactly ``step_ms``.

Labels follow the official Human3.6M loader: the labels of a window are those at ``s + 20, s + 40, ..,
s + 200`` ms, each rounded to whole pixels, and label ``tau`` is attached to the step that *ends* at
``tau`` (steps 1, 3, .., 19 of the paper's 20), so ``step_has_label`` alternates. Joints outside the frame
or NaN are masked (NaN). There are no 3-D labels: ``joints_3d`` is all NaN (the missing-value convention).
The ANN input is the 7500 events ending at ``ms_to_idx[s]`` (10 bins, 20 channels, full frame) and
``ann_landmarks`` the label at ``s``.
"""
from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import pathlib
from typing import Literal

import numpy as np

from . import representations as rep
from ._h5 import HandlePool, open_h5, require_dataset
from .dhp19 import check_event_values
from .errors import DataError

log = logging.getLogger(__name__)

FRAME_H, FRAME_W = 256, 320
FULL_FRAME = (0, 0, FRAME_H, FRAME_W)
NUM_JOINTS = 13
NS_PER_MS = 1_000_000
CAMCODE_TO_VIEW = {"54138969": 0, "55011271": 1, "58860488": 2, "60457274": 3}
TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS = ("S9", "S11")


@dataclasses.dataclass(frozen=True)
class EventH36MConfig:
    """Options of :class:`EventH36MDataset` (defaults = the paper's Human3.6M setting)."""

    cameras: tuple[int, ...] = (0, 1, 2, 3)  # camera views to use (from the folder's camera code)
    train_subjects: tuple[str, ...] = TRAIN_SUBJECTS  # subjects of the train split
    test_subjects: tuple[str, ...] = TEST_SUBJECTS  # subjects of the test split
    exclude: tuple[tuple[str, str], ...] = (("S11", "Directions"),)  # (subject, action) left out (official)
    window_ms: int = 200  # SNN window length
    window_step_ms: int = 100  # distance between window starts
    num_bins: int = 20  # paper mode: span-fraction bins per window
    bin_mode: Literal["paper", "exact"] = "paper"  # span-fraction bins (official) or fixed-length bins
    step_ms: float = 10.0  # exact mode: step length in ms (whole microseconds, divides window_ms)
    label_period_ms: int = 20  # labels are 50 Hz
    ann_next: bool | None = None  # also build the ANN input of the next window start; None -> only for train
    max_open_files: int = 64  # open h5 handles kept per loader thread


class _Sequence:
    """One (subject, action, camera) sequence: validated metadata, cached ms_to_idx and labels."""

    def __init__(self, folder: pathlib.Path, subject: str, labels_file, labels_path: pathlib.Path):
        self.folder = folder
        self.events_path = folder / "events.h5"
        self.subject = subject
        action_folder, camcode = folder.name.rsplit(".", 1)
        self.camera = CAMCODE_TO_VIEW[camcode]
        spaced = action_folder.replace("_", " ")
        group = labels_file.get(subject)
        if group is not None and spaced in group:
            self.action = spaced
        elif group is not None and action_folder in group:
            self.action = action_folder
        else:
            raise LookupError(f"no labels at /{subject}/{spaced} in {labels_path}")
        self.name = f"{subject}/{self.action}.{camcode}"
        base = f"{subject}/{self.action}"
        pixels = require_dataset(labels_file, labels_path, f"{base}/cam_view_{self.camera}", ndim=3, kind="iuf")
        stamps = require_dataset(labels_file, labels_path, f"{base}/timestamps_ms", ndim=1, kind="iuf")
        if pixels.shape[1:] != (2, NUM_JOINTS) or pixels.shape[0] != stamps.shape[0] or pixels.shape[0] == 0:
            raise DataError(
                labels_path,
                f"{base}: cam_view_{self.camera} has shape {pixels.shape} and timestamps_ms {stamps.shape}; "
                f"expected (N, 2, {NUM_JOINTS}) and (N,) with N > 0",
            )
        # Official: landmarks rounded to whole pixels; [N, J, 2] (u, v) in hybridjax order.
        with np.errstate(invalid="ignore"):
            self.landmarks = np.round(np.transpose(pixels[()].astype(np.float64), (0, 2, 1)))
        self.timestamps_ms = stamps[()].astype(np.float64)
        if np.any(~np.isfinite(self.timestamps_ms)) or np.any(np.diff(self.timestamps_ms) <= 0):
            raise DataError(labels_path, f"{base}/timestamps_ms are not finite and strictly increasing")
        with open_h5(self.events_path) as file:
            lengths = {f: require_dataset(file, self.events_path, f"events/{f}", 1, "iu").shape[0] for f in "xypt"}
            if len(set(lengths.values())) != 1:
                raise DataError(self.events_path, f"'events' arrays differ in length: {lengths}")
            self.num_events = lengths["t"]
            table = require_dataset(file, self.events_path, "ms_to_idx", ndim=1, kind="iu")[()].astype(np.int64)
            if table.size == 0 or np.any(np.diff(table) < 0) or table[0] < 0 or table[-1] > self.num_events:
                raise DataError(
                    self.events_path, f"ms_to_idx is not a non-decreasing index into {self.num_events} events"
                )
            self.ms_to_idx = table
            view = require_dataset(file, self.events_path, "cam_view")
            if view.shape not in ((), (1,)) or int(np.asarray(view[()]).reshape(-1)[0]) != self.camera:
                raise DataError(
                    self.events_path,
                    f"cam_view {view[()]} does not match camera code {camcode} (view {self.camera})",
                )
            self.cc_start_ms = None
            if self.num_events > rep.ANN_EVENT_COUNT:
                t_count = int(file["events/t"][rep.ANN_EVENT_COUNT])
                self.cc_start_ms = math.ceil(t_count / NS_PER_MS / 100) * 100
        self.seq_ms_len = min(len(self.ms_to_idx), int(self.timestamps_ms[-1]))

    def event_slice_end(self, ms: int) -> int:
        return int(self.ms_to_idx[ms]) if ms < len(self.ms_to_idx) else self.num_events

    def label_index(self, ms: float) -> int | None:
        position = int(np.searchsorted(self.timestamps_ms, ms))
        if position < len(self.timestamps_ms) and abs(self.timestamps_ms[position] - ms) < 1e-6:
            return position
        return None


class EventH36MDataset:
    """Windows of Event-Human3.6M; ``dataset[i]`` is a dict with the keys of :class:`~.dhp19.DHP19Dataset`.

    ``events`` [T, 256, 320, 2], ``ann_input`` [256, 320, 20] (+ ``ann_input_next`` for train),
    ``landmarks`` [T, 13, 2] (u, v) NaN where masked or unlabelled, ``step_has_label`` [T], ``joints_3d``
    [T, 13, 3] (all NaN: no 3-D labels), ``ann_landmarks`` [13, 2], ``window_start_ms``, ``camera``,
    ``window_index``, ``recording`` (``subject/action.camcode``). Order: sequences sorted by name, then windows.
    """

    def __init__(self, root, split: str = "train", config: EventH36MConfig | None = None, **overrides):
        config = dataclasses.replace(config or EventH36MConfig(), **overrides)
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.config, self.split, self.root = config, split, pathlib.Path(root)
        self.ann_next = config.ann_next if config.ann_next is not None else split == "train"
        if config.window_ms % config.label_period_ms:
            raise ValueError(f"window_ms {config.window_ms} is not a multiple of the label period")
        if config.bin_mode == "paper":
            self.num_steps = config.num_bins
            if config.window_ms % config.num_bins:
                raise ValueError(f"{config.num_bins} bins do not split {config.window_ms} ms into whole ms")
            self._step_ns = config.window_ms * NS_PER_MS // config.num_bins  # nominal, for label placement
        elif config.bin_mode == "exact":
            step_us = round(config.step_ms * 1000)
            if step_us <= 0 or abs(step_us - config.step_ms * 1000) > 1e-6 or (config.window_ms * 1000) % step_us:
                raise ValueError(f"step_ms {config.step_ms} must be whole microseconds dividing {config.window_ms}")
            self._step_ns = step_us * 1000
            self.num_steps = config.window_ms * NS_PER_MS // self._step_ns
        else:
            raise ValueError(f"bin_mode must be 'paper' or 'exact', got {config.bin_mode!r}")
        # Label k of a window sits at s + (k + 1) * period and belongs to the step that ends there.
        offsets_ns = np.arange(1, config.window_ms // config.label_period_ms + 1) * config.label_period_ms * NS_PER_MS
        self._label_steps = -(-offsets_ns // self._step_ns) - 1
        if np.any(self._label_steps >= self.num_steps):
            raise ValueError("label placement fell outside the window")
        self.step_has_label = np.zeros(self.num_steps, dtype=bool)
        self.step_has_label[self._label_steps] = True
        self._pool = HandlePool(config.max_open_files)
        self.skipped: list[tuple[str, str]] = []
        self.sequences: list[_Sequence] = []
        self._discover()
        self._offsets = [0]
        self._first_ms: list[int] = []
        for sequence in self.sequences:
            first = sequence.cc_start_ms
            step = config.window_step_ms
            count = (sequence.seq_ms_len - first - config.window_ms) // step + 1
            while count > 0 and sequence.event_slice_end(first) < rep.ANN_EVENT_COUNT:
                first, count = first + step, count - 1
            count = max(count, 0)
            if count == 0:
                self._skip(sequence.name, f"no complete {config.window_ms} ms window")
            self._first_ms.append(first)
            self._offsets.append(self._offsets[-1] + count)
        if len(self) == 0:
            skipped = "; ".join(f"{n}: {w}" for n, w in self.skipped) or "none"
            raise DataError(self.root, f"the {split} split has no items (skipped: {skipped})")
        self._by_name = {s.name: k for k, s in enumerate(self.sequences)}

    def _skip(self, name: str, why: str) -> None:
        log.warning("Event-Human3.6M %s split: skipping %s: %s", self.split, name, why)
        self.skipped.append((name, why))

    def _discover(self) -> None:
        labels_path = self.root / "labels.h5"
        if not self.root.is_dir():
            raise DataError(self.root, "dataset folder does not exist")
        if not labels_path.exists():
            raise DataError(labels_path, "label file does not exist")
        subjects = self.config.train_subjects if self.split == "train" else self.config.test_subjects
        with open_h5(labels_path) as labels_file:
            for subject in subjects:
                subject_dir = self.root / subject / "upsample"
                if not subject_dir.is_dir():
                    self._skip(subject, f"folder {subject_dir} does not exist")
                    continue
                for folder in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
                    camcode = folder.name.rsplit(".", 1)[-1]
                    if "." not in folder.name or camcode not in CAMCODE_TO_VIEW:
                        self._skip(f"{subject}/{folder.name}", "folder name is not {Action}.{known camera code}")
                        continue
                    if CAMCODE_TO_VIEW[camcode] not in self.config.cameras:
                        continue
                    action = folder.name.rsplit(".", 1)[0]
                    excluded = self.config.exclude
                    if (subject, action.replace("_", " ")) in excluded or (subject, action) in excluded:
                        self._skip(f"{subject}/{folder.name}", "listed in exclude")
                        continue
                    try:
                        sequence = _Sequence(folder, subject, labels_file, labels_path)
                    except LookupError as err:  # e.g. the '_ALL' recordings, which have no labels
                        self._skip(f"{subject}/{folder.name}", str(err))
                        continue
                    if not np.isfinite(sequence.landmarks).all(axis=-1).any():
                        self._skip(sequence.name, f"no valid joint in any of its {len(sequence.landmarks)} labels "
                                                  "(all NaN)")
                        continue
                    if sequence.cc_start_ms is None:
                        self._skip(sequence.name, f"only {sequence.num_events} events, need > {rep.ANN_EVENT_COUNT}")
                        continue
                    self.sequences.append(sequence)

    def __len__(self) -> int:
        return self._offsets[-1]

    def recording_names(self) -> list[str]:
        return [s.name for s in self.sequences]

    # ---- what evaluation asks of a window dataset (hybridjax.eval.protocol.WindowDataset)

    has_3d_labels = False  # joints_3d is all NaN and there is no camera calibration: no 3-D MPJPE

    @property
    def window_ms(self) -> int:
        """Length of a window in ms."""
        return self.config.window_ms

    @property
    def window_step_ms(self) -> int:
        """ms between the starts of consecutive windows."""
        return self.config.window_step_ms

    @property
    def cameras(self) -> tuple[int, ...]:
        """Camera views present in this split, ascending."""
        return tuple(sorted({s.camera for s in self.sequences}))

    def index(self) -> list[tuple[int, str, int]]:
        """(camera, recording, window_index) of every item, in item order."""
        return [(seq.camera, seq.name, w) for k, seq in enumerate(self.sequences)
                for w in range(self._offsets[k + 1] - self._offsets[k])]

    def label_times_ms(self, window_start_ms: int) -> list[int]:
        """Times (ms) of the labels of the window starting at ``window_start_ms``, one per labelled step.

        The ANN of the every-label baseline sees the 7500 events ending at each of them (the official
        Human3.6M pairing of an ANN input ending at ``m`` ms with the label at ``m``).
        """
        period = self.config.label_period_ms
        return [window_start_ms + (k + 1) * period for k in range(len(self._label_steps))]

    def ann_input_at(self, recording: str, camera: int, ms: int) -> np.ndarray:
        """ANN input [256, 320, 20] of the 7500 events ending at ``ms`` of sequence ``recording``."""
        if recording not in self._by_name:
            raise KeyError(f"sequence {recording!r} is not in the {self.split} split")
        seq = self.sequences[self._by_name[recording]]
        if seq.camera != camera:
            raise ValueError(f"sequence {recording!r} is camera view {seq.camera}, not {camera}")
        return self._ann_frame(seq, int(ms), f"ANN input at {ms} ms")

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range for {len(self)} windows")
        k = bisect.bisect_right(self._offsets, i) - 1
        return self.item(self.sequences[k].name, i - self._offsets[k])

    def item(self, recording: str, window_index: int) -> dict:
        """Window ``window_index`` of sequence ``recording`` (``subject/action.camcode``)."""
        if recording not in self._by_name:
            raise KeyError(f"sequence {recording!r} is not in the {self.split} split")
        k = self._by_name[recording]
        seq = self.sequences[k]
        count = self._offsets[k + 1] - self._offsets[k]
        if not 0 <= window_index < count:
            raise IndexError(f"{recording}: window {window_index} outside 0..{count - 1}")
        start = self._first_ms[k] + window_index * self.config.window_step_ms
        end = start + self.config.window_ms
        what = f"window {window_index} ({start}-{end} ms)"
        x, y, p, t = self._read(seq, seq.event_slice_end(start), seq.event_slice_end(end), what)
        if t.size and (t[0] < start * NS_PER_MS or t[-1] >= end * NS_PER_MS):
            raise DataError(seq.events_path, f"{what}: events outside the window (ms_to_idx disagrees with t)")
        if self.config.bin_mode == "paper":
            events = rep.stacked_histogram(x, y, p, t, self.num_steps, FULL_FRAME)
        else:
            events = rep.fixed_time_histogram(x, y, p, t, start * NS_PER_MS, self._step_ns, self.num_steps, FULL_FRAME)
        item = {"events": events, "ann_input": self._ann_frame(seq, start, what + " ANN input")}
        if self.ann_next:
            next_ms = min(start + self.config.window_step_ms, len(seq.ms_to_idx) - 1)
            item["ann_input_next"] = self._ann_frame(seq, next_ms, what + " next ANN input")
        landmarks = np.full((self.num_steps, NUM_JOINTS, 2), np.nan, dtype=np.float32)
        period = self.config.label_period_ms
        for k_label, step in enumerate(self._label_steps):
            landmarks[step] = self._landmarks_at(seq, start + (k_label + 1) * period)
        item.update(
            landmarks=landmarks,
            step_has_label=self.step_has_label.copy(),
            joints_3d=np.full((self.num_steps, NUM_JOINTS, 3), np.nan, dtype=np.float32),
            ann_landmarks=self._landmarks_at(seq, start),
            window_start_ms=start, camera=seq.camera, recording=seq.name, window_index=window_index,
        )
        return item

    def _landmarks_at(self, seq: _Sequence, ms: int) -> np.ndarray:
        index = seq.label_index(ms)
        if index is None:
            raise DataError(seq.folder, f"no label at {ms} ms for /{seq.subject}/{seq.action}")
        uv = seq.landmarks[index].astype(np.float32)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(uv).all(-1) & (uv[:, 0] >= 0) & (uv[:, 0] < FRAME_W) & (uv[:, 1] >= 0) & (
                uv[:, 1] < FRAME_H
            )
        uv[~valid] = np.nan
        return uv

    def _read(self, seq: _Sequence, begin: int, stop: int, what: str):
        file = self._pool.get(seq.events_path)
        x, y, p, t = (file[f"events/{f}"][begin:stop] for f in "xypt")
        problem = check_event_values(x, y, p, t, sensor_hw=(FRAME_H, FRAME_W), one_based=False)
        if problem:
            raise DataError(seq.events_path, f"{what}: {problem}")
        return x.astype(np.int64), y.astype(np.int64), p.astype(np.int64), t.astype(np.int64)

    def _ann_frame(self, seq: _Sequence, ms: int, what: str) -> np.ndarray:
        end = seq.event_slice_end(ms)
        if end < rep.ANN_EVENT_COUNT:
            raise DataError(seq.events_path, f"{what}: only {end} events before {ms} ms, need {rep.ANN_EVENT_COUNT}")
        x, y, p, t = self._read(seq, end - rep.ANN_EVENT_COUNT, end, what)
        return rep.ann_frame(x, y, p, t, crop=FULL_FRAME)

    def close(self) -> None:
        """Closes the file handles of every thread (call it once the loaders reading it are closed); the
        dataset stays usable, files are reopened on the next read."""
        self._pool.close_all()
