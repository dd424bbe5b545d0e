"""Multi-scale, flipped test-time augmentation: the official ``TEST.BBOX_AUG`` of Table 8's 50.x rows.

Every image goes through several passes of the model: the normal test size and, at each of
``TTAConfig.scales``, a larger or smaller one; each pass also runs on the horizontally flipped image.
The detections of all passes are mapped back to the image as stored, merged per class by soft box
voting, and capped per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from rich.console import Console

from atssrepro import config as cfg
from atssrepro import distributed
from atssrepro.data.batch import batch_loader
from atssrepro.data.coco import CocoDetection, SampleSpec
from atssrepro.engine.evaluate import coco_results, fp32
from atssrepro.engine.progress import progress
from atssrepro.errors import UserError
from atssrepro.model.box_voting import soft_vote
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.postprocess import Detections


@dataclass(frozen=True)
class TTAConfig:
    """The official multi-scale test settings (configs/atss/*dcnv2_X*.yaml); the defaults are its values.

    Detections of the pass at ``scales[i]`` are kept only when the box area w * h, in that pass's
    resized pixels, lies strictly between ``low^2`` and ``high^2`` of ``scale_ranges[i]`` (the
    official ``(w + 1)(h + 1)`` of its "+1" boxes is atssrepro's continuous w * h). Those of the normal
    test size (``data.test_short_side`` and ``data.max_size``) are all kept.
    """

    scales: tuple[int, ...] = (400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800)
    """Short sides of the extra passes."""
    max_size: int = 3000
    """Cap on the longer side at the extra passes of short side >= ``large_scale_from``."""
    large_scale_from: int = 800
    """Extra passes with a shorter short side than this keep the test cap ``data.max_size`` (1333)
    instead of ``max_size``, as the official code (``if scale < 800: max_size = MAX_SIZE_TEST``)."""
    scale_ranges: tuple[tuple[float, float], ...] = (
        (96, 10000),
        (96, 10000),
        (64, 10000),
        (64, 10000),
        (64, 10000),
        (0, 10000),
        (0, 10000),
        (0, 256),
        (0, 256),
        (0, 192),
        (0, 192),
        (0, 96),
    )
    flip: bool = True
    """Also run every pass, the normal one included, on the horizontally flipped image."""
    vote_iou: float = 0.66
    detections_per_image: int = 1000
    """Cap per image after voting, over all classes: the detections scoring at least the
    ``detections_per_image``-th score are kept (ties included), the official ``kthvalue`` cap at
    ``PRE_NMS_TOP_N`` = 1000, not the 100 of one pass (COCOeval's 100 are per image and category)."""

    def __post_init__(self) -> None:
        if len(self.scale_ranges) != len(self.scales):
            raise UserError(
                f"TTA needs one scale range per scale, got {len(self.scales)} scales "
                f"and {len(self.scale_ranges)} scale ranges"
            )
        if any(low > high for low, high in self.scale_ranges):
            raise UserError(f"TTA scale ranges must be (low, high) with low <= high, got {self.scale_ranges}")


class _Pass(NamedTuple):
    """One way of running the model on every image."""

    short_side: int
    max_size: int
    flip: bool
    size_range: tuple[float, float]  # kept boxes have low^2 < w * h < high^2, in the pass's pixels


def _passes(config: cfg.Config, tta: TTAConfig) -> list[_Pass]:
    """The normal test size, then each extra scale; each unflipped, then flipped if ``tta.flip``."""
    sizes = [(config.data.test_short_side, config.data.max_size, (0.0, math.inf))]
    sizes += [
        (scale, tta.max_size if scale >= tta.large_scale_from else config.data.max_size, size_range)
        for scale, size_range in zip(tta.scales, tta.scale_ranges)
    ]
    flips = (False, True) if tta.flip else (False,)
    return [_Pass(short, max_size, flip, size_range) for short, max_size, size_range in sizes for flip in flips]


@torch.inference_mode()
def predict_tta(
    model: OneStageDetector,
    dataset: CocoDetection,
    config: cfg.Config,
    tta: TTAConfig,
    device: torch.device,
    console: Console,
) -> list[dict]:
    """Detections of every image of ``dataset`` with test-time augmentation, in the COCO results
    format, gathered on all ranks.

    The model runs in fp32 whatever ``train.amp`` is. Each pass uses the model's own post-processing
    (``config.model.inference``); the merge uses its score threshold for the decayed copies of soft
    voting. Rank r takes images r, r + W, ...; each of its batches of ``config.eval.batch_size``
    images goes through every pass before the next batch.
    """
    model.eval()
    passes = _passes(config, tta)
    indices = range(distributed.rank(), len(dataset), distributed.world_size())
    size = config.eval.batch_size
    chunks = [indices[start : start + size] for start in range(0, len(indices), size)]
    # The passes of a chunk follow one another, so a chunk is merged as soon as its last pass is in.
    batches = [[SampleSpec(i, p.short_side, p.flip, p.max_size) for i in chunk] for chunk in chunks for p in passes]
    results: list[dict] = []
    found: list[list[Detections]] = []  # per image of the current chunk: one Detections per pass so far
    with (
        batch_loader(dataset, batches, config.data.num_workers, config.data.size_divisible, device) as loader,
        # In a log, a line per chunk of images (all its passes done): each takes long on a CPU.
        progress(console, "eval (TTA)", len(batches), len(passes)) as report,
    ):
        for step, batch in enumerate(loader):
            pass_index = step % len(passes)
            if pass_index == 0:
                found = [[] for _ in range(len(batch.image_ids))]
            batch = batch.to(device, non_blocking=True)
            with fp32(device):
                detections = model(batch.images, batch.image_sizes)
            for image_found, det, image_size, original_size in zip(
                found, detections, batch.image_sizes, batch.original_sizes
            ):
                image_found.append(_to_original(det, image_size, original_size, passes[pass_index]))
            if pass_index == len(passes) - 1:
                for image_id, image_found in zip(batch.image_ids.tolist(), found):
                    boxes, scores, labels = _merge(image_found, tta, config.model.inference.score_threshold)
                    results += coco_results(image_id, boxes, scores, labels, dataset.category_ids)
            report(step + 1)
    return [r for part in distributed.all_gather_objects(results) for r in part]


def _to_original(det: Detections, image_size: torch.Tensor, original_size: torch.Tensor, tta_pass: _Pass) -> Detections:
    """The detections of one pass that its scale range keeps, un-flipped, on the CPU, with boxes in
    the pixels of the image as stored.

    ``image_size`` and ``original_size`` are [2] (h, w): of the resized image, before padding, and of
    the image as stored.
    """
    boxes = det.boxes.float()
    area = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1)
    low, high = tta_pass.size_range
    keep = (area > low * low) & (area < high * high)
    boxes = boxes[keep]
    if tta_pass.flip:
        width = image_size[1]
        boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    scale = (original_size / image_size).flip(0).repeat(2)  # (w, h, w, h) ratios
    return Detections(boxes=(boxes * scale).cpu(), scores=det.scores[keep].float().cpu(), labels=det.labels[keep].cpu())


def _merge(
    found: list[Detections], tta: TTAConfig, score_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft-vote the detections of all passes of one image; keep those scoring at least the
    ``detections_per_image``-th best score."""
    boxes, scores, labels = soft_vote(
        torch.cat([d.boxes for d in found]),
        torch.cat([d.scores for d in found]),
        torch.cat([d.labels for d in found]),
        tta.vote_iou,
        score_threshold,
    )
    if len(scores) > tta.detections_per_image:  # scores are sorted: keep the ties of the last one
        keep = scores >= scores[tta.detections_per_image - 1]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    return boxes, scores, labels
