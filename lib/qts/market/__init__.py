"""Market data behind one interface (:class:`qts.market.feed.MarketFeed`): candle-file replay on a
simulated clock, generated (synthetic) candles, and ccxt public data."""
