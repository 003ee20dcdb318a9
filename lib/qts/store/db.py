"""SQLite state store.

The connection runs in autocommit mode and every multi-row change goes through :meth:`Store.tx`
(``BEGIN IMMEDIATE`` ... ``COMMIT``), so a fill, its position and its cash move land together or
not at all. Everything here is plain ``sqlite3`` (sqlite-utils' insert measured 4x slower per row,
bench/bench_query.py); read-only queries and exports for people and tools are in :mod:`.query`.
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

from ..fsutil import (StateFileError, check_regular_file, describe_os_error, dumps, read_jsonl_strict,
                      sqlite_file_problem)
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
            _rollback(conn)
            raise
        applied.append(version)
    return applied


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open: SQLite ends some failed transactions itself (SQLITE_FULL,
    I/O errors), and a ROLLBACK then would raise "no transaction is active" over the real error."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


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


# -- damage checks: a damaged database is refused with one line naming it, never opened half-way ------------

WAL_MAGICS = (0x377F0682, 0x377F0683)
JOURNAL_FILL_KEYS = ("fill_id", "mode", "symbol", "side", "amount", "price", "fee")


def db_safe_reading(home: StateHome) -> str:
    return ("nothing was read from or written to it and no order was placed; `qts verify --rebuild` moves it "
            f"aside (to {home.root / 'archive'}) and rebuilds the paper books from logs/trades.jsonl")


def journal_safe_reading(home: StateHome) -> str:
    return ("no order was placed and nothing was appended; the database still holds every fill: move the file "
            f"aside (mv {home.trades_log} {home.trades_log}.damaged) and the next `qts once` or `qts run` "
            "writes it again from the database")


def _check_db_files(home: StateHome) -> bool:
    """Refuse what cannot be our database before SQLite sees it (SQLite would create a new database over
    a link to /dev/null, or fail later with 'malformed'). True when a non-empty database file exists."""
    safe = db_safe_reading(home)
    path = home.db_path
    exists = check_regular_file(path, "the database", safe)
    for suffix in ("-wal", "-shm"):
        check_regular_file(Path(f"{path}{suffix}"), f"the database's {suffix[1:]} file", safe)
    if not exists:
        return False
    problem = sqlite_file_problem(path)
    if problem == "":
        return False  # created but never written (SQLite writes the header with the first change): a new file
    if problem is not None:
        raise StateFileError(path, problem, safe)
    wal = Path(f"{path}-wal")
    try:
        with open(wal, "rb") as fh:
            wal_head = fh.read(4)
    except FileNotFoundError:
        wal_head = b""
    except OSError as e:
        raise StateFileError(wal, f"the database's wal file cannot be read: {describe_os_error(e)}", safe) from None
    if len(wal_head) == 4 and int.from_bytes(wal_head, "big") not in WAL_MAGICS and wal_head.strip(b"\0"):
        raise StateFileError(wal, "is not a SQLite write-ahead log (damaged): the transactions in it cannot be "
                                  "read", safe)
    return True


_REFERENCE: dict | None = None


def reference_schema() -> dict[str, set[str]]:
    """{table: columns} that the migrations create (built once per process in memory)."""
    global _REFERENCE
    if _REFERENCE is None:
        mem = sqlite3.connect(":memory:", isolation_level=None)
        migrate(mem)
        _REFERENCE = _schema(mem)
        mem.close()
    return _REFERENCE


def _schema(conn) -> dict[str, set[str]]:
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                         "AND name NOT LIKE 'sqlite_%'")]
    return {t: {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')} for t in tables}


def _check_schema_before(conn, home: StateHome) -> None:
    """A database with tables of its own but no migration record is someone else's: not adopted."""
    have = _schema(conn)
    if have and "schema_migrations" not in have:
        raise StateFileError(home.db_path, "is not a quant-trading-system database (tables "
                             f"{', '.join(sorted(have)[:5])}; no schema_migrations)", db_safe_reading(home))
    if "schema_migrations" in have:
        newest = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0] or 0
        known = len(available_migrations())
        if newest > known:
            raise StateFileError(home.db_path, f"was written by a newer version (schema {newest}, this one knows "
                                 f"{known})", "nothing was changed; update quant-trading-system")


def _check_schema_after(conn, home: StateHome) -> None:
    have = _schema(conn)
    for table, cols in reference_schema().items():
        if table not in have:
            raise StateFileError(home.db_path, f"wrong schema: table {table} is missing although the migrations "
                                 "are recorded as applied", db_safe_reading(home))
        if cols - have[table]:
            raise StateFileError(home.db_path, f"wrong schema: table {table} lacks column(s) "
                                 f"{', '.join(sorted(cols - have[table]))}", db_safe_reading(home))


def journal_fills(home: StateHome) -> list[dict]:
    """The fills of ``logs/trades.jsonl``, strictly read (a damaged line is a StateFileError)."""
    return read_jsonl_strict(home.trades_log, "the trades journal", journal_safe_reading(home), JOURNAL_FILL_KEYS)


def _orphan_journal(home: StateHome, conn=None) -> None:
    """A database without paper fills while the journal has some means the paper books were lost (deleted,
    replaced, rolled back): refuse, instead of opening a new 10,000 paper account over them."""
    try:
        if not home.trades_log.is_file() or home.trades_log.is_symlink() or home.trades_log.stat().st_size == 0:
            return
    except OSError:
        return  # whoever reads the journal reports that
    if conn is not None and conn.execute("SELECT 1 FROM fills WHERE mode='paper' LIMIT 1").fetchone():
        return
    # paper only: live books are the exchange's (the trading agent reconciles them when it starts)
    fills = [f for f in journal_fills(home) if f.get("mode") == "paper"]
    if fills:
        last = max(int(f.get("ts") or 0) for f in fills)
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(last / 1000)) if last else "?"
        raise StateFileError(home.db_path, f"the database {'has no fills' if conn is not None else 'is missing'} "
                             f"but logs/trades.jsonl records {len(fills)} paper fills (the last at {when} UTC): the "
                             "paper books were lost, not emptied",
                             "no new account was opened; rebuild the books from the journal with `qts verify "
                             "--rebuild`, or start a new paper account deliberately with `qts run --fresh`")


JSON_COLUMNS = (("events", "data"), ("metrics", "tags"), ("decisions", "inputs"), ("decisions", "outputs"),
                ("decisions", "reason_codes"))


NONFINITE_CHECKED = 1  # PRAGMA user_version bit: this database's old rows were checked (see below)


def repair_nonfinite_json(conn) -> int:
    """Rows stored with a bare NaN or Infinity in their JSON (older versions wrote them; SQLite's json functions
    reject them as "malformed JSON", which broke every report over the table for good) get null instead, the
    field named under "nonfinite". A full scan: run once per database when it is first opened by this
    version, and again whenever a command meets "malformed JSON" (cli.QtsGroup), never on every open.
    Returns how many values were repaired."""
    fixed = 0
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, col in JSON_COLUMNS:
            for row_id, text in conn.execute(f"SELECT id, {col} FROM {table} WHERE json_valid({col}) = 0").fetchall():
                try:
                    value = json.loads(text)
                except (TypeError, ValueError):
                    value = {"damaged_json": str(text)[:2000]}
                conn.execute(f"UPDATE {table} SET {col}=? WHERE id=?", (dumps(value), row_id))
                fixed += 1
        if fixed:
            conn.execute("INSERT INTO events (ts, kind, severity, message, data) VALUES (?, 'store', 'warning', ?, ?)",
                         (now_ms(), f"{fixed} stored value(s) held NaN/Infinity (invalid JSON): replaced by null",
                          dumps({"repaired": fixed})))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {int(version) | NONFINITE_CHECKED}")
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return fixed


def repair_home_json(home: StateHome) -> int:
    """:func:`repair_nonfinite_json` on the state home's database (after the damage checks)."""
    conn = open_checked(home, check_journal=False)
    try:
        return repair_nonfinite_json(conn)
    finally:
        conn.close()


def open_checked(home: StateHome, check_journal: bool = True, applied: list | None = None) -> sqlite3.Connection:
    """Connect to the state home's database after the damage checks, migrate, and check the schema.
    Every failure is a StateFileError naming the file. ``applied`` receives the migrations applied now."""
    safe = db_safe_reading(home)
    try:
        home.ensure()
    except OSError as e:
        raise StateFileError(home.root, f"the state home cannot be created: {describe_os_error(e)}", safe) from None
    existed = _check_db_files(home)
    if check_journal:
        # a fill is committed first and journaled second: a journal that cannot take the line (a folder, a link
        # to /dev/null) must stop the order before it is placed, not after (a stat, not a read)
        check_regular_file(home.trades_log, "the trades journal", journal_safe_reading(home))
    if check_journal and not existed:
        _orphan_journal(home)
    conn = None
    try:
        conn = connect(home.db_path)
        _check_schema_before(conn, home)
        done = migrate(conn)
        if applied is not None:
            applied.extend(done)
        _check_schema_after(conn, home)
        if not conn.execute("PRAGMA user_version").fetchone()[0] & NONFINITE_CHECKED:
            repair_nonfinite_json(conn)
        if check_journal:
            _orphan_journal(home, conn)
    except BaseException as e:
        if conn is not None:
            conn.close()
        if isinstance(e, sqlite3.DatabaseError):
            raise StateFileError(home.db_path, f"the database cannot be used: SQLite says {e}", safe) from None
        raise
    return conn


class Store:
    """One state home's database. Safe to share across threads of one process (serialized by a lock)."""

    def __init__(self, home: StateHome, conn: sqlite3.Connection):
        self.home = home
        self.conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        self.fsync_journal = True  # trades.jsonl lines fsync'd one by one (store/journal.py)

    @classmethod
    def open(cls, home: StateHome, check_journal: bool = True) -> "Store":
        """Open (create, migrate) the database. Damage (see :func:`open_checked`) is a StateFileError;
        ``check_journal`` False skips the trades journal's checks (lost books, a folder or link in its place):
        for the commands that recover from them, and for those that never write a fill."""
        return cls(home, open_checked(home, check_journal))

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
            # open first, swap second: when the new file cannot be opened (deleted again meanwhile, damaged) the
            # error goes to the caller and the old connection stays usable, instead of a closed one that turns
            # every later query (the agent's gate included) into "Cannot operate on a closed database"
            conn = open_checked(self.home, check_journal=False)
            old, self.conn = self.conn, conn
            try:
                old.close()
            except sqlite3.Error:
                pass

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
                _rollback(self.conn)
                raise
            self._depth = 0
            self.conn.execute("COMMIT")

    def execute(self, sql: str, params=()) -> sqlite3.Cursor:
        with self._lock:
            return self.conn.execute(sql, params)

    def insert(self, table: str, row: dict) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        # stored JSON is always valid JSON: NaN/Infinity become null and are named (SQLite's json functions
        # reject a bare NaN as "malformed JSON", which would break every report over the table for good)
        values = [dumps(v) if isinstance(v, (dict, list)) else v for v in row.values()]
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
