"""Inference over an annotated split, export in the COCO results format, and COCO evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from rich.console import Console

from atssrepro import config as cfg
from atssrepro import distributed
from atssrepro.data.batch import batch_loader
from atssrepro.data.coco import CocoDetection
from atssrepro.data.sampler import EvalBatchSampler
from atssrepro.engine.coco_eval import CocoMetrics, evaluate_detections
from atssrepro.engine.progress import progress
from atssrepro.model.detector import OneStageDetector


@contextlib.contextmanager
def fp32(device: torch.device) -> Iterator[None]:
    """Autocast and TF32 off: evaluation runs in fp32 whatever ``train.amp`` is, as the official
    code tests, also when the caller has autocast on; the TF32 flags are restored after."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.autocast(device.type, enabled=False):
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def val_dataset(config: cfg.Config) -> CocoDetection:
    d = config.data
    return CocoDetection(cfg.data_path(d, d.val_ann), cfg.data_path(d, d.val_images), train=False, max_size=d.max_size)


@torch.inference_mode()
def predict(
    model: OneStageDetector, dataset: CocoDetection, config: cfg.Config, device: torch.device, console: Console
) -> list[dict]:
    """Detections of every image of ``dataset`` in the COCO results format, gathered on all ranks.

    Boxes are mapped back from the network's input size to the image as stored, then written
    as [x, y, w, h] with the dataset's own category ids. The model runs in fp32 (:func:`fp32`).
    """
    model.eval()
    sampler = EvalBatchSampler(
        len(dataset),
        config.eval.batch_size * distributed.world_size(),
        config.data.test_short_side,
        distributed.rank(),
        distributed.world_size(),
    )
    results: list[dict] = []
    with (
        batch_loader(dataset, sampler, config.data.num_workers, config.data.size_divisible, device) as loader,
        # Every batch on a terminal; in a log, a line per 5% (and per batch of a short run).
        progress(console, "eval", len(sampler), max(1, len(sampler) // 20)) as report,
    ):
        for step, batch in enumerate(loader, 1):
            batch = batch.to(device, non_blocking=True)
            with fp32(device):
                detections = model(batch.images, batch.image_sizes)
            # (h, w) ratios of stored to network-input size -> xyxy multipliers.
            ratios = (batch.original_sizes.float() / batch.image_sizes.float()).flip(1).repeat(1, 2)
            for image_id, ratio, det in zip(batch.image_ids.tolist(), ratios, detections):
                results += coco_results(image_id, det.boxes * ratio, det.scores, det.labels, dataset.category_ids)
            report(step)
    return [r for part in distributed.all_gather_objects(results) for r in part]


def coco_results(
    image_id: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, category_ids: Sequence[int]
) -> list[dict]:
    """COCO results dicts for the detections of one image.

    Args:
        boxes: [D, 4] xyxy in the pixels of the image as stored. scores: [D]. labels: [D] contiguous
            class indices, mapped to the dataset's COCO ids by ``category_ids``.

    Returns:
        ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` per detection.
    """
    return [
        {"image_id": image_id, "category_id": category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
        for (x1, y1, x2, y2), score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist())
    ]


def evaluate(detections: list[dict], dataset: CocoDetection, config: cfg.Config) -> CocoMetrics:
    return evaluate_detections(dataset.coco, detections, backend=config.eval.backend, image_ids=dataset.image_ids)
