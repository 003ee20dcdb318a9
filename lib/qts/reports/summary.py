"""What a session did, from the database alone: trades, fills, fees, P&L, equity."""

from __future__ import annotations

from ..store import Store


def summarize(store: Store, mode: str = "paper", since_ts: int | None = None) -> dict:
    since = since_ts or 0
    f = store.one("SELECT COUNT(*) AS n, COALESCE(SUM(fee),0) AS fees, COALESCE(SUM(realized_pnl),0) AS gross, "
                  "COALESCE(SUM(amount*price),0) AS volume FROM fills WHERE mode=? AND ts>=?", (mode, since))
    t = store.one("SELECT COUNT(*) AS n, COALESCE(SUM(pnl > 0),0) AS wins, COALESCE(SUM(pnl),0) AS pnl "
                  "FROM closed_trades WHERE mode=? AND exit_ts>=?", (mode, since))
    first = store.one("SELECT * FROM equity_snapshots WHERE mode=? AND ts>=? ORDER BY id LIMIT 1", (mode, since))
    last = store.one("SELECT * FROM equity_snapshots WHERE mode=? ORDER BY id DESC LIMIT 1", (mode,))
    start_cash = store.scalar("SELECT json_extract(data, '$.initial_cash') FROM events WHERE kind='account' "
                              "ORDER BY id DESC LIMIT 1")
    open_pos = store.query("SELECT symbol, amount, avg_entry FROM positions WHERE mode=? AND amount>0", (mode,))
    cycles = store.scalar("SELECT COUNT(DISTINCT cycle_id) FROM decisions WHERE mode=? AND ts>=?", (mode, since))
    refusals = store.scalar("SELECT COUNT(*) FROM events WHERE kind='gate' AND ts>=?", (since,))
    equity = last["equity"] if last else start_cash
    return {
        "mode": mode, "cycles": cycles, "fills": f["n"], "closed_trades": t["n"], "wins": t["wins"],
        "win_rate": (t["wins"] / t["n"]) if t["n"] else None, "closed_trades_pnl": t["pnl"],
        "realized_pnl": f["gross"] - f["fees"], "fees": f["fees"], "traded_volume": f["volume"],
        "unrealized_pnl": last["unrealized_pnl"] if last else 0.0,
        "initial_cash": start_cash, "equity": equity, "cash": last["cash"] if last else start_cash,
        "total_pnl": (equity - start_cash) if (equity is not None and start_cash) else None,
        "return_pct": 100 * (equity - start_cash) / start_cash if (equity is not None and start_cash) else None,
        "start_equity": first["equity"] if first else None,
        "open_positions": open_pos, "refusals": refusals,
        "database": str(store.home.db_path), "trades_log": str(store.home.trades_log),
    }
