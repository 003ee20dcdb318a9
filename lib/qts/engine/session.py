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
    notice: str | None = None

    def close(self):
        self.store.close()


PAPER_TABLES = ("fills", "orders", "positions", "balances", "closed_trades", "equity_snapshots", "decisions")


def archive_state(settings: Settings) -> Path | None:
    """Start a new PAPER account: copy the database to archive/ (nothing is deleted for good), move the
    trade and order logs there, and clear the paper rows. The safety state stays where it is: the
    events table (kill switch, approvals, breaker records), logs/circuit_breaker.json and safety/.
    Refused when the state home has live trading records (their journal must not move)."""
    home = settings.home
    if not home.db_path.exists() and not home.logs.exists():
        return None
    dest = home.root / "archive" / time.strftime("%Y%m%dT%H%M%S")
    if home.db_path.exists():
        store = Store.open(home, check_journal=False)  # --fresh is the deliberate answer to lost books
        try:
            if store.scalar("SELECT COUNT(*) FROM orders WHERE mode='live'"):
                raise SessionError("--fresh resets the paper account only, and this state home has live trading "
                                   "records: use another state home (--home) for a new paper account")
            dest.mkdir(parents=True, exist_ok=True)
            import sqlite3

            target = sqlite3.connect(str(dest / "metrics.db"))
            store.conn.backup(target)  # a consistent copy, even with WAL
            target.close()
            with store.tx():
                store.execute("DELETE FROM order_status_history WHERE client_order_id IN "
                              "(SELECT client_order_id FROM orders WHERE mode='paper')")
                for t in PAPER_TABLES:
                    store.execute(f"DELETE FROM {t} WHERE mode='paper'")
                store.event("account_archived", "paper account archived to " + str(dest), data={"archived_to": str(dest)})
        finally:
            store.close()
    for name in ("trades.jsonl", "pre_trade.json", "post_trade.json"):
        p = home.logs / name
        if p.exists():
            (dest / "logs").mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), str(dest / "logs" / name))
    return dest if dest.exists() else None


def make_feed(settings: Settings, source: str, data_dir=None, days: float | None = None, seed: int = 7,
              warmup: int = 200, exchange=None, resume_after: int | None = None):
    """A feed for ``source``: "synthetic" (generated; ``days`` default 2), "replay" (candle files in
    ``data_dir``; all of them unless ``days``) or "live-data" (ccxt public API).

    ``resume_after``: a replay continues after this cycle time (the last one recorded) when it lies
    inside the data, and ``days`` then counts from there.
    """
    from ..market.quarantine import ScreenConfig

    day = 86_400_000
    screen = ScreenConfig.from_settings(settings)
    settings = _roster_settings(settings)  # the registry's symbols when it has promoted strategies
    if source == "synthetic":
        span = days or 2.0
        feed = ReplayFeed.synthetic(settings.SYMBOLS, settings.TRADE_INTERVAL, days=span, seed=seed, warmup=warmup,
                                    screen_config=screen)
        if resume_after and resume_after >= feed.start_ms:  # regenerate far enough (same seed, same prices)
            span += (resume_after - feed.start_ms) / day
            feed = ReplayFeed.synthetic(settings.SYMBOLS, settings.TRADE_INTERVAL, days=span, seed=seed,
                                        warmup=warmup, screen_config=screen)
        _resume(feed, resume_after, settings, None)
        return feed
    if source == "replay":
        feed = ReplayFeed.from_dir(data_dir, settings.SYMBOLS, settings.TRADE_INTERVAL, warmup=warmup,
                                   screen_config=screen)
        _resume(feed, resume_after, settings, days)
        return feed
    if source == "live-data":
        from ..market.ccxt_feed import CcxtFeed, public_exchange

        exchange = exchange or public_exchange(settings.EXCHANGE, url=settings.EXCHANGE_URL,
                                               sandbox=settings.EXCHANGE_SANDBOX)
        return CcxtFeed(exchange, settings.SYMBOLS, settings.TRADE_INTERVAL, screen_config=screen)
    raise ValueError(f"source: unknown {source!r}")


def _roster_settings(settings):
    from .roster import RosterError, load_roster, roster_settings

    try:
        return roster_settings(settings, load_roster(settings))
    except RosterError:
        return settings  # open_session refuses with the reasons


def _resume(feed: ReplayFeed, resume_after, settings, days) -> None:
    feed.resumed = bool(resume_after) and feed.seek(resume_after + settings.TRADE_INTERVAL * 60_000)
    if days:
        feed.end_ms = min(feed.end_ms, feed.now_ms() + int(days * 86_400_000))


def last_cycle_ts(home) -> int | None:
    """The simulated time of the last recorded paper cycle (a replay resumes after it)."""
    if not home.db_path.exists():
        return None
    store = Store.open(home)
    try:
        last = store.scalar("SELECT MAX(ts) FROM decisions WHERE mode='paper'")
    finally:
        store.close()
    return int(last) if last else None


LIVE_IN_AGENT = ("PAPER_TRADING=false: live trading runs only inside the trading agent, which the human starts in "
                 "their own terminal with the PIN (`qts agent start`). `qts run` and `qts once` trade paper only; "
                 "set PAPER_TRADING=true (or unset it) for them")


def open_session(settings: Settings, feed, strategy_params: dict | None = None, exchange=None) -> Session:
    """A PAPER session. Live trading runs only inside the trading agent (agent/service.py), never in a
    process the assistant can start: PAPER_TRADING=false is refused here with a message saying so."""
    if not settings.PAPER_TRADING:
        raise SessionError(LIVE_IN_AGENT)
    store = Store.open(settings.home)
    sync_trades(store)  # a crash between a fill's commit and its journal line is repaired here
    paper = PaperBroker(store, feed, fee_bps=settings.FEE_BPS, slippage_bps=settings.SLIPPAGE_BPS)
    paper.ensure_account(settings.INITIAL_CASH)
    from .roster import RosterError, load_roster, roster_settings

    try:  # the registry's promoted strategies (their symbols, pinned parameters, checked code); else STRATEGY
        roster = load_roster(settings, strategy_params)
    except RosterError as e:
        store.close()
        raise SessionError(f"{e}. Re-validate them, or retire them to run the configured STRATEGY") from None
    settings = roster_settings(settings, roster)
    missing = [s for s in roster.symbols if s not in feed.symbols]
    if missing:
        store.close()
        raise SessionError(f"the feed has no data for {', '.join(missing)} (the registry's symbols)")
    gate = Gate(store, feed, paper, settings=settings)
    loop = TradingLoop(settings, store, feed, paper, gate, roster.strategies, paper_broker=paper)
    loop.entry_ids = dict(roster.entries)
    notice = None
    if roster.source == "registry" or roster.notes:
        lines = [f"{sym}: {roster.entries[sym]} ({s.name} {s.params.model_dump()})" for sym, s in roster.strategies.items()
                 ] if roster.source == "registry" else []
        notice = "; ".join([*roster.notes, *(["running the registry's strategies: " + ", ".join(lines)] if lines else []),
                            *[f"not run: {r}" for r in roster.refused]])
        store.event("roster", notice, severity="warning" if roster.refused or roster.notes else "info",
                    data={"source": roster.source, "entries": roster.entries, "refused": roster.refused})
    return Session(settings, store, feed, paper, gate, loop, notice=notice)
