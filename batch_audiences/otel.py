"""OpenTelemetry tracing for the clients: one span per HTTP attempt, made by a hook.

Needs the ``otel`` extra (``pip install 'batch-audiences[otel]'``, which brings
``opentelemetry-api``); without it, building :class:`OpenTelemetryHook` raises one clear line
saying so. Spans go to the tracer provider you configured (the global one by default)::

    from batch_audiences import AsyncAudiencesClient
    from batch_audiences.otel import OpenTelemetryHook

    client = AsyncAudiencesClient(hooks=[OpenTelemetryHook()])

Each span is named after the method and route (``POST /audiences/update``), is of kind
``CLIENT``, and carries the route, the HTTP method and status, the attempt number and the
audience's name. Nothing else: never a header, a body or the key.
"""

from __future__ import annotations

from typing import Any

from ._hooks import AnswerReceived, HookEvent, RequestFailed, RequestSent

__all__ = ["INSTALL_HINT", "OpenTelemetryHook"]

INSTALL_HINT = (
    "OpenTelemetry tracing needs the otel extra: pip install 'batch-audiences[otel]'"
)


class OpenTelemetryHook:
    """A hook (``hooks=[OpenTelemetryHook()]``) that records one span per HTTP attempt.

    ``tracer_provider``: where spans go (default: OpenTelemetry's global provider).
    """

    def __init__(self, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            raise ModuleNotFoundError(INSTALL_HINT) from None
        from ._version import __version__

        self._trace = trace
        self._tracer = trace.get_tracer("batch_audiences", __version__, tracer_provider=tracer_provider)
        # Spans of attempts still waiting for their answer, by (request, attempt).
        self._open: dict[tuple[int, int], Any] = {}

    def __call__(self, event: HookEvent) -> None:
        if isinstance(event, RequestSent):
            attributes: dict[str, str | int] = {
                "http.request.method": event.method,
                "http.route": event.route,
                "batch_audiences.attempt": event.attempt,
                "http.request.resend_count": event.attempt - 1,
            }
            if event.audience is not None:
                attributes["batch_audiences.audience"] = event.audience
            span = self._tracer.start_span(
                f"{event.method} {event.route}", kind=self._trace.SpanKind.CLIENT, attributes=attributes
            )
            self._open[(event.request_id, event.attempt)] = span
        elif isinstance(event, AnswerReceived):
            span = self._open.pop((event.request_id, event.attempt), None)
            if span is not None:
                span.set_attribute("http.response.status_code", event.status)
                if event.status >= 400:
                    span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, f"HTTP {event.status}"))
                    span.set_attribute("error.type", str(event.status))
                span.end()
        elif isinstance(event, RequestFailed):
            span = self._open.pop((event.request_id, event.attempt), None)
            if span is not None:
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, event.reason))
                span.set_attribute("error.type", event.reason.split(":", 1)[0])
                span.end()
