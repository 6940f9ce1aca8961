"""The one ``cattrs`` converter: models to JSON bodies, JSON answers to models.

Encoding uses ``orjson`` through cattrs' preconfigured converter. The update and replace bodies,
which carry up to 10,000 items, get hand-written hooks: they are the hot path of every bulk job,
and the models were validated when they were built, so the hooks only reshape.

Decoding is tolerant where tolerance is safe (an unknown enum value stays a string, a missing
optional field is ``None``) and strict where it is not (a missing name or token raises
:class:`UnexpectedResponseError`, never a ``KeyError``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, Final, TypeVar

import cattrs
import orjson
from cattrs.preconf.orjson import make_converter

from ._errors import UnexpectedResponseError, ValidationError
from ._isodates import fromisoformat
from ._models import (
    Accepted,
    Action,
    Audience,
    AudiencePage,
    AudienceType,
    Confirmation,
    CreateRequest,
    IdAction,
    IndexingState,
    Member,
    ReplaceRequest,
    UpdateRequest,
    Url,
    name_matches,
    typed_kind,
)

__all__ = [
    "accepted_answer",
    "action_entry",
    "converter",
    "decode",
    "decode_accepted",
    "encode",
    "encode_attributes",
    "entries_json",
    "format_datetime",
    "id_entries_json",
    "ids_body",
    "ids_json",
    "member_entry",
]

T = TypeVar("T")

converter = make_converter()

# The view route spells the type "CUSTOM_ID" while create takes "custom_ids".
_TYPE_ALIASES = {"CUSTOM_ID": AudienceType.CUSTOM_IDS, "custom_ids": AudienceType.CUSTOM_IDS}


def format_datetime(value: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the API wants dates; seconds unless there is a fraction."""
    value = value.astimezone(timezone.utc)
    # Not strftime: its %Y does not pad years before 1000 to four digits on every platform.
    text = (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
        f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}"
    )
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def _parse_datetime(value: object) -> datetime | None:
    # A date is informative only: one that cannot be read becomes None rather than failing
    # the whole page it came in.
    if not isinstance(value, str):
        return None
    try:
        parsed = fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def encode_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Reshape validated attributes for the wire: ``date(key)``, ``url(key)``, lists."""
    out: dict[str, Any] | None = None
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int or kind is bool or kind is float:
            continue
        # Copy only when something changes: most attribute maps go out as they are.
        if out is None:
            out = dict(attributes)
        if isinstance(value, datetime):
            del out[key]
            out[key if typed_kind(key) == "date" else f"date({key})"] = format_datetime(value)
        elif kind is Url:
            del out[key]
            out[key if typed_kind(key) == "url" else f"url({key})"] = value.value
        elif isinstance(value, (list, tuple)):
            out[key] = list(value)
        elif isinstance(value, str):
            # str() of a str-based enum member is "Color.RED"; str.__str__ gives its text.
            out[key] = str.__str__(value)
        elif isinstance(value, float):
            out[key] = float(value)
        elif isinstance(value, int):
            out[key] = int(value)
    return attributes if out is None else out  # type: ignore[return-value]


def action_entry(
    custom_id: str, add: bool, attributes: Mapping[str, Any] | None, *, reshape: bool = True
) -> dict[str, Any]:
    """One entry of an update body: ``{"action", "id"[, "attributes"]}``, the only place it is spelled.

    ``reshape=False`` when the attributes are known to go out as they are (see :func:`encode`).
    """
    if attributes:
        return {"action": "add" if add else "remove", "id": custom_id,
                "attributes": encode_attributes(attributes) if reshape else attributes}
    return {"action": "add" if add else "remove", "id": custom_id}


def member_entry(
    custom_id: str, attributes: Mapping[str, Any] | None, *, reshape: bool = True
) -> dict[str, Any]:
    """One entry of a replace body: ``{"id"[, "attributes"]}``."""
    if attributes:
        return {"id": custom_id, "attributes": encode_attributes(attributes) if reshape else attributes}
    return {"id": custom_id}


def _unstructure_action(item: IdAction) -> dict[str, Any]:
    return action_entry(item.id, item.action is Action.ADD, item.attributes)


def _unstructure_member(item: Member) -> dict[str, Any]:
    return member_entry(item.id, item.attributes)


# The two bulk bodies, a fresh entry per item. ``reshape=False`` leaves every attribute map as
# the model holds it: only :func:`encode`'s first try does that (see there).


def _action_entries(items: Iterable[IdAction], reshape: bool) -> list[dict[str, Any]]:
    if reshape:
        return [action_entry(item.id, item.action is Action.ADD, item.attributes) for item in items]
    # action_entry(..., reshape=False), inline: a call per item is a third of the encoding.
    add = Action.ADD
    return [
        {"action": "add" if item.action is add else "remove", "id": item.id, "attributes": attributes}
        if (attributes := item.attributes) else
        {"action": "add" if item.action is add else "remove", "id": item.id}
        for item in items
    ]


def _member_entries(items: Iterable[Member], reshape: bool) -> list[dict[str, Any]]:
    if reshape:
        return [member_entry(item.id, item.attributes) for item in items]
    # member_entry(..., reshape=False), inline.
    return [
        {"id": item.id, "attributes": attributes} if (attributes := item.attributes) else {"id": item.id}
        for item in items
    ]


def _unstructure_update(request: UpdateRequest, reshape: bool = True) -> dict[str, Any]:
    return {"name": request.name, "ids": _action_entries(request.ids, reshape)}


def _unstructure_replace(request: ReplaceRequest, reshape: bool = True) -> dict[str, Any]:
    return {"name": request.name, "ids": _member_entries(request.ids, reshape)}


_BULK_BODIES: Final[dict[type[Any], Callable[[Any, bool], dict[str, Any]]]] = {
    UpdateRequest: _unstructure_update,
    ReplaceRequest: _unstructure_replace,
}


class _NeedsReshaping(Exception):
    """Raised by :func:`_not_as_is` to stop an optimistic encoding."""


def _not_as_is(value: object) -> object:
    raise _NeedsReshaping


#: With these options orjson writes by itself only values that :func:`encode_attributes` leaves
#: as they are (exact str, int, float, bool, list, tuple, dict, None) and hands everything else
#: (a datetime, a Url, any subclass such as an enum member) to ``default``.
_AS_IS_ONLY: Final = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def entries_json(entries: list[dict[str, Any]]) -> bytes:
    """The entries of a list body as JSON, without the brackets: a piece of an ``"ids"`` array.

    Pieces are complete JSON values separated by commas, so pieces joined by ``b","`` are still
    valid; nothing is ever spliced inside a value (where user data lives).
    """
    return orjson.dumps(entries)[1:-1]


def ids_json(ids: list[str]) -> bytes | None:
    """``ids`` as a JSON array, or ``None`` if one of them UTF-8 cannot carry (a lone surrogate)."""
    try:
        return orjson.dumps(ids)
    except orjson.JSONEncodeError:
        return None


def id_entries_json(ids: list[str], action: str | None, array: bytes | None = None) -> bytes:
    """Entries for bare IDs, as :func:`entries_json` would write them: ``{"action": action, "id":
    id}`` each, or ``{"id": id}`` when ``action`` is ``None`` (a replace). ``array``: the IDs'
    :func:`ids_json`, if the caller has it already.

    The hot path of an upload of plain IDs, written around the IDs themselves when that is
    provably the same JSON. Proof: inside a JSON string, ``"``, ``\\`` and the control
    characters must be escaped, and every escape starts with a backslash (RFC 8259, section 7).
    So when orjson's encoding of the IDs holds no backslash, no ID holds any of those characters,
    and (orjson having accepted them, they are valid UTF-8) ``"`` + ID + ``"`` is a JSON string
    that decodes to that very ID. Otherwise (an
    ID with a quote, a backslash or a control character) the entries are built as dicts. Raises
    ``orjson.JSONEncodeError`` for a string UTF-8 cannot carry (a lone surrogate).

    >>> id_entries_json(["a", 'b"c'], "add") == entries_json(
    ...     [{"action": "add", "id": "a"}, {"action": "add", "id": 'b"c'}])
    True
    """
    if not ids:
        return b""
    if b"\\" in (orjson.dumps(ids) if array is None else array):
        if action is None:
            return entries_json([{"id": custom_id} for custom_id in ids])
        return entries_json([{"action": action, "id": custom_id} for custom_id in ids])
    head = '{"id":"' if action is None else f'{{"action":"{action}","id":"'
    return "".join((head, ('"},' + head).join(ids), '"}')).encode()


def ids_body(name: str, pieces: Iterable[bytes]) -> bytes:
    """An update or replace body from :func:`entries_json` pieces (empty pieces are dropped)."""
    return b"".join((b'{"name":', orjson.dumps(name), b',"ids":[', b",".join(p for p in pieces if p), b"]}"))


def _unstructure_create(request: CreateRequest) -> dict[str, Any]:
    body: dict[str, Any] = {"name": request.name, "type": request.type.value}
    if request.display_name is not None:  # None is omitted, never sent as null
        body["display_name"] = request.display_name
    return body


_UNSTRUCTURE_HOOKS: dict[type[Any], Callable[[Any], dict[str, Any]]] = {
    IdAction: _unstructure_action,
    Member: _unstructure_member,
    UpdateRequest: _unstructure_update,
    ReplaceRequest: _unstructure_replace,
    CreateRequest: _unstructure_create,
}
for _cls, _unhook in _UNSTRUCTURE_HOOKS.items():
    converter.register_unstructure_hook(_cls, _unhook)


def _structure_type(value: object, _: object) -> AudienceType | str:
    if isinstance(value, str):
        return _TYPE_ALIASES.get(value, value)
    raise ValueError(f"type must be a string, got {type(value).__name__}")


def _structure_state(value: object, _: object) -> IndexingState | str:
    if isinstance(value, str):
        try:
            return IndexingState(value)
        except ValueError:
            return value  # a state this SDK does not know yet; kept rather than failing
    raise ValueError(f"indexing_state must be a string, got {type(value).__name__}")


def _require(data: Mapping[str, Any], key: str, kind: type[T]) -> T:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _structure_audience(data: object, _: object) -> Audience:
    if not isinstance(data, Mapping):
        raise ValueError(f"an audience must be an object, got {type(data).__name__}")
    display_name = data.get("display_name")
    return Audience(
        name=_require(data, "name", str),
        display_name=display_name if isinstance(display_name, str) else None,
        type=_structure_type(data.get("type", AudienceType.CUSTOM_IDS.value), None),
        nb_ids=_require(data, "nb_ids", int) if "nb_ids" in data else 0,
        indexing_state=_structure_state(data.get("indexing_state", "APPLIED"), None),
        created=_parse_datetime(data.get("created")),
        updated=_parse_datetime(data.get("updated")),
    )


def _structure_page(data: object, _: object) -> AudiencePage:
    if not isinstance(data, Mapping):
        raise ValueError(f"a page must be an object, got {type(data).__name__}")
    items = data.get("audiences")
    if not isinstance(items, list):
        raise ValueError("field 'audiences' must be a list")
    has_more = data.get("has_more", False)
    next_from = data.get("next_from")
    count = data.get("count")
    if not isinstance(has_more, bool):
        raise ValueError("field 'has_more' must be a boolean")
    if has_more and not isinstance(next_from, str):
        raise ValueError("field 'next_from' must be a string when has_more is true")
    return AudiencePage(
        audiences=tuple(_structure_audience(item, None) for item in items),
        has_more=has_more,
        next_from=next_from if isinstance(next_from, str) else None,
        count=count if isinstance(count, int) and not isinstance(count, bool) else None,
    )


def _indexing_token(data: object) -> str | None:
    if data is None:
        return None
    if type(data) is not dict and not isinstance(data, Mapping):  # a dict, without the ABC check
        raise ValueError(f"expected an object, got {type(data).__name__}")
    token = data.get("indexing_token")
    if token is not None and not isinstance(token, str):
        raise ValueError("field 'indexing_token' must be a string")
    return token


def _structure_accepted(data: object, _: object) -> Accepted:
    return Accepted(_indexing_token(data))


_STRUCTURE_HOOKS: dict[type[Any], Callable[[object, Any], Any]] = {
    Audience: _structure_audience,
    AudiencePage: _structure_page,
    Accepted: _structure_accepted,
}
for _cls, _hook in _STRUCTURE_HOOKS.items():
    converter.register_structure_hook(_cls, _hook)


def encode(request: object) -> bytes:
    """The JSON body of a request model.

    Raises :class:`ValidationError` for a string that JSON cannot carry (a lone surrogate,
    which Python strings allow but UTF-8 does not), naming where it is.
    """
    bulk = _BULK_BODIES.get(type(request))
    if bulk is not None:
        # Most bodies hold only values that go out as they are. Try that first, with the
        # attribute maps as the models hold them: orjson refuses (through ``default``) any
        # value that encode_attributes would reshape, and then the body is built again with
        # every map reshaped. Any other failure (a string UTF-8 cannot carry) takes the same
        # second road, which names it.
        try:
            return orjson.dumps(bulk(request, False), default=_not_as_is, option=_AS_IS_ONLY)
        except orjson.JSONEncodeError:
            pass
    # The SDK's own request models go straight to their hook, without cattrs' dispatch.
    hook = _UNSTRUCTURE_HOOKS.get(type(request))
    data = hook(request) if hook is not None else converter.unstructure(request)
    try:
        return orjson.dumps(data)
    except orjson.JSONEncodeError as exc:
        raise ValidationError(_unencodable(data) or "body", f"cannot be sent as JSON: {exc}") from None


_CUSTOM_IDS: Final = AudienceType.CUSTOM_IDS  # an enum member read off its class is a call
_CREATE_HEAD: Final = b'{"name":"'
_CREATE_TAIL: Final = b'","type":"' + AudienceType.CUSTOM_IDS.value.encode() + b'"}'


def encode_create(name: object, kind: object = AudienceType.CUSTOM_IDS, display_name: object = None) -> bytes:
    """The body of ``POST /audiences/create``, with :class:`CreateRequest`'s checks (a bad
    argument raises :class:`ValidationError`).

    >>> encode_create("vip")
    b'{"name":"vip","type":"custom_ids"}'
    >>> encode_create("vip", display_name="VIP")
    b'{"name":"vip","type":"custom_ids","display_name":"VIP"}'
    """
    # The create of a valid name and nothing else, the one made by the thousand, is written
    # here as orjson writes it (a valid name holds nothing JSON escapes), without a model
    # built and encoded for it: the same bytes, a tenth of the work. Anything else takes
    # the model's road, where every check and its message live.
    if (kind is _CUSTOM_IDS and display_name is None and type(name) is str
            and name_matches(name)):
        return _CREATE_HEAD + name.encode() + _CREATE_TAIL
    return encode(CreateRequest(name, kind, display_name))  # type: ignore[arg-type]


def _unencodable(data: object, path: str = "") -> str | None:
    """The path of the first string in ``data`` that is not valid UTF-8, if any."""
    if isinstance(data, str):
        try:
            data.encode("utf-8")
        except UnicodeEncodeError:
            return path or "body"
        return None
    if isinstance(data, Mapping):
        for key, value in data.items():
            where = f"{path}.{key}" if path and isinstance(key, str) and key.isidentifier() else (
                f"{path}[{key!r}]" if path else str(key)
            )
            found = _unencodable(key, where) or _unencodable(value, where)
            if found:
                return found
    elif isinstance(data, (list, tuple)):
        for index, value in enumerate(data):
            found = _unencodable(value, f"{path}[{index}]")
            if found:
                return found
    return None


def decode(body: bytes, cls: type[T], *, status: int, method: str, route: str) -> T:
    """Parse a success body into ``cls``, or raise :class:`UnexpectedResponseError`.

    An empty body is read as JSON ``null``, which only :class:`Accepted` takes.
    """
    try:
        data = orjson.loads(body) if body.strip() else None
        hook = _STRUCTURE_HOOKS.get(cls)
        if hook is not None:  # the SDK's own models, without cattrs' dispatch
            return hook(data, cls)  # type: ignore[no-any-return]
        return converter.structure(data, cls)
    except _UNREADABLE as exc:
        raise _unreadable(body, cls, exc, status=status, method=method, route=route) from exc


# Accepted's slots, set as attrs' ``__init__`` sets a frozen class's fields but without
# ``object.__setattr__``'s lookup of each slot by name (see ``_models.IdAction``'s setters).
_set_token: Final = Accepted.__dict__["indexing_token"].__set__
_set_status: Final = Accepted.__dict__["status"].__set__
_set_headers: Final = Accepted.__dict__["headers"].__set__
_set_confirmation: Final = Accepted.__dict__["confirmation"].__set__
_ANSWERED: Final = Confirmation.ANSWERED
_new_object: Final = object.__new__


def accepted_answer(token: str | None, status: int, headers: Mapping[str, str]) -> Accepted:
    """``Accepted(token, status, headers)``, built at a third of the cost: the answer to every
    write is one (the fields have no validators to skip).

    >>> accepted_answer("t1", 202, {}) == Accepted("t1", 202, {})
    True
    """
    self = _new_object(Accepted)
    _set_token(self, token)
    _set_status(self, status)
    _set_headers(self, headers)
    _set_confirmation(self, _ANSWERED)
    return self


def decode_accepted(
    body: bytes, *, status: int, headers: Mapping[str, str], method: str, route: str
) -> Accepted:
    """``decode(body, Accepted, ...)`` with the answer's ``status`` and ``headers`` kept in it:
    the answer to every write, built once."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if body.strip():
            raise _unreadable(body, Accepted, exc, status=status, method=method, route=route) from exc
        data = None  # an empty body stands for null
    # The answer of nearly every write, {"indexing_token": "..."}, without a call more.
    if type(data) is dict:
        token = data.get("indexing_token")
        if token is None or type(token) is str:
            return accepted_answer(token, status, headers)
    try:
        token = _indexing_token(data)
    except _UNREADABLE as exc:
        raise _unreadable(body, Accepted, exc, status=status, method=method, route=route) from exc
    return accepted_answer(token, status, headers)


_UNREADABLE: Final = (orjson.JSONDecodeError, cattrs.BaseValidationError, ValueError, TypeError,
                      KeyError, AttributeError, OverflowError)


def _unreadable(
    body: bytes, cls: type[Any], exc: BaseException, *, status: int, method: str, route: str
) -> UnexpectedResponseError:
    preview = body[:120].decode("utf-8", "replace")
    return UnexpectedResponseError(
        status, None, f"cannot read the answer as {cls.__name__}: {exc} (body: {preview!r})",
        method=method, route=route,
    )
