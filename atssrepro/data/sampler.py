"""Batch samplers: every random choice of the data pipeline (order, scale, flip) is made here.

The samplers yield lists of ``SampleSpec`` that the dataset then loads. Because the training stream
is a pure function of the seed and the iteration number, a killed run resumes on exactly the batches
it would have seen, and N processes of a distributed run see the same global batches as one process.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from atssrepro.data.coco import SampleSpec


class TrainBatchSampler(torch.utils.data.Sampler[list[SampleSpec]]):
    """Infinite, deterministic, resumable stream of aspect-ratio-grouped training batches.

    Epoch e walks a random permutation of all indices, dropping each index into the buffer of its
    aspect group; a buffer that reaches ``batch_size`` becomes the next global batch. Leftovers carry
    over into the next epoch, so no index is dropped and no batch is short. Each index also gets a
    short side drawn uniformly from the inclusive ``short_side_range`` and a flip with probability
    ``flip_prob``. All draws of epoch e come from one generator seeded by (seed, e) only.

    ``batch_size`` is the global batch: this rank yields its slice of ``batch_size // world_size``
    specs from each global batch, starting at global batch ``start_iter``.
    """

    def __init__(
        self,
        aspect_groups: Sequence[int],
        batch_size: int,
        short_side_range: tuple[int, int],
        flip_prob: float,
        seed: int,
        start_iter: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not aspect_groups:
            raise ValueError("TrainBatchSampler needs at least one image")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, got {seed}")
        if not short_side_range[0] <= short_side_range[1]:
            raise ValueError(f"short_side_range must be (low, high) with low <= high, got {short_side_range}")
        self.rank_batch_size = _rank_batch_size(batch_size, rank, world_size)
        self.aspect_groups = list(aspect_groups)
        self.batch_size = batch_size
        self.short_side_range = short_side_range
        self.flip_prob = flip_prob
        self.seed = seed
        self.start_iter = start_iter
        self.rank = rank

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        begin = self.rank * self.rank_batch_size
        for batch in itertools.islice(self._global_batches(), self.start_iter, None):
            yield batch[begin : begin + self.rank_batch_size]

    def _global_batches(self) -> Iterator[list[SampleSpec]]:
        """Every global batch from iteration 0 on."""
        buffers: dict[int, list[SampleSpec]] = {group: [] for group in set(self.aspect_groups)}
        for epoch in itertools.count():
            for spec in self._epoch_specs(epoch):
                buffer = buffers[self.aspect_groups[spec.index]]
                buffer.append(spec)
                if len(buffer) == self.batch_size:
                    yield buffer.copy()
                    buffer.clear()

    def _epoch_specs(self, epoch: int) -> list[SampleSpec]:
        """All indices of epoch ``epoch`` in walk order, each with its short side and flip."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        num_images = len(self.aspect_groups)
        low, high = self.short_side_range
        order = torch.randperm(num_images, generator=generator).tolist()
        short_sides = torch.randint(low, high + 1, (num_images,), generator=generator).tolist()
        flips = (torch.rand(num_images, generator=generator) < self.flip_prob).tolist()
        return [SampleSpec(*spec) for spec in zip(order, short_sides, flips)]


class EvalBatchSampler(torch.utils.data.Sampler[list[SampleSpec]]):
    """Every image once, in index order, unflipped, at a fixed short side.

    Rank r takes indices r, r + W, r + 2W, ... (W = ``world_size``) in batches of
    ``batch_size // world_size``: like ``TrainBatchSampler``, ``batch_size`` is the global batch.
    """

    def __init__(self, num_images: int, batch_size: int, short_side: int, rank: int = 0, world_size: int = 1) -> None:
        rank_batch_size = _rank_batch_size(batch_size, rank, world_size)
        indices = range(rank, num_images, world_size)
        self._batches = [
            [SampleSpec(index, short_side, False) for index in indices[start : start + rank_batch_size]]
            for start in range(0, len(indices), rank_batch_size)
        ]

    def __iter__(self) -> Iterator[list[SampleSpec]]:
        return iter(self._batches)

    def __len__(self) -> int:
        """Number of batches on this rank."""
        return len(self._batches)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed that depends only on (seed, epoch), well mixed so that nearby pairs differ.

    Hashing is needed because torch's CPU generator keeps only the low 32 bits of its seed, so
    arithmetic such as ``seed * 2**32 + epoch`` would give every seed the same stream.
    """
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _rank_batch_size(batch_size: int, rank: int, world_size: int) -> int:
    """The share of one rank in a global batch of ``batch_size``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
    if batch_size <= 0 or batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be a positive multiple of world_size {world_size}")
    return batch_size // world_size
