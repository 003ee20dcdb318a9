"""Read the trading state with the standard library only (fast enough for every hook call).

The answers here explain refusals early; the gate re-checks everything with full verification.
Unreadable state is reported as the safer reading (engaged, open, halted).
"""

from __future__ import annotations

import json
import os
import sqlite3

from ..paths import StateHome


def _db(home: StateHome):
    if not home.db_path.exists():
        return None
    conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=2)
    conn.row_factory = sqlite3.Row
    return conn


def kill_switch(home: StateHome) -> tuple[bool, str]:
    """The same reading as the gate's (one function: flag, per-user anchor, database), standard library only."""
    from ..safety import kill_switch as ks

    st = ks.status(home)
    return st.engaged, st.reason


def breaker(home: StateHome) -> dict:
    out = _breaker_file(home)
    # the per-user anchor: a deleted, rolled-back or re-created state home reads as HALTED, and a trading
    # state it recorded counts when it is stricter than the file (as in the gate: breaker.load)
    from ..safety import anchor

    view = anchor.check(home)
    rank = anchor.STATES
    if view.problem:
        return {**out, "trading_state": "HALTED", "reason": view.problem}
    if view.known and rank.get(view.trading_state, 2) > rank.get(out.get("trading_state"), 2):
        out.update(trading_state=view.trading_state,
                   reason=f"{view.trading_reason or view.trading_state} (recorded in the per-user anchor)")
    return out


def _breaker_file(home: StateHome) -> dict:
    try:
        lines = home.breaker_file.read_text().splitlines()
    except FileNotFoundError:
        return {"state": "open", "trading_state": "ACTIVE", "reason": "no breaker state yet (paper only)"}
    except (OSError, UnicodeDecodeError):
        return {"state": "open", "trading_state": "HALTED", "reason": f"breaker state {home.breaker_file} unreadable"}
    for line in reversed(lines):
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("state") in ("closed", "open", "half_open"):
                return {k: rec.get(k) for k in ("state", "trading_state", "reason", "since_ts")}
        except ValueError:
            continue
    return {"state": "open", "trading_state": "HALTED", "reason": f"breaker state {home.breaker_file} corrupt"}


def agent(home: StateHome) -> tuple[bool, dict | None]:
    """Is a trading agent running for this state home (a fresh heartbeat in its own status file, outside
    the project), and its status."""
    from ..agent import protocol
    from ..agent.paths import AgentPaths

    paths = AgentPaths.for_home(home.root)
    st = protocol.read_status(paths)
    return protocol.agent_alive(paths, st), st


def portfolio(home: StateHome) -> dict:
    out = {"positions": [], "equity": None, "cash": None, "mode": "paper"}
    try:
        conn = _db(home)
        if conn is None:
            return out
        with conn:
            out["positions"] = [dict(r) for r in conn.execute(
                "SELECT mode, symbol, amount, avg_entry FROM positions WHERE amount>0")]
            row = conn.execute("SELECT mode, equity, cash, unrealized_pnl, realized_pnl FROM equity_snapshots "
                               "ORDER BY id DESC LIMIT 1").fetchone()
            if row:
                out.update(dict(row))
        conn.close()
    except sqlite3.Error as e:
        out["error"] = f"database unreadable: {e}"
    return out


def last_post_trades(home: StateHome, since_s: float) -> list[dict]:
    out = []
    try:
        with open(home.post_trade_log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 64_000))
            tail = fh.read().decode("utf-8", "replace").splitlines()[-50:]
    except OSError:
        return out
    for line in tail:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("logged_at", 0) >= since_s:
            out.append(rec)
    return out


def post_trades_from(home: StateHome, offset: int, limit_bytes: int = 256_000) -> list[dict]:
    """The post-trade records appended at or after byte ``offset`` (the size before a command ran)."""
    out = []
    try:
        with open(home.post_trade_log, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            start = max(0, min(offset, size), size - limit_bytes)
            fh.seek(start)
            chunk = fh.read().decode("utf-8", "replace")
    except OSError:
        return out
    lines = chunk.splitlines()
    if start and start != offset and lines:
        lines = lines[1:]  # started mid-line
    for line in lines[-50:]:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def post_trade_size(home: StateHome) -> int:
    try:
        return os.path.getsize(home.post_trade_log)
    except OSError:
        return 0


def summary_line(home: StateHome) -> str:
    ks, why = kill_switch(home)
    b = breaker(home)
    pf = portfolio(home)
    mode = "LIVE" if os.environ.get("PAPER_TRADING", "true").strip().lower() in ("false", "0", "no", "off") else "paper"
    parts = [f"mode {mode}"]
    alive, st = agent(home)
    if alive:  # live orders: what the trading agent holds in memory is what counts
        parts.append("trading agent running: " + str((st or {}).get("policy_summary", "")))
    elif mode == "LIVE":
        parts.append("NO trading agent running (live orders are refused until the human starts it with "
                     "`qts agent start` in their own terminal)")
    parts += [f"paper breaker {b['state']} ({b.get('reason', '')})", f"paper trading {b['trading_state']}",
              "kill switch ENGAGED: " + why if ks else "kill switch clear"]
    from ..reports.first_run import status_line_note  # a new state home says what its OPEN breaker means

    parts += [n for n in (status_line_note(home),) if n]
    if pf.get("equity") is not None:
        parts.append(f"equity {pf['equity']:.2f} cash {pf['cash']:.2f}")
    if pf["positions"]:
        parts.append("open positions: " + ", ".join(f"{p['symbol']} {p['amount']:.6g} @ {p['avg_entry']:.2f}"
                                                    for p in pf["positions"]))
    else:
        parts.append("no open positions")
    return "; ".join(parts)


def state_home(env=None) -> StateHome:
    return StateHome.resolve(None, env)
