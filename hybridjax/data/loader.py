"""The one loader: batches as a pure function of ``(seed, step)``, built by worker threads, process-sharded.

* Order: with ``shuffle``, epoch ``e`` visits the loader's items in the order
  ``permutation(numpy Generator(PCG64([seed, e])))`` and global step ``k`` (epoch ``k // len(loader)``) takes
  the next ``batch_size`` of them; the incomplete tail of an epoch is dropped. The batch of step ``k``
  therefore depends only on ``(seed, k)``: resuming at step ``s`` replays exactly the batches an
  uninterrupted run would have seen. Without ``shuffle`` the items come in order, the last batch may be
  smaller (or padded to ``batch_size`` with ``pad_last``, see :func:`hybridjax.data.batch.collate`).
* Sharding: ``batch_size`` is the *global* batch; process ``p`` of ``P`` takes the ``p``-th contiguous
  ``1 / P`` of every global batch, so the processes together see every batch once, without communication.
* Workers: each batch is read *and collated* by one of ``num_workers`` threads (h5py and numpy release the
  GIL for I/O and most array work), at most ``prefetch`` batches ahead, in step order. ``num_workers=0``
  reads in the calling thread. An error in a worker is raised in the consumer at that batch.
* Shutdown: :meth:`BatchLoader.close` (or leaving a ``with`` block) cancels pending reads and joins the
  worker threads; a loader can be iterated again afterwards (new threads start on demand).
"""
from __future__ import annotations

import collections
import concurrent.futures
import time
from collections.abc import Iterator, Sequence

import numpy as np

from hybridjax.data.batch import batch_size as count_windows
from hybridjax.data.batch import collate
from hybridjax.errors import ConfigError


def spread_indices(n: int, count: int) -> list[int]:
    """``count`` positions spread evenly over ``0 .. n - 1`` (all of them when ``count <= 0`` or ``>= n``)."""
    if count <= 0 or count >= n:
        return list(range(n))
    return sorted({int(k) for k in np.linspace(0, n - 1, count).round()})


class BatchLoader:
    """Batches of ``dataset`` (``len`` and ``[i]`` -> dict) in the format of :mod:`hybridjax.data.batch`.

    Args:
      dataset: the items.
      batch_size: global batch (all processes together).
      fields: the item keys to collate (None: all of them).
      seed: shuffling seed.
      shuffle: shuffled epochs with the tail dropped (training) or the items in order (evaluation).
      downsample: sum-pool the pixel fields by this factor.
      items: the dataset indices to visit (None: all of them).
      pad_last: without shuffle, pad the last batch to ``batch_size`` (adds ``is_padding``).
      num_workers, prefetch: worker threads and batches in flight.
      process_index, process_count: this process's share of every global batch.
    """

    def __init__(self, dataset, batch_size: int, *, fields: Sequence[str] | None = None, seed: int = 0,
                 shuffle: bool = True, downsample: int = 1, items: Sequence[int] | None = None,
                 pad_last: bool = False, num_workers: int = 2, prefetch: int = 2, process_index: int = 0,
                 process_count: int = 1):
        if batch_size <= 0 or batch_size % process_count:
            raise ValueError(f"global batch size {batch_size} must be a positive multiple of the {process_count} "
                             "processes")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} outside 0..{process_count - 1}")
        if process_count > 1 and not shuffle:
            raise ValueError("unshuffled loading keeps a partial last batch, which cannot split over processes")
        if num_workers < 0 or prefetch < 1:
            raise ValueError(f"num_workers must be >= 0 and prefetch >= 1, got {num_workers} and {prefetch}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.local_batch_size = batch_size // process_count
        self.fields = None if fields is None else tuple(fields)
        self.seed, self.shuffle, self.downsample, self.pad_last = seed, shuffle, downsample, pad_last
        self.items = np.arange(len(dataset)) if items is None else np.asarray(items, dtype=np.int64)
        self.num_workers, self.prefetch = num_workers, prefetch
        self.process_index = process_index
        if shuffle and len(self.items) < batch_size:
            raise ConfigError(f"batch size {batch_size} is larger than the split ({len(self.items)} items)")
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.shuffle:
            return len(self.items) // self.batch_size
        return -(-len(self.items) // self.batch_size)

    def indices(self, step: int) -> np.ndarray:
        """This process's dataset indices of global step ``step`` (see the module docstring)."""
        epoch, position = divmod(step, len(self))
        order = self.items
        if self.shuffle:
            order = order[np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(len(order))]
        chosen = order[position * self.batch_size:(position + 1) * self.batch_size]
        local = self.local_batch_size
        return chosen[self.process_index * local:(self.process_index + 1) * local] if self.shuffle else chosen

    def batch(self, step: int) -> dict:
        """The collated batch of global step ``step``."""
        pad_to = self.batch_size if self.pad_last and not self.shuffle else None
        return collate([self.dataset[int(i)] for i in self.indices(step)], self.fields,
                       downsample=self.downsample, pad_to=pad_to)

    def steps(self, start: int, stop: int) -> Iterator[tuple[int, dict]]:
        """Yields ``(step, batch)`` for the global steps ``start .. stop - 1``, read ahead by the workers."""
        if self.num_workers == 0:
            for step in range(start, stop):
                yield step, self.batch(step)
            return
        executor = self._get_executor()
        pending: collections.deque = collections.deque()
        following = start
        try:
            for step in range(start, stop):
                while following < stop and len(pending) < self.prefetch:
                    pending.append(executor.submit(self.batch, following))
                    following += 1
                yield step, pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def iter_epoch(self, epoch: int) -> Iterator[dict]:
        """The batches of one epoch in order."""
        for _, batch in self.steps(epoch * len(self), (epoch + 1) * len(self)):
            yield batch

    def __iter__(self) -> Iterator[dict]:
        return self.iter_epoch(0)

    def _get_executor(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=self.num_workers,
                                                                   thread_name_prefix="hybridjax-data")
        return self._executor

    def close(self) -> None:
        """Cancels pending reads and joins the worker threads (waiting for reads already running)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> BatchLoader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        executor = getattr(self, "_executor", None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


def measure_throughput(loader: BatchLoader, n_batches: int, epoch: int = 0) -> float:
    """Windows per second delivered by ``loader`` in steady state.

    The clock starts when the first batch arrives (so opening files and starting threads are excluded)
    and stops at batch ``n_batches``; with one batch the whole time is used. Raises if the epoch is shorter.
    """
    if n_batches <= 0:
        raise ValueError("n_batches must be positive")
    if n_batches > len(loader):
        raise ValueError(f"the epoch has only {len(loader)} batches, {n_batches} requested")
    iterator = loader.steps(epoch * len(loader), epoch * len(loader) + n_batches)
    try:
        start = time.perf_counter()
        windows = 0
        for count, (_, batch) in enumerate(iterator):
            if count == 0 and n_batches > 1:
                start = time.perf_counter()
                continue
            windows += count_windows(batch)
        return windows / (time.perf_counter() - start)
    finally:
        iterator.close()
