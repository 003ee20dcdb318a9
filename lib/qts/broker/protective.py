"""Protective stops on the exchange (live, inside the trading agent): the loop checks stops at candle closes, so
while it is down nothing else would protect a position. Like Freqtrade's ``stoploss_on_exchange``, every live
position gets a stop order resting at the exchange (Binance spot: STOP_LOSS_LIMIT with ``stopPrice``), which the
exchange fills by itself when the price falls through it.

:func:`sync` makes one market right, and is what the agent runs after reconciling at start and after each
cycle of its loop:

* the stop price is the ``stop_loss`` the risk layer set on the latest filled entry (buy) of the market;
  the limit sits ``limit_bps`` below it (a stop-limit that cannot fill in a gap stays an open order, which
  the next sync sees);
* a position with no stop (or whose stop covers another amount, or another price: the stop moved) gets a new
  one, after the old one is cancelled;
* a stop with no position (the loop sold, or the stop itself filled) is cancelled;
* every new stop is an order like any other: a reduce-only sell through the gate (kill switch, breaker,
  reduce-only, the agent's collar, risk, exchange rules), recorded with its client order id. A refusal is
  reported, never bypassed.

Fills of a stop are adopted like any fill: by the broker's poll, or by the start-up reconcile when the
exchange filled it while the agent was down.
"""

from __future__ import annotations

from dataclasses import dataclass

from .live import PROTECTIVE_STOP
from .models import OrderIntent

DEFAULT_LIMIT_BPS = 50.0  # the limit below the trigger: room to fill in a fast market


@dataclass
class StopAction:
    symbol: str
    action: str  # placed | kept | cancelled | none | refused | no_stop_price
    detail: str = ""
    client_order_id: str | None = None

    def to_dict(self) -> dict:
        return {"symbol": self.symbol, "action": self.action, "detail": self.detail,
                "client_order_id": self.client_order_id}


def wanted_stop(broker, symbol: str) -> tuple[float | None, str | None]:
    """(stop price, strategy) from the latest filled entry of ``symbol`` that carries a stop_loss."""
    row = broker.store.one(
        "SELECT stop_loss, strategy FROM orders WHERE mode=? AND symbol=? AND side='buy' AND filled>0 "
        "AND stop_loss IS NOT NULL ORDER BY id DESC LIMIT 1", (broker.mode, symbol))
    return (float(row["stop_loss"]), row["strategy"]) if row else (None, None)


def sync(gate, broker, symbol: str, limit_bps: float = DEFAULT_LIMIT_BPS) -> StopAction:
    """Make ``symbol``'s protective stop match its position (see the module docstring)."""
    rules = broker.feed.rules(symbol)
    # what both the books and the exchange (the gate's view, in the agent) hold: a stop never covers more
    held = rules.amount_to_precision(min(broker.position_amount(symbol), gate.position(symbol)))
    stops = broker.protective_stops(symbol)
    if held <= 0 or rules.violation(held, broker.feed.quote(symbol).price):
        if not stops:
            return StopAction(symbol, "none", "no position")
        n = broker.cancel_protective_stops(symbol, "no position left to protect")
        return StopAction(symbol, "cancelled", f"{n} stop(s) without a position cancelled")
    want, strategy = wanted_stop(broker, symbol)
    if want is None:
        return StopAction(symbol, "no_stop_price", "the position's entry carries no stop_loss")
    trigger = rules.price_to_precision(want)
    limit = rules.price_to_precision(trigger * (1 - limit_bps / 10_000))
    if len(stops) == 1:
        s = stops[0]
        if abs(s["amount"] - held) <= rules.amount_step / 2 and abs((s["stop_loss"] or 0) - trigger) <= 1e-12 * trigger:
            return StopAction(symbol, "kept", f"stop {trigger:g} on {held:g}", s["client_order_id"])
    if stops:
        broker.cancel_protective_stops(symbol, f"replaced: stop {trigger:g} on {held:g}")
    res = gate.submit(OrderIntent(symbol, "sell", held, type="stop_loss_limit", price=limit, stop_loss=trigger,
                                  reduce_only=True, strategy=strategy, reason=PROTECTIVE_STOP, source="loop"))
    if not res.accepted:
        broker.store.event("protective_stop", f"{symbol}: protective stop {trigger:g} refused: {res.reason_code}: "
                                              f"{res.message}", severity="warning",
                           data={"symbol": symbol, "stop": trigger, "amount": held, "code": res.reason_code})
        return StopAction(symbol, "refused", f"{res.reason_code}: {res.message}", res.client_order_id)
    return StopAction(symbol, "placed", f"stop {trigger:g} limit {limit:g} on {held:g}", res.client_order_id)


def sync_all(gate, broker, symbols, limit_bps: float = DEFAULT_LIMIT_BPS) -> list[StopAction]:
    """:func:`sync` for every market in ``symbols`` and every market with an open stop; one market's failure
    is reported (an event) and does not stop the others."""
    out = []
    markets = sorted(set(symbols) | {o["symbol"] for o in broker.protective_stops()})
    for sym in markets:
        try:
            out.append(sync(gate, broker, sym, limit_bps))
        except Exception as e:  # noqa: BLE001 - reported; the next sync tries again
            broker.store.event("protective_stop", f"{sym}: protective stop sync failed: {e.__class__.__name__}: "
                                                  f"{str(e)[:200]}", severity="warning")
            out.append(StopAction(sym, "refused", f"{e.__class__.__name__}: {str(e)[:200]}"))
    return out
