"""The text formats of a report: terminal, markdown, latex, html and json (csv is the summary itself)."""

from __future__ import annotations

import html
import io
import json
import math
import re
import urllib.parse
from collections.abc import Sequence

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from atssrepro.harness.report.views import TableView
from atssrepro.harness.specs import TableSpec

TERMINAL_WIDTH = 140
LEGEND = "Cells: reproduced, then published (reproduced - published); mean±std (n=seeds) when several seeds ran."
DECIMALS = 3  # of the numbers in csv and json; the tables print one

# ---- the formats


def terminal(views: Sequence[TableView], legend: str = LEGEND) -> str:
    console = Console(record=True, width=TERMINAL_WIDTH, file=io.StringIO())
    console.print(Text(legend))
    for view in views:
        # The title on its own lines, as wide as the page: as the table's title it would wrap to a narrow table's width.
        title = Text(f"{view.title}. {view.caption}")
        table = Table(box=box.SIMPLE_HEAD, collapse_padding=True)
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
        console.print(title)
        console.print(table)
        for text in view.footer:
            console.print(Text(text))
    return console.export_text()


def markdown(views: Sequence[TableView], legend: str = LEGEND) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_one_line(cell).replace("|", "\\|") for cell in cells) + " |"

    parts = [f"_{legend}_"]
    for view in views:
        rows = [line(view.header), line(["---"] * len(view.header))]
        for heading, lines in view.sections:
            if heading:
                rows.append(line([f"*{heading}*", *[""] * (len(view.header) - 1)]))
            rows.extend(line(cells) for cells in lines)
        parts += [f"## {view.title}", f"*{view.caption}*", "\n".join(rows), "  \n".join(view.footer)]
        if view.note:
            parts.append(view.note)
        if view.plot:
            parts.append(f"![{view.title}]({view.plot.replace(' ', '%20')})")
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


def latex(views: Sequence[TableView], legend: str = LEGEND) -> str:
    def escape(text: str) -> str:
        return _one_line(text).translate(_LATEX_ESCAPES)

    parts = [r"% Needs \usepackage{booktabs} and \usepackage{amssymb} (for \checkmark).", f"% {escape(legend)}"]
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


def html_report(views: Sequence[TableView], legend: str = LEGEND) -> str:
    def row(cells: Sequence[str], tag: str = "td") -> str:
        escaped = (html.escape(cell).replace("\n", "<br>") for cell in cells)
        return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in escaped) + "</tr>"

    body = [f"<p><em>{html.escape(legend)}</em></p>"]
    for view in views:
        body += [f"<h2>{html.escape(view.title)}</h2>", f"<p><em>{_html_text(view.caption)}</em></p>"]
        body += ["<table>", f"<thead>{row(view.header, 'th')}</thead>", "<tbody>"]
        for heading, lines in view.sections:
            if heading:
                body.append(f'<tr class="section"><th colspan="{len(view.header)}">{html.escape(heading)}</th></tr>')
            body.extend(row(cells) for cells in lines)
        body += ["</tbody>", "</table>", *(f"<p>{_html_text(text)}</p>" for text in view.footer)]
        if view.note:
            body.append(f"<p><small>{_html_text(view.note)}</small></p>")
        if view.plot:
            src = html.escape(urllib.parse.quote(view.plot))
            alt = html.escape(f"{view.title}: the plot of {view.plot}")
            body.append(f'<p><a href="{src}"><img src="{src}" alt="{alt}" style="max-width:40em"></a></p>')
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


def _html_text(text: str) -> str:
    """Escaped text, its `code` spans (as notes and footers write them) as <code>."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def json_report(specs: Sequence[TableSpec], summary: pd.DataFrame, claims: list[dict] | None = None) -> str:
    """{"unit": "percent", "tables": [{"name", "title", "caption", "status", "sources",
    "rows": [{..., "metrics": {name: numbers}}]}]}: the numbers in percent, as the paper prints them; and
    "claims": the records of the claims section, when given."""

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
                    # numbers of another recipe beside the row (tables/assigners.toml), never judged
                    **({"context": row.context, "context_source": row.context_source} if row.context else {}),
                }
            )
        tables.append(
            {"name": spec.name, "title": spec.title, "caption": spec.caption, "status": spec.status,
             "sources": spec.sources, "rows": rows}
        )  # fmt: skip
    report = {"unit": "percent", "tables": tables} | ({"claims": claims} if claims is not None else {})
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
