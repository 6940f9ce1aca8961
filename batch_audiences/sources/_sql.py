"""SQL queries through SQLAlchemy, streamed from a server-side cursor.

The rows come in partitions of ``batch_size`` from a cursor on the server (``stream_results``
and ``yield_per``), so a query of fifty million rows holds one partition at a time. Values keep
the database driver's own types. A password in a URL never reaches a message: errors are
rewritten with the URL's password masked (``***``), whatever the driver put in them.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import TYPE_CHECKING, Any, overload

from .._errors import ValidationError
from .._models import Member
from ._convert import AttributeSpec, attribute_specs, json_value
from ._extras import require
from ._rows import AsyncSourceReader, SourceError, SourceReader, _Tally, describe, source_id

if TYPE_CHECKING:
    from sqlalchemy.engine import URL, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["read_sql", "safe_url"]


def _sqlalchemy() -> Any:
    return require("sqlalchemy", extra="sql", feature="read_sql")


def safe_url(url: object) -> str:
    """A database URL (string, ``sqlalchemy.URL`` or engine) as text with its password masked.

    >>> safe_url("postgresql://me:s3cret@db.example/crm")
    'postgresql://me:***@db.example/crm'
    """
    sqlalchemy = _sqlalchemy()
    if hasattr(url, "url"):  # an Engine or AsyncEngine
        url = url.url
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:  # any unparsable URL: show only what is surely not secret
        scheme = str(url).partition("://")[0] if "://" in str(url) else "?"
        return f"{scheme}://… (not a valid database URL)"
    return str(parsed.render_as_string(hide_password=True))


def _secrets(connectable: object) -> list[str]:
    """The password of ``connectable``'s URL, as it may appear in a message (plain and quoted)."""
    from urllib.parse import quote, quote_plus

    url = getattr(connectable, "url", connectable)
    password: str | None
    try:
        password = _sqlalchemy().engine.make_url(url).password
    except Exception:
        text = str(url)
        head, at, _ = text.rpartition("@")
        password = head.rpartition(":")[2] if at and ":" in head.partition("://")[2] else None
    if not password:
        return []
    return sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True)


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _database_error(error: BaseException, secrets: Sequence[str]) -> SourceError:
    # The driver's own message (SQLAlchemy's wrapper adds the statement and a link); one line.
    cause = getattr(error, "orig", None) or error
    message = " ".join(_redact(str(cause), secrets).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return SourceError(f"the database refused the query: {type(cause).__name__}: {message}")


@overload
def read_sql(
    connectable: AsyncEngine,
    query: Any,
    *,
    id_column: str | None = ...,
    attributes: AttributeSpec | None = ...,
    params: Mapping[str, Any] | None = ...,
    batch_size: int = ...,
    errors: str = ...,
    max_errors: int | None = ...,
) -> AsyncSourceReader[str | Member]: ...


@overload
def read_sql(
    connectable: str | URL | Engine,
    query: Any,
    *,
    id_column: str | None = ...,
    attributes: AttributeSpec | None = ...,
    params: Mapping[str, Any] | None = ...,
    batch_size: int = ...,
    errors: str = ...,
    max_errors: int | None = ...,
) -> SourceReader[str | Member]: ...


def read_sql(
    connectable: Any,
    query: Any,
    *,
    id_column: str | None = None,
    attributes: AttributeSpec | None = None,
    params: Mapping[str, Any] | None = None,
    batch_size: int = 10_000,
    errors: str = "raise",
    max_errors: int | None = None,
) -> SourceReader[str | Member] | AsyncSourceReader[str | Member]:
    """Members from a SQL query, streamed from a server-side cursor ``batch_size`` rows at a time.

    ``connectable`` is a database URL (``"postgresql+psycopg://user:pw@host/db"``; the engine is
    made for the read and disposed after it), a SQLAlchemy ``Engine``, or an ``AsyncEngine`` —
    which makes the reader an async iterable (``async for``), an
    :class:`AsyncSourceReader`. ``query`` is SQL text (with ``:name`` parameters bound from
    ``params``) or a SQLAlchemy ``select()``. The driver is the user's choice.

    ``id_column`` names the ID column (default: the first); IDs must be strings (a UUID counts)
    or integers, as in every reader. ``attributes``: column names (types from the database:
    text, integers, floats, numerics as floats, booleans, timestamps and dates as ``date(...)``
    — without a time zone, UTC — arrays of text), a mapping column → type to convert, or
    ``None`` for every column but the ID. A NULL means "no such attribute for this ID". Errors
    from the database become a :class:`SourceError` in which the URL's password is masked.

    Needs SQLAlchemy (``pip install 'batch-audiences[sql]'``).

    >>> import sqlalchemy
    >>> engine = sqlalchemy.create_engine("sqlite://")
    >>> with engine.begin() as db:
    ...     _ = db.exec_driver_sql("CREATE TABLE users (id TEXT, score INTEGER)")
    ...     _ = db.exec_driver_sql("INSERT INTO users VALUES ('u1', 3), ('u2', NULL)")
    >>> list(read_sql(engine, "SELECT id, score FROM users ORDER BY id"))
    [Member(id='u1', attributes={'score': 3}), Member(id='u2', attributes=None)]
    """
    sqlalchemy = _sqlalchemy()
    if type(batch_size) is not int or batch_size < 1:
        raise ValidationError("batch_size", f"must be a positive integer, got {batch_size!r}")
    if params is not None and not isinstance(params, Mapping):
        raise ValidationError("params", f"must be a mapping, got {type(params).__name__}")
    if id_column is not None and (not isinstance(id_column, str) or not id_column):
        raise ValidationError("id_column", f"must be a non-empty string, got {id_column!r}")
    specs = attribute_specs(attributes, untyped=None)
    if isinstance(query, str):
        statement = sqlalchemy.text(query)
    elif isinstance(query, sqlalchemy.sql.expression.Executable):
        statement = query
    else:
        raise ValidationError(
            "query", f"must be SQL text or a SQLAlchemy select(), got {type(query).__name__}"
        )
    secrets = _secrets(connectable)
    bound = dict(params or {})
    asyncio_ext = _async_engine_class()
    label = safe_url(connectable)

    if asyncio_ext is not None and isinstance(connectable, asyncio_ext):
        async def produce_async(reader: AsyncSourceReader[str | Member]) -> AsyncIterator[str | Member]:
            try:
                async with connectable.connect() as connection:
                    result = await connection.stream(
                        statement.execution_options(yield_per=batch_size), bound
                    )
                    rows = _Rows(reader, list(result.keys()), id_column, specs, attributes is not None)
                    async for partition in result.partitions(batch_size):
                        for item in rows.items(partition):
                            yield item
            except sqlalchemy.exc.SQLAlchemyError as error:
                raise _database_error(error, secrets) from None

        return AsyncSourceReader(label, produce_async, errors=errors, max_errors=max_errors)

    if isinstance(connectable, (str, sqlalchemy.engine.URL)):
        try:
            url = sqlalchemy.engine.make_url(connectable)
        except Exception:  # its text may hold the password: never show it
            raise ValidationError("connectable", f"not a database URL: {label}") from None
        if url.get_dialect().is_async:
            raise ValidationError(
                "connectable", f"{label} names an async driver: pass create_async_engine(url) instead"
            )
    elif not isinstance(connectable, sqlalchemy.engine.Engine):
        raise ValidationError(
            "connectable",
            f"must be a database URL, an Engine or an AsyncEngine, got {type(connectable).__name__}",
        )

    def produce(reader: SourceReader[str | Member]) -> Iterator[str | Member]:
        engine = connectable
        if not isinstance(connectable, sqlalchemy.engine.Engine):
            try:
                engine = sqlalchemy.create_engine(connectable)
            except ImportError as error:  # the URL names a driver that is not installed
                raise SourceError(f"the database driver for {label} is not installed: {error}") from None
        try:
            with engine.connect() as connection:
                result = connection.execution_options(
                    stream_results=True, max_row_buffer=batch_size
                ).execute(statement, bound)
                rows = _Rows(reader, list(result.keys()), id_column, specs, attributes is not None)
                # The size given here, not only as an option: a partition without one is the
                # whole rest of the result (measured: the whole table in memory).
                for partition in result.partitions(batch_size):
                    yield from rows.items(partition)
        except sqlalchemy.exc.SQLAlchemyError as error:
            raise _database_error(error, secrets) from None
        finally:
            if engine is not connectable:
                engine.dispose()

    return SourceReader(label, produce, errors=errors, max_errors=max_errors)


def _async_engine_class() -> Any:
    try:
        from sqlalchemy.ext.asyncio import AsyncEngine
    except ImportError:  # the asyncio extension needs greenlet
        return None
    return AsyncEngine


# -- values, by the type the driver gave --------------------------------------------------------


def _same(value: Any) -> Any:
    return value


def _float(value: Any) -> Any:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


def _datetime(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _date(value: date) -> datetime:
    return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)


def _sequence(value: Sequence[Any]) -> list[str]:
    if not all(isinstance(item, str) for item in value):
        raise ValueError(f"an array attribute may hold strings only: {describe(value)}")
    return list(value)


_BY_TYPE: dict[type, Callable[[Any], Any]] = {
    str: _same, int: _same, float: _float, bool: _same, Decimal: _float, datetime: _datetime, date: _date,
    list: _sequence, tuple: _sequence, uuid.UUID: str,
}


def _natural(value: Any) -> Any:
    convert = _BY_TYPE.get(type(value))
    if convert is None:
        for kind, candidate in _BY_TYPE.items():
            if isinstance(value, kind):
                convert = candidate
                break
        else:
            raise ValueError(f"a {type(value).__name__} value is no attribute type: {describe(value)} "
                             "(cast it in the query, or choose its type with attributes=)")
    return convert(value)


class _Rows:
    """Turns the rows of one result into items, with the reader's tally."""

    def __init__(
        self, reader: _Tally, keys: list[str], id_column: str | None, specs: list[tuple[str, str | None]],
        chosen: bool,
    ) -> None:
        if not keys:
            raise SourceError("the query returns no column")
        self.reader = reader
        self.id_name = id_column if id_column is not None else keys[0]
        for name in [self.id_name, *(name for name, _ in specs)]:
            if name not in keys:
                known = ", ".join(repr(key) for key in keys)
                raise SourceError(f"no column {name!r} in the query's result; it has {known}")
        if not chosen:
            specs = [(key, None) for key in keys if key != self.id_name]
        self.id_index = keys.index(self.id_name)
        self.columns = [(name, keys.index(name), kind) for name, kind in specs]

    def items(self, partition: Sequence[Sequence[Any]]) -> Iterator[str | Member]:
        reader = self.reader
        for row in partition:
            reader.rows += 1
            number = reader.rows
            try:
                custom_id = source_id(row[self.id_index])
            except ValueError as error:
                reason = "no ID (NULL)" if row[self.id_index] is None else str(error)
                reader.bad_row(number, reason, self.id_name)
                continue
            if not self.columns:
                reader.line = number
                yield custom_id
                continue
            attributes: dict[str, Any] = {}
            for name, index, kind in self.columns:
                value = row[index]
                if value is None:
                    continue
                try:
                    attributes[name] = _natural(value) if kind is None else json_value(value, kind)
                except ValueError as error:
                    reader.bad_row(number, f"column {name!r}: {error}", name)
                    break
            else:
                try:
                    member = Member(custom_id, attributes or None)
                except ValidationError as error:
                    reader.bad_row(number, str(error), error.field)
                    continue
                reader.line = number
                yield member
