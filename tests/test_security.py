"""Security: TLS verified and not silently disableable, plain http:// refused beyond loopback, no
redirect followed (so the Authorization header never reaches another host), and the key absent
from logs, reprs and reports of bulk calls under faults.

(The key in CLI output and checkpoint files, and in core errors and logs, is checked by
test_cli*.py and test_secrets.py.)
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
from aiohttp import web

import batch_audiences
from batch_audiences import (
    AiohttpSender,
    APIError,
    AsyncAudiencesClient,
    AudiencesClient,
    ConfigurationError,
    IdAction,
    InvalidSettingError,
    RetryPolicy,
    TransportError,
    UnexpectedResponseError,
)
from batch_audiences.testing import Emulator, FaultPlan, ScriptedResponse

from .test_careless_callers import no_asyncio_errors  # noqa: F401  (autouse: asyncio logged no error)

SECRET = "sk-live-security-5b8d1f4a6c0e7f3a9c2e"
NO_RETRY = RetryPolicy(max_retries=0)
PACKAGE = Path(batch_audiences.__file__).parent

# A self-signed certificate for 127.0.0.1 / localhost, valid 2000-2100, made for these tests only
# (openssl ca -selfsign). No client trusts it unless told to.
TEST_KEY_PEM = """-----BEGIN PRIVATE KEY-----
MIIEvAIBADANBgkqhkiG9w0BAQEFAASCBKYwggSiAgEAAoIBAQCydFIPRyKeeFjS
DqFanCp13907NX/hKrrCPFgngKH/OY6waygPKoq6gWr5h4csf72WidADcoKjGjue
oKqfa3wBZ7GL4ulVxd/zkV49oA4gEMQRtLTVpUgf4E4z5AX+XKiVZSzS1ILxjAlB
Um2QBNZFumYhJUTjMvpj7vmuCkEH1rP7yTUtreYMNu4bJ3UKxMDHyvOygtqkNymQ
1z1jiePMIozKVU7ZuQI/SsTURGFgdryIXuHuTzLOrF0fA48nco8MH7vREl0NeJBZ
KMgIr0nOTN//A8HinmlGhPiMLqRB9m9WHfQFMq+sdvppSSld+fkE631Gn8HPfX4u
/PdErb9DAgMBAAECggEAF9ZxQ7iFMlVHIBVzjk6qtADfD31aWLHu1+qxp+KHQTg8
tuo0JAUob44Ww8BL2TDdxWchUeSQ+Mfp9jWQtSeUHVKZpThUDPDCtUl8z486ySO+
3SfzY/qRGNj1+U6DUnKpflNRL9R9WAC/F7+yrPidxXCxxcmxsFvAlhV3urzZ6k7r
BR9xuHLfdP0w1u03cS2XrdOt4lhHyaUPz3oi5GoGAy6nC4Xz4aTJLPok6Dcx6Su+
R3JRcNvTU/oq22gz66tXUdfQPQMXl4tBIIsgICyuS+VIrrNXjPJYdR1Qz/bcIb4a
ltoUfYmhZaE8pZl79zjcXADXP+OvaZF/R8iJjFaCOQKBgQDbflrB4cgBg3QbHHqk
F+tYP3gEfPHdQ6KlOrtyLSAUgTTrnJ1kIQS1AVK+1Affhhf18+oJA9spBjBIYDW/
vG1uK5Qfrp7LCBNMywDDcMXt56K9XNBR3lMxhJNQajVws2GebiByVGZt1kgmbSFN
tfV+g1BkBoxEL8vTjRgrA3gtJwKBgQDQIpcVL92/G49LPLnx87m7ozx5iTwLstga
WF8efULRGYcWpCa5mIwPMjG2fUZltfujwY92IQMldlPblCCdqRg0Z+VfbBMmQMW8
PGVtbee/Ij6BYVmIjXvioOWK7ju3RI0vCiVGv6POhnVpaPa7u18YI0/ZkVLrQcJt
T+SVXrGmhQKBgC8h9ek2S5WPncoIlolQHZhooKQOFH3X/UAP2ZqN+BqPGEcT7XRH
5tPbgeI6c6pbCCAnjXT8H/6yNoIELuaKVtFWiEs5Wx3sEQDngrV1LPuGRxr0qEM8
Q48ZkeytseYOjwLPUSZb21bwsbOWsZUXYq0VE5k3Er29qb42yR7Lcu33AoGAV9gB
hAOrx1jOZaa/pAqFvVfr0i/Fk/prktLxcmDTroTjqv6lCXgExPUeXjMJXywrhLXQ
4r6UIV+LjQU7rs8LVDL1cAyhGGgGDKhA9qqIQPcnAlwf+a4dN01JFBXwRi08mTni
+bUwYZ4GN/MBD8LJI9rjfKQFJx2d/ZzWkORifjECgYA0uRCxMLa1a+HcVe+dOC9H
vs59W86qMsVKH98vxzaX2+oPRwkpKJLM76wYIIIxCdW+MxFm7W0LSsdL8YBj8apV
C6lfgO5WYBqOTaLZSUmz1BcQjDb4gsEoEXo6D9O4PVmhYT3zwMDViqr5/hI3S5Nv
kJK3P+XyN/mbkSIRWwi5FA==
-----END PRIVATE KEY-----
"""
TEST_CERT_PEM = """-----BEGIN CERTIFICATE-----
MIIC7TCCAdWgAwIBAgIBATANBgkqhkiG9w0BAQsFADAUMRIwEAYDVQQDDAkxMjcu
MC4wLjEwIBcNMDAwMTAxMDAwMDAwWhgPMjEwMDAxMDEwMDAwMDBaMBQxEjAQBgNV
BAMMCTEyNy4wLjAuMTCCASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALJ0
Ug9HIp54WNIOoVqcKnXf3Ts1f+EqusI8WCeAof85jrBrKA8qirqBavmHhyx/vZaJ
0ANygqMaO56gqp9rfAFnsYvi6VXF3/ORXj2gDiAQxBG0tNWlSB/gTjPkBf5cqJVl
LNLUgvGMCUFSbZAE1kW6ZiElROMy+mPu+a4KQQfWs/vJNS2t5gw27hsndQrEwMfK
87KC2qQ3KZDXPWOJ48wijMpVTtm5Aj9KxNREYWB2vIhe4e5PMs6sXR8Djydyjwwf
u9ESXQ14kFkoyAivSc5M3/8DweKeaUaE+IwupEH2b1Yd9AUyr6x2+mlJKV35+QTr
fUafwc99fi7890Stv0MCAwEAAaNIMEYwGgYDVR0RBBMwEYcEfwAAAYIJbG9jYWxo
b3N0MAkGA1UdEwQCMAAwHQYDVR0OBBYEFGPSwRMz6YpAHbef8Bllse79qdjmMA0G
CSqGSIb3DQEBCwUAA4IBAQBZur84KosT8y2YQGYEfH/E9hkbRp5nx5Zi41WMnLmQ
GvOqc7MWWVOl4nxTzc30ZgvIeSWFeIvIJbJitfdm5Ob7c0I9eCg7oWNroRq/5Zus
YG0XFRf9WwixEKIwDBHjy+C13Y6wXyXfG6qr+CIOIl0m4CHjND8GAkjII1Y1pk9j
3kkR0NgYARJae7kEikABUG6+gsjs8efdgmkQpHo5V7XVFDPQU8/bepsKafeJk3Sl
n5gcCekFoDPHhBalQ6NJGKyZ2CwGo+t4ZJCKgPdsmNenSOiKiUGmpVmzR/qkBxIr
i6B5BG8PElBePxOdhCpvrypbxmyPwFhG8E5W7SV/C0EM
-----END CERTIFICATE-----
"""


# -- TLS -------------------------------------------------------------------------------------


def test_no_code_path_turns_certificate_checks_off() -> None:
    # Every way aiohttp or ssl can be told not to verify, searched in the SDK's own sources.
    forbidden = re.compile(
        r"ssl\s*=\s*False|verify_ssl|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
        r"|ssl\._create_default_https_context"
    )
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if forbidden.search(line)
    ]
    assert not found, found


@pytest.mark.parametrize("client_class", [AsyncAudiencesClient, AudiencesClient])
def test_no_setting_disables_verification(client_class: type[Any]) -> None:
    # allow_insecure_http only permits plain http:// to a named host; nothing touches TLS.
    names = set(inspect.signature(client_class.__init__).parameters)
    suspicious = {n for n in names if re.search(r"ssl|tls|verify|cert|insecure", n)}
    assert suspicious == {"allow_insecure_http"}


@attrs.define
class Hits:
    count: int = 0
    authorizations: list[str] = attrs.Factory(list)


async def _serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    return runner, int(runner.addresses[0][1])


def _recording_app(hits: Hits, status: int = 200, body: bytes = b'{"name": "vip", "nb_ids": 1}',
                   headers: dict[str, str] | None = None) -> web.Application:
    async def handle(request: web.Request) -> web.Response:
        hits.count += 1
        hits.authorizations.append(request.headers.get("Authorization", ""))
        return web.Response(status=status, body=body, headers=headers or {"Content-Type": "application/json"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def untrusted_https(tmp_path: Path) -> AsyncIterator[tuple[str, Hits, Path]]:
    """An HTTPS server on loopback with a certificate no one trusts; and that certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(TEST_CERT_PEM)
    key.write_text(TEST_KEY_PEM)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    hits = Hits()
    runner, port = await _serve(_recording_app(hits), context)
    try:
        yield f"https://127.0.0.1:{port}", hits, cert
    finally:
        await runner.cleanup()


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent(
    untrusted_https: tuple[str, Hits, Path],
) -> None:
    url, hits, cert = untrusted_https
    async with AsyncAudiencesClient(SECRET, "project_x", base_url=url, retry=NO_RETRY, timeout=5) as client:
        with pytest.raises(TransportError, match=r"(?i)certificate") as raised:
            await client.view("vip")
    assert SECRET not in str(raised.value)
    assert hits.count == 0, "the request (and its key) went to a server whose certificate failed"

    # Control: the same server is fine for a caller who explicitly trusts that certificate with
    # a session of their own, the one deliberate way to change what is trusted.
    context = ssl.create_default_context(cafile=str(cert))
    context.verify_flags &= ~getattr(ssl, "VERIFY_X509_STRICT", 0)
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session,
        AsyncAudiencesClient(SECRET, "project_x", base_url=url, session=session, retry=NO_RETRY) as client,
    ):
        assert (await client.view("vip")).nb_ids == 1
    assert hits.count == 1


def _senders() -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    return [
        ("default", dict),
        ("allow_insecure_http", lambda: {"allow_insecure_http": True}),
        ("own AiohttpSender", lambda: {"sender": AiohttpSender(max_response_bytes=1 << 20)}),
        ("both", lambda: {"allow_insecure_http": True, "sender": AiohttpSender(max_connections=1)}),
    ]


@pytest.mark.parametrize("settings", [s for _, s in _senders()], ids=[n for n, _ in _senders()])
async def test_every_way_of_building_a_client_verifies_certificates(
    untrusted_https: tuple[str, Hits, Path], settings: Callable[[], dict[str, Any]]
) -> None:
    # Through the real TLS handshake with a loopback server whose certificate nobody trusts:
    # allow_insecure_http (plain http only) and a sender built with options of its own change
    # nothing about verification.
    url, hits, _ = untrusted_https
    async with AsyncAudiencesClient(
        SECRET, "project_x", base_url=url, retry=NO_RETRY, timeout=5, **settings()
    ) as client:
        with pytest.raises(TransportError, match=r"(?i)certificate") as raised:
            await client.create("vip")
    assert SECRET not in str(raised.value)
    assert hits.count == 0


# -- plain http -----------------------------------------------------------------------------

REFUSED_HTTP = [
    "http://api.batch.com",
    "http://example.com:8080",
    "HTTP://EXAMPLE.COM",
    "http://10.0.0.1",
    "http://192.168.1.10:8000",
    "http://0.0.0.0:8080",
    "http://localhost.evil.example",
    "http://127.0.0.1.nip.io",
    "http://2130706433",  # 127.0.0.1 in decimal: not a loopback name to the SDK, refused
    "http://127.0.0.1@evil.example",
    "http://user:pass@127.0.0.1",
    "http://evil.example#@127.0.0.1",
    "https://127.0.0.1?redirect=http://evil.example",
]
ALLOWED_HTTP = ["http://127.0.0.1:8080", "http://127.9.9.9", "http://localhost:1", "http://LOCALHOST", "http://[::1]:9"]


@pytest.mark.parametrize("client_class", [AsyncAudiencesClient, AudiencesClient])
@pytest.mark.parametrize("url", REFUSED_HTTP)
def test_plain_http_beyond_loopback_is_refused(client_class: type[Any], url: str) -> None:
    with pytest.raises(InvalidSettingError) as raised:
        client_class(SECRET, "project_x", base_url=url)
    assert isinstance(raised.value, ConfigurationError)
    assert raised.value.field == "base_url"


@pytest.mark.parametrize("url", ALLOWED_HTTP)
def test_plain_http_to_loopback_is_allowed(url: str) -> None:
    assert AsyncAudiencesClient(SECRET, "project_x", base_url=url).config.base_url == url


def test_plain_http_elsewhere_needs_the_explicit_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    client = AsyncAudiencesClient(SECRET, "project_x", base_url="http://proxy.internal:8080",
                                  allow_insecure_http=True)
    assert client.config.base_url == "http://proxy.internal:8080"
    # The environment variable cannot opt in by itself.
    monkeypatch.setenv("BATCH_API_BASE_URL", "http://proxy.internal:8080")
    with pytest.raises(InvalidSettingError):
        AsyncAudiencesClient(SECRET, "project_x")


# -- redirects --------------------------------------------------------------------------------


@pytest.fixture
async def redirecting() -> AsyncIterator[tuple[str, Hits, Hits, Callable[[int], None]]]:
    """Server A answers every request with a redirect to server B (another port: another origin)."""
    target_hits = Hits()
    target, target_port = await _serve(_recording_app(target_hits))
    first_hits = Hits()
    status = {"code": 302}

    async def redirect(request: web.Request) -> web.Response:
        first_hits.count += 1
        first_hits.authorizations.append(request.headers.get("Authorization", ""))
        location = f"http://127.0.0.1:{target_port}{request.path_qs}"
        return web.Response(status=status["code"], headers={"Location": location})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    first, first_port = await _serve(app)

    def set_status(code: int) -> None:
        status["code"] = code

    try:
        yield f"http://127.0.0.1:{first_port}", first_hits, target_hits, set_status
    finally:
        await first.cleanup()
        await target.cleanup()


OPERATIONS: list[tuple[str, Callable[[AsyncAudiencesClient], Awaitable[object]]]] = [
    ("view", lambda c: c.view("vip")),
    ("list", lambda c: c.list()),
    ("create", lambda c: c.create("vip")),
    ("update", lambda c: c.update("vip", [IdAction.add("u1")])),
    ("remove", lambda c: c.remove("vip")),
]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirects_are_not_followed_and_the_key_stays_home(
    redirecting: tuple[str, Hits, Hits, Callable[[int], None]], status: int
) -> None:
    url, first, target, set_status = redirecting
    set_status(status)
    async with AsyncAudiencesClient(SECRET, "project_x", base_url=url, retry=NO_RETRY) as client:
        for name, operation in OPERATIONS:
            with pytest.raises(UnexpectedResponseError) as raised:
                await operation(client)
            assert raised.value.status == status, name
            assert SECRET not in str(raised.value)
            # It says what happened and where the server pointed, plainly.
            assert f"a redirect ({status}) to http://127.0.0.1:" in str(raised.value), str(raised.value)
            assert "not followed" in str(raised.value)
    assert first.count == len(OPERATIONS)
    assert first.authorizations == [f"Bearer {SECRET}"] * len(OPERATIONS)  # sent where configured
    assert target.count == 0, "a redirect was followed to another host"


async def test_the_blocking_client_does_not_follow_redirects_either(
    redirecting: tuple[str, Hits, Hits, Callable[[int], None]],
) -> None:
    url, first, target, _ = redirecting
    with (
        AudiencesClient(SECRET, "project_x", base_url=url, retry=NO_RETRY) as client,
        pytest.raises(APIError) as raised,
    ):
        await asyncio.to_thread(client.view, "vip")
    assert raised.value.status == 302
    assert first.count == 1
    assert target.count == 0


# -- the key in logs and reports of bulk calls -------------------------------------------------


async def test_bulk_calls_under_faults_never_show_the_key(caplog: pytest.LogCaptureFixture) -> None:
    events: list[object] = []
    async with Emulator(indexing_delay=0.0, api_key=SECRET) as emu:
        emu.add_audience("crm")
        async with AsyncAudiencesClient(
            SECRET, emu.project_key, base_url=emu.base_url, timeout=2.0,
            retry=RetryPolicy(max_retries=8, base_delay=0.001, max_delay=0.005),
        ) as client:
            with caplog.at_level(logging.DEBUG):  # every logger
                emu.faults = FaultPlan(seed=11, rate_429=0.15, retry_after=0.005, rate_503=0.1,
                                       drop_before=0.05, drop_after=0.05)
                # Some answers echo the key back, as a misconfigured proxy might.
                emu.script(
                    ScriptedResponse(400, {"error_code": "BAD", "error_message": f"key {SECRET} refused"},
                                     route="update"),
                    ScriptedResponse(500, f"<pre>Authorization: Bearer {SECRET}</pre>", route="create"),
                )
                uploaded = await client.upload("crm", (f"u{n}" for n in range(2_000)), chunk_size=100,
                                               concurrency=3, on_progress=events.append)
                created = await client.create_many([f"a{n}" for n in range(40)] + ["bad name"],
                                                   on_progress=events.append)
    assert uploaded.failed_chunks, "the echoing 400 should have failed one chunk"
    assert created.failed, "the echoing 500 and the bad name should have failed"
    texts = [
        caplog.text, repr(uploaded), str(uploaded), uploaded.summary(), repr(created), str(created),
        created.summary(), *(repr(event) for event in events),
        *(repr(chunk.error) + str(chunk.error) for chunk in uploaded.failed_chunks),
        *(repr(item.error) + str(item.error) for item in created.failed),
    ]
    for text in texts:
        assert SECRET not in text
        assert SECRET[:12] not in text
