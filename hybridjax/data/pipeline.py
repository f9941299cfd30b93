"""Batched loading: deterministic shuffling, multi-process sharding, worker threads, time-major collation.

* Order: epoch ``e`` visits the items in ``permutation(len(dataset))`` drawn from a generator seeded with
  ``(seed, e)``, so any process can rebuild any epoch's order without communication.
* Sharding: global batch ``g`` is ``order[g * B:(g + 1) * B]`` (``B`` = global ``batch_size``); process ``k`` of
  ``K`` takes the contiguous slice ``[k * B / K, (k + 1) * B / K)`` of it. The processes together see every
  global batch once and nothing twice.
* Workers: each batch is read *and collated* by one worker, so the consuming (training) thread only picks
  up finished batches. Workers are threads (h5py and numpy release the GIL for I/O and part of the array
  work) or, with ``worker_type='process'``, spawned processes that each hold their own copy of the dataset
  (no GIL, at the price of pickling every batch back; on the 2-core development machine this was ~4x
  slower than threads). At most ``prefetch`` batches are in flight, so memory stays bounded.
* Collation: time-major keys (``events`` [T, H, W, 2], ``landmarks`` [T, J, 2], ``joints_3d`` [T, J, 3]) are
  stacked on axis 1 -> ``[T, B, ...]``; shared keys (``step_has_label`` [T]) must agree across the batch and
  stay ``[T]``; strings become lists; everything else is stacked on axis 0 -> ``[B, ...]``.
"""
from __future__ import annotations

import collections
import concurrent.futures
import math
import multiprocessing
import time

import numpy as np

TIME_MAJOR_KEYS = ("events", "landmarks", "joints_3d")
SHARED_KEYS = ("step_has_label",)


def collate(items: list[dict], time_major_keys=TIME_MAJOR_KEYS, shared_keys=SHARED_KEYS) -> dict:
    """Stacks a list of item dicts into one batch dict (see the module docstring for the layout)."""
    if not items:
        raise ValueError("cannot collate an empty list of items")
    keys = list(items[0])
    for position, item in enumerate(items[1:], start=1):
        if list(item) != keys:
            raise ValueError(f"item {position} has keys {sorted(item)}, item 0 has {sorted(keys)}")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        if isinstance(values[0], str):
            batch[key] = values
        elif key in shared_keys:
            first = np.asarray(values[0])
            for position, value in enumerate(values[1:], start=1):
                if not np.array_equal(first, value):
                    raise ValueError(
                        f"'{key}' differs between item 0 and item {position} of the batch; it must be shared "
                        "(windows of one dataset have the same step pattern)"
                    )
            batch[key] = first
        elif key in time_major_keys:
            batch[key] = np.stack(values, axis=1)
        else:
            batch[key] = np.stack([np.asarray(value) for value in values], axis=0)
    return batch


def shard_for_devices(batch: dict, num_devices: int, time_major_keys=TIME_MAJOR_KEYS,
                      shared_keys=SHARED_KEYS) -> dict:
    """Splits the batch axis for ``jax.pmap``: every array gets a leading device axis ``D``.

    ``[B, ...]`` -> ``[D, B / D, ...]``; time-major ``[T, B, ...]`` -> ``[D, T, B / D, ...]`` (the batch axis is
    axis 1); shared ``[T]`` -> ``[D, T]`` (copied per device); string lists -> ``D`` lists.
    """
    sharded = {}
    for key, value in batch.items():
        if isinstance(value, list):
            if len(value) % num_devices:
                raise ValueError(f"'{key}': {len(value)} entries do not split over {num_devices} devices")
            per = len(value) // num_devices
            sharded[key] = [value[d * per:(d + 1) * per] for d in range(num_devices)]
            continue
        value = np.asarray(value)
        if key in shared_keys:
            sharded[key] = np.broadcast_to(value, (num_devices,) + value.shape).copy()
            continue
        axis = 1 if key in time_major_keys else 0
        size = value.shape[axis]
        if size % num_devices:
            raise ValueError(f"'{key}': batch axis {axis} of size {size} does not split over {num_devices} devices")
        split_shape = value.shape[:axis] + (num_devices, size // num_devices) + value.shape[axis + 1:]
        sharded[key] = np.moveaxis(value.reshape(split_shape), axis, 0)
    return sharded


class BatchLoader:
    """Iterates batches of ``dataset`` (anything with ``len`` and ``__getitem__`` returning dicts).

    ``batch_size`` is the *global* batch; this process yields ``batch_size // process_count`` items per batch.
    ``for batch in loader`` runs one epoch and advances the epoch counter; :meth:`iter_epoch` runs a given
    epoch. ``num_workers = 0`` reads in the calling thread. At most ``prefetch`` batches are in flight, each
    built by one worker, so keep ``prefetch >= num_workers`` to keep every worker busy. Call :meth:`close`
    (or use ``with``) to stop the worker threads; an abandoned iteration cancels its pending reads when the
    generator is closed.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, shuffle: bool = True, drop_last: bool = True,
                 num_workers: int = 2, prefetch: int = 2, process_index: int = 0, process_count: int = 1,
                 start_epoch: int = 0, worker_type: str = "thread"):
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"global batch_size {batch_size} must be a positive multiple of {process_count}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
        if process_count > 1 and not drop_last:
            raise ValueError("drop_last=False with several processes would give processes unequal step counts")
        if num_workers < 0 or prefetch < 1:
            raise ValueError("num_workers must be >= 0 and prefetch >= 1")
        if worker_type not in ("thread", "process"):
            raise ValueError(f"worker_type must be 'thread' or 'process', got {worker_type!r}")
        self.worker_type = worker_type
        self.dataset = dataset
        self.batch_size = batch_size
        self.local_batch_size = batch_size // process_count
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_workers = num_workers
        self.prefetch = prefetch
        self.process_index = process_index
        self.process_count = process_count
        self.epoch = start_epoch
        self.time_major_keys = getattr(dataset, "time_major_keys", TIME_MAJOR_KEYS)
        self.shared_keys = getattr(dataset, "shared_keys", SHARED_KEYS)
        self._executor: concurrent.futures.Executor | None = None

    def __len__(self) -> int:
        """Batches per epoch (the same on every process)."""
        count = len(self.dataset) / self.batch_size
        return int(count) if self.drop_last else math.ceil(count)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The global item order of ``epoch`` (identity when not shuffling)."""
        if not self.shuffle:
            return np.arange(len(self.dataset))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))

    def batch_indices(self, epoch: int) -> list[np.ndarray]:
        """This process's item indices for every batch of ``epoch``."""
        order = self.epoch_order(epoch)
        batches = []
        for g in range(len(self)):
            global_batch = order[g * self.batch_size:(g + 1) * self.batch_size]
            local = self.local_batch_size
            if len(global_batch) == self.batch_size:
                batches.append(global_batch[self.process_index * local:(self.process_index + 1) * local])
            else:  # last partial batch, single process only (checked in __init__)
                batches.append(global_batch)
        return batches

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        return self.iter_epoch(epoch)

    def iter_epoch(self, epoch: int):
        """Yields the collated batches of ``epoch`` in order."""
        batches = self.batch_indices(epoch)
        if self.num_workers == 0:
            for indices in batches:
                yield self._collate([self.dataset[int(i)] for i in indices])
            return
        executor = self._get_executor()
        pending: collections.deque = collections.deque()
        next_batch = 0
        try:
            while pending or next_batch < len(batches):
                while next_batch < len(batches) and len(pending) < self.prefetch:
                    indices = [int(i) for i in batches[next_batch]]
                    pending.append(executor.submit(self._build, indices, self.time_major_keys, self.shared_keys))
                    next_batch += 1
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def _collate(self, items: list[dict]) -> dict:
        return collate(items, self.time_major_keys, self.shared_keys)

    def _build_batch(self, indices: list[int], time_major_keys, shared_keys) -> dict:
        return collate([self.dataset[i] for i in indices], time_major_keys, shared_keys)

    def _get_executor(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.worker_type == "thread":
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=self.num_workers, thread_name_prefix="hybridjax-data"
                )
                self._build = self._build_batch
            else:
                # spawn, not fork: the parent may already run JAX threads, which fork would copy half-way.
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    max_workers=self.num_workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_set_worker_dataset, initargs=(self.dataset,),
                )
                self._build = _build_worker_batch
        return self._executor

    def close(self) -> None:
        """Stops the worker threads (waiting for reads already running); the loader can be reused after."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_executor", None) is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


_WORKER_DATASET = None


def _set_worker_dataset(dataset) -> None:
    """Process-worker initialiser: the dataset is pickled once per worker, not once per item."""
    global _WORKER_DATASET
    _WORKER_DATASET = dataset


def _build_worker_batch(indices: list[int], time_major_keys, shared_keys) -> dict:
    return collate([_WORKER_DATASET[i] for i in indices], time_major_keys, shared_keys)


def measure_throughput(loader: BatchLoader, n_batches: int, epoch: int = 0) -> float:
    """Windows per second delivered by ``loader`` in steady state.

    The clock starts when the first batch arrives (so opening files and starting threads are excluded)
    and stops at batch ``n_batches``; with one batch the whole time is used. Raises if the epoch is shorter.
    """
    if n_batches <= 0:
        raise ValueError("n_batches must be positive")
    iterator = loader.iter_epoch(epoch)
    try:
        start = time.perf_counter()
        windows = 0
        for count in range(n_batches):
            batch = next(iterator, None)
            if batch is None:
                raise ValueError(f"the epoch has only {count} batches, {n_batches} requested")
            size = _batch_size(batch, loader.time_major_keys)
            if count == 0 and n_batches > 1:
                start = time.perf_counter()
                continue
            windows += size
        return windows / (time.perf_counter() - start)
    finally:
        iterator.close()


def _batch_size(batch: dict, time_major_keys) -> int:
    for key, value in batch.items():
        if isinstance(value, list):
            return len(value)
        if isinstance(value, np.ndarray) and value.ndim:
            return value.shape[1] if key in time_major_keys else value.shape[0]
    raise ValueError("batch has no array to read its size from")
