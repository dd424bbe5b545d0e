"""COCO box evaluation: the 12 COCOeval numbers and a per-class AP, from either of two backends.

"pycocotools" is the reference implementation; "faster-coco-eval" computes the same numbers in C++
and is much faster on the full 5000-image val2017. Detections are in the COCO results format:
``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atssrepro.errors import UserError

# In the order of COCOeval.stats.
COCO_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
BACKENDS: tuple[str, ...] = ("pycocotools", "faster-coco-eval")
DETECTION_KEYS: tuple[str, ...] = ("image_id", "category_id", "bbox", "score")

if TYPE_CHECKING:  # imported on use: the table specs read COCO_STATS without loading pycocotools
    import pycocotools.coco


@dataclass(frozen=True)
class CocoMetrics:
    """The result of one evaluation. Values are fractions in [0, 1], or -1 where undefined."""

    stats: dict[str, float]  # COCO_STATS name -> value
    per_class_ap: dict[str, float]  # category name -> AP@[.5:.95], all areas, 100 detections
    backend: str
    num_images: int  # images evaluated
    num_detections: int  # detections on those images

    def to_json(self) -> dict:
        return asdict(self)


def evaluate_detections(
    ann: Path | pycocotools.coco.COCO,
    detections: list[dict],
    *,
    backend: str = "pycocotools",
    image_ids: Sequence[int] | None = None,
) -> CocoMetrics:
    """Evaluate ``detections`` against the annotations ``ann`` (a file or a loaded COCO).

    ``image_ids`` restricts the evaluation to those images; by default every annotated image counts.
    """
    coco_class, eval_class = _backend_classes(backend)
    # Both libraries print progress; the caller prints its own table.
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = _as_backend_coco(ann, coco_class)
        _check_ids(ground_truth, detections, image_ids)
        evaluator = eval_class(ground_truth, _results_coco(ground_truth, detections, coco_class), "bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(set(image_ids))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()

    evaluated = set(evaluator.params.imgIds)
    return CocoMetrics(
        stats={name: float(value) for name, value in zip(COCO_STATS, evaluator.stats)},
        per_class_ap=_per_class_ap(evaluator, ground_truth),
        backend=backend,
        num_images=len(evaluated),
        num_detections=sum(detection["image_id"] in evaluated for detection in detections),
    )


def load_detections(path: Path) -> list[dict]:
    """Read a COCO results JSON file, checking that every entry is a well-formed detection."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"detections file {path} does not exist; pass the JSON file written by the evaluation run")
    try:
        detections = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"detections file {path} is not valid JSON ({error}); re-run the run that wrote it") from None
    if not isinstance(detections, list):
        raise UserError(f"detections file {path} must hold a JSON list of detections (got {type(detections).__name__})")
    for index, detection in enumerate(detections):
        problem = _detection_problem(detection)
        if problem:
            raise UserError(
                f"detections file {path}: entry {index} {problem}; "
                f"each entry needs {', '.join(DETECTION_KEYS)} with bbox = [x, y, w, h]"
            )
    return detections


def _backend_classes(backend: str) -> tuple[type, type]:
    """The (COCO, COCOeval) classes of ``backend``."""
    if backend == "pycocotools":
        import pycocotools.coco
        import pycocotools.cocoeval

        return pycocotools.coco.COCO, pycocotools.cocoeval.COCOeval
    if backend == "faster-coco-eval":
        try:
            import faster_coco_eval
        except ImportError:
            raise UserError(
                "evaluation backend 'faster-coco-eval' is not installed; "
                "run `pip install faster-coco-eval` or use backend 'pycocotools'"
            ) from None
        return faster_coco_eval.COCO, faster_coco_eval.COCOeval_faster
    raise UserError(f"unknown evaluation backend {backend!r}; choose one of: {', '.join(BACKENDS)}")


def _as_backend_coco(ann: Path | Any, coco_class: type) -> Any:
    """The annotations as a ``coco_class`` object, read from a file or re-indexed from another COCO."""
    if isinstance(ann, coco_class):
        return ann
    if isinstance(ann, (str, Path)):
        path = Path(ann)
        if not path.is_file():
            raise UserError(f"annotation file {path} does not exist; check the dataset root")
        dataset = json.loads(path.read_text(encoding="utf-8"))
    else:
        dataset = ann.dataset
    # Neither COCO constructor takes a dict in both libraries; filling an empty one does.
    coco = coco_class()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _check_ids(ground_truth: Any, detections: list[dict], image_ids: Sequence[int] | None) -> None:
    """Refuse ids the annotations do not know: COCOeval would assert or silently skip them."""
    for image_id in image_ids or ():
        if image_id not in ground_truth.imgs:
            raise UserError(f"image_ids contains {image_id}, which is not an image of the annotations")
    for detection in detections:
        if detection["image_id"] not in ground_truth.imgs:
            raise UserError(
                f"detection image_id {detection['image_id']} is not an image of the annotations; "
                "evaluate against the annotation file the detections were made for"
            )
        if detection["category_id"] not in ground_truth.cats:
            raise UserError(
                f"detection category_id {detection['category_id']} is not a category of the annotations; "
                "detections must use the dataset's category ids, not contiguous class indices"
            )


def _results_coco(ground_truth: Any, detections: list[dict], coco_class: type) -> Any:
    """The detections as a COCO object, as ``loadRes`` makes it, also when there are none."""
    if detections:
        # loadRes adds keys to each entry; copies keep the caller's list unchanged.
        return ground_truth.loadRes([dict(detection) for detection in detections])
    # pycocotools' loadRes reads detections[0]; an empty result set is a COCO without annotations.
    results = coco_class()
    results.dataset = {
        "images": ground_truth.dataset["images"],
        "categories": ground_truth.dataset["categories"],
        "annotations": [],
    }
    results.createIndex()
    return results


def _per_class_ap(evaluator: Any, ground_truth: Any) -> dict[str, float]:
    """AP@[.5:.95] of each category, averaged over the defined precisions like COCOeval's AP."""
    params = evaluator.params
    area = params.areaRngLbl.index("all")
    max_dets = params.maxDets.index(100)
    # precision: [IoU threshold, recall threshold, category, area range, max detections]
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, category_id in enumerate(params.catIds):
        values = precision[:, :, k, area, max_dets]
        values = values[values > -1]
        per_class[ground_truth.cats[category_id]["name"]] = float(values.mean()) if values.size else -1.0
    return per_class


def _detection_problem(detection: Any) -> str | None:
    """What is wrong with one entry of a results file, or None."""
    if not isinstance(detection, dict):
        return f"is not a JSON object (got {type(detection).__name__})"
    for key in DETECTION_KEYS:
        if key not in detection:
            return f"has no {key!r}"
    bbox = detection["bbox"]
    if not (
        isinstance(bbox, list)
        and len(bbox) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    ):
        return f"has bbox {bbox!r}, not 4 numbers"
    return None
