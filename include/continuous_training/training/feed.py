"""The training feed: a rank's Petastorm shard as whole batches of contiguous tensors.

Petastorm's batch reader hands over each Parquet row group of the rank's shard as 2-D arrays; nothing is collated
row by row. When the shard fits the memory budget it is read once, onto the rank's device, and every epoch draws
its batches from a fresh permutation of it (deterministic for seed, rank and epoch). Otherwise the reader streams
row groups without end (row-group order shuffled), and batches come from a shuffle buffer of whole row groups.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from continuous_training.data.features import FEATURES, LABEL

BYTES_PER_VALUE = 4  # features and label are float32
STREAM_BUFFER_ROWS = 65_536  # rows a streaming rank shuffles together (whole row groups)
EVAL_BATCH_ROWS = 8_192
READER_WORKERS = 2  # Petastorm reader threads of a streamed split


@dataclass(frozen=True)
class Shard:
    """A rank's rows of one split, on its device (TensorFlow tensors for a Keras worker)."""

    features: torch.Tensor
    labels: torch.Tensor

    @property
    def rows(self) -> int:
        return self.features.shape[0]


def shard_bytes(rows: int, size: int, feature_dim: int) -> int:
    """Memory one rank's shard of a split of `rows` rows takes as tensors (the largest shard: rows / size, up)."""
    return math.ceil(rows / size) * (feature_dim + 1) * BYTES_PER_VALUE


def _reader(url: str, rank: int, size: int, *, num_epochs: int | None, shuffle_row_groups: bool, seed: int,
            workers: int):
    from petastorm import make_batch_reader

    # Petastorm 0.12 drives pyarrow 14 through its legacy API and warns on every reader it opens.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm\.")
    return make_batch_reader(url, schema_fields=[FEATURES, LABEL], cur_shard=rank, shard_count=size,
                             num_epochs=num_epochs, shuffle_row_groups=shuffle_row_groups, seed=seed,
                             reader_pool_type="thread", workers_count=workers)


def read_shard(url: str, rank: int, size: int, device: torch.device) -> Shard:
    """The rank's whole shard of a split, read once in row-group order (one reader thread: the same order on
    every read) and moved to `device`."""
    with _reader(url, rank, size, num_epochs=1, shuffle_row_groups=False, seed=0, workers=1) as reader:
        groups = [(batch.features, batch.label) for batch in reader]
    features = torch.from_numpy(np.ascontiguousarray(np.concatenate([group[0] for group in groups]),
                                                     dtype=np.float32))
    labels = torch.from_numpy(np.ascontiguousarray(np.concatenate([group[1] for group in groups]), dtype=np.float32))
    return Shard(features.to(device), labels.to(device))


def epoch_generator(seed: int, rank: int, epoch: int) -> torch.Generator:
    """The CPU generator of one rank's shuffle in one epoch."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + rank) * 1_000_003 + epoch)
    return generator


def epoch_order(rows: int, needed: int, generator: torch.Generator) -> torch.Tensor:
    """`needed` row indices of one epoch: permutations of `rows` rows, repeated when there are fewer rows."""
    permutations = [torch.randperm(rows, generator=generator) for _ in range(math.ceil(needed / rows))]
    return torch.cat(permutations)[:needed]


def in_memory_batches(shard: Shard, batch_size: int, steps: int, generator: torch.Generator
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` batches of one epoch: a permutation of the shard (repeated when the shard holds fewer than
    steps × batch_size rows), in slices of `batch_size`."""
    order = epoch_order(shard.rows, steps * batch_size, generator).to(shard.features.device)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        yield shard.features.index_select(0, index), shard.labels.index_select(0, index)


def streamed_batches(url: str, rank: int, size: int, batch_size: int, seed: int, workers: int,
                     device: torch.device, buffer_rows: int = STREAM_BUFFER_ROWS
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches without end from the rank's shard: row groups in a shuffled order, gathered into a buffer of at
    least `buffer_rows` rows (and one batch) that is permuted and cut into batches; the remainder carries over."""
    generator = torch.Generator()
    generator.manual_seed(seed * 1_000_003 + rank)
    with _reader(url, rank, size, num_epochs=None, shuffle_row_groups=True, seed=seed, workers=workers) as reader:
        features: list[np.ndarray] = []
        labels: list[np.ndarray] = []
        for batch in reader:
            features.append(batch.features)
            labels.append(batch.label)
            if sum(len(group) for group in labels) < max(buffer_rows, batch_size):
                continue
            buffered_features = torch.from_numpy(np.concatenate(features))
            buffered_labels = torch.from_numpy(np.concatenate(labels))
            order = torch.randperm(len(buffered_labels), generator=generator)
            full = len(order) // batch_size * batch_size
            for start in range(0, full, batch_size):
                index = order[start:start + batch_size]
                yield buffered_features[index].to(device), buffered_labels[index].to(device)
            features, labels = [buffered_features[order[full:]].numpy()], [buffered_labels[order[full:]].numpy()]


def eval_batches(shard: Shard, rows: int = EVAL_BATCH_ROWS) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The shard in order, in slices of `rows`."""
    for start in range(0, shard.rows, rows):
        yield shard.features[start:start + rows], shard.labels[start:start + rows]


def streamed_eval_batches(url: str, rank: int, size: int, workers: int, device: torch.device
                          ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The rank's shard once, one row group per batch."""
    with _reader(url, rank, size, num_epochs=1, shuffle_row_groups=False, seed=0, workers=workers) as reader:
        for batch in reader:
            yield torch.tensor(batch.features, device=device), torch.tensor(batch.label, device=device)
