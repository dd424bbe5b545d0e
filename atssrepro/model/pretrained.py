"""Where pretrained backbone weights come from: the official catalog, a local file, or torchvision.

``model.backbone.weights`` names them (see :class:`~atssrepro.config.BackboneConfig`). Every
name ends up as one local file, which :func:`locate` returns:

- a catalog name (``MSRA/R-50``, ``FAIR/20171220/X-101-64x4d``, :data:`CATALOG`): the official
  ImageNet weights, a Detectron ``.pkl``, kept in the cache folder (``$ATSSREPRO_WEIGHTS``, else
  ``~/.cache/atssrepro/weights``) as ``<name>.pkl`` and downloaded into it, atomically, when absent;
- ``imagenet``: the catalog entry of ``model.backbone.name`` in style ``msra``, torchvision's classic
  ``IMAGENET1K_V1`` weights in style ``torchvision``;
- a torchvision weights name (``ResNet50_Weights.IMAGENET1K_V2``): torch's hub cache, downloaded when absent;
- a path: that file (``.pkl`` Detectron pickle, or ``.pth`` state dict).

When a file is neither here nor downloadable, the error names the URL and where to put the file.
The harness calls :func:`locate` before it starts or submits anything, so that a run never fails
for want of its weights after waiting in a queue; :func:`provenance` is what a run records.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from atssrepro.errors import UserError
from atssrepro.fileio import atomic_write, sha256

CATALOG_URL = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/"
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class CatalogEntry:
    """One of the official ImageNet weights (maskrcnn-benchmark's ``catalog://ImageNetPretrained/<name>``)."""

    name: str
    """``MSRA/R-50``: also the file's place in the cache, ``<cache>/MSRA/R-50.pkl``."""
    url: str
    backbone: str
    """The ``model.backbone.name`` the weights are for."""

    @property
    def relative_path(self) -> Path:
        return Path(f"{self.name}.pkl")


CATALOG: dict[str, CatalogEntry] = {
    entry.name: entry
    for entry in (
        CatalogEntry("MSRA/R-50", CATALOG_URL + "MSRA/R-50.pkl", "resnet50"),
        CatalogEntry("MSRA/R-101", CATALOG_URL + "MSRA/R-101.pkl", "resnet101"),
        CatalogEntry("FAIR/20171220/X-101-32x8d", CATALOG_URL + "20171220/X-101-32x8d.pkl", "resnext101_32x8d"),
        CatalogEntry("FAIR/20171220/X-101-64x4d", CATALOG_URL + "FBResNeXt/X-101-64x4d.pkl", "resnext101_64x4d"),
    )
}


def cache_dir() -> Path:
    """``$ATSSREPRO_WEIGHTS``, else ``~/.cache/atssrepro/weights``."""
    return Path(os.environ.get("ATSSREPRO_WEIGHTS") or "~/.cache/atssrepro/weights").expanduser()


def resolve_name(weights: str, backbone: str, style: str) -> str:
    """``imagenet`` as the concrete name for ``backbone`` in ``style``; any other value unchanged."""
    if weights != "imagenet":
        return weights
    if style == "msra":
        for entry in CATALOG.values():
            if entry.backbone == backbone:
                return entry.name
        raise UserError(
            f"model.backbone.weights = 'imagenet': there are no official (MSRA/FAIR) ImageNet weights of {backbone} "
            f"(catalog: {', '.join(CATALOG)}); use model.backbone.style=torchvision, a file, or weights = ''"
        )
    import torchvision

    return f"{torchvision.models.get_model_weights(backbone).__name__}.IMAGENET1K_V1"


def locate(weights: str, backbone: str, style: str, download: bool = True) -> Path | None:
    """The local file of ``weights`` (None for ``""``: from scratch), downloading a catalog or
    torchvision file into its cache when it is absent and ``download`` is set.

    Raises:
        UserError: no such file or name, or a file that is neither cached nor downloadable; the
            message says which file to put where.
    """
    if not weights:
        return None
    name = resolve_name(weights, backbone, style)
    if name in CATALOG:
        entry = CATALOG[name]
        return _cached(entry.url, cache_dir() / entry.relative_path, name, download)
    path = Path(name).expanduser()
    if path.suffix in (".pkl", ".pth", ".pt") or path.exists():
        if not path.is_file():
            raise UserError(f"model.backbone.weights: file {path} not found")
        return path
    return _torchvision_file(name, download)


def _torchvision_file(name: str, download: bool) -> Path:
    import torch
    import torchvision

    try:
        enum = torchvision.models.get_weight(name)
    except (ValueError, KeyError):
        raise UserError(
            f"model.backbone.weights = {name!r} is neither a file, nor an official catalog name "
            f"({', '.join(CATALOG)}), nor a torchvision weights name such as 'ResNet50_Weights.IMAGENET1K_V1'"
        ) from None
    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(enum.url).name
    return _cached(enum.url, target, name, download)


def _cached(url: str, target: Path, name: str, download: bool) -> Path:
    """``target`` if it exists, else ``url`` downloaded to it (atomically: a reader never sees half a file)."""
    if target.is_file():
        return target
    problem = "not downloaded (download disabled)"
    if download:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                atomic_write(target, lambda f: shutil.copyfileobj(response, f), binary=True)
            return target
        except OSError as e:  # URLError, timeouts, a refused connection, a read-only cache
            problem = f"could not download it ({type(e).__name__}: {getattr(e, 'reason', e)})"
    elsewhere = " (or set ATSSREPRO_WEIGHTS to the folder holding MSRA/, FAIR/)" if name in CATALOG else ""
    raise UserError(
        f"model.backbone.weights = {name!r}: {target} is missing and {problem}; on a machine with internet "
        f"fetch {url} and put it at {target}{elsewhere}"
    )


def provenance(weights: str, backbone: str, style: str) -> dict[str, str] | None:
    """What a run records of its pretrained weights: ``{"weights", "path", "sha256"}`` (None from scratch)."""
    path = locate(weights, backbone, style)
    if path is None:
        return None
    return {"weights": weights, "path": str(path.resolve()), "sha256": sha256(path)}
