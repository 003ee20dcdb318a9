"""One day of five-minute cycles (288 per symbol) for BTC, ETH and SOL through the whole loop.

Whole loop = candles -> strategy -> gate -> paper broker -> SQLite + trades.jsonl, on the real 2024
Binance candles in ../shared/data/ohlcv. Baseline, measured in the same run: the same strategy
decisions on the same candle windows with no gate, broker or store (the floor any loop pays).
Target (issue 2): the whole day in under 10 s on a 2-core machine.
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

from common import peak_rss_mb, row, shared_data


def main() -> int:
    data = shared_data()
    if not data:
        print("bench_loop: ../shared/data/ohlcv not found (set QTS_SHARED_DATA); skipped")
        return 0
    from qts.config import load_settings
    from qts.engine.session import make_feed, open_session

    symbols = "BTC/USDT,ETH/USDT,SOL/USDT"
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(environ={"SYMBOLS": symbols, "QTS_HOME": tmp})
        feed = make_feed(settings, "replay", data / "ohlcv", days=1)
        feed.end_ms = feed.start_ms + 287 * 300_000  # exactly 288 cycles
        session = open_session(settings, feed)
        t0 = time.perf_counter()
        cycles = session.loop.run(threading.Event())
        wall = time.perf_counter() - t0
        fills = session.store.scalar("SELECT COUNT(*) FROM fills")
        session.close()

        # baseline: decisions only
        feed = make_feed(settings, "replay", data / "ohlcv", days=1)
        feed.end_ms = feed.start_ms + 287 * 300_000
        from qts.strategies import make

        strats = {s: make(settings.STRATEGY) for s in settings.SYMBOLS}
        t0 = time.perf_counter()
        n = 0
        while True:
            for s, st in strats.items():
                st.decide(feed.candles(s, st.lookback), 0.0)
            n += 1
            if feed.wait_next_cycle(300_000) is None:
                break
        base = time.perf_counter() - t0

    sc = cycles * 3
    print("loop: one day of 5-minute cycles, BTC+ETH+SOL, real candles, paper broker, SQLite")
    row("cycles x symbols", f"{cycles} x 3 = {sc}")
    row("fills", str(fills))
    row("wall time, whole loop", f"{wall:.2f} s", "target < 10 s")
    row("symbol-cycles per second", f"{sc / wall:,.0f}")
    row("baseline (decisions only) wall time", f"{base:.2f} s")
    row("whole loop / baseline", f"{wall / base:.1f}x")
    row("peak memory (process RSS)", f"{peak_rss_mb():.0f} MB")
    return 0 if wall < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
