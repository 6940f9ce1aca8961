"""Typed attribute values: the type names, the text converters, and the ``attributes=`` specs."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, timezone
from typing import Any, Final

from .._errors import ValidationError
from .._isodates import fromisoformat
from .._models import MAX_ATTRIBUTES, Url

__all__ = ["ATTRIBUTE_TYPES", "CONVERTERS", "AttributeSpec", "attribute_specs", "json_value", "type_name"]

#: How an attribute is typed: one of :data:`ATTRIBUTE_TYPES` or a Python type.
AttributeSpec = Mapping[str, "str | type"] | Iterable[str]

#: The attribute type names the readers know.
ATTRIBUTE_TYPES: Final = ("str", "int", "float", "bool", "date", "url")
_TRUE: Final = frozenset({"true", "t", "yes", "y", "1"})
_FALSE: Final = frozenset({"false", "f", "no", "n", "0"})
_BY_TYPE: Final[dict[Any, str]] = {
    str: "str", int: "int", float: "float", bool: "bool", datetime: "date", date: "date", Url: "url",
}


def _to_str(text: str) -> str:
    return text


def _to_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _to_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {text!r}")
    return value


def _to_bool(text: str) -> bool:
    folded = text.strip().lower()
    if folded in _TRUE:
        return True
    if folded in _FALSE:
        return False
    raise ValueError(f"not a boolean (true/false, yes/no, 1/0): {text!r}")


def _to_date(text: str) -> datetime:
    value = text.strip()
    if value[-1:] in ("Z", "z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = fromisoformat(value)
    except ValueError:
        raise ValueError(f"not an ISO 8601 date: {text!r}") from None
    # A date alone, or a time without offset, is read as UTC (what the API stores anyway).
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _to_url(text: str) -> Url:
    try:
        return Url(text.strip())
    except ValidationError:
        raise ValueError(f"not an http(s) URL: {text!r}") from None


#: Text cell -> typed value, by type name; each raises :class:`ValueError` with the reason.
CONVERTERS: Final[dict[str, Callable[[str], Any]]] = {
    "str": _to_str, "int": _to_int, "float": _to_float, "bool": _to_bool, "date": _to_date, "url": _to_url,
}


def json_value(value: object, kind: str) -> Any:
    """A decoded value (JSON, a database row) converted to ``kind``; strings go through the text
    converters."""
    if isinstance(value, str):
        return CONVERTERS[kind](value)
    if kind == "str" and isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return _to_float(str(value))
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "date" and isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if kind == "date" and isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    raise ValueError(f"expected {kind}, got {type(value).__name__} {value!r}")


def attribute_specs(
    attributes: AttributeSpec | None, *, untyped: str | None = "str"
) -> list[tuple[str, str | None]]:
    """``[(name, type name)]`` from a mapping or from ``"COL"`` / ``"COL:TYPE"`` strings.

    A bare ``"COL"`` gets the type ``untyped``: ``"str"`` for text sources, ``None`` ("from the
    source's own types") for tables and queries.
    """
    if attributes is None:
        return []
    specs: list[tuple[str, str | None]] = []
    if isinstance(attributes, Mapping):
        for name, kind in attributes.items():
            specs.append((name, type_name(name, kind)))
    elif isinstance(attributes, str):
        raise ValidationError("attributes", "must be a mapping or a list of 'COLUMN[:TYPE]' strings")
    else:
        for spec in attributes:
            if not isinstance(spec, str):
                raise ValidationError("attributes", f"entries must be 'COLUMN[:TYPE]' strings, got {spec!r}")
            name, _, kind = spec.rpartition(":")
            if name and kind in ATTRIBUTE_TYPES:
                specs.append((name, kind))
            else:  # no (known) type suffix: the whole is the column name
                specs.append((spec, untyped))
    names = [name for name, _ in specs]
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValidationError("attributes", f"names must be non-empty strings, got {name!r}")
    if len(set(names)) != len(names):
        raise ValidationError("attributes", "names a column twice")
    if len(specs) > MAX_ATTRIBUTES:
        raise ValidationError("attributes", f"at most {MAX_ATTRIBUTES} attributes per ID, got {len(specs)}")
    return specs


def type_name(name: object, kind: object) -> str:
    if isinstance(kind, str) and kind in ATTRIBUTE_TYPES:
        return kind
    try:
        found = _BY_TYPE.get(kind)
    except TypeError:  # unhashable
        found = None
    if found is None:
        raise ValidationError(
            f"attributes[{name!r}]", f"type must be one of {', '.join(ATTRIBUTE_TYPES)}, got {kind!r}"
        )
    return found
