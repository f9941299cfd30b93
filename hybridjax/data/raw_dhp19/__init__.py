"""Converts the raw DHP19 release (AEDAT 2.0 + Vicon .mat) into the official preprocessed h5 layout, following
DHP19's own extraction (SensorsINI/DHP19 ``generate_DHP19/Generate_DHP19.m``, ``extract_from_aedat.m`` and
``read_aedat/``), re-implemented from its behaviour.

Input layout (the public release)::

    RAW_ROOT/DVS_movies/S{s}/session{k}/mov{m}.aedat     all four cameras interleaved in one file
    RAW_ROOT/Vicon_data/S{s}_{k}_{m}.mat                 struct XYZPOS, one (T, 3) array per joint, mm, 100 Hz
    RAW_ROOT/P_matrices/P1..P4 (.npy or .txt) [+ camera_positions (.npy or .txt)]

Recordings are found by their relative path ``S{s}/session{k}/mov{m}.aedat`` anywhere under RAW_ROOT and the
labels by the file name ``S{s}_{k}_{m}.mat`` anywhere under RAW_ROOT (so a flattened copy works too).

Steps, as DHP19's code does them (details in the modules):

1. Read (:mod:`.aedat`): ``floor(bytes / 8)`` records after the header; trailing bytes are ignored with a
   warning. The first record is skipped, as DHP19's reader does (negligible: one event). APS / IMU
   samples are dropped; special events give the cut.
2. Cut (:mod:`.cut`): start and stop from the number of special events (0: the whole recording, with a
   warning; 1, 2 or 4: one pulse, the other end from the label length; 3 or 5: first to last; more than 5:
   skipped as corrupt); the events strictly between them by index range; a timestamp overflow cuts there
   (``overflow='unwrap'`` keeps the rest instead).
3. Events of cameras > 3 or outside the 346 x 260 sensor are dropped and counted.
4. Filters (:mod:`.filters`, ``filter='dhp19'``, the default): hot pixels, background activity (70 ms) and
   the two IR-reflection masks. ``filter='none'`` keeps every event. DHP19 applies them before building its
   frames; whether the authors' event h5 files (never released) were filtered is not public, but their
   dataset path ``dhp19_h5_event_files/all_events/346x260/`` follows Generate_DHP19.m's output naming, so
   filtering is the closest public evidence.
5. Written per camera c in 0..3 (the h5 layout of SPEC section 4): 1-based ``x = 346 - x_raw``,
   ``y = 260 - y_raw``, ``t = ts - start`` (us, sorted stably), ``cam{c}_ms_to_idx[k]`` = index of the first
   event with ``t >= 1000 k`` for ``k = 0 .. floor((stop - start) / 1000)``; labels ``XYZ/3d_poses``
   (T, 3, 13) float64 in the official joint order and ``XYZ/timestamps = 10000 i`` (label i at 10 i ms after
   the start, as DHP19 assigns labels: ``floor((t - start) / 10 ms) + 1``, 1-based). An event inside the
   index range but earlier than the start (out of file order) cannot be placed at ``t >= 0``; it is dropped,
   counted and noted.

Every skipped or modified recording is listed in ``OUT_DIR/conversion_report.json`` with the reason, and
every converted one with its events per camera before and after each filter.
"""
from .aedat import (
    AedatStream,
    classify,
    decode_addresses,
    polarity_address,
    read_aedat2,
    records_from_events_h5,
    write_aedat2,
)
from .convert import (
    JOINT_NAMES,
    REPORT_NAME,
    ConvertOptions,
    RawRecording,
    camera_centre,
    convert_raw_dhp19,
    convert_recording,
    copy_camera_matrices,
    find_recordings,
    format_summary,
    load_vicon,
    unwrap_timestamps,
)
from .cut import cut_range, cut_times, overflows

__all__ = [
    "JOINT_NAMES", "REPORT_NAME", "AedatStream", "ConvertOptions", "RawRecording", "camera_centre",
    "classify", "convert_raw_dhp19", "convert_recording", "copy_camera_matrices", "cut_range", "cut_times",
    "decode_addresses", "find_recordings", "format_summary", "load_vicon", "overflows", "polarity_address",
    "read_aedat2", "records_from_events_h5", "unwrap_timestamps", "write_aedat2",
]
