"""Reproduced vs published: summarize the runs of each table, judge them, and lay them out as the paper does.

:func:`summarize` (``summary.py``) reduces the frame of ``collect()`` to one line per (table, row,
metric) with a verdict per row; :func:`render` lays every table out as the paper does
(``views.py``) and writes it in one of :data:`FORMATS` (``formats.py``); :func:`plot_sweeps`
(``plots.py``) draws the tables that sweep one value (Tables 4-6).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from atssrepro.errors import UserError
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


def render(specs: Sequence[TableSpec], frame: pd.DataFrame, fmt: str) -> str:
    """Every table of ``specs`` in format ``fmt`` (one of :data:`FORMATS`), reproduced next to published."""
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r} (formats: {', '.join(FORMATS)})")
    summary = summary_for(specs, frame)
    if fmt == "csv":
        return summary.to_csv(index=False, float_format=f"%.{DECIMALS}f")
    if fmt == "json":
        return json_report(specs, summary)
    views = [view(spec, summary) for spec in specs]
    writers = {"terminal": terminal, "markdown": markdown, "latex": latex, "html": html_report}
    return writers[fmt](views)
