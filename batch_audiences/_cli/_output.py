"""Where the CLI's words go: results on stdout (tables or one JSON document), chatter on stderr.

Every line that leaves the process goes through :class:`Console`, which masks the REST API key
wherever it might appear, so no code path of the CLI can print it by accident.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any, TextIO

from .._models import Audience

__all__ = ["Console", "audience_to_dict", "format_count", "format_duration", "table"]


def format_count(value: int) -> str:
    """``1234567`` -> ``'1,234,567'``."""
    return f"{value:,}"


def format_duration(seconds: float) -> str:
    """A short human duration: ``'0.4s'``, ``'12s'``, ``'3m05s'``, ``'2h01m'``."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _plain(value: object) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def audience_to_dict(audience: Audience) -> dict[str, Any]:
    """An :class:`Audience` as the JSON object the CLI prints."""
    return {
        "name": audience.name,
        "display_name": audience.display_name,
        "type": _plain(audience.type),
        "nb_ids": audience.nb_ids,
        "indexing_state": _plain(audience.indexing_state),
        "created": _plain(audience.created),
        "updated": _plain(audience.updated),
    }


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], *, numeric: Sequence[int] = ()) -> str:
    """Rows as aligned text columns under a header; ``numeric`` columns are right-aligned."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append("  ".join(parts).rstrip())
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def key_values(pairs: Iterable[tuple[str, object]]) -> str:
    """``key  value`` lines, keys padded to one width."""
    items = [(key, "" if value is None else str(value)) for key, value in pairs]
    width = max((len(key) for key, _ in items), default=0)
    return "\n".join(f"{key.ljust(width)}  {value}".rstrip() for key, value in items)


class Console:
    """The CLI's two output streams, with its verbosity and the secret to mask.

    ``quiet`` drops notes (and progress, which asks :attr:`chatty`); errors and results are
    always written. ``json_mode`` makes :meth:`result` print one JSON document instead of text.
    """

    def __init__(
        self,
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        json_mode: bool = False,
        quiet: bool = False,
        verbose: bool = False,
    ) -> None:
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self._secrets: list[str] = []

    def add_secret(self, secret: str | None) -> None:
        """Mask ``secret`` in everything written from now on."""
        if secret and secret not in self._secrets:
            self._secrets.append(secret)

    def redact(self, text: str) -> str:
        """``text`` with every registered secret replaced by a masked form."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "…" + secret[-4:] if len(secret) >= 12 else "…")
        return text

    @property
    def chatty(self) -> bool:
        """Whether notes and progress go to stderr (not with ``-q``)."""
        return not self.quiet

    def note(self, message: str) -> None:
        """An informational line on stderr, unless quiet."""
        if not self.quiet:
            self._write(self.err, message)

    def warn(self, message: str) -> None:
        """A warning line on stderr, even when quiet."""
        self._write(self.err, f"warning: {message}")

    def error(self, message: str) -> None:
        """The one error line on stderr."""
        self._write(self.err, f"error: {message}")

    def raw_err(self, text: str) -> None:
        """Text on stderr as is (a traceback, a progress line), redacted, no newline added."""
        try:
            self.err.write(self.redact(text))
            self.err.flush()
        except (BrokenPipeError, ValueError):  # the reader went away, or the stream is closed
            pass

    def text(self, message: str) -> None:
        """A line of the human result on stdout (nothing in JSON mode)."""
        if not self.json_mode:
            self._write(self.out, message)

    def result(self, document: Mapping[str, Any] | Sequence[Any], text: str | None = None) -> None:
        """The command's result: ``document`` as JSON with ``--json``, else ``text`` if given."""
        if self.json_mode:
            self._write(self.out, json.dumps(document, indent=2, ensure_ascii=False, default=_plain))
        elif text is not None:
            self._write(self.out, text)

    def _write(self, stream: TextIO, message: str) -> None:
        try:
            stream.write(self.redact(message) + "\n")
            stream.flush()
        except (BrokenPipeError, ValueError):
            pass
