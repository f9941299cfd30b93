"""Converts the raw DHP19 release (AEDAT 2.0 + Vicon .mat) into the official preprocessed h5 layout.

Input layout (the public release, as read by the dataset's own MATLAB script ``Generate_DHP19.m``)::

    RAW_ROOT/DVS_movies/S{s}/session{k}/mov{m}.aedat     all four cameras interleaved in one file
    RAW_ROOT/Vicon_data/S{s}_{k}_{m}.mat                 struct XYZPOS, one (T, 3) array per joint, mm, 100 Hz
    RAW_ROOT/P_matrices/P1..P4 (.npy or .txt) [+ camera_positions (.npy or .txt)]

The recordings are found by their relative path ``S{s}/session{k}/mov{m}.aedat`` anywhere under RAW_ROOT and the
labels by the file name ``S{s}_{k}_{m}.mat`` anywhere under RAW_ROOT (so a flattened copy works too).

AEDAT 2.0: header lines starting with ``#`` (the first one ``#!AER-DAT2.0``), then big-endian uint32 pairs
``(address, timestamp in us)``. Address bits (DAVIS346, with the camera number in the low bits, SPEC section 4):
``camera = addr & 0xF``, ``polarity = (addr >> 11) & 1``, ``x_raw = (addr & 0x003FF000) >> 12``,
``y_raw = (addr & 0x7FC00000) >> 22``; bit 31 marks APS/IMU samples (dropped) and bit 0x400 (without bit 31)
a special (sync) event. Written per camera c in 0..3: 1-based ``x = 346 - x_raw``, ``y = 260 - y_raw``,
``t = ts - start`` (us, sorted), ``cam{c}_ms_to_idx[k]`` = index of the first event with ``t >= 1000 k`` for
``k = 0 .. floor((stop - start) / 1000)``; labels ``XYZ/3d_poses`` (T, 3, 13) float64 in the official joint
order and ``XYZ/timestamps = 10000 i`` (label i at 10 i ms after the start).

Cutting between special events (assumptions, following the cases the MATLAB script handles): the special
events are grouped into *sync pulses* (events less than 1 ms apart; the release often repeats a pulse 2-4
times within a microsecond). Two pulses: start = first pulse, stop = last special event. One pulse: it is
the start if it is nearer the beginning of the event stream, else the stop, and the other end is
``start + 10 ms * T`` (T Vicon samples). No special event: skipped. More than two pulses: skipped as
corrupt (the release has two such recordings with hundreds of specials). Events are kept for
``start <= ts <= stop``.

Other assumptions: timestamps wrapping around 2^32 us are unwrapped (one release file overflows); events of
cameras > 3 or outside the 346 x 260 sensor are dropped and counted; no hot-pixel or background-activity
filtering is applied (the official frame generator filters, the event h5 files keep the stream as is);
a file whose data part is not a whole number of 8-byte events is reported as truncated and skipped.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

import h5py
import numpy as np

from .errors import DataError

SENSOR_WIDTH = 346
SENSOR_HEIGHT = 260
JOINT_NAMES = (
    "head", "shoulderR", "shoulderL", "elbowR", "elbowL", "hipR", "hipL",
    "handR", "handL", "kneeR", "kneeL", "footR", "footL",
)
APS_OR_IMU_BIT = 0x80000000
SPECIAL_BIT = 0x400
SYNC_PULSE_GAP_US = 1000  # special events closer than this belong to the same sync pulse
LABEL_PERIOD_US = 10_000  # Vicon at 100 Hz

_AEDAT_PATH = re.compile(r"S(\d+)[/\\]session(\d+)[/\\]mov(\d+)\.aedat$", re.IGNORECASE)
_LABEL_NAME = re.compile(r"^S(\d+)_(\d+)_(\d+)\.mat$", re.IGNORECASE)


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


def read_aedat2(path) -> tuple[np.ndarray, np.ndarray]:
    """``(address, timestamp)`` uint32 arrays of an AEDAT 2.0 file; DataError when it is not readable.

    Only the header is parsed in Python; the events are read straight into numpy (release files reach
    hundreds of MB).
    """
    path = pathlib.Path(path)
    offset = 0
    version = None
    with open(path, "rb") as file:
        while True:
            first = file.read(1)
            if first != b"#":
                break
            line = first + file.readline()
            if not line.endswith(b"\n"):
                raise DataError(path, "header line without end (truncated in the header)")
            if line.startswith(b"#!AER-DAT"):
                version = line[len(b"#!AER-DAT"):].strip().decode("ascii", "replace")
            offset += len(line)
    size = path.stat().st_size
    if version is not None and not version.startswith("2"):
        raise DataError(path, f"AEDAT version {version} is not supported (expected 2.0)")
    remainder = (size - offset) % 8
    if remainder:
        raise DataError(path, f"truncated: {remainder} trailing bytes after {(size - offset) // 8} events")
    if size == offset:
        raise DataError(path, "no events after the header")
    pairs = np.fromfile(path, dtype=">u4", offset=offset).reshape(-1, 2)
    return pairs[:, 0].astype(np.uint32), pairs[:, 1].astype(np.uint32)


def unwrap_timestamps(timestamps: np.ndarray) -> np.ndarray:
    """int64 timestamps with 2^32 us added after every backwards jump of more than 2^31 (counter overflow)."""
    ts = timestamps.astype(np.int64)
    wraps = np.concatenate([[0], np.cumsum(np.diff(ts) < -(1 << 31))])
    return ts + (wraps << 32)


def sync_pulses(special_ts: np.ndarray) -> list[np.ndarray]:
    """Special-event times grouped into pulses (consecutive specials less than 1 ms apart)."""
    if special_ts.size == 0:
        return []
    ordered = np.sort(special_ts)
    breaks = np.flatnonzero(np.diff(ordered) >= SYNC_PULSE_GAP_US) + 1
    return np.split(ordered, breaks)


def select_cut(special_ts: np.ndarray, event_ts: np.ndarray, num_labels: int, path="") -> tuple[int, int]:
    """``(start, stop)`` in raw microseconds (module docstring rules); DataError when it cannot be decided."""
    pulses = sync_pulses(special_ts)
    if not pulses:
        raise DataError(path, "no special (sync) events: cannot align the labels")
    if len(pulses) > 2:
        raise DataError(path, f"corrupt: {special_ts.size} special events in {len(pulses)} sync pulses")
    if len(pulses) == 2:
        return int(pulses[0][0]), int(pulses[1][-1])
    pulse = int(pulses[0][0])
    length = num_labels * LABEL_PERIOD_US
    if event_ts.size and pulse - int(event_ts.min()) > int(event_ts.max()) - pulse:
        return pulse - length, pulse
    return pulse, pulse + length


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


def convert_recording(recording: RawRecording, out_dir) -> dict:
    """Writes ``{name}_events.h5`` and ``{name}_events_label.h5``; returns counts. DataError on bad input."""
    if recording.label_path is None:
        raise DataError(recording.aedat_path, f"missing labels: no Vicon file S{recording.subject}_"
                                              f"{recording.session}_{recording.movement}.mat under the raw root")
    poses = load_vicon(recording.label_path)
    address, raw_ts = read_aedat2(recording.aedat_path)
    ts = unwrap_timestamps(raw_ts)
    is_sample = (address & APS_OR_IMU_BIT) != 0
    is_special = ~is_sample & ((address & SPECIAL_BIT) != 0)
    is_polarity = ~is_sample & ~is_special
    start, stop = select_cut(ts[is_special], ts[is_polarity], poses.shape[0], recording.aedat_path)
    if stop <= start:
        raise DataError(recording.aedat_path, f"empty cut: start {start} us >= stop {stop} us")

    keep = is_polarity & (ts >= start) & (ts <= stop)
    address, ts = address[keep], ts[keep] - start
    camera = address & 0xF
    x_raw = (address & 0x003FF000) >> 12
    y_raw = (address & 0x7FC00000) >> 22
    polarity = ((address >> 11) & 1).astype(np.uint8)
    valid = (camera < 4) & (x_raw < SENSOR_WIDTH) & (y_raw < SENSOR_HEIGHT)
    duration_ms = (stop - start) // 1000
    out_dir = pathlib.Path(out_dir)
    counts = []
    with h5py.File(out_dir / f"{recording.name}_events.h5", "w") as events_file:
        for channel in range(4):
            select = np.flatnonzero(valid & (camera == channel))
            order = select[np.argsort(ts[select], kind="stable")]
            t = ts[order].astype(np.int64)
            group = events_file.create_group(f"cam{channel}_events")
            group.create_dataset("x", data=(SENSOR_WIDTH - x_raw[order]).astype(np.uint16))
            group.create_dataset("y", data=(SENSOR_HEIGHT - y_raw[order]).astype(np.uint16))
            group.create_dataset("p", data=polarity[order])
            group.create_dataset("t", data=t)
            events_file.create_dataset(
                f"cam{channel}_ms_to_idx",
                data=np.searchsorted(t, 1000 * np.arange(duration_ms + 1, dtype=np.int64)).astype(np.int64))
            counts.append(int(t.size))
    with h5py.File(out_dir / f"{recording.name}_events_label.h5", "w") as label_file:
        label_file.create_dataset("XYZ/3d_poses", data=poses)
        label_file.create_dataset("XYZ/timestamps", data=np.arange(poses.shape[0], dtype=np.int64) * LABEL_PERIOD_US)
    return {"name": recording.name, "events_per_channel": counts, "dropped_events": int((~valid).sum()),
            "duration_ms": int(duration_ms), "labels": int(poses.shape[0]), "start_us": start, "stop_us": stop}


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


def convert_raw_dhp19(raw_root, out_dir, *, p_matrix_dir=None, overwrite: bool = False,
                      progress: bool = True) -> dict:
    """Converts every recording under ``raw_root`` into ``out_dir``; bad recordings are skipped, not fatal.

    Returns ``{"converted": [per-recording counts], "skipped": [{"name", "reason"}], "existing": [names],
    "camera_matrices": problem or None}``.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recordings = find_recordings(raw_root)
    summary = {"converted": [], "skipped": [], "existing": [],
               "camera_matrices": copy_camera_matrices(raw_root, out_dir, p_matrix_dir)}
    iterator = recordings
    if progress:
        from tqdm import tqdm
        iterator = tqdm(recordings, desc="raw DHP19", unit="recording")
    for recording in iterator:
        events_path = out_dir / f"{recording.name}_events.h5"
        if events_path.exists() and (out_dir / f"{recording.name}_events_label.h5").exists() and not overwrite:
            summary["existing"].append(recording.name)
            continue
        try:
            summary["converted"].append(convert_recording(recording, out_dir))
        except DataError as err:
            for partial in (events_path, out_dir / f"{recording.name}_events_label.h5"):
                partial.unlink(missing_ok=True)
            summary["skipped"].append({"name": recording.name, "reason": err.problem, "file": err.path})
    return summary


def format_summary(summary: dict) -> str:
    """Human-readable lines: converted / existing / skipped counts and every skip reason."""
    lines = [f"converted {len(summary['converted'])} recording(s), {len(summary['existing'])} already present, "
             f"skipped {len(summary['skipped'])}"]
    if summary["camera_matrices"]:
        lines.append(f"camera matrices: {summary['camera_matrices']}")
    for entry in summary["skipped"]:
        lines.append(f"  skipped {entry['name']}: {entry['reason']} ({entry['file']})")
    return "\n".join(lines)
