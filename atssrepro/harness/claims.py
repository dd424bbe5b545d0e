"""The paper's conclusions as checkable claims over table rows: :class:`ClaimSpec`, read from TOML.

ATSS_CLAIMS.md lists the 17 conclusions that the paper draws from Tables 1-7. Each is declared
beside its table as one ``[[claims]]`` entry of plain TOML values:

    [[claims]]
    id = "T4-small"
    statement = 'k = 3 gives a "noticeable drop"'
    kind = "drop"
    rows = ["k9", "k3"]
    deltas = [-1.3]

For now the entries live in ``tables/claims/tableN.toml`` and :func:`load_claims` reads them; the
table parser does not know the key yet (issue 19, phase 2 moves each file's block to the end of
``tables/tableN.toml`` and reads it with the table spec). Every field's rule is in its docstring;
:func:`check_claim` holds the rules that span fields or need the table. docs/claims.md says what
each claim compares and how it is judged.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from atssrepro import schema
from atssrepro.errors import UserError
from atssrepro.harness.specs import TABLES_DIR, TableSpec  # the loader is temporary
from atssrepro.schema import ANY, NONEMPTY, Rule, nonempty, positive
from atssrepro.tomlfile import load_toml

CLAIMS_DIR = TABLES_DIR / "claims"
Kind = Literal["gain", "drop", "equal", "flat"]
KINDS: tuple[str, ...] = get_args(Kind)
DEFAULT_MARGIN = 0.3
"""Percent points: ATSS_CLAIMS.md and ASSIGNERS.md §4 call a single-seed difference below this unresolved;
the paper states no margin."""
CLAIM_ID_PATTERN = re.compile(r"^T[1-9]-[a-z]+$")
CLAIM_ID = Rule(
    lambda v: bool(CLAIM_ID_PATTERN.match(v)), "like 'T4-small' (T, the table's number, '-', lowercase letters)"
)
BAND = Rule(length=2, increasing=True)


@dataclass(frozen=True)
class Part:
    """One comparison that a claim's verdict rests on; a claim of several parts holds when all of them do."""

    rows: tuple[str, ...]
    """(A, B) for gain, drop and equal; the whole sweep for flat."""
    metric: str
    paper: float
    """The paper's B - A; for flat, the width of its band (highest - lowest)."""


@dataclass(frozen=True)
class ClaimSpec:
    id: Annotated[str, CLAIM_ID]
    """As ATSS_CLAIMS.md names it: ``T<table>-<word>`` (``T1-imprs``); unique in its table."""
    statement: Annotated[str, NONEMPTY]
    """The paper's words as ATSS_CLAIMS.md gives them."""
    kind: Kind
    """gain: B is better than A; drop: B is worse than A; equal: A and B differ negligibly; flat: no two rows
    of a sweep differ more than its band."""
    rows: Annotated[tuple[str, ...], ANY] = ()
    """Row ids of the table. gain, drop, equal: a chain A, B[, C, ...] judged step by step (A -> B, B -> C);
    a pair is a chain of two. flat: the sweep. Table rule: >= 2 distinct runnable rows of the table; either
    rows or pairs, and flat takes rows."""
    pairs: Annotated[tuple[tuple[str, str], ...], ANY] = ()
    """gain, drop, equal stated for separate comparisons ("for box and for point"): ``[[A, B], [C, D]]``.
    Table rule: each pair two distinct runnable rows of the table; instead of rows."""
    deltas: Annotated[tuple[float, ...], ANY] = ()
    """gain, drop, equal: the paper's B - A in percent points, one per step (chain or pairs), or one per
    metric when metrics names several. Table rule: required for these kinds and only for them; > 0 for
    gain, < 0 for drop, |delta| < margin for equal."""
    band: Annotated[tuple[float, ...], BAND] = ()
    """flat: the paper's lowest and highest value over the rows. Table rule: required for flat and only for it."""
    metrics: Annotated[tuple[str, ...], nonempty(ANY)] = ("AP",)
    """COCO metrics judged, each on its own. Table rule: metrics the table reports, no repeats; several only
    for one gain, drop or equal pair ("on every metric")."""
    margin: Annotated[float, positive()] = DEFAULT_MARGIN
    """equal and flat: the difference, in percent points, that the claim calls negligible (flat uses the
    larger of this and the paper's band width)."""
    table: str = ""
    """The table spec whose rows it compares (``table4``): the file that declares it, never written in TOML."""

    @property
    def steps(self) -> tuple[tuple[str, str], ...]:
        """The (A, B) comparisons of gain, drop and equal: the pairs, or consecutive rows of the chain."""
        return self.pairs or tuple(zip(self.rows, self.rows[1:]))

    @property
    def parts(self) -> tuple[Part, ...]:
        if self.kind == "flat":
            # Rounded: 39.3 - 39.0 is 0.29999999999999716 in floats, and the width is compared with margins.
            return (Part(self.rows, self.metrics[0], round(self.band[1] - self.band[0], 9)),)
        if len(self.metrics) > 1:
            return tuple(Part(self.steps[0], metric, d) for metric, d in zip(self.metrics, self.deltas))
        return tuple(Part(step, self.metrics[0], d) for step, d in zip(self.steps, self.deltas))

    @property
    def row_ids(self) -> tuple[str, ...]:
        """Every row the claim compares, once, in order."""
        return tuple(dict.fromkeys(self.rows + tuple(row for pair in self.pairs for row in pair)))


def load_claims(spec: TableSpec, directory: Path = CLAIMS_DIR) -> tuple[ClaimSpec, ...]:
    """The claims declared for ``spec`` (none when its file does not exist), checked against it."""
    path = directory / f"{spec.name}.toml"
    if not path.is_file():
        return ()
    data = load_toml(path)
    unknown = set(data) - {"claims"}
    if unknown:
        raise UserError(f"{path}: unknown key {sorted(unknown)[0]!r} (keys here: claims)")
    return parse_claims(data.get("claims", []), spec, path)


def parse_claims(raw: Any, spec: TableSpec, source: Path) -> tuple[ClaimSpec, ...]:
    """Build and check the ``[[claims]]`` entries of ``source``; errors name the file, the claim and the field."""
    if not isinstance(raw, list):
        raise UserError(f"{source}: claims must be a list of [[claims]] tables")
    claims: list[ClaimSpec] = []
    for index, item in enumerate(raw):
        claim = schema.read(ClaimSpec, item, f"{source}: claims[{index}]", fixed={"table": spec.name})
        place = f"{source}: claim {claim.id!r}"
        if claim.id in (other.id for other in claims):
            raise UserError(f"{place}: duplicate claim id")
        check_claim(claim, spec, place)
        claims.append(claim)
    return tuple(claims)


def check_claim(claim: ClaimSpec, spec: TableSpec, place: str) -> None:
    """The rules between fields and against the table; ``place`` names the file and the claim."""
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
