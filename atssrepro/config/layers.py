"""How a run's config is built: one function, :func:`build_config`, layers it in one order.

    defaults -> a built-in config or TOML file, or a table's [base] -> the table row -> the preset
             -> --set key=value -> the seed -> the data root

Every command that makes a config (``train``, ``config``, ``eval``'s checkpoint aside, ``import
official``, ``analyze``) and the planner of the tables (``harness/plan.py``) call it. Each layer is
nested TOML data checked field by field (``atssrepro/schema.py``); the rules between fields are
checked once, on the result.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from atssrepro import schema
from atssrepro.config.ids import to_dict
from atssrepro.config.presets import PAPER, Preset, as_preset
from atssrepro.config.sections import Config, check_consistency
from atssrepro.errors import UserError
from atssrepro.tomlfile import load_toml, parse_value

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@dataclass(frozen=True)
class Layer:
    """Config fields as nested TOML data (``{"model": {"assign": {"topk": 7}}}``) and where they
    come from, for messages (``tables/table4.toml: row 'k7'``)."""

    values: Mapping[str, Any]
    source: str


def apply(config: Any, overrides: Mapping[str, Any], source: str) -> Any:
    """The dataclass ``config`` with the nested ``overrides`` applied, each value checked."""
    return schema.merge(config, overrides, source, noun="config key")


def builtin_configs() -> list[str]:
    return sorted(p.stem for p in BUILTIN_CONFIG_DIR.glob("*.toml"))


def resolve_config_source(name_or_path: str) -> Path:
    """A built-in config name (``atss_r50_fpn_1x``) or the path of a TOML file."""
    builtin = BUILTIN_CONFIG_DIR / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    if path.is_file():
        return path
    hint = difflib.get_close_matches(name_or_path, builtin_configs(), n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    raise UserError(
        f"config {name_or_path!r} is neither a built-in config nor a file{suggestion} "
        f"(built-in: {', '.join(builtin_configs())})"
    )


def config_file(name_or_path: str) -> Layer:
    """The layer of ``--config NAME|FILE``: a built-in config or a TOML file."""
    path = resolve_config_source(name_or_path)
    return Layer(load_toml(path), str(path))


def parse_override(assignment: str) -> dict[str, Any]:
    """Turn ``"model.assign.topk=7"`` into ``{"model": {"assign": {"topk": 7}}}``."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. --set model.assign.topk=7")
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = parse_value(text.strip())
    return nested


def build_config(
    base: str | Layer | None = None,
    preset: Preset | str = PAPER,
    overrides: Sequence[str] = (),
    data_root: str | None = None,
    *,
    row: Sequence[Layer] = (),
    seed: int | None = None,
) -> Config:
    """A run's config, in the order of the module docstring.

    Args:
        base: ``--config``: a built-in config's name or a TOML file's path; or a table's ``[base]``.
        preset: a :class:`Preset` or a built-in preset's name.
        overrides: ``--set KEY=VALUE`` assignments, applied in order.
        data_root: ``--data``: ``data.root`` (made absolute, as every data root: :func:`with_data_root`).
        row: the layers of a table row (its ``config``, then what the planner adds to it).
        seed: ``train.seed`` of one of a row's runs.
    """
    preset = as_preset(preset)
    base = config_file(base) if isinstance(base, str) else base
    layers = [*([base] if base is not None else []), *row, Layer(preset.overrides, f"preset {preset.name!r}")]
    layers += [Layer(parse_override(assignment), f"--set {assignment}") for assignment in overrides]
    if seed is not None:
        layers.append(Layer({"train": {"seed": seed}}, "--seeds"))
    config = Config()
    for layer in layers:
        config = apply(config, layer.values, layer.source)
    config = with_data_root(config, data_root)
    check_consistency(config)
    return config


def with_data_root(config: Config, data_root: str | None) -> Config:
    """The last layer, the data root: ``--data``, or (None) the root the config holds already (a
    config file's ``data.root``, or the default ``data/coco``), made absolute here, once.

    A relative root is relative to the current directory (``~`` is expanded); the path is normalised
    without resolving symlinks (``../data/coco/``, ``./data/coco`` and ``$PWD/data/coco`` are one
    root, one run id), so a run's config, and its id, say which folder it means wherever it is read.
    An absolute root without ``.``, ``..``, ``//`` or a trailing slash is kept as it is, and so is its
    run id. A stored run's config is read as it was written, never resolved again (``from_dict``).
    ``eval`` of a stored run applies this step alone.
    """
    root = config.data.root if data_root is None else data_root
    if not root.strip():
        raise UserError(f"--data {root!r}: give the dataset root, the folder holding annotations/ and the images")
    absolute = os.path.normpath(os.path.abspath(os.path.expanduser(root)))
    return dataclasses.replace(config, data=dataclasses.replace(config.data, root=absolute))


def from_dict(data: dict[str, Any], source: str) -> Config:
    """A config atssrepro stored (a run folder's ``config.toml``, a checkpoint's), which holds every field.

    One written before ``model.backbone.style`` existed was trained with torchvision's backbone, the
    only one then: it is read as such, not as the newer default ``msra``.
    """
    model = data.get("model")
    backbone = model.get("backbone") if isinstance(model, dict) else None
    if isinstance(backbone, dict) and "style" not in backbone:
        data = {**data, "model": {**model, "backbone": {**backbone, "style": "torchvision"}}}
    config = apply(Config(), data, source)
    check_consistency(config)
    return config


def to_toml(config: Config) -> str:
    return tomli_w.dumps(to_dict(config))
