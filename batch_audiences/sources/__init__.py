"""Readers for the data bulk jobs start from: CSV, NDJSON and text files (compressed or not),
Arrow data (pyarrow tables, pandas and polars DataFrames, DuckDB results), Parquet files, SQL
queries, and ``create_many`` manifests.

Each reader is lazy and streaming: nothing is read until it is iterated, and it holds one row
(text) or one batch (Arrow, Parquet, SQL) at a time, so it can feed
:meth:`AsyncAudiencesClient.upload` a source of any size. Bad rows are never dropped silently:
with ``errors="raise"`` (the default) the first one raises a :class:`SourceError` naming its
position; with ``errors="collect"`` it is recorded in the reader's :attr:`~SourceReader.errors`
(a :class:`RowError` with its line, or row number, batch and offset) and reading goes on, up to
``max_errors`` bad rows if given, and the job can report them all at the end.

>>> import tempfile, os
>>> from batch_audiences.sources import read_csv
>>> path = os.path.join(tempfile.mkdtemp(), "crm.csv")
>>> with open(path, "w") as file:
...     _ = file.write("id,plan,score\\nu1,pro,3\\n,free,1\\nu3,free,x\\n")
>>> reader = read_csv(path, attributes={"plan": "str", "score": "int"}, errors="collect")
>>> [member.id for member in reader]
['u1']
>>> [str(error) for error in reader.errors]
["line 3: empty ID in column 'id'", "line 4: column 'score': not an integer: 'x'"]

What each reader yields, ready for ``upload``:

- :func:`read_text`: ``str`` IDs.
- :func:`read_csv`: ``str`` IDs when no attribute and no action column is chosen (the fastest
  path), else :class:`Member` (with the typed attributes) or, with ``action_column``,
  :class:`IdAction`.
- :func:`read_ndjson`: per line, a JSON string is an ID; a JSON object gives a :class:`Member`,
  or an :class:`IdAction` when it has an ``action`` key.
- :func:`read_arrow`, :func:`read_parquet` (``[parquet]`` extra), :func:`read_sql` (``[sql]``
  extra): :class:`Member` with attributes typed from the source's own types, or ``str`` IDs
  when no attribute column is chosen. An async SQLAlchemy engine gives an
  :class:`AsyncSourceReader` (``async for``).
- :func:`read_manifest`: :class:`NewAudience` for ``create_many``.

**IDs**, in every reader: a string, or an integer (sent as its decimal string); at most
:data:`~batch_audiences.MAX_ID_LENGTH` characters. Anything else — ``5.0``, ``true``, an empty
string, a null — is a bad row with its reason. A float column or key is never guessed to be
an integer. Paths ending in ``.gz``, ``.bz2``, ``.xz`` (standard library) or ``.zst`` (with the
``zstandard`` package, ``[zstd]`` extra) are decompressed as they are read.

Attribute types, for CSV columns (and NDJSON keys chosen with ``attributes=``): ``"str"``
(default), ``"int"``, ``"float"``, ``"bool"`` (true/false, yes/no, 1/0, t/f, y/n), ``"date"``
(ISO 8601; a date alone is midnight UTC, a time without offset is UTC; sent as ``date(key)``) and
``"url"`` (http or https; sent as ``url(key)``). The Python types ``str``, ``int``, ``float``,
``bool``, ``datetime`` and :class:`Url` are accepted as well. An empty cell means "no value": the
attribute is left out of that row.
"""

from __future__ import annotations

from ._arrow import read_arrow
from ._convert import ATTRIBUTE_TYPES, AttributeSpec
from ._csv import read_csv
from ._extras import MissingExtraError
from ._files import COMPRESSIONS, SourceFile
from ._manifest import read_manifest
from ._ndjson import read_ndjson
from ._parquet import read_parquet
from ._rows import AsyncSourceReader, RowError, SourceError, SourceReader
from ._sql import read_sql, safe_url
from ._text import read_text

__all__ = [
    "ATTRIBUTE_TYPES",
    "COMPRESSIONS",
    "AsyncSourceReader",
    "AttributeSpec",
    "MissingExtraError",
    "RowError",
    "SourceError",
    "SourceFile",
    "SourceReader",
    "read_arrow",
    "read_csv",
    "read_manifest",
    "read_ndjson",
    "read_parquet",
    "read_sql",
    "read_text",
    "safe_url",
]
