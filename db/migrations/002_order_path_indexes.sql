-- Indexes for lookups on the order path that scanned whole tables (found by the agent benchmark: the time
-- per live order grew with the number of fills).
-- Ledger.apply_fill counts an order's fills; the risk layer lists the orders of the last two minutes.
CREATE INDEX IF NOT EXISTS fills_order ON fills (client_order_id);
CREATE INDEX IF NOT EXISTS orders_created ON orders (mode, created_ts);
