"""Event data: DHP19 and Event-Human3.6M windows, the batch format and the loader.

Event representations are in :mod:`hybridjax.data.representations`, the synthetic generator in
:mod:`hybridjax.data.synthetic`, the raw DHP19 converter in :mod:`hybridjax.data.raw_dhp19`.
"""
from hybridjax.data.batch import FIELDS, collate, shard_for_devices
from hybridjax.data.dhp19 import JOINT_NAMES, DHP19Config, DHP19Dataset, DHP19FrameDataset, project_joints
from hybridjax.data.errors import DataError
from hybridjax.data.h36m import EventH36MConfig, EventH36MDataset
from hybridjax.data.loader import BatchLoader, measure_throughput, spread_indices

__all__ = [
    "FIELDS", "JOINT_NAMES", "BatchLoader", "DHP19Config", "DHP19Dataset", "DHP19FrameDataset", "DataError",
    "EventH36MConfig", "EventH36MDataset", "collate", "measure_throughput", "project_joints", "shard_for_devices",
    "spread_indices",
]
