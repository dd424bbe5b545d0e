"""Every GPU figure of issue 10 in one command: JSON figures and a markdown summary in one folder.

    python benchmarks/gpu_check.py --out "$OUT"           # one H100/H200: under 8 minutes
    python benchmarks/gpu_check.py --cpu --out /tmp/gc    # tiny sizes on the CPU (tests/test_gpu_check.py)

Steps, in the order they run (numbers are the issue's measurement groups):
  1_train_step      ATSS R-50-FPN vs torchvision FCOS R-50-FPN, batch 8 and 16 at 800x1216, fp32 (TF32) and
                    bf16 AMP, alternating steps: img/s, ms/step, peak memory, assignment + losses share, ratio
  1_speed_options   ATSS bf16 batch 8: plain, channels_last, torch.compile(backbone, head)
  2_variants        ATSS bf16 batch 8: the backbone style (MSRA, the default, vs torchvision), #A=9 (Table 7)
                    and DCNv2 (Table 8) against the plain model
  4_training        a short AMP training on the synthetic dataset at paper image size, then evaluation
  4_bf16_vs_fp32    the first iterations' losses of bf16 AMP and fp32 runs from the same start
  3_inference       images/s at 800x1333, batch 1 and 8, with post-processing; multi-scale + flip ms/image
  5_assigners       every assigner on 16 images x 100 GTs (ms per batch)
  6_coco_eval       COCO evaluation of a val2017-sized synthetic result set, pycocotools and faster-coco-eval
  data_pipeline     images/s of one DataLoader worker at the paper's training size (decode, resize, flip)
The last two need no GPU: they run from the start in a process of their own, beside the others.

First, packages the GPU machine lacks (pycocotools, faster-coco-eval, submitit, tomli_w, tensorboard,
protobuf, absl-py) are installed from the wheels in .whl/ (benchmarks/download_wheels.sh); a missing
one stops the script, naming it.
Each step has a time budget; a step that fails or runs out of time is named on stderr and in the
summary, and the others still run. figures.json and summary.md are rewritten after every step.
Exit code: 0 when every step passed, 1 when any failed, 2 when the set-up failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gc
import importlib
import importlib.util
import io
import json
import math
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

# Module -> distribution, pinned in constraints.txt; the GPU machine's image lacks these.
NEEDED_PACKAGES = {
    "pycocotools": "pycocotools",
    "faster_coco_eval": "faster-coco-eval",
    "submitit": "submitit",
    "tomli_w": "tomli_w",
    # The TensorBoard writer of a training run (torch.utils.tensorboard) and what it imports.
    "tensorboard": "tensorboard",
    "google.protobuf": "protobuf",
    "absl": "absl-py",
}


class SetupError(Exception):
    """A package is missing and no wheel for it was carried."""


class StepTimeout(Exception):
    """A step ran past its time budget."""


def wheel_for(distribution: str, wheel_dir: Path) -> Path | None:
    """The wheel of ``distribution`` in ``wheel_dir`` (file names normalise '-' to '_')."""
    prefix = distribution.replace("-", "_").lower() + "-"
    found = sorted(p for p in wheel_dir.glob("*.whl") if p.name.lower().startswith(prefix))
    return found[-1] if found else None


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported (a dotted name whose parent package is missing cannot)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def ensure_packages(wheel_dir: Path, site_dir: Path) -> list[str]:
    """Install from ``wheel_dir`` into ``site_dir`` each needed package that is not importable.

    Returns the wheel file names installed. Raises SetupError naming the first missing wheel.
    """
    missing = [module for module in NEEDED_PACKAGES if not _importable(module)]
    if not missing:
        return []
    wheels = []
    for module in missing:
        wheel = wheel_for(NEEDED_PACKAGES[module], wheel_dir) if wheel_dir.is_dir() else None
        if wheel is None:
            raise SetupError(
                f"Python package {NEEDED_PACKAGES[module]} is not installed and {wheel_dir} holds no wheel of it: "
                "run benchmarks/download_wheels.sh on a machine with PyPI and carry .whl (docs/benchmarks.md)"
            )
        wheels.append(wheel)
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
    command += ["--no-cache-dir", "--upgrade", "--target", str(site_dir), *map(str, wheels)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"pip could not install {', '.join(w.name for w in wheels)}: {done.stderr.strip()[-500:]}")
    sys.path.insert(0, str(site_dir))
    importlib.invalidate_caches()
    for module in missing:
        importlib.import_module(module)
    return [w.name for w in wheels]


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What each step measures: the paper's sizes on a GPU, tiny ones with --cpu."""

    train_batches: tuple[int, ...]
    train_hw: tuple[int, int]
    steps: int
    option_batch: int
    compile_backend: str
    infer_hw: tuple[int, int]
    infer_batches: tuple[int, ...]
    infer_repeats: int
    tta_images: int
    tta_test_size: tuple[int, int]  # data.test_short_side and data.max_size of the normal pass
    tta_scales: tuple[int, ...]
    synth_train: int
    synth_val: int
    synth_sides: tuple[int, int]
    train_overrides: dict
    agree_batch: int
    agree_iters: int
    assign_batch: int
    assign_gts: int
    eval_images: int
    budgets: dict[str, float]


GPU = Sizes(
    train_batches=(8, 16),
    train_hw=(800, 1216),
    steps=5,
    option_batch=8,
    compile_backend="inductor",
    infer_hw=(800, 1333),
    infer_batches=(1, 8),
    infer_repeats=5,
    tta_images=4,
    tta_test_size=(800, 1333),
    tta_scales=(400, 500, 600, 640, 700, 900, 1000, 1100, 1200, 1300, 1400, 1800),
    synth_train=160,
    synth_val=50,
    # COCO-like originals (long side 640), resized to the paper's short side 800 by the dataset.
    synth_sides=(427, 640),
    # The model of the demo preset (ResNet-18 from scratch): without ImageNet weights, which cannot
    # reach the device, R-50 with frozen BatchNorm is unstable at the recipe's learning rate.
    train_overrides={
        "data": {"num_workers": 8},
        "train": {
            "batch_size": 8,
            "iterations": 200,
            "amp": "bf16",
            "base_lr": 0.04,
            "warmup_iters": 50,
            "lr_steps": [160],
            "log_every": 20,
            "checkpoint_every": 200,
        },
        "eval": {"batch_size": 8, "backend": "faster-coco-eval"},
    },
    agree_batch=4,
    agree_iters=5,
    assign_batch=16,
    assign_gts=100,
    eval_images=5000,
    budgets={
        "1_train_step": 90,
        # torch.compile (inductor) of R-50-FPN + head, forward and backward, takes a minute or two.
        "1_speed_options": 130,
        "2_variants": 40,
        "4_training": 100,
        "4_bf16_vs_fp32": 25,
        "3_inference": 40,
        "5_assigners": 20,
        # Beside the GPU steps, one after the other in a process of their own.
        "6_coco_eval": 240,
        "data_pipeline": 60,
    },
)

CPU = Sizes(
    train_batches=(1,),
    train_hw=(128, 128),
    steps=1,
    option_batch=1,
    # Inductor on the CPU compiles C++ for minutes; dynamo's tracing alone exercises the same path.
    compile_backend="eager",
    infer_hw=(128, 160),
    infer_batches=(1, 2),
    infer_repeats=1,
    tta_images=2,
    tta_test_size=(128, 192),
    tta_scales=(96, 160),
    synth_train=8,
    synth_val=4,
    synth_sides=(96, 128),
    train_overrides={
        "data": {"train_short_side": [128, 128], "test_short_side": 128, "max_size": 192, "num_workers": 1},
        "train": {
            "batch_size": 2,
            "iterations": 20,
            "amp": "bf16",
            "base_lr": 0.04,
            "warmup_iters": 5,
            "lr_steps": [15],
            "log_every": 5,
            "checkpoint_every": 20,
        },
        "eval": {"batch_size": 2, "backend": "faster-coco-eval"},
    },
    agree_batch=1,
    agree_iters=2,
    assign_batch=2,
    assign_gts=10,
    eval_images=40,
    budgets={
        "1_train_step": 60,
        "1_speed_options": 60,
        "2_variants": 60,
        "4_training": 60,
        "4_bf16_vs_fp32": 30,
        "3_inference": 60,
        "5_assigners": 30,
        "6_coco_eval": 30,
        "data_pipeline": 30,
    },
)

# bf16 AMP and fp32 losses of the same iteration may differ by this fraction of the fp32 loss.
BF16_TOLERANCE = 0.05


class Context:
    """What the steps share: device, sizes, a scratch folder and the synthetic dataset."""

    def __init__(self, device, sizes: Sizes, workdir: Path) -> None:
        self.device = device
        self.sizes = sizes
        self.workdir = workdir
        self.synth_root: Path | None = None

    def synthetic_dataset(self) -> Path:
        """The synthetic COCO dataset of steps 3 and 4, made on first use."""
        if self.synth_root is None:
            from atssrepro.data.synth import make_synthetic_coco

            root = self.workdir / "synth"
            lo, hi = self.sizes.synth_sides
            make_synthetic_coco(
                root, train_images=self.sizes.synth_train, val_images=self.sizes.synth_val, min_side=lo, max_side=hi
            )
            self.synth_root = root
        return self.synth_root


def free_memory(device) -> None:
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def guarded(record: dict, key: str, device, measure: Callable[..., dict], /, **kwargs) -> None:
    """``record[key] = measure(**kwargs)``; an out-of-memory error is recorded there instead of raised."""
    import torch

    try:
        record[key] = measure(**kwargs)
    except torch.cuda.OutOfMemoryError:
        record[key] = {"error": "out of memory"}
    finally:
        free_memory(device)


def step_train(ctx: Context, record: dict, budget: float) -> None:
    from train_step import compare_training_steps

    s = ctx.sizes
    height, width = s.train_hw
    configs = [(batch, amp) for batch in s.train_batches for amp in ("off", "bf16")]
    started = time.perf_counter()
    for index, (batch, amp) in enumerate(configs):
        share = (budget - (time.perf_counter() - started)) / (len(configs) - index)
        key = f"batch{batch}_{'bf16' if amp == 'bf16' else 'fp32'}"
        guarded(
            record, key, ctx.device, compare_training_steps, device=ctx.device, batch=batch, height=height,
            width=width, steps=s.steps, amp=amp, budget_s=0.6 * share,
        )  # fmt: skip


def step_speed_options(ctx: Context, record: dict, budget: float) -> None:
    from train_step import compare_training_steps

    s = ctx.sizes
    height, width = s.train_hw
    options = {
        "plain": {},
        "channels_last": {"channels_last": True},
        f"compile_{s.compile_backend}": {"compile_backend": s.compile_backend},
    }
    for name, option in options.items():
        guarded(
            record, name, ctx.device, compare_training_steps, device=ctx.device, batch=s.option_batch,
            height=height, width=width, steps=s.steps, amp="bf16", with_fcos=False, budget_s=0.15 * budget, **option,
        )  # fmt: skip
    plain = record["plain"].get("atss", {}).get("img_per_s")
    for name in options:
        speed = record[name].get("atss", {}).get("img_per_s")
        if plain and speed:
            record[name]["speedup_over_plain"] = speed / plain


def step_variants(ctx: Context, record: dict, budget: float) -> None:
    from train_step import compare_training_steps

    from atssrepro.config import AnchorConfig, BackboneConfig, HeadConfig, ModelConfig

    s = ctx.sizes
    height, width = s.train_hw
    backbone = BackboneConfig(weights="")
    variants = {
        f"plain ({backbone.style} style)": ModelConfig(backbone=backbone),
        "torchvision_style": ModelConfig(backbone=dataclasses.replace(backbone, style="torchvision")),
        "anchors9": ModelConfig(
            backbone=backbone, anchors=AnchorConfig(aspect_ratios=(0.5, 1.0, 2.0), scales_per_octave=3)
        ),
        "dcnv2": ModelConfig(backbone=dataclasses.replace(backbone, dcn=True), head=HeadConfig(dcn=True)),
    }
    for name, model_config in variants.items():
        guarded(
            record, name, ctx.device, compare_training_steps, device=ctx.device, batch=s.option_batch,
            height=height, width=width, steps=s.steps, amp="bf16", model_config=model_config, with_fcos=False,
            budget_s=0.2 * budget,
        )  # fmt: skip
    plain = record[next(iter(variants))].get("atss", {}).get("img_per_s")
    for name in variants:
        speed = record[name].get("atss", {}).get("img_per_s")
        if plain and speed:
            record[name]["speed_relative_to_plain"] = speed / plain


def step_training(ctx: Context, record: dict, budget: float) -> None:
    from rich.console import Console

    from atssrepro import config as cfg
    from atssrepro.engine.run import execute
    from atssrepro.engine.run_dir import RunDir

    s = ctx.sizes
    root = ctx.synthetic_dataset()
    overrides = {
        "model": cfg.DEMO.overrides["model"],
        **s.train_overrides,
        "data": {**s.train_overrides["data"], "root": str(root)},
    }
    config = cfg.apply(cfg.Config(), overrides, "gpu_check")
    cfg.check_consistency(config)
    run = RunDir(ctx.workdir / "run")
    started = time.perf_counter()
    metrics = execute(config, run, "paper", Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    log = [json.loads(line) for line in run.log_path.read_text().splitlines()]
    losses = [entry["loss"] for entry in log]
    t = config.train
    record.update(
        model=f"the demo preset's: {config.model.backbone.name} from scratch, FPN {config.model.fpn_channels} "
        f"channels, head {config.model.head.convs} x {config.model.head.channels}",
        iterations=t.iterations,
        batch=t.batch_size,
        amp=t.amp if ctx.device.type == "cuda" else "off (autocast is CUDA-only in training)",
        short_side=config.data.train_short_side,
        max_size=config.data.max_size,
        train_images=s.synth_train,
        loss_by_window=losses,
        img_per_s_last_window=log[-1]["img_per_s"],
        wall_s_train_and_eval=seconds,
        AP=metrics["stats"]["AP"],
        AP50=metrics["stats"]["AP50"],
        val_images=metrics["num_images"],
    )
    record["finite"] = all(math.isfinite(v) for v in losses)
    record["loss_fell"] = losses[-1] < losses[0]
    if not (record["finite"] and record["loss_fell"]):
        raise AssertionError(f"the loss did not fall without NaN: {losses}")


def step_bf16_agreement(ctx: Context, record: dict, budget: float) -> None:
    import torch
    from train_step import NUM_CLASSES, amp_context, random_batch

    from atssrepro.config import BackboneConfig, ModelConfig, TrainConfig
    from atssrepro.model.detector import OneStageDetector

    s = ctx.sizes
    height, width = s.train_hw
    images, boxes, labels = random_batch(s.agree_batch, height, width, 8, ctx.device)
    sizes = torch.tensor([[height, width]] * s.agree_batch, device=ctx.device)
    mask = torch.ones(boxes.shape[:2], dtype=torch.bool, device=ctx.device)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # a true fp32 reference
    try:
        runs = {}
        for amp in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = OneStageDetector(ModelConfig(backbone=BackboneConfig(weights="")), NUM_CLASSES).to(ctx.device)
            # The recipe's first iterations: base lr scaled to the batch, times the warmup factor.
            t = TrainConfig()
            lr = t.base_lr * s.agree_batch / 16 * t.warmup_factor
            optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=t.momentum)
            autocast = amp_context(ctx.device, "bf16" if amp == "bf16" else "off")
            losses = []
            for _ in range(s.agree_iters):
                with autocast():
                    loss_dict = model(images, sizes, boxes, labels, mask)
                loss = sum(loss_dict.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append({k: v.item() for k, v in loss_dict.items()} | {"total": loss.item()})
            runs[amp] = losses
            del model, optimizer
            free_memory(ctx.device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    differences = [abs(b["total"] - f["total"]) / abs(f["total"]) for f, b in zip(runs["fp32"], runs["bf16"])]
    record.update(
        batch=s.agree_batch,
        size=[height, width],
        losses=runs,
        relative_difference=differences,
        lr=lr,
        tolerance=BF16_TOLERANCE,
        agree=max(differences) <= BF16_TOLERANCE,
    )
    if not record["agree"]:
        raise AssertionError(f"bf16 and fp32 losses differ by {max(differences):.3f} > {BF16_TOLERANCE} of fp32")


def time_inference(model, images, sizes, amp: str, repeats: int) -> dict:
    """ms per image and images/s of ``model`` detecting on ``images`` (median of ``repeats`` after a
    warm-up), and how many detections per image its post-processing kept."""
    import torch
    from train_step import amp_context, timed

    autocast = amp_context(images.device, amp)

    def infer() -> list:
        with torch.inference_mode(), autocast():
            return model(images, sizes)

    kept = sum(len(detections.scores) for detections in infer())
    seconds = statistics.median(timed(infer, images.device) for _ in range(repeats))
    return {"ms_per_image": 1000 * seconds / len(images), "img_per_s": len(images) / seconds, "detections": kept}


def step_inference(ctx: Context, record: dict, budget: float) -> None:
    import torch
    from rich.console import Console
    from train_step import NUM_CLASSES, random_batch

    from atssrepro import config as cfg
    from atssrepro.config import BackboneConfig, ModelConfig
    from atssrepro.data.coco import CocoDetection
    from atssrepro.engine.tta import TTAConfig, predict_tta
    from atssrepro.model.detector import OneStageDetector

    s = ctx.sizes
    model_config = ModelConfig(backbone=BackboneConfig(weights=""))
    record["model"] = "ATSS R-50-FPN, random weights: few detections pass the score threshold, then all of them"
    model = OneStageDetector(model_config, NUM_CLASSES).to(ctx.device).eval()
    height, width = s.infer_hw
    padded = (math.ceil(height / 32) * 32, math.ceil(width / 32) * 32)
    record["size"] = [height, width]
    for batch in s.infer_batches:
        images = random_batch(batch, padded[0], padded[1], 1, ctx.device)[0]
        sizes = torch.tensor([[height, width]] * batch, device=ctx.device)
        for amp in ("fp32", "bf16"):
            guarded(
                record, f"batch{batch}_{amp}", ctx.device, time_inference, model=model, images=images, sizes=sizes,
                amp="off" if amp == "fp32" else amp, repeats=s.infer_repeats,
            )  # fmt: skip
    # Every score above the threshold: the post-processing works at its caps (pre-NMS top-k per
    # level, NMS, 100 per image), an upper bound of what a trained model costs.
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(0.0)
    for batch in s.infer_batches:
        images = random_batch(batch, padded[0], padded[1], 1, ctx.device)[0]
        sizes = torch.tensor([[height, width]] * batch, device=ctx.device)
        guarded(
            record, f"batch{batch}_bf16_postprocessing_at_caps", ctx.device, time_inference, model=model,
            images=images, sizes=sizes, amp="bf16", repeats=s.infer_repeats,
        )  # fmt: skip
    del model
    free_memory(ctx.device)

    # TTA on real images: the paper's test sizes and passes, a random R-50 for this dataset's classes.
    short_side, max_size = s.tta_test_size
    data = dataclasses.replace(
        cfg.Config().data,
        root=str(ctx.synthetic_dataset()),
        num_workers=0,
        test_short_side=short_side,
        max_size=max_size,
    )
    config = dataclasses.replace(cfg.Config(), data=data, eval=dataclasses.replace(cfg.Config().eval, batch_size=1))
    dataset = CocoDetection(
        cfg.data_path(data, data.val_ann), cfg.data_path(data, data.val_images), train=False, max_size=data.max_size
    )
    dataset.image_ids = dataset.image_ids[: s.tta_images]
    model = OneStageDetector(model_config, dataset.num_classes).to(ctx.device).eval()
    with torch.no_grad():
        model.head.cls_logits.bias.fill_(0.0)  # at the caps, as above: merging has work to do
    default = TTAConfig()
    tta = TTAConfig(scales=s.tta_scales, scale_ranges=default.scale_ranges[: len(s.tta_scales)])
    started = time.perf_counter()
    detections = predict_tta(model, dataset, config, tta, ctx.device, Console(file=io.StringIO()))
    seconds = time.perf_counter() - started
    record["tta"] = {
        "images": len(dataset),
        "passes": 2 * (1 + len(tta.scales)),
        "ms_per_image": 1000 * seconds / len(dataset),
        "postprocessing": "at its caps",
        "detections": len(detections),
        "amp": config.train.amp,
    }


def step_assigners(ctx: Context, record: dict, budget: float) -> None:
    from assigners import time_assigners

    s = ctx.sizes
    timings = time_assigners(ctx.device, s.assign_batch, [s.assign_gts], repeats=5)
    record.update(
        batch=s.assign_batch,
        gts=s.assign_gts,
        size=[800, 1344],
        ms_per_batch={name: per_gt[s.assign_gts] for name, per_gt in timings.items()},
    )


def step_data_pipeline(ctx: Context, record: dict, budget: float) -> None:
    import torch

    from atssrepro import config as cfg
    from atssrepro.data.batch import batch_loader
    from atssrepro.data.coco import CocoDetection, SampleSpec

    root = ctx.synthetic_dataset()
    data = dataclasses.replace(cfg.Config().data, root=str(root))
    dataset = CocoDetection(
        cfg.data_path(data, data.train_ann), cfg.data_path(data, data.train_images), train=True, max_size=data.max_size
    )
    short_side = ctx.sizes.train_overrides["data"].get("train_short_side", data.train_short_side)[0]
    batch = 2
    batches = [[SampleSpec(i, short_side, i % 2 == 1, data.max_size) for i in range(start, start + batch)]
               for start in range(0, len(dataset) - batch + 1, batch)]  # fmt: skip
    # No worker process: this is what one DataLoader worker delivers (decode, resize, flip, collate).
    started, images = time.perf_counter(), 0
    with batch_loader(dataset, batches, 0, data.size_divisible, torch.device("cpu")) as loader:
        for loaded in loader:
            images += len(loaded.image_ids)
            if time.perf_counter() - started > 0.5 * budget:
                break
    seconds = time.perf_counter() - started
    record.update(
        short_side=short_side,
        max_size=data.max_size,
        original_sides=list(ctx.sizes.synth_sides),
        images=images,
        img_per_s_per_worker=images / seconds,
        padded_size=list(loaded.images.shape[-2:]),
    )


def synthetic_results(num_images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """A COCO annotation dict shaped like val2017 (about 7.3 boxes per image, 80 classes) and 100
    detections per image: jittered copies of the boxes and random ones, random scores."""
    import numpy as np

    rng = np.random.default_rng(seed)
    categories = [{"id": i + 1, "name": f"class{i + 1}"} for i in range(80)]
    images, annotations, detections = [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 640, "height": 480, "file_name": f"{image_id:012d}.jpg"})
        count = int(rng.integers(1, 15))
        xy = rng.uniform(0, [560, 400], size=(count, 2))
        wh = np.exp(rng.uniform(2.0, 5.5, size=(count, 2))).clip(max=[640, 480] - xy)
        classes = rng.integers(1, 81, size=count)
        for (x, y), (w, h), c in zip(xy, wh, classes):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(c),
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        jitter = rng.normal(1.0, 0.1, size=(count, 4))
        boxes = np.concatenate([xy, wh], axis=1) * jitter
        random = np.concatenate(
            [rng.uniform(0, [560, 400], (100 - count, 2)), rng.uniform(8, 200, (100 - count, 2))], 1
        )
        labels = np.concatenate([classes, rng.integers(1, 81, size=100 - count)])
        for box, label, score in zip(np.concatenate([boxes, random]), labels, rng.uniform(0.05, 1.0, size=100)):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label),
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def step_coco_eval(ctx: Context, record: dict, budget: float) -> None:
    import pycocotools.coco

    from atssrepro.engine.coco_eval import evaluate_detections

    ground_truth, detections = synthetic_results(ctx.sizes.eval_images)
    record.update(
        images=len(ground_truth["images"]), boxes=len(ground_truth["annotations"]), detections=len(detections)
    )
    for backend in ("faster-coco-eval", "pycocotools"):
        coco = pycocotools.coco.COCO()
        coco.dataset = ground_truth
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        started = time.perf_counter()
        metrics = evaluate_detections(coco, detections, backend=backend)
        record[backend] = {"seconds": time.perf_counter() - started, "AP": metrics.stats["AP"]}
    difference = abs(record["pycocotools"]["AP"] - record["faster-coco-eval"]["AP"])
    if difference > 1e-3:
        raise AssertionError(f"the two backends' AP differ by {difference:.4f}")


# Steps that need no GPU run in a process of their own, beside the GPU steps, from the start.
CPU_SIDE_STEPS = ("6_coco_eval", "data_pipeline")

STEPS: dict[str, Callable[[Context, dict, float], None]] = {
    "1_train_step": step_train,
    "1_speed_options": step_speed_options,
    "2_variants": step_variants,
    "4_training": step_training,
    "4_bf16_vs_fp32": step_bf16_agreement,
    "3_inference": step_inference,
    "5_assigners": step_assigners,
    "6_coco_eval": step_coco_eval,
    "data_pipeline": step_data_pipeline,
}


@contextlib.contextmanager
def time_budget(name: str, seconds: float):
    """Raise StepTimeout in the main thread once ``seconds`` have passed."""

    def expire(signum, frame):
        raise StepTimeout(f"step {name} ran past its budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_step(name: str, ctx: Context, budget: float) -> dict:
    """Run one step within its budget: ``{"status", "budget_s", "figures", "seconds"[, "error", "traceback"]}``.

    The figures a step recorded before it failed are kept."""
    step = {"status": "running", "budget_s": budget, "figures": {}}
    print(f"gpu_check: {name} (budget {budget:.0f} s)", file=sys.stderr, flush=True)
    started = time.perf_counter()
    try:
        with time_budget(name, budget):
            STEPS[name](ctx, step["figures"], budget)
        step["status"] = "passed"
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - any failure of a step is recorded, the next runs
        step["status"] = "FAILED"
        step["error"] = f"{type(e).__name__}: {e}"
        step["traceback"] = traceback.format_exc(limit=8)
        print(f"gpu_check: step {name} FAILED: {step['error']}\n{step['traceback']}", file=sys.stderr, flush=True)
    step["seconds"] = time.perf_counter() - started
    return step


def run_cpu_side_step(name: str, sizes: Sizes) -> dict:
    """:func:`run_step` in a child process (spawned: no CUDA state is inherited), on one thread as a
    DataLoader worker has, which also leaves the cores to the GPU steps."""
    import torch

    torch.set_num_threads(1)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        return run_step(name, Context(torch.device("cpu"), sizes, Path(workdir)), sizes.budgets[name])


def environment(device) -> dict:
    import torch
    import torchvision

    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
        )
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def targets(figures: dict) -> list[tuple[str, str]]:
    """The issue's speed targets, each as (target, verdict with the measured figure)."""
    env = figures["environment"]
    if env["device"] == "cpu":
        return [("speed targets", "not judged: they are GPU targets and this was the CPU mode")]
    train = figures["steps"].get("1_train_step", {}).get("figures", {})
    verdicts = []
    for key, figure in sorted(train.items()):
        if not key.endswith("_bf16") or "atss" not in figure:
            continue
        ratio, share = figure["atss_over_fcos"], figure["assign_loss_share"]
        verdicts.append(
            (f"{key}: ATSS >= 1.5x FCOS throughput (AMP)", f"{'met' if ratio >= 1.5 else 'NOT met'}: {ratio:.2f}x")
        )
        verdicts.append(
            (
                f"{key}: assignment + losses < 5% of the step",
                f"{'met' if share < 0.05 else 'NOT met'}: {100 * share:.1f}%",
            )
        )
    speeds = [f["atss"]["img_per_s"] for k, f in train.items() if k.endswith("_bf16") and "atss" in f]
    if speeds:
        best = max(speeds)
        on_h200 = "H200" in env.get("gpu", "")
        verdict = ("met" if best >= 40 else "NOT met") if on_h200 else f"not judged: measured on {env.get('gpu')}"
        verdicts.append(("ATSS R-50 >= 40 img/s training, AMP, one H200", f"{verdict}: {best:.1f} img/s"))
    return verdicts


def _flatten(value, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [row for key, item in value.items() for row in _flatten(item, f"{prefix}{key}.")]
    if isinstance(value, float):
        return [(prefix[:-1], f"{value:.4g}")]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return [row for index, item in enumerate(value) for row in _flatten(item, f"{prefix}{index}.")]
    if isinstance(value, list) and value and isinstance(value[0], float):
        return [(prefix[:-1], ", ".join(f"{v:.4g}" for v in value))]
    return [(prefix[:-1], str(value))]


def summary_markdown(figures: dict) -> str:
    env = figures["environment"]
    lines = ["# gpu_check summary", "", "| environment | |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in env.items()]
    lines += ["", "## Targets", "", "| target | verdict |", "|---|---|"]
    lines += [f"| {target} | {verdict} |" for target, verdict in targets(figures)]
    lines += [
        "",
        "Every ATSS model here has the default backbone style (`model.backbone.style`, MSRA unless"
        " 2_variants says otherwise) and random weights.",
    ]
    for name, step in figures["steps"].items():
        status = step["status"] + (f": {step['error']}" if "error" in step else "")
        lines += ["", f"## {name}", "", f"{status}; {step['seconds']:.1f} s of a {step['budget_s']:.0f} s budget", ""]
        rows = _flatten(step["figures"])
        if rows:
            lines += ["| figure | value |", "|---|---|"] + [f"| {key} | {value} |" for key, value in rows]
    return "\n".join(lines) + "\n"


def write_outputs(out: Path, figures: dict) -> None:
    from atssrepro.fileio import write_json, write_text

    write_json(out / "figures.json", figures)
    write_text(out / "summary.md", summary_markdown(figures))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for figures.json and summary.md")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU: checks the script, not the speed")
    parser.add_argument("--steps", nargs="+", choices=list(STEPS), default=list(STEPS), help="run only these steps")
    parser.add_argument("--wheels", type=Path, default=REPO / ".whl", help="wheels to install missing packages from")
    parser.add_argument(
        "--budget", action="append", default=[], metavar="STEP=SECONDS", help="another time budget for a step"
    )
    args = parser.parse_args(argv)
    sizes = CPU if args.cpu else GPU
    budgets = dict(sizes.budgets)
    for assignment in args.budget:
        name, _, seconds = assignment.partition("=")
        try:
            if name not in budgets:
                raise ValueError
            budgets[name] = float(seconds)
        except ValueError:
            parser.error(f"--budget {assignment!r}: expected STEP=SECONDS with STEP one of {', '.join(STEPS)}")
    sizes = dataclasses.replace(sizes, budgets=budgets)
    args.out.mkdir(parents=True, exist_ok=True)
    print("gpu_check: set-up (packages)", file=sys.stderr, flush=True)
    try:
        installed = ensure_packages(args.wheels, Path(tempfile.mkdtemp(prefix="gpu_check_site_")))
    except SetupError as e:
        print(f"gpu_check: set-up failed: {e}", file=sys.stderr)
        return 2
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("gpu_check: no CUDA device; use --cpu for the CPU mode", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.cpu else "cuda")
    # "fp32" means TF32 on; cudnn.benchmark stays off, as in training (its image sizes vary).
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    figures = {"environment": {**environment(device), "wheels_installed": installed}, "steps": {}}
    cpu_side = [name for name in args.steps if name in CPU_SIDE_STEPS]
    pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    futures = {name: pool.submit(run_cpu_side_step, name, sizes) for name in cpu_side}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        ctx = Context(device, sizes, Path(workdir))
        for name in args.steps:
            if name not in cpu_side:
                figures["steps"][name] = run_step(name, ctx, sizes.budgets[name])
                free_memory(device)
                write_outputs(args.out, figures)
    for name, future in futures.items():
        try:
            # The child keeps each step's budget; this margin covers its start-up.
            figures["steps"][name] = future.result(timeout=sum(sizes.budgets[n] for n in cpu_side) + 120)
        except Exception as e:  # noqa: BLE001 - a child that died or hung is a failed step
            figures["steps"][name] = {
                "status": "FAILED",
                "budget_s": sizes.budgets[name],
                "figures": {},
                "seconds": math.nan,
                "error": f"the process of this step failed: {type(e).__name__}: {e}",
            }
    pool.shutdown(wait=False, cancel_futures=True)
    write_outputs(args.out, figures)
    failed = [name for name, step in figures["steps"].items() if step["status"] != "passed"]
    print((args.out / "summary.md").read_text())
    if failed:
        print(f"gpu_check: {len(failed)} step(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("gpu_check: every step passed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
