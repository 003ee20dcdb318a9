"""State store: migrations, WAL, all-or-nothing transactions, and the trades journal."""

from __future__ import annotations

import json
import sqlite3

import pytest

from qts.fsutil import read_jsonl
from qts.store import Store, connect, migrate
from qts.store.journal import append_trade, sync_trades

TABLES = {"orders", "order_status_history", "fills", "positions", "balances", "closed_trades",
          "equity_snapshots", "metrics", "events", "decisions"}


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_migrations_create_every_table_in_wal_mode(tmp_path):
    db = tmp_path / "db" / "metrics.db"
    conn = connect(db)
    applied = migrate(conn)
    assert applied and applied == sorted(applied) and applied[0] == 1
    assert TABLES <= tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    assert [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY version")] == applied
    conn.close()

    # the mode is persistent: a plain sqlite3 connection (not ours) sees WAL too
    raw = sqlite3.connect(db)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    raw.close()


def test_migrating_twice_applies_nothing(tmp_path):
    db = tmp_path / "metrics.db"
    conn = connect(db)
    first = migrate(conn)
    assert first
    assert migrate(conn) == []
    conn.close()
    conn = connect(db)  # and from a new connection
    assert migrate(conn) == []
    assert conn.execute("SELECT COUNT(*) FROM schema_migrations").fetchone()[0] == len(first)
    conn.close()


def test_store_open_migrates(home):
    s = Store.open(home)
    try:
        assert TABLES <= tables(s.conn)
        assert home.db_path.exists()
    finally:
        s.close()


def test_tx_rolls_back_everything_on_exception(store):
    store.event("test", "before")
    with pytest.raises(RuntimeError):
        with store.tx():
            store.insert("balances", {"mode": "paper", "asset": "USDT", "free": 1.0, "updated_ts": 1})
            store.event("test", "inside")
            with store.tx():  # a nested block joins the outer one: rolled back with it
                store.metric("m", 1.0)
            raise RuntimeError("boom")
    assert store.scalar("SELECT COUNT(*) FROM balances") == 0
    assert store.scalar("SELECT COUNT(*) FROM metrics") == 0
    assert [r["message"] for r in store.query("SELECT message FROM events")] == ["before"]

    # a failing statement (constraint violation) rolls back the statements before it
    with pytest.raises(sqlite3.IntegrityError):
        with store.tx():
            store.metric("m", 2.0)
            store.insert("fills", {"fill_id": "x", "client_order_id": "nope", "mode": "paper", "symbol": "BTC/USDT",
                                   "side": "buy", "amount": -1, "price": 1, "ts": 1})
    assert store.scalar("SELECT COUNT(*) FROM metrics") == 0

    # and a successful block commits, visible from another connection
    with store.tx():
        store.metric("m", 3.0)
    other = sqlite3.connect(store.home.db_path)
    assert other.execute("SELECT value FROM metrics").fetchall() == [(3.0,)]
    other.close()


def _order_and_fills(store, n: int) -> list[dict]:
    store.insert("orders", {"client_order_id": "c1", "mode": "paper", "symbol": "BTC/USDT", "side": "buy",
                            "type": "market", "amount": float(n), "status": "filled", "created_ts": 1,
                            "updated_ts": 1})
    fills = []
    for i in range(n):
        f = {"fill_id": f"c1-{i + 1}", "client_order_id": "c1", "mode": "paper", "symbol": "BTC/USDT",
             "side": "buy", "amount": 1.0, "price": 100.0 + i, "fee": 0.1, "fee_currency": "USDT",
             "realized_pnl": 0.0, "ts": 1_704_067_200_000 + i * 300_000}
        store.insert("fills", f)
        fills.append(f)
    return fills


def test_trades_journal_lines_are_appended(store):
    fills = _order_and_fills(store, 2)
    for f in fills:
        append_trade(store, f)
    lines = store.home.trades_log.read_text().splitlines()
    assert len(lines) == 2
    recs = [json.loads(x) for x in lines]
    assert [r["fill_id"] for r in recs] == ["c1-1", "c1-2"]
    assert recs[1]["price"] == 101.0 and recs[1]["amount"] == 1.0 and recs[1]["fee"] == 0.1
    assert recs[1]["notional"] == 101.0
    assert recs[0]["time"].startswith("2024-01-01T00:00:00")


def test_sync_trades_appends_exactly_the_missing_fills(store):
    fills = _order_and_fills(store, 4)
    for f in fills:
        append_trade(store, f)
    log = store.home.trades_log
    # a crash after the database commit, before the journal line: the last line never got written
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    assert sync_trades(store) == 1
    ids = [r["fill_id"] for r in read_jsonl(log)]
    assert ids == ["c1-1", "c1-2", "c1-3", "c1-4"]
    assert sync_trades(store) == 0  # running it again adds nothing
    assert [r["fill_id"] for r in read_jsonl(log)] == ids


def test_sync_trades_rebuilds_a_missing_journal_and_skips_a_torn_line(store):
    _order_and_fills(store, 3)
    assert sync_trades(store) == 3  # journal never written at all
    log = store.home.trades_log
    # a torn (half-written) last line: the fill it describes counts as missing
    text = log.read_text().splitlines(keepends=True)
    log.write_text("".join(text[:2]) + text[2][:20])
    assert sync_trades(store) == 1
    assert sorted(r["fill_id"] for r in read_jsonl(log)) == ["c1-1", "c1-2", "c1-3"]
    assert sync_trades(store) == 0


def test_processes_opening_a_new_state_home_at_once_do_not_collide(tmp_path):
    """Two openers of a brand-new database (e.g. the loop and a notification writer) used to fail with
    'table orders already exists' or 'database is locked' (WAL switch and migration 001 raced)."""
    import threading

    from qts.paths import StateHome
    from qts.store import Store

    errors = []
    for trial in range(40):
        home = StateHome(tmp_path / f"h{trial}").ensure()

        def worker():
            try:
                s = Store.open(home)
                s.event("test", "opened")
                s.close()
            except Exception as e:  # noqa: BLE001 - any failure is the bug
                errors.append(repr(e))

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        s = Store.open(home)
        assert s.scalar("SELECT COUNT(*) FROM events WHERE kind='test'") == 4 - len(errors)
        from qts.store.db import available_migrations

        assert s.scalar("SELECT COUNT(*) FROM schema_migrations") == len(available_migrations())  # each once
        s.close()
    assert errors == []


def test_a_reopen_that_fails_keeps_the_old_connection_usable(tmp_path):
    """The trading agent reopens the database when the assistant deletes it; if the new file cannot be opened
    (deleted again, a folder in its place), the store must not be left holding a closed connection: that
    turned every later order into AGENT_ERROR 'Cannot operate on a closed database'."""
    import shutil

    import pytest

    from qts.fsutil import StateFileError
    from qts.paths import StateHome
    from qts.store import Store

    home = StateHome(tmp_path / "h").ensure()
    s = Store.open(home)
    try:
        s.event("test", "before")
        shutil.rmtree(home.root)
        home.db_path.mkdir(parents=True)  # a folder where the database was: open_checked refuses it
        with pytest.raises(StateFileError):
            s.reopen()
        assert s.scalar("SELECT COUNT(*) FROM events WHERE kind='test'") == 1  # the old connection still answers
        home.db_path.rmdir()
        s.reopen()  # the next attempt (the agent retries each second) opens a new, empty database
        assert s.scalar("SELECT COUNT(*) FROM events WHERE kind='test'") == 0
    finally:
        s.close()
