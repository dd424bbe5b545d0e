"""A config's id: the content hash of what a run trains, which names its run folder.

Run ids are a contract with users' results stores: a changed id retrains a finished run
(tests/test_run_ids.py pins them all). So a field added later must not change the id of any config
made before it, which holds when the field is marked and keeps its default::

    tal: Annotated[TalConfig, IdOmittedAtDefault] = field(default_factory=TalConfig)

A field marked :class:`IdOmittedAtDefault` (a leaf or a whole section) is left out of the hashed data
while it equals its default, and hashed like any other field once it differs. A field marked
:class:`IdOmitted` is never hashed (``Config.eval``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from atssrepro.schema import fields


class IdOmittedAtDefault:
    """Annotation marker: the field is left out of the id while it equals its default."""


class IdOmitted:
    """Annotation marker: the field is never part of the id."""


def to_dict(config: Any) -> dict[str, Any]:
    """The (dataclass) config as nested plain data (tuples become lists), as TOML and JSON hold it."""
    return {f.name: _plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def id_data(config: Any) -> dict[str, Any]:
    """What :func:`config_id` hashes: :func:`to_dict` less the fields the markers leave out."""
    data = {}
    for name, f in fields(type(config)).items():
        value = getattr(config, name)
        if IdOmitted in f.markers or (IdOmittedAtDefault in f.markers and value == f.default):
            continue
        data[name] = id_data(value) if dataclasses.is_dataclass(value) else value
    return data


def config_id(config: Any) -> str:
    """A short content hash of what a run trains: the same model, data and training settings
    always get the same id (``eval`` is left out: see the module docstring)."""
    canonical = json.dumps(id_data(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
