"""What the per-iteration assignment costs inside a training step, for each strategy.

    python benchmarks/assignment_in_step.py --data ../shared/data/tiny_coco          # smoke model, CPU
    python benchmarks/assignment_in_step.py --data /datasets/coco --preset paper --device cuda

For each strategy: a batch of real training images (the first ``--batch`` of train2017, resized as
the preset trains, no flip) through one forward + backward + SGD step of the model (median of
``--repeats`` steps after one), and the assignment of that batch alone (``OneStageDetector.assignment``
on the same head outputs, the predictions decoded for the prediction-aware ones), in ms per step.
The share is assignment / step. Each strategy starts from the same seeded model.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
from assigners import median_ms  # benchmarks/assigners.py, beside this script

from atssrepro import config as cfg
from atssrepro.data.batch import collate
from atssrepro.data.coco import CocoDetection, SampleSpec
from atssrepro.model.detector import OneStageDetector

STRATEGIES = ("atss", "iou", "ssc", "center_sampling", *cfg.PREDICTION_AWARE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="COCO root (annotations/, train2017/)")
    parser.add_argument("--preset", default="smoke")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    args = parser.parse_args()
    device = torch.device(args.device)
    config = cfg.build_config(None, args.preset, (), args.data)
    d = config.data
    dataset = CocoDetection(
        cfg.data_path(d, d.train_ann), cfg.data_path(d, d.train_images), train=True, max_size=d.max_size
    )
    samples = [dataset[SampleSpec(i, d.train_short_side[1], False)] for i in range(args.batch)]
    batch = collate(samples, d.size_divisible).to(device)
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, preset {args.preset}, "
        f"batch {args.batch} at {tuple(batch.images.shape[-2:])}, {int(batch.box_mask.sum())} GTs"
    )
    print("| strategy | step ms | assignment ms | share |")
    print("|---|---:|---:|---:|")
    for strategy in args.strategies:
        step_ms, assign_ms = measure(config.model, strategy, dataset.num_classes, batch, device, args.repeats)
        print(f"| {strategy} | {step_ms:.0f} | {assign_ms:.1f} | {100 * assign_ms / step_ms:.1f} % |", flush=True)


def measure(
    model_config: cfg.ModelConfig, strategy: str, num_classes: int, batch, device: torch.device, repeats: int
) -> tuple[float, float]:
    """ms of one training step and of the assignment alone with ``strategy``, from the same seeded model."""
    assign = dataclasses.replace(model_config.assign, strategy=strategy)
    torch.manual_seed(0)
    model = OneStageDetector(dataclasses.replace(model_config, assign=assign), num_classes).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    gts = batch.boxes, batch.labels, batch.box_mask

    def step() -> None:
        losses = model(batch.images, batch.image_sizes, *gts)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()

    def assignment() -> None:
        model.assignment(outputs, *gts)

    with torch.no_grad():
        outputs = model.head_outputs(batch.images, batch.image_sizes)
    step(), assignment()  # warm-up, not timed
    return median_ms(step, device, repeats), median_ms(assignment, device, repeats)


if __name__ == "__main__":
    main()
