#!/usr/bin/env bash
# The device check in one command (docs/benchmarks.md): benchmarks/gpu_check.py with the repository on
# the path and output unbuffered, writing into $OUT (the device tool's output folder); arguments go
# to gpu_check.py (e.g. --budget 1_speed_options=200). Exit code: gpu_check.py's.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the output folder}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
PYTHONPATH=$PWD PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"
