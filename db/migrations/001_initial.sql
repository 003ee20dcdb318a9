-- 001: the initial schema. Timestamps are integer milliseconds since the epoch (UTC); in a replay
-- they are the simulated clock's. Amounts are in base units, prices and money in the quote currency.
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    client_order_id TEXT NOT NULL UNIQUE,   -- ours, deterministic, written before the order is sent
    exchange_order_id TEXT,
    mode TEXT NOT NULL CHECK (mode IN ('paper', 'live')),
    symbol TEXT NOT NULL,
    side TEXT NOT NULL CHECK (side IN ('buy', 'sell')),
    type TEXT NOT NULL CHECK (type IN ('market', 'limit')),
    amount REAL NOT NULL CHECK (amount > 0),
    price REAL,                              -- limit price; NULL for market orders
    status TEXT NOT NULL,                    -- intent, sent, open, partially_filled, filled, cancelled, rejected
    filled REAL NOT NULL DEFAULT 0,
    avg_price REAL,
    fee REAL NOT NULL DEFAULT 0,
    strategy TEXT,
    reason TEXT,
    stop_loss REAL,
    take_profit REAL,
    created_ts INTEGER NOT NULL,
    updated_ts INTEGER NOT NULL
);
CREATE INDEX orders_open ON orders (mode, status);

CREATE TABLE order_status_history (
    id INTEGER PRIMARY KEY,
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    status TEXT NOT NULL,
    ts INTEGER NOT NULL,
    detail TEXT
);
CREATE INDEX order_status_history_order ON order_status_history (client_order_id);

CREATE TABLE fills (
    id INTEGER PRIMARY KEY,
    fill_id TEXT NOT NULL UNIQUE,            -- idempotency: a fill is recorded exactly once
    client_order_id TEXT NOT NULL REFERENCES orders (client_order_id),
    mode TEXT NOT NULL,
    symbol TEXT NOT NULL,
    side TEXT NOT NULL,
    amount REAL NOT NULL CHECK (amount > 0),
    price REAL NOT NULL CHECK (price > 0),
    fee REAL NOT NULL DEFAULT 0,
    fee_currency TEXT,
    realized_pnl REAL NOT NULL DEFAULT 0,    -- gross, on sells: (price - avg entry) * amount
    ts INTEGER NOT NULL
);
CREATE INDEX fills_symbol ON fills (mode, symbol, ts);

CREATE TABLE positions (
    mode TEXT NOT NULL,
    symbol TEXT NOT NULL,
    amount REAL NOT NULL DEFAULT 0,
    avg_entry REAL NOT NULL DEFAULT 0,
    realized_pnl REAL NOT NULL DEFAULT 0,    -- gross realized while this position has been open
    fees REAL NOT NULL DEFAULT 0,            -- fees paid while this position has been open
    strategy TEXT,
    opened_ts INTEGER,
    opened_fill_id INTEGER,                  -- first fill of the current round trip
    updated_ts INTEGER NOT NULL,
    PRIMARY KEY (mode, symbol)
);

CREATE TABLE balances (
    mode TEXT NOT NULL,
    asset TEXT NOT NULL,
    free REAL NOT NULL,
    updated_ts INTEGER NOT NULL,
    PRIMARY KEY (mode, asset)
);

CREATE TABLE closed_trades (
    id INTEGER PRIMARY KEY,
    mode TEXT NOT NULL,
    symbol TEXT NOT NULL,
    strategy TEXT,
    entry_ts INTEGER NOT NULL,
    exit_ts INTEGER NOT NULL,
    amount REAL NOT NULL,                    -- largest size held during the trade
    entry_price REAL NOT NULL,               -- average entry
    exit_price REAL NOT NULL,                -- average exit
    gross_pnl REAL NOT NULL,
    fees REAL NOT NULL,
    pnl REAL NOT NULL,                       -- gross_pnl - fees
    return_pct REAL NOT NULL,
    exit_reason TEXT
);
CREATE INDEX closed_trades_exit ON closed_trades (mode, exit_ts);

CREATE TABLE equity_snapshots (
    id INTEGER PRIMARY KEY,
    mode TEXT NOT NULL,
    ts INTEGER NOT NULL,
    equity REAL NOT NULL,
    cash REAL NOT NULL,
    positions_value REAL NOT NULL,
    unrealized_pnl REAL NOT NULL,
    realized_pnl REAL NOT NULL
);
CREATE INDEX equity_snapshots_ts ON equity_snapshots (mode, ts);

CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    ts INTEGER NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}'          -- JSON object of string -> string
);
CREATE INDEX metrics_name_ts ON metrics (name, ts);

CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    ts INTEGER NOT NULL,
    kind TEXT NOT NULL,                      -- breaker, kill_switch, approval, error, config, loop, gate ...
    severity TEXT NOT NULL DEFAULT 'info' CHECK (severity IN ('debug', 'info', 'warning', 'error', 'critical')),
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX events_kind_ts ON events (kind, ts);

CREATE TABLE decisions (
    id INTEGER PRIMARY KEY,
    cycle_id TEXT NOT NULL,
    ts INTEGER NOT NULL,                     -- the candle close the cycle acted on
    mode TEXT NOT NULL,
    symbol TEXT NOT NULL,
    strategy TEXT NOT NULL,
    inputs TEXT NOT NULL,                    -- JSON: params, last candles window bounds, position, equity
    outputs TEXT NOT NULL,                   -- JSON: target, intent (or null), order result
    reason_codes TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX decisions_cycle ON decisions (cycle_id);
CREATE INDEX decisions_ts ON decisions (mode, ts);
