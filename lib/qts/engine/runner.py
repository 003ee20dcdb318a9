"""The long-running loop process: a PID file, a status file other processes read, clean shutdown.

SIGTERM or SIGINT sets a stop flag; the current cycle finishes, the status says ``stopped`` and the
PID file is removed. A second runner on the same state home is refused while the first is alive.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from ..fsutil import write_atomic
from ..paths import StateHome


class AlreadyRunning(RuntimeError):
    pass


def read_pid(home: StateHome) -> int | None:
    try:
        pid = int(home.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (exited, not yet reaped) is not running
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][:1] != "Z"
    except OSError:
        return True


def read_status(home: StateHome) -> dict:
    try:
        st = json.loads(home.status_file.read_text())
    except (OSError, ValueError):
        return {"state": "not running"}
    if st.get("state") == "running" and not pid_alive(int(st.get("pid", 0))):
        st["state"] = "dead"  # the process ended without cleaning up (kill -9, crash)
    return st


class Runner:
    def __init__(self, home: StateHome, loop, mode: str, source: str):
        self.home, self.loop, self.mode, self.source = home, loop, mode, source
        self.stop = threading.Event()
        self.started = time.time()
        self.cycles = 0
        self.last = None

    def _status(self, state: str, **extra) -> None:
        st = {"state": state, "pid": os.getpid(), "mode": self.mode, "source": self.source,
              "started": self.started, "cycles": self.cycles, "interval_min": self.loop.settings.TRADE_INTERVAL,
              "updated": time.time(), **extra}
        if self.last:
            st.update({"last_cycle_ts": self.last.ts, "equity": self.last.equity, "cash": self.last.cash,
                       "next_cycle_ts": self.last.ts + self.loop.interval_ms})
        write_atomic(self.home.status_file, json.dumps(st, indent=1))

    def _on_signal(self, signum, frame):
        self.stop.set()

    def run(self, max_cycles: int | None = None, on_cycle=None) -> int:
        self.home.ensure()
        other = read_pid(self.home)
        if other and other != os.getpid():
            raise AlreadyRunning(f"a trading loop is already running (pid {other}); stop it with `qts stop`")
        write_atomic(self.home.pid_file, str(os.getpid()))
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        self._status("running")

        def tick(report, n):
            self.cycles, self.last = n, report
            self._status("running")
            if on_cycle:
                on_cycle(report, n)

        try:
            n = self.loop.run(self.stop, max_cycles=max_cycles, on_cycle=tick)
            if self.loop.halted:
                self._status("halted", reason=self.loop.halted)
            else:
                self._status("stopped", reason="signal" if self.stop.is_set() else "finished")
            return n
        except BaseException as e:
            self._status("crashed", error=f"{e.__class__.__name__}: {e}")
            raise
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            try:
                if self.home.pid_file.read_text().strip() == str(os.getpid()):
                    self.home.pid_file.unlink()
            except OSError:
                pass
