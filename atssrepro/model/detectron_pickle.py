"""Detectron ImageNet weights (``R-50.pkl``, ``X-101-32x8d.pkl``...): read safely, map onto the official keys.

The official ATSS runs start from Detectron's ImageNet pickles: a (Python 2) pickle of
``{blob name: float32 ndarray}`` (or ``{"blobs": {...}}``) with Caffe2 blob names, batch norm
already folded by Detectron's converter into ``*_bn_s`` (scale) and ``*_bn_b`` (shift).

:func:`read_blobs` unpickles such a file with :class:`RestrictedUnpickler`, which can build
numpy arrays and plain containers and nothing else: a pickle that names any other callable is
refused before anything runs. :func:`official_backbone_state` renames the blobs to the official
model's ``backbone.body.*`` keys, as the official loader does (the facts: ``msra_pretrained_mapping.json``
of the official reference). The FrozenBN running statistics are not in the file; they get 0 and 1,
so that the eps-free FrozenBN computes exactly ``x * s + b``.
"""

from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atssrepro.errors import UserError

_NP_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array reconstructor, wherever numpy keeps it
_NP_SCALAR = np.float32(0).__reduce__()[0]


class Refused(pickle.UnpicklingError):
    """The pickle names something a weights file has no business with."""


def _reconstruct(subtype: type, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise Refused(f"array subtype {subtype!r} is not numpy.ndarray")
    return _NP_RECONSTRUCT(subtype, shape, dtype)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """What Python 3 pickles call to rebuild ``bytes`` (``_codecs.encode(text, "latin1")``)."""
    if encoding not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# The only globals a weights pickle may name: numpy arrays, their dtypes and scalars, bytes, ordered dicts.
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _NP_SCALAR for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
    ("collections", "OrderedDict"): OrderedDict,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of :data:`_ALLOWED`; any other raises
    :class:`Refused` before it is called. Persistent ids are refused too."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise Refused(f"it refers to {module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("it holds persistent ids")


def read_blobs(path: Path) -> dict[str, np.ndarray]:
    """``{blob name: array}`` of a Detectron weights pickle (``data["blobs"]`` when present).

    Raises:
        UserError: the file is missing, is not a pickle, names anything but numpy arrays and
            plain containers (nothing in it is run), or holds something other than numeric arrays.
    """
    path = Path(path)
    what = f"model.backbone.weights: {path}"
    try:
        with open(path, "rb") as f:
            data = RestrictedUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"{what} not found") from None
    except Refused as e:
        raise UserError(
            f"{what} is refused: {e}; a Detectron weights pickle holds numpy arrays only (nothing in it was run)"
        ) from None
    except Exception as e:  # truncated, not a pickle at all, a bad array state
        raise UserError(f"{what} is not a readable Detectron weights pickle ({type(e).__name__}: {e})") from None
    if isinstance(data, dict) and isinstance(data.get("blobs"), dict):
        data = data["blobs"]
    if not isinstance(data, dict) or not data:
        raise UserError(f"{what} holds {type(data).__name__}, not a dict of blobs {{name: array}}")
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray) or value.dtype.kind not in "fiub":
            found = f"an array of {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
            raise UserError(f"{what}: entry {name!r} is {found}, not a numeric array")
    return dict(data)


# Blobs the backbone does not use: the classifier, and the stem conv's bias (the official stem conv has none).
DROPPED_BLOBS = frozenset({"conv1_b", "fc1000_w", "fc1000_b"})
_BLOCK = re.compile(r"^res(?P<stage>[2-5])_(?P<block>\d+)_branch(?P<branch>1|2a|2b|2c)_(?P<kind>w|bn_s|bn_b)$")
_BRANCH = {
    "1": ("downsample.0", "downsample.1"),
    "2a": ("conv1", "bn1"),
    "2b": ("conv2", "bn2"),
    "2c": ("conv3", "bn3"),
}
_STEM = {"conv1_w": "stem.conv1.weight", "res_conv1_bn_s": "stem.bn1.weight", "res_conv1_bn_b": "stem.bn1.bias"}


def official_key(blob: str, dcn_layers: Collection[int] = ()) -> str | None:
    """The official key a blob lands in (``res3_0_branch2b_w`` -> ``backbone.body.layer2.0.conv2.weight``),
    or None for :data:`DROPPED_BLOBS`. ``dcn_layers``: the official ``layer`` indices (1-4) whose
    3x3 convs are deformable, where the weight sits in ``conv2.conv.weight``.

    Raises:
        UserError: a blob that no ResNet/ResNeXt backbone key takes.
    """
    if blob in DROPPED_BLOBS:
        return None
    if blob in _STEM:
        return "backbone.body." + _STEM[blob]
    match = _BLOCK.match(blob)
    if match is None:
        raise UserError(
            f"model.backbone.weights: blob {blob!r} is not a blob of a Detectron ResNet/ResNeXt ImageNet pickle"
        )
    layer = int(match["stage"]) - 1
    conv, bn = _BRANCH[match["branch"]]
    if match["kind"] == "w":
        deformable = match["branch"] == "2b" and layer in dcn_layers
        key = f"{conv}.conv.weight" if deformable else f"{conv}.weight"
    else:
        key = f"{bn}.{'weight' if match['kind'] == 'bn_s' else 'bias'}"
    return f"backbone.body.layer{layer}.{match['block']}.{key}"


def official_backbone_state(blobs: dict[str, np.ndarray], dcn_layers: Collection[int] = ()) -> dict[str, torch.Tensor]:
    """The blobs as an official ``backbone.body.*`` state dict, with the FrozenBN ``running_mean``
    (0) and ``running_var`` (1) of every folded batch norm added. DCN offset convs are not in
    the file: they keep the model's own initialisation."""
    state: dict[str, torch.Tensor] = {}
    for blob, array in blobs.items():
        key = official_key(blob, dcn_layers)
        if key is None:
            continue
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        state[key] = tensor
        if key.endswith((".bn1.weight", ".bn2.weight", ".bn3.weight", ".downsample.1.weight")):
            module = key.removesuffix(".weight")
            state[f"{module}.running_mean"] = torch.zeros_like(tensor)
            state[f"{module}.running_var"] = torch.ones_like(tensor)
    return state
