"""Every run's metrics joined to the table specs, as one pandas DataFrame.

>>> from atssrepro.harness.collect import collect
>>> from atssrepro.harness.specs import load_table
>>> frame = collect([load_table("table3")], preset="paper")
>>> frame[frame.metric == "AP"][["row", "reproduced", "published"]]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from atssrepro import config as cfg
from atssrepro.engine.run_state import RunState
from atssrepro.errors import warn
from atssrepro.harness.plan import row_seeds, run_ids_by_row
from atssrepro.harness.specs import TableSpec
from atssrepro.harness.store import Store

COLUMNS = [
    "table", "row", "label", "preset", "run_preset", "seed", "run_id", "state", "metric", "reproduced", "published",
]  # fmt: skip


def collect(
    specs: Sequence[TableSpec],
    preset: cfg.Preset | str = cfg.PAPER,
    seeds: int = 1,
    store: Store | None = None,
    data_root: str | None = None,
) -> pd.DataFrame:
    """One line per (table, row, seed, metric) with the reproduced and the published value.

    Columns: ``table``, ``row`` (row id), ``label``, ``preset`` (its name), ``run_preset`` (the
    preset the run recorded in its run.json: "" before it starts), ``seed`` (-1 for reference-only
    rows), ``run_id``, ``state`` (a ``RunState``: done, running, pending, failed, diverged,
    interrupted, corrupt, not run or reference), ``metric``, ``reproduced`` and ``published``
    (percent; NaN when absent).
    A row's runs are found again by resolving it exactly as ``atssrepro run`` did, so pass the
    same preset, seeds and data root.
    """
    store = store or Store()
    preset = cfg.as_preset(preset)
    ids = run_ids_by_row(specs, preset, seeds, data_root)
    lines = []
    for spec in specs:
        for row in spec.rows:
            if row.reference_only:
                for metric in spec.metrics:
                    published = row.published.get(metric, math.nan)
                    line = [spec.name, row.id, row.label, preset.name, "", -1, "", RunState.REFERENCE, metric]
                    lines.append([*line, math.nan, published])
                continue
            for seed in row_seeds(row, seeds):
                run_id = ids[(spec.name, row.id, seed)]
                metrics = store.metrics(run_id, tta=row.tta)
                stats = metrics["stats"] if metrics else {}
                state = store.state(run_id)
                run_preset = store.info(run_id).get("preset", "")
                if state is RunState.CORRUPT:
                    warn(f"{store.corruption(run_id)}: shown as corrupt")
                if row.tta and state is RunState.DONE and metrics is None:
                    state = RunState.PENDING  # trained, multi-scale evaluation still to do
                run_fields = [spec.name, row.id, row.label, preset.name, run_preset, seed, run_id, state]
                for metric in spec.metrics:
                    value = stats.get(metric)
                    reproduced = 100 * value if value is not None and value >= 0 else math.nan
                    published = row.published.get(metric, math.nan)
                    lines.append([*run_fields, metric, reproduced, published])
    return pd.DataFrame(lines, columns=COLUMNS)
