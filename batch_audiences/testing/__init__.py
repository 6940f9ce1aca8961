"""An in-memory emulator of Batch's Audience API, for tests, demos and benchmarks.

It is written from the API reference alone (it shares no code with the client), so a
misunderstanding of the API cannot hide in both. It models what makes clients go wrong:

- indexing: a write changes content only ``indexing_delay`` seconds after it arrives (a replace
  takes ``replace_indexing_delay``, 3x longer by default), applied in that order; so an update sent
  while a replace is in progress is wiped by it, and its token turns ``REPLACED``;
- strict validation (400 with a message naming the field), auth (401), 404s, and a taken name
  answered 400 in one of three wordings (``taken_name``), one of which never mentions existence;
- honest times: a ``Date`` header on every answer, ``created`` when the create arrived, and
  audiences that can be backdated (``add_audience(..., created=...)``);
- a token-bucket rate limit (429 with ``Retry-After`` and ``X-RateLimit-*``), seeded random faults
  (429, 503, 500, dropped connections before or after the write, slow answers, writes held and
  applied late), scripted answers
  (including non-JSON bodies) and added latency;
- a log of every request (:attr:`Emulator.requests`) and direct access to the state.

Where the reference is silent the emulator is strict (unknown fields, ``null`` for optional
fields, a missing ``application/json`` content type are 400s), so a client that passes here works
whichever way the real API decides. ``Retry-After`` may be fractional (``"0.05"``): real servers
send whole seconds, but tests need short waits, so a client must parse it as a float.

Example, on the running event loop::

    import asyncio
    import aiohttp
    from batch_audiences.testing import Emulator

    async def demo() -> None:
        async with Emulator(indexing_delay=0) as emu, aiohttp.ClientSession() as http:
            url = f"{emu.base_url}/2.8/audiences"
            for route, body in [
                ("create", {"name": "vip", "type": "custom_ids"}),
                ("update", {"name": "vip", "ids": [
                    {"action": "add", "id": "u1", "attributes": {"tier": "gold"}}]}),
            ]:
                async with http.post(f"{url}/{route}", json=body, headers=emu.auth_headers) as response:
                    assert response.status == 202, await response.text()
            emu.settle()
            assert emu.members("vip") == {"u1": {"tier": "gold"}}

    asyncio.run(demo())

From blocking code, ``with Emulator() as emu:`` serves from a background thread. From a shell,
``python -m batch_audiences.testing --port 8080`` serves until Ctrl-C.

For unit tests of code that uses a client, without a server: :class:`MockSender` answers every
request from a function of yours, and :func:`set_testing` makes retry back-offs and rate-limiter
pauses take no time (in tests against the emulator too).
"""

from .._testmode import is_testing, set_testing
from ._emulator import Emulator
from ._mock import MockSender
from ._models import ROUTES, EmulatedAudience, FaultPlan, RecordedRequest, ScriptedResponse

__all__ = [
    "ROUTES",
    "EmulatedAudience",
    "Emulator",
    "FaultPlan",
    "MockSender",
    "RecordedRequest",
    "ScriptedResponse",
    "is_testing",
    "set_testing",
]
