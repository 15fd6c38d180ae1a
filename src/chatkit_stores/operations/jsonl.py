"""The chatkit-stores export format: JSON Lines, version 1.

A file is UTF-8 text, one JSON object per line (every non-ASCII character escaped, so a line
never contains a raw line separator). The first line is the header, the last the end line;
between them, one line per row. For example (each object is one line in the file; wrapped
here)::

    {"format": "chatkit-stores", "version": 1,
     "exported_at": "2026-01-05T10:00:00.000000+00:00"}
    {"table": "threads", "tenant": "u1", "id": "thr_1",
     "created_at": "2025-03-14T15:09:26.535897", "data": "{\\"id\\":\\"thr_1\\",...}"}
    {"table": "items", "tenant": "u1", "thread_id": "thr_1", "id": "msg_1",
     "type": "user_message", "created_at": "2025-03-14T15:09:27.000000", "data": "..."}
    {"table": "attachments", "tenant": "u1", "id": "atc_1", "thread_id": null,
     "created_at": "2025-03-14T15:09:20.000000", "data": "..."}
    {"format": "chatkit-stores", "end": true,
     "rows": {"threads": 1, "items": 1, "attachments": 1}}

Row fields:

- ``table``: ``threads``, ``items`` or ``attachments``.
- ``tenant``, ``id``: the row's key; items also have ``thread_id`` (required) and ``type`` (the
  item type), attachments ``thread_id`` (``null`` until the attachment is sent in a thread).
- ``created_at``: ISO 8601, naive UTC with microseconds, exactly as stored (for attachments it
  is when the metadata was first saved, which ``orphans`` uses). A value with an offset is
  converted to UTC on import.
- ``data``: the stored pydantic JSON of the model as a *string*, byte for byte what the database
  holds. On import an object is accepted too (it is serialized compactly, as pydantic would).

Rows of a table appear in their original insertion order (``seq``), which import keeps: rows
with equal ``created_at`` stay in the same order. Export writes all threads, then items, then
attachments; import accepts the tables in any order and interleaved. Unknown fields are ignored,
so later minor additions stay readable; a reader refuses any other ``version``. The end line
counts the rows per table: a file without it (an export cut short) is reported on import.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Generator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..base import is_key, naive_utc
from ..tenancy import TenantError, check_tenant
from . import OperationError
from .database import COLUMNS, TABLES, Row

FORMAT = "chatkit-stores"
VERSION = 1
STDIO = "-"
"""The file name that means stdout (export) or stdin (import)."""


def header() -> dict[str, Any]:
    """The first line of a new export."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }


def end_line(rows: dict[str, int]) -> dict[str, Any]:
    """The last line of a complete export: rows per table."""
    return {"format": FORMAT, "end": True, "rows": {name: rows.get(name, 0) for name in TABLES}}


def encode_row(table: str, row: Row) -> dict[str, Any]:
    """The line object of one row of ``table``."""
    line: dict[str, Any] = {"table": table}
    for column in COLUMNS[table]:
        value = row[column]
        line[column] = value.isoformat(timespec="microseconds") if column == "created_at" else value
    return line


def dumps(line: dict[str, Any]) -> str:
    """One line of the file, with its newline."""
    return json.dumps(line, ensure_ascii=True) + "\n"


@dataclass(frozen=True)
class End:
    """The end line: how many rows of each table the file holds."""

    rows: dict[str, int]


def decode_line(text: str, where: str) -> tuple[str, Row] | End:
    """Parse one line after the header into ``(table, row)`` or :class:`End`."""
    try:
        line = json.loads(text)
    except json.JSONDecodeError as error:
        raise OperationError(f"{where}: not JSON: {error}") from None
    if not isinstance(line, dict):
        raise OperationError(f"{where}: expected a JSON object")
    if line.get("end") is True and line.get("format") == FORMAT:
        rows = line.get("rows")
        if not isinstance(rows, dict) or not all(isinstance(n, int) for n in rows.values()):
            raise OperationError(f"{where}: the end line needs row counts")
        return End({name: int(rows.get(name, 0)) for name in TABLES})
    table = line.get("table")
    if table not in COLUMNS:
        raise OperationError(f"{where}: 'table' must be one of {', '.join(TABLES)}")
    row: Row = {}
    for column in COLUMNS[table]:
        if column not in line:
            raise OperationError(f"{where}: a row of {table} needs {column!r}")
        row[column] = _field(table, column, line[column], where)
    return table, row


def _field(table: str, column: str, value: Any, where: str) -> Any:
    if column == "tenant":
        try:
            return check_tenant(value, source=f"{where} 'tenant'")
        except TenantError:
            raise OperationError(
                f"{where}: 'tenant' must be 1-255 characters without NUL"
            ) from None
    if column in ("id", "thread_id"):
        if column == "thread_id" and table == "attachments" and value is None:
            return None
        if not is_key(value):
            raise OperationError(f"{where}: {column!r} must be 1-255 characters without NUL")
        return value
    if column == "type":
        if not isinstance(value, str) or not 0 < len(value) <= 64:
            raise OperationError(f"{where}: 'type' must be a string of 1-64 characters")
        return value
    if column == "created_at":
        try:
            if isinstance(value, str) and value.endswith(("Z", "z")):  # Python 3.10 wants +00:00
                value = value[:-1] + "+00:00"
            return naive_utc(datetime.fromisoformat(value))
        except (TypeError, ValueError):
            raise OperationError(f"{where}: 'created_at' must be an ISO 8601 timestamp") from None
    # data
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    raise OperationError(f"{where}: 'data' must be the stored JSON string or an object")


class ExportWriter:
    """Writes an export to ``path`` (``-``: stdout) through a temporary file, renamed at the end.

    A file that is not closed with :meth:`finish` is removed, so a failed export never leaves
    something that looks complete.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows = dict.fromkeys(TABLES, 0)
        self._partial: Path | None = None
        self._file: IO[str]
        if path == STDIO:
            self._file = sys.stdout
        else:
            target = Path(path)
            self._partial = target.with_name(f".{target.name}.partial")
            try:
                self._file = self._partial.open("w", encoding="utf-8")
            except OSError as error:
                raise OperationError(f"cannot write {path}: {error.strerror}") from None
        self._file.write(dumps(header()))

    def write(self, table: str, rows: list[Row]) -> None:
        """Append rows of ``table``."""
        self._file.writelines(dumps(encode_row(table, row)) for row in rows)
        self.rows[table] += len(rows)

    def finish(self) -> None:
        """Write the end line and put the file in place."""
        self._file.write(dumps(end_line(self.rows)))
        self._file.flush()
        if self._partial is not None:
            self._file.close()
            self._partial.replace(self.path)
            self._partial = None

    def __enter__(self) -> ExportWriter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._partial is not None:
            self._file.close()
            self._partial.unlink(missing_ok=True)


def read_export(path: str) -> Generator[tuple[str, Row] | End, None, None]:
    """Yield the rows of an export file (``-``: stdin) after checking its header.

    The :class:`End` line, when present, comes last; anything after it is an error.
    """
    name = "stdin" if path == STDIO else path
    try:
        file = sys.stdin if path == STDIO else Path(path).open(encoding="utf-8")  # noqa: SIM115
    except OSError as error:
        raise OperationError(f"cannot read {path}: {error.strerror}") from None
    try:
        first = file.readline()
        _check_header(first, name)
        ended = False
        for number, text in enumerate(file, start=2):
            if not text.strip():
                continue
            where = f"{name} line {number}"
            if ended:
                raise OperationError(f"{where}: rows after the end line")
            decoded = decode_line(text, where)
            ended = isinstance(decoded, End)
            yield decoded
    except UnicodeDecodeError as error:
        raise OperationError(f"{name}: not UTF-8 text ({error.reason})") from None
    finally:
        if file is not sys.stdin:
            file.close()


def _check_header(text: str, name: str) -> None:
    try:
        first = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        first = None
    if not isinstance(first, dict) or first.get("format") != FORMAT:
        raise OperationError(f"{name} is not a chatkit-stores export (no header line)")
    if first.get("version") != VERSION:
        raise OperationError(
            f"{name} is export format version {first.get('version')!r}; "
            f"this chatkit-stores reads version {VERSION}"
        )
