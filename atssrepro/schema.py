"""Typed TOML: parsed TOML data read into frozen dataclasses, each field's type and value rule checked.

A field's type says what TOML value it takes (a ``Literal``, ``bool``, ``int``, ``float``, ``str``,
a fixed or variable ``tuple``, a nested dataclass, ``dict[str, float]``, ``dict[str, str]``, or
``dict[str, Any]`` for data checked elsewhere); its value rule sits next to it, in the annotation::

    topk: Annotated[int, at_least(1)] = 9

:func:`read` builds a dataclass from a TOML table (a field without a default must be given);
:func:`merge` applies a (partial, nested) TOML table on top of an existing instance. Bad input is
one :class:`UserError` line naming the source, the key, the value and the rule or type it breaks:

    config.toml: model.assign.topk = 0 is not valid: must be >= 1
    config.toml: unknown config key 'model.asign'; did you mean 'model.assign'? (keys here: model.backbone, ...)

NaN is never a valid number, nor is inf unless the field's rule allows it. Annotations may hold
other markers beside a :class:`Rule` (``config/ids.py`` has two); they are not this module's.
Annotations are evaluated in the class's namespace: a rule whose check names a module-level name
(``ID_PATTERN``) is defined as a module constant and the annotation names it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from atssrepro.errors import UserError


@dataclass(frozen=True)
class Rule:
    """What values a field takes beyond its type. For a list, ``check`` applies to each element and
    ``length``, ``min_length`` and ``increasing`` to the list; for a table, the rule to each value."""

    check: Callable[[Any], bool] = lambda value: True
    text: str = ""
    """The rule in words, for the error message: ">= 1" (read "must be >= 1")."""
    allow_inf: bool = False
    """inf is a valid value (the open last bound of ``scale_ranges``); NaN never is."""
    length: int | None = None
    min_length: int = 0
    increasing: bool = False
    """Each element >= the previous one."""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` (already of the field's type) breaks the rule, or None."""
        items = value if isinstance(value, tuple) else (value,)
        if not self.allow_inf and any(isinstance(v, float) and math.isinf(v) for v in items):
            return "must be finite"
        if self.length is not None and len(items) != self.length:
            return f"must have exactly {self.length} elements"
        if len(items) < self.min_length:
            return f"must have at least {self.min_length} element{'s' if self.min_length > 1 else ''}"
        if self.increasing and list(items) != sorted(items):
            return "must be increasing"
        if not all(self.check(v) for v in items):
            return f"must be {self.text}"
        return None


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f">= {low}")


def between(low: float, high: float) -> Rule:
    """Inclusive range."""
    return Rule(lambda v: low <= v <= high, f"in [{low}, {high}]")


def positive(high: float = math.inf) -> Rule:
    """> 0 (and <= ``high``)."""
    return Rule(lambda v: 0 < v <= high, "> 0" if high == math.inf else f"in (0, {high}]")


def nonempty(rule: Rule) -> Rule:
    """``rule`` for a list that needs at least one element."""
    return dataclasses.replace(rule, min_length=1)


ANY = Rule(text="any value of its type")
"""The field's type (a free string, a Literal, a bool) says everything there is to check."""
NONEMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")


# ---- the fields of a dataclass


@dataclass(frozen=True)
class Field:
    name: str
    type: Any
    """The type without its annotation (``int``, ``tuple[float, ...]``, a dataclass, ...)."""
    rule: Rule | None
    """The rule next to the field, or None when it has none (``ANY`` for what its type says)."""
    markers: tuple[Any, ...]
    """Other things in the annotation (``config.ids.IdOmittedAtDefault``)."""
    default: Any
    """The default value, ``dataclasses.MISSING`` for a required field."""


@functools.cache
def fields(cls: type) -> dict[str, Field]:
    """The fields of the dataclass ``cls``, by name, in declaration order."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = {}
    for f in dataclasses.fields(cls):
        tp, extras = hints[f.name], ()
        if typing.get_origin(tp) is Annotated:
            tp, *extras = typing.get_args(tp)
        rules = [extra for extra in extras if isinstance(extra, Rule)]
        markers = tuple(extra for extra in extras if not isinstance(extra, Rule))
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        found[f.name] = Field(f.name, tp, rules[0] if rules else None, markers, default)
    return found


def describe(tp: Any) -> str:
    """The TOML values of type ``tp`` in words: "an integer", "a list of 2 ints", "one of 'a', 'b'"."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if args[-1] is not Ellipsis:
            return f"a list of {len(args)} {_plural(args[0])}"
        return f"a list of {_plural(args[0])}"
    if origin is dict:
        return f"a table of {_plural(args[1])}" if args[1] is not Any else "a table of KEY = VALUE"
    if dataclasses.is_dataclass(tp):
        return "a table of KEY = VALUE"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(tp, str(tp))


def _plural(tp: Any) -> str:
    if dataclasses.is_dataclass(tp):
        return "tables"
    return {int: "ints", float: "numbers", str: "strings", bool: "booleans"}.get(tp, describe(tp))


# ---- reading


@dataclass(frozen=True)
class _Place:
    """Where a value comes from, for messages: ``source`` (the file and the entry), the dotted key."""

    source: str
    noun: str
    """What a key is called in messages: "config key", "field"."""


def read(cls: type, data: Any, source: str, *, noun: str = "field", fixed: Mapping[str, Any] | None = None) -> Any:
    """A new ``cls`` from the TOML table ``data``: every key checked, every field without a default given.

    ``fixed`` holds the values of fields the program sets (a spec's name, its path): the file may not.
    """
    return _read(cls, data, _Place(source, noun), "", None, dict(fixed or {}))


def merge(obj: Any, data: Any, source: str, *, noun: str = "field") -> Any:
    """A copy of the dataclass ``obj`` with the nested TOML table ``data`` applied on top of it."""
    return _read(type(obj), data, _Place(source, noun), "", obj, {})


def _read(cls: type, data: Any, place: _Place, prefix: str, base: Any, fixed: dict[str, Any]) -> Any:
    if not isinstance(data, dict):
        where = prefix.rstrip(".") or "the file"
        raise UserError(f"{place.source}: {where} must be a table of KEY = VALUE, not {data!r}")
    known = {name: f for name, f in fields(cls).items() if name not in fixed}
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = prefix + name
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f"; did you mean {prefix + hint[0]!r}?" if hint else ""
            listed = ", ".join(prefix + k for k in known)
            raise UserError(f"{place.source}: unknown {place.noun} {key!r}{suggestion} (keys here: {listed})")
        values[name] = _value(known[name], value, place, key, None if base is None else getattr(base, name))
    if base is not None:
        return dataclasses.replace(base, **values)
    for name, f in known.items():
        if name not in values and f.default is dataclasses.MISSING:
            raise UserError(f"{place.source}: missing {prefix + name!r} (a required {place.noun})")
    return cls(**values, **fixed)


def _value(f: Field, value: Any, place: _Place, key: str, current: Any) -> Any:
    if dataclasses.is_dataclass(f.type):
        if not isinstance(value, dict):
            example = next(iter(fields(f.type)))
            raise UserError(f"{place.source}: {key} is a section; set its fields, e.g. {key}.{example}")
        return _read(f.type, value, place, key + ".", current, {})
    converted = _typed(value, f.type, place, key)
    rule = f.rule or Rule()
    # A table's rule is each value's: the message names the entry.
    entries = [(f"{key}.{n}", v, value[n]) for n, v in converted.items()] if isinstance(converted, dict) else []
    for name, v, given in entries or [(key, converted, value)]:
        problem = rule.problem(v)
        if problem:
            raise UserError(f"{place.source}: {name} = {_shown(given)!r} is not valid: {problem}")
    return converted


def _shown(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def _typed(value: Any, tp: Any, place: _Place, key: str) -> Any:
    """``value`` checked against the type ``tp``: lists become tuples, ints in float fields floats."""

    def bad() -> UserError:
        return UserError(f"{place.source}: {key} = {_shown(value)!r} is not valid; expected {describe(tp)}")

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if isinstance(value, bool) or value not in args:
            raise bad()
        return value
    if origin is tuple:
        fixed = args[-1] is not Ellipsis
        if not isinstance(value, (list, tuple)) or (fixed and len(value) != len(args)):
            raise bad()
        element = args[0]
        if dataclasses.is_dataclass(element):
            return tuple(
                _read(element, item, _Place(f"{place.source}: {key}[{i}]", place.noun), "", None, {})
                for i, item in enumerate(value)
            )
        try:
            return tuple(_typed(item, element, place, key) for item in value)
        except UserError:
            raise bad() from None
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad()
        element = args[1] if args else Any
        return {name: _typed(item, element, place, f"{key}.{name}") for name, item in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if (tp in (int, float) and isinstance(value, bool)) or not isinstance(value, tp):
        raise bad()
    if isinstance(value, float) and math.isnan(value):
        raise bad()
    return value
