"""The liquidity gate's reading of one market with the limits the gate applies and its verdict: what
``qts market liquidity`` prints and the monitor's ``GET /liquidity`` answers (apart from :mod:`.liquidity`,
which the risk gate imports, so that this one may import the gate's effective profile)."""

from __future__ import annotations

from types import SimpleNamespace

from ..store import Store
from .liquidity import measure, problems
from .risk_gate import effective_profile


def report(settings, feed, symbol: str, amount: float | None = None) -> dict:
    """The numbers the liquidity gate reads for ``symbol`` from ``feed``, the risk profile's limits (the one
    the gate applies), and the verdict for a buy of ``amount`` (default: a full MAX_POSITION_SIZE position)."""
    reading = measure(feed, symbol)
    store = Store.open(settings.home)
    try:
        profile = effective_profile(SimpleNamespace(store=store, settings=settings, authority=None))
    finally:
        store.close()
    if amount is None and reading.price:
        amount = min(settings.MAX_POSITION_SIZE, profile.max_position_usd) / reading.price
    bad = problems(reading, profile, "buy", amount)
    return {**reading.to_dict(), "amount": amount,
            "limits": {"min_quote_volume_24h": profile.min_quote_volume_24h,
                       "max_spread_bps": profile.max_spread_bps,
                       "max_depth_fraction": profile.max_depth_fraction},
            "allowed": not bad, "problems": bad}
