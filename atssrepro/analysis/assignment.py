"""How many positive anchors each ground-truth box gets under each assignment strategy.

The ATSS paper (Section 3.2) argues that ATSS gives every object about 0.2 x k x L positives
whatever its size (k candidates per level, L levels), while RetinaNet's IoU thresholds favour large
objects and FCOS's spatial and scale constraint behaves differently again. This module measures
that on any COCO annotation file. Assignment needs only box coordinates and image sizes, both in
the annotation file, so no image is read and no network runs.

Each image is resized as training does (at a fixed shorter side, without flipping) and padded on
its own to a multiple of ``size_divisible`` (training pads to the largest image of its batch, which
only adds anchors beyond the image); its anchors are those of its padded size. Images of the same
padded size share their anchors, so they are assigned in batches. On 2 CPU cores a val2017-sized
file (5,000 images, 39k boxes) takes about 10 s with ATSS alone and 1.5 minutes with all four
strategies (docs/benchmarks.md); ``max_images`` analyses a sample of a larger file.

The prediction-aware assigners (TAL, SimOTA, OTA, DSL, PAA) also read the network's predictions, so
they need a trained model: :func:`checkpoint_assignment_statistics` reads the images, runs the model
of a checkpoint once per image and gives every assigner, the static ones too, the same model state,
images and predictions (``atssrepro analyze assignment --checkpoint RUN_OR_FILE``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torchvision.ops import box_area

from atssrepro.config import PREDICTION_AWARE, AssignConfig, ModelConfig
from atssrepro.data.batch import collate
from atssrepro.data.coco import CocoDetection, SampleSpec, load_coco, resized_size, usable_boxes
from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write
from atssrepro.model.anchors import STRIDES, feature_sizes, grid_anchors
from atssrepro.model.assign import assign, paired_iou
from atssrepro.model.detector import OneStageDetector

STRATEGIES: tuple[str, ...] = typing.get_args(typing.get_type_hints(AssignConfig)["strategy"])
STATIC_STRATEGIES: tuple[str, ...] = tuple(s for s in STRATEGIES if s not in PREDICTION_AWARE)
"""The strategies that read boxes only: :func:`assignment_statistics` runs them without a model."""
SIZES = ("small", "medium", "large")
SMALL_AREA = 32**2
"""COCO's size buckets: small < 32^2 <= medium < 96^2 <= large (area in original pixels)."""
LARGE_AREA = 96**2
MAX_BATCH_ELEMENTS = 2**24
"""Cap on B x N x G, the entries of one [B, N, G] IoU table, so that images with many boxes and
anchor settings with many anchors per location (A = 9) stay within a few GB of memory."""
STATISTICS_COLUMNS = ["strategy", "image_id", "gt_index", "size", "scale", "num_positive", "mean_iou"]
SCALE_BINS = 16
STRATEGY_LABELS = {
    "atss": "ATSS",
    "iou": "IoU thresholds (RetinaNet)",
    "ssc": "spatial & scale constraint (FCOS)",
    "center_sampling": "FCOS with center sampling",
    "tal": "TAL (TOOD)",
    "simota": "SimOTA (YOLOX)",
    "ota": "OTA",
    "dsl": "DSL (RTMDet)",
    "paa": "PAA",
}


class _Image(NamedTuple):
    """One image with at least one usable box, as the assigners see it."""

    image_id: int
    padded_size: tuple[int, int]  # (h, w) after resizing and padding
    boxes: torch.Tensor  # [G, 4] float32 xyxy in resized pixels
    original_area: torch.Tensor  # [G] box area in original pixels


def positives_reference(model: ModelConfig) -> float:
    """The paper's rule of thumb for ATSS positives per GT: 0.2 x k x A x L.

    ATSS takes k x A candidates on each of the L levels (A anchors per location; the paper's
    0.2 x k x L has A = 1), and the mean + std IoU threshold keeps roughly the top 20% of them.
    """
    per_location = len(model.anchors.aspect_ratios) * model.anchors.scales_per_octave
    return 0.2 * model.assign.topk * per_location * len(STRIDES)


PAPER_REFERENCE = positives_reference(ModelConfig())
"""0.2 x 9 x 1 x 5 = 9 positives per GT, for the paper's ATSS settings."""


def assignment_statistics(
    ann_file: Path,
    strategies: Sequence[str],
    model: ModelConfig,
    short_side: int = 800,
    max_size: int = 1333,
    size_divisible: int = 32,
    max_images: int | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    report: Callable[[int, int], None] = lambda done, total: None,
) -> pd.DataFrame:
    """Positive anchors of every usable GT box of a COCO annotation file, for each strategy.

    Crowd boxes and boxes 1 pixel or less wide or high after clipping are dropped, as in training;
    images left without a box are skipped. ``max_images`` keeps the first images (by id) that have
    a box. Each strategy runs ``model.assign`` with only its ``strategy`` replaced, on the anchors
    of ``model.anchors``. ``report(done, total)`` is called after each batch of images.

    Returns:
        One row per (strategy, GT), strategies in the given order, then by image id and GT index:
        ``strategy``; ``image_id``; ``gt_index`` (the GT's position among the usable boxes of its
        image, in annotation order); ``size`` ("small", "medium" or "large" by the area of the clipped
        box in original pixels; COCO evaluation buckets by the annotation's mask ``area`` instead,
        which is smaller for most objects); ``scale`` (sqrt of the box area in resized pixels);
        ``num_positive``; ``mean_iou`` (mean IoU of the positives with this GT, NaN when it has none).
    """
    strategies = _checked_strategies(strategies)
    aware = [s for s in strategies if s in PREDICTION_AWARE]
    if aware:
        raise UserError(
            f"{', '.join(aware)} assign from the network's predictions: give a trained model (--checkpoint RUN_OR_FILE)"
        )
    if batch_size < 1 or (max_images is not None and max_images < 1):
        raise UserError(f"batch size {batch_size} and max images {max_images} must be at least 1")
    images = _load_images(Path(ann_file), short_side, max_size, size_divisible, max_images)
    configs = {s: dataclasses.replace(model.assign, strategy=s) for s in strategies}
    per_location = len(model.anchors.aspect_ratios) * model.anchors.scales_per_octave

    by_padded_size: dict[tuple[int, int], list[_Image]] = defaultdict(list)
    for image in images:
        by_padded_size[image.padded_size].append(image)

    ordered: list[_Image] = []  # images in the order their GTs' results are collected
    positives: dict[str, list[torch.Tensor]] = {s: [] for s in strategies}
    mean_ious: dict[str, list[torch.Tensor]] = {s: [] for s in strategies}
    for padded_size, group in by_padded_size.items():
        anchors, num_per_level = grid_anchors(
            feature_sizes(*padded_size),
            model.anchors.scale,
            model.anchors.aspect_ratios,
            model.anchors.scales_per_octave,
            device=torch.device(device),
        )
        for batch in _batches(group, anchors.shape[0], batch_size):
            gt_boxes, gt_mask = _padded_boxes(batch, device)
            for strategy, config in configs.items():
                matched = assign(config, anchors, num_per_level, per_location, gt_boxes, gt_mask)
                counts, iou = _positive_statistics(matched, anchors, gt_boxes)
                positives[strategy].append(counts[gt_mask].cpu())
                mean_ious[strategy].append(iou[gt_mask].cpu())
            ordered.extend(batch)
            report(len(ordered), len(images))

    gts = pd.DataFrame(
        {
            "image_id": np.concatenate([np.full(len(image.boxes), image.image_id) for image in ordered]),
            "gt_index": np.concatenate([np.arange(len(image.boxes)) for image in ordered]),
            "size": _size_bucket(torch.cat([image.original_area for image in ordered]).numpy()),
            "scale": torch.cat([box_area(image.boxes) for image in ordered]).sqrt().numpy(),
        }
    )
    order = np.lexsort((gts["gt_index"], gts["image_id"]))
    gts = gts.iloc[order].reset_index(drop=True)
    frames = [
        gts.assign(
            strategy=strategy,
            num_positive=torch.cat(positives[strategy]).numpy()[order],
            mean_iou=torch.cat(mean_ious[strategy]).numpy()[order],
        )[STATISTICS_COLUMNS]
        for strategy in strategies
    ]
    return pd.concat(frames, ignore_index=True)


def _checked_strategies(strategies: Sequence[str]) -> list[str]:
    strategies = list(dict.fromkeys(strategies))
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        given = f"unknown assignment strategy {', '.join(map(repr, unknown))}" if unknown else "no assignment strategy"
        raise UserError(f"{given}; choose from {', '.join(STRATEGIES)}")
    return strategies


@torch.no_grad()
def checkpoint_assignment_statistics(
    model: OneStageDetector,
    ann_file: Path,
    image_dir: Path,
    strategies: Sequence[str] = STRATEGIES,
    short_side: int = 800,
    max_size: int = 1333,
    size_divisible: int = 32,
    max_images: int | None = None,
    report: Callable[[int, int], None] = lambda done, total: None,
) -> pd.DataFrame:
    """:func:`assignment_statistics` on the same model state, images and predictions for every strategy.

    Each image with a usable box is read and resized as training does (at ``short_side``, without
    flipping), padded on its own and run through ``model`` once (in eval mode, no gradient); every
    strategy then assigns from those head outputs with :meth:`OneStageDetector.assignment`, the
    training path: the model's ``assign`` settings with only ``strategy`` replaced, past any TAL
    warm-up. Returns the same columns and order as :func:`assignment_statistics`; ``report(done, total)``
    is called after each image.
    """
    strategies = _checked_strategies(strategies)
    if max_images is not None and max_images < 1:
        raise UserError(f"max images {max_images} must be at least 1")
    if not Path(image_dir).is_dir():
        raise UserError(f"image folder {image_dir} not found; pass --images DIR, the images of {ann_file}")
    dataset = CocoDetection(Path(ann_file), Path(image_dir), train=True, max_size=max_size)
    configs = {s: dataclasses.replace(model.config.assign, strategy=s) for s in strategies}
    device = next(model.parameters()).device
    model.eval()
    columns: dict[str, list] = defaultdict(list)
    results: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {s: [] for s in strategies}
    total = len(dataset) if max_images is None else min(max_images, len(dataset))
    for index in range(total):
        sample = dataset[SampleSpec(index, short_side, False)]
        batch = collate([sample], size_divisible).to(device)
        outputs = model.head_outputs(batch.images, batch.image_sizes)
        for strategy, config in configs.items():
            matched = model.assignment(outputs, batch.boxes, batch.labels, batch.box_mask, None, config).matched
            counts, iou = _positive_statistics(matched, outputs.anchors, batch.boxes)
            results[strategy].append((counts[0].cpu(), iou[0].cpu()))
        columns["image_id"].append(np.full(len(sample.boxes), sample.image_id))
        columns["gt_index"].append(np.arange(len(sample.boxes)))
        (height, width), (new_height, new_width) = sample.original_size, sample.image.shape[1:]
        columns["original_area"].append((box_area(sample.boxes) * (height * width / (new_height * new_width))).numpy())
        columns["scale"].append(box_area(sample.boxes).sqrt().numpy())
        report(index + 1, total)
    if not columns:
        raise UserError(f"annotation file {ann_file} has no usable (non-crowd, > 1 pixel) box; nothing to analyse")
    gts = pd.DataFrame(
        {
            "image_id": np.concatenate(columns["image_id"]),
            "gt_index": np.concatenate(columns["gt_index"]),
            "size": _size_bucket(np.concatenate(columns["original_area"])),
            "scale": np.concatenate(columns["scale"]),
        }
    )
    frames = [
        gts.assign(
            strategy=strategy,
            num_positive=torch.cat([c for c, _ in results[strategy]]).numpy(),
            mean_iou=torch.cat([i for _, i in results[strategy]]).numpy(),
        )[STATISTICS_COLUMNS]
        for strategy in strategies
    ]
    return pd.concat(frames, ignore_index=True)


def _load_images(
    ann_file: Path, short_side: int, max_size: int, size_divisible: int, max_images: int | None
) -> list[_Image]:
    """The images of ``ann_file`` that have a usable box, resized and padded, in increasing id order."""
    if not ann_file.is_file():
        raise UserError(f"annotation file {ann_file} not found; pass a COCO instances_*.json file")
    coco = load_coco(ann_file, train=True)  # train: the file must have annotations
    category_index = {category_id: i for i, category_id in enumerate(sorted(coco.cats))}
    images = []
    for image_id in sorted(coco.imgs):
        if max_images is not None and len(images) >= max_images:
            break
        height, width = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
        boxes, _ = usable_boxes(coco.imgToAnns[image_id], height, width, category_index)
        if len(boxes) == 0:
            continue
        new_height, new_width = resized_size(height, width, short_side, max_size)
        padded_size = (
            math.ceil(new_height / size_divisible) * size_divisible,
            math.ceil(new_width / size_divisible) * size_divisible,
        )
        resized = boxes * torch.tensor([new_width / width, new_height / height] * 2)
        images.append(_Image(image_id, padded_size, resized, box_area(boxes)))
    if not images:
        raise UserError(f"annotation file {ann_file} has no usable (non-crowd, > 1 pixel) box; nothing to analyse")
    return images


def _batches(images: list[_Image], num_anchors: int, batch_size: int) -> Iterator[list[_Image]]:
    """Split images of one padded size into batches of up to ``batch_size`` images.

    Images go in increasing order of box count, so that a batch pads its boxes to a similar G, and
    a batch closes early once B x N x G would pass :data:`MAX_BATCH_ELEMENTS`.
    """
    batch: list[_Image] = []
    for image in sorted(images, key=lambda image: len(image.boxes)):
        too_big = (len(batch) + 1) * num_anchors * len(image.boxes) > MAX_BATCH_ELEMENTS
        if batch and (len(batch) == batch_size or too_big):
            yield batch
            batch = []
        batch.append(image)
    if batch:
        yield batch


def _padded_boxes(batch: list[_Image], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes of a batch padded with zero boxes to the largest G: [B, G, 4] and its mask [B, G]."""
    gt_boxes = torch.nn.utils.rnn.pad_sequence([image.boxes for image in batch], batch_first=True).to(device)
    lengths = torch.tensor([len(image.boxes) for image in batch], device=device)
    gt_mask = torch.arange(gt_boxes.shape[1], device=device)[None, :] < lengths[:, None]
    return gt_boxes, gt_mask


def _positive_statistics(
    matched: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per GT: its positive anchors and their mean IoU with it.

    Args:
        matched: [B, N] assigner output (GT index, or negative for background and ignored).
        anchors: [N, 4] xyxy.
        gt_boxes: [B, G, 4] xyxy.

    Returns:
        counts: [B, G] int64.
        mean_iou: [B, G] float32, NaN where the count is 0.
    """
    batch, num_gt = gt_boxes.shape[:2]
    image, anchor = (matched >= 0).nonzero(as_tuple=True)
    gt = matched[image, anchor]
    slot = image * num_gt + gt  # flat index into [B, G]
    counts = torch.bincount(slot, minlength=batch * num_gt)
    iou_sum = torch.zeros(batch * num_gt, device=anchors.device)
    iou_sum.index_add_(0, slot, paired_iou(anchors[anchor], gt_boxes[image, gt]))
    return counts.view(batch, num_gt), (iou_sum / counts).view(batch, num_gt)


def _size_bucket(area: np.ndarray) -> np.ndarray:
    """COCO's size name of each area in original pixels."""
    return np.where(area < SMALL_AREA, "small", np.where(area < LARGE_AREA, "medium", "large"))


def summarize(stats: pd.DataFrame, model: ModelConfig) -> pd.DataFrame:
    """Positives per GT for each strategy and size bucket, as :func:`assignment_statistics` measured them.

    Returns:
        One row per strategy (in order of appearance) and size (small, medium, large, then all;
        a size without GTs is left out): ``strategy``, ``size``, ``num_gt``, ``mean_positive``,
        ``median_positive``, ``no_positive_pct`` (share of GTs without a positive, %), ``mean_iou``
        (mean over the GTs with a positive of their positives' mean IoU), and ``reference``
        (:func:`positives_reference` on the atss rows, NaN on the others).
    """
    rows = []
    for strategy, group in stats.groupby("strategy", sort=False):
        for size in (*SIZES, "all"):
            gts = group if size == "all" else group[group["size"] == size]
            if gts.empty:
                continue
            rows.append(
                {
                    "strategy": strategy,
                    "size": size,
                    "num_gt": len(gts),
                    "mean_positive": gts["num_positive"].mean(),
                    "median_positive": gts["num_positive"].median(),
                    "no_positive_pct": 100 * (gts["num_positive"] == 0).mean(),
                    "mean_iou": gts["mean_iou"].mean(),
                    "reference": positives_reference(model) if strategy == "atss" else math.nan,
                }
            )
    return pd.DataFrame(rows)


_MARKDOWN_COLUMNS = {  # summary column -> (header, format)
    "strategy": ("Strategy", "{}"),
    "size": ("Size", "{}"),
    "num_gt": ("GTs", "{:d}"),
    "mean_positive": ("Mean positives", "{:.1f}"),
    "median_positive": ("Median positives", "{:g}"),
    "no_positive_pct": ("No positive (%)", "{:.1f}"),
    "mean_iou": ("Mean IoU", "{:.3f}"),
    "reference": ("0.2·k·A·L", "{:g}"),
}


def render_summary(summary: pd.DataFrame) -> str:
    """The output of :func:`summarize` as a markdown table (numbers right-aligned, NaN as "-")."""
    columns = [c for c in _MARKDOWN_COLUMNS if c in summary.columns]
    lines = [
        "| " + " | ".join(_MARKDOWN_COLUMNS[c][0] for c in columns) + " |",
        "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(summary[c]) else "---" for c in columns) + "|",
    ]
    for row in summary.itertuples(index=False):
        cells = []
        for column in columns:
            value = getattr(row, column)
            cells.append("-" if pd.isna(value) else _MARKDOWN_COLUMNS[column][1].format(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_positives(stats: pd.DataFrame, path: Path, reference: float = PAPER_REFERENCE) -> None:
    """Write a PNG of positives per GT against GT scale, and of GTs left without a positive.

    Left: mean positives per GT in log-spaced bins of ``scale``, one line per strategy, with
    ``reference`` (pass :func:`positives_reference` of the model analysed) as a dashed line.
    Right: the share of GTs without a positive in each size bucket, one bar per strategy.
    """
    strategies = list(stats["strategy"].unique())
    edges = np.geomspace(stats["scale"].min(), stats["scale"].max(), SCALE_BINS + 1)
    centres = np.sqrt(edges[:-1] * edges[1:])
    bins = np.clip(np.searchsorted(edges, stats["scale"], side="right") - 1, 0, SCALE_BINS - 1)
    binned_means = stats.assign(bin=bins).groupby(["strategy", "bin"])["num_positive"].mean()
    no_positive = 100 * (stats["num_positive"] == 0).groupby([stats["strategy"], stats["size"]]).mean()
    gt_counts = stats[stats["strategy"] == strategies[0]]["size"].value_counts()

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(3, 2))
    for strategy in strategies:
        means = binned_means[strategy]
        left.plot(centres[means.index], means.to_numpy(), marker="o", label=STRATEGY_LABELS[strategy])
    left.axhline(reference, color="black", linestyle="--", label=f"0.2·k·A·L = {reference:g}")
    left.set_xscale("log")
    left.set_xlabel("GT scale: sqrt(box area) in resized pixels")
    left.set_ylabel("mean positive anchors per GT")
    left.set_title("Positives per GT by scale")
    left.grid(True, which="both", alpha=0.3)
    left.legend()

    width = 0.8 / len(strategies)
    for i, strategy in enumerate(strategies):
        shares = [no_positive.get((strategy, size), math.nan) for size in SIZES]
        offset = (i - (len(strategies) - 1) / 2) * width
        right.bar(np.arange(len(SIZES)) + offset, shares, width, label=STRATEGY_LABELS[strategy])
    right.set_xticks(range(len(SIZES)), [f"{size}\n({gt_counts.get(size, 0)} GTs)" for size in SIZES])
    right.set_ylabel("GTs without a positive (%)")
    right.set_title("GTs left without a positive, by COCO size")
    right.grid(True, axis="y", alpha=0.3)
    right.legend()

    num_images = stats["image_id"].nunique()
    figure.suptitle(f"Training-sample assignment: {gt_counts.sum()} GT boxes in {num_images} images")
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=120), binary=True)
