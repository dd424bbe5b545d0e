"""The paper's layouts: each table as a :class:`TableView` of header cells and lines of cell strings,
which every text format then writes out, so the layout logic exists once.

One line per row (Tables 3-8), Table 2's grid, Table 1's transposed checklist.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pandas as pd

from atssrepro.engine.run_state import RunState
from atssrepro.harness.report.summary import VERDICTS, unjudged_presets
from atssrepro.harness.specs import SOURCE_KEY, RowSpec, TableSpec

MISSING = "—"

# ---- the layouts: a table as the paper lays it out, every cell a string

Cells = dict[tuple[str, str], dict[str, Any]]
"""(row id, metric) -> the summary line of that cell."""
Sections = list[tuple[str, list[list[str]]]]
"""(heading, lines): the heading ("" for none) is printed across the table before its lines."""


@dataclass(frozen=True)
class TableView:
    """One table ready to write: a header line and sections of lines, each a list of cell strings.

    A cell may hold several lines ("\\n"): the terminal stacks them, html breaks them, and the
    one-line formats (markdown, latex) join them with " / ".
    """

    title: str
    caption: str
    header: list[str]
    sections: Sections
    footer: list[str]
    """Verdict counts, the presets that are not judged, the spec's status."""
    note: str
    plot: str = ""
    """The path of the table's plot relative to the report (``report --plots``), or ""."""


def view(spec: TableSpec, summary: pd.DataFrame) -> TableView:
    lines = summary[summary["table"] == spec.name].to_dict("records")
    cells = {(line["row"], line["metric"]): line for line in lines}
    layouts = {"rows": _rows_layout, "grid": _grid_layout, "checklist": _checklist_layout}
    header, sections = layouts[spec.layout](spec, cells)
    return TableView(spec.title, spec.caption, header, sections, _footer(spec, cells), spec.note)


def _rows_layout(spec: TableSpec, cells: Cells) -> tuple[list[str], Sections]:
    """One line per row, the metrics as columns (Tables 3-8); a row's ``section`` starts a new section. A
    spec with context numbers (tables/assigners.toml) gets a last column for them."""
    context = any(row.context for row in spec.rows)
    header = [
        spec.row_header,
        *spec.info_columns,
        *spec.metrics,
        "Verdict",
        *(["Context (not judged)"] if context else []),
    ]
    sections: Sections = []
    for row in spec.rows:
        if row.section or not sections:
            sections.append((row.section, []))
        info = [row.info.get(column, "") for column in spec.info_columns]
        metrics = [_cell(cells[row.id, metric]) for metric in spec.metrics]
        line = [row.label, *info, *metrics, _verdict_text(cells[row.id, spec.metrics[0]])]
        sections[-1][1].append(line + ([_context_cell(row)] if context else []))
    return header, sections


def _context_cell(row: RowSpec) -> str:
    """The row's context AP (else its first context metric) and the source keys it cites: "AP 40.7 (S2)"."""
    if not row.context:
        return ""
    metric = "AP" if "AP" in row.context else next(iter(row.context))
    keys = ", ".join(dict.fromkeys(SOURCE_KEY.findall(row.context_source)))
    return f"{metric} {_number(row.context[metric])} ({keys})"


def _grid_layout(spec: TableSpec, cells: Cells) -> tuple[list[str], Sections]:
    """Table 2: each row spec fills one cell of grid_rows x grid_columns, with its verdict in brackets."""
    metric = spec.metrics[0]
    by_cell = {row.grid: row for row in spec.rows}
    lines = []
    for grid_row in spec.grid_rows:
        line = [grid_row]
        for grid_column in spec.grid_columns:
            row = by_cell.get((grid_row, grid_column))
            line.append(f"{_cell(cells[row.id, metric])}\n[{_verdict_text(cells[row.id, metric])}]" if row else "")
        lines.append(line)
    return [spec.grid_corner, *spec.grid_columns], [("", lines)]


def _checklist_layout(spec: TableSpec, cells: Cells) -> tuple[list[str], Sections]:
    """Table 1, transposed: one column per row spec; lines for the info columns, the checks, the metrics."""
    lines = []
    for column in spec.info_columns:
        # Like the paper's spanning group header: a value is printed only where it changes.
        values = [row.info.get(column, "") for row in spec.rows]
        lines.append([column, *(v if i == 0 or v != values[i - 1] else "" for i, v in enumerate(values))])
    for check in spec.checks:
        lines.append([check, *("✓" if check in row.checked else "" for row in spec.rows)])
    for metric in spec.metrics:
        lines.append([metric, *(_cell(cells[row.id, metric]) for row in spec.rows)])
    lines.append(["Verdict", *(_verdict_text(cells[row.id, spec.metrics[0]]) for row in spec.rows)])
    return ["", *(row.label for row in spec.rows)], [("", lines)]


def _cell(line: dict[str, Any]) -> str:
    """The reproduced value over the published one and the delta, as two lines of a cell.

    "39.4" over "39.3 (+0.1)"; "39.4±0.1 (n=3)" for several seeds; "—" over "39.3" when not run;
    a reference row has only its published value.
    """
    if line["state"] is RunState.REFERENCE:
        return _number(line["published"])
    reproduced = _number(line["mean"])
    if line["n"] > 1:
        reproduced = f"{reproduced}±{_number(line['std'])} (n={line['n']})"
    text = f"{reproduced}\n{_number(line['published'])}"
    if not math.isnan(line["delta"]):
        text += f" ({_signed(line['delta'])})"
    return text


def _verdict_text(line: dict[str, Any]) -> str:
    """The verdict, with the row's state where it says more: "marginal (running)", "diverged"."""
    verdict, state = line["verdict"], line["state"]
    if state in (RunState.DONE, RunState.REFERENCE, RunState.NOT_RUN):
        return verdict
    return str(state) if verdict == "not run" else f"{verdict} ({state})"


def _footer(spec: TableSpec, cells: Cells) -> list[str]:
    row_lines = [cells[row.id, spec.metrics[0]] for row in spec.rows]
    counts = Counter(_counted_as(line) for line in row_lines)
    order = [*VERDICTS, *sorted(set(counts) - set(VERDICTS))]
    footer = ["Verdicts: " + ", ".join(f"{counts[verdict]} {verdict}" for verdict in order if counts[verdict])]
    unjudged = unjudged_presets([line["preset"] for line in row_lines if line["n"] > 0])
    if unjudged:
        footer.append(f"Preset {', '.join(unjudged)}: not comparable with the paper, never judged.")
    if spec.split != "minival":
        footer.append(
            f"Published numbers are on {spec.split}, reproduced ones on the validation split: the verdicts are "
            "indicative only (submit `atssrepro predict` results to the COCO server to compare on the same split)."
        )
    sources = "; ".join(f"{key} = {text}" for key, text in spec.sources.items())
    new = [row.label for row in spec.runnable_rows if not row.published]
    if new:
        footer.append(
            f"New measurements (no published number, never judged against one): {', '.join(new)}. Context: "
            + "; ".join(f"{row.label} = {row.context_source}" for row in spec.rows if row.context)
            + ": each method's own recipe, not these experiments."
        )
    if spec.status:
        # The status cites the source keys ("CONFIRMED (2 sources: S1 + S2)"): say what they are, on its line.
        status = spec.status.rstrip(".")
        footer.append(f"Published numbers: {status}" + (f"; sources: {sources}" if sources else ""))
    elif sources:
        footer.append(f"Sources: {sources}")
    return footer


def _counted_as(line: dict[str, Any]) -> str:
    """A row's verdict in the footer's counts; a row with no verdict counted by its state (corrupt, failed...)."""
    state = line["state"]
    if line["verdict"] == "not run" and state not in (RunState.NOT_RUN, RunState.REFERENCE):
        return str(state)
    return line["verdict"]


def _number(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.1f}"


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0: "+0.0", never "-0.0"
