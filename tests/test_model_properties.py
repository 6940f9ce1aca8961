"""Property tests of the models, validation and the request encoder.

The rule under test (issue 6): whatever a caller passes — names, IDs, attribute keys and values —
either the model refuses it with :class:`ValidationError`, or it is accepted and then

- the request body the codec writes is exactly the expected wire form (checked against an oracle
  written here, independently of the codec), nothing dropped, nothing renamed by accident;
- the emulator's request validator (written from the API reference, sharing no code with the
  SDK) accepts that body: what the SDK lets through, the API takes.

No other exception may come out, from the models or from ``encode``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batch_audiences import (
    MAX_ATTRIBUTES,
    MAX_IDS_PER_REQUEST,
    Accepted,
    Action,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    IndexingState,
    Member,
    NewAudience,
    Url,
    ValidationError,
)
from batch_audiences._codec import decode, encode, encode_create
from batch_audiences._models import CreateRequest, ReplaceRequest, UpdateRequest
from batch_audiences.testing._errors import ApiError
from batch_audiences.testing._validation import parse_create, parse_replace, parse_update

from ._compat import fromisoformat

T = TypeVar("T")

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

NAME_RULE = re.compile(r"[A-Za-z0-9_-]{1,255}")
TYPED_KEY = re.compile(r"(date|url)\((.+)\)", re.DOTALL)

# -- strategies --------------------------------------------------------------------------------

# Lone surrogates are valid Python strings but cannot be encoded as UTF-8 JSON.
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
ANY_TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.one_of(st.characters(), SURROGATES), max_size=8),
    st.sampled_from(["", " ", "\t\n", "\x00", "é", "user-1", "a" * 300]),
)

NAMES = st.one_of(
    st.from_regex(NAME_RULE, fullmatch=True),
    ANY_TEXT,
    st.text(alphabet="abcXYZ019_- .", min_size=0, max_size=260),
    st.integers(),
    st.none(),
    st.binary(max_size=5),
)

VALID_IDS = st.text(min_size=1, max_size=40).filter(lambda s: not s.isspace())
ANY_IDS = st.one_of(VALID_IDS, ANY_TEXT, st.integers(), st.none(), st.binary(max_size=4), st.floats())

_DAY = timedelta(hours=23, minutes=59)
OFFSETS = st.builds(timezone, st.timedeltas(min_value=-_DAY, max_value=_DAY))
# Away from the ends of the calendar, where converting to UTC cannot overflow.
VALID_DATETIMES = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.one_of(st.just(timezone.utc), OFFSETS),
)
ANY_DATETIMES = st.datetimes(timezones=st.one_of(st.none(), st.just(timezone.utc), OFFSETS))
URL_TEXT = st.from_regex(
    r"https?://[a-z0-9-]{1,12}(\.[a-z]{2,4})?(/[A-Za-z0-9._~%-]{0,8}){0,3}", fullmatch=True
)
RFC3339_TEXT = st.builds(
    lambda moment: moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
)


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


VALID_VALUES = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.lists(st.text(max_size=10), max_size=4),
    st.lists(st.text(max_size=10), max_size=4).map(tuple),
    VALID_DATETIMES,
    URL_TEXT.map(Url),
    st.sampled_from([Colour.RED, Level.HIGH]),
)
ANY_VALUES = st.one_of(
    VALID_VALUES,
    ANY_TEXT,
    st.integers(),
    st.floats(),
    ANY_DATETIMES,
    st.lists(st.one_of(st.text(max_size=3), st.integers(), st.none()), max_size=3),
    st.none(),
    st.binary(max_size=4),
    st.dates(),
    st.decimals(allow_nan=True),
    st.complex_numbers(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.frozensets(st.text(max_size=3), max_size=2),
    URL_TEXT,
    RFC3339_TEXT,
)

PLAIN_KEYS = st.text(min_size=1, max_size=20).filter(lambda k: TYPED_KEY.fullmatch(k) is None)
TYPED_KEYS = st.builds(lambda kind, inner: f"{kind}({inner})", st.sampled_from(["date", "url"]), PLAIN_KEYS)
ANY_KEYS = st.one_of(
    PLAIN_KEYS,
    TYPED_KEYS,
    ANY_TEXT,
    st.sampled_from(["date()", "url()", "date(x", "url(x", "date(\n)", "(date)", "date(date(x))"]),
    st.integers(),
    st.none(),
)


@st.composite
def valid_attributes(draw: st.DrawFn) -> dict[str, Any]:
    """Attribute maps that the API accepts, so the SDK must too."""
    attributes: dict[str, Any] = draw(st.dictionaries(PLAIN_KEYS, VALID_VALUES, max_size=MAX_ATTRIBUTES - 2))
    # Keys the caller already typed pass through with a value of the matching kind.
    if draw(st.booleans()):
        attributes[f"date({draw(PLAIN_KEYS)})"] = draw(st.one_of(VALID_DATETIMES, RFC3339_TEXT))
    if draw(st.booleans()):
        attributes[f"url({draw(PLAIN_KEYS)})"] = draw(st.one_of(URL_TEXT, URL_TEXT.map(Url)))
    # Two keys that end up as the same wire key would lose one value; keep them apart here.
    wire = [wire_key(k, v) for k, v in attributes.items()]
    if len(set(wire)) != len(wire):
        attributes = {k: v for k, v in attributes.items() if wire_key(k, v) == k}
    return attributes


@st.composite
def any_attributes(draw: st.DrawFn) -> object:
    """Anything a careless caller might pass as attributes."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(st.one_of(st.none(), st.text(max_size=3), st.lists(st.integers(), max_size=2)))
    if kind == 1:
        # Over the limit of entries.
        return {f"k{i}": i for i in range(draw(st.integers(MAX_ATTRIBUTES + 1, MAX_ATTRIBUTES + 3)))}
    if kind == 2:
        # A plain key and its typed twin: both would become the same wire key.
        key = draw(PLAIN_KEYS)
        kind_name, value = draw(
            st.one_of(
                st.tuples(st.just("date"), VALID_DATETIMES), st.tuples(st.just("url"), URL_TEXT.map(Url))
            )
        )
        other = draw(st.one_of(RFC3339_TEXT, URL_TEXT))
        return {key: value, f"{kind_name}({key})": other}
    if kind == 3:
        return draw(valid_attributes())
    return draw(st.dictionaries(ANY_KEYS, ANY_VALUES, max_size=4))


# -- the oracle: the wire form, written from the API reference ---------------------------------


def wire_key(key: str, value: object) -> str:
    """The key a value is sent under: dates and URLs are marked in the key."""
    typed = TYPED_KEY.fullmatch(key)
    if isinstance(value, datetime):
        return key if typed is not None and typed.group(1) == "date" else f"date({key})"
    if isinstance(value, Url):
        return key if typed is not None and typed.group(1) == "url" else f"url({key})"
    return key


def check_wire_value(sent: object, value: object) -> None:
    """``sent`` (parsed back from the JSON body) is what ``value`` must look like on the wire."""
    if isinstance(value, datetime):
        assert isinstance(sent, str)
        assert sent.endswith("Z"), f"dates are sent in UTC with a Z: {sent!r}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z", sent), sent
        assert fromisoformat(sent[:-1] + "+00:00") == value
    elif isinstance(value, Url):
        assert sent == value.value
    elif isinstance(value, (list, tuple)):
        assert sent == list(value)
        assert all(type(item) is str for item in sent)  # type: ignore[union-attr]
    elif isinstance(value, bool):
        assert sent is value
    elif isinstance(value, int):
        assert type(sent) is int
        assert sent == value
    elif isinstance(value, float):
        assert type(sent) is float
        assert sent == value
        assert math.copysign(1.0, sent) == math.copysign(1.0, value)
    elif isinstance(value, str):
        assert type(sent) is str
        assert sent == value
    else:  # pragma: no cover - the SDK accepted a value of a type the API does not know
        pytest.fail(f"the SDK accepted a {type(value).__name__} attribute: {value!r}")


def check_wire_attributes(sent: object, attributes: Mapping[str, Any] | None) -> None:
    if not attributes:
        assert sent is None, "empty or missing attributes are omitted, never sent as {} or null"
        return
    assert isinstance(sent, dict)
    expected_keys = [wire_key(k, v) for k, v in attributes.items()]
    assert sorted(sent) == sorted(expected_keys), "an attribute was lost or renamed"
    for key, value in attributes.items():
        check_wire_value(sent[wire_key(key, value)], value)


def body_of(request: object) -> dict[str, Any]:
    data = orjson.loads(encode(request))
    assert isinstance(data, dict)
    return data


def attempt(build: Callable[[], T]) -> T | ValidationError:
    """What ``build`` returns, or the ValidationError it raised (any other exception propagates)."""
    try:
        return build()
    except ValidationError as error:
        return error


# -- names and create --------------------------------------------------------------------------


@SETTINGS
@given(name=NAMES, display_name=st.one_of(st.none(), ANY_TEXT, st.integers()))
def test_create_request_validates_or_encodes_exactly(name: object, display_name: object) -> None:
    body = attempt(lambda: body_of(CreateRequest(name, display_name=display_name)))  # type: ignore[arg-type]
    if isinstance(body, ValidationError):
        assert body.field in {"name", "display_name"}
        name_ok = isinstance(name, str) and NAME_RULE.fullmatch(name) is not None
        display_ok = display_name is None or isinstance(display_name, str)
        assert not (name_ok and display_ok and _utf8(display_name)), f"a valid create was refused: {body}"
        return
    assert isinstance(name, str)
    assert NAME_RULE.fullmatch(name), f"an invalid name was accepted: {name!r}"
    expected: dict[str, Any] = {"name": name, "type": "custom_ids"}
    if display_name is not None:
        expected["display_name"] = display_name
    assert body == expected
    assert parse_create(body) == (name, display_name)


class NameStr(str):
    """A str subclass: the client's quick road for creates takes exact str only."""


@SETTINGS
@given(
    name=st.one_of(NAMES, NAMES.filter(lambda n: isinstance(n, str)).map(NameStr)),
    kind=st.one_of(st.just(AudienceType.CUSTOM_IDS), st.just("custom_ids"), ANY_TEXT),
    display_name=st.one_of(st.none(), st.none(), ANY_TEXT, st.integers()),
)
def test_the_create_body_is_the_models_byte_for_byte(
    name: object, kind: object, display_name: object
) -> None:
    # encode_create writes the common create by hand: the same bytes as the model's road, or
    # the same refusal, whatever the arguments.
    quick = attempt(lambda: encode_create(name, kind, display_name))
    model = attempt(lambda: encode(CreateRequest(name, kind, display_name)))  # type: ignore[arg-type]
    if isinstance(model, ValidationError):
        assert isinstance(quick, ValidationError), f"refused by the model, sent by encode_create: {quick!r}"
        assert (quick.field, str(quick)) == (model.field, str(model))
    else:
        assert quick == model


@SETTINGS
@given(name=NAMES, display_name=st.one_of(st.none(), st.text(max_size=10)))
def test_new_audience_validates_like_create(name: object, display_name: str | None) -> None:
    audience = attempt(lambda: NewAudience(name, display_name))  # type: ignore[arg-type]
    if isinstance(audience, ValidationError):
        assert audience.field == "name"
        assert not (isinstance(name, str) and NAME_RULE.fullmatch(name))
        return
    assert isinstance(name, str)
    assert NAME_RULE.fullmatch(name)
    assert (audience.name, audience.display_name) == (name, display_name)


def _utf8(text: object) -> bool:
    if not isinstance(text, str):
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- ids, actions and attributes ---------------------------------------------------------------


@SETTINGS
@given(
    items=st.lists(
        st.tuples(
            VALID_IDS, st.sampled_from([Action.ADD, Action.REMOVE]), st.one_of(st.none(), valid_attributes())
        ),
        min_size=1,
        max_size=6,
    )
)
def test_valid_updates_round_trip_to_the_wire_form(
    items: list[tuple[str, Action, dict[str, Any] | None]],
) -> None:
    actions = []
    for id_, action, attributes in items:
        if action is Action.REMOVE:
            actions.append(IdAction.remove(id_))
        else:
            made = IdAction.add(id_, attributes)
            assert made.attributes == attributes, "the model must keep the attributes as given"
            actions.append(made)
    body = body_of(UpdateRequest("audience", actions))
    assert body["name"] == "audience"
    assert len(body["ids"]) == len(items)
    for sent, (id_, action, attributes) in zip(body["ids"], items, strict=True):
        assert sent["id"] == id_
        assert sent["action"] == action.value
        check_wire_attributes(sent.get("attributes"), attributes if action is Action.ADD else None)
        assert set(sent) <= {"id", "action", "attributes"}
    parse_update(body)  # the API's validator takes it (raises ApiError otherwise)


@SETTINGS
@given(
    members=st.lists(
        st.one_of(VALID_IDS, st.tuples(VALID_IDS, st.one_of(st.none(), valid_attributes()))), max_size=6
    )
)
def test_valid_replaces_round_trip_to_the_wire_form(
    members: list[str | tuple[str, dict[str, Any] | None]],
) -> None:
    given_items = [m if isinstance(m, str) else Member(m[0], m[1]) for m in members]
    body = body_of(ReplaceRequest("audience", given_items))
    assert len(body["ids"]) == len(members)
    for sent, member in zip(body["ids"], members, strict=True):
        id_, attributes = (member, None) if isinstance(member, str) else member
        assert sent["id"] == id_
        check_wire_attributes(sent.get("attributes"), attributes)
        assert set(sent) <= {"id", "attributes"}
    parse_replace(body)


@SETTINGS
@given(
    id_=ANY_IDS,
    action=st.one_of(st.sampled_from(["add", "remove", Action.ADD]), ANY_TEXT),
    attributes=any_attributes(),
)
def test_any_update_item_validates_or_is_accepted_by_the_api(
    id_: object, action: object, attributes: object
) -> None:
    body = attempt(
        lambda: body_of(UpdateRequest("audience", [IdAction(id_, action, attributes)]))  # type: ignore[arg-type]
    )
    if isinstance(body, ValidationError):
        assert body.field
        assert body.rule
        return
    assert isinstance(id_, str), f"a non-string ID was accepted: {id_!r}"
    assert id_.strip(), f"a blank ID was accepted: {id_!r}"
    assert isinstance(attributes, Mapping) or attributes is None
    sent = body["ids"][0]
    assert sent["id"] == id_
    assert sent["action"] == Action(action).value
    check_wire_attributes(sent.get("attributes"), attributes)
    try:
        parse_update(body)
    except ApiError as error:
        pytest.fail(f"the SDK accepted what the API refuses: {error.body()}")


@SETTINGS
@given(id_=ANY_IDS, attributes=any_attributes())
def test_any_member_validates_or_is_accepted_by_the_api(id_: object, attributes: object) -> None:
    body = attempt(lambda: body_of(ReplaceRequest("audience", [Member(id_, attributes)])))  # type: ignore[arg-type]
    if isinstance(body, ValidationError):
        assert body.field
        assert body.rule
        return
    assert isinstance(id_, str)
    assert id_.strip()
    check_wire_attributes(body["ids"][0].get("attributes"), attributes)  # type: ignore[arg-type]
    try:
        parse_replace(body)
    except ApiError as error:
        pytest.fail(f"the SDK accepted what the API refuses: {error.body()}")


@SETTINGS
@given(items=st.lists(st.one_of(VALID_IDS, ANY_IDS, st.builds(Member, VALID_IDS)), max_size=5))
def test_replace_members_are_members_or_ids(items: list[object]) -> None:
    body = attempt(lambda: body_of(ReplaceRequest("audience", items)))  # type: ignore[arg-type]
    if isinstance(body, ValidationError):
        assert body.field.startswith("ids[")
        return
    assert [m["id"] for m in body["ids"]] == [i.id if isinstance(i, Member) else i for i in items]


@SETTINGS
@given(value=st.one_of(ANY_TEXT, URL_TEXT, st.integers(), st.none()))
def test_url_marker_validates_or_holds_an_http_url(value: object) -> None:
    try:
        url = Url(value)  # type: ignore[arg-type]
        body = body_of(UpdateRequest("a", [IdAction.add("u", {"site": url})]))
    except ValidationError:
        return
    assert isinstance(value, str)
    assert body["ids"][0]["attributes"] == {"url(site)": value}
    parse_update(body)


# -- fixed edge cases the properties above might draw too rarely -------------------------------


@pytest.mark.parametrize(
    "attributes",
    [
        {"x": datetime(2020, 1, 1, tzinfo=timezone.utc), "date(x)": "2021-01-01T00:00:00Z"},
        {"x": Url("https://a.example"), "url(x)": "https://b.example"},
        {"date()": "2021-01-01T00:00:00Z"},
        {"url()": "https://a.example"},
        {"date(signup)": "yesterday"},
        {"when": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))},
        {"when": datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5)))},
        {"when": datetime(2020, 1, 1)},
        {"when": date(2020, 1, 1)},
        {"n": 2**64},
        {"n": -(2**63) - 1},
        {"n": float("nan")},
        {"n": float("-inf")},
        {"n": Decimal("1.5")},
        {"tags": ["a", 1]},
        {"tags": {"a"}},
        {"": "empty key"},
        {1: "int key"},
        {"bad\ud800": "surrogate in a key"},
        {"k": "surrogate \udfff in a value"},
        {"k": ["surrogate \udfff in a list"]},
        {f"k{i}": i for i in range(MAX_ATTRIBUTES + 1)},
    ],
    ids=lambda a: repr(a)[:40],
)
def test_attributes_the_api_refuses_raise_validation_error(attributes: dict[Any, Any]) -> None:
    with pytest.raises(ValidationError):
        encode(UpdateRequest("a", [IdAction.add("u1", attributes)]))


@pytest.mark.parametrize("id_", ["", "   ", "\t", None, 5, b"u1", "surrogate\ud800"])
def test_bad_ids_raise_validation_error(id_: object) -> None:
    with pytest.raises(ValidationError):
        encode(UpdateRequest("a", [IdAction.add(id_)]))  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        encode(ReplaceRequest("a", [id_]))  # type: ignore[list-item]


def test_surrogates_in_a_display_name_raise_validation_error() -> None:
    with pytest.raises(ValidationError, match="display_name"):
        encode(CreateRequest("a", display_name="bad \ud800"))


def test_dates_keep_four_digit_years_and_fractions() -> None:
    early = datetime(5, 3, 4, 1, 2, 3, 450000, tzinfo=timezone.utc)
    body = body_of(UpdateRequest("a", [IdAction.add("u", {"d": early})]))
    assert body["ids"][0]["attributes"] == {"date(d)": "0005-03-04T01:02:03.45Z"}
    parse_update(body)


def test_request_sizes_are_bounded() -> None:
    with pytest.raises(ValidationError, match="ids"):
        UpdateRequest("a", [])
    with pytest.raises(ValidationError, match="ids"):
        UpdateRequest("a", [IdAction.add("u")] * (MAX_IDS_PER_REQUEST + 1))
    with pytest.raises(ValidationError, match="ids"):
        ReplaceRequest("a", ["u"] * (MAX_IDS_PER_REQUEST + 1))
    assert len(body_of(ReplaceRequest("a", []))["ids"]) == 0
    largest = UpdateRequest("a", [IdAction.remove("u")] * MAX_IDS_PER_REQUEST)
    assert len(body_of(largest)["ids"]) == MAX_IDS_PER_REQUEST


def test_remove_with_attributes_is_refused() -> None:
    with pytest.raises(ValidationError, match="attributes"):
        IdAction("u", Action.REMOVE, {"a": 1})


# -- responses: what the API sends round-trips into the models ---------------------------------

STATES = st.one_of(st.sampled_from([s.value for s in IndexingState]), st.text(min_size=1, max_size=12))
TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)).map(
    lambda d: d.replace(microsecond=0, tzinfo=timezone.utc)
)


@st.composite
def audience_objects(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A view object as the API sends it, and the fields the model must hold."""
    created, updated = draw(TIMES), draw(TIMES)
    wire: dict[str, Any] = {
        "name": draw(st.from_regex(NAME_RULE, fullmatch=True)),
        "display_name": draw(st.one_of(st.none(), st.text(max_size=20))),
        "type": draw(st.sampled_from(["CUSTOM_ID", "custom_ids", "SOMETHING_NEW"])),
        "nb_ids": draw(st.integers(0, 2**63 - 1)),
        "indexing_state": draw(STATES),
        "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "updated": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if wire["display_name"] is None:
        del wire["display_name"]
    expected = dict(wire, created=created, updated=updated, display_name=wire.get("display_name"))
    return wire, expected


@SETTINGS
@given(audience=audience_objects())
def test_view_objects_decode_into_audiences(audience: tuple[dict[str, Any], dict[str, Any]]) -> None:
    wire, expected = audience
    parsed = decode(orjson.dumps(wire), Audience, status=200, method="GET", route="/audiences/view")
    assert parsed.name == expected["name"]
    assert parsed.display_name == expected["display_name"]
    assert parsed.nb_ids == expected["nb_ids"]
    assert parsed.created == expected["created"]
    assert parsed.updated == expected["updated"]
    assert parsed.indexing_state == expected["indexing_state"]  # known states are str enums
    if expected["type"] in ("CUSTOM_ID", "custom_ids"):
        assert parsed.type == "custom_ids"
    else:
        assert parsed.type == expected["type"]


@SETTINGS
@given(
    audiences=st.lists(audience_objects(), max_size=5),
    has_more=st.booleans(),
    cursor=st.text(min_size=1, max_size=10),
    count=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_list_pages_decode_with_every_audience(
    audiences: list[tuple[dict[str, Any], dict[str, Any]]], has_more: bool, cursor: str, count: int | None
) -> None:
    wire: dict[str, Any] = {"audiences": [a for a, _ in audiences], "has_more": has_more}
    if has_more:
        wire["next_from"] = cursor
    if count is not None:
        wire["count"] = count
    page = decode(orjson.dumps(wire), AudiencePage, status=200, method="GET", route="/audiences/list")
    assert [a.name for a in page.audiences] == [e["name"] for _, e in audiences]
    assert page.has_more is has_more
    assert page.next_from == (cursor if has_more else None)
    assert page.count == count


@SETTINGS
@given(token=st.text(max_size=40))
def test_accepted_keeps_the_token(token: str) -> None:
    body = orjson.dumps({"indexing_token": token})
    accepted = decode(body, Accepted, status=202, method="POST", route="/x")
    assert accepted == Accepted(token)
