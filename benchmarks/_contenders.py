"""The contenders several benchmarks share: the SDK's async client and a bare aiohttp session.

Each is opened in ``setup`` and closed in ``teardown`` on the benchmark's own event loop, so
that their ``setup``/``teardown`` methods can be handed to a :class:`Contender` as they are.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from batch_audiences import AsyncAudiencesClient

from ._runner import API_KEY, PROJECT_KEY

__all__ = ["BareAiohttp", "SdkClient", "close_loop", "create_bodies"]


def create_bodies(names: list[str]) -> list[bytes]:
    """The JSON bodies of ``POST /audiences/create`` for ``names``, built before any timer starts."""
    return [orjson.dumps({"name": name, "type": "custom_ids"}) for name in names]


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Close the benchmark's loop, once the connections closed by the teardowns have finished."""
    loop.run_until_complete(asyncio.sleep(0.05))
    loop.close()


class SdkClient:
    """An :class:`AsyncAudiencesClient` on ``base_url``, made with ``options``; ``client`` once set up."""

    def __init__(self, loop: asyncio.AbstractEventLoop, base_url: str, **options: Any) -> None:
        self._loop = loop
        self._base_url = base_url
        self._options = options
        self.client: AsyncAudiencesClient | None = None

    def setup(self) -> None:
        self.client = AsyncAudiencesClient(API_KEY, PROJECT_KEY, base_url=self._base_url, **self._options)

    def teardown(self) -> None:
        assert self.client is not None
        self._loop.run_until_complete(self.client.aclose())


class BareAiohttp:
    """A bare ``aiohttp.ClientSession`` posting ready-made bodies to ``url``, expecting a 202.

    ``limit`` caps the connector's connections; ``None`` keeps aiohttp's default connector.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, url: str, headers: dict[str, str], limit: int | None = None
    ) -> None:
        self._loop = loop
        self._url = url
        self._headers = headers
        self._limit = limit
        self.session: aiohttp.ClientSession | None = None

    async def _open(self) -> aiohttp.ClientSession:
        # A session must be made on the loop that will use it.
        if self._limit is None:
            return aiohttp.ClientSession()
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self._limit))

    def setup(self) -> None:
        self.session = self._loop.run_until_complete(self._open())

    async def post(self, body: bytes) -> None:
        """Post ``body``, and read the indexing token out of the answer as a client would."""
        session = self.session
        assert session is not None
        async with session.post(self._url, data=body, headers=self._headers) as response:
            payload = await response.read()
            if response.status != 202:
                raise RuntimeError(f"status {response.status}")
            orjson.loads(payload)["indexing_token"]

    def teardown(self) -> None:
        assert self.session is not None
        self._loop.run_until_complete(self.session.close())
