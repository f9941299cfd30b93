"""Event data: DHP19 and Event-Human3.6M windows, event representations and the batched loader.

Names are resolved lazily (PEP 562) so that ``import hybridjax.data`` does not import h5py until a
dataset is actually used.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "DataError": "errors",
    "DHP19Config": "dhp19",
    "DHP19Dataset": "dhp19",
    "DHP19FrameDataset": "dhp19",
    "CAMERA_TO_MATRIX": "dhp19",
    "JOINT_NAMES": "dhp19",
    "load_projection_matrices": "dhp19",
    "project_joints": "dhp19",
    "EventH36MConfig": "h36m",
    "EventH36MDataset": "h36m",
    "stacked_histogram": "representations",
    "fixed_time_histogram": "representations",
    "voxel_grid": "representations",
    "ann_frame": "representations",
    "span_bin_index": "representations",
    "BatchLoader": "pipeline",
    "collate": "pipeline",
    "shard_for_devices": "pipeline",
    "measure_throughput": "pipeline",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hybridjax.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
