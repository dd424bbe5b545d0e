"""From table rows to distinct training runs: resolve each row's config and merge identical ones.

The same experiment often appears in several tables (Table 3 row 2 = Table 4 k=9 = Table 5
scale 8 = Table 6 1:1 = Table 7 1x1): rows whose resolved configs are equal share one run id,
so the run trains once and fills every table.

An evaluation-only row (the official model zoo, ``checkpoint`` in its spec) plans a run that
imports the official checkpoint and evaluates it: it has one seed, and its run id names the
checkpoint as well as the config, so the official weights never share a folder with a run trained
from the same config.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from atssrepro import config as cfg
from atssrepro.errors import UserError, did_you_mean
from atssrepro.harness.specs import RowSpec, TableSpec
from atssrepro.tomlfile import parse_value


@dataclass(frozen=True)
class RowRef:
    table: str
    row: str

    def __str__(self) -> str:
        return f"{self.table}/{self.row}"


@dataclass
class PlannedRun:
    """One run, trained or (``checkpoint``) evaluation-only, and the table rows it fills."""

    run_id: str
    config: cfg.Config
    preset: cfg.Preset
    seed: int
    rows: list[RowRef] = field(default_factory=list)
    tta: bool = False
    """Some row evaluates this run with multi-scale testing too."""
    diff: dict[str, Any] = field(default_factory=dict)
    """Config fields that differ from the first table's base (dotted keys)."""
    checkpoint: Path | None = None
    """Evaluation only: the official checkpoint to import and evaluate instead of training."""

    @property
    def splits(self) -> tuple[str, ...]:
        """The dataset splits the run reads when it starts: "train" and "val", or "val" to evaluate only."""
        return ("val",) if self.checkpoint else ("train", "val")

    @property
    def cost(self) -> int:
        """Training images seen: iterations x global batch (0 for an evaluation-only run)."""
        return 0 if self.checkpoint else self.config.train.iterations * self.config.train.batch_size


def base_config(spec: TableSpec, preset: cfg.Preset | str, data_root: str | None = None) -> cfg.Config:
    """The table's ``[base]`` on the defaults, with the preset and data root applied."""
    return cfg.build_config(_base(spec), preset, data_root=data_root)


def resolve_row(
    spec: TableSpec, row: RowSpec, preset: cfg.Preset | str, seed: int, data_root: str | None = None
) -> cfg.Config:
    """defaults -> table base -> row config -> preset -> seed -> data root (``config.build_config``).

    An evaluation-only row has no pretrained weights (``model.backbone.weights = ""``): its
    checkpoint holds every weight, and the imported run folder records exactly that config.
    """
    layers = [cfg.Layer(row.config, f"{spec.source}: row {row.id!r}")]
    if row.evaluation_only:
        layers.append(cfg.Layer({"model": {"backbone": {"weights": ""}}}, f"{spec.source}: row {row.id!r}"))
    return cfg.build_config(_base(spec), preset, data_root=data_root, row=layers, seed=seed)


def _base(spec: TableSpec) -> cfg.Layer:
    return cfg.Layer(spec.base, f"{spec.source}: [base]")


def row_seeds(row: RowSpec, seeds: int) -> range:
    """The seeds of a row's runs: 0..seeds-1, only 0 for an evaluation-only row (nothing is trained)."""
    return range(1 if row.evaluation_only else seeds)


def row_run_id(row: RowSpec, config: cfg.Config) -> str:
    """The config's id for a trained row; for an evaluation-only row a hash of it and the checkpoint's name."""
    if not row.evaluation_only:
        return cfg.config_id(config)
    return hashlib.sha256(f"{cfg.config_id(config)}:{row.checkpoint}".encode()).hexdigest()[:12]


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
    """``value`` as ``--set KEY=VALUE`` reads it back, in one word that a shell keeps as it is:
    ``false``, ``atss``, ``[640,800]``; quoted for the shell where needed (``'"two words"'``)."""
    if isinstance(value, str) and _SHELL_WORD.fullmatch(value) and parse_value(value) == value:
        return value  # a bare string: --set reads it as the string
    text = _toml(value)
    return text if _SHELL_WORD.fullmatch(text) else shlex.quote(text)


def _toml(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(_toml, value)) + "]"
    return tomli_w.dumps({"v": value}).removeprefix("v = ").strip()


# Characters that a POSIX shell passes on unchanged in an unquoted word.
_SHELL_WORD = re.compile(r"[\w.,:/@%+=\[\]-]+")


def assignments(data: dict[str, Any]) -> list[str]:
    """Nested config data as ``KEY=VALUE`` strings that ``--set`` accepts as they are."""
    return [f"{key}={toml_value(value)}" for key, value in flatten(data).items()]


def flat_diff(config: cfg.Config, reference: cfg.Config) -> dict[str, Any]:
    """Dotted keys whose values differ between two configs, with the values of ``config``."""
    mine, theirs = flatten(cfg.to_dict(config)), flatten(cfg.to_dict(reference))
    return {key: value for key, value in mine.items() if theirs.get(key) != value and key != "train.seed"}


def plan(
    specs: Sequence[TableSpec],
    preset: cfg.Preset | str,
    rows: Sequence[str] = (),
    seeds: int = 1,
    data_root: str | None = None,
    zoo_dir: Path | None = None,
) -> list[PlannedRun]:
    """The distinct runs that fill ``specs`` (optionally only the row ids in ``rows``).

    Seeds are 0..seeds-1. Reference-only rows need no run. Runs are in order of first appearance.
    The checkpoints of evaluation-only rows are files of ``zoo_dir`` (None: their names alone, as
    ``status`` and ``report`` need them).
    """
    if seeds < 1:
        raise UserError(f"--seeds {seeds}: need at least one seed")
    preset = cfg.as_preset(preset)
    wanted = set(rows)
    known = [row.id for spec in specs for row in spec.rows]
    unknown = sorted(wanted - set(known))
    if unknown:
        tables, hint = ", ".join(s.name for s in specs), did_you_mean(unknown[0], known)
        raise UserError(f"--rows {unknown[0]}: no such row in {tables}{hint} (rows: {', '.join(known)})")
    runs: dict[str, PlannedRun] = {}
    for spec in specs:
        reference = base_config(spec, preset, data_root)
        for row in spec.runnable_rows:
            if wanted and row.id not in wanted:
                continue
            if row.evaluation_only and preset.overrides:
                raise UserError(
                    f"{spec.source}: row {row.id!r} evaluates an official checkpoint as it is: use --preset paper"
                )
            checkpoint = Path(zoo_dir or "") / row.checkpoint if row.evaluation_only else None
            for seed in row_seeds(row, seeds):
                config = resolve_row(spec, row, preset, seed, data_root)
                run_id = row_run_id(row, config)
                diff = flat_diff(config, reference)
                run = runs.setdefault(
                    run_id, PlannedRun(run_id, config, preset, seed, diff=diff, checkpoint=checkpoint)
                )
                run.rows.append(RowRef(spec.name, row.id))
                run.tta |= row.tta
    return list(runs.values())


def run_ids_by_row(specs: Sequence[TableSpec], preset: cfg.Preset | str, seeds: int, data_root: str | None) -> dict:
    """{(table, row, seed): run id} for every runnable row: how results are found again."""
    ids = {}
    for spec in specs:
        for row in spec.runnable_rows:
            for seed in row_seeds(row, seeds):
                ids[(spec.name, row.id, seed)] = row_run_id(row, resolve_row(spec, row, preset, seed, data_root))
    return ids
