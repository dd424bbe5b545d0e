"""The claims in the product: ``report`` (every format, --claims, --noise, --plots), the pandas API, ``run
--dry-run`` planning, and presets, on result stores written here (run.json and metrics.json of chosen values)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from atssrepro import config as cfg
from atssrepro.harness import claim_plan
from atssrepro.harness.collect import collect
from atssrepro.harness.plan import run_ids_by_row
from atssrepro.harness.report import FORMATS, claim_verdicts
from atssrepro.harness.specs import load_table
from atssrepro.harness.store import Store
from atssrepro.harness.verdicts import VERDICT_COLUMNS

from cli import assert_one_line_error, atssrepro

# README's example of a preset file, so that it stays one
README = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
QUARTER = "#" + README.partition("```toml\n#")[2].partition("```")[0]
# Table 3 and 4 values (AP), one list of seeds per row.
VALUES = {
    "table3": {"fcos": [37.6, 37.9, 37.7], "fcos_atss": [39.1, 39.4], "retinanet_a1_atss": [39.3]},
    "table4": {"k9": [39.3], "k3": [38.0], "k19": [38.9]},
}


def write_store(root: Path, values: dict, preset: cfg.Preset | str = "paper", recorded: str | None = None) -> None:
    """Finished runs of ``values`` (table -> row -> AP per seed) under ``preset``, each run.json recording
    ``recorded`` (default: the preset's name)."""
    preset = cfg.as_preset(preset)
    specs = [load_table(table) for table in values]
    seeds = max(len(seeds) for rows in values.values() for seeds in rows.values())
    for (table, row, seed), run_id in run_ids_by_row(specs, preset, seeds, None).items():
        aps = values[table].get(row, [])
        if seed < len(aps):
            folder = root / run_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "run.json").write_text(json.dumps({"state": "done", "preset": recorded or preset.name}))
            (folder / "metrics.json").write_text(json.dumps({"stats": {"AP": aps[seed] / 100}}))


def report(store: Path, *args: str, check: bool = True):
    return atssrepro("report", "table3", "table4", "--results", str(store), "--seeds", "3", *args, check=check)


def claims_csv(text: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(text)).set_index("claim")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store")
    write_store(root, VALUES)
    return root


def test_report_claims_alone_in_every_format(store):
    """T3-fcos is docs/claims.md's worked example; T4-small's -1.3 and T4-large's -0.4 at one seed a row."""
    expected = {"T3-retina": "not run", "T3-fcos": "holds", "T3-lite": "not run", "T3-boxpoint": "unresolved",
                "T4-flat": "not run", "T4-small": "holds", "T4-large": "unresolved"}  # fmt: skip
    texts = {fmt: report(store, "--claims", "--format", fmt).stdout for fmt in FORMATS}
    lines = claims_csv(texts["csv"])
    assert list(lines.columns) == list(VERDICT_COLUMNS[1:]) and lines.loc["T3-fcos", "low"] == pytest.approx(1.009)
    assert lines[lines["part"] == 0]["verdict"].to_dict() == expected
    claims = json.loads(texts["json"])["claims"]
    assert {line["claim"]: line["verdict"] for line in claims if line["part"] == 0} == expected
    for fmt in ("terminal", "markdown", "latex", "html"):
        text = texts[fmt]
        assert "Claims (paper preset)" in text and "Table 4" in text and "RetinaNet (#A=1) + ATSS" not in text
        for claim in expected:
            assert claim in text, (fmt, claim)
    assert "+1.52 [+1.01, +2.02]" in texts["markdown"] and "holds" in texts["html"]
    assert max(map(len, texts["terminal"].splitlines())) <= 140


def test_every_format_shows_the_claims_after_the_tables(store):
    for fmt in FORMATS:
        text = report(store, "--format", fmt).stdout
        if fmt == "csv":  # the summary, a blank line, the claims
            tables, claims = text.split("\n\n")
            assert pd.read_csv(io.StringIO(tables))["row"].tolist()[0] == "retinanet_a1"
            assert claims_csv(claims).loc["T4-small", "verdict"] == "holds"
        elif fmt == "json":
            data = json.loads(text)
            assert [t["name"] for t in data["tables"]] == ["table3", "table4"] and len(
                data["claims"]
            ) == 7 + 1 + 3 + 1 + 3  # claims and parts
        else:
            assert text.index("Table 4") < text.index("Claims (paper preset)") < text.index("T4-large")


def test_the_noise_level_decides_single_seed_verdicts(store):
    """T4-large, one seed a row: -0.4 +- 1.96 sigma sqrt(2): unresolved at 0.2 (+-0.554), holds at 0.1 (+-0.277)."""
    at = {
        noise: claims_csv(report(store, "--claims", "--format", "csv", "--noise", noise).stdout)
        for noise in ("0.1", "0.2")
    }
    assert at["0.2"].loc["T4-large", "verdict"] == "unresolved" and at["0.1"].loc["T4-large", "verdict"] == "holds"
    assert at["0.1"].loc["T4-large", "high"] == pytest.approx(-0.4 + 1.959964 * 0.1 * math.sqrt(2), abs=1e-3)
    for bad in ("0", "-0.2", "nan", "inf"):
        assert_one_line_error(report(store, "--claims", "--noise", bad, check=False), f"--noise = {float(bad)!r}")


def test_plots_add_the_forest_plot(store, tmp_path):
    result = report(store, "--format", "csv", "--plots", str(tmp_path / "plots"))
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["claims.png", "table4_sweep.png"]
    assert (tmp_path / "plots" / "claims.png").read_bytes().startswith(b"\x89PNG") and "claims.png" in result.stderr
    report(store, "--claims", "--plots", str(tmp_path / "only"))
    assert [p.name for p in (tmp_path / "only").iterdir()] == ["claims.png"]


def test_html_and_markdown_show_the_forest_plot_relative_to_the_report(store, tmp_path):
    folder = tmp_path / "site"
    report(store, "--format", "html", "--out", str(folder / "report.html"), "--plots", str(folder / "plots"))
    html = (folder / "report.html").read_text()
    assert '<img src="plots/claims.png"' in html and '<img src="plots/table4_sweep.png"' in html
    # after the claims, not among the tables
    assert html.index("plots/claims.png") > html.index("T4-large") > html.index("plots/table4_sweep.png")
    text = report(store, "--claims", "--format", "markdown", "--out", str(folder / "claims.md"), "--plots",
                  str(folder / "only"))  # fmt: skip
    assert text.returncode == 0 and "](only/claims.png)" in (folder / "claims.md").read_text()


def test_the_pandas_api_returns_the_verdicts(store):
    specs = [load_table("table3"), load_table("table4")]
    verdicts = claim_verdicts(specs, collect(specs, "paper", 3, Store(store)), noise=0.2)
    assert list(verdicts.columns) == list(VERDICT_COLUMNS)
    line = verdicts.set_index("claim").loc["T3-fcos"]
    assert (line["verdict"], line["n"], line["noise_from"]) == ("holds", 2, "pooled")


def test_runs_that_recorded_another_preset_are_not_judged(tmp_path):
    write_store(tmp_path, {"table3": {"fcos": [37.8], "fcos_atss": [39.2]}})
    write_store(tmp_path, {"table3": {"fcos": [37.8]}}, recorded="my_protocol")  # the same run, another record
    lines = claims_csv(report(tmp_path, "--claims", "--format", "csv").stdout)
    assert lines.loc["T3-fcos", "verdict"] == "not judged" and "'my_protocol', 'paper'" in lines.loc["T3-fcos", "note"]


# ---- presets: a user's protocol gets its own verdicts, never mixed with the paper's


def test_a_preset_file_is_a_protocol_of_its_own(tmp_path):
    path = tmp_path / "quarter.toml"
    path.write_text(QUARTER)
    preset = cfg.preset_named(str(path))
    assert (preset.name, preset.comparable) == ("quarter640", False)
    config = cfg.build_config(None, preset)
    assert (config.train.iterations, config.data.train_short_side) == (22500, (640, 640))
    spec = load_table("table4")
    assert set(run_ids_by_row([spec], preset, 1, None).values()).isdisjoint(
        run_ids_by_row([spec], "paper", 1, None).values()
    )
    store = tmp_path / "results"
    write_store(store, {"table4": {"k9": [30.3], "k3": [29.0], "k19": [30.2]}}, preset)
    mine = report(store, "--claims", "--format", "csv", "--preset", str(path)).stdout
    lines = claims_csv(mine)
    assert set(lines["preset"]) == {"quarter640"} and lines.loc["T4-small", "verdict"] == "holds"
    text = report(store, "--claims", "--preset", str(path)).stdout
    assert "Claims (quarter640 preset)" in text and "Preset quarter640: judged on its own runs" in text
    paper = claims_csv(report(store, "--claims", "--format", "csv").stdout)  # the paper's runs: none of these
    assert set(paper["verdict"]) == {"not run"} and set(paper["preset"]) == {"paper"}
    tables = report(store, "--format", "markdown", "--preset", str(path)).stdout
    assert "Preset quarter640: not comparable with the paper, never judged." in tables
    for command in (["show", "table4"], ["list"], ["status", "table4"], ["run", "table4", "--dry-run"]):
        atssrepro(*command, "--preset", str(path), cwd=tmp_path)  # exit 0
    assert "22500" in atssrepro("config", "--preset", str(path)).stdout


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('name = "paper"\n[overrides]\ntrain.iterations = 10\ntrain.lr_steps = [5]\n', "is a built-in preset's"),
        (
            'name = "x"\n[overrides]\nmodel.assign.topk = 3\n',
            "overrides: model.assign is what the tables' rows compare",
        ),
        ('name = "x"\n[overrides]\ntrain.iterations = 10\n', "overrides: invalid config: train.lr_steps"),
        ('name = "x"\n[overrides]\ntrain.iteratons = 10\n', "unknown config key 'train.iteratons'; did you mean"),
        ('name = "x"\n[overrides]\ntrain.iterations = 90000\n', "overrides change nothing"),
        ('name = "x"\ncomparable = true\n[overrides]\ntrain.iterations = 10\n', "unknown field 'comparable'"),
        ('name = "X y"\n[overrides]\ntrain.iterations = 10\n', "name = 'X y' is not valid"),
        ('description = "x"\n', "missing 'name'"),
        ("name = ", "not valid TOML"),
    ],
)
def test_a_bad_preset_file_is_one_line(tmp_path, text, words):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    assert_one_line_error(
        atssrepro("run", "table4", "--dry-run", "--preset", str(path), check=False), "mine.toml", words
    )


def test_a_missing_preset_file_or_name_is_one_line(tmp_path):
    result = atssrepro("report", "--preset", str(tmp_path / "none.toml"), check=False)
    assert_one_line_error(result, "none.toml: no such preset file", "[overrides]")
    assert_one_line_error(atssrepro("show", "table4", "--preset", "smok", check=False), "did you mean 'smoke'")


def test_the_built_in_presets_never_set_the_experiment():
    for preset in cfg.PRESETS.values():
        for key in cfg.presets.EXPERIMENT:
            head, _, rest = key.partition(".")
            assert rest not in preset.overrides.get(head, {}), (preset.name, key)


# ---- planning


def test_dry_run_plans_each_claim_and_all_of_them_together():
    """Table 4 at sigma 0.2: T4-flat 27 seeds on k7..k17, T4-small 1 on k9, k3, T4-large 6 on k9, k19. Together
    k9 (in all three) trains 27 times: 6 x 27 + 1 (k3) + 6 (k19) = 169 runs of 1,440,000 images."""
    lines = [
        json.loads(line)
        for line in atssrepro("run", "table4", "--dry-run", "--json", "--seeds", "2").stdout.split("\n")
        if line
    ]
    claims = {line["claim"]: line for line in lines if "claim" in line}
    assert [line["run_id"] for line in lines[: len(lines) - 3]] and list(claims) == ["T4-flat", "T4-small", "T4-large"]
    spec = load_table("table4")
    for claim in spec.claims:
        line = claims[claim.id]
        assert line["seeds"] == claim_plan.seeds_needed(claim) and line["planned_seeds"] == 2
        assert line["planned_power"] == pytest.approx(claim_plan.claim_power(claim, 2))
        assert line["images"] == line["seeds"] * len(claim.row_ids) * 90_000 * 16
    text = atssrepro("run", "table4", "--dry-run").stdout
    assert "169 distinct runs" in text and f"{169 * 1_440_000:,} training images" in text
    assert (
        "P(holds) with 1 seed" in text and "> 100" in atssrepro("run", "table4", "--dry-run", "--noise", "1.5").stdout
    )
    some = atssrepro("run", "table4", "--rows", "k9", "--rows", "k3", "--dry-run", "--json").stdout.splitlines()
    assert [line["claim"] for line in map(json.loads, some) if "claim" in line] == ["T4-small"]  # what k9, k3 decide


def test_distinct_runs_train_a_shared_row_once_with_the_most_seeds():
    spec = load_table("table4")
    ids = {("table4", row.id): f"run-{row.id}" for row in spec.rows}
    ids["table4", "k3"] = ids["table4", "k19"]  # as if two rows resolved to one config
    needed = claim_plan.distinct_runs(spec.claims, [4, 2, None], ids)
    assert needed == {**{f"run-k{k}": 4 for k in (7, 9, 11, 13, 15, 17)}, "run-k19": 2}
