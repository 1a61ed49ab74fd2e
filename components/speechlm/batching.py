"""Training batches of examples of similar length, in random order.

A batch is padded to its longest example. SER examples (prompt with transcript, rationale
target) are about three times as long as perception examples (a question, a one-word answer),
so with random batches nearly every batch is padded to SER length and about a quarter of the
tokens an SFT step computes are padding. transformers' `LengthGroupedSampler` groups by length
but then runs each pool's batches longest first, so all perception examples of a pool come
in a block at its end; this sampler shuffles the grouped batches instead.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


def length_grouped_order(lengths: Sequence[int], batch_size: int, seed: int,
                         pool_batches: int = 50) -> list[int]:
    """Indices of all examples, every `batch_size` consecutive ones a batch of similar lengths:
    a random permutation cut into pools of `pool_batches` batches, each pool sorted by length
    and cut into batches, then all full batches shuffled (a short last batch stays last, so
    the batch boundaries hold)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths)).tolist()
    pool = batch_size * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    tail = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    return [i for k in rng.permutation(len(batches)) for i in batches[k]] + \
        [i for b in tail for i in b]


class LengthGroupedShuffledSampler(Sampler[int]):
    """`length_grouped_order` as a sampler; each epoch (`set_epoch`, which the Trainer calls)
    draws its own order from the seed and the epoch, so a resumed run sees the same order."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        return iter(length_grouped_order(self.lengths, self.batch_size, self.seed + self.epoch))

    def __len__(self) -> int:
        return len(self.lengths)


def padded_tokens(lengths: Sequence[int], order: Sequence[int], batch_size: int) -> int:
    """Tokens computed when `order` is cut into batches padded to their longest example."""
    return sum(len(b) * max(lengths[i] for i in b)
               for b in (order[s:s + batch_size] for s in range(0, len(order), batch_size)))
