"""The training and evaluation batch samplers."""

from __future__ import annotations

import collections
import itertools
import math

import pytest

from atssrepro.data.coco import SampleSpec
from atssrepro.data.sampler import EvalBatchSampler, TrainBatchSampler

# 50 images, 17 portrait (group 1) and 33 landscape (group 0).
GROUPS = [int(i % 3 == 0) for i in range(50)]


def take(sampler: TrainBatchSampler, num_batches: int) -> list[list[SampleSpec]]:
    return list(itertools.islice(sampler, num_batches))


def make_train_sampler(**overrides) -> TrainBatchSampler:
    arguments = dict(
        aspect_groups=GROUPS, batch_size=4, short_side_range=(640, 800), flip_prob=0.5, seed=0, start_iter=0
    )
    return TrainBatchSampler(**(arguments | overrides))


# TrainBatchSampler


def test_same_seed_same_stream_and_other_seed_other_stream() -> None:
    stream = take(make_train_sampler(), 50)
    assert take(make_train_sampler(), 50) == stream
    assert take(make_train_sampler(seed=1), 50) != stream


def test_each_batch_has_one_aspect_group() -> None:
    for batch in take(make_train_sampler(), 200):
        assert len(batch) == 4
        assert len({GROUPS[spec.index] for spec in batch}) == 1


def test_resume_continues_the_same_stream() -> None:
    stream = take(make_train_sampler(), 60)
    for start_iter in (1, 13, 37):  # 37 batches of 4 lie past the end of the third epoch
        assert take(make_train_sampler(start_iter=start_iter), 60 - start_iter) == stream[start_iter:]


def test_ranks_split_the_single_process_stream() -> None:
    stream = take(make_train_sampler(), 30)
    rank_streams = [take(make_train_sampler(rank=rank, world_size=2), 30) for rank in range(2)]
    for batch, part0, part1 in zip(stream, *rank_streams):
        assert len(part0) == len(part1) == 2
        assert part0 + part1 == batch


def test_batch_size_must_divide_across_ranks() -> None:
    with pytest.raises(ValueError, match="multiple of world_size"):
        make_train_sampler(batch_size=6, world_size=4)


def test_every_index_appears_equally_often() -> None:
    num_batches = 1000
    counts = collections.Counter(spec.index for batch in take(make_train_sampler(), num_batches) for spec in batch)
    # Each epoch walks every index once; at most two copies of an index wait in a buffer at any time.
    mean = num_batches * 4 / len(GROUPS)
    assert sorted(counts) == list(range(len(GROUPS)))
    assert all(abs(count - mean) <= 2 for count in counts.values())


def test_short_sides_cover_the_range_and_flips_follow_flip_prob() -> None:
    specs = [spec for batch in take(make_train_sampler(), 1000) for spec in batch]
    short_sides = [spec.short_side for spec in specs]
    assert min(short_sides) == 640 and max(short_sides) == 800
    assert 0.45 < sum(spec.flip for spec in specs) / len(specs) < 0.55


def test_fixed_short_side_and_flip_extremes() -> None:
    sampler = make_train_sampler(short_side_range=(800, 800), flip_prob=0.0)
    never = [spec for batch in take(sampler, 100) for spec in batch]
    assert {spec.short_side for spec in never} == {800}
    assert not any(spec.flip for spec in never)
    always = [spec for batch in take(make_train_sampler(flip_prob=1.0), 100) for spec in batch]
    assert all(spec.flip for spec in always)


# EvalBatchSampler


@pytest.mark.parametrize(("world_size", "batch_size"), [(1, 4), (2, 4), (3, 3)])
def test_eval_sampler_visits_every_image_once(world_size: int, batch_size: int) -> None:
    seen = []
    for rank in range(world_size):
        sampler = EvalBatchSampler(50, batch_size, short_side=800, rank=rank, world_size=world_size)
        batches = list(sampler)
        indices = [spec.index for batch in batches for spec in batch]
        assert indices == list(range(rank, 50, world_size))
        rank_batch_size = batch_size // world_size
        assert len(sampler) == len(batches) == math.ceil(len(indices) / rank_batch_size)
        assert all(len(batch) == rank_batch_size for batch in batches[:-1])
        assert all(spec.short_side == 800 and not spec.flip for batch in batches for spec in batch)
        seen += indices
    assert sorted(seen) == list(range(50))
