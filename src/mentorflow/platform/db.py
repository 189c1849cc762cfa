"""Declarative base, column types and engine settings shared by every model."""

from __future__ import annotations

import enum
import re
import sqlite3
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, registry

#: Execution option asking SQLite for ``BEGIN IMMEDIATE`` (the write lock up front).
IMMEDIATE = "mentorflow_begin_immediate"

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: The largest value an INTEGER column holds on every database we run on (PostgreSQL's int4);
#: ids and version numbers are INTEGER columns.
MAX_INTEGER = 2**31 - 1


def fits_integer(value: object) -> bool:
    """Tell whether ``value`` is an int an INTEGER column can hold.

    A larger number from a URL or a form can match no row, and binding it fails on both
    databases (SQLite: OverflowError; PostgreSQL: "integer out of range"), so callers answer
    "not found" without querying.
    """
    return isinstance(value, int) and -MAX_INTEGER - 1 <= value <= MAX_INTEGER


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator):
    """Store naive UTC, hand back aware UTC datetimes on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use mentorflow.platform.db.utcnow()")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


#: JSON everywhere, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    registry = registry(
        metadata=sa.MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map={datetime: UTCDateTime(), dict[str, Any]: JSONType},
    )


class CreatedAtMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def install_sqlite_behaviour(engine: Engine) -> None:
    """Give a SQLite engine WAL, foreign keys, a busy timeout and ``BEGIN IMMEDIATE`` on ask."""
    if engine.dialect.name != "sqlite" or event.contains(engine, "begin", _begin_sqlite):
        return
    event.listen(engine, "connect", _configure_sqlite)
    event.listen(engine, "begin", _begin_sqlite)


def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    # Hand transaction control to SQLAlchemy's "begin" event below, so that BEGIN IMMEDIATE
    # can be asked for; pysqlite's own implicit BEGIN would always be DEFERRED.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    # A deleted row's bytes are overwritten, not left in a free page: an erasure must not
    # leave the learner's answers readable in the database file.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def checkpoint_sqlite(session: Any) -> None:
    """On SQLite, copy the write-ahead log into the database and empty it (the log still
    holds the pages of rows deleted since the last checkpoint); nothing elsewhere."""
    if session.get_bind().dialect.name != "sqlite":
        return
    # Best effort: a reader still on an old snapshot keeps the log until it ends, and the
    # next automatic checkpoint overwrites it.
    session.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
    session.rollback()


def _begin_sqlite(connection: sa.Connection) -> None:
    immediate = connection.get_execution_options().get(IMMEDIATE)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def begin_write(session: Any) -> None:
    """Start the session's next transaction as a writer.

    On SQLite that is ``BEGIN IMMEDIATE``: the write lock is taken up front, so two requests
    never both read and then fail to upgrade. A read-only transaction already open (the key
    lookup) is ended first. PostgreSQL locks rows with ``FOR UPDATE`` instead.
    """
    session = session() if callable(session) else session  # a scoped_session's current one
    if session.get_bind().dialect.name != "sqlite":
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("begin_write() called with unflushed changes")
    if session.in_transaction():
        session.commit()
    session.connection(execution_options={IMMEDIATE: True})


def enum_column(enum_class: type[enum.Enum]) -> sa.Enum:
    """Return a portable VARCHAR enum that stores the members' values (``"active"``)."""
    return sa.Enum(
        enum_class,
        native_enum=False,
        length=20,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class DriverStatement:
    """A Core statement compiled once per dialect and run on the driver's own cursor.

    For the few statements every learner step runs. SQLAlchemy's per-execution work (cache
    key, execution context, result object) costs about 80 µs of CPU a statement on top of the
    driver's own, as much as the driver itself (``bench/README.md``). This keeps what matters of
    it: the SQL SQLAlchemy compiles for the dialect and each column type's own bind and result
    processing, so values go in and come back exactly as through the ORM. It runs on the
    connection and in the transaction of the ``sa.Connection`` it is given.

    ``column_keys`` names the columns an INSERT or UPDATE sets (all of them otherwise).
    """

    def __init__(self, statement: Any, column_keys: list[str] | None = None) -> None:
        self.statement = statement
        self.column_keys = column_keys
        self._compiled: dict[str, _Compiled] = {}

    def _compile(self, dialect: Any) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _Compiled(
                self.statement, self.column_keys, dialect
            )
        return compiled

    def execute(self, connection: sa.Connection, params: dict[str, Any]) -> int:
        """Run the statement with ``params``; return the number of rows it changed."""
        compiled = self._compile(connection.dialect)
        cursor, owned = _driver_cursor(connection)
        try:
            cursor.execute(compiled.sql, compiled.bind(params))
            return cursor.rowcount
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _driver_error(connection, exc, cursor, compiled.sql, params) from exc
        finally:
            if owned:
                cursor.close()

    def first(self, connection: sa.Connection, params: dict[str, Any]) -> dict[str, Any] | None:
        """Run a SELECT; return its first row as ``{column key: value}``, or None."""
        compiled = self._compile(connection.dialect)
        cursor, owned = _driver_cursor(connection)
        try:
            cursor.execute(compiled.sql, compiled.bind(params))
            row = cursor.fetchone()
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _driver_error(connection, exc, cursor, compiled.sql, params) from exc
        finally:
            if owned:
                cursor.close()
        if row is None:
            return None
        return {
            key: value if process is None else process(value)
            for (key, process), value in zip(compiled.columns, row, strict=True)
        }

    def all(self, connection: sa.Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a SELECT; return its rows as ``{column key: value}`` (also inside a psycopg
        pipeline, where fetching syncs it)."""
        compiled = self._compile(connection.dialect)
        cursor, owned = _driver_cursor(connection)
        try:
            cursor.execute(compiled.sql, compiled.bind(params))
            rows = cursor.fetchall()
        except connection.dialect.loaded_dbapi.Error as exc:
            raise _driver_error(connection, exc, cursor, compiled.sql, params) from exc
        finally:
            if owned:
                cursor.close()
        return [
            {
                key: value if process is None else process(value)
                for (key, process), value in zip(compiled.columns, row, strict=True)
            }
            for row in rows
        ]


#: A part of :func:`execute_together`: a write, its parameters, and whether it must return a
#: row (its statement has RETURNING; none back raises that exception).
WritePart = tuple[DriverStatement, dict[str, Any], type[Exception] | None]

_PLACEHOLDER = re.compile(r"%\((\w+)\)s")
_TOGETHER: dict[tuple[int, ...], str] = {}


def execute_together(connection: sa.Connection, parts: list[WritePart]) -> None:
    """Run INSERTs and UPDATEs as one PostgreSQL statement (a data-modifying ``WITH``).

    One round trip for all of them instead of one each: every part sees the same snapshot,
    so no part may depend on another's rows except through the constraints checked at the
    statement's end (a delivery's event, inserted by another part, is there by then). A
    part that names an exception must return a row (RETURNING), else the exception is
    raised and the caller's transaction rolls back.
    """
    dialect = connection.dialect
    compiled = [statement._compile(dialect) for statement, _, _ in parts]
    signature = tuple(id(c) for c in compiled) + tuple(i for i, p in enumerate(parts) if p[2])
    sql = _TOGETHER.get(signature)
    if sql is None:
        ctes = ", ".join(f"w{i} AS ({_prefixed(c.sql, f'w{i}_')})" for i, c in enumerate(compiled))
        checked = [f"(SELECT count(*) FROM w{i})" for i, part in enumerate(parts) if part[2]]
        sql = _TOGETHER[signature] = f"WITH {ctes} SELECT {', '.join(checked) or '1'}"
    params: dict[str, Any] = {}
    for i, (c, (_, values, _)) in enumerate(zip(compiled, parts, strict=True)):
        bound = c.bind(values)
        assert c.positional is None, "execute_together needs named parameters (psycopg)"
        params.update({f"w{i}_{name}": value for name, value in bound.items()})
    cursor, owned = _driver_cursor(connection)
    try:
        cursor.execute(sql, params)
        counts = cursor.fetchone()
    except dialect.loaded_dbapi.Error as exc:
        raise _driver_error(connection, exc, cursor, sql, params) from exc
    finally:
        if owned:
            cursor.close()
    missing = [part[2] for part in parts if part[2]]
    for exception, count in zip(missing, counts if missing else (), strict=False):
        if not count:
            raise exception()


def _prefixed(sql: str, prefix: str) -> str:
    """Return ``sql`` with its named parameters renamed ``prefix + name``."""
    return _PLACEHOLDER.sub(lambda match: f"%({prefix}{match.group(1)})s", sql)


_CURSOR = "mentorflow_driver_cursor"


def _driver_cursor(connection: sa.Connection) -> tuple[Any, bool]:
    """Return a cursor of ``connection``'s driver connection, and whether to close it after.

    psycopg reads a statement's rows when it runs, so on PostgreSQL one cursor, kept with the
    pooled connection, serves all its statements: a new cursor per statement cost ~4 % of a
    step commit (``bench/README.md``). A sqlite3 cursor holds its statement open until it is
    closed or reused, so SQLite gets a new one each time.
    """
    fairy = connection.connection
    driver_connection = fairy.driver_connection
    if connection.dialect.name != "postgresql":
        return driver_connection.cursor(), True
    kept = fairy.info.get(_CURSOR)
    if kept is None or kept[0] is not driver_connection:
        kept = fairy.info[_CURSOR] = (driver_connection, driver_connection.cursor())
    return kept[1], False


def _driver_error(
    connection: sa.Connection, exc: Exception, cursor: Any, sql: str, params: Any
) -> sa.exc.DBAPIError:
    """Return the SQLAlchemy error for a driver error, as SQLAlchemy raises for its statements.

    Like SQLAlchemy, a lost connection is invalidated along with the pooled ones (the server
    restarted): one request fails, the next ones get new connections; and the message shows
    the parameters only if the engine does (``hide_parameters``).
    """
    dialect = connection.dialect
    disconnect = dialect.is_disconnect(exc, connection.connection.dbapi_connection, cursor)
    if disconnect:
        connection.invalidate(exc)
        connection.engine.pool.dispose()
    return sa.exc.DBAPIError.instance(
        sql,
        params,
        exc,
        dialect.loaded_dbapi.Error,
        hide_parameters=connection.engine.hide_parameters,
        connection_invalidated=disconnect,
        dialect=dialect,
    )


class _Compiled:
    """A statement's SQL for one dialect, with its parameters' and columns' processors."""

    def __init__(self, statement: Any, column_keys: list[str] | None, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=column_keys)
        self.sql = compiled.string
        self.positional = compiled.positiontup if compiled.positional else None
        self.processors = {
            name: process
            for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        selected = getattr(statement, "selected_columns", None)
        self.columns = [
            (key, column.type.dialect_impl(dialect).result_processor(dialect, None))
            for key, column in (selected.items() if selected is not None else [])
        ]

    def bind(self, params: dict[str, Any]) -> Any:
        processors = self.processors
        values = {
            name: processors[name](value) if name in processors else value
            for name, value in params.items()
        }
        if self.positional is not None:
            return tuple(values[name] for name in self.positional)
        return values
