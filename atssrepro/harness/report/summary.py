"""Reproduced vs published, one line per (table, row, metric): the mean over seeds, the delta to
the paper and the row's verdict.

The input is the long frame that ``collect()`` builds, one line per (table, row, seed, metric). Only
runs of a preset that keeps the paper's protocol (``Preset.comparable``) are judged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from atssrepro import config as cfg
from atssrepro.engine.run_state import RunState
from atssrepro.harness.specs import RowSpec, TableSpec

REPRODUCED, MARGINAL = 0.3, 0.6  # |delta AP| thresholds in AP points (README, "Reproducing the paper's tables")
VERDICTS = ("reproduced", "marginal", "off", "new measurement", "not comparable", "not run", "reference")
"""``new measurement``: a run of a row without a published number (tables/assigners.toml), never judged."""
SUMMARY_COLUMNS = (
    "table",
    "row",
    "metric",
    "label",
    "preset",
    "n",
    "mean",
    "std",
    "published",
    "delta",
    "state",
    "verdict",
)
# A delta computed from one-decimal numbers is off by float noise (39.6 - 39.3 = 0.30000000000000426).
_TOLERANCE = 1e-9
_UNFINISHED = (
    RunState.CORRUPT, RunState.DIVERGED, RunState.FAILED, RunState.INTERRUPTED, RunState.RUNNING, RunState.PENDING
)  # fmt: skip
"""Most telling first."""


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (table, row, metric) with ``SUMMARY_COLUMNS``, in the frame's (spec) order."""
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    lines: list[dict[str, Any]] = []
    first_metric = frame.groupby("table", sort=False)["metric"].first()
    for (table, row), runs in frame.groupby(["table", "row"], sort=False):
        state = _row_state(runs["state"])
        names = list(runs["preset"].drop_duplicates())
        preset = ", ".join(names)
        comparable = all(cfg.is_comparable(name) for name in names)
        row_lines = [_metric_line(values, metric) for metric, values in runs.groupby("metric", sort=False)]
        by_metric = {line["metric"]: line for line in row_lines}
        judged = by_metric.get("AP") or by_metric.get(first_metric[table])
        new = bool(runs["published"].isna().all())  # no published number at all: a new measurement
        verdict = _verdict(state, comparable, judged["n"], judged["delta"], new) if judged else "not run"
        for line in row_lines:
            lines.append(
                {
                    "table": table,
                    "row": row,
                    **line,
                    "label": runs["label"].iloc[0],
                    "preset": preset,
                    "state": state,
                    "verdict": verdict,
                }
            )
    return pd.DataFrame(lines, columns=list(SUMMARY_COLUMNS))


def _metric_line(values: pd.DataFrame, metric: str) -> dict[str, Any]:
    reproduced = values["reproduced"].dropna()
    published = values["published"].dropna()
    mean = reproduced.mean() if len(reproduced) else math.nan
    published_value = float(published.iloc[0]) if len(published) else math.nan
    return {
        "metric": metric,
        "n": len(reproduced),
        "mean": mean,
        "std": reproduced.std(ddof=1) if len(reproduced) > 1 else math.nan,
        "published": published_value,
        "delta": mean - published_value,
    }


def _row_state(states: pd.Series) -> RunState:
    """The row's state: done when every run is, else the most telling unfinished one."""
    present = {RunState(state) for state in states}
    if len(present) == 1:
        return present.pop()
    unfinished = present - {RunState.DONE}
    for state in _UNFINISHED:
        if state in unfinished:
            return state
    if unfinished == {RunState.NOT_RUN}:
        return RunState.PENDING  # some seeds are done and the rest have not started: the row is under way
    return sorted(unfinished)[0]


def _verdict(state: RunState, comparable: bool, n: int, delta: float, new: bool = False) -> str:
    if state is RunState.REFERENCE:
        return "reference"
    if n == 0:
        return "not run"
    if not comparable:
        return "not comparable"
    if math.isnan(delta):
        return "new measurement" if new else "not comparable"
    if abs(delta) <= REPRODUCED + _TOLERANCE:
        return "reproduced"
    if abs(delta) <= MARGINAL + _TOLERANCE:
        return "marginal"
    return "off"


def summary_for(specs: Sequence[TableSpec], frame: pd.DataFrame) -> pd.DataFrame:
    """summarize(frame) for ``specs`` in spec order, with a line for every row and metric of the specs.

    Rows missing from the frame get the spec's published numbers, and the state not run (or reference).
    """
    summary = summarize(frame)
    records = summary.to_dict("records")
    found = {(line["table"], line["row"], line["metric"]): line for line in records}
    any_line = {(line["table"], line["row"]): line for line in records}
    lines = []
    for spec in specs:
        for row in spec.rows:
            known = any_line.get((spec.name, row.id))
            for metric in spec.metrics:
                line = found.get((spec.name, row.id, metric)) or _unrun_line(spec, row, metric, known)
                lines.append(line)
    return pd.DataFrame(lines, columns=list(SUMMARY_COLUMNS))


def _unrun_line(spec: TableSpec, row: RowSpec, metric: str, known: dict[str, Any] | None) -> dict[str, Any]:
    """A summary line for a metric without a value; row-wide fields come from the row's other lines."""
    state = RunState.REFERENCE if row.reference_only else RunState.NOT_RUN
    line = {
        "table": spec.name,
        "row": row.id,
        "metric": metric,
        "label": row.label,
        "preset": "",
        "n": 0,
        "mean": math.nan,
        "std": math.nan,
        "published": row.published.get(metric, math.nan),
        "delta": math.nan,
        "state": state,
        "verdict": state.value,
    }
    if known:
        line.update(preset=known["preset"], state=known["state"], verdict=known["verdict"])
    return line


def unjudged_presets(presets: Sequence[str]) -> list[str]:
    """The names among ``presets`` (each a name or names joined by ", ") whose runs are never judged."""
    names = dict.fromkeys(name for joined in presets if joined for name in joined.split(", "))
    return [name for name in names if not cfg.is_comparable(name)]
