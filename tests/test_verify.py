"""`qts verify`: the books (journal, fills, cash, positions, P&L) agree after a session, and each kind of
damage is caught."""

import json
import sqlite3

import pytest
from click.testing import CliRunner

from qts.cli import cli


@pytest.fixture()
def traded_home(tmp_path):
    home = tmp_path / "home"
    r = CliRunner().invoke(cli, ["--home", str(home), "run", "--days", "2", "--fresh", "--quiet"])
    assert r.exit_code == 0, r.output
    con = sqlite3.connect(home / "db" / "metrics.db")
    n = con.execute("SELECT COUNT(*) FROM fills").fetchone()[0]
    con.close()
    assert n >= 4, "the generated market should give a few trades in two days"
    return home


def verify(home):
    return CliRunner().invoke(cli, ["--home", str(home), "verify"])


def test_books_agree_after_a_session(traded_home):
    r = verify(traded_home)
    assert r.exit_code == 0, r.output
    assert "books agree" in r.output


def test_missing_journal_line_is_caught(traded_home):
    log = traded_home / "logs" / "trades.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]))
    r = verify(traded_home)
    assert r.exit_code == 1 and "not in trades.jsonl" in r.output


def test_duplicated_journal_line_is_caught(traded_home):
    log = traded_home / "logs" / "trades.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines + lines[:1]))
    r = verify(traded_home)
    assert r.exit_code == 1 and "more than once" in r.output


def test_journal_price_differing_from_the_database_is_caught(traded_home):
    log = traded_home / "logs" / "trades.jsonl"
    recs = [json.loads(x) for x in log.read_text().splitlines()]
    recs[0]["price"] *= 1.01
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    r = verify(traded_home)
    assert r.exit_code == 1 and "differs" in r.output


def test_cash_not_matching_the_fills_is_caught(traded_home):
    con = sqlite3.connect(traded_home / "db" / "metrics.db")
    con.execute("UPDATE balances SET free = free + 1 WHERE mode='paper'")
    con.commit()
    con.close()
    r = verify(traded_home)
    assert r.exit_code == 1 and "cash" in r.output


def test_position_not_matching_the_fills_is_caught(traded_home):
    con = sqlite3.connect(traded_home / "db" / "metrics.db")
    con.execute("INSERT INTO positions (mode, symbol, amount, avg_entry, updated_ts) VALUES ('paper', 'XRP/USDT', 5, 1, 0)")
    con.commit()
    con.close()
    r = verify(traded_home)
    assert r.exit_code == 1 and "XRP/USDT" in r.output
