"""Measured training throughput per device type, which turns a plan's training images into hours.

Each row is a measurement, never an estimate: the device as it names itself, the setting, the date
and where the figure comes from. A device without a row gets images only. Add a row from the
``1_train_step`` figures of ``benchmarks/gpu_check.py`` (docs/benchmarks.md). Imports no torch:
``atssrepro run --dry-run`` uses it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from atssrepro.config import Preset


@dataclass(frozen=True)
class Throughput:
    """One measured training speed of ATSS R-50-FPN at the paper preset's image size (800 short side)."""

    device: str
    """As :func:`local_device` names it: nvidia-smi's GPU name, or ``cpu: <model name>, <n> cores``."""
    img_per_s: float
    """Training images per second on one such device."""
    setting: str
    """Batch per device, padded image size, precision."""
    date: str
    source: str


MEASURED: tuple[Throughput, ...] = (
    Throughput(
        device="cpu: AMD EPYC, 2 cores",
        img_per_s=0.031,
        setting="batch 2 at 800x1216, fp32, 2 threads, the machine shared (load average 6 to 8)",
        date="2026-12-06",
        source="docs/benchmarks.md, benchmarks/train_step.py compare_training_steps",
    ),
)


def local_device() -> str:
    """This machine's first GPU as nvidia-smi names it, else its CPU as ``cpu: <model name>, <n> cores``."""
    if shutil.which("nvidia-smi"):
        try:
            done = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            return done.stdout.splitlines()[0].strip()
    return f"cpu: {_cpu_model()}, {os.cpu_count()} cores"


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def lookup(device: str) -> Throughput | None:
    return next((row for row in MEASURED if row.device == device), None)


def device_hours(images: int, device: str) -> float | None:
    """Hours of one ``device`` to train on ``images`` images, or None where none was measured."""
    row = lookup(device)
    return None if row is None else images / row.img_per_s / 3600


def cost_line(images: int, device: str, preset: Preset) -> str:
    """One line for ``run --dry-run``: the hours the plan takes on ``device``, or why there are none."""
    row = lookup(device)
    if not preset.comparable:
        return "device-hours: given for --preset paper only (the throughputs were measured at its image size)"
    if images == 0:
        return "device-hours: none for training (evaluation only)"
    if row is None:
        known = "; ".join(r.device for r in MEASURED) or "none"
        return (
            f"no measured training throughput for {device!r}: training images only "
            f"(measured devices: {known}; docs/benchmarks.md says how to add one)"
        )
    return (
        f"about {images / row.img_per_s / 3600:,.1f} device-hours on {device} at {row.img_per_s:g} img/s per device "
        f"({row.setting}; measured {row.date}, {row.source}); R-50 speed: R-101, DCN and #A=9 runs take longer"
    )
