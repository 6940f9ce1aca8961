"""The codec: request bodies (attribute encoding, omitted ``None``) and tolerant/strict parsing."""

from __future__ import annotations

import enum
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from batch_audiences import (
    Accepted,
    Audience,
    AudiencePage,
    AudienceType,
    IdAction,
    IndexingState,
    Member,
    UnexpectedResponseError,
    Url,
)
from batch_audiences._codec import decode, encode, encode_attributes, format_datetime
from batch_audiences._models import CreateRequest, ReplaceRequest, UpdateRequest
from batch_audiences.testing import Emulator

from .conftest import Api

UTC = timezone.utc
PARIS_SUMMER = timezone(timedelta(hours=2))


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def body(request: object) -> Any:
    return orjson.loads(encode(request))


# -- dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2023, 8, 12, 22, 30, 5, tzinfo=UTC), "2023-08-12T22:30:05Z"),
        (datetime(2023, 8, 13, 0, 30, 5, tzinfo=PARIS_SUMMER), "2023-08-12T22:30:05Z"),
        (datetime(2023, 8, 12, 22, 30, 5, 250000, tzinfo=UTC), "2023-08-12T22:30:05.25Z"),
        (datetime(2023, 8, 12, 22, 30, 5, 1, tzinfo=UTC), "2023-08-12T22:30:05.000001Z"),
    ],
)
def test_format_datetime_is_rfc3339_utc(moment: datetime, text: str) -> None:
    assert format_datetime(moment) == text


# -- attributes ------------------------------------------------------------------------------


def test_plain_attributes_go_out_unchanged() -> None:
    plain = {"s": "x", "i": 1, "f": 1.5, "b": False}
    assert encode_attributes(plain) == plain


def test_typed_attributes_are_encoded_in_the_key() -> None:
    encoded = encode_attributes(
        {
            "signup": datetime(2023, 8, 13, 0, 30, 5, tzinfo=PARIS_SUMMER),
            "avatar": Url("https://example.com/a.png"),
            "tags": ("a", "b"),
            "date(seen)": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
            "url(home)": Url("https://example.com"),
            "date(raw)": "2020-01-01T00:00:00Z",
            "url(raw)": "https://example.org/x",
            "color": Color.RED,
            "level": Level.HIGH,
        }
    )
    assert encoded == {
        "date(signup)": "2023-08-12T22:30:05Z",
        "url(avatar)": "https://example.com/a.png",
        "tags": ["a", "b"],
        "date(seen)": "2024-01-02T03:04:05Z",
        "url(home)": "https://example.com",
        "date(raw)": "2020-01-01T00:00:00Z",
        "url(raw)": "https://example.org/x",
        "color": "red",
        "level": 3,
    }
    # Enum members became their plain values, so the JSON is what the API expects.
    assert type(encoded["color"]) is str
    assert type(encoded["level"]) is int


def test_encoding_does_not_change_the_model() -> None:
    when = datetime(2024, 1, 1, tzinfo=UTC)
    action = IdAction.add("u1", {"when": when})
    body(UpdateRequest("vip", [action]))
    assert action.attributes == {"when": when}


# -- request bodies --------------------------------------------------------------------------


def test_create_body_omits_none_display_name() -> None:
    assert body(CreateRequest("vip")) == {"name": "vip", "type": "custom_ids"}
    assert body(CreateRequest("vip", display_name="VIP")) == {
        "name": "vip", "type": "custom_ids", "display_name": "VIP",
    }


def test_update_body() -> None:
    request = UpdateRequest(
        "vip", [IdAction.add("u1", {"n": 1}), IdAction.add("u2"), IdAction.remove("u3")]
    )
    assert body(request) == {
        "name": "vip",
        "ids": [
            {"action": "add", "id": "u1", "attributes": {"n": 1}},
            {"action": "add", "id": "u2"},
            {"action": "remove", "id": "u3"},
        ],
    }


def test_replace_body() -> None:
    request = ReplaceRequest("vip", ["u1", Member("u2", {"avatar": Url("https://e.com/a")})])
    assert body(request) == {
        "name": "vip",
        "ids": [{"id": "u1"}, {"id": "u2", "attributes": {"url(avatar)": "https://e.com/a"}}],
    }
    assert body(ReplaceRequest("vip", [])) == {"name": "vip", "ids": []}


# -- parsing answers -------------------------------------------------------------------------

VIEW = {
    "name": "vip",
    "display_name": "VIP",
    "type": "CUSTOM_ID",
    "nb_ids": 3,
    "indexing_state": "APPLIED",
    "created": "2024-05-01T10:00:00Z",
    "updated": "2024-05-02T11:00:00.5+02:00",
}


def parse(data: object, cls: type[Any], raw: bytes | None = None) -> Any:
    payload = raw if raw is not None else orjson.dumps(data)
    return decode(payload, cls, status=200, method="GET", route="/audiences/view")


def test_view_answer_is_parsed() -> None:
    audience = parse(VIEW, Audience)
    assert audience == Audience(
        name="vip",
        display_name="VIP",
        type=AudienceType.CUSTOM_IDS,
        nb_ids=3,
        indexing_state=IndexingState.APPLIED,
        created=datetime(2024, 5, 1, 10, tzinfo=UTC),
        updated=datetime(2024, 5, 2, 9, 0, 0, 500000, tzinfo=UTC),
    )
    assert audience.created.tzinfo is not None
    assert audience.updated.tzinfo is not None
    assert not audience.is_indexing


def test_unknown_values_are_kept_and_missing_optionals_are_none() -> None:
    audience = parse({"name": "vip", "type": "segment", "indexing_state": "QUEUED", "nb_ids": 0}, Audience)
    assert audience.type == "segment"
    assert audience.indexing_state == "QUEUED"
    assert audience.display_name is None
    assert audience.created is None
    assert parse({**VIEW, "indexing_state": "IN_PROGRESS"}, Audience).is_indexing


def test_page_answer_is_parsed() -> None:
    first = parse({"audiences": [VIEW], "has_more": True, "next_from": "c1", "count": 7}, AudiencePage)
    assert (first.has_more, first.next_from, first.count) == (True, "c1", 7)
    assert first.audiences[0].name == "vip"
    assert isinstance(first.audiences, tuple)
    last = parse({"audiences": [], "has_more": False}, AudiencePage)
    assert (last.has_more, last.next_from, last.count) == (False, None, None)


def test_accepted_answer_is_parsed() -> None:
    assert parse({"indexing_token": "t1"}, Accepted) == Accepted("t1")
    assert parse(None, Accepted, raw=b"") == Accepted(None)
    assert parse(None, Accepted, raw=b"  \n") == Accepted(None)
    assert parse({}, Accepted) == Accepted(None)


@pytest.mark.parametrize(
    ("cls", "raw"),
    [
        (Audience, b"<html>oops</html>"),
        (Audience, b""),
        (Audience, b"[]"),
        (Audience, b'{"display_name": "no name"}'),
        (Audience, b'{"name": 5}'),
        (Audience, b'{"name": "vip", "nb_ids": "3"}'),
        (Audience, b'{"name": "vip", "nb_ids": true}'),
        (Audience, b'{"name": "vip", "indexing_state": 1}'),
        (AudiencePage, b'{"has_more": false}'),
        (AudiencePage, b'{"audiences": [1], "has_more": false}'),
        (AudiencePage, b'{"audiences": [], "has_more": "no"}'),
        (AudiencePage, b'{"audiences": [], "has_more": true}'),
        (Accepted, b"[1]"),
        (Accepted, b'{"indexing_token": 12}'),
        (Accepted, b"{not json"),
    ],
)
def test_unreadable_answers_raise_unexpected_response(cls: type[Any], raw: bytes) -> None:
    with pytest.raises(UnexpectedResponseError) as info:
        parse(None, cls, raw=raw)
    assert info.value.status == 200
    assert cls.__name__ in str(info.value)


# -- over the wire ---------------------------------------------------------------------------


async def test_attributes_reach_the_server_encoded(api: Api, emulator: Emulator) -> None:
    await api.create("vip")
    when = datetime(2023, 8, 13, 0, 30, 5, tzinfo=PARIS_SUMMER)
    await api.update(
        "vip",
        [
            IdAction.add(
                "u1",
                {
                    "signup": when,
                    "avatar": Url("https://example.com/a.png"),
                    "tags": ("a", "b"),
                    "date(seen)": when,
                    "url(home)": "https://example.com/home",
                    "date(raw)": "2020-01-01T00:00:00Z",
                    "plan": "pro",
                    "score": 2.5,
                    "visits": 3,
                    "vip": True,
                },
            ),
            IdAction.add("u2"),
        ],
    )
    emulator.settle()
    assert emulator.members("vip") == {
        "u1": {
            "date(signup)": "2023-08-12T22:30:05Z",
            "url(avatar)": "https://example.com/a.png",
            "tags": ["a", "b"],
            "date(seen)": "2023-08-12T22:30:05Z",
            "url(home)": "https://example.com/home",
            "date(raw)": "2020-01-01T00:00:00Z",
            "plan": "pro",
            "score": 2.5,
            "visits": 3,
            "vip": True,
        },
        "u2": {},
    }


async def test_replace_members_reach_the_server_encoded(api: Api, emulator: Emulator) -> None:
    emulator.add_audience("vip", ["old"])
    when = datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC)
    await api.replace("vip", ["u1", Member("u2", {"birthday": when, "site": Url("http://example.com")})])
    emulator.settle()
    assert emulator.members("vip") == {
        "u1": {},
        "u2": {"date(birthday)": "2024-02-29T23:59:59Z", "url(site)": "http://example.com"},
    }


async def test_none_optionals_are_omitted_from_requests(api: Api, emulator: Emulator) -> None:
    await api.create("vip")
    await api.create("vip2", display_name="Second")
    await api.update("vip", [IdAction.add("u1"), IdAction.remove("u2")])
    await api.replace("vip2", [Member("u3")])
    await api.view("vip")
    await api.list()
    records = emulator.requests
    assert [r.route for r in records] == ["create", "create", "update", "replace", "view", "list"]
    assert records[0].body == {"name": "vip", "type": "custom_ids"}
    assert records[1].body == {"name": "vip2", "type": "custom_ids", "display_name": "Second"}
    assert records[2].body == {
        "name": "vip", "ids": [{"action": "add", "id": "u1"}, {"action": "remove", "id": "u2"}],
    }
    assert records[3].body == {"name": "vip2", "ids": [{"id": "u3"}]}
    assert records[4].query == {"name": "vip"}
    assert records[5].query == {"limit": "10"}
    for record in records[:4]:
        assert b"null" not in orjson.dumps(record.body)


class _Color(str, enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


class _Name(str):
    pass


@pytest.mark.parametrize(
    "attributes",
    [
        None,
        {"plan": "pro", "score": 3, "vip": True, "ratio": 0.5},
        {"seen": datetime(2024, 5, 1, 12, 0, tzinfo=PARIS_SUMMER)},
        {"date(seen)": datetime(2024, 5, 1, tzinfo=UTC), "plan": "pro"},
        {"site": Url("https://example.com/a")},
        {"tags": ("a", "b"), "more": ["c"]},
        {"tags": [_Name("a")]},
        {"color": _Color.RED, "level": _Level.HIGH},
        {"name": _Name("subclass")},
    ],
)
def test_bulk_bodies_tried_as_they_are_match_the_reshaped_body(attributes: dict[str, Any] | None) -> None:
    # encode() tries the attribute maps as the models hold them first; whatever the values,
    # the bytes must be those of the body built with every map reshaped.
    from batch_audiences._codec import _unstructure_replace, _unstructure_update

    update = UpdateRequest("n", [IdAction.add("a", attributes), IdAction.remove("b")])
    replace = ReplaceRequest("n", [Member("a", attributes), Member("b")])
    assert encode(update) == orjson.dumps(_unstructure_update(update, True))
    assert encode(replace) == orjson.dumps(_unstructure_replace(replace, True))


def test_an_id_json_cannot_carry_is_named_on_the_bulk_path() -> None:
    from batch_audiences import ValidationError

    with pytest.raises(ValidationError, match=r"ids\[1\]\.id"):
        encode(UpdateRequest("n", [IdAction.add("a", {"p": 1}), IdAction.add("b\udc00")]))


@pytest.mark.parametrize("raw", [b'{"indexing_token":"t1"}', b"", b"  ", b"null", b'{"other":1}'])
def test_an_accepted_answer_read_with_its_status_is_the_decoded_one(raw: bytes) -> None:
    from batch_audiences._codec import decode_accepted

    accepted = decode_accepted(raw, status=202, headers={"X-Request-Id": "r1"}, method="POST", route="/r")
    assert accepted == decode(raw, Accepted, status=202, method="POST", route="/r")
    assert accepted.status == 202
    assert accepted.headers == {"X-Request-Id": "r1"}


@pytest.mark.parametrize("raw", [b"[1]", b'{"indexing_token":3}', b"{not json"])
def test_an_unreadable_accepted_answer_raises_as_decode_does(raw: bytes) -> None:
    from batch_audiences._codec import decode_accepted

    with pytest.raises(UnexpectedResponseError) as expected:
        decode(raw, Accepted, status=202, method="POST", route="/r")
    with pytest.raises(UnexpectedResponseError) as got:
        decode_accepted(raw, status=202, headers={}, method="POST", route="/r")
    assert str(got.value) == str(expected.value)
