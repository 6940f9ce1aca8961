"""The blocking client's public surface is the async client's, member for member.

Most blocking methods are derived from the async ones and cannot drift; this locks the rest
(the constructor, the context-manager and closing methods, properties) and the derivation
itself. A parameter added to one client only fails here, naming it.
"""

from __future__ import annotations

import inspect

import pytest

from batch_audiences import AsyncAudiencesClient, AudiencesClient

from ._twins import actual_signature, blocking_signature, property_type, public_members, twin_name

ASYNC = public_members(AsyncAudiencesClient)
BLOCKING = public_members(AudiencesClient)


def test_every_public_member_has_a_twin() -> None:
    expected = {twin_name(name) for name in ASYNC}
    assert sorted(expected - BLOCKING.keys()) == [], "async members without a blocking twin"
    assert sorted(BLOCKING.keys() - expected) == [], "blocking members without an async twin"


def _differences(expected: inspect.Signature, actual: inspect.Signature) -> list[str]:
    found = []
    want, have = dict(expected.parameters), dict(actual.parameters)
    for name in want.keys() - have.keys():
        found.append(f"parameter {name!r} missing")
    for name in have.keys() - want.keys():
        found.append(f"parameter {name!r} not in the async client")
    for name in want.keys() & have.keys():
        a, b = want[name], have[name]
        for what in ("kind", "default", "annotation"):
            if getattr(a, what) != getattr(b, what):
                found.append(f"{name}: {what} {getattr(b, what)!r}, expected {getattr(a, what)!r}")
    if list(want) != list(have) and not found:
        found.append(f"parameter order {list(have)}, expected {list(want)}")
    if expected.return_annotation != actual.return_annotation:
        found.append(f"returns {actual.return_annotation!r}, expected {expected.return_annotation!r}")
    return found


@pytest.mark.parametrize(
    "name", sorted(name for name, member in ASYNC.items() if not isinstance(member, property))
)
def test_same_signature(name: str) -> None:
    async_member = ASYNC[name]
    blocking_member = BLOCKING.get(twin_name(name))
    if blocking_member is None:
        pytest.fail(f"AudiencesClient has no {twin_name(name)}")
    differences = _differences(blocking_signature(async_member), actual_signature(blocking_member))
    assert differences == [], f"AudiencesClient.{twin_name(name)} vs AsyncAudiencesClient.{name}"


@pytest.mark.parametrize(
    "name", sorted(name for name, member in ASYNC.items() if isinstance(member, property))
)
def test_same_property(name: str) -> None:
    blocking_member = BLOCKING.get(name)
    assert isinstance(blocking_member, property), f"AudiencesClient.{name} is not a property"
    assert property_type(blocking_member) == property_type(ASYNC[name])


def test_the_rule_sees_a_difference() -> None:
    # The comparison itself can fail: a one-parameter change is reported, by name.
    def one(self: object, name: str, *, limit: int = 10) -> None: ...
    def other(self: object, name: str, *, limit: int = 10, page: int = 1) -> None: ...
    def renamed_default(self: object, name: str, *, limit: int = 11) -> None: ...

    assert _differences(actual_signature(one), actual_signature(one)) == []
    assert _differences(actual_signature(one), actual_signature(other)) == [
        "parameter 'page' not in the async client"
    ]
    assert _differences(actual_signature(one), actual_signature(renamed_default)) == [
        "limit: default 11, expected 10"
    ]


def test_derived_methods_keep_their_documentation() -> None:
    for name, member in ASYNC.items():
        if isinstance(member, property) or name.startswith("_") or name == "aclose":
            continue
        assert member.__doc__, name
        assert inspect.cleandoc(member.__doc__) in (BLOCKING[name].__doc__ or ""), name
