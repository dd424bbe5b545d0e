"""Reproduced vs published: summarize the runs of each table, judge them, and lay them out as the paper does.

:func:`summarize` (``summary.py``) reduces the frame of ``collect()`` to one line per (table, row,
metric) with a verdict per row; :func:`render` lays every table out as the paper does
(``views.py``) and writes it in one of :data:`FORMATS` (``formats.py``); :func:`plot_sweeps`
(``plots.py``) draws the tables that sweep one value (Tables 4-6).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from atssrepro.errors import UserError, did_you_mean
from atssrepro.harness.report.formats import (
    DECIMALS,
    TERMINAL_WIDTH,
    html_report,
    json_report,
    latex,
    markdown,
    terminal,
)
from atssrepro.harness.report.plots import plot_sweeps
from atssrepro.harness.report.summary import SUMMARY_COLUMNS, VERDICTS, summarize, summary_for
from atssrepro.harness.report.views import view
from atssrepro.harness.specs import TableSpec

FORMATS = ("terminal", "markdown", "csv", "latex", "html", "json")
__all__ = ["FORMATS", "SUMMARY_COLUMNS", "TERMINAL_WIDTH", "VERDICTS", "plot_sweeps", "render", "summarize"]


def render(specs: Sequence[TableSpec], frame: pd.DataFrame, fmt: str, plots: Mapping[str, str] | None = None) -> str:
    """Every table of ``specs`` in format ``fmt`` (one of :data:`FORMATS`), reproduced next to published.

    ``plots``: table name -> the path of its plot (``plot_sweeps``) relative to where the report is
    written, which html shows and links and markdown shows under the table.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}{did_you_mean(fmt, FORMATS)} (formats: {', '.join(FORMATS)})")
    summary = summary_for(specs, frame)
    if fmt == "csv":
        return summary.to_csv(index=False, float_format=f"%.{DECIMALS}f")
    if fmt == "json":
        return json_report(specs, summary)
    views = [dataclasses.replace(view(spec, summary), plot=(plots or {}).get(spec.name, "")) for spec in specs]
    writers = {"terminal": terminal, "markdown": markdown, "latex": latex, "html": html_report}
    return writers[fmt](views)
