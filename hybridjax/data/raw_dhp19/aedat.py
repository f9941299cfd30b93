"""AEDAT 2.0 as written by jAER for DHP19: reading, writing and the DAVIS346 address bits (four cameras).

A file is a text header, lines starting with ``#`` (the first one ``#!AER-DAT2.0``), then big-endian uint32
pairs ``(address, timestamp in us)``. The event part is read as ``floor(bytes / 8)`` records, as DHP19's
``ImportAedatDataVersion1or2.m`` does; a trailing partial record is reported, not fatal.

Address bits (DHP19's reader, camera number in the low bits): ``camera = addr & 0xF``,
``polarity = (addr >> 11) & 1``, ``x_raw = (addr & 0x003FF000) >> 12``, ``y_raw = (addr & 0x7FC00000) >> 22``.
Bit 31 marks APS / IMU samples; without bit 31, bit 0x400 marks a special (sync) event and its absence a
polarity event.
"""
from __future__ import annotations

import dataclasses
import pathlib

import h5py
import numpy as np

from ..errors import DataError

APS_OR_IMU_BIT = 0x80000000
SPECIAL_BIT = 0x400
RECORD_BYTES = 8
HEADER = (b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
          b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n")


@dataclasses.dataclass(frozen=True)
class AedatStream:
    """The records of one AEDAT 2.0 file, in file order."""

    address: np.ndarray  # uint32 addresses
    timestamp: np.ndarray  # uint32 timestamps (us, wrap around at 2^32)
    trailing_bytes: int  # bytes after the last whole 8-byte record (ignored)


@dataclasses.dataclass(frozen=True)
class DecodedAddresses:
    """Fields of DAVIS346 polarity addresses (meaningful for polarity events only)."""

    camera: np.ndarray
    x_raw: np.ndarray
    y_raw: np.ndarray
    polarity: np.ndarray


def read_aedat2(path) -> AedatStream:
    """Reads an AEDAT 2.0 file; DataError when it is not AEDAT 2 or holds no record.

    Only the header is parsed in Python; the records go straight into numpy (release files reach hundreds
    of MB).
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
    if version is not None and not version.startswith("2"):
        raise DataError(path, f"AEDAT version {version} is not supported (expected 2.0)")
    count, trailing = divmod(path.stat().st_size - offset, RECORD_BYTES)
    if count == 0:
        raise DataError(path, "no events after the header")
    pairs = np.fromfile(path, dtype=">u4", count=2 * count, offset=offset).reshape(-1, 2)
    return AedatStream(pairs[:, 0].astype(np.uint32), pairs[:, 1].astype(np.uint32), int(trailing))


def write_aedat2(path, address, timestamp, trailing: bytes = b"") -> None:
    """Writes records ``(address, timestamp)`` after a jAER-like header (tests and synthetic recordings)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs = np.stack([np.asarray(address, dtype=np.uint64), np.asarray(timestamp, dtype=np.uint64)], axis=1)
    path.write_bytes(HEADER + pairs.astype(">u4").tobytes() + trailing)


def polarity_address(camera, x_raw, y_raw, polarity) -> np.ndarray:
    """uint32 addresses of polarity events (inverse of :func:`decode_addresses`)."""
    fields = [np.asarray(v, dtype=np.uint64) for v in (camera, x_raw, y_raw, polarity)]
    camera, x_raw, y_raw, polarity = fields
    return (camera | (polarity << 11) | (x_raw << 12) | (y_raw << 22)).astype(np.uint32)


def classify(address: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks ``(is_polarity, is_special)``; APS / IMU samples are neither."""
    sample = (address & APS_OR_IMU_BIT) != 0
    special_bit = (address & SPECIAL_BIT) != 0
    return ~sample & ~special_bit, ~sample & special_bit


def decode_addresses(address: np.ndarray) -> DecodedAddresses:
    """Camera, raw x / y and polarity of polarity-event addresses."""
    return DecodedAddresses(
        camera=(address & 0xF).astype(np.int64),
        x_raw=((address & 0x003FF000) >> 12).astype(np.int64),
        y_raw=((address & 0x7FC00000) >> 22).astype(np.int64),
        polarity=((address >> 11) & 1).astype(np.uint8),
    )


def records_from_events_h5(events_h5, offset_us: int) -> tuple[np.ndarray, np.ndarray]:
    """``(address, timestamp)`` polarity records of an official-layout ``*_events.h5`` (the inverse of the
    conversion, for tests and synthetic raw recordings): the four cameras merged by time (ties in camera
    order), ``x_raw = 346 - x``, ``y_raw = 260 - y``, ``timestamp = t + offset_us``."""

    addresses, times = [], []
    with h5py.File(events_h5, "r") as file:
        for camera in range(4):
            group = file[f"cam{camera}_events"]
            x, y, p, t = (group[k][()].astype(np.int64) for k in "xypt")
            addresses.append(polarity_address(np.full(t.size, camera), 346 - x, 260 - y, p))
            times.append(t + offset_us)
    address, timestamp = np.concatenate(addresses), np.concatenate(times)
    order = np.argsort(timestamp, kind="stable")
    return address[order], timestamp[order].astype(np.uint32)
