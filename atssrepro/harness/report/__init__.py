"""Reproduced vs published: summarize the runs of each table, judge them, and lay them out as the paper does.

:func:`summarize` (``summary.py``) reduces the frame of ``collect()`` to one line per (table, row,
metric) with a verdict per row; :func:`render` lays every table out as the paper does
(``views.py``) and writes it in one of :data:`FORMATS` (``formats.py``); :func:`plot_sweeps`
(``plots.py``) draws the tables that sweep one value (Tables 4-6). The claims of the tables follow
them in every format (``claims_section.py``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd

from atssrepro.errors import UserError, did_you_mean
from atssrepro.harness.report.claims_section import (
    claim_verdicts,
    claim_views,
    claims_csv,
    claims_records,
    render_claims,
)
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
from atssrepro.harness.stats import DEFAULT_SIGMA

FORMATS = ("terminal", "markdown", "csv", "latex", "html", "json")
CLAIMS_PLOT = "claims"
"""The key of ``render``'s ``plots`` for the claims' forest plot (no table spec has this name)."""
__all__ = [
    "CLAIMS_PLOT", "FORMATS", "SUMMARY_COLUMNS", "TERMINAL_WIDTH", "VERDICTS", "claim_verdicts", "plot_sweeps",
    "render", "render_claims", "summarize",
]  # fmt: skip


def render(
    specs: Sequence[TableSpec],
    frame: pd.DataFrame,
    fmt: str,
    plots: Mapping[str, str] | None = None,
    noise: float = DEFAULT_SIGMA,
) -> str:
    """Every table of ``specs`` in format ``fmt`` (one of :data:`FORMATS`), reproduced next to published, then
    the verdicts of their claims (csv: after a blank line, in columns of their own; none when no spec has claims).

    ``plots``: table name -> the path of its plot (``plot_sweeps``) relative to where the report is
    written, which html shows and links and markdown shows under the table; under :data:`CLAIMS_PLOT`,
    the claims' forest plot (``plot_claims``), shown after the claims. ``noise``: the run-to-run
    standard deviation of AP assumed where a claim's rows have no repeated seeds.
    """
    check_format(fmt)
    summary = summary_for(specs, frame)
    verdicts = claim_verdicts(specs, frame, noise)
    if fmt == "csv":
        text = summary.to_csv(index=False, float_format=f"%.{DECIMALS}f")
        return text + ("\n" + claims_csv(verdicts) if len(verdicts) else "")
    if fmt == "json":
        return json_report(specs, summary, claims_records(verdicts) if len(verdicts) else None)
    views = [dataclasses.replace(view(spec, summary), plot=(plots or {}).get(spec.name, "")) for spec in specs]
    views += claim_views(specs, verdicts, noise, (plots or {}).get(CLAIMS_PLOT, ""))
    writers = {"terminal": terminal, "markdown": markdown, "latex": latex, "html": html_report}
    return writers[fmt](views)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown report format {fmt!r}{did_you_mean(fmt, FORMATS)} (formats: {', '.join(FORMATS)})")
