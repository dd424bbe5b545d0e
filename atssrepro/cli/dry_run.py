"""What ``run --dry-run`` prints: every planned run with its seed and state in the store, the cost of
those not done, then the seeds and cost of a decisive verdict on each claim of the planned tables."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from atssrepro.cli.common import hint_other_settings, make_table, stdout
from atssrepro.engine.run_state import RunState

if TYPE_CHECKING:  # imported on use
    from atssrepro.harness.claim_plan import ClaimsPlan
    from atssrepro.harness.store import Store


def print_plan(runs: list, store: Store, as_json: bool, device: str, claims: ClaimsPlan) -> None:
    """Every planned run with its seed and its state in the store; the cost of those not done yet; then the
    seeds and cost of a decisive verdict on each claim of the tables."""
    from atssrepro.harness.status import describe, run_statuses
    from atssrepro.harness.throughput import cost_line, device_hours

    statuses = run_statuses(runs, store)
    to_do = [run for run, status in zip(runs, statuses) if status.state is not RunState.DONE]
    if as_json:
        for run, status in zip(runs, statuses):
            line = {
                "run_id": run.run_id,
                "rows": [str(r) for r in run.rows],
                "preset": run.preset.name,
                "seed": run.seed,
                "state": str(status.state),
                "iteration": status.iteration,
                "tta": run.tta,
                "config_diff": run.diff,
                "cost_images": run.cost,
                "checkpoint": str(run.checkpoint) if run.checkpoint else None,
                "device": device,
                "device_hours": device_hours(run.cost, device) if run.preset.comparable else None,
            }
            print(json.dumps(line))
        for cost in claims.costs:
            print(json.dumps({**dataclasses.asdict(cost), "noise": claims.sigma, "planned_seeds": claims.planned}))
        return
    from atssrepro import config as cfg
    from atssrepro.harness.plan import assignments

    title = f"{len(runs)} runs, {len(to_do)} to do"
    table = make_table(
        "run", "seed", "rows", "state", "config (differences from the table base)", "images", title=title
    )
    for run, status in zip(runs, statuses):
        diff = "\n".join(assignments(run.diff)) or "(base)"
        cost = f"{run.cost:,}" if run.checkpoint is None else f"evaluation only: {run.checkpoint}"
        table.add_row(run.run_id, str(run.seed), "\n".join(map(str, run.rows)), describe(status), diff, cost)
    stdout.print(table)
    total = sum(r.cost for r in to_do)
    done = len(runs) - len(to_do)
    stdout.print(f"total: {total:,} training images, for the {len(to_do)} runs not done ({done} done already)")
    stdout.print(cost_line(total, device, runs[0].preset if runs else cfg.PAPER))
    if claims.costs:
        print_claims_plan(claims)
    hint_other_settings(store, [run.run_id for run in runs])


def print_claims_plan(claims: ClaimsPlan) -> None:
    """The seeds each claim of the tables needs for a decisive verdict, their cost, and all claims together."""
    from atssrepro.harness.claim_plan import POWER, SEED_CAP

    title = (
        f"{len(claims.costs)} claims: seeds per row for P(holds) >= {POWER:.0%} if the paper's numbers are true, "
        f"at a noise of {claims.sigma:g} AP (--noise)"
    )
    planned = f"P(holds) with {claims.planned} seed{'s' if claims.planned > 1 else ''}"
    table = make_table("claim", "kind", "rows", "seeds per row", "runs", "images", "device-hours", planned, title=title)
    for c in claims.costs:
        seeds = f"> {SEED_CAP}" if c.seeds is None else str(c.seeds)
        hours = "-" if c.hours is None else f"{c.hours:,.0f}"
        runs, images = ("-", "-") if c.seeds is None else (str(c.runs), f"{c.images:,}")
        table.add_row(c.claim, c.kind, str(c.rows), seeds, runs, images, hours, f"{c.planned_power:.2f}")
    stdout.print(table)
    unaffordable = [c.claim for c in claims.costs if c.seeds is None]
    hours = "" if claims.hours is None else f", {claims.hours:,.0f} device-hours"
    stdout.print(
        f"every claim decisive: {claims.runs} distinct runs (a row shared by several claims trains once), "
        f"{claims.images:,} training images{hours}"
        + (f"; left out, more than {SEED_CAP} seeds a row: {', '.join(unaffordable)}" if unaffordable else "")
    )
