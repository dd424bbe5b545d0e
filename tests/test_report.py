"""The report layer: summaries and verdicts, the three layouts, the six formats, the sweep plots."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from atssrepro.errors import UserError
from atssrepro.harness import report
from atssrepro.harness.specs import TableSpec, available_tables, load_table, parse_table


def make_spec(name: str, **fields: Any) -> TableSpec:
    data = {"title": name.replace("table", "Table "), "caption": f"Caption of {name}.", "metrics": ["AP"], **fields}
    return parse_table(data, Path(f"{name}.toml"))


def rows_spec() -> TableSpec:
    """Like Table 8: info columns, a section, a reference row and two metrics."""
    return make_spec(
        "table3",
        metrics=["AP", "AP50"],
        info_columns=["Backbone"],
        status="CONFIRMED (2 sources)",
        note="A note under the table.",
        rows=[
            {"id": "other", "label": "Other [1]", "reference_only": True, "section": "others:",
             "info": {"Backbone": "R-101"}, "published": {"AP": 28.6}},
            {"id": "base", "label": "RetinaNet (#A=1)", "section": "ours:", "info": {"Backbone": "R-50"},
             "published": {"AP": 37.0, "AP50": 55.1}},
            {"id": "atss", "label": "+ ATSS", "info": {"Backbone": "R-50"}, "published": {"AP": 39.3, "AP50": 57.5}},
        ],
    )  # fmt: skip


def grid_spec() -> TableSpec:
    cells = [("IoU", "Box", 37.0), ("IoU", "Point", 36.9), ("SSC", "Box", 37.8), ("SSC", "Point", 37.7)]
    return make_spec(
        "table2",
        layout="grid",
        grid_corner="Classification \\ Regression",
        grid_rows=["IoU", "SSC"],
        grid_columns=["Box", "Point"],
        rows=[
            {"id": f"{r}_{c}".lower(), "label": f"{r} / {c}", "grid": [r, c], "published": {"AP": ap}}
            for r, c, ap in cells
        ],
    )


def checklist_spec() -> TableSpec:
    return make_spec(
        "table1",
        layout="checklist",
        checks=["GroupNorm", "GIoU Loss"],
        info_columns=["Group"],
        rows=[
            {"id": "fcos", "label": "FCOS", "info": {"Group": "FCOS"}, "checked": ["GroupNorm", "GIoU Loss"],
             "published": {"AP": 37.8}},
            {"id": "plain", "label": "RetinaNet", "info": {"Group": "RetinaNet"}, "published": {"AP": 32.5}},
            {"id": "gn", "label": "+GN", "info": {"Group": "RetinaNet"}, "checked": ["GroupNorm"],
             "published": {"AP": 33.4}},
        ],
    )  # fmt: skip


def sweep_spec(name: str, labels: list[str], published: list[float]) -> TableSpec:
    rows = [
        {"id": f"r{i}", "label": label, "published": {"AP": ap}} for i, (label, ap) in enumerate(zip(labels, published))
    ]
    return make_spec(name, rows=rows, sweep_axis=f"the value swept in {name}")


def frame_lines(
    spec: TableSpec,
    row_id: str,
    values: dict[str, float],
    *,
    seed: int = 0,
    state: str = "done",
    preset: str = "paper",
) -> list[dict[str, Any]]:
    """The collect() lines of one run: one per metric of the spec, NaN where ``values`` has none."""
    row = spec.row(row_id)
    return [
        {"table": spec.name, "row": row.id, "label": row.label, "preset": preset, "seed": seed,
         "run_preset": preset if state == "done" else "", "run_id": f"{row.id}-{seed}" if state != "reference" else "",
         "state": state, "metric": metric,
         "reproduced": values.get(metric, math.nan), "published": row.published.get(metric, math.nan)}
        for metric in spec.metrics
    ]  # fmt: skip


def frame_of(*groups: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([line for group in groups for line in group])


def rows_frame() -> pd.DataFrame:
    spec = rows_spec()
    return frame_of(
        frame_lines(spec, "other", {}, seed=-1, state="reference"),
        *(frame_lines(spec, "base", {"AP": ap, "AP50": 55.0}, seed=s) for s, ap in enumerate([36.8, 37.0, 37.2])),
        frame_lines(spec, "atss", {}, state="not run"),
    )


def summary_line(summary: pd.DataFrame, row: str, metric: str = "AP") -> pd.Series:
    return summary[(summary["row"] == row) & (summary["metric"] == metric)].iloc[0]


# ---- summarize


@pytest.mark.parametrize(
    ("delta", "verdict"),
    [(0.0, "reproduced"), (0.3, "reproduced"), (-0.3, "reproduced"), (0.31, "marginal"), (0.6, "marginal"),
     (-0.6, "marginal"), (0.61, "off"), (-2.0, "off")],
)  # fmt: skip
def test_verdict_thresholds(delta: float, verdict: str) -> None:
    spec = rows_spec()
    summary = report.summarize(frame_of(frame_lines(spec, "atss", {"AP": 39.3 + delta, "AP50": 57.5})))
    assert summary_line(summary, "atss")["verdict"] == verdict


def test_verdict_comes_from_ap_and_holds_for_every_metric() -> None:
    spec = rows_spec()
    summary = report.summarize(frame_of(frame_lines(spec, "atss", {"AP": 39.3, "AP50": 50.0})))
    assert list(summary["verdict"]) == ["reproduced", "reproduced"]
    assert summary_line(summary, "atss", "AP50")["delta"] == pytest.approx(-7.5)


def test_without_ap_the_first_metric_is_judged() -> None:
    spec = make_spec("table9", metrics=["AP50", "AP75"], rows=[{"id": "a", "label": "A", "published": {"AP50": 57.5}}])
    summary = report.summarize(frame_of(frame_lines(spec, "a", {"AP50": 58.5, "AP75": 40.0})))
    assert set(summary["verdict"]) == {"off"}


def test_smoke_runs_are_never_judged() -> None:
    spec = rows_spec()
    summary = report.summarize(frame_of(frame_lines(spec, "atss", {"AP": 39.3, "AP50": 57.5}, preset="smoke")))
    assert summary_line(summary, "atss")["verdict"] == "not comparable"
    assert "Preset smoke: not comparable" in report.render(
        [spec], frame_of(frame_lines(spec, "atss", {"AP": 39.3}, preset="smoke")), "markdown"
    )


def test_seeds_give_mean_std_and_n() -> None:
    line = summary_line(report.summarize(rows_frame()), "base")
    assert (line["n"], line["mean"], line["std"]) == (3, pytest.approx(37.0), pytest.approx(0.2))
    assert line["delta"] == pytest.approx(0.0)
    single = summary_line(report.summarize(frame_of(frame_lines(rows_spec(), "atss", {"AP": 39.0}))), "atss")
    assert single["n"] == 1 and math.isnan(single["std"])


def test_not_run_and_reference_rows() -> None:
    summary = report.summarize(rows_frame())
    not_run = summary_line(summary, "atss")
    assert (not_run["n"], not_run["state"], not_run["verdict"], not_run["published"]) == (0, "not run", "not run", 39.3)
    assert math.isnan(not_run["mean"]) and math.isnan(not_run["delta"])
    reference = summary_line(summary, "other")
    assert (reference["state"], reference["verdict"], reference["published"]) == ("reference", "reference", 28.6)
    assert math.isnan(summary_line(summary, "other", "AP50")["published"])


@pytest.mark.parametrize(
    ("states", "row_state"),
    [(["done", "done"], "done"), (["done", "running"], "running"), (["pending", "failed", "diverged"], "diverged"),
     (["done", "not run"], "pending"), (["not run", "not run"], "not run")],
)  # fmt: skip
def test_row_state(states: list[str], row_state: str) -> None:
    spec = rows_spec()
    frame = frame_of(*(frame_lines(spec, "atss", {}, seed=s, state=state) for s, state in enumerate(states)))
    assert set(report.summarize(frame)["state"]) == {row_state}


def test_summary_keeps_the_frame_order_and_columns() -> None:
    summary = report.summarize(rows_frame())
    assert tuple(summary.columns) == report.SUMMARY_COLUMNS
    assert list(summary["row"]) == ["other", "other", "base", "base", "atss", "atss"]
    assert list(summary["metric"][:2]) == ["AP", "AP50"]
    assert report.summarize(rows_frame().iloc[:0]).empty


# ---- render


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_every_format_renders_the_published_numbers(fmt: str) -> None:
    specs = [rows_spec(), grid_spec(), checklist_spec()]
    text = report.render(specs, rows_frame(), fmt)
    for spec in specs:
        for row in spec.rows:
            for value in row.published.values():
                assert f"{value:.1f}" in text, (spec.name, row.id)


def test_cells_show_reproduced_published_delta_and_seeds() -> None:
    text = report.render([rows_spec()], rows_frame(), "markdown")
    assert (
        "| RetinaNet (#A=1) | R-50 | 37.0±0.2 (n=3) / 37.0 (+0.0) | 55.0±0.0 (n=3) / 55.1 (-0.1) | reproduced |" in text
    )
    assert "| + ATSS | R-50 | — / 39.3 | — / 57.5 | not run |" in text
    assert "| Other [1] | R-101 | 28.6 | — | reference |" in text
    assert "| *others:* |" in text and "| *ours:* |" in text
    assert "*Caption of table3.*" in text
    assert "Verdicts: 1 reproduced, 1 not run, 1 reference" in text
    assert "Published numbers: CONFIRMED (2 sources)" in text and "A note under the table." in text


def test_rows_missing_from_the_frame_show_the_published_numbers() -> None:
    text = report.render([rows_spec(), grid_spec()], frame_of(), "markdown")
    assert "| + ATSS | R-50 | — / 39.3 | — / 57.5 | not run |" in text
    assert "— / 36.9 / [not run]" in text


def test_markdown_grid_has_the_corner_and_both_axes() -> None:
    spec = grid_spec()
    frame = frame_of(frame_lines(spec, "iou_box", {"AP": 37.4}), frame_lines(spec, "ssc_point", {"AP": 37.0}))
    lines = report.render([spec], frame, "markdown").splitlines()
    assert "| Classification \\ Regression | Box | Point |" in lines
    assert "| IoU | 37.4 / 37.0 (+0.4) / [marginal] | — / 36.9 / [not run] |" in lines
    assert "| SSC | — / 37.8 / [not run] | 37.0 / 37.7 (-0.7) / [off] |" in lines


def test_checklist_has_one_column_per_row_with_ticks() -> None:
    spec = checklist_spec()
    lines = report.render([spec], frame_of(frame_lines(spec, "gn", {"AP": 33.5})), "markdown").splitlines()
    assert "|  | FCOS | RetinaNet | +GN |" in lines
    assert "| Group | FCOS | RetinaNet |  |" in lines  # a group is named once, where it starts
    assert "| GroupNorm | ✓ |  | ✓ |" in lines
    assert "| GIoU Loss | ✓ |  |  |" in lines
    assert "| AP | — / 37.8 | — / 32.5 | 33.5 / 33.4 (+0.1) |" in lines
    assert "| Verdict | not run | not run | reproduced |" in lines


def test_unfinished_states_show_next_to_the_verdict() -> None:
    spec = rows_spec()
    frame = frame_of(
        frame_lines(spec, "base", {"AP": 37.5}, seed=0),
        frame_lines(spec, "base", {}, seed=1, state="running"),
        frame_lines(spec, "atss", {}, state="diverged"),
    )
    text = report.render([spec], frame, "markdown")
    assert "| RetinaNet (#A=1) | R-50 | 37.5 / 37.0 (+0.5) | — / 55.1 | marginal (running) |" in text
    assert "| + ATSS | R-50 | — / 39.3 | — / 57.5 | diverged |" in text


def test_terminal_keeps_a_wide_table_within_140_columns() -> None:
    metrics = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    rows = [
        {"id": f"r{i}", "label": f"Competitor number {i} [{i}]", "reference_only": True,
         "info": {"Data": "trainval35k", "Backbone": "ResNeXt-32x8d-101-DCN"},
         "published": dict.fromkeys(metrics, 40.0)}
        for i in range(36)
    ] + [
        {"id": f"ours{i}", "label": "ATSS (Multi-scale testing)", "info": {"Data": "trainval35k",
         "Backbone": "ResNeXt-64x4d-101-DCN"}, "published": dict.fromkeys(metrics, 50.7)}
        for i in range(4)
    ]  # fmt: skip
    spec = make_spec("table8", metrics=metrics, info_columns=["Data", "Backbone"], rows=rows)
    frame = frame_of(
        *(frame_lines(spec, "ours0", dict.fromkeys(metrics, 50.6 + s / 10), seed=s) for s in range(3)),
        frame_lines(spec, "ours1", dict.fromkeys(metrics, 51.7)),
    )
    text = report.render([spec], frame, "terminal")
    assert max(len(line) for line in text.splitlines()) <= report.TERMINAL_WIDTH
    assert "ResNeXt-64x4d-101-DCN" in text and "Competitor number 35 [35]" in text
    for verdict in ("reproduced", "off", "not run"):
        assert verdict in text
    competitors = [line for line in text.splitlines() if "Competitor" in line]
    assert len(competitors) == 36 and all(line.rstrip().endswith("reference") for line in competitors)
    assert "Verdicts: 1 reproduced, 1 off, 2 not run, 36 reference" in text


def test_terminal_lays_out_grid_and_checklist() -> None:
    text = report.render([grid_spec(), checklist_spec()], frame_of(), "terminal")
    assert "Classification \\ Regression" in text and "Point" in text and "SSC" in text
    assert "GroupNorm" in text and text.count("✓") == 3


def test_latex_escapes_specials() -> None:
    spec = make_spec(
        "table7",
        caption="Results (%) with 100% & more",
        info_columns=["#sc"],
        rows=[{"id": "a", "label": "a_b & c", "info": {"#sc": "3"}, "published": {"AP": 39.3}}],
    )
    text = report.render([spec], frame_of(frame_lines(spec, "a", {"AP": 39.1})), "latex")
    assert r"a\_b \& c" in text and r"\#sc" in text and r"(\%) with 100\% \& more" in text
    assert r"\begin{tabular}" in text and r"\toprule" in text and r"\bottomrule" in text
    assert "39.1 / 39.3 (-0.2)" in text
    assert "a_b" not in text


def test_html_is_standalone_and_escaped() -> None:
    spec = make_spec("table7", rows=[{"id": "a", "label": "<b>bold</b> & co", "published": {"AP": 39.3}}])
    text = report.render([spec], frame_of(frame_lines(spec, "a", {"AP": 39.1})), "html")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in text and "<b>bold" not in text
    assert "39.1<br>39.3 (-0.2)" in text
    assert "http" not in text  # no external assets


def test_csv_is_the_summary_of_all_tables() -> None:
    text = report.render([rows_spec(), grid_spec()], rows_frame(), "csv")
    table = pd.read_csv(io.StringIO(text))
    assert tuple(table.columns) == report.SUMMARY_COLUMNS
    assert list(table["table"].unique()) == ["table3", "table2"]
    assert len(table) == 3 * 2 + 4


def test_json_round_trips_with_nulls() -> None:
    data = json.loads(report.render([rows_spec(), checklist_spec()], rows_frame(), "json"))
    first = data["tables"][0]
    assert (first["name"], first["title"], first["caption"]) == ("table3", "Table 3", "Caption of table3.")
    rows = {row["id"]: row for row in first["rows"]}
    assert rows["base"]["verdict"] == "reproduced"
    assert rows["base"]["metrics"]["AP"] == {"n": 3, "mean": 37.0, "std": 0.2, "published": 37.0, "delta": 0.0}
    assert rows["atss"]["metrics"]["AP"]["mean"] is None and rows["atss"]["metrics"]["AP"]["published"] == 39.3
    assert rows["other"]["metrics"]["AP50"]["published"] is None
    assert [row["id"] for row in data["tables"][1]["rows"]] == ["fcos", "plain", "gn"]


def test_unknown_format_lists_the_formats() -> None:
    with pytest.raises(UserError, match="pdf.*terminal, markdown, csv, latex, html, json"):
        report.render([rows_spec()], rows_frame(), "pdf")


@pytest.mark.parametrize("fmt", report.FORMATS)
def test_the_paper_tables_render_before_any_run(fmt: str) -> None:
    specs = [load_table(name) for name in available_tables()]
    if not specs:
        pytest.skip("no tables/table*.toml yet")
    text = report.render(specs, frame_of(), fmt)
    for spec in specs:
        assert str(spec.rows[0].published[spec.metrics[0]]) in text
    claims = report.render_claims(specs, report.claim_verdicts(specs, frame_of(), 0.2), fmt, 0.2)
    for claim in (claim for spec in specs for claim in spec.claims):  # the 17, each not run, after the tables
        assert claim.id in claims and text.index(claim.id) > text.index(specs[-1].rows[-1].label)
    assert claims.count("not run") >= 17 and "holds" not in claims.replace("holds when", "")


def test_tables_without_claims_have_no_claims_section() -> None:
    for fmt in report.FORMATS:
        text = report.render([rows_spec()], rows_frame(), fmt)
        assert "claim" not in text.lower(), fmt


def test_tables_published_on_another_split_say_their_verdicts_are_indicative() -> None:
    text = report.render([load_table("table3"), load_table("table8")], frame_of(), "markdown")
    table3, table8 = text.split("Table 8", 1)
    assert "test-dev" in table8 and "indicative only" in table8 and "indicative only" not in table3


# ---- plots


@pytest.mark.parametrize("preset", ["paper", "smoke"])
def test_plot_sweeps_writes_one_png_per_sweep_table(tmp_path: Path, preset: str) -> None:
    k = sweep_spec("table4", ["3", "9", "19"], [38.0, 39.3, 38.9])
    ratio = sweep_spec("table6", ["1:4", "1:1", "4:1"], [39.1, 39.3, 39.1])
    frame = frame_of(
        *(frame_lines(k, "r1", {"AP": ap}, seed=s, preset=preset) for s, ap in enumerate([39.1, 39.4])),
        frame_lines(ratio, "r0", {"AP": 39.0}, preset=preset),
    )
    paths = [path for _, path in report.plot_sweeps([rows_spec(), k, ratio], frame, tmp_path / "plots")]
    assert paths == [tmp_path / "plots" / "table4_sweep.png", tmp_path / "plots" / "table6_sweep.png"]
    for path in paths:
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["table4_sweep.png", "table6_sweep.png"]


def test_plot_sweeps_without_sweep_tables_writes_nothing(tmp_path: Path) -> None:
    assert report.plot_sweeps([rows_spec()], rows_frame(), tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_every_report_says_what_its_source_keys_mean() -> None:
    spec = make_spec(
        "table4",
        status="CONFIRMED (2 sources: S1 + S2)",
        sources={"S1": "arXiv v4 text of the paper", "S2": "ar5iv HTML rendering"},
        rows=[{"id": "k9", "label": "9", "published": {"AP": 39.3}}],
    )
    for fmt in ("terminal", "markdown", "latex", "html"):
        text = report.render([spec], frame_of(), fmt)
        assert "S1 = arXiv v4 text of the paper; S2 = ar5iv HTML rendering" in text, fmt
    assert json.loads(report.render([spec], frame_of(), "json"))["tables"][0]["sources"] == spec.sources
    for name in available_tables():  # the shipped specs cite only keys they define
        shipped = load_table(name)
        assert shipped.sources and "sources: S1 = " in report.render([shipped], frame_of(), "markdown")
