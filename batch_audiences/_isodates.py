"""Reading ISO 8601 / RFC 3339 dates the same way on every supported Python."""

from __future__ import annotations

import re
import sys
from datetime import datetime

__all__ = ["fromisoformat"]

# A fraction of a second right after HH:MM:SS, with "." or ",".
_FRACTION = re.compile(r"(?<=\d\d:\d\d:\d\d)[.,](\d+)")


def _six_digits(match: re.Match[str]) -> str:
    return "." + match.group(1)[:6].ljust(6, "0")


def fromisoformat(text: str) -> datetime:
    """``datetime.fromisoformat`` that also takes a trailing ``Z`` and any length of fraction.

    Python 3.10 takes neither (RFC 3339 allows both: ``2024-05-02T11:00:00.5Z``); 3.11 takes
    both, truncating a fraction to microseconds. Raises ``ValueError`` like the original.

    >>> fromisoformat("2024-05-02T11:00:00.5Z").isoformat()
    '2024-05-02T11:00:00.500000+00:00'
    """
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    if sys.version_info < (3, 11):
        # 3.10 wants exactly 3 or 6 digits; pad or cut to 6 as 3.11 reads them.
        text = _FRACTION.sub(_six_digits, text, count=1)
    return datetime.fromisoformat(text)
