"""Public market data from a ccxt exchange (no keys): markets, ticker, order book, OHLCV.

Follows the wall clock. Only candles that have closed are returned (the exchange's last, still
forming candle is dropped) so a live paper session sees exactly what a replay would.
"""

from __future__ import annotations

import re
import time

import numpy as np

from .candles import Candles, timeframe_of
from .feed import Quote, WallClock
from .rules import MarketRules


class ExchangeFailed(RuntimeError):
    """The exchange's public API failed. ``str()`` is one line naming the exchange and what failed."""


class ExchangeUnreachable(ExchangeFailed, ConnectionError):
    """The exchange's public API did not answer. ``str()`` is one line: the exchange, the endpoint, why."""


def describe_network_error(exchange_id: str, e: BaseException) -> str:
    """One line for a ccxt NetworkError: "binance: cannot reach GET https://.../api/v3/exchangeInfo
    (connection refused; offline?)". ccxt puts the method and URL in the message; the cause says why."""
    import ccxt

    text = str(e)
    m = re.search(r"\b(GET|POST|PUT|DELETE)\s+(https?://[^\s?]+)", text)
    endpoint = f"{m.group(1)} {m.group(2)}" if m else "its API"
    chain, c = [], e
    while c is not None and len(chain) < 8:
        chain.append(f"{c.__class__.__name__} {c}".lower())
        c = c.__cause__ or c.__context__
    causes = " ".join(chain)
    if isinstance(e, ccxt.DDoSProtection):
        why = "rate limited by the exchange; wait a minute"
    elif isinstance(e, ccxt.ExchangeNotAvailable):
        why = "the exchange answered that it is unavailable; try again later"
    elif isinstance(e, ccxt.RequestTimeout) or "timed out" in causes or "timeout" in causes:
        why = "timed out; offline?"
    elif "refused" in causes:
        why = "connection refused; offline?"
    elif "name" in causes and ("resolv" in causes or "known" in causes):
        why = "host name not resolved; offline?"
    else:
        why = "offline?"
    return f"{exchange_id}: cannot reach {endpoint} ({why})"


def apply_sandbox(ex, on: bool) -> None:
    """EXCHANGE_SANDBOX=true: the exchange's sandbox/testnet URLs (ccxt ``set_sandbox_mode``). An exchange
    without one is refused, naming the setting (never the real exchange in its place)."""
    if not on:
        return
    import ccxt

    try:
        ex.set_sandbox_mode(True)
    except (ccxt.NotSupported, TypeError, KeyError):  # (an exchange without test URLs fails in ccxt's clone)
        raise ValueError(f"EXCHANGE_SANDBOX: {ex.id} has no sandbox/testnet in ccxt; unset EXCHANGE_SANDBOX "
                         "or choose an exchange that has one") from None


def public_exchange(exchange_id: str, timeout_ms: int = 10_000, url: str | None = None, sandbox: bool = False):
    """A ccxt client for public data (no keys); ``url`` (EXCHANGE_URL) points it at a local test exchange
    or a proxy; ``sandbox`` (EXCHANGE_SANDBOX) at the exchange's testnet."""
    import ccxt  # heavy (~0.4 s): only the commands that talk to an exchange pay for it

    cls = getattr(ccxt, exchange_id, None)
    if cls is None:
        raise ValueError(f"EXCHANGE: ccxt has no exchange {exchange_id!r}")
    ex = cls({"enableRateLimit": True, "timeout": timeout_ms})
    if exchange_id.startswith("binance"):  # spot markets only: paper trading needs no futures or margin lists
        ex.options["fetchMarkets"] = {"types": ["spot"], "loadAllOptions": False}
        ex.options["fetchMargins"] = False
        ex.options["fetchCurrencies"] = False
        ex.has["fetchCurrencies"] = False
    apply_sandbox(ex, sandbox)
    if url:
        from .exchange_url import apply_exchange_url

        apply_exchange_url(ex, url)
        ex.options["adjustForTimeDifference"] = False
    return ex


class CcxtFeed:
    def __init__(self, exchange, symbols, minutes: int, clock: WallClock | None = None, screen_config=None):
        self.exchange = exchange
        self.symbols = tuple(symbols)
        self.timeframe_ms = minutes * 60_000
        self.timeframe = timeframe_of(minutes)
        self.source = f"ccxt:{exchange.id}"
        self.synthetic = False
        self.clock = clock or WallClock()
        self._markets: dict | None = None
        self._liquidity: dict[str, float] = {}
        # closed candles only change at a boundary, and one decision needs one price: cache both
        self._candles: dict[str, tuple[int, Candles]] = {}
        self._quotes: dict[str, tuple[float, Quote]] = {}
        self.quote_ttl_s = 1.0
        self.screen_config = screen_config
        self.quarantine_log: list = []  # bad candles and prices dropped (market/quarantine.py); the loop records them

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def _api(self, method: str, *args, **kwargs):
        """Call the exchange; a network failure becomes one ExchangeUnreachable line, not a traceback."""
        import ccxt

        try:
            return getattr(self.exchange, method)(*args, **kwargs)
        except ccxt.NetworkError as e:
            raise ExchangeUnreachable(describe_network_error(self.exchange.id, e)) from None
        except ccxt.ExchangeError as e:  # it answered, with an error (unknown symbol, bad request, ...)
            text = " ".join(str(e).split())
            raise ExchangeFailed(f"{self.exchange.id}: {method} failed: {text[:300]}") from None

    def wait_next_cycle(self, interval_ms: int, stop) -> int | None:
        return self.clock.wait_next_cycle(interval_ms, stop)

    def markets(self) -> dict[str, dict]:
        if self._markets is None:
            all_markets = self._api("load_markets")
            missing = [s for s in self.symbols if s not in all_markets]
            if missing:
                raise ValueError(f"SYMBOLS: {', '.join(missing)} not listed on {self.exchange.id}")
            self._markets = {s: all_markets[s] for s in self.symbols}
        return self._markets

    def rules(self, symbol: str) -> MarketRules:
        return MarketRules.from_ccxt(self.markets()[symbol], self.exchange.precisionMode)

    def candles(self, symbol: str, limit: int = 500) -> Candles:
        boundary = self.now_ms() // self.timeframe_ms
        hit = self._candles.get(symbol)
        if hit and hit[0] == boundary and len(hit[1]) >= limit:
            c = hit[1]
            return c.slice(max(0, len(c) - limit), len(c))
        rows = self._api("fetch_ohlcv", symbol, self.timeframe, limit=min(limit + 1, 1000))
        c = self._closed(rows, symbol)
        self._candles[symbol] = (boundary, c)
        if len(c):
            self._liquidity[symbol] = float(c.volume[-1])
        return c.slice(max(0, len(c) - limit), len(c))

    def closed_since(self, symbol: str, since_ms: int) -> Candles:
        return self._closed(self._api("fetch_ohlcv", symbol, self.timeframe, since=since_ms, limit=1000), symbol)

    def _closed(self, rows, symbol: str = "?") -> Candles:
        """The closed candles, through the quarantine (a bad print or an absurd row is dropped and logged)."""
        from .quarantine import Rejected, screen

        now = self.now_ms()
        keep = []
        for r in rows:
            if not isinstance(r, (list, tuple)) or len(r) < 6:
                continue
            if any(v is None for v in r[:6]):
                ts = r[0] if isinstance(r[0], (int, float)) else 0
                self._log([Rejected(symbol, int(ts or 0), "row", None, "has a missing value")])
                continue
            if r[0] + self.timeframe_ms <= now:
                keep.append(r[:6])
        c = Candles.from_rows(keep if keep else np.empty((0, 6)), self.timeframe_ms)
        c, rejected = screen(c, symbol, self.screen_config)
        self._log(rejected)
        return c

    def _log(self, rejected) -> None:
        known = {(r.symbol, r.ts, r.field) for r in self.quarantine_log[-500:]}
        self.quarantine_log.extend(r for r in rejected if (r.symbol, r.ts, r.field) not in known)

    def ticker(self, symbol: str) -> dict:
        return self._api("fetch_ticker", symbol)

    def order_book(self, symbol: str, depth: int = 10) -> dict:
        return self._api("fetch_order_book", symbol, depth)

    def quote(self, symbol: str) -> Quote:
        hit = self._quotes.get(symbol)
        if hit and time.monotonic() - hit[0] < self.quote_ttl_s:
            return hit[1]
        t = self._api("fetch_ticker", symbol)
        price = t.get("last") or t.get("close")
        if not price or price <= 0:
            raise LookupError(f"{self.exchange.id} gave no last price for {symbol}")
        recent = self.candles(symbol, 20)
        from .quarantine import Rejected, check_price

        why = check_price(float(price), recent, self.screen_config)
        if why:  # a bad print in the ticker: never marked, never traded at; the last clean close stands in
            ts = int(t.get("timestamp") or self.now_ms())
            self._log([Rejected(symbol, ts, "ticker.last", float(price), why)])
            if not len(recent):
                raise LookupError(f"{self.exchange.id}: the last price for {symbol} {why}")
            price = float(recent.close[-1])
        q = Quote(symbol, float(price), self._liquidity.get(symbol, 0.0), int(t.get("timestamp") or self.now_ms()))
        self._quotes[symbol] = (time.monotonic(), q)
        return q
