"""Live broker on ccxt: loses nothing, doubles nothing.

Every order gets a deterministic client order id (models.make_client_order_id) that is written to
the database BEFORE the order is sent, with a status history: intent -> sent -> open ->
partially_filled -> filled / cancelled / rejected. So a crash at any point leaves a row that says
what might have happened, and the id to ask the exchange about it.

* Sending: ``create_order`` is never retried blindly. If the answer is lost (timeout, dropped
  connection, 5xx), the order is looked up by its client order id; if the exchange does not know it,
  it is sent once more WITH THE SAME client id (the exchange refuses a duplicate id, so this cannot
  double it). Definite refusals (InsufficientFunds, InvalidOrder) are recorded as rejected, not retried.
* Fills are adopted from the exchange's own trade list (``fetch_my_trades``), keyed by the
  exchange's trade id, so each fill is recorded exactly once however often it is seen.
* An order the exchange does not know is declared lost only after ``not_found_limit`` CONSECUTIVE
  not-found answers (exchanges sometimes answer "unknown order" for a moment after accepting one);
  :meth:`reconcile` looks once more at orders declared lost in the last week and adopts those that
  reappeared. An order stays open in the books until every fill the exchange reports is adopted.
* No order is sent until :meth:`reconcile` has run: it resolves every order left open in the
  database, adopts fills that happened while we were down, records every discrepancy as an event,
  and takes cash from the exchange's balance: only from a balance read that no fill adoption followed
  (else a fill landing between the lookups and the balance read would be counted twice).
* A market order never carries a price to ccxt (ccxt would turn amount x price into Binance's
  ``quoteOrderQty``); its row keeps price NULL.
* Stop loss / take profit: enforced by the loop on candle closes; in the trading agent, a position also
  has a protective stop resting ON THE EXCHANGE (``stop_loss_limit`` orders, Binance spot STOP_LOSS_LIMIT
  with ``stopPrice``: :mod:`.protective`), so a crash or a stopped loop does not leave it unprotected.
  A resting stop locks the base it would sell: any other sell of that market cancels it first.
"""

from __future__ import annotations

import os
import signal
import time

from ..store.journal import append_trade
from .exchange_client import ExchangeClient
from .ledger import BookedBroker, Ledger
from .models import OPEN_STATUSES, OrderIntent, OrderResult

PROTECTIVE_STOP = "protective stop"  # orders.reason of the exchange-side stops (type stop_loss_limit intents)
CRASH_ENV = "QTS_TEST_CRASH_AT"  # reliability tests: kill -9 ourselves at a named step


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def now_ms() -> int:
    return int(time.time() * 1000)


class NotReconciled(RuntimeError):
    pass


def order_params(market: dict, client_order_id: str, reduce_only: bool) -> dict:
    """ccxt ``create_order`` params. ``reduceOnly`` only where the exchange has the flag, on derivatives
    (ccxt's unified market says ``contract``); spot venues have no such flag (Binance spot would refuse
    the parameter), so there the gate's check_reduce_only is the protection."""
    params = {"clientOrderId": client_order_id}
    if reduce_only and market.get("contract") and not market.get("spot"):
        params["reduceOnly"] = True
    return params


class ReconcileUnstable(RuntimeError):
    """Start-up reconciliation could not read a balance that no fill adoption followed: retry."""


class LiveBroker(BookedBroker):
    mode = "live"

    def __init__(self, store, feed, exchange, client: ExchangeClient | None = None, not_found_limit: int = 3,
                 quote_currency: str = "USDT", lookup_pause_s: float = 0.2):
        import ccxt

        self.ccxt = ccxt
        self.store, self.feed, self.exchange = store, feed, exchange
        self.client = client or ExchangeClient(exchange, store)
        self.ledger = Ledger(store, self.mode, quote_currency)
        self.quote_currency = quote_currency
        self.not_found_limit = not_found_limit
        self.lookup_pause_s = lookup_pause_s
        self.fee_rate = 0.001   # estimate for the gate's funds check; real fees come from the fills
        self.slippage = 0.001
        self.reconciled = False

    # -- orders -----------------------------------------------------------------------------------
    def place(self, intent: OrderIntent, client_order_id: str) -> OrderResult:
        if not self.reconciled:
            raise NotReconciled("live orders wait until start-up reconciliation has finished")
        rules = self.feed.rules(intent.symbol)
        amount = rules.amount_to_precision(intent.amount)
        # a market order NEVER carries a price to ccxt: for Binance, ccxt turns amount x price into
        # quoteOrderQty (a market sell "with a price" 200x the market would sell 200x the amount); the
        # row keeps price NULL for it too
        stop = intent.type == "stop_loss_limit"
        price = rules.price_to_precision(intent.price) if intent.type in ("limit", "stop_loss_limit") and intent.price \
            else None
        trigger = rules.price_to_precision(intent.stop_loss) if stop else None
        if intent.side == "sell" and not stop:
            self.cancel_protective_stops(intent.symbol, "the position is being sold")  # frees the base it locks
        ts = now_ms()
        coid = client_order_id
        # one transaction: the row and its "intent" -> "sent" history are on disk before the request leaves
        # (a crash from here on leaves an order to look up by its client id; "sent" and "intent" are both
        # resolved that way at start)
        with self.store.tx():
            self.store.insert("orders", {
                "client_order_id": coid, "mode": self.mode, "symbol": intent.symbol, "side": intent.side,
                # a protective stop's row: type limit (its limit price; the table's CHECK knows market/limit),
                # reason PROTECTIVE_STOP, stop_loss = its trigger
                "type": "limit" if stop else intent.type, "amount": amount, "price": price, "status": "sent",
                "strategy": intent.strategy, "reason": PROTECTIVE_STOP if stop else intent.reason,
                "stop_loss": trigger if stop else intent.stop_loss,
                "take_profit": intent.take_profit, "created_ts": ts, "updated_ts": ts})
            self.ledger.history(coid, "intent", ts, intent.source)
            self.ledger.history(coid, "sent", ts, "create_order")
        _crash_point("before_send")
        try:
            order = self.client.call("create_order", intent.symbol, self._ccxt_type(intent), intent.side, amount, price,
                                     self._order_params(intent, coid), idempotent=False)
        except (self.ccxt.InsufficientFunds, self.ccxt.InvalidOrder, self.ccxt.BadSymbol, self.ccxt.BadRequest,
                self.ccxt.AuthenticationError, self.ccxt.PermissionDenied) as e:
            # BadRequest: Binance's filter failures (-1013 NOTIONAL, ...) are definite refusals too
            if self._is_duplicate(e):
                order = self._find(coid, intent.symbol)  # it exists already: adopt it
                if order is None:
                    self._status(coid, "sent", "duplicate id refused but not found; resolved later")
            else:
                self._status(coid, "rejected", f"{e.__class__.__name__}: {str(e)[:300]}")
                return OrderResult(False, coid, "rejected", reason_code="EXCHANGE_REJECTED",
                                   message=f"{e.__class__.__name__}: {str(e)[:300]}")
        except Exception as e:  # the answer is lost: the order may exist
            self._status(coid, "sent", f"answer lost ({e.__class__.__name__}); looking it up by client id")
            order = self._resolve_unknown(coid, intent, amount, price)
        _crash_point("after_send")
        if order is not None:
            try:
                self._apply(coid, order)
            except Exception as e:  # the order exists; its fills are adopted by the next poll
                st = self.store.scalar("SELECT status FROM orders WHERE client_order_id=?", (coid,))
                self.ledger.history(coid, st, now_ms(), f"fills not read yet ({e.__class__.__name__}); "
                                                        "adopted by the next poll")
        _crash_point("after_fill")
        return self.result(coid)

    def _order_params(self, intent: OrderIntent, coid: str) -> dict:
        params = order_params(self.exchange.market(intent.symbol), coid, intent.reduce_only)
        if intent.type == "stop_loss_limit":  # ccxt binance: type STOP_LOSS_LIMIT + stopPrice (+ timeInForce GTC)
            params["stopPrice"] = self.feed.rules(intent.symbol).price_to_precision(intent.stop_loss)
            params.pop("reduceOnly", None)
        return params

    @staticmethod
    def _ccxt_type(intent: OrderIntent) -> str:
        return "STOP_LOSS_LIMIT" if intent.type == "stop_loss_limit" else intent.type

    def protective_stops(self, symbol: str | None = None) -> list:
        """The protective stops the books have open (rows of ``orders``), oldest first."""
        q = f"SELECT * FROM orders WHERE mode=? AND reason=? AND status IN ({','.join('?' * len(OPEN_STATUSES))})"
        args = [self.mode, PROTECTIVE_STOP, *OPEN_STATUSES]
        if symbol is not None:
            q += " AND symbol=?"
            args.append(symbol)
        return self.store.query(q + " ORDER BY id", tuple(args))

    def cancel_protective_stops(self, symbol: str, why: str) -> int:
        """Cancel every open protective stop of ``symbol`` (raises when the exchange still shows one open: the
        sell that wanted the base must not go out then). Returns how many were cancelled."""
        n = 0
        for o in self.protective_stops(symbol):
            self.ledger.history(o["client_order_id"], o["status"], now_ms(), f"cancelling: {why}")
            n += bool(self.cancel(o["client_order_id"], why))
        return n

    def _resolve_unknown(self, coid, intent, amount, price):
        for _ in range(self.not_found_limit):
            order = self._find(coid, intent.symbol)
            if order is not None:
                return order
            time.sleep(self.lookup_pause_s)
        try:  # the exchange does not know it: send again with the SAME id (a duplicate would be refused)
            return self.client.call("create_order", intent.symbol, self._ccxt_type(intent), intent.side, amount, price,
                                    self._order_params(intent, coid), idempotent=False)
        except Exception as e:
            if self._is_duplicate(e):
                try:
                    found = self._find(coid, intent.symbol)
                except Exception:
                    found = None
                if found is not None:
                    return found
            self._status(coid, "sent", f"still unknown after resend ({e.__class__.__name__}); resolved later")
            return None

    def _is_duplicate(self, e: Exception) -> bool:
        """The exchange refused the client order id as already used: the order exists. (ccxt raises
        Binance's -2010 "Duplicate order sent." as a plain InvalidOrder, not DuplicateOrderId.)"""
        return isinstance(e, self.ccxt.DuplicateOrderId) or (
            isinstance(e, self.ccxt.ExchangeError) and "duplicate order" in str(e).lower())

    def _find(self, coid: str, symbol: str):
        """The exchange's view of our order, by client order id; None if it says it does not know it."""
        try:
            return self.client.call("fetch_order", None, symbol, {"clientOrderId": coid})
        except self.ccxt.OrderNotFound:
            return None
        except self.ccxt.InvalidOrder as e:  # some exchanges answer unknown ids this way
            if "not exist" in str(e).lower() or "unknown order" in str(e).lower():
                return None
            raise

    def result(self, coid: str) -> OrderResult:
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
        ok = o["status"] != "rejected"
        return OrderResult(ok, coid, o["status"], o["filled"], o["avg_price"], o["fee"],
                           message="" if o["status"] != "sent" else "outcome unknown: resolved by client order id")

    def _status(self, coid: str, status: str, detail: str | None, exchange_id: str | None = None) -> None:
        ts = now_ms()
        with self.store.tx():
            if exchange_id:
                self.store.execute("UPDATE orders SET exchange_order_id=? WHERE client_order_id=?", (exchange_id, coid))
            self.store.execute("UPDATE orders SET status=?, updated_ts=? WHERE client_order_id=?", (status, ts, coid))
            self.ledger.history(coid, status, ts, detail)

    def _apply(self, coid: str, order: dict) -> int:
        """Bring our row in line with the exchange's order: id, fills (from its trade list), status."""
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
        last = self.store.scalar("SELECT status FROM order_status_history WHERE client_order_id=? ORDER BY id DESC "
                                 "LIMIT 1", (coid,))
        if last == "not_found":  # known again: the not-found streak is over
            self.ledger.history(coid, "found", now_ms(), "the exchange knows it again")
        ex_id = str(order.get("id")) if order.get("id") is not None else o["exchange_order_id"]
        if ex_id and ex_id != o["exchange_order_id"]:
            self.store.execute("UPDATE orders SET exchange_order_id=? WHERE client_order_id=?", (ex_id, coid))
        new = self._adopt_fills(coid, order, ex_id)
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
        st = order.get("status")
        if float(order.get("filled") or 0) > o["filled"] + self.feed.rules(o["symbol"]).amount_step / 2:
            return new  # fills the exchange reports are not all adopted yet: stay open, the next poll retries
        if st in ("canceled", "cancelled", "expired") and o["status"] in OPEN_STATUSES:
            self._status(coid, "cancelled", f"exchange: {st}")
        elif st == "rejected" and o["status"] in OPEN_STATUSES:
            self._status(coid, "rejected", "exchange: rejected")
        elif st == "open" and o["status"] in ("intent", "sent"):
            self._status(coid, "open", "acknowledged", ex_id)
        elif st == "closed" and o["status"] in OPEN_STATUSES and o["filled"] >= o["amount"] - 1e-12:
            self._status(coid, "filled", "exchange: closed")
        return new

    def _adopt_fills(self, coid: str, order: dict, ex_id: str | None) -> int:
        filled = float(order.get("filled") or 0)
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
        if filled <= o["filled"] + 1e-12 or not ex_id:
            return 0
        # the order's own answer often lists its fills (Binance: FULL responses); use them when they
        # carry trade ids and add up to the filled amount, else ask the trade list (weight 20 on Binance)
        trades = [t for t in (order.get("trades") or []) if t.get("id") is not None and t.get("amount")]
        if not trades or abs(sum(float(t["amount"]) for t in trades) - filled) > 1e-9 * max(1.0, filled):
            trades = self.client.call("fetch_my_trades", o["symbol"], max(0, o["created_ts"] - 60_000), None,
                                      {"orderId": ex_id})
        trades = [t for t in trades if str(t.get("order") or ex_id) == ex_id]
        step = self.feed.rules(o["symbol"]).amount_step
        new_fills = []
        with self.store.tx():
            for t in sorted(trades, key=lambda t: (t.get("timestamp") or 0, str(t.get("id")))):
                row = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (coid,))
                fee = t.get("fee") or {}
                fee_quote = float(fee.get("cost") or 0) if (fee.get("currency") in (None, self.quote_currency)) \
                    else float(fee.get("cost") or 0) * float(t["price"])  # base-asset fee, valued in quote
                f = self.ledger.apply_fill(row, float(t["amount"]), float(t["price"]), fee_quote,
                                           int(t.get("timestamp") or now_ms()), step,
                                           fill_id=f"{self.exchange.id}:{t['id']}")
                if f:
                    new_fills.append(f)
        for f in new_fills:
            append_trade(self.store, f)
        return len(new_fills)

    def cancel(self, client_order_id: str, reason: str = "cancelled") -> bool:
        o = self.store.one("SELECT * FROM orders WHERE client_order_id=?", (client_order_id,))
        if not o or o["status"] not in OPEN_STATUSES:
            return False
        for _attempt in range(2):
            try:
                self.client.call("cancel_order", o["exchange_order_id"], o["symbol"],
                                 {"clientOrderId": client_order_id})
            except self.ccxt.OrderNotFound:
                pass  # filled or gone meanwhile (or hidden for a moment): the lookup below says which
            order = self._find(client_order_id, o["symbol"])
            if order is None or order.get("status") != "open":
                break
        if order is not None:
            self._apply(client_order_id, order)
        o = self.store.one("SELECT status FROM orders WHERE client_order_id=?", (client_order_id,))
        if o["status"] in OPEN_STATUSES and order is None:
            self._not_found(client_order_id, "cancel")
        elif order is not None and order.get("status") == "open":
            # never report "nothing to cancel" for an order that is still working at the exchange
            raise RuntimeError(f"cancel of {client_order_id} not confirmed: the exchange still shows it open")
        return self.store.one("SELECT status FROM orders WHERE client_order_id=?",
                              (client_order_id,))["status"] == "cancelled"

    def cancel_at_exchange(self, exchange_order_id: str, symbol: str) -> None:
        """Cancel an order the books do not know (placed by hand on the exchange, or by another tool): the
        kill switch clears every open order on its markets. Raises when the exchange refuses."""
        try:
            self.client.call("cancel_order", exchange_order_id, symbol)
        except self.ccxt.OrderNotFound:
            pass  # filled or cancelled meanwhile: the kill switch's check at the exchange says which

    def _not_found(self, coid: str, where: str) -> bool:
        """Count a not-found answer; after ``not_found_limit`` of them the order is declared lost."""
        self.ledger.history(coid, "not_found", now_ms(), where)
        recent = self.store.query("SELECT status FROM order_status_history WHERE client_order_id=? ORDER BY id DESC "
                                  "LIMIT ?", (coid, self.not_found_limit))
        n = 0  # consecutive not-found answers (scattered ones over an order's life are not a loss)
        for r in recent:
            if r["status"] != "not_found":
                break
            n += 1
        if n >= self.not_found_limit:
            self._status(coid, "rejected", f"lost: the exchange did not know it {n} times")
            self.store.event("reconcile", f"order {coid} declared lost after {n} not-found answers",
                             severity="warning", data={"client_order_id": coid})
            return True
        return False

    def process_market(self) -> int:
        """Poll every open order; adopt fills; count not-found answers. Returns new fills. An order whose
        poll fails (after the client's retries) is left for the next poll and reported as an event."""
        n = 0
        errors = []
        for o in self.open_orders():
            try:
                order = self._find(o["client_order_id"], o["symbol"])
                if order is None:
                    self._not_found(o["client_order_id"], "poll")
                    continue
                n += self._apply(o["client_order_id"], order)
            except Exception as e:  # one order's failed poll must not stop the others (nor kill the loop)
                errors.append(f"{o['client_order_id']}: {e.__class__.__name__}")
        if errors:  # the failures are in the api_error metrics too: the breaker sees them
            self.store.event("broker", f"poll failed for {len(errors)} open order(s); retried next cycle",
                             severity="warning", data={"errors": errors[:20]})
        return n

    # -- start-up ---------------------------------------------------------------------------------
    reconcile_rounds = 5  # balance reads that may each be followed by a new fill before reconcile gives up

    def _resolve_open(self, rep: dict, count: bool = False) -> tuple[int, list[str]]:
        """Look up every order the database has open; adopt its fills. Returns (new fills adopted, the
        orders whose exchange-reported fill is not all adopted yet: the trade list lags the order)."""
        new, pending = 0, []
        for o in self.open_orders():
            if count:
                rep["orders_checked"] += 1
            coid = o["client_order_id"]
            for _attempt in range(self.not_found_limit):
                order = self._find(coid, o["symbol"])
                if order is not None:
                    new += self._apply(coid, order)
                    row = self.store.one("SELECT filled, symbol FROM orders WHERE client_order_id=?", (coid,))
                    if float(order.get("filled") or 0) > row["filled"] + self.feed.rules(row["symbol"]).amount_step / 2:
                        pending.append(coid)
                    break
                if self._not_found(coid, "reconcile"):
                    rep["lost"].append(coid)
                    break
                time.sleep(self.lookup_pause_s)
        return new, pending

    def reconcile(self) -> dict:
        """Resolve every order the database has open, adopt missed fills, compare with the exchange.

        Cash is taken from the exchange's balance, and a fill must be in the books exactly once: either
        adopted BEFORE the balance read that sets cash (and then included in that balance), or adopted
        AFTER it by a poll (and then NOT included in it). The order of steps guarantees that:

        1. A1: resolve the open orders (adopt their fills), revive orders declared lost that reappeared;
        2. B: read the balance;
        3. A2: resolve the orders still open again. A fill A2 adopts may have landed before B (B includes
           it) or after it (B does not): B cannot be trusted, so read the balance again (2) and resolve
           again (3). Also when the exchange reports an order filled further than its trade list shows
           yet (the fill is in B but not adoptable yet).
        4. When A2 adopted nothing and nothing is pending, every fill of our orders that B includes was
           already in the books before B (any fill that happened before B would have been seen by A2, which
           ran after B); any later fill is not in B and is adopted once by the next poll. Cash := B.
           (This relies on the exchange's order lookups being at least as fresh as its balance read
           just before them, which holds for Binance's single matching engine; a trade list that lags
           the order is caught as "pending" above.)

        At most ``reconcile_rounds`` balance reads; if fills keep landing in between (or the trade list
        keeps lagging), raise: reconciliation could not get a stable view, retry. Orders are refused
        (:class:`NotReconciled`) until a reconcile finishes. Orders closed in the books cannot fill, so
        only the open ones need a second look; no order of ours is sent during reconcile.
        """
        t0 = time.perf_counter()
        rep = {"orders_checked": 0, "fills_adopted": 0, "lost": [], "discrepancies": []}
        new, _ = self._resolve_open(rep, count=True)
        rep["fills_adopted"] += new
        # orders declared lost (not-found streak) in the last week: one more look, adopted if they reappeared
        rep["revived"] = []
        for o in self.store.query(
                "SELECT * FROM orders o WHERE mode=? AND status='rejected' AND created_ts>=? AND EXISTS (SELECT 1 FROM "
                "order_status_history h WHERE h.client_order_id=o.client_order_id AND h.status='not_found') "
                "ORDER BY id", (self.mode, now_ms() - 7 * 86_400_000)):
            coid = o["client_order_id"]
            if coid in rep["lost"]:
                continue
            order = self._find(coid, o["symbol"])
            if order is not None and order.get("id") is not None:
                self._status(coid, "sent", "reappeared at the exchange after being declared lost")
                rep["fills_adopted"] += self._apply(coid, order)
                rep["revived"].append(coid)
        known = {r["client_order_id"] for r in self.store.query("SELECT client_order_id FROM orders WHERE mode='live'")}
        symbols = set(self.feed.symbols) | {r["symbol"] for r in self.store.query(
            "SELECT DISTINCT symbol FROM orders WHERE mode='live'")}
        for sym in sorted(symbols):
            for eo in self.client.call("fetch_open_orders", sym):
                if eo.get("clientOrderId") not in known:
                    rep["discrepancies"].append({"kind": "foreign_open_order", "symbol": sym, "id": eo.get("id")})
        # B then A2, until a balance read is followed by no adoption (see the docstring)
        for rnd in range(1, self.reconcile_rounds + 1):
            bal = self.client.call("fetch_balance")
            total = bal.get("total") or {}
            if not total and not (bal.get("free") or {}):  # a garbled answer must not zero the books
                raise self.ccxt.ExchangeError("balance answer lists no asset at all: not trusted; reconcile again")
            new, pending = self._resolve_open(rep)
            rep["fills_adopted"] += new
            if not new and not pending:
                break
            if rnd == self.reconcile_rounds:
                self.store.event("reconcile", f"reconciliation could not get a stable view in {rnd} rounds: fills "
                                              "kept landing between the balance read and the order lookups",
                                 severity="warning", data={"pending": pending, "fills_adopted": rep["fills_adopted"]})
                raise ReconcileUnstable(
                    f"reconciliation could not get a stable view of the exchange: after {rnd} balance reads, "
                    f"fills were still landing (or not yet listed: {', '.join(pending) or 'none'}) between the "
                    "balance read and the order lookups, so cash cannot be taken without risking counting a fill "
                    "twice. Live orders stay refused; retry the reconciliation (start again) in a moment.")
            time.sleep(self.lookup_pause_s)
        rep["balance_reads"] = rnd
        ts = now_ms()
        with self.store.tx():
            ours = self.cash()
            # the TOTAL (free + locked): the books do not reserve cash for open buy orders; each fill pays
            theirs = float(total.get(self.quote_currency) if total.get(self.quote_currency) is not None
                           else (bal.get("free") or {}).get(self.quote_currency) or 0.0)
            if abs(ours - theirs) > 1e-6:
                rep["discrepancies"].append({"kind": "cash", "database": ours, "exchange": theirs})
            self.ledger.set_cash(theirs, ts)  # the exchange's balance is the truth for cash
        for sym in sorted(symbols):
            base = sym.split("/")[0]
            ex_amt = float(total.get(base) or 0.0)
            db_amt = self.position_amount(sym)
            if abs(ex_amt - db_amt) > self.feed.rules(sym).amount_step / 2:
                rep["discrepancies"].append({"kind": "position", "symbol": sym, "database": db_amt, "exchange": ex_amt})
        for d in rep["discrepancies"]:
            self.store.event("reconcile", f"discrepancy: {d}", severity="warning", data=d)
        # the first reconcile of these books adopts the exchange's cash: that is no mismatch to alert on
        adopted_cash = not self.store.scalar("SELECT 1 FROM events WHERE kind='reconcile' AND message LIKE 'reconciled:%'")
        alarming = [d for d in rep["discrepancies"] if not (adopted_cash and d["kind"] == "cash")]
        if alarming:
            from ..notify.alerts import on_reconcile_mismatch  # queued; never blocks or raises

            on_reconcile_mismatch(self.store.home, alarming)
        rep["ms"] = (time.perf_counter() - t0) * 1000
        self.store.event("reconcile", f"reconciled: {rep['orders_checked']} open orders checked, "
                                      f"{rep['fills_adopted']} fills adopted, {len(rep['lost'])} lost, "
                                      f"{len(rep['discrepancies'])} discrepancies", data=rep)
        self.reconciled = True
        return rep
