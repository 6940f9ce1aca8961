"""Reading a running emulator's state over HTTP, from its ``/_emulator/`` inspection routes.

For an emulator in another process (``batch-audiences emulator``), where :meth:`Emulator.members`
cannot be called: ``batch-audiences emulator-dump`` is built on :func:`fetch_state`. Like the rest
of the emulator it shares no code with the client.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

__all__ = ["EmulatorStateError", "fetch_state"]


class EmulatorStateError(Exception):
    """The emulator could not be reached, or refused the inspection request."""


async def fetch_state(
    base_url: str, *, api_key: str, project_key: str, audience: str | None = None, timeout: float = 30.0
) -> dict[str, Any]:
    """``GET {base_url}/_emulator/audiences`` (or ``.../{audience}/members``) as a JSON object."""
    path = "/_emulator/audiences" + (f"/{quote(audience, safe='')}/members" if audience is not None else "")
    headers = {"Authorization": f"Bearer {api_key}", "X-Batch-Project": project_key}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(base_url.rstrip("/") + path, headers=headers) as response:
            try:
                body = await response.json(content_type=None)
            except ValueError:
                body = None
            status = response.status
    except aiohttp.ClientConnectorError as error:
        reason = "connection refused" if isinstance(error.os_error, ConnectionRefusedError) else str(error)
        raise EmulatorStateError(f"nothing is listening at {base_url} ({reason})") from None
    except (aiohttp.ClientError, TimeoutError) as error:
        raise EmulatorStateError(f"GET {path} failed: {type(error).__name__}: {error}") from None
    if status != 200 or not isinstance(body, dict):
        message = body.get("error_message") if isinstance(body, dict) else None
        if status == 404 and message is None:
            message = f"{base_url} is not a batch-audiences emulator (no {path})"
        raise EmulatorStateError(f"HTTP {status}: {message or 'unexpected answer'}")
    return body
