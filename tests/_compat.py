"""What the tests need from Python 3.11+, on 3.10 too (the package supports 3.10)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import datetime

__all__ = ["async_timeout", "fromisoformat"]

if sys.version_info >= (3, 11):
    async_timeout = asyncio.timeout
else:

    @contextlib.asynccontextmanager
    async def async_timeout(seconds: float) -> AsyncIterator[None]:
        """``asyncio.timeout`` for 3.10: cancel the current task after ``seconds``, raise TimeoutError."""
        task = asyncio.current_task()
        assert task is not None, "async_timeout needs a running task"
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        handle = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            yield
        except asyncio.CancelledError:
            # Only our own cancellation becomes a timeout; a cancel from outside stays a cancel.
            if expired:
                raise TimeoutError from None
            raise
        finally:
            handle.cancel()


def fromisoformat(text: str) -> datetime:
    """``datetime.fromisoformat`` that reads a 1-6 digit fraction on 3.10 as 3.11+ does."""
    if sys.version_info < (3, 11):
        head, dot, rest = text.partition(".")
        if dot:
            digits = len(rest) - len(rest.lstrip("0123456789"))
            text = f"{head}.{rest[:digits].ljust(6, '0')}{rest[digits:]}"
    return datetime.fromisoformat(text)
