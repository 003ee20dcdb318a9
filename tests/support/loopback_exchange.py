"""A loopback Binance *spot* REST exchange for tests and benchmarks (test equipment, not the library).

The real ``ccxt.binance`` class talks to it over HTTP on 127.0.0.1 (see :func:`make_ccxt_client`).
Standard library only (ccxt and ``qts`` are imported lazily inside :func:`make_ccxt_client`).
Tests import it as ``from support.loopback_exchange import ...`` (``tests/`` is on ``sys.path``).

Quick start (in-process)::

    with LoopbackBinance() as srv:
        ex = make_ccxt_client(srv)
        ex.load_markets()
        ex.create_order('BTC/USDT', 'market', 'buy', 0.001, params={'clientOrderId': 'a1'})
        srv.set_price('BTC/USDT', 59000)           # resting limit orders trade through
        srv.faults.add('429', path='/api/v3/order', method='POST', times=1)

Standalone (its own process, see :func:`main`, :func:`start_standalone`, :class:`RemoteLoopback`)::

    python tests/support/loopback_exchange.py --port 0 --state /tmp/x/state.json \
        [--host 127.0.0.1] [--api-key K --secret S] [--symbols BTC/USDT,ETH/USDT] \
        [--balances USDT=10000,BTC=0] [--idle-timeout 120] [--max-lifetime 3600]

prints one JSON line once it listens (``{"url", "port", "pid", "api_key", "state", ...}``) and serves
until SIGTERM/SIGINT, ``POST /_loopback/shutdown``, its idle timeout (default 120 s) or its maximum
lifetime (default 3600 s). It binds loopback addresses only.

State file
----------
With ``state_path`` (``--state FILE``) the whole exchange state -- balances (free/locked), orders with
their fills and status, trades, id counters, prices and price history, symbols, API restrictions, fill
fraction, used client order ids -- is written to FILE (JSON, decimals as strings, temp file + fsync +
rename) after every change that matters and BEFORE the answer goes out, and read back at start when
FILE exists: a restart (even after ``kill -9``) sees every order that was acknowledged. Faults, the
access log and the request-weight window are not kept.

Control endpoints (no auth, loopback clients only, no request weight, not in ``access_log``/``count``)
------------------------------------------------------------------------------------------------------
``POST /_loopback/price`` {symbol, price} · ``POST /_loopback/balance`` {asset, free, locked} ·
``POST /_loopback/restrictions`` {field: value, ...} · ``POST /_loopback/fill_fraction`` {fraction} ·
``POST /_loopback/fault`` {kind, path, method, times, skip, delay, status, body, retry_after, lookups,
mode} · ``POST /_loopback/clear_faults`` · ``GET /_loopback/state`` · ``POST /_loopback/backfill``
{symbol, bars, step_ms, seed, vol} · ``POST /_loopback/shutdown``. Errors answer 400 ``{"error": msg}``.

Server
------
* Binds 127.0.0.1 port 0 (OS-chosen; ``host``/``port`` choose others, loopback addresses only), serves
  from a daemon thread (one thread per connection, HTTP/1.1 keep-alive). ``close()`` / ``__exit__``
  stop it and drop open connections; it also stops by itself after ``idle_timeout`` seconds without a
  request (default 60 in-process, 120 standalone) or after ``max_lifetime``.
* Endpoints (``/api/v3/...``): ``ping``, ``time``, ``exchangeInfo``, ``ticker/24hr``, ``ticker/price``,
  ``ticker/bookTicker``, ``avgPrice``, ``depth``, ``klines``; signed: ``account``, ``order`` (POST, GET,
  DELETE), ``order/test`` (POST), ``openOrders`` (GET, DELETE), ``allOrders``, ``myTrades``; and
  ``/sapi/v1/account/apiRestrictions`` (signed; fields settable with :meth:`set_api_restrictions`).
  Anything else answers 404 ``{"code": -1, "msg": "loopback: ... is not implemented"}``.
* Signed endpoints check, like Binance: ``X-MBX-APIKEY`` (missing → 401/-2014, unknown → 401/-2015),
  ``timestamp`` and ``signature`` present (-1102), HMAC-SHA256 of the query string + body without the
  ``signature`` parameter (bad → 401/-1022), ``recvWindow`` <= 60000 (-1131), timestamp within
  ``recvWindow`` of the server clock and not 1000 ms ahead (-1021). ``time_offset_ms`` skews the server
  clock. Disabled ``enableReading`` / ``enableSpotAndMarginTrading`` restrictions answer 401/-2015.

Market data
-----------
Each symbol has a settable last price (:meth:`set_price`); every change is kept in a price history.
``klines`` are built from that history (open = price in force at the candle open, high/low over the
changes inside the candle, close = last one; volume = own fills); ``ticker/24hr`` likewise over the last
24 h, plus ``market_quote_volume_24h`` (default 50 M quote) of other traders' volume. The synthetic
book has ``book_levels`` levels of ``book_qty`` each at last ± k·tick (k >= 1), plus
the remaining quantity of resting own limit orders at their prices.

Matching and fee rules (all amounts are ``Decimal``, wire format 8 decimals)
----------------------------------------------------------------------------
* Fee: ``fee_rate`` (default 0.001 = 0.1 %) for maker and taker alike, **always charged in the quote
  asset**: ``commission = ceil_8dp(qty * price * fee_rate)``, ``commissionAsset = quote``.
  A BUY fill of ``qty`` at ``price`` debits ``qty*price + commission`` quote and credits ``qty`` base;
  a SELL fill debits ``qty`` base and credits ``qty*price - commission`` quote.
* MARKET orders fill immediately, as taker, at the symbol's last price (the book is not walked).
  ``quantity`` form: that base quantity. ``quoteOrderQty`` form: ``floor_to_step(quoteOrderQty / price)``
  base quantity (the commission comes on top for buys). Any unfilled rest (see ``fill_fraction``) makes
  the order ``EXPIRED``; fully filled → ``FILLED``.
* LIMIT orders (timeInForce GTC/IOC/FOK; LIMIT_MAKER = post-only): if marketable at placement
  (BUY with last <= limit, SELL with last >= limit) they fill as taker at the last price; otherwise (or
  for the rest) a GTC order rests. A resting order fills as maker **at its limit price** when a later
  :meth:`set_price` trades through it (BUY: new price <= limit; SELL: new price >= limit), one fill per
  :meth:`set_price` call. IOC/FOK rests are ``EXPIRED``; FOK with ``fill_fraction < 1`` expires unfilled.
  LIMIT_MAKER that would take is rejected (-2010).
* STOP_LOSS_LIMIT (quantity, price, stopPrice, timeInForce): a SELL's stopPrice must be below the last price
  (a BUY's above), else -2010 "Stop price would trigger immediately."; it rests untriggered (locking like a
  limit order) until a :meth:`set_price` reaches the stop (SELL: new price <= stopPrice); then it is a LIMIT
  order: marketable at that price, it fills as taker at the new price, else it rests at its limit.
* Locking: a resting BUY locks ``qty*limit + ceil_8dp(qty*limit*fee_rate)`` quote, a resting SELL locks
  ``qty`` base; each fill releases its share, the rest is released when the order closes.
* ``fill_fraction`` (default 1.0, :meth:`set_fill_fraction`): each fill event fills at most
  ``floor_to_step(origQty * fill_fraction)`` (at least one step) of the remaining quantity.
* Filters checked: PRICE_FILTER (limit price), LOT_SIZE (quantity), MARKET_LOT_SIZE (market maxQty),
  NOTIONAL (min for all, max for limit) → -1013 ``Filter failure: <NAME>``; insufficient balance →
  -2010. A ``newClientOrderId`` already used by any order of the symbol → -2010 ``Duplicate order sent.``
  Unknown order on GET → 400/-2013 ``Order does not exist.``; on DELETE (or already closed) → -2011.
* Cancel responses carry a fresh cancel ``clientOrderId`` and the original in ``origClientOrderId``,
  as Binance does.

Request weight
--------------
Per fixed 1-minute window, per-endpoint weights roughly like Binance's (exchangeInfo 20, depth 5–250 by
limit, ticker 2/80, account 20, order GET 4, order POST/DELETE 1, openOrders 6/80, myTrades/allOrders
20, ...; sapi counts into the same window). Every response carries ``X-MBX-USED-WEIGHT-1M``. Over
``weight_limit`` → 429/-1003 with ``Retry-After`` (seconds to the window end); more than
``ban_after_429s`` consecutive 429s → 418 ban for ``ban_seconds``. :meth:`reset_weight` clears it.

Faults (``server.faults``, a :class:`FaultPlan`)
----------------------------------------------
``server.faults.add(kind, path=None, method=None, times=1, skip=0, ...)`` affects the next ``times``
matching calls (``path`` like ``'/api/v3/order'`` or ``'order'``; None = any) after skipping ``skip``.
Kinds (:class:`FaultKind`): ``latency`` (sleep ``delay`` s, then answer normally), ``timeout`` (hold the
connection without answering until the client gives up, ``delay`` s, or server close; then drop it),
``429`` / ``418`` (rate-limit answers with Retry-After), ``5xx`` (``status`` default 503, HTML body unless
``body``), ``malformed`` (the request IS processed, the JSON body is truncated; ``status`` default 200),
``lost`` (the request IS processed — e.g. the order is created — then the connection is dropped
(``mode='drop'``) or answered 503/-1007 "execution status unknown" (``mode='error'``)), ``vanish`` (on
``POST /api/v3/order``: the created order answers -2013 to the next ``lookups`` GET/DELETE lookups and is
hidden from openOrders/allOrders meanwhile; on another endpoint: answer -2013/-2011 directly).
``faults.random_schedule(seed, rate, kinds, ...)`` adds a seeded random fault rule for fuzz tests.
``server.access_log`` lists requests as ``(method, path, params)`` (signature omitted; the last
``access_log_limit`` kept); ``server.count(method, path)`` counts all of them; ``server.faults.log`` lists
fired faults as ``(kind, method, path)`` and ``server.faults.fired(kind)`` counts them.

Note (ccxt 4.5): a *200* answer with a malformed JSON body does not raise in ccxt — the raw text is
handed to the parser (e.g. a ticker full of None, an order with ``id`` None, or a plain AttributeError).
Behind an error status (``malformed`` with ``status=502``) it raises ``ExchangeNotAvailable``.
"""

from __future__ import annotations

import argparse
import bisect
import collections
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import math
import os
import random
import re
import select
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = [
    "ApiError",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "LoopbackBinance",
    "RandomFaults",
    "RemoteLoopback",
    "SymbolSpec",
    "DEFAULT_SYMBOLS",
    "make_ccxt_client",
    "start_standalone",
    "stop_standalone",
]

ZERO = Decimal(0)
E8 = Decimal("0.00000001")


def _dec(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _fmt(x: Decimal, places: int = 8) -> str:
    q = Decimal(1).scaleb(-places)
    return f"{x.quantize(q, rounding=ROUND_DOWN):f}"


def _ceil8(x: Decimal) -> Decimal:
    return x.quantize(E8, rounding=ROUND_UP)


def _floor_step(x: Decimal, step: Decimal) -> Decimal:
    if step <= 0:
        return x
    return (x / step).to_integral_value(rounding=ROUND_DOWN) * step


def _is_multiple(x: Decimal, base: Decimal, step: Decimal) -> bool:
    if step <= 0:
        return True
    return ((x - base) % step) == 0


def _norm_symbol(symbol: str) -> str:
    return symbol.replace("/", "").replace("-", "").upper()


def _norm_path(path: str | None) -> str | None:
    if path is None:
        return None
    return path if path.startswith("/") else "/api/v3/" + path


# --------------------------------------------------------------------------------------------------
# symbols
# --------------------------------------------------------------------------------------------------


@dataclass
class SymbolSpec:
    """One spot symbol: filters (as in exchangeInfo) and its initial last price."""

    base: str
    quote: str
    price: Any = "100"
    tick_size: Any = "0.01"
    min_price: Any = "0.01"
    max_price: Any = "1000000"
    step_size: Any = "0.00001"
    min_qty: Any = "0.00001"
    max_qty: Any = "9000"
    market_max_qty: Any = "1000"
    min_notional: Any = "5"
    max_notional: Any = "9000000"
    base_precision: int = 8
    quote_precision: int = 8
    margin_allowed: bool = True
    status: str = "TRADING"

    def __post_init__(self) -> None:
        for name in ("price", "tick_size", "min_price", "max_price", "step_size", "min_qty", "max_qty",
                     "market_max_qty", "min_notional", "max_notional"):
            setattr(self, name, _dec(getattr(self, name)))

    @property
    def symbol(self) -> str:
        return self.base + self.quote

    def exchange_info(self) -> dict:
        """The ``symbols[]`` entry of exchangeInfo, shaped like Binance's (2025)."""
        return {
            "symbol": self.symbol,
            "status": self.status,
            "baseAsset": self.base,
            "baseAssetPrecision": self.base_precision,
            "quoteAsset": self.quote,
            "quotePrecision": self.quote_precision,
            "quoteAssetPrecision": self.quote_precision,
            "baseCommissionPrecision": self.base_precision,
            "quoteCommissionPrecision": self.quote_precision,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True,
            "ocoAllowed": True,
            "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": True,
            "cancelReplaceAllowed": True,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": self.margin_allowed,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": _fmt(self.min_price),
                 "maxPrice": _fmt(self.max_price), "tickSize": _fmt(self.tick_size)},
                {"filterType": "LOT_SIZE", "minQty": _fmt(self.min_qty), "maxQty": _fmt(self.max_qty),
                 "stepSize": _fmt(self.step_size)},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
                 "maxQty": _fmt(self.market_max_qty), "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10, "maxTrailingAboveDelta": 2000,
                 "minTrailingBelowDelta": 10, "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5", "bidMultiplierDown": "0.2",
                 "askMultiplierUp": "5", "askMultiplierDown": "0.2", "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": _fmt(self.min_notional), "applyMinToMarket": True,
                 "maxNotional": _fmt(self.max_notional), "applyMaxToMarket": False, "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
            ],
            "permissions": [],
            "permissionSets": [["SPOT", "MARGIN"] if self.margin_allowed else ["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }


def _default_symbols() -> dict[str, SymbolSpec]:
    specs = [
        SymbolSpec("BTC", "USDT", price="60000", step_size="0.00001", min_qty="0.00001", max_qty="9000",
                   market_max_qty="128.52621715"),
        SymbolSpec("ETH", "USDT", price="3000", step_size="0.0001", min_qty="0.0001", max_qty="9000",
                   market_max_qty="2500.5"),
        SymbolSpec("SOL", "USDT", price="150", step_size="0.001", min_qty="0.001", max_qty="9222449",
                   market_max_qty="30000"),
    ]
    return {s.symbol: s for s in specs}


DEFAULT_SYMBOLS = _default_symbols()
DEFAULT_BALANCES = {"USDT": "10000", "BTC": "0.5", "ETH": "5", "SOL": "50"}

KLINE_SECONDS = {"1s": 1, "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
                 "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200,
                 "1w": 604800}

CONTROL_PREFIX = "/_loopback/"
STATE_FORMAT = "loopback-exchange-state"
STATE_VERSION = 1

_CLIENT_ID_RE = re.compile(r"^[.A-Z:/a-z0-9_-]{1,36}$")
_OPEN = ("NEW", "PARTIALLY_FILLED")


# --------------------------------------------------------------------------------------------------
# errors and faults
# --------------------------------------------------------------------------------------------------


class ApiError(Exception):
    """A Binance-style error answer: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, status: int, code: int, msg: str, headers: dict | None = None):
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg
        self.headers = headers or {}


def _req(body: dict, name: str) -> Any:
    if body.get(name) is None:
        raise ValueError(f"missing field {name!r}")
    return body[name]


def _missing(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class FaultKind:
    LATENCY = "latency"
    TIMEOUT = "timeout"
    HTTP_429 = "429"
    HTTP_418 = "418"
    HTTP_5XX = "5xx"
    MALFORMED = "malformed"
    LOST = "lost"
    VANISH = "vanish"
    ALL = (LATENCY, TIMEOUT, HTTP_429, HTTP_418, HTTP_5XX, MALFORMED, LOST, VANISH)
    #: answered before the request is processed
    PRE = (TIMEOUT, HTTP_429, HTTP_418, HTTP_5XX)
    #: the request is processed, then the answer is spoiled
    POST = (LOST, MALFORMED)


@dataclass
class Fault:
    """One programmed fault; see the module docstring for the kinds."""

    kind: str
    method: str | None = None
    path: str | None = None
    times: int | None = 1          # None = every matching call, forever
    skip: int = 0                  # let this many matching calls through first
    delay: float | None = None     # latency seconds / timeout hold seconds (None = until client leaves)
    status: int | None = None      # 5xx status, malformed status, lost(mode='error') status
    body: str | None = None        # replacement body for 5xx / malformed
    retry_after: int | None = None  # 429/418 Retry-After seconds
    lookups: int = 1               # vanish: how many lookups answer -2013
    mode: str = "drop"             # lost: 'drop' (close connection) or 'error' (503/-1007)
    seen: int = 0
    fired: int = 0

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method.upper() == method)
                and (self.path is None or self.path == path))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times


@dataclass
class RandomFaults:
    """A seeded random fault rule: each matching call gets a fault with probability ``rate``."""

    seed: int
    rate: float = 0.2
    kinds: tuple = (FaultKind.LATENCY, FaultKind.HTTP_429, FaultKind.HTTP_5XX, FaultKind.MALFORMED,
                    FaultKind.LOST)
    method: str | None = None
    path: str | None = None
    max_faults: int | None = None
    latency: float = 0.05
    fired: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def draw(self, method: str, path: str) -> Fault | None:
        if (self.method is not None and self.method.upper() != method) or \
                (self.path is not None and self.path != path):
            return None
        if self.max_faults is not None and self.fired >= self.max_faults:
            return None
        if self.rng.random() >= self.rate:
            return None
        kind = self.rng.choice(list(self.kinds))
        self.fired += 1
        f = Fault(kind, method, path, times=1, fired=1, seen=1)
        if kind == FaultKind.LATENCY:
            f.delay = self.latency
        elif kind == FaultKind.HTTP_5XX:
            f.status = self.rng.choice([500, 502, 503])
        elif kind == FaultKind.LOST:
            f.mode = self.rng.choice(["drop", "error"])
        elif kind == FaultKind.VANISH:
            f.lookups = self.rng.randint(1, 3)
        return f


class FaultPlan:
    """Programmable faults for a :class:`LoopbackBinance` (``server.faults``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._random: list[RandomFaults] = []
        self.log: list[tuple[str, str, str]] = []

    def add(self, kind: str, path: str | None = None, method: str | None = None, times: int | None = 1, *,
            skip: int = 0, delay: float | None = None, status: int | None = None, body: str | None = None,
            retry_after: int | None = None, lookups: int = 1, mode: str = "drop") -> Fault:
        kind = str(kind).lower()
        if kind not in FaultKind.ALL:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FaultKind.ALL}")
        if kind == FaultKind.LOST and mode not in ("drop", "error"):
            raise ValueError("lost fault mode must be 'drop' or 'error'")
        if kind == FaultKind.VANISH and path is None:
            path, method = "/api/v3/order", method or "POST"
        f = Fault(kind, method.upper() if method else None, _norm_path(path), times, skip, delay, status, body,
                  retry_after, lookups, mode)
        with self._lock:
            self._faults.append(f)
        return f

    def random_schedule(self, seed: int, rate: float = 0.2, kinds: Iterable[str] | None = None,
                        path: str | None = None, method: str | None = None, max_faults: int | None = None,
                        latency: float = 0.05) -> RandomFaults:
        rule = RandomFaults(seed, rate, tuple(kinds) if kinds else RandomFaults.kinds,
                            method.upper() if method else None, _norm_path(path), max_faults, latency)
        for k in rule.kinds:
            if k not in FaultKind.ALL:
                raise ValueError(f"unknown fault kind {k!r}")
        with self._lock:
            self._random.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
            self._random.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return [f for f in self._faults if not f.exhausted]

    def fired(self, kind: str | None = None) -> int:
        with self._lock:
            return sum(1 for k, _, _ in self.log if kind is None or k == kind)

    def _take(self, method: str, path: str) -> list[Fault]:
        out: list[Fault] = []
        with self._lock:
            for f in self._faults:
                if f.exhausted or not f.matches(method, path):
                    continue
                f.seen += 1
                if f.seen <= f.skip:
                    continue
                f.fired += 1
                out.append(f)
            for rule in self._random:
                f = rule.draw(method, path)
                if f is not None:
                    out.append(f)
            self._faults = [f for f in self._faults if not f.exhausted]
            for f in out:
                self.log.append((f.kind, method, path))
        return out


# --------------------------------------------------------------------------------------------------
# orders
# --------------------------------------------------------------------------------------------------


@dataclass
class _Order:
    order_id: int
    client_order_id: str
    symbol: str
    side: str
    type: str
    tif: str
    price: Decimal
    orig_qty: Decimal
    time: int
    orig_quote_qty: Decimal = ZERO
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = "NEW"
    update_time: int = 0
    locked: Decimal = ZERO
    hidden: int = 0
    stop_price: Decimal = ZERO  # STOP_LOSS_LIMIT: the trigger; the order works as a LIMIT once triggered
    triggered: bool = True

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in _OPEN

    def view(self) -> dict:
        """GET order / openOrders / allOrders shape."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_order_id, "price": _fmt(self.price), "origQty": _fmt(self.orig_qty),
            "executedQty": _fmt(self.executed_qty), "cummulativeQuoteQty": _fmt(self.cum_quote),
            "status": self.status, "timeInForce": self.tif, "type": self.type, "side": self.side,
            "stopPrice": _fmt(self.stop_price), "icebergQty": "0.00000000", "time": self.time,
            "updateTime": self.update_time, "isWorking": True, "workingTime": self.time,
            "origQuoteOrderQty": _fmt(self.orig_quote_qty), "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def result(self, transact_time: int) -> dict:
        """POST order RESULT shape (FULL adds ``fills``)."""
        return {
            "symbol": self.symbol, "orderId": self.order_id, "orderListId": -1,
            "clientOrderId": self.client_order_id, "transactTime": transact_time, "price": _fmt(self.price),
            "origQty": _fmt(self.orig_qty), "executedQty": _fmt(self.executed_qty),
            "origQuoteOrderQty": _fmt(self.orig_quote_qty), "cummulativeQuoteQty": _fmt(self.cum_quote),
            "status": self.status, "timeInForce": self.tif, "type": self.type, "side": self.side,
            "workingTime": self.time, "selfTradePreventionMode": "EXPIRE_MAKER",
        }

    def cancel_view(self, cancel_client_id: str, transact_time: int) -> dict:
        return {
            "symbol": self.symbol, "origClientOrderId": self.client_order_id, "orderId": self.order_id,
            "orderListId": -1, "clientOrderId": cancel_client_id, "transactTime": transact_time,
            "price": _fmt(self.price), "origQty": _fmt(self.orig_qty), "executedQty": _fmt(self.executed_qty),
            "origQuoteOrderQty": _fmt(self.orig_quote_qty), "cummulativeQuoteQty": _fmt(self.cum_quote),
            "status": self.status, "timeInForce": self.tif, "type": self.type, "side": self.side,
            "selfTradePreventionMode": "EXPIRE_MAKER",
        }


# --------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "loopback-binance"
    sys_version = ""
    timeout = 30  # idle keep-alive connections close after this

    def setup(self) -> None:
        super().setup()
        try:  # header and body go out as separate writes: avoid Nagle + delayed-ACK stalls (~40 ms)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.app._conn_opened(self.connection)  # type: ignore[attr-defined]

    def version_string(self) -> str:
        return self.server_version

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.app._conn_closed(self.connection)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
        pass

    def do_GET(self) -> None:
        self.server.app._serve(self, "GET")  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        self.server.app._serve(self, "POST")  # type: ignore[attr-defined]

    def do_DELETE(self) -> None:
        self.server.app._serve(self, "DELETE")  # type: ignore[attr-defined]

    def do_PUT(self) -> None:
        self.server.app._serve(self, "PUT")  # type: ignore[attr-defined]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


def loopback_bind_address(host: str) -> str:
    """The address to bind for ``host``: ``localhost`` -> 127.0.0.1; any other name or a non-loopback
    address -> ValueError (this exchange never listens beyond the machine)."""
    h = (host or "").strip().strip("[]")
    if h.lower() == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        raise ValueError(f"refusing to bind to {host!r}: give a loopback address (127.0.0.1, ::1 or "
                         "localhost)") from None
    if not ip.is_loopback:
        raise ValueError(f"refusing to bind to {host!r}: not a loopback address; the loopback exchange "
                         "only listens on 127.0.0.0/8 or ::1")
    return str(ip)


def _is_loopback_client(addr: str) -> bool:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@dataclass
class _Route:
    fn: Callable[[dict, list], Any]
    signed: bool = False
    trading: bool = False
    weight: Any = 1  # int or callable(params) -> int
    mutates: bool = False  # changes state worth keeping: saved (state_path) before the answer goes out


class LoopbackBinance:
    """The loopback exchange. See the module docstring for behaviour and rules."""

    def __init__(self, *, api_key: str = "loopback-api-key", secret: str = "loopback-secret",
                 symbols: dict[str, SymbolSpec] | Iterable[SymbolSpec] | None = None,
                 balances: dict[str, Any] | None = None, fee_rate: Any = "0.001", fill_fraction: float = 1.0,
                 weight_limit: int = 6000, ban_after_429s: int = 3, ban_seconds: float = 120.0,
                 idle_timeout: float | None = 60.0, max_lifetime: float | None = None, hold_max: float = 60.0,
                 book_levels: int = 20, book_qty: Any = "1", rate_clock: Callable[[], float] = time.time,
                 seed: int | None = None, access_log_limit: int | None = 200_000,
                 host: str = "127.0.0.1", port: int = 0, state_path: str | os.PathLike | None = None,
                 autostart: bool = True) -> None:
        self.api_key, self.secret = api_key, secret
        if symbols is None:
            specs = [SymbolSpec(**{k: getattr(s, k) for k in s.__dataclass_fields__}) for s in DEFAULT_SYMBOLS.values()]
        elif isinstance(symbols, dict):
            specs = list(symbols.values())
        else:
            specs = list(symbols)
        self._specs: dict[str, SymbolSpec] = {s.symbol: s for s in specs}
        self.fee_rate = _dec(fee_rate)
        self.fill_fraction = float(fill_fraction)
        self.weight_limit, self.ban_after_429s, self.ban_seconds = weight_limit, ban_after_429s, ban_seconds
        self.idle_timeout, self.max_lifetime, self.hold_max = idle_timeout, max_lifetime, hold_max
        self.book_levels, self.book_qty = book_levels, _dec(book_qty)
        self.market_quote_volume_24h: Any = "50000000"  # other traders' 24 h volume in ticker/24hr (settable)
        self.time_offset_ms = 0
        self.faults = FaultPlan()
        self.access_log: list[tuple[str, str, dict]] = []
        self.access_log_limit = access_log_limit
        self._counts: collections.Counter = collections.Counter()
        self.errors: list[str] = []  # internal handler exceptions (should stay empty)
        self.api_restrictions: dict[str, Any] = {
            "ipRestrict": False, "createTime": self.server_time_ms(), "enableReading": True,
            "enableWithdrawals": False, "enableInternalTransfer": False, "enableMargin": False,
            "enableFutures": False, "permitsUniversalTransfer": False, "enableVanillaOptions": False,
            "enableFixApiTrade": False, "enableFixReadOnly": False, "enableSpotAndMarginTrading": True,
            "enablePortfolioMarginTrading": False,
        }
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        now = self.server_time_ms()
        self._prices: dict[str, Decimal] = {s: spec.price for s, spec in self._specs.items()}
        self._hist_ts: dict[str, list[int]] = {s: [now] for s in self._specs}
        self._hist_px: dict[str, list[Decimal]] = {s: [spec.price] for s, spec in self._specs.items()}
        self._balances: dict[str, list[Decimal]] = {}
        for spec in self._specs.values():
            self._balances.setdefault(spec.base, [ZERO, ZERO])
            self._balances.setdefault(spec.quote, [ZERO, ZERO])
        for asset, amount in (DEFAULT_BALANCES if balances is None else balances).items():
            self._balances[asset] = [_dec(amount), ZERO]
        self._orders: dict[int, _Order] = {}
        self._open: dict[str, dict[int, _Order]] = {s: {} for s in self._specs}
        self._by_client: dict[tuple[str, str], int] = {}
        self._trades: list[dict] = []
        self._trade_ts: dict[str, list[int]] = {s: [] for s in self._specs}
        self._trade_rows: dict[str, list[dict]] = {s: [] for s in self._specs}
        self._next_order_id = 100000001
        self._next_trade_id = 500000001
        self._book_id = 1000
        self._order_times: collections.deque = collections.deque()
        # weight accounting
        self._rate_clock = rate_clock
        self._weight_window = int(rate_clock() // 60)
        # for rate-limit tests: requests refused for weight (429 or 418) and the most weight any window held
        self.weight_refusals = 0
        self.peak_weight = 0
        self._used_weight = 0
        self._consecutive_429 = 0
        self._banned_until = 0.0
        # server
        self._stop = threading.Event()
        self._closed = threading.Event()
        self.close_reason: str | None = None
        self._conns: set[socket.socket] = set()
        self._active = 0
        self._last_activity = time.monotonic()
        self._started_at = time.monotonic()
        self._thread: threading.Thread | None = None
        bind = loopback_bind_address(host)  # refuse a non-loopback host before anything else
        self.state_path: Path | None = Path(state_path).resolve() if state_path is not None else None
        self.restored = False
        if self.state_path is not None and self.state_path.exists():
            self._load_state(self.state_path)
            self.restored = True
        server_cls = _HTTPServer6 if ":" in bind else _HTTPServer
        self._httpd = server_cls((bind, int(port)), _Handler)
        self._httpd.app = self  # type: ignore[attr-defined]
        self._httpd.timeout = 0.1
        self.host, self.port = self._httpd.server_address[:2]
        self._routes = self._build_routes()
        self._control = self._build_control()
        if self.state_path is not None:
            self.save_state()  # the file exists (and is current) from the first moment we listen
        if autostart:
            self.start()

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + _norm_path(path)

    def start(self) -> "LoopbackBinance":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"loopback-binance:{self.port}", daemon=True)
            self._thread.start()
        return self

    def __enter__(self) -> "LoopbackBinance":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed.wait(timeout)

    def close(self) -> None:
        """Stop serving, drop open connections, release the port. Idempotent."""
        if self.close_reason is None:
            self.close_reason = "close"
        self._stop.set()
        self._drop_connections()
        t = self._thread
        if t is None:
            self._finalize()
        elif t is not threading.current_thread():
            t.join(timeout=5)
            if t.is_alive():  # pragma: no cover - defensive
                self._finalize()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._httpd.handle_request()
                now = time.monotonic()
                with self._lock:
                    idle = self._active == 0 and now - self._last_activity
                if self.idle_timeout is not None and idle and idle > self.idle_timeout:
                    self.close_reason = self.close_reason or "idle"
                    break
                if self.max_lifetime is not None and now - self._started_at > self.max_lifetime:
                    self.close_reason = self.close_reason or "lifetime"
                    break
        except Exception as e:  # pragma: no cover - defensive
            self.errors.append(f"serve loop: {e!r}")
            self.close_reason = self.close_reason or "error"
        finally:
            self._stop.set()
            self._drop_connections()
            self._finalize()

    def _finalize(self) -> None:
        if not self._closed.is_set():
            try:
                self._httpd.server_close()
            finally:
                self._closed.set()

    def _conn_opened(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        if self._stop.is_set():
            self._shutdown_sock(conn)

    def _conn_closed(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _drop_connections(self) -> None:
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            self._shutdown_sock(c)

    @staticmethod
    def _shutdown_sock(conn: socket.socket) -> None:
        try:
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ---- state helpers (Python side) -------------------------------------------------------------

    def server_time_ms(self) -> int:
        return int(time.time() * 1000) + getattr(self, "time_offset_ms", 0)

    def spec(self, symbol: str) -> SymbolSpec:
        return self._specs[_norm_symbol(symbol)]

    def price(self, symbol: str) -> Decimal:
        with self._lock:
            return self._prices[_norm_symbol(symbol)]

    def set_price(self, symbol: str, price: Any) -> list[dict]:
        """Set the last price; resting limit orders that it trades through fill (maker, at their limit).

        Returns the fills (myTrades shape) this caused."""
        sym = _norm_symbol(symbol)
        px = _dec(price)
        if px <= 0:
            raise ValueError("price must be > 0")
        with self._lock:
            if sym not in self._specs:
                raise KeyError(sym)
            self._prices[sym] = px
            ts = max(self.server_time_ms(), self._hist_ts[sym][-1])
            self._hist_ts[sym].append(ts)
            self._hist_px[sym].append(px)
            self._book_id += 1
            fills = []
            for o in sorted(self._open[sym].values(), key=lambda o: o.order_id):
                if not o.triggered:  # STOP_LOSS_LIMIT: waits until the price reaches its stop price
                    if not ((o.side == "SELL" and px <= o.stop_price) or (o.side == "BUY" and px >= o.stop_price)):
                        continue
                    o.triggered = True
                    o.update_time = ts
                    if (o.side == "SELL" and px >= o.price) or (o.side == "BUY" and px <= o.price):
                        q = self._fill_qty(o)  # the limit it turned into is marketable: fills as taker at the price
                        if q > 0:
                            fills.append(self._fill(o, q, px, maker=False))
                        if o.remaining <= 0:
                            o.status = "FILLED"
                            self._release(o)
                        elif o.executed_qty > 0:
                            o.status = "PARTIALLY_FILLED"
                        self._index(o)
                    continue  # else it rests as a limit order from now on
                if (o.side == "BUY" and px <= o.price) or (o.side == "SELL" and px >= o.price):
                    q = self._fill_qty(o)
                    if q > 0:
                        fills.append(self._fill(o, q, o.price, maker=True))
                    if o.remaining <= 0:
                        o.status = "FILLED"
                        self._release(o)
                    elif o.executed_qty > 0:
                        o.status = "PARTIALLY_FILLED"
                    self._index(o)
            self._persist()
            return fills

    def set_fill_fraction(self, fraction: float) -> None:
        if not 0.0 <= float(fraction) <= 1.0:
            raise ValueError("fill fraction must be within [0, 1]")
        with self._lock:
            self.fill_fraction = float(fraction)
            self._persist()

    def set_balance(self, asset: str, free: Any, locked: Any = 0) -> None:
        with self._lock:
            self._balances[asset.upper()] = [_dec(free), _dec(locked)]
            self._persist()

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """(free, locked) of one asset."""
        with self._lock:
            free, locked = self._balances.get(asset.upper(), [ZERO, ZERO])
            return free, locked

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        with self._lock:
            return {a: (f, l) for a, (f, l) in self._balances.items()}

    def set_api_restrictions(self, **fields: Any) -> None:
        with self._lock:
            self.api_restrictions.update(fields)
            self._persist()

    def backfill(self, symbol: str, bars: int = 200, step_ms: int = 300_000, seed: int = 1,
                 vol: float = 0.004) -> None:
        """Give ``symbol`` a price history in the past (``bars`` prices ``step_ms`` apart, a seeded
        random walk of log-volatility ``vol`` ending before the first recorded price), so klines have
        real ranges. The last price (the one in force now) is unchanged."""
        sym = _norm_symbol(symbol)
        bars, step_ms = int(bars), int(step_ms)
        if bars < 0 or step_ms <= 0:
            raise ValueError("bars must be >= 0 and step_ms > 0")
        rng = random.Random(seed)
        with self._lock:
            if sym not in self._specs:
                raise KeyError(sym)
            last = self._prices[sym]
            tick = self._specs[sym].tick_size
            t_now = self._hist_ts[sym][0]
            px, ts = [], []
            p = float(last)
            for i in range(bars):
                p *= math.exp(rng.gauss(0, float(vol)))
                px.append(max(tick, (Decimal(repr(p)) / tick).to_integral_value() * tick))
                ts.append(t_now - (bars - i) * step_ms)
            self._hist_ts[sym][:0] = ts
            self._hist_px[sym][:0] = px
            self._persist()

    def hide_order(self, order_id: int | None = None, client_order_id: str | None = None,
                   symbol: str | None = None, lookups: int = 1) -> None:
        """Make an existing order answer -2013 to the next ``lookups`` lookups ("vanish then reappear")."""
        with self._lock:
            o = self._locate(order_id, client_order_id, symbol)
            if o is None:
                raise KeyError(order_id or client_order_id)
            o.hidden = lookups

    def get_order(self, order_id: int | None = None, client_order_id: str | None = None,
                  symbol: str | None = None) -> dict | None:
        """The order as GET /api/v3/order would show it (ignores hiding), or None."""
        with self._lock:
            o = self._locate(order_id, client_order_id, symbol)
            return None if o is None else o.view()

    def orders(self, symbol: str | None = None) -> list[dict]:
        with self._lock:
            sym = _norm_symbol(symbol) if symbol else None
            return [o.view() for o in self._orders.values() if sym is None or o.symbol == sym]

    def trades(self, symbol: str | None = None) -> list[dict]:
        with self._lock:
            sym = _norm_symbol(symbol) if symbol else None
            return [dict(t) for t in self._trades if sym is None or t["symbol"] == sym]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        """How many requests arrived for (method, path) since start / :meth:`clear_access_log`; None = any.

        Counted separately from ``access_log``, which keeps only the last ``access_log_limit`` entries."""
        p = _norm_path(path)
        with self._lock:
            return sum(n for (m, pa), n in self._counts.items()
                       if (method is None or m == method.upper()) and (p is None or pa == p))

    def clear_access_log(self) -> None:
        with self._lock:
            self.access_log.clear()
            self._counts.clear()

    @property
    def used_weight(self) -> int:
        with self._lock:
            self._roll_window(self._rate_clock())
            return self._used_weight

    def reset_weight(self) -> None:
        with self._lock:
            self._used_weight = 0
            self._consecutive_429 = 0
            self._banned_until = 0.0

    def _locate(self, order_id: Any, client_order_id: str | None, symbol: str | None) -> _Order | None:
        if order_id is not None:
            o = self._orders.get(int(order_id))
            if o is not None and (symbol is None or o.symbol == _norm_symbol(symbol)):
                return o
            return None
        if client_order_id is not None:
            for (sym, cid), oid in self._by_client.items():
                if cid == client_order_id and (symbol is None or sym == _norm_symbol(symbol)):
                    return self._orders[oid]
        return None

    # ---- state file ------------------------------------------------------------------------------

    def save_state(self, path: str | os.PathLike | None = None) -> Path:
        """Write the exchange state to ``path`` (default ``state_path``): JSON, temp + fsync + rename."""
        target = Path(path).resolve() if path is not None else self.state_path
        if target is None:
            raise ValueError("no state file: give a path or construct with state_path=")
        with self._lock:
            data = json.dumps(self._snapshot(), separators=(",", ":"))
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=str(target.parent))
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            try:
                dfd = os.open(str(target.parent), os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
            except OSError:  # pragma: no cover - platforms without directory fsync
                pass
        return target

    def _persist(self) -> None:
        if self.state_path is not None:
            self.save_state()

    def _snapshot(self) -> dict:
        """Everything worth keeping, JSON-ready; every Decimal as its exact string."""
        def spec_dict(spec: SymbolSpec) -> dict:
            return {k: (str(v) if isinstance(v, Decimal) else v) for k, v in dataclasses.asdict(spec).items()}

        def order_dict(o: _Order) -> dict:
            return {f.name: (str(getattr(o, f.name)) if isinstance(getattr(o, f.name), Decimal)
                             else getattr(o, f.name))
                    for f in dataclasses.fields(_Order) if f.name != "hidden"}

        rng_version, rng_internal, rng_gauss = self._rng.getstate()
        return {
            "format": STATE_FORMAT,
            "version": STATE_VERSION,
            "saved_at": self.server_time_ms(),
            "fee_rate": str(self.fee_rate),
            "fill_fraction": self.fill_fraction,
            "symbols": [spec_dict(s) for s in self._specs.values()],
            "prices": {s: str(p) for s, p in self._prices.items()},
            "history": {s: {"ts": list(self._hist_ts[s]), "px": [str(p) for p in self._hist_px[s]]}
                        for s in self._specs},
            "balances": {a: [str(f), str(l)] for a, (f, l) in self._balances.items()},
            "orders": [order_dict(o) for o in sorted(self._orders.values(), key=lambda o: o.order_id)],
            "client_order_ids": [[sym, cid, oid] for (sym, cid), oid in self._by_client.items()],
            "trades": [dict(t) for t in self._trades],
            "next_order_id": self._next_order_id,
            "next_trade_id": self._next_trade_id,
            "book_id": self._book_id,
            "api_restrictions": dict(self.api_restrictions),
            "rng": [rng_version, list(rng_internal), rng_gauss],
        }

    def _load_state(self, path: Path) -> None:
        """Replace the initial state with the one saved in ``path`` (ValueError if it is damaged)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"loopback state file {path} cannot be read: {e}") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise ValueError(f"loopback state file {path} is not a loopback exchange state file")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"loopback state file {path} has version {data.get('version')!r}; "
                             f"this loopback reads version {STATE_VERSION}")
        try:
            self._apply_state(data)
        except (KeyError, TypeError, ValueError, InvalidOperation, AttributeError, IndexError) as e:
            raise ValueError(f"loopback state file {path} is damaged: {e!r}") from None

    def _apply_state(self, data: dict) -> None:
        D = Decimal  # noqa: N806 - exact: strings in, Decimals out
        specs = {**self._specs}
        for sd in data["symbols"]:
            spec = SymbolSpec(**sd)
            specs[spec.symbol] = spec  # the file wins; symbols only given now are added
        prices = {s: spec.price for s, spec in specs.items()}
        prices.update({s: D(p) for s, p in data["prices"].items()})
        now = self.server_time_ms()
        hist_ts = {s: [now] for s in specs}
        hist_px = {s: [prices[s]] for s in specs}
        for s, h in data["history"].items():
            ts, px = [int(t) for t in h["ts"]], [D(p) for p in h["px"]]
            if len(ts) != len(px) or not ts:
                raise ValueError(f"price history of {s} is inconsistent")
            hist_ts[s], hist_px[s] = ts, px
        balances = {a: [D(f), D(l)] for a, (f, l) in data["balances"].items()}
        orders: dict[int, _Order] = {}
        for od in data["orders"]:
            kw = dict(od)
            for name in ("price", "orig_qty", "orig_quote_qty", "executed_qty", "cum_quote", "locked", "stop_price"):
                if name in kw:
                    kw[name] = D(kw[name])
            o = _Order(**kw)
            if o.symbol not in specs:
                raise ValueError(f"order {o.order_id} is for unknown symbol {o.symbol}")
            orders[o.order_id] = o
        by_client = {(sym, cid): int(oid) for sym, cid, oid in data["client_order_ids"]}
        for o in orders.values():
            by_client.setdefault((o.symbol, o.client_order_id), o.order_id)
        trades = [dict(t) for t in data["trades"]]
        self._specs = specs
        self.fee_rate = D(data["fee_rate"])
        self.fill_fraction = float(data["fill_fraction"])
        self._prices, self._hist_ts, self._hist_px = prices, hist_ts, hist_px
        self._balances = balances
        self._orders = orders
        self._open = {s: {} for s in specs}
        for o in sorted(orders.values(), key=lambda o: o.order_id):
            self._index(o)
        self._by_client = by_client
        self._trades = trades
        self._trade_ts = {s: [] for s in specs}
        self._trade_rows = {s: [] for s in specs}
        for t in trades:
            self._trade_ts[t["symbol"]].append(int(t["time"]))
            self._trade_rows[t["symbol"]].append(t)
        self._next_order_id = int(data["next_order_id"])
        self._next_trade_id = int(data["next_trade_id"])
        self._book_id = int(data["book_id"])
        self.api_restrictions = dict(data["api_restrictions"])
        rng = data.get("rng")
        if rng:
            self._rng.setstate((rng[0], tuple(rng[1]), rng[2]))

    # ---- control endpoints (/_loopback/...) ------------------------------------------------------

    def _build_control(self) -> dict[tuple[str, str], Callable[[dict], Any]]:
        def known(symbol: Any) -> str:
            if _norm_symbol(str(symbol)) not in self._specs:
                raise ValueError(f"unknown symbol {symbol!r}; this exchange lists "
                                 f"{', '.join(s.base + '/' + s.quote for s in self._specs.values())}")
            return str(symbol)

        def price(b: dict) -> dict:
            return {"fills": self.set_price(known(_req(b, "symbol")), _req(b, "price"))}

        def balance(b: dict) -> dict:
            asset = str(_req(b, "asset"))
            self.set_balance(asset, _req(b, "free"), b.get("locked", 0))
            free, locked = self.balance(asset)
            return {"asset": asset.upper(), "free": str(free), "locked": str(locked)}

        def restrictions(b: dict) -> dict:
            self.set_api_restrictions(**b)
            with self._lock:
                return dict(self.api_restrictions)

        def fill_fraction(b: dict) -> dict:
            self.set_fill_fraction(float(_req(b, "fraction")))
            return {"fill_fraction": self.fill_fraction}

        def fault(b: dict) -> dict:
            allowed = {"kind", "path", "method", "times", "skip", "delay", "status", "body", "retry_after",
                       "lookups", "mode"}
            unknown = sorted(set(b) - allowed)
            if unknown:
                raise ValueError(f"unknown fault fields {unknown}; allowed: {sorted(allowed)}")
            f = self.faults.add(**{"kind": _req(b, "kind"), **{k: v for k, v in b.items() if k != "kind"}})
            return {k: v for k, v in dataclasses.asdict(f).items() if k not in ("seen", "fired")}

        def clear_faults(b: dict) -> dict:
            self.faults.clear()
            return {"ok": True}

        def backfill(b: dict) -> dict:
            allowed = {"symbol", "bars", "step_ms", "seed", "vol"}
            unknown = sorted(set(b) - allowed)
            if unknown:
                raise ValueError(f"unknown backfill fields {unknown}; allowed: {sorted(allowed)}")
            self.backfill(**{**b, "symbol": known(_req(b, "symbol"))})
            return {"ok": True}

        def shutdown(b: dict) -> dict:
            return {"ok": True, "stopping": True}

        return {
            ("POST", "price"): price,
            ("POST", "balance"): balance,
            ("POST", "restrictions"): restrictions,
            ("POST", "fill_fraction"): fill_fraction,
            ("POST", "fault"): fault,
            ("POST", "clear_faults"): clear_faults,
            ("GET", "state"): lambda b: self.state(),
            ("POST", "backfill"): backfill,
            ("POST", "shutdown"): shutdown,
        }

    def state(self) -> dict:
        """What ``GET /_loopback/state`` answers: balances, orders, trades, prices, ... as JSON."""
        with self._lock:
            return {
                "balances": {a: {"free": str(f), "locked": str(l)} for a, (f, l) in self._balances.items()},
                "orders": [o.view() for o in sorted(self._orders.values(), key=lambda o: o.order_id)],
                "trades": [dict(t) for t in self._trades],
                "prices": {s: str(p) for s, p in self._prices.items()},
                "symbols": [{"symbol": s.symbol, "base": s.base, "quote": s.quote} for s in self._specs.values()],
                "fill_fraction": self.fill_fraction,
                "fee_rate": str(self.fee_rate),
                "api_restrictions": dict(self.api_restrictions),
                "requests": [[m, p, n] for (m, p), n in sorted(self._counts.items())],
                "faults_fired": [list(x) for x in self.faults.log],
                "state_path": str(self.state_path) if self.state_path else None,
            }

    def _serve_control(self, h: BaseHTTPRequestHandler, method: str, path: str, raw_body: str) -> None:
        if not _is_loopback_client(str(h.client_address[0])):
            self._send(h, 403, json.dumps({"error": "control endpoints answer loopback clients only"}))
            return
        name = path[len(CONTROL_PREFIX):].strip("/")
        fn = self._control.get((method, name))
        if fn is None:
            known = sorted(f"{m} {CONTROL_PREFIX}{n}" for m, n in self._control)
            self._send(h, 404, json.dumps({"error": f"no control endpoint {method} {path}", "known": known}))
            return
        try:
            body = json.loads(raw_body) if raw_body.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = fn(body)
        except (ValueError, KeyError, TypeError, InvalidOperation) as e:
            msg = str(e) if not isinstance(e, KeyError) else f"unknown or missing {e}"
            self._send(h, 400, json.dumps({"error": msg or repr(e)}))
            return
        self._send(h, 200, json.dumps(result, default=str))
        if name == "shutdown":
            self.close_reason = self.close_reason or "shutdown"
            h.close_connection = True
            self._stop.set()

    # ---- request pipeline ------------------------------------------------------------------------

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        with self._lock:
            self._active += 1
            self._last_activity = time.monotonic()
        try:
            self._serve_inner(h, method)
        except Exception as e:  # never let a handler bug hang the client
            self.errors.append(f"{method} {h.path}: {e!r}")
            try:
                self._send(h, 500, json.dumps({"code": -1000, "msg": f"loopback internal error: {e!r}"}))
            except OSError:
                pass
        finally:
            with self._lock:
                self._active -= 1
                self._last_activity = time.monotonic()

    def _serve_inner(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(h.path)
        path, raw_query = parts.path, parts.query
        length = int(h.headers.get("Content-Length") or 0)
        raw_body = h.rfile.read(length).decode("utf-8", "replace") if length else ""
        if path.startswith(CONTROL_PREFIX):  # test control: no weight, no faults, not in the access log
            self._serve_control(h, method, path, raw_body)
            return
        params: dict[str, str] = dict(parse_qsl(raw_query, keep_blank_values=True))
        ctype = h.headers.get("Content-Type", "")
        if raw_body and ("x-www-form-urlencoded" in ctype or not ctype):
            params.update(parse_qsl(raw_body, keep_blank_values=True))
        with self._lock:
            self.access_log.append((method, path, {k: v for k, v in params.items() if k != "signature"}))
            self._counts[(method, path)] += 1
            if self.access_log_limit is not None and len(self.access_log) > self.access_log_limit:
                del self.access_log[: len(self.access_log) - self.access_log_limit // 2]
        if self._stop.is_set():
            h.close_connection = True
            return
        fired = self.faults._take(method, path)
        delay = sum(f.delay or 0.0 for f in fired if f.kind == FaultKind.LATENCY)
        if delay > 0:
            self._stop.wait(delay)
        pre = next((f for f in fired if f.kind in FaultKind.PRE), None)
        if pre is not None:
            if pre.kind == FaultKind.TIMEOUT:
                self._hold(h, pre.delay)
                h.close_connection = True
                return
            status, body, headers, ctype_out = self._fault_answer(pre)
            self._send(h, status, body, headers, ctype_out)
            return
        vanish = [f for f in fired if f.kind == FaultKind.VANISH]
        status, payload, headers = self._dispatch(method, path, params, raw_query, raw_body, h.headers, vanish)
        body = json.dumps(payload, separators=(",", ":"))
        post = next((f for f in fired if f.kind in FaultKind.POST), None)
        if post is not None and post.kind == FaultKind.LOST:
            if post.mode == "drop":
                h.close_connection = True
                self._shutdown_sock(h.connection)
                return
            status = post.status or 503
            body = json.dumps({"code": -1007, "msg": "Timeout waiting for response from backend server. "
                                                      "Send status unknown; execution status unknown."})
        elif post is not None and post.kind == FaultKind.MALFORMED:
            status = post.status or status
            body = post.body if post.body is not None else body[: max(1, len(body) // 2)]
        self._send(h, status, body, headers)

    def _send(self, h: BaseHTTPRequestHandler, status: int, body: str | bytes, headers: dict | None = None,
              ctype: str = "application/json;charset=UTF-8") -> None:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            with self._lock:
                h.send_header("X-MBX-USED-WEIGHT-1M", str(self._used_weight))
            for k, v in (headers or {}).items():
                h.send_header(k, str(v))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _hold(self, h: BaseHTTPRequestHandler, seconds: float | None) -> None:
        """Keep the connection open without answering until the client leaves, time is up or we close."""
        deadline = time.monotonic() + (self.hold_max if seconds is None else seconds)
        conn = h.connection
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                readable, _, _ = select.select([conn], [], [], min(0.05, remaining))
                if readable and not conn.recv(1, socket.MSG_PEEK):
                    break  # client closed its end
                if readable:
                    self._stop.wait(0.05)
            except (OSError, ValueError):
                break

    def _fault_answer(self, f: Fault) -> tuple[int, str, dict, str]:
        js = "application/json;charset=UTF-8"
        if f.kind == FaultKind.HTTP_429:
            return 429, json.dumps({"code": -1003, "msg": f"Too much request weight used; current limit is "
                                    f"{self.weight_limit} request weight per 1 MINUTE. Please use WebSocket "
                                    "Streams for live updates to avoid polling the API."}), \
                {"Retry-After": f.retry_after if f.retry_after is not None else 1}, js
        if f.kind == FaultKind.HTTP_418:
            ra = f.retry_after if f.retry_after is not None else 120
            until = self.server_time_ms() + ra * 1000
            return 418, json.dumps({"code": -1003, "msg": f"Way too much request weight used; IP banned until "
                                    f"{until}. Please use WebSocket Streams for live updates to avoid bans."}), \
                {"Retry-After": ra}, js
        status = f.status or 503
        if f.body is not None:
            return status, f.body, {}, js if f.body.lstrip()[:1] in ("{", "[") else "text/html"
        from http import HTTPStatus
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Error"
        return status, f"<html><head><title>{status} {phrase}</title></head><body><center><h1>{status} " \
                       f"{phrase}</h1></center></body></html>", {}, "text/html"

    def _dispatch(self, method: str, path: str, params: dict, raw_query: str, raw_body: str, headers: Any,
                  vanish: list[Fault]) -> tuple[int, Any, dict]:
        route = self._routes.get((method, path))
        try:
            weight = 1
            if route is not None:
                weight = route.weight(params) if callable(route.weight) else route.weight
            self._rate_check(weight, method, path)
            if route is None:
                raise ApiError(404, -1, f"loopback: {method} {path} is not implemented")
            if route.signed:
                self._check_auth(params, raw_query, raw_body, headers, route.trading)
            if vanish and not (method == "POST" and path == "/api/v3/order"):
                if method == "DELETE":
                    raise ApiError(400, -2011, "Unknown order sent.")
                raise ApiError(400, -2013, "Order does not exist.")
            with self._lock:
                payload = route.fn(params, vanish)
                if route.mutates:
                    self._persist()  # durable before the client hears about it
            extra: dict = {}
            if method == "POST" and path == "/api/v3/order":
                extra = self._order_count_headers()
            return 200, payload, extra
        except ApiError as e:
            return e.status, {"code": e.code, "msg": e.msg}, e.headers

    def _roll_window(self, now: float) -> None:
        window = int(now // 60)
        if window != self._weight_window:
            self._weight_window = window
            self._used_weight = 0

    def _rate_check(self, weight: int, method: str, path: str) -> None:
        with self._lock:
            now = self._rate_clock()
            self._roll_window(now)
            if self._banned_until and now < self._banned_until:
                raise self._ban_error(now)
            if self._used_weight + weight > self.weight_limit:
                self.weight_refusals += 1
                self._consecutive_429 += 1
                if self._consecutive_429 > self.ban_after_429s:
                    self._banned_until = now + self.ban_seconds
                    raise self._ban_error(now)
                retry = max(1, math.ceil((self._weight_window + 1) * 60 - now))
                raise ApiError(429, -1003, f"Too much request weight used; current limit is {self.weight_limit} "
                               "request weight per 1 MINUTE. Please use WebSocket Streams for live updates to "
                               "avoid polling the API.", {"Retry-After": retry})
            self._used_weight += weight
            self.peak_weight = max(self.peak_weight, self._used_weight)
            self._consecutive_429 = 0

    def _ban_error(self, now: float) -> ApiError:
        until_ms = int(self._banned_until * 1000)
        return ApiError(418, -1003, f"Way too much request weight used; IP banned until {until_ms}. Please use "
                        "WebSocket Streams for live updates to avoid bans.",
                        {"Retry-After": max(1, math.ceil(self._banned_until - now))})

    def _order_count_headers(self) -> dict:
        with self._lock:
            now = time.time()
            q = self._order_times
            q.append(now)
            while q and now - q[0] >= 86400:
                q.popleft()
            last10 = 0
            for t in reversed(q):
                if now - t >= 10:
                    break
                last10 += 1
            return {"X-MBX-ORDER-COUNT-10S": last10, "X-MBX-ORDER-COUNT-1D": len(q)}

    def _check_auth(self, params: dict, raw_query: str, raw_body: str, headers: Any, trading: bool) -> None:
        key = headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(401, -2014, "API-key format invalid.")
        if key != self.api_key:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        if not params.get("timestamp"):
            raise _missing("timestamp")

        def strip(s: str) -> tuple[str, str | None]:
            kept, sig = [], None
            for p in s.split("&") if s else []:
                if p.startswith("signature="):
                    sig = unquote(p[len("signature="):])
                else:
                    kept.append(p)
            return "&".join(kept), sig

        q, sig_q = strip(raw_query)
        b, sig_b = strip(raw_body)
        sig = sig_q or sig_b
        if not sig:
            raise _missing("signature")
        expected = hmac.new(self.secret.encode(), (q + b).encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, sig.lower()):
            raise ApiError(401, -1022, "Signature for this request is not valid.")
        try:
            ts = int(params["timestamp"])
            recv = int(params.get("recvWindow") or 5000)
        except ValueError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'timestamp'; legal range is "
                                       "'^[0-9]{1,20}$'.") from None
        if recv > 60000:
            raise ApiError(400, -1131, "recvWindow must be less than 60000")
        now = self.server_time_ms()
        if ts >= now + 1000:
            raise ApiError(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - ts > recv:
            raise ApiError(400, -1021, "Timestamp for this request is outside of the recvWindow.")
        with self._lock:
            if not self.api_restrictions.get("enableReading", True) or \
                    (trading and not self.api_restrictions.get("enableSpotAndMarginTrading", True)):
                raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")

    # ---- routes ----------------------------------------------------------------------------------

    def _build_routes(self) -> dict[tuple[str, str], _Route]:
        def sym_weight(single: int, many: int) -> Callable[[dict], int]:
            return lambda p: single if p.get("symbol") else many

        def t24_weight(p: dict) -> int:
            if p.get("symbol"):
                return 2
            if p.get("symbols"):
                try:
                    n = len(json.loads(p["symbols"]))
                except (ValueError, TypeError):
                    n = 1
                return 2 if n <= 20 else 40 if n <= 100 else 80
            return 80

        def depth_weight(p: dict) -> int:
            try:
                n = int(p.get("limit") or 100)
            except ValueError:
                n = 100
            return 5 if n <= 100 else 25 if n <= 500 else 50 if n <= 1000 else 250

        v3 = "/api/v3/"
        r = {
            ("GET", v3 + "ping"): _Route(lambda p, v: {}),
            ("GET", v3 + "time"): _Route(lambda p, v: {"serverTime": self.server_time_ms()}),
            ("GET", v3 + "exchangeInfo"): _Route(self._r_exchange_info, weight=20),
            ("GET", v3 + "ticker/24hr"): _Route(self._r_ticker_24hr, weight=t24_weight),
            ("GET", v3 + "ticker/price"): _Route(self._r_ticker_price, weight=sym_weight(2, 4)),
            ("GET", v3 + "ticker/bookTicker"): _Route(self._r_book_ticker, weight=sym_weight(2, 4)),
            ("GET", v3 + "avgPrice"): _Route(self._r_avg_price, weight=2),
            ("GET", v3 + "depth"): _Route(self._r_depth, weight=depth_weight),
            ("GET", v3 + "klines"): _Route(self._r_klines, weight=2),
            ("GET", v3 + "account"): _Route(self._r_account, signed=True, weight=20),
            ("POST", v3 + "order"): _Route(self._r_order_post, signed=True, trading=True, weight=1,
                                           mutates=True),
            ("POST", v3 + "order/test"): _Route(lambda p, v: self._r_order_post(p, v, test=True), signed=True,
                                                trading=True, weight=1),
            ("GET", v3 + "order"): _Route(self._r_order_get, signed=True, weight=4),
            ("DELETE", v3 + "order"): _Route(self._r_order_delete, signed=True, trading=True, weight=1,
                                             mutates=True),
            ("GET", v3 + "openOrders"): _Route(self._r_open_orders, signed=True, weight=sym_weight(6, 80)),
            ("DELETE", v3 + "openOrders"): _Route(self._r_cancel_all, signed=True, trading=True, weight=1,
                                                  mutates=True),
            ("GET", v3 + "allOrders"): _Route(self._r_all_orders, signed=True, weight=20),
            ("GET", v3 + "myTrades"): _Route(self._r_my_trades, signed=True, weight=20),
            ("GET", "/sapi/v1/account/apiRestrictions"): _Route(lambda p, v: dict(self.api_restrictions),
                                                                signed=True, weight=1),
        }
        return r

    # parameter helpers

    def _spec_param(self, params: dict, required: bool = True) -> SymbolSpec | None:
        sid = params.get("symbol")
        if not sid:
            if required:
                raise _missing("symbol")
            return None
        spec = self._specs.get(sid.upper())
        if spec is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return spec

    def _specs_param(self, params: dict) -> tuple[list[SymbolSpec], bool]:
        """(specs, single) from ``symbol`` / ``symbols`` (JSON array) / nothing (= all)."""
        if params.get("symbol"):
            if params.get("symbols"):
                raise ApiError(400, -1101, "Parameter 'symbol' and 'symbols' cannot be sent together.")
            return [self._spec_param(params)], True  # type: ignore[list-item]
        if params.get("symbols"):
            try:
                ids = json.loads(params["symbols"])
                assert isinstance(ids, list)
            except (ValueError, AssertionError):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.") from None
            out = []
            for i in ids:
                spec = self._specs.get(str(i).upper())
                if spec is None:
                    raise ApiError(400, -1121, "Invalid symbol.")
                out.append(spec)
            return out, False
        return list(self._specs.values()), False

    @staticmethod
    def _dec_param(params: dict, name: str) -> Decimal | None:
        v = params.get(name)
        if v is None or v == "":
            return None
        try:
            d = Decimal(v)
            if not d.is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                       "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.") from None
        return d

    @staticmethod
    def _int_param(params: dict, name: str, default: int | None = None) -> int | None:
        v = params.get(name)
        if v is None or v == "":
            return default
        try:
            return int(v)
        except ValueError:
            raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                       "'^[0-9]{1,20}$'.") from None

    # market data

    def _r_exchange_info(self, params: dict, vanish: list) -> dict:
        if params.get("symbol") or params.get("symbols"):
            specs, _ = self._specs_param(params)
        else:
            specs = list(self._specs.values())
        return {
            "timezone": "UTC",
            "serverTime": self.server_time_ms(),
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": self.weight_limit},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [s.exchange_info() for s in specs],
        }

    def _price_at(self, sym: str, ms: int) -> Decimal:
        ts, px = self._hist_ts[sym], self._hist_px[sym]
        i = bisect.bisect_right(ts, ms) - 1
        return px[max(i, 0)]

    def _ohlc(self, sym: str, start: int, end: int) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        ts, px = self._hist_ts[sym], self._hist_px[sym]
        lo, hi = bisect.bisect_left(ts, start), bisect.bisect_right(ts, end)
        inside = px[lo:hi]
        prev = px[lo - 1] if lo > 0 else None
        o = prev if prev is not None else (inside[0] if inside else px[0])
        c = inside[-1] if inside else o
        return o, max([o, *inside]), min([o, *inside]), c

    def _volume(self, sym: str, start: int, end: int) -> tuple[Decimal, Decimal, Decimal, Decimal, list[dict]]:
        ts = self._trade_ts[sym]
        rows = self._trade_rows[sym][bisect.bisect_left(ts, start): bisect.bisect_right(ts, end)]
        vol = sum((Decimal(t["qty"]) for t in rows), ZERO)
        qvol = sum((Decimal(t["quoteQty"]) for t in rows), ZERO)
        buy = [t for t in rows if t["isBuyer"]]
        bvol = sum((Decimal(t["qty"]) for t in buy), ZERO)
        bqvol = sum((Decimal(t["quoteQty"]) for t in buy), ZERO)
        return vol, qvol, bvol, bqvol, rows

    def _ticker_24hr(self, spec: SymbolSpec) -> dict:
        sym = spec.symbol
        now = self.server_time_ms()
        start = now - 86_400_000
        o, h, l, c = self._ohlc(sym, start, now)
        vol, qvol, _, _, rows = self._volume(sym, start, now)
        # other traders: a market's 24 h volume is not only our fills (liquidity gating reads it)
        other_q = _dec(self.market_quote_volume_24h)
        if other_q > 0 and c > 0:
            vol, qvol = vol + other_q / c, qvol + other_q
        change = c - o
        pct = (change / o * 100) if o else ZERO
        return {
            "symbol": sym, "priceChange": _fmt(change), "priceChangePercent": _fmt(pct, 3),
            "weightedAvgPrice": _fmt(qvol / vol if vol else c), "prevClosePrice": _fmt(o),
            "lastPrice": _fmt(c), "lastQty": rows[-1]["qty"] if rows else "0.00000000",
            "bidPrice": _fmt(c - spec.tick_size), "bidQty": _fmt(self.book_qty),
            "askPrice": _fmt(c + spec.tick_size), "askQty": _fmt(self.book_qty),
            "openPrice": _fmt(o), "highPrice": _fmt(h), "lowPrice": _fmt(l), "volume": _fmt(vol),
            "quoteVolume": _fmt(qvol), "openTime": start, "closeTime": now,
            "firstId": rows[0]["id"] if rows else -1, "lastId": rows[-1]["id"] if rows else -1,
            "count": len(rows),
        }

    def _r_ticker_24hr(self, params: dict, vanish: list) -> Any:
        specs, single = self._specs_param(params)
        out = [self._ticker_24hr(s) for s in specs]
        return out[0] if single else out

    def _r_ticker_price(self, params: dict, vanish: list) -> Any:
        specs, single = self._specs_param(params)
        out = [{"symbol": s.symbol, "price": _fmt(self._prices[s.symbol])} for s in specs]
        return out[0] if single else out

    def _r_book_ticker(self, params: dict, vanish: list) -> Any:
        specs, single = self._specs_param(params)
        out = []
        for s in specs:
            p = self._prices[s.symbol]
            out.append({"symbol": s.symbol, "bidPrice": _fmt(p - s.tick_size), "bidQty": _fmt(self.book_qty),
                        "askPrice": _fmt(p + s.tick_size), "askQty": _fmt(self.book_qty)})
        return out[0] if single else out

    def _r_avg_price(self, params: dict, vanish: list) -> dict:
        spec = self._spec_param(params)
        assert spec is not None
        now = self.server_time_ms()
        return {"mins": 5, "price": _fmt(self._prices[spec.symbol]), "closeTime": now}

    def _r_depth(self, params: dict, vanish: list) -> dict:
        spec = self._spec_param(params)
        assert spec is not None
        limit = self._int_param(params, "limit", 100) or 100
        if limit < 1:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'limit'.")
        limit = min(limit, 5000)
        last = self._prices[spec.symbol]
        bids: dict[Decimal, Decimal] = {}
        asks: dict[Decimal, Decimal] = {}
        for k in range(1, min(limit, self.book_levels) + 1):
            b = last - spec.tick_size * k
            if b > 0:
                bids[b] = self.book_qty
            asks[last + spec.tick_size * k] = self.book_qty
        for o in self._open[spec.symbol].values():
            if o.hidden == 0:
                side = bids if o.side == "BUY" else asks
                side[o.price] = side.get(o.price, ZERO) + o.remaining
        return {
            "lastUpdateId": self._book_id,
            "bids": [[_fmt(p), _fmt(q)] for p, q in sorted(bids.items(), reverse=True)[:limit]],
            "asks": [[_fmt(p), _fmt(q)] for p, q in sorted(asks.items())[:limit]],
        }

    def _r_klines(self, params: dict, vanish: list) -> list:
        spec = self._spec_param(params)
        assert spec is not None
        interval = params.get("interval")
        if not interval:
            raise _missing("interval")
        if interval not in KLINE_SECONDS:
            raise ApiError(400, -1120, "Invalid interval.")
        iv = KLINE_SECONDS[interval] * 1000
        limit = max(1, min(self._int_param(params, "limit", 500) or 500, 1000))
        now = self.server_time_ms()
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        last_open = (min(now, end) if end is not None else now) // iv * iv
        if start is not None:
            first_open = -(-start // iv) * iv
            opens = list(range(first_open, last_open + 1, iv))[:limit]
        else:
            opens = [last_open - iv * (limit - 1 - i) for i in range(limit)]
            opens = [t for t in opens if t >= 0]
        out = []
        for t in opens:
            close_t = t + iv - 1
            o, h, l, c = self._ohlc(spec.symbol, t, close_t)
            vol, qvol, bvol, bqvol, rows = self._volume(spec.symbol, t, close_t)
            out.append([t, _fmt(o), _fmt(h), _fmt(l), _fmt(c), _fmt(vol), close_t, _fmt(qvol), len(rows),
                        _fmt(bvol), _fmt(bqvol), "0"])
        return out

    # account / trading

    def _r_account(self, params: dict, vanish: list) -> dict:
        omit_zero = str(params.get("omitZeroBalances", "")).lower() == "true"
        bal = [{"asset": a, "free": _fmt(f), "locked": _fmt(l)} for a, (f, l) in self._balances.items()
               if not (omit_zero and f == 0 and l == 0)]
        bps = int(self.fee_rate * 10000)
        rate = _fmt(self.fee_rate)
        return {
            "makerCommission": bps, "takerCommission": bps, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": rate, "taker": rate, "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": bool(self.api_restrictions.get("enableSpotAndMarginTrading", True)),
            "canWithdraw": bool(self.api_restrictions.get("enableWithdrawals", False)), "canDeposit": True,
            "brokered": False, "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": self.server_time_ms(), "accountType": "SPOT", "balances": bal,
            "permissions": ["SPOT"], "uid": 354937868,
        }

    def _gen_client_id(self) -> str:
        return "".join(self._rng.choice(string.ascii_letters + string.digits) for _ in range(22))

    def _fill_qty(self, o: _Order) -> Decimal:
        rem = o.remaining
        f = self.fill_fraction
        if f >= 1.0:
            return rem
        if f <= 0.0:
            return ZERO
        step = self._specs[o.symbol].step_size
        q = _floor_step(o.orig_qty * _dec(f), step)
        if q <= 0:
            q = step if step > 0 else rem
        return min(q, rem)

    def _lock_for(self, o: _Order) -> None:
        spec = self._specs[o.symbol]
        if o.side == "BUY":
            notional = o.orig_qty * o.price
            amount, asset = notional + _ceil8(notional * self.fee_rate), spec.quote
        else:
            amount, asset = o.orig_qty, spec.base
        b = self._balances.setdefault(asset, [ZERO, ZERO])
        b[0] -= amount
        b[1] += amount
        o.locked = amount

    def _index(self, o: _Order) -> None:
        """Keep the per-symbol open-order index in step with ``o.status``."""
        if o.is_open:
            self._open[o.symbol][o.order_id] = o
        else:
            self._open[o.symbol].pop(o.order_id, None)

    def _release(self, o: _Order) -> None:
        if o.locked > 0:
            spec = self._specs[o.symbol]
            b = self._balances[spec.quote if o.side == "BUY" else spec.base]
            b[0] += o.locked
            b[1] -= o.locked
            o.locked = ZERO

    def _fill(self, o: _Order, qty: Decimal, price: Decimal, maker: bool) -> dict:
        spec = self._specs[o.symbol]
        base = self._balances.setdefault(spec.base, [ZERO, ZERO])
        quote = self._balances.setdefault(spec.quote, [ZERO, ZERO])
        notional = qty * price
        fee = _ceil8(notional * self.fee_rate)
        if o.side == "BUY":
            if o.locked > 0:
                share = qty * o.price
                r = min(o.locked, share + _ceil8(share * self.fee_rate))
                o.locked -= r
                quote[1] -= r
                quote[0] += r
            quote[0] -= notional + fee
            base[0] += qty
        else:
            if o.locked > 0:
                r = min(o.locked, qty)
                o.locked -= r
                base[1] -= r
                base[0] += r
            base[0] -= qty
            quote[0] += notional - fee
        now = self.server_time_ms()
        o.executed_qty += qty
        o.cum_quote += notional
        o.update_time = now
        trade = {
            "symbol": o.symbol, "id": self._next_trade_id, "orderId": o.order_id, "orderListId": -1,
            "price": _fmt(price), "qty": _fmt(qty), "quoteQty": _fmt(notional), "commission": _fmt(fee),
            "commissionAsset": spec.quote, "time": now, "isBuyer": o.side == "BUY", "isMaker": maker,
            "isBestMatch": True,
        }
        self._next_trade_id += 1
        self._trades.append(trade)
        self._trade_ts[o.symbol].append(now)
        self._trade_rows[o.symbol].append(trade)
        self._book_id += 1
        return trade

    def _check_lot(self, spec: SymbolSpec, qty: Decimal, market: bool) -> None:
        if qty < spec.min_qty or qty > spec.max_qty or not _is_multiple(qty, spec.min_qty, spec.step_size):
            raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
        if market and qty > spec.market_max_qty:
            raise ApiError(400, -1013, "Filter failure: MARKET_LOT_SIZE")

    def _r_order_post(self, params: dict, vanish: list, test: bool = False) -> dict:
        spec = self._spec_param(params)
        assert spec is not None
        side = (params.get("side") or "").upper()
        if not side:
            raise _missing("side")
        if side not in ("BUY", "SELL"):
            raise ApiError(400, -1117, "Invalid side.")
        otype = (params.get("type") or "").upper()
        if not otype:
            raise _missing("type")
        if otype not in ("MARKET", "LIMIT", "LIMIT_MAKER", "STOP_LOSS_LIMIT"):
            if otype in ("STOP_LOSS", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"):
                raise ApiError(400, -2010, f"loopback: order type {otype} is not supported")
            raise ApiError(400, -1116, "Invalid orderType.")
        cid = params.get("newClientOrderId")
        if cid is not None:
            if not _CLIENT_ID_RE.match(cid):
                raise ApiError(400, -1100, "Illegal characters found in parameter 'newClientOrderId'; legal "
                                           "range is '^[\\.A-Z\\:/a-z0-9_-]{1,36}$'.")
        else:
            cid = self._gen_client_id()
        if not test and (spec.symbol, cid) in self._by_client:
            raise ApiError(400, -2010, "Duplicate order sent.")
        resp_type = (params.get("newOrderRespType") or "FULL").upper()
        qty = self._dec_param(params, "quantity")
        qoq = self._dec_param(params, "quoteOrderQty")
        price = self._dec_param(params, "price")
        last = self._prices[spec.symbol]
        if spec.status != "TRADING":
            raise ApiError(400, -1013, "Market is closed.")
        if otype == "MARKET":
            if price is not None:
                raise ApiError(400, -1106, "Parameter 'price' sent when not required.")
            if params.get("timeInForce"):
                raise ApiError(400, -1106, "Parameter 'timeInForce' sent when not required.")
            if qty is None and qoq is None:
                raise ApiError(400, -1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were "
                                           "empty/null!")
            if qty is not None and qoq is not None:
                raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
            if qoq is not None:
                if qoq < spec.min_notional:
                    raise ApiError(400, -1013, "Filter failure: NOTIONAL")
                qty = _floor_step(qoq / last, spec.step_size)
                if qty <= 0:
                    raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
                if qty > spec.market_max_qty:
                    raise ApiError(400, -1013, "Filter failure: MARKET_LOT_SIZE")
            else:
                assert qty is not None
                self._check_lot(spec, qty, market=True)
                if qty * last < spec.min_notional:
                    raise ApiError(400, -1013, "Filter failure: NOTIONAL")
            tif = "GTC"
            ref_price = last
        else:
            if qty is None:
                raise _missing("quantity")
            if price is None:
                raise _missing("price")
            if qoq is not None:
                raise ApiError(400, -1106, "Parameter 'quoteOrderQty' sent when not required.")
            tif = (params.get("timeInForce") or "").upper()
            if otype == "LIMIT_MAKER":
                if tif:
                    raise ApiError(400, -1106, "Parameter 'timeInForce' sent when not required.")
                tif = "GTC"
            elif not tif:
                raise _missing("timeInForce")
            elif tif not in ("GTC", "IOC", "FOK"):
                raise ApiError(400, -1115, "Invalid timeInForce.")
            if price < spec.min_price or price > spec.max_price or \
                    not _is_multiple(price, spec.min_price, spec.tick_size):
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
            self._check_lot(spec, qty, market=False)
            if qty * price < spec.min_notional or qty * price > spec.max_notional:
                raise ApiError(400, -1013, "Filter failure: NOTIONAL")
            crosses = (side == "BUY" and last <= price) or (side == "SELL" and last >= price)
            if otype == "LIMIT_MAKER" and crosses:
                raise ApiError(400, -2010, "Order would immediately match and take.")
            ref_price = max(price, last) if side == "BUY" else price
        stop = self._dec_param(params, "stopPrice")
        if otype == "STOP_LOSS_LIMIT":
            if stop is None:
                raise _missing("stopPrice")
            if stop < spec.min_price or stop > spec.max_price or not _is_multiple(stop, spec.min_price, spec.tick_size):
                raise ApiError(400, -1013, "Filter failure: PRICE_FILTER")
            if (side == "SELL" and stop >= last) or (side == "BUY" and stop <= last):
                raise ApiError(400, -2010, "Stop price would trigger immediately.")
        elif stop is not None:
            raise ApiError(400, -1106, "Parameter 'stopPrice' sent when not required.")
        # balance check
        if side == "BUY":
            need = qty * ref_price
            need += _ceil8(need * self.fee_rate)
            if self._balances.get(spec.quote, [ZERO, ZERO])[0] < need:
                raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        elif self._balances.get(spec.base, [ZERO, ZERO])[0] < qty:
            raise ApiError(400, -2010, "Account has insufficient balance for requested action.")
        if test:
            return {}
        now = self.server_time_ms()
        o = _Order(self._next_order_id, cid, spec.symbol, side, otype, tif, price or ZERO, qty, now,
                   orig_quote_qty=qoq or ZERO, update_time=now, stop_price=stop or ZERO,
                   triggered=otype != "STOP_LOSS_LIMIT")
        self._next_order_id += 1
        self._orders[o.order_id] = o
        self._by_client[(spec.symbol, cid)] = o.order_id
        fills: list[dict] = []
        if otype == "MARKET":
            q = self._fill_qty(o)
            if q > 0:
                fills.append(self._fill(o, q, last, maker=False))
            o.status = "FILLED" if o.remaining <= 0 else "EXPIRED"
        else:
            self._lock_for(o)
            crosses = o.triggered and ((side == "BUY" and last <= o.price) or (side == "SELL" and last >= o.price))
            if crosses and not (tif == "FOK" and self.fill_fraction < 1.0):
                q = self._fill_qty(o)
                if q > 0:
                    fills.append(self._fill(o, q, last, maker=False))
            if o.remaining <= 0:
                o.status = "FILLED"
            elif tif in ("IOC", "FOK"):
                o.status = "EXPIRED"
            else:
                o.status = "PARTIALLY_FILLED" if o.executed_qty > 0 else "NEW"
            if not o.is_open:
                self._release(o)
        self._index(o)
        for f in vanish:
            o.hidden = max(o.hidden, int(f.lookups))
        self._book_id += 1
        if resp_type == "ACK":
            return {"symbol": o.symbol, "orderId": o.order_id, "orderListId": -1, "clientOrderId": o.client_order_id,
                    "transactTime": now}
        out = o.result(now)
        if resp_type == "FULL":
            out["fills"] = [{"price": t["price"], "qty": t["qty"], "commission": t["commission"],
                             "commissionAsset": t["commissionAsset"], "tradeId": t["id"]} for t in fills]
        return out

    def _find(self, params: dict, cancel: bool) -> _Order:
        spec = self._spec_param(params)
        assert spec is not None
        oid = self._int_param(params, "orderId")
        cid = params.get("origClientOrderId")
        if oid is None and not cid:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were "
                                       "empty/null!")
        if oid is not None:
            o = self._orders.get(oid)
            if o is not None and o.symbol != spec.symbol:
                o = None
        else:
            i = self._by_client.get((spec.symbol, cid))  # type: ignore[arg-type]
            o = self._orders.get(i) if i is not None else None
        err = ApiError(400, -2011, "Unknown order sent.") if cancel else ApiError(400, -2013, "Order does not exist.")
        if o is None:
            raise err
        if o.hidden > 0:
            o.hidden -= 1
            raise err
        return o

    def _r_order_get(self, params: dict, vanish: list) -> dict:
        return self._find(params, cancel=False).view()

    def _cancel(self, o: _Order, params: dict) -> dict:
        o.status = "CANCELED"
        o.update_time = self.server_time_ms()
        self._release(o)
        self._index(o)
        self._book_id += 1
        return o.cancel_view(params.get("newClientOrderId") or self._gen_client_id(), o.update_time)

    def _r_order_delete(self, params: dict, vanish: list) -> dict:
        o = self._find(params, cancel=True)
        if not o.is_open:
            raise ApiError(400, -2011, "Unknown order sent.")
        return self._cancel(o, params)

    def _r_cancel_all(self, params: dict, vanish: list) -> list:
        spec = self._spec_param(params)
        assert spec is not None
        open_orders = sorted(self._open[spec.symbol].values(), key=lambda o: o.order_id)
        if not open_orders:
            raise ApiError(400, -2011, "Unknown order sent.")
        return [self._cancel(o, {}) for o in open_orders]

    def _r_open_orders(self, params: dict, vanish: list) -> list:
        spec = self._spec_param(params, required=False)
        pool = [o for s in ([spec.symbol] if spec else list(self._open)) for o in self._open[s].values()]
        return [o.view() for o in sorted(pool, key=lambda o: o.order_id) if o.hidden == 0]

    def _time_filter(self, items: list, key: Callable[[Any], int], params: dict) -> list:
        start = self._int_param(params, "startTime")
        end = self._int_param(params, "endTime")
        if start is not None:
            items = [x for x in items if key(x) >= start]
        if end is not None:
            items = [x for x in items if key(x) <= end]
        return items

    def _r_all_orders(self, params: dict, vanish: list) -> list:
        spec = self._spec_param(params)
        assert spec is not None
        limit = max(1, min(self._int_param(params, "limit", 500) or 500, 1000))
        items = [o for o in sorted(self._orders.values(), key=lambda o: o.order_id)
                 if o.symbol == spec.symbol and o.hidden == 0]
        items = self._time_filter(items, lambda o: o.time, params)
        oid = self._int_param(params, "orderId")
        if oid is not None:
            items = [o for o in items if o.order_id >= oid][:limit]
        else:
            items = items[-limit:]
        return [o.view() for o in items]

    def _r_my_trades(self, params: dict, vanish: list) -> list:
        spec = self._spec_param(params)
        assert spec is not None
        limit = max(1, min(self._int_param(params, "limit", 500) or 500, 1000))
        items = list(self._trade_rows[spec.symbol])
        oid = self._int_param(params, "orderId")
        if oid is not None:
            items = [t for t in items if t["orderId"] == oid]
        items = self._time_filter(items, lambda t: t["time"], params)
        from_id = self._int_param(params, "fromId")
        if from_id is not None:
            items = [t for t in items if t["id"] >= from_id][:limit]
        elif "startTime" in params:  # like Binance: from startTime on, oldest first, at most `limit`
            items = items[:limit]
        else:                        # no window: the most recent `limit`
            items = items[-limit:]
        return [dict(t) for t in items]


# --------------------------------------------------------------------------------------------------
# ccxt client
# --------------------------------------------------------------------------------------------------


def make_ccxt_client(server: Any, api_key: str | None = None, secret: str | None = None, *,
                     timeout_ms: int = 3000, config: dict | None = None):
    """A real ``ccxt.binance`` pointed at ``server`` (spot only, no currency/margin calls at load_markets).

    ``server`` is anything with ``base_url``, ``api_key`` and ``secret``: a :class:`LoopbackBinance`, a
    :class:`RemoteLoopback` or ``tests/live_support.Remote``. Every Binance REST base in ``urls['api']``
    is rewritten to ``server.base_url`` + the same path by the library's
    :func:`qts.market.exchange_url.apply_exchange_url` (which also keeps ccxt's spot error-code mapping
    for the rewritten URLs and stops proxy lookups for 127.0.0.1), so an endpoint the loopback does not
    implement answers 404 (``ExchangeError``) instead of reaching the internet. ``api_key`` /
    ``secret`` default to the server's.
    """
    import ccxt  # lazy: the server itself is standard library only

    try:
        from qts.market.exchange_url import apply_exchange_url
    except ImportError:  # run from a checkout without the library installed
        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
        from qts.market.exchange_url import apply_exchange_url

    ex = ccxt.binance({
        "apiKey": server.api_key if api_key is None else api_key,
        "secret": server.secret if secret is None else secret,
        "enableRateLimit": False,
        "timeout": timeout_ms,
        **(config or {}),
    })
    apply_exchange_url(ex, server.base_url)
    ex.options["fetchMarkets"] = {"types": ["spot"], "loadAllOptions": False}
    ex.options["fetchCurrencies"] = False
    ex.options["fetchMargins"] = False
    ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False
    ex.options["adjustForTimeDifference"] = False
    ex.has["fetchCurrencies"] = False
    ex.session.trust_env = False  # never route the loopback through an environment proxy
    return ex


# --------------------------------------------------------------------------------------------------
# a loopback exchange in another process
# --------------------------------------------------------------------------------------------------


class RemoteLoopback:
    """Drives a standalone loopback exchange (another process) through its ``/_loopback/`` control
    endpoints; mirrors the in-process methods tests use. ``make_ccxt_client(remote)`` works on it.
    Standard library only (urllib, never through a proxy)."""

    def __init__(self, url: str, api_key: str = "loopback-api-key", secret: str = "loopback-secret", *,
                 timeout: float = 10.0) -> None:
        self.base_url = url.rstrip("/")
        self.api_key, self.secret, self.timeout = api_key, secret, timeout
        self.pid: int | None = None
        self.state_path: str | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"RemoteLoopback({self.base_url!r})"

    def _call(self, method: str, name: str, body: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode("utf-8")
        req = urllib.request.Request(self.base_url + CONTROL_PREFIX + name, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read().decode("utf-8")).get("error")
            except (ValueError, AttributeError):
                msg = None
            if e.code == 400:
                raise ValueError(f"loopback {method} {CONTROL_PREFIX}{name}: {msg}") from None
            raise RuntimeError(f"loopback {method} {CONTROL_PREFIX}{name}: HTTP {e.code} {msg or ''}") from None

    def set_price(self, symbol: str, price: Any) -> list[dict]:
        return self._call("POST", "price", {"symbol": symbol, "price": str(price)})["fills"]

    def set_balance(self, asset: str, free: Any, locked: Any = 0) -> None:
        self._call("POST", "balance", {"asset": asset, "free": str(free), "locked": str(locked)})

    def set_api_restrictions(self, **fields: Any) -> None:
        self._call("POST", "restrictions", fields)

    def set_fill_fraction(self, fraction: float) -> None:
        self._call("POST", "fill_fraction", {"fraction": float(fraction)})

    def add_fault(self, kind: str, path: str | None = None, method: str | None = None, times: int | None = 1,
                  **kw: Any) -> dict:
        """Like ``server.faults.add`` (``skip``, ``delay``, ``status``, ``body``, ``retry_after``,
        ``lookups``, ``mode``)."""
        return self._call("POST", "fault", {"kind": kind, "path": path, "method": method, "times": times, **kw})

    def clear_faults(self) -> None:
        self._call("POST", "clear_faults", {})

    def state(self) -> dict:
        return self._call("GET", "state")

    def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        return {a: (Decimal(b["free"]), Decimal(b["locked"])) for a, b in self.state()["balances"].items()}

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        return self.balances().get(asset.upper(), (ZERO, ZERO))

    def price(self, symbol: str) -> Decimal:
        return Decimal(self.state()["prices"][_norm_symbol(symbol)])

    def orders(self, symbol: str | None = None) -> list[dict]:
        sym = _norm_symbol(symbol) if symbol else None
        return [o for o in self.state()["orders"] if sym is None or o["symbol"] == sym]

    def trades(self, symbol: str | None = None) -> list[dict]:
        sym = _norm_symbol(symbol) if symbol else None
        return [t for t in self.state()["trades"] if sym is None or t["symbol"] == sym]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        p = _norm_path(path)
        return sum(n for m, pa, n in self.state()["requests"]
                   if (method is None or m == method.upper()) and (p is None or pa == p))

    def backfill(self, symbol: str, bars: int = 200, step_ms: int = 300_000, seed: int = 1,
                 vol: float = 0.004) -> None:
        self._call("POST", "backfill", {"symbol": symbol, "bars": bars, "step_ms": step_ms, "seed": seed,
                                        "vol": vol})

    def shutdown(self) -> None:
        """Ask the process to stop (it answers first); a connection already gone is fine."""
        try:
            self._call("POST", "shutdown", {})
        except (OSError, RuntimeError):
            pass


_STANDALONE_FLAGS = ("port", "host", "api_key", "secret", "symbols", "balances", "idle_timeout",
                     "max_lifetime", "weight_limit", "fee_rate", "seed")


def start_standalone(tmpdir_or_state_path: str | os.PathLike | None = None, *, python: str | None = None,
                     env: dict | None = None, startup_timeout: float = 30.0,
                     **options: Any) -> tuple[subprocess.Popen, RemoteLoopback]:
    """Start ``python loopback_exchange.py --port 0 ...`` and wait for its JSON line.

    ``tmpdir_or_state_path``: a directory (the state goes to ``DIR/loopback_state.json``), a file path
    (the state file, created or restored) or None (no state file). ``options``: ``port`` (default 0),
    ``host``, ``api_key``, ``secret``, ``symbols`` (list or "A/B,C/D"), ``balances`` (dict or
    "USDT=1,BTC=0"), ``idle_timeout``, ``max_lifetime``, ``weight_limit``, ``fee_rate``, ``seed``.
    Returns the process and a :class:`RemoteLoopback` for it; stop it with :func:`stop_standalone`."""
    unknown = sorted(set(options) - set(_STANDALONE_FLAGS))
    if unknown:
        raise TypeError(f"unknown options {unknown}; known: {list(_STANDALONE_FLAGS)}")
    options.setdefault("port", 0)
    state: Path | None = None
    if tmpdir_or_state_path is not None:
        state = Path(tmpdir_or_state_path)
        if state.is_dir():
            state = state / "loopback_state.json"
    cmd = [python or sys.executable, str(Path(__file__).resolve())]
    for k in _STANDALONE_FLAGS:
        v = options.get(k)
        if v is None:
            continue
        if k == "symbols" and not isinstance(v, str):
            v = ",".join(v)
        elif k == "balances" and isinstance(v, dict):
            v = ",".join(f"{a}={b}" for a, b in v.items())
        cmd += ["--" + k.replace("_", "-"), str(v)]
    if state is not None:
        cmd += ["--state", str(state)]
    err = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True,
                            env=env)
    proc._loopback_stderr = err  # type: ignore[attr-defined]
    deadline = time.monotonic() + startup_timeout
    line = ""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        readable, _, _ = select.select([proc.stdout], [], [], min(remaining, 0.2))
        if readable:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            break
        if proc.poll() is not None:
            break
    try:
        info = json.loads(line)
        url = info["url"]
    except (ValueError, KeyError, TypeError):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        err.seek(0)
        detail = err.read().decode("utf-8", "replace").strip()
        stop_standalone(proc)
        raise RuntimeError(f"loopback exchange did not start (exit {proc.returncode}): "
                           f"{detail or line.strip() or 'no output'}") from None
    remote = RemoteLoopback(url, info.get("api_key") or options.get("api_key") or "loopback-api-key",
                            options.get("secret") or "loopback-secret")
    remote.pid, remote.state_path = info.get("pid"), info.get("state")
    return proc, remote


def stop_standalone(proc: subprocess.Popen, timeout: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout``; closes the pipes. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
        except ProcessLookupError:  # pragma: no cover - gone meanwhile
            pass
    for f in (proc.stdout, getattr(proc, "_loopback_stderr", None)):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass
    return proc.returncode


# --------------------------------------------------------------------------------------------------
# standalone process
# --------------------------------------------------------------------------------------------------


def _parse_symbols(text: str) -> list[SymbolSpec]:
    """"BTC/USDT,ETH/USDT" (known pairs keep their default filters; others get SymbolSpec defaults);
    "XYZ/USDT=1.25" sets the initial price."""
    out: list[SymbolSpec] = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        name, _, price = item.partition("=")
        base, sep, quote = name.strip().upper().partition("/")
        if not sep or not base or not quote or not base.isalnum() or not quote.isalnum():
            raise ValueError(f"bad symbol {item!r}: expected BASE/QUOTE, e.g. BTC/USDT")
        known = DEFAULT_SYMBOLS.get(base + quote)
        fields = {f.name: getattr(known, f.name) for f in dataclasses.fields(SymbolSpec)} if known else \
            {"base": base, "quote": quote}
        if price.strip():
            fields["price"] = price.strip()
        spec = SymbolSpec(**fields)
        if spec.price <= 0:
            raise ValueError(f"bad price in {item!r}")
        out.append(spec)
    if not out:
        raise ValueError("--symbols names no symbol")
    return out


def _parse_balances(text: str) -> dict[str, Decimal]:
    out: dict[str, Decimal] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        asset, sep, amount = item.partition("=")
        try:
            value = Decimal(amount.strip())
            if not sep or not asset.strip().isalnum() or not value.is_finite() or value < 0:
                raise InvalidOperation
        except InvalidOperation:
            raise ValueError(f"bad balance {item!r}: expected ASSET=AMOUNT, e.g. USDT=10000") from None
        out[asset.strip().upper()] = value
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the loopback exchange in the foreground (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="loopback_exchange.py",
                                 description="A loopback Binance spot REST exchange (test equipment).")
    ap.add_argument("--port", type=int, default=0, help="TCP port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1", help="a loopback address (default 127.0.0.1)")
    ap.add_argument("--state", help="state file: restored at start when it exists, saved after every change")
    ap.add_argument("--api-key", default="loopback-api-key")
    ap.add_argument("--secret", default="loopback-secret")
    ap.add_argument("--symbols", help="BTC/USDT,ETH/USDT (default: BTC, ETH and SOL against USDT)")
    ap.add_argument("--balances", help="USDT=10000,BTC=0 (default: USDT=10000,BTC=0.5,ETH=5,SOL=50)")
    ap.add_argument("--idle-timeout", type=float, default=120.0,
                    help="stop after this many seconds without a request (default 120)")
    ap.add_argument("--max-lifetime", type=float, default=3600.0,
                    help="stop after this many seconds in any case (default 3600)")
    ap.add_argument("--weight-limit", type=int, default=6000, help="request weight per minute (default 6000)")
    ap.add_argument("--fee-rate", default="0.001", help="maker and taker fee rate (default 0.001)")
    ap.add_argument("--seed", type=int, help="seed for generated client order ids")
    args = ap.parse_args(argv)

    def fail(msg: str) -> int:
        print(f"loopback_exchange: {msg}", file=sys.stderr, flush=True)
        return 2

    if not 0 <= args.port <= 65535:
        return fail(f"bad port {args.port}")
    if args.idle_timeout <= 0 or args.max_lifetime <= 0:
        return fail("--idle-timeout and --max-lifetime must be > 0 (the process must stop by itself)")
    try:
        loopback_bind_address(args.host)
        symbols = _parse_symbols(args.symbols) if args.symbols else None
        balances = _parse_balances(args.balances) if args.balances is not None else None
        srv = LoopbackBinance(api_key=args.api_key, secret=args.secret, symbols=symbols, balances=balances,
                              fee_rate=args.fee_rate, weight_limit=args.weight_limit, seed=args.seed,
                              idle_timeout=args.idle_timeout, max_lifetime=args.max_lifetime,
                              host=args.host, port=args.port, state_path=args.state, autostart=False)
    except (ValueError, OSError, InvalidOperation) as e:
        return fail(str(e))

    def on_signal(signum: int, frame: Any) -> None:
        srv.close_reason = srv.close_reason or signal.Signals(signum).name
        srv._stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    srv.start()
    print(json.dumps({"url": srv.base_url, "port": srv.port, "pid": os.getpid(), "api_key": srv.api_key,
                      "state": str(srv.state_path) if srv.state_path else None, "host": srv.host,
                      "restored": srv.restored}), flush=True)
    while not srv.wait_closed(0.5):
        pass
    srv.close()
    if srv.state_path is not None:
        try:
            srv.save_state()
        except OSError as e:
            print(f"loopback_exchange: could not save the state at exit: {e}", file=sys.stderr, flush=True)
    print(f"loopback_exchange: stopped ({srv.close_reason})", file=sys.stderr, flush=True)
    return 1 if srv.errors else 0


if __name__ == "__main__":
    sys.exit(main())
