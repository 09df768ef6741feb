"""Hand-written SQL for the statements every relayed message runs.

tortoise builds each queryset's SQL anew (pypika objects, filter resolution, copies): about 0.3 to 0.5 ms
of CPU per statement on a small VM, several times the cost of running it on SQLite. The few
statements below run once or twice per message, so they are written once, as plain SQL, and sent
through tortoise's own connection (the same transactions, locks and error translation). Column lists
come from the models' metadata, so they follow the schema; rows become model instances through
tortoise's own ``_init_from_db``, so values decode exactly as a queryset would decode them. On SQLite's
loop-thread connection (:mod:`storage.sqlite_inline`) a statement runs directly when no other task holds
the connection (a transaction of its own, or a wait for another process's lock), skipping even
tortoise's per-statement wrapper; otherwise it queues for the connection like any other.

SQL here uses ``?`` placeholders; on PostgreSQL they become ``$1, $2, ...``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tortoise import connections, fields, timezone
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.exceptions import FieldError
from tortoise.fields.base import Field
from tortoise.models import Model

from storage.db import transaction
from storage.models import (
    BusJournalEntry,
    Consent,
    Conversation,
    ConversationLog,
    ConversationState,
    Customer,
    Identity,
    InboundReceipt,
    Message,
    OutboxItem,
    OutboxStatus,
    Room,
)
from storage.sqlite_inline import InlineConnection

M = TypeVar("M", bound=Model)


def _connection() -> BaseDBAsyncClient:
    """The default connection, or the transaction the calling task is in."""
    conn: BaseDBAsyncClient = connections.get("default")
    return conn


def _inline() -> InlineConnection | None:
    inline = getattr(_connection(), "_connection", None)
    return inline if type(inline) is InlineConnection else None


def commit_point() -> int | None:
    """Where the writes made so far end, while some of them are not committed yet (None: all are).

    SQLite's loop-thread connection commits the hot statements of one turn of the event loop together
    (:class:`storage.sqlite_inline.InlineConnection`); elsewhere (PostgreSQL) every statement is
    committed when it returns, and this is always None.
    """
    inline = _inline()
    return inline.commit_point() if inline is not None else None


async def durable(point: int | None = None) -> None:
    """Return once every write made so far (or up to ``point``, from :func:`commit_point`) is committed.

    Code about to act on the outside world (acknowledge an event, send a message) awaits this first.
    """
    inline = _inline()
    if inline is not None:
        await inline.durable(point)


@functools.cache
def _dialect_sql(sql: str, dialect: str) -> str:
    """``sql`` with its ``?`` placeholders numbered ``$1, $2, ...`` for PostgreSQL (as written for SQLite)."""
    if dialect != "postgres":
        return sql
    parts = sql.split("?")
    return "".join(f"{part}${i}" if i < len(parts) else part for i, part in enumerate(parts, start=1))


def _free_inline(
    conn: BaseDBAsyncClient, statements: Sequence[tuple[str, Sequence[Any]]]
) -> InlineConnection | None:
    """SQLite's loop-thread connection behind ``conn`` when nothing holds it (no transaction of another
    task, no statement waiting for a lock), with ``statements`` written to tortoise's SQL log as its client
    writes them; else None."""
    inline = getattr(conn, "_connection", None)
    if type(inline) is not InlineConnection:
        return None
    lock: asyncio.Lock | None = getattr(conn, "_lock", None)
    if lock is None or lock.locked():
        return None
    if conn.log.isEnabledFor(logging.DEBUG):
        for sql, values in statements:
            conn.log.debug("%s: %s", sql, values)
    return inline


def _run_now(
    conn: BaseDBAsyncClient, sql: str, values: Sequence[Any]
) -> tuple[int, list[Any], int | None] | None:
    """Run ``sql`` at once on SQLite's loop-thread connection when nothing holds it: (changed or
    returned, rows, last row id); else None.

    This skips tortoise's per-statement wrapper (lock, error translation: a few microseconds,
    a dozen times per relayed message); :meth:`InlineConnection.try_now` translates errors the same way.
    """
    inline = _free_inline(conn, ((sql, values),))
    return inline.try_now(sql, values) if inline is not None else None


def _pg_pool(conn: BaseDBAsyncClient) -> Any:
    """The asyncpg pool behind ``conn`` when it is PostgreSQL's pool client itself (not a transaction's
    connection) and the pool is open; else None."""
    if type(conn).__name__ != "AsyncpgDBClient":
        return None
    return getattr(conn, "_pool", None)


_MODIFIES = ("UPDATE", "DELETE", "INSERT")


async def _pg_run(conn: BaseDBAsyncClient, pool: Any, sql: str, values: Sequence[Any], *, one: bool) -> Any:
    """Run ``sql`` (PostgreSQL's dialect) on a connection of ``pool``, as tortoise's client would run it
    (its SQL log, its exceptions), without its per-statement wrapper: the first row with ``one``, else
    (rows changed or returned, rows).

    tortoise's wrapper (connection context, exception translation layers, a copy and an upper-cased copy
    of the SQL) costs about as much CPU as the statement itself on a small machine, ten times a message.
    """
    if conn.log.isEnabledFor(logging.DEBUG):
        conn.log.debug("%s: %s", sql, values)
    proxy = await pool.acquire()
    try:
        if one:
            return await proxy.fetchrow(sql, *values)
        if sql.lstrip()[:6].upper() in _MODIFIES and " RETURNING " not in sql:
            status = await proxy.execute(sql, *values)
            try:
                return int(status.rsplit(" ", 1)[1]), []
            except (IndexError, ValueError):
                return 0, []
        rows = await proxy.fetch(sql, *values)
        return len(rows), rows
    except Exception as exc:
        raise _translated(exc) from exc
    finally:
        await pool.release(proxy)


def _translated(exc: Exception) -> Exception:
    """asyncpg's exception as tortoise's client raises it (``IntegrityError`` on a duplicate key...)."""
    import asyncpg
    from tortoise.exceptions import IntegrityError, OperationalError, TransactionManagementError

    if isinstance(exc, asyncpg.SyntaxOrAccessError | asyncpg.exceptions.DataError):
        return OperationalError(exc)
    if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
        return IntegrityError(exc)
    if isinstance(exc, asyncpg.InvalidTransactionStateError):
        return TransactionManagementError(exc)
    return exc


async def _query(sql: str, values: Sequence[Any]) -> tuple[int, Sequence[Any]]:
    """Run one statement; (rows changed or returned, rows)."""
    conn = _connection()
    done = _run_now(conn, sql, values)
    if done is not None:
        return done[0], done[1]
    pool = _pg_pool(conn)
    if pool is not None:
        result: tuple[int, Sequence[Any]] = await _pg_run(
            conn, pool, _dialect_sql(sql, "postgres"), values, one=False
        )
        return result
    return await conn.execute_query(_dialect_sql(sql, conn.capabilities.dialect), list(values))


async def _query_all(statements: Sequence[tuple[str, Sequence[Any]]]) -> list[tuple[int, Sequence[Any]]]:
    """Run several statements in one transaction; each one's (rows changed or returned, rows).

    On SQLite's loop-thread connection, when nothing holds it, they run at once (one commit for all);
    otherwise in a tortoise transaction (the calling task's own, if it is in one).
    """
    conn = _connection()
    inline = _free_inline(conn, statements)
    done = inline.try_all(statements) if inline is not None else None
    if done is not None:
        return [(changed, rows) for changed, rows, _row_id in done]
    async with transaction(conn.connection_name) as tx:
        dialect = tx.capabilities.dialect
        return [
            await tx.execute_query(_dialect_sql(sql, dialect), list(values)) for sql, values in statements
        ]


@functools.cache
def _columns(model: type[Model], prefix: str = "", table: str = "") -> str:
    """The model's columns for a SELECT list (``"t"."col" "prefix_col"`` when aliased for a join)."""
    qualify = f'"{table}".' if table else ""
    return ", ".join(
        f'{qualify}"{column}"' + (f' "{prefix}{column}"' if prefix else "")
        for column in sorted(model._meta.db_fields)
    )


def _db_datetime(model: type[Model], field: str, value: datetime | None) -> Any:
    """``value`` as tortoise writes it into ``model.field`` (its time zone handling, its encoding)."""
    return model._meta.fields_map[field].to_db_value(value, model)


@functools.cache
def _columns_of_type(model: type[Model], kind: type[Field[Any]]) -> frozenset[str]:
    """The model's columns whose field is a ``kind``."""
    meta = model._meta
    return frozenset(
        column
        for name, column in meta.fields_db_projection.items()
        if isinstance(meta.fields_map[name], kind)
    )


def _datetime_columns(model: type[Model]) -> frozenset[str]:
    """The model's datetime columns (SQLite returns them as ISO text)."""
    return _columns_of_type(model, fields.DatetimeField)


def _load(model: type[M], row: Any, prefix: str = "") -> M:
    """A model instance from a result row (columns optionally prefixed, as :func:`_columns` names them)."""
    data = dict(row)
    if prefix:
        data = {column: data[prefix + column] for column in model._meta.db_fields}
    for column in _datetime_columns(model):
        value = data[column]
        if isinstance(value, str):  # the C parser; tortoise's own is a pure-Python one, ~10x slower
            data[column] = datetime.fromisoformat(value)
    return model._init_from_db(**data)


@dataclass(frozen=True)
class UnreadablePayload:
    """An outbox row's payload column that is not JSON at all (its raw text, cut): the row is loaded with
    this as its payload, so the outbox can give it up instead of failing on the load."""

    raw: str


def _load_outbox(row: Any) -> OutboxItem:
    """An outbox row; a payload column that does not decode becomes an :class:`UnreadablePayload`."""
    try:
        return _load(OutboxItem, row)
    except FieldError:
        data = dict(row)
        data["payload"] = UnreadablePayload(str(data.get("payload"))[:200])
        return _load(OutboxItem, data)


@dataclass(frozen=True)
class _InsertColumn:
    """How :func:`_insert` fills one column."""

    name: str
    field: Field[Any]
    auto_now: bool
    """Set to the current time when not given (``auto_now`` / ``auto_now_add``)."""
    default: Any
    """The model's default when not given: a value, a factory (``callable``) or None."""


@functools.cache
def _insert_plan(model: type[Model]) -> tuple[_InsertColumn, ...]:
    """Every column an INSERT writes (all but a generated primary key), in a fixed order."""
    meta = model._meta
    plan = []
    for name, column in meta.fields_db_projection.items():
        if name == meta.pk_attr and meta.pk.generated:
            continue
        field = meta.fields_map[name]
        auto = bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))
        plan.append(_InsertColumn(column, field, auto, field.default))
    return tuple(plan)


def _insert_sql(model: type[Model], dialect: str, expressions: dict[str, str] | None = None) -> str:
    """The INSERT statement of :func:`_insert` (with ``RETURNING`` the new id on PostgreSQL); columns in
    ``expressions`` take that SQL instead of a value."""
    return _insert_sql_of(model, dialect, tuple(sorted((expressions or {}).items())))


@functools.cache
def _insert_sql_of(model: type[Model], dialect: str, expressions: tuple[tuple[str, str], ...]) -> str:
    plan = _insert_plan(model)
    given = dict(expressions)
    columns = ", ".join(f'"{column.name}"' for column in plan)
    values = ", ".join(given.get(column.name, "?") for column in plan)
    sql = f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({values})'
    if dialect == "postgres":
        sql += f' RETURNING "{model._meta.db_pk_column}"'
    return _dialect_sql(sql, dialect)


def _insert_values(model: type[Model], given: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Every column's value of a new row as ``model.create(**given)`` would set it, and the values to send
    (validated and encoded by the fields, as ``create`` does)."""
    now = timezone.now()
    values: dict[str, Any] = {}
    params: list[Any] = []
    for column in _insert_plan(model):
        if column.name in given:
            value = given[column.name]
        elif column.auto_now:
            value = now
        elif column.default is not None:
            value = column.default() if callable(column.default) else column.default
        elif column.field.null:
            value = None
        else:
            raise TypeError(f"{model.__name__}.{column.name} is required")
        values[column.name] = value
        params.append(column.field.to_db_value(value, model))  # validates, as create() does
    return values, params


async def _insert_row(model: type[Model], **given: Any) -> tuple[int, dict[str, Any]]:
    """Insert one row as ``model.create(**given)`` would (defaults, auto timestamps, validation): its id,
    and every column's value.

    ``given`` is keyed by column name (``conversation_id``, not ``conversation``). A value the field
    refuses raises tortoise's ``ValidationError`` and a duplicate key its ``IntegrityError``, as
    ``create`` does.
    """
    conn = _connection()
    dialect = conn.capabilities.dialect
    values, params = _insert_values(model, given)
    sql = _insert_sql(model, dialect)
    done = _run_now(conn, sql, params)
    if done is not None:
        assert done[2] is not None, "an INSERT has a row id"
        return done[2], values
    pool = _pg_pool(conn)
    if pool is not None:
        row = await _pg_run(conn, pool, sql, params, one=True)
        return int(row[0]), values
    inserted = await conn.execute_insert(sql, params)
    return int(inserted[0] if dialect == "postgres" else inserted), values


async def _insert(model: type[M], **given: Any) -> M:
    """Insert one row as :func:`_insert_row` does; the model instance (as ``create`` returns it)."""
    row_id, values = await _insert_row(model, **given)
    values[model._meta.db_pk_column] = row_id
    return model._init_from_db(**values)


# -- the in-process bus's journal ------------------------------------------------------------------


async def append_journal_entry(key: str, payload: dict[str, Any]) -> int:
    """Store one published bus entry; its id, once the entry is committed."""
    entry_id, _values = await _insert_row(BusJournalEntry, key=key, payload=payload)
    await durable()
    return entry_id


async def delete_journal_entry(entry_id: int) -> None:
    """Forget one acknowledged bus entry."""
    await _query(f'DELETE FROM "{BusJournalEntry._meta.db_table}" WHERE "id"=?', [entry_id])


# -- inbound -----------------------------------------------------------------------------------------


async def insert_receipt(source: str, external_id: str) -> int:
    """Note an inbound event as being handled; its receipt's id. ``IntegrityError`` if it was noted before
    (a replay)."""
    receipt_id, _values = await _insert_row(InboundReceipt, source=source, external_id=external_id)
    return receipt_id


async def insert_message(**columns: Any) -> Message:
    """Store one message (``columns`` as :func:`_insert` takes them)."""
    return await _insert(Message, **columns)


async def insert_outbox_row(**columns: Any) -> int:
    """Queue one delivery (``columns`` as :func:`_insert_row` takes them); its id. ``IntegrityError`` on a
    known key."""
    row_id, _values = await _insert_row(OutboxItem, **columns)
    return row_id


async def mark_receipt_processed(receipt_id: int) -> None:
    """Mark an inbound event as fully handled (a replay of it is then dropped as a duplicate)."""
    await _query(
        f'UPDATE "{InboundReceipt._meta.db_table}" SET "processed"=? WHERE "id"=?', [True, receipt_id]
    )


async def open_conversation_of(
    channel: str, external_id: str
) -> tuple[Conversation, Identity, Customer] | None:
    """The newest conversation not closed of this channel identity's customer (whichever identity it runs
    on), with this identity and the customer."""
    sql = (
        f"SELECT {_columns(Conversation, 'v_', 'v')}, {_columns(Identity, 'i_', 'i')}, "
        f"{_columns(Customer, 'c_', 'c')} "
        'FROM "identity" "i" '
        'JOIN "customer" "c" ON "c"."id"="i"."customer_id" '
        'JOIN "conversation" "v" ON "v"."customer_id"="i"."customer_id" '
        'WHERE "i"."channel"=? AND "i"."external_id"=? AND "v"."state"<>? '
        'ORDER BY "v"."id" DESC LIMIT 1'
    )
    _count, rows = await _query(sql, [channel, external_id, ConversationState.CLOSED.value])
    if not rows:
        return None
    row = rows[0]
    return _load(Conversation, row, "v_"), _load(Identity, row, "i_"), _load(Customer, row, "c_")


async def identity_state(
    channel: str, external_id: str
) -> tuple[Identity, Customer, Conversation | None] | None:
    """This channel identity, its customer and the customer's newest conversation not closed (None if
    there is none), in one statement; None for an identity never seen."""
    sql = (
        f"SELECT {_columns(Identity, 'i_', 'i')}, {_columns(Customer, 'c_', 'c')}, "
        f"{_columns(Conversation, 'v_', 'v')} "
        'FROM "identity" "i" '
        'JOIN "customer" "c" ON "c"."id"="i"."customer_id" '
        'LEFT JOIN "conversation" "v" ON "v"."customer_id"="i"."customer_id" AND "v"."state"<>? '
        'WHERE "i"."channel"=? AND "i"."external_id"=? '
        'ORDER BY "v"."id" DESC LIMIT 1'
    )
    _count, rows = await _query(sql, [ConversationState.CLOSED.value, channel, external_id])
    if not rows:
        return None
    row = rows[0]
    conversation = _load(Conversation, row, "v_") if row["v_id"] is not None else None
    return _load(Identity, row, "i_"), _load(Customer, row, "c_"), conversation


async def create_customer(
    customer: dict[str, Any],
    identity: dict[str, Any],
    conversation: dict[str, Any],
    opened_log: dict[str, Any] | None = None,
) -> tuple[Customer, Identity, Conversation, ConversationLog | None]:
    """A new customer with its first identity and its first conversation (``customer_id`` and
    ``identity_id`` filled in here), all or nothing; with ``opened_log`` (a :class:`ConversationLog` row's
    columns but ``conversation_id`` and ``at``: the conversation's, its creation time) the conversation's
    first log entry too, in the same step. ``IntegrityError`` when the identity exists (another worker
    created it first).

    On PostgreSQL one statement; on SQLite's loop-thread connection, when nothing holds it, the inserts at
    once in one savepoint (each later one taking the id the one before made); elsewhere one transaction.
    """
    conn = _connection()
    dialect = conn.capabilities.dialect
    models: list[type[Model]] = [Customer, Identity, Conversation]
    given: list[dict[str, Any]] = [customer, identity, conversation]
    placeholders: list[dict[str, int]] = [
        {},
        {"customer_id": 0},
        {"customer_id": 0, "identity_id": 0},
    ]  # (the ids come later)
    rows: list[tuple[type[Model], dict[str, Any]]] = []
    statements: list[tuple[str, Sequence[Any]]] = []
    for model, values_given, ids_later in zip(models, given, placeholders, strict=True):
        columns, params = _insert_values(model, {**values_given, **ids_later})
        rows.append((model, columns))
        statements.append((_insert_sql(model, "sqlite"), params))
    if opened_log is not None:
        placeholders.append({"conversation_id": 0})
        columns, params = _insert_values(
            ConversationLog, {**opened_log, "conversation_id": 0, "at": rows[2][1]["created_at"]}
        )
        rows.append((ConversationLog, columns))
        statements.append((_insert_sql(ConversationLog, "sqlite"), params))
    if dialect == "postgres":  # one statement: each insert takes the id of the one before
        linked = [
            [v for c, v in zip(_insert_plan(model), values, strict=True) if c.name not in ids_later]
            for (model, _columns), (_sql, values), ids_later in zip(
                rows, statements, placeholders, strict=True
            )
        ]
        sql = _create_customer_sql(with_log=opened_log is not None)
        _count, out = await _query(sql, [v for values in linked for v in values])
        return _created(rows, [int(v) for v in out[0]])
    inline = _free_inline(conn, ()) if dialect == "sqlite" else None
    if inline is not None:
        # the new ids: SQLite's last_insert_rowid() of the statement before
        statements[1] = _with_expressions(statements[1], Identity, {"customer_id": "last_insert_rowid()"})
        statements[2] = _with_expressions(
            statements[2],
            Conversation,
            {
                "identity_id": "last_insert_rowid()",
                "customer_id": '(SELECT "customer_id" FROM "identity" WHERE "id"=last_insert_rowid())',
            },
        )
        if opened_log is not None:
            statements[3] = _with_expressions(
                statements[3], ConversationLog, {"conversation_id": "last_insert_rowid()"}
            )
        if conn.log.isEnabledFor(logging.DEBUG):
            for sql, values in statements:
                conn.log.debug("%s: %s", sql, values)
        done = inline.try_all(statements)
        if done is not None:
            ids = [int(row_id) for _changed, _rows, row_id in done]  # type: ignore[arg-type]
            return _created(rows, ids)
    async with transaction(conn.connection_name) as tx:
        ids = []
        for n, (model, columns) in enumerate(rows):
            if n in (1, 2):
                columns["customer_id"] = ids[0]
            if n == 2:
                columns["identity_id"] = ids[1]
            if n == 3:
                columns["conversation_id"] = ids[2]
            values = [c.field.to_db_value(columns[c.name], model) for c in _insert_plan(model)]
            inserted = await tx.execute_insert(_insert_sql(model, dialect), values)
            ids.append(int(inserted[0] if dialect == "postgres" else inserted))
    return _created(rows, ids)


def _with_expressions(
    statement: tuple[str, Sequence[Any]], model: type[Model], expressions: dict[str, str]
) -> tuple[str, Sequence[Any]]:
    """An INSERT of ``model`` (SQLite) whose ``expressions`` columns take that SQL instead of a value."""
    names = [c.name for c in _insert_plan(model)]
    skip = {names.index(name) for name in expressions}
    return (
        _insert_sql(model, "sqlite", expressions),
        [v for n, v in enumerate(statement[1]) if n not in skip],
    )


@functools.cache
def _create_customer_sql(*, with_log: bool = False) -> str:
    """PostgreSQL's :func:`create_customer`: the inserts in one statement (``?`` placeholders)."""

    def insert(model: type[Model], expressions: dict[str, str]) -> str:
        plan = _insert_plan(model)
        columns = ", ".join(f'"{c.name}"' for c in plan)
        values = ", ".join(expressions.get(c.name, "?") for c in plan)
        return f'INSERT INTO "{model._meta.db_table}" ({columns}) VALUES ({values})'

    customer = insert(Customer, {})
    identity = insert(Identity, {"customer_id": '(SELECT "id" FROM "c")'})
    conversation = insert(
        Conversation,
        {"customer_id": '(SELECT "customer_id" FROM "i")', "identity_id": '(SELECT "id" FROM "i")'},
    )
    sql = (
        f'WITH "c" AS ({customer} RETURNING "id"), "i" AS ({identity} RETURNING "id", "customer_id"), '
        f'"v" AS ({conversation} RETURNING "customer_id", "identity_id", "id")'
    )
    if not with_log:
        return sql + ' SELECT "customer_id", "identity_id", "id" FROM "v"'
    log = insert(ConversationLog, {"conversation_id": '(SELECT "id" FROM "v")'})
    return (
        sql + f', "l" AS ({log} RETURNING "id") '
        'SELECT "v"."customer_id", "v"."identity_id", "v"."id", "l"."id" FROM "v", "l"'
    )


def _created(
    rows: list[tuple[type[Model], dict[str, Any]]], ids: list[int]
) -> tuple[Customer, Identity, Conversation, ConversationLog | None]:
    (_c, customer), (_i, identity), (_v, conversation) = rows[:3]
    identity["customer_id"] = conversation["customer_id"] = ids[0]
    conversation["identity_id"] = ids[1]
    customer["id"], identity["id"], conversation["id"] = ids[:3]
    log = None
    if len(rows) > 3:
        entry = rows[3][1]
        entry["conversation_id"], entry["id"] = ids[2], ids[3]
        log = ConversationLog._init_from_db(**entry)
    return (
        Customer._init_from_db(**customer),
        Identity._init_from_db(**identity),
        Conversation._init_from_db(**conversation),
        log,
    )


@functools.cache
def _select_sql(model: type[Model], where: str, order: str, limit: int | None) -> str:
    sql = f'SELECT {_columns(model)} FROM "{model._meta.db_table}" WHERE {where}'
    if order:
        sql += f" ORDER BY {order}"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql


async def select(
    model: type[M], where: str, values: Sequence[Any], *, order: str = "", limit: int | None = None
) -> list[M]:
    """The rows of ``model`` matching ``where`` (SQL with ``?`` placeholders, quoted column names), as
    instances: a plain query without tortoise's queryset machinery (for the few reads every new customer
    or room makes)."""
    _count, rows = await _query(_select_sql(model, where, order, limit), values)
    return [_load(model, row) for row in rows]


@dataclass(frozen=True)
class Select:
    """One read for :func:`select_several`: as :func:`select` takes it."""

    model: type[Model]
    where: str
    values: Sequence[Any]
    order: str = ""
    limit: int | None = None


def _json_columns(model: type[Model]) -> frozenset[str]:
    """The model's JSON columns."""
    return _columns_of_type(model, fields.JSONField)


@functools.cache
def _aggregated_sql(model: type[Model], where: str, order: str, limit: int | None) -> str:
    """A scalar subquery: the matching rows of ``model`` as one JSON array (PostgreSQL), its JSON columns
    as their text (so they decode as a plain read's would)."""
    columns = ", ".join(
        f'"{column}"::text "{column}"' if column in _json_columns(model) else f'"{column}"'
        for column in sorted(model._meta.db_fields)
    )
    inner = f'SELECT {columns} FROM "{model._meta.db_table}" WHERE {where}'
    if order:
        inner += f" ORDER BY {order}"
    if limit is not None:
        inner += f" LIMIT {int(limit)}"
    ordered = f" ORDER BY {order}" if order else ""
    return f'(SELECT coalesce(json_agg("t"{ordered}), \'[]\') FROM ({inner}) "t")'


async def select_several(*reads: Select) -> list[list[Any]]:
    """Several :func:`select` reads at once: each one's instances, in order.

    On PostgreSQL several are one statement (each read a JSON array of its rows: one round trip instead of
    several, for a new room's card); on SQLite, where a statement costs no round trip, and for a single
    read, one plain read after another.
    """
    conn = _connection()
    if conn.capabilities.dialect != "postgres" or len(reads) == 1:  # (one read: a plain one is simpler)
        return [await select(r.model, r.where, r.values, order=r.order, limit=r.limit) for r in reads]
    sql = "SELECT " + ", ".join(_aggregated_sql(r.model, r.where, r.order, r.limit) for r in reads)
    _count, rows = await _query(sql, [value for r in reads for value in r.values])
    return [
        [_load(r.model, item) for item in json.loads(text)] for r, text in zip(reads, rows[0], strict=True)
    ]


async def conversation_rooms(
    conversation_id: int, workspace: str
) -> tuple[Conversation, Room | None, Room | None] | None:
    """A conversation, the room it is bound to and its customer's room in ``workspace`` (either may be
    None, both may be the same), in one statement; None if the conversation does not exist."""
    found = await conversation_rooms_and_people(conversation_id, workspace)
    return found[:3] if found is not None else None


async def conversation_rooms_and_people(
    conversation_id: int, workspace: str
) -> tuple[Conversation, Room | None, Room | None, tuple[Customer, Identity] | None] | None:
    """:func:`conversation_rooms`, with the conversation's customer and identity (None if either is gone),
    in the same statement: what a new room's view is made of."""
    sql = (
        f"SELECT {_columns(Conversation, 'v_', 'v')}, {_columns(Room, 'r_', 'r')}, "
        f"{_columns(Customer, 'c_', 'c')}, {_columns(Identity, 'i_', 'i')} "
        'FROM "conversation" "v" LEFT JOIN "room" "r" ON "r"."id"="v"."room_id" '
        'OR ("r"."workspace"=? AND "r"."customer_id"="v"."customer_id") '
        'LEFT JOIN "customer" "c" ON "c"."id"="v"."customer_id" '
        'LEFT JOIN "identity" "i" ON "i"."id"="v"."identity_id" WHERE "v"."id"=?'
    )
    _count, rows = await _query(sql, [workspace, conversation_id])
    if not rows:
        return None
    conversation = _load(Conversation, rows[0], "v_")
    bound = existing = None
    for row in rows:
        if row["r_id"] is None:
            continue
        room = _load(Room, row, "r_")
        if room.id == conversation.room_id:
            bound = room
        if room.workspace == workspace and room.customer_id == conversation.customer_id:
            existing = room
    people = None
    if rows[0]["c_id"] is not None and rows[0]["i_id"] is not None:
        people = _load(Customer, rows[0], "c_"), _load(Identity, rows[0], "i_")
    return conversation, bound, existing, people


async def insert_room(*, bind: int | None = None, **columns: Any) -> Room:
    """Store a new room (``columns`` as :func:`_insert` takes them) and, with ``bind``, bind that
    conversation to it (on PostgreSQL in the same statement). ``IntegrityError`` if the customer has one
    in that workspace already (and nothing is bound)."""
    conn = _connection()
    pool = _pg_pool(conn) if bind is not None else None
    if pool is None:
        room = await _insert(Room, **columns)
        if bind is not None:
            await set_conversation_room(bind, room.id)
        return room
    values, params = _insert_values(Room, columns)
    sql = (
        f'WITH "r" AS ({_insert_sql(Room, "postgres")}), "u" AS (UPDATE "conversation" SET "room_id"='
        f'(SELECT "id" FROM "r") WHERE "id"=${len(params) + 1}) SELECT "id" FROM "r"'
    )
    row = await _pg_run(conn, pool, sql, [*params, bind], one=True)
    values[Room._meta.db_pk_column] = int(row[0])
    return Room._init_from_db(**values)


async def set_conversation_room(conversation_id: int, room_id: int) -> None:
    """Bind a conversation to a room."""
    await _query('UPDATE "conversation" SET "room_id"=? WHERE "id"=?', [room_id, conversation_id])


async def customer_and_identity(customer_id: int, identity_id: int) -> tuple[Customer, Identity] | None:
    """A customer and an identity (of theirs, or another's), in one statement; None if either is gone."""
    sql = (
        f"SELECT {_columns(Customer, 'c_', 'c')}, {_columns(Identity, 'i_', 'i')} "
        'FROM "customer" "c", "identity" "i" WHERE "c"."id"=? AND "i"."id"=?'
    )
    _count, rows = await _query(sql, [customer_id, identity_id])
    if not rows:
        return None
    return _load(Customer, rows[0], "c_"), _load(Identity, rows[0], "i_")


async def customer_keys(
    channel: str | None, external_id: str | None, contacts: Sequence[tuple[str, str]] = ()
) -> list[tuple[int, str | None]]:
    """(customer id, bus key) of the customer of this channel identity (none with ``channel=None``) and of
    the owners of ``contacts`` (verified ``(kind, value)`` pairs): what an inbound event is
    published under. One statement."""
    parts = []
    values: list[Any] = []
    if channel is not None:
        parts.append(
            'SELECT "c"."id", "c"."bus_key" FROM "identity" "i" '
            'JOIN "customer" "c" ON "c"."id"="i"."customer_id" WHERE "i"."channel"=? AND "i"."external_id"=?'
        )
        values += [channel, external_id]
    for kind, value in contacts:
        parts.append(
            'SELECT "c"."id", "c"."bus_key" FROM "customer_contact" "k" '
            'JOIN "customer" "c" ON "c"."id"="k"."customer_id" WHERE "k"."kind"=? AND "k"."value"=?'
        )
        values += [kind, value]
    if not parts:
        return []
    _count, rows = await _query(" UNION ALL ".join(parts), values)
    return [(int(row[0]), row[1]) for row in rows]


async def consent_of_conversation(conversation_id: int, topic: str) -> Consent | None:
    """The consent record for ``topic`` of the customer of conversation ``conversation_id``, if any
    (asked before every delivery to a customer)."""
    sql = (
        f"SELECT {_columns(Consent, 'k_', 'k')} "
        'FROM "consent" "k" JOIN "conversation" "v" ON "v"."customer_id"="k"."customer_id" '
        'WHERE "v"."id"=? AND "k"."topic"=?'
    )
    _count, rows = await _query(sql, [conversation_id, topic])
    return _load(Consent, rows[0], "k_") if rows else None


async def touch_conversation(conversation: Conversation, at: datetime) -> None:
    """Note a new customer message at ``at`` on ``conversation`` (in the row and on the instance)."""
    now = timezone.now()
    await _query(
        'UPDATE "conversation" SET "last_customer_message_at"=?, "updated_at"=? WHERE "id"=?',
        [
            _db_datetime(Conversation, "last_customer_message_at", at),
            _db_datetime(Conversation, "updated_at", now),
            conversation.id,
        ],
    )
    conversation.last_customer_message_at = at
    conversation.updated_at = now


async def insert_conversation_log(**columns: Any) -> int:
    """Append one row to the conversation log (``columns`` as :func:`_insert_row` takes them); its id.
    ``IntegrityError`` when its ``action_key`` is known (a replayed event)."""
    row_id, _values = await _insert_row(ConversationLog, **columns)
    return row_id


# -- the outbox --------------------------------------------------------------------------------------


def _lane_head_sql(
    conversation_id: int | None, target: str, besides: int | None = None
) -> tuple[str, list[Any]]:
    """The statement and values of :func:`outbox_lane_head` (leaving out row ``besides``)."""
    conversation_test = '"conversation_id"=?' if conversation_id is not None else '"conversation_id" IS NULL'
    values: list[Any] = [target, OutboxStatus.PENDING.value, OutboxStatus.SENDING.value]
    if conversation_id is not None:
        values.insert(0, conversation_id)
    other = ""
    if besides is not None:
        other = ' AND "id"<>?'
        values.append(besides)
    sql = (
        f'SELECT {_columns(OutboxItem)} FROM "outbox_item" WHERE {conversation_test} '
        f'AND "target"=? AND "status" IN (?,?){other} ORDER BY "id" LIMIT 1'
    )
    return sql, values


async def outbox_lane_head(conversation_id: int | None, target: str) -> OutboxItem | None:
    """The oldest row of a lane (a conversation's rows for one target) that is pending or being sent."""
    _count, rows = await _query(*_lane_head_sql(conversation_id, target))
    return _load_outbox(rows[0]) if rows else None


async def claim_lane_head(conversation_id: int | None, target: str, until: datetime) -> OutboxItem | None:
    """Claim a lane's head row (as :func:`claim_outbox_row` would) if it is due: pending and its next
    attempt come, or ``sending`` under an expired claim. The claimed row, or None when the head is not
    due, held by another worker or missing (:func:`outbox_lane_head` then tells which).

    One statement instead of a read and a claim, for the lane a new delivery starts. Between workers:
    a row another worker claimed after this statement's read is re-checked by PostgreSQL before it is
    changed (and SQLite has one writer), so at most one claim wins.
    """
    head_sql, head_values = _lane_head_sql(conversation_id, target)
    now = _db_datetime(OutboxItem, "claimed_until", timezone.now())
    # (a WITH statement: every client reads its rows, even inside a transaction)
    sql = (
        'WITH "h" AS ('
        + head_sql.replace(f"SELECT {_columns(OutboxItem)} ", 'SELECT "id" ', 1)
        + ') UPDATE "outbox_item" SET "status"=?, "claimed_until"=? WHERE "id"=(SELECT "id" FROM "h") '
        'AND (("status"=? AND "next_attempt_at"<=?) OR ("status"=? AND "claimed_until"<?)) '
        f"RETURNING {_columns(OutboxItem)}"
    )
    values = [
        *head_values,
        OutboxStatus.SENDING.value,
        _db_datetime(OutboxItem, "claimed_until", until),
        OutboxStatus.PENDING.value,
        _db_datetime(OutboxItem, "next_attempt_at", timezone.now()),
        OutboxStatus.SENDING.value,
        now,
    ]
    _count, rows = await _query(sql, values)
    return _load_outbox(rows[0]) if rows else None


@dataclass(frozen=True)
class LaneHead:
    """The oldest unsent row of one outbox lane, as the periodic scan needs it."""

    id: int
    conversation_id: int | None
    target: str
    status: OutboxStatus
    next_attempt_at: datetime
    claimed_until: datetime | None


def _aware(value: Any) -> Any:
    """A datetime column's value as an aware datetime (SQLite returns ISO text)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


async def outbox_lane_heads(limit: int) -> list[LaneHead]:
    """The head row of every lane that has rows pending or being sent (at most ``limit`` lanes, oldest first)."""
    sql = (
        'SELECT "o"."id", "o"."conversation_id", "o"."target", "o"."status", "o"."next_attempt_at", '
        '"o"."claimed_until" FROM "outbox_item" "o" JOIN ('
        'SELECT MIN("id") "head" FROM "outbox_item" WHERE "status" IN (?,?) '
        'GROUP BY "conversation_id", "target") "h" ON "h"."head"="o"."id" ORDER BY "o"."id" LIMIT ?'
    )
    _count, rows = await _query(sql, [OutboxStatus.PENDING.value, OutboxStatus.SENDING.value, limit])
    return [
        LaneHead(row[0], row[1], str(row[2]), OutboxStatus(row[3]), _aware(row[4]), _aware(row[5]))
        for row in rows
    ]


async def outbox_depth() -> int:
    """How many rows are pending or being sent."""
    _count, rows = await _query(
        'SELECT COUNT(*) FROM "outbox_item" WHERE "status" IN (?,?)',
        [OutboxStatus.PENDING.value, OutboxStatus.SENDING.value],
    )
    return int(rows[0][0])


async def claim_outbox_row(row_id: int, status: OutboxStatus, until: datetime) -> bool:
    """Mark a row ``sending`` until ``until`` if it is still in ``status``; False if another worker was faster.

    A row already ``sending`` is taken over only if its claim has expired (its worker died or hangs).
    """
    values = [
        OutboxStatus.SENDING.value,
        _db_datetime(OutboxItem, "claimed_until", until),
        row_id,
        status.value,
    ]
    sql = 'UPDATE "outbox_item" SET "status"=?, "claimed_until"=? WHERE "id"=? AND "status"=?'
    if status is OutboxStatus.SENDING:
        sql += ' AND "claimed_until" < ?'
        values.append(_db_datetime(OutboxItem, "claimed_until", timezone.now()))
    changed, _rows = await _query(sql, values)
    return changed > 0


MESSAGE_ID_COLUMNS = frozenset({"workspace_message_id", "channel_message_id"})
"""The columns of a message that :func:`mark_outbox_sent` can fill with the platform's id for it."""


async def mark_outbox_sent(
    row: OutboxItem, external_message_id: str, *, message_column: str | None = None
) -> OutboxItem | None:
    """Record a delivered row (``sent``, the platform's id for it, one more attempt, no claim; in the row
    and on the instance) and return its lane's next head (as :func:`outbox_lane_head`).

    With ``message_column`` (one of :data:`MESSAGE_ID_COLUMNS`), the row's message gets the platform's
    id there too (edits and replies find it by this id); a message delivered to the customer
    (``channel_message_id``) is ``sent`` unless its channel reported more already. All in one
    transaction: one commit per delivery (on PostgreSQL one statement).
    """
    attempts, at = row.attempts + 1, timezone.now()
    statements: list[tuple[str, Sequence[Any]]] = [
        (
            'UPDATE "outbox_item" SET "status"=?, "external_message_id"=?, "claimed_until"=NULL, '
            '"attempts"=?, "updated_at"=? WHERE "id"=?',
            [
                OutboxStatus.SENT.value,
                external_message_id,
                attempts,
                _db_datetime(OutboxItem, "updated_at", at),
                row.id,
            ],
        )
    ]
    if message_column is not None and row.message_id is not None:
        if message_column not in MESSAGE_ID_COLUMNS:
            raise ValueError(f"not a message id column: {message_column!r}")
        if message_column == "channel_message_id":  # delivered to the customer: the message is sent
            # (unless the channel told more already: a status never goes back)
            sql = (
                'UPDATE "message" SET "channel_message_id"=?, "delivery_status"='
                'CASE WHEN "delivery_status"=? THEN ? ELSE "delivery_status" END WHERE "id"=?'
            )
            statements.append((sql, [external_message_id, "", "sent", row.message_id]))
        else:
            statements.append(
                (
                    f'UPDATE "message" SET "{message_column}"=? WHERE "id"=?',
                    [external_message_id, row.message_id],
                )
            )
    if _connection().capabilities.dialect == "postgres":
        # one statement, one round trip: the updates as data-modifying CTEs; the lane's head is read from
        # the snapshot before them, so the row just sent is left out by its id
        head_sql, head_values = _lane_head_sql(row.conversation_id, row.target.value, besides=row.id)
        ctes = ", ".join(f'"u{n}" AS ({sql})' for n, (sql, _values) in enumerate(statements))
        values = [v for _sql, vals in statements for v in vals]
        _count, rows = await _query(f"WITH {ctes} {head_sql}", [*values, *head_values])
    else:
        statements.append(_lane_head_sql(row.conversation_id, row.target.value))
        results = await _query_all(statements)
        _count, rows = results[-1]
    row.status, row.external_message_id, row.claimed_until = OutboxStatus.SENT, external_message_id, None
    row.attempts, row.updated_at = attempts, at
    return _load_outbox(rows[0]) if rows else None


__all__ = [
    "MESSAGE_ID_COLUMNS",
    "LaneHead",
    "UnreadablePayload",
    "append_journal_entry",
    "claim_outbox_row",
    "commit_point",
    "conversation_rooms",
    "conversation_rooms_and_people",
    "create_customer",
    "customer_and_identity",
    "customer_keys",
    "delete_journal_entry",
    "durable",
    "identity_state",
    "insert_conversation_log",
    "insert_message",
    "insert_outbox_row",
    "insert_receipt",
    "insert_room",
    "mark_outbox_sent",
    "mark_receipt_processed",
    "open_conversation_of",
    "outbox_depth",
    "outbox_lane_head",
    "outbox_lane_heads",
    "select",
    "set_conversation_room",
    "touch_conversation",
]
