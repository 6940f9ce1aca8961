"""The zero-wait test mode: retry back-offs and rate-limiter pauses take no time.

Public as :func:`batch_audiences.testing.set_testing` and
:func:`batch_audiences.testing.is_testing` (``stamina.set_testing`` is the model). Every wait of
the SDK that exists to be polite to a server sleeps through :func:`pause`, so one switch makes a
test suite that meets retries and throttling fast, without patching anything private. The waits
are still computed, counted and reported to hooks; only the sleeping is skipped.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["TestingMode", "is_testing", "pause", "set_testing"]

_testing = False


def is_testing() -> bool:
    """Whether the zero-wait test mode is on.

    >>> from batch_audiences.testing import is_testing
    >>> is_testing()
    False
    """
    return _testing


class TestingMode:
    """What :func:`set_testing` returns: a context manager (``with`` or ``async with``) that
    restores the mode in force before the call."""

    __slots__ = ("_before",)
    __test__ = False  # not a test class, whatever pytest thinks of its name

    def __init__(self, before: bool) -> None:
        self._before = before

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _testing
        _testing = self._before

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def set_testing(testing: bool = True) -> TestingMode:
    """Turn the zero-wait test mode on (or off) for every client of the process.

    Retries still happen, as many as the policy allows, and waits are still computed (and given
    to hooks as :class:`RetryScheduled` events); they just take no time. Call it once (in a
    ``conftest.py``, say), or use it as a context manager to switch it for a block only:

    >>> from batch_audiences.testing import is_testing, set_testing
    >>> with set_testing(True):
    ...     is_testing()
    True
    >>> is_testing()
    False
    """
    global _testing
    before, _testing = _testing, bool(testing)
    return TestingMode(before)


async def pause(seconds: float) -> None:
    """Sleep ``seconds``; in test mode, only give other tasks their turn."""
    await asyncio.sleep(0.0 if _testing else seconds)
