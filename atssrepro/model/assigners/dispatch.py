"""The prediction-aware assigner that a config names, called with the settings of its section."""

from __future__ import annotations

from atssrepro.config import PREDICTION_AWARE, AssignConfig, LossConfig
from atssrepro.model.assigners.common import AssignInputs, Assignment
from atssrepro.model.assigners.dsl import dsl
from atssrepro.model.assigners.ota import ota
from atssrepro.model.assigners.paa import paa
from atssrepro.model.assigners.simota import simota
from atssrepro.model.assigners.tal import tal


def strategy_at(config: AssignConfig, iteration: int | None) -> str:
    """The strategy that assigns at training iteration ``iteration`` (0-based; None: past any warm-up):
    ``atss`` during TAL's warm-up (``model.assign.tal.warmup_iters``), else ``config.strategy``.

    A pure function of the iteration, so a resumed run picks the same rule at the same iteration."""
    warming_up = iteration is not None and iteration < config.tal.warmup_iters
    return "atss" if config.strategy == "tal" and warming_up else config.strategy


def uses_predictions(strategy: str) -> bool:
    return strategy in PREDICTION_AWARE


def predicted_assignment(config: AssignConfig, loss: LossConfig, inputs: AssignInputs) -> Assignment:
    """Run the prediction-aware assigner ``config.strategy`` on ``inputs`` with the settings of its
    section (``config.tal``, ...); PAA's anchor score takes the focal loss's alpha and gamma from ``loss``."""
    strategy = config.strategy
    if strategy == "tal":
        t = config.tal
        return tal(inputs, topk=t.topk, alpha=t.alpha, beta=t.beta)
    if strategy == "simota":
        s = config.simota
        return simota(
            inputs,
            center_radius=s.center_radius,
            candidate_topk=s.candidate_topk,
            iou_weight=s.iou_weight,
            cls_weight=s.cls_weight,
        )
    if strategy == "ota":
        o = config.ota
        return ota(
            inputs,
            top_candidates=o.top_candidates,
            reg_weight=o.reg_weight,
            sinkhorn_eps=o.sinkhorn_eps,
            sinkhorn_iterations=o.sinkhorn_iterations,
            center_radius=o.center_radius,
        )
    if strategy == "dsl":
        d = config.dsl
        return dsl(inputs, topk=d.topk, iou_weight=d.iou_weight, soft_center_radius=d.soft_center_radius)
    if strategy == "paa":
        p = config.paa
        return paa(
            inputs,
            pos_iou=p.pos_iou,
            neg_iou=p.neg_iou,
            topk=p.topk,
            focal_alpha=loss.focal_alpha,
            focal_gamma=loss.focal_gamma,
        )
    raise ValueError(f"{strategy!r} is not a prediction-aware strategy ({', '.join(PREDICTION_AWARE)})")
