"""Run the reference implementations of TAL, SimOTA, DSL, PAA (mmdetection 3.3.0) and OTA (its own code)
on one image, from their unmodified source files, for ``compare_assigners_reference.py``.

The reference code is not part of atssrepro. Get it once into one folder, REFS:

    pip download mmdet==3.3.0 --no-deps -d REFS && unzip -q REFS/mmdet-3.3.0-py3-none-any.whl 'mmdet/*' -d REFS
    git clone https://github.com/Megvii-BaseDetection/OTA REFS/OTA
    git clone https://github.com/Megvii-BaseDetection/cvpods REFS/cvpods

and have scikit-learn installed (the ``dev`` extra). Neither mmcv, mmengine nor cvpods is installed:
the few names their files import are given stand-ins here (a registry, an attribute bag, the
package layout), and only the files that hold the rules are executed, as they are.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch


class _Registry:
    """mmengine's registry, as far as the assigner and loss files use it."""

    def __init__(self) -> None:
        self.classes: dict[str, type] = {}

    def register_module(self, *args, **kwargs):
        def register(cls):
            self.classes[cls.__name__] = cls
            return cls

        return register

    def build(self, config: dict):
        config = dict(config)
        return self.classes[config.pop("type")](**config)


class InstanceData(SimpleNamespace):
    """mmengine's ``InstanceData``: an attribute bag."""


def _module(name: str, path: Path | None = None, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__path__ = [str(path)]  # a package whose submodules load from ``path`` without its __init__
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _function_from(path: Path, name: str, namespace: dict):
    """Execute one top-level function definition of a source file (the file itself imports too much)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def _file_module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class References:
    """The reference assigners, loaded from ``root`` (REFS above)."""

    def __init__(self, root: Path) -> None:
        mmdet = root / "mmdet"
        fcos = root / "OTA" / "playground" / "detection" / "coco" / "ota.res50.fpn.coco.800size.1x" / "fcos.py"
        cvpods = root / "cvpods" / "cvpods"
        for needed in (mmdet / "models" / "task_modules" / "assigners", fcos, cvpods / "modeling"):
            if not needed.exists():
                raise SystemExit(f"reference code not found: {needed} (see the docstring of {__file__})")
        self._load_mmdet(mmdet)
        self._load_ota(fcos, cvpods)

    def _load_mmdet(self, mmdet: Path) -> None:
        task_utils, models = _Registry(), _Registry()
        _module("mmengine", Path("."))
        _module("mmengine.structures", InstanceData=InstanceData)
        _module("mmcv", Path("."))
        _module("mmcv.ops", sigmoid_focal_loss=None)  # CUDA only; the CPU path does not call it
        _module("mmdet", mmdet)
        _module("mmdet.registry", TASK_UTILS=task_utils, MODELS=models)
        mixins = _module("mmdet.utils.util_mixins", NiceRepr=object)
        _module("mmdet.utils", ConfigType=dict, OptConfigType=dict, InstanceList=list, OptInstanceList=list)
        sys.modules["mmdet.utils"].util_mixins = mixins
        _module("mmdet.structures", mmdet / "structures")
        bbox = _module("mmdet.structures.bbox", mmdet / "structures" / "bbox", BaseBoxes=type("BaseBoxes", (), {}))
        bbox.bbox_overlaps = importlib.import_module("mmdet.structures.bbox.bbox_overlaps").bbox_overlaps
        bbox.get_box_tensor = lambda boxes: boxes
        for package in ("models", "models/task_modules", "models/task_modules/assigners", "models/losses"):
            _module("mmdet." + package.replace("/", "."), mmdet / package)
        _module("mmdet.models.losses.accuracy", accuracy=None)
        _module("mmdet.models.layers", multiclass_nms=None)
        _module("mmdet.models.utils", levels_to_images=None, multi_apply=None)
        _module("mmdet.models.dense_heads", mmdet / "models" / "dense_heads", ATSSHead=type("ATSSHead", (), {}))
        assigners = "mmdet.models.task_modules.assigners."
        importlib.import_module(assigners + "iou2d_calculator")
        self.tal = importlib.import_module(assigners + "task_aligned_assigner").TaskAlignedAssigner(topk=13)
        self.simota = importlib.import_module(assigners + "sim_ota_assigner").SimOTAAssigner()
        self.dsl = importlib.import_module(assigners + "dynamic_soft_label_assigner").DynamicSoftLabelAssigner(topk=13)
        self.max_iou = importlib.import_module(assigners + "max_iou_assigner").MaxIoUAssigner(
            pos_iou_thr=0.1, neg_iou_thr=0.1, min_pos_iou=0, ignore_iof_thr=-1
        )
        focal = importlib.import_module("mmdet.models.losses.focal_loss").FocalLoss
        giou = importlib.import_module("mmdet.models.losses.iou_loss").GIoULoss
        paa_head = importlib.import_module("mmdet.models.dense_heads.paa_head").PAAHead
        self.paa = object.__new__(paa_head)  # the PAA config's head, without its layers
        self.paa.topk, self.paa.covariance_type = 9, "diag"
        self.paa.loss_cls = focal(use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
        self.paa.loss_bbox = giou(loss_weight=1.3)
        self.paa.bbox_coder = SimpleNamespace(decode=lambda priors, boxes: boxes)  # boxes come decoded

    def _load_ota(self, fcos: Path, cvpods: Path) -> None:
        _module("cvpods", cvpods)
        _module("cvpods.layers", ShapeSpec=None, batched_nms=None, cat=torch.cat)
        _module("cvpods.modeling", cvpods / "modeling")
        transform = _file_module("cvpods.modeling.box_regression", cvpods / "modeling" / "box_regression.py")
        focal = _file_module("cvpods_focal_loss", cvpods / "modeling" / "losses" / "focal_loss.py")
        _module("cvpods.modeling.losses", iou_loss=None, sigmoid_focal_loss_jit=focal.sigmoid_focal_loss_jit)
        retinanet = cvpods / "modeling" / "meta_arch" / "retinanet.py"
        permute = _function_from(retinanet, "permute_to_N_HWA_K", {})
        _module("cvpods.modeling.meta_arch", cvpods / "modeling" / "meta_arch")
        _module("cvpods.modeling.meta_arch.retinanet", permute_to_N_HWA_K=permute)
        _module("cvpods.modeling.postprocessing", detector_postprocess=None)
        boxes = _file_module("cvpods_boxes", cvpods / "structures" / "boxes.py")
        _module("cvpods.structures", Boxes=boxes.Boxes, ImageList=None, Instances=None)
        _module("cvpods.utils", log_first_n=None)
        ota = _file_module("ota_fcos", fcos)
        self.ota_module, self.boxes = ota, boxes.Boxes
        self.ota_self = SimpleNamespace(  # the attributes get_ground_truth reads, as OTA's config sets them
            num_classes=None,
            fpn_strides=[8, 16, 32, 64, 128],
            shift2box_transform=transform.Shift2BoxTransform(weights=(1.0, 1.0, 1.0, 1.0)),
            focal_loss_alpha=0.25,
            focal_loss_gamma=2.0,
            reg_weight=1.5,
            top_candidates=20,
            sinkhorn=ota.SinkhornDistance(eps=0.1, max_iter=50),
        )


def _gt(case) -> InstanceData:
    return InstanceData(bboxes=case.gt_boxes, labels=case.gt_labels)


def _points(case) -> torch.Tensor:
    """Priors as mmdetection's point assigners read them: (x, y, stride, stride)."""
    return torch.cat([case.centres, case.strides[:, None], case.strides[:, None]], dim=1)


def _recording(assigner, capture: dict | None):
    """Record the cost and IoUs that SimOTA or DSL hands to its ``dynamic_k_matching``."""
    if capture is None:
        return
    method = type(assigner).dynamic_k_matching

    def record(cost, ious, num_gt, valid_mask):
        capture.update(cost=cost.clone(), ious=ious.clone(), valid=valid_mask.clone())
        return method(assigner, cost, ious, num_gt, valid_mask)

    assigner.dynamic_k_matching = record


def _matched(gt_inds: torch.Tensor) -> torch.Tensor:
    """mmdetection's 1-based ``gt_inds`` (0 negative, -1 ignored) -> GT index, -1 background, -2 ignored."""
    return torch.where(gt_inds > 0, gt_inds - 1, torch.where(gt_inds == 0, -1, -2))


def tal(refs: References, case) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``TaskAlignedAssigner(topk=13)`` with alpha 1, beta 6: matched [N], metric of the matched GT [N],
    and the soft target of TOOD's head (its ``_get_targets_single`` normalisation, per GT) [N]."""
    pred = InstanceData(priors=case.priors, bboxes=case.pred_boxes, scores=case.logits.sigmoid())
    result = refs.tal.assign(pred, _gt(case), None, 1, 6)
    matched = _matched(result.gt_inds)
    quality = torch.zeros(len(matched))
    for gt in matched[matched >= 0].unique():
        inds = (matched == gt).nonzero()[:, 0]
        metrics, ious = result.assign_metrics[inds], result.max_overlaps[inds]
        quality[inds] = metrics / (metrics.max() + 10e-8) * ious.max()
    return matched, result.assign_metrics, quality


def simota(refs: References, case, capture: dict | None = None) -> torch.Tensor:
    """``SimOTAAssigner()`` on probabilities: matched [N]."""
    _recording(refs.simota, capture)
    try:
        pred = InstanceData(priors=_points(case), bboxes=case.pred_boxes, scores=case.logits.sigmoid())
        return _matched(refs.simota.assign(pred, _gt(case)).gt_inds)
    finally:
        refs.simota.__dict__.pop("dynamic_k_matching", None)


def dsl(refs: References, case, capture: dict | None = None) -> torch.Tensor:
    """``DynamicSoftLabelAssigner(topk=13)`` on logits: matched [N]."""
    _recording(refs.dsl, capture)
    try:
        pred = InstanceData(priors=_points(case), bboxes=case.pred_boxes, scores=case.logits)
        return _matched(refs.dsl.assign(pred, _gt(case)).gt_inds)
    finally:
        refs.dsl.__dict__.pop("dynamic_k_matching", None)


def paa_first_pass(refs: References, case) -> torch.Tensor:
    """PAA's ``MaxIoUAssigner(0.1, 0.1, min_pos_iou=0)``: matched [N]."""
    return _matched(refs.max_iou.assign(InstanceData(priors=case.priors), _gt(case)).gt_inds)


def _targets(case, first_pass: torch.Tensor):
    """The per-anchor targets of mmdetection's ATSSHead for a first pass (reg_decoded_bbox)."""
    positive = first_pass >= 0
    num_classes = case.logits.shape[1]
    labels = (
        torch.where(positive, case.gt_labels[first_pass.clamp(min=0)], num_classes)
        if len(case.gt_labels)
        else (torch.full_like(first_pass, num_classes))
    )
    label_weights = (first_pass != -2).float()
    box_targets = (
        torch.where(positive[:, None], case.gt_boxes[first_pass.clamp(min=0)], 0.0)
        if len(case.gt_labels)
        else (torch.zeros(len(first_pass), 4))
    )
    box_weights = positive[:, None].float().expand(-1, 4).contiguous()
    return labels, label_weights, box_targets, box_weights, positive.nonzero()[:, 0]


def paa_scores(refs: References, case, first_pass: torch.Tensor) -> torch.Tensor:
    """``PAAHead.get_pos_loss`` (focal + 1.3 GIoU): the loss of each first-pass positive, [N] (0 elsewhere)."""
    labels, label_weights, box_targets, box_weights, pos_inds = _targets(case, first_pass)
    anchors = list(torch.split(case.priors, list(case.num_per_level)))
    (losses,) = refs.paa.get_pos_loss(
        anchors, case.logits, case.pred_boxes, labels, label_weights, box_targets, box_weights, pos_inds
    )
    scores = torch.zeros(len(first_pass))
    scores[pos_inds] = losses
    return scores


def paa_reassign(refs: References, case, first_pass: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """``PAAHead.paa_reassign`` given each first-pass positive's loss: matched [N]."""
    labels, label_weights, _, box_weights, pos_inds = _targets(case, first_pass)
    refs.paa.num_classes = case.logits.shape[1]
    anchors = list(torch.split(case.priors, list(case.num_per_level)))
    labels, *_ = refs.paa.paa_reassign(
        scores[pos_inds], labels, label_weights, box_weights, pos_inds, first_pass[pos_inds], anchors
    )
    kept = (first_pass >= 0) & (labels < case.logits.shape[1])
    return torch.where(first_pass == -2, -2, torch.where(kept, first_pass, -1))


def ota(refs: References, case, capture: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """OTA's ``get_ground_truth`` on one image.

    Returns:
        matched [N] (-1 background), and equivalent [G, N] bool: the GTs a foreground prior could
        have been given. The reference returns classes and box targets, not GT indices: a prior's GT
        is one whose class and (l, t, r, b) target it was given, and GTs equal in both are
        interchangeable.
    """
    refs.ota_self.num_classes = num_classes = case.logits.shape[1]
    split = list(case.num_per_level)

    def per_level(x: torch.Tensor) -> list[torch.Tensor]:  # [N, K] -> the network's [1, K, H, W] per level
        return [t.reshape(h, w, -1).permute(2, 0, 1)[None] for t, (h, w) in zip(torch.split(x, split), case.sizes)]

    sinkhorn = refs.ota_self.sinkhorn
    if capture is not None:

        def recording(mu, nu, cost):
            distance, plan = sinkhorn(mu, nu, cost)
            capture.update(mu=mu, cost=cost, plan=plan)
            return distance, plan

        refs.ota_self.sinkhorn = recording
    target = _Sized(gt_boxes=refs.boxes(case.gt_boxes), gt_classes=case.gt_labels)
    try:
        classes, deltas, _ = refs.ota_module.FCOS.get_ground_truth(
            refs.ota_self,
            [list(torch.split(case.centres, split))],
            [target],
            per_level(case.logits),
            per_level(case.ltrb),
            per_level(case.logits[:, :1]),
        )
    finally:
        refs.ota_self.sinkhorn = sinkhorn
    gt_deltas = torch.cat([case.centres - case.gt_boxes[:, None, :2], case.gt_boxes[:, None, 2:] - case.centres], -1)
    equivalent = (classes[None, :] == case.gt_labels[:, None]) & (deltas[None] == gt_deltas).all(-1)  # [G, N]
    equivalent &= (classes != num_classes)[None]
    if len(case.gt_labels) == 0:
        return torch.where(classes == num_classes, -1, -3), equivalent  # -3: a class without a GT (never seen)
    matched = torch.where(equivalent.any(0), equivalent.float().argmax(0), -1)
    return matched, equivalent


class _Sized(SimpleNamespace):
    """cvpods' ``Instances`` as ``get_ground_truth`` reads it: attributes and ``len()``."""

    def __len__(self) -> int:
        return len(self.gt_classes)
