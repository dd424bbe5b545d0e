"""Carving a real COCO subset: the chosen images, exactly their annotations, every category."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from atssrepro.data.subset import make_coco_subset
from atssrepro.errors import UserError


def test_subset_of_val(tiny_coco: Path, tmp_path: Path) -> None:
    ann_path = make_coco_subset(tiny_coco, "val2017", 7, tmp_path)
    assert ann_path == tmp_path / "annotations" / "instances_val2017.json"
    source = json.loads((tiny_coco / "annotations" / "instances_val2017.json").read_text())
    subset = json.loads(ann_path.read_text())

    ids = [image["id"] for image in subset["images"]]
    assert len(ids) == 7 and ids == sorted(ids)
    assert sorted(p.name for p in (tmp_path / "val2017").iterdir()) == sorted(i["file_name"] for i in subset["images"])
    for image in subset["images"]:
        copy = tmp_path / "val2017" / image["file_name"]
        assert copy.read_bytes() == (tiny_coco / "val2017" / image["file_name"]).read_bytes()
    expected = [a for a in source["annotations"] if a["image_id"] in set(ids)]
    assert subset["annotations"] == expected and len(expected) > 0
    assert subset["categories"] == source["categories"] and len(subset["categories"]) == 80
    assert subset["info"] == source["info"] and subset["licenses"] == source["licenses"]


def test_choice_follows_the_seed(tiny_coco: Path, tmp_path: Path) -> None:
    def chosen(seed: int, out: str) -> list[int]:
        ann_path = make_coco_subset(tiny_coco, "val2017", 7, tmp_path / out, seed=seed)
        return [image["id"] for image in json.loads(ann_path.read_text())["images"]]

    assert chosen(1, "a") == chosen(1, "b")
    assert chosen(1, "a") != chosen(2, "c")


def test_hard_links_on_the_same_filesystem(tiny_coco: Path, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco / "annotations", root / "annotations")
    shutil.copytree(tiny_coco / "val2017", root / "val2017")
    ann_path = make_coco_subset(root, "val2017", 3, tmp_path / "out")
    for image in json.loads(ann_path.read_text())["images"]:
        name = image["file_name"]
        assert os.path.samefile(tmp_path / "out" / "val2017" / name, root / "val2017" / name)


def test_copies_across_filesystems(tiny_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    ann_path = make_coco_subset(tiny_coco, "train2017", 3, tmp_path)
    for image in json.loads(ann_path.read_text())["images"]:
        copy = tmp_path / "train2017" / image["file_name"]
        assert copy.read_bytes() == (tiny_coco / "train2017" / image["file_name"]).read_bytes()


@pytest.mark.parametrize(
    ("num_images", "message"),
    [(0, "num_images=0 is out of range"), (51, "num_images=51 is out of range: .* has 50 images")],
)
def test_rejects_bad_num_images(tiny_coco: Path, tmp_path: Path, num_images: int, message: str) -> None:
    with pytest.raises(UserError, match=message):
        make_coco_subset(tiny_coco, "val2017", num_images, tmp_path)


def test_rejects_missing_annotation_file(tiny_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="instances_test2017.json not found"):
        make_coco_subset(tiny_coco, "test2017", 3, tmp_path)


def test_rejects_missing_image_folder(tiny_coco: Path, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco / "annotations", root / "annotations")
    with pytest.raises(UserError, match="image folder .*val2017 not found"):
        make_coco_subset(root, "val2017", 3, tmp_path / "out")


def test_rejects_writing_into_the_source(tiny_coco: Path) -> None:
    with pytest.raises(UserError, match="is the COCO root itself"):
        make_coco_subset(tiny_coco, "val2017", 3, tiny_coco / ".")
