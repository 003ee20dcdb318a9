"""Assemble a trading session (store, feed, broker, gate, loop) from settings."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..broker.paper import PaperBroker
from ..config import Settings
from ..gate import Gate
from ..market.feed import ReplayFeed
from ..store import Store
from ..store.journal import sync_trades
from ..strategies import make
from .loop import TradingLoop


class SessionError(RuntimeError):
    """A session cannot start; the message says why and what to do."""


@dataclass
class Session:
    settings: Settings
    store: Store
    feed: object
    broker: PaperBroker
    gate: Gate
    loop: TradingLoop

    def close(self):
        self.store.close()


def archive_state(settings: Settings) -> Path | None:
    """Move the database and logs aside (never delete) so a replay starts from a clean account."""
    home = settings.home
    items = [p for p in (home.db_dir, home.logs) if p.exists() and any(p.iterdir())]
    if not items:
        return None
    dest = home.root / "archive" / time.strftime("%Y%m%dT%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


def make_feed(settings: Settings, source: str, data_dir=None, days: float = 3.0, seed: int = 7,
              warmup: int = 200, exchange=None):
    if source == "synthetic":
        return ReplayFeed.synthetic(settings.SYMBOLS, settings.TRADE_INTERVAL, days=days, seed=seed, warmup=warmup)
    if source == "replay":
        feed = ReplayFeed.from_dir(data_dir, settings.SYMBOLS, settings.TRADE_INTERVAL, warmup=warmup)
        if days:
            feed.end_ms = min(feed.end_ms, feed.start_ms + int(days * 86_400_000))
        return feed
    if source == "live-data":
        from ..market.ccxt_feed import CcxtFeed, public_exchange

        return CcxtFeed(exchange or public_exchange(settings.EXCHANGE), settings.SYMBOLS, settings.TRADE_INTERVAL)
    raise ValueError(f"source: unknown {source!r}")


def open_session(settings: Settings, feed, strategy_params: dict | None = None) -> Session:
    if not settings.PAPER_TRADING:
        raise SessionError("PAPER_TRADING=false: live trading is not available in this build; "
                           "unset PAPER_TRADING (or set it to true) to paper-trade")
    store = Store.open(settings.home)
    sync_trades(store)  # a crash between a fill's commit and its journal line is repaired here
    broker = PaperBroker(store, feed, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS)
    broker.ensure_account(settings.INITIAL_CASH)
    gate = Gate(store, feed, broker, settings=settings)
    strategies = {s: make(settings.STRATEGY, strategy_params) for s in settings.SYMBOLS}
    loop = TradingLoop(settings, store, feed, broker, gate, strategies)
    return Session(settings, store, feed, broker, gate, loop)


def resume_point(store: Store, feed) -> int | None:
    """For a replay: the simulated time after the last recorded cycle, so runs continue, not repeat."""
    last = store.scalar("SELECT MAX(ts) FROM decisions WHERE mode='paper'")
    return int(last) if last else None
