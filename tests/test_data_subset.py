"""Carving a real COCO subset: the chosen images, exactly their annotations, every category."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from atssrepro.data.subset import make_coco_subset
from atssrepro.errors import UserError

from cli import assert_one_line_error, atssrepro


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
    [(0, "--images 0 is out of range"), (51, "--images 51 is out of range: .* has 50 images; take 1 to 50")],
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


def test_a_failed_subset_leaves_nothing_behind(tiny_coco: Path, tmp_path: Path) -> None:
    root = tmp_path / "coco"
    shutil.copytree(tiny_coco / "annotations", root / "annotations")
    shutil.copytree(tiny_coco / "val2017", root / "val2017")
    images = json.loads((root / "annotations" / "instances_val2017.json").read_text())["images"]
    last = max(images, key=lambda image: image["id"])  # linked last: every other image is in place by then
    (root / "val2017" / last["file_name"]).unlink()
    out = tmp_path / "new" / "subset"
    result = atssrepro("data", "subset", "--coco", str(root), "--images", "50", "--out", str(out), check=False)
    assert_one_line_error(result, last["file_name"], "missing")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]  # no subset, temporary folder or "new"


def test_a_new_subset_replaces_the_previous_one_whole(tiny_coco: Path, tmp_path: Path) -> None:
    make_coco_subset(tiny_coco, "val2017", 7, tmp_path)
    make_coco_subset(tiny_coco, "train2017", 2, tmp_path)
    ann_path = make_coco_subset(tiny_coco, "val2017", 3, tmp_path, seed=4)
    listed = [image["file_name"] for image in json.loads(ann_path.read_text())["images"]]
    assert sorted(p.name for p in (tmp_path / "val2017").iterdir()) == sorted(listed) and len(listed) == 3
    assert len(list((tmp_path / "train2017").iterdir())) == 2  # the other split is left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotations", "train2017", "val2017"]


def test_refuses_to_replace_a_split_it_did_not_write(tiny_coco: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_coco / "annotations", tmp_path / "annotations")
    with pytest.raises(UserError, match="instances_val2017.json belongs to another dataset"):
        make_coco_subset(tiny_coco, "val2017", 3, tmp_path)
    (tmp_path / "annotations" / "instances_val2017.json").unlink()
    (tmp_path / "val2017").mkdir()
    (tmp_path / "val2017" / "photo.jpg").write_bytes(b"mine")
    with pytest.raises(UserError, match="val2017 holds 1 file"):
        make_coco_subset(tiny_coco, "val2017", 3, tmp_path)
    assert (tmp_path / "val2017" / "photo.jpg").read_bytes() == b"mine"
