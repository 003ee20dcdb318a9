"""Build a gate and broker for one-off work outside the loop (an order from the CLI, the kill switch)."""

from __future__ import annotations

from ..broker.paper import PaperBroker
from ..market.stored import StoredPriceFeed
from ..store import Store


def paper_tools(settings, store: Store, feed=None):
    from ..gate import Gate

    feed = feed or StoredPriceFeed(store, "paper")
    broker = PaperBroker(store, feed, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS)
    broker.ensure_account(settings.INITIAL_CASH)
    return Gate(store, feed, broker, settings=settings), broker
