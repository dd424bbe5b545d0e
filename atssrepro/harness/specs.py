"""The paper's tables as data: ``tables/tableN.toml`` -> :class:`TableSpec`, validated on load.

A spec names the table, its caption and the metrics the paper reports, a ``[base]`` of config
fields shared by its rows, and one ``[[rows]]`` entry per row (or column) of the paper's table:
the config fields that make it, the published numbers, and how the row is laid out. Specs are
data: nothing in them is executed, and every config key is checked against :class:`Config`.

    title = "Table 4"
    caption = "Analysis of different values of hyperparameter k on the MS COCO minival set."
    metrics = ["AP"]

    [[rows]]
    id = "k3"
    label = "3"
    config = { model.assign.topk = 3 }
    published = { AP = 38.0 }
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from atssrepro import config as cfg
from atssrepro.engine.coco_eval import COCO_STATS
from atssrepro.errors import UserError

TABLES_DIR = Path(__file__).resolve().parents[2] / "tables"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
Layout = Literal["rows", "grid", "checklist"]


@dataclass(frozen=True)
class RowSpec:
    id: str
    """Unique within the table: lowercase letters, digits and underscores."""
    label: str
    """The row's (or column's) name as the paper prints it."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config fields on top of the table's base, as nested TOML (``model.assign.topk = 7``)."""
    published: dict[str, float] = field(default_factory=dict)
    """The paper's numbers for this row, in percent; a metric the paper leaves blank is absent."""
    tta: bool = False
    """Evaluate the trained run with multi-scale + flip testing (Table 8's 50.x rows): the run is
    the same as the row without it, so nothing is trained twice."""
    reference_only: bool = False
    """A competitor's published numbers (Table 8): shown, never run."""
    checkpoint: str = ""
    """Evaluation only (the official model zoo): the file name, relative to ``--zoo-dir``, of an
    official trained checkpoint. The row's run imports it and evaluates it; nothing is trained."""
    note: str = ""
    section: str = ""
    """A heading the row starts (Table 8: "anchor-based two-stage", ...)."""
    info: dict[str, str] = field(default_factory=dict)
    """Text columns of the paper's table (Table 8: Data, Backbone; Table 7: #sc, #ar)."""
    grid: tuple[str, str] = ("", "")
    """layout "grid": the (row, column) cell this entry fills."""
    checked: tuple[str, ...] = ()
    """layout "checklist": the items ticked for this column."""

    @property
    def evaluation_only(self) -> bool:
        """The row evaluates an official checkpoint instead of training its config."""
        return bool(self.checkpoint)


@dataclass(frozen=True)
class TableSpec:
    name: str
    """The file's stem: ``table1``..``table8``."""
    title: str
    caption: str
    metrics: tuple[str, ...]
    """The metrics the paper reports, in its column order (names of ``COCO_STATS``)."""
    rows: tuple[RowSpec, ...]
    base: dict[str, Any] = field(default_factory=dict)
    layout: Layout = "rows"
    status: str = ""
    """How well the published numbers are confirmed (ATSS_TABLES.md)."""
    note: str = ""
    split: str = "minival"
    """The split of the published numbers; the reproduction always evaluates on data.val_ann."""
    info_columns: tuple[str, ...] = ()
    """Names of the text columns that rows fill in ``info``, in order."""
    grid_rows: tuple[str, ...] = ()
    grid_columns: tuple[str, ...] = ()
    grid_corner: str = ""
    checks: tuple[str, ...] = ()
    """layout "checklist": the items, one line each, ticked per column."""
    source: Path = Path()

    def row(self, row_id: str) -> RowSpec:
        for row in self.rows:
            if row.id == row_id:
                return row
        hint = difflib.get_close_matches(row_id, [r.id for r in self.rows], n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise UserError(f"{self.name} has no row {row_id!r}{suggestion} (rows: {', '.join(r.id for r in self.rows)})")

    @property
    def runnable_rows(self) -> tuple[RowSpec, ...]:
        return tuple(r for r in self.rows if not r.reference_only)


def available_tables(directory: Path = TABLES_DIR) -> list[str]:
    """The paper's tables: table1..table8."""
    return sorted((p.stem for p in directory.glob("table*.toml")), key=lambda n: (len(n), n))


def available_specs(directory: Path = TABLES_DIR) -> list[str]:
    """Every spec: the paper's tables, then the others (``zoo``)."""
    tables = available_tables(directory)
    return tables + sorted(p.stem for p in directory.glob("*.toml") if p.stem not in tables)


def load_table(name_or_path: str | Path, directory: Path = TABLES_DIR) -> TableSpec:
    """Load and validate a spec by name (``table3``) or path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        hint = difflib.get_close_matches(str(name_or_path), available_specs(directory), n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        raise UserError(
            f"no table spec {str(name_or_path)!r}{suggestion} (tables: {', '.join(available_specs(directory))})"
        )
    return parse_table(cfg.load_toml(path), path)


def parse_table(data: dict[str, Any], path: Path) -> TableSpec:
    """Build a :class:`TableSpec` from parsed TOML, checking every field; errors name ``path`` and the place."""
    where = str(path)
    table_fields = _fields(TableSpec) - {"name", "rows", "source"}
    _check_keys(data, table_fields | {"rows"}, where)
    for required in ("title", "caption", "metrics", "rows"):
        if required not in data:
            raise UserError(f"{where}: missing {required!r}")
    metrics = _strings(data["metrics"], f"{where}: metrics")
    for metric in metrics:
        if metric not in COCO_STATS:
            raise UserError(f"{where}: metrics: {metric!r} is not a COCO metric (one of {', '.join(COCO_STATS)})")
    if len(set(metrics)) != len(metrics):
        raise UserError(f"{where}: metrics {list(metrics)} names a metric twice")
    base = _typed(data.get("base", {}), dict, f"{where}: base")
    _check_config(base, f"{where}: [base]")

    rows: list[RowSpec] = []
    seen: set[str] = set()
    for index, raw in enumerate(_typed(data["rows"], list, f"{where}: rows")):
        place = f"{where}: rows[{index}]"
        raw = _typed(raw, dict, place)
        _check_keys(raw, _fields(RowSpec), place)
        for required in ("id", "label"):
            if required not in raw:
                raise UserError(f"{place}: missing {required!r}")
        row_id = raw["id"]
        place = f"{where}: row {row_id!r}"
        if not isinstance(row_id, str) or not ID_PATTERN.match(row_id):
            raise UserError(f"{place}: id must be lowercase letters, digits and underscores")
        if row_id in seen:
            raise UserError(f"{place}: duplicate row id")
        seen.add(row_id)
        published = _typed(raw.get("published", {}), dict, f"{place}: published")
        for metric, value in published.items():
            if metric not in metrics:
                raise UserError(
                    f"{place}: published {metric!r} is not among the metrics this table reports ({', '.join(metrics)})"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise UserError(f"{place}: published {metric} = {value!r} must be a number in 0..100 (percent)")
        config = _typed(raw.get("config", {}), dict, f"{place}: config")
        if raw.get("reference_only") and (config or raw.get("tta") or raw.get("checkpoint")):
            raise UserError(f"{place}: a reference_only row has no config, tta or checkpoint: it is never run")
        checkpoint = _typed(raw.get("checkpoint", ""), str, f"{place}: checkpoint")
        if checkpoint and (Path(checkpoint).is_absolute() or ".." in Path(checkpoint).parts):
            raise UserError(f"{place}: checkpoint {checkpoint!r} must be a file name inside --zoo-dir")
        _check_config(config, f"{place}: config")
        row = RowSpec(
            id=row_id,
            label=_typed(raw["label"], str, f"{place}: label"),
            config=config,
            published={k: float(v) for k, v in published.items()},
            tta=_typed(raw.get("tta", False), bool, f"{place}: tta"),
            reference_only=_typed(raw.get("reference_only", False), bool, f"{place}: reference_only"),
            checkpoint=checkpoint,
            note=_typed(raw.get("note", ""), str, f"{place}: note"),
            section=_typed(raw.get("section", ""), str, f"{place}: section"),
            info={
                k: _typed(v, str, f"{place}: info.{k}")
                for k, v in _typed(raw.get("info", {}), dict, f"{place}: info").items()
            },
            grid=_strings(raw.get("grid", ["", ""]), f"{place}: grid", length=2),
            checked=_strings(raw.get("checked", []), f"{place}: checked"),
        )
        rows.append(row)

    spec = TableSpec(
        name=path.stem,
        title=_typed(data["title"], str, f"{where}: title"),
        caption=_typed(data["caption"], str, f"{where}: caption"),
        metrics=metrics,
        rows=tuple(rows),
        base=base,
        layout=_typed(data.get("layout", "rows"), str, f"{where}: layout"),
        status=_typed(data.get("status", ""), str, f"{where}: status"),
        note=_typed(data.get("note", ""), str, f"{where}: note"),
        split=_typed(data.get("split", "minival"), str, f"{where}: split"),
        info_columns=_strings(data.get("info_columns", []), f"{where}: info_columns"),
        grid_rows=_strings(data.get("grid_rows", []), f"{where}: grid_rows"),
        grid_columns=_strings(data.get("grid_columns", []), f"{where}: grid_columns"),
        grid_corner=_typed(data.get("grid_corner", ""), str, f"{where}: grid_corner"),
        checks=_strings(data.get("checks", []), f"{where}: checks"),
        source=path,
    )
    _check_layout(spec, where)
    return spec


def _check_layout(spec: TableSpec, where: str) -> None:
    if spec.layout not in ("rows", "grid", "checklist"):
        raise UserError(f"{where}: layout {spec.layout!r} must be one of 'rows', 'grid', 'checklist'")
    for row in spec.rows:
        unknown_info = set(row.info) - set(spec.info_columns)
        if unknown_info:
            raise UserError(f"{where}: row {row.id!r}: info {sorted(unknown_info)} not in info_columns")
        if spec.layout == "grid" and (row.grid[0] not in spec.grid_rows or row.grid[1] not in spec.grid_columns):
            raise UserError(
                f"{where}: row {row.id!r}: grid {list(row.grid)} must name one of grid_rows and grid_columns"
            )
        unknown_checks = set(row.checked) - set(spec.checks)
        if unknown_checks:
            raise UserError(f"{where}: row {row.id!r}: checked {sorted(unknown_checks)} not in checks")
    if spec.layout == "grid":
        cells = [row.grid for row in spec.rows]
        if len(set(cells)) != len(cells):
            raise UserError(f"{where}: two rows fill the same grid cell")


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(data: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise UserError(f"{where}: unknown field {key!r}{suggestion} (fields: {', '.join(sorted(allowed))})")


def _typed(value: Any, kind: type, where: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise UserError(f"{where}: expected a {kind.__name__}, got {value!r}")
    return value


def _strings(value: Any, where: str, length: int | None = None) -> tuple[str, ...]:
    """A list of strings (of ``length`` items, when given)."""
    items = _typed(value, list, where)
    if not all(isinstance(item, str) for item in items) or (length is not None and len(items) != length):
        count = f"{length} " if length is not None else ""
        raise UserError(f"{where}: expected a list of {count}strings, got {value!r}")
    return tuple(items)


def _check_config(overrides: dict[str, Any], where: str) -> None:
    """Apply the fields to a default config: unknown keys and bad values fail here, with ``where``."""
    cfg.apply(cfg.Config(), overrides, where)
