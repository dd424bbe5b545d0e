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
from atssrepro.model.backbone import ResNetFPN


def test_stem_and_res2_are_frozen_by_default():
    backbone = ResNetFPN(BackboneConfig(name="resnet18"), 64)
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
    backbone = ResNetFPN(BackboneConfig(name="resnet18", weights=str(path)), 64)
    assert torch.equal(backbone.body.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_bad_weights_are_one_line_errors(tmp_path, monkeypatch):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(UserError, match="corrupt.pth"):
        ResNetFPN(BackboneConfig(name="resnet18", weights=str(corrupt)), 64)
    with pytest.raises(UserError, match="not found"):
        ResNetFPN(BackboneConfig(name="resnet18", weights=str(tmp_path / "missing.pth")), 64)
    wrong = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), wrong)
    with pytest.raises(UserError, match="does not fit"):
        ResNetFPN(BackboneConfig(name="resnet18", weights=str(wrong)), 64)
    with pytest.raises(UserError, match="torchvision weights name"):
        ResNetFPN(BackboneConfig(name="resnet18", weights="ResNet18_Weights.NOPE"), 64)


def test_offline_download_says_how_to_provide_the_file(monkeypatch):
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.__class__, "get_state_dict", offline)
    with pytest.raises(UserError, match=r"https://download\.pytorch\.org/.*--set model\.backbone\.weights="):
        ResNetFPN(BackboneConfig(name="resnet18", weights="ResNet18_Weights.IMAGENET1K_V1"), 64)


def test_broken_torchvision_is_reported_in_one_line():
    # torchvision that cannot load (e.g. built for another torch) must not end in a traceback.
    code = "import sys; sys.modules['torchvision'] = None; sys.argv = ['atssrepro', 'config']; "
    code += "from atssrepro.cli import main; main()"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "torchvision does not work with the installed torch" in lines[0]
