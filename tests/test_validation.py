"""Checkpoints, weights files and the run store: malformed ones are one line, never a crash.

A pickle that would run code on load is refused by every command that reads a checkpoint or a
weights file, and runs nothing.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch
from test_fuzz_cli import run_cli

from atssrepro import config as cfg
from atssrepro.harness.plan import plan
from atssrepro.harness.specs import load_table

SMOKE = cfg.build_config(None, "smoke")


class Payload:
    """Unpickling this writes the file ``marker``: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def assert_one_line(code: int, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], err


def checkpoint_variants(root: Path) -> dict[str, tuple[bytes | None, str]]:
    """name -> (file content, a text the error must contain); None: a folder."""
    buffer = io.BytesIO()
    torch.save({"model": {"w": torch.zeros(3)}, "config": cfg.to_dict(SMOKE), "iteration": 1, "num_classes": 2}, buffer)
    whole = buffer.getvalue()

    def saved(obj) -> bytes:
        out = io.BytesIO()
        torch.save(obj, out)
        return out.getvalue()

    bad_config = cfg.to_dict(SMOKE)
    bad_config["model"]["assign"]["topk"] = 0
    state = {"model": {}, "config": cfg.to_dict(SMOKE), "iteration": 1, "num_classes": 2}
    return {
        "empty.pt": (b"", "corrupt"),
        "garbage.pt": (b"not a checkpoint at all", "corrupt"),
        "truncated.pt": (whole[: len(whole) // 2], "corrupt"),
        "json.pt": (json.dumps({"model": 1}).encode(), "corrupt"),
        "list.pt": (saved([1, 2, 3]), "not an atssrepro checkpoint"),
        "no_config.pt": (saved({k: v for k, v in state.items() if k != "config"}), "config"),
        "no_classes.pt": (saved({k: v for k, v in state.items() if k != "num_classes"}), "num_classes"),
        "bad_config.pt": (saved({**state, "config": bad_config}), "model.assign.topk = 0"),
        "wrong_shapes.pt": (whole, "do not fit this model"),
        "folder.pt": (None, "folder"),
    }


def test_malformed_checkpoints_are_one_line_errors(tmp_path, capsys):
    for name, (content, fragment) in checkpoint_variants(tmp_path).items():
        path = tmp_path / name
        path.mkdir() if content is None else path.write_bytes(content)
        before = sorted(tmp_path.rglob("*"))
        code, _, err = run_cli(["eval", str(path)], capsys, tmp_path)
        assert_one_line(code, err, name, fragment)
        assert sorted(tmp_path.rglob("*")) == before


def evil_files(tmp_path: Path) -> dict[str, Path]:
    """A plain pickle and a torch zip checkpoint whose unpickling would run code."""
    marker = tmp_path / "pwned"
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(__import__("pickle").dumps({"model": Payload(marker)}, protocol=2))
    zipped = tmp_path / "evil_zip.pt"
    torch.save({"model": Payload(marker), "config": {}, "iteration": 0, "num_classes": 1}, zipped)
    assert zipfile.is_zipfile(zipped)
    return {"raw": raw, "zip": zipped}


def test_a_pickle_that_runs_code_is_refused_by_every_reader(tmp_path, capsys, synth_coco):
    marker = tmp_path / "pwned"
    for kind, evil in evil_files(tmp_path).items():
        run = tmp_path / f"run_{kind}"
        run.mkdir()
        config = cfg.build_config(None, "smoke", ["data.num_workers=0"], str(synth_coco))
        (run / "config.toml").write_text(cfg.to_toml(config))
        (run / "checkpoint.pt").write_bytes(evil.read_bytes())
        info = tmp_path / "info.json"
        info.write_text((synth_coco / "annotations" / "instances_val2017.json").read_text())
        commands = {
            "eval checkpoint": ["eval", str(evil)],
            "eval run folder": ["eval", str(run)],
            "predict": ["predict", str(evil), "--images", str(synth_coco / "val2017"), "--info", str(info),
                        "--out", str(tmp_path / "zip")],
            "train resume": ["train", "--preset", "smoke", "--data", str(synth_coco), "--set", "data.num_workers=0",
                             "--out", str(run)],
            "backbone weights": ["train", "--preset", "smoke", "--data", str(synth_coco), "--set", "data.num_workers=0",
                                 "--set", f"model.backbone.weights={evil}", "--out", str(tmp_path / f"fresh_{kind}")],
        }  # fmt: skip
        for what, args in commands.items():
            code, _, err = run_cli(args, capsys, tmp_path)
            assert_one_line(
                code, err, evil.name if what != "eval run folder" and what != "train resume" else "checkpoint.pt"
            )
            assert not marker.exists(), f"{what} ({kind}) executed the pickle"


def test_corrupt_run_records_show_as_corrupt_and_run_refuses_them(tmp_path, capsys):
    results = tmp_path / "results"
    runs = plan([load_table("table3")], "smoke", data_root=str(tmp_path / "data" / "coco"))  # the default, there
    corrupt = {
        runs[0].run_id: ("run.json", b"\x00\x01binary"),
        runs[1].run_id: ("metrics.json", b"[1, 2]"),
        runs[2].run_id: ("log.jsonl", b'{"iter": 1}\n[]\n{"iter": 3}\n'),
    }
    for run_id, (name, content) in corrupt.items():
        (results / run_id).mkdir(parents=True)
        (results / run_id / name).write_bytes(content)
    (results / runs[3].run_id).mkdir()
    (results / runs[3].run_id / "run.json").write_text(json.dumps({"state": "failed", "message": "boom"}))

    code, out, err = run_cli(
        ["status", "table3", "--preset", "smoke", "--results", str(results), "--json"], capsys, tmp_path
    )
    assert code == 0, err
    statuses = {s["run_id"]: s for s in map(json.loads, out.splitlines())}
    for run_id, (name, _) in corrupt.items():
        assert statuses[run_id]["state"] == "corrupt" and name in statuses[run_id]["message"]
    assert statuses[runs[3].run_id]["state"] == "failed"  # the others go on

    code, out, err = run_cli(
        ["report", "table3", "--preset", "smoke", "--results", str(results), "-f", "csv"], capsys, tmp_path
    )
    assert code == 0 and "corrupt" in out and "run.json" in err

    before = {p: p.read_bytes() for p in results.rglob("*") if p.is_file()}
    code, _, err = run_cli(["run", "table3", "--preset", "smoke", "--results", str(results)], capsys, tmp_path)
    assert_one_line(code, err, "is corrupt", "--force")
    assert {p: p.read_bytes() for p in results.rglob("*") if p.is_file()} == before


def test_train_on_a_malformed_annotation_file_is_one_line(tmp_path, capsys, synth_coco):
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    for split in ("train2017", "val2017"):
        (data / split).symlink_to(synth_coco / split)
    (data / "annotations" / "instances_val2017.json").symlink_to(synth_coco / "annotations" / "instances_val2017.json")
    ann = json.loads((synth_coco / "annotations" / "instances_train2017.json").read_text())
    ann["annotations"][3]["bbox"] = [1, 2, float("nan"), 4]
    (data / "annotations" / "instances_train2017.json").write_text(json.dumps(ann))
    code, _, err = run_cli(
        ["train", "--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "run")], capsys, tmp_path
    )
    assert_one_line(code, err, "instances_train2017.json", "annotations[3]", "not 4 finite numbers")
    # the run folder records why it stopped, and nothing else
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "failed"
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_train_on_a_run_folder_with_corrupt_metrics_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text(cfg.to_toml(cfg.with_data_root(SMOKE, str(tmp_path / "data" / "coco"))))
    (run / "metrics.json").write_bytes(b"\x89PNG\r\n")
    code, _, err = run_cli(["train", "--preset", "smoke", "--out", str(run)], capsys, tmp_path)
    assert_one_line(code, err, "metrics.json is corrupt", "--force")
