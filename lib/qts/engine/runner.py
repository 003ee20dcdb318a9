"""The long-running loop process: a PID lock, a status file other processes read, clean shutdown.

The PID file ``run/loop.pid`` is also the loop's lock: :class:`LoopLock` takes an exclusive ``flock`` on it
before a session opens (before the last cycle is read, before ``--fresh`` moves anything), so two
``qts once`` started at the same moment cannot both run the same cycle; the second is refused with
AlreadyRunning. The kernel drops the lock when the process dies (kill -9 included): no stale lock.

SIGTERM or SIGINT sets a stop flag; the current cycle finishes, the status says ``stopped`` and the
PID file is removed. If the cycle fails (disk full, a damaged file) the status says ``crashed`` with the
reason, even when the disk is too full for a new file (it is then overwritten in place, or removed).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import threading
import time

from ..fsutil import StateFileError, check_regular_file, describe_os_error, write_atomic
from ..paths import StateHome
from .status_file import pid_alive, read_pid, read_status  # noqa: F401  (their home; imported from here too)


class AlreadyRunning(RuntimeError):
    exit_code = 2


BUSY_WAIT_S = 0.5  # how long a second caller waits for the lock (covers a reader's momentary shared lock)


def _busy_message(pid) -> str:
    return (f"a trading loop is already running on this state home (pid {pid or '?'}): another cycle is in "
            "progress; wait for it, or stop the loop with `qts stop`")


class LoopLock:
    """The exclusive lock on ``run/loop.pid`` (which then holds this process's pid)."""

    def __init__(self, home: StateHome, fd: int):
        self.home, self.fd = home, fd

    @classmethod
    def acquire(cls, home: StateHome, wait_s: float = BUSY_WAIT_S) -> "LoopLock":
        path = home.pid_file
        safe = f"no cycle ran; remove it (rm -r {path}) if no loop is running"
        deadline = time.monotonic() + wait_s
        while True:
            try:
                home.run_dir.mkdir(parents=True, exist_ok=True)
                check_regular_file(path, "the loop's PID file", safe)
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except StateFileError:
                raise
            except OSError as e:
                raise StateFileError(path, f"the loop's PID file cannot be opened: {describe_os_error(e)}",
                                     safe) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = _pid_in(path)
                # a live pid in the file: a loop holds the lock, refuse now. Otherwise it may be a reader's
                # momentary shared lock (read_pid) or a holder about to write its pid: look again shortly
                if (holder and holder != os.getpid() and pid_alive(holder)) or time.monotonic() > deadline:
                    raise AlreadyRunning(_busy_message(holder)) from None
                time.sleep(0.02)
                continue
            try:  # the file we locked must still be the one at the path (a releasing holder unlinks it)
                same = os.fstat(fd).st_ino == os.stat(path, follow_symlinks=False).st_ino
            except OSError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            except OSError as e:
                os.close(fd)
                raise StateFileError(path, f"the loop's PID file cannot be written: {describe_os_error(e)}",
                                     "no cycle ran") from None
            return cls(home, fd)

    def release(self) -> None:
        if self.fd is None:
            return
        try:  # unlink while still holding the lock; a waiter that locked the old inode sees it is gone
            if os.fstat(self.fd).st_ino == os.stat(self.home.pid_file, follow_symlinks=False).st_ino:
                os.unlink(self.home.pid_file)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


def _pid_in(path) -> int | None:
    try:
        with open(path, "rb") as fh:
            return int(fh.read(32).strip())
    except (OSError, ValueError):
        return None


class Runner:
    def __init__(self, home: StateHome, loop, mode: str, source: str, lock: LoopLock | None = None):
        self.home, self.loop, self.mode, self.source = home, loop, mode, source
        self.lock = lock  # taken before the session opened (cli._open); else run() takes it
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

    def _final_status(self, state: str, **extra) -> None:
        """The last status must not say "running" whatever happened: when a new file cannot be written (disk
        full), overwrite the old one in place (its blocks are already allocated); failing that, remove it
        (a missing file reads "not running")."""
        try:
            self._status(state, **extra)
            return
        except OSError:
            pass
        st = {"state": state, "pid": os.getpid(), "mode": self.mode, "updated": time.time(), **extra}
        raw = json.dumps(st).encode()
        try:
            fd = os.open(self.home.status_file, os.O_WRONLY | os.O_NOFOLLOW)
            try:
                if os.pwrite(fd, raw, 0) != len(raw):
                    raise OSError(errno.ENOSPC, "short write")
                os.ftruncate(fd, len(raw))
            finally:
                os.close(fd)
            return
        except OSError:
            pass
        try:
            os.unlink(self.home.status_file)
        except OSError:
            pass

    def _on_signal(self, signum, frame):
        self.stop.set()

    def run(self, max_cycles: int | None = None, on_cycle=None) -> int:
        if self.lock is None:
            self.lock = LoopLock.acquire(self.home)
        try:
            return self._run_locked(max_cycles, on_cycle)
        finally:
            self.lock.release()

    def _run_locked(self, max_cycles, on_cycle) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._status("running")
        except BaseException:
            for s, h in old.items():
                signal.signal(s, h)
            raise

        def tick(report, n):
            self.cycles, self.last = n, report
            self._status("running")
            from ..reports.daily import maybe_send_daily  # once a day at QTS_SUMMARY_AT; never raises

            maybe_send_daily(self.home, self.loop.store, report.ts, self.loop.broker.mode,
                             getattr(self.loop.feed, "source", None))
            if on_cycle:
                on_cycle(report, n)

        try:
            n = self.loop.run(self.stop, max_cycles=max_cycles, on_cycle=tick)
        except BaseException as e:
            self._final_status("crashed", error=f"{e.__class__.__name__}: {e}")
            if isinstance(e, Exception):  # (not Ctrl-C / SystemExit)
                from ..notify.alerts import on_loop_crashed

                on_loop_crashed(self.home, f"{e.__class__.__name__}: {e}", self.mode, self.source)
            raise
        else:
            if self.loop.halted:
                self._final_status("halted", reason=self.loop.halted)
            else:
                self._final_status("stopped", reason="signal" if self.stop.is_set() else "finished")
            return n
        finally:
            for s, h in old.items():
                signal.signal(s, h)
