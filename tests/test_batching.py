"""Length-grouped SFT batches: every example once, batches of similar length, random batch
order that differs per epoch and repeats for a resumed one."""
import numpy as np
import pytest

from components.speechlm.batching import (
    LengthGroupedShuffledSampler,
    length_grouped_order,
    padded_tokens,
)

# SER examples (~270 tokens) and perception examples (~90), two to one, as in the demo's SFT
LENGTHS = [270 + (i * 7) % 40 if i % 3 else 90 + (i * 5) % 20 for i in range(246)]


def test_every_example_once_and_batches_of_similar_length():
    order = length_grouped_order(LENGTHS, 4, seed=1)
    assert sorted(order) == list(range(len(LENGTHS)))
    batches = [order[s:s + 4] for s in range(0, len(order), 4)]
    mixed = sum(1 for b in batches if min(LENGTHS[i] for i in b) < 200 < max(LENGTHS[i] for i in b))
    assert mixed <= 2  # at most one mixed batch per pool of 50 batches
    assert len(batches[-1]) == len(LENGTHS) % 4  # the short batch stays last


def test_grouping_removes_most_padding():
    grouped = length_grouped_order(LENGTHS, 4, seed=1)
    shuffled = np.random.default_rng(1).permutation(len(LENGTHS)).tolist()
    useful = sum(LENGTHS)
    assert 1 - useful / padded_tokens(LENGTHS, shuffled, 4) > 0.2
    assert 1 - useful / padded_tokens(LENGTHS, grouped, 4) < 0.05
    assert padded_tokens([3, 1, 2], [0, 1, 2], 2) == 2 * 3 + 2


def test_batch_order_is_random_and_not_sorted():
    order = length_grouped_order(LENGTHS, 4, seed=1)
    firsts = [LENGTHS[order[s]] for s in range(0, 240, 4)]
    assert firsts != sorted(firsts) and firsts != sorted(firsts, reverse=True)
    # perception batches are spread over the epoch, not in a block at the end of each pool
    short = [k for k, v in enumerate(firsts) if v < 200]
    assert min(short) < 15 and max(short) > 45


def test_the_sampler_draws_one_order_per_epoch_and_repeats_it():
    sampler = LengthGroupedShuffledSampler(LENGTHS, 4, seed=7)
    first = list(sampler)
    assert list(sampler) == first and len(sampler) == len(LENGTHS)
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and sorted(second) == sorted(first)
    again = LengthGroupedShuffledSampler(LENGTHS, 4, seed=7)
    again.set_epoch(1)
    assert list(again) == second  # a resumed run sees the epoch's order again
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_order(LENGTHS, 0, seed=1)
