"""Text files as numbered lines: paths (compressed or not, by extension) and open files."""

from __future__ import annotations

import bz2
import codecs
import contextlib
import gzip
import io
import lzma
import os
from collections.abc import Iterable, Iterator
from typing import IO, Final

from .._errors import ValidationError
from ._extras import require

__all__ = ["COMPRESSIONS", "SourceFile", "check_encoding", "compression_of", "lines", "open_binary"]

#: A file to read: a path, or an open file (text or binary; ``-`` is not special here).
SourceFile = str | os.PathLike[str] | IO[str] | IO[bytes]

#: Extensions read through a decompressor (``.zst`` needs the ``zstandard`` package).
COMPRESSIONS: Final = (".gz", ".bz2", ".xz", ".zst")

#: One (numbered line, text, could not be decoded) per physical line, newline kept.
Line = tuple[int, str, bool]


def compression_of(path: str | os.PathLike[str]) -> str | None:
    """The compression suffix of ``path`` (``".gz"``…), or ``None``."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    return suffix if suffix in COMPRESSIONS else None


def open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened for reading bytes, decompressed as its extension says, streaming."""
    compression = compression_of(path)
    if compression == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if compression == ".bz2":
        return bz2.open(path, "rb")
    if compression == ".xz":
        return lzma.open(path, "rb")
    if compression == ".zst":
        zstandard = require("zstandard", extra="zstd", feature="reading a .zst file")
        raw = open(path, "rb")  # noqa: SIM115 - closed with the reader below
        try:
            stream = zstandard.ZstdDecompressor().stream_reader(raw, closefd=True)
        except BaseException:
            raw.close()
            raise
        # A buffered reader for fast line iteration; the decompressor only offers read().
        return io.BufferedReader(stream)
    return open(path, "rb")


def check_encoding(encoding: object) -> str:
    try:
        codecs.lookup(encoding)  # type: ignore[arg-type]
    except (LookupError, TypeError):
        raise ValidationError("encoding", f"unknown encoding {encoding!r}") from None
    return str(encoding)


def check_file(source: object) -> None:
    if not isinstance(source, (str, os.PathLike)) and not hasattr(source, "__iter__"):
        raise ValidationError("source", f"must be a path or an open file, got {type(source).__name__}")


@contextlib.contextmanager
def lines(source: SourceFile, encoding: str) -> Iterator[Iterator[Line]]:
    """``(line number, text, decoding failed)`` for each physical line, newline kept."""
    if isinstance(source, (str, os.PathLike)):
        with open_binary(source) as file:
            yield _decode(file, encoding)
    elif isinstance(source, io.TextIOBase) or hasattr(source, "encoding"):
        yield _numbered(source)  # type: ignore[arg-type]
    else:
        yield _decode(source, encoding)  # type: ignore[arg-type]


def _decode(file: Iterable[bytes], encoding: str) -> Iterator[Line]:
    decoder = codecs.lookup(encoding)
    utf8 = decoder.name == "utf-8"
    for number, raw in enumerate(file, 1):
        if number == 1 and utf8 and raw.startswith(codecs.BOM_UTF8):
            raw = raw[len(codecs.BOM_UTF8):]
        try:
            yield number, raw.decode(encoding), False
        except UnicodeDecodeError:
            yield number, raw.decode(encoding, "replace"), True


def _numbered(file: Iterable[str]) -> Iterator[Line]:
    for number, text in enumerate(file, 1):
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        yield number, text, False
