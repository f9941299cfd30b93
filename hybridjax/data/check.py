"""The data check a user runs before training: opens a DHP19 or Event-Human3.6M folder the way training does
and reports every problem at once.

Each recording is opened on its own through the public dataset classes (:class:`~.dhp19.DHP19Dataset`,
:class:`~.h36m.EventH36MDataset`, restricted to that recording with ``subjects`` / ``exclude``), so one
bad file does not hide the next. For each one: the open-time validation (DHP19: ``validate='full'``, every
event checked), then its first and last window read as training reads them (``read='all'``: every window).
The report has, per split: recordings (and per camera), windows, events per second per camera, label
coverage (the part of the event time that has labels), the NaN fraction of the labels and the fraction of
2-D joints masked (missing or outside the crop), what would be skipped and why, and every error. DHP19
folders written by ``experiments/convert_dhp19.py`` also show what the conversion skipped or modified.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import tempfile
from typing import Literal

import numpy as np

from .errors import DataError

SPLITS = ("train", "test")


@dataclasses.dataclass
class Finding:
    """One problem or skip: where and what."""

    level: Literal["error", "warning", "skipped"]
    where: str  # split and recording, or the file
    what: str


@dataclasses.dataclass
class SplitStats:
    """What one split holds."""

    recordings: int = 0  # recordings with at least one window on some camera
    recordings_per_camera: dict = dataclasses.field(default_factory=dict)  # camera -> recordings with windows
    windows_per_camera: dict = dataclasses.field(default_factory=dict)  # camera -> windows
    events: dict = dataclasses.field(default_factory=dict)  # camera -> events (all recordings opened)
    seconds: dict = dataclasses.field(default_factory=dict)  # camera -> seconds of events (ms_to_idx length)
    label_coverage: list = dataclasses.field(default_factory=list)  # per recording: labelled time / event time
    label_nan: list = dataclasses.field(default_factory=list)  # per recording: fraction of NaN joints
    masked_per_camera: dict = dataclasses.field(default_factory=dict)  # camera -> [masked, total] 2-D joints

    @property
    def windows(self) -> int:
        return sum(self.windows_per_camera.values())

    def add(self, camera: int, windows: int, events: int, seconds: float) -> None:
        self.windows_per_camera[camera] = self.windows_per_camera.get(camera, 0) + windows
        self.recordings_per_camera[camera] = self.recordings_per_camera.get(camera, 0) + (windows > 0)
        self.events[camera] = self.events.get(camera, 0) + events
        self.seconds[camera] = self.seconds.get(camera, 0.0) + seconds

    def add_masked(self, camera: int, pixels: np.ndarray) -> None:
        masked = self.masked_per_camera.setdefault(camera, [0, 0])
        joints = np.isnan(pixels).any(axis=-1)
        masked[0] += int(joints.sum())
        masked[1] += int(joints.size)


@dataclasses.dataclass
class CheckReport:
    """Everything the check found."""

    root: str
    kind: str  # "dhp19" or "h36m"
    splits: dict = dataclasses.field(default_factory=dict)  # split -> SplitStats
    findings: list = dataclasses.field(default_factory=list)  # Finding
    notes: list = dataclasses.field(default_factory=list)  # information lines (e.g. from the conversion report)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    def add(self, level: str, where: str, what: str) -> None:
        self.findings.append(Finding(level, where, what))


class _Captured(logging.Handler):
    """Collects the warnings the datasets log while one recording is opened."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _capturing(names):
    """Routes the named loggers' warnings into a list (and not to the console); returns the release call."""
    handler = _Captured()
    loggers = [logging.getLogger(name) for name in names]
    propagate = [logger.propagate for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.propagate = False

    def release():
        for logger, before in zip(loggers, propagate):
            logger.removeHandler(handler)
            logger.propagate = before
        return handler.messages

    return release


def detect_kind(root: pathlib.Path) -> str:
    """``dhp19`` (``*_events.h5`` files) or ``h36m`` (``labels.h5`` + subject folders); DataError otherwise."""
    if not root.is_dir():
        raise DataError(root, "data folder does not exist")
    if any(root.glob("*_events.h5")):
        return "dhp19"
    if (root / "labels.h5").is_file() or any(root.glob("S*/upsample")):
        return "h36m"
    raise DataError(root, "neither a DHP19 folder (S*_session*_mov*_events.h5) nor an Event-Human3.6M folder "
                          "(labels.h5, S*/upsample/)")


def check_data(root, kind: str = "auto", cameras: tuple[int, ...] | None = None,
               read: Literal["ends", "all", "none"] = "ends") -> CheckReport:
    """Checks the folder ``root`` (module docstring); never raises DataError, it reports it."""
    root = pathlib.Path(root)
    try:
        kind = detect_kind(root) if kind == "auto" else kind
    except DataError as err:
        report = CheckReport(str(root), kind)
        report.add("error", err.path, err.problem)
        return report
    report = CheckReport(str(root), kind)
    if kind == "dhp19":
        _check_dhp19(root, report, cameras or (0, 1, 2, 3), read)
    elif kind == "h36m":
        _check_h36m(root, report, cameras or (0, 1, 2, 3), read)
    else:
        raise ValueError(f"kind must be 'auto', 'dhp19' or 'h36m', got {kind!r}")
    for split in SPLITS:
        stats = report.splits.get(split)
        if stats is None or stats.recordings == 0:
            report.add("error", split, f"the {split} split has no recording with a complete window")
    return report


# ------------------------------------------------------------------------------------------- DHP19


def _check_dhp19(root: pathlib.Path, report: CheckReport, cameras, read) -> None:
    from .dhp19 import DHP19Config, DHP19Dataset, load_projection_matrices, parse_recording_name

    _conversion_notes(root, report)
    p_matrix_dir = root / "P_matrices"
    scratch = None
    try:
        load_projection_matrices(p_matrix_dir)
    except DataError as err:
        report.add("error", err.path, err.problem)
        # Stand-in matrices so that the recordings are still checked; the 2-D label statistics are then void.
        scratch = tempfile.TemporaryDirectory()
        p_matrix_dir = pathlib.Path(scratch.name)
        for number in (1, 2, 3, 4):
            np.save(p_matrix_dir / f"P{number}.npy", np.array([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]))
        np.save(p_matrix_dir / "camera_positions.npy", np.zeros((4, 3)))
        report.notes.append("no 2-D masked fractions: P_matrices unreadable (stand-in matrices used to check the rest)")
    defaults = DHP19Config()
    names: dict[int, list[str]] = {}
    for path in sorted(root.glob("*_events.h5")):
        parsed = parse_recording_name(path)
        if parsed is None:
            report.add("warning", str(path), "name does not follow S<subject>_session<k>_mov<m>_events.h5: ignored")
            continue
        names.setdefault(parsed[0], []).append(path.name[: -len("_events.h5")])
    try:
        for split in SPLITS:
            stats = report.splits.setdefault(split, SplitStats())
            for subject in sorted(names):
                if (subject >= defaults.test_subject_min) != (split == "test"):
                    continue
                for name in names[subject]:
                    if name in defaults.exclude:
                        report.add("skipped", f"{split} {name}", "listed in the default exclude")
                        continue
                    others = tuple(n for n in names[subject] if n != name)
                    config = dataclasses.replace(defaults, cameras=tuple(cameras), subjects=(subject,),
                                                 exclude=others + defaults.exclude, validate="full")
                    _check_one(report, stats, split, name, others, read,
                               lambda c=config, s=split: DHP19Dataset(root, s, p_matrix_dir, config=c),
                               lambda d, st, n: _dhp19_stats(d, st, n, projected=scratch is None))
    finally:
        if scratch is not None:
            scratch.cleanup()


def _dhp19_stats(dataset, stats: SplitStats, name: str, projected: bool) -> None:
    from .dhp19 import project_joints

    recording = dataset.recordings[0]
    for camera in dataset.cameras:
        ms = len(recording.ms_to_idx[camera])
        stats.add(camera, dataset.num_windows(name, camera), recording.num_events[camera], ms / 1000)
        if projected:
            stats.add_masked(camera, project_joints(recording.joints, dataset.projection_matrix(camera)))
    events_ms = max(len(recording.ms_to_idx[c]) for c in dataset.cameras)
    stats.label_coverage.append(min(recording.label_ms_len, events_ms) / max(events_ms, 1))
    stats.label_nan.append(float(np.isnan(recording.joints).any(axis=-1).mean()))


def _conversion_notes(root: pathlib.Path, report: CheckReport) -> None:
    path = root / "conversion_report.json"
    if not path.is_file():
        return
    try:
        conversion = json.loads(path.read_text())
    except ValueError as err:
        report.add("warning", str(path), f"cannot be read ({err})")
        return
    options = conversion.get("options", {})
    report.notes.append(f"converted with filter {options.get('filter')}, overflow {options.get('overflow')}: "
                        f"{len(conversion.get('converted', []))} recording(s)")
    for entry in conversion.get("skipped", []):
        report.add("skipped", f"conversion {entry.get('name')}", entry.get("reason", ""))
    for entry in conversion.get("modified", []):
        report.notes.append(f"conversion modified {entry.get('name')}: {'; '.join(entry.get('notes', []))}")
    for problem in conversion.get("problems", []):
        report.add("warning", str(path), problem)


# -------------------------------------------------------------------------------- Event-Human3.6M


def _check_h36m(root: pathlib.Path, report: CheckReport, cameras, read) -> None:
    from .h36m import CAMCODE_TO_VIEW, EventH36MConfig, EventH36MDataset

    defaults = EventH36MConfig()
    if not (root / "labels.h5").is_file():
        report.add("error", str(root / "labels.h5"), "label file does not exist")
        return
    for split in SPLITS:
        stats = report.splits.setdefault(split, SplitStats())
        subjects = defaults.train_subjects if split == "train" else defaults.test_subjects
        for subject in subjects:
            folder = root / subject / "upsample"
            if not folder.is_dir():
                report.add("skipped", f"{split} {subject}", f"folder {folder} does not exist")
                continue
            units = sorted(p.name for p in folder.iterdir() if p.is_dir())
            actions = {unit.rsplit(".", 1)[0] for unit in units if "." in unit}
            for unit in units:
                action, _, camcode = unit.rpartition(".")
                if camcode not in CAMCODE_TO_VIEW or not action:
                    report.add("skipped", f"{split} {subject}/{unit}",
                               "folder name is not {Action}.{known camera code}")
                    continue
                if CAMCODE_TO_VIEW[camcode] not in cameras:
                    continue
                others = tuple((subject, a) for a in sorted(actions - {action}))
                subject_key = "train_subjects" if split == "train" else "test_subjects"
                config = dataclasses.replace(defaults, cameras=(CAMCODE_TO_VIEW[camcode],),
                                             exclude=others + defaults.exclude, **{subject_key: (subject,)})
                _check_one(report, stats, split, f"{subject}/{unit}", [f"{s}/{a}" for s, a in others], read,
                           lambda c=config, s=split: EventH36MDataset(root, s, config=c), _h36m_stats)


def _h36m_stats(dataset, stats: SplitStats, name: str) -> None:
    sequence = dataset.sequences[0]
    ms = len(sequence.ms_to_idx)
    stats.add(sequence.camera, len(dataset), sequence.num_events, ms / 1000)
    stats.add_masked(sequence.camera, sequence.landmarks)
    stats.label_coverage.append(min(sequence.seq_ms_len, ms) / max(ms, 1))
    stats.label_nan.append(float(np.isnan(sequence.landmarks).any(axis=-1).mean()))


# ---------------------------------------------------------------------------------------- shared


def _check_one(report: CheckReport, stats: SplitStats, split: str, name: str, injected, read, open_dataset,
               collect) -> None:
    """Opens one recording, records its statistics, skips, warnings and errors, reads its windows."""
    where = f"{split} {name}"
    release = _capturing(["hybridjax.data.dhp19", "hybridjax.data.h36m"])
    dataset = None
    try:
        dataset = open_dataset()
    except DataError as err:
        marker = f"the {split} split has no items (skipped: "
        if err.problem.startswith(marker) and err.problem.endswith(")"):
            _add_skip(report, where, err.problem[len(marker):-1])
        else:
            report.add("error", where, f"{err.path}: {err.problem}")
    finally:
        messages = release()
    injected = set(injected)
    for message in messages:
        # Skips are read from dataset.skipped (or the no-items error); badly named files were reported once.
        if "skipping" not in message and "does not follow" not in message:
            report.add("warning", where, message)
    if dataset is None:
        return
    for skipped, why in dataset.skipped:
        if why == "listed in exclude" and (skipped in injected or skipped.split(".", 1)[0] in injected):
            continue
        _add_skip(report, f"{split} {skipped}", why)
    collect(dataset, stats, name)
    if len(dataset):
        stats.recordings += 1
    _read_windows(report, dataset, where, read)
    dataset.close()


def _add_skip(report: CheckReport, where: str, why: str) -> None:
    """A skip, or an error where training would still read the file (``validate='window'`` is its default)."""
    if "not sorted" in why:
        report.add("error", where, why + " (training reads this file and stops at the first window that "
                                        "touches it; add the recording to exclude)")
    elif "without its label file" in why or "without its events file" in why:
        report.add("error", where, why + " (training skips this recording with a warning)")
    else:
        report.add("skipped", where, why)


def _read_windows(report: CheckReport, dataset, where: str, read: str) -> None:
    if read == "none":
        return
    index = dataset.index()  # (camera, recording, window) of every item
    chosen = range(len(index))
    if read == "ends":
        ends: dict = {}
        for position, (camera, _, _) in enumerate(index):
            ends.setdefault(camera, []).append(position)
        chosen = sorted({p for positions in ends.values() for p in (positions[0], positions[-1])})
    for position in chosen:
        try:
            dataset[position]
        except DataError as err:
            camera, recording, window = index[position]
            report.add("error", where, f"camera {camera} window {window}: {err.path}: {err.problem}")


def format_report(report: CheckReport) -> str:
    """The report as text: per split statistics, then every skip, warning and error."""
    lines = [f"{report.kind} data in {report.root}"]
    lines.extend(f"  {note}" for note in report.notes)
    for split, stats in report.splits.items():
        cams = sorted(stats.windows_per_camera)
        lines.append(f"{split}: {stats.recordings} recording(s), {stats.windows} window(s)")
        for camera in cams:
            rate = stats.events[camera] / stats.seconds[camera] if stats.seconds[camera] else 0.0
            masked, total = stats.masked_per_camera.get(camera, [0, 0])
            fraction = f"{masked / total:.1%} of 2-D joints masked" if total else "2-D joints not projected"
            lines.append(f"  camera {camera}: {stats.recordings_per_camera[camera]} recording(s), "
                         f"{stats.windows_per_camera[camera]} window(s), {rate:,.0f} events/s, {fraction}")
        if stats.label_coverage:
            lines.append(f"  label coverage: min {min(stats.label_coverage):.1%}, mean "
                         f"{np.mean(stats.label_coverage):.1%}; NaN labels: mean {np.mean(stats.label_nan):.2%}, "
                         f"max {max(stats.label_nan):.2%}")
    for level in ("skipped", "warning", "error"):
        found = [f for f in report.findings if f.level == level]
        if found:
            lines.append(f"{len(found)} {level}:")
            lines.extend(f"  {f.where}: {f.what}" for f in found)
    errors = len(report.errors)
    lines.append(f"{'FAILED' if errors else 'OK'}: {errors} error(s)")
    return "\n".join(lines)


def report_json(report: CheckReport) -> dict:
    """The report as plain data (for ``--json``)."""
    return {
        "root": report.root, "kind": report.kind, "notes": report.notes,
        "splits": {split: dict(dataclasses.asdict(stats), windows=stats.windows)
                   for split, stats in report.splits.items()},
        "findings": [dataclasses.asdict(f) for f in report.findings],
        "errors": len(report.errors),
    }
