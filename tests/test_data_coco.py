"""The COCO dataset, its resize and flip, and the collate function."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from atssrepro.data.batch import Batch, batch_loader, collate, leave_stopping_to_the_main_process
from atssrepro.data.coco import CocoDetection, Sample, SampleSpec, resized_size
from atssrepro.data.sampler import TrainBatchSampler
from atssrepro.errors import UserError


def train_split(root: Path) -> CocoDetection:
    return CocoDetection(root / "annotations" / "instances_train2017.json", root / "train2017", train=True)


def load_json(root: Path, split: str) -> dict:
    return json.loads((root / "annotations" / f"instances_{split}2017.json").read_text())


# resized_size


@pytest.mark.parametrize(
    ("height", "width", "short_side", "expected"),
    [
        (480, 640, 800, (800, 1066)),  # landscape: int() truncates 1066.67
        (640, 480, 800, (1066, 800)),  # portrait
        (427, 640, 640, (640, 959)),
        (100, 1000, 800, (133, 1330)),  # 10:1 would be 8000 wide: short side capped at round(1333 / 10)
        (800, 1200, 800, (800, 1200)),  # already at size: unchanged
        (500, 500, 800, (800, 800)),
    ],
)
def test_resized_size(height: int, width: int, short_side: int, expected: tuple[int, int]) -> None:
    assert resized_size(height, width, short_side, max_size=1333) == expected


# CocoDetection on the real tiny COCO subset


def test_train_split_drops_crowd_boxes_and_images_without_boxes(tiny_coco: Path) -> None:
    data = load_json(tiny_coco, "train")
    sizes = {image["id"]: (image["height"], image["width"]) for image in data["images"]}
    expected_counts = dict.fromkeys(sizes, 0)
    for annotation in data["annotations"]:
        x, y, w, h = annotation["bbox"]
        height, width = sizes[annotation["image_id"]]
        clipped_w, clipped_h = min(x + w, width) - max(x, 0), min(y + h, height) - max(y, 0)
        if not annotation["iscrowd"] and clipped_w > 1 and clipped_h > 1:
            expected_counts[annotation["image_id"]] += 1
    expected_counts = {image_id: n for image_id, n in expected_counts.items() if n > 0}

    dataset = train_split(tiny_coco)

    assert len(dataset) == len(expected_counts) == len(data["images"]) - 1
    assert dataset.image_ids == sorted(expected_counts)
    counts = {dataset.image_ids[i]: len(dataset[SampleSpec(i, 32, False)].boxes) for i in range(len(dataset))}
    assert counts == expected_counts
    assert sum(annotation["iscrowd"] for annotation in data["annotations"]) == 5  # there were crowd boxes to drop


def test_val_split_keeps_every_image(tiny_coco: Path) -> None:
    data = load_json(tiny_coco, "val")
    dataset = CocoDetection(tiny_coco / "annotations" / "instances_val2017.json", tiny_coco / "val2017", train=False)
    assert len(dataset) == 50
    assert dataset.image_ids == sorted(image["id"] for image in data["images"])
    assert sorted(dataset.coco.getImgIds()) == dataset.image_ids  # evaluation reuses this pycocotools object


def test_categories_are_contiguous_and_map_back_to_coco_ids(tiny_coco: Path) -> None:
    data = load_json(tiny_coco, "train")
    dataset = train_split(tiny_coco)
    assert dataset.num_classes == 80
    assert dataset.category_ids == sorted(category["id"] for category in data["categories"])
    names = {category["id"]: category["name"] for category in data["categories"]}
    assert dataset.category_names == [names[category_id] for category_id in dataset.category_ids]


def test_sample_boxes_and_labels_follow_the_resize(tiny_coco: Path) -> None:
    data = load_json(tiny_coco, "train")
    dataset = train_split(tiny_coco)
    index = 3
    image_id = dataset.image_ids[index]
    info = next(image for image in data["images"] if image["id"] == image_id)
    annotations = [a for a in data["annotations"] if a["image_id"] == image_id and not a["iscrowd"]]

    sample = dataset[SampleSpec(index, 600, False)]

    height, width = info["height"], info["width"]
    new_height, new_width = resized_size(height, width, 600, 1333)
    assert sample.image.shape == (3, new_height, new_width)
    assert sample.image.dtype == torch.uint8
    assert sample.image_id == image_id
    assert sample.original_size == (height, width) == dataset.image_size(index)
    clipped = [
        [max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)] for x, y, w, h in (a["bbox"] for a in annotations)
    ]
    scale = torch.tensor([new_width / width, new_height / height, new_width / width, new_height / height])
    assert sample.boxes.dtype == torch.float32
    torch.testing.assert_close(sample.boxes, torch.tensor(clipped) * scale)
    assert sample.labels.dtype == torch.int64
    assert [dataset.category_ids[label] for label in sample.labels.tolist()] == [a["category_id"] for a in annotations]


def test_flip_mirrors_boxes_and_image(tiny_coco: Path) -> None:
    dataset = train_split(tiny_coco)
    plain = dataset[SampleSpec(0, 400, False)]
    flipped = dataset[SampleSpec(0, 400, True)]
    width = plain.image.shape[2]

    assert torch.equal(flipped.image.flip(-1), plain.image)
    torch.testing.assert_close(flipped.boxes[:, 0], width - plain.boxes[:, 2])
    torch.testing.assert_close(flipped.boxes[:, 2], width - plain.boxes[:, 0])
    torch.testing.assert_close(flipped.boxes[:, 1::2], plain.boxes[:, 1::2])
    assert torch.equal(flipped.labels, plain.labels)


def test_aspect_groups_follow_annotation_sizes(tiny_coco: Path) -> None:
    dataset = train_split(tiny_coco)
    groups = dataset.aspect_groups()
    assert groups == [int(h >= w) for h, w in map(dataset.image_size, range(len(dataset)))]
    assert set(groups) == {0, 1}  # the subset has both portrait and landscape images


# Errors that reach the user


def test_missing_annotation_file_names_the_path(tiny_coco: Path, tmp_path: Path) -> None:
    missing = tmp_path / "instances_train2017.json"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        CocoDetection(missing, tiny_coco / "train2017", train=True)


def test_missing_image_dir_names_the_path(tiny_coco: Path, tmp_path: Path) -> None:
    missing = tmp_path / "train2017"
    with pytest.raises(UserError, match=re.escape(str(missing))):
        CocoDetection(tiny_coco / "annotations" / "instances_train2017.json", missing, train=True)


def test_json_that_is_not_coco_is_rejected(tmp_path: Path) -> None:
    ann_file = tmp_path / "boxes.json"
    ann_file.write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="annotations, categories"):
        CocoDetection(ann_file, tmp_path, train=False)


def test_missing_first_image_and_undecodable_image_name_the_file(tmp_path: Path) -> None:
    ann_file = tmp_path / "instances.json"
    image = {"id": 1, "file_name": "broken.jpg", "height": 10, "width": 10}
    ann_file.write_text(json.dumps({"images": [image], "annotations": [], "categories": []}))
    with pytest.raises(UserError, match="broken.jpg"):
        CocoDetection(ann_file, tmp_path, train=False)

    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    dataset = CocoDetection(ann_file, tmp_path, train=False)
    with pytest.raises(UserError, match="broken.jpg"):
        dataset[SampleSpec(0, 800, False)]


# collate


def make_sample(height: int, width: int, num_boxes: int, image_id: int) -> Sample:
    image = torch.randint(1, 256, (3, height, width), dtype=torch.uint8)  # no zeros, so padding is visible
    boxes = torch.rand(num_boxes, 4) * 10
    labels = torch.arange(num_boxes)
    return Sample(image, boxes, labels, image_id, (2 * height, 2 * width))


def test_collate_pads_images_and_boxes() -> None:
    samples = [make_sample(50, 70, 2, image_id=7), make_sample(40, 100, 0, image_id=9)]

    batch = collate(samples, size_divisible=32)

    assert batch.images.shape == (2, 3, 64, 128)
    assert batch.images.dtype == torch.uint8
    for image, sample in zip(batch.images, samples):
        _, h, w = sample.image.shape
        assert torch.equal(image[:, :h, :w], sample.image)
        assert image[:, h:, :].eq(0).all() and image[:, :, w:].eq(0).all()
    assert batch.image_sizes.tolist() == [[50, 70], [40, 100]]
    assert batch.original_sizes.tolist() == [[100, 140], [80, 200]]
    assert batch.image_ids.tolist() == [7, 9]
    assert batch.boxes.shape == (2, 2, 4)
    assert torch.equal(batch.boxes[0], samples[0].boxes)
    assert batch.boxes[1].eq(0).all()
    assert batch.labels.tolist() == [[0, 1], [-1, -1]]
    assert batch.box_mask.tolist() == [[True, True], [False, False]]
    for tensor in (batch.image_sizes, batch.original_sizes, batch.image_ids, batch.labels):
        assert tensor.dtype == torch.int64


def test_collate_without_any_box() -> None:
    batch = collate([make_sample(32, 32, 0, 1), make_sample(20, 40, 0, 2)], size_divisible=32)
    assert batch.images.shape == (2, 3, 32, 64)
    assert batch.boxes.shape == (2, 0, 4)
    assert batch.labels.shape == batch.box_mask.shape == (2, 0)


def test_batch_to_moves_every_tensor() -> None:
    batch = collate([make_sample(30, 30, 3, 1)])
    moved = batch.to("cpu")
    assert isinstance(moved, Batch)
    for name in ("images", "image_sizes", "boxes", "labels", "box_mask", "image_ids", "original_sizes"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))


def test_data_loader_with_workers_matches_direct_loading(tiny_coco: Path) -> None:
    dataset = train_split(tiny_coco)
    sampler = TrainBatchSampler(dataset.aspect_groups(), 2, (96, 128), 0.5, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=functools.partial(collate, size_divisible=32), num_workers=2
    )

    for batch, specs in zip(itertools.islice(loader, 3), sampler):
        expected = collate([dataset[spec] for spec in specs], size_divisible=32)
        assert batch.images.shape[2] % 32 == 0 and batch.images.shape[3] % 32 == 0
        assert torch.equal(batch.images, expected.images)
        assert torch.equal(batch.boxes, expected.boxes)
        assert torch.equal(batch.image_ids, expected.image_ids)


class SignalsItself(torch.utils.data.Dataset):
    """Each item sends Ctrl-C and SIGTERM to the worker loading it, as Slurm and terminals do."""

    def __init__(self, signals: tuple[int, ...]) -> None:
        self.signals = signals

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        for signum in self.signals:
            os.kill(os.getpid(), signum)
        return index


def test_data_loader_workers_outlive_the_stop_signals_of_the_whole_job(synth_coco: Path) -> None:
    dataset = SignalsItself((signal.SIGINT, signal.SIGTERM))
    loader = torch.utils.data.DataLoader(dataset, num_workers=2, worker_init_fn=leave_stopping_to_the_main_process)
    assert [int(i) for i in loader] == [0, 1, 2, 3]
    # Without it, a signalled worker dies and the main process fails in the middle of its iteration.
    with pytest.raises(RuntimeError, match="DataLoader worker .* (exited unexpectedly|killed by signal)"):
        list(torch.utils.data.DataLoader(SignalsItself((signal.SIGTERM,)), num_workers=2))

    coco = CocoDetection(synth_coco / "annotations" / "instances_val2017.json", synth_coco / "val2017", train=False)
    with batch_loader(coco, [[SampleSpec(0, 128, False)]], 1, 32, torch.device("cpu")) as batches:
        assert batches._worker_init_fn is leave_stopping_to_the_main_process


CPU = torch.device("cpu")


def test_batch_loader_stops_its_workers_when_an_error_ends_the_block(synth_coco: Path) -> None:
    # The workers ignore SIGTERM, so interpreter exit could not end them: the block must.
    coco = CocoDetection(synth_coco / "annotations" / "instances_val2017.json", synth_coco / "val2017", train=False)
    with pytest.raises(ZeroDivisionError), batch_loader(coco, [[SampleSpec(0, 128, False)]] * 4, 2, 32, CPU) as b:
        workers = list(b._workers)
        next(b)
        raise ZeroDivisionError("an error in the loop")
    assert workers and not any(worker.is_alive() for worker in workers)


# Images-only files (COCO's image_info_test-dev2017.json): no "annotations" key


def images_only(root: Path, tmp_path: Path, drop: tuple[str, ...] = ("annotations",)) -> Path:
    data = load_json(root, "val")
    ann_file = tmp_path / "image_info_test-dev2017.json"
    ann_file.write_text(json.dumps({key: value for key, value in data.items() if key not in drop}))
    return ann_file


def test_images_only_file_gives_every_image_without_boxes(synth_coco: Path, tmp_path: Path) -> None:
    data = load_json(synth_coco, "val")
    dataset = CocoDetection(images_only(synth_coco, tmp_path), synth_coco / "val2017", train=False)

    assert dataset.image_ids == sorted(image["id"] for image in data["images"])
    assert dataset.category_ids == sorted(category["id"] for category in data["categories"])
    sample = dataset[SampleSpec(0, 64, True)]
    assert sample.boxes.shape == (0, 4) and sample.labels.shape == (0,)
    assert min(sample.image.shape[1:]) == 64


def test_images_only_file_cannot_train(synth_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no annotations"):
        CocoDetection(images_only(synth_coco, tmp_path), synth_coco / "val2017", train=True)


@pytest.mark.parametrize("key", ["images", "categories"])
def test_images_only_file_still_needs_images_and_categories(synth_coco: Path, tmp_path: Path, key: str) -> None:
    with pytest.raises(UserError, match=rf"not in COCO format \(no [a-z, ]*{key}"):
        CocoDetection(images_only(synth_coco, tmp_path, ("annotations", key)), synth_coco / "val2017", train=False)


def test_sample_spec_max_size_overrides_the_dataset_cap(synth_coco: Path) -> None:
    dataset = CocoDetection(synth_coco / "annotations" / "instances_val2017.json", synth_coco / "val2017", train=False)
    sizes = [
        (resized_size(h, w, 400, 1333), resized_size(h, w, 400, 450)) for h, w in map(dataset.image_size, range(4))
    ]
    index = next(i for i, (default, capped) in enumerate(sizes) if default != capped)
    assert dataset[SampleSpec(index, 400, False)].image.shape[1:] == sizes[index][0]
    assert dataset[SampleSpec(index, 400, False, max_size=450)].image.shape[1:] == sizes[index][1]
