"""Durable file writes. Standard library only (used by hooks).

``append_jsonl`` appends one JSON record, flushes and fsyncs it before returning, so a record that
was reported written survives a crash. ``write_atomic`` replaces a file in one step (temp + fsync +
rename), so readers never see half a file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import stat
import time
from contextlib import contextmanager
from pathlib import Path


class StateFileError(OSError):
    """A file of the state home is missing, damaged or cannot be written. ``str()`` is one line that names
    the file, what is wrong with it and what that means (the safe reading); the CLI prints it and exits 2.
    An OSError, so code that already handled a failed read or write of a state file still does."""

    exit_code = 2

    def __init__(self, path, problem: str, safe_reading: str):
        self.path, self.problem, self.safe_reading = Path(path), problem, safe_reading
        self.message = " ".join(f"{self.path}: {problem}; {safe_reading}".split())  # one line, always
        super().__init__(self.message)

    def __str__(self):
        return self.message


def describe_os_error(e: OSError) -> str:
    """``[Errno 28] No space left on device`` without the file name (the caller names the file)."""
    if e.errno == errno.ENOSPC:
        return "the disk is full (no space left on device)"
    if e.errno == errno.ELOOP:
        return "is a symbolic link (refused: state files must be regular files)"
    if e.errno == errno.EISDIR:
        return "is a folder, not a file"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return f"{e.strerror or e.__class__.__name__} (errno {e.errno})"


def check_regular_file(path: Path, what: str, safe_reading: str) -> bool:
    """True when ``path`` is a regular file, False when it does not exist; StateFileError when something
    else stands in its place (a folder, a symbolic link, a device): such a file is never read or written
    through, since a link to /dev/null or to another state home would silently swallow or mix records."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StateFileError(path, f"{what} cannot be inspected: {describe_os_error(e)}", safe_reading) from None
    if stat.S_ISLNK(st.st_mode):
        raise StateFileError(path, f"{what} is a symbolic link (to {os.readlink(path)}), not a regular file",
                             safe_reading)
    if stat.S_ISDIR(st.st_mode):
        raise StateFileError(path, f"{what} is a folder, not a file", safe_reading)
    if not stat.S_ISREG(st.st_mode):
        raise StateFileError(path, f"{what} is not a regular file", safe_reading)
    return True


def finite_json(obj, path: str = "", bad: list | None = None):
    """``obj`` with every NaN/Infinity float replaced by None; the JSON paths replaced go to ``bad``.
    (Python's json writes NaN as a bare ``NaN``, which SQLite's json functions reject as malformed.)"""
    if isinstance(obj, float) and not math.isfinite(obj):
        if bad is not None:
            bad.append(path or "$")
        return None
    if isinstance(obj, dict):
        return {k: finite_json(v, f"{path}.{k}" if path else str(k), bad) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v, f"{path}[{i}]", bad) for i, v in enumerate(obj)]
    return obj


def _json_default(o):
    if hasattr(o, "isoformat"):
        return o.isoformat()
    if hasattr(o, "model_dump"):
        return o.model_dump()
    return str(o)


def dumps(obj) -> str:
    """Compact JSON that is always valid JSON: NaN/Infinity become null, with the fields named under
    ``"nonfinite"`` when ``obj`` is a dict (so a reader sees that a number was not finite, not just absent)."""
    bad: list = []
    clean = finite_json(_plain(obj), "", bad)
    if bad and isinstance(clean, dict):
        clean["nonfinite"] = bad
    return json.dumps(clean, default=_json_default, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _plain(obj):
    """Objects json cannot write (dates, models) turned into what they dump as, so NaN inside is found too."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return _plain(_json_default(obj))


APPEND_SAFE = "the record was not written"


def append_jsonl(path: Path, record: dict, sync: bool = True) -> None:
    """Append one record. Never through a symbolic link (O_NOFOLLOW: a link to /dev/null would swallow
    every record); a failure (disk full, a folder in the way) is a StateFileError naming the file."""
    path = Path(path)
    line = (dumps(record) + "\n").encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        raise StateFileError(path, f"cannot be opened for appending: {describe_os_error(e)}", APPEND_SAFE) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise StateFileError(path, "is not a regular file", APPEND_SAFE)
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":
            line = b"\n" + line  # a torn last line (crash mid-write) must not swallow this record
        written = os.write(fd, line)
        if written != len(line):  # a short write (disk full): take the fragment back, keep the file whole
            os.ftruncate(fd, end)
            raise OSError(errno.ENOSPC, "short write")
        if sync:
            os.fsync(fd)
    except OSError as e:
        raise StateFileError(path, f"cannot be appended to: {describe_os_error(e)}", APPEND_SAFE) from None
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Replace ``path`` in one step. On failure (disk full, a folder in the way) the old file is left as
    it was, the temporary file is removed, and a StateFileError names the file."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            if os.write(fd, raw) != len(raw):
                raise OSError(errno.ENOSPC, "short write")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StateFileError(path, f"cannot be written: {describe_os_error(e)}",
                             "the previous contents are unchanged") from None
    try:
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def read_jsonl(path: Path) -> list[dict]:
    """Read JSON lines, leniently: a line that is not a JSON object (a torn write, damage) is skipped.
    For logs that are only looked at; the trades journal is read with :func:`read_jsonl_strict`."""
    out = []
    try:
        with open(path, "rb") as fh:
            for raw in fh:
                try:
                    rec = json.loads(raw.decode("utf-8").strip() or "null")
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    out.append(rec)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    return out


def _torn(raw: bytes) -> bool:
    """A line a crash mid-append leaves: the start of a record (``{"``) that never got its end, or the
    zeros some file systems leave after a power loss. Anything else that does not parse is damage."""
    body = raw.strip()
    if not body.strip(b"\0"):
        return True
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return text.startswith('{"') and not text.endswith("}")


def read_jsonl_strict(path: Path, what: str, safe_reading: str, required: tuple = ()) -> list[dict]:
    """Read a JSON-lines record file that must be whole: a missing file is empty; a folder, a link, an
    unreadable file, or a line that is neither a JSON object with the ``required`` keys nor a torn
    write (see :func:`_torn`) is a StateFileError naming the file and the line."""
    path = Path(path)
    if not check_regular_file(path, what, safe_reading):
        return []
    out = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except ValueError:
                    if _torn(raw):
                        continue
                    raise StateFileError(path, f"{what}: line {n} is not JSON (damaged)", safe_reading) from None
                if not isinstance(rec, dict) or any(k not in rec for k in required):
                    missing = [k for k in required if not isinstance(rec, dict) or k not in rec]
                    raise StateFileError(path, f"{what}: line {n} is not a record of this file"
                                         + (f" (no {', '.join(missing)})" if missing else ""), safe_reading)
                out.append(rec)
    except StateFileError:
        raise
    except OSError as e:
        raise StateFileError(path, f"{what} cannot be read: {describe_os_error(e)}", safe_reading) from None
    return out


class LockTimeout(TimeoutError):
    pass


@contextmanager
def file_lock(path: Path, timeout_s: float = 30.0):
    """Exclusive advisory lock (flock) on ``path``, serialising read-modify-write of state files.
    Raises LockTimeout naming the file when another process holds it for longer than ``timeout_s``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{path} is held by another process; try again") from None
                time.sleep(0.02)
        yield
    finally:
        os.close(fd)


SQLITE_MAGIC = b"SQLite format 3\x00"


def sqlite_file_problem(path) -> str | None:
    """What is wrong with a SQLite database file's size and header, read without SQLite: None when nothing,
    "" when the file is empty (created, never written: a new database), else the problem in words. Another
    process creating or checkpointing the database passes through states that look damaged (page 1 with the
    new page count is written before the pages themselves), so only a problem that persists for about 0.4 s
    counts. Standard library only: the hooks' kill-switch reading uses it."""
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        time.sleep(delay)
        problem = _sqlite_file_problem_now(path)
        if not problem:
            return problem
    return problem


def _sqlite_file_problem_now(path) -> str | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, 100, 0)
        finally:
            os.close(fd)
    except OSError as e:
        return f"the database cannot be read: {describe_os_error(e)}"
    if size == 0:
        try:  # SQLite writes the main file's first page before any WAL frame: a log beside an empty file is damage
            wal_size = os.lstat(f"{path}-wal").st_size
        except OSError:
            wal_size = 0
        return "the database is empty but its write-ahead log is not (cut off)" if wal_size else ""
    if header[:16] != SQLITE_MAGIC:
        return "is not a SQLite database (damaged or overwritten)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_valid = header[24:28] == header[92:96]  # the in-header page count is current only when these match
    if page_size < 512 or size % page_size or (header_valid and size < pages * page_size):
        return (f"the database is truncated ({size} bytes, its header says "
                f"{f'{pages * page_size} bytes' if header_valid else 'whole pages'})")
    return None
