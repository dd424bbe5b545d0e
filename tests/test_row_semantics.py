"""Each table row runs what the official code ran for it (issue 9): worked cases of the loss
normalisers and NMS of the RetinaNet module, the FCOS module's IOULoss, and padding groups that do
not depend on the number of processes."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from atssrepro import config as cfg
from atssrepro.config import InferenceConfig, LossConfig
from atssrepro.data.batch import collate_groups
from atssrepro.data.coco import CocoDetection
from atssrepro.data.sampler import TrainBatchSampler
from atssrepro.engine.train import GroupedTraining, build_optimizer
from atssrepro.errors import UserError
from atssrepro.harness.plan import resolve_row
from atssrepro.harness.specs import load_table
from atssrepro.model import pretrained
from atssrepro.model.box_coder import DeltaCoder
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.losses import LossTerms, combine_losses, ltrb_iou_loss
from atssrepro.model.postprocess import postprocess


def row_config(table: str, row: str) -> cfg.Config:
    spec = load_table(table)
    return resolve_row(spec, spec.row(row), "paper", 0)


def terms(cls: float, reg: float, num_pos: int, weight_sum: float, num_images: int = 2) -> LossTerms:
    t = torch.tensor
    return LossTerms(t(cls), t(reg), None, t(float(num_pos)), t(weight_sum), num_images)


# --- RetinaNet module (Table 1 "RetinaNet (#A=1)", Table 7 "RetinaNet (#A=9)") -----------------


def test_retinanet_normalisers_are_per_group() -> None:
    # group A: 3 positives, 2 images; group B (another GPU): no positive, 2 images
    groups = [terms(cls=10.0, reg=8.0, num_pos=3, weight_sum=3.0), terms(cls=6.0, reg=0.0, num_pos=0, weight_sum=0.0)]
    config = LossConfig(regression="smooth_l1", reg_weight=1.0, normalizer="retinanet")
    losses = combine_losses(groups, config)
    # mean over groups of cls / (#pos + #images) and of smooth-L1 / max(1, 4 #pos)
    assert losses["cls"].item() == pytest.approx((10 / 5 + 6 / 2) / 2)
    assert losses["reg"].item() == pytest.approx((8 / 12 + 0 / 1) / 2)


def test_atss_normalisers_use_the_mean_over_groups() -> None:
    # the official per-GPU mean #pos over 2 GPUs is 1.5: loss = mean over GPUs of sum / 1.5
    groups = [terms(cls=10.0, reg=8.0, num_pos=3, weight_sum=2.0), terms(cls=6.0, reg=0.0, num_pos=0, weight_sum=0.0)]
    losses = combine_losses(groups, LossConfig(regression="smooth_l1", reg_weight=1.0))
    assert losses["cls"].item() == pytest.approx((10 + 6) / 2 / 1.5)
    assert losses["reg"].item() == pytest.approx((8 + 0) / 2 / (4 * 1.5))
    giou = combine_losses(groups, LossConfig())  # GIoU by the mean weight sum (1.0), x 2.0
    assert giou["reg"].item() == pytest.approx(2.0 * (8 + 0) / 2 / 1.0)
    # one group of everything: the normaliser clamps at 1 positive
    assert combine_losses([terms(4.0, 0.0, 0, 0.0)], LossConfig())["cls"].item() == pytest.approx(4.0)


def test_nms_threshold_of_the_retinanet_rows() -> None:
    # two boxes of one class with IoU 0.5: NMS 0.6 (ATSS) keeps both, NMS 0.4 (RetinaNet) one
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 20.0]])
    cls = torch.tensor([[[3.0], [2.0]]])
    outputs = (cls, torch.zeros(1, 2, 4), None, anchors, torch.tensor([8.0, 8.0]), [2], torch.tensor([[64, 64]]))
    assert len(postprocess(*outputs, DeltaCoder(), InferenceConfig())[0].boxes) == 2
    kept = postprocess(*outputs, DeltaCoder(), InferenceConfig(nms_iou=0.4))[0]
    assert kept.boxes.tolist() == [[0.0, 0.0, 10.0, 10.0]]


@pytest.mark.parametrize(("table", "row"), [("table1", "retinanet_a1"), ("table7", "retinanet_a9")])
def test_retinanet_rows_run_the_retinanet_module(table: str, row: str) -> None:
    config = row_config(table, row)
    m, t = config.model, config.train
    assert (m.loss.normalizer, m.loss.regression, m.loss.smooth_l1_beta, m.loss.reg_weight) == (
        "retinanet", "smooth_l1", 0.11, 1.0,
    )  # fmt: skip
    assert m.inference.nms_iou == 0.4 and t.warmup_method == "linear" and t.pad_group == 2
    assert not m.head.centerness and not m.head.group_norm and m.p6_from == "c5"


def test_table7_retinanet_has_its_4_gpu_schedule() -> None:
    t = row_config("table7", "retinanet_a9").train
    assert (t.batch_size, t.iterations, t.lr_steps) == (8, 180_000, (120_000, 160_000))
    model = torch.nn.Linear(2, 2)
    assert build_optimizer(model, t).param_groups[0]["lr"] == pytest.approx(0.005)


# --- FCOS module (Table 3 "FCOS + Center sampling") ----------------------------------------------


def test_fcos_iou_loss_on_worked_cases() -> None:
    pred = torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]])
    # case 1: areas 4 and 9, intersection 4, union 9: IoU (4 + 1) / (9 + 1) = 0.5, enclosing 9 = union
    # case 2: areas 9 and 9, intersection 4, union 14: IoU 5 / 15, enclosing 16: GIoU 1/3 - 2/16
    giou = ltrb_iou_loss(pred, target, "giou")
    torch.testing.assert_close(giou, torch.tensor([0.5, 1 - (1 / 3 - 2 / 16)]))
    iou = ltrb_iou_loss(pred, target, "iou")
    torch.testing.assert_close(iou, torch.tensor([-math.log(0.5), -math.log(1 / 3)]))
    # the +1 smoothing: a perfect tiny prediction still has IoU 1, a wrong one IoU > true IoU
    tiny = torch.tensor([[0.1, 0.1, 0.1, 0.1]])
    # (the 1e-7 on the enclosing area 0.04 leaves 2.5e-6, as in the official code)
    assert ltrb_iou_loss(tiny, tiny, "giou").item() == pytest.approx(1e-7 / 0.04, rel=1e-2)
    assert ltrb_iou_loss(tiny, 2 * tiny, "iou").item() == pytest.approx(-math.log(1.04 / 1.16))


def test_fcos_center_sampling_row_runs_the_fcos_module() -> None:
    config = row_config("table3", "fcos_center_sampling")
    m = config.model
    assert (m.assign.strategy, m.assign.center_radius, m.regression) == ("center_sampling", 1.5, "point")
    assert (m.loss.regression, m.loss.reg_weight, m.loss.normalizer) == ("ltrb_giou", 1.0, "atss")
    detector = OneStageDetector(cfg.build_config(None, "smoke", [*overrides(config)]).model, num_classes=3)
    assert detector.head.box_regression.bias.eq(0.0).all()
    default_point = OneStageDetector(cfg.build_config(None, "smoke", ["model.regression=point"]).model, 3)
    assert default_point.head.box_regression.bias.eq(4.0).all()  # the official ATSS POINT head


def overrides(config: cfg.Config) -> list[str]:
    m = config.model
    return [
        f"model.assign.strategy={m.assign.strategy}",
        f"model.regression={m.regression}",
        f"model.loss.regression={m.loss.regression}",
        f"model.loss.reg_weight={m.loss.reg_weight}",
        f"model.head.point_bias_init={m.head.point_bias_init}",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("model.loss.regression=ltrb_giou", "needs model.regression = 'point'"),
        ("model.loss.normalizer=retinanet", "needs model.loss.regression = 'smooth_l1'"),
        ("train.pad_group=3", "train.pad_group = 3 must divide train.batch_size = 16"),
        ("train.pad_group=0", "train.pad_group = 0 is not valid: must be >= 1"),
    ],
)
def test_inconsistent_fields_are_refused(change: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        cfg.build_config(None, "paper", [change])


# --- padding groups ------------------------------------------------------------------------------


def test_padding_groups_do_not_depend_on_the_number_of_processes(synth_coco: Path) -> None:
    dataset = CocoDetection(
        synth_coco / "annotations" / "instances_train2017.json", synth_coco / "train2017", train=True, max_size=256
    )

    def padded(world_size: int) -> list:
        """The padding groups of the first 3 global batches of 4, in rank order, on ``world_size`` processes."""
        per_rank = []
        for rank in range(world_size):
            sampler = TrainBatchSampler(
                dataset.aspect_groups(), 4, (96, 160), 0.5, seed=3, rank=rank, world_size=world_size
            )
            steps = [specs for specs, _ in zip(sampler, range(3))]
            per_rank.append([collate_groups([dataset[s] for s in specs], 32, 2) for specs in steps])
        return [group for step in zip(*per_rank) for groups in step for group in groups]

    one, two = padded(1), padded(2)
    assert len(one) == len(two) == 6
    canvases = set()
    for a, b in zip(one, two):
        assert a.images.shape == b.images.shape and len(a.images) == 2
        for name in ("images", "image_sizes", "boxes", "labels", "box_mask", "image_ids"):
            assert torch.equal(getattr(a, name), getattr(b, name)), name
        # each group is padded to its own largest image, rounded up to 32
        assert list(a.images.shape[2:]) == [math.ceil(v / 32) * 32 for v in a.image_sizes.max(0).values.tolist()]
        canvases.add(tuple(a.images.shape[2:]))
    assert len(canvases) > 1  # the groups of a batch do get different canvases


def test_grouped_training_is_the_mean_over_groups_of_the_official_per_gpu_losses() -> None:
    config = cfg.build_config(None, "smoke", [])
    torch.manual_seed(0)
    detector = OneStageDetector(config.model, num_classes=3)
    generator = torch.Generator().manual_seed(1)

    def group(h: int, w: int):
        images = torch.randint(0, 256, (2, 3, h, w), dtype=torch.uint8, generator=generator)
        boxes = torch.tensor([[[8, 10, 60, 70]], [[20, 20, 50, 40]]], dtype=torch.float32)
        sizes, labels = torch.tensor([[h, w], [h, w]]), torch.tensor([[0], [2]])
        mask = torch.ones(2, 1, dtype=torch.bool)
        return SimpleNamespace(images=images, image_sizes=sizes, boxes=boxes, labels=labels, box_mask=mask)

    groups = [group(96, 128), group(128, 96)]
    grouped = GroupedTraining(detector)(groups)
    per_group = [detector.loss_terms(g.images, g.image_sizes, g.boxes, g.labels, g.box_mask) for g in groups]
    mean_pos = max(sum(t.num_pos.item() for t in per_group) / 2, 1.0)
    expected_cls = sum(t.cls.item() for t in per_group) / 2 / mean_pos
    assert grouped["cls"].item() == pytest.approx(expected_cls, rel=1e-5)


def test_batch_split_needs_whole_padding_groups_per_process() -> None:
    train = cfg.TrainConfig(batch_size=16, pad_group=2)
    assert cfg.batch_split_problem(train, 8) is None and cfg.batch_split_problem(train, 1) is None
    problem, fix = cfg.batch_split_problem(train, 16)
    assert "gives 1 images per process, not a multiple of train.pad_group = 2" in problem
    assert "multiple of 32" in fix
    assert cfg.batch_split_problem(train, 3)[0] == "train.batch_size = 16 cannot be split over 3 processes"


# --- precision -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amp", "tf32", "autocast"), [("off", False, None), ("tf32", True, None), ("bf16", True, "bf16")]
)
def test_training_precision_on_cuda(monkeypatch, amp: str, tf32: bool, autocast: str | None) -> None:
    from atssrepro.engine import train

    made = []
    monkeypatch.setattr(train.torch, "autocast", lambda device, dtype: made.append((device, dtype)))
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        train.training_precision(torch.device("cuda"), amp)
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (tf32, tf32)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert made == ([("cuda", torch.bfloat16)] if autocast else [])
    assert cfg.TrainConfig().amp == "off"  # the official fp32 by default


# --- pretrained weights of the X-101 rows ----------------------------------------------------------


def test_x101_rows_say_they_need_the_fair_weights() -> None:
    spec = load_table("table8")
    names = {row.id: resolve_row(spec, row, "paper", 0).model.backbone.name for row in spec.runnable_rows}
    x101 = [row for row in spec.runnable_rows if names[row.id].startswith("resnext")]
    assert len(x101) == 6
    for row in x101:
        name = names[row.id]
        fair = f"FAIR/20171220/X-101-{name.removeprefix('resnext101_')}"
        assert fair in row.note, row.id
        backbone = resolve_row(spec, row, "paper", 0).model.backbone
        assert pretrained.resolve_name(backbone.weights, backbone.name, backbone.style) == fair, row.id
