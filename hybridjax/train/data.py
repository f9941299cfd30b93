"""Data for training: dataset construction per stage, the synthetic cache, and resumable batches.

Batches are a pure function of ``(seed, step)``: epoch ``e = step // batches_per_epoch`` visits the items
in the order ``permutation(numpy Generator([seed, e]))`` and step ``step`` takes the next ``batch_size``
of them (the incomplete tail of an epoch is dropped). Resuming at step ``s`` therefore replays exactly the
batches an uninterrupted run would have seen, and process ``p`` of ``P`` takes the ``p``-th contiguous
``1 / P`` of every global batch.

Collation follows :mod:`hybridjax.layout`: sequence fields become time-major (``events [T, B, H, W, 2]``,
``landmarks [T, B, J, 2]``), ``step_has_label [T]`` is shared by the batch. With ``downsample = f > 1``
events and ANN inputs are sum-pooled over f x f pixels (event counts of a coarser sensor); landmarks stay
in pixels of the 256 crop (the steps map them onto the coarse grid).
"""
from __future__ import annotations

import os
import pathlib
import queue
import threading

import numpy as np

from hybridjax.train.config import TrainConfig

# Fields that become time-major after collation, with their stacked rank when they are sequences
# (frame datasets give landmarks [B, J, 2], window datasets [B, T, J, 2]).
SEQUENCE_KEYS = {"events": 5, "landmarks": 4, "joints_3d": 4}
SHARED_KEYS = ("step_has_label",)  # one value for the whole batch
STAGE_KEYS = {
    "ann": ("ann_input", "ann_landmarks"),
    "snn": ("events", "landmarks", "step_has_label"),
    "hybrid": ("ann_input", "ann_input_next", "events", "landmarks", "step_has_label"),
}
EVAL_KEYS = {
    "ann": ("ann_input", "ann_landmarks"),
    "snn": ("events", "landmarks", "step_has_label"),
    "hybrid": ("ann_input", "events", "landmarks", "step_has_label"),
}


# ------------------------------------------------------------------------------------ data folder


def synthetic_cache_dir(config: TrainConfig) -> pathlib.Path:
    """Where ``--dataset synthetic`` keeps its generated recordings (created on first use)."""
    base = config.cache_dir or pathlib.Path(
        os.environ.get("HYBRIDJAX_CACHE", pathlib.Path.home() / ".cache" / "hybridjax")
    )
    return pathlib.Path(base) / f"synthetic-{config.data.synthetic_preset}-{config.data.synthetic_seed}"


def resolve_data_dir(config: TrainConfig, log=print) -> pathlib.Path:
    """The data folder; for a synthetic run without ``--data-dir`` generate it into the cache first."""
    if config.data_dir is not None:
        path = pathlib.Path(config.data_dir)
        if not path.is_dir():
            raise FileNotFoundError(f"--data-dir {path} does not exist")
        return path
    if config.dataset != "synthetic":
        raise ValueError(f"--dataset {config.dataset} needs --data-dir")
    from hybridjax.data.synthetic import SyntheticConfig, ensure_synthetic_dhp19

    path = synthetic_cache_dir(config)
    wanted = SyntheticConfig.preset(config.data.synthetic_preset, seed=config.data.synthetic_seed)
    if not (path / "synthetic_summary.json").is_file():
        log(f"generating the synthetic DHP19 data set (preset {config.data.synthetic_preset!r}, seed "
            f"{config.data.synthetic_seed}) into {path} (first use; later runs reuse it)")
    return ensure_synthetic_dhp19(path, wanted, progress=config.progress)


def build_dataset(config: TrainConfig, stage: str, split: str, data_dir: pathlib.Path,
                  window_ms: int | None = None):
    """The dataset a stage trains (``split='train'``) or validates (``'test'``) on.

    ``window_ms``: SNN window length (None: the official 100 ms for train, 200 ms for test).
    """
    if config.dataset == "h36m":
        from hybridjax.data import EventH36MConfig, EventH36MDataset

        # No frame dataset: the ANN trains on the windows' ANN inputs and their labels (ann_landmarks).
        overrides = {} if window_ms is None else {"window_ms": window_ms}
        if config.data.bin_mode == "exact":
            overrides["step_ms"] = config.model.step_ms
        elif window_ms is not None:  # paper bins: keep their nominal length (20 per 200 ms) in other windows
            default = EventH36MConfig()
            overrides["num_bins"] = default.num_bins * window_ms // default.window_ms
        return EventH36MDataset(
            data_dir, split=split, cameras=config.data.cameras, bin_mode=config.data.bin_mode,
            ann_next=(split == "train" and stage == "hybrid"), **overrides,
        )
    from hybridjax.data import DHP19Dataset, DHP19FrameDataset

    if stage == "ann":
        return DHP19FrameDataset(data_dir, split=split, cameras=config.data.cameras)
    return DHP19Dataset(
        data_dir, split=split, cameras=config.data.cameras, bin_mode=config.data.bin_mode,
        step_ms=config.model.step_ms, representation=config.data.representation,
        ann_next=(split == "train" and stage == "hybrid"), window_ms=window_ms,
    )


# ------------------------------------------------------------------------------------ batching


def batches_per_epoch(num_items: int, batch_size: int) -> int:
    if num_items < batch_size:
        raise ValueError(f"the training split has {num_items} items, fewer than one batch of {batch_size}")
    return num_items // batch_size


def batch_indices(num_items: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Global item indices of training step ``step`` (see the module docstring)."""
    per_epoch = batches_per_epoch(num_items, batch_size)
    epoch, position = divmod(step, per_epoch)
    order = np.random.Generator(np.random.PCG64([seed, epoch])).permutation(num_items)
    return order[position * batch_size:(position + 1) * batch_size]


def sum_pool(x: np.ndarray, factor: int, row_axis: int) -> np.ndarray:
    """Sums ``factor x factor`` pixel blocks of the axes ``row_axis`` and ``row_axis + 1``."""
    if factor == 1:
        return x
    shape = x.shape
    h, w = shape[row_axis], shape[row_axis + 1]
    if h % factor or w % factor:
        raise ValueError(f"cannot pool {h}x{w} by {factor}")
    split = shape[:row_axis] + (h // factor, factor, w // factor, factor) + shape[row_axis + 2:]
    return x.reshape(split).sum(axis=(row_axis + 1, row_axis + 3))


def collate(items: list[dict], keys, downsample: int = 1) -> dict:
    """Stacks item dicts into a batch in hybridjax layout (see the module docstring)."""
    batch = {}
    for key in keys:
        if key not in items[0]:
            raise KeyError(f"batch field {key!r} missing from the dataset items (have {sorted(items[0])})")
        if key in SHARED_KEYS:
            batch[key] = np.asarray(items[0][key])
            continue
        stacked = np.stack([np.asarray(item[key]) for item in items])
        if stacked.ndim == SEQUENCE_KEYS.get(key, -1):
            stacked = np.moveaxis(stacked, 0, 1)  # [B, T, ...] -> [T, B, ...]
        if key == "events":
            stacked = sum_pool(stacked, downsample, 2)
        elif key in ("ann_input", "ann_input_next"):
            stacked = sum_pool(stacked, downsample, 1)
        if stacked.dtype == np.float64:
            stacked = stacked.astype(np.float32)
        batch[key] = stacked
    return batch


class TrainBatches:
    """Iterator over the training batches of steps ``start .. stop - 1`` of this process, prefetched.

    ``batch_size`` is the global batch; this process gets ``batch_size / process_count`` of it.
    """

    def __init__(self, dataset, stage: str, batch_size: int, seed: int, start: int, stop: int, *,
                 downsample: int = 1, process_index: int = 0, process_count: int = 1, prefetch: int = 2):
        if batch_size % process_count:
            raise ValueError(f"batch size {batch_size} is not divisible by {process_count} processes")
        self.dataset, self.stage, self.batch_size, self.seed = dataset, stage, batch_size, seed
        self.start, self.stop, self.downsample = start, stop, downsample
        self.local = batch_size // process_count
        self.offset = process_index * self.local
        self.keys = STAGE_KEYS[stage]
        self.num_items = len(dataset)
        batches_per_epoch(self.num_items, batch_size)  # raises early on a too-small split
        self._queue: queue.Queue = queue.Queue(maxsize=max(prefetch, 1))
        self._stop_event = threading.Event()
        self._thread = threading.Thread(target=self._produce, daemon=True)
        self._thread.start()

    def batch(self, step: int) -> dict:
        idx = batch_indices(self.num_items, self.batch_size, self.seed, step)[self.offset:self.offset + self.local]
        return collate([self.dataset[int(i)] for i in idx], self.keys, self.downsample)

    def _produce(self):
        try:
            for step in range(self.start, self.stop):
                if self._stop_event.is_set():
                    return
                item = (step, self.batch(step))
                while not self._stop_event.is_set():
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as error:  # hand the error to the consumer thread
            self._queue.put((None, error))

    def __iter__(self):
        for _ in range(self.start, self.stop):
            step, batch = self._queue.get()
            if step is None:
                raise batch
            yield step, batch

    def close(self):
        self._stop_event.set()


def validation_items(dataset, max_items: int) -> list[int]:
    """Indices of the validation subset: all items, or ``max_items`` evenly spread over the split."""
    n = len(dataset)
    if max_items <= 0 or max_items >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, max_items).round()})


def validation_batches(dataset, stage: str, batch_size: int, max_items: int, downsample: int = 1):
    """Batches of the validation subset in order (the last one may be smaller)."""
    indices = validation_items(dataset, max_items)
    keys = EVAL_KEYS[stage]
    for begin in range(0, len(indices), batch_size):
        chunk = indices[begin:begin + batch_size]
        yield collate([dataset[i] for i in chunk], keys, downsample)
