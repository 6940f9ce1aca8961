"""The aiohttp.web application: routing, fault handling, auth, then the API logic.

Per request: route (404, a wrong method included) -> apply due writes -> fault decision
(scripts, rate limit, random) -> added latency -> read the body -> scripted/fault answer or
drop -> maybe hold -> auth (401) -> validation (400) -> the store -> maybe drop after or answer
slowly. Paths under ``/_emulator/`` are the emulator's own inspection routes
(:meth:`ApiServer._debug`), outside all of that.

Every answer has a status Batch documents (:data:`DOCUMENTED`): aiohttp's own refusals (a body
too large, one it cannot decode, an ``Expect`` it does not know, an error escaping a handler) are
turned into the API's JSON errors. A request aiohttp cannot parse as HTTP at all (a broken request
line or header, a bad chunk size) never reaches the application: aiohttp answers it ``400`` with a
text body. Scripted answers (:class:`ScriptedResponse`) are sent as scripted, whatever their status.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import HttpVersion11, web

from ._errors import ApiError
from ._faults import Decision, FaultInjector
from ._models import RecordedRequest
from ._recording import Recorder, mask_headers
from ._state import AudienceStore
from ._validation import (
    check_json_object,
    decode_json,
    is_json,
    parse_create,
    parse_list,
    parse_remove,
    parse_replace,
    parse_update,
    parse_view,
)

logger: Final = logging.getLogger("batch_audiences.testing")

#: Large enough for 10,000 IDs with 15 attributes each; a bigger body gets a JSON 400.
MAX_BODY_BYTES: Final = 64 * 1024 * 1024
#: The statuses Batch documents; the emulator answers no other (scripted answers aside).
DOCUMENTED: Final = frozenset({200, 202, 400, 401, 404, 429, 500, 503})
_PATH_RE: Final = re.compile(r"/\d+\.\d+/audiences/([A-Za-z_]+)")
#: Where the emulator's own (non-API) inspection routes live.
DEBUG_PREFIX: Final = "/_emulator/"
_DEBUG_RE: Final = re.compile(r"/_emulator/audiences(?:/([A-Za-z0-9_-]{1,255})/members)?/?")
_METHODS: Final = {
    "create": "POST",
    "update": "POST",
    "replace": "POST",
    "remove": "POST",
    "view": "GET",
    "list": "GET",
}


@dataclass
class ServerSettings:
    """What the handler reads on each request, so the Emulator can change it at runtime."""

    api_key: str
    project_key: str
    record_bodies: bool


@dataclass
class _Result:
    """The fields of the request's record, filled in as the handler goes."""

    status: int = 0
    outcome: str = "aborted"
    body: object | None = None


def _json_response(status: int, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        content_type="application/json",
        headers=headers,
    )


def as_api_error(error: BaseException) -> ApiError:
    """The documented answer for an error that escaped the API logic (aiohttp's or a bug's)."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, web.HTTPException):
        if error.status in DOCUMENTED and error.status >= 400:
            status = error.status
        elif error.status == 405:
            status = 404  # a route is a method and a path, as in ApiServer._handle
        else:
            status = 400 if 400 <= error.status < 500 else 500
        code = "NOT_FOUND" if status == 404 else "INVALID_REQUEST" if status < 500 else "INTERNAL_ERROR"
        return ApiError(status, code, error.text or error.reason)
    if not isinstance(error, ConnectionError):  # a client gone is no news
        # A bug of the emulator's: answered as Batch would, but logged with its traceback (as
        # aiohttp would have), so it is not lost. (aiohttp would answer a timeout 504.)
        logger.error("the emulator failed on a request", exc_info=error)
    return ApiError(500, "INTERNAL_ERROR", f"the emulator failed: {type(error).__name__}")


@web.middleware
async def _documented_only(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn what aiohttp raises around the handler (its router's 404 for a path that is not one,
    such as ``CONNECT host:443``) into the API's JSON error with a documented status."""
    try:
        return await handler(request)
    except Exception as error:  # every error becomes a documented answer
        api_error = as_api_error(error)
        return _json_response(api_error.status, api_error.body())


async def _expect(request: web.Request) -> None:
    """``Expect: 100-continue`` as aiohttp does; any other expectation is ignored, not a 417
    (a status Batch does not document)."""
    if request.version == HttpVersion11 and request.headers.get("Expect", "").lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        # The interim answer is not the response's start: aiohttp counts output to know that.
        request.writer.output_size = 0


class ApiServer:
    """Serves the Audience API from an :class:`AudienceStore`."""

    def __init__(
        self,
        settings: ServerSettings,
        store: AudienceStore,
        injector: FaultInjector,
        recorder: Recorder,
        latency: Callable[[], float],
    ) -> None:
        self._settings = settings
        self._store = store
        self._injector = injector
        self._recorder = recorder
        self._latency = latency
        self._stopping = asyncio.Event()

    def make_app(self) -> web.Application:
        """A fresh application; must be called on the loop that will serve it."""
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[_documented_only])
        # One catch-all route, so unknown paths and wrong methods get the API's JSON errors.
        app.router.add_route("*", "/{tail:.*}", self.handle, expect_handler=_expect)
        return app

    def begin_stop(self) -> None:
        """Cut short every pending delay, so a stop does not wait for slow answers."""
        self._stopping.set()

    async def _sleep(self, seconds: float) -> bool:
        """Wait; False if the emulator is stopping (the request is then dropped)."""
        if seconds <= 0:
            return not self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except asyncio.TimeoutError:
            return True
        return False

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The single aiohttp handler: record the request, answer it, complete the record."""
        if request.path.startswith(DEBUG_PREFIX):
            return self._debug(request)
        match = _PATH_RE.fullmatch(request.path)
        route = match.group(1) if match is not None and match.group(1) in _METHODS else None
        slot = self._recorder.open(
            RecordedRequest(
                method=request.method,
                route=route or request.path,
                status=0,
                body=None,
                query=dict(request.query),
                outcome="in_flight",
                headers=mask_headers({str(k): v for k, v in request.headers.items()}),
                path=request.path,
                received_at=time.monotonic(),
            )
        )
        result = _Result()
        try:
            return await self._handle(request, route, result)
        except Exception as error:  # answered as a documented status, recorded
            return self._error(result, as_api_error(error))
        finally:
            self._recorder.close(slot, status=result.status, outcome=result.outcome, body=result.body)

    async def _handle(self, request: web.Request, route: str | None, result: _Result) -> web.StreamResponse:
        if route is None:
            return self._error(result, ApiError(
                404, "NOT_FOUND",
                f"no route {request.method} {request.path}; routes are "
                "/{version}/audiences/{create,update,replace,remove,view,list}",
            ))
        if request.method != _METHODS[route]:
            # A route is a method and a path: Batch documents no 405, so this is an unknown route.
            return self._error(result, ApiError(
                404, "NOT_FOUND",
                f"no route {request.method} {request.path}; {route} takes {_METHODS[route]}",
            ))

        self._store.apply_due()
        decision = self._injector.decide(route)
        if not await self._sleep(self._latency()):
            return self._drop(request, result, "aborted")

        decoded: object = None
        if request.method == "POST":
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return self._error(result, ApiError(
                    400, "PAYLOAD_TOO_LARGE", f"the request body is over {MAX_BODY_BYTES} bytes"
                ))
            except web.RequestPayloadError as error:  # e.g. a Content-Encoding it cannot decode
                return self._error(result, ApiError(
                    400, "INVALID_BODY", f"the request body cannot be read: {error}"
                ))
            # A body answered by a fault (a 429 of the rate limit, typically) is only decoded to be
            # recorded: a refused request of 10,000 IDs costs the emulator no JSON work otherwise.
            if self._settings.record_bodies or decision.kind not in ("respond", "drop_before"):
                decoded = decode_json(raw)
                if self._settings.record_bodies and is_json(decoded):
                    result.body = decoded

        if decision.kind == "respond":
            return self._scripted(decision, result)
        if decision.kind == "drop_before":
            return self._drop(request, result, "dropped_before")
        # A held request is processed late, whether or not the client still waits: aiohttp does
        # not cancel a handler when its client goes away, so the write is applied all the same.
        if decision.kind == "hold" and not await self._sleep(decision.delay):
            return self._drop(request, result, "aborted")

        if decision.kind == "crash":  # answered and logged by the catch-all, as any bug would be
            raise RuntimeError("a scripted crash of the emulator")
        try:
            self._check_auth(request)
            status, body = self._process(route, request, decoded)
        except ApiError as error:
            response = self._error(result, error)
        else:
            result.status, result.outcome = status, "held" if decision.kind == "hold" else "ok"
            response = _json_response(status, body)
        response.headers.update(self._injector.rate_headers())

        if decision.kind == "drop_after":
            return self._drop(request, result, "dropped_after")
        if decision.kind == "slow":
            if not await self._sleep(decision.delay):
                return self._drop(request, result, "aborted")
            result.outcome = "slow"
        return response

    def _debug(self, request: web.Request) -> web.Response:
        """The emulator's own inspection routes (not Batch's API): the applied state, as JSON.

        ``GET /_emulator/audiences`` lists every audience; ``GET /_emulator/audiences/{name}/members``
        gives one audience's members. They take the same two auth headers as the API, and go
        around everything else: no fault, rate limit, latency or record in :attr:`requests`.
        """
        result = _Result()
        match = _DEBUG_RE.fullmatch(request.path)
        if request.method != "GET" or match is None:
            return self._error(result, ApiError(
                404, "NOT_FOUND", f"no emulator route {request.method} {request.path}; they are GET "
                f"{DEBUG_PREFIX}audiences and GET {DEBUG_PREFIX}audiences/{{name}}/members",
            ))
        try:
            self._check_auth(request)
        except ApiError as error:
            return self._error(result, error)
        name = match.group(1)
        if name is None:
            audiences = [self._store.snapshot(n) for n in self._store.names()]
            return _json_response(200, {"audiences": [
                {"name": a.name, "display_name": a.display_name, "nb_ids": a.nb_ids,
                 "indexing_state": a.indexing_state, "pending_writes": a.pending_writes}
                for a in audiences if a is not None
            ]})
        audience = self._store.snapshot(name)
        if audience is None:
            return self._error(result, ApiError(404, "AUDIENCE_NOT_FOUND", f"no audience named {name!r}"))
        return _json_response(200, {
            "name": audience.name, "nb_ids": audience.nb_ids, "pending_writes": audience.pending_writes,
            "members": audience.members,
        })

    def _check_auth(self, request: web.Request) -> None:
        settings = self._settings
        authorization = request.headers.get("Authorization", "")
        project = request.headers.get("X-Batch-Project", "")
        # compare_digest on both, so the answer's timing does not depend on which one is wrong
        key_ok = hmac.compare_digest(authorization.encode(), f"Bearer {settings.api_key}".encode())
        project_ok = hmac.compare_digest(project.encode(), settings.project_key.encode())
        if not (key_ok and project_ok):
            missing = [h for h in ("Authorization", "X-Batch-Project") if h not in request.headers]
            detail = (
                f"missing header {', '.join(missing)}"
                if missing
                else "the REST API key is not valid for this project"
            )
            raise ApiError(401, "AUTHENTICATION_INVALID", f"authentication failed: {detail}")

    def _process(self, route: str, request: web.Request, decoded: object) -> tuple[int, object]:
        store = self._store
        if route == "view":
            return 200, store.view(*parse_view(request.query))
        if route == "list":
            return 200, store.list_page(*parse_list(request.query))
        content_type = request.content_type if "Content-Type" in request.headers else ""
        data = check_json_object(decoded, content_type)
        if route == "create":
            token = store.create(*parse_create(data))
        elif route == "update":
            token = store.update(*parse_update(data))
        elif route == "replace":
            token = store.replace(*parse_replace(data))
        else:
            token = store.remove(parse_remove(data))
        return 202, {"indexing_token": token}

    @staticmethod
    def _error(result: _Result, error: ApiError) -> web.Response:
        result.status, result.outcome = error.status, "error"
        return _json_response(error.status, error.body())

    @staticmethod
    def _scripted(decision: Decision, result: _Result) -> web.Response:
        result.status, result.outcome = decision.status, decision.outcome
        headers = dict(decision.headers)
        has_type = any(k.lower() == "content-type" for k in headers)
        body = decision.body
        if body is None:
            payload = b""
        elif isinstance(body, bytes):
            payload = body
            if not has_type:
                headers["Content-Type"] = "application/octet-stream"
        elif isinstance(body, str):
            payload = body.encode()
            if not has_type:
                headers["Content-Type"] = "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body, separators=(",", ":")).encode()
            if not has_type:
                headers["Content-Type"] = "application/json"
        return web.Response(status=decision.status, body=payload, headers=headers)

    @staticmethod
    def _drop(request: web.Request, result: _Result, outcome: str) -> web.Response:
        # Aborting the transport makes the client see a disconnection instead of an answer;
        # aiohttp then notices it cannot write the returned response and ignores it quietly.
        result.status, result.outcome = 0, outcome
        transport = request.transport
        if transport is not None:
            transport.abort()
        return web.Response(status=500)  # never sent: the connection is gone
