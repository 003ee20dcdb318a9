-- What a decision needs to be re-run exactly (qts replay --verify): the candles the strategy and the
-- risk layer saw, by content, and the risk profiles in force, by hash. A decision's inputs JSON holds
-- the references (window bounds, content hash, source, profile hash, the account state before).
CREATE TABLE candles_seen (
    source TEXT NOT NULL,                    -- the feed's source ("synthetic(seed=7)", "replay:DIR", "ccxt:binance")
    symbol TEXT NOT NULL,
    timeframe_ms INTEGER NOT NULL,
    ts INTEGER NOT NULL,                     -- candle open time
    open REAL NOT NULL,
    high REAL NOT NULL,
    low REAL NOT NULL,
    close REAL NOT NULL,
    volume REAL NOT NULL,
    PRIMARY KEY (source, symbol, timeframe_ms, ts)
) WITHOUT ROWID;

CREATE TABLE replay_blobs (
    hash TEXT PRIMARY KEY,                   -- sha256 of body
    kind TEXT NOT NULL,                      -- risk_profile
    body TEXT NOT NULL                       -- canonical JSON
);
