"""Backbone construction: frozen stages, pretrained weights from a file or a name, start-up checks."""

from __future__ import annotations

import subprocess
import sys
import urllib.error

import pytest
import torch
import torchvision

from atssrepro.config import BackboneConfig
from atssrepro.errors import UserError
from atssrepro.model.backbone import ResNetFPN, load_weights, weights_name
from atssrepro.model.dcn import ModulatedDeformConv2d


def test_stem_and_res2_are_frozen_by_default():
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=""), 64)
    trainable = {
        name.split(".")[2] for name, p in backbone.body.body.named_parameters(prefix="body.body") if p.requires_grad
    }
    assert trainable == {"layer2", "layer3", "layer4"}
    features = backbone(torch.zeros(1, 3, 128, 96))
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1)]


def test_weights_from_a_local_file(tmp_path):
    reference = torchvision.models.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=str(path)), 64)
    assert torch.equal(backbone.body.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_bad_weights_are_one_line_errors(tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt.pth"):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=str(corrupt)), 64)
    with pytest.raises(UserError, match="not found"):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=str(tmp_path / "missing.pth")), 64)
    wrong = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    with pytest.raises(UserError, match="does not fit"):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=str(wrong)), 64)
    with pytest.raises(UserError, match="torchvision weights name"):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights="ResNet18_Weights.NOPE"), 64)


def test_imagenet_resolves_to_the_classic_torchvision_weights():
    assert weights_name("resnet50", "imagenet") == "ResNet50_Weights.IMAGENET1K_V1"
    assert weights_name("resnext101_64x4d", "imagenet") == "ResNeXt101_64X4D_Weights.IMAGENET1K_V1"
    assert weights_name("resnet50", "/some/file.pth") == "/some/file.pth"


def test_offline_download_says_how_to_provide_the_file(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"https://download\.pytorch\.org/.*--set model\.backbone\.weights="):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1"), 64)


def test_broken_torchvision_is_reported_in_one_line():
    # torchvision that cannot load (e.g. built for another torch) must not end in a traceback.
    code = "import sys; sys.modules['torchvision'] = None; sys.argv = ['atssrepro', 'train', '--preset', 'smoke']; "
    code += "from atssrepro.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchvision does not work with the installed torch" in lines[0]


@pytest.mark.parametrize("p6_from, p6_in", [("c5", 512), ("p5", 64)])
def test_p6_from_c5_or_p5(p6_from, p6_in):
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=""), 64, p6_from=p6_from)
    extra = backbone.body.fpn.extra_blocks
    assert extra.p6.in_channels == p6_in and extra.use_P5 == (p6_from == "p5")
    features = backbone(torch.zeros(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 64, s, s) for s in (8, 4, 2, 1, 1)]


def test_p6_from_c5_even_when_c5_has_the_fpn_width():
    # resnet18's C5 has 512 channels: torchvision alone would then read P5.
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights=""), 512, p6_from="c5")
    seen = []
    backbone.body.fpn.extra_blocks.p6.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    image = torch.randn(1, 3, 64, 64)
    backbone(image)
    c5 = backbone.body.body(image)["c5"]
    assert torch.equal(seen[0], c5)


@pytest.mark.parametrize("stride, groups, bias", [(1, 1, True), (2, 1, False), (1, 4, True), (2, 8, False)])
def test_dcn_with_zero_offsets_is_half_a_plain_conv(stride, groups, bias):
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(16, 24, 3, stride=stride, padding=1, groups=groups, bias=bias)
    torch.nn.init.zeros_(dcn.offset.weight)
    if bias:
        torch.nn.init.normal_(dcn.bias)
    x = torch.randn(2, 16, 11, 9)
    plain = torch.nn.functional.conv2d(x, dcn.weight, None, stride=stride, padding=1, groups=groups)
    expected = 0.5 * plain + (dcn.bias[None, :, None, None] if bias else 0)
    assert torch.allclose(dcn(x), expected, atol=1e-5)


def test_dcn_init_is_the_official_one_and_weights_copy():
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=2, dilation=2, groups=2)
    dcn = ModulatedDeformConv2d.from_conv(conv)
    torch.nn.init.zeros_(dcn.offset.weight)
    assert dcn.weight.shape == conv.weight.shape and torch.equal(dcn.weight, conv.weight)
    assert torch.equal(dcn.bias, conv.bias)
    x = torch.randn(1, 8, 13, 13)
    assert dcn(x).shape == conv(x).shape
    assert torch.allclose(dcn(x), 0.5 * (conv(x) - conv.bias[:, None, None]) + conv.bias[:, None, None], atol=1e-5)
    fresh = ModulatedDeformConv2d(64, 64)
    bound = 1 / (64 * 9) ** 0.5  # DFConv2d: U(+-1/sqrt(in x 9)), zero bias; offsets kaiming(a=1)
    assert fresh.weight.abs().max() <= bound and fresh.weight.std() > bound / 2
    assert torch.all(fresh.bias == 0) and torch.all(fresh.offset.bias == 0)
    assert fresh.offset.weight.abs().max() <= (3 / (64 * 9)) ** 0.5 and fresh.offset.weight.std() > 0


def test_gradients_reach_the_offsets_and_the_mask():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(4, 6, groups=2)
    dcn(torch.randn(2, 4, 8, 8)).square().sum().backward()
    grad = dcn.offset.weight.grad
    assert grad[:18].abs().sum() > 0 and grad[18:].abs().sum() > 0
    assert dcn.offset.bias.grad.abs().sum() > 0 and dcn.weight.grad.abs().sum() > 0


def test_dcn_runs_in_fp32_under_autocast():
    torch.manual_seed(0)
    dcn = ModulatedDeformConv2d(8, 8, groups=2)
    torch.nn.init.normal_(dcn.offset.weight, std=0.1)
    x = torch.randn(1, 8, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = dcn(x)
        half = dcn(x.bfloat16())
    assert mixed.dtype == torch.float32 and torch.equal(mixed, dcn(x))
    assert half.dtype == torch.bfloat16


def _dcn_convs(backbone: ResNetFPN) -> set[str]:
    return {name for name, m in backbone.body.body.named_modules() if isinstance(m, ModulatedDeformConv2d)}


def test_dcn_resnet50_keeps_the_pretrained_weights(tmp_path):
    reference = torchvision.models.resnet50()
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnet50", weights=str(path), dcn=True), 64)
    body = backbone.body.body
    blocks = {"layer2": 4, "layer3": 6, "layer4": 3}
    assert _dcn_convs(backbone) == {f"{stage}.{i}.conv2" for stage, n in blocks.items() for i in range(n)}
    for stage, n in blocks.items():
        for i in range(n):
            dcn, conv = getattr(body, stage)[i].conv2, getattr(reference, stage)[i].conv2
            assert torch.equal(dcn.weight, conv.weight) and dcn.stride == conv.stride
            assert dcn.offset.weight.requires_grad
    assert not body.layer1[0].conv2.weight.requires_grad
    features = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in features] == [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]


def test_dcn_resnext_has_dcn_in_c4_c5_only():
    backbone = ResNetFPN(BackboneConfig(style="torchvision", name="resnext101_32x8d", weights="", dcn=True), 32)
    body = backbone.body.body
    assert _dcn_convs(backbone) == {f"layer3.{i}.conv2" for i in range(23)} | {f"layer4.{i}.conv2" for i in range(3)}
    assert body.layer3[0].conv2.groups == 32 and body.layer3[0].conv2.weight.shape == (1024, 32, 3, 3)
    assert backbone.body.fpn.inner_blocks[2][0].in_channels == 2048
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(1, 32, s, s) for s in (8, 4, 2, 1, 1)]


def test_dcn_needs_bottleneck_blocks():
    with pytest.raises(UserError, match="model.backbone.dcn needs a Bottleneck ResNet"):
        ResNetFPN(BackboneConfig(style="torchvision", name="resnet18", weights="", dcn=True), 64)


@pytest.mark.parametrize("name", ["ResNeXt101_32X8D_Weights.IMAGENET1K_V1", "ResNeXt101_64X4D_Weights.IMAGENET1K_V1"])
def test_resnext_weights_names_are_understood(name, monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    enum = torchvision.models.get_weight(name)
    monkeypatch.setattr(type(enum), "get_state_dict", offline)
    with pytest.raises(UserError, match=rf"could not download {name}.*{enum.url}"):
        load_weights(torch.nn.Identity(), name)


def test_msra_style_is_the_official_backbone():
    """Stride in the first 1x1 conv of block 0 of res3-res5 (a ResNeXt keeps it in the 3x3 conv),
    FrozenBN without eps, BGR 0-255 input minus the Caffe mean with std 1."""
    backbone = ResNetFPN(BackboneConfig(name="resnet50", weights=""), 64)
    resnet = backbone.body.body
    for stage in ("layer2", "layer3", "layer4"):
        block = getattr(resnet, stage)[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
        assert block.downsample[0].stride == (2, 2)
    assert resnet.layer1[0].conv1.stride == (1, 1) and resnet.bn1.eps == 0.0
    resnext = ResNetFPN(BackboneConfig(name="resnext101_32x8d", weights="", dcn=True), 32).body.body
    assert resnext.layer3[0].conv1.stride == (1, 1) and resnext.layer3[0].conv2.stride == (2, 2)
    assert resnext.layer3[0].conv2.offset.stride == (2, 2)
    torchvision_style = ResNetFPN(BackboneConfig(name="resnet50", weights="", style="torchvision"), 64).body.body
    assert torchvision_style.layer2[0].conv2.stride == (2, 2) and torchvision_style.bn1.eps == 1e-5

    from atssrepro.config import ModelConfig
    from atssrepro.model.detector import OneStageDetector

    images = torch.tensor([[[[0]], [[128]], [[255]]]], dtype=torch.uint8)  # one RGB pixel
    msra = OneStageDetector(ModelConfig(backbone=BackboneConfig(name="resnet18", weights="")), 3)
    x = msra.normalize(images, torch.tensor([[1, 1]]))
    assert x.flatten().tolist() == pytest.approx([255 - 102.9801, 128 - 115.9465, 0 - 122.7717])


def test_msra_weights_from_a_file_with_the_official_keys(tmp_path):
    source = ResNetFPN(BackboneConfig(name="resnet50", weights=""), 64).body.body
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    # Our keys -> the official ones: stem.conv1 / stem.bn1; the ResNet's layers keep their names.
    official = {
        f"backbone.body.{'stem.' if k.startswith(('conv1.', 'bn1.')) else ''}{k}": v
        for k, v in source.state_dict().items()
        if not k.startswith("fc.")
    }
    path = tmp_path / "msra_r50.pth"
    torch.save(official, path)
    backbone = ResNetFPN(BackboneConfig(name="resnet50", weights=str(path), dcn=True), 64)
    loaded = backbone.body.body
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)
    assert torch.equal(loaded.layer3[2].conv2.weight, source.layer3[2].conv2.weight)  # into the DCN conv
    assert not loaded.layer3[2].conv2.offset.weight.isnan().any()  # offsets keep their init
    del official["backbone.body.layer1.0.conv3.weight"]
    torch.save(official, path)
    with pytest.raises(UserError, match=r"misses 1 keys \(backbone\.body\.body\.layer1\.0\.conv3\.weight\)"):
        ResNetFPN(BackboneConfig(name="resnet50", weights=str(path)), 64)
    with pytest.raises(UserError, match="style 'msra' takes an official catalog name"):
        ResNetFPN(BackboneConfig(name="resnet50", weights="ResNet50_Weights.IMAGENET1K_V1"), 64)
