"""Time and peak memory of each assigner at COCO sizes: a batch padded to 800x1344, random GTs.

    python benchmarks/assigners.py                                  # CPU, every assigner, 20 and 300 GTs
    python benchmarks/assigners.py --device cuda --batch 16         # a GPU
    python benchmarks/assigners.py --assigners atss tal ota --gts 20 100

The static assigners read the boxes only; the prediction-aware ones (tal, simota, dsl, ota, paa) also
class logits (80 classes) and predicted boxes, random here (boxes around their priors). Each assigner
runs on the whole batch at once. Each (assigner, GT count) is measured in a fresh process so that its
peak memory is its own: on CUDA ``torch.cuda.max_memory_allocated`` during the first call, on the CPU
the growth of the process's peak resident memory during the first call. Times are the median of
``--repeats`` further calls, in ms per image; ``x atss`` is the time over ATSS's at the same GT count.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable

import torch

from atssrepro.config import AssignConfig
from atssrepro.model import assigners
from atssrepro.model.anchors import anchor_strides, feature_sizes, grid_anchors
from atssrepro.model.assign import assign

STATIC = {
    "atss": (AssignConfig(strategy="atss"), 1),
    "atss #A=9": (AssignConfig(strategy="atss"), 9),
    "iou": (AssignConfig(strategy="iou"), 1),
    "iou #A=9": (AssignConfig(strategy="iou"), 9),
    "iou + in_gt_box": (AssignConfig(strategy="iou", in_gt_box=True), 1),
    "ssc": (AssignConfig(strategy="ssc"), 1),
    "center_sampling": (AssignConfig(strategy="center_sampling"), 1),
}
PREDICTION_AWARE: dict[str, Callable[[assigners.AssignInputs], assigners.Assignment]] = {
    "tal": assigners.tal,
    "simota": assigners.simota,
    "dsl": assigners.dsl,
    "ota": assigners.ota,
    "paa": assigners.paa,
}
NUM_CLASSES = 80


def random_gts(batch: int, num_gt: int, height: int, width: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, num_gt, 2, generator=g) * torch.tensor([width * 0.9, height * 0.9])
    # Sides log-uniform from 8 px to most of the image, as on COCO.
    wh = torch.exp(torch.empty(batch, num_gt, 2).uniform_(2.0, 6.5, generator=g))
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], dim=-1)
    labels = torch.randint(0, NUM_CLASSES, (batch, num_gt), generator=g)
    mask = torch.ones(batch, num_gt, dtype=torch.bool)
    return boxes.to(device), labels.to(device), mask.to(device)


def make_call(name: str, batch: int, num_gt: int, height: int, width: int, device: torch.device) -> Callable:
    """The assigner ``name`` bound to a random batch on ``device``."""
    per_location = STATIC[name][1] if name in STATIC else 1
    ratios = (0.5, 1.0, 2.0) if per_location == 9 else (1.0,)
    anchors, levels = grid_anchors(feature_sizes(height, width), 8.0, ratios, per_location // len(ratios), device)
    boxes, labels, mask = random_gts(batch, num_gt, height, width, device)
    if name in STATIC:
        config = STATIC[name][0]
        return lambda: assign(config, anchors, levels, per_location, boxes, mask)
    g = torch.Generator().manual_seed(1)
    n = len(anchors)
    strides = anchor_strides(levels, device)
    logits = (torch.randn(batch, n, NUM_CLASSES, generator=g) * 2 - 4).to(device)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2 + torch.randn(batch, n, 2, generator=g).to(device) * strides[
        :, None
    ]
    sizes = 4 * strides[:, None] * torch.exp(torch.randn(batch, n, 2, generator=g).to(device) * 0.5)
    preds = torch.cat([centres - sizes / 2, centres + sizes / 2], dim=-1)
    inputs = assigners.AssignInputs(anchors, strides, tuple(levels), logits, preds, boxes, labels, mask)
    rule = PREDICTION_AWARE[name]
    return lambda: rule(inputs)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(call: Callable, device: torch.device, repeats: int) -> float:
    """The median wall time of ``repeats`` calls of ``call``, in ms, the device synchronised around each."""
    times = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        call()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def time_assigners(
    device: torch.device,
    batch: int,
    gts: list[int],
    repeats: int,
    height: int = 800,
    width: int = 1344,
    names: tuple[str, ...] = tuple(STATIC),
) -> dict[str, dict[int, float]]:
    """Median ms per call on a batch of ``batch`` images, per assigner and number of GTs, in this
    process after one warm-up call (``benchmarks/gpu_check.py``: the static assigners)."""
    result: dict[str, dict[int, float]] = {}
    with torch.no_grad():
        for name in names:
            result[name] = {}
            for num_gt in gts:
                call = make_call(name, batch, num_gt, height, width, device)
                call()
                result[name][num_gt] = median_ms(call, device, repeats)
    return result


def measure(name: str, device_name: str, batch: int, num_gt: int, repeats: int, height: int, width: int):
    """(median ms per call, peak MB of the first call) of one assigner; run in a fresh process."""
    device = torch.device(device_name)
    with torch.no_grad():
        call = make_call(name, batch, num_gt, height, width, device)
        gc.collect()
        _synchronize(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        call()
        _synchronize(device)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) - before
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        return median_ms(call, device, repeats), peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gts", type=int, nargs="+", default=[20, 300])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--assigners", nargs="+", default=[*STATIC, *PREDICTION_AWARE], choices=[*STATIC, *PREDICTION_AWARE]
    )
    args = parser.parse_args()
    height, width = 800, 1344
    names = ["atss", *(name for name in args.assigners if name != "atss")]  # ATSS first: the reference

    context = multiprocessing.get_context("spawn")  # a fresh process per measurement: its own peak memory
    results: dict[str, dict[int, tuple[float, float]]] = {}
    for name in names:
        results[name] = {}
        for num_gt in args.gts:
            with context.Pool(1, maxtasksperchild=1) as pool:
                task = (name, args.device, args.batch, num_gt, args.repeats, height, width)
                results[name][num_gt] = pool.apply(measure, task)

    threads = torch.get_num_threads()
    print(f"device {args.device}, torch {torch.__version__}, {threads} threads, batch {args.batch} at {height}x{width}")
    print("| assigner | " + " | ".join(f"{n} GTs: ms/image | x atss | peak MB" for n in args.gts) + " |")
    print("|---|" + "---:|---:|---:|" * len(args.gts))
    for name, per_gt in results.items():
        cells = []
        for num_gt, (ms, peak) in per_gt.items():
            ratio = ms / results["atss"][num_gt][0]
            cells.append(f"{ms / args.batch:.1f} | {ratio:.1f} | {peak:.0f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
