"""The Audience API's requests and responses as small frozen ``attrs`` classes.

Validators sit beside the fields they guard and raise :class:`ValidationError` naming the field
and the rule, so bad input stops here, before a request exists. The models know nothing of HTTP
or JSON: :mod:`batch_audiences._codec` turns them into bodies and back.
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, Final
from urllib.parse import urlsplit

import attrs

from ._errors import ValidationError

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_IDS_PER_REQUEST",
    "MAX_ID_LENGTH",
    "Accepted",
    "Action",
    "AttributeValue",
    "Attributes",
    "Audience",
    "AudiencePage",
    "AudienceType",
    "Confirmation",
    "CreateRequest",
    "IdAction",
    "IndexingState",
    "Member",
    "NewAudience",
    "ReplaceRequest",
    "UpdateRequest",
    "Url",
    "all_valid_ids",
    "check_attributes",
    "check_id",
    "check_name",
    "plain_id",
    "typed_kind",
]

MAX_IDS_PER_REQUEST: Final = 10_000
MAX_ATTRIBUTES: Final = 15
#: The longest custom ID accepted, in characters. Batch documents no limit; this one keeps a
#: runaway value (a whole file read as one line, a quote never closed) a bad item with a clear
#: message instead of a request body of hundreds of megabytes that the server refuses whole,
#: failing every valid ID of its chunk with it.
MAX_ID_LENGTH: Final = 1024
MAX_PAGE_SIZE: Final = 100
_NAME: Final = re.compile(r"[A-Za-z0-9_-]{1,255}")
_TYPED_KEY: Final = re.compile(r"(date|url)\((.*)\)", re.DOTALL)
_MIN_INT: Final = -(2**63)
_MAX_INT: Final = 2**64
_URL: Final = re.compile(r"https?://[^\s/?#]+[^\s]*", re.IGNORECASE)
# RFC 3339 as the API takes dates: "2023-08-12T22:30:05Z", an optional fraction, Z or an offset.
_RFC3339: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)


def _is_url(value: str) -> bool:
    if not _URL.fullmatch(value):
        return False
    try:
        return bool(urlsplit(value).netloc)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False


def _is_rfc3339(value: str) -> bool:
    match = _RFC3339.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, _, offset_h, offset_m = match.groups()
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return False
    return offset_h is None or (int(offset_h) <= 23 and int(offset_m) <= 59)


class AudienceType(str, enum.Enum):
    """The kind of audience; the API knows one kind today."""

    CUSTOM_IDS = "custom_ids"


class IndexingState(str, enum.Enum):
    """Where a write stands in Batch's asynchronous indexing."""

    IN_PROGRESS = "IN_PROGRESS"
    APPLIED = "APPLIED"
    REPLACED = "REPLACED"


class Confirmation(str, enum.Enum):
    """How a create or remove is known to have happened: :attr:`Accepted.confirmation`.

    When a try breaks after its bytes left (a timeout, a dropped connection), the write may have
    happened with its answer lost. A retry then meets the result (a taken name, a missing
    audience), and the state is all there is to judge by; see "Retries and pacing" in the README
    for the rule and its tolerance.
    """

    #: The server answered this write with a success status.
    ANSWERED = "answered"
    #: The answer was lost; the audience's ``created`` time, on the server's clock, falls within
    #: the time this call's tries were out (create only). Only an audience of the same name made
    #: by someone else within that window, give or take one second, would look the same.
    INFERRED = "inferred"
    #: The answer was lost; the state is as asked but nothing shows this call made it so (a
    #: remove that found the audience gone: a removed audience leaves no trace to date).
    UNCERTAIN = "uncertain"


class Action(str, enum.Enum):
    """What an update does to one ID."""

    ADD = "add"
    REMOVE = "remove"


@attrs.frozen
class Url:
    """Marks an attribute value as a URL, sent under the key ``url(name)``.

    >>> from batch_audiences import Member, Url
    >>> Member("u1", {"avatar": Url("https://example.com/a.png")}).attributes["avatar"]
    Url(value='https://example.com/a.png')
    """

    value: str = attrs.field()

    @value.validator
    def _check(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not _is_url(value):
            raise ValidationError("url", f"must be an http(s) URL, got {value!r}")


AttributeValue = str | int | float | bool | Sequence[str] | datetime | Url
Attributes = Mapping[str, AttributeValue]


#: Whether a str is a whole valid audience name (:func:`check_name`'s rule, as a test): such a
#: name is ASCII letters, digits, ``_`` and ``-``, none of which JSON escapes.
name_matches: Final = _NAME.fullmatch


def check_name(value: object, field: str = "name") -> str:
    """Return ``value`` if it is a valid audience name, else raise :class:`ValidationError`."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not _NAME.fullmatch(value):
        raise ValidationError(
            field, f"must be 1 to 255 characters of A-Z a-z 0-9 _ -, got {value[:60]!r}"
        )
    return value


def check_id(value: object, field: str = "id") -> str:
    """Return ``value`` if it is a valid custom ID (a non-empty string of at most
    :data:`MAX_ID_LENGTH` characters)."""
    # The exact-type test first: it is the fast path of every bulk upload.
    if type(value) is not str and not isinstance(value, str):
        raise ValidationError(field, f"must be a string, got {type(value).__name__}")
    if not value or value.isspace():
        raise ValidationError(field, "must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise ValidationError(field, f"at most {MAX_ID_LENGTH:,} characters, got {len(value):,}")
    return value


# orjson writes a list of str holding no escape (no ``"``, ``\\`` or control character in any
# of them) as ``["`` + the strings joined by ``","`` + ``"]``: each quote there is a delimiter.
# This reads such an array as strings of 1 to MAX_ID_LENGTH bytes, so of 1 to MAX_ID_LENGTH
# characters. The possessive repeats (Python 3.11+) only spare the regex engine its
# backtracking bookkeeping: a string ends at its one quote, there is nothing to backtrack into.
_PLUS: Final = b"+" if sys.version_info >= (3, 11) else b""
_ID_ARRAY: Final = re.compile(
    rb'\["[^"]{1,%d}%s"(?:,"[^"]{1,%d}%s")*%s\]' % (MAX_ID_LENGTH, _PLUS, MAX_ID_LENGTH, _PLUS, _PLUS)
)


def all_valid_ids(ids: list[str], array: bytes) -> bool:
    """Whether :func:`check_id` accepts every one of ``ids``, each an exact ``str``, given
    ``array``, their JSON array as orjson writes it: the check of an upload's plain IDs, made by
    passes in C over the whole list instead of a Python step per ID.

    >>> all_valid_ids(["a", "b c"], b'["a","b c"]'), all_valid_ids(["a", "  "], b'["a","  "]')
    (True, False)
    """
    if b"\\" not in array and _ID_ARRAY.fullmatch(array) is not None:
        # No ID is empty or too long; a blank one is left to find. In ASCII without escapes
        # (which every other ASCII whitespace character needs), a blank ID is made of spaces.
        return (array.isascii() and b" " not in array) or not any(map(str.isspace, ids))
    # Escapes, or IDs longer in UTF-8 bytes than allowed in characters: each rule in turn.
    return "" not in ids and not any(map(str.isspace, ids)) and max(map(len, ids), default=0) <= MAX_ID_LENGTH


def _check_value(key: str, value: object, field: str) -> None:
    kind = type(value)
    if kind is str or kind is bool or kind is Url:
        pass
    elif kind is int:
        # JSON encoders stop at 64 bits; a bigger number would fail later, inside the SDK.
        if not _MIN_INT <= value < _MAX_INT:  # type: ignore[operator]
            raise ValidationError(f"{field}[{key!r}]", "integer out of the 64-bit range")
    elif kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValidationError(f"{field}[{key!r}]", "must be a finite number, not NaN or infinity")
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(f"{field}[{key!r}]", "datetime must be timezone-aware")
        try:
            # Sent in UTC: a date at the very ends of the calendar may not exist there.
            value.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError(f"{field}[{key!r}]", "datetime out of range once in UTC") from None
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise ValidationError(f"{field}[{key!r}]", "a list value may hold strings only")
    elif isinstance(value, (str, int, float)):  # subclasses (IntEnum, str enums…) are fine too
        if isinstance(value, float) and not math.isfinite(value):
            raise ValidationError(f"{field}[{key!r}]", "must be a finite number, not NaN or infinity")
        if isinstance(value, int) and not isinstance(value, bool) and not _MIN_INT <= value < _MAX_INT:
            raise ValidationError(f"{field}[{key!r}]", "integer out of the 64-bit range")
    else:
        raise ValidationError(
            f"{field}[{key!r}]",
            "value must be str, int, float, bool, a list of str, a datetime or a Url, "
            f"got {type(value).__name__}",
        )
    typed = _TYPED_KEY.fullmatch(key) if key.endswith(")") else None
    if typed is not None:
        if not typed.group(2):
            raise ValidationError(
                f"{field}[{key!r}]", f"the name inside {typed.group(1)}() must not be empty"
            )
        if typed.group(1) == "date" and not isinstance(value, (str, datetime)):
            raise ValidationError(f"{field}[{key!r}]", "a date(...) key needs a datetime or a string")
        if typed.group(1) == "url" and not isinstance(value, (str, Url)):
            raise ValidationError(f"{field}[{key!r}]", "a url(...) key needs a Url or a string")
        if typed.group(1) == "url" and isinstance(value, str) and not _is_url(value):
            raise ValidationError(f"{field}[{key!r}]", f"must be an http(s) URL, got {value!r}")
        if typed.group(1) == "date" and isinstance(value, str) and not _is_rfc3339(value):
            raise ValidationError(
                f"{field}[{key!r}]", f"must be an RFC 3339 date-time (2023-08-12T22:30:05Z), got {value!r}"
            )


def typed_kind(key: str) -> str | None:
    """``"date"`` or ``"url"`` when ``key`` is already written as ``date(name)`` / ``url(name)``."""
    if key.endswith(")"):
        typed = _TYPED_KEY.fullmatch(key)
        if typed is not None:
            return typed.group(1)
    return None


def check_attributes(value: object, field: str = "attributes") -> dict[str, Any] | None:
    """Validate an attribute mapping and return it as a plain ``dict`` (or ``None``)."""
    if value is None:
        return None
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(field, f"must be a mapping, got {type(value).__name__}")
    if len(value) > MAX_ATTRIBUTES:
        raise ValidationError(field, f"at most {MAX_ATTRIBUTES} entries, got {len(value)}")
    for key, item in value.items():
        if type(key) is not str or not key:
            if not isinstance(key, str) or not key:
                raise ValidationError(field, f"keys must be non-empty strings, got {key!r}")
        elif key[-1] != ")":
            # The common case inline (this runs for every attribute of every ID of an upload):
            # a plain key with a str, bool or in-range int needs no more than these checks.
            kind = type(item)
            if kind is str or kind is bool or (kind is int and _MIN_INT <= item < _MAX_INT):
                continue
        _check_value(key, item, field)
        if type(item) is Url or isinstance(item, datetime):
            marker = "url" if type(item) is Url else "date"
            twin = f"{marker}({key})"
            if typed_kind(key) is None and twin in value:
                # Both would go out under the same key, and one value would be lost.
                raise ValidationError(field, f"{key!r} and {twin!r} name the same attribute; keep one")
    return dict(value)


_isfinite: Final = math.isfinite
_ADD: Final = Action.ADD


def _attributes_field(value: object) -> dict[str, Any] | None:
    """The ``attributes`` converter: :func:`check_attributes`, with the common case inline.

    The loop is the common case of a bulk body (a plain dict, plain keys, values that pass their
    checks on the spot): it proves the map valid in one pass and raises nothing. Anything else
    goes through :func:`check_attributes` in full, so every error is the one it raises.
    """
    if value is None:
        return None
    if type(value) is dict and len(value) <= MAX_ATTRIBUTES:
        for key, item in value.items():
            kind = type(item)
            if not (
                type(key) is str and key and key[-1] != ")" and (
                    kind is str or kind is bool or (kind is int and _MIN_INT <= item < _MAX_INT)
                    or (kind is float and _isfinite(item))
                )
            ):
                break
        else:
            # A copy: the caller's dict may change after the item is built.
            return value.copy()
    return check_attributes(value)


def _to_action(value: object) -> Action:
    if type(value) is Action:  # calling the enum costs more than all the other checks of an ID
        return value
    try:
        return Action(value)
    except ValueError:
        raise ValidationError("action", f"must be 'add' or 'remove', got {value!r}") from None


def plain_id(value: str) -> str:
    """``value`` as an exact ``str`` when it is a subclass of one (a ``str``-based Enum, say):
    ``str()`` of such an Enum member is ``"Plan.PRO"`` and its hash is its name's, while the ID
    it stands for, the one JSON carries, is its value ``"pro"``. Anything else as it is, for
    the ID's check to refuse (typed ``str`` so the models' signatures stay ``id: str``)."""
    if type(value) is not str and isinstance(value, str):
        return str.__str__(value)  # the string data itself, whatever the subclass's __str__
    return value


def _id_field(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if type(value) is not str or not value or value.isspace() or len(value) > MAX_ID_LENGTH:
        check_id(value)


def _no_attributes_on_remove(
    instance: IdAction, attribute: attrs.Attribute[dict[str, Any] | None], value: dict[str, Any] | None
) -> None:
    if value and instance.action is Action.REMOVE:
        raise ValidationError("attributes", "are allowed only with action 'add', not on a remove")


_new_object: Final = object.__new__


@attrs.frozen(eq=True, hash=False)
class IdAction:
    """One line of an update: add an ID (with attributes) or remove it.

    >>> from batch_audiences import IdAction
    >>> IdAction.add("user-1", {"plan": "pro"}).action.value
    'add'
    >>> IdAction.remove("user-2").attributes is None
    True
    """

    id: str = attrs.field(converter=plain_id, validator=_id_field)
    action: Action = attrs.field(default=Action.ADD, converter=_to_action)
    attributes: dict[str, Any] | None = attrs.field(
        default=None, converter=_attributes_field, validator=_no_attributes_on_remove
    )

    @classmethod
    def add(cls, id: str, attributes: Attributes | None = None) -> IdAction:
        """Add ``id`` to the audience, with optional attributes."""
        if cls is IdAction and type(id) is str and id and len(id) <= MAX_ID_LENGTH and (
            not id.isspace()
        ):
            # The call a bulk body makes 10,000 times. When the ID passes ``_id_field`` as it
            # stands and the attributes pass ``_attributes_field``'s common case, the instance is
            # made from what those checks proved, without running them a second time through
            # ``__init__``. Anything else goes through ``__init__``: the same checks, the same
            # errors. (An add carries no ``_no_attributes_on_remove`` risk.)
            if attributes is None:
                checked = None
            elif type(attributes) is dict and len(attributes) <= MAX_ATTRIBUTES:
                for key, item in attributes.items():
                    kind = type(item)
                    if not (
                        type(key) is str and key and key[-1] != ")" and (
                            kind is str or kind is bool or (kind is int and _MIN_INT <= item < _MAX_INT)
                            or (kind is float and _isfinite(item))
                        )
                    ):
                        return cls(id, Action.ADD, attributes)
                checked = attributes.copy()  # as the converter: the caller's dict may change
            else:
                return cls(id, Action.ADD, attributes)
            self = _new_object(cls)
            _set_id(self, id)
            _set_action(self, _ADD)
            _set_attributes(self, checked)
            return self
        return cls(id, Action.ADD, attributes)

    @classmethod
    def remove(cls, id: str) -> IdAction:
        """Remove ``id`` from the audience."""
        return cls(id, Action.REMOVE)


# For IdAction.add's common case (an instance made from values already checked): the slots'
# own setters, as attrs' ``__init__`` sets a frozen class's fields (``object.__setattr__``
# looks the slot up by name and checks its arguments on every call: three times the cost).
_set_id: Final = IdAction.__dict__["id"].__set__
_set_action: Final = IdAction.__dict__["action"].__set__
_set_attributes: Final = IdAction.__dict__["attributes"].__set__


@attrs.frozen(eq=True, hash=False)
class Member:
    """One member of a replace: an ID and its optional attributes.

    >>> from batch_audiences import Member
    >>> Member("user-1", {"score": 3}).id
    'user-1'
    """

    id: str = attrs.field(converter=plain_id, validator=_id_field)
    attributes: dict[str, Any] | None = attrs.field(default=None, converter=_attributes_field)


def _check_count(items: Sequence[object], field: str, minimum: int) -> None:
    if not minimum <= len(items) <= MAX_IDS_PER_REQUEST:
        raise ValidationError(
            field, f"needs {minimum} to {MAX_IDS_PER_REQUEST:,} items per request, got {len(items):,}"
        )


_SequenceValidator = Callable[[object, "attrs.Attribute[Sequence[object]]", Sequence[object]], None]


def _count_of_ids(minimum: int) -> _SequenceValidator:
    """A field validator: ``minimum`` to ``MAX_IDS_PER_REQUEST`` items (a request body's ``ids``)."""

    def validate(
        instance: object, attribute: attrs.Attribute[Sequence[object]], value: Sequence[object]
    ) -> None:
        _check_count(value, attribute.name, minimum)

    return validate


def _name_field(instance: object, attribute: attrs.Attribute[str], value: object) -> None:
    check_name(value, attribute.name)


def _display_name(instance: object, attribute: attrs.Attribute[str | None], value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ValidationError("display_name", f"must be a string, got {type(value).__name__}")


def _audience_type(value: object) -> AudienceType:
    if type(value) is AudienceType:
        return value
    try:
        return AudienceType(value)
    except ValueError:
        raise ValidationError("type", f"must be 'custom_ids', got {value!r}") from None


@attrs.frozen
class NewAudience:
    """An audience to create, for :meth:`create_many`.

    >>> from batch_audiences import NewAudience
    >>> NewAudience("vip", display_name="VIP customers").name
    'vip'
    """

    name: str = attrs.field(validator=_name_field)
    display_name: str | None = attrs.field(default=None, validator=_display_name)
    type: AudienceType = attrs.field(default=AudienceType.CUSTOM_IDS, converter=_audience_type)


# The request models. Items are normalized to their model class here, once, so the codec can
# trust them and encode without checking again.


@attrs.frozen
class CreateRequest:
    """Body of ``POST /audiences/create``."""

    name: str = attrs.field(validator=_name_field)
    type: AudienceType = attrs.field(default=AudienceType.CUSTOM_IDS, converter=_audience_type)
    display_name: str | None = attrs.field(default=None, validator=_display_name)


def _to_actions(items: Iterable[IdAction]) -> tuple[IdAction, ...]:
    actions = tuple(items)
    if list(map(type, actions)).count(IdAction) == len(actions):  # a pass in C; the loop finds the culprit
        return actions
    for index, item in enumerate(actions):
        if type(item) is not IdAction:
            raise ValidationError(
                f"ids[{index}]", f"must be an IdAction, got {type(item).__name__}"
            )
    return actions


def _to_members(items: Iterable[Member | str]) -> tuple[Member, ...]:
    members = []
    for index, item in enumerate(items):
        if type(item) is Member:
            members.append(item)
        elif isinstance(item, str):
            members.append(Member(check_id(item, f"ids[{index}]")))
        else:
            raise ValidationError(
                f"ids[{index}]", f"must be a Member or a str ID, got {type(item).__name__}"
            )
    return tuple(members)


@attrs.frozen
class UpdateRequest:
    """Body of ``POST /audiences/update``: 1 to 10,000 actions."""

    name: str = attrs.field(validator=_name_field)
    ids: tuple[IdAction, ...] = attrs.field(converter=_to_actions, validator=_count_of_ids(1))


@attrs.frozen
class ReplaceRequest:
    """Body of ``POST /audiences/replace``: 0 to 10,000 members."""

    name: str = attrs.field(validator=_name_field)
    ids: tuple[Member, ...] = attrs.field(converter=_to_members, validator=_count_of_ids(0))


# Responses. They are parsed tolerantly (see the codec): an enum value this SDK does not know
# yet stays a plain string rather than breaking a listing of thousands of audiences.


@attrs.frozen
class Accepted:
    """The answer to a write: the token to follow its indexing with.

    ``indexing_token`` is ``None`` when the server sent no body or one the SDK cannot read (the
    success status says the write happened), or when the answer was lost and the outcome was
    judged from the state: ``confirmation`` says which (:class:`Confirmation`). ``status`` and
    ``headers`` are those of the answer (say, to log a request ID); ``None`` and empty when no
    answer of its own settled the write. Neither takes part in ``==``.
    """

    indexing_token: str | None = None
    status: int | None = attrs.field(default=None, eq=False)
    headers: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)
    confirmation: Confirmation = attrs.field(default=Confirmation.ANSWERED, kw_only=True)


@attrs.frozen
class Audience:
    """An audience as ``view`` and ``list`` describe it."""

    name: str
    display_name: str | None
    type: AudienceType | str
    nb_ids: int
    indexing_state: IndexingState | str
    created: datetime | None
    updated: datetime | None

    @property
    def is_indexing(self) -> bool:
        """True while the write in question is still being indexed."""
        return self.indexing_state == IndexingState.IN_PROGRESS


@attrs.frozen
class AudiencePage:
    """One page of ``list``; pass ``next_from`` as ``cursor`` for the next one."""

    audiences: tuple[Audience, ...]
    has_more: bool
    next_from: str | None = None
    count: int | None = None
