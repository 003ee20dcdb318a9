"""``logs/trades.jsonl``: one line per fill, appended, flushed and fsync'd before we move on.

The database commit comes first; the journal line second. If the process dies between the two,
:func:`sync_trades` (run at start-up) appends the fills the journal is missing, so every fill ends up
in the journal exactly once.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from ..fsutil import StateFileError, append_jsonl, describe_os_error
from .db import Store, journal_fills


def fill_record(fill: dict) -> dict:
    rec = {k: fill[k] for k in ("fill_id", "client_order_id", "mode", "symbol", "side", "amount", "price",
                                "fee", "fee_currency", "realized_pnl", "ts")}
    rec["time"] = datetime.fromtimestamp(fill["ts"] / 1000, timezone.utc).isoformat()
    rec["notional"] = fill["amount"] * fill["price"]
    return rec


def append_trade(store: Store, fill: dict) -> None:
    # ``store.fsync_journal`` False (the trading agent): the line is written at once but not fsync'd. The
    # database commit comes first and sync_trades repairs a missing line at start, and the exchange's trade
    # list is the agent's record of fills; an fsync per fill would cost more than the order's own request.
    append_jsonl(store.home.trades_log, fill_record(fill), sync=getattr(store, "fsync_journal", True))


def _end_torn_line(path: Path) -> None:
    """A crash mid-write can leave a last line without its newline: end it, so the next record starts
    on a line of its own instead of being glued onto the fragment (and lost with it)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
    except FileNotFoundError:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
        try:
            os.write(fd, b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise StateFileError(path, f"the trades journal cannot be repaired: {describe_os_error(e)}",
                             "no order was placed") from None


def sync_trades(store: Store) -> int:
    """Append fills that are in the database but not in the journal. Returns how many. A damaged journal
    (a folder, a link, a line that is neither a record nor a torn write) is a StateFileError, untouched."""
    have = {r.get("fill_id") for r in journal_fills(store.home)}
    _end_torn_line(store.home.trades_log)
    missing = [f for f in store.query("SELECT * FROM fills ORDER BY id") if f["fill_id"] not in have]
    for f in missing:
        append_trade(store, f)
    if missing:  # a crash between commit and line, or a journal deleted or cut short: repaired, and said so
        store.event("journal", f"{len(missing)} fill(s) were in the database but not in {store.home.trades_log.name}: "
                               "appended", severity="warning", data={"appended": [f["fill_id"] for f in missing[:50]]})
    return len(missing)
