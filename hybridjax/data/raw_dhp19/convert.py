"""Raw DHP19 recordings -> the official preprocessed h5 layout, with a ``conversion_report.json``."""
from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Literal

import h5py
import numpy as np

from ..errors import DataError
from . import filters
from .aedat import classify, decode_addresses, read_aedat2
from .cut import LABEL_PERIOD_US, cut_range, cut_times, overflows

log = logging.getLogger(__name__)

JOINT_NAMES = (
    "head", "shoulderR", "shoulderL", "elbowR", "elbowL", "hipR", "hipL",
    "handR", "handL", "kneeR", "kneeL", "footR", "footL",
)
REPORT_NAME = "conversion_report.json"
SENSOR_WIDTH, SENSOR_HEIGHT = filters.SENSOR_WIDTH, filters.SENSOR_HEIGHT
_AEDAT_PATH = re.compile(r"S(\d+)[/\\]session(\d+)[/\\]mov(\d+)\.aedat$", re.IGNORECASE)
_LABEL_NAME = re.compile(r"^S(\d+)_(\d+)_(\d+)\.mat$", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    """How recordings are converted (defaults: as DHP19's own extraction)."""

    filter: Literal["dhp19", "none"] = "dhp19"  # dhp19: hot pixels, background activity, IR masks; none: all
    overflow: Literal["cut", "unwrap"] = "cut"  # cut: keep events up to a timestamp overflow (DHP19); unwrap: all

    def __post_init__(self):
        if self.filter not in ("dhp19", "none"):
            raise ValueError(f"filter must be 'dhp19' or 'none', got {self.filter!r}")
        if self.overflow not in ("cut", "unwrap"):
            raise ValueError(f"overflow must be 'cut' or 'unwrap', got {self.overflow!r}")


@dataclasses.dataclass(frozen=True)
class RawRecording:
    """One raw recording of the release."""

    subject: int  # subject number (1..17)
    session: int  # session number (1..5)
    movement: int  # movement number within the session
    aedat_path: pathlib.Path  # the AEDAT 2.0 event file (four cameras)
    label_path: pathlib.Path | None  # the Vicon .mat file, None when it is missing

    @property
    def name(self) -> str:
        """Output stem, ``S{s}_session{k}_mov{m}`` (the official h5 naming)."""
        return f"S{self.subject}_session{self.session}_mov{self.movement}"


def unwrap_timestamps(timestamps: np.ndarray) -> np.ndarray:
    """int64 timestamps with 2^32 us added after every backwards jump of more than 2^31 (counter overflow)."""
    ts = timestamps.astype(np.int64)
    wraps = np.concatenate([[0], np.cumsum(np.diff(ts) < -(1 << 31))])
    return ts + (wraps << 32)


def load_vicon(path) -> np.ndarray:
    """Labels ``(T, 3, 13)`` float64 in mm from a Vicon .mat file with a struct ``XYZPOS``."""
    try:
        from scipy.io import loadmat
    except ImportError as err:  # scipy is the optional extra "mat"
        raise ImportError("reading Vicon .mat labels needs scipy: pip install 'hybridjax[mat]'") from err
    path = pathlib.Path(path)
    try:
        content = loadmat(path)
    except Exception as err:  # scipy raises several types for damaged files
        raise DataError(path, f"cannot be read as a .mat file ({err})") from err
    if "XYZPOS" not in content:
        raise DataError(path, f"no struct 'XYZPOS' (variables: {sorted(k for k in content if not k.startswith('_'))})")
    struct = content["XYZPOS"]
    fields = struct.dtype.names or ()
    missing = [name for name in JOINT_NAMES if name not in fields]
    if missing:
        raise DataError(path, f"XYZPOS lacks joint(s) {', '.join(missing)}")
    record = struct.reshape(-1)[0]
    joints = []
    for name in JOINT_NAMES:
        value = np.asarray(record[name], dtype=np.float64)
        if value.ndim != 2 or value.shape[1] != 3:
            raise DataError(path, f"XYZPOS.{name} has shape {value.shape}, expected (T, 3)")
        joints.append(value)
    lengths = {value.shape[0] for value in joints}
    if len(lengths) != 1:
        raise DataError(path, f"XYZPOS joints have different lengths {sorted(lengths)}")
    return np.stack(joints, axis=2)  # (T, 3, 13)


def find_recordings(raw_root) -> list[RawRecording]:
    """All ``S*/session*/mov*.aedat`` under ``raw_root`` with their Vicon files, sorted by (s, k, m)."""
    raw_root = pathlib.Path(raw_root)
    if not raw_root.is_dir():
        raise DataError(raw_root, "raw DHP19 root is not a folder")
    labels = {}
    for path in raw_root.rglob("*.mat"):
        match = _LABEL_NAME.match(path.name)
        if match:
            labels[tuple(int(g) for g in match.groups())] = path
    recordings = []
    for path in raw_root.rglob("*"):
        match = _AEDAT_PATH.search(path.as_posix())
        if match and path.is_file():
            key = tuple(int(g) for g in match.groups())
            recordings.append(RawRecording(*key, aedat_path=path, label_path=labels.get(key)))
    return sorted(recordings, key=lambda r: (r.subject, r.session, r.movement))


def convert_recording(recording: RawRecording, out_dir, options: ConvertOptions = ConvertOptions()) -> dict:
    """Writes ``{name}_events.h5`` and ``{name}_events_label.h5``; returns the report entry. DataError on bad
    input (see the package docstring for the rules)."""
    path = recording.aedat_path
    if recording.label_path is None:
        raise DataError(path, f"missing labels: no Vicon file S{recording.subject}_{recording.session}_"
                              f"{recording.movement}.mat under the raw root")
    poses = load_vicon(recording.label_path)
    address, t_raw, cut = _read_and_cut(path, poses.shape[0], options)
    fields = decode_addresses(address)
    in_range = (fields.camera < filters.NUM_CAMERAS) & (fields.x_raw < SENSOR_WIDTH) & (fields.y_raw < SENSOR_HEIGHT)
    camera, x_raw, y_raw = fields.camera[in_range], fields.x_raw[in_range], fields.y_raw[in_range]
    polarity, t_raw = fields.polarity[in_range], t_raw[in_range]
    if options.filter == "dhp19":
        keep, removed = filters.dhp19_filters(
            camera, filters.side_by_side_x(camera, x_raw), SENSOR_HEIGHT - y_raw, t_raw)
    else:
        keep, removed = np.ones(t_raw.size, dtype=bool), {}
    t = t_raw - cut["start_us"]
    before_start = keep & (t < 0)  # out of file order inside the index range: not representable at t >= 0
    keep &= ~before_start
    if before_start.any():
        cut["notes"].append(f"{int(before_start.sum())} event(s) inside the cut but before its start in time "
                            "(out of file order) dropped")
    duration_ms = (cut["stop_us"] - cut["start_us"]) // 1000
    counts = _write_recording(out_dir, recording.name, camera[keep], SENSOR_WIDTH - x_raw[keep],
                              SENSOR_HEIGHT - y_raw[keep], polarity[keep], t[keep], duration_ms, poses)
    return {
        "name": recording.name, **cut, "duration_ms": int(duration_ms), "labels": int(poses.shape[0]),
        "events_in_cut_per_channel": np.bincount(camera, minlength=filters.NUM_CAMERAS).tolist(),
        "removed_per_channel": removed, "events_per_channel": counts,
        "dropped_out_of_range": int((~in_range).sum()), "dropped_before_start": int(before_start.sum()),
    }


def _read_and_cut(path, num_labels: int, options: ConvertOptions) -> tuple[np.ndarray, np.ndarray, dict]:
    """The polarity addresses and raw times of the cut, and ``{"rule", "notes", "start_us", "stop_us"}``."""
    stream = read_aedat2(path)
    notes = []
    if stream.trailing_bytes:
        notes.append(f"{stream.trailing_bytes} trailing byte(s) after the last whole event ignored")
    # DHP19's reader starts at record 1 (it seeks 8 x startEvent bytes with startEvent = 1).
    address, raw_ts = stream.address[1:], stream.timestamp[1:]
    is_polarity, is_special = classify(address)
    if not is_polarity.any():
        raise DataError(path, "no polarity events")
    if overflows(raw_ts[is_polarity]):
        notes.append("timestamp overflow: events unwrapped and kept past it (--overflow unwrap)"
                     if options.overflow == "unwrap" else
                     "timestamp overflow: events kept only up to it, as DHP19 (--overflow unwrap keeps more)")
    ts = unwrap_timestamps(raw_ts) if options.overflow == "unwrap" else raw_ts.astype(np.int64)
    events = ts[is_polarity]
    start, stop, rule, cut_notes = cut_times(ts[is_special], events, num_labels,
                                             clip_uint32=options.overflow == "cut", path=path)
    first, last = cut_range(events, start, stop, path)
    cut = {"rule": rule, "notes": notes + cut_notes, "start_us": int(start), "stop_us": int(stop)}
    return address[is_polarity][first:last + 1], events[first:last + 1], cut


def _write_recording(out_dir, name, camera, x, y, polarity, t, duration_ms, poses) -> list[int]:
    """Per camera: events sorted by t (stable), ``cam{c}_ms_to_idx``; the label file. Returns counts."""
    out_dir = pathlib.Path(out_dir)
    counts = []
    with h5py.File(out_dir / f"{name}_events.h5", "w") as events_file:
        for channel in range(filters.NUM_CAMERAS):
            select = np.flatnonzero(camera == channel)
            order = select[np.argsort(t[select], kind="stable")]
            times = t[order].astype(np.int64)
            group = events_file.create_group(f"cam{channel}_events")
            group.create_dataset("x", data=x[order].astype(np.uint16))
            group.create_dataset("y", data=y[order].astype(np.uint16))
            group.create_dataset("p", data=polarity[order].astype(np.uint8))
            group.create_dataset("t", data=times)
            events_file.create_dataset(
                f"cam{channel}_ms_to_idx",
                data=np.searchsorted(times, 1000 * np.arange(duration_ms + 1, dtype=np.int64)).astype(np.int64))
            counts.append(int(times.size))
    with h5py.File(out_dir / f"{name}_events_label.h5", "w") as label_file:
        label_file.create_dataset("XYZ/3d_poses", data=poses)
        label_file.create_dataset("XYZ/timestamps", data=np.arange(poses.shape[0], dtype=np.int64) * LABEL_PERIOD_US)
    return counts


def _load_matrix(folder: pathlib.Path, stem: str):
    for suffix, reader in ((".npy", np.load), (".txt", np.loadtxt), (".csv", lambda p: np.loadtxt(p, delimiter=","))):
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return np.asarray(reader(path), dtype=np.float64), path
    return None, None


def camera_centre(projection: np.ndarray) -> np.ndarray:
    """The camera centre C with ``P [C; 1] = 0`` (right null vector of P)."""
    _, _, vt = np.linalg.svd(projection)
    null = vt[-1]
    return null[:3] / null[3]


def copy_camera_matrices(raw_root, out_dir, p_matrix_dir=None) -> str | None:
    """Writes ``out_dir/P_matrices/P1..P4.npy`` and ``camera_positions.npy``; returns a problem or None."""
    raw_root = pathlib.Path(raw_root)
    candidates = [pathlib.Path(p_matrix_dir)] if p_matrix_dir else sorted(
        {p.parent for pattern in ("P1.npy", "P1.txt", "P1.csv") for p in raw_root.rglob(pattern)})
    for folder in candidates:
        matrices = {}
        for number in (1, 2, 3, 4):
            matrix, path = _load_matrix(folder, f"P{number}")
            if matrix is None:
                break
            if matrix.shape != (3, 4):
                raise DataError(path, f"camera matrix has shape {matrix.shape}, expected (3, 4)")
            matrices[number] = matrix
        if len(matrices) < 4:
            continue
        positions, path = _load_matrix(folder, "camera_positions")
        if positions is None:
            positions = np.stack([camera_centre(matrices[n]) for n in (1, 2, 3, 4)])
        elif positions.shape != (4, 3):
            raise DataError(path, f"camera positions have shape {positions.shape}, expected (4, 3)")
        target = pathlib.Path(out_dir) / "P_matrices"
        target.mkdir(parents=True, exist_ok=True)
        for number, matrix in matrices.items():
            np.save(target / f"P{number}.npy", matrix)
        np.save(target / "camera_positions.npy", positions)
        return None
    return f"no complete set of P1..P4 (.npy/.txt/.csv) found in {p_matrix_dir or raw_root}"


def convert_raw_dhp19(raw_root, out_dir, *, p_matrix_dir=None, overwrite: bool = False, progress: bool = True,
                      options: ConvertOptions = ConvertOptions()) -> dict:
    """Converts every recording under ``raw_root`` into ``out_dir``; bad recordings are skipped, not fatal.

    Returns (and writes to ``out_dir/conversion_report.json``) ``{"options", "converted": [entries],
    "modified": [{"name", "notes"}], "skipped": [{"name", "reason", "file"}], "existing": [names],
    "camera_matrices": problem or None, "problems": [...]}``. Entries of recordings already converted by an
    earlier run (kept unless ``overwrite``) are carried over from its report.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = find_recordings(raw_root)
    previous = _previous_report(out_dir)
    summary = {"options": _options_record(options), "converted": [], "modified": [], "skipped": [], "existing": [],
               "camera_matrices": copy_camera_matrices(raw_root, out_dir, p_matrix_dir), "problems": []}
    earlier = {entry["name"]: entry for entry in previous.get("converted", [])}
    iterator = recordings
    if progress:
        from tqdm import tqdm
        iterator = tqdm(recordings, desc="raw DHP19", unit="recording")
    for recording in iterator:
        outputs = [out_dir / f"{recording.name}_events.h5", out_dir / f"{recording.name}_events_label.h5"]
        if all(p.exists() for p in outputs) and not overwrite:
            summary["existing"].append(recording.name)
            if recording.name in earlier:
                summary["converted"].append(earlier[recording.name])
            continue
        try:
            entry = convert_recording(recording, out_dir, options)
        except DataError as err:
            for partial in outputs:
                partial.unlink(missing_ok=True)
            log.warning("skipped %s: %s", recording.name, err)
            summary["skipped"].append({"name": recording.name, "reason": err.problem, "file": err.path})
            continue
        summary["converted"].append(entry)
    for entry in summary["converted"]:
        if entry["notes"]:
            summary["modified"].append({"name": entry["name"], "notes": entry["notes"]})
            if entry["name"] not in summary["existing"]:
                log.warning("%s: %s", entry["name"], "; ".join(entry["notes"]))
    if summary["existing"] and previous.get("options", summary["options"]) != summary["options"]:
        summary["problems"].append(
            f"{len(summary['existing'])} recording(s) already in {out_dir} were converted with other options "
            f"({previous['options']}); use --overwrite to convert them again")
    (out_dir / REPORT_NAME).write_text(json.dumps(summary, indent=1, default=str) + "\n")
    return summary


def _options_record(options: ConvertOptions) -> dict:
    record = dataclasses.asdict(options)
    if options.filter == "dhp19":
        record.update(hot_pixel_threshold=filters.HOT_PIXEL_THRESHOLD, background_dt_us=filters.BACKGROUND_DT_US,
                      ir_masks={name: list(bounds) for name, bounds in filters.IR_MASKS.items()})
    return record


def _previous_report(out_dir: pathlib.Path) -> dict:
    path = out_dir / REPORT_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s cannot be read; it is replaced", path)
        return {}


def format_summary(summary: dict) -> str:
    """Human-readable lines: counts, every modified recording with its notes, every skip reason."""
    existing = set(summary["existing"])
    new = sum(entry["name"] not in existing for entry in summary["converted"])
    lines = [f"converted {new} recording(s), "
             f"{len(summary['existing'])} already present, skipped {len(summary['skipped'])}, "
             f"modified {len(summary['modified'])} (filter {summary['options']['filter']}, "
             f"overflow {summary['options']['overflow']})"]
    if summary["camera_matrices"]:
        lines.append(f"camera matrices: {summary['camera_matrices']}")
    lines.extend(f"problem: {problem}" for problem in summary["problems"])
    for entry in summary["modified"]:
        lines.append(f"  modified {entry['name']}: {'; '.join(entry['notes'])}")
    for entry in summary["skipped"]:
        lines.append(f"  skipped {entry['name']}: {entry['reason']} ({entry['file']})")
    return "\n".join(lines)
