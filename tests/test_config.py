"""The typed config: paper defaults, layering, validation, TOML round trip and ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import pytest

from atssrepro import config as cfg
from atssrepro.engine.train import lr_factor
from atssrepro.errors import UserError


def test_defaults_are_the_official_recipe():
    c = cfg.Config()
    t = c.train
    assert (t.batch_size, t.base_lr, t.iterations, t.lr_steps, t.lr_gamma) == (16, 0.01, 90_000, (60_000, 80_000), 0.1)
    assert (t.warmup_method, t.warmup_iters, t.warmup_factor) == ("constant", 500, pytest.approx(1 / 3))
    assert (t.momentum, t.weight_decay, t.bias_lr_factor, t.bias_weight_decay) == (0.9, 1e-4, 2.0, 0.0)
    assert (c.data.train_short_side, c.data.test_short_side, c.data.max_size) == ((800, 800), 800, 1333)
    m = c.model
    assert (m.assign.topk, m.anchors.scale, m.anchors.aspect_ratios, m.backbone.trainable_stages) == (9, 8.0, (1.0,), 3)
    i = m.inference
    assert (i.score_threshold, i.pre_nms_topk, i.nms_iou, i.detections_per_image) == (0.05, 1000, 0.6, 100)
    assert cfg.build_config("atss_r50_fpn_1x") == cfg.with_data_root(c, None)  # data/coco, made absolute


def test_layers_apply_in_order(tmp_path):
    path = tmp_path / "k7.toml"
    path.write_text("[model.assign]\ntopk = 7\n[train]\niterations = 123\n")
    c = cfg.build_config(
        str(path), "smoke", ["train.iterations=5", "train.lr_steps=[4]", "data.train_short_side=[640, 800]"], "/data"
    )
    assert c.model.assign.topk == 7  # from the file
    assert c.model.backbone.name == "resnet18"  # from the preset
    assert c.train.iterations == 5  # --set wins over the preset and the file
    assert c.data.train_short_side == (640, 800) and c.data.root == "/data"


def test_toml_round_trip_and_content_id():
    c = cfg.build_config(None, "smoke", ["model.anchors.aspect_ratios=[0.5, 2]"])
    again = cfg.from_dict(cfg.load_toml_text(cfg.to_toml(c)), "round trip")
    assert again == c and cfg.config_id(again) == cfg.config_id(c)
    assert cfg.config_id(cfg.build_config(None, "smoke", ["model.assign.topk=7"])) != cfg.config_id(
        cfg.build_config(None, "smoke")
    )


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("model.asign.topk=7", "did you mean 'model.assign'"),
        ("train.amp=fp32", "one of 'off', 'tf32', 'bf16', 'fp16'"),
        ("train.batch_size=abc", "expected an integer"),
        ("train.batch_size=true", "expected an integer"),
        ("model.assign=3", "model.assign is a section"),
        ("topk", "expected KEY=VALUE"),
        ("train.lr_steps=[80000, 60000]", "must be increasing"),
        ("model.head.channels=48", "multiple of 32"),
    ],
)
def test_bad_overrides_are_one_line_errors(assignment, message):
    with pytest.raises(UserError, match=message) as error:
        cfg.build_config(None, "paper", [assignment])
    assert "\n" not in str(error.value)


def test_point_regression_needs_one_anchor_per_location():
    with pytest.raises(UserError, match="one anchor per location"):
        cfg.build_config(None, "paper", ["model.regression=point", "model.anchors.aspect_ratios=[0.5, 1, 2]"])


def test_unknown_preset_and_config_name():
    with pytest.raises(UserError, match="did you mean 'smoke'"):
        cfg.build_config(None, "smok")
    with pytest.raises(UserError, match="did you mean 'atss_r50_fpn_1x'"):
        cfg.build_config("atss_r50_fpn_1", "paper")


def test_lr_schedule_constant_warmup_then_steps():
    t = cfg.TrainConfig()
    assert lr_factor(0, t) == pytest.approx(1 / 3) and lr_factor(499, t) == pytest.approx(1 / 3)
    assert lr_factor(500, t) == 1.0 and lr_factor(59_999, t) == 1.0
    assert lr_factor(60_000, t) == pytest.approx(0.1) and lr_factor(80_000, t) == pytest.approx(0.01)
    linear = cfg.TrainConfig(warmup_method="linear")
    assert lr_factor(0, linear) == pytest.approx(1 / 3) and lr_factor(250, linear) == pytest.approx(2 / 3)


def test_every_config_field_has_a_value_rule():
    """A new config field needs its value rule next to it (its range, or ANY when its type says it
    all); a Literal or a bool is its own rule."""
    missing = [key for key in cfg.config_fields() if cfg.rule_of(key) is None]
    assert not missing, f"add a rule to the annotation in atssrepro/config/sections.py of: {', '.join(missing)}"


def test_every_count_field_has_an_upper_bound():
    """An integer field (or list of them) refuses a count far beyond any schedule or model: 10^12
    (train.seed aside, a seed of any 63-bit value)."""
    accepted = []
    for key in cfg.config_fields():
        node = cfg.Config()
        for part in key.split("."):
            node = getattr(node, part)
        if key == "train.seed" or not (type(node) is int or (isinstance(node, tuple) and type(node[0]) is int)):
            continue
        huge = [10**12] * len(node) if isinstance(node, tuple) else 10**12
        try:
            cfg.apply(cfg.Config(), cfg.parse_override(f"{key}={huge}"), "test")
        except UserError as error:
            assert key in str(error)
        else:
            accepted.append(key)
    assert not accepted, f"give these counts an upper bound in atssrepro/config/sections.py: {', '.join(accepted)}"


def test_defaults_and_presets_obey_the_rules():
    for preset in cfg.PRESETS:
        cfg.build_config(None, preset)
    cfg.build_config("atss_r50_fpn_1x", "paper")


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("model.assign.topk=0", "model.assign.topk = 0 is not valid: must be in [1, 1000]"),
        # Counts have an upper bound too (issue 17): absurd ones are refused as they are read.
        ("model.assign.topk=2000000000", "model.assign.topk = 2000000000 is not valid: must be in [1, 1000]"),
        ("train.iterations=1000000000", "train.iterations = 1000000000 is not valid: must be in [1, 2000000]"),
        ("train.batch_size=100000", "train.batch_size = 100000 is not valid: must be in [1, 4096]"),
        ("train.log_every=3000000", "train.log_every"),
        ("train.warmup_iters=3000000", "train.warmup_iters"),
        ("model.head.convs=100", "model.head.convs = 100 is not valid: must be in [1, 16]"),
        ("model.fpn_channels=65536", "model.fpn_channels"),
        ("model.inference.pre_nms_topk=1000000", "model.inference.pre_nms_topk"),
        ("model.inference.detections_per_image=100000", "model.inference.detections_per_image"),
        ("model.anchors.scales_per_octave=64", "model.anchors.scales_per_octave"),
        ("train.base_lr=-0.01", "train.base_lr = -0.01 is not valid"),
        ("train.base_lr=nan", "train.base_lr = nan"),
        ("train.base_lr=inf", "must be finite"),
        ("train.momentum=2", "train.momentum = 2 is not valid: must be in [0, 1)"),
        ("model.assign.positive_iou=1.5", "positive_iou"),
        ("model.assign.negative_iou=0.6", "negative_iou = 0.6 must be <="),
        ("data.train_short_side=[800]", "expected a list of 2 ints"),
        ("data.train_short_side=[1, 1]", "data.train_short_side"),
        ("data.test_short_side=100000", "data.test_short_side"),
        ("train.lr_steps=[0]", "train.lr_steps"),
        ("train.lr_steps=[100000]", "must lie in [1, train.iterations = 90000]"),
        ("model.anchors.aspect_ratios=[0.5, -1]", "aspect_ratios"),
        ("model.anchors.scale=0", "model.anchors.scale"),
        ("model.assign.scale_ranges=[0, 64, 32, 256, 512, inf]", "must be increasing"),
        ("model.assign.scale_ranges=[0, 64, 128, 256, inf]", "exactly 6 elements"),
        ("model.assign.scale_ranges=[0, 64, 128, 256, 512, nan]", "nan"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.root=''", "non-empty"),
        ("model.loss.focal_gamma=-inf", "model.loss.focal_gamma"),
        ("model.inference.score_threshold=1.01", "score_threshold"),
    ],
)
def test_values_out_of_range_are_one_line_errors(assignment, message):
    with pytest.raises(UserError) as error:
        cfg.build_config(None, "paper", [assignment])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_rules_apply_to_a_config_read_back(tmp_path):
    bad = cfg.to_dict(cfg.Config())
    bad["model"]["assign"]["topk"] = 0
    with pytest.raises(UserError, match="checkpoint.pt: model.assign.topk = 0"):
        cfg.from_dict(bad, "checkpoint.pt")


def test_a_stored_config_from_before_the_backbone_style_reads_as_torchvision():
    stored = cfg.to_dict(cfg.build_config(None, "smoke", [], None))
    del stored["model"]["backbone"]["style"]
    assert cfg.from_dict(stored, "old config.toml").model.backbone.style == "torchvision"
    paper = cfg.to_dict(cfg.Config())
    assert cfg.from_dict(paper, "config.toml").model.backbone.style == "msra"


def test_deeply_nested_toml_is_a_one_line_error(tmp_path):
    for text in ("a = " + "[" * 1000 + "1" + "]" * 1000, "a = " + "{b = " * 1000 + "1" + "}" * 1000):
        path = tmp_path / "deep.toml"
        path.write_text(text)
        with pytest.raises(UserError, match="deep.toml: not valid TOML.*nested too deeply") as error:
            cfg.build_config(str(path))
        assert "\n" not in str(error.value)


# A config as it was, and the same config after a release added a field and a section (both marked).
@dataclass(frozen=True)
class _Assign:
    topk: int = 9


@dataclass(frozen=True)
class _Tal:
    alpha: float = 1.0
    beta: float = 6.0


@dataclass(frozen=True)
class _AssignWithTal:
    topk: int = 9
    tal: Annotated[_Tal, cfg.IdOmittedAtDefault] = field(default_factory=_Tal)
    margin: Annotated[float, cfg.IdOmittedAtDefault] = 0.0


@dataclass(frozen=True)
class _Before:
    assign: _Assign = field(default_factory=_Assign)
    seed: int = 0


@dataclass(frozen=True)
class _After:
    assign: _AssignWithTal = field(default_factory=_AssignWithTal)
    seed: int = 0


def test_a_new_field_marked_id_omitted_at_default_changes_no_id():
    for topk, seed in [(9, 0), (7, 3)]:
        before, after = _Before(_Assign(topk), seed), _After(_AssignWithTal(topk), seed)
        assert cfg.config_id(after) == cfg.config_id(before)
    changed = {
        cfg.config_id(_After(_AssignWithTal(tal=_Tal(beta=4.0)))),
        cfg.config_id(_After(_AssignWithTal(margin=0.5))),
        cfg.config_id(_After(_AssignWithTal(tal=_Tal(alpha=2.0), margin=0.5))),
    }
    assert cfg.config_id(_Before()) not in changed and len(changed) == 3


def test_eval_is_never_part_of_the_id():
    tta = cfg.build_config(None, "smoke", ["eval.tta=true", "eval.backend=faster-coco-eval"])
    assert cfg.config_id(tta) == cfg.config_id(cfg.build_config(None, "smoke"))
