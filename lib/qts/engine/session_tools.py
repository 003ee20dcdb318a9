"""Build a PAPER gate and broker for one-off work outside the loop (an order from the CLI, the kill switch), and
the kill switch's paper step (``flatten_paper``), shared by ``qts kill-switch`` and the monitor's POST /kill-switch.

Live orders never go through here: they are intents sent to the trading agent (agent/protocol.py)."""

from __future__ import annotations

from ..broker.paper import PaperBroker
from ..market.stored import StoredPriceFeed
from ..store import Store


def session_feed(settings, store: Store):
    """The market of the last paper session, at its last cycle: the same replay (or generated market)
    positioned where it stopped, or the exchange's live public data. Falls back to stored prices
    (which have no candles: entries then lack an ATR stop and the risk layer refuses them)."""
    import json
    import re

    row = store.one("SELECT ts, inputs FROM decisions WHERE mode='paper' ORDER BY id DESC LIMIT 1")
    if not row:
        return StoredPriceFeed(store, "paper")
    try:
        from ..engine.session import make_feed

        source = json.loads(row["inputs"]).get("source", "")
        resume = int(row["ts"]) - settings.TRADE_INTERVAL * 60_000  # resume "after" the cycle before: at it
        if source.startswith("synthetic"):
            m = re.search(r"seed=(\d+)", source)
            return make_feed(settings, "synthetic", seed=int(m.group(1)) if m else 7, resume_after=resume, days=0.01)
        if source.startswith("replay:"):
            return make_feed(settings, "replay", source[len("replay:"):], resume_after=resume, days=0.01)
        if source.startswith("ccxt:"):
            return make_feed(settings, "live-data")
    except Exception:
        pass
    return StoredPriceFeed(store, "paper")


def paper_tools(settings, store: Store, feed=None):
    from ..gate import Gate

    feed = feed or StoredPriceFeed(store, "paper")
    broker = PaperBroker(store, feed, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS)
    broker.ensure_account(settings.INITIAL_CASH)
    return Gate(store, feed, broker, settings=settings), broker


def flatten_paper(settings, store: Store, feed=None, retries: int = 3, backoff_s: float = 0.2,
                  label: str = "paper flatten") -> dict:
    """Cancel every open PAPER order and close every paper position through the gate's flatten path (the only
    orders an engaged kill switch lets through), then record a critical ``kill_switch`` event headed ``label``.

    Returns ``flat`` (True only when nothing failed AND the broker holds no position afterwards: fails closed),
    ``cancelled``, ``closed``, ``failed``, ``remaining_positions`` and ``ms``. The flag is not touched here: the
    caller has set it first (``safety.kill_switch.engage``)."""
    from ..safety import kill_switch

    gate, broker = paper_tools(settings, store, feed)
    rep = kill_switch.flatten(gate, broker, retries=retries, backoff_s=backoff_s)
    remaining = list(broker.positions())
    store.event("kill_switch", f"{label}: {len(rep.cancelled)} cancelled, {len(rep.closed)} closed, "
                               f"{len(rep.failed)} failed", severity="critical",
                data={"action": "flatten", "cancelled": rep.cancelled, "closed": rep.closed, "failed": rep.failed})
    return {"flat": rep.flat and not remaining, "cancelled": rep.cancelled, "closed": rep.closed,
            "failed": rep.failed, "remaining_positions": remaining, "ms": round(rep.ms, 2)}
