"""Parquet files, streamed batch by batch, only the columns asked for."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from .._errors import ValidationError
from .._models import Member
from ._arrow import BATCH_ROWS, read_batches
from ._convert import AttributeSpec, attribute_specs
from ._extras import require
from ._rows import SourceError, SourceReader

__all__ = ["read_parquet"]


def read_parquet(
    path: str | os.PathLike[str],
    *,
    id_column: str | None = None,
    attributes: AttributeSpec | None = None,
    errors: str = "raise",
    max_errors: int | None = None,
    batch_size: int = BATCH_ROWS,
) -> SourceReader[str | Member]:
    """Members from a Parquet file, read ``batch_size`` rows at a time (never the whole file),
    and only the ID and attribute columns (column projection). Columns, types, nulls and bad
    rows as in :func:`read_arrow`; ``id_column`` defaults to the file's first column.

    Needs ``pyarrow`` (``pip install 'batch-audiences[parquet]'``).

    >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq
    >>> path = os.path.join(tempfile.mkdtemp(), "users.parquet")
    >>> pq.write_table(pa.table({"user": ["u1", "u2"], "plan": ["pro", None], "x": [1, 2]}), path)
    >>> list(read_parquet(path, id_column="user", attributes=["plan"]))
    [Member(id='u1', attributes={'plan': 'pro'}), Member(id='u2', attributes=None)]
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValidationError("path", f"must be a path, got {type(path).__name__}")
    if type(batch_size) is not int or batch_size < 1:
        raise ValidationError("batch_size", f"must be a positive integer, got {batch_size!r}")
    specs = attribute_specs(attributes, untyped=None)
    parquet: Any = require("pyarrow.parquet", extra="parquet", feature="read_parquet")

    def produce(reader: SourceReader[str | Member]) -> Iterator[tuple[Iterable[int], list[str | Member]]]:
        try:
            file = parquet.ParquetFile(path)
        except OSError as error:
            raise SourceError(f"cannot read {os.fspath(path)!r} as Parquet: {error}") from None
        with file:
            names = file.schema_arrow.names
            id_name = id_column if id_column is not None else (names[0] if names else None)
            wanted = None
            if attributes is not None and id_name is not None:
                wanted = list(dict.fromkeys([id_name, *(name for name, _ in specs)]))
                missing = [name for name in wanted if name not in names]
                if missing:
                    known = ", ".join(repr(name) for name in names)
                    raise SourceError(f"no column {missing[0]!r} in {os.fspath(path)!r}; it has {known}")
            batches = file.iter_batches(batch_size=batch_size, columns=wanted)
            yield from read_batches(reader, batches, id_name, specs, attributes is not None)

    return SourceReader.batched(os.fspath(path), produce, errors=errors, max_errors=max_errors)
