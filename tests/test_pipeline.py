"""The one loader and batch format: (seed, step) determinism, process sharding, worker threads and their
shutdown, collation with padding, pmap shards."""
import threading

import numpy as np
import pytest

from hybridjax.data.batch import collate, shard_for_devices
from hybridjax.data.loader import BatchLoader, measure_throughput


class CountingDataset:
    """Item i: a time-major 'events' [T, 2, 2, 2] filled with i, 'ann_input' [2, 2, 1], a shared mask."""

    def __init__(self, size: int, steps: int = 3):
        self.size, self.steps = size, steps

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        return {
            "events": np.full((self.steps, 2, 2, 2), i, dtype=np.float32),
            "landmarks": np.full((self.steps, 13, 2), i, dtype=np.float32),
            "step_has_label": np.arange(self.steps) % 2 == 0,
            "ann_input": np.full((2, 2, 1), i, dtype=np.float32),
            "window_index": i,
            "recording": f"rec{i}",
        }


def _ids(batch):
    return batch["window_index"].tolist()


def test_shuffle_is_deterministic_per_seed_and_epoch():
    dataset = CountingDataset(40)
    first = [_ids(b) for b in BatchLoader(dataset, 8, seed=3, num_workers=0).iter_epoch(0)]
    again = [_ids(b) for b in BatchLoader(dataset, 8, seed=3, num_workers=2).iter_epoch(0)]
    other_epoch = [_ids(b) for b in BatchLoader(dataset, 8, seed=3, num_workers=0).iter_epoch(1)]
    other_seed = [_ids(b) for b in BatchLoader(dataset, 8, seed=4, num_workers=0).iter_epoch(0)]
    assert first == again
    assert first != other_epoch and first != other_seed
    assert sorted(sum(first, [])) == list(range(40)) == sorted(sum(other_epoch, []))
    # The batch of global step k depends only on (seed, k): epoch 1 starts at step 5; a loader started
    # half-way (a resumed run) and its worker threads give exactly the same batches.
    loader = BatchLoader(dataset, 8, seed=3, num_workers=2)
    with loader:
        resumed = [(step, _ids(b)) for step, b in loader.steps(3, 8)]
    assert resumed == [(k, (first + other_epoch)[k]) for k in range(3, 8)]
    assert [_ids(loader.batch(k)) for k in range(5)] == first
    unshuffled = BatchLoader(dataset, 8, shuffle=False, num_workers=0)
    assert [_ids(b) for b in unshuffled.iter_epoch(5)][0] == list(range(8))


def test_process_sharding_covers_the_epoch_once():
    dataset = CountingDataset(45)
    single = [_ids(b) for b in BatchLoader(dataset, 12, seed=1, num_workers=0).iter_epoch(2)]
    shards = [
        [_ids(b) for b in BatchLoader(dataset, 12, seed=1, num_workers=1, process_index=k,
                                      process_count=3).iter_epoch(2)]
        for k in range(3)
    ]
    assert len(single) == 3 and all(len(s) == 3 for s in shards)  # 45 // 12 batches, the rest dropped
    for g in range(3):
        # Each process holds a contiguous third of the same global batch, in process order.
        assert shards[0][g] + shards[1][g] + shards[2][g] == single[g]
        assert all(len(s[g]) == 4 for s in shards)
    seen = sum((sum(s, []) for s in shards), [])
    assert len(seen) == len(set(seen)) == 36


def test_partial_last_batch_and_len():
    dataset = CountingDataset(10)
    assert len(BatchLoader(dataset, 4)) == 2
    kept = [_ids(b) for b in BatchLoader(dataset, 4, shuffle=False, num_workers=0)]
    assert [len(b) for b in kept] == [4, 4, 2] and sorted(sum(kept, [])) == list(range(10))
    # Evaluation: a chosen subset, in order, the last batch padded with its last item and marked.
    padded = list(BatchLoader(dataset, 4, shuffle=False, items=[1, 3, 5, 7, 9], pad_last=True, num_workers=1))
    assert [_ids(b) for b in padded] == [[1, 3, 5, 7], [9, 9, 9, 9]]
    assert padded[1]["is_padding"].tolist() == [False, True, True, True] and padded[1]["events"].shape[1] == 4
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        BatchLoader(dataset, 4, process_count=3)
    with pytest.raises(ValueError, match="partial last batch"):
        BatchLoader(dataset, 4, process_count=2, shuffle=False)
    with pytest.raises(ValueError, match="batch size 12 is larger than the split"):
        BatchLoader(dataset, 12)


def test_collation_layout():
    dataset = CountingDataset(6, steps=3)
    batch = next(BatchLoader(dataset, 4, shuffle=False, num_workers=2).iter_epoch(0))
    assert batch["events"].shape == (3, 4, 2, 2, 2)
    assert batch["landmarks"].shape == (3, 4, 13, 2)
    np.testing.assert_array_equal(batch["events"][:, :, 0, 0, 0], np.tile(np.arange(4.0), (3, 1)))
    np.testing.assert_array_equal(batch["step_has_label"], [True, False, True])
    assert batch["ann_input"].shape == (4, 2, 2, 1)
    assert batch["recording"] == ["rec0", "rec1", "rec2", "rec3"]
    # Frames: landmarks [J, 2] stay batch-major; pixel fields are sum-pooled; float64 becomes float32.
    frames = collate([{"landmarks": np.full((13, 2), i, np.float64), "ann_input": np.ones((4, 4, 20))}
                      for i in range(3)], downsample=2)
    assert frames["landmarks"].shape == (3, 13, 2) and frames["landmarks"].dtype == np.float32
    assert frames["ann_input"].shape == (3, 2, 2, 20) and frames["ann_input"][0, 0, 0, 0] == 4.0
    items = [dataset[0], dataset[1]]
    items[1]["step_has_label"] = np.array([True, True, True])
    with pytest.raises(ValueError, match="'step_has_label' differs"):
        collate(items)
    with pytest.raises(KeyError, match="'joints_3d' missing from item 0"):
        collate(items, ("events", "joints_3d"))


def test_shard_for_devices():
    dataset = CountingDataset(8, steps=3)
    batch = next(BatchLoader(dataset, 8, shuffle=False, num_workers=0).iter_epoch(0))
    shards = shard_for_devices(batch, 4)
    assert shards["events"].shape == (4, 3, 2, 2, 2, 2)  # [D, T, B/D, H, W, C]
    assert shards["ann_input"].shape == (4, 2, 2, 2, 1)  # [D, B/D, H, W, C]
    assert shards["step_has_label"].shape == (4, 3)
    assert shards["recording"][1] == ["rec2", "rec3"]
    # Device d holds items 2d, 2d + 1 at every step.
    np.testing.assert_array_equal(shards["events"][:, 0, :, 0, 0, 0], [[0, 1], [2, 3], [4, 5], [6, 7]])
    np.testing.assert_array_equal(shards["window_index"], [[0, 1], [2, 3], [4, 5], [6, 7]])
    with pytest.raises(ValueError, match="not divisible by 3 devices"):
        shard_for_devices(batch, 3)


def _data_threads():
    return [t for t in threading.enumerate() if t.name.startswith("hybridjax-data")]


def test_errors_in_workers_reach_the_caller_and_close_joins_the_threads():
    class Failing(CountingDataset):
        def __getitem__(self, i):
            if i == 5:
                raise KeyError("broken item 5")
            return super().__getitem__(i)

    # Threads left by other tests may still be winding down: count only the ones this test starts.
    before = set(_data_threads())
    loader = BatchLoader(Failing(12), 4, shuffle=False, num_workers=2, prefetch=2)
    iterator = loader.iter_epoch(0)
    assert _ids(next(iterator)) == [0, 1, 2, 3]
    with pytest.raises(KeyError, match="broken item 5"):
        next(iterator)
    assert set(_data_threads()) - before
    loader.close()
    assert not set(_data_threads()) - before  # stopped and joined
    # Abandoning an epoch part-way and leaving the with block leaves no workers; the loader can be reused.
    with BatchLoader(CountingDataset(40), 4, num_workers=2, prefetch=3) as loader:
        iterator = loader.iter_epoch(0)
        next(iterator)
        iterator.close()
        assert len(list(loader.iter_epoch(1))) == 10
    assert not set(_data_threads()) - before


def test_fixture_batches_and_throughput(shared_dir):
    from hybridjax.data.dhp19 import DHP19Dataset

    dataset = DHP19Dataset(shared_dir / "fixtures" / "dhp19_mini", "train")
    with BatchLoader(dataset, 2, seed=0, num_workers=2) as loader:
        batch = next(loader.iter_epoch(0))
        assert batch["events"].shape == (10, 2, 256, 256, 2)
        assert batch["landmarks"].shape == (10, 2, 13, 2) and batch["joints_3d"].shape == (10, 2, 13, 3)
        assert batch["step_has_label"].shape == (10,)
        assert batch["ann_input"].shape == batch["ann_input_next"].shape == (2, 256, 256, 20)
        assert batch["ann_landmarks"].shape == (2, 13, 2) and len(batch["recording"]) == 2
        order = loader.indices(0)
        np.testing.assert_array_equal(batch["window_index"], order)
        np.testing.assert_array_equal(batch["events"][:, 1], dataset[int(order[1])]["events"])
        assert measure_throughput(loader, 3) > 0
