"""The subcommands, each an ``async`` function ``(args, console, interrupter) -> exit code``.

They call the public client and print its answers; nothing here talks HTTP or knows a route.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from yarl import URL

from .._client import AsyncAudiencesClient
from .._config import DEFAULT_BASE_URL, ENV_BASE_URL
from .._models import Audience
from ._errors import EXIT_FAILED, EXIT_OK, CLIError
from ._output import Console, audience_to_dict, format_count, key_values, table

if TYPE_CHECKING:
    from ._main import CommandFunc, Interrupter

__all__ = ["COMMANDS", "check_listening", "make_client", "refused", "resolved_base_url"]


def refused(error: BaseException) -> bool:
    """Whether ``error`` (a :class:`TransportError`) came from a refused TCP connection."""
    cause = error.__cause__
    os_error = getattr(cause, "os_error", cause)  # aiohttp's ClientConnectorError wraps it
    return isinstance(os_error, ConnectionRefusedError)


def resolved_base_url(args: argparse.Namespace) -> str:
    """The base URL the command talks to: --base-url, else the environment, else Batch's."""
    return (getattr(args, "base_url_option", None) or os.environ.get(ENV_BASE_URL, "").strip()
            or DEFAULT_BASE_URL)


@contextlib.asynccontextmanager
async def make_client(
    args: argparse.Namespace, *, max_rate: float | None = None
) -> AsyncIterator[AsyncAudiencesClient]:
    """The async client the global options describe (unset ones fall back to the environment).

    Use it with ``async with``. Before handing the client over it checks, with one TCP connect,
    that something listens at the base URL: a refused connection is an immediate, one-line
    error, instead of the client's retries (meant for a server restarting under a long job)
    spending seconds on a URL where nothing was ever listening.
    """
    base_url = resolved_base_url(args)
    settings: dict[str, Any] = {
        "api_key": getattr(args, "api_key_option", None),
        "project_key": getattr(args, "project_key_option", None),
        "base_url": base_url,
        "max_rate": max_rate,
    }
    version = getattr(args, "api_version_option", None)
    if version is not None:
        settings["api_version"] = version
    timeout = getattr(args, "http_timeout", None)
    if timeout is not None:
        settings["timeout"] = timeout
    retries = getattr(args, "max_retries", None)
    if retries is not None:
        settings["max_retries"] = retries
    async with AsyncAudiencesClient(**settings) as client:
        await check_listening(base_url, timeout=min(_CONNECT_CHECK_SECONDS, timeout or 30.0))
        yield client


# The connect check gives up (and lets the client try) after this long: only a refusal counts.
_CONNECT_CHECK_SECONDS = 3.0


async def check_listening(base_url: str, *, timeout: float) -> None:
    """Raise :class:`CLIError` if every address of ``base_url``'s host refuses a TCP connection.

    Anything else (a name that does not resolve, a timeout, a network error) is left to the
    client, which retries it and reports it in its own words.
    """
    url = URL(base_url)
    host, port = url.host, url.port
    if host is None or port is None:
        return
    loop = asyncio.get_running_loop()
    try:
        addresses = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
    except (OSError, asyncio.TimeoutError):
        return
    refused = 0
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        except ConnectionRefusedError:
            refused += 1
            continue
        except (OSError, asyncio.TimeoutError):
            return
        finally:
            sock.close()
        return  # something answered the handshake
    if addresses and refused == len(addresses):
        raise CLIError(f"nothing is listening at {base_url} (connection refused)", EXIT_FAILED)


def _audience_text(audience: Audience) -> str:
    data = audience_to_dict(audience)
    return key_values([
        ("name", data["name"]),
        ("display name", data["display_name"] or "-"),
        ("type", data["type"]),
        ("IDs", format_count(audience.nb_ids)),
        ("indexing", data["indexing_state"]),
        ("created", data["created"]),
        ("updated", data["updated"]),
    ])


async def cmd_create(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    async with make_client(args) as client:
        accepted = await client.create(args.name, display_name=args.display_name)
    console.result(
        {"name": args.name, "created": True, "indexing_token": accepted.indexing_token},
        f"created audience {args.name!r}"
        + (f" (indexing token {accepted.indexing_token})" if accepted.indexing_token else ""),
    )
    return EXIT_OK


async def cmd_remove(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    async with make_client(args) as client:
        accepted = await client.remove(args.name)
    console.result(
        {"name": args.name, "removed": True, "indexing_token": accepted.indexing_token},
        f"removed audience {args.name!r}",
    )
    return EXIT_OK


async def cmd_view(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    async with make_client(args) as client:
        audience = await client.view(args.name, indexing_token=args.token)
    console.result(audience_to_dict(audience), _audience_text(audience))
    return EXIT_OK


async def cmd_wait(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    async with make_client(args) as client:
        console.note(f"waiting for {args.name!r} to be indexed (up to {args.timeout:g}s)…")
        audience = await client.wait_until_applied(
            args.name, args.token, timeout=args.timeout, poll_interval=args.poll_interval
        )
    console.result(audience_to_dict(audience), _audience_text(audience))
    return EXIT_OK


async def cmd_list(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
    limit: int | None = None if args.all else args.limit
    audiences: list[Audience] = []
    total: int | None = None
    has_more = False
    async with make_client(args) as client:
        cursor: str | None = None
        while True:
            page_size = 100 if limit is None else min(100, limit - len(audiences))
            page = await client.list(limit=page_size, cursor=cursor)
            if total is None:
                total = page.count
            audiences.extend(page.audiences)
            has_more = page.has_more and page.next_from is not None
            if not has_more or (limit is not None and len(audiences) >= limit):
                break
            cursor = page.next_from
    if limit is not None:
        audiences = audiences[:limit]
    rows = [
        (a.name, a.display_name or "", format_count(a.nb_ids), audience_to_dict(a)["indexing_state"],
         audience_to_dict(a)["updated"] or "")
        for a in audiences
    ]
    text = table(("NAME", "DISPLAY NAME", "IDS", "STATE", "UPDATED"), rows, numeric=(2,))
    shown = f"{len(audiences)} audience{'s' if len(audiences) != 1 else ''}"
    if total is not None and total > len(audiences):
        shown += f" of {total} (--all for every one)" if has_more else f" of {total}"
    console.result(
        {"audiences": [audience_to_dict(a) for a in audiences], "count": total, "has_more": has_more},
        f"{text}\n{shown}" if audiences else "no audiences",
    )
    return EXIT_OK


def _lazy(module: str, name: str) -> CommandFunc:
    """A command whose module is imported only when it runs (keeps ``--help`` fast)."""

    async def run(args: argparse.Namespace, console: Console, interrupter: Interrupter) -> int:
        import importlib

        func: Callable[..., Any] = getattr(importlib.import_module(module, __package__), name)
        result: int = await func(args, console, interrupter)
        return result

    return run


COMMANDS: dict[str, CommandFunc] = {
    "create": cmd_create,
    "remove": cmd_remove,
    "view": cmd_view,
    "list": cmd_list,
    "wait": cmd_wait,
    "upload": _lazy("._upload", "cmd_upload"),
    "sync": _lazy("._sync", "cmd_sync"),
    "create-many": _lazy("._bulk_commands", "cmd_create_many"),
    "demo": _lazy("._bulk_commands", "cmd_demo"),
    "emulator-dump": _lazy("._emulator_commands", "cmd_emulator_dump"),
}
