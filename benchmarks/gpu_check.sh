#!/usr/bin/env bash
# The device check in one command (docs/benchmarks.md): benchmarks/gpu_check.py with the repository on
# the path, output unbuffered, and its figures in $OUT (the device tool's output folder) or in $1.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:?set OUT or pass the output folder}}
shift || true
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$out/nvidia-smi.txt"
PYTHONPATH=$PWD PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/log.txt"
