"""Importing official ATSS checkpoints: every zoo layout strictly, the checkpoint file formats, the
one-line errors, and the CLI round trip ``atssrepro import official`` -> ``atssrepro eval``."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from atssrepro import config as cfg
from atssrepro.errors import UserError
from atssrepro.model.detector import OneStageDetector
from atssrepro.model.official import convert_backbone_state_dict
from atssrepro.model.official_checkpoint import convert_official_state_dict, read_official_checkpoint

from cli import atssrepro

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REF = SHARED / "official_ref"
needs_ref = pytest.mark.skipif(not (REF / "make_weights.py").is_file(), reason="../shared/official_ref is absent")

# Official zoo layout -> our built-in config of that model.
ZOO = {
    "ATSS_BOX": "atss_r50_fpn_1x",
    "DCNv2_ATSS_BOX": "atss_dcnv2_r50_fpn_1x",
    "zoo/atss_R_101_FPN_2x": "atss_r101_fpn_2x",
    "zoo/atss_dcnv2_R_101_FPN_2x": "atss_dcnv2_r101_fpn_2x",
    "zoo/atss_X_101_32x8d_FPN_2x": "atss_x101_32x8d_fpn_2x",
    "zoo/atss_dcnv2_X_101_32x8d_FPN_2x": "atss_dcnv2_x101_32x8d_fpn_2x",
    "zoo/atss_X_101_64x4d_FPN_2x": "atss_x101_64x4d_fpn_2x",
    "zoo/atss_dcnv2_X_101_64x4d_FPN_2x": "atss_dcnv2_x101_64x4d_fpn_2x",
}


def official_state_dict(layout: str) -> dict[str, torch.Tensor]:
    """The seed-1 weights of an official layout, built in memory by the reference's make_weights.py."""
    spec = importlib.util.spec_from_file_location("make_weights", REF / "make_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    entries, regression = module.read_keys(REF / "keys" / f"{layout}.json")
    return dict(module.make_state_dict(entries, 1, regression or "BOX"))


def zoo_config(name: str) -> cfg.Config:
    return cfg.build_config(name, "paper", ["model.backbone.weights="])


@needs_ref
@pytest.mark.parametrize("layout", list(ZOO))
def test_every_zoo_layout_imports_strictly(layout):
    """Every official key lands in exactly one of ours, unchanged, and every key of ours is filled."""
    official = official_state_dict(layout)
    config = zoo_config(ZOO[layout])
    converted = convert_official_state_dict(official, config.model)
    levels = 5
    scales = [official[f"rpn.head.scales.{i}.scale"] for i in range(levels)]
    assert torch.equal(converted.pop("head.scales"), torch.cat(scales))
    # The rest are the official tensors themselves, each used once: 2 x 5 keys are scales and cell anchors.
    official_ids = {id(v) for k, v in official.items() if "scales" not in k and "cell_anchors" not in k}
    assert len(converted) == len(official) - 2 * levels == len(official_ids)
    assert {id(v) for v in converted.values()} == official_ids
    # Loaded strictly into a model built without memory, no parameter or buffer keeps its init.
    with torch.device("meta"):
        model = OneStageDetector(config.model, 80)
    model.load_state_dict({**converted, "head.scales": torch.cat(scales)}, strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    assert left == ["pixel_mean", "pixel_std"]  # not weights: the input normalisation constants


@needs_ref
def test_strictness_names_the_keys():
    official = official_state_dict("ATSS_BOX")
    model = zoo_config("atss_r50_fpn_1x").model
    extra = {**official, "rpn.head.extra.weight": torch.zeros(1)}
    with pytest.raises(UserError, match=r"rpn\.head\.extra\.weight.* fit no key"):
        convert_official_state_dict(extra, model)
    missing = {k: v for k, v in official.items() if k != "backbone.fpn.fpn_inner3.bias"}
    with pytest.raises(UserError, match=r"misses 1 keys \(backbone\.body\.fpn\.inner_blocks\.1\.0\.bias\)"):
        convert_official_state_dict(missing, model)
    dcn = zoo_config("atss_dcnv2_r50_fpn_1x").model  # a DCN config for a plain checkpoint
    with pytest.raises(UserError, match=r"misses 30 keys \(.*conv2\.offset"):
        convert_official_state_dict(official, dcn)
    resnet101 = zoo_config("atss_r101_fpn_2x").model
    with pytest.raises(UserError, match=r"misses 255 keys \(backbone\.body\.body\.layer3\.10\."):
        convert_official_state_dict(official, resnet101)
    other_anchors = cfg.apply(cfg.Config(), {"model": {"anchors": {"scale": 4.0}}}, "test").model
    with pytest.raises(UserError, match=r"cell_anchors\.0 .* not the anchors of model\.anchors"):
        convert_official_state_dict(official, other_anchors)
    # backbone_only: ImageNet weights, DCN offset convs may be absent.
    body = {k: v for k, v in official.items() if k.startswith("backbone.body.")}
    with torch.device("meta"):  # the ResNet being built, as ImageNet weights load into it
        dcn_resnet = OneStageDetector(dcn, 80).backbone.body.body
        resnet = OneStageDetector(model, 80).backbone.body.body
    converted = convert_backbone_state_dict(body, dcn_resnet)
    assert len(converted) == len(body) and all(k.startswith("backbone.body.body.") for k in converted)
    with pytest.raises(UserError, match=r"keys outside backbone\.body\.\*"):
        convert_backbone_state_dict(official, resnet)


@needs_ref
def test_checkpoint_files(tmp_path):
    official = official_state_dict("ATSS_BOX")
    trainer = tmp_path / "model_final.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}, "iteration": 90000}, trainer)
    assert read_official_checkpoint(trainer).keys() == official.keys()
    bare = tmp_path / "bare.pth"
    torch.save(official, bare)
    assert read_official_checkpoint(bare).keys() == official.keys()
    # "module." is stripped only when every key has it; then the prefixed keys are unknown.
    mixed = tmp_path / "mixed.pth"
    torch.save({**official, "module.rpn.head.cls_logits.bias": official["rpn.head.cls_logits.bias"]}, mixed)
    with pytest.raises(UserError, match=r"module\.rpn\.head\.cls_logits\.bias.* fit no key"):
        convert_official_state_dict(read_official_checkpoint(mixed), zoo_config("atss_r50_fpn_1x").model)
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": official, "cfg": Path("/x")}, pickled)
    with pytest.raises(UserError, match=r"pickled\.pth: holds objects other than tensors.*refused for safety"):
        read_official_checkpoint(pickled)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2], not_weights)
    with pytest.raises(UserError, match="neither a state dict nor a checkpoint"):
        read_official_checkpoint(not_weights)


@pytest.fixture
def two_image_val(tmp_path, tiny_coco) -> Path:
    """tiny_coco's first two val images, as an annotation file."""
    data = json.loads((tiny_coco / "annotations" / "instances_val2017.json").read_text())
    images = data["images"][:2]
    ids = {image["id"] for image in images}
    data.update(images=images, annotations=[a for a in data["annotations"] if a["image_id"] in ids])
    path = tmp_path / "val2.json"
    path.write_text(json.dumps(data))
    return path


@needs_ref
@pytest.mark.slow  # four CLI processes: ~40 s on 2 cores
def test_import_then_eval_from_the_command_line(tmp_path, tiny_coco, two_image_val):
    official = official_state_dict("ATSS_BOX")
    trainer = tmp_path / "model_final.pth"
    torch.save({"model": {f"module.{k}": v for k, v in official.items()}, "iteration": 90000}, trainer)
    run = tmp_path / "zoo_r50"
    small = [f"data.root={tiny_coco}", f"data.val_ann={two_image_val}"]
    small += ["data.test_short_side=256", "data.max_size=320"]
    sets = [arg for s in small for arg in ("--set", s)]
    atssrepro("import", "official", str(trainer), "--config", "atss_r50_fpn_1x", "--out", str(run), *sets)
    info = json.loads((run / "run.json").read_text())
    assert info["state"] == "done" and info["imported_from"] == str(trainer)
    assert 'style = "msra"' in (run / "config.toml").read_text()
    metrics = json.loads(atssrepro("eval", str(run), "--json").stdout)
    assert metrics["num_images"] == 2 and (run / "metrics.json").is_file()
    # The same folder again is refused; a bad file is a one-line error.
    again = atssrepro("import", "official", str(trainer), "-c", "atss_r50_fpn_1x", "-o", str(run), check=False)
    assert again.returncode == 2 and "already holds a checkpoint" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    dcn = ["-c", "atss_dcnv2_r50_fpn_1x", "-o", str(tmp_path / "x")]
    wrong = atssrepro("import", "official", str(trainer), *dcn, check=False)
    assert wrong.returncode == 2 and "misses 30 keys" in wrong.stderr and not (tmp_path / "x").exists()


@needs_ref
def test_imported_run_evaluates_with_tta(tmp_path, tiny_coco, two_image_val, monkeypatch):
    """The imported folder takes the multi-scale path of ``eval --tta`` (with two small scales here,
    the official twelve up to 1800 px take minutes per image on a CPU)."""
    from rich.console import Console

    from atssrepro.engine import run as run_module
    from atssrepro.engine.official_import import import_official_checkpoint
    from atssrepro.engine.tta import TTAConfig

    weights = tmp_path / "bare.pth"
    torch.save(official_state_dict("ATSS_BOX"), weights)
    small = ["data.test_short_side=192", "data.max_size=320", "data.num_workers=0"]
    small += [f"data.root={tiny_coco}", f"data.val_ann={two_image_val}"]
    run = import_official_checkpoint(weights, cfg.build_config("atss_r50_fpn_1x", "paper", small), tmp_path / "zoo")
    two_scales = TTAConfig(scales=(160, 224), max_size=400, scale_ranges=((0, 1e5), (0, 1e5)))
    monkeypatch.setattr(run_module, "TTAConfig", lambda: two_scales)
    metrics = run_module.evaluate_run(run, Console(quiet=True), tta=True)
    assert metrics["num_images"] == 2 and (run / "metrics_tta.json").is_file()
