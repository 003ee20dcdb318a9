"""Do the books agree? The trades journal, the fills, the positions, the cash and the P&L.

Checks, per mode:
- every fill in the database is in ``logs/trades.jsonl`` exactly once, with the same amount, price
  and fee, and the journal has no fill the database lacks;
- cash = initial cash - buy cost + sell proceeds - fees (from the fills alone);
- each position = bought - sold (from the fills alone);
- closed trades' P&L sums to the realized P&L of their fills minus their fees.
"""

from __future__ import annotations

from collections import Counter

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
