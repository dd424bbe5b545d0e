"""benchmarks/gpu_check.py: its CPU mode runs every step, failures are named, wheels are installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cpu_mode_runs_every_step_and_writes_figures(tmp_path):
    done = run_script("--cpu", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    steps = figures["steps"]
    assert set(steps) == set(load_gpu_check().STEPS)
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(steps, "passed")

    train = steps["1_train_step"]["figures"]["batch1_bf16"]
    assert train["atss"]["img_per_s"] > 0 and train["fcos"]["img_per_s"] > 0
    assert train["atss_over_fcos"] == pytest.approx(train["atss"]["img_per_s"] / train["fcos"]["img_per_s"])
    assert 0 < train["assign_loss_share"] < 1
    options = steps["1_speed_options"]["figures"]
    assert options["channels_last"]["speedup_over_plain"] > 0 and options["compile_eager"]["speedup_over_plain"] > 0
    assert set(steps["2_variants"]["figures"]) == {"plain (msra style)", "torchvision_style", "anchors9", "dcnv2"}
    training = steps["4_training"]["figures"]
    assert training["finite"] and training["loss_fell"] and training["val_images"] == 4
    assert steps["4_bf16_vs_fp32"]["figures"]["agree"]
    inference = steps["3_inference"]["figures"]
    assert inference["batch2_bf16"]["img_per_s"] > 0 and inference["tta"]["passes"] == 6
    assert inference["batch2_bf16_postprocessing_at_caps"]["detections"] == 2 * 100  # detections_per_image
    assert inference["tta"]["detections"] > 0  # at the caps, detections are kept
    assert len(steps["5_assigners"]["figures"]["ms_per_batch"]) == 7
    pipeline = steps["data_pipeline"]["figures"]
    assert pipeline["images"] == 8 and pipeline["img_per_s_per_worker"] > 0 and pipeline["short_side"] == 128
    coco = steps["6_coco_eval"]["figures"]
    assert coco["pycocotools"]["AP"] == pytest.approx(coco["faster-coco-eval"]["AP"], abs=1e-3)

    summary = (tmp_path / "summary.md").read_text()
    assert all(f"## {name}\n\npassed" in summary for name in steps)
    assert "not judged: they are GPU targets" in summary


def test_a_step_past_its_budget_is_named_and_the_others_still_run(tmp_path):
    done = run_script(
        "--cpu", "--out", str(tmp_path), "--steps", "5_assigners", "6_coco_eval", "--budget", "5_assigners=0.001"
    )
    assert done.returncode == 1
    assert "step 5_assigners FAILED: StepTimeout: step 5_assigners ran past its budget" in done.stderr
    assert "1 step(s) failed: 5_assigners" in done.stderr
    steps = json.loads((tmp_path / "figures.json").read_text())["steps"]
    assert steps["5_assigners"]["status"] == "FAILED"
    assert steps["6_coco_eval"]["status"] == "passed" and steps["6_coco_eval"]["figures"]["images"] == 40


def test_a_bad_budget_is_one_line(tmp_path):
    done = run_script("--cpu", "--out", str(tmp_path), "--budget", "7_nothing=5")
    assert done.returncode == 2
    assert "--budget '7_nothing=5': expected STEP=SECONDS" in done.stderr


def test_a_missing_package_without_its_wheel_names_the_wheel(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    monkeypatch.setattr(gpu_check, "NEEDED_PACKAGES", {"atssrepro_absent_module": "atssrepro-absent"})
    with pytest.raises(gpu_check.SetupError, match="atssrepro-absent is not installed and .* holds no wheel of it"):
        gpu_check.ensure_packages(tmp_path / "wheels", tmp_path / "site")


def _write_wheel(directory: Path, name: str, version: str) -> Path:
    """A pure-Python wheel holding one module that defines VALUE = 42."""
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_a_missing_package_is_installed_from_its_wheel(tmp_path, monkeypatch):
    gpu_check = load_gpu_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _write_wheel(wheels, "atssrepro_fake_dep", "1.0")
    monkeypatch.setattr(gpu_check, "NEEDED_PACKAGES", {"atssrepro_fake_dep": "atssrepro-fake-dep"})
    monkeypatch.setattr(sys, "path", list(sys.path))
    installed = gpu_check.ensure_packages(wheels, tmp_path / "site")
    assert installed == ["atssrepro_fake_dep-1.0-py3-none-any.whl"]
    assert importlib.import_module("atssrepro_fake_dep").VALUE == 42
    sys.modules.pop("atssrepro_fake_dep")


def _figures(gpu: str, ratio: float, share: float, img_per_s: float) -> dict:
    step = {"atss": {"img_per_s": img_per_s}, "atss_over_fcos": ratio, "assign_loss_share": share}
    return {
        "environment": {"device": "cuda", "gpu": gpu},
        "steps": {"1_train_step": {"figures": {"batch8_bf16": step, "batch8_fp32": step}}},
    }


def test_targets_are_judged_on_the_bf16_figures_and_the_h200_only():
    gpu_check = load_gpu_check()
    verdicts = dict(gpu_check.targets(_figures("NVIDIA H200", 1.62, 0.031, 52.0)))
    assert verdicts == {
        "batch8_bf16: ATSS >= 1.5x FCOS throughput (AMP)": "met: 1.62x",
        "batch8_bf16: assignment + losses < 5% of the step": "met: 3.1%",
        "ATSS R-50 >= 40 img/s training, AMP, one H200": "met: 52.0 img/s",
    }
    verdicts = dict(gpu_check.targets(_figures("NVIDIA H100 80GB HBM3", 1.2, 0.08, 52.0)))
    assert verdicts["batch8_bf16: ATSS >= 1.5x FCOS throughput (AMP)"] == "NOT met: 1.20x"
    assert verdicts["batch8_bf16: assignment + losses < 5% of the step"] == "NOT met: 8.0%"
    assert verdicts["ATSS R-50 >= 40 img/s training, AMP, one H200"] == (
        "not judged: measured on NVIDIA H100 80GB HBM3: 52.0 img/s"
    )


@pytest.mark.slow
def test_the_shell_entry_point_writes_into_out_and_passes_the_exit_code_on(tmp_path):
    out = tmp_path / "out"
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # its python3 has torch
    env = {**os.environ, "OUT": str(out), "PATH": path, "OMP_NUM_THREADS": "1"}
    command = ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--steps", "5_assigners"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    assert {p.name for p in out.iterdir()} == {"nvidia-smi.txt", "log.txt", "figures.json", "summary.md"}
    assert "gpu_check: every step passed" in (out / "log.txt").read_text()
    failing = subprocess.run([*command, "--budget", "5_assigners=0.001"], capture_output=True, text=True, env=env)
    assert failing.returncode == 1
