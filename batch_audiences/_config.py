"""Frozen settings of a client: credentials, endpoint, timeouts, retry policy, limits.

Everything a client needs is checked here once, at construction, so that a bad setting is a
:class:`ConfigurationError` on the line that made it rather than a failure on the first request.
"""

from __future__ import annotations

import ipaddress
import math
import os
import random
import re
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

import attrs
import backoff

from ._errors import ConfigurationError, InvalidSettingError

__all__ = ["ClientConfig", "RetryPolicy", "Secret", "build_config", "derive_config"]

ENV_API_KEY: Final = "BATCH_REST_API_KEY"
ENV_PROJECT_KEY: Final = "BATCH_PROJECT_KEY"
ENV_BASE_URL: Final = "BATCH_API_BASE_URL"
DEFAULT_BASE_URL: Final = "https://api.batch.com"
_VERSION: Final = re.compile(r"\d+\.\d+")


@attrs.frozen(repr=False)
class Secret:
    """A credential that shows only its last four characters in ``repr`` and ``str``.

    >>> Secret("bcd38d9rfb38ra28")
    Secret('…ra28')
    """

    _value: str = attrs.field(alias="value")

    def reveal(self) -> str:
        """The secret itself, for the one place that must send it."""
        return self._value

    @property
    def masked(self) -> str:
        """``…`` followed by the last four characters (all hidden when the key is short)."""
        return "…" + self._value[-4:] if len(self._value) >= 12 else "…"

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    __str__ = __repr__


def _positive(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, (int, float)) and math.isfinite(value) and value > 0
    ):
        raise InvalidSettingError(attribute.name, f"must be a positive number of seconds, got {value!r}")


def _non_negative_int(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidSettingError(attribute.name, f"must be a non-negative integer, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """Which answers are retried, how often, and how long to wait between tries.

    Waits grow exponentially from ``base_delay`` up to ``max_delay``, with full jitter; a
    ``Retry-After`` (or ``X-RateLimit-Reset``) from the server raises the wait to at least
    what it asks, as long as that stays under ``max_retry_after`` — beyond it the error is raised
    at once rather than sleeping for an unbounded time.

    >>> RetryPolicy(max_retries=3).should_retry_status(503)
    True
    """

    max_retries: int = attrs.field(default=5, validator=_non_negative_int)
    base_delay: float = attrs.field(default=0.5, validator=_positive)
    max_delay: float = attrs.field(default=30.0, validator=_positive)
    max_retry_after: float = attrs.field(default=300.0, validator=_positive)
    retry_statuses: frozenset[int] = frozenset({429, 503})
    retry_connection_errors: bool = True

    def should_retry_status(self, status: int) -> bool:
        """Whether an answer with this status is worth another try."""
        return status in self.retry_statuses

    def waits(self) -> _Waits:
        """A fresh sequence of jittered waits for one request's retries."""
        return _Waits(self)


class _Waits:
    """The back-off of one request: ``backoff``'s exponential series with full jitter."""

    __slots__ = ("_policy", "_series")

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._series = backoff.expo(base=2, factor=policy.base_delay, max_value=policy.max_delay)
        next(self._series)  # backoff's generators must be primed before the first value

    def next(self, retry_after: float | None = None) -> float:
        """The wait before the next try: jittered back-off, but never less than ``retry_after``."""
        delay = backoff.full_jitter(next(self._series))
        if retry_after is not None:
            # Jitter on top of the server's figure spreads out clients that all got the same one.
            delay = max(delay, retry_after + random.uniform(0, min(1.0, retry_after * 0.1)))
        return float(delay)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str, *, allow_insecure_http: bool) -> str:
    """Return ``url`` without its trailing ``/``, or raise :class:`ConfigurationError`."""
    if not isinstance(url, str):
        raise InvalidSettingError("base_url", f"must be a string, got {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidSettingError("base_url", f"must look like https://host, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidSettingError("base_url", "must not carry a query, a fragment or credentials")
    if parts.scheme == "http" and not (allow_insecure_http or _is_loopback(parts.hostname)):
        raise InvalidSettingError(
            "base_url",
            f"refusing plain http:// to {parts.hostname}: the API key would travel unencrypted; "
            "use https://, or pass allow_insecure_http=True if you really mean it",
        )
    return url.strip().rstrip("/")


@attrs.frozen
class ClientConfig:
    """Everything a client was built with, checked; the keys are :class:`Secret`."""

    api_key: Secret
    project_key: str
    base_url: str
    api_version: str
    timeout: float = attrs.field(validator=_positive)
    max_connections: int = attrs.field(validator=_non_negative_int)
    retry: RetryPolicy
    max_rate: float | None

    @property
    def root(self) -> str:
        """The URL every route is relative to, e.g. ``https://api.batch.com/2.8``."""
        return f"{self.base_url}/{self.api_version}"


def _from_env(value: str | None, variable: str, env: Mapping[str, str]) -> str | None:
    if value is not None:
        return value
    found = env.get(variable, "").strip()
    return found or None


def _check_max_rate(max_rate: object) -> None:
    if max_rate is not None and (
        isinstance(max_rate, bool)
        or not (isinstance(max_rate, (int, float)) and math.isfinite(max_rate) and max_rate > 0)
    ):
        raise InvalidSettingError("max_rate", f"must be a positive number (requests/s), got {max_rate!r}")


def derive_config(
    config: ClientConfig,
    *,
    timeout: float | None = None,
    max_retries: int | None = None,
    max_rate: float | None = None,
) -> ClientConfig:
    """``config`` with some settings replaced (``None``: kept), each checked as at construction."""
    changes: dict[str, object] = {}
    if timeout is not None:
        changes["timeout"] = timeout
    if max_retries is not None:
        changes["retry"] = attrs.evolve(config.retry, max_retries=max_retries)
    if max_rate is not None:
        _check_max_rate(max_rate)
        changes["max_rate"] = max_rate
    return attrs.evolve(config, **changes)  # type: ignore[arg-type]


def build_config(
    api_key: str | None,
    project_key: str | None,
    *,
    base_url: str | None,
    api_version: str,
    timeout: float,
    max_retries: int,
    max_connections: int,
    max_rate: float | None,
    allow_insecure_http: bool,
    retry: RetryPolicy | None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """Resolve the client's arguments against the environment and check each of them."""
    env = os.environ if env is None else env
    key = _from_env(api_key, ENV_API_KEY, env)
    if not key:
        raise ConfigurationError(f"no REST API key: pass api_key= or set {ENV_API_KEY}")
    if not isinstance(key, str) or any(c.isspace() for c in key):
        raise InvalidSettingError("api_key", "must be a string without spaces")
    project = _from_env(project_key, ENV_PROJECT_KEY, env)
    if not project:
        raise ConfigurationError(f"no project key: pass project_key= or set {ENV_PROJECT_KEY}")
    if not isinstance(project, str) or any(c.isspace() for c in project):
        raise InvalidSettingError("project_key", "must be a string without spaces")
    url = check_base_url(
        _from_env(base_url, ENV_BASE_URL, env) or DEFAULT_BASE_URL,
        allow_insecure_http=allow_insecure_http,
    )
    if not isinstance(api_version, str) or not _VERSION.fullmatch(api_version):
        raise InvalidSettingError("api_version", f"must look like '2.8', got {api_version!r}")
    if not isinstance(max_connections, int) or isinstance(max_connections, bool) or max_connections < 1:
        raise InvalidSettingError("max_connections", f"must be a positive integer, got {max_connections!r}")
    _check_max_rate(max_rate)
    # A whole policy, when given, is the more precise statement and wins over max_retries.
    retry = retry if retry is not None else RetryPolicy(max_retries=max_retries)
    return ClientConfig(
        api_key=Secret(key),
        project_key=project,
        base_url=url,
        api_version=api_version,
        timeout=timeout,
        max_connections=max_connections,
        retry=retry,
        max_rate=max_rate,
    )
