"""Liquidity gating: an entry is refused (reason ``LIQUIDITY``) in a market too thin to trade.

Three limits of the risk profile, checked by the risk layer (risk_gate.apply_risk) on every order that adds
exposure; exits are never held back by them:

- ``min_quote_volume_24h``: the 24 h volume in the quote currency (the ticker's ``quoteVolume``; else
  ``baseVolume`` x last);
- ``max_spread_bps``: (ask - bid) / mid in basis points;
- ``max_depth_fraction``: the order's amount as a fraction of the visible depth on the side it takes (asks
  for a buy) in the order book's first ``DEPTH_LEVELS`` levels.

Paper reads them from its feed (a replay: the candles closed in the last 24 h, a book around the price; the
live data feed and the trading agent: the exchange's ``fetch_ticker`` and ``fetch_order_book``). A reading
that cannot be taken is a refusal naming what was missing (fail closed), never a pass.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

DEPTH_LEVELS = 20


@dataclass(frozen=True)
class Reading:
    symbol: str
    quote_volume_24h: float | None
    spread_bps: float | None
    depth_bids: float | None  # base units in the first DEPTH_LEVELS levels
    depth_asks: float | None
    price: float | None
    source: str

    def to_dict(self) -> dict:
        return asdict(self)


def _num(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def measure(feed, symbol: str) -> Reading:
    """The liquidity of ``symbol`` from ``feed`` (its ticker and order book). Missing values stay None."""
    t = feed.ticker(symbol) or {}
    last = _num(t.get("last")) or _num(t.get("close"))
    qv = _num(t.get("quoteVolume"))
    if qv is None:
        bv = _num(t.get("baseVolume"))
        qv = bv * last if bv is not None and last else None
    book = feed.order_book(symbol, DEPTH_LEVELS) or {}
    bids, asks = book.get("bids") or [], book.get("asks") or []
    bid = _num(t.get("bid")) or (_num(bids[0][0]) if bids else None)
    ask = _num(t.get("ask")) or (_num(asks[0][0]) if asks else None)
    spread = None
    if bid and ask and bid > 0 and ask >= bid:
        spread = (ask - bid) / ((ask + bid) / 2) * 10_000

    def depth(levels):
        vals = [_num(lv[1]) for lv in levels[:DEPTH_LEVELS] if len(lv) >= 2]
        return sum(v for v in vals if v and v > 0) if levels else None

    src = getattr(feed, "source", "?") + (" (book synthesized)" if book.get("synthesized") else "")
    return Reading(symbol, qv, spread, depth(bids), depth(asks), last, src)


def problems(reading: Reading, profile, side: str = "buy", amount: float | None = None) -> list[str]:
    """What fails the profile's limits, one line each naming the metric, its value and the limit."""
    out = []
    lim = profile.min_quote_volume_24h
    if lim > 0:
        if reading.quote_volume_24h is None:
            out.append("24 h quote volume unknown (the ticker has none)")
        elif reading.quote_volume_24h < lim:
            out.append(f"24 h quote volume {reading.quote_volume_24h:,.0f} < min_quote_volume_24h {lim:,.0f}")
    lim = profile.max_spread_bps
    if reading.spread_bps is None:
        out.append("spread unknown (no bid/ask)")
    elif reading.spread_bps > lim:
        out.append(f"spread {reading.spread_bps:.1f} bps > max_spread_bps {lim:g}")
    if amount is not None:
        depth = reading.depth_asks if side == "buy" else reading.depth_bids
        lim = profile.max_depth_fraction
        if not depth:
            out.append(f"visible depth unknown (no {'asks' if side == 'buy' else 'bids'} in the book)")
        elif amount / depth > lim:
            out.append(f"order {amount:g} is {amount / depth:.1%} of the visible depth {depth:g} "
                       f"> max_depth_fraction {lim:g}")
    return out


def check(gate, intent, profile) -> None:
    """Raise Refuse(LIQUIDITY) when an entry fails a limit of ``profile`` (the gate's effective risk profile)
    or the reading cannot be taken."""
    from ..verdicts import Reason, Refuse

    try:
        reading = measure(gate.feed, intent.symbol)
    except Exception as e:  # no reading, no entry
        raise Refuse(Reason.LIQUIDITY, f"{intent.symbol}: cannot read liquidity ({e.__class__.__name__}: "
                                       f"{str(e)[:200]})") from None
    bad = problems(reading, profile, intent.side, intent.amount)
    if bad:
        raise Refuse(Reason.LIQUIDITY, f"{intent.symbol}: " + "; ".join(bad))
