"""Does the paper's argument hold? A verdict per claim from the runs, and a forest plot.

:func:`judge_claims` reads the long frame of ``collect()`` (one line per table, row, seed and metric)
and returns one line per claim, followed by one line per part for claims of several parts, in
:data:`VERDICT_COLUMNS`. :func:`plot_claims` draws each reproduced difference with its interval next
to the paper's. The rule, with a worked example, is in docs/claims.md; the statistics in
``harness/stats.py``; how many seeds a decisive verdict needs in ``harness/claim_plan.py``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean
from typing import Any

import pandas as pd

from atssrepro.fileio import atomic_write
from atssrepro.harness.claims import ClaimSpec, Part
from atssrepro.harness.stats import (
    DEFAULT_SIGMA,
    LEVEL,
    Interval,
    Noise,
    check_noise,
    difference,
    pooled_noise,
    t_quantile,
)

VERDICTS = ("holds", "fails", "unresolved", "not run", "not judged")
FRAME_COLUMNS = ("table", "row", "seed", "state", "metric", "reproduced", "preset", "run_preset")
VERDICT_COLUMNS = (
    "claim",
    "part",  # 0: the claim's own line; 1, 2, ...: its parts when it has several
    "table",
    "kind",
    "preset",
    "statement",
    "rows",
    "metric",
    "n",  # the fewest finished seeds of a row compared
    "noise",
    "noise_from",  # "pooled" over the claim's rows with >= 2 seeds, or "assumed" (sigma)
    "df",
    "paper",  # B - A, or for flat the width of the paper's band
    "reproduced",  # mean B - mean A, or for flat the widest pair's difference (highest - lowest mean)
    "low",
    "high",  # the 95% interval of ``reproduced`` (flat: Bonferroni over its pairs)
    "margin",  # equal: M; flat: W = max(band width, M)
    "paper_inside",
    "verdict",
    "note",
)


def judge_claims(claims: Sequence[ClaimSpec], frame: pd.DataFrame, sigma: float = DEFAULT_SIGMA) -> pd.DataFrame:
    """The verdict of every claim for every preset of ``frame`` (its ``preset`` column), in :data:`VERDICT_COLUMNS`.

    A row's values are the ``reproduced`` of its runs in state done. ``run_preset`` is the preset
    each run recorded in its run.json: a claim whose finished runs recorded several is not judged.
    """
    sigma = check_noise(sigma)
    if not claims:  # a table without claims (zoo, assigners) is judged on any frame: nothing to judge
        return pd.DataFrame(columns=list(VERDICT_COLUMNS))
    if frame.empty:  # no runs at all: every claim is not run
        frame = pd.DataFrame(columns=list(FRAME_COLUMNS))
    missing = set(FRAME_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"judge_claims: the frame lacks the columns {sorted(missing)} (collect() gives them)")
    groups = list(frame.groupby("preset", sort=False)) or [("", frame)]
    lines = [line for preset, runs in groups for claim in claims for line in _judge_claim(claim, runs, preset, sigma)]
    return pd.DataFrame(lines, columns=list(VERDICT_COLUMNS))


def _judge_claim(claim: ClaimSpec, runs: pd.DataFrame, preset: str, sigma: float) -> list[dict[str, Any]]:
    mine = runs[(runs["table"] == claim.table) & runs["row"].isin(claim.row_ids)]
    done = mine[(mine["state"] == "done") & mine["reproduced"].notna()].sort_values("seed")
    values = {key: list(group["reproduced"]) for key, group in done.groupby(["row", "metric"])}
    head = {"claim": claim.id, "table": claim.table, "kind": claim.kind, "preset": preset}
    recorded = sorted(set(done["run_preset"]))
    if len(recorded) > 1:
        unjudged = f"runs of presets {', '.join(map(repr, recorded))}: never judged together"
        parts = [_blank(claim, part, "not judged", unjudged) for part in claim.parts]
    else:
        noises = {
            metric: pooled_noise([values.get((row, metric), []) for row in claim.row_ids], sigma)
            for metric in claim.metrics
        }
        parts = [_judge_part(claim, part, values, noises[part.metric]) for part in claim.parts]
    if len(parts) == 1:
        return [{**head, "part": 0, "statement": claim.statement, **parts[0]}]
    return [{**head, "part": 0, "statement": claim.statement, **_combine(claim, parts)}] + [
        {**head, "part": number, "statement": "", **part} for number, part in enumerate(parts, 1)
    ]


def _blank(claim: ClaimSpec, part: Part, verdict: str, note: str) -> dict[str, Any]:
    """A part's line before any value is known: the paper's side, and NaN for the reproduction."""
    numbers = dict.fromkeys(("noise", "df", "reproduced", "low", "high"), math.nan)
    margin = part.margin
    return {"rows": _rows_text(claim, part), "metric": part.metric, "n": 0, "noise_from": "", "paper": part.paper,
            "margin": margin, "paper_inside": pd.NA, "verdict": verdict, "note": note, **numbers}  # fmt: skip


def _judge_part(claim: ClaimSpec, part: Part, values: dict, noise: Noise) -> dict[str, Any]:
    samples = [values.get((row, part.metric), []) for row in part.rows]
    unrun = [row for row, sample in zip(part.rows, samples) if not sample]
    if unrun:
        return _blank(claim, part, "not run", f"no finished run of {', '.join(unrun)}")
    line = _blank(claim, part, "", "")
    margin = line["margin"]
    if claim.kind == "flat":
        pairs = list(itertools.combinations(range(len(samples)), 2))
        quantile = t_quantile(1 - (1 - LEVEL) / 2 / len(pairs), noise.df)
        intervals = [difference(samples[i], samples[j], noise, quantile) for i, j in pairs]
        order = sorted(range(len(samples)), key=lambda i: fmean(samples[i]))
        low, high = order[0], order[-1]
        shown = difference(samples[low], samples[high], noise, quantile)
        line["note"] = (
            f"widest pair {part.rows[low]} -> {part.rows[high]}: reproduced band "
            f"{fmean(samples[low]):.1f}-{fmean(samples[high]):.1f}, paper {claim.band[0]:.1f}-{claim.band[1]:.1f}; "
            f"intervals Bonferroni over {len(pairs)} pairs"
        )
        verdict = _within(intervals, margin)
    else:
        shown = difference(samples[0], samples[1], noise, t_quantile(1 - (1 - LEVEL) / 2, noise.df))
        verdict = _within([shown], margin) if claim.kind == "equal" else _sign(shown, claim.kind)
    line.update(
        n=min(map(len, samples)),
        noise=noise.sd,
        noise_from=noise.source,
        df=noise.df,
        reproduced=shown.estimate,
        low=shown.low,
        high=shown.high,
        paper_inside=part.paper in shown,
        verdict=verdict,
    )
    return line


def _sign(interval: Interval, kind: str) -> str:
    """gain: holds above 0, fails below 0; drop: the mirror."""
    above, below = interval.low > 0, interval.high < 0
    if kind == "drop":
        above, below = below, above
    return "holds" if above else "fails" if below else "unresolved"


def _within(intervals: Sequence[Interval], margin: float) -> str:
    """equal, flat: holds when every interval lies in [-margin, margin], fails when one lies entirely outside."""
    if all(-margin <= interval.low and interval.high <= margin for interval in intervals):
        return "holds"
    if any(interval.low > margin or interval.high < -margin for interval in intervals):
        return "fails"
    return "unresolved"


def _combine(claim: ClaimSpec, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """A claim of several parts: holds when all hold, fails when one fails, not run while a part is, else unresolved."""
    counts = Counter(part["verdict"] for part in parts)
    if "not judged" in counts:
        verdict, note = "not judged", parts[0]["note"]
    else:
        if counts["fails"]:
            verdict = "fails"
        elif counts["not run"]:
            verdict = "not run"
        else:
            verdict = "holds" if counts["holds"] == len(parts) else "unresolved"
        note = f"{len(parts)} parts: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
    noises = {(part["noise"], part["df"], part["noise_from"]) for part in parts}
    noise, df, source = noises.pop() if len(noises) == 1 else (math.nan, math.nan, "")
    numbers = dict.fromkeys(("paper", "reproduced", "low", "high"), math.nan)
    return {"rows": _rows_text(claim, None), "metric": ", ".join(claim.metrics), "n": min(p["n"] for p in parts),
            "noise": noise, "noise_from": source, "df": df, "margin": parts[0]["margin"], "paper_inside": pd.NA,
            "verdict": verdict, "note": note, **numbers}  # fmt: skip


def _rows_text(claim: ClaimSpec, part: Part | None) -> str:
    """The rows as text: "a -> b" for a comparison, "a, b, c" for a sweep, a whole claim's chain or pairs."""
    if claim.kind == "flat":
        return ", ".join(claim.rows)
    if part is not None:
        return " -> ".join(part.rows)
    return " -> ".join(claim.rows) if claim.rows else "; ".join(" -> ".join(pair) for pair in claim.pairs)


# ---- the forest plot

_COLOURS = {"holds": "tab:green", "fails": "tab:red", "unresolved": "tab:orange"}


def plot_claims(verdicts: pd.DataFrame, path: Path) -> Path:
    """A forest plot PNG at ``path``: per comparison, the reproduced difference with its 95% interval (coloured by
    verdict), the paper's difference (a diamond), and the margin of equal and flat claims (shaded)."""
    multi = set(verdicts.loc[verdicts["part"] > 0, "claim"])
    shown = verdicts[(verdicts["part"] > 0) | ~verdicts["claim"].isin(multi)].reset_index(drop=True)
    several_presets = shown["preset"].nunique() > 1

    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    figure = Figure(figsize=(9, 1.8 + 0.32 * len(shown)), layout="constrained")
    axes = figure.add_subplot()
    axes.axvline(0, color="black", linewidth=0.8)
    labels = []
    for y, line in shown.iterrows():
        margin = line["margin"]
        if not math.isnan(margin):
            axes.fill_betweenx([y - 0.4, y + 0.4], -margin, margin, color="tab:green", alpha=0.12, linewidth=0)
        if line["verdict"] in _COLOURS:
            error = [[line["reproduced"] - line["low"]], [line["high"] - line["reproduced"]]]
            axes.errorbar(line["reproduced"], y, xerr=error, fmt="o", capsize=3, color=_COLOURS[line["verdict"]])
        axes.plot(line["paper"], y, "D", markerfacecolor="none", color="dimgray", zorder=3)
        metric = "" if line["metric"] == "AP" else f" ({line['metric']})"
        preset = f" [{line['preset']}]" if several_presets else ""
        labels.append(f"{line['claim']}{preset}: {_short(line['rows'])}{metric} - {line['verdict']}")
    axes.set_yticks(range(len(shown)), labels, fontsize=8)
    axes.set_ylim(max(len(shown), 1) - 0.5, -0.5)
    axes.set_xlabel("difference B - A in percent points (flat: its widest pair)")
    axes.grid(axis="x", alpha=0.3)
    presets = "" if several_presets else f", preset {shown['preset'].iloc[0]}" if len(shown) else ""
    axes.set_title(f"The paper's claims: reproduced vs published difference{presets}", fontsize=10)
    legend = [
        Line2D([], [], marker="o", color=_COLOURS["holds"], label="reproduced, 95% interval: holds"),
        Line2D([], [], marker="o", color=_COLOURS["unresolved"], label="unresolved"),
        Line2D([], [], marker="o", color=_COLOURS["fails"], label="fails"),
        Line2D([], [], marker="D", linestyle="", markerfacecolor="none", color="dimgray", label="paper"),
        Patch(color="tab:green", alpha=0.12, label="equal / flat margin"),
    ]
    figure.legend(handles=legend, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=120), binary=True)
    return Path(path)


def _short(rows: str, width: int = 48) -> str:
    return rows if len(rows) <= width else rows[: width - 3] + "..."
