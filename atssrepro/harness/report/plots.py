"""The plots of a report: AP against the swept value of each table that sweeps one (``sweep_axis``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from atssrepro.fileio import atomic_write
from atssrepro.harness.report.summary import summary_for, unjudged_presets
from atssrepro.harness.specs import TableSpec

if TYPE_CHECKING:  # imported on use: reports without --plots need no matplotlib
    from matplotlib.figure import Figure

# ---- plots


def plot_sweeps(specs: Sequence[TableSpec], frame: pd.DataFrame, out_dir: Path) -> list[tuple[TableSpec, Path]]:
    """One PNG per table among ``specs`` that sweeps a value (``sweep_axis``: Tables 4-6): published and
    reproduced AP against the swept value. Returns each plotted table with the path of its PNG."""
    summary = summary_for(specs, frame)
    paths = []
    for spec in specs:
        if not spec.sweep_axis:
            continue
        figure = _sweep_figure(spec, summary[summary["table"] == spec.name], spec.sweep_axis)
        path = Path(out_dir) / f"{spec.name}_sweep.png"
        _save_png(figure, path)
        paths.append((spec, path))
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
    unjudged = unjudged_presets([line["preset"] for line in lines if line["n"] > 0])
    if unjudged:
        title += f"\npreset {', '.join(unjudged)}: not comparable with the paper"
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    return figure
