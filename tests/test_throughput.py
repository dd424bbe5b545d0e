"""``run --dry-run`` turns training images into device-hours where a throughput was measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from atssrepro import config as cfg
from atssrepro.harness import throughput

from cli import atssrepro

MEASURED = throughput.MEASURED[0]
TABLE4_IMAGES = 9 * 90_000 * 16  # nine runs of the paper recipe


def test_every_row_is_dated_and_sourced():
    for row in throughput.MEASURED:
        assert row.img_per_s > 0 and row.setting and row.source
        assert len(row.date) == 10 and row.date[4] == row.date[7] == "-"
    assert len({row.device for row in throughput.MEASURED}) == len(throughput.MEASURED)


def test_dry_run_gives_hours_for_a_measured_device():
    result = atssrepro("run", "table4", "--dry-run", "--gpu-type", MEASURED.device)
    hours = TABLE4_IMAGES / MEASURED.img_per_s / 3600
    assert f"total: {TABLE4_IMAGES:,} training images" in result.stdout
    assert f"about {hours:,.1f} device-hours on {MEASURED.device} at {MEASURED.img_per_s:g} img/s" in result.stdout
    assert f"measured {MEASURED.date}" in result.stdout

    result = atssrepro("run", "table4", "--dry-run", "--json", "--gpu-type", MEASURED.device)
    runs = [line for line in map(json.loads, result.stdout.splitlines()) if "run_id" in line]  # then claims
    assert sum(run["device_hours"] for run in runs) == pytest.approx(hours)
    assert {run["device"] for run in runs} == {MEASURED.device}


def test_an_unknown_gpu_gets_images_only_and_is_told_so():
    result = atssrepro("run", "table4", "--dry-run", "--gpu-type", "NVIDIA H200")
    assert f"total: {TABLE4_IMAGES:,} training images" in result.stdout
    assert "no measured training throughput for 'NVIDIA H200': training images only" in result.stdout
    assert "device-hours on" not in result.stdout
    assert throughput.device_hours(TABLE4_IMAGES, "NVIDIA H200") is None  # --json prints it as null


def test_gpu_type_without_dry_run_is_one_line(tmp_path):
    result = atssrepro("run", "table4", "--gpu-type", "NVIDIA H200", "--results", str(tmp_path), check=False)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith("--gpu-type is an option of --dry-run: it names the device to give hours for")
    )
    assert not any(tmp_path.iterdir())


def test_other_presets_get_no_hours():
    result = atssrepro("run", "table4", "--dry-run", "--preset", "smoke", "--gpu-type", MEASURED.device)
    assert "device-hours: given for --preset paper only" in result.stdout


def test_evaluation_only_plans_get_no_hours():
    assert throughput.cost_line(0, MEASURED.device, cfg.PAPER) == "device-hours: none for training (evaluation only)"
    assert "device-hours on" in throughput.cost_line(TABLE4_IMAGES, MEASURED.device, cfg.PAPER)


def test_the_local_gpu_is_found_with_nvidia_smi_and_without_torch(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H200'\necho 'NVIDIA H200'\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    code = "import sys; from atssrepro.harness import throughput as t; print(t.local_device(), 'torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "NVIDIA H200 False"
    result = atssrepro("run", "table4", "--dry-run", env=env)
    assert "no measured training throughput for 'NVIDIA H200'" in result.stdout


def test_without_nvidia_smi_the_device_is_the_cpu(monkeypatch):
    monkeypatch.setattr(throughput.shutil, "which", lambda name: None)
    assert throughput.local_device() == f"cpu: {throughput._cpu_model()}, {os.cpu_count()} cores"
