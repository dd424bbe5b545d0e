"""The synthetic dataset: deterministic, valid COCO, and varied enough to exercise the pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pycocotools.coco
import pytest
from PIL import Image

from atssrepro.data import synth as synth_module
from atssrepro.data.synth import make_synthetic_coco
from atssrepro.engine.coco_eval import evaluate_detections
from atssrepro.errors import UserError

from cli import assert_one_line_error, atssrepro

SPLITS = ("train2017", "val2017")


def dataset_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_coco(root)  # the defaults, as a fresh machine would use them
    return root


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    make_synthetic_coco(tmp_path / "a", train_images=12, val_images=6, seed=5)
    make_synthetic_coco(tmp_path / "b", train_images=12, val_images=6, seed=5)
    make_synthetic_coco(tmp_path / "c", train_images=12, val_images=6, seed=6)
    a, b, c = (dataset_files(tmp_path / name) for name in "abc")
    assert len(a) == 12 + 6 + 2
    assert a == b
    assert a.keys() == c.keys() and a != c


@pytest.mark.parametrize("split", SPLITS)
def test_is_valid_coco(synth: Path, split: str) -> None:
    coco = pycocotools.coco.COCO(str(synth / "annotations" / f"instances_{split}.json"))
    assert len(coco.imgs) == {"train2017": 64, "val2017": 32}[split]
    assert sorted(p.name for p in (synth / split).iterdir()) == sorted(i["file_name"] for i in coco.imgs.values())
    for image in coco.imgs.values():
        with Image.open(synth / split / image["file_name"]) as pil:
            assert (pil.mode, pil.size) == ("RGB", (image["width"], image["height"]))
        assert 1 <= len(coco.imgToAnns[image["id"]]) <= 8
        for ann in coco.imgToAnns[image["id"]]:
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and 0 < w and 0 < h
            assert x + w <= image["width"] and y + h <= image["height"]
            assert 0 < ann["area"] <= w * h
            assert ann["iscrowd"] == 0 and len(ann["segmentation"][0]) >= 6


@pytest.mark.parametrize("split", SPLITS)
def test_has_variety(synth: Path, split: str) -> None:
    dataset = json.loads((synth / "annotations" / f"instances_{split}.json").read_text())
    areas = [a["area"] for a in dataset["annotations"]]
    assert any(area < 32**2 for area in areas)  # COCO's small, medium and large
    assert any(32**2 <= area < 96**2 for area in areas)
    assert any(area >= 96**2 for area in areas)
    assert any(i["width"] > i["height"] for i in dataset["images"])
    assert any(i["width"] < i["height"] for i in dataset["images"])
    aspects = [w / h for _, _, w, h in (a["bbox"] for a in dataset["annotations"])]
    assert min(aspects) < 1 / 2.5 and max(aspects) > 2.5
    category_ids = sorted(c["id"] for c in dataset["categories"])
    assert category_ids != list(range(1, len(category_ids) + 1))  # not contiguous
    assert {a["category_id"] for a in dataset["annotations"]} == set(category_ids)


def test_ids_are_unique_across_splits(synth: Path) -> None:
    train, val = (json.loads((synth / "annotations" / f"instances_{s}.json").read_text()) for s in SPLITS)
    for key in ("images", "annotations"):
        ids = [item["id"] for item in train[key] + val[key]]
        assert len(ids) == len(set(ids))


def test_ground_truth_scores_perfect_ap(synth: Path) -> None:
    ann = synth / "annotations" / "instances_val2017.json"
    annotations = json.loads(ann.read_text())["annotations"]
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in annotations
    ]
    assert evaluate_detections(ann, detections).stats["AP"] == pytest.approx(1.0, abs=1e-12)


def test_rewrite_replaces_the_previous_dataset(tmp_path: Path) -> None:
    make_synthetic_coco(tmp_path, train_images=6, val_images=3)
    make_synthetic_coco(tmp_path, train_images=2, val_images=1, seed=1)
    for split, count in (("train2017", 2), ("val2017", 1)):
        dataset = json.loads((tmp_path / "annotations" / f"instances_{split}.json").read_text())
        assert len(dataset["images"]) == count
        assert sorted(p.name for p in (tmp_path / split).iterdir()) == [i["file_name"] for i in dataset["images"]]


def test_refuses_to_overwrite_another_dataset(tmp_path: Path) -> None:
    foreign = tmp_path / "annotations" / "instances_val2017.json"
    foreign.parent.mkdir()
    foreign.write_text(json.dumps({"info": {"description": "COCO 2017"}, "images": []}))
    with pytest.raises(UserError, match="instances_val2017.json belongs to another dataset"):
        make_synthetic_coco(tmp_path, train_images=2, val_images=1)
    assert not (tmp_path / "train2017").exists()  # refused before writing anything


def test_rejects_bad_image_sides(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="min_side <= max_side"):
        make_synthetic_coco(tmp_path, min_side=300, max_side=200)


@pytest.mark.parametrize(
    ("option", "value", "allowed"),
    [
        ("--train-images", "0", "1 to 100000"),
        ("--val-images", "-3", "1 to 100000"),
        ("--train-images", "100001", "1 to 100000"),
        ("--seed", "-1", ">= 0"),
    ],
)
def test_counts_and_seed_out_of_range_are_one_line(tmp_path: Path, option: str, value: str, allowed: str) -> None:
    result = atssrepro("data", "synth", "--out", str(tmp_path / "synth"), option, value, check=False)
    assert_one_line_error(result, f"{option} {value}", allowed)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drawn = []

    def failing_draw(*args: object) -> object:
        drawn.append(1)
        if len(drawn) == 5:
            raise KeyboardInterrupt  # Ctrl-C, or any error, in the middle of the training images
        return draw(*args)

    draw = synth_module._draw_image
    monkeypatch.setattr(synth_module, "_draw_image", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_coco(tmp_path / "new" / "synth", train_images=6, val_images=2)
    assert list(tmp_path.iterdir()) == []  # neither the dataset, nor its temporary folder, nor "new"

    make_synthetic_coco(tmp_path / "synth", train_images=2, val_images=1)
    before = dataset_files(tmp_path / "synth")
    drawn.clear()
    with pytest.raises(KeyboardInterrupt):
        make_synthetic_coco(tmp_path / "synth", train_images=6, val_images=2, seed=3)
    assert dataset_files(tmp_path / "synth") == before  # the previous dataset is left as it was
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]


def test_refuses_to_replace_files_it_did_not_write(tmp_path: Path) -> None:
    make_synthetic_coco(tmp_path, train_images=2, val_images=1)
    (tmp_path / "val2017" / "notes.txt").write_text("mine")
    before = dataset_files(tmp_path)
    with pytest.raises(UserError, match=r"val2017 holds 1 file\(s\) that no dataset written here lists \(e.g. notes"):
        make_synthetic_coco(tmp_path, train_images=3, val_images=1)
    assert dataset_files(tmp_path) == before
