"""Event data: DHP19 and Event-Human3.6M windows, event representations, the batch format and the loader."""
from hybridjax.data.batch import FIELDS, collate, shard_for_devices
from hybridjax.data.dhp19 import (
    CAMERA_TO_MATRIX,
    JOINT_NAMES,
    DHP19Config,
    DHP19Dataset,
    DHP19FrameDataset,
    load_projection_matrices,
    project_joints,
)
from hybridjax.data.errors import DataError
from hybridjax.data.h36m import EventH36MConfig, EventH36MDataset
from hybridjax.data.loader import BatchLoader, measure_throughput, spread_indices
from hybridjax.data.representations import (
    ann_frame,
    fixed_time_histogram,
    span_bin_index,
    stacked_histogram,
    voxel_grid,
)

__all__ = [
    "CAMERA_TO_MATRIX", "FIELDS", "JOINT_NAMES", "BatchLoader", "DHP19Config", "DHP19Dataset", "DHP19FrameDataset",
    "DataError", "EventH36MConfig", "EventH36MDataset", "ann_frame", "collate", "fixed_time_histogram",
    "load_projection_matrices", "measure_throughput", "project_joints", "shard_for_devices", "span_bin_index",
    "spread_indices", "stacked_histogram", "voxel_grid",
]
