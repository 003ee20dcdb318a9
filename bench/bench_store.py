"""What the damage checks cost: opening the state database (file checks, header, schema, journal check)
and taking the loop's lock, on a state home with a day of paper trading (generated market, offline).

Target (issue 11): every command opens the database once; the checks add well under 5 ms to an open,
and the loop's lock (taken once per `qts run` or `qts once`) is taken and released in under 10 ms (most of it
is the file system freeing the unlinked PID file on close).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time

from common import row


def _median_p90(fn, n: int = 100) -> tuple[float, float]:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1000)
    ts.sort()
    return ts[n // 2], ts[int(n * 0.9)]


def main() -> int:
    from qts.config import load_settings
    from qts.engine.runner import LoopLock
    from qts.engine.session import make_feed, open_session
    from qts.paths import StateHome
    from qts.store import Store, connect, migrate

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(environ={"QTS_HOME": tmp})
        session = open_session(settings, make_feed(settings, "synthetic", days=1))
        session.loop.run(threading.Event())
        fills = session.store.scalar("SELECT COUNT(*) FROM fills")
        decisions = session.store.scalar("SELECT COUNT(*) FROM decisions")
        session.close()
        home = StateHome(tmp)
        Store.open(home).close()  # builds the reference schema once per process

        def plain():
            c = connect(home.db_path)
            migrate(c)
            c.close()

        checked = _median_p90(lambda: Store.open(home).close())
        bare = _median_p90(plain)

        def lock():
            LoopLock.acquire(home).release()

        locked = _median_p90(lock)
    print(f"store: open the state database ({fills} fills, {decisions} decisions in it)")
    row("Store.open with damage checks, median", f"{checked[0]:.2f} ms", f"p90 {checked[1]:.2f} ms")
    row("connect + migrate only, median", f"{bare[0]:.2f} ms", f"p90 {bare[1]:.2f} ms")
    row("checks' cost, median", f"{checked[0] - bare[0]:.2f} ms", "target < 5 ms")
    row("loop lock take + release, median", f"{locked[0]:.3f} ms", f"p90 {locked[1]:.3f} ms; target < 10 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
