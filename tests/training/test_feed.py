"""The training feed on real Petastorm readers of Parquet shards: whole shards read once, epochs reshuffled
deterministically, and the streamed feed for shards over the memory budget."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from continuous_training.training.epochs import TrainConfig, dataset_url
from continuous_training.training.feed import (
    Shard,
    epoch_generator,
    eval_batches,
    in_memory_batches,
    read_shard,
    shard_bytes,
    streamed_batches,
    streamed_eval_batches,
)

CPU = torch.device("cpu")
DIM = 3
FILES, ROWS_PER_FILE = 4, 50


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> str:
    """4 Parquet files (one row group each) whose rows are numbered: features [i, i, i], label i."""
    root = tmp_path_factory.mktemp("feed") / "train"
    root.mkdir()
    for file in range(FILES):
        ids = np.arange(file * ROWS_PER_FILE, (file + 1) * ROWS_PER_FILE, dtype=np.float32)
        features = pa.array([[value] * DIM for value in ids], type=pa.list_(pa.float32()))
        pq.write_table(pa.table({"features": features, "label": pa.array(ids)}), root / f"part-{file}.parquet")
    return dataset_url(root)


def row_ids(shard: Shard) -> list[int]:
    assert torch.equal(shard.features[:, 0], shard.labels)
    return sorted(int(value) for value in shard.labels)


def test_the_ranks_shards_are_disjoint_and_cover_every_row(split):
    shards = [read_shard(split, rank, 2, CPU) for rank in (0, 1)]

    assert all(shard.features.shape == (2 * ROWS_PER_FILE, DIM) and shard.features.is_contiguous()
               for shard in shards)
    assert sorted(row_ids(shards[0]) + row_ids(shards[1])) == list(range(FILES * ROWS_PER_FILE))
    assert row_ids(read_shard(split, 0, 2, CPU)) == row_ids(shards[0]), "a shard is the same on every read"


def test_an_epoch_is_a_permutation_of_the_shard_reshuffled_each_epoch_for_a_seed():
    shard = Shard(torch.arange(40, dtype=torch.float32).reshape(-1, 1).repeat(1, DIM), torch.arange(40.0))

    def epoch(seed: int, rank: int, number: int) -> list[float]:
        batches = list(in_memory_batches(shard, 8, 5, epoch_generator(seed, rank, number)))
        assert [len(labels) for _, labels in batches] == [8] * 5
        return torch.cat([labels for _, labels in batches]).tolist()

    first = epoch(42, 0, 1)
    assert sorted(first) == list(range(40))
    assert epoch(42, 0, 1) == first
    assert epoch(42, 0, 2) != first and sorted(epoch(42, 0, 2)) == list(range(40))
    assert epoch(42, 1, 1) != first and epoch(7, 0, 1) != first


def test_a_small_shard_repeats_to_give_every_step_a_full_batch():
    shard = Shard(torch.zeros((10, DIM)), torch.arange(10.0))

    labels = torch.cat([labels for _, labels in in_memory_batches(shard, 4, 6, epoch_generator(1, 0, 1))])

    assert len(labels) == 24
    assert sorted(labels[:10].tolist()) == list(range(10)), "every row once before any repeats"


def test_the_streamed_feed_gives_full_batches_of_every_row_without_end(split):
    batches = streamed_batches(split, 0, 1, batch_size=16, seed=3, workers=2, device=CPU, buffer_rows=64)
    try:
        drawn = [next(batches) for _ in range(25)]  # 400 rows: two passes over the 200
    finally:
        batches.close()

    assert all(features.shape == (16, DIM) and torch.equal(features[:, 0], labels) for features, labels in drawn)
    counts = np.bincount(torch.cat([labels for _, labels in drawn]).to(torch.int64).numpy(),
                         minlength=FILES * ROWS_PER_FILE)
    assert counts.min() >= 1 and counts.max() <= 3


def test_evaluation_sees_the_shard_once_in_memory_or_streamed(split):
    shard = read_shard(split, 1, 2, CPU)
    in_memory = torch.cat([labels for _, labels in eval_batches(shard, rows=30)])
    streamed = torch.cat([labels for _, labels in streamed_eval_batches(split, 1, 2, 2, CPU)])

    assert sorted(in_memory.tolist()) == sorted(streamed.tolist()) == sorted(shard.labels.tolist())


def test_the_memory_budget_decides_the_feed():
    config = TrainConfig(featurize_dir="f", checkpoint_dir="c", task="regression", feature_dim=31, num_classes=None,
                         train_rows=1_000_000, validation_rows=200_000, feed_memory_mb=100)

    assert shard_bytes(1_000_000, 2, 31) == 500_000 * 32 * 4
    assert config.fits_in_memory(size=2)  # (500k + 100k rows) x 32 floats = 76.8 MB per rank
    assert not config.fits_in_memory(size=1)  # 153.6 MB
