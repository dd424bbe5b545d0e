"""Planning the claims: how many seeds per row each claim needs for a decisive verdict, and what they cost.

:func:`seeds_needed` is the fewest seeds per row with which a claim's verdict is "holds" with
probability :data:`POWER` if the paper's numbers are true and runs have noise sigma
(:func:`claim_power`); :func:`claim_costs` costs those seeds per claim, and :func:`claims_plan`
does it for the tables of ``run --dry-run``, with the distinct runs of all claims together (a row
shared by several claims trains once). docs/claims.md derives the power of each kind of claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from atssrepro.harness import throughput
from atssrepro.harness.claims import ClaimSpec
from atssrepro.harness.plan import PlannedRun
from atssrepro.harness.specs import TableSpec
from atssrepro.harness.stats import DEFAULT_SIGMA, LEVEL, check_noise, p_exceeds, t_quantile

if TYPE_CHECKING:
    pass

POWER = 0.8
"""The usual power of a planned experiment: P(verdict "holds") if the paper is right."""
SEED_CAP = 100
"""More seeds a row than this: not affordable, reported as NA."""


def claim_power(claim: ClaimSpec, seeds: int, sigma: float = DEFAULT_SIGMA) -> float:
    """P(verdict "holds") with ``seeds`` seeds on every row, if runs have noise ``sigma`` and the paper's
    numbers are true (a flat sweep: its rows truly equal).

    One seed: the interval uses sigma (df = inf), and each side's probability is exact. More: the
    interval uses the pooled spread, df = rows x (seeds - 1), and :func:`p_exceeds` approximates it.
    A claim holds unless a part, or one side of an equal or flat interval, misses: 1 minus the sum of
    those probabilities, a lower bound (Bonferroni) that is exact for one gain or drop.
    """
    sigma = check_noise(sigma)
    df = math.inf if seeds == 1 else len(claim.row_ids) * (seeds - 1)
    unit = sigma * math.sqrt(2 / seeds)  # the standard error of a difference of two rows' means
    miss = 0.0
    for part in claim.parts:
        if claim.kind == "flat":
            pairs = math.comb(len(part.rows), 2)
            quantile = t_quantile(1 - (1 - LEVEL) / 2 / pairs, df)
            miss += pairs * 2 * (1 - p_exceeds(part.margin / unit, quantile, df))
            continue
        quantile = t_quantile(1 - (1 - LEVEL) / 2, df)
        if claim.kind == "equal":
            inside = (claim.margin - part.paper) / unit, (claim.margin + part.paper) / unit
            miss += 2 - p_exceeds(inside[0], quantile, df) - p_exceeds(inside[1], quantile, df)
        else:
            sign = 1 if claim.kind == "gain" else -1
            miss += 1 - p_exceeds(sign * part.paper / unit, quantile, df)
    return max(0.0, 1.0 - miss)


def seeds_needed(
    claim: ClaimSpec, sigma: float = DEFAULT_SIGMA, power: float = POWER, cap: int = SEED_CAP
) -> int | None:
    """The fewest seeds per row with :func:`claim_power` >= ``power``; None when more than ``cap`` would be needed."""
    sigma = check_noise(sigma)
    return next((seeds for seeds in range(1, cap + 1) if claim_power(claim, seeds, sigma) >= power), None)


@dataclass(frozen=True)
class ClaimCost:
    """One claim's plan (:func:`claim_costs`): the seeds a row needs, their runs, images and device-hours."""

    claim: str
    table: str
    kind: str
    rows: int
    seeds: int | None
    """Seeds per row for a decisive verdict with probability :data:`POWER`; None above the cap."""
    power: float | None
    runs: int | None
    images: int | None
    """Training images of those runs, the claim alone."""
    hours: float | None
    planned_power: float
    """P(holds) with the seeds per row the user plans."""


def claim_costs(
    claims: Sequence[ClaimSpec],
    images_per_run: Mapping[tuple[str, str], int],
    sigma: float = DEFAULT_SIGMA,
    device: str | None = None,
    power: float = POWER,
    cap: int = SEED_CAP,
    planned: int = 1,
) -> list[ClaimCost]:
    """Seeds per row for a decisive verdict of each claim and what they cost; ``planned_power`` is the claim's
    power with ``planned`` seeds a row.

    ``images_per_run[(table, row)]`` is a run's training images (iterations x batch of its resolved
    config). ``seeds`` is None (and the cost too) when more than ``cap``. ``hours``: device-hours on
    ``device`` where :mod:`throughput` has measured it (pass None for presets other than paper: the
    throughputs are measured at the paper's image size). Each claim is costed alone: rows shared
    between claims (Table 3 row 2 = Table 4 k = 9 = ...) train once (:func:`distinct_runs`).
    """
    costs = []
    for claim in claims:
        seeds = seeds_needed(claim, sigma, power, cap)
        per_seed = 0
        for row in claim.row_ids:
            if (claim.table, row) not in images_per_run:
                raise ValueError(f"plan_claims: no training images for {claim.table}/{row} (claim {claim.id})")
            per_seed += images_per_run[claim.table, row]
        images = None if seeds is None else seeds * per_seed
        hours = throughput.device_hours(images, device) if device and images is not None else None
        costs.append(
            ClaimCost(claim.id, claim.table, claim.kind, len(claim.row_ids), seeds,
                      None if seeds is None else claim_power(claim, seeds, sigma),
                      None if seeds is None else seeds * len(claim.row_ids), images, hours,
                      claim_power(claim, planned, sigma))
        )  # fmt: skip
    return costs


def distinct_runs(
    claims: Sequence[ClaimSpec], seeds: Sequence[int | None], run_ids: Mapping[tuple[str, str], str]
) -> dict[str, int]:
    """{run id: seeds it needs} for giving each claim its ``seeds`` per row (None: left out): a run that fills
    rows of several claims (``run_ids[(table, row)]``) trains once, with the most seeds any of them needs."""
    needed: dict[str, int] = {}
    for claim, count in zip(claims, seeds):
        if count is None:
            continue
        for row in claim.row_ids:
            run_id = run_ids[claim.table, row]
            needed[run_id] = max(needed.get(run_id, 0), count)
    return needed


@dataclass(frozen=True)
class ClaimsPlan:
    """The plan of every claim of some tables, and of all of them together."""

    costs: list[ClaimCost]
    sigma: float
    planned: int
    """The seeds per row the user plans (``--seeds``)."""
    runs: int
    """Distinct runs (a run id and a seed) for every affordable claim to get its seeds."""
    images: int
    hours: float | None
    """Device-hours of those runs, None where unmeasured or for a preset not comparable with the paper."""


def claims_plan(
    specs: Sequence[TableSpec],
    runs: Sequence[PlannedRun],
    sigma: float = DEFAULT_SIGMA,
    device: str | None = None,
    planned: int = 1,
    rows: Sequence[str] = (),
) -> ClaimsPlan:
    """Plan the claims of ``specs``; ``runs`` are the one-seed runs of all their rows (``plan(specs, preset)``),
    which give each row's run id and training images. ``device``: None for presets not comparable with the paper
    (the throughputs are measured at its image size). ``rows`` (``run --rows``): only the claims that those rows
    decide, all of whose rows are among them."""
    by_row = {(ref.table, ref.row): run for run in runs for ref in run.rows}
    claims = [claim for spec in specs for claim in spec.claims if not rows or set(claim.row_ids) <= set(rows)]
    images = {key: run.cost for key, run in by_row.items()}
    costs = claim_costs(claims, images, sigma, device, planned=planned)
    run_ids = {key: run.run_id for key, run in by_row.items()}
    needed = distinct_runs(claims, [cost.seeds for cost in costs], run_ids)
    cost = {run.run_id: run.cost for run in runs}
    total = sum(count * cost[run_id] for run_id, count in needed.items())
    hours = throughput.device_hours(total, device) if device else None
    return ClaimsPlan(costs, sigma, planned, sum(needed.values()), total, hours)
