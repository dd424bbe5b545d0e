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

A table of the paper ends with the conclusions the paper draws from it, one ``[[claims]]`` entry
each (:class:`~atssrepro.harness.claims.ClaimSpec`), checked against its rows here.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from atssrepro import config as cfg
from atssrepro import schema
from atssrepro.engine.coco_eval import COCO_STATS
from atssrepro.errors import UserError
from atssrepro.harness.claims import ClaimSpec
from atssrepro.schema import Rule

TABLES_DIR = Path(__file__).resolve().parents[2] / "tables"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_]*$")
SOURCE_KEY = re.compile(r"\bS[0-9]+\b")
"""A source key as the specs' text cites it: S1, S4, ..."""
ROW_ID = Rule(lambda v: bool(ID_PATTERN.match(v)), "lowercase letters, digits and underscores")
PERCENT = Rule(lambda v: 0 <= v <= 100, "a number in 0..100 (percent)")


@dataclass(frozen=True)
class RowSpec:
    id: Annotated[str, ROW_ID]
    """Unique within the table."""
    label: str
    """The row's (or column's) name as the paper prints it."""
    config: dict[str, Any] = field(default_factory=dict)
    """Config fields on top of the table's base, as nested TOML (``model.assign.topk = 7``)."""
    published: Annotated[dict[str, float], PERCENT] = field(default_factory=dict)
    """The paper's numbers for this row, in percent; a metric the paper leaves blank is absent."""
    context: Annotated[dict[str, float], PERCENT] = field(default_factory=dict)
    """Numbers reported elsewhere for a related, different experiment (an assigner's own paper, with its own
    head and recipe), in percent: shown beside the row, never judged. Needs ``context_source``."""
    context_source: str = ""
    """What the ``context`` numbers are and where they come from, citing a key of ``[sources]``."""
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
    """The file's stem: ``table1``..``table8``, ``zoo``."""
    title: str
    caption: str
    metrics: tuple[str, ...]
    """The metrics the paper reports, in its column order (names of ``COCO_STATS``)."""
    rows: tuple[RowSpec, ...]
    base: dict[str, Any] = field(default_factory=dict)
    layout: Literal["rows", "grid", "checklist"] = "rows"
    status: str = ""
    """How well the published numbers are confirmed, citing the keys of ``sources``."""
    sources: dict[str, str] = field(default_factory=dict)
    """What each source key cited in ``status`` and the notes means: ``S1 = "arXiv v4 text of the
    paper (1912.02424)"``. Every report prints them, so that it stands on its own."""
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
    sweep_axis: str = ""
    """A table that sweeps one value over its rows (Tables 4-6): the value in words, the x-axis of
    its plot (``report --plots``). Labels that all parse as numbers give a numeric axis."""
    claims: tuple[ClaimSpec, ...] = ()
    """The conclusions the paper draws from the table (``[[claims]]``, after the rows), judged by ``report``."""
    row_header: str = ""
    """layout "rows": the header of the first column, the rows' labels (Table 4: ``k``)."""
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
    spec = schema.read(TableSpec, data, where, fixed={"name": path.stem, "source": path})
    for metric in spec.metrics:
        if metric not in COCO_STATS:
            raise UserError(f"{where}: metrics: {metric!r} is not a COCO metric (one of {', '.join(COCO_STATS)})")
    if len(set(spec.metrics)) != len(spec.metrics):
        raise UserError(f"{where}: metrics {list(spec.metrics)} names a metric twice")
    _check_config(spec.base, f"{where}: [base]")
    seen: set[str] = set()
    for row in spec.rows:
        place = f"{where}: row {row.id!r}"
        if row.id in seen:
            raise UserError(f"{place}: duplicate row id")
        seen.add(row.id)
        for metric in row.published:
            if metric not in spec.metrics:
                raise UserError(
                    f"{place}: published {metric!r} is not among the metrics this table reports "
                    f"({', '.join(spec.metrics)})"
                )
        for metric in row.context:
            if metric not in spec.metrics:
                raise UserError(f"{place}: context {metric!r} is not among the metrics this table reports")
        if bool(row.context) != bool(SOURCE_KEY.search(row.context_source)):
            raise UserError(
                f"{place}: context numbers need a context_source that cites a key of [sources], and only they do"
            )
        if row.reference_only and (row.config or row.tta or row.checkpoint):
            raise UserError(f"{place}: a reference_only row has no config, tta or checkpoint: it is never run")
        if row.checkpoint and (Path(row.checkpoint).is_absolute() or ".." in Path(row.checkpoint).parts):
            raise UserError(f"{place}: checkpoint {row.checkpoint!r} must be a file name inside --zoo-dir")
        _check_config(row.config, f"{place}: config")
    _check_layout(spec, where)
    _check_sources(spec, where)
    _check_claims(spec, where)
    return dataclasses.replace(spec, claims=tuple(dataclasses.replace(c, table=spec.name) for c in spec.claims))


def _check_layout(spec: TableSpec, where: str) -> None:
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


def _check_sources(spec: TableSpec, where: str) -> None:
    """Every source key that the spec's text cites is defined in its ``[sources]``."""
    texts = {"status": spec.status, "note": spec.note, "sources": " ".join(spec.sources.values())}
    texts |= {f"row {row.id!r}: note": row.note for row in spec.rows}
    texts |= {f"claim {claim.id!r}: statement": claim.statement for claim in spec.claims}
    texts |= {f"row {row.id!r}: context_source": row.context_source for row in spec.rows}
    for key in spec.sources:
        if not SOURCE_KEY.fullmatch(key):
            raise UserError(f"{where}: sources: key {key!r} must be S and a number (S1, S4, ...)")
    for place, text in texts.items():
        for key in SOURCE_KEY.findall(text):
            if key not in spec.sources:
                defined = ", ".join(spec.sources) or "none"
                raise UserError(
                    f"{where}: {place} cites source {key}, which [sources] does not define (defined: {defined}); "
                    f'add it: [sources] {key} = "what the source is"'
                )


def _check_claims(spec: TableSpec, where: str) -> None:
    """The rules of each claim between its fields and against the table's rows and metrics."""
    seen: set[str] = set()
    for claim in spec.claims:
        place = f"{where}: claim {claim.id!r}"
        if claim.id in seen:
            raise UserError(f"{place}: duplicate claim id")
        seen.add(claim.id)
        if claim.table:
            raise UserError(f"{place}: table: a claim compares rows of the table that declares it; remove the key")
        _check_claim(claim, spec, place)


def _check_claim(claim: ClaimSpec, spec: TableSpec, place: str) -> None:
    """``place`` names the file and the claim."""
    if len(set(claim.metrics)) != len(claim.metrics):
        raise UserError(f"{place}: metrics {list(claim.metrics)} must name each metric once")
    for metric in claim.metrics:
        if metric not in spec.metrics:
            raise UserError(f"{place}: metrics: {metric!r} is not reported by {spec.name} ({', '.join(spec.metrics)})")
    if bool(claim.rows) == bool(claim.pairs):
        raise UserError(f"{place}: give either rows (a chain, or a flat sweep) or pairs, not both and not neither")
    runnable = [row.id for row in spec.runnable_rows]
    for row in claim.row_ids:
        if row not in runnable:
            hint = difflib.get_close_matches(row, runnable, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            field = "rows" if row in claim.rows else "pairs"
            raise UserError(f"{place}: {field}: {spec.name} has no runnable row {row!r}{suggestion}")
    if len(set(claim.rows)) != len(claim.rows) or len(claim.rows) == 1:
        raise UserError(f"{place}: rows {list(claim.rows)} must be at least two distinct rows")
    if any(a == b for a, b in claim.pairs):
        raise UserError(f"{place}: pairs: each pair compares two different rows")
    if claim.kind == "flat":
        _check_flat(claim, place)
    else:
        _check_deltas(claim, place)


def _check_flat(claim: ClaimSpec, place: str) -> None:
    if claim.pairs:
        raise UserError(f"{place}: pairs: a flat claim takes its sweep as rows")
    if claim.deltas:
        raise UserError(f"{place}: deltas: a flat claim takes the paper's band, not deltas")
    if not claim.band:
        raise UserError(f"{place}: band: a flat claim needs the paper's [lowest, highest] value over the rows")
    if len(claim.metrics) != 1:
        raise UserError(f"{place}: metrics: a flat claim judges one metric")


def _check_deltas(claim: ClaimSpec, place: str) -> None:
    if claim.band:
        raise UserError(f"{place}: band: only a flat claim has a band; a {claim.kind} claim takes deltas")
    steps = len(claim.steps)
    if len(claim.metrics) > 1 and steps > 1:
        raise UserError(f"{place}: metrics: several metrics only for a single pair of rows")
    expected = max(steps, len(claim.metrics))
    if len(claim.deltas) != expected:
        what = "metric" if len(claim.metrics) > 1 else "step"
        raise UserError(
            f"{place}: deltas = {list(claim.deltas)}: a {claim.kind} claim needs the paper's B - A, one per {what} "
            f"({expected})"
        )
    rules = {
        "gain": (lambda d: d > 0, "> 0 (B better than A)"),
        "drop": (lambda d: d < 0, "< 0 (B worse than A)"),
        "equal": (lambda d: abs(d) < claim.margin, f"within the margin, |delta| < {claim.margin}"),
    }
    check, text = rules[claim.kind]
    for delta in claim.deltas:
        if not check(delta):
            raise UserError(f"{place}: deltas: {delta} must be {text} for a {claim.kind} claim")


def _check_config(overrides: dict[str, Any], where: str) -> None:
    """Apply the fields to a default config: unknown keys and bad values fail here, with ``where``."""
    cfg.apply(cfg.Config(), overrides, where)
