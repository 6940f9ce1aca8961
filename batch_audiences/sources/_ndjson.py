"""NDJSON (JSON Lines): one JSON value per line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .._errors import ValidationError
from .._models import IdAction, Member
from ._convert import AttributeSpec, attribute_specs, json_value
from ._files import SourceFile, check_encoding, check_file, lines
from ._rows import SourceReader, id_problem, source_id

__all__ = ["json_values", "read_ndjson"]


def read_ndjson(
    source: SourceFile,
    *,
    id_key: str = "id",
    attributes: AttributeSpec | None = None,
    attributes_key: str = "attributes",
    action_key: str = "action",
    encoding: str = "utf-8",
    errors: str = "raise",
    max_errors: int | None = None,
) -> SourceReader[str | Member | IdAction]:
    """One JSON value per line (NDJSON / JSON Lines); blank lines are skipped. A path ending in
    ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` is decompressed as it is read.

    A JSON string is an ID. A JSON object has the ID under ``id_key``: a string, or an integer
    taken as its decimal string; anything else (``5.0``, ``true``, ``null``) is a bad row, as in
    every reader. ``action_key`` (``"add"`` or ``"remove"``) makes the item an
    :class:`IdAction`. Attributes come from the object under ``attributes_key`` as they are
    (typed keys like ``"date(signup)"`` pass through), or, when ``attributes`` is given, from
    those top-level keys with those types. Other keys are ignored.

    >>> import io
    >>> data = b'"u1"\\n{"id": "u2", "attributes": {"plan": "pro"}}\\n{"id": 3, "action": "remove"}\\n'
    >>> [getattr(item, "id", item) for item in read_ndjson(io.BytesIO(data))]
    ['u1', 'u2', '3']
    >>> reader = read_ndjson(io.BytesIO(b'{"id": 5.0}\\n'), errors="collect")
    >>> list(reader), str(reader.errors[0])
    ([], "line 1: no ID: key 'id' must hold a string or an integer, got float 5.0")
    """
    check_file(source)
    check_encoding(encoding)
    specs = attribute_specs(attributes)

    def produce(reader: SourceReader[str | Member | IdAction]) -> Iterator[str | Member | IdAction]:
        with lines(source, encoding) as numbered:
            for number, data in json_values(reader, numbered, encoding):
                if isinstance(data, str):
                    problem = id_problem(data.strip() and data)
                    if problem is not None:
                        reader.bad_row(number, problem)
                        continue
                    reader.line = number
                    yield data
                elif isinstance(data, dict):
                    item = _item(reader, number, data, id_key, specs, attributes_key, action_key)
                    if item is not None:
                        reader.line = number
                        yield item
                else:
                    reader.bad_row(number, f"expected a JSON object or string, got {type(data).__name__}")

    return SourceReader(source, produce, errors=errors, max_errors=max_errors)


def json_values(
    reader: SourceReader[Any], numbered: Iterator[tuple[int, str, bool]], encoding: str
) -> Iterator[tuple[int, Any]]:
    """The JSON value of each non-blank line, with its line number: the one place that decodes
    NDJSON (the item reader and the manifest reader both read through it). A line that is not
    valid in ``encoding`` or not valid JSON is a bad row of ``reader``."""
    for number, text, undecodable in numbered:
        if not text.strip():
            continue
        reader.rows += 1
        if undecodable:
            reader.bad_row(number, f"not valid {encoding}")
            continue
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as error:
            reader.bad_row(number, f"not valid JSON ({error})")
            continue
        yield number, value


def _item(
    reader: SourceReader[Any],
    number: int,
    data: dict[str, Any],
    id_key: str,
    specs: list[tuple[str, str | None]],
    attributes_key: str,
    action_key: str,
) -> Member | IdAction | None:
    raw_id = data.get(id_key)
    try:
        custom_id = source_id(raw_id)
    except ValueError as error:
        if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
            reason = f"no ID: key {id_key!r} must hold a non-empty string or an integer"
        elif isinstance(raw_id, str):
            reason = f"key {id_key!r}: {error}"
        else:
            reason = f"no ID: key {id_key!r} must hold a string or an integer, got " \
                     f"{type(raw_id).__name__} {orjson.dumps(raw_id).decode()[:40]}"
        reader.bad_row(number, reason, id_key)
        return None
    attributes: dict[str, Any] | None
    if specs:
        attributes = {}
        for name, kind in specs:
            value = data.get(name)
            if value is None or value == "":
                continue
            try:
                attributes[name] = json_value(value, kind or "str")
            except ValueError as error:
                reader.bad_row(number, f"key {name!r}: {error}", name)
                return None
    else:
        raw = data.get(attributes_key)
        if raw is not None and not isinstance(raw, dict):
            reader.bad_row(number, f"key {attributes_key!r} must hold an object", attributes_key)
            return None
        attributes = raw
    try:
        if action_key in data:
            return IdAction(custom_id, data[action_key], attributes or None)
        return Member(custom_id, attributes or None)
    except ValidationError as error:
        reader.bad_row(number, str(error), error.field)
        return None
