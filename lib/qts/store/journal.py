"""``logs/trades.jsonl``: one line per fill, appended, flushed and fsync'd before we move on.

The database commit comes first; the journal line second. If the process dies between the two,
:func:`sync_trades` (run at start-up) appends the fills the journal is missing, so every fill ends up
in the journal exactly once.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ..fsutil import append_jsonl, read_jsonl
from .db import Store


def fill_record(fill: dict) -> dict:
    rec = {k: fill[k] for k in ("fill_id", "client_order_id", "mode", "symbol", "side", "amount", "price",
                                "fee", "fee_currency", "realized_pnl", "ts")}
    rec["time"] = datetime.fromtimestamp(fill["ts"] / 1000, timezone.utc).isoformat()
    rec["notional"] = fill["amount"] * fill["price"]
    return rec


def append_trade(store: Store, fill: dict) -> None:
    append_jsonl(store.home.trades_log, fill_record(fill))


def sync_trades(store: Store) -> int:
    """Append fills that are in the database but not in the journal. Returns how many."""
    have = {r.get("fill_id") for r in read_jsonl(store.home.trades_log)}
    missing = [f for f in store.query("SELECT * FROM fills ORDER BY id") if f["fill_id"] not in have]
    for f in missing:
        append_trade(store, f)
    return len(missing)
