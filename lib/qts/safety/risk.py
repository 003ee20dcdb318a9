"""Risk manager for long-only spot trading (no leverage): a pure function of (profile, intent, snapshot).

``RiskManager(profile).assess(intent, snapshot) -> RiskDecision``. Nothing is read from disk or the
network and nothing is remembered between calls. The manager never ENLARGES an order: it passes it,
SHRINKS it (each shrink is one line in ``adjustments``, tagged with its reason code) or refuses it with
a stable code from :class:`RiskReason`. Any exception inside is a refusal (``RISK_ERROR``).

Sells (exits). A sell of at most the held amount reduces exposure and is ALWAYS allowed, unchanged,
by every layer here, the order-rate throttle included: a throttle, a halt or a lock must never trap
the trader in a losing position (the kill switch's flattening depends on it). A sell of more than
the held amount would open a short: ``RISK_SHORT_NOT_ALLOWED``. A buy is always an entry, even when
flagged ``reduce_only`` (nothing a long-only spot buy does reduces exposure; the gate's
``check_reduce_only`` refuses such a buy before this layer, with ``REDUCE_ONLY``).

Entries (buys) go through these layers in order; the first refusal wins:

1. snapshot and order sanity (``RISK_BAD_SNAPSHOT``, ``RISK_BAD_ORDER``)
2. system: daily loss ``day_start_equity - equity >= daily_loss_limit_pct`` of day_start_equity
   (``RISK_DAILY_LOSS``); drawdown ``peak - equity >= drawdown_halt_pct`` of peak
   (``RISK_DRAWDOWN_HALT``; peak = max(peak_equity, equity)). Reaching a limit trips it.
3. order rate: ``max_orders_per_minute`` orders already sent in the last 60 s (timestamps ``t`` with
   ``t > now - 60 000``) refuse the entry (``RISK_ORDER_RATE``)
4. pair protections (:mod:`.protections`): ``RISK_STOPLOSS_GUARD``, ``RISK_COOLDOWN``,
   ``RISK_LOW_PROFIT_LOCK``
5. max concurrent positions: a NEW symbol is refused when ``max_positions`` symbols are already held
   (notional >= min_order_usd; dust does not count) or have open buy orders (``RISK_MAX_POSITIONS``)
6. price and stop: price = the intent's limit price, else ``snapshot.prices``, else the position's
   mark, else the last candle close (``RISK_NO_PRICE``); ATR = last value of ``atr(high, low, close,
   atr_period)``; no finite positive ATR, or a stop at or below zero: ``RISK_NO_STOP``.
   stop_loss = price - stop_atr_mult x ATR; take_profit = price + take_profit_atr_mult x ATR.
7. per-trade sizing (``RISK_SIZING`` when it shrinks): risk fraction f = risk_per_trade_pct / 100
   ("fixed_fraction"), or with "kelly" and at least ``kelly_min_trades`` measured trades of the
   intent's strategy: f* = W - (1 - W) / R, f = min(kelly_fraction x f*, kelly_cap x f*,
   risk_per_trade_pct / 100) (Kelly can only LOWER the risk; f* <= 0 refuses with ``RISK_NO_EDGE``;
   missing or implausible statistics fall back to the fixed fraction). Size cap = equity x f x
   confidence / (stop_atr_mult x ATR) base units (the intent's confidence, 1 unless a strategy emitted
   a confidence in (0, 1]: its entry is that share of what a full signal gets, here as in the loop's
   allocation and the backtest). Then, while the drawdown is at or above drawdown_reduce_pct, the
   amount is multiplied by drawdown_reduce_mult (``RISK_DRAWDOWN_REDUCE``).
8. USD caps, each shrinking the order to the room left or refusing when no room is left:
   ``max_order_notional_usd`` (``RISK_ORDER_NOTIONAL``; always > 0 so it only shrinks),
   ``max_position_usd`` for the symbol (``RISK_POSITION_USD``), ``max_symbol_exposure_pct``
   (``RISK_SYMBOL_EXPOSURE``), ``max_total_exposure_pct`` (``RISK_TOTAL_EXPOSURE``),
   ``max_cluster_exposure_pct`` (``RISK_CLUSTER_EXPOSURE``). Exposure of a symbol = held amount x
   mark + its open buy-order notional. The cluster of the intent's symbol = itself plus every other
   symbol with exposure whose simple returns over the last ``correlation_lookback`` bars correlate
   with its own at >= correlation_threshold; a correlation that cannot be measured (fewer than
   20 returns, a flat series) counts as correlated (fail safe; listed in details["cluster_unmeasured"]). Close arrays are
   assumed aligned on the same bar grid, ending at the same bar.
9. an order left below ``min_order_usd`` is refused (``RISK_TOO_SMALL``).

Boundaries: a value exactly AT an exposure cap is allowed (the room is used up, not exceeded); a
loss or drawdown exactly AT its limit trips it; a count AT its limit (orders per minute, open
positions, stops) refuses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..broker.models import OrderIntent
from ..strategies.indicators import atr as _atr
from . import protections as prot
from .protections import STOP_EXIT_REASONS, ClosedTrade, Lock  # noqa: F401  (re-exported)
from .risk_profile import (  # noqa: F401  (re-exported: the risk API in one import)
    LIMIT_DIRECTIONS,
    MIN_CORRELATION_RETURNS,
    LoadedProfile,
    ProfileChangeRefused,
    RiskProfile,
    RiskProfileError,
    default_profile,
    is_loosening,
    load_profile,
    profile_diff,
    profile_path,
    save_profile,
    validate_profile,
)

MINUTE_MS = 60_000
_REL = 1e-9


class RiskReason:
    """Stable reason codes of the risk layer (the contract with the gate, hooks and reports)."""

    OK = "OK"
    BAD_ORDER = "RISK_BAD_ORDER"
    BAD_SNAPSHOT = "RISK_BAD_SNAPSHOT"
    ERROR = "RISK_ERROR"
    DAILY_LOSS = "RISK_DAILY_LOSS"
    DRAWDOWN_HALT = "RISK_DRAWDOWN_HALT"
    DRAWDOWN_REDUCE = "RISK_DRAWDOWN_REDUCE"      # adjustment only
    ORDER_RATE = "RISK_ORDER_RATE"
    STOPLOSS_GUARD = "RISK_STOPLOSS_GUARD"
    COOLDOWN = "RISK_COOLDOWN"
    LOW_PROFIT_LOCK = "RISK_LOW_PROFIT_LOCK"
    MAX_POSITIONS = "RISK_MAX_POSITIONS"
    NO_PRICE = "RISK_NO_PRICE"
    NO_STOP = "RISK_NO_STOP"
    NO_EDGE = "RISK_NO_EDGE"
    SIZING = "RISK_SIZING"                        # adjustment only
    ORDER_NOTIONAL = "RISK_ORDER_NOTIONAL"        # adjustment only (the cap is always > 0)
    POSITION_USD = "RISK_POSITION_USD"
    SYMBOL_EXPOSURE = "RISK_SYMBOL_EXPOSURE"
    TOTAL_EXPOSURE = "RISK_TOTAL_EXPOSURE"
    CLUSTER_EXPOSURE = "RISK_CLUSTER_EXPOSURE"
    SHORT_NOT_ALLOWED = "RISK_SHORT_NOT_ALLOWED"
    TOO_SMALL = "RISK_TOO_SMALL"

    @classmethod
    def all(cls) -> list[str]:
        return [v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)]


_LOCK_CODES = {"stoploss_guard": RiskReason.STOPLOSS_GUARD, "cooldown": RiskReason.COOLDOWN,
               "low_profit": RiskReason.LOW_PROFIT_LOCK}


# ----------------------------------------------------------------------------------------- snapshot
@dataclass(frozen=True)
class Position:
    amount: float          # base units held
    price: float           # mark price
    avg_entry: float = 0.0


@dataclass(frozen=True)
class Candles:
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray


@dataclass(frozen=True)
class StrategyStats:
    win_rate: float        # W, fraction of winning trades
    payoff_ratio: float    # R, average win / average loss
    n_trades: int


def _coerce(obj, cls, name):
    if isinstance(obj, cls):
        return obj
    if isinstance(obj, dict):
        return cls(**obj)
    raise TypeError(f"{name}: expected {cls.__name__} or dict, got {type(obj).__name__}")


@dataclass
class PortfolioSnapshot:
    """Everything the risk manager looks at. Mappings may hold dicts; they are converted on creation.

    positions: {symbol: Position | {amount, price, avg_entry}}; open_order_notional: {symbol: USD of
    open BUY orders}; closed_trades: [ClosedTrade | {symbol, exit_ts, pnl, return, exit_reason}];
    order_timestamps: epoch ms of recently sent orders (any side); closes: {symbol: close prices} for
    correlation (falls back to candles' close); candles: {symbol: Candles | {high, low, close}} for ATR;
    strategy_stats: {strategy: StrategyStats | {win_rate, payoff_ratio, n_trades}}; prices: {symbol:
    last price} (optional)."""

    equity: float
    cash: float
    peak_equity: float
    day_start_equity: float
    now_ms: int
    positions: dict = field(default_factory=dict)
    open_order_notional: dict = field(default_factory=dict)
    closed_trades: list = field(default_factory=list)
    order_timestamps: list = field(default_factory=list)
    closes: dict = field(default_factory=dict)
    candles: dict = field(default_factory=dict)
    strategy_stats: dict = field(default_factory=dict)
    prices: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = {s: _coerce(p, Position, f"positions[{s}]") for s, p in self.positions.items()}
        self.closed_trades = [ClosedTrade.coerce(t) for t in self.closed_trades]
        self.closes = {s: np.asarray(c, dtype=float) for s, c in self.closes.items()}
        cs = {}
        for s, c in self.candles.items():
            c = _coerce(c, Candles, f"candles[{s}]")
            cs[s] = Candles(*(np.asarray(a, dtype=float) for a in (c.high, c.low, c.close)))
        self.candles = cs
        self.strategy_stats = {k: _coerce(v, StrategyStats, f"strategy_stats[{k}]")
                               for k, v in self.strategy_stats.items()}

    # ---- derived values
    def held(self, symbol: str) -> float:
        p = self.positions.get(symbol)
        return p.amount if p else 0.0

    def exposure(self, symbol: str) -> float:
        p = self.positions.get(symbol)
        held = p.amount * p.price if p and p.amount > 0 else 0.0
        return held + float(self.open_order_notional.get(symbol, 0.0) or 0.0)

    def symbols(self) -> list[str]:
        return sorted(set(self.positions) | set(self.open_order_notional))

    def total_exposure(self) -> float:
        return math.fsum(self.exposure(s) for s in self.symbols())

    def problems(self) -> list[str]:
        """What makes the snapshot unusable for sizing an entry (empty when fine)."""
        out = []
        for name in ("equity", "cash", "peak_equity", "day_start_equity"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v)):
                out.append(f"{name}: must be a finite number, got {v!r}")
        for name in ("equity", "peak_equity", "day_start_equity"):
            v = getattr(self, name)
            if isinstance(v, (int, float)) and math.isfinite(v) and v <= 0:
                out.append(f"{name}: must be positive, got {v!r}")
        if not (isinstance(self.now_ms, int) and not isinstance(self.now_ms, bool) and self.now_ms > 0):
            out.append(f"now_ms: must be a positive integer (epoch ms), got {self.now_ms!r}")
        for s, p in self.positions.items():
            if not (math.isfinite(p.amount) and p.amount >= 0):
                out.append(f"positions[{s}].amount: must be finite and >= 0 (long-only), got {p.amount!r}")
            elif p.amount > 0 and not (math.isfinite(p.price) and p.price > 0):
                out.append(f"positions[{s}].price: a held position needs a positive mark price, got {p.price!r}")
        for s, v in self.open_order_notional.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                out.append(f"open_order_notional[{s}]: must be finite and >= 0, got {v!r}")
        for t in self.closed_trades:
            if t.problem():
                out.append(t.problem())
        return out


@dataclass
class RiskDecision:
    allowed: bool
    code: str
    message: str
    amount: float = 0.0
    stop_loss: float | None = None
    take_profit: float | None = None
    adjustments: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)


class _Refusal(Exception):
    def __init__(self, code: str, message: str):
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}")


def _reached(value: float, limit: float) -> bool:
    """value >= limit, tolerant of float noise at the boundary."""
    return value >= limit - _REL * max(1.0, abs(limit))


def _exceeds(value: float, limit: float) -> bool:
    return value > limit + _REL * max(1.0, abs(limit))


# ------------------------------------------------------------------------------------ correlation
def returns_correlation(a: np.ndarray, b: np.ndarray, lookback: int) -> float | None:
    """Pearson correlation of the simple returns of the last ``lookback`` bars of two aligned close
    series; None when it cannot be measured (too few bars, non-finite or non-positive prices, a flat
    series)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = min(lookback, len(a) - 1, len(b) - 1)
    if n < MIN_CORRELATION_RETURNS:
        return None
    a, b = a[-(n + 1):], b[-(n + 1):]
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b)) and np.all(a > 0) and np.all(b > 0)):
        return None
    ra, rb = np.diff(a) / a[:-1], np.diff(b) / b[:-1]
    sa, sb = ra.std(), rb.std()
    if sa <= 1e-15 or sb <= 1e-15:
        return None
    c = float(np.mean((ra - ra.mean()) * (rb - rb.mean())) / (sa * sb))
    return max(-1.0, min(1.0, c))


# ----------------------------------------------------------------------------------------- manager
class RiskManager:
    def __init__(self, profile: RiskProfile | None = None):
        self.profile = profile if profile is not None else default_profile()

    def assess(self, intent: OrderIntent, snapshot: PortfolioSnapshot) -> RiskDecision:
        """Never raises: an internal error is a refusal (RISK_ERROR)."""
        notes: list[str] = []
        details: dict = {}
        try:
            if intent.side == "sell":
                return self._assess_exit(intent, snapshot)
            return self._assess_entry(intent, snapshot, notes, details)
        except _Refusal as r:
            return RiskDecision(False, r.code, r.message, 0.0, None, None, notes, details)
        except Exception as e:  # fail closed
            return RiskDecision(False, RiskReason.ERROR, f"risk check failed: {e.__class__.__name__}: {e}",
                                0.0, None, None, notes, details)

    # ---- exits
    def _assess_exit(self, intent: OrderIntent, snap: PortfolioSnapshot) -> RiskDecision:
        amt = intent.amount
        if not (isinstance(amt, (int, float)) and math.isfinite(amt) and amt > 0):
            raise _Refusal(RiskReason.BAD_ORDER, f"amount: must be a positive finite number, got {amt!r}")
        held = snap.held(intent.symbol)
        if not math.isfinite(held) or _exceeds(amt, max(held, 0.0)):
            raise _Refusal(RiskReason.SHORT_NOT_ALLOWED,
                           f"sell {amt:g} {intent.symbol} exceeds the held {held:g}: long-only spot, no shorts")
        return RiskDecision(True, RiskReason.OK, "reduces exposure: always allowed (risk layers and the "
                                                 "order-rate throttle do not apply to exits)", amt)

    # ---- entries
    def _assess_entry(self, intent: OrderIntent, snap: PortfolioSnapshot, notes: list, details: dict) -> RiskDecision:
        p = self.profile
        sym = intent.symbol
        amount = intent.amount
        if not (isinstance(amount, (int, float)) and math.isfinite(amount) and amount > 0):
            raise _Refusal(RiskReason.BAD_ORDER, f"amount: must be a positive finite number, got {amount!r}")
        problems = snap.problems()
        if problems:
            raise _Refusal(RiskReason.BAD_SNAPSHOT, "portfolio snapshot unusable: " + "; ".join(problems[:3]))
        equity, now = float(snap.equity), snap.now_ms

        # 2. system: daily loss and drawdown
        loss = snap.day_start_equity - equity
        details["daily_loss_pct"] = 100.0 * loss / snap.day_start_equity
        if _reached(loss, snap.day_start_equity * p.daily_loss_limit_pct / 100.0):
            raise _Refusal(RiskReason.DAILY_LOSS,
                           f"daily loss {loss:.2f} ({details['daily_loss_pct']:.2f}% of day start "
                           f"{snap.day_start_equity:.2f}) reached daily_loss_limit_pct {p.daily_loss_limit_pct:g}%: "
                           f"no new entries today")
        peak = max(snap.peak_equity, equity)
        dd = peak - equity
        details["drawdown_pct"] = 100.0 * dd / peak
        if _reached(dd, peak * p.drawdown_halt_pct / 100.0):
            raise _Refusal(RiskReason.DRAWDOWN_HALT,
                           f"drawdown {details['drawdown_pct']:.2f}% from peak {peak:.2f} reached "
                           f"drawdown_halt_pct {p.drawdown_halt_pct:g}%: entries halted")
        reducing = _reached(dd, peak * p.drawdown_reduce_pct / 100.0)

        # 3. order rate
        recent = sum(1 for t in snap.order_timestamps if t > now - MINUTE_MS)
        if recent >= p.max_orders_per_minute:
            raise _Refusal(RiskReason.ORDER_RATE, f"{recent} orders in the last 60 s reached max_orders_per_minute "
                                                  f"{p.max_orders_per_minute}")

        # 4. protections
        trades = snap.closed_trades
        for lock in (
            prot.stoploss_guard(trades, sym, now, p.stoploss_guard_trade_limit,
                                p.stoploss_guard_lookback_min * MINUTE_MS, p.stoploss_guard_stop_min * MINUTE_MS),
            prot.cooldown(trades, sym, now, p.cooldown_minutes * MINUTE_MS),
            prot.low_profit(trades, sym, now, p.low_profit_trades, p.low_profit_required_return,
                            p.low_profit_stop_min * MINUTE_MS),
        ):
            if lock is not None:
                details["locked_until_ms"] = lock.until_ms
                raise _Refusal(_LOCK_CODES[lock.protection], lock.message)

        # 5. max concurrent positions
        def is_open(s):
            pos = snap.positions.get(s)
            held_usd = pos.amount * pos.price if pos is not None and pos.amount > 0 else 0.0
            return held_usd >= p.min_order_usd or float(snap.open_order_notional.get(s, 0.0) or 0.0) > 0

        open_syms = {s for s in snap.symbols() if is_open(s)}
        details["open_positions"] = len(open_syms)
        if sym not in open_syms and len(open_syms) >= p.max_positions:
            raise _Refusal(RiskReason.MAX_POSITIONS, f"{len(open_syms)} positions open reached max_positions "
                                                     f"{p.max_positions}; {sym} would be a new one")

        # 6. price, ATR, stop and take profit
        price = self._price(intent, snap)
        a = self._atr(sym, snap)
        stop = price - p.stop_atr_mult * a
        if not stop > 0:
            raise _Refusal(RiskReason.NO_STOP, f"{sym}: stop {stop:g} = price {price:g} - {p.stop_atr_mult:g} x ATR "
                                               f"{a:g} is not above zero")
        take = price + p.take_profit_atr_mult * a
        details.update(price=price, atr=a)

        # 7. per-trade sizing
        frac, how = self._risk_fraction(intent, snap)
        risk_usd = equity * frac
        conf = float(getattr(intent, "confidence", 1.0))
        if not (math.isfinite(conf) and 0.0 < conf <= 1.0):
            raise _Refusal(RiskReason.BAD_ORDER, f"confidence: must be in (0, 1], got {conf!r}")
        risk_usd = risk_usd * conf  # a confidence-sized entry risks that share of a full entry's budget
        size_cap = risk_usd / (p.stop_atr_mult * a)
        details.update(risk_fraction=frac, sizing=how, risk_usd=risk_usd, size_cap=size_cap, confidence=conf)
        if _exceeds(amount, size_cap):
            notes.append(f"{RiskReason.SIZING}: amount {amount:g} -> {size_cap:g} (risk {risk_usd:.2f} USD = "
                         f"{100 * frac:g}% of equity ({how})" + (f" x confidence {conf:g}" if conf < 1 else "")
                         + f" / stop distance {p.stop_atr_mult:g} x ATR {a:g})")
            amount = size_cap
        if reducing:
            new = amount * p.drawdown_reduce_mult
            notes.append(f"{RiskReason.DRAWDOWN_REDUCE}: amount {amount:g} -> {new:g} (drawdown "
                         f"{details['drawdown_pct']:.2f}% >= drawdown_reduce_pct {p.drawdown_reduce_pct:g}%, "
                         f"x {p.drawdown_reduce_mult:g})")
            amount = new

        # 8. USD caps
        sym_exp = snap.exposure(sym)
        cluster_exp, members, unmeasured = self._cluster(sym, snap)
        details.update(symbol_exposure=sym_exp, total_exposure=snap.total_exposure(),
                       cluster=members, cluster_exposure=cluster_exp, cluster_unmeasured=unmeasured)
        caps = [
            (RiskReason.ORDER_NOTIONAL, "max_order_notional_usd", p.max_order_notional_usd, 0.0),
            (RiskReason.POSITION_USD, "max_position_usd", p.max_position_usd, sym_exp),
            (RiskReason.SYMBOL_EXPOSURE, "max_symbol_exposure_pct", equity * p.max_symbol_exposure_pct / 100, sym_exp),
            (RiskReason.TOTAL_EXPOSURE, "max_total_exposure_pct", equity * p.max_total_exposure_pct / 100,
             details["total_exposure"]),
            (RiskReason.CLUSTER_EXPOSURE, "max_cluster_exposure_pct", equity * p.max_cluster_exposure_pct / 100,
             cluster_exp),
        ]
        for code, name, cap, used in caps:
            room = cap - used
            if room <= _REL * max(1.0, cap):
                raise _Refusal(code, f"{sym}: exposure {used:.2f} USD already uses {name} ({cap:.2f} USD); "
                                     f"no room for an entry")
            notional = amount * price
            if _exceeds(notional, room):
                new = room / price
                notes.append(f"{code}: amount {amount:g} -> {new:g} (notional {notional:.2f} > room {room:.2f} USD "
                             f"under {name} {cap:.2f} USD)")
                amount = new

        # 9. too small
        notional = amount * price
        if notional < p.min_order_usd - _REL:
            raise _Refusal(RiskReason.TOO_SMALL, f"{sym}: order shrunk to {notional:.4f} USD, below min_order_usd "
                                                 f"{p.min_order_usd:g}" + (f" (last: {notes[-1]})" if notes else ""))
        msg = "entry allowed" + (f", shrunk {intent.amount:g} -> {amount:g}" if notes and amount != intent.amount else "")
        return RiskDecision(True, RiskReason.OK, msg, amount, stop, take, notes, details)

    # ---- helpers
    def _price(self, intent: OrderIntent, snap: PortfolioSnapshot) -> float:
        sym = intent.symbol
        cands = [intent.price, snap.prices.get(sym)]
        pos = snap.positions.get(sym)
        if pos is not None:
            cands.append(pos.price)
        c = snap.candles.get(sym)
        if c is not None and len(c.close):
            cands.append(c.close[-1])
        for v in cands:
            if v is not None:
                v = float(v)
                if math.isfinite(v) and v > 0:
                    return v
                break  # the first source given is the authority: a bad value there is not skipped
        raise _Refusal(RiskReason.NO_PRICE, f"{sym}: no positive price (limit price, snapshot price, mark or candle)")

    def _atr(self, sym: str, snap: PortfolioSnapshot) -> float:
        c = snap.candles.get(sym)
        n = self.profile.atr_period
        if c is None:
            raise _Refusal(RiskReason.NO_STOP, f"{sym}: no candles, so no ATR and no stop")
        if not (len(c.high) == len(c.low) == len(c.close)) or len(c.close) < n:
            raise _Refusal(RiskReason.NO_STOP, f"{sym}: need {n} aligned candles for ATR({n}), got "
                                               f"{len(c.high)}/{len(c.low)}/{len(c.close)}")
        with np.errstate(all="ignore"):
            v = float(_atr(c.high, c.low, c.close, n)[-1])
        if not (math.isfinite(v) and v > 0):
            raise _Refusal(RiskReason.NO_STOP, f"{sym}: ATR({n}) is {v!r}; no stop can be set")
        return v

    def _risk_fraction(self, intent: OrderIntent, snap: PortfolioSnapshot) -> tuple[float, str]:
        p = self.profile
        fixed = p.risk_per_trade_pct / 100.0
        if p.sizing != "kelly":
            return fixed, "fixed_fraction"
        st = snap.strategy_stats.get(intent.strategy) if intent.strategy else None
        if st is None:
            return fixed, "fixed_fraction (no strategy statistics)"
        n, w, r = st.n_trades, st.win_rate, st.payoff_ratio
        if not (isinstance(n, int) and n >= p.kelly_min_trades):
            return fixed, f"fixed_fraction ({n} trades < kelly_min_trades {p.kelly_min_trades})"
        if not (isinstance(w, (int, float)) and isinstance(r, (int, float)) and math.isfinite(w) and math.isfinite(r)
                and 0 <= w <= 1 and r > 0):
            return fixed, f"fixed_fraction (implausible statistics W={w!r} R={r!r})"
        f_star = w - (1 - w) / r
        if f_star <= 0:
            raise _Refusal(RiskReason.NO_EDGE, f"strategy {intent.strategy}: Kelly f* = {w:g} - (1 - {w:g}) / {r:g} = "
                                               f"{f_star:.4f} <= 0 over {n} trades: no measured edge")
        f = min(p.kelly_fraction * f_star, p.kelly_cap * f_star, fixed)
        return f, f"kelly (f*={f_star:.4f}, x{p.kelly_fraction:g}, capped at {fixed:g})"

    def _cluster(self, sym: str, snap: PortfolioSnapshot) -> tuple[float, list[str], list[str]]:
        """(cluster exposure, members, members whose correlation could not be measured)."""
        p = self.profile

        def closes(s):
            if s in snap.closes:
                return snap.closes[s]
            c = snap.candles.get(s)
            return c.close if c is not None else None

        mine = closes(sym)
        members, unmeasured, total = [sym], [], snap.exposure(sym)
        for other in snap.symbols():
            if other == sym:
                continue
            e = snap.exposure(other)
            if e <= 0:
                continue
            theirs = closes(other)
            corr = None if mine is None or theirs is None else returns_correlation(mine, theirs, p.correlation_lookback)
            if corr is None:
                unmeasured.append(other)
            if corr is None or _reached(corr, p.correlation_threshold):
                members.append(other)
                total += e
        return total, members, unmeasured
