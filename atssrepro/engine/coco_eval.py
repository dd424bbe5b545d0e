"""COCO box evaluation: the 12 COCOeval numbers and a per-class AP, from either of two backends.

"pycocotools" is the reference implementation; "faster-coco-eval" computes the same numbers in C++
and is much faster on the full 5000-image val2017. Detections are in the COCO results format:
``{"image_id": int, "category_id": int, "bbox": [x, y, w, h], "score": float}``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atssrepro.data.annotations import is_finite_number, is_int, read_coco, read_json
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
    """Read a COCO results JSON file, checking that every entry is a well-formed detection.

    A malformed file stops with one line naming the first offending entry and how many there are."""
    path = Path(path)
    detections = read_json(path, "detections file", "pass the JSON list of detections an evaluation run wrote")
    if not isinstance(detections, list):
        raise UserError(f"detections file {path} must hold a JSON list of detections (got {type(detections).__name__})")
    problems = [(index, problem) for index, d in enumerate(detections) if (problem := _detection_problem(d))]
    if problems:
        (index, problem), count = problems[0], len(problems)
        raise UserError(
            f"detections file {path}: entry {index} {problem}"
            + (f" ({count} malformed entries)" if count > 1 else "")
            + f"; each entry needs {', '.join(DETECTION_KEYS)} with bbox = [x, y, w, h], w and h >= 0"
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
        dataset = read_coco(Path(ann), need_file_names=False, need_area=True)
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
    for key, known, what, advice in (
        ("image_id", ground_truth.imgs, "an image",
         "evaluate against the annotation file the detections were made for"),
        ("category_id", ground_truth.cats, "a category",
         "detections must use the dataset's category ids, not contiguous class indices"),
    ):  # fmt: skip
        unknown = [i for i, d in enumerate(detections) if d[key] not in known]
        if unknown:
            first = unknown[0]
            raise UserError(
                f"detection {first} has {key} {detections[first][key]}, which is not {what} of the annotations "
                f"({len(unknown)} detections like this); {advice}"
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
    for key in ("image_id", "category_id"):
        if not is_int(detection[key]):
            return f"has {key} {detection[key]!r:.40}, not an integer"
    if not is_finite_number(detection["score"]):
        return f"has score {detection['score']!r:.40}, not a finite number"
    bbox = detection["bbox"]
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        return f"has bbox {bbox!r:.60}, not 4 finite numbers"
    if bbox[2] < 0 or bbox[3] < 0:
        return f"has bbox {bbox!r:.60} with a negative width or height"
    return None
