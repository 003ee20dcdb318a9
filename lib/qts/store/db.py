"""SQLite state store.

The connection runs in autocommit mode and every multi-row change goes through :meth:`Store.tx`
(``BEGIN IMMEDIATE`` ... ``COMMIT``), so a fill, its position and its cash move land together or
not at all. Hot paths use plain ``sqlite3``; :attr:`Store.db` gives a ``sqlite_utils.Database`` on the
same connection for queries and introspection (imported lazily: it pulls in pandas, ~0.4 s).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from ..paths import StateHome, plugin_root

MIGRATION_RE = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")


def now_ms() -> int:
    return int(time.time() * 1000)


def migrations_dir() -> Path:
    return plugin_root() / "db" / "migrations"


def connect(path: Path, timeout: float = 10.0) -> sqlite3.Connection:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    # Switching a new database to WAL needs it to itself, and SQLite answers "locked" at once (no busy
    # wait) while another process is opening it too: retry until the timeout.
    deadline = time.monotonic() + timeout
    while conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn


def available_migrations(folder: Path | None = None) -> list[tuple[int, str, Path]]:
    folder = folder or migrations_dir()
    out = []
    for p in sorted(folder.glob("*.sql")):
        m = MIGRATION_RE.match(p.name)
        if not m:
            raise RuntimeError(f"migration file {p.name} does not match NNN_name.sql")
        out.append((int(m.group(1)), m.group(2), p))
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 001, 002, ... without gaps; found {versions}")
    return out


def migrate(conn: sqlite3.Connection, folder: Path | None = None) -> list[int]:
    """Apply pending migrations, each in its own transaction. Returns the versions applied."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts INTEGER NOT NULL)"
    )
    done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for version, name, path in available_migrations(folder):
        if version in done:
            continue
        sql = path.read_text(encoding="utf-8")
        conn.execute("BEGIN IMMEDIATE")
        if conn.execute("SELECT 1 FROM schema_migrations WHERE version=?", (version,)).fetchone():
            conn.execute("COMMIT")  # another process applied it while we waited for the lock
            continue
        try:
            # executescript() would commit first; run statement by statement inside our transaction
            for stmt in _split_sql(sql):
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", (version, name, now_ms()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied


def _split_sql(sql: str) -> list[str]:
    stmts, buf = [], []
    for line in sql.splitlines():
        code = line.split("--", 1)[0]
        buf.append(code)
        if code.rstrip().endswith(";"):
            stmt = "\n".join(buf).strip()
            if sqlite3.complete_statement(stmt):
                stmts.append(stmt)
                buf = []
    rest = "\n".join(buf).strip()
    if rest:
        stmts.append(rest)
    return stmts


class Store:
    """One state home's database. Safe to share across threads of one process (serialized by a lock)."""

    def __init__(self, home: StateHome, conn: sqlite3.Connection):
        self.home = home
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        self._db = None
        self.fsync_journal = True  # trades.jsonl lines fsync'd one by one (store/journal.py)

    @classmethod
    def open(cls, home: StateHome) -> "Store":
        home.ensure()
        conn = connect(home.db_path)
        migrate(conn)
        return cls(home, conn)

    def close(self) -> None:
        self.conn.close()

    def identity(self) -> tuple[int, int] | None:
        """(device, inode) of the database file now at the path; None when it is gone. A long-lived
        process compares it with what it opened to notice a deleted or replaced database."""
        try:
            st = os.stat(self.home.db_path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def reopen(self) -> None:
        """Open the database at the path again (after it was deleted or replaced), with its migrations."""
        with self._lock:
            try:
                self.conn.close()
            except sqlite3.Error:
                pass
            self.home.ensure()
            self.conn = connect(self.home.db_path)
            migrate(self.conn)
            self._db = None

    @property
    def db(self):
        """A sqlite_utils.Database over the same connection (for queries and introspection)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn)
        return self._db

    @contextmanager
    def tx(self):
        """All-or-nothing block. Nested calls join the outer transaction."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self
                finally:
                    self._depth -= 1
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                self.conn.execute("ROLLBACK")
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def insert(self, table: str, row: dict) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        values = [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v
                  for v in row.values()]
        with self._lock:
            return self.conn.execute(f"INSERT INTO {table} ({cols}) VALUES ({marks})", values).lastrowid

    def query(self, sql: str, params=()) -> list[dict]:
        with self._lock:
            return [dict(r) for r in self.conn.execute(sql, params)]

    def one(self, sql: str, params=()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params=()):
        with self._lock:
            row = self.conn.execute(sql, params).fetchone()
        return row[0] if row else None

    # -- small typed writers used everywhere ------------------------------------------------------
    def event(self, kind: str, message: str, severity: str = "info", data: dict | None = None,
              ts: int | None = None) -> int:
        return self.insert("events", {"ts": ts if ts is not None else now_ms(), "kind": kind,
                                      "severity": severity, "message": message, "data": data or {}})

    def metric(self, name: str, value: float, tags: dict | None = None, ts: int | None = None) -> int:
        return self.insert("metrics", {"name": name, "value": float(value), "tags": tags or {},
                                       "ts": ts if ts is not None else now_ms()})
