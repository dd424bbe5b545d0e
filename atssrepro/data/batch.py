"""Padding a list of samples into one batch of tensors."""

from __future__ import annotations

import contextlib
import functools
import math
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import torch
from torch.utils.data.dataloader import _MultiProcessingDataLoaderIter

from atssrepro.data.coco import Sample


@dataclass
class Batch:
    """B images padded to a common size, with their ground truth padded to a common box count G."""

    images: torch.Tensor  # [B, 3, Hp, Wp] uint8, each image at the top-left, zeros elsewhere
    image_sizes: torch.Tensor  # [B, 2] int64 (h, w) of each resized image before padding
    boxes: torch.Tensor  # [B, G, 4] float32 xyxy, zeros on padding rows
    labels: torch.Tensor  # [B, G] int64, -1 on padding rows
    box_mask: torch.Tensor  # [B, G] bool, True on real boxes
    image_ids: torch.Tensor  # [B] int64 COCO image ids
    original_sizes: torch.Tensor  # [B, 2] int64 (h, w) of each image as stored

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        """A copy of the batch with every tensor on ``device``."""
        return self._map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` on each batch."""
        return self._map(torch.Tensor.pin_memory)

    def _map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        return Batch(**{field.name: function(getattr(self, field.name)) for field in fields(self)})


def collate(samples: list[Sample], size_divisible: int = 32) -> Batch:
    """Stack samples into a ``Batch``, padding every image to the batch's largest height and width
    rounded up to a multiple of ``size_divisible`` (the network's largest stride)."""
    num_boxes = max(len(sample.boxes) for sample in samples)
    height = _round_up(max(sample.image.shape[1] for sample in samples), size_divisible)
    width = _round_up(max(sample.image.shape[2] for sample in samples), size_divisible)

    images = torch.zeros(len(samples), 3, height, width, dtype=torch.uint8)
    boxes = torch.zeros(len(samples), num_boxes, 4, dtype=torch.float32)
    labels = torch.full((len(samples), num_boxes), -1, dtype=torch.int64)
    box_mask = torch.zeros(len(samples), num_boxes, dtype=torch.bool)
    for i, sample in enumerate(samples):
        _, h, w = sample.image.shape
        g = len(sample.boxes)
        images[i, :, :h, :w] = sample.image
        boxes[i, :g] = sample.boxes
        labels[i, :g] = sample.labels
        box_mask[i, :g] = True

    return Batch(
        images=images,
        image_sizes=torch.tensor([sample.image.shape[1:] for sample in samples], dtype=torch.int64),
        boxes=boxes,
        labels=labels,
        box_mask=box_mask,
        image_ids=torch.tensor([sample.image_id for sample in samples], dtype=torch.int64),
        original_sizes=torch.tensor([sample.original_size for sample in samples], dtype=torch.int64),
    )


def collate_groups(samples: list[Sample], size_divisible: int, group_size: int) -> list[Batch]:
    """Consecutive groups of ``group_size`` samples, each a ``Batch`` padded to its own canvas, as the
    official code pads each GPU's images (``train.pad_group``)."""
    starts = range(0, len(samples), group_size)
    return [collate(samples[start : start + group_size], size_divisible) for start in starts]


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


@contextlib.contextmanager
def batch_loader(
    dataset: torch.utils.data.Dataset,
    batch_sampler: torch.utils.data.Sampler,
    num_workers: int,
    size_divisible: int,
    device: torch.device,
    group_size: int | None = None,
) -> Iterator[Iterator[Batch]]:
    """The ``Batch``es of ``batch_sampler``, or with ``group_size`` lists of them (:func:`collate_groups`),
    one pass: ``num_workers`` processes decode and resize, pinned for CUDA. The workers start on entry
    and are stopped when the block ends, whether it ends normally or by an exception (see
    :func:`stop_workers`)."""
    if group_size is None:
        collate_fn = functools.partial(collate, size_divisible=size_divisible)
    else:
        collate_fn = functools.partial(collate_groups, size_divisible=size_divisible, group_size=group_size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batch_sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        pin_memory=device.type == "cuda",
        worker_init_fn=leave_stopping_to_the_main_process,
    )
    iterator = iter(loader)
    try:
        yield iterator
    finally:
        stop_workers(iterator)


def stop_workers(iterator: Iterator[Batch]) -> None:
    """Stop the worker processes (and the pin-memory thread) of a DataLoader iterator, and wait for them.

    Left to the garbage collector this fails after an error: the exception's traceback keeps the
    iterator alive until the interpreter exits, where ``multiprocessing`` ends the workers with
    SIGTERM, which they ignore (:func:`leave_stopping_to_the_main_process`), then waits for them
    forever. So the DataLoader's own shutdown runs here: each worker is told to stop and joined.
    A worker still alive after it (busy for seconds in one image) is killed, since its SIGTERM
    fallback cannot reach it either.
    """
    if not isinstance(iterator, _MultiProcessingDataLoaderIter):
        return  # num_workers=0: no process, no thread
    iterator._shutdown_workers()
    for worker in iterator._workers:
        if worker.is_alive():
            worker.kill()
            worker.join()


def leave_stopping_to_the_main_process(worker_id: int) -> None:
    """Make a DataLoader worker ignore Ctrl-C and SIGTERM.

    A terminal's Ctrl-C and Slurm's SIGTERM reach every process of the run. The training loop
    answers them by finishing its iteration and checkpointing it, which needs the workers alive
    until then; a worker killed by the signal would make the main process fail at once instead.
    The main process stops its workers itself when it is done with them (:func:`batch_loader`),
    and a worker whose main process died exits on its own.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
