"""From table rows to distinct training runs: resolve each row's config and merge identical ones.

The same experiment often appears in several tables (Table 3 row 2 = Table 4 k=9 = Table 5
scale 8 = Table 6 1:1 = Table 7 1x1): rows whose resolved configs are equal share one run id,
so the run trains once and fills every table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from atssrepro import config as cfg
from atssrepro.errors import UserError
from atssrepro.harness.specs import RowSpec, TableSpec


@dataclass(frozen=True)
class RowRef:
    table: str
    row: str

    def __str__(self) -> str:
        return f"{self.table}/{self.row}"


@dataclass
class PlannedRun:
    """One training run and the table rows it fills."""

    run_id: str
    config: cfg.Config
    preset: str
    seed: int
    rows: list[RowRef] = field(default_factory=list)
    tta: bool = False
    """Some row evaluates this run with multi-scale testing too."""
    diff: dict[str, Any] = field(default_factory=dict)
    """Config fields that differ from the first table's base (dotted keys)."""

    @property
    def cost(self) -> int:
        """Training images seen: iterations x global batch."""
        return self.config.train.iterations * self.config.train.batch_size


def base_config(spec: TableSpec, preset: str, data_root: str | None = None) -> cfg.Config:
    """The table's ``[base]`` on the defaults, with the preset and data root applied."""
    config = cfg.apply(cfg.Config(), spec.base, f"{spec.source}: [base]")
    return _finish(config, preset, data_root, spec)


def resolve_row(spec: TableSpec, row: RowSpec, preset: str, seed: int, data_root: str | None = None) -> cfg.Config:
    """defaults -> table base -> row config -> preset -> seed -> data root."""
    config = cfg.apply(cfg.Config(), spec.base, f"{spec.source}: [base]")
    config = cfg.apply(config, row.config, f"{spec.source}: row {row.id!r}")
    config = _finish(config, preset, data_root, spec)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def _finish(config: cfg.Config, preset: str, data_root: str | None, spec: TableSpec) -> cfg.Config:
    if preset not in cfg.PRESETS:
        raise UserError(f"unknown preset {preset!r} (presets: {', '.join(cfg.PRESETS)})")
    config = cfg.apply(config, cfg.PRESETS[preset], f"preset {preset!r}")
    if data_root is not None:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=data_root))
    cfg.check_consistency(config)
    return config


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config data as dotted keys: {"model": {"assign": {"topk": 7}}} -> {"model.assign.topk": 7}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def toml_value(value: Any) -> str:
    """``value`` as TOML on one line (``false``, ``"atss"``, ``[640, 800]``): what ``--set KEY=VALUE`` reads."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


def assignments(data: dict[str, Any]) -> list[str]:
    """Nested config data as ``KEY=VALUE`` strings that ``--set`` accepts as they are."""
    return [f"{key}={toml_value(value)}" for key, value in flatten(data).items()]


def flat_diff(config: cfg.Config, reference: cfg.Config) -> dict[str, Any]:
    """Dotted keys whose values differ between two configs, with the values of ``config``."""
    mine, theirs = flatten(cfg.to_dict(config)), flatten(cfg.to_dict(reference))
    return {key: value for key, value in mine.items() if theirs.get(key) != value and key != "train.seed"}


def plan(
    specs: Sequence[TableSpec],
    preset: str,
    rows: Sequence[str] = (),
    seeds: int = 1,
    data_root: str | None = None,
) -> list[PlannedRun]:
    """The distinct runs that fill ``specs`` (optionally only the row ids in ``rows``).

    Seeds are 0..seeds-1. Reference-only rows need no run. Runs are in order of first appearance.
    """
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: need at least one seed")
    wanted = set(rows)
    known = {row.id for spec in specs for row in spec.rows}
    unknown = wanted - known
    if unknown:
        raise UserError(f"--rows: no row {', '.join(sorted(unknown))} in {', '.join(s.name for s in specs)}")
    runs: dict[str, PlannedRun] = {}
    for spec in specs:
        reference = base_config(spec, preset, data_root)
        for row in spec.runnable_rows:
            if wanted and row.id not in wanted:
                continue
            for seed in range(seeds):
                config = resolve_row(spec, row, preset, seed, data_root)
                run_id = cfg.config_id(config)
                run = runs.setdefault(
                    run_id, PlannedRun(run_id, config, preset, seed, diff=flat_diff(config, reference))
                )
                run.rows.append(RowRef(spec.name, row.id))
                run.tta |= row.tta
    return list(runs.values())


def run_ids_by_row(specs: Sequence[TableSpec], preset: str, seeds: int, data_root: str | None) -> dict:
    """{(table, row, seed): run id} for every runnable row: how results are found again."""
    ids = {}
    for spec in specs:
        for row in spec.runnable_rows:
            for seed in range(seeds):
                ids[(spec.name, row.id, seed)] = cfg.config_id(resolve_row(spec, row, preset, seed, data_root))
    return ids
