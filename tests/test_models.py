"""Models and every validation rule of issue 2 §3, and that invalid input sends no request."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from batch_audiences import (
    MAX_ATTRIBUTES,
    MAX_IDS_PER_REQUEST,
    Accepted,
    Action,
    AsyncAudiencesClient,
    AudiencesClient,
    AudienceType,
    BatchAudiencesError,
    ConfigurationError,
    IdAction,
    IndexingState,
    Member,
    NewAudience,
    Url,
    ValidationError,
)
from batch_audiences._models import CreateRequest, ReplaceRequest, UpdateRequest, check_name
from batch_audiences.testing import Emulator

from .conftest import Api

UTC = timezone.utc
NOW = datetime(2024, 5, 17, 12, 30, 5, tzinfo=UTC)

BAD_NAMES: list[object] = [
    "",
    "a b",
    "a/b",
    "a.b",
    "caf\u00e9",
    "a" * 256,
    "name\n",
    " name",
    None,
    12,
    b"bytes",
]
GOOD_NAMES = ["a", "A-z_0", "x" * 255, "2024_Q1-vip"]

BAD_IDS: list[object] = ["", "   ", None, 7, 1.5, b"u1", ["u1"]]

BAD_VALUES: list[object] = [
    None,
    {"nested": 1},
    object(),
    b"bytes",
    {"a", "b"},
    ["a", 1],
    [None],
    datetime(2024, 1, 1),  # naive: its UTC instant is unknown
    2**64,
    -(2**63) - 1,
]
NON_FINITE = [math.nan, math.inf, -math.inf]


def attributes(count: int) -> dict[str, int]:
    return {f"k{i}": i for i in range(count)}


# -- enums and plain models ------------------------------------------------------------------


def test_enum_values_match_the_wire() -> None:
    assert AudienceType.CUSTOM_IDS.value == "custom_ids"
    assert Action.ADD.value == "add"
    assert Action.REMOVE.value == "remove"
    assert {s.value for s in IndexingState} == {"IN_PROGRESS", "APPLIED", "REPLACED"}


def test_id_action_constructors() -> None:
    added = IdAction.add("u1", {"plan": "pro"})
    assert (added.id, added.action, added.attributes) == ("u1", Action.ADD, {"plan": "pro"})
    removed = IdAction.remove("u2")
    assert (removed.id, removed.action, removed.attributes) == ("u2", Action.REMOVE, None)
    assert IdAction("u3").action is Action.ADD
    assert IdAction("u4", "remove").action is Action.REMOVE  # the wire spelling converts


def test_models_are_frozen() -> None:
    action = IdAction.add("u1")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        action.id = "u2"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Member("u1").id = "u2"  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Accepted("t").indexing_token = "u"  # type: ignore[misc]


def test_attributes_are_copied_so_later_changes_do_not_leak_in() -> None:
    source: dict[str, Any] = {"plan": "pro"}
    member = Member("u1", source)
    source["plan"] = "free"
    assert member.attributes == {"plan": "pro"}


def test_accepted_token_is_optional() -> None:
    assert Accepted().indexing_token is None
    assert Accepted("tok").indexing_token == "tok"


# -- the ValidationError type ----------------------------------------------------------------


def test_validation_error_is_sdk_error_and_value_error() -> None:
    with pytest.raises(ValidationError) as info:
        IdAction.add("")
    error = info.value
    assert isinstance(error, BatchAudiencesError)
    assert isinstance(error, ValueError)
    assert error.field == "id"
    assert "non-empty" in error.rule
    assert error.field in str(error)
    assert error.rule in str(error)


# -- names -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused(name: object) -> None:
    with pytest.raises(ValidationError) as info:
        check_name(name)
    assert info.value.field == "name"
    with pytest.raises(ValidationError):
        CreateRequest(name)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        UpdateRequest(name, [IdAction.add("u1")])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ReplaceRequest(name, ["u1"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        NewAudience(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name
    assert CreateRequest(name).name == name


@given(st.text(min_size=0, max_size=300))
def test_name_rule_is_exactly_the_documented_pattern(text: str) -> None:
    valid = re.fullmatch(r"[A-Za-z0-9_-]{1,255}", text) is not None
    try:
        check_name(text)
    except ValidationError:
        assert not valid
    else:
        assert valid


def test_display_name_and_type_are_checked() -> None:
    with pytest.raises(ValidationError) as info:
        CreateRequest("vip", display_name=3)  # type: ignore[arg-type]
    assert info.value.field == "display_name"
    with pytest.raises(ValidationError) as info:
        CreateRequest("vip", type="segment")
    assert info.value.field == "type"
    assert CreateRequest("vip", type="custom_ids").type is AudienceType.CUSTOM_IDS


# -- IDs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", BAD_IDS)
def test_bad_ids_are_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        IdAction.add(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        IdAction.remove(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        Member(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError) as info:
        ReplaceRequest("vip", ["ok", bad])  # type: ignore[list-item]
    assert info.value.field == "ids[1]"


def test_update_items_must_be_id_actions() -> None:
    with pytest.raises(ValidationError) as info:
        UpdateRequest("vip", [IdAction.add("u1"), "u2"])  # type: ignore[list-item]
    assert info.value.field == "ids[1]"
    with pytest.raises(ValidationError):
        UpdateRequest("vip", [{"id": "u1", "action": "add"}])  # type: ignore[list-item]


def test_bad_action_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        IdAction("u1", "delete")
    assert info.value.field == "action"


# -- item counts -----------------------------------------------------------------------------


def test_update_takes_1_to_10000_actions() -> None:
    with pytest.raises(ValidationError) as info:
        UpdateRequest("vip", [])
    assert info.value.field == "ids"
    one = IdAction.add("u")
    assert len(UpdateRequest("vip", [one] * MAX_IDS_PER_REQUEST).ids) == MAX_IDS_PER_REQUEST
    with pytest.raises(ValidationError) as info:
        UpdateRequest("vip", [one] * (MAX_IDS_PER_REQUEST + 1))
    assert info.value.field == "ids"
    assert "10,000" in info.value.rule


def test_replace_takes_0_to_10000_members() -> None:
    assert ReplaceRequest("vip", []).ids == ()
    assert len(ReplaceRequest("vip", ["u"] * MAX_IDS_PER_REQUEST).ids) == MAX_IDS_PER_REQUEST
    with pytest.raises(ValidationError) as info:
        ReplaceRequest("vip", ["u"] * (MAX_IDS_PER_REQUEST + 1))
    assert info.value.field == "ids"


def test_replace_accepts_generators_and_mixed_items() -> None:
    items: list[Member | str] = ["a", Member("b", {"k": 1})]
    request = ReplaceRequest("vip", (x for x in items))
    assert [m.id for m in request.ids] == ["a", "b"]
    assert all(type(m) is Member for m in request.ids)


# -- attributes ------------------------------------------------------------------------------


def test_attributes_on_a_remove_are_refused() -> None:
    with pytest.raises(ValidationError) as info:
        IdAction("u1", Action.REMOVE, {"plan": "pro"})
    assert info.value.field == "attributes"
    assert "remove" in info.value.rule


def test_at_most_15_attributes() -> None:
    assert Member("u", attributes(MAX_ATTRIBUTES)).attributes == attributes(MAX_ATTRIBUTES)
    with pytest.raises(ValidationError) as info:
        Member("u", attributes(MAX_ATTRIBUTES + 1))
    assert info.value.field == "attributes"
    assert "15" in info.value.rule
    with pytest.raises(ValidationError):
        IdAction.add("u", attributes(MAX_ATTRIBUTES + 1))


@pytest.mark.parametrize("value", BAD_VALUES, ids=lambda v: type(v).__name__)
def test_unsupported_attribute_values_are_refused(value: object) -> None:
    bad: Any = {"key": value}  # wrong on purpose: the type checker would refuse it
    with pytest.raises(ValidationError) as info:
        Member("u", bad)
    assert info.value.field.startswith("attributes")
    assert "key" in info.value.field
    with pytest.raises(ValidationError):
        IdAction.add("u", bad)


@pytest.mark.parametrize("value", NON_FINITE, ids=str)
def test_nan_and_infinity_are_refused(value: float) -> None:
    with pytest.raises(ValidationError) as info:
        IdAction.add("u", {"score": value})
    assert "finite" in info.value.rule


@pytest.mark.parametrize("key", ["", 3, None])
def test_attribute_keys_must_be_non_empty_strings(key: object) -> None:
    bad: Any = {key: "v"}
    with pytest.raises(ValidationError):
        Member("u", bad)


def test_attributes_must_be_a_mapping() -> None:
    bad: Any = [("k", "v")]
    with pytest.raises(ValidationError):
        Member("u", bad)


def test_supported_attribute_values() -> None:
    values: dict[str, Any] = {
        "s": "text",
        "i": -3,
        "f": 2.5,
        "b": True,
        "tags": ["a", "b"],
        "empty": [],
        "tuple": ("x",),
        "when": NOW,
        "avatar": Url("https://example.com/a.png"),
        "date(signup)": "2023-08-12T22:30:05Z",
        "url(home)": "https://example.com",
        "date(seen)": NOW + timedelta(days=1),
        "url(page)": Url("http://example.com/p?q=1"),
        "big": 2**63,
        "zero": 0.0,
    }
    assert Member("u", values).attributes == values


def test_typed_keys_need_matching_values() -> None:
    with pytest.raises(ValidationError):
        Member("u", {"date(signup)": 3})
    with pytest.raises(ValidationError):
        Member("u", {"url(home)": True})
    with pytest.raises(ValidationError):
        Member("u", {"url(home)": "not a url"})


@pytest.mark.parametrize("value", ["", "example.com", "ftp://example.com", "https://", 5])
def test_url_must_be_http(value: object) -> None:
    with pytest.raises(ValidationError) as info:
        Url(value)  # type: ignore[arg-type]
    assert info.value.field == "url"


# -- no request leaves the process on invalid input ------------------------------------------

TOO_MANY_ACTIONS = [IdAction.add(f"u{i}") for i in range(MAX_IDS_PER_REQUEST + 1)]

# (description, call) pairs: each call must raise ValidationError before sending anything.
INVALID_CALLS: list[tuple[str, Callable[[Api], Awaitable[object]]]] = [
    ("create bad name", lambda c: c.create("bad name")),
    ("create long name", lambda c: c.create("a" * 256)),
    ("create display_name", lambda c: c.create("ok", display_name=5)),  # type: ignore[arg-type]
    ("create type", lambda c: c.create("ok", type="segment")),  # type: ignore[arg-type]
    ("update bad name", lambda c: c.update("", [IdAction.add("u1")])),
    ("update no actions", lambda c: c.update("ok", [])),
    ("update too many", lambda c: c.update("ok", TOO_MANY_ACTIONS)),
    ("update not actions", lambda c: c.update("ok", ["u1"])),  # type: ignore[list-item]
    ("replace bad name", lambda c: c.replace("a b", ["u1"])),
    ("replace empty id", lambda c: c.replace("ok", ["u1", ""])),
    ("replace non-str id", lambda c: c.replace("ok", [1])),  # type: ignore[list-item]
    ("replace too many", lambda c: c.replace("ok", ["u"] * (MAX_IDS_PER_REQUEST + 1))),
    ("remove bad name", lambda c: c.remove("x/y")),
    ("remove non-str", lambda c: c.remove(None)),  # type: ignore[arg-type]
    ("view bad name", lambda c: c.view("")),
    ("view bad token", lambda c: c.view("ok", indexing_token="")),
    ("list limit 0", lambda c: c.list(limit=0)),
    ("list limit 101", lambda c: c.list(limit=101)),
    ("list limit bool", lambda c: c.list(limit=True)),
    ("list limit float", lambda c: c.list(limit=5.0)),  # type: ignore[arg-type]
    ("list empty cursor", lambda c: c.list(cursor="")),
    ("wait bad name", lambda c: c.wait_until_applied("a b")),
    ("wait timeout 0", lambda c: c.wait_until_applied("ok", timeout=0)),
    ("wait timeout negative", lambda c: c.wait_until_applied("ok", timeout=-1)),
    ("wait timeout nan", lambda c: c.wait_until_applied("ok", timeout=math.nan)),
    ("wait poll 0", lambda c: c.wait_until_applied("ok", poll_interval=0)),
]


@pytest.mark.parametrize(("what", "call"), INVALID_CALLS, ids=[what for what, _ in INVALID_CALLS])
async def test_invalid_input_sends_no_request(
    api: Api, emulator: Emulator, what: str, call: Callable[[Api], Awaitable[object]]
) -> None:
    with pytest.raises(ValidationError):
        await call(api)
    assert emulator.requests == []
    assert api.stats.requests == 0


@pytest.mark.parametrize("page_size", [0, 101, -5, "10"])
async def test_iter_audiences_checks_page_size_at_the_call(
    api: Api, emulator: Emulator, page_size: object
) -> None:
    with pytest.raises(ValidationError) as info:
        api.iter_audiences(page_size=page_size)  # type: ignore[arg-type]
    assert info.value.field == "page_size"
    assert emulator.requests == []


@pytest.mark.parametrize("client_class", [AsyncAudiencesClient, AudiencesClient])
@pytest.mark.parametrize(
    "settings",
    [
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": math.inf},
        {"base_url": "ftp://api.batch.com"},
        {"base_url": "api.batch.com"},
        {"base_url": "https://"},
        {"base_url": "http://api.batch.com"},
        {"api_version": "v2"},
        {"max_connections": 0},
        {"max_retries": -1},
        {"max_rate": 0},
        {"max_rate": True},
        {"timeout": True},
    ],
    ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()),
)
def test_bad_settings_raise_validation_and_configuration_errors(
    client_class: type[Any], settings: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as info:
        client_class("key-123456789012", "project_x", **settings)
    assert isinstance(info.value, ConfigurationError)
    assert info.value.field == next(iter(settings))


@pytest.mark.parametrize(
    ("id_", "attributes"),
    [
        ("user-1", None),
        ("user-1", {"plan": "pro", "score": 3, "ratio": 0.5, "vip": False}),
        ("user-1", {"seen": datetime(2024, 1, 1, tzinfo=timezone.utc)}),
        ("user-1", {"date(seen)": "2024-01-01T00:00:00Z"}),
        ("user-1", {"score": 2**70}),
        ("user-1", {"score": float("nan")}),
        ("user-1", {"": 1}),
        ("user-1", {1: 1}),
        ("user-1", [("plan", "pro")]),
        ("  ", None),
        ("", {"plan": "pro"}),
        ("x" * 1025, None),
        (7, None),
        (7, {"score": float("inf")}),
    ],
)
def test_add_is_the_constructor_with_action_add(id_: Any, attributes: Any) -> None:
    # IdAction.add takes a shortcut on its common case: same instance, same error, either way.
    def outcome(build: Any) -> object:
        try:
            return build()
        except ValidationError as exc:
            return (type(exc), str(exc))

    assert outcome(lambda: IdAction.add(id_, attributes)) == outcome(
        lambda: IdAction(id_, Action.ADD, attributes)
    )


def test_add_keeps_a_copy_of_the_attributes() -> None:
    attributes = {"plan": "pro"}
    action = IdAction.add("user-1", attributes)
    attributes["plan"] = "free"
    assert action.attributes == {"plan": "pro"}
    assert type(action) is IdAction
    assert action.action is Action.ADD
