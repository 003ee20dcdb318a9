"""What a new state home means, in words a new user reads: paper only, when the breaker closes, how the paper
account is funded. Standard library only: the hooks' status line imports it on every call.

A new state home has no breaker file (it reads as OPEN: the fail-safe reading) and no paper account (the
first `qts once` / `qts run` opens it). Without an explanation that looks like a tripped breaker and an empty
account; these notes say what it is and what ends it.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from datetime import datetime, timezone

# the reason the breaker records when it starts without a file ("breaker state <path> missing: ..."; older
# versions wrote "breaker state missing")
FIRST_RECORD = re.compile(r"breaker state (?:\S.* )?missing\b")


def _hhmm(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _breaker_events(home) -> int | None:
    """How many breaker transitions the database records (None: unreadable)."""
    if not home.db_path.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=2)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM events WHERE kind='breaker'").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def breaker_is_new(home) -> tuple[bool, int | None]:
    """(True, since) when the breaker has never moved past its starting OPEN state on this state home:
    no file yet, or only the record written when it first found no file, and no other transition in the
    database (a deleted breaker file on a used state home is not a new start)."""
    events = _breaker_events(home)
    if events is None or events > 1:
        return False, None
    try:
        lines = [x for x in home.breaker_file.read_text(encoding="utf-8").splitlines() if x.strip()]
    except FileNotFoundError:
        return True, None
    except (OSError, UnicodeDecodeError):
        return False, None
    if len(lines) != 1:
        return False, None
    try:
        rec = json.loads(lines[0])
    except ValueError:
        return False, None
    if (isinstance(rec, dict) and rec.get("state") == "open" and rec.get("trading_state") == "ACTIVE"
            and FIRST_RECORD.match(str(rec.get("reason", "")))):
        since = rec.get("since_ts")
        return True, int(since) if isinstance(since, (int, float)) else None
    return False, None


def paper_account_open(home) -> bool | None:
    """True when the paper account exists, False when it does not yet, None when the database cannot be read."""
    if not home.db_path.exists():
        return False
    try:
        conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=2)
        try:
            row = conn.execute("SELECT 1 FROM balances WHERE mode='paper' LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return None
    return row is not None


def _timings() -> tuple[int, int]:
    from ..safety.breaker import BreakerConfig  # standard library only

    c = BreakerConfig()
    return c.cooldown_s, c.probation_s


def breaker_note(home, now_ms: int | None = None) -> str | None:
    new, since = breaker_is_new(home)
    if not new:
        return None
    cool, probation = _timings()
    start = since if since is not None else (now_ms if now_ms is not None else int(time.time() * 1000))
    half = start + cool * 1000
    closed = half + probation * 1000
    return (f"new state home: paper only. The breaker starts OPEN, which refuses LIVE orders only; paper trading "
            f"runs normally. It goes half-open after a {cool // 60}-minute cool-down (from {_hhmm(half)}) and closes "
            f"after {probation // 60} more healthy minutes (from {_hhmm(closed)}), each time `qts breaker check` "
            "runs (`qts breaker check --watch` keeps checking). Live trading also needs the trading agent, "
            "started by you with your PIN (`qts agent start`)")


def account_note(home, initial_cash: float | None = None) -> str | None:
    if paper_account_open(home) is not False:
        return None
    if initial_cash is None:
        try:
            initial_cash = float(os.environ.get("INITIAL_CASH") or 10_000)
        except ValueError:
            initial_cash = 10_000.0
    return (f"no paper account yet: the first `qts once` or `qts run` opens one with INITIAL_CASH = "
            f"{initial_cash:,.2f} USDT (set INITIAL_CASH in the environment or in {home.env_file} first to fund it "
            "differently; later, `qts run --fresh` archives the account and opens a new one with the current "
            "INITIAL_CASH)")


def fresh_start_notes(home, initial_cash: float | None = None, now_ms: int | None = None) -> list[str]:
    """The notes that apply to ``home`` now (none once the breaker has moved and the account is open)."""
    return [n for n in (breaker_note(home, now_ms), account_note(home, initial_cash)) if n]


def status_line_note(home) -> str | None:
    """A short form for the hooks' one-line summary. Never raises: it only explains."""
    try:
        new, _ = breaker_is_new(home)
        account = paper_account_open(home) is False
    except Exception:
        return None
    if not (new or account):
        return None
    parts = []
    if new:
        cool, probation = _timings()
        parts.append(f"breaker OPEN = new state home, paper only (live refused; closes after "
                     f"{(cool + probation) // 60} healthy minutes of `qts breaker check`)")
    if account:
        parts.append("no paper account yet (the first `qts once` opens it with INITIAL_CASH)")
    return "; ".join(parts)
