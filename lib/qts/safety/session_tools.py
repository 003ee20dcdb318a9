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


def live_tools(settings, store: Store, exchange=None):
    """A reconciled live broker and a gate on it (for the kill switch in a live account)."""
    from ..gate import Gate
    from ..market.ccxt_feed import CcxtFeed, public_exchange
    from ..broker.live import LiveBroker

    ex = exchange or public_exchange(settings.EXCHANGE)
    if not ex.apiKey and settings.has_keys:
        ex.apiKey = settings.EXCHANGE_API_KEY.get_secret_value()
        ex.secret = settings.EXCHANGE_SECRET.get_secret_value()
    symbols = sorted(set(settings.SYMBOLS) | {r["symbol"] for r in store.query(
        "SELECT DISTINCT symbol FROM orders WHERE mode='live'")})
    feed = CcxtFeed(ex, symbols, settings.TRADE_INTERVAL)
    broker = LiveBroker(store, feed, ex)
    broker.reconcile()
    return Gate(store, feed, broker, settings=settings), broker
