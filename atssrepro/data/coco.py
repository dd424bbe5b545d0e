"""The COCO detection dataset: annotation loading, box filtering, resize and horizontal flip.

A sample is addressed by a ``SampleSpec`` (index, short side, flip) chosen by the batch sampler, so
that every random choice of the data pipeline is made in one reproducible place, not in workers.
Boxes are xyxy in pixels with no "+1": a COCO box ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import NamedTuple

import pycocotools.coco
import torch
import torchvision.transforms.v2.functional as F
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import InterpolationMode

from atssrepro.data.annotations import read_coco
from atssrepro.errors import UserError, warn


class SampleSpec(NamedTuple):
    """What to load: which image, at which scale, flipped or not."""

    index: int  # dataset index
    short_side: int  # target shorter side for the resize
    flip: bool  # horizontal flip
    max_size: int | None = None  # cap on the longer side; None: the dataset's own (test-time augmentation sets it)


class Sample(NamedTuple):
    """One resized (and possibly flipped) image with its ground truth."""

    image: torch.Tensor  # [3, h, w] uint8 RGB
    boxes: torch.Tensor  # [G, 4] float32 xyxy in resized-image pixels
    labels: torch.Tensor  # [G] int64, contiguous class index 0..C-1
    image_id: int  # COCO image id
    original_size: tuple[int, int]  # (h, w) of the image as stored


def resized_size(height: int, width: int, short_side: int, max_size: int) -> tuple[int, int]:
    """(h, w) of an image resized to ``short_side``, with its longer side capped at ``max_size``.

    This is maskrcnn-benchmark's rule, rounding included, so that image sizes match the paper's.
    """
    size = short_side
    if max(height, width) / min(height, width) * size > max_size:
        size = int(round(max_size * min(height, width) / max(height, width)))
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def usable_boxes(
    annotations: list[dict], height: int, width: int, category_index: dict[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes of one image that training and evaluation use, clipped to the image.

    Crowd boxes are dropped, and so is every box that is 1 pixel or less wide or high after clipping.
    Returns boxes [G, 4] float32 xyxy in original pixels and labels [G] int64 (contiguous indices).
    """
    annotations = [a for a in annotations if not a.get("iscrowd", 0)]
    boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
    labels = torch.tensor([category_index[a["category_id"]] for a in annotations], dtype=torch.int64)
    boxes[:, 2:] += boxes[:, :2]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    keep = (boxes[:, 2] - boxes[:, 0] > 1) & (boxes[:, 3] - boxes[:, 1] > 1)
    return boxes[keep], labels[keep]


class CocoDetection(torch.utils.data.Dataset):
    """A COCO-format detection split.

    With ``train=True`` the images without a usable box are dropped, as in maskrcnn-benchmark; with
    ``train=False`` every image is kept because COCO evaluation needs them all. Either way the
    images are in increasing order of COCO id. With ``train=False`` the file may also list images
    only, with no ``annotations`` key (COCO's ``image_info_test-dev2017.json``): every image then has
    no box.
    """

    def __init__(self, ann_file: Path, image_dir: Path, *, train: bool, max_size: int = 1333) -> None:
        ann_file, image_dir = Path(ann_file), Path(image_dir)
        split = "train" if train else "val"
        fix = (
            f"pass --data ROOT with annotations/instances_{split}2017.json and {split}2017/, "
            f"or set data.{split}_ann and data.{split}_images"
        )
        if not ann_file.is_file():
            raise UserError(f"annotation file {ann_file} not found; {fix}")
        if not image_dir.is_dir():
            raise UserError(f"image directory {image_dir} not found; {fix}")
        self.coco = load_coco(ann_file, train)
        self.ann_file = ann_file
        self.image_dir = image_dir
        self.max_size = max_size

        categories = sorted(self.coco.cats.values(), key=lambda c: c["id"])
        self.category_ids: list[int] = [c["id"] for c in categories]
        self.category_names: list[str] = [c["name"] for c in categories]
        self.num_classes: int = len(categories)
        category_index = {category_id: i for i, category_id in enumerate(self.category_ids)}

        self.image_ids: list[int] = []
        self._targets: list[tuple[torch.Tensor, torch.Tensor]] = []  # per index: boxes in original pixels, labels
        skipped_boxes = 0
        for image_id in sorted(self.coco.imgs):
            info = self.coco.imgs[image_id]
            annotations = self.coco.imgToAnns[image_id]
            boxes, labels = usable_boxes(annotations, info["height"], info["width"], category_index)
            skipped_boxes += sum(not a.get("iscrowd", 0) for a in annotations) - len(boxes)
            if train and len(boxes) == 0:
                continue
            self.image_ids.append(image_id)
            self._targets.append((boxes, labels))
        if train and skipped_boxes:
            warn(
                f"{ann_file}: {skipped_boxes} boxes of 1 pixel or less (after clipping to their image) are skipped "
                "in training, as the official loader does"
            )

        if self.image_ids and not self._image_path(0).is_file():
            raise UserError(f"image {self._image_path(0)} listed in {ann_file} not found; {fix}")

    def __len__(self) -> int:
        return len(self.image_ids)

    def image_size(self, index: int) -> tuple[int, int]:
        """(h, w) of image ``index`` as the annotation file states it, without decoding the image."""
        info = self.coco.imgs[self.image_ids[index]]
        return info["height"], info["width"]

    def aspect_groups(self) -> list[int]:
        """Per index: 1 for a portrait or square image (h >= w), 0 for a landscape one."""
        sizes = (self.image_size(index) for index in range(len(self)))
        return [1 if height >= width else 0 for height, width in sizes]

    def __getitem__(self, spec: SampleSpec) -> Sample:
        """Decode image ``spec.index``, resize it to ``spec.short_side`` and flip it if ``spec.flip``."""
        max_size = self.max_size if spec.max_size is None else spec.max_size
        path = self._image_path(spec.index)
        image = _decode_rgb(path)
        height, width = self.image_size(spec.index)
        if image.shape[1:] != (height, width):
            raise UserError(
                f"image {path} is {image.shape[1]}x{image.shape[2]} but its annotation file says {height}x{width}; "
                "fix its height and width in the annotation file"
            )
        new_height, new_width = resized_size(height, width, spec.short_side, max_size)
        image = F.resize(image, [new_height, new_width], interpolation=InterpolationMode.BILINEAR, antialias=True)

        boxes, labels = self._targets[spec.index]
        boxes = boxes * torch.tensor([new_width / width, new_height / height] * 2)
        if spec.flip:
            image = image.flip(-1)
            x1, y1, x2, y2 = boxes.unbind(dim=1)
            boxes = torch.stack([new_width - x2, y1, new_width - x1, y2], dim=1)
        return Sample(image, boxes, labels, self.image_ids[spec.index], (height, width))

    def _image_path(self, index: int) -> Path:
        return self.image_dir / self.coco.imgs[self.image_ids[index]]["file_name"]


def load_coco(ann_file: Path, train: bool) -> pycocotools.coco.COCO:
    """Parse and check a COCO annotation file (``data.annotations.read_coco``), then index it with
    pycocotools without its prints.

    Training needs ``annotations``; inference also reads a file without them (images only), and
    evaluation needs each annotation's ``area``.
    """
    dataset = read_coco(ann_file, need_annotations=train, need_area=not train)
    coco = pycocotools.coco.COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _decode_rgb(path: Path) -> torch.Tensor:
    """Read an image file as [3, h, w] uint8 RGB."""
    if not path.is_file():
        raise UserError(f"image {path} not found; restore it from the COCO download")
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise UserError(f"image {path} cannot be decoded; replace it with the COCO original") from error
