"""Synthetic DHP19: a deterministic, DHP19-format dataset (bodies, movements, cameras, rendering, DVS).

Entry points: :func:`write_synthetic_dhp19` with a :class:`SyntheticConfig` (``SyntheticConfig.preset("default")``
for quick training, ``"tiny"`` for tests) and :func:`ensure_synthetic_dhp19` (generate once, reuse afterwards).
"""
from .cameras import CHANNEL_TO_MATRIX, Camera, dhp19_like_rig, project_points
from .dvs import DvsParams, EventSimulator, crossing_events, noise_events
from .writer import SyntheticConfig, ensure_synthetic_dhp19, ms_to_idx, write_synthetic_dhp19

__all__ = [
    "CHANNEL_TO_MATRIX", "Camera", "DvsParams", "EventSimulator", "SyntheticConfig", "crossing_events",
    "dhp19_like_rig", "ensure_synthetic_dhp19", "ms_to_idx", "noise_events", "project_points", "write_synthetic_dhp19",
]
