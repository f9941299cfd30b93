"""Synthetic DHP19: a deterministic, DHP19-format dataset (bodies, movements, cameras, rendering, DVS).

Entry points: :func:`write_synthetic_dhp19` with a :class:`SyntheticConfig` (``SyntheticConfig.preset("default")``
for quick training, ``"tiny"`` for tests) and :func:`ensure_synthetic_dhp19` (generate once, reuse afterwards).

How the ``default`` preset compares with DHP19
----------------------------------------------
Published DHP19 facts (Calabrese et al., "DHP19: Dynamic Vision Sensor 3D Human Pose Dataset", CVPRW 2019;
the official preprocessing, SPEC.md section 4): 17 subjects, 33 movements in 5 sessions, four synchronised
DAVIS346 cameras (346 x 260), Vicon labels of 13 joints at 100 Hz with NaN where a marker was lost, and
constant-count frames of 7500 events per camera. The synthetic set keeps all of that layout (four
DAVIS346-sized cameras placed as in the release, 13 joints, 100 Hz labels, 7500-event ANN frames) with fewer
subjects (4 train + 2 test), 10 DHP19-like movements and 3 s recordings.

Measured on the default preset (seed 0, ``python experiments/make_synthetic.py``; 18 recordings):

* Limb speed. DHP19 publishes no limb speeds, but the paper being re-implemented publishes what speed does
  to a held prediction: the ANN held over 100 ms goes from 5.08 px (first 10 ms step) to 6.73 px (tenth),
  5.84 px on average (Aydin et al. 2024, SPEC section 5). Holding a simulated 5.08 px ANN (isotropic error)
  over the synthetic test windows of camera 3 (the true 2-D labels of each window's first step, moved by the
  true motion) gives 5.10 -> 6.68 px and 5.78 px on average: the synthetic movements are as fast, in camera
  pixels per 100 ms, as the DHP19 test recordings. The true joints move 3.1 px on average (6.4 px RMS) in
  the first 90 ms of a window.
* Event rate per camera: median 38 k events/s (range 10 k - 135 k over recordings and cameras; channel means
  43 k, 34 k, 50 k, 51 k). A 7500-event ANN frame therefore spans 200 ms at the median (56 - 783 ms). The
  DHP19 papers give no per-camera event rate; the rate of a recording can be read from any converted
  DHP19 folder with ``experiments/check_data.py``.
* Label dropouts: every recording has 1 - 3 runs of 50 - 400 ms in which one joint is NaN (1.3 % of the
  joint labels). DHP19 has NaN Vicon labels too (the official loaders mask them); their rate is not
  published. Marker jitter 1.5 mm.

So the default is not slower than DHP19; it is smaller (fewer subjects, movements and seconds) and cleaner
(a rendered body, no clothing texture or background clutter).
"""
from .cameras import CHANNEL_TO_MATRIX, Camera, dhp19_like_rig, project_points
from .dvs import DvsParams, EventSimulator, crossing_events, noise_events
from .writer import SyntheticConfig, ensure_synthetic_dhp19, ms_to_idx, write_synthetic_dhp19

__all__ = [
    "CHANNEL_TO_MATRIX", "Camera", "DvsParams", "EventSimulator", "SyntheticConfig", "crossing_events",
    "dhp19_like_rig", "ensure_synthetic_dhp19", "ms_to_idx", "noise_events", "project_points", "write_synthetic_dhp19",
]
