"""What a new user and a trader see from the CLI: manual paper orders trade in the session's own market,
the gate's adjustments are shown in text output, negative amounts are refused like zero."""

from __future__ import annotations

import json
import sqlite3

import pytest
from click.testing import CliRunner

from conftest import CONFIG_VARS
from qts.cli import cli

NO_ENV = {k: None for k in CONFIG_VARS}


def invoke(args, **env):
    return CliRunner().invoke(cli, args, env={**NO_ENV, **env})


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def _db(home):
    conn = sqlite3.connect(home / "db" / "metrics.db")
    conn.row_factory = sqlite3.Row
    return conn


def _last_cycle(home) -> dict:
    """{symbol: (price the loop recorded, held)} at the last paper cycle, from the real database."""
    with _db(home) as conn:
        ts = conn.execute("SELECT MAX(ts) FROM decisions WHERE mode='paper'").fetchone()[0]
        rows = conn.execute("SELECT symbol, inputs FROM decisions WHERE mode='paper' AND ts=?", (ts,)).fetchall()
    return {r["symbol"]: (json.loads(r["inputs"])["price"], json.loads(r["inputs"])["held"]) for r in rows}


def _flat_symbol(home) -> tuple[str, float]:
    """A symbol the paper account holds none of after the last cycle, and the loop's price for it."""
    with _db(home) as conn:
        held = {r[0] for r in conn.execute("SELECT symbol FROM positions WHERE mode='paper' AND amount>0")}
    return next((s, v[0]) for s, v in sorted(_last_cycle(home).items()) if s not in held)


def _order_row(home, coid) -> sqlite3.Row:
    with _db(home) as conn:
        return conn.execute("SELECT * FROM orders WHERE client_order_id=?", (coid,)).fetchone()


# -- item 1: the session's own market --------------------------------------------------------------------

@pytest.mark.parametrize("cycles_before", [1, 3])
def test_manual_order_fills_at_the_price_the_loop_recorded(home, cycles_before):
    """After `qts once` (and after resumed runs, which regenerate the market further on), a manual market
    order fills at the price the loop recorded for the current cycle: same feed, same seed, same cursor.
    SLIPPAGE_BPS=0 so the fill price is the market price itself."""
    env = {"SLIPPAGE_BPS": "0"}
    for _ in range(cycles_before):
        r = invoke(["--home", str(home), "once"], **env)
        assert r.exit_code == 0, r.output
    prices = _last_cycle(home)
    assert set(prices) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    filled = 0
    for i, (sym, (price, _held)) in enumerate(sorted(prices.items())):
        amount = round(50 / price, 4)  # about 50 USD: well inside every default limit
        coid = f"ux-test-{i}"
        r = invoke(["--home", str(home), "order", "buy", sym, str(amount), "--client-order-id", coid, "--json"], **env)
        out = json.loads(r.output)
        if not out["accepted"]:  # e.g. the loop itself filled the position this cycle
            continue
        row = _order_row(home, coid)
        assert row["avg_price"] == pytest.approx(price, rel=1e-12), sym
        filled += 1
    assert filled >= 2


def test_with_slippage_a_buy_fills_above_the_mark_and_a_sell_below(home):
    invoke(["--home", str(home), "once"])
    sym, price = _flat_symbol(home)
    amount = round(100 / price, 4)
    r = invoke(["--home", str(home), "order", "buy", sym, str(amount), "--client-order-id", "ux-b", "--json"])
    assert json.loads(r.output)["accepted"], r.output
    r = invoke(["--home", str(home), "order", "sell", sym, str(amount / 2), "--client-order-id", "ux-s", "--json"])
    assert json.loads(r.output)["accepted"], r.output
    # SLIPPAGE_BPS defaults to 5: buys pay 5 bp more than the loop's price, sells get 5 bp less
    assert _order_row(home, "ux-b")["avg_price"] == pytest.approx(price * 1.0005, rel=1e-9)
    assert _order_row(home, "ux-s")["avg_price"] == pytest.approx(price * 0.9995, rel=1e-9)


@pytest.mark.parametrize("extra", [[], ["--dry-run"], ["--json"]])
def test_order_before_any_session_says_so_and_how_to_start_one(home, extra):
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", "0.001", *extra])
    assert r.exit_code == 3
    text = r.output
    if "--json" in extra:
        out = json.loads(text)
        assert out["accepted"] is False and out["reason_code"] == "NO_PAPER_SESSION"
        text = out["message"]
    assert "no paper session yet" in text and "`qts once`" in text
    assert "UNKNOWN_SYMBOL" not in text
    if (home / "db" / "metrics.db").exists():
        with _db(home) as conn:
            assert conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0] == 0


# -- item 2: the gate's adjustments in text output --------------------------------------------------------

@pytest.mark.parametrize("requested", ["5", "1e30"])
def test_text_output_shows_requested_sent_and_why(home, requested):
    invoke(["--home", str(home), "once"])
    sym, _ = _flat_symbol(home)
    r = invoke(["--home", str(home), "order", "buy", sym, requested, "--client-order-id", "ux-big"])
    assert r.exit_code == 0, r.output
    row = _order_row(home, "ux-big")
    assert row["amount"] < float(requested)
    assert f"requested {float(requested):.8g} -> sent {row['amount']:.8g}" in r.output
    # each step the gate took, with its reason code (read back from the gate's own log, not from the code)
    rec = [json.loads(line) for line in (home / "logs" / "pre_trade.json").read_text().splitlines()][-1]
    assert rec["final"]["client_order_id"] == "ux-big" and rec["adjustments"]
    for note in rec["adjustments"]:
        assert note in r.output
    assert "RISK_ORDER_NOTIONAL" in r.output or "RISK_SIZING" in r.output


def test_dry_run_shows_the_adjustment_too(home):
    invoke(["--home", str(home), "once"])
    sym, _ = _flat_symbol(home)
    r = invoke(["--home", str(home), "order", "buy", sym, "1e30", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ALLOWED") and "requested 1e+30 -> sent " in r.output
    with _db(home) as conn:
        assert conn.execute("SELECT COUNT(*) FROM orders WHERE client_order_id LIKE 'qtsc%'").fetchone()[0] == 0


def test_an_order_sent_as_asked_prints_no_adjustment(home):
    invoke(["--home", str(home), "once"])
    sym, price = _flat_symbol(home)
    r = invoke(["--home", str(home), "order", "buy", sym, str(round(50 / price, 3))])
    assert r.exit_code == 0, r.output
    assert "requested" not in r.output


@pytest.mark.parametrize("amount", ["-1", "-0.5", "-1e30", "-inf", "0"])
def test_negative_amounts_get_the_same_refusal_as_zero(home, amount):
    invoke(["--home", str(home), "once"])
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", amount])
    assert r.exit_code == 3, r.output
    assert r.output.startswith("REFUSED BAD_ORDER: amount must be a positive finite number")
    assert "No such option" not in r.output


def test_unknown_options_are_still_errors(home):
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", "1", "--limt", "3"])
    assert r.exit_code == 2 and "No such option '--limt'" in r.output
    r = invoke(["--home", str(home), "order", "buy", "BTC/USDT", "-x"])
    assert r.exit_code == 2 and "No such option '-x'" in r.output


# -- item 4: a fresh state home explains itself -----------------------------------------------------------

def test_fresh_state_home_explains_itself_in_status(home):
    r = invoke(["--home", str(home), "status"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())  # the notes are wrapped
    assert "new state home: paper only" in text
    assert "refuses LIVE orders only; paper trading runs normally" in text
    assert "`qts breaker check`" in text and "closes after 15 more healthy minutes" in text
    assert "no paper account yet" in text and "INITIAL_CASH = 10,000.00" in text and "`qts run --fresh`" in text
    # a database without an account (a read-only command created it) shows no 0.00 equity
    invoke(["--home", str(home), "breaker"])
    r = invoke(["--home", str(home), "status"])
    assert "no paper account yet" in r.output and "equity        0.00" not in r.output


def test_the_notes_follow_the_setting_and_go_away_when_they_no_longer_apply(home):
    r = invoke(["--home", str(home), "status", "--json"], INITIAL_CASH="2500")
    notes = json.loads(r.output)["first_run"]
    assert len(notes) == 2 and "2,500.00" in notes[1]
    invoke(["--home", str(home), "once"], INITIAL_CASH="2500")
    d = json.loads(invoke(["--home", str(home), "status", "--json"]).output)
    assert d["paper_account_open"] is True and d["initial_cash"] == 2500
    assert len(d["first_run"]) == 1 and d["first_run"][0].startswith("new state home")
    invoke(["--home", str(home), "breaker", "trip", "--reason", "test"])  # the breaker moved: no longer new
    d = json.loads(invoke(["--home", str(home), "status", "--json"]).output)
    assert d["first_run"] == []
    assert "new here" not in invoke(["--home", str(home), "status"]).output


def test_the_hooks_status_line_says_it_with_the_standard_library_only(home, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    lib = Path(__file__).resolve().parents[1] / "lib"
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from qts.hooks import probe; from qts.paths import StateHome; "
            "print(probe.summary_line(StateHome(sys.argv[2]))); "
            "print(sorted(m for m in ('numpy', 'pydantic', 'click', 'ccxt', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-S", "-c", code, str(lib), str(home)], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    line, mods = out.stdout.splitlines()
    assert "breaker OPEN = new state home, paper only" in line and "no paper account yet" in line
    assert mods == "[]"
    invoke(["--home", str(home), "once"])
    invoke(["--home", str(home), "breaker", "trip", "--reason", "test"])
    out = subprocess.run([sys.executable, "-S", "-c", code, str(lib), str(home)], capture_output=True, text=True,
                         timeout=30)
    assert "new state home" not in out.stdout and "no paper account yet" not in out.stdout


# -- item 5: a bad setting stops every command with one line and exit 2 -------------------------------------

BAD = [("TRADE_INTERVAL", "abc"), ("MAX_POSITION_SIZE", "-1"), ("PAPER_TRADING", "maybe"), ("SYMBOLS", "BTCUSDT")]
COMMANDS = [["status"], ["verify"], ["breaker"], ["breaker", "status"], ["kill-switch", "status"], ["config"],
            ["once"], ["order", "buy", "BTC/USDT", "0.001"], ["report", "--out", "r.html"], ["perf"],
            ["metrics", "read", "x"], ["db", "migrate"], ["risk", "show"], ["approve", "status"], ["agent", "status"],
            ["market", "ticker", "BTC/USDT", "--synthetic"], ["registry", "list"]]


@pytest.mark.parametrize("where", ["environment", ".env"])
@pytest.mark.parametrize("var,value", BAD)
@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_a_bad_setting_is_one_line_naming_it_and_exit_2(home, where, var, value, args):
    env = {}
    if where == ".env":
        home.mkdir(parents=True, exist_ok=True)
        (home / ".env").write_text(f"{var}={value}\n")
    else:
        env[var] = value
    r = invoke(["--home", str(home), *args], **env)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: configuration: {var}: "), r.output
    assert value in lines[0]


def test_help_still_works_with_a_bad_setting(home):
    r = invoke(["--home", str(home), "status", "--help"], TRADE_INTERVAL="abc")
    assert r.exit_code == 0 and "Usage:" in r.output


def test_risk_reducing_commands_run_with_a_bad_setting_and_warn(home):
    """A .env is a file the assistant can write: a bad value there must not keep the kill switch from flattening
    the paper account or a breaker trip from happening."""
    assert invoke(["--home", str(home), "once"]).exit_code == 0
    sym, price = _flat_symbol(home)
    assert invoke(["--home", str(home), "order", "buy", sym, str(round(100 / price, 3))]).exit_code == 0
    (home / ".env").write_text("TRADE_INTERVAL=abc\nMAX_POSITION_SIZE=-1\n")
    r = invoke(["--home", str(home), "breaker", "trip", "--reason", "test"])
    assert r.exit_code == 0 and "warning: configuration: TRADE_INTERVAL" in r.output
    assert "manual" not in r.output and "test" in r.output
    r = invoke(["--home", str(home), "kill-switch", "--reason", "test"])
    assert "warning: configuration: TRADE_INTERVAL" in r.output
    assert r.exit_code == 0, r.output  # confirmed flat
    assert (home / "safety" / "KILL_SWITCH").exists()
    with _db(home) as conn:
        assert conn.execute("SELECT COUNT(*) FROM positions WHERE mode='paper' AND amount>0").fetchone()[0] == 0
    r = invoke(["--home", str(home), "stop"])
    assert r.exit_code == 0 and "no trading loop is running" in r.output


def test_qts_breaker_on_a_new_state_home_says_what_open_means(home):
    r = invoke(["--home", str(home), "breaker"])
    assert r.exit_code == 0
    assert "new state home: paper only" in " ".join(r.output.split())
    d = json.loads(invoke(["--home", str(home), "breaker", "status", "--json"]).output)
    assert d["state"] == "open"  # --json stays one JSON document


def test_a_deleted_breaker_file_on_a_used_state_home_is_not_called_new(home):
    invoke(["--home", str(home), "once"])
    invoke(["--home", str(home), "breaker", "trip", "--reason", "test"])
    (home / "logs" / "circuit_breaker.json").unlink()
    d = json.loads(invoke(["--home", str(home), "status", "--json"]).output)
    assert not any(n.startswith("new state home") for n in d["first_run"])
