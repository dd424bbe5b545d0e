"""The paper's conclusions as checkable claims over table rows: :class:`ClaimSpec`, read from TOML.

ATSS_CLAIMS.md lists the 17 conclusions that the paper draws from Tables 1-7. Each is declared
beside its table as one ``[[claims]]`` entry of plain TOML values:

    [[claims]]
    id = "T4-small"
    statement = 'k = 3 gives a "noticeable drop"'
    kind = "drop"
    rows = ["k9", "k3"]
    deltas = [-1.3]

Each table spec ends with its claims (``TableSpec.claims``, read with the rest of the spec by
``specs.load_table``). Every field's rule sits next to it, in its annotation; the rules that span
fields or need the table ("table rule" below) are ``specs._check_claims``. docs/claims.md says what
each claim compares and how it is judged; ``harness/verdicts.py`` judges them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from atssrepro.schema import ANY, NONEMPTY, Rule, nonempty, positive

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
    margin: float = math.nan
    """equal: the claim's margin M; flat: W = max(the band's width, M), within which every pair must lie; NaN for
    gain and drop."""


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
    """The table spec whose rows it compares (``table4``): set from the file that declares it, never written."""

    @property
    def steps(self) -> tuple[tuple[str, str], ...]:
        """The (A, B) comparisons of gain, drop and equal: the pairs, or consecutive rows of the chain."""
        return self.pairs or tuple(zip(self.rows, self.rows[1:]))

    @property
    def parts(self) -> tuple[Part, ...]:
        if self.kind == "flat":
            # Rounded: 39.3 - 39.0 is 0.29999999999999716 in floats, and the width is compared with margins.
            width = round(self.band[1] - self.band[0], 9)
            return (Part(self.rows, self.metrics[0], width, max(width, self.margin)),)
        margin = self.margin if self.kind == "equal" else math.nan
        if len(self.metrics) > 1:
            return tuple(Part(self.steps[0], metric, d, margin) for metric, d in zip(self.metrics, self.deltas))
        return tuple(Part(step, self.metrics[0], d, margin) for step, d in zip(self.steps, self.deltas))

    @property
    def row_ids(self) -> tuple[str, ...]:
        """Every row the claim compares, once, in order."""
        return tuple(dict.fromkeys(self.rows + tuple(row for pair in self.pairs for row in pair)))
