"""Do the books agree? The trades journal, the fills, the positions, the cash and the P&L.

Checks, per mode:
- every fill in the database is in ``logs/trades.jsonl`` exactly once, with the same amount, price
  and fee, and the journal has no fill the database lacks;
- cash = initial cash - buy cost + sell proceeds - fees (from the fills alone);
- each position = bought - sold (from the fills alone);
- closed trades' P&L sums to the realized P&L of their fills minus their fees.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter

from ..fsutil import StateFileError
from ..store import Store
from ..store.db import journal_fills

TOL = 1e-6


def verify_books(store: Store, mode: str = "paper") -> list[str]:
    problems: list[str] = []
    fills = store.query("SELECT * FROM fills WHERE mode=? ORDER BY id", (mode,))
    journal = [r for r in journal_fills(store.home) if r.get("mode") == mode]
    counts = Counter(r.get("fill_id") for r in journal)
    dup = [k for k, n in counts.items() if n > 1]
    if dup:
        problems.append(f"{len(dup)} fill(s) appear more than once in trades.jsonl, e.g. {dup[0]}")
    by_id = {r.get("fill_id"): r for r in journal}
    for f in fills:
        j = by_id.get(f["fill_id"])
        if j is None:
            problems.append(f"fill {f['fill_id']} is in the database but not in trades.jsonl")
        elif any(abs(float(j[k]) - float(f[k])) > TOL * max(1.0, abs(float(f[k]))) for k in ("amount", "price", "fee")):
            problems.append(f"fill {f['fill_id']} differs between trades.jsonl and the database")
    extra = set(by_id) - {f["fill_id"] for f in fills}
    if extra:
        problems.append(f"{len(extra)} fill(s) in trades.jsonl are not in the database")
    if mode == "paper":
        initial = store.scalar("SELECT json_extract(data, '$.initial_cash') FROM events WHERE kind='account' "
                               "ORDER BY id DESC LIMIT 1")
        if initial is not None:
            flow = sum((-1 if f["side"] == "buy" else 1) * f["amount"] * f["price"] - f["fee"] for f in fills)
            cash = store.scalar("SELECT free FROM balances WHERE mode=? AND asset='USDT'", (mode,)) or 0.0
            if abs(initial + flow - cash) > 1e-6 * max(1.0, initial):
                problems.append(f"cash {cash:.6f} != initial {initial:.2f} + fill cash flows {flow:.6f}")
    held: dict[str, float] = {}
    for f in fills:
        held[f["symbol"]] = held.get(f["symbol"], 0.0) + (f["amount"] if f["side"] == "buy" else -f["amount"])
    for p in store.query("SELECT symbol, amount FROM positions WHERE mode=?", (mode,)):
        if abs(held.get(p["symbol"], 0.0) - p["amount"]) > 1e-8:
            problems.append(f"position {p['symbol']} {p['amount']} != bought - sold {held.get(p['symbol'], 0.0)}")
    closed = store.scalar("SELECT COALESCE(SUM(pnl), 0) FROM closed_trades WHERE mode=?", (mode,)) or 0.0
    open_syms = {r["symbol"]: r["opened_fill_id"] for r in store.query(
        "SELECT symbol, opened_fill_id FROM positions WHERE mode=? AND amount>0", (mode,))}
    realized = sum(f["realized_pnl"] - f["fee"] for f in fills
                   if not (f["symbol"] in open_syms and f["id"] >= (open_syms[f["symbol"]] or 0)))
    if abs(closed - realized) > 1e-6 * max(1.0, abs(realized)):
        problems.append(f"closed trades' P&L {closed:.6f} != realized P&L of their fills {realized:.6f}")
    return problems


class RebuildError(RuntimeError):
    """The books cannot be rebuilt from the journal; the message says why and what to do."""


REBUILT_TABLES = ("order_status_history", "fills", "orders", "positions", "balances", "closed_trades")


def _move_aside(home, dest_root) -> str:
    """Move the database and its -wal/-shm (whatever stands at those paths) into ``dest_root``."""
    dest = dest_root / ("damaged-db-" + time.strftime("%Y%m%dT%H%M%S"))
    dest.mkdir(parents=True, exist_ok=True)
    for p in (home.db_path, home.db_path.with_name(home.db_path.name + "-wal"),
              home.db_path.with_name(home.db_path.name + "-shm")):
        if os.path.lexists(p):
            shutil.move(str(p), str(dest / p.name))
    return str(dest)


def rebuild_books(home, initial_cash: float, quote: str = "USDT") -> dict:
    """Rebuild the PAPER books (orders, fills, positions, cash, closed trades) from ``logs/trades.jsonl``.

    For a database that is missing, has no fills, or is damaged (moved aside to ``archive/`` first, never
    deleted). Cash starts from ``initial_cash`` (the journal holds fills, not deposits). Not rebuilt, since
    the journal does not hold them: decisions, equity snapshots, events of a damaged database. Refused
    when the database opens and already holds paper fills (nothing was lost: ``qts verify`` compares)."""
    from ..broker.ledger import Ledger

    fills = journal_fills(home)  # strict: a damaged journal is a StateFileError, nothing is touched
    paper = [f for f in fills if f.get("mode") == "paper"]
    if not paper:
        raise RebuildError(f"{home.trades_log} holds no paper fills: nothing to rebuild from (a new paper account "
                           "opens by itself with the next `qts run`)")
    moved = None
    try:
        store = Store.open(home, check_journal=False)
    except StateFileError as e:
        if e.path.parent != home.db_dir:
            raise
        moved = _move_aside(home, home.root / "archive")
        store = Store.open(home, check_journal=False)
    try:
        have = store.scalar("SELECT COUNT(*) FROM fills WHERE mode='paper'")
        if have:
            raise RebuildError(f"{home.db_path} already holds {have} paper fills: nothing to rebuild; `qts verify` "
                               "compares them with the journal")
        ledger = Ledger(store, "paper", quote)
        first_ts = min(int(f["ts"]) for f in paper)
        with store.tx():
            for t in REBUILT_TABLES:
                if t == "order_status_history":
                    store.execute("DELETE FROM order_status_history WHERE client_order_id IN "
                                  "(SELECT client_order_id FROM orders WHERE mode='paper')")
                else:
                    store.execute(f"DELETE FROM {t} WHERE mode='paper'")
            ledger.set_cash(float(initial_cash), first_ts)
            store.event("account", f"paper account rebuilt from {home.trades_log.name}: {len(paper)} fills, starting "
                                   f"with {initial_cash:.2f} {quote}",
                        data={"initial_cash": float(initial_cash), "rebuilt_from": str(home.trades_log),
                              "moved_aside": moved}, ts=first_ts)
            totals: dict[str, float] = {}
            for f in paper:
                totals[f["client_order_id"]] = totals.get(f["client_order_id"], 0.0) + float(f["amount"])
            applied = 0
            for f in paper:
                coid = f["client_order_id"]
                o = store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
                if o is None:
                    store.insert("orders", {"client_order_id": coid, "mode": "paper", "symbol": f["symbol"],
                                            "side": f["side"], "type": "market", "amount": totals[coid],
                                            "status": "sent", "reason": "rebuilt from trades.jsonl",
                                            "created_ts": int(f["ts"]), "updated_ts": int(f["ts"])})
                    o = store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
                if ledger.apply_fill(o, float(f["amount"]), float(f["price"]), float(f["fee"]), int(f["ts"]),
                                     1e-9, fill_id=f["fill_id"]) is not None:
                    applied += 1
        problems = verify_books(store, "paper")
        cash = ledger.cash()
        positions = {r["symbol"]: r["amount"] for r in store.query(
            "SELECT symbol, amount FROM positions WHERE mode='paper' AND amount>0 ORDER BY symbol")}
    finally:
        store.close()
    return {"fills": applied, "cash": cash, "positions": positions, "initial_cash": float(initial_cash),
            "moved_aside": moved, "problems": problems,
            "live_fills_ignored": len(fills) - len(paper)}
