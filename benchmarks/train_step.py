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
import math
import platform
import statistics
import time
import warnings

import torch
import torchvision
from torchvision.models.detection import FCOS
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops.feature_pyramid_network import LastLevelP6P7
from torchvision.ops.misc import FrozenBatchNorm2d

from atssrepro.config import BackboneConfig, ModelConfig
from atssrepro.model import assign
from atssrepro.model.anchors import anchor_strides, grid_anchors
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.losses import combine_losses, loss_terms

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


def amp_context(device: torch.device, amp: str):
    """A factory of autocast contexts for ``amp`` ("off", "bf16", "fp16") on ``device``."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    if dtype is None:
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device.type, dtype=dtype)


def peak_memory_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def compare_training_steps(
    device: torch.device,
    *,
    batch: int,
    height: int,
    width: int,
    boxes: int = 8,
    steps: int = 6,
    amp: str = "off",
    model_config: ModelConfig | None = None,
    with_fcos: bool = True,
    channels_last: bool = False,
    compile_backend: str | None = None,
    budget_s: float = math.inf,
) -> dict:
    """Time ``steps`` training steps (after one warm-up) of ATSS and, if ``with_fcos``, torchvision's
    FCOS on one random batch, alternating; also assignment + losses alone on that batch.

    ``model_config`` is the ATSS model (default: R-50 from scratch); ``channels_last`` moves both
    models and the batch to NHWC; ``compile_backend`` wraps the ATSS backbone and head in
    ``torch.compile``. Timing stops early, after at least one timed step, once ``budget_s`` is spent.

    Returns per model ``{"ms_per_step", "img_per_s", "peak_memory_gib", "steps"}`` (peak memory of a
    step on CUDA, the other model's weights included; None on the CPU), ``"assign_loss_ms"``, its
    ``"assign_loss_share"`` of the ATSS step, ``"atss_over_fcos"`` (throughput ratio) with FCOS, and
    ``"atss_host_syncs_per_step"`` (CUDA only: how often one ATSS step waits for the GPU).
    """
    started = time.perf_counter()
    torch.manual_seed(0)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    images, boxes_, labels = random_batch(batch, height, width, boxes, device)
    images = images.contiguous(memory_format=memory_format)
    sizes = torch.tensor([[height, width]] * batch, device=device)
    mask = torch.ones(boxes_.shape[:2], dtype=torch.bool, device=device)
    if model_config is None:
        model_config = ModelConfig(backbone=BackboneConfig(weights=""))
    # Random weights on both sides: speed does not depend on them, and nothing is downloaded.
    models: dict[str, torch.nn.Module] = {
        "atss": OneStageDetector(model_config, NUM_CLASSES).to(device, memory_format=memory_format).train()
    }
    if with_fcos:
        models["fcos"] = torchvision_fcos(height, width).to(device, memory_format=memory_format).train()
    atss = models["atss"]
    fcos_images = [image.float() / 255 for image in images]
    fcos_targets = [{"boxes": b, "labels": c} for b, c in zip(boxes_, labels)]
    optimizers = {
        name: torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
        for name, model in models.items()
    }
    autocast = amp_context(device, amp)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    # Compiled after the assignment inputs below are taken from the plain modules.
    with torch.no_grad(), autocast():
        features = atss.backbone(atss.normalize(images, sizes))
        head_outputs = [None if t is None else t.float() for t in atss.head(features)]
    a = model_config.anchors
    anchors, num_per_level = grid_anchors(
        [f.shape[-2:] for f in features], a.scale, a.aspect_ratios, a.scales_per_octave, device
    )
    strides = anchor_strides(num_per_level, device)
    del features
    if compile_backend is not None:
        atss.backbone = torch.compile(atss.backbone, backend=compile_backend)
        atss.head = torch.compile(atss.head, backend=compile_backend)

    def step(name: str) -> None:
        with autocast():
            if name == "atss":
                losses = atss(images, sizes, boxes_, labels, mask)
            else:
                losses = models["fcos"](fcos_images, fcos_targets)
        optimizers[name].zero_grad(set_to_none=True)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizers[name])
        scaler.update()

    def assign_and_losses() -> None:
        leaves = [None if t is None else t.detach().requires_grad_() for t in head_outputs]
        matched = assign.assign(model_config.assign, anchors, num_per_level, atss.anchors_per_location, boxes_, mask)
        terms = loss_terms(*leaves, anchors, strides, matched, boxes_, labels, atss.coder, model_config.loss)
        losses = combine_losses([terms], model_config.loss)
        sum(losses.values()).backward()

    times: dict[str, list[float]] = {name: [] for name in (*models, "assign+loss")}
    peaks: dict[str, float | None] = dict.fromkeys(models)
    for i in range(steps + 1):
        for name in models:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            elapsed = timed(functools.partial(step, name), device)
            if i > 0:
                times[name].append(elapsed)
                peak = peak_memory_gib(device)
                peaks[name] = peak if peaks[name] is None else max(peaks[name], peak)
        elapsed = timed(assign_and_losses, device)
        if i > 0:
            times["assign+loss"].append(elapsed)
            if time.perf_counter() - started > budget_s:
                break

    result: dict = {"atss_host_syncs_per_step": count_host_syncs(functools.partial(step, "atss"), device)}
    for name in models:
        seconds = statistics.median(times[name])
        result[name] = {
            "ms_per_step": 1000 * seconds,
            "img_per_s": batch / seconds,
            "peak_memory_gib": peaks[name],
            "steps": len(times[name]),
        }
    result["assign_loss_ms"] = 1000 * statistics.median(times["assign+loss"])
    result["assign_loss_share"] = result["assign_loss_ms"] / result["atss"]["ms_per_step"]
    if with_fcos:
        result["atss_over_fcos"] = result["atss"]["img_per_s"] / result["fcos"]["img_per_s"]
    return result


def count_host_syncs(function, device: torch.device) -> int | None:
    """How many times ``function`` makes the host wait for the GPU (CUDA's sync debug mode); None on the CPU."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            function()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--boxes", type=int, default=8, help="GT boxes per image (COCO averages ~7)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model, after one warm-up")
    parser.add_argument("--amp", choices=["off", "bf16", "fp16"], default="off")
    parser.add_argument("--channels-last", action="store_true", help="NHWC models and batch")
    parser.add_argument("--compile", default=None, metavar="BACKEND", help="torch.compile the ATSS backbone and head")
    args = parser.parse_args()
    device = torch.device(args.device)
    result = compare_training_steps(
        device,
        batch=args.batch,
        height=args.height,
        width=args.width,
        boxes=args.boxes,
        steps=args.steps,
        amp=args.amp,
        channels_last=args.channels_last,
        compile_backend=args.compile,
    )
    atss_ms, fcos_ms = result["atss"]["ms_per_step"], result["fcos"]["ms_per_step"]
    print(
        f"device {device} ({device_name(device)}), torch {torch.__version__}, torchvision {torchvision.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"batch {args.batch} at {args.height}x{args.width}, {args.boxes} boxes/image, amp {args.amp}, "
        f"channels_last {args.channels_last}, compile {args.compile}, median of {result['atss']['steps']} steps"
    )
    print(f"atssrepro ATSS R-50  : {atss_ms / 1000:8.3f} s/step  {result['atss']['img_per_s']:7.2f} img/s")
    print(f"torchvision FCOS R-50: {fcos_ms / 1000:8.3f} s/step  {result['fcos']['img_per_s']:7.2f} img/s")
    print(f"throughput ratio ATSS / FCOS: {result['atss_over_fcos']:.2f}x")
    print(f"assignment + losses: {100 * result['assign_loss_share']:.1f}% of the ATSS step")
    if result["atss_host_syncs_per_step"] is not None:
        print(f"host syncs in one ATSS step: {result['atss_host_syncs_per_step']}")


if __name__ == "__main__":
    main()
