"""Every statement the SQL store runs, built once with SQLAlchemy and compiled once per dialect.

SQLAlchemy does what it is good at here: one definition of each statement, rendered for SQLite,
PostgreSQL and MySQL/MariaDB (placeholders, casts, upserts, index hints). The store then runs the
compiled text on the driver connection, so a call pays no per-call compilation, cache-key or
result-processing cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

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

KINDS = {
    "thread": ("threads", ["tenant", "id"], ["data"]),
    "item": ("items", ["tenant", "thread_id", "id"], ["type", "data"]),
    "attachment": ("attachments", ["tenant", "id"], ["thread_id", "data"]),
}
"""For each kind of row: its table, its key, and the columns a save overwrites."""


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


class Statements:
    """The store's statements for one table set and dialect, compiled on first use."""

    def __init__(self, tables: Tables, backend: str, dialect: Dialect) -> None:
        self.tables = tables
        self.backend = backend
        self.dialect = dialect
        self._compiled: dict[str, Statement] = {}

    def __getitem__(self, name: str) -> Statement:
        statement = self._compiled.get(name)
        if statement is None:
            if name not in set(self.names()):  # so that names() lists all the store runs
                raise KeyError(name)
            statement = compile_statement(name, self._build(name), self.dialect)
            self._compiled[name] = statement
        return statement

    def names(self) -> Iterator[str]:
        """Every statement name, for tests that EXPLAIN or inspect them all."""
        for kind in KINDS:
            yield from (f"save_{kind}", f"load_{kind}", f"delete_{kind}")
        yield from ("swap_thread", "insert_item")
        yield from ("delete_thread_items", "delete_thread_attachments", "thread_attachment_ids")
        yield "delete_inactive_thread"
        yield from ("orphaned_attachments", "delete_orphan", "attachment_keys")
        yield from ("lock_attachment", "update_attachment")
        for kind in ("thread", "item"):
            yield f"cursor_{kind}"
            for order in ("asc", "desc"):
                yield from (f"page_{kind}_{order}", f"page_{kind}_{order}_after")

    def _build(self, name: str) -> ClauseElement:
        t = self.tables
        verb, _, rest = name.partition("_")
        if name == "delete_thread_items":
            return delete(t.items).where(*_match(t.items, "tenant", "thread_id"))
        if name == "delete_thread_attachments":
            return delete(t.attachments).where(*_match(t.attachments, "tenant", "thread_id"))
        if name == "thread_attachment_ids":
            return select(t.attachments.c.id).where(*_match(t.attachments, "tenant", "thread_id"))
        if name == "swap_thread":  # a save that happens only if nobody saved in between
            return (
                update(t.threads)
                .where(*_match(t.threads, "tenant", "id", "version"))
                .values(data=bindparam("data"), version=t.threads.c.version + 1)
            )
        if name == "insert_item":  # an add that writes only if the item is not stored
            row = _row(t.items)
            return dialects.insert_missing(self.backend, t.items, row, KINDS["item"][1])
        if name == "orphaned_attachments":
            a = t.attachments
            return (
                select(a.c.tenant, a.c.id)
                .where(a.c.thread_id.is_(None), a.c.created_at < bindparam("before"))
                .order_by(a.c.created_at)
                .limit(bindparam("limit"))
            )
        if name == "delete_inactive_thread":  # prune's condition, checked by the delete
            th, i = t.threads, t.items
            # max() rather than NOT EXISTS: PostgreSQL's generic plan for an EXISTS expects a
            # match early and scans the table; max() always walks the index from its end.
            newest_item = (
                select(func.max(i.c.created_at))
                .where(i.c.tenant == bindparam("tenant"), i.c.thread_id == bindparam("id"))
                .scalar_subquery()
            )
            return delete(th).where(
                *_match(th, "tenant", "id"),
                th.c.created_at < bindparam("before"),
                func.coalesce(newest_item, th.c.created_at) < bindparam("before"),
            )
        if name == "delete_orphan":  # the orphan condition, checked by the deleting statement
            a = t.attachments
            return delete(a).where(
                *_match(a, "tenant", "id"),
                a.c.thread_id.is_(None),
                a.c.created_at < bindparam("before"),
            )
        if name == "attachment_keys":  # every tenant's, keyset on the (tenant, id) key
            a = t.attachments
            after_tenant: Any = bindparam("after_tenant")
            after_id: Any = bindparam("after_id")
            return (
                select(a.c.tenant, a.c.id)
                .where(
                    or_(
                        a.c.tenant > after_tenant,
                        and_(a.c.tenant == after_tenant, a.c.id > after_id),
                    )
                )
                .order_by(a.c.tenant, a.c.id)
                .limit(bindparam("limit"))
            )
        if name == "lock_attachment":  # read for a change in the same transaction
            a = t.attachments
            return select(a.c.data).where(*_match(a, "tenant", "id")).with_for_update()
        if name == "update_attachment":
            a = t.attachments
            return (
                update(a)
                .where(*_match(a, "tenant", "id"))
                .values(thread_id=bindparam("thread_id"), data=bindparam("data"))
            )
        if verb == "page":
            kind, order, *after = rest.split("_")
            return self._page(kind, order, bool(after))
        table_name, key, overwrite = KINDS[rest]
        table = getattr(t, table_name)
        if verb == "save":
            bump = "version" if "version" in table.c else None
            return dialects.upsert(self.backend, table, _row(table), key, overwrite, bump)
        if verb == "load":
            versioned = [table.c.version] if "version" in table.c else []
            return select(table.c.data, *versioned).where(*_match(table, *key))
        if verb == "delete":
            return delete(table).where(*_match(table, *key))
        if verb == "cursor":  # does the cursor exist (asked after an empty page)
            return self._cursor(table, key, "id", "seq")
        raise KeyError(name)

    def _page(self, kind: str, order: str, after: bool) -> ClauseElement:
        """Up to ``limit`` rows in order, after the cursor row when ``after`` (keyset)."""
        table_name, key, _ = KINDS[kind]
        table: Table = getattr(self.tables, table_name)
        if self.backend == "postgresql":
            return self._page_unseen(table, key, order == "asc", after)
        scope = key[:-1]  # a thread's items, or a tenant's threads
        at, seq = table.c.created_at, table.c.seq
        stmt = select(table.c.data).where(*_match(table, *scope))
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

    def _page_unseen(
        self, table: Table, key: list[str], forward: bool, after: bool
    ) -> ClauseElement:
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
            start = self._cursor(table, key, "after", *key[1:-1], "created_at", "seq")
            position, cursor = tuple_(*within), start.scalar_subquery()
            bounds.append(position > cursor if forward else position < cursor)
        elif len(key) == 3:  # a thread's items, from the thread's first or last row
            thread = _unseen(bindparam("thread_id", type_=table.c.thread_id.type))
            bounds.append(table.c.thread_id >= thread if forward else table.c.thread_id <= thread)
        ordering = within if forward else [column.desc() for column in within]
        page = (
            select(table.c.data, *within)
            .where(table.c.tenant == bindparam("tenant"), *bounds)
            .order_by(*ordering)
            .limit(_unseen(bindparam("limit", type_=Integer)))
        )
        if len(key) == 2:  # a tenant's threads: the tenant's equality bounds the page
            return page.with_only_columns(table.c.data)
        rows = page.subquery("page")
        in_order = [rows.c[column.name] for column in within]
        return (
            select(rows.c.data)
            .where(rows.c.thread_id == bindparam("thread_id"))
            .order_by(*(in_order if forward else [column.desc() for column in in_order]))
        )

    def _cursor(self, table: Table, key: list[str], name: str, *columns: str) -> Select[Any]:
        """``columns`` of the row with the bound key (its id bound as ``name``), by the key index.

        On PostgreSQL an equality on the whole key may walk the order index and filter the
        whole thread by id, when the statistics take the thread for a row or two (see
        ``_page_unseen``). So the row is found as the first one at or after the key within the
        tenant, bounded and LIMITed by values the planner cannot see: only the key index,
        already in that order, stops at once; any other index would read and sort.
        """
        cursor = table.alias("cursor")
        binds: dict[str, Any] = {c: bindparam(c) for c in key[:-1]} | {"id": bindparam(name)}
        if self.backend != "postgresql":
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
