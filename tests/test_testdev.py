"""Test-dev: the COCO server's results zip, and splits that list images without annotations."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from atssrepro.engine.testdev import export_results_zip
from atssrepro.errors import UserError

DETECTIONS = [
    {"image_id": 1, "category_id": 18, "bbox": [1.5, 2.0, 30.25, 40.0], "score": 0.875},
    {"image_id": 9, "category_id": 1, "bbox": [0.0, 0.0, 1.0, 2.0], "score": 0.0625},
]


def test_zip_holds_the_results_json_under_the_server_names(tmp_path: Path) -> None:
    path = export_results_zip(DETECTIONS, tmp_path / "submit", method="atss_X-101")

    assert path == tmp_path / "submit" / "detections_test-dev2017_atss_X-101_results.zip"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["detections_test-dev2017_atss_X-101_results.json"]
        assert json.loads(archive.read("detections_test-dev2017_atss_X-101_results.json")) == DETECTIONS


def test_split_names_the_files_and_an_empty_list_is_written(tmp_path: Path) -> None:
    path = export_results_zip([], tmp_path, split="val2017")
    assert path.name == "detections_val2017_atssrepro_results.zip"
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("detections_val2017_atssrepro_results.json")) == []


@pytest.mark.parametrize("method", ["", "my method", "../up", "a/b", "atss.v2"])
def test_bad_method_name_is_a_user_error(tmp_path: Path, method: str) -> None:
    with pytest.raises(UserError, match="method name"):
        export_results_zip(DETECTIONS, tmp_path, method=method)
    assert list(tmp_path.iterdir()) == []


def test_bad_split_name_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="split name"):
        export_results_zip(DETECTIONS, tmp_path, split="test dev")
