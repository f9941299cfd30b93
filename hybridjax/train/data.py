"""Data for training: the data folder (the synthetic cache) and the dataset of each stage and split.

Batches come from the one loader, :class:`hybridjax.data.loader.BatchLoader` (a pure function of
``(seed, step)``, so resuming replays exactly the batches of an uninterrupted run), in the one batch format
of :mod:`hybridjax.data.batch`.
"""
from __future__ import annotations

import os
import pathlib

from hybridjax.data import DHP19Dataset, DHP19FrameDataset, EventH36MConfig, EventH36MDataset
from hybridjax.data.synthetic import SyntheticConfig, ensure_synthetic_dhp19
from hybridjax.errors import UserError
from hybridjax.train import stages as stage_lib
from hybridjax.train.config import TrainConfig
from hybridjax.train.stages import Stage

# ------------------------------------------------------------------------------------ data folder


def synthetic_cache_dir(config: TrainConfig) -> pathlib.Path:
    """Where ``--dataset synthetic`` keeps its generated recordings (created on first use)."""
    base = config.cache_dir or pathlib.Path(
        os.environ.get("HYBRIDJAX_CACHE", pathlib.Path.home() / ".cache" / "hybridjax")
    )
    return pathlib.Path(base) / f"synthetic-{config.data.synthetic_preset}-{config.data.synthetic_seed}"


class MissingDataError(UserError, FileNotFoundError):
    """The data folder of a real data set is missing or holds no recordings (the message says how to get it)."""


_HOW_TO_GET = {
    "dhp19": (
        "DHP19 is not bundled. Download the public release (DVS_movies and Vicon_data, "
        "https://sites.google.com/view/dhp19) and convert it with\n"
        "    python experiments/convert_dhp19.py RAW_ROOT {path}\n"
        "(or point --data-dir at a folder in the official preprocessed h5 layout)."
    ),
    "h36m": (
        "Event-Human3.6M is not bundled: --data-dir must hold the official layout "
        "(<subject>/upsample/<Action>.<camera>/events.h5 and labels.h5)."
    ),
}


def missing_data_message(dataset: str, path: pathlib.Path, problem: str) -> str:
    """The one message a run with no data prints: where it looked, how to get the data, the synthetic run."""
    how = _HOW_TO_GET.get(dataset, "").format(path=path)
    return (f"no {dataset} data in {path} ({problem}).\n{how}\n"
            "To train on the generated synthetic DHP19 data instead (no download):\n"
            "    python experiments/train.py --dataset synthetic")


def _check_recordings(dataset: str, path: pathlib.Path) -> None:
    if not path.is_dir():
        raise MissingDataError(missing_data_message(dataset, path, "the folder does not exist"))
    if dataset == "dhp19" and not any(path.glob("*_events.h5")):
        raise MissingDataError(missing_data_message(dataset, path, "no S*_session*_mov*_events.h5 files"))
    if dataset == "h36m" and not (path / "labels.h5").is_file():
        raise MissingDataError(missing_data_message(dataset, path, "no labels.h5"))


def resolve_data_dir(config: TrainConfig, log=print) -> pathlib.Path:
    """The data folder; for a synthetic run without ``--data-dir`` generate it into the cache first.

    Raises :class:`MissingDataError` when the folder is missing or holds no recordings.
    """
    if config.data_dir is not None:
        path = pathlib.Path(config.data_dir)
        _check_recordings(config.dataset, path)
        return path
    if config.dataset != "synthetic":
        raise ValueError(f"--dataset {config.dataset} needs --data-dir")
    path = synthetic_cache_dir(config)
    wanted = SyntheticConfig.preset(config.data.synthetic_preset, seed=config.data.synthetic_seed)
    if not (path / "synthetic_summary.json").is_file():
        log(f"generating the synthetic DHP19 data set (preset {config.data.synthetic_preset!r}, seed "
            f"{config.data.synthetic_seed}) into {path} (first use; later runs reuse it)")
    return ensure_synthetic_dhp19(path, wanted, progress=config.progress)


def build_dataset(config: TrainConfig, stage: Stage | str, split: str, data_dir: pathlib.Path,
                  window_ms: int | None = None):
    """The dataset a stage (record or registered name) trains (``split='train'``) or validates (``'test'``) on.

    ``window_ms``: SNN window length (None: the official 100 ms for train, 200 ms for test). Stages that read
    no events train on DHP19's ANN frames; the next window's ANN input is read where the train step needs it.
    """
    stage = stage_lib.stage(stage) if isinstance(stage, str) else stage
    ann_next = split == "train" and stage.reads_next_input
    if config.dataset == "h36m":
        # No frame dataset: the ANN trains on the windows' ANN inputs and their labels (ann_landmarks).
        overrides = {} if window_ms is None else {"window_ms": window_ms}
        if config.data.bin_mode == "exact":
            overrides["step_ms"] = config.model.step_ms
        elif window_ms is not None:  # paper bins: keep their nominal length (20 per 200 ms) in other windows
            default = EventH36MConfig()
            overrides["num_bins"] = default.num_bins * window_ms // default.window_ms
        return EventH36MDataset(
            data_dir, split=split, cameras=config.data.cameras, bin_mode=config.data.bin_mode,
            ann_next=ann_next, **overrides,
        )
    if not stage.reads_events:
        return DHP19FrameDataset(data_dir, split=split, cameras=config.data.cameras,
                                 frame_step_ms=config.data.ann_frame_step_ms)
    return DHP19Dataset(
        data_dir, split=split, cameras=config.data.cameras, bin_mode=config.data.bin_mode,
        step_ms=config.model.step_ms, representation=config.data.representation,
        ann_next=ann_next, window_ms=window_ms,
    )
