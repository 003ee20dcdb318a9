"""Read-only queries and table exports over a real state-home database (issue 15, qts.store.query)."""

from __future__ import annotations

import csv
import hashlib
import json
import sqlite3

import pytest

from qts.store.query import QueryError, check_select, export_table, run_query


def digest(home):
    return hashlib.sha256(home.db_path.read_bytes()).hexdigest()


@pytest.fixture
def filled(store):
    for i in range(5):
        store.event("test", f"event {i}", severity="warning" if i % 2 else "info", data={"i": i, "name": "é,\"q\""})
    store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store


def test_select_and_with_return_rows_in_column_order(filled):
    rows = run_query(filled.home, "SELECT kind, message FROM events WHERE severity=? ORDER BY id", ("warning",))
    assert rows == [{"kind": "test", "message": "event 1"}, {"kind": "test", "message": "event 3"}]
    assert list(rows[0]) == ["kind", "message"]
    rows = run_query(filled.home, "-- a comment\n WITH w AS (SELECT id FROM events) SELECT COUNT(*) AS n FROM w;")
    assert rows == [{"n": 5}]


@pytest.mark.parametrize("sql, why", [
    ("DELETE FROM events", "only a SELECT"),
    ("UPDATE events SET kind='x'", "only a SELECT"),
    ("ATTACH DATABASE ':memory:' AS x", "only a SELECT"),
    ("PRAGMA journal_mode=DELETE", "only a SELECT"),
    ("SELECT 1; DELETE FROM events", "one statement only"),
    ("SELECT 1; SELECT 2", "one statement only"),
    ("WITH w AS (SELECT 1) DELETE FROM events", "sql: "),             # a write behind WITH: SQLite refuses it
    ("SELECT * FROM pragma_table_list", "sql: "),                     # a pragma function: not a read we allow
    ("", "empty"),
    ("SELECT * FROM no_such_table", "no such table"),
])
def test_anything_but_one_read_is_refused_and_the_file_is_untouched(filled, sql, why):
    before = digest(filled.home)
    n = filled.scalar("SELECT COUNT(*) FROM events")
    with pytest.raises(QueryError, match=why):
        run_query(filled.home, sql)
    assert filled.scalar("SELECT COUNT(*) FROM events") == n
    assert digest(filled.home) == before


def test_a_semicolon_inside_a_string_is_not_a_second_statement(filled):
    assert check_select("SELECT 'a;b' AS s;") == "SELECT 'a;b' AS s"
    assert run_query(filled.home, "SELECT 'a;b' AS s") == [{"s": "a;b"}]


def test_too_many_rows_is_an_error_not_a_truncated_answer(filled):
    with pytest.raises(QueryError, match="more than 3 rows"):
        run_query(filled.home, "SELECT * FROM events", max_rows=3)
    assert len(run_query(filled.home, "SELECT * FROM events", max_rows=5)) == 5


def test_missing_database_names_the_home(tmp_path):
    from qts.paths import StateHome

    with pytest.raises(QueryError, match="home: no database"):
        run_query(StateHome(tmp_path / "nowhere"), "SELECT 1")


def test_export_csv_and_json_read_back_by_sqlite_utils(filled, tmp_path):
    import sqlite_utils

    expect = filled.query("SELECT * FROM events ORDER BY id")
    n = export_table(filled.home, "events", tmp_path / "events.csv")
    assert n == 5
    with open(tmp_path / "events.csv", newline="", encoding="utf-8") as fh:
        got = list(csv.DictReader(fh))
    assert [r["message"] for r in got] == [r["message"] for r in expect]
    assert json.loads(got[0]["data"]) == {"i": 0, "name": "é,\"q\""}
    assert export_table(filled.home, "events", tmp_path / "ev.out", fmt="json") == 5
    assert json.loads((tmp_path / "ev.out").read_text(encoding="utf-8")) == expect
    # what Datasette users do with it: load it into a fresh database with sqlite-utils
    db = sqlite_utils.Database(tmp_path / "copy.db")
    db["events"].insert_all(json.loads((tmp_path / "ev.out").read_text(encoding="utf-8")), pk="id")
    assert [dict(r) for r in db.query("SELECT * FROM events ORDER BY id")] == expect


def test_export_refuses_unknown_tables_and_formats_and_writes_nothing(filled, tmp_path):
    with pytest.raises(QueryError, match="table: no table 'events; DROP TABLE events'"):
        export_table(filled.home, "events; DROP TABLE events", tmp_path / "x.csv")
    with pytest.raises(QueryError, match="fmt: must be one of csv, json"):
        export_table(filled.home, "events", tmp_path / "x.xlsx")
    assert list(tmp_path.glob("x*")) == []
    assert filled.scalar("SELECT COUNT(*) FROM events") == 5


def test_the_read_only_connection_cannot_write_even_when_asked_directly(filled):
    from qts.store.query import connect_ro

    conn = connect_ro(filled.home)
    try:
        for sql in ("DELETE FROM events", "CREATE TABLE t (x)", "PRAGMA query_only=OFF"):
            with pytest.raises(sqlite3.DatabaseError):
                conn.execute(sql)
    finally:
        conn.close()
    assert filled.scalar("SELECT COUNT(*) FROM events") == 5


# -- the commands: qts db query / qts db export through click -------------------------------------------------

def _qts(home, *args):
    from click.testing import CliRunner

    from qts.cli import cli

    return CliRunner().invoke(cli, ["--home", str(home.root), "db", *args])


def test_qts_db_query_prints_rows_and_refuses_a_write_with_exit_2(filled):
    home = filled.home
    r = _qts(home, "query", "SELECT severity, COUNT(*) AS n FROM events WHERE kind=? GROUP BY severity "
                   "ORDER BY severity", "--param", "test", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == [{"severity": "info", "n": 3}, {"severity": "warning", "n": 2}]
    r = _qts(home, "query", "SELECT message FROM events WHERE kind='test' ORDER BY id LIMIT 2")
    assert r.exit_code == 0 and r.stdout.splitlines() == ["message", "event 0", "event 1"]
    before = digest(home)
    r = _qts(home, "query", "DELETE FROM events")
    assert r.exit_code == 2 and "sql:" in r.output and "Traceback" not in r.output
    assert digest(home) == before
    assert filled.scalar("SELECT COUNT(*) FROM events WHERE kind='test'") == 5


def test_qts_db_export_writes_a_csv_sqlite_utils_reads_and_names_a_bad_table(filled, tmp_path):
    home = filled.home
    out = tmp_path / "events.csv"
    r = _qts(home, "export", "events", "--out", str(out))
    assert r.exit_code == 0, r.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    n = filled.scalar("SELECT COUNT(*) FROM events")
    assert len(rows) == n and f"{n} rows" in r.stdout
    bad = tmp_path / "bad.csv"
    r = _qts(home, "export", "events; DROP TABLE events", "--out", str(bad))
    assert r.exit_code == 2 and "table" in r.output and not bad.exists()


@pytest.mark.parametrize("where", ["safety/risk_profile.json", "safety/KILL_SWITCH", "logs/trades.jsonl", "x.csv"])
def test_qts_db_export_never_writes_into_the_state_home(filled, where):
    """An export is a file write: it must not become a way to overwrite trading state (the Write tool's rule)."""
    home = filled.home
    target = home.root / where
    before = target.read_bytes() if target.exists() else None
    r = _qts(home, "export", "events", "--out", str(target))
    assert r.exit_code == 2 and "nothing was written" in r.output, r.output
    assert (target.read_bytes() if target.exists() else None) == before
