"""Every statement the SQL store runs, built once with SQLAlchemy and compiled once per dialect.

SQLAlchemy does what it is good at here: one definition of each statement, rendered for SQLite,
PostgreSQL and MySQL/MariaDB (placeholders, casts, upserts, index hints). The store then runs the
compiled text on the driver connection, so a call pays no per-call compilation, cache-key or
result-processing cost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from sqlalchemy import (
    Dialect,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from . import dialects
from .schema import Tables

Kind = Literal["thread", "item"]
Order = Literal["asc", "desc"]
KEYS: dict[Kind, list[str]] = {"thread": ["tenant", "id"], "item": ["tenant", "thread_id", "id"]}
"""The key of each kind of row that is read in pages."""
KINDS: tuple[Kind, ...] = ("thread", "item")
ORDERS: tuple[Order, ...] = ("asc", "desc")


@dataclass(frozen=True)
class Statement:
    """One statement's SQL text for one dialect, and how to order its parameters."""

    name: str
    sql: str
    params: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    converters: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """Return the positional parameters for ``values`` (named by the statement's binds)."""
        out = []
        for name in self.params:
            value = values[name] if name in values else self.defaults[name]
            convert = self.converters.get(name)
            out.append(value if convert is None else convert(value))
        return out


def compile_statement(name: str, clause: ClauseElement, dialect: Dialect) -> Statement:
    """Compile ``clause`` for ``dialect`` once; keep the type conversions its binds need."""
    # As for executemany: an INSERT gets no RETURNING of the new seq, which nothing reads.
    compiled = cast(SQLCompiler, clause.compile(dialect=dialect, for_executemany=True))
    names = tuple(compiled.positiontup or ())
    defaults: dict[str, Any] = {}
    converters: dict[str, Callable[[Any], Any]] = {}
    for bind_name in set(names):
        bind = compiled.binds[bind_name]
        if not bind.required:
            defaults[bind_name] = bind.effective_value
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if processor is not None:
            converters[bind_name] = processor
    return Statement(name, compiled.string, names, defaults, converters)


@dataclass(frozen=True)
class Statements:
    """Every statement the store runs, for one table set and dialect: ``sql.save_item``, ...

    Built and compiled once per store (``build_statements``); a statement the store names but
    nobody built is an ``AttributeError`` for mypy and at build time, not at the first call.
    """

    save_thread: Statement  # upsert, bumps the version
    load_thread: Statement  # data, version
    swap_thread: Statement  # a save that happens only if nobody saved in between
    delete_thread: Statement
    delete_inactive_thread: Statement  # prune's condition, checked by the delete
    save_item: Statement  # upsert; an existing item keeps its place
    insert_item: Statement  # an add that writes only if the item is not stored
    load_item: Statement
    delete_item: Statement
    delete_thread_items: Statement
    save_attachment: Statement
    load_attachment: Statement
    delete_attachment: Statement
    delete_thread_attachments: Statement
    thread_attachment_ids: Statement
    lock_attachment: Statement  # read for a change in the same transaction
    update_attachment: Statement
    orphaned_attachments: Statement  # every tenant's
    delete_orphan: Statement  # the orphan condition, checked by the deleting statement
    attachment_keys: Statement  # every tenant's, keyset on the (tenant, id) key
    thread_cursor: Statement  # does the cursor exist (asked after an empty page)
    item_cursor: Statement
    pages: Mapping[tuple[Kind, Order, bool], Statement]
    """``(kind, order, after)``: up to ``limit`` rows in order, after the cursor when ``after``."""

    def page(self, kind: Kind, order: Order, *, after: bool) -> Statement:
        """The page of threads or items in ``order`` (keyset after the cursor when ``after``)."""
        return self.pages[kind, order, after]

    def cursor(self, kind: Kind) -> Statement:
        """Whether the cursor row of a thread or item page exists."""
        return self.thread_cursor if kind == "thread" else self.item_cursor

    def every(self) -> dict[str, Statement]:
        """Every statement by name, for tests and benchmarks that EXPLAIN them all."""
        named = [getattr(self, f.name) for f in fields(self) if f.name != "pages"]
        return {statement.name: statement for statement in [*named, *self.pages.values()]}


def build_statements(tables: Tables, backend: str, dialect: Dialect) -> Statements:
    """Build and compile every statement of ``tables`` for ``backend`` (once per table set)."""
    cache_key = (tables.threads.name, backend, type(dialect), dialect.name)
    statements = _BUILT.get(cache_key)
    if statements is None:
        statements = _build(tables, backend, dialect)
        _BUILT[cache_key] = statements
    return statements


_BUILT: dict[tuple[Any, ...], Statements] = {}


def _build(t: Tables, backend: str, dialect: Dialect) -> Statements:
    def sql(name: str, clause: ClauseElement) -> Statement:
        return compile_statement(name, clause, dialect)

    threads, items, attachments = t.threads, t.items, t.attachments
    thread_key, item_key, attachment_key = ["tenant", "id"], KEYS["item"], ["tenant", "id"]
    # max() rather than NOT EXISTS: PostgreSQL's generic plan for an EXISTS expects a match
    # early and scans the table; max() always walks the index from its end.
    newest_item = (
        select(func.max(items.c.created_at))
        .where(items.c.tenant == bindparam("tenant"), items.c.thread_id == bindparam("id"))
        .scalar_subquery()
    )
    after_tenant: Any = bindparam("after_tenant")
    after_id: Any = bindparam("after_id")
    pages = {
        (kind, order, after): sql(
            f"page_{kind}_{order}" + ("_after" if after else ""),
            _page(backend, threads if kind == "thread" else items, kind, order, after),
        )
        for kind in KINDS
        for order in ORDERS
        for after in (False, True)
    }
    clauses: dict[str, ClauseElement] = {
        "save_thread": dialects.upsert(
            backend, threads, _row(threads), thread_key, ["data"], "version"
        ),
        "load_thread": select(threads.c.data, threads.c.version).where(
            *_match(threads, *thread_key)
        ),
        "swap_thread": update(threads)
        .where(*_match(threads, "tenant", "id", "version"))
        .values(data=bindparam("data"), version=threads.c.version + 1),
        "delete_thread": delete(threads).where(*_match(threads, *thread_key)),
        "delete_inactive_thread": delete(threads).where(
            *_match(threads, "tenant", "id"),
            threads.c.created_at < bindparam("before"),
            func.coalesce(newest_item, threads.c.created_at) < bindparam("before"),
        ),
        "save_item": dialects.upsert(backend, items, _row(items), item_key, ["type", "data"]),
        "insert_item": dialects.insert_missing(backend, items, _row(items), item_key),
        "load_item": select(items.c.data).where(*_match(items, *item_key)),
        "delete_item": delete(items).where(*_match(items, *item_key)),
        "delete_thread_items": delete(items).where(*_match(items, "tenant", "thread_id")),
        "save_attachment": dialects.upsert(
            backend, attachments, _row(attachments), attachment_key, ["thread_id", "data"]
        ),
        "load_attachment": select(attachments.c.data).where(*_match(attachments, *attachment_key)),
        "delete_attachment": delete(attachments).where(*_match(attachments, *attachment_key)),
        "delete_thread_attachments": delete(attachments).where(
            *_match(attachments, "tenant", "thread_id")
        ),
        "thread_attachment_ids": select(attachments.c.id).where(
            *_match(attachments, "tenant", "thread_id")
        ),
        "lock_attachment": select(attachments.c.data)
        .where(*_match(attachments, *attachment_key))
        .with_for_update(),
        "update_attachment": update(attachments)
        .where(*_match(attachments, *attachment_key))
        .values(thread_id=bindparam("thread_id"), data=bindparam("data")),
        "orphaned_attachments": select(attachments.c.tenant, attachments.c.id)
        .where(attachments.c.thread_id.is_(None), attachments.c.created_at < bindparam("before"))
        .order_by(attachments.c.created_at)
        .limit(bindparam("limit")),
        "delete_orphan": delete(attachments).where(
            *_match(attachments, *attachment_key),
            attachments.c.thread_id.is_(None),
            attachments.c.created_at < bindparam("before"),
        ),
        "attachment_keys": select(attachments.c.tenant, attachments.c.id)
        .where(
            or_(
                attachments.c.tenant > after_tenant,
                and_(attachments.c.tenant == after_tenant, attachments.c.id > after_id),
            )
        )
        .order_by(attachments.c.tenant, attachments.c.id)
        .limit(bindparam("limit")),
        "thread_cursor": _cursor(backend, threads, KEYS["thread"], "id", "seq"),
        "item_cursor": _cursor(backend, items, item_key, "id", "seq"),
    }
    compiled = {name: sql(name, clause) for name, clause in clauses.items()}
    return Statements(**compiled, pages=pages)


def _page(backend: str, table: Table, kind: Kind, order: Order, after: bool) -> ClauseElement:
    """Up to ``limit`` rows in order, after the cursor row when ``after`` (keyset)."""
    key = KEYS[kind]
    if backend == "postgresql":
        return _page_unseen(table, key, order == "asc", after)
    scope = key[:-1]  # a thread's items, or a tenant's threads
    at, seq = table.c.created_at, table.c.seq
    stmt = select(table.c.data, table.c.id).where(*_match(table, *scope))
    if after:
        # The cursor row is joined by its whole key: one lookup in the key index, which
        # MariaDB reads first, as a constant. Written as a range on created_at so MariaDB
        # uses the index too (it does not range-scan a row-value comparison).
        cursor = table.alias("cursor")
        stmt = stmt.where(*_match(cursor, *scope), cursor.c.id == bindparam("after"))
        if order == "asc":
            stmt = stmt.where(
                at >= cursor.c.created_at, or_(at > cursor.c.created_at, seq > cursor.c.seq)
            )
        else:
            stmt = stmt.where(
                at <= cursor.c.created_at, or_(at < cursor.c.created_at, seq < cursor.c.seq)
            )
    stmt = dialects.use_index(stmt, table, f"{table.name}_order")
    ordering = [at, seq] if order == "asc" else [at.desc(), seq.desc()]
    return stmt.order_by(*ordering).limit(bindparam("limit"))


def _page_unseen(table: Table, key: list[str], forward: bool, after: bool) -> ClauseElement:
    """The page for PostgreSQL: its start and its LIMIT are values the planner cannot see.

    PostgreSQL plans from statistics, and a thread that grew after the last ANALYZE looks
    like a row or two: every index then seems to read one row, and reading and sorting the
    whole thread looks as cheap as walking the order index. For a bound it cannot see it
    assumes that a third of the rows pass, and for a LIMIT it cannot see, that a tenth of
    them are wanted: a scan that yields rows in order and stops early then wins by far. So
    within the tenant (whose equality routes the statement to one shard on Citus), the page
    starts at a subquery's value, the cursor or the thread's first or last row, and runs
    on along the order index; rows past the thread (read only to fill the LIMIT) are
    dropped outside it.
    """
    within = [table.c[column] for column in key[1:-1]] + [table.c.created_at, table.c.seq]
    bounds = []
    if after:
        start = _cursor("postgresql", table, key, "after", *key[1:-1], "created_at", "seq")
        position, cursor = tuple_(*within), start.scalar_subquery()
        bounds.append(position > cursor if forward else position < cursor)
    elif len(key) == 3:  # a thread's items, from the thread's first or last row
        thread = _unseen(bindparam("thread_id", type_=table.c.thread_id.type))
        bounds.append(table.c.thread_id >= thread if forward else table.c.thread_id <= thread)
    ordering = within if forward else [column.desc() for column in within]
    page = (
        select(table.c.data, table.c.id, *within)
        .where(table.c.tenant == bindparam("tenant"), *bounds)
        .order_by(*ordering)
        .limit(_unseen(bindparam("limit", type_=Integer)))
    )
    if len(key) == 2:  # a tenant's threads: the tenant's equality bounds the page
        return page.with_only_columns(table.c.data, table.c.id)
    rows = page.subquery("page")
    in_order = [rows.c[column.name] for column in within]
    return (
        select(rows.c.data, rows.c.id)
        .where(rows.c.thread_id == bindparam("thread_id"))
        .order_by(*(in_order if forward else [column.desc() for column in in_order]))
    )


def _cursor(backend: str, table: Table, key: list[str], name: str, *columns: str) -> Select[Any]:
    """``columns`` of the row with the bound key (its id bound as ``name``), by the key index.

    On PostgreSQL an equality on the whole key may walk the order index and filter the
    whole thread by id, when the statistics take the thread for a row or two (see
    ``_page_unseen``). So the row is found as the first one at or after the key within the
    tenant, bounded and LIMITed by values the planner cannot see: only the key index,
    already in that order, stops at once; any other index would read and sort.
    """
    cursor = table.alias("cursor")
    binds: dict[str, Any] = {c: bindparam(c) for c in key[:-1]} | {"id": bindparam(name)}
    if backend != "postgresql":
        found = [cursor.c[column] == bind for column, bind in binds.items()]
        return select(*(cursor.c[column] for column in columns)).where(*found)
    rest = [cursor.c[column] for column in key[1:]]  # the key after its tenant
    seek = _unseen(*(bindparam(binds[c.name].key, type_=c.type) for c in rest))
    first = (
        select(*rest, *(cursor.c[column] for column in columns if column not in key))
        .where(cursor.c.tenant == binds["tenant"], tuple_(*rest) >= seek)
        .order_by(*rest)
        .limit(_unseen(literal_column("1")))
        .subquery("at_key")
    )
    found = [first.c[column] == binds[column] for column in key[1:]]
    return select(*(first.c[column] for column in columns)).where(*found)


def _unseen(*values: Any) -> Any:
    """``(SELECT value, ...)``: values PostgreSQL cannot see when it plans (see _page_unseen)."""
    return select(*values).scalar_subquery()


def _match(table: Any, *columns: str) -> list[Any]:
    """``column = :column`` for each column (``table`` is a Table or an alias of one)."""
    return [table.c[name] == bindparam(name) for name in columns]


def _row(table: Table) -> dict[str, Any]:
    """``column: :column`` for every column a save writes (not the store's own counters)."""
    return {c.name: bindparam(c.name) for c in table.c if c.name not in ("seq", "version")}
