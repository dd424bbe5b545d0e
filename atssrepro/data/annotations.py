"""Reading a COCO annotation file, checked entry by entry before anything indexes it.

A file that is not UTF-8 JSON, lacks ``images``/``categories`` (or ``annotations`` where they are
needed), or has an entry without its id, image size, box or category stops with one line naming
the file, the first offending entry and how many entries share the problem. Nothing here crashes
on a malformed file, and nothing malformed gets through: boxes that are well-formed but too small
to train on are the training loader's business (``coco.usable_boxes``, counted in a warning).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atssrepro.errors import UserError


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_json(path: Path, what: str, fix: str) -> Any:
    """Parse ``path`` as UTF-8 JSON; every way that fails is one line naming ``what`` and ``path``."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{what} {path} is a folder, not a file; {fix}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist; {fix}") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read ({e.strerror}); {fix}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text (byte {e.start}); {fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {path} is not valid JSON ({e}); {fix}") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be JSON data; {fix}") from None


class _Problems:
    """The first offending entry of each kind of problem, and how many entries have it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.found: dict[str, list] = {}

    def add(self, kind: str, message: str) -> None:
        self.found.setdefault(kind, [message, 0])[1] += 1

    def raise_first(self, fix: str) -> None:
        if self.found:
            message, count = next(iter(self.found.values()))
            more = f" ({count} entries like this)" if count > 1 else ""
            raise UserError(f"annotation file {self.path}: {message}{more}; {fix}")


def _entries(dataset: dict, key: str, problems: _Problems) -> list[dict]:
    entries = dataset.get(key, [])
    if not isinstance(entries, list):
        raise UserError(f"annotation file {problems.path}: {key!r} must be a list, not {type(entries).__name__}")
    good = []
    for index, entry in enumerate(entries):
        if isinstance(entry, dict):
            good.append(entry)
        else:
            problems.add(f"{key}:object", f"{key}[{index}] is not a JSON object ({entry!r:.40})")
    return good


def _check_each(
    entries: list[dict], key: str, problems: _Problems, checks: dict[str, Callable[[dict], str | None]]
) -> None:
    for index, entry in enumerate(entries):
        for kind, check in checks.items():
            problem = check(entry)
            if problem:
                name = f"{key}[{index}]" + (f" (id {entry['id']!r:.20})" if "id" in entry else "")
                problems.add(f"{key}:{kind}", f"{name} {problem}")
                break


def _field(name: str, test: Callable[[Any], bool], expected: str) -> Callable[[dict], str | None]:
    def check(entry: dict) -> str | None:
        if name not in entry:
            return f"has no {name!r}"
        if not test(entry[name]):
            return f"has {name} = {entry[name]!r:.40}, not {expected}"
        return None

    return check


def _bbox(entry: dict) -> str | None:
    box = entry.get("bbox")
    if "bbox" not in entry:
        return "has no 'bbox'"
    if not (isinstance(box, list) and len(box) == 4 and all(is_finite_number(v) for v in box)):
        return f"has bbox {box!r:.60}, not 4 finite numbers [x, y, w, h]"
    if box[2] < 0 or box[3] < 0:
        return f"has bbox {box!r:.60} with a negative width or height"
    return None


def _duplicates(entries: list[dict], key: str, problems: _Problems) -> None:
    seen: set = set()
    for entry in entries:
        ident = entry.get("id")
        if not is_int(ident):
            continue  # reported by the entry checks
        if ident in seen:
            problems.add(f"{key}:duplicate", f"{key} has id {ident} twice")
        seen.add(ident)


def read_coco(
    path: Path, *, need_annotations: bool = True, need_file_names: bool = True, need_area: bool = False
) -> dict:
    """The checked content of a COCO annotation file (``instances_*.json``).

    ``need_annotations=False`` also accepts an images-only file (``image_info_test-dev2017.json``).
    ``need_file_names`` requires ``file_name`` on every image (not needed where no image is read);
    ``need_area`` an ``area`` on every annotation (COCO evaluation buckets objects by it).
    """
    path = Path(path)
    fix = (
        "point to a COCO instances_*.json file"
        if need_annotations
        else "point to a COCO instances_*.json file or image_info_*.json file"
    )
    dataset = read_json(path, "annotation file", fix)
    missing = [
        key for key in ("images", "annotations", "categories") if not isinstance(dataset, dict) or key not in dataset
    ]
    if missing and (need_annotations or missing != ["annotations"]):
        raise UserError(f"annotation file {path} is not in COCO format (no {', '.join(missing)}); {fix}")

    problems = _Problems(path)
    fix = "fix or remove those entries"
    images = _entries(dataset, "images", problems)
    image_checks = {
        "id": _field("id", is_int, "an integer"),
        "width": _field("width", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
        "height": _field("height", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
    }
    if need_file_names:
        image_checks["file_name"] = _field("file_name", lambda v: isinstance(v, str) and v != "", "a file name")
    _check_each(images, "images", problems, image_checks)
    categories = _entries(dataset, "categories", problems)
    _check_each(
        categories, "categories", problems,
        {"id": _field("id", is_int, "an integer"), "name": _field("name", lambda v: isinstance(v, str), "a string")},
    )  # fmt: skip
    problems.raise_first(fix)
    _duplicates(images, "images", problems)
    _duplicates(categories, "categories", problems)
    problems.raise_first(fix)

    area = _field("area", lambda v: is_finite_number(v) and v >= 0, "a finite number >= 0")
    iscrowd = _field("iscrowd", lambda v: v in (0, 1), "0 or 1")
    image_ids = {image["id"] for image in images}
    category_ids = {category["id"] for category in categories}
    annotations = _entries(dataset, "annotations", problems)
    _check_each(
        annotations, "annotations", problems,
        {
            "id": _field("id", is_int, "an integer"),
            "image_id": _field("image_id", lambda v: is_int(v) and v in image_ids, "the id of an image of the file"),
            "category_id": _field(
                "category_id", lambda v: is_int(v) and v in category_ids, "the id of a category of the file"
            ),
            "bbox": _bbox,
            "iscrowd": lambda a: iscrowd(a) if "iscrowd" in a else None,
            "area": lambda a: area(a) if need_area or "area" in a else None,
        },
    )  # fmt: skip
    _duplicates(annotations, "annotations", problems)
    problems.raise_first(fix)
    return dataset
