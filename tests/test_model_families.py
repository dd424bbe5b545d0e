"""Every detector family of the paper builds, trains one step and runs inference.

Each family is a handful of config fields on top of the smoke model; the rows of the paper's
tables are made of these (tables/*.toml).
"""

from __future__ import annotations

import pytest
import torch

from atssrepro import config as cfg
from atssrepro.engine.train import build_optimizer
from atssrepro.model.detector import OneStageDetector

RETINANET = [  # no improvement: IoU labels, smooth-L1, P6 from C5
    "model.assign.strategy=iou",
    "model.head.group_norm=false",
    "model.loss.regression=smooth_l1",
    "model.loss.reg_weight=1.0",
    "model.head.centerness=false",
    "model.head.learnable_scales=false",
    "model.p6_from=c5",
]
# Table 1 "RetinaNet (#A=1)": the maskrcnn-benchmark RetinaNet module's normalisers and NMS
RETINANET_A1 = [*RETINANET, "model.loss.normalizer=retinanet", "model.inference.nms_iou=0.4"]
IMPROVED = ["model.assign.strategy=iou", "model.assign.in_gt_box=true"]  # Table 1 last column
A9 = ["model.anchors.scale=4.0", "model.anchors.scales_per_octave=3", "model.anchors.aspect_ratios=[0.5, 1.0, 2.0]"]

FAMILIES = {
    "table1_retinanet_a1": RETINANET_A1,
    "table1_+gn": [*RETINANET, "model.head.group_norm=true"],
    "table1_+giou": [*RETINANET, "model.head.group_norm=true", "model.loss.regression=giou"],
    "table1_improved": IMPROVED,
    "table2_iou_point": ["model.assign.strategy=iou", "model.regression=point"],
    "table2_ssc_box": ["model.assign.strategy=ssc"],
    "table2_fcos_ssc_point": ["model.assign.strategy=ssc", "model.regression=point"],
    "table3_atss_box": [],
    "table3_fcos_center_sampling": [  # the FCOS module's training
        "model.assign.strategy=center_sampling",
        "model.regression=point",
        "model.loss.regression=ltrb_giou",
        "model.loss.reg_weight=1.0",
        "model.head.point_bias_init=0.0",
    ],
    "table3_fcos_atss": ["model.regression=point"],
    "table7_retinanet_a9": [*RETINANET_A1, *A9],
    "table7_a9_imprs_atss": A9,
    "table8_dcn": ["model.backbone.name=resnet50", "model.backbone.dcn=true", "model.head.dcn=true"],
}
BIG_BACKBONES = ["resnet101", "resnext101_32x8d", "resnext101_64x4d"]


def one_step(overrides: list[str], size: tuple[int, int] = (96, 128)) -> None:
    config = cfg.build_config(None, "smoke", overrides)
    torch.manual_seed(0)
    model = OneStageDetector(config.model, num_classes=3)
    optimizer = build_optimizer(model, config.train)
    h, w = size
    images = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8)
    sizes = torch.tensor([[h, w], [h - 10, w - 20]])
    boxes = torch.tensor([[[8, 10, 60, 70], [40, 30, 120, 90]], [[20, 20, 50, 40], [0, 0, 0, 0]]], dtype=torch.float32)
    labels = torch.tensor([[0, 2], [1, -1]])
    mask = torch.tensor([[True, True], [True, False]])

    model.train()
    losses = model(images, sizes, boxes, labels, mask)
    expected = {"cls", "reg"} | ({"centerness"} if config.model.head.centerness else set())
    assert set(losses) == expected and all(torch.isfinite(v) and v > 0 for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    assert model.head.cls_logits.weight.grad.abs().sum() > 0
    optimizer.step()

    model.eval()
    with torch.no_grad():
        detections = model(images, sizes)
    assert len(detections) == 2
    for det in detections:
        assert det.boxes.shape[1] == 4 and len(det.scores) == len(det.labels) <= 100


@pytest.mark.parametrize("family", FAMILIES)
def test_family_trains_and_infers(family):
    one_step(FAMILIES[family])


@pytest.mark.slow
@pytest.mark.parametrize("backbone", BIG_BACKBONES)
def test_large_backbones(backbone):
    one_step([f"model.backbone.name={backbone}"], size=(64, 64))
