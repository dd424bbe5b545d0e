"""Compare atssrepro's prediction-aware assigners with their reference implementations, prior for prior.

    python benchmarks/compare_assigners_reference.py --refs REFS --cases 400 \\
        --coco ../shared/data/tiny_coco/annotations/instances_val2017.json

REFS holds the reference code, which atssrepro does not ship (``benchmarks/reference_assigners.py``
says how to get it). Each case is one image: 8S anchors at #A=1 on P3-P7, GT boxes, and random
predictions (class logits and decoded boxes): every image of each ``--coco`` file resized as training
does (short side 800, long side <= 1333), then ``--cases`` random images of each kind in KINDS (small
image sizes, so that the references, which build priors x GTs x classes tensors, stay fast).
Per assigner it prints: cases, cases with a mismatch, mismatched priors, and the largest
difference of the costs or metrics the two sides compute. A mismatched prior is also checked for
a tie in the reference's own decision (``ties`` column): equal or within 1e-5 relative values at
the point where the reference chooses (the k-th and k+1-th cost of a GT, the two best GTs of a prior).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import reference_assigners as ref  # noqa: E402

from atssrepro.data.coco import load_coco, resized_size, usable_boxes  # noqa: E402
from atssrepro.model import assigners  # noqa: E402
from atssrepro.model.anchors import anchor_strides, feature_sizes, grid_anchors  # noqa: E402
from atssrepro.model.assigners.dsl import dsl_cost  # noqa: E402
from atssrepro.model.assigners.ota import ota_cost  # noqa: E402
from atssrepro.model.assigners.paa import paa_anchor_scores, paa_first_pass, paa_reassign  # noqa: E402
from atssrepro.model.assigners.simota import simota_cost  # noqa: E402
from atssrepro.model.assigners.tal import alignment_metric  # noqa: E402

KINDS = ("random", "empty", "tiny", "edge", "overlap", "poor", "good", "many")
TIE = 1e-5


@dataclass
class Case:
    """One image: priors, predictions and GTs (see :class:`atssrepro.model.assigners.AssignInputs`)."""

    kind: str
    priors: torch.Tensor
    strides: torch.Tensor
    num_per_level: tuple[int, ...]
    sizes: list[tuple[int, int]]
    logits: torch.Tensor
    pred_boxes: torch.Tensor
    gt_boxes: torch.Tensor
    gt_labels: torch.Tensor

    @property
    def centres(self) -> torch.Tensor:
        return (self.priors[:, :2] + self.priors[:, 2:]) / 2

    @property
    def ltrb(self) -> torch.Tensor:
        """The predicted boxes as OTA's network outputs them: distances from the prior's centre."""
        c, p = self.centres, self.pred_boxes
        return torch.stack([c[:, 0] - p[:, 0], c[:, 1] - p[:, 1], p[:, 2] - c[:, 0], p[:, 3] - c[:, 1]], dim=1)

    def inputs(self) -> assigners.AssignInputs:
        return assigners.AssignInputs.single(
            self.priors, self.strides, self.num_per_level, self.logits, self.pred_boxes, self.gt_boxes, self.gt_labels
        )


def _uniform(g: torch.Generator, low: float, high: float, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g) * (high - low) + low


def _predictions(g: torch.Generator, priors, strides, gt_boxes, gt_labels, num_classes, quality: str):
    """Random logits [N, C] and decoded boxes [N, 4].

    Boxes lie around each prior; near a GT for ``good``, far off (and a few of zero width) for ``poor``.
    """
    n = len(priors)
    logits = torch.randn(n, num_classes, generator=g) * _uniform(g, 0.5, 3.0, 1) + _uniform(g, -6.0, -1.0, 1)
    centres = (priors[:, :2] + priors[:, 2:]) / 2
    spread = {"poor": 3.0, "good": 0.3}.get(quality, 0.7)
    offset = torch.randn(n, 2, generator=g) * strides[:, None] * (2.0 if quality == "poor" else 0.5)
    size = (priors[:, 2:] - priors[:, :2]) * torch.exp(torch.randn(n, 2, generator=g) * spread)
    if quality == "good" and len(gt_boxes):
        # Priors inside a GT predict it (with noise) and score its class higher.
        inside = (centres[:, None] > gt_boxes[None, :, :2]).all(-1) & (centres[:, None] < gt_boxes[None, :, 2:]).all(-1)
        owner = torch.where(inside.any(1), inside.float().argmax(1), -1)
        hit = owner >= 0
        box = gt_boxes[owner.clamp(min=0)]
        wh = box[:, 2:] - box[:, :2]
        offset = torch.where(
            hit[:, None], (box[:, :2] + box[:, 2:]) / 2 - centres + torch.randn(n, 2, generator=g) * wh * 0.1, offset
        )
        size = torch.where(hit[:, None], wh * torch.exp(torch.randn(n, 2, generator=g) * 0.2), size)
        rows = hit.nonzero()[:, 0]
        logits[rows, gt_labels[owner[rows]]] += _uniform(g, 0.0, 6.0, len(rows))
    centre = centres + offset
    boxes = torch.cat([centre - size / 2, centre + size / 2], dim=1)
    if quality == "poor":
        flat = torch.rand(n, generator=g) < 0.05
        boxes[flat, 2] = boxes[flat, 0]  # some zero widths
    return logits, boxes


def _grid(height: int, width: int):
    sizes = feature_sizes(height, width)
    priors, num_per_level = grid_anchors(sizes, 8.0, (1.0,), 1)
    return priors, anchor_strides(num_per_level), tuple(num_per_level), sizes


def _random_boxes(g: torch.Generator, count: int, height: int, width: int, low: float = 2.0, high: float | None = None):
    high = high or math.log(0.8 * min(height, width))
    wh = torch.exp(_uniform(g, low, high, count, 2))
    xy = torch.rand(count, 2, generator=g) * (torch.tensor([width, height]) - wh).clamp(min=1)
    return torch.cat([xy, xy + wh], dim=1).clamp(max=torch.tensor([width, height] * 2))


def random_case(g: torch.Generator, kind: str) -> Case:
    """One random image of ``kind`` (KINDS)."""
    big = kind == "many"
    low, high = (8, 13) if big else (3, 17)  # sides in multiples of 32
    height, width = (int(torch.randint(low, high, (1,), generator=g)) * 32 for _ in range(2))
    priors, strides, num_per_level, sizes = _grid(height, width)
    num_classes = 10 if big else int(torch.randint(1, 81, (1,), generator=g))
    count = {"empty": 0, "many": int(torch.randint(100, 201, (1,), generator=g))}.get(
        kind, int(torch.randint(1, 16, (1,), generator=g))
    )
    boxes = _random_boxes(g, count, height, width)
    if kind == "tiny":  # smaller than a stride, between prior centres: some GTs have no candidate
        boxes = _random_boxes(g, count, height, width, low=0.0, high=math.log(6.0))
    elif kind == "edge":  # sides on prior centres (multiples of 4 offset by the P3 half-stride)
        boxes = torch.round(boxes / 8) * 8 + 4
        boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 8)
    elif kind == "overlap" and count > 1:  # duplicates and near-duplicates of the first boxes
        half = count // 2
        boxes[half : 2 * half] = boxes[:half] + torch.randn(half, 4, generator=g) * (
            torch.rand(half, 1, generator=g) < 0.5
        )
    labels = torch.randint(0, num_classes, (count,), generator=g)
    quality = kind if kind in ("poor", "good") else ("good" if torch.rand(1, generator=g) < 0.3 else "random")
    logits, pred = _predictions(g, priors, strides, boxes, labels, num_classes, quality)
    return Case(kind, priors, strides, num_per_level, sizes, logits, pred, boxes, labels)


def coco_cases(g: torch.Generator, ann_file: Path) -> Iterator[Case]:
    """Every image of a COCO file with a usable box, resized as training does, with random predictions."""
    coco = load_coco(ann_file, train=True)
    category_index = {category_id: i for i, category_id in enumerate(sorted(coco.cats))}
    for image_id in sorted(coco.imgs):
        height, width = coco.imgs[image_id]["height"], coco.imgs[image_id]["width"]
        boxes, labels = usable_boxes(coco.imgToAnns[image_id], height, width, category_index)
        if len(boxes) == 0:
            continue
        new_height, new_width = resized_size(height, width, 800, 1333)
        boxes = boxes * torch.tensor([new_width / width, new_height / height] * 2)
        priors, strides, num_per_level, sizes = _grid(math.ceil(new_height / 32) * 32, math.ceil(new_width / 32) * 32)
        quality = "good" if torch.rand(1, generator=g) < 0.5 else "random"
        logits, pred = _predictions(g, priors, strides, boxes, labels, 80, quality)
        yield Case("coco", priors, strides, num_per_level, sizes, logits, pred, boxes, labels)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TIE * max(1.0, abs(a), abs(b))


def _boundary_tie(values: torch.Tensor, k: int, largest: bool) -> bool:
    """Whether the k-th and k+1-th of ``values`` in order are (nearly) equal: the top-k's own choice."""
    if k >= len(values) or k < 1:
        return False
    ordered = values.sort(descending=largest).values
    return _close(float(ordered[k - 1]), float(ordered[k]))


def _two_best_tie(values: torch.Tensor, largest: bool) -> bool:
    if len(values) < 2:
        return False
    ordered = values.sort(descending=largest).values
    return _close(float(ordered[0]), float(ordered[1]))


class Tally:
    """Counts of one comparison."""

    def __init__(self) -> None:
        self.cases = self.mismatched_cases = self.priors = self.mismatched = self.ties = self.raised = 0
        self.max_error = 0.0
        self.seconds = {"reference": 0.0, "atssrepro": 0.0}

    def add(self, ref_matched: torch.Tensor, agree: torch.Tensor, ties: torch.Tensor, error: float = 0.0) -> None:
        self.cases += 1
        self.priors += len(ref_matched)
        wrong = ~agree
        self.mismatched += int(wrong.sum())
        self.ties += int((wrong & ties).sum())
        self.mismatched_cases += bool(wrong.any())
        self.max_error = max(self.max_error, error)


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.numel() == 0:
        return 0.0
    return float(((a - b).abs() / b.abs().clamp(min=1.0)).max())


def _timed(tally: Tally, side: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    tally.seconds[side] += time.perf_counter() - start
    return result


def compare_case(refs: ref.References, case: Case, tallies: dict[str, Tally]) -> None:
    """Run every assigner on ``case`` on both sides and add the result to ``tallies``."""
    inputs = case.inputs()
    num_gt = len(case.gt_labels)

    t = tallies["tal"]
    ref_matched, ref_metric, ref_quality = _timed(t, "reference", ref.tal, refs, case)
    mine = _timed(t, "atssrepro", assigners.tal, inputs)
    metric, ious = (x[0] for x in alignment_metric(inputs))
    agree = mine.matched[0] == ref_matched
    ties = torch.zeros_like(agree)
    for p in (~agree).nonzero()[:, 0].tolist():
        gts = {int(x) for x in (ref_matched[p], mine.matched[0, p]) if x >= 0}
        boundary = any(_boundary_tie(metric[g], 13, largest=True) for g in gts)
        ties[p] = boundary or _two_best_tie(ious[list(gts), p], largest=True)
    both = agree & (ref_matched >= 0)
    own_metric = metric.gather(0, ref_matched.clamp(min=0)[None])[0] if num_gt else ref_metric
    error = max(
        _relative_error(own_metric[both], ref_metric[both]), _relative_error(mine.quality[0][both], ref_quality[both])
    )
    t.add(ref_matched, agree, ties, error)

    for name, reference, rule, cost_fn in (
        ("simota", ref.simota, assigners.simota, simota_cost),
        ("dsl", ref.dsl, assigners.dsl, dsl_cost),
    ):
        t = tallies[name]
        capture: dict = {}
        ref_matched = _timed(t, "reference", reference, refs, case, capture)
        mine = _timed(t, "atssrepro", rule, inputs).matched[0]
        agree = mine == ref_matched
        ties = torch.zeros_like(agree)
        error = 0.0
        if capture:
            cost, _, valid = (x[0] for x in cost_fn(inputs))
            ref_cost = capture["cost"]  # [V, G] over the valid priors
            error = _relative_error(cost[:, valid].T, ref_cost)
            topk = 10 if name == "simota" else 13
            k = capture["ious"].topk(min(topk, len(ref_cost)), dim=0).values.sum(0)
            for p in (~agree).nonzero()[:, 0].tolist():
                row = int(valid[:p].sum())
                gts = {int(x) for x in (ref_matched[p], mine[p]) if x >= 0}
                near_int = any(abs(float(k[g]) - round(float(k[g]))) < TIE and k[g] >= 1 for g in gts)
                boundary = any(_boundary_tie(ref_cost[:, g], max(1, int(k[g])), largest=False) for g in gts)
                ties[p] = near_int or boundary or (bool(valid[p]) and _two_best_tie(ref_cost[row], largest=False))
        t.add(ref_matched, agree, ties, error)

    t = tallies["ota"]
    capture = {}
    ref_matched, equivalent = _timed(t, "reference", ref.ota, refs, case, capture)
    mine = _timed(t, "atssrepro", assigners.ota, inputs).matched[0]
    agree = mine == ref_matched
    if num_gt:
        agree |= (mine >= 0) & equivalent.gather(0, mine.clamp(min=0)[None])[0]
    ties = torch.zeros_like(agree)
    error = 0.0
    if num_gt:
        cost, background, _, _ = (x[0] for x in ota_cost(inputs))
        error = _relative_error(torch.cat([cost, background[None]]), capture["cost"])
        plan = capture["plan"]
        scaled = plan / plan.max(dim=1, keepdim=True).values
        for p in (~agree).nonzero()[:, 0].tolist():
            ties[p] = _two_best_tie(scaled[:, p], largest=True)
    t.add(ref_matched, agree, ties, error)

    t = tallies["sinkhorn"]  # the plan of identical costs and supplies
    if num_gt:
        from atssrepro.model.assigners.ota import sinkhorn

        mask = torch.ones(1, len(capture["mu"]), dtype=torch.bool)
        plan = sinkhorn(capture["cost"][None], capture["mu"][None], torch.ones(1, len(case.priors)), mask)[0]
        t.add(ref_matched, torch.ones_like(agree), ties, float((plan - capture["plan"]).abs().max()))

    t = tallies["paa first pass"]
    ref_first = _timed(t, "reference", ref.paa_first_pass, refs, case)
    first = _timed(
        t, "atssrepro", paa_first_pass, case.priors, case.gt_boxes[None], torch.ones(1, num_gt, dtype=torch.bool)
    )[0]
    t.add(ref_first, first == ref_first, torch.zeros_like(first, dtype=torch.bool))

    t = tallies["paa scores"]
    ref_scores = _timed(t, "reference", ref.paa_scores, refs, case, ref_first)
    scores = paa_anchor_scores(
        case.logits[None], case.pred_boxes[None], ref_first[None], case.gt_boxes[None], case.gt_labels[None]
    )[0]
    positive = ref_first >= 0
    t.add(ref_first, torch.ones_like(positive), positive, _relative_error(scores[positive], ref_scores[positive]))

    # The second pass alone, on an identical first pass and scores; then the whole rule. scikit-learn
    # raises where a component collapses on one sample whose float32 square rounds down (see gmm.py):
    # the reference has no result there.
    t = tallies["paa reassign"]
    try:
        ref_matched = _timed(t, "reference", ref.paa_reassign, refs, case, ref_first, scores)
    except ValueError:
        t.raised += 1
    else:
        mine = _timed(t, "atssrepro", paa_reassign, ref_first[None], scores[None], case.num_per_level, num_gt)[0]
        t.add(ref_matched, mine == ref_matched, torch.zeros_like(positive))

    t = tallies["paa"]
    try:
        ref_matched = ref.paa_reassign(refs, case, ref_first, ref_scores)
    except ValueError:
        t.raised += 1
    else:
        mine = _timed(t, "atssrepro", assigners.paa, inputs).matched[0]
        t.add(ref_matched, mine == ref_matched, torch.zeros_like(positive))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--refs", type=Path, required=True, help="folder of the reference code")
    parser.add_argument("--cases", type=int, default=100, help="random images of each kind")
    parser.add_argument("--coco", type=Path, action="append", default=[], help="COCO annotation file(s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)  # mmdetection's torch.cuda.amp.autocast
    refs = ref.References(args.refs)
    g = torch.Generator().manual_seed(args.seed)
    names = ("tal", "simota", "dsl", "ota", "sinkhorn", "paa first pass", "paa scores", "paa reassign", "paa")
    tallies = {name: Tally() for name in names}
    by_kind: dict[str, int] = {}
    real = (case for ann_file in args.coco for case in coco_cases(g, ann_file))
    cases = itertools.chain(real, (random_case(g, kind) for _ in range(args.cases) for kind in KINDS))
    start = time.perf_counter()
    with torch.no_grad():
        for i, case in enumerate(cases):
            before = {name: (t.mismatched, t.ties) for name, t in tallies.items()}
            compare_case(refs, case, tallies)
            for name, t in tallies.items():
                if (t.mismatched, t.ties) != before[name]:
                    wrong, ties = t.mismatched - before[name][0], t.ties - before[name][1]
                    print(
                        f"case {i} ({case.kind}): {name} differs at {wrong} priors, {ties} of them ties",
                        file=sys.stderr,
                    )
            by_kind[case.kind] = by_kind.get(case.kind, 0) + 1
            if (i + 1) % 20 == 0:
                print(f"{i + 1} cases, {time.perf_counter() - start:.0f} s", file=sys.stderr)
            if (i + 1) % 400 == 0:
                report(tallies, by_kind)  # the latest table also survives an interrupted run
    report(tallies, by_kind)


def report(tallies: dict[str, Tally], by_kind: dict[str, int]) -> None:
    """Print the comparison so far as a markdown table."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cases by kind: {by_kind}")
    header = "| rule | cases | with a mismatch | priors | mismatched priors | of which ties | reference raised |"
    print(header + " max difference | s (ref / ours) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, t in tallies.items():
        seconds = f"{t.seconds['reference']:.0f} / {t.seconds['atssrepro']:.0f}"
        counts = f"{t.cases} | {t.mismatched_cases} | {t.priors} | {t.mismatched} | {t.ties} | {t.raised}"
        print(f"| {name} | {counts} | {t.max_error:.1e} | {seconds} |", flush=True)


if __name__ == "__main__":
    main()
