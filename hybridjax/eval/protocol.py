"""What evaluation asks of a test split: the :class:`WindowDataset` protocol.

:func:`hybridjax.eval.evaluate.evaluate` reads datasets only through these public members;
``hybridjax.data.DHP19Dataset`` and ``hybridjax.data.EventH36MDataset`` meet them (checked in the tests), and
any other window dataset that does can be evaluated.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class WindowDataset(Protocol):
    """Windows of an event stream with labelled SNN steps.

    ``dataset[i]`` is a dict with ``events [T, H, W, 2]``, ``ann_input [H, W, 20]``, ``landmarks [T, J, 2]``
    ((u, v) pixels of the crop, NaN = missing), ``step_has_label [T]`` (the same for every window),
    ``joints_3d [T, J, 3]`` (mm, NaN = missing), ``camera`` (int), ``recording`` (str) and
    ``window_start_ms`` (int).
    """

    window_ms: int  # length of a window in ms
    window_step_ms: int  # ms between the starts of consecutive windows (the hybrid's ANN period)
    cameras: tuple[int, ...]  # camera views in the split
    has_3d_labels: bool  # joints_3d and the camera calibration exist (else no 3-D MPJPE)

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict: ...

    def index(self) -> list[tuple[int, str, int]]:
        """``(camera, recording, window_index)`` of every item, in item order."""
        ...

    def label_times_ms(self, window_start_ms: int) -> list[int]:
        """Times (ms) of the labels of the window starting at ``window_start_ms``, one per labelled step."""
        ...

    def ann_input_at(self, recording: str, camera: int, ms: int) -> np.ndarray:
        """The constant-count ANN input ``[H, W, 20]`` of the events ending at ``ms`` of ``recording``."""
        ...


@runtime_checkable
class CalibratedWindowDataset(WindowDataset, Protocol):
    """A :class:`WindowDataset` with 3-D labels and calibrated cameras (``has_3d_labels`` True)."""

    def projection_matrix(self, camera: int) -> np.ndarray:
        """The 3x4 projection matrix of ``camera``."""
        ...

    def camera_position(self, camera: int) -> np.ndarray:
        """The centre (mm) of ``camera``."""
        ...
