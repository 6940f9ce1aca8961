"""Typed usages of both clients, checked by ``mypy --strict`` (``tests/typing`` is in its
``files``), never run: each ``assert_type`` locks what a type checker sees, and each
``type: ignore[...]`` a mistake it must catch (an ignore that is no longer needed is itself
an error under ``--strict``). If the blocking client's methods lost their real parameters to a
loose wrapper, this file would stop type-checking.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from batch_audiences import (
    Accepted,
    AsyncAudiencesClient,
    Audience,
    AudiencePage,
    AudiencesClient,
    AudienceType,
    BulkReport,
    ClientStats,
    IdAction,
    Member,
    NewAudience,
    UploadReport,
)

if TYPE_CHECKING:
    from typing_extensions import assert_type


def blocking(client: AudiencesClient) -> None:
    assert_type(client.create("vip", display_name="VIP", type=AudienceType.CUSTOM_IDS), Accepted)
    assert_type(client.update("vip", [IdAction.add("u1"), IdAction.remove("u2")]), Accepted)
    assert_type(client.replace("vip", [Member("u1"), "u2"]), Accepted)
    assert_type(client.remove("vip"), Accepted)
    assert_type(client.view("vip", indexing_token="t"), Audience)
    assert_type(client.list(limit=5, cursor=None), AudiencePage)
    assert_type(client.iter_audiences(page_size=10), Iterator[Audience])
    assert_type(client.wait_until_applied("vip", "t", timeout=5.0, poll_interval=0.1), Audience)
    assert_type(client.upload("vip", ["u1"], mode="add", chunk_size=10, wait=True), UploadReport)
    assert_type(client.create_many([NewAudience("a"), "b"], if_exists="skip"), BulkReport)
    assert_type(client.stats, ClientStats)
    assert_type(client.closed, bool)
    assert_type(client.with_options(timeout=60.0, max_retries=1, max_rate=2.0), AudiencesClient)
    assert_type(client.close(), None)

    client.with_options(timeout="60")  # type: ignore[arg-type]
    client.create("vip", display_nam="VIP")  # type: ignore[call-arg]
    client.view(42)  # type: ignore[arg-type]
    client.upload("vip", ["u1"], chunk_size="10")  # type: ignore[arg-type]
    client.upload("vip", ["u1"], mode="replac")  # type: ignore[arg-type]
    client.create_many(["a"], if_exists="skipp")  # type: ignore[arg-type]
    client.wait_until_applied("vip", "t", 5.0)  # type: ignore[call-arg]
    print(client.update("vip", [IdAction.add("u1")]).nb_ids)  # type: ignore[attr-defined]


def blocking_constructor() -> None:
    with AudiencesClient("key", "project", base_url="http://127.0.0.1:1", timeout=1.0) as client:
        assert_type(client, AudiencesClient)
    AudiencesClient(timeout="1")  # type: ignore[arg-type]
    AudiencesClient(retries=1)  # type: ignore[call-arg]


async def asynchronous(client: AsyncAudiencesClient) -> None:
    assert_type(await client.create("vip", display_name="VIP", type=AudienceType.CUSTOM_IDS), Accepted)
    assert_type(await client.update("vip", [IdAction.add("u1"), IdAction.remove("u2")]), Accepted)
    assert_type(await client.replace("vip", [Member("u1"), "u2"]), Accepted)
    assert_type(await client.remove("vip"), Accepted)
    assert_type(await client.view("vip", indexing_token="t"), Audience)
    assert_type(await client.list(limit=5, cursor=None), AudiencePage)
    assert_type(client.iter_audiences(page_size=10), AsyncIterator[Audience])
    assert_type(await client.wait_until_applied("vip", "t", timeout=5.0, poll_interval=0.1), Audience)
    assert_type(await client.upload("vip", ["u1"], mode="add", chunk_size=10, wait=True), UploadReport)
    assert_type(await client.create_many([NewAudience("a"), "b"], if_exists="skip"), BulkReport)
    assert_type(client.stats, ClientStats)
    assert_type(client.closed, bool)
    assert_type(client.with_options(timeout=60.0, max_retries=1, max_rate=2.0), AsyncAudiencesClient)
    assert_type(await client.aclose(), None)

    await client.create("vip", display_nam="VIP")  # type: ignore[call-arg]
    await client.view(42)  # type: ignore[arg-type]


async def asynchronous_constructor() -> None:
    async with AsyncAudiencesClient("key", "project", base_url="http://127.0.0.1:1") as client:
        assert_type(client, AsyncAudiencesClient)
    AsyncAudiencesClient(timeout="1")  # type: ignore[arg-type]
