"""The prediction-aware assigners inside the detector: what they read, TAL's warm-up and soft targets,
and a resumed TAL recipe that trains exactly as a straight one."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from rich.console import Console

from atssrepro import config as cfg
from atssrepro.data.subset import make_coco_subset
from atssrepro.engine import checkpoint
from atssrepro.engine.curves import Curves
from atssrepro.engine.run import execute
from atssrepro.engine.run_dir import RunDir
from atssrepro.engine.train import train
from atssrepro.model import assign, assigners
from atssrepro.model.assigners.dispatch import strategy_at
from atssrepro.model.box_coder import DeltaCoder
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.losses import loss_terms

NUM_CLASSES = 3
SECTIONS = {  # a non-default value in each section, so that the test sees it reach the assigner
    "tal": ("model.assign.tal.topk=5", lambda inputs: assigners.tal(inputs, topk=5)),
    "simota": ("model.assign.simota.candidate_topk=4", lambda inputs: assigners.simota(inputs, candidate_topk=4)),
    "ota": ("model.assign.ota.sinkhorn_iterations=7", lambda inputs: assigners.ota(inputs, sinkhorn_iterations=7)),
    "dsl": ("model.assign.dsl.soft_center_radius=2.0", lambda inputs: assigners.dsl(inputs, soft_center_radius=2.0)),
    "paa": ("model.assign.paa.topk=3", lambda inputs: assigners.paa(inputs, topk=3)),
}


def smoke_model(*settings: str) -> OneStageDetector:
    torch.manual_seed(0)
    model_config = cfg.build_config(None, "smoke", settings).model
    return OneStageDetector(model_config, NUM_CLASSES)


def batch() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (2, 3, 128, 160), dtype=torch.uint8, generator=g)
    sizes = torch.tensor([[128, 160], [120, 150]])
    boxes = torch.tensor([
        [[10.0, 12.0, 70.0, 90.0], [60.0, 40.0, 150.0, 120.0], [0.0, 0.0, 0.0, 0.0]],
        [[30.0, 30.0, 46.0, 50.0], [5.0, 60.0, 100.0, 118.0], [80.0, 10.0, 140.0, 70.0]],
    ])  # fmt: skip
    labels = torch.tensor([[0, 2, -1], [1, 1, 0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    return images, sizes, boxes, labels, mask


@pytest.mark.parametrize("strategy", ["atss", "iou", "ssc", "center_sampling"])
def test_static_strategies_keep_their_path(strategy):
    model = smoke_model(f"model.assign.strategy={strategy}")
    images, sizes, boxes, labels, mask = batch()
    outputs = model.head_outputs(images, sizes)
    result = model.assignment(outputs, boxes, labels, mask, iteration=0)
    expected = assign.assign(model.config.assign, outputs.anchors, outputs.num_per_level, 1, boxes, mask)
    assert torch.equal(result.matched, expected) and result.quality is None


@pytest.mark.parametrize("strategy", SECTIONS)
def test_prediction_aware_strategies_read_the_decoded_predictions_and_their_section(strategy):
    setting, rule = SECTIONS[strategy]
    model = smoke_model(f"model.assign.strategy={strategy}", setting)
    images, sizes, boxes, labels, mask = batch()
    outputs = model.head_outputs(images, sizes)
    assert outputs.cls_logits.requires_grad
    result = model.assignment(outputs, boxes, labels, mask, iteration=0)
    decoded = DeltaCoder().decode(outputs.anchors, outputs.strides, outputs.box_regression.detach())
    inputs = assigners.AssignInputs(
        outputs.anchors, outputs.strides, tuple(outputs.num_per_level), outputs.cls_logits.detach(),
        decoded, boxes, labels, mask,
    )  # fmt: skip
    expected = rule(inputs)
    assert torch.equal(result.matched, expected.matched)
    assert (result.matched >= 0).any(), "a case where nothing is positive would prove little"
    default = model.assignment(outputs, boxes, labels, mask, config=cfg.AssignConfig(strategy=strategy))
    assert not torch.equal(default.matched, result.matched) or strategy == "ota", "the section's value had no effect"


def test_tal_warmup_is_atss_before_iteration_n_and_tal_from_it():
    n = 3
    model = smoke_model("model.assign.strategy=tal", f"model.assign.tal.warmup_iters={n}")
    images, sizes, boxes, labels, mask = batch()
    outputs = model.head_outputs(images, sizes)
    atss = assign.atss(outputs.anchors, outputs.num_per_level, 1, boxes, mask, topk=9)
    tal = model.assignment(outputs, boxes, labels, mask, config=cfg.AssignConfig(strategy="tal"))
    assert not torch.equal(atss, tal.matched)
    for iteration in (0, n - 1):
        result = model.assignment(outputs, boxes, labels, mask, iteration)
        assert torch.equal(result.matched, atss) and result.quality is None, iteration
    for iteration in (n, n + 100, None):
        result = model.assignment(outputs, boxes, labels, mask, iteration)
        assert torch.equal(result.matched, tal.matched) and torch.equal(result.quality, tal.quality), iteration
    # The rule is a function of the iteration alone, and only TAL warms up.
    config = model.config.assign
    assert [strategy_at(config, i) for i in (0, 2, 3, 4)] == ["atss", "atss", "tal", "tal"]
    assert strategy_at(cfg.AssignConfig(strategy="tal"), 0) == "tal"
    assert strategy_at(dataclasses.replace(config, strategy="simota", tal=cfg.TalConfig()), 0) == "simota"


def bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_soft_targets_loss_against_a_hand_computation():
    """Quality focal loss (beta 2): BCE(x, y) |y - sigmoid(x)|^2, y the quality on the positive's class."""
    logits = [[0.5, -1.0], [2.0, -0.3]]  # anchor 0 positive for GT 0 (class 1, quality 0.6); anchor 1 negative
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0], [16.0, 0.0, 32.0, 16.0]])
    terms = loss_terms(
        torch.tensor([logits]), torch.zeros(1, 2, 4), None, anchors, torch.tensor([8.0, 8.0]),
        torch.tensor([[0, -1]]), torch.tensor([[[1.0, 1.0, 15.0, 15.0]]]), torch.tensor([[1]]), DeltaCoder(),
        cfg.LossConfig(), quality=torch.tensor([[0.6, 0.9]]),
    )  # fmt: skip

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    by_hand = (
        bce(0.5, 0) * sigmoid(0.5) ** 2
        + bce(-1.0, 0.6) * (0.6 - sigmoid(-1.0)) ** 2
        + bce(2.0, 0) * sigmoid(2.0) ** 2  # a negative's quality (0.9 here) is never read
        + bce(-0.3, 0) * sigmoid(-0.3) ** 2
    )
    assert terms.cls.item() == pytest.approx(by_hand, rel=1e-6)
    assert terms.num_pos.item() == 1  # the normaliser stays the positives' count (docs/semantics.md)
    hard = loss_terms(
        torch.tensor([logits]), torch.zeros(1, 2, 4), None, anchors, torch.tensor([8.0, 8.0]),
        torch.tensor([[0, -1]]), torch.tensor([[[1.0, 1.0, 15.0, 15.0]]]), torch.tensor([[1]]), DeltaCoder(),
        cfg.LossConfig(),
    )  # fmt: skip
    assert hard.cls.item() != pytest.approx(terms.cls.item()) and hard.reg.item() == terms.reg.item()


def test_soft_targets_train_only_once_tal_assigns():
    recipe = ("model.assign.strategy=tal", "model.assign.tal.warmup_iters=2")
    model = smoke_model(*recipe, "model.assign.tal.soft_targets=true")
    hard = smoke_model(*recipe)
    images, sizes, boxes, labels, mask = batch()
    for iteration, same in ((1, True), (2, False)):
        soft_terms = model.loss_terms(images, sizes, boxes, labels, mask, iteration)
        hard_terms = hard.loss_terms(images, sizes, boxes, labels, mask, iteration)
        assert (soft_terms.cls.item() == hard_terms.cls.item()) is same, iteration
        assert soft_terms.reg.item() == hard_terms.reg.item()


# ---- the TAL recipe trains deterministically, and a resumed run switches at the same iteration

RECIPE = [
    "model.assign.strategy=tal", "model.assign.tal.warmup_iters=3", "model.assign.tal.soft_targets=true",
    "data.train_short_side=[128, 128]", "data.max_size=192", "data.num_workers=0", "train.batch_size=2",
    "train.iterations=6", "train.lr_steps=[5]", "train.checkpoint_every=2", "train.log_every=1",
]  # fmt: skip


class Killed(Exception):
    """Stands for SIGKILL right after a checkpoint was written."""


def _train(config: cfg.Config, folder) -> dict:
    run = RunDir(folder)
    run.init(config, "smoke")
    with Curves(run.path) as curves:
        model = train(config, run, torch.device("cpu"), Console(quiet=True), curves)
    return model.state_dict()


def _losses(folder) -> list[tuple[int, float]]:
    return [(r["iter"], r["loss"]) for r in map(json.loads, (folder / "log.jsonl").read_text().splitlines())]


@pytest.mark.slow
def test_tal_recipe_is_deterministic_and_resumes_across_its_warmup(synth_coco, tmp_path, monkeypatch):
    config = cfg.build_config(None, "smoke", RECIPE, str(synth_coco))
    straight = _train(config, tmp_path / "straight")
    again = _train(config, tmp_path / "again")
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "again")  # the same losses twice
    assert all(torch.equal(straight[k], again[k]) for k in straight)

    save = checkpoint.save

    def save_then_die(path, state):
        save(path, state)
        raise Killed(f"killed after iteration {state['iteration']}")

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed, match="after iteration 2"):
        _train(config, tmp_path / "resumed")
    monkeypatch.setattr(checkpoint, "save", save)
    resumed = _train(config, tmp_path / "resumed")  # from iteration 2: one more ATSS step, then TAL
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    log = _losses(tmp_path / "resumed")
    assert [i for i, _ in log] == [1, 2, 3, 4, 5, 6]
    assert log == _losses(tmp_path / "straight")


# ---- every prediction-aware strategy trains on real COCO images to finite losses and metrics

TINY_RUN = [
    "data.train_short_side=[128, 128]", "data.test_short_side=128", "data.max_size=192", "data.num_workers=0",
    "train.batch_size=2", "train.iterations=3", "train.lr_steps=[2]", "train.log_every=1",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny8(tiny_coco, tmp_path_factory) -> str:
    """8 train and 8 val images of tiny COCO (hard links): real images, a short evaluation."""
    out = tmp_path_factory.mktemp("tiny8")
    for split in ("train2017", "val2017"):
        make_coco_subset(tiny_coco, split, 8, out)
    return str(out)


@pytest.mark.parametrize("strategy", cfg.PREDICTION_AWARE)
def test_each_strategy_trains_on_tiny_coco_to_finite_losses_and_metrics(strategy, tiny8, tmp_path):
    # TAL with its whole recipe: one ATSS warm-up iteration, then TAL with soft targets
    recipe = ["model.assign.tal.warmup_iters=1", "model.assign.tal.soft_targets=true"] if strategy == "tal" else []
    settings = [*TINY_RUN, f"model.assign.strategy={strategy}", *recipe]
    config = cfg.build_config(None, "smoke", settings, tiny8)
    metrics = execute(config, RunDir(tmp_path / strategy), "smoke", Console(quiet=True))
    log = [json.loads(line) for line in (tmp_path / strategy / "log.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in log] == [1, 2, 3]
    assert all(math.isfinite(r[term]) and r[term] >= 0 for r in log for term in ("loss", "cls", "reg"))
    assert metrics["num_images"] == 8 and all(math.isfinite(v) for v in metrics["stats"].values())
