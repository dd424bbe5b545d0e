"""A small synthetic dataset in the COCO layout, so that the pipeline runs without COCO or a network.

Each image shows 1-8 coloured shapes on a noisy background. There are six classes, each a distinct
shape with its own hue, so a small detector learns them in minutes. Object sizes span COCO's small,
medium and large area ranges, aspect ratios go from 1:4 to 4:1, and category ids are not contiguous
(1, 2, 4, 7, 11, 16) so that the id -> class index mapping is exercised.
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from atssrepro.data.staging import annotation_path, staged_splits
from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write, write_json

DESCRIPTION = "atssrepro synthetic shapes"  # marks annotation files this module may overwrite
MAX_OBJECTS = 8
MAX_OVERLAP_IOU = 0.3  # objects may overlap, but each stays mostly visible
JPEG_QUALITY = 90
MAX_IMAGES = 100_000  # per split: about 2 GB of JPEGs, and an hour of drawing
MAX_SIDE = 4096

Polygon = tuple[tuple[float, float], ...]  # vertices in the unit square, (0, 0) = top left


def _unit_ellipse(radius: float = 0.5, vertices: int = 64) -> Polygon:
    """A circle around the centre of the unit square; stretched over a box, it becomes an ellipse."""
    return tuple(
        (0.5 + radius * math.cos(2 * math.pi * i / vertices), 0.5 + radius * math.sin(2 * math.pi * i / vertices))
        for i in range(vertices)
    )


@dataclass(frozen=True)
class Shape:
    """One class: a polygon (with an optional hole) stretched over the object's box, in one hue."""

    category_id: int
    name: str
    hue: float  # in [0, 1)
    outline: Polygon
    hole: Polygon = ()


# A plus sign with arms a third of the box wide, drawn on a grid of thirds.
_CROSS_THIRDS = ((1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (2, 2), (2, 3), (1, 3), (1, 2), (0, 2), (0, 1), (1, 1))
_CROSS: Polygon = tuple((u / 3, v / 3) for u, v in _CROSS_THIRDS)
SHAPES: tuple[Shape, ...] = (
    Shape(1, "rectangle", 0 / 6, ((0, 0), (1, 0), (1, 1), (0, 1))),
    Shape(2, "ellipse", 1 / 6, _unit_ellipse()),
    Shape(4, "triangle", 2 / 6, ((0.5, 0), (1, 1), (0, 1))),
    Shape(7, "ring", 3 / 6, _unit_ellipse(), hole=_unit_ellipse(0.3)),
    Shape(11, "cross", 4 / 6, _CROSS),
    Shape(16, "diamond", 5 / 6, ((0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5))),
)


def make_synthetic_coco(
    out: Path,
    *,
    train_images: int = 64,
    val_images: int = 32,
    seed: int = 0,
    min_side: int = 160,
    max_side: int = 320,
) -> None:
    """Write ``out/{train2017,val2017}/*.jpg`` and ``out/annotations/instances_{train2017,val2017}.json``.

    The output depends only on the arguments. It is built beside ``out`` and moved into place at the
    end: a failure leaves nothing. A dataset written here before by this function is replaced,
    stale images included; any other dataset in ``out`` is refused.
    """
    for option, value, low, high in (
        ("--train-images", train_images, 1, MAX_IMAGES),
        ("--val-images", val_images, 1, MAX_IMAGES),
        ("--seed", seed, 0, None),
    ):
        if not isinstance(value, int) or value < low or (high is not None and value > high):
            allowed = f"{low} to {high}" if high is not None else f">= {low}"
            raise UserError(f"{option} {value}: must be an integer {allowed}")
    if not 16 <= min_side <= max_side <= MAX_SIDE:
        raise UserError(
            f"image sides must satisfy 16 <= min_side <= max_side <= {MAX_SIDE}, got {min_side} and {max_side}"
        )
    splits = (("train2017", train_images), ("val2017", val_images))
    with staged_splits(Path(out), [split for split, _ in splits], _is_synthetic) as staging:
        image_id = annotation_id = 0  # the last ids used; ids are unique across both splits, as in COCO
        for split_index, (split, count) in enumerate(splits):
            images, annotations = [], []
            for index in range(count):
                # One generator per image: an image does not change when the image counts do.
                rng = np.random.default_rng([seed, split_index, index])
                width, height = (int(side) for side in rng.integers(min_side, max_side, size=2, endpoint=True))
                image, objects = _draw_image(rng, width, height)
                image_id += 1
                file_name = f"{image_id:012d}.jpg"
                save = functools.partial(image.save, format="JPEG", quality=JPEG_QUALITY)
                atomic_write(staging / split / file_name, save, binary=True)
                images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, "license": 1})
                for annotation in objects:
                    annotation_id += 1
                    annotations.append({"id": annotation_id, "image_id": image_id, **annotation})
            write_json(annotation_path(staging, split), _coco_json(images, annotations), indent=None)


def _is_synthetic(dataset: dict) -> bool:
    """Whether an annotation file's content is a synthetic dataset of this module's."""
    info = dataset.get("info")
    return isinstance(info, dict) and info.get("description") == DESCRIPTION


def _draw_image(rng: np.random.Generator, width: int, height: int) -> tuple[Image.Image, list[dict]]:
    """One image and its objects' annotations (without ids)."""
    pixels = _background(rng, width, height)
    boxes = _place_boxes(rng, width, height)
    # Largest first, so that a small object is never drawn over by a larger one.
    boxes.sort(key=lambda box: box[2] * box[3], reverse=True)
    annotations = []
    for x, y, w, h in boxes:
        shape = SHAPES[rng.integers(len(SHAPES))]
        outline = [(x + u * w, y + v * h) for u, v in shape.outline]
        mask = Image.new("L", (width, height))
        draw = ImageDraw.Draw(mask)
        draw.polygon(outline, fill=1)
        if shape.hole:
            draw.polygon([(x + u * w, y + v * h) for u, v in shape.hole], fill=0)
        mask_array = np.asarray(mask, dtype=bool)
        pixels[mask_array] = _color(rng, shape.hue)
        left, top, right, bottom = mask.getbbox()  # tight box of the drawn pixels, right/bottom exclusive
        annotations.append(
            {
                "category_id": shape.category_id,
                "bbox": [left, top, right - left, bottom - top],
                "area": int(mask_array.sum()),
                "iscrowd": 0,
                "segmentation": [[round(c, 2) for point in outline for c in point]],
            }
        )
    pixels += rng.normal(0, 8, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), annotations


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A greyish, blotchy background: a coarse random grid upsampled smoothly, as float RGB."""
    gray = rng.uniform(60, 190)
    grid = gray + rng.normal(0, 30, (6, 6, 1)) + rng.normal(0, 10, (6, 6, 3))
    coarse = Image.fromarray(grid.clip(0, 255).astype(np.uint8))
    return np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float64)


def _place_boxes(rng: np.random.Generator, width: int, height: int) -> list[tuple[int, int, int, int]]:
    """1-8 boxes (x, y, w, h) inside the image that overlap each other only a little."""
    boxes: list[tuple[int, int, int, int]] = []
    for _ in range(rng.integers(1, MAX_OBJECTS, endpoint=True)):
        for _attempt in range(20):
            box = _random_box(rng, width, height)
            if all(_iou(box, other) <= MAX_OVERLAP_IOU for other in boxes):
                boxes.append(box)
                break
    return boxes


def _random_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    """A box whose side sqrt(w * h) is log-uniform from 12 px to 9/10 of the image, aspect 1:4 to 4:1."""
    size = math.exp(rng.uniform(math.log(12), math.log(0.9 * min(width, height))))
    aspect = math.exp(rng.uniform(math.log(1 / 4), math.log(4)))  # w / h
    w = int(np.clip(size * math.sqrt(aspect), 4, width - 1))
    h = int(np.clip(size / math.sqrt(aspect), 4, height - 1))
    x = int(rng.integers(0, width - w))
    y = int(rng.integers(0, height - h))
    return x, y, w, h


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    overlap_w = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    overlap_h = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    intersection = overlap_w * overlap_h
    return intersection / (a[2] * a[3] + b[2] * b[3] - intersection)


def _color(rng: np.random.Generator, hue: float) -> tuple[float, float, float]:
    """An RGB colour near ``hue``, saturated and bright enough to stand out from the grey background."""
    r, g, b = colorsys.hsv_to_rgb((hue + rng.normal(0, 0.02)) % 1, rng.uniform(0.6, 1), rng.uniform(0.7, 1))
    return r * 255, g * 255, b * 255


def _coco_json(images: list[dict], annotations: list[dict]) -> dict:
    return {
        "info": {"description": DESCRIPTION, "version": "1.0", "year": 2020, "contributor": "atssrepro"},
        "licenses": [{"id": 1, "name": "CC0 1.0", "url": "https://creativecommons.org/publicdomain/zero/1.0/"}],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": s.category_id, "name": s.name, "supercategory": "shape"} for s in SHAPES],
    }
