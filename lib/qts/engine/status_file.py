"""The loop's status file and whether a process is alive: what `qts status`, the monitor and the reports
read without the runner (which imports the reporting side for its daily summary). Standard library only."""

from __future__ import annotations

import fcntl
import json
import os

from ..fsutil import describe_os_error
from ..paths import StateHome


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
    """The loop's status file. Missing: "not running". Damaged (unreadable, not JSON, not a status):
    state "unknown" with the problem named in ``reason``: never a traceback, never "running"."""
    path = home.status_file

    def unknown(problem: str) -> dict:
        return {"state": "unknown", "reason": f"{path}: {problem}", "problem": f"{path}: {problem}"}

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {"state": "not running"}
    except OSError as e:
        return unknown(f"cannot be read: {describe_os_error(e)}")
    try:
        st = json.loads(raw.decode("utf-8"))
    except ValueError:
        return unknown("not JSON (damaged)" if raw.strip() else "empty")
    if not isinstance(st, dict) or not isinstance(st.get("state"), str):
        return unknown("not a loop status (no state)")
    try:
        pid = int(st.get("pid") or 0)
    except (TypeError, ValueError):
        return unknown(f"pid {st.get('pid')!r} is not a number")
    if st["state"] == "running" and not pid_alive(pid):
        st["state"] = "dead"  # the process ended without cleaning up (kill -9, crash)
    return st


def read_pid(home: StateHome) -> int | None:
    """The pid of the process holding the loop's lock; None when nobody holds it (a pid left in the file by
    a crashed loop, or written there by hand, is not trusted: ``qts stop`` must not signal a stranger)."""
    try:
        fd = os.open(home.pid_file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: a loop runs
        except OSError:
            return None
        else:
            return None  # nobody holds it (our shared lock is dropped with the fd below)
        try:
            pid = int(os.pread(fd, 32, 0).strip())
        except (OSError, ValueError):
            return None
    finally:
        os.close(fd)
    return pid if pid_alive(pid) else None
