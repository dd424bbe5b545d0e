"""The claims section of a report: does the paper's argument hold on these runs?

The verdicts of ``harness/verdicts.py`` (one line per claim, then one per part of a claim of several)
laid out as one :class:`TableView` per preset, so that every text format writes them as it writes
the tables; csv is the verdict frame itself and json its records. ``report`` puts the section after
the tables; ``report --claims`` prints it alone (:func:`render_claims`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import pandas as pd

from atssrepro import config as cfg
from atssrepro.harness.report.formats import DECIMALS, html_report, latex, markdown, terminal
from atssrepro.harness.report.views import MISSING, TableView
from atssrepro.harness.specs import TableSpec
from atssrepro.harness.verdicts import LEVEL, VERDICTS, judge_claims

HEADER = ["Claim", "Rows compared (B - A)", "Paper", f"Reproduced [{LEVEL:.0%} interval]", "Seeds", "Noise", "Verdict"]
LEGEND = "Does the paper's argument hold? Each of its conclusions judged on the runs (docs/claims.md)."
CELLS = (
    "Cells: the paper's difference B - A (equal, flat: ± the margin called negligible), the reproduced one with its "
    "interval, the fewest finished seeds of a row compared, and the noise behind the interval."
)
RULE = (
    "A gain holds when its interval lies above 0 and fails below 0, a drop the mirror; an equal or flat claim holds "
    "when its intervals lie inside ± the margin and fails when one lies wholly outside it; anything else is unresolved "
    "(docs/claims.md)."
)


def claim_verdicts(specs: Sequence[TableSpec], frame: pd.DataFrame, noise: float) -> pd.DataFrame:
    """The verdicts of every claim of ``specs`` on the runs of ``frame`` (``collect()``), noise ``noise`` AP points
    assumed where a claim's rows have no repeated seeds."""
    return judge_claims([claim for spec in specs for claim in spec.claims], frame, noise)


def claim_views(specs: Sequence[TableSpec], verdicts: pd.DataFrame, noise: float, plot: str = "") -> list[TableView]:
    """One view per preset of ``verdicts``: a section per table, a line per claim and per part; the last
    one shows ``plot``, the path of the forest plot of every preset (``plot_claims``), when given."""
    titles = {spec.name: spec.title for spec in specs}
    views = []
    for preset, lines in verdicts.groupby("preset", sort=False):
        sections: list[tuple[str, list[list[str]]]] = []
        per_claim = lines.groupby("claim")
        lines = lines.assign(
            claim_parts=per_claim["part"].transform("max"), claim_rows=per_claim["rows"].transform("first")
        )
        for table, table_lines in lines.groupby("table", sort=False):
            sections.append((titles.get(table, table), [_cells(line) for line in table_lines.to_dict("records")]))
        claims = lines[lines["part"] == 0]
        counts = Counter(claims["verdict"])
        footer = ["Claim verdicts: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]), RULE]
        if preset and not cfg.is_comparable(preset):
            footer.append(f"Preset {preset}: judged on its own runs, which are never mixed with the paper preset's.")
        runs = f"the runs of preset {preset}" if preset else "the runs"
        caption = (
            f"The paper's conclusions (ATSS_CLAIMS.md) judged on {runs}: noise pooled over a claim's rows run with "
            f"two or more seeds, else {noise:g} AP assumed (--noise). {CELLS}"
        )
        title = f"Claims ({preset} preset)" if preset else "Claims"
        views.append(TableView(title, caption, list(HEADER), sections, footer, ""))
    if views and plot:
        views[-1] = dataclasses.replace(views[-1], plot=plot)
    return views


def _cells(line: dict[str, Any]) -> list[str]:
    """A claim's line: its id and statement; a part's line: the comparison it makes. Multi-line cells wrap in the
    terminal and read "a / b" in markdown and latex."""
    part, kind, note = line["part"], line["kind"], line["note"]
    claim = f"{line['claim']}\n{line['statement']}" if part == 0 else ""
    several_metrics = "," in line["metric"]  # the claim's line lists them: "AP, AP50, ..."
    rows = line["rows"] if line["metric"] == "AP" else f"{line['rows']} ({line['metric']})"
    if part == 0 and line["claim_parts"] > 1:
        # on a line of its own, so that the column wraps in the terminal
        rows = f"{line['claim_parts']} parts" + (", each metric" if several_metrics else "") + f":\n{line['rows']}"
    elif part and line["rows"] == line["claim_rows"]:  # a part of a claim on several metrics
        rows = line["metric"]
    if kind == "flat":  # the rows of the sweep, then the pair the interval is of
        widest = note.partition(":")[0] if note.startswith("widest pair") else "widest pair: none yet"
        rows, note = f"{rows}\n{widest}", ""
    if line["verdict"] == "not run" or part == 0 and line["claim_parts"] > 1:
        note = ""  # the rows not run show in the tables; a claim's parts follow it
    noise = MISSING
    if not math.isnan(line["noise"]):
        noise = f"{line['noise']:.2f} " + (
            f"pooled, df {line['df']:.0f}" if line["noise_from"] == "pooled" else "assumed"
        )
    verdict = line["verdict"] + (f"\n({note})" if note else "")
    seeds = str(line["n"]) if line["n"] else MISSING
    return [claim, rows, _paper(line), _reproduced(line), seeds, noise, verdict]


def _paper(line: dict[str, Any]) -> str:
    if math.isnan(line["paper"]):
        return ""
    if line["kind"] == "flat":
        return f"spread {line['paper']:.1f} (±{line['margin']:.1f})"
    if line["kind"] == "equal":
        return f"{_signed(line['paper'])} (±{line['margin']:.1f})"
    return _signed(line["paper"])


def _reproduced(line: dict[str, Any]) -> str:
    if math.isnan(line["reproduced"]):
        return MISSING
    return f"{_signed(line['reproduced'], 2)} [{_signed(line['low'], 2)}, {_signed(line['high'], 2)}]"


def _signed(value: float, decimals: int = 1) -> str:
    return f"{round(value, decimals) + 0.0:+.{decimals}f}"  # + 0.0: never "-0.00"


def claims_csv(verdicts: pd.DataFrame) -> str:
    return verdicts.to_csv(index=False, float_format=f"%.{DECIMALS}f")


def claims_records(verdicts: pd.DataFrame) -> list[dict[str, Any]]:
    """The verdict frame as JSON-ready records: NaN and NA become None, numbers are rounded."""

    def plain(value: Any) -> Any:
        if value is pd.NA or (isinstance(value, float) and math.isnan(value)):
            return None
        if isinstance(value, float):
            return None if math.isinf(value) else round(value, DECIMALS)
        return value.item() if hasattr(value, "item") else value

    return [{key: plain(value) for key, value in line.items()} for line in verdicts.to_dict("records")]


def render_claims(specs: Sequence[TableSpec], verdicts: pd.DataFrame, fmt: str, noise: float, plot: str = "") -> str:
    """The claims section alone in format ``fmt`` (``report --claims``), with the forest plot ``plot`` (a path
    relative to the report) in html and markdown when given."""
    if fmt == "csv":
        return claims_csv(verdicts)
    if fmt == "json":
        return json.dumps({"claims": claims_records(verdicts)}, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    views = claim_views(specs, verdicts, noise, plot)
    if not views:
        return (
            f"No claims: the paper draws its conclusions from Tables 1-7 ({', '.join(s.name for s in specs)} asked).\n"
        )
    writers = {"terminal": terminal, "markdown": markdown, "latex": latex, "html": html_report}
    return writers[fmt](views, legend=LEGEND)
