"""Pretrained weights: Detectron .pkl files read safely and mapped as the official loader maps them; the catalog."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from atssrepro.errors import UserError
from atssrepro.fileio import sha256
from atssrepro.model import pretrained
from atssrepro.model.detectron_pickle import official_backbone_state, official_key, read_blobs

MAPPING = Path(__file__).resolve().parents[2] / "shared" / "official_ref" / "msra_pretrained_mapping.json"


def python2_pickle(blobs: dict[str, np.ndarray]) -> bytes:
    """What Python 2's ``pickle.dump(blobs, f, protocol=2)`` writes, as Detectron's files are: arrays
    rebuilt by ``numpy.core.multiarray._reconstruct`` from py2 ``str`` data (SHORT_BINSTRING / BINSTRING)."""

    def string(data: bytes) -> bytes:
        return (b"U" + bytes([len(data)]) if len(data) < 256 else b"T" + struct.pack("<I", len(data))) + data

    out = b"\x80\x02}("
    for name, array in blobs.items():
        array = np.ascontiguousarray(array, dtype=np.float32)
        shape = b"(" + b"".join(b"J" + struct.pack("<i", n) for n in array.shape) + b"t"
        out += string(name.encode())
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + string(b"b") + b"\x87R"
        out += b"(K\x01" + shape + b"cnumpy\ndtype\n" + string(b"f4") + b"K\x00K\x01\x87R"
        out += b"(K\x03" + string(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        out += b"\x89" + string(array.tobytes()) + b"tb"
    return out + b"u."


def test_python2_and_python3_pickles_of_arrays_read_back(tmp_path):
    blobs = {"conv1_w": np.random.RandomState(0).randn(4, 3, 7, 7).astype(np.float32), "res_conv1_bn_s": np.ones(4)}
    py2 = tmp_path / "py2.pkl"
    py2.write_bytes(python2_pickle(blobs))
    for path in (py2, *(tmp_path / f"p{p}.pkl" for p in (2, 4))):
        if path != py2:
            path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=int(path.stem[1:])))
        read = read_blobs(path)
        assert read.keys() == blobs.keys()
        np.testing.assert_array_equal(read["conv1_w"], blobs["conv1_w"])


class _Touch:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class _Open:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("evil", [_Touch, _Open])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, evil):
    target = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    for payload in ({"conv1_w": np.zeros(3, np.float32), "x": evil(target)}, evil(target)):
        path.write_bytes(pickle.dumps(payload, protocol=2))
        refused = r"R-50\.pkl is refused: it refers to (posix\.system|io\.open|builtins\.open)"
        with pytest.raises(UserError, match=refused) as e:
            read_blobs(path)
        assert "\n" not in str(e.value)
        assert not target.exists()


def test_files_that_are_not_weights_pickles_are_one_line_errors(tmp_path):
    cases = {
        "text.pkl": (b"not a pickle at all", "not a readable Detectron weights pickle"),
        "list.pkl": (pickle.dumps([1, 2]), "holds list, not a dict of blobs"),
        "strings.pkl": (pickle.dumps({"conv1_w": "abc"}), "entry 'conv1_w' is str, not a numeric array"),
        "objects.pkl": (pickle.dumps({"conv1_w": np.array([None, 1], dtype=object)}), "an array of object, not"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=message):
            read_blobs(tmp_path / name)
    with pytest.raises(UserError, match="not found"):
        read_blobs(tmp_path / "missing.pkl")


@pytest.mark.skipif(not MAPPING.is_file(), reason="../shared/official_ref absent")
@pytest.mark.parametrize("variant", ["R-50", "R-101", "R-50_DCNv2", "R-101_DCNv2"])
def test_blob_names_map_as_the_official_loader_maps_them(variant):
    facts = json.loads(MAPPING.read_text())[variant]
    dcn_layers = [i + 1 for i, on in enumerate(facts["stage_with_dcn"]) if on]
    for blob in facts["blobs"]:
        expected = blob["official_keys"][0] if blob["official_keys"] else None
        assert official_key(blob["blob"], dcn_layers) == expected, blob["blob"]
    blobs = {b["blob"]: np.ones(b["shape"], np.float32) for b in facts["blobs"]}
    state = official_backbone_state(blobs, dcn_layers)
    # Everything of the backbone body but the offsets of DCN convs (kept at their init, as officially).
    not_from_file = {k for k in facts["official_keys_not_from_pickle"] if k.startswith("backbone.body.")}
    assert {k for k in not_from_file if ".offset." not in k} <= state.keys()
    assert all(torch.equal(state[k], torch.zeros_like(state[k])) for k in state if k.endswith("running_mean"))
    assert all(torch.equal(state[k], torch.ones_like(state[k])) for k in state if k.endswith("running_var"))
    assert len(state) == facts["num_blobs"] - len(facts["blobs_dropped"]) + len(
        [k for k in not_from_file if k.endswith(("running_mean", "running_var"))]
    )


def test_unknown_blobs_are_refused():
    with pytest.raises(UserError, match="blob 'pred_w' is not a blob of a Detectron ResNet"):
        official_key("pred_w")


# --- the catalog and its cache ------------------------------------------------------------------


def test_catalog_names_and_imagenet_resolve_by_style():
    assert pretrained.resolve_name("imagenet", "resnet50", "msra") == "MSRA/R-50"
    assert pretrained.resolve_name("imagenet", "resnext101_64x4d", "msra") == "FAIR/20171220/X-101-64x4d"
    assert pretrained.resolve_name("imagenet", "resnet50", "torchvision") == "ResNet50_Weights.IMAGENET1K_V1"
    assert pretrained.CATALOG["FAIR/20171220/X-101-64x4d"].url.endswith("/ImageNetPretrained/FBResNeXt/X-101-64x4d.pkl")
    with pytest.raises(UserError, match="no official .* ImageNet weights of resnet18"):
        pretrained.resolve_name("imagenet", "resnet18", "msra")


def test_a_catalog_file_is_taken_from_the_cache_or_downloaded_atomically_into_it(tmp_path, monkeypatch):
    monkeypatch.setenv("ATSSREPRO_WEIGHTS", str(tmp_path / "cache"))
    source = tmp_path / "server" / "R-50.pkl"
    source.parent.mkdir()
    source.write_bytes(pickle.dumps({"conv1_w": np.ones(3, np.float32)}))
    entry = pretrained.CATALOG["MSRA/R-50"]
    served = pretrained.CatalogEntry(entry.name, source.as_uri(), entry.backbone)
    monkeypatch.setitem(pretrained.CATALOG, "MSRA/R-50", served)
    path = pretrained.locate("MSRA/R-50", "resnet50", "msra")
    assert path == tmp_path / "cache" / "MSRA" / "R-50.pkl"
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["R-50.pkl"]  # no temporary file left
    source.unlink()  # now cached: no download needed
    assert pretrained.locate("imagenet", "resnet50", "msra") == path
    record = pretrained.provenance("imagenet", "resnet50", "msra")
    assert record == {"weights": "imagenet", "path": str(path.resolve()), "sha256": sha256(path)}
    assert len(record["sha256"]) == 64


def test_offline_without_a_cached_file_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("ATSSREPRO_WEIGHTS", str(tmp_path / "cache"))
    entry = pretrained.CATALOG["MSRA/R-101"]
    offline = pretrained.CatalogEntry(entry.name, (tmp_path / "unreachable.pkl").as_uri(), entry.backbone)
    monkeypatch.setitem(pretrained.CATALOG, "MSRA/R-101", offline)
    with pytest.raises(UserError) as e:
        pretrained.locate("MSRA/R-101", "resnet101", "msra")
    message = str(e.value)
    assert "\n" not in message
    assert f"fetch {offline.url} and put it at {tmp_path / 'cache' / 'MSRA' / 'R-101.pkl'}" in message
    assert not (tmp_path / "cache" / "MSRA" / "R-101.pkl").exists()
    with pytest.raises(UserError, match="missing and not downloaded"):
        pretrained.locate("MSRA/R-101", "resnet101", "msra", download=False)


def test_local_files_and_bad_names(tmp_path):
    assert pretrained.locate("", "resnet50", "msra") is None
    path = tmp_path / "w.pkl"
    path.write_bytes(b"")
    assert pretrained.locate(str(path), "resnet50", "msra") == path
    with pytest.raises(UserError, match="file .*missing.pth not found"):
        pretrained.locate(str(tmp_path / "missing.pth"), "resnet50", "msra")
    with pytest.raises(UserError, match="neither a file, nor an official catalog name"):
        pretrained.locate("MSRA/R-5O", "resnet50", "msra")


# --- through the MSRA backbone ------------------------------------------------------------------


@pytest.mark.skipif(not MAPPING.is_file(), reason="../shared/official_ref absent")
@pytest.mark.parametrize("variant", ["R-50", "R-50_DCNv2"])
def test_a_detectron_pickle_gives_the_features_of_the_equivalent_state_dict(tmp_path, variant, monkeypatch):
    """Blobs with the R-50 names, written as Python 2 wrote them, against the official state dict
    that the facts file says they become (running statistics 0 and 1), loaded as a .pth."""
    from atssrepro.config import BackboneConfig
    from atssrepro.model.backbone import ResNetFPN

    facts = json.loads(MAPPING.read_text())[variant]
    rng = np.random.RandomState(0)
    blobs = {b["blob"]: (0.5 + rng.rand(*b["shape"]) * 0.1).astype(np.float32) for b in facts["blobs"]}
    for name, array in blobs.items():
        if name.endswith("_w"):
            blobs[name] = (rng.randn(*array.shape) / np.sqrt(np.prod(array.shape[1:]))).astype(np.float32)
    official = {b["official_keys"][0]: torch.from_numpy(blobs[b["blob"]]) for b in facts["blobs"] if b["official_keys"]}
    for key in facts["official_keys_not_from_pickle"]:
        if key.startswith("backbone.body.") and key.endswith("running_mean"):
            official[key] = torch.zeros_like(official[key.replace("running_mean", "weight")])
        elif key.startswith("backbone.body.") and key.endswith("running_var"):
            official[key] = torch.ones_like(official[key.replace("running_var", "weight")])
    (tmp_path / "R-50.pkl").write_bytes(python2_pickle(blobs))
    torch.save(official, tmp_path / "R-50.pth")
    # The catalog name finds the .pkl in the cache, as the paper preset's "imagenet" does.
    (tmp_path / "MSRA").mkdir()
    (tmp_path / "R-50.pkl").rename(tmp_path / "MSRA" / "R-50.pkl")
    monkeypatch.setenv("ATSSREPRO_WEIGHTS", str(tmp_path))
    dcn = variant.endswith("DCNv2")
    images = torch.randn(1, 3, 64, 96) * 50
    features = {}
    for weights in ("imagenet", "MSRA/R-50", str(tmp_path / "R-50.pth"), ""):
        torch.manual_seed(0)  # the same init of what no file fills (the FPN, DCN offsets)
        backbone = ResNetFPN(BackboneConfig(name="resnet50", weights=weights, style="msra", dcn=dcn), 32).eval()
        with torch.no_grad():
            features[weights] = backbone(images)
        if weights == "imagenet":
            body = backbone.body.body
            assert torch.equal(body.layer4[2].bn3.weight, torch.from_numpy(blobs["res5_2_branch2c_bn_s"]))
    for weights in ("MSRA/R-50", str(tmp_path / "R-50.pth")):
        assert all(torch.equal(a, b) for a, b in zip(features["imagenet"], features[weights]))
    assert not torch.allclose(features["imagenet"][0], features[""][0])


def test_msra_style_refuses_torchvision_weights_names():
    from atssrepro.config import BackboneConfig
    from atssrepro.model.backbone import ResNetFPN

    with pytest.raises(UserError, match="style 'msra' takes an official catalog name"):
        ResNetFPN(BackboneConfig(name="resnet50", weights="ResNet50_Weights.IMAGENET1K_V1", style="msra"), 32)


def test_a_run_records_the_weights_it_started_from(tmp_path, synth_coco):
    """run.json's ``pretrained``: the configured weights, the file read and its sha256."""
    import torchvision
    from rich.console import Console

    from atssrepro import config as cfg
    from atssrepro.engine.run import execute
    from atssrepro.engine.run_dir import RunDir

    weights = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    config = cfg.build_config(
        None,
        "smoke",
        [f"model.backbone.weights={weights}", "train.iterations=1", "train.lr_steps=[1]", "data.test_short_side=128",
         "data.max_size=128", "data.train_short_side=[128, 128]", "data.num_workers=0"],
        str(synth_coco),
    )  # fmt: skip
    run = RunDir(tmp_path / "run")
    execute(config, run, "smoke", Console(quiet=True))
    record = run.info()["pretrained"]
    assert record == {"weights": str(weights), "path": str(weights.resolve()), "sha256": sha256(weights)}
    assert run.info()["state"] == "done"
