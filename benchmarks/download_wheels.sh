#!/usr/bin/env bash
# Download into .whl/ the wheels that benchmarks/gpu_check.py installs on the GPU machine, which has
# no network and lacks these packages (its image has torch, numpy, cloudpickle, typing_extensions):
# pycocotools, faster-coco-eval, submitit, tomli_w, and tensorboard with the two packages its writer
# imports (protobuf, absl-py), at the versions of constraints.txt, for CPython 3.12 on x86-64
# manylinux. Run it on any machine that reaches PyPI; .whl/ is git-ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
pins=$(grep -E '^(pycocotools|faster-coco-eval|submitit|tomli_w|tensorboard|protobuf|absl-py)==' constraints.txt)
if [ "$(echo "$pins" | wc -l)" -ne 7 ]; then
    echo "download_wheels.sh: constraints.txt must pin pycocotools, faster-coco-eval, submitit, tomli_w," \
        "tensorboard, protobuf and absl-py" >&2
    exit 1
fi
rm -rf .whl
# shellcheck disable=SC2086  # one argument per pin
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $pins
ls .whl
