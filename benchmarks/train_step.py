"""One training step of atssrepro's ATSS R-50-FPN against torchvision's FCOS R-50-FPN.

Both detectors get the same backbone set-up (frozen BatchNorm, stem and res2 frozen), the same
batch of random images and boxes, and SGD; their steps alternate in one process so that both
see the same machine state. Prints the time per step of each, their ratio, and the share of the
ATSS step spent in assignment + losses (forward and backward).

    python benchmarks/train_step.py                                  # CPU: batch 2 at 512x512
    python benchmarks/train_step.py --device cuda --batch 8 --height 800 --width 1216 --amp bf16
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import platform
import statistics
import time

import torch
import torchvision
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from atssrepro.config import BackboneConfig, ModelConfig
from atssrepro.model import assign
from atssrepro.model.anchors import anchor_strides, grid_anchors
from atssrepro.model.box_coder import DeltaCoder
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.losses import detection_losses

NUM_CLASSES = 80


def random_batch(batch: int, height: int, width: int, boxes_per_image: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, generator=g)
    xy = torch.rand(batch, boxes_per_image, 2, generator=g) * torch.tensor([width * 0.8, height * 0.8])
    wh = torch.rand(batch, boxes_per_image, 2, generator=g) * torch.tensor([width * 0.5, height * 0.5]) + 8
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([width, height]))], dim=-1)
    labels = torch.randint(0, NUM_CLASSES, (batch, boxes_per_image), generator=g)
    return images.to(device), boxes.to(device), labels.to(device)


def torchvision_fcos(height: int, width: int) -> FCOS:
    resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
    backbone = _resnet_fpn_extractor(resnet, 3, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(256, 256))
    # min/max size equal to the input: torchvision's transform then leaves the images as they are.
    return FCOS(backbone, NUM_CLASSES, min_size=min(height, width), max_size=max(height, width))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(step, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--boxes", type=int, default=8, help="GT boxes per image (COCO averages ~7)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model, after one warm-up")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    images, boxes, labels = random_batch(args.batch, args.height, args.width, args.boxes, device)
    sizes = torch.tensor([[args.height, args.width]] * args.batch, device=device)
    mask = torch.ones(boxes.shape[:2], dtype=torch.bool, device=device)
    # Random weights on both sides: speed does not depend on them, and nothing is downloaded.
    atss = OneStageDetector(ModelConfig(backbone=BackboneConfig(weights="")), NUM_CLASSES).to(device).train()
    fcos = torchvision_fcos(args.height, args.width).to(device).train()
    fcos_images = [image.float() / 255 for image in images]
    fcos_targets = [{"boxes": b, "labels": c} for b, c in zip(boxes, labels)]
    optimizers = {
        name: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        for name, model in (("atss", atss), ("fcos", fcos))
    }
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else contextlib.nullcontext
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def step(name: str) -> None:
        with autocast():
            if name == "atss":
                losses = atss(images, sizes, boxes, labels, mask)
            else:
                losses = fcos(fcos_images, fcos_targets)
        optimizers[name].zero_grad(set_to_none=True)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizers[name])
        scaler.update()

    # Assignment + losses alone, on head outputs of this batch that are leaves of the graph.
    with torch.no_grad(), autocast():
        features = atss.backbone(atss.normalize(images, sizes))
        head_outputs = [t.float() for t in atss.head(features)]
    anchors, num_per_level = grid_anchors([f.shape[-2:] for f in features], 8.0, (1.0,), 1, device)
    strides = anchor_strides(num_per_level, device)

    def assign_and_losses() -> None:
        leaves = [t.detach().requires_grad_() for t in head_outputs]
        matched = assign.atss(anchors, num_per_level, 1, boxes, mask, 9)
        losses = detection_losses(*leaves, anchors, strides, matched, boxes, labels, DeltaCoder(), ModelConfig().loss)
        sum(losses.values()).backward()

    times: dict[str, list[float]] = {"atss": [], "fcos": [], "assign+loss": []}
    for i in range(args.steps + 1):
        for name in ("atss", "fcos"):
            elapsed = timed(functools.partial(step, name), device)
            if i > 0:
                times[name].append(elapsed)
        elapsed = timed(assign_and_losses, device)
        if i > 0:
            times["assign+loss"].append(elapsed)

    atss_s, fcos_s = statistics.median(times["atss"]), statistics.median(times["fcos"])
    share = statistics.median(times["assign+loss"]) / atss_s
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"device {device} ({name}), torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"batch {args.batch} at {args.height}x{args.width}, {args.boxes} boxes/image, amp {args.amp}, "
        f"median of {args.steps} steps"
    )
    print(f"atssrepro ATSS R-50  : {atss_s:8.3f} s/step  {args.batch / atss_s:7.2f} img/s")
    print(f"torchvision FCOS R-50: {fcos_s:8.3f} s/step  {args.batch / fcos_s:7.2f} img/s")
    print(f"throughput ratio ATSS / FCOS: {fcos_s / atss_s:.2f}x")
    print(f"assignment + losses: {100 * share:.1f}% of the ATSS step")


if __name__ == "__main__":
    main()
