"""Raw sqlite3 against sqlite-utils on the paths where either could serve (issue 15), on a state home with
N_EVENTS events (each with a JSON data column, as the gate and the broker write them).

1. The trading path's writes: ``Store.event`` (one INSERT on the open connection) against
   ``sqlite_utils`` ``db["events"].insert(row)`` on the same connection, per call.
2. The trading path's reads: ``Store.query`` (rows as dicts) against ``db.query`` over the same SELECT.
3. ``qts db query``: :func:`qts.store.query.run_query` (a read-only connection opened per call).
4. ``qts db export``: :func:`qts.store.query.export_table` (sqlite-utils ``table.rows``) against a raw cursor
   writing the same CSV.
5. ``import sqlite_utils`` (it pulls in pandas): what the first sqlite-utils call in a process costs.

Whichever is slower on a path keeps the other: the figures decide, see README "Dependencies".
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import row

N_EVENTS = 50_000
N_WRITES = 2_000


def _best(fn, n: int = 5) -> float:
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    from qts.paths import StateHome
    from qts.store import Store
    from qts.store.query import export_table, run_query

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import sqlite_utils; "
                        "print(time.perf_counter()-t)"], capture_output=True, text=True)
    row("import sqlite_utils (fresh process)", f"{float(r.stdout) * 1000:.0f} ms", "pandas comes with it")
    del t0
    import sqlite_utils

    with tempfile.TemporaryDirectory() as tmp:
        home = StateHome(Path(tmp) / "home").ensure()
        store = Store.open(home)
        store.fsync_journal = False
        data = {"code": "RISK_SIZING", "intent": {"symbol": "BTC/USDT", "side": "buy", "amount": 0.01}}

        def raw_writes():
            with store.tx():
                for i in range(N_WRITES):
                    store.event("bench", f"event {i}", data=data)

        db = sqlite_utils.Database(store.conn, recursive_triggers=False)

        def su_writes():
            with store.tx():
                for i in range(N_WRITES):
                    db["events"].insert({"ts": 1, "kind": "bench", "severity": "info", "message": f"event {i}",
                                         "data": data})

        raw_w, su_w = _best(raw_writes, 3), _best(su_writes, 3)
        row("event insert: Store.event (raw)", f"{raw_w / N_WRITES * 1e6:.1f} us/row")
        row("event insert: sqlite-utils insert", f"{su_w / N_WRITES * 1e6:.1f} us/row", f"x{su_w / raw_w:.1f}")

        with store.tx():
            store.conn.executemany(
                "INSERT INTO events (ts, kind, severity, message, data) VALUES (?,?,?,?,?)",
                [(i, "bench", "info", f"event {i}", '{"i": %d}' % i) for i in range(N_EVENTS)])
        total = store.scalar("SELECT COUNT(*) FROM events")
        sql = "SELECT * FROM events WHERE kind='bench' ORDER BY id"
        raw_r = _best(lambda: store.query(sql))
        su_r = _best(lambda: list(db.query(sql)))
        ro_r = _best(lambda: run_query(home, sql, max_rows=10 ** 6))
        row(f"read {total} rows: Store.query (raw)", f"{raw_r * 1000:.0f} ms")
        row(f"read {total} rows: sqlite-utils db.query", f"{su_r * 1000:.0f} ms", f"x{su_r / raw_r:.2f}")
        row(f"read {total} rows: run_query (ro, raw)", f"{ro_r * 1000:.0f} ms", f"x{ro_r / raw_r:.2f}")

        out = Path(tmp) / "events.csv"

        def raw_export():
            cur = store.conn.execute("SELECT * FROM events")
            with open(out, "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow([d[0] for d in cur.description])
                w.writerows(tuple(r) for r in cur)

        raw_e = _best(raw_export, 3)
        su_e = _best(lambda: export_table(home, "events", out), 3)
        row(f"export {total} rows CSV: raw cursor", f"{raw_e * 1000:.0f} ms")
        row(f"export {total} rows CSV: export_table", f"{su_e * 1000:.0f} ms", f"x{su_e / raw_e:.2f} (sqlite-utils rows)")
        store.close()


if __name__ == "__main__":
    main()
