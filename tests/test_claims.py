"""The paper's claims: their specs, the statistics, the verdicts on frames and stores written here, seeds needed."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import pandas as pd
import pytest
from conftest import REPO

from atssrepro.errors import UserError
from atssrepro.harness import claim_plan, verdicts
from atssrepro.harness.claims import ClaimSpec
from atssrepro.harness.collect import collect
from atssrepro.harness.plan import run_ids_by_row
from atssrepro.harness.specs import load_table, parse_table
from atssrepro.harness.stats import t_cdf, t_quantile
from atssrepro.harness.store import Store

IDS = [
    "T1-imprs", "T1-each", "T1-gap", "T2-cls", "T2-reg", "T3-retina", "T3-fcos", "T3-lite", "T3-boxpoint",
    "T4-flat", "T4-small", "T4-large", "T5-flat", "T6-flat", "T7-imprs", "T7-atss", "T7-useless",
]  # fmt: skip
CLAIMS_MD = Path(os.environ.get("ATSSREPRO_PAPER", REPO.parent / "shared" / "paper")) / "ATSS_CLAIMS.md"


def paper_claims() -> dict[str, ClaimSpec]:
    return {claim.id: claim for n in range(1, 9) for claim in load_table(f"table{n}").claims}


CLAIMS = paper_claims()


def runs(values: dict[str, list[float]], table: str, preset: str = "paper", metric: str = "AP", **recorded: str):
    """collect()'s lines for ``values`` (row -> one value per seed; [] for a row not run). ``recorded``: row ->
    the preset its runs wrote in run.json, when not ``preset``."""
    lines = []
    for row, seeds in values.items():
        for seed, value in enumerate(seeds or [math.nan]):
            state = "not run" if math.isnan(value) else "done"
            run_preset = "" if state == "not run" else recorded.get(row, preset)
            lines.append({"table": table, "row": row, "seed": seed, "state": state, "metric": metric,
                          "reproduced": value, "preset": preset, "run_preset": run_preset})  # fmt: skip
    return pd.DataFrame(lines)


def judge(claim_id: str, frame: pd.DataFrame, sigma: float = 0.2) -> pd.DataFrame:
    return verdicts.judge_claims([CLAIMS[claim_id]], frame, sigma)


def verdict(claim_id: str, values: dict[str, list[float]], **kwargs) -> str:
    return judge(claim_id, runs(values, CLAIMS[claim_id].table, **kwargs)).iloc[0]["verdict"]


# ---- the 17 claims as data


def test_the_17_claims_load_and_their_numbers_are_the_published_ones():
    assert list(CLAIMS) == IDS
    for claim in CLAIMS.values():
        spec = load_table(claim.table)
        assert claim.table == f"table{claim.id[1]}"
        for part in claim.parts:
            published = [spec.row(row).published[part.metric] for row in part.rows]
            if claim.kind == "flat":  # the band is the paper's min-max over the sweep
                assert claim.band == (min(published), max(published)) and part.paper == round(
                    max(published) - min(published), 9
                )
            else:  # each delta is B - A of the table's numbers
                assert part.paper == pytest.approx(published[1] - published[0], abs=1e-9), (claim.id, part)  # fmt: skip


@pytest.mark.skipif(not CLAIMS_MD.is_file(), reason=f"{CLAIMS_MD} not found: set ATSSREPRO_PAPER to shared/paper")
def test_the_claims_are_atss_claims_md_word_for_word():
    """Statement, table, kind and every number (with its metric) as ATSS_CLAIMS.md's table gives them."""
    found = {}
    for line in CLAIMS_MD.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in IDS:
            found[cells[0]] = cells
    assert list(found) == IDS
    for claim_id, (_, table, statement, _rows, kind, numbers) in found.items():
        claim = CLAIMS[claim_id]
        assert (claim.table, claim.statement) == (f"table{table}", statement)
        assert claim.kind in kind  # "gain (each step)", "equal / flat" (T7-useless: a flat band)
        if claim.kind == "flat":
            assert claim.band == tuple(map(float, re.fullmatch(r"(\d+\.\d)-(\d+\.\d)", numbers).groups()))
        else:
            given = re.findall(r"([+-]?\d+\.\d)(?: (AP\w*))?", numbers)
            assert [float(number) for number, _ in given] == list(claim.deltas)
            assert [metric or "AP" for _, metric in given][: len(claim.metrics)] == list(claim.metrics)


TINY_TABLE = {
    "title": "Table 4", "caption": "k.", "metrics": ["AP"], "sources": {"S1": "the paper"},
    "rows": [{"id": r, "label": r, "published": {"AP": 39.0}} for r in ("k3", "k9", "k19")],
}  # fmt: skip
SMALL = {"id": "T4-small", "statement": "k = 3 drops", "kind": "drop", "rows": ["k9", "k3"], "deltas": [-1.3]}


def tiny_spec(*claims: dict):
    return parse_table({**TINY_TABLE, "claims": list(claims)}, Path("tables/table4.toml"))


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"rows": ["k9", "k33"]}, "rows", "no runnable row 'k33'; did you mean 'k3'"),
        ({"rows": [], "pairs": [["k9", "k7"]]}, "pairs", "no runnable row 'k7'"),
        ({"deltas": []}, "deltas", "one per step"),
        ({"deltas": [0.5]}, "deltas", "< 0 (B worse than A)"),
        ({"deltas": ["big"]}, "deltas", "expected a list of numbers"),
        ({"kind": "flat", "deltas": []}, "band", "[lowest, highest]"),
        ({"kind": "flat", "deltas": [], "band": [39.3, 39.0]}, "band", "must be increasing"),
        ({"kind": "flat", "deltas": [], "band": [39.3]}, "band", "exactly 2 elements"),
        ({"kind": "equal", "deltas": [0.1], "margin": 0.0}, "margin", "> 0"),
        ({"kind": "equal", "deltas": [0.5]}, "deltas", "within the margin"),
        ({"kind": "rise"}, "kind", "expected one of 'gain', 'drop', 'equal', 'flat'"),
        ({"statement": " "}, "statement", "a non-empty string"),
        ({"id": "T4_small"}, "id", "like 'T4-small'"),
        ({"metrics": ["AP50"]}, "metrics", "not reported by table4"),
        ({"rows": [], "pairs": []}, "", "either rows"),
        ({"deltas": [-1.3], "colour": 1}, "colour", "unknown field 'colour'"),
        ({"table": "table3"}, "table", "rows of the table that declares it"),
        ({"statement": "as S2 says"}, "statement", "cites source S2, which [sources] does not define"),
    ],
)
def test_bad_claims_stop_with_one_line_naming_file_claim_and_field(fields, field, words):
    with pytest.raises(UserError) as error:
        tiny_spec({**SMALL, **fields})
    message = str(error.value)
    assert "\n" not in message and re.match(r"tables/table4.toml: (claims\[0\]|claim 'T4-(small|x)')", message)
    assert field in message and words in message, message


def test_a_table_reads_its_claims_and_checks_them_with_its_rows():
    spec = tiny_spec(SMALL, {**SMALL, "id": "T4-large", "rows": ["k9", "k19"], "deltas": [-0.4], "margin": 0.2})
    assert [(claim.id, claim.table, claim.margin) for claim in spec.claims] == [
        ("T4-small", "table4", 0.3), ("T4-large", "table4", 0.2)
    ]  # fmt: skip
    assert tiny_spec({**SMALL, "statement": "k = 3 drops (S1)"}).claims[0].statement == "k = 3 drops (S1)"
    with pytest.raises(UserError, match=r"^tables/table4.toml: claim 'T4-small': duplicate claim id$"):
        tiny_spec(SMALL, SMALL)


@pytest.mark.parametrize(("value", "words"), [("nan", "expected a number"), ("inf", "must be finite"),
                                             ("-inf", "must be finite")])  # fmt: skip
def test_nan_and_inf_in_a_claims_file_are_refused(tmp_path, value, words):
    text = (REPO / "tables" / "table4.toml").read_text(encoding="utf-8")
    (tmp_path / "table4.toml").write_text(text.replace("deltas = [-0.4]", f"deltas = [-0.4]\nmargin = {value}"))
    with pytest.raises(UserError, match=rf"table4.toml: claims\[2\]: margin = {value} is not valid.*{words}"):
        load_table(tmp_path / "table4.toml")


@pytest.mark.parametrize("sigma", [0, -0.2, math.nan, math.inf, True])
def test_a_noise_level_that_is_not_a_positive_number_is_refused(sigma):
    with pytest.raises(UserError, match=r"^--noise = .*: the per-run noise level must be a finite number > 0"):
        verdicts.check_noise(sigma, "--noise")
    with pytest.raises(UserError, match="noise level"):
        verdicts.judge_claims([CLAIMS["T3-fcos"]], runs({}, "table3"), sigma)


# ---- the statistics


@pytest.mark.parametrize(("df", "tabulated"), [(1, 12.706), (2, 4.303), (3, 3.182), (5, 2.571), (10, 2.228),
                                               (30, 2.042), (math.inf, 1.960)])  # fmt: skip
def test_t_quantile_matches_the_printed_table(df, tabulated):
    assert round(t_quantile(0.975, df), 3) == tabulated
    assert t_cdf(t_quantile(0.975, df), df) == pytest.approx(0.975, abs=1e-12)


def test_t_quantile_in_the_far_tail_of_bonferroni_intervals():
    assert round(t_quantile(0.995, 5), 3) == 4.032 and round(t_quantile(0.9995, 4), 3) == 8.610  # printed tables
    for df in (3, 4, 7, 40, 600):
        p = 1 - 0.025 / 15
        assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-12)


# ---- verdicts


def test_the_worked_example_of_docs_claims_md_by_hand():
    """T3-fcos with 3 seeds of FCOS and 2 of FCOS + ATSS.

    means 37.7333 and 39.25: delta = 1.51667
    squares about the means: FCOS 0.13333^2 + 0.16667^2 + 0.03333^2 = 0.046667; ATSS 2 x 0.15^2 = 0.045
    pooled s^2 = (0.046667 + 0.045) / (2 + 1) = 0.030556, s = 0.174801, df = 3, t(0.975; 3) = 3.182446
    half width = 3.182446 x 0.174801 x sqrt(1/3 + 1/2) = 0.507827: interval [1.008840, 2.024493] > 0: holds
    """
    line = judge("T3-fcos", runs({"fcos": [37.6, 37.9, 37.7], "fcos_atss": [39.1, 39.4]}, "table3")).iloc[0]
    assert (line["noise_from"], line["df"], line["n"]) == ("pooled", 3, 2)
    assert line["noise"] == pytest.approx(0.174801, abs=1e-6)
    assert (line["reproduced"], line["low"], line["high"]) == pytest.approx((1.516667, 1.008840, 2.024493), abs=1e-6)
    assert line["verdict"] == "holds" and line["paper"] == 1.4 and line["paper_inside"]


def test_one_seed_uses_the_assumed_noise_several_the_pooled_spread():
    """T1-gap, one seed a row: 37.7 - 37.1 = 0.6 +- 1.959964 x 0.2 x sqrt(2) = 0.554362: [0.045638, 1.154362]."""
    one = judge("T1-gap", runs({"scalar": [37.1], "fcos": [37.7]}, "table1")).iloc[0]
    assert (one["noise_from"], one["noise"], one["df"]) == ("assumed", 0.2, math.inf)
    assert (one["low"], one["high"]) == pytest.approx((0.045638, 1.154362), abs=1e-6)
    assert one["verdict"] == "holds"
    wider = judge("T1-gap", runs({"scalar": [37.1], "fcos": [37.7]}, "table1"), sigma=0.3).iloc[0]
    assert wider["verdict"] == "unresolved"  # 0.6 +- 0.831543
    # A second seed of one row replaces sigma by the spread of that row's seeds: 0.4 / sqrt(2), df = 1
    several = judge("T1-gap", runs({"scalar": [37.1, 37.5], "fcos": [37.7]}, "table1")).iloc[0]
    assert (several["noise_from"], several["df"]) == ("pooled", 1)
    assert several["noise"] == pytest.approx(0.4 / math.sqrt(2))
    assert several["verdict"] == "unresolved"  # t(0.975; 1) = 12.7 makes one degree of freedom wide


@pytest.mark.parametrize(
    ("claim_id", "values", "expected"),
    [
        ("T3-fcos", {"fcos": [37.8], "fcos_atss": [39.2]}, "holds"),
        ("T3-fcos", {"fcos": [37.8, 37.9, 37.7], "fcos_atss": [36.8, 36.9, 36.7]}, "fails"),
        ("T3-fcos", {"fcos": [37.8], "fcos_atss": [38.0]}, "unresolved"),
        ("T3-fcos", {"fcos": [37.8], "fcos_atss": []}, "not run"),
        ("T4-small", {"k9": [39.3], "k3": [38.0]}, "holds"),
        ("T4-small", {"k9": [38.0], "k3": [39.3]}, "fails"),
        ("T4-small", {"k9": [39.3], "k3": [39.1]}, "unresolved"),
        ("T4-small", {"k9": [], "k3": [38.0]}, "not run"),
        ("T3-boxpoint", {"fcos_atss": [39.20, 39.22, 39.18], "retinanet_a1_atss": [39.25, 39.27, 39.23]}, "holds"),
        ("T3-boxpoint", {"fcos_atss": [39.20, 39.22, 39.18], "retinanet_a1_atss": [40.20, 40.22, 40.18]}, "fails"),
        ("T3-boxpoint", {"fcos_atss": [39.2], "retinanet_a1_atss": [39.3]}, "unresolved"),
        ("T3-boxpoint", {"fcos_atss": [39.2], "retinanet_a1_atss": []}, "not run"),
        ("T7-useless", {r: [39.30, 39.31, 39.29] for r in ("atss_3x3", "atss_3x1", "atss_1x3", "atss_1x1")}, "holds"),
        ("T7-useless", {"atss_3x3": [39.30, 39.31, 39.29], "atss_3x1": [39.30, 39.32, 39.28],
                        "atss_1x3": [39.3, 39.31, 39.29], "atss_1x1": [38.0, 38.01, 37.99]}, "fails"),
        ("T7-useless", {r: [39.2 + i / 10] for i, r in enumerate(("atss_3x3", "atss_3x1", "atss_1x3", "atss_1x1"))},
         "unresolved"),
        ("T7-useless", {"atss_3x3": [39.2], "atss_3x1": [39.3], "atss_1x3": [39.2]}, "not run"),
    ],
)  # fmt: skip
def test_each_kind_of_claim_in_each_verdict(claim_id, values, expected):
    assert verdict(claim_id, values) == expected


def test_a_flat_claim_shows_its_widest_pair_with_a_bonferroni_interval():
    """T4-flat, one seed a row: 15 pairs, z(1 - 0.025/15) = 2.935199; widest pair k13 (38.8) -> k9 (39.4)."""
    values = {"k7": [39.1], "k9": [39.4], "k11": [39.1], "k13": [38.8], "k15": [39.1], "k17": [39.2]}
    line = judge("T4-flat", runs(values, "table4")).iloc[0]
    half = 2.935199 * 0.2 * math.sqrt(2)
    assert (line["reproduced"], line["low"], line["high"]) == pytest.approx((0.6, 0.6 - half, 0.6 + half), abs=1e-6)
    assert line["margin"] == 0.3 and line["paper"] == 0.3 and line["verdict"] == "unresolved"
    assert line["note"].startswith("widest pair k13 -> k9: reproduced band 38.8-39.4, paper 39.0-39.3")


def test_claims_of_several_parts_hold_only_when_every_part_does():
    chain = ["retinanet_a1", "gn", "giou", "in_gt_box", "centerness", "scalar"]
    paper = [32.5, 33.4, 34.9, 35.3, 36.8, 37.0]
    seeds = [-0.02, 0.0, 0.02]  # a spread of 0.02 on every row: every step of the paper's is resolved

    def each(values):
        return judge("T1-each", runs(dict(zip(chain, values)), "table1"))

    lines = each([[ap + s for s in seeds] for ap in paper])
    assert list(lines["part"]) == [0, 1, 2, 3, 4, 5] and list(lines["verdict"]) == ["holds"] * 6
    assert lines.iloc[0]["rows"] == " -> ".join(chain) and lines.iloc[2]["rows"] == "gn -> giou"
    assert lines.iloc[0]["note"] == "5 parts: 5 holds"
    reverted = paper[:4] + [35.0, 37.0]  # centerness below in_gt_box: step 4 fails
    assert each([[ap + s for s in seeds] for ap in reverted]).iloc[0]["verdict"] == "fails"
    single = each([[ap] for ap in paper])  # one seed: +0.2 and +0.4 cannot be told from noise
    assert list(single["verdict"]) == ["unresolved", "holds", "holds", "unresolved", "holds", "unresolved"]
    assert each([[ap + s for s in seeds] for ap in paper[:5]] + [[]]).iloc[0]["verdict"] == "not run"


def test_every_metric_of_t3_retina_is_a_part():
    rows = ("retinanet_a1", "retinanet_a1_atss")
    frame = pd.concat(
        runs({rows[0]: [10.0], rows[1]: [12.5 if metric != "APs" else 10.1]}, "table3", metric=metric)
        for metric in CLAIMS["T3-retina"].metrics
    )
    lines = judge("T3-retina", frame)
    assert list(lines["metric"]) == ["AP, AP50, AP75, APs, APm, APl", "AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert list(lines["verdict"]) == ["unresolved", "holds", "holds", "holds", "unresolved", "holds", "holds"]


def test_runs_of_different_presets_are_never_judged_together():
    values = {"fcos": [37.8, 37.9], "fcos_atss": [39.2, 39.3]}
    line = judge("T3-fcos", runs(values, "table3", fcos_atss="smoke")).iloc[0]
    assert line["verdict"] == "not judged" and "'paper', 'smoke'" in line["note"] and math.isnan(line["reproduced"])
    t1 = judge("T1-gap", runs({"scalar": [37.1], "fcos": [37.7]}, "table1", fcos="my_protocol"))
    assert list(t1["verdict"]) == ["not judged"]
    # Frames of two presets side by side: each preset judged on its own runs, and labelled.
    both = pd.concat([runs(values, "table3"), runs({"fcos": [0.0], "fcos_atss": [0.1]}, "table3", preset="smoke")])
    judged = judge("T3-fcos", both)
    assert list(zip(judged["preset"], judged["verdict"])) == [("paper", "holds"), ("smoke", "unresolved")]


def test_a_store_written_here_gets_verdicts_through_collect(tmp_path):
    """run.json + metrics.json per run, as a run leaves them; collect() carries the preset each run recorded."""
    spec = load_table("table4")
    ids = run_ids_by_row([spec], "paper", 2, None)
    values = {"k9": [0.393, 0.391], "k3": [0.380, 0.381], "k19": [0.390, 0.389]}
    for (_, row, seed), run_id in ids.items():
        if row in values:
            folder = tmp_path / run_id
            folder.mkdir()
            (folder / "run.json").write_text(json.dumps({"state": "done", "preset": "paper"}))
            (folder / "metrics.json").write_text(json.dumps({"stats": {"AP": values[row][seed]}}))
    frame = collect([spec], "paper", 2, Store(tmp_path))
    assert set(frame.loc[frame["row"].isin(values), "run_preset"]) == {"paper"}
    assert set(frame.loc[~frame["row"].isin(values), "run_preset"]) == {""}
    judged = verdicts.judge_claims(spec.claims, frame)
    assert list(judged["verdict"]) == ["not run", "holds", "unresolved"]  # k19: -0.25 +- 0.52 (df 3)


def test_the_forest_plot_is_a_png(tmp_path):
    frame = pd.concat([runs({"fcos": [37.8], "fcos_atss": [39.2], "retinanet_a1_atss": [39.3]}, "table3"),
                       runs({"k9": [39.3], "k3": [38.0], "k19": [39.0]}, "table4")])  # fmt: skip
    lines = verdicts.judge_claims(list(CLAIMS.values()), frame)
    path = verdicts.plot_claims(lines, tmp_path / "plots" / "claims.png")
    assert path.read_bytes().startswith(b"\x89PNG") and not list(path.parent.glob(".*.tmp"))


# ---- seeds needed


def test_seeds_needed_for_a_gain_is_the_closed_form_with_one_seed():
    """T1-gap, delta 0.8, sigma 0.2: n >= 2 sigma^2 (z.975 + z.8)^2 / delta^2 = 0.08 x 2.801585^2 / 0.64 = 0.9811,
    so one seed; its power is Phi(0.8 / (0.2 sqrt 2) - 1.959964) = Phi(0.868463) = 0.8074."""
    z = NormalDist().inv_cdf
    closed_form = 2 * 0.2**2 * (z(0.975) + z(0.8)) ** 2 / 0.8**2
    assert closed_form == pytest.approx(0.9811, abs=1e-4)
    assert claim_plan.seeds_needed(CLAIMS["T1-gap"]) == 1
    assert claim_plan.claim_power(CLAIMS["T1-gap"], 1) == pytest.approx(0.8074, abs=1e-4)


def test_seeds_needed_with_the_pooled_spread_by_hand():
    """T4-large, delta -0.4, sigma 0.2: one seed gives Phi(0.4 / 0.282843 - 1.959964) = 0.29. With n seeds the
    interval uses the pooled spread, df = 2 (n - 1), and P(holds) ~ Phi((lambda - q (1 - 1/(4 df))) / sqrt(1 + q^2 /
    (2 df))), lambda = 0.4 / (0.2 sqrt(2/n)):
      n = 5: df 8, q 2.306004, lambda 3.162278: Phi((3.162278 - 2.233942) / 1.154276) = Phi(0.804254) = 0.7894
      n = 6: df 10, q 2.228139, lambda 3.464102: Phi((3.464102 - 2.172436) / 1.117242) = Phi(1.156118) = 0.8762
    """
    claim = CLAIMS["T4-large"]
    assert claim_plan.claim_power(claim, 1) == pytest.approx(0.2926, abs=1e-4)
    assert claim_plan.claim_power(claim, 5) == pytest.approx(0.7894, abs=1e-4)
    assert claim_plan.claim_power(claim, 6) == pytest.approx(0.8762, abs=1e-4)
    assert claim_plan.seeds_needed(claim) == 6
    assert claim_plan.seeds_needed(claim, sigma=2.0) is None  # more than 100 seeds a row


def test_the_seeds_table_of_docs_claims_md_is_what_the_code_computes():
    text = (REPO / "docs" / "claims.md").read_text(encoding="utf-8")
    table = {
        cells[0]: cells[3:]
        for cells in re.findall(r"^\| (T\d-[a-z]+) \| (\w+) \| (\d) \| (\d+) \| (\d+) \| (\d+) \|$", text, re.M)
    }
    assert list(table) == IDS
    for claim_id, seeds in table.items():
        assert [claim_plan.seeds_needed(CLAIMS[claim_id], sigma) for sigma in (0.1, 0.2, 0.3)] == list(map(int, seeds))


def test_claim_costs_cost_the_seeds_in_images_and_hours():
    claims = [CLAIMS["T1-gap"], CLAIMS["T4-large"]]
    images = {("table1", "scalar"): 1000, ("table1", "fcos"): 2000, ("table4", "k9"): 10, ("table4", "k19"): 10}
    device = "cpu: AMD EPYC, 2 cores"  # measured at 0.031 img/s (harness/throughput.py)
    plan = claim_plan.claim_costs(claims, images, device=device)
    assert [c.seeds for c in plan] == [1, 6] and [c.runs for c in plan] == [2, 12]
    assert [c.images for c in plan] == [3000, 120]
    assert [c.hours for c in plan] == pytest.approx([3000 / 0.031 / 3600, 120 / 0.031 / 3600])
    assert [c.hours for c in claim_plan.claim_costs(claims, images, device="TPU v9")] == [None, None]  # never measured
    capped = claim_plan.claim_costs(claims, images, sigma=1.2)
    assert [c.seeds is None for c in capped] == [False, True] and [c.images is None for c in capped] == [False, True]
    with pytest.raises(ValueError, match="no training images for table4/k19"):
        claim_plan.claim_costs(claims, {key: v for key, v in images.items() if key[1] != "k19"})


def test_the_claims_modules_import_no_heavy_library():
    """``report`` and ``run --dry-run`` stay fast: matplotlib is imported on use, torch and scipy never."""
    heavy = "{'torch', 'matplotlib', 'scipy'}"
    probe = f"import sys, atssrepro.harness.verdicts; print(*sorted({heavy} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
