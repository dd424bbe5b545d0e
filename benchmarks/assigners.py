"""Time per image of each assigner at COCO-like sizes: an 800x1344 padded batch, up to 100 GTs.

    python benchmarks/assigners.py                      # CPU
    python benchmarks/assigners.py --device cuda --batch 16

Each assigner runs on the whole batch at once; the time printed is per image.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from atssrepro.config import AssignConfig
from atssrepro.model.anchors import feature_sizes, grid_anchors
from atssrepro.model.assign import assign

CONFIGS = {
    "atss": (AssignConfig(strategy="atss"), 1),
    "atss #A=9": (AssignConfig(strategy="atss"), 9),
    "iou": (AssignConfig(strategy="iou"), 1),
    "iou #A=9": (AssignConfig(strategy="iou"), 9),
    "iou + in_gt_box": (AssignConfig(strategy="iou", in_gt_box=True), 1),
    "ssc": (AssignConfig(strategy="ssc"), 1),
    "center_sampling": (AssignConfig(strategy="center_sampling"), 1),
}


def random_gts(batch: int, num_gt: int, height: int, width: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(batch, num_gt, 2, generator=g) * torch.tensor([width * 0.9, height * 0.9])
    # Sides log-uniform from 8 px to most of the image, as on COCO.
    wh = torch.exp(torch.empty(batch, num_gt, 2).uniform_(2.0, 6.5, generator=g))
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], dim=-1)
    return boxes.to(device), torch.ones(batch, num_gt, dtype=torch.bool, device=device)


def time_assigners(
    device: torch.device, batch: int, gts: list[int], repeats: int, height: int = 800, width: int = 1344
) -> dict[str, dict[int, float]]:
    """Median ms per call on a batch of ``batch`` images, per assigner of CONFIGS and number of GTs."""
    result: dict[str, dict[int, float]] = {}
    for name, (config, per_location) in CONFIGS.items():
        ratios = (0.5, 1.0, 2.0) if per_location == 9 else (1.0,)
        anchors, levels = grid_anchors(feature_sizes(height, width), 8.0, ratios, per_location // len(ratios), device)
        result[name] = {}
        for num_gt in gts:
            boxes, mask = random_gts(batch, num_gt, height, width, device)
            assign(config, anchors, levels, per_location, boxes, mask)  # warm-up
            times = []
            for _ in range(repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                assign(config, anchors, levels, per_location, boxes, mask)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            result[name][num_gt] = 1000 * statistics.median(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--gts", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    height, width = 800, 1344

    print(f"device {device}, torch {torch.__version__}, batch {args.batch} at {height}x{width}, ms per image")
    print(f"{'assigner':18s}" + "".join(f"{f'{n} GTs':>10s}" for n in args.gts))
    for name, per_gt in time_assigners(device, args.batch, args.gts, args.repeats, height, width).items():
        print(f"{name:18s}" + "".join(f"{ms / args.batch:10.1f}" for ms in per_gt.values()))


if __name__ == "__main__":
    main()
