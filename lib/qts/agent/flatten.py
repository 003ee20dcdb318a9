"""The kill switch's live half, inside the agent: cancel and close from the EXCHANGE's own view.

Not from the database (which may be gone or rolled back): every open order on the configured markets
is cancelled, including orders the agent did not place (listed apart), then the free balance of each
market's base asset is sold at market through the gate's flatten path. "Flat" is said only when the
exchange confirms it: no open orders left on those markets, and no base balance above what the market
lets one sell (dust below the minimum amount or notional is reported as dust).
"""

from __future__ import annotations

import time


def _dust(agent, symbol: str, amount: float, mid: float | None) -> bool:
    rules = agent.feed.rules(symbol)
    amt = rules.amount_to_precision(amount)
    if amt <= 0:
        return True
    if mid is None:
        return False
    return rules.violation(amt, mid) is not None


def flatten_account(agent, passes: int = 3) -> dict:
    t0 = time.perf_counter()
    client, view, symbols = agent.client, agent.view, agent.symbols
    rep = {"cancelled": [], "cancelled_foreign": [], "closed": [], "failed": [], "left": [], "dust": [],
           "flat": False, "verified": False}
    for attempt in range(passes):
        # 1. every open order on the configured markets, ours or not
        for sym in symbols:
            try:
                orders = client.call("fetch_open_orders", sym)
            except Exception as e:  # noqa: BLE001
                rep["failed"].append({"symbol": sym, "step": "list open orders", "error": f"{e.__class__.__name__}"})
                continue
            for o in orders:
                cid = str(o.get("clientOrderId") or "")
                ours = bool(agent.store.one("SELECT 1 FROM orders WHERE client_order_id=?", (cid,))) if cid else False
                try:
                    if ours:
                        agent.broker.cancel(cid, "kill switch")
                    else:
                        agent.broker.cancel_at_exchange(o.get("id"), sym)
                    entry = {"symbol": sym, "id": o.get("id"), "client_order_id": cid or None}
                    (rep["cancelled"] if ours else rep["cancelled_foreign"]).append(entry)
                except Exception as e:  # noqa: BLE001 - gone meanwhile, or not cancellable: the check below says
                    rep["failed"].append({"symbol": sym, "step": "cancel", "id": o.get("id"),
                                          "error": f"{e.__class__.__name__}: {str(e)[:120]}"})
        # 2. the free base balances, sold at market through the gate (flatten exemption, collar)
        try:
            free = view.free()
        except Exception as e:  # noqa: BLE001
            rep["failed"].append({"step": "balance", "error": f"{e.__class__.__name__}: {str(e)[:120]}"})
            free = {}
        view.invalidate()
        for sym in symbols:
            base = sym.split("/")[0]
            amount = float(free.get(base) or 0.0)
            if amount <= 0:
                continue
            try:
                mid = view.book(sym, fresh=True)["mid"]
            except Exception:  # noqa: BLE001
                mid = None
            if _dust(agent, sym, amount, mid):
                continue
            res = agent.gate.submit_flatten(sym, agent.feed.rules(sym).amount_to_precision(amount))
            if res.accepted and res.status == "filled":
                rep["closed"].append({"symbol": sym, "amount": res.filled, "price": res.avg_price})
            else:
                rep["failed"].append({"symbol": sym, "step": "close", "error":
                                      f"{res.reason_code or res.status}: {res.message}"[:200]})
        view.invalidate()
        # 3. ask the exchange whether it is done
        left, dust = _check(agent)
        if left is not None and not left:
            rep["flat"], rep["verified"], rep["dust"] = True, True, dust
            break
        rep["left"], rep["dust"] = left or [{"step": "verify", "error": "the exchange did not answer"}], dust
        time.sleep(0.05 * (attempt + 1))
    if rep["flat"]:
        rep["left"] = []
    rep["ms"] = round((time.perf_counter() - t0) * 1000, 1)
    n_c, n_f, n_x = len(rep["cancelled"]), len(rep["cancelled_foreign"]), len(rep["closed"])
    rep["summary"] = (f"flat (confirmed by the exchange): {n_c} orders cancelled, {n_f} foreign orders cancelled, "
                      f"{n_x} positions closed" if rep["flat"] else
                      f"NOT flat: {len(rep['left'])} item(s) left at the exchange: "
                      + "; ".join(str(x) for x in rep["left"][:5]))
    return rep


def _check(agent) -> tuple[list | None, list]:
    left, dust = [], []
    try:
        for sym in agent.symbols:
            for o in agent.client.call("fetch_open_orders", sym):
                left.append({"symbol": sym, "open_order": o.get("id"), "client_order_id": o.get("clientOrderId")})
        totals = agent.view.balances(fresh=True)
    except Exception:  # noqa: BLE001
        return None, dust
    for sym in agent.symbols:
        amt = float(totals.get(sym.split("/")[0]) or 0.0)
        if amt <= 0:
            continue
        try:
            mid = agent.view.book(sym)["mid"]
        except Exception:  # noqa: BLE001
            mid = None
        if _dust(agent, sym, amt, mid):
            dust.append({"symbol": sym, "amount": amt})
        else:
            left.append({"symbol": sym, "position": amt})
    return left, dust
