"""COCO evaluation: the two backends agree, and the edge cases give COCOeval's own answers."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pycocotools.coco
import pytest

from atssrepro.engine.coco_eval import COCO_STATS, evaluate_detections, load_detections
from atssrepro.errors import UserError

BACKENDS = ("pycocotools", "faster-coco-eval")


@pytest.fixture(scope="module")
def val_ann(tiny_coco: Path) -> Path:
    return tiny_coco / "annotations" / "instances_val2017.json"


@pytest.fixture(scope="module")
def val_dataset(val_ann: Path) -> dict:
    return json.loads(val_ann.read_text())


def gt_as_detections(dataset: dict) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
        for a in dataset["annotations"]
        if not a["iscrowd"]
    ]


def noisy_detections(dataset: dict, seed: int = 0) -> list[dict]:
    """Ground-truth boxes, some dropped, the rest 1-3 times with jitter, some of a wrong class."""
    rng = random.Random(seed)
    category_ids = [c["id"] for c in dataset["categories"]]
    detections = []
    for a in dataset["annotations"]:
        if rng.random() < 0.15:
            continue
        x, y, w, h = a["bbox"]
        for _ in range(rng.randint(1, 3)):
            wrong_class = rng.random() < 0.15
            detections.append(
                {
                    "image_id": a["image_id"],
                    "category_id": rng.choice(category_ids) if wrong_class else a["category_id"],
                    "bbox": [
                        x + rng.gauss(0, 0.1 * w),
                        y + rng.gauss(0, 0.1 * h),
                        max(1.0, w * rng.uniform(0.8, 1.2)),
                        max(1.0, h * rng.uniform(0.8, 1.2)),
                    ],
                    "score": rng.random(),
                }
            )
    return detections


def test_backends_agree(val_ann: Path, val_dataset: dict) -> None:
    detections = noisy_detections(val_dataset)
    assert len(detections) > 400
    reference = evaluate_detections(val_ann, detections, backend="pycocotools")
    # A loaded pycocotools COCO is accepted by the other backend too.
    faster = evaluate_detections(pycocotools.coco.COCO(str(val_ann)), detections, backend="faster-coco-eval")

    assert 0.1 < reference.stats["AP"] < 0.9  # neither trivial nor perfect
    assert list(reference.stats) == list(COCO_STATS)
    # Not bit-identical: pycocotools adds eps to the precision denominator, faster-coco-eval's C++ does
    # not, so precisions differ by about 1e-16.
    for name in COCO_STATS:
        assert faster.stats[name] == pytest.approx(reference.stats[name], abs=1e-6), name
    assert reference.per_class_ap.keys() == faster.per_class_ap.keys()
    assert len(reference.per_class_ap) == 80
    for name, ap in reference.per_class_ap.items():
        assert faster.per_class_ap[name] == pytest.approx(ap, abs=1e-6), name
    assert (reference.num_images, reference.num_detections) == (50, len(detections))
    assert (faster.num_images, faster.num_detections) == (50, len(detections))


@pytest.mark.parametrize("backend", BACKENDS)
def test_ground_truth_as_detections_is_perfect(val_ann: Path, val_dataset: dict, backend: str) -> None:
    metrics = evaluate_detections(val_ann, gt_as_detections(val_dataset), backend=backend)
    assert metrics.stats["AP"] == pytest.approx(1.0, abs=1e-12)
    assert metrics.stats["AR100"] == pytest.approx(1.0, abs=1e-12)
    present = {a["category_id"] for a in val_dataset["annotations"] if not a["iscrowd"]}
    for category in val_dataset["categories"]:
        expected = 1.0 if category["id"] in present else -1.0
        assert metrics.per_class_ap[category["name"]] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_detections_score_zero(val_ann: Path, backend: str) -> None:
    metrics = evaluate_detections(val_ann, [], backend=backend)
    assert metrics.stats == dict.fromkeys(COCO_STATS, 0.0)
    assert metrics.num_detections == 0
    assert metrics.per_class_ap["person"] == 0.0


def test_image_ids_restrict_the_evaluation(val_ann: Path, val_dataset: dict) -> None:
    subset = sorted({a["image_id"] for a in val_dataset["annotations"]})[:10]
    # Perfect on the subset, nothing elsewhere: perfect only when restricted to the subset.
    detections = [d for d in gt_as_detections(val_dataset) if d["image_id"] in subset]
    everywhere = evaluate_detections(val_ann, detections)
    restricted = evaluate_detections(val_ann, detections, image_ids=subset)
    assert everywhere.stats["AP"] < 0.9
    assert restricted.stats["AP"] == pytest.approx(1.0, abs=1e-12)
    assert (restricted.num_images, restricted.num_detections) == (10, len(detections))


def test_counts_only_detections_on_evaluated_images(val_ann: Path, val_dataset: dict) -> None:
    detections = gt_as_detections(val_dataset)
    image_id = detections[0]["image_id"]
    metrics = evaluate_detections(val_ann, detections, image_ids=[image_id])
    assert metrics.num_images == 1
    assert metrics.num_detections == sum(d["image_id"] == image_id for d in detections)


def test_caller_detections_are_not_modified(val_ann: Path, val_dataset: dict) -> None:
    detections = noisy_detections(val_dataset)[:20]
    before = json.dumps(detections)
    evaluate_detections(val_ann, detections)
    assert json.dumps(detections) == before


def test_to_json_is_plain_json(val_ann: Path, val_dataset: dict) -> None:
    metrics = evaluate_detections(val_ann, noisy_detections(val_dataset)[:50], backend="faster-coco-eval")
    data = json.loads(json.dumps(metrics.to_json()))
    assert data["backend"] == "faster-coco-eval"
    assert data["stats"] == metrics.stats
    assert data["per_class_ap"] == metrics.per_class_ap
    assert (data["num_images"], data["num_detections"]) == (50, 50)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("image_id", 123456789, "image_id 123456789"),
        ("category_id", 12, "category_id 12"),  # COCO has no category 12
    ],
)
def test_unknown_ids_are_refused(val_ann: Path, val_dataset: dict, field: str, value: int, message: str) -> None:
    detections = gt_as_detections(val_dataset)[:5]
    detections[3] = {**detections[3], field: value}
    with pytest.raises(UserError, match=message):
        evaluate_detections(val_ann, detections)


def test_unknown_image_ids_are_refused(val_ann: Path) -> None:
    with pytest.raises(UserError, match="image_ids contains 7"):
        evaluate_detections(val_ann, [], image_ids=[7])


def test_unknown_backend(val_ann: Path) -> None:
    with pytest.raises(UserError, match="unknown evaluation backend 'detectron'.*pycocotools, faster-coco-eval"):
        evaluate_detections(val_ann, [], backend="detectron")


def test_missing_faster_coco_eval(val_ann: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # makes the import fail
    with pytest.raises(UserError, match="pip install faster-coco-eval"):
        evaluate_detections(val_ann, [], backend="faster-coco-eval")


def test_missing_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.json"):
        evaluate_detections(tmp_path / "nope.json", [])


def test_load_detections_round_trip(tmp_path: Path, val_dataset: dict) -> None:
    detections = noisy_detections(val_dataset)[:30]
    path = tmp_path / "detections.json"
    path.write_text(json.dumps(detections))
    assert load_detections(path) == detections


GOOD = {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5.5, 5], "score": 0.5}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[{", "not valid JSON"),
        ('{"image_id": 1}', r"must hold a JSON list of detections \(got dict\)"),
        (json.dumps([GOOD, {k: v for k, v in GOOD.items() if k != "score"}]), "entry 1 has no 'score'"),
        (json.dumps([GOOD, GOOD, {**GOOD, "bbox": [0, 0, 5]}]), r"entry 2 has bbox \[0, 0, 5\], not 4 finite numbers"),
        (json.dumps([{**GOOD, "bbox": [0, 0, "5", 5]}]), "entry 0 has bbox"),
        (json.dumps([GOOD, 3]), r"entry 1 is not a JSON object \(got int\)"),
    ],
)
def test_load_detections_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "detections.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as caught:
        load_detections(path)
    assert str(path) in str(caught.value)


def test_load_detections_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_detections(tmp_path / "missing.json")
