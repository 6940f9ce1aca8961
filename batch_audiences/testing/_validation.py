"""Request validation, written from the API reference.

Where the reference is silent the emulator is STRICT (unknown fields, ``null`` for optional
fields, a wrong ``Content-Type`` are rejected): a client that passes here is then safe whichever
way the real API decides.

Each ``parse_*`` function returns plain data ready for the store, so every item is looked at once.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Final
from urllib.parse import urlsplit

from ._errors import ApiError, bad_request

MAX_ITEMS: Final = 10_000
MAX_ATTRIBUTES: Final = 15
MAX_LIST_LIMIT: Final = 100
DEFAULT_LIST_LIMIT: Final = 10

NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
_TYPED_KEY_RE: Final = re.compile(r"(date|url)\((.*)\)", re.DOTALL)
_RFC3339_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))"
)
_CURSOR_PREFIX: Final = "after:"

#: Update items, in request order: the IDs, and for each its attributes to add (``{}`` for none)
#: or None to remove it. Two lists rather than a pair per item: a million pairs holding dicts
#: would each be an object for the garbage collector to follow; two lists are two.
UpdateItems = tuple[list[str], list["dict[str, object] | None"]]


_NOT_JSON: Final = object()


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def check_json_object(data: object, content_type: str) -> dict[str, object]:
    """Check a POST body (decoded by :func:`decode_json`): a JSON object sent as ``application/json``."""
    if content_type != "application/json":
        raise bad_request(
            f"Content-Type must be application/json, got {content_type or 'none'!r}", "MALFORMED_REQUEST"
        )
    if data is _NOT_JSON:
        raise bad_request("the request body is not valid JSON", "MALFORMED_REQUEST")
    if not isinstance(data, dict):
        raise bad_request(
            f"the request body must be a JSON object, got {_json_type(data)}", "MALFORMED_REQUEST"
        )
    return data


def decode_json(raw: bytes) -> object:
    """Parse JSON, or return ``_NOT_JSON``; ``NaN``/``Infinity`` are not JSON, so rejected."""
    if not raw:
        return _NOT_JSON
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return _NOT_JSON


def is_json(value: object) -> bool:
    """Whether ``decode_json`` produced a value."""
    return value is not _NOT_JSON


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _only_fields(data: Mapping[str, object], allowed: frozenset[str], where: str) -> None:
    if data.keys() <= allowed:
        return
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise bad_request(f"{where}unknown field {unknown[0]!r}; allowed: {sorted(allowed)}")


def _name(data: Mapping[str, object]) -> str:
    if "name" not in data:
        raise bad_request("name is required", "MISSING_PARAMETER")
    return check_name(data["name"], "name")


def check_name(value: object, field: str) -> str:
    """An audience name: 1 to 255 of ``A-Z a-z 0-9 _ -``."""
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a string, got {_json_type(value)}")
    if not NAME_RE.fullmatch(value):
        raise bad_request(
            f"{field} must be 1 to 255 characters among A-Z, a-z, 0-9, '_' and '-', got {value[:300]!r}"
        )
    return value


def parse_create(data: Mapping[str, object]) -> tuple[str, str | None]:
    """``{name, type: "custom_ids", display_name?}`` -> (name, display_name)."""
    _only_fields(data, frozenset({"name", "type", "display_name"}), "")
    name = _name(data)
    if "type" not in data:
        raise bad_request("type is required (\"custom_ids\")", "MISSING_PARAMETER")
    if data["type"] != "custom_ids":
        raise bad_request(f"type must be \"custom_ids\", got {data['type']!r}")
    display_name = data.get("display_name")
    if "display_name" in data and not isinstance(display_name, str):
        raise bad_request(f"display_name must be a string, got {_json_type(display_name)}")
    return name, display_name if isinstance(display_name, str) else None


def parse_remove(data: Mapping[str, object]) -> str:
    """``{name}`` -> name."""
    _only_fields(data, frozenset({"name"}), "")
    return _name(data)


def _ids(data: Mapping[str, object], minimum: int) -> list[object]:
    if "ids" not in data:
        raise bad_request("ids is required", "MISSING_PARAMETER")
    ids = data["ids"]
    if not isinstance(ids, list):
        raise bad_request(f"ids must be an array, got {_json_type(ids)}")
    if not minimum <= len(ids) <= MAX_ITEMS:
        raise bad_request(f"ids must hold {minimum} to {MAX_ITEMS} items, got {len(ids)}")
    return ids


def _custom_id(item: Mapping[str, object], where: str) -> str:
    if "id" not in item:
        raise bad_request(f"{where}.id is required", "MISSING_PARAMETER")
    value = item["id"]
    if not isinstance(value, str):
        raise bad_request(f"{where}.id must be a string, got {_json_type(value)}")
    if not value:
        raise bad_request(f"{where}.id must not be empty")
    return value


_UPDATE_ITEM_FIELDS: Final = frozenset({"action", "id", "attributes"})
_REPLACE_ITEM_FIELDS: Final = frozenset({"id", "attributes"})


def parse_update(data: Mapping[str, object]) -> tuple[str, UpdateItems]:
    """``{name, ids: [{action, id, attributes?}, ...]}`` -> (name, items in request order)."""
    _only_fields(data, frozenset({"name", "ids"}), "")
    name = _name(data)
    ids: list[str] = []
    values: list[dict[str, object] | None] = []
    add_id, add_value = ids.append, values.append
    for index, item in enumerate(_ids(data, 1)):
        # Fast path for the common well-formed item (benchmarks push millions through here):
        # its size says which fields it has once "id" and "action" are found, with no set built
        # per item. Anything else goes to _update_item, which validates fully and explains the 400.
        if type(item) is dict:
            custom_id = item.get("id")
            if type(custom_id) is str and custom_id:
                action = item.get("action")
                size = len(item)
                if action == "add":
                    if size == 2:
                        add_id(custom_id)
                        add_value({})
                        continue
                    attributes = item.get("attributes")
                    if size == 3 and type(attributes) is dict and _plain_attributes(attributes):
                        add_id(custom_id)
                        add_value(attributes)
                        continue
                elif action == "remove" and size == 2:
                    add_id(custom_id)
                    add_value(None)
                    continue
        custom_id, attributes = _update_item(item, index)
        add_id(custom_id)
        add_value(attributes)
    return name, (ids, values)


def _update_item(item: object, index: int) -> tuple[str, dict[str, object] | None]:
    where = f"ids[{index}]"
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object, got {_json_type(item)}")
    _only_fields(item, _UPDATE_ITEM_FIELDS, f"{where}: ")
    if "action" not in item:
        raise bad_request(f"{where}.action is required (\"add\" or \"remove\")", "MISSING_PARAMETER")
    action = item["action"]
    if action not in ("add", "remove"):
        raise bad_request(f"{where}.action must be \"add\" or \"remove\", got {action!r}")
    custom_id = _custom_id(item, where)
    if action == "remove":
        if "attributes" in item:
            raise bad_request(f"{where}.attributes is only allowed with action \"add\"")
        return custom_id, None
    return custom_id, _attributes(item, where)


def parse_replace(data: Mapping[str, object]) -> tuple[str, dict[str, dict[str, object] | None]]:
    """``{name, ids: [{id, attributes?}, ...]}`` -> (name, the new members, ``None`` for no
    attributes; the last duplicate wins)."""
    _only_fields(data, frozenset({"name", "ids"}), "")
    name = _name(data)
    members: dict[str, dict[str, object] | None] = {}
    for index, item in enumerate(_ids(data, 0)):
        # Same fast path as parse_update; no attributes is stored as None (see the store).
        if type(item) is dict:
            custom_id = item.get("id")
            if type(custom_id) is str and custom_id:
                size = len(item)
                if size == 1:
                    members[custom_id] = None
                    continue
                attributes = item.get("attributes")
                if size == 2 and type(attributes) is dict and _plain_attributes(attributes):
                    members[custom_id] = attributes or None
                    continue
        custom_id, attributes = _replace_item(item, index)
        members[custom_id] = attributes or None
    return name, members


def _replace_item(item: object, index: int) -> tuple[str, dict[str, object]]:
    where = f"ids[{index}]"
    if not isinstance(item, dict):
        raise bad_request(f"{where} must be an object, got {_json_type(item)}")
    if "action" in item:
        raise bad_request(f"{where}.action is not allowed in a replace (items are {{id, attributes?}})")
    _only_fields(item, _REPLACE_ITEM_FIELDS, f"{where}: ")
    return _custom_id(item, where), _attributes(item, where)


_PLAIN_VALUE_TYPES: Final = frozenset({str, int, bool})


def _plain_attributes(attributes: dict[str, object]) -> bool:
    """True for the common case needing no detailed check: few entries, plain keys and values."""
    if len(attributes) > MAX_ATTRIBUTES:
        return False
    for key, value in attributes.items():
        if type(value) not in _PLAIN_VALUE_TYPES or not key or key[-1] == ")":
            return False
    return True


def _attributes(item: Mapping[str, object], where: str) -> dict[str, object]:
    if "attributes" not in item:
        return {}
    attributes = item["attributes"]
    where = f"{where}.attributes"
    if not isinstance(attributes, dict):
        raise bad_request(f"{where} must be an object, got {_json_type(attributes)}")
    if len(attributes) > MAX_ATTRIBUTES:
        raise bad_request(f"{where} holds {len(attributes)} entries, at most {MAX_ATTRIBUTES} are allowed")
    for key, value in attributes.items():
        _check_attribute(key, value, f"{where}[{key!r}]")
    return attributes


def _check_attribute(key: str, value: object, where: str) -> None:
    if not key:
        raise bad_request(f"{where}: an attribute name must not be empty")
    typed = _TYPED_KEY_RE.fullmatch(key)
    if typed is not None:
        kind, inner = typed.groups()
        if not inner:
            raise bad_request(f"{where}: the attribute name inside {kind}() must not be empty")
        if not isinstance(value, str):
            raise bad_request(f"{where} must be a string, got {_json_type(value)}")
        if kind == "date" and not _is_rfc3339(value):
            raise bad_request(f"{where} must be an RFC 3339 date-time (2023-08-12T22:30:05Z), got {value!r}")
        if kind == "url" and not _is_http_url(value):
            raise bad_request(f"{where} must be an http or https URL, got {value!r}")
        return
    if isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):  # 1e999 parses as inf
            raise bad_request(f"{where} must be a finite number, got {value!r}")
        return
    if isinstance(value, list):
        for position, element in enumerate(value):
            if not isinstance(element, str):
                raise bad_request(
                    f"{where}[{position}] must be a string (arrays hold strings), got {_json_type(element)}"
                )
        return
    raise bad_request(
        f"{where} must be a string, number, boolean or array of strings, got {_json_type(value)}"
    )


def _is_rfc3339(value: str) -> bool:
    match = _RFC3339_RE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, _, offset_h, offset_m = match.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return False
    return offset_h is None or (int(offset_h) <= 23 and int(offset_m) <= 59)


def _is_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _only_params(query: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise bad_request(f"unknown query parameter {unknown[0]!r}; allowed: {sorted(allowed)}")


def parse_view(query: Mapping[str, str]) -> tuple[str, str | None]:
    """Query ``name``, ``indexing_token?`` -> (name, token)."""
    _only_params(query, frozenset({"name", "indexing_token"}))
    if "name" not in query:
        raise bad_request("name is required", "MISSING_PARAMETER")
    name = check_name(query["name"], "name")
    token = query.get("indexing_token")
    if token is not None and not token:
        raise bad_request("indexing_token must not be empty")
    return name, token


def parse_list(query: Mapping[str, str]) -> tuple[str | None, int, bool]:
    """Query ``from?``, ``limit?`` -> (name to start after, limit, whether it is the first page)."""
    _only_params(query, frozenset({"from", "limit"}))
    limit = DEFAULT_LIST_LIMIT
    if "limit" in query:
        raw = query["limit"]
        if not re.fullmatch(r"[+-]?\d{1,9}", raw):
            raise bad_request(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {raw!r}")
        limit = int(raw)
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise bad_request(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit}")
    if "from" not in query:
        return None, limit, True
    return decode_cursor(query["from"]), limit, False


def encode_cursor(last_name: str) -> str:
    """An opaque cursor meaning "the names after ``last_name``"."""
    raw = (_CURSOR_PREFIX + last_name).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The name a cursor from :func:`encode_cursor` points after; 400 for anything else."""
    error = ApiError(400, "INVALID_PARAMETER", f"from is not a cursor this server returned: {cursor[:100]!r}")
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, ValueError):
        raise error from None
    if not text.startswith(_CURSOR_PREFIX) or not NAME_RE.fullmatch(text[len(_CURSOR_PREFIX):]):
        raise error
    return text[len(_CURSOR_PREFIX):]
