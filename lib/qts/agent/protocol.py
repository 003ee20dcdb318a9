"""How anyone talks to the trading agent. Standard library only: the kill switch's first path and the
hooks use it without the virtualenv.

A request is one JSON object ``{"v": 1, "id", "op", "params", "ts"}``; the answer is one JSON object
``{"v": 1, "id", "ok", "code", "message", "data"}``. Two transports carry the same messages:

* the SPOOL, a folder in the project's state home (``agent/spool/in`` and ``agent/spool/out``): the
  client writes ``in/<id>.json`` atomically (a dot-file renamed into place), the agent answers in
  ``out/<id>.json``. It works inside Claude Code's sandbox, which on Linux blocks Unix sockets.
* the SOCKET, ``<runtime>/<home-id>.sock`` (mode 0600): one JSON line each way, for the human's own
  shell and for benchmarks; the agent checks the peer's uid.

Nothing a client writes is trusted: the agent decides every request itself, and anything that
loosens its policy carries a signature made with the PIN (see ``challenge.py``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from pathlib import Path

from .paths import AgentPaths

VERSION = 1
MAX_MESSAGE = 256 * 1024
HEARTBEAT_STALE_S = 5.0

# ops anyone may send; everything else the agent refuses
READ_OPS = ("ping", "status", "account", "challenge")
TIGHTEN_OPS = ("engage", "halt", "reduce", "trip", "revoke", "lower", "cancel")
TRADE_OPS = ("order",)
LOOSEN_OPS = ("loosen",)
ALL_OPS = READ_OPS + TIGHTEN_OPS + TRADE_OPS + LOOSEN_OPS


class AgentUnavailable(RuntimeError):
    """No trading agent answered. The message says how the human starts one."""


START_HINT = ("the human starts it in their own terminal: `qts agent start` (or hooks/guard_approve.sh live); "
              "it asks for the PIN there, never in the chat")


def new_id() -> str:
    return secrets.token_hex(12)


def request(op: str, params: dict | None = None, rid: str | None = None) -> dict:
    return {"v": VERSION, "id": rid or new_id(), "op": op, "params": params or {}, "ts": int(time.time() * 1000)}


def dumps(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str).encode("utf-8")


def parse(raw: bytes) -> dict:
    """A request or answer, checked for shape. ValueError names what is wrong."""
    if len(raw) > MAX_MESSAGE:
        raise ValueError(f"message larger than {MAX_MESSAGE} bytes")
    obj = json.loads(raw.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("message is not a JSON object")
    if obj.get("v") != VERSION:
        raise ValueError(f"v: protocol version must be {VERSION}")
    rid = obj.get("id")
    if not (isinstance(rid, str) and 8 <= len(rid) <= 64 and all(c in "0123456789abcdef" for c in rid)):
        raise ValueError("id: 8 to 64 lowercase hex characters")
    return obj


# -- agent liveness ----------------------------------------------------------------------------------

def read_status(paths: AgentPaths) -> dict | None:
    """The agent's own status file (outside the project), or None when there is none or it is garbled."""
    try:
        raw = paths.status_file.read_bytes()
        st = json.loads(raw.decode("utf-8")) if len(raw) < MAX_MESSAGE else None
        return st if isinstance(st, dict) else None
    except (OSError, ValueError):
        return None


def agent_alive(paths: AgentPaths, status: dict | None = None) -> bool:
    """A fresh heartbeat in the status file. (Inside the sandbox the agent's pid is not visible: its own
    PID namespace. The heartbeat is what counts.)"""
    st = status if status is not None else read_status(paths)
    if not st or st.get("state") not in ("running", "starting"):
        return False
    try:
        return time.time() - float(st.get("heartbeat", 0)) < HEARTBEAT_STALE_S
    except (TypeError, ValueError):
        return False


# -- transports --------------------------------------------------------------------------------------

class SocketClient:
    """One connection to the agent's socket; several requests in turn (benchmarks, the human's shell)."""

    def __init__(self, paths: AgentPaths, timeout_s: float = 30.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(str(paths.socket))
        except OSError:
            self.sock.close()
            raise
        self.buf = b""

    def call(self, req: dict) -> dict:
        self.sock.sendall(dumps(req) + b"\n")
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the agent closed the connection")
            self.buf += chunk
            if len(self.buf) > MAX_MESSAGE:
                raise ValueError("answer too large")
        line, self.buf = self.buf.split(b"\n", 1)
        return parse(line)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def spool_call(paths: AgentPaths, req: dict, timeout_s: float = 30.0) -> dict:
    """Drop ``req`` in the spool and wait for the agent's answer. AgentUnavailable on timeout."""
    paths.spool_in.mkdir(parents=True, exist_ok=True)
    paths.spool_out.mkdir(parents=True, exist_ok=True)
    out = paths.spool_out / f"{req['id']}.json"
    _write_atomic(paths.spool_in / f"{req['id']}.json", dumps(req))
    deadline = time.monotonic() + timeout_s
    pause = 0.002
    while time.monotonic() < deadline:
        try:
            raw = out.read_bytes()
        except FileNotFoundError:
            time.sleep(pause)
            pause = min(pause * 1.5, 0.05)
            continue
        try:
            ans = parse(raw)
        except ValueError:  # being written: the agent renames into place, so this is someone else's file
            time.sleep(pause)
            continue
        try:
            out.unlink()
        except OSError:
            pass
        if ans.get("id") != req["id"]:
            raise ValueError("the answer in the spool does not match the request")
        return ans
    try:  # nobody picked it up: take it back, so a later agent does not act on a stale request
        (paths.spool_in / f"{req['id']}.json").unlink()
    except OSError:
        pass
    raise AgentUnavailable(f"no trading agent answered within {timeout_s:g} s: {START_HINT}")


def call(paths: AgentPaths, op: str, params: dict | None = None, *, timeout_s: float = 30.0,
         transport: str = "auto") -> dict:
    """Send one request; the socket when it is reachable (the human's shell), else the spool (the
    sandbox). AgentUnavailable when no agent is running."""
    req = request(op, params)
    status = read_status(paths)
    if not agent_alive(paths, status):
        raise AgentUnavailable(f"no trading agent is running for this state home ({paths.home_root}): {START_HINT}")
    if transport in ("auto", "socket"):
        try:
            with SocketClient(paths, timeout_s) as c:
                return dict(c.call(req), transport="socket")
        except (OSError, ConnectionError):
            if transport == "socket":
                raise
    # (an answer from the spool could have been written by anyone who can write the project: callers that
    # act on it say so, see kill.py)
    return dict(spool_call(paths, req, timeout_s), transport="spool")
