"""Read-only access to a state home's database for people and tools: one SELECT at a time, and table
exports Datasette and ``sqlite-utils insert`` read back as they are.

Nothing here can change the database, three times over: the file is opened ``mode=ro``, the connection
is ``query_only``, and an authorizer allows only reading (a ``WITH ... DELETE`` or a ``pragma_*``
table function is refused by SQLite itself, not by parsing). The trading path never comes here: it keeps
its own connection and raw ``sqlite3`` (sqlite-utils' insert is 4x slower per row; bench/bench_query.py).
Queries run on raw ``sqlite3`` too; the export uses sqlite-utils (one-shot, its import cost is paid once).
"""

from __future__ import annotations

import base64
import csv
import json
import re
import sqlite3
from pathlib import Path

from ..paths import StateHome

MAX_ROWS = 100_000
FORMATS = ("csv", "json")

# what a read needs; everything else (writes, ATTACH, PRAGMA, schema changes) is denied
_ALLOWED_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                    getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_LEADING = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)


class QueryError(ValueError):
    """The query or export was refused or failed; the message names what was wrong."""


_READ_PRAGMAS = {"table_info", "table_xinfo"}   # sqlite-utils reads a table's columns this way


def _deny_all_but_reads(action, arg1, arg2, dbname, source):
    if action in _ALLOWED_ACTIONS or (action == sqlite3.SQLITE_PRAGMA and arg1 in _READ_PRAGMAS):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def connect_ro(home: StateHome) -> sqlite3.Connection:
    path = Path(home.db_path)
    if not path.is_file():
        raise QueryError(f"home: no database at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10.0)
    except sqlite3.Error as e:
        raise QueryError(f"home: cannot open {path} read-only ({e})") from None
    conn.execute("PRAGMA query_only=ON")
    conn.set_authorizer(_deny_all_but_reads)
    return conn


def check_select(sql: str) -> str:
    """``sql`` if it is one SELECT or WITH statement (a trailing ';' allowed); else QueryError."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryError("sql: empty query")
    body = _LEADING.sub("", sql, count=1).rstrip().rstrip(";").rstrip()
    first = re.match(r"[A-Za-z]+", body)
    if not first or first.group(0).upper() not in ("SELECT", "WITH"):
        raise QueryError(f"sql: only a SELECT or WITH query is allowed (got {body[:30]!r})")
    if _more_than_one(body):
        raise QueryError("sql: one statement only (found more than one)")
    return body


def _more_than_one(body: str) -> bool:
    # a ';' that ends a complete statement before the end: another statement follows
    for i, ch in enumerate(body):
        if ch == ";" and sqlite3.complete_statement(body[:i + 1]) and body[i + 1:].strip():
            return True
    return False


def run_query(home: StateHome, sql: str, params=(), *, max_rows: int = MAX_ROWS) -> list[dict]:
    """Rows of one read-only SELECT/WITH as dicts (column order kept). More than ``max_rows``: QueryError."""
    body = check_select(sql)
    conn = connect_ro(home)
    try:
        try:
            cur = conn.execute(body, params)
            rows = cur.fetchmany(max_rows + 1)
        except sqlite3.DatabaseError as e:
            raise QueryError(f"sql: {e}") from None
        if len(rows) > max_rows:
            raise QueryError(f"sql: more than {max_rows} rows; add a LIMIT or narrow the WHERE")
        # plain tuples zipped with the column names: a quarter faster than sqlite3.Row -> dict, and as fast
        # as sqlite-utils' db.query without its ~1 s import (bench/bench_query.py)
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in rows]
    finally:
        conn.close()


def export_table(home: StateHome, table: str, path, fmt: str | None = None) -> int:
    """Write every row of ``table`` to ``path`` as CSV (header row) or JSON (a list of objects), the shapes
    ``sqlite-utils insert DB TABLE FILE --csv`` / ``... FILE`` and Datasette read. ``fmt`` defaults to the
    file's suffix. Returns the number of rows. The file is written whole or not at all."""
    import sqlite_utils  # lazy: pulls in pandas (~0.5 s); only this command pays for it

    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise QueryError(f"fmt: must be one of {', '.join(FORMATS)} (got {fmt!r})")
    conn = connect_ro(home)
    try:
        db = sqlite_utils.Database(conn, recursive_triggers=False)  # (its default sets a PRAGMA: denied here)
        names = db.table_names()
        if table not in names:
            raise QueryError(f"table: no table {table!r} (tables: {', '.join(sorted(names))})")
        t = db[table]
        columns = [c.name for c in t.columns]
        tmp = path.with_name(f".{path.name}.tmp")
        n = 0
        try:
            with open(tmp, "w", newline="", encoding="utf-8") as fh:
                if fmt == "csv":
                    w = csv.writer(fh)
                    w.writerow(columns)
                    for row in t.rows:
                        w.writerow([row[c] for c in columns])
                        n += 1
                else:
                    fh.write("[")
                    for row in t.rows:
                        fh.write(("," if n else "") + "\n" + json.dumps(row, ensure_ascii=False, default=_bytes))
                        n += 1
                    fh.write("\n]\n")
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return n
    finally:
        conn.close()


def _bytes(v):
    if isinstance(v, (bytes, bytearray)):
        return {"$base64": True, "encoded": base64.b64encode(v).decode("ascii")}
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")
