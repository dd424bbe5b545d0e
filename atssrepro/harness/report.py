"""Reproduced vs published: summarize the runs of each table, judge them, and lay them out as the paper does.

The input is the long frame that ``collect()`` builds, one line per (table, row, seed, metric).
:func:`summarize` reduces it to one line per (table, row, metric) with the mean over seeds, the
delta to the paper and a verdict per row. :func:`render` lays every table out as the paper does
(one line per row, Table 2's grid, Table 1's transposed checklist) and writes it in one of
:data:`FORMATS`; :func:`plot_sweeps` draws the hyper-parameter sweeps of Tables 4-6.

Every layout first becomes a :class:`TableView` (header cells and lines of cell strings), which
each text format then writes out, so the layout logic exists once.
"""

from __future__ import annotations

import html
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write
from atssrepro.harness.specs import RowSpec, TableSpec

if TYPE_CHECKING:  # imported on use: reports without --plots need no matplotlib
    from matplotlib.figure import Figure

FORMATS = ("terminal", "markdown", "csv", "latex", "html", "json")
REPRODUCED, MARGINAL = 0.3, 0.6  # |delta AP| thresholds in AP points (ATSS_IMPLEMENTATION.md §4.3)
VERDICTS = ("reproduced", "marginal", "off", "not comparable", "not run", "reference")
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
# Sweep tables -> the x-axis label of their plot. Labels that all parse as numbers give a numeric
# axis (k, scale); others (aspect ratios "1:4") are categories in row order.
SWEEPS = {
    "table4": "k (candidates per pyramid level)",
    "table5": "anchor scale (x stride S)",
    "table6": "anchor aspect ratio",
}
TERMINAL_WIDTH = 140
LEGEND = "Cells: reproduced, then published (reproduced - published); mean±std (n=seeds) when several seeds ran."
MISSING = "—"
DECIMALS = 3  # of the numbers in csv and json; the tables print one
# A delta computed from one-decimal numbers is off by float noise (39.6 - 39.3 = 0.30000000000000426).
_TOLERANCE = 1e-9
_UNFINISHED = ("corrupt", "diverged", "failed", "interrupted", "running", "pending")  # most telling first


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """One line per (table, row, metric) with ``SUMMARY_COLUMNS``, in the frame's (spec) order."""
    if frame.empty:
        return pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    lines: list[dict[str, Any]] = []
    first_metric = frame.groupby("table", sort=False)["metric"].first()
    for (table, row), runs in frame.groupby(["table", "row"], sort=False):
        state = _row_state(runs["state"])
        preset = ", ".join(runs["preset"].drop_duplicates())
        row_lines = [_metric_line(values, metric) for metric, values in runs.groupby("metric", sort=False)]
        by_metric = {line["metric"]: line for line in row_lines}
        judged = by_metric.get("AP") or by_metric.get(first_metric[table])
        verdict = _verdict(state, preset, judged["n"], judged["delta"]) if judged else "not run"
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


def _row_state(states: pd.Series) -> str:
    """The row's state: "done" when every run is, else the most telling unfinished one."""
    present = set(states)
    if len(present) == 1:
        return present.pop()
    unfinished = present - {"done"}
    for state in _UNFINISHED:
        if state in unfinished:
            return state
    if unfinished == {"not run"}:
        return "pending"  # some seeds are done and the rest have not started: the row is under way
    return sorted(unfinished)[0]


def _verdict(state: str, preset: str, n: int, delta: float) -> str:
    if state == "reference":
        return "reference"
    if n == 0:
        return "not run"
    if preset != "paper" or math.isnan(delta):
        return "not comparable"
    if abs(delta) <= REPRODUCED + _TOLERANCE:
        return "reproduced"
    if abs(delta) <= MARGINAL + _TOLERANCE:
        return "marginal"
    return "off"


def render(specs: Sequence[TableSpec], frame: pd.DataFrame, fmt: str) -> str:
    """Every table of ``specs`` in format ``fmt`` (one of :data:`FORMATS`), reproduced next to published."""
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r} (formats: {', '.join(FORMATS)})")
    summary = _summary_for(specs, frame)
    if fmt == "csv":
        return summary.to_csv(index=False, float_format=f"%.{DECIMALS}f")
    if fmt == "json":
        return _json(specs, summary)
    views = [_view(spec, summary) for spec in specs]
    writers = {"terminal": _terminal, "markdown": _markdown, "latex": _latex, "html": _html}
    return writers[fmt](views)


def _summary_for(specs: Sequence[TableSpec], frame: pd.DataFrame) -> pd.DataFrame:
    """summarize(frame) for ``specs`` in spec order, with a line for every row and metric of the specs.

    Rows missing from the frame get the spec's published numbers, and "not run" (or "reference").
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
    state = "reference" if row.reference_only else "not run"
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
        "verdict": state,
    }
    if known:
        line.update(preset=known["preset"], state=known["state"], verdict=known["verdict"])
    return line


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


def _view(spec: TableSpec, summary: pd.DataFrame) -> TableView:
    lines = summary[summary["table"] == spec.name].to_dict("records")
    cells = {(line["row"], line["metric"]): line for line in lines}
    layouts = {"rows": _rows_layout, "grid": _grid_layout, "checklist": _checklist_layout}
    header, sections = layouts[spec.layout](spec, cells)
    return TableView(spec.title, spec.caption, header, sections, _footer(spec, cells), spec.note)


def _rows_layout(spec: TableSpec, cells: Cells) -> tuple[list[str], Sections]:
    """One line per row, the metrics as columns (Tables 3-8); a row's ``section`` starts a new section."""
    header = ["", *spec.info_columns, *spec.metrics, "Verdict"]
    sections: Sections = []
    for row in spec.rows:
        if row.section or not sections:
            sections.append((row.section, []))
        info = [row.info.get(column, "") for column in spec.info_columns]
        metrics = [_cell(cells[row.id, metric]) for metric in spec.metrics]
        sections[-1][1].append([row.label, *info, *metrics, _verdict_text(cells[row.id, spec.metrics[0]])])
    return header, sections


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
    if line["state"] == "reference":
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
    if state in ("done", "reference", "not run"):
        return verdict
    return state if verdict == "not run" else f"{verdict} ({state})"


def _footer(spec: TableSpec, cells: Cells) -> list[str]:
    row_lines = [cells[row.id, spec.metrics[0]] for row in spec.rows]
    counts = Counter(line["verdict"] for line in row_lines)
    footer = ["Verdicts: " + ", ".join(f"{counts[verdict]} {verdict}" for verdict in VERDICTS if counts[verdict])]
    unjudged = _unjudged_presets(row_lines)
    if unjudged:
        footer.append(f"Preset {', '.join(unjudged)}: not comparable with the paper, never judged.")
    if spec.split != "minival":
        footer.append(
            f"Published numbers are on {spec.split}, reproduced ones on the validation split: the verdicts are "
            "indicative only (submit `atssrepro predict` results to the COCO server to compare on the same split)."
        )
    if spec.status:
        footer.append(f"Status: {spec.status}")
    return footer


def _unjudged_presets(lines: Sequence[dict[str, Any]]) -> list[str]:
    """The presets other than "paper" that produced values among ``lines``."""
    presets = dict.fromkeys(line["preset"] for line in lines if line["n"] > 0)
    return [preset for preset in presets if preset != "paper"]


def _number(value: float) -> str:
    return MISSING if math.isnan(value) else f"{value:.1f}"


def _signed(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # + 0.0 turns -0.0 into 0.0: "+0.0", never "-0.0"


# ---- the formats


def _terminal(views: Sequence[TableView]) -> str:
    console = Console(record=True, width=TERMINAL_WIDTH, file=io.StringIO())
    console.print(Text(LEGEND))
    for view in views:
        title = Text(f"{view.title}. {view.caption}")
        table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, collapse_padding=True)
        columns = list(zip(view.header, *(line for _, lines in view.sections for line in lines)))
        for column in columns:
            # Only the numbers (the multi-line cells) wrap, so that labels and names stay whole.
            table.add_column(Text(column[0]), no_wrap=not any("\n" in cell for cell in column))
        for number, (heading, lines) in enumerate(view.sections):
            if number:
                table.add_section()
            if heading:
                table.add_row(Text(heading, style="italic"))
            for line in lines:
                table.add_row(*(Text(cell) for cell in line))
        console.print()
        console.print(table)
        for text in view.footer:
            console.print(Text(text))
    return console.export_text()


def _markdown(views: Sequence[TableView]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_one_line(cell).replace("|", "\\|") for cell in cells) + " |"

    parts = [f"_{LEGEND}_"]
    for view in views:
        rows = [line(view.header), line(["---"] * len(view.header))]
        for heading, lines in view.sections:
            if heading:
                rows.append(line([f"*{heading}*", *[""] * (len(view.header) - 1)]))
            rows.extend(line(cells) for cells in lines)
        parts += [f"## {view.title}", f"*{view.caption}*", "\n".join(rows), "  \n".join(view.footer)]
        if view.note:
            parts.append(view.note)
    return "\n\n".join(parts) + "\n"


def _one_line(cell: str) -> str:
    return cell.replace("\n", " / ")


_LATEX_ESCAPES = str.maketrans(
    {
        "\\": r"\textbackslash{}",
        "{": r"\{",
        "}": r"\}",
        "_": r"\_",
        "%": r"\%",
        "#": r"\#",
        "&": r"\&",
        "$": r"\$",
        "^": r"\textasciicircum{}",
        "~": r"\textasciitilde{}",
        "✓": r"\checkmark{}",
        "±": r"$\pm$",
        "—": "--",
    }
)


def _latex(views: Sequence[TableView]) -> str:
    def escape(text: str) -> str:
        return _one_line(text).translate(_LATEX_ESCAPES)

    parts = [r"% Needs \usepackage{booktabs} and \usepackage{amssymb} (for \checkmark).", f"% {escape(LEGEND)}"]
    for view in views:
        width = len(view.header)
        rows = [r"\toprule", " & ".join(map(escape, view.header)) + r" \\", r"\midrule"]
        for number, (heading, lines) in enumerate(view.sections):
            if number:
                rows.append(r"\midrule")
            if heading:
                rows.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{escape(heading)}}}}} \\")
            rows.extend(" & ".join(map(escape, cells)) + r" \\" for cells in lines)
        rows.append(r"\bottomrule")
        parts.append(
            "\n".join(
                [
                    f"% {escape(view.title)}",
                    r"\begin{table}[ht]",
                    r"\centering",
                    rf"\caption{{{escape(view.caption)}}}",
                    rf"\begin{{tabular}}{{l{'l' * (width - 1)}}}",
                    *rows,
                    r"\end{tabular}",
                    *(f"% {escape(text)}" for text in view.footer),
                    r"\end{table}",
                ]
            )
        )
    return "\n\n".join(parts) + "\n"


_HTML_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "th,td{border-bottom:1px solid #ccc;padding:.25em .6em;text-align:left}"
    "tr.section th{font-style:italic;font-weight:normal;background:#f4f4f4}"
)


def _html(views: Sequence[TableView]) -> str:
    def row(cells: Sequence[str], tag: str = "td") -> str:
        escaped = (html.escape(cell).replace("\n", "<br>") for cell in cells)
        return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in escaped) + "</tr>"

    body = [f"<p><em>{html.escape(LEGEND)}</em></p>"]
    for view in views:
        body += [f"<h2>{html.escape(view.title)}</h2>", f"<p><em>{html.escape(view.caption)}</em></p>"]
        body += ["<table>", f"<thead>{row(view.header, 'th')}</thead>", "<tbody>"]
        for heading, lines in view.sections:
            if heading:
                body.append(f'<tr class="section"><th colspan="{len(view.header)}">{html.escape(heading)}</th></tr>')
            body.extend(row(cells) for cells in lines)
        body += ["</tbody>", "</table>", *(f"<p>{html.escape(text)}</p>" for text in view.footer)]
        if view.note:
            body.append(f"<p><small>{html.escape(view.note)}</small></p>")
    return (
        "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en">',
                '<head><meta charset="utf-8"><title>ATSS reproduction</title>',
                f"<style>{_HTML_STYLE}</style></head>",
                "<body>",
                "<h1>ATSS reproduction</h1>",
                *body,
                "</body>",
                "</html>",
            ]
        )
        + "\n"
    )


def _json(specs: Sequence[TableSpec], summary: pd.DataFrame) -> str:
    """{"tables": [{"name", "title", "caption", "status", "rows": [{..., "metrics": {name: numbers}}]}]}."""

    def number(value: float) -> float | None:
        return None if math.isnan(value) else round(value, DECIMALS)

    tables = []
    for spec in specs:
        lines = summary[summary["table"] == spec.name].to_dict("records")
        rows = []
        for row in spec.rows:
            row_lines = [line for line in lines if line["row"] == row.id]
            metrics = {
                line["metric"]: {
                    "n": int(line["n"]),
                    **{k: number(line[k]) for k in ("mean", "std", "published", "delta")},
                }
                for line in row_lines
            }
            first = row_lines[0]
            rows.append(
                {
                    "id": row.id,
                    "label": row.label,
                    "preset": first["preset"],
                    "state": first["state"],
                    "verdict": first["verdict"],
                    "metrics": metrics,
                }
            )
        tables.append(
            {"name": spec.name, "title": spec.title, "caption": spec.caption, "status": spec.status, "rows": rows}
        )
    return json.dumps({"tables": tables}, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ---- plots


def plot_sweeps(specs: Sequence[TableSpec], frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """One PNG per sweep table among ``specs`` (Tables 4-6): published and reproduced AP against the swept value."""
    summary = _summary_for(specs, frame)
    paths = []
    for spec in specs:
        if spec.name not in SWEEPS:
            continue
        figure = _sweep_figure(spec, summary[summary["table"] == spec.name], SWEEPS[spec.name])
        path = Path(out_dir) / f"{spec.name}_sweep.png"
        _save_png(figure, path)
        paths.append(path)
    return paths


def _save_png(figure: Figure, path: Path) -> None:
    atomic_write(path, lambda f: figure.savefig(f, format="png", dpi=120), binary=True)


def _sweep_figure(spec: TableSpec, summary: pd.DataFrame, x_label: str) -> Figure:
    metric = "AP" if "AP" in spec.metrics else spec.metrics[0]
    cells = {line["row"]: line for line in summary[summary["metric"] == metric].to_dict("records")}
    lines = [cells[row.id] for row in spec.runnable_rows]
    labels = [row.label for row in spec.runnable_rows]
    try:
        x = [float(label) for label in labels]
    except ValueError:
        x = list(range(len(labels)))

    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.add_subplot()
    axes.plot(x, [line["published"] for line in lines], "o--", color="tab:gray", label="published")
    several_seeds = any(line["n"] > 1 for line in lines)
    axes.errorbar(
        x,
        [line["mean"] for line in lines],
        yerr=[0.0 if math.isnan(line["std"]) else line["std"] for line in lines],
        fmt="s-",
        capsize=3,
        color="tab:blue",
        label="reproduced (mean ± std over seeds)" if several_seeds else "reproduced",
    )
    axes.set_xticks(x, labels)
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{metric} (%)")
    title = f"{spec.title}: {metric} vs {x_label}"
    unjudged = _unjudged_presets(lines)
    if unjudged:
        title += f"\npreset {', '.join(unjudged)}: not comparable with the paper"
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure
