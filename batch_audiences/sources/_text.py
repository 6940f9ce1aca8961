"""Plain text: one ID per line."""

from __future__ import annotations

from collections.abc import Iterator

from ._files import SourceFile, check_encoding, check_file, lines
from ._rows import SourceReader, id_problem

__all__ = ["read_text"]


def read_text(
    source: SourceFile, *, encoding: str = "utf-8", errors: str = "raise", max_errors: int | None = None
) -> SourceReader[str]:
    """One ID per line. Surrounding spaces are stripped; blank lines are skipped (they are not
    rows). A line that is not valid in ``encoding``, or longer than an ID may be, is a bad row.
    A path ending in ``.gz``, ``.bz2``, ``.xz`` or ``.zst`` is decompressed as it is read.

    >>> import io
    >>> list(read_text(io.BytesIO(b"u1\\n\\n  u2  \\n")))
    ['u1', 'u2']
    """
    check_file(source)
    check_encoding(encoding)

    def produce(reader: SourceReader[str]) -> Iterator[str]:
        with lines(source, encoding) as numbered:
            for number, text, undecodable in numbered:
                value = text.strip()
                if not value:
                    continue
                reader.rows += 1
                if undecodable:
                    reader.bad_row(number, f"not valid {encoding}")
                    continue
                problem = id_problem(value)
                if problem is not None:
                    reader.bad_row(number, problem)
                    continue
                reader.line = number
                yield value

    return SourceReader(source, produce, errors=errors, max_errors=max_errors)
