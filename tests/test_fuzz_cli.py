"""The CLI's own fuzz test: hundreds of malformed inputs of every kind a user hands atssrepro.

Each case runs ``atssrepro`` in-process (``cli.main`` with its own argv, as the console script runs
it) and must end with exit code 2, one line ``error: ...`` that names the culprit, no traceback,
and no file created, changed or half-written. Valid inputs of the same kinds must be accepted.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
import typing
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from atssrepro import cli
from atssrepro import config as cfg
from atssrepro.schema import ANY


@dataclass
class Case:
    args: list[str]
    culprit: str
    """A text the error line must contain: the key, value or file at fault."""


def run_cli(args: list[str], capsys, cwd: Path) -> tuple[int, str, str]:
    """``atssrepro ARGS`` in this process: (exit code, stdout, stderr)."""
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["atssrepro", *args]
    os.chdir(cwd)
    code = 0
    try:
        cli.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # a crash: shown as the traceback it would print
        code = -1
        print(traceback.format_exc(), file=sys.stderr)
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


# ---- inputs: a small valid world to break ---------------------------------------------------------

ANN = {
    "images": [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 40, "height": 40},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [2, 3, 20, 10], "area": 200.0, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 5, "bbox": [5, 5, 10, 12], "area": 120.0, "iscrowd": 0},
    ],
    "categories": [{"id": 3, "name": "cat"}, {"id": 5, "name": "dog"}],
}
DETECTION = {"image_id": 1, "category_id": 3, "bbox": [2.0, 3.0, 20.0, 10.0], "score": 0.9}


def annotation_variants() -> list[tuple[str, bytes | str | object]]:
    """(culprit, content) of malformed COCO annotation files."""
    raw: list[tuple[str, bytes | str | object]] = [
        ("not valid JSON", "{"),
        ("not valid JSON", ""),
        ("not UTF-8", b"\xff\xfe\x00garbage"),
        ("not in COCO format", []),
        ("not in COCO format", {"images": []}),
        ("no annotations", {k: v for k, v in ANN.items() if k != "annotations"}),
        ("no categories", {k: v for k, v in ANN.items() if k != "categories"}),
        ("'images' must be a list", {**ANN, "images": {"id": 1}}),
        ("'annotations' must be a list", {**ANN, "annotations": 3}),
    ]
    image_breaks = {
        "has no 'id'": lambda i: i.pop("id"),
        "has no 'width'": lambda i: i.pop("width"),
        "has no 'height'": lambda i: i.pop("height"),
        "has width = 0": lambda i: i.update(width=0),
        "has height = -4": lambda i: i.update(height=-4),
        "has width = 6.5": lambda i: i.update(width=6.5),
        "has id = '1'": lambda i: i.update(id="1"),
        "has id = True": lambda i: i.update(id=True),
    }
    for culprit, change in image_breaks.items():
        data = json.loads(json.dumps(ANN))
        change(data["images"][1])
        raw.append((culprit, data))
    raw.append(("images has id 1 twice", {**ANN, "images": [ANN["images"][0], ANN["images"][0]]}))
    raw.append(("images[0] is not a JSON object", {**ANN, "images": [7, *ANN["images"]]}))
    category_breaks = {
        "has no 'id'": lambda c: c.pop("id"),
        "has no 'name'": lambda c: c.pop("name"),
        "has id = 3.5": lambda c: c.update(id=3.5),
        "has name = 4": lambda c: c.update(name=4),
    }
    for culprit, change in category_breaks.items():
        data = json.loads(json.dumps(ANN))
        change(data["categories"][0])
        raw.append((culprit, data))
    raw.append(("categories has id 3 twice", {**ANN, "categories": [ANN["categories"][0]] * 2}))
    annotation_breaks = {
        "has no 'bbox'": lambda a: a.pop("bbox"),
        "has no 'image_id'": lambda a: a.pop("image_id"),
        "has no 'category_id'": lambda a: a.pop("category_id"),
        "has no 'id'": lambda a: a.pop("id"),
        "has image_id = 99, not the id of an image": lambda a: a.update(image_id=99),
        "has category_id = 4, not the id of a category": lambda a: a.update(category_id=4),
        "has category_id = '3'": lambda a: a.update(category_id="3"),
        "not 4 finite numbers": lambda a: a.update(bbox=[1, 2, 3]),
        "not 4 finite numbers ": lambda a: a.update(bbox=[1, 2, 3, "4"]),
        "not 4 finite numbers  ": lambda a: a.update(bbox=[1, 2, 3, None]),
        "not 4 finite numbers   ": lambda a: a.update(bbox="1 2 3 4"),
        "not 4 finite numbers    ": lambda a: a.update(bbox=[1, 2, 3, True]),
        "negative width or height": lambda a: a.update(bbox=[1, 2, -3, 4]),
        "negative width or height ": lambda a: a.update(bbox=[1, 2, 3, -0.5]),
        "has iscrowd = 2": lambda a: a.update(iscrowd=2),
        "has id = [2]": lambda a: a.update(id=[2]),
        "has image_id = {}": lambda a: a.update(image_id={}),
        "has area = 'big'": lambda a: a.update(area="big"),
    }
    for culprit, change in annotation_breaks.items():
        data = json.loads(json.dumps(ANN))
        change(data["annotations"][1])
        raw.append((culprit.strip(), data))
    # Non-finite numbers: Python's json writes NaN and Infinity, which json.loads reads back.
    for value in (math.nan, math.inf, -math.inf):
        for index in range(4):
            data = json.loads(json.dumps(ANN))
            data["annotations"][0]["bbox"][index] = value
            raw.append(("not 4 finite numbers", data))
        data = json.loads(json.dumps(ANN))
        data["annotations"][0]["area"] = value
        raw.append(("has area", data))
    data = json.loads(json.dumps(ANN))
    data["annotations"] = [dict(data["annotations"][0], id=i, bbox=[1, 1, 1, -1]) for i in range(5)]
    raw.append(("(5 entries like this)", data))
    data = json.loads(json.dumps(ANN))
    data["annotations"].append(dict(data["annotations"][0]))
    raw.append(("annotations has id 1 twice", data))
    return raw


def detection_variants() -> list[tuple[str, object]]:
    raw: list[tuple[str, object]] = [
        ("must hold a JSON list", {"detections": []}),
        ("must hold a JSON list", 3),
        ("entry 0 is not a JSON object", [7]),
        ("entry 1 is not a JSON object", [DETECTION, "x"]),
    ]
    for key in DETECTION:
        raw.append((f"entry 0 has no {key!r}", [{k: v for k, v in DETECTION.items() if k != key}]))
    bad_values = {
        "score": [math.nan, math.inf, -math.inf, "0.9", None, True, [0.9]],
        "image_id": [1.5, "1", None, True, [1]],
        "category_id": [3.0, "3", None, False],
        "bbox": [[1, 2, 3], [1, 2, 3, 4, 5], "1,2,3,4", [1, 2, 3, None], [math.nan, 0, 1, 1], [0, math.inf, 1, 1],
                 [0, 0, -math.inf, 1], [0, 0, 1, -1], [0, 0, -5, 2], [True, 0, 1, 1], None],
    }  # fmt: skip
    for key, values in bad_values.items():
        for value in values:
            raw.append((f"entry 1 has {key}", [DETECTION, {**DETECTION, key: value}]))
    raw.append(("(3 malformed entries)", [{**DETECTION, "score": math.nan}] * 3))
    raw.append(("detection 1 has image_id 77", [DETECTION, {**DETECTION, "image_id": 77}]))
    raw.append(("(2 detections like this)", [{**DETECTION, "image_id": 77}] * 2))
    raw.append(("detection 0 has category_id 4", [{**DETECTION, "category_id": 4}]))
    return raw


def bad_values_of(key: str) -> list[str]:
    """``--set`` values that a field of this type and rule must refuse."""
    tp = typing.get_type_hints(_section_class(key))[key.rsplit(".", 1)[1]]
    values = ["nan", "inf", "-inf", "{a = 1}", "[[1, 2]]"]
    origin = typing.get_origin(tp)
    default = _default(key)
    if tp is int:
        values += ["1.5", "true", "'7'"]
    if tp is float:
        values += ["true", "'0.5'"]
    if tp is bool:
        values += ["1", "'yes'"]
    if tp is str:
        values += ["1", "[1]"]
    if origin is typing.Literal:
        values += ["'no_such_choice'", "0"]
    if origin is tuple:
        values += ["[]", "'x'", "[nan]"]
    rule = cfg.rule_of(key)
    if rule is not ANY and not isinstance(default, (str, tuple)):
        values += [v for v in ("-1", "-0.5", "1e9", "100000", "0") if _refused(key, v)]
    return values


def _section_class(key: str) -> type:
    node: object = cfg.Config()
    for part in key.split(".")[:-1]:
        node = getattr(node, part)
    return type(node)


def _default(key: str) -> object:
    node: object = cfg.Config()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _refused(key: str, value: str) -> bool:
    """Whether the rule table refuses ``value`` (so only values outside a field's range are used)."""
    try:
        cfg.apply(cfg.Config(), cfg.parse_override(f"{key}={value}"), "probe")
    except cli.UserError:
        return True
    return False


def set_cases() -> list[Case]:
    cases = [
        Case(["config", "--set", f"{key}={value}"], key) for key in cfg.config_fields() for value in bad_values_of(key)
    ]
    cases += [
        Case(["config", "--set", "model.assign.negative_iou=0.7"], "negative_iou"),
        Case(["config", "--set", "train.lr_steps=[100000]"], "train.lr_steps"),
        Case(["config", "--set", "data.train_short_side=[800]"], "data.train_short_side"),
        Case(["config", "--set", "data.train_short_side=[800, 640]"], "data.train_short_side"),
        Case(["config", "--set", "data.train_short_side=[1, 1]"], "data.train_short_side"),
        Case(["config", "--set", "data.test_short_side=100000"], "data.test_short_side"),
        Case(["config", "--set", "model.head.channels=48"], "model.head.channels"),
        Case(["config", "--set", "model.assign.scale_ranges=[0, 64, 128, 256, 512]"], "scale_ranges"),
        Case(["config", "--set", "train.momentum=2"], "train.momentum"),
        # the prediction-aware strategies' sections: out-of-range values, and a section of another strategy
        Case(["config", "--set", "model.assign.strategy=tal", "--set", "model.assign.tal.topk=0"],
             "model.assign.tal.topk"),
        Case(["config", "--set", "model.assign.simota.iou_weight=-1"], "model.assign.simota.iou_weight"),
        Case(["config", "--set", "model.assign.ota.sinkhorn_eps=-0.1"], "model.assign.ota.sinkhorn_eps"),
        Case(["config", "--set", "model.assign.ota.sinkhorn_eps=0"], "model.assign.ota.sinkhorn_eps"),
        Case(["config", "--set", "model.assign.simota.center_radius=0"], "model.assign.simota.center_radius"),
        Case(["config", "--set", "model.assign.dsl.soft_center_radius=-3"], "model.assign.dsl.soft_center_radius"),
        Case(["config", "--set", "model.assign.ota.sinkhorn_iterations=0"], "model.assign.ota.sinkhorn_iterations"),
        Case(["config", "--set", "model.assign.tal.warmup_iters=-1"], "model.assign.tal.warmup_iters"),
        Case(["config", "--set", "model.assign.tal.topk=5"],
             "model.assign.tal.topk = 5 is set but model.assign.strategy"),
        Case(["config", "--set", "model.assign.strategy=simota", "--set", "model.assign.ota.top_candidates=10"],
             "model.assign.ota.top_candidates"),
        Case(["config", "--set", "model.assign.strategy=ota", "--set", "model.assign.tal.soft_targets=true"],
             "model.assign.tal.soft_targets"),
        Case(["config", "--set", "model.assign.strategy=paa", "--set", "model.assign.paa.neg_iou=0.3"],
             "model.assign.paa.neg_iou"),
    ]  # fmt: skip
    return cases


def build_world(root: Path) -> dict[str, Path]:
    """The valid files the cases start from."""
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "val2017").mkdir()
    ann = root / "ann.json"
    ann.write_text(json.dumps(ANN))
    dets = root / "dets.json"
    dets.write_text(json.dumps([DETECTION]))
    (root / "a_file").write_text("x")
    return {"ann": ann, "dets": dets}


def file_cases(root: Path, world: dict[str, Path]) -> list[Case]:
    cases: list[Case] = []
    bad = root / "bad"
    bad.mkdir()

    def write(name: str, content: bytes | str | object) -> Path:
        path = bad / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content)
        else:
            path.write_text(json.dumps(content))
        return path

    for i, (culprit, content) in enumerate(annotation_variants()):
        path = write(f"ann{i}.json", content)
        cases.append(Case(["eval", "--detections", str(world["dets"]), "--ann", str(path)], culprit))
        cases.append(Case(["eval", "--detections", str(world["dets"]), "--ann", str(path)], path.name))
        # data subset reads <root>/annotations/instances_val2017.json
        coco = root / f"coco{i}"
        (coco / "annotations").mkdir(parents=True)
        (coco / "val2017").mkdir()
        (coco / "annotations" / "instances_val2017.json").write_bytes(path.read_bytes())
        cases.append(
            Case(["data", "subset", "--coco", str(coco), "--images", "1", "--out", str(root / "sub")], culprit)
        )
        if i % 4 == 0:  # a sample: analyze loads torch, and reads the file through the same checks
            cases.append(Case(["analyze", "assignment", "--ann", str(path), "--out", str(root / "analysis")], culprit))
    for i, (culprit, content) in enumerate(detection_variants()):
        path = write(f"dets{i}.json", content)
        cases.append(Case(["eval", "--detections", str(path), "--ann", str(world["ann"])], culprit))
    cases.append(Case(["eval", "--detections", str(bad / "missing.json"), "--ann", str(world["ann"])], "missing.json"))
    cases.append(Case(["eval", "--detections", str(bad), "--ann", str(world["ann"])], "is a folder"))

    # config files
    configs = {
        "not valid TOML": "model = [",
        "unknown config key 'modle'": "[modle]\nx = 1\n",
        "model.assign.topk = 0": "[model.assign]\ntopk = 0\n",
        "train.base_lr = nan": "[train]\nbase_lr = nan\n",
        "train.base_lr = inf": "[train]\nbase_lr = inf\n",
        "model.assign is a section": "[model]\nassign = 3\n",
        "data.flip_prob = 2": "[data]\nflip_prob = 2\n",
        "model.assign.dsl.topk = 0": "[model.assign]\nstrategy = 'dsl'\n[model.assign.dsl]\ntopk = 0\n",
        "model.assign.dsl.topk = 5 is set": "[model.assign.dsl]\ntopk = 5\n",
    }
    for i, (culprit, text) in enumerate(configs.items()):
        cases.append(Case(["config", "--config", str(write(f"config{i}.toml", text))], culprit))
    binary = write("binary.toml", b"\x00\xff\xfe\x01")
    cases.append(Case(["config", "--config", str(binary)], "binary.toml"))

    # table specs, read through run --dry-run and show
    good = {"title": "Table 9", "caption": "c", "metrics": ["AP"], "rows": [{"id": "a", "label": "A"}]}
    specs = {
        "published.AP = nan": "published = { AP = nan }",
        "published.AP = 250": "published = { AP = 250 }",
        "published.AP = inf": "published = { AP = inf }",
        "published.AP = -1": "published = { AP = -1 }",
        "published 'AP50' is not among": "published = { AP50 = 30 }",
        "published.AP = '38'": "published = { AP = '38' }",
        "model.assign.topk = 0": "config = { model = { assign = { topk = 0 } } }",
        "train.base_lr = -0.01": "config = { train = { base_lr = -0.01 } }",
        "info.Data": "info = { Data = 3 }",
        "checked": "checked = [1, 2]",
        "grid": "grid = ['a']",
        "tta": "tta = 'yes'",
        "model.assign.ota.reg_weight = -1.5": "config = { model.assign = { strategy = 'ota', ota.reg_weight = -1.5 } }",
    }
    for i, (culprit, line) in enumerate(specs.items()):
        text = f'title = "T"\ncaption = "c"\nmetrics = ["AP"]\n[[rows]]\nid = "a"\nlabel = "A"\n{line}\n'
        path = write(f"spec{i}.toml", text)
        cases.append(Case(["run", str(path), "--dry-run", "--results", str(root / "results")], culprit))
        cases.append(Case(["show", str(path)], culprit))
    path = write(
        "spec_dup.toml", 'title = "T"\ncaption = "c"\nmetrics = ["AP", "AP"]\n[[rows]]\nid = "a"\nlabel = "A"\n'
    )
    cases.append(Case(["show", str(path)], "names a metric twice"))
    assert good  # the valid spec is exercised in valid_cases

    # output paths
    cases.append(
        Case(["report", "table3", "--results", str(root / "results"), "--out", str(root / "coco")], "is a folder")
    )
    cases.append(
        Case(["report", "table3", "--results", str(root / "results"), "--out", str(root / "a_file" / "r.md")], "a_file")
    )
    cases.append(
        Case(["report", "table3", "--results", str(root / "results"), "--out", "/proc/no/such/r.md"], "/proc/no")
    )
    cases.append(
        Case(["data", "synth", "--out", str(root / "a_file"), "--train-images", "1", "--val-images", "1"], "a_file")
    )
    return cases  # fmt: skip


CLAIM_SPEC = (
    'title = "T"\ncaption = "c"\nmetrics = ["AP"]\n[sources]\nS1 = "the paper"\n'
    + "".join(f'[[rows]]\nid = "{row}"\nlabel = "{row}"\n' for row in ("a", "b", "c"))
    + '[[claims]]\nid = "T9-x"\n'
)
SAYS = 'statement = "b beats a (S1)"\n'
GOOD_CLAIM = SAYS + 'kind = "gain"\nrows = ["a", "b"]\ndeltas = [1.0]\n'
PRESET = 'name = "mine"\n[overrides]\ntrain.iterations = 100\ntrain.lr_steps = [50]\n'


def claim_and_preset_cases(root: Path) -> list[Case]:
    """Claims in a table spec, --noise, preset files: each error names the file (or option), the claim and the field."""
    folder = root / "claims"
    folder.mkdir()
    claims = {
        "claim 'T9-x': rows: spec0 has no runnable row": SAYS + 'kind = "gain"\nrows = ["a", "zz"]\ndeltas = [1]\n',
        "claim 'T9-x': pairs: spec1 has no runnable row": SAYS + 'kind = "gain"\npairs = [["a", "zz"]]\ndeltas = [1]\n',
        "claim 'T9-x': deltas = []: a gain claim needs": SAYS + 'kind = "gain"\nrows = ["a", "b"]\n',
        "claim 'T9-x': band: a flat claim needs": SAYS + 'kind = "flat"\nrows = ["a", "b", "c"]\n',
        "claim 'T9-x': deltas: 1.0 must be < 0": SAYS + 'kind = "drop"\nrows = ["a", "b"]\ndeltas = [1.0]\n',
        "claim 'T9-x': metrics: 'AP50' is not reported": GOOD_CLAIM + 'metrics = ["AP50"]\n',
        "claims[0]: margin = 0 is not valid": GOOD_CLAIM + "margin = 0\n",
        "claims[0]: margin = -0.1 is not valid": GOOD_CLAIM + "margin = -0.1\n",
        "claims[0]: margin = nan is not valid": GOOD_CLAIM + "margin = nan\n",
        "claims[0]: margin = inf is not valid": GOOD_CLAIM + "margin = inf\n",
        "claims[0]: kind = 'rise' is not valid": SAYS + 'kind = "rise"\nrows = ["a", "b"]\ndeltas = [1.0]\n',
        "claims[0]: band = [2.0, 1.0] is not valid": SAYS + 'kind = "flat"\nrows = ["a", "b"]\nband = [2.0, 1.0]\n',
        "claims[0]: deltas = ['big'] is not valid": SAYS + 'kind = "gain"\nrows = ["a", "b"]\ndeltas = ["big"]\n',
        "claim 'T9-x': statement cites source S7": GOOD_CLAIM.replace("(S1)", "(S7)"),
        "claim 'T9-x': duplicate claim id": GOOD_CLAIM + '[[claims]]\nid = "T9-x"\n' + GOOD_CLAIM,
    }  # fmt: skip
    store = ["--results", str(root / "results")]
    cases = []
    for i, (culprit, fields) in enumerate(claims.items()):
        path = folder / f"spec{i}.toml"
        path.write_text(CLAIM_SPEC + fields)
        for command in (["run", str(path), "--dry-run", *store], ["report", str(path), "--claims", *store],
                        ["show", str(path)]):  # fmt: skip
            cases.append(Case(command, f"{path.name}: {culprit}"))
    for value in ("0", "-1", "nan", "inf", "-inf"):
        shown = repr(float(value))
        cases.append(Case(["report", "table4", "--claims", "--results", str(root / "results"), "--noise", value],
                          f"--noise = {shown}: the per-run noise level must be a finite number > 0"))  # fmt: skip
        cases.append(Case(["run", "table4", "--dry-run", "--noise", value], f"--noise = {shown}"))
    cases.append(Case(["run", "table4", "--noise", "0.2", *store], "--noise is an option of --dry-run"))
    presets = {
        "name = 'paper' is a built-in preset's": PRESET.replace('"mine"', '"paper"'),
        "overrides: model.assign is what the tables' rows compare": PRESET + "model.assign.topk = 3\n",
        "overrides: train.base_lr = nan is not valid": PRESET + "train.base_lr = nan\n",
        "overrides: unknown config key 'train.iteratons'": PRESET.replace("iterations", "iteratons"),
        "overrides: invalid config: train.lr_steps": PRESET.replace("[50]", "[500]"),
        "overrides change nothing": 'name = "mine"\n[overrides]\ntrain.iterations = 90000\n',
        "unknown field 'comparable'": "comparable = true\n" + PRESET,
        "missing 'name'": PRESET.replace('name = "mine"', 'description = "d"'),
        "not valid TOML": "name = ",
    }
    for i, (culprit, text) in enumerate(presets.items()):
        path = folder / f"preset{i}.toml"
        path.write_text(text)
        for command in (["config"], ["show", "table4"], ["list"], ["status", "table4"], ["report", "--claims"],
                        ["run", "table4", "--dry-run"], ["cancel", "table4"]):  # fmt: skip
            cases.append(Case([*command, "--preset", str(path)], f"{path.name}: {culprit}"))
    cases.append(Case(["train", "--preset", str(folder / "preset0.toml")], "preset0.toml: name = 'paper'"))
    cases.append(Case(["report", "--preset", str(folder / "none.toml")], "none.toml: no such preset file"))
    return cases


def count_cases(root: Path, world: dict[str, Path]) -> list[Case]:
    """Counts out of their range, results stores that are files, devices this machine lacks."""
    cases = []
    store = ["--results", str(root / "results")]
    for command in (["run", "table3", "--dry-run"], ["list", *store], ["show", "table3"], ["status", *store],
                    ["report", "table3", *store], ["cancel", "table3", *store], ["run", "table3", *store]):  # fmt: skip
        for seeds in ("0", "-2", "101", "100000000"):
            cases.append(Case([*command, "--seeds", seeds], f"--seeds {seeds}"))
    for gpus_per_run in ("0", "-1", "65", "1000000000"):
        cases.append(Case(["run", "table3", "--gpus-per-run", gpus_per_run], f"--gpus-per-run {gpus_per_run}"))
    coco = ["data", "subset", "--coco", str(root / "coco"), "--out", str(root / "sub")]
    for images in ("0", "-5", "1000000000"):
        cases.append(Case([*coco, "--images", images], f"--images {images}"))
    analyze = ["analyze", "assignment", "--ann", str(world["ann"]), "--out", str(root / "analysis")]
    cases.append(Case([*analyze, "--max-images", "0"], "--max-images 0"))
    for device in ("cuda:7", "gpu", "mps", "cuda:-1", "cpu:x"):
        cases.append(Case([*analyze, "--device", device], "--device"))
    for command in (["status"], ["report", "table3"], ["list"], ["run", "table3"], ["cancel", "table3"]):
        for store in ("a_file", "a_file/sub"):
            cases.append(Case([*command, "--results", str(root / store)], f"--results {root / store}"))
    cases.append(Case(["config", "--data", ""], "--data ''"))
    # Inputs a run needs, checked before anything starts, on either executor (issue 17, item 4).
    wrong = ["--data", str(root / "wrong"), "--results", str(root / "results")]
    for executor in (["--executor", "local"], ["--executor", "slurm", "--profile", "local"]):
        cases.append(Case(["run", "table3", "--rows", "fcos", *wrong, *executor], f"data root {root / 'wrong'}"))
    return cases


def valid_cases(root: Path, world: dict[str, Path]) -> list[list[str]]:
    """Inputs of the same kinds that must be accepted (exit 0)."""
    cases = []
    for key in cfg.config_fields():
        value = tomli_w.dumps({"v": _default(key)}).partition("=")[2].strip()
        cases.append(["config", "--set", f"{key}={value}"])
    cases += [
        ["config", "--set", "data.train_short_side=[640, 800]", "--set", "model.assign.topk=1"],
        ["config", "--set", "model.assign.negative_iou=0.5", "--set", "model.assign.positive_iou=0.5"],
        ["config", "--set", "train.momentum=0", "--set", "model.loss.focal_gamma=0"],
        ["config", "--set", "model.assign.strategy=tal", "--set", "model.assign.tal.warmup_iters=29316"],
        ["config", "--set", "model.assign.strategy=tal", "--set", "model.assign.tal.soft_targets=true"],
        ["config", "--set", "model.assign.strategy=ota", "--set", "model.assign.ota.sinkhorn_iterations=1"],
        ["eval", "--detections", str(world["dets"]), "--ann", str(world["ann"]), "--json"],
        ["show", "table3"],
        ["run", "table3", "--dry-run", "--results", str(root / "results")],
        ["report", "table4", "--claims", "--noise", "0.05", "--results", str(root / "results")],
        ["run", "table4", "--dry-run", "--noise", "1e-3"],
    ]
    spec, preset = root / "claim_spec.toml", root / "preset.toml"
    spec.write_text(CLAIM_SPEC + GOOD_CLAIM + "margin = 0.1\n")
    preset.write_text(PRESET)
    cases += [["show", str(spec)], ["run", str(spec), "--dry-run", "--preset", str(preset)]]
    cases += [["report", str(spec), "--claims", "--preset", str(preset), "--results", str(root / "results")]]
    empty = root / "empty_dets.json"
    empty.write_text("[]")
    cases.append(["eval", "--detections", str(empty), "--ann", str(world["ann"])])
    return cases


def test_fuzz_malformed_inputs_are_one_line_errors(tmp_path, capsys):
    world = build_world(tmp_path)
    cases = set_cases() + file_cases(tmp_path, world) + count_cases(tmp_path, world)
    cases += claim_and_preset_cases(tmp_path)
    assert len(cases) >= 300, len(cases)
    before = snapshot(tmp_path)
    failures = []
    for case in cases:
        code, out, err = run_cli(case.args, capsys, tmp_path)
        lines = err.strip().splitlines()
        ok = (
            code == 2
            and "Traceback" not in out + err
            and len(lines) == 1
            and lines[0].startswith("error:")
            and case.culprit in lines[0]
        )
        if not ok:
            failures.append(
                f"atssrepro {' '.join(case.args)} -> exit {code}: {err.strip()[-400:]!r} (wanted {case.culprit!r})"
            )
    after = snapshot(tmp_path)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures[:25])
    assert after == before, "files created or changed: " + ", ".join(sorted(set(after) ^ set(before)) or [
        k for k in after if after[k] != before.get(k)])  # fmt: skip


def test_fuzz_valid_inputs_are_accepted(tmp_path, capsys):
    world = build_world(tmp_path)
    for args in valid_cases(tmp_path, world):
        code, out, err = run_cli(args, capsys, tmp_path)
        assert code == 0, f"atssrepro {' '.join(args)} exited {code}: {err[-400:]}"


# ---- records of a run folder: readable JSON of the wrong shape ------------------------------------

RECORDS: list[tuple[str, str, str]] = [
    # (file, content, the field the message names)
    ("run.json", '{"state": 3}', "state"),
    ("run.json", '{"state": "exploded"}', "state"),
    ("run.json", '{"state": null}', "state"),
    ("run.json", '{"id": "abc"}', "state"),
    ("run.json", '{"state": "pending", "slurm_job_id": [1234]}', "slurm_job_id"),
    ("run.json", '{"state": "pending", "slurm_job_id": {"id": 1}}', "slurm_job_id"),
    ("run.json", '{"state": "pending", "slurm_job_id": 1234}', "slurm_job_id"),
    ("run.json", '{"state": "running", "requeues": "two"}', "requeues"),
    ("run.json", '{"state": "done", "requeues": -1}', "requeues"),
    ("run.json", '{"state": "failed", "message": 5}', "message"),
    ("run.json", '{"state": "failed", "message": ["a", "b"]}', "message"),
    ("run.json", '{"state": "done", "world_size": 0}', "world_size"),
    ("run.json", '{"state": "pending", "threads": 1.5}', "threads"),
    ("run.json", '{"state": "done", "started": "yesterday"}', "started"),
    ("run.json", '{"state": "done", "pretrained": "R-50.pkl"}', "pretrained"),
    ("run.json", '{"state": "done", "slurm_log": false}', "slurm_log"),
    ("metrics.json", '{"stats": {"AP": "0.4"}}', "stats.AP"),
    ("metrics.json", '{"stats": {"AP": null}}', "stats.AP"),
    ("metrics.json", '{"stats": {"AP": true}}', "stats.AP"),
    ("metrics.json", '{"stats": {"AP": 40.5}}', "stats.AP"),
    ("metrics.json", '{"stats": {"AP": NaN}}', "stats.AP"),
    ("metrics.json", '{"stats": [0.4]}', "stats"),
    ("metrics.json", '{"stats": "good"}', "stats"),
    ("metrics.json", '{"backend": "pycocotools"}', "stats"),
    ("metrics.json", '{"stats": {"AP": 0.4}, "num_images": "3"}', "num_images"),
    ("metrics.json", '{"stats": {"AP": 0.4}, "per_class_ap": {"cat": "high"}}', "per_class_ap.cat"),
    ("metrics.json", '{"stats": {"AP": 0.4}, "world_size": [2]}', "world_size"),
    ("metrics_tta.json", '{"stats": {"AP": "x"}}', "stats.AP"),
    ("log.jsonl", '{"iter": "3", "loss": 1.0}', "iter"),
    ("log.jsonl", '{"iter": 3.5, "loss": 1.0}', "iter"),
    ("log.jsonl", '{"iter": 0, "loss": 1.0}', "iter"),
    ("log.jsonl", '{"loss": 1.0}', "iter"),
    ("log.jsonl", '{"iter": 3}', "loss"),
    ("log.jsonl", '{"iter": 3, "loss": "low"}', "loss"),
    ("log.jsonl", '{"iter": 3, "loss": null}', "loss"),
    ("log.jsonl", '{"iter": 3, "loss": 1.0, "lr": "0.01"}', "lr"),
    ("log.jsonl", '{"iter": 3, "loss": 1.0, "cls": [1.0]}', "cls"),
    ("log.jsonl", '{"iter": 3, "loss": 1.0, "img_per_s": -2}', "img_per_s"),
    ("log.jsonl", "[3, 1.0]", "line 2"),
    ("log.jsonl", '"iteration 3"', "line 2"),
]


def test_fuzz_malformed_run_records_show_as_corrupt_everywhere(tmp_path, capsys):
    """A record of the right JSON type but the wrong shape: status and report show the run as
    corrupt, naming the file and the field; cancel goes on; run refuses it in one line. No
    traceback, nothing written."""
    from atssrepro.harness.plan import plan
    from atssrepro.harness.specs import load_table

    where = ["table3", "--preset", "smoke", "--data", str(tmp_path / "coco")]
    (run,) = plan([load_table("table3")], "smoke", rows=["fcos"], data_root=str(tmp_path / "coco"))
    stores = []
    for i, (name, content, _) in enumerate(RECORDS):
        folder = tmp_path / f"store{i}" / run.run_id
        folder.mkdir(parents=True)
        (folder / "config.toml").write_text(cfg.to_toml(run.config))
        if name != "run.json":
            (folder / "run.json").write_text('{"state": "done"}')
        if name == "log.jsonl":
            content = '{"iter": 5, "loss": 2.0}\n' + content + "\n"
        (folder / name).write_text(content)
        stores.append(folder.parent)
    before = snapshot(tmp_path)
    failures = []
    for store, (name, content, field) in zip(stores, RECORDS):
        results = ["--results", str(store)]
        culprit = [f"{store / run.run_id / name} is corrupt", field]
        code, out, err = run_cli(["status", *where, *results, "--json"], capsys, tmp_path)
        statuses = [json.loads(line) for line in out.splitlines()] if code == 0 else []
        shown = next((s for s in statuses if s["run_id"] == run.run_id), {})
        if shown.get("state") != "corrupt" or not all(c in shown.get("message", "") for c in culprit):
            failures.append(f"status, {name} {content}: exit {code}, {out.strip()[:300]} {err.strip()[-300:]}")
        code, out, err = run_cli(["report", *where, *results, "-f", "csv"], capsys, tmp_path)
        if code != 0 or "corrupt" not in out or not all(c in err for c in culprit) or "Traceback" in err:
            failures.append(f"report, {name} {content}: exit {code}, {err.strip()[-300:]}")
        code, out, err = run_cli(["cancel", *where, *results], capsys, tmp_path)
        if code != 0 or "Traceback" in err:
            failures.append(f"cancel, {name} {content}: exit {code}, {err.strip()[-300:]}")
        code, out, err = run_cli(["run", *where, "--rows", "fcos", *results], capsys, tmp_path)
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or not all(c in lines[0] for c in culprit) or "--force" not in lines[0]:
            failures.append(f"run, {name} {content}: exit {code}, {err.strip()[-300:]}")
    assert not failures, f"{len(failures)} failed:\n" + "\n".join(failures[:25])
    assert snapshot(tmp_path) == before
