"""The agent's journal: one JSON line per event, hash-chained and authenticated. Standard library only.

Each line carries ``seq``, ``prev`` (the previous line's ``mac``) and ``mac`` = HMAC-SHA256 over the
rest of the line, under a key derived from the PIN's signing key for this purpose only (so the journal
key signs nothing else, and nothing else can forge a line). Reading it back says precisely what is
wrong: a line edited, removed or inserted breaks the chain; a journal cut short or rolled back verifies
but ends early, which the agent detects by comparing it with the exchange's own order list.

The journal lives outside the project (agent/paths.py), where the sandboxed assistant cannot write.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

GENESIS = "0" * 64


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str).encode()


def _mac(key: bytes, rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k != "mac"}
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


@dataclass
class Verified:
    records: list[dict] = field(default_factory=list)
    problem: str | None = None   # None: the whole file verified
    exists: bool = True


def read(path: Path, key: bytes) -> Verified:
    """Every line that verifies, in order, up to the first that does not (named in ``problem``)."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return Verified([], None, exists=False)
    except OSError as e:
        return Verified([], f"the journal {path} cannot be read ({e.__class__.__name__})")
    out: list[dict] = []
    prev = GENESIS
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line.decode("utf-8"))
            if not isinstance(rec, dict):
                raise ValueError("not an object")
        except (ValueError, UnicodeDecodeError):
            return Verified(out, f"journal line {n} is not readable JSON")
        if rec.get("seq") != len(out) + 1 or rec.get("prev") != prev:
            return Verified(out, f"journal line {n} does not follow line {n - 1} (removed, inserted or reordered)")
        if not hmac.compare_digest(str(rec.get("mac", "")), _mac(key, rec)):
            return Verified(out, f"journal line {n} does not verify (edited, or written with another PIN key)")
        out.append(rec)
        prev = rec["mac"]
    return Verified(out, None)


class Journal:
    """Append-only writer; ``fsync`` on records that change what the agent allows."""

    def __init__(self, path: Path, key: bytes, records: list[dict]):
        self.path, self.key = Path(path), key
        self.seq = records[-1]["seq"] if records else 0
        self.prev = records[-1]["mac"] if records else GENESIS
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @classmethod
    def restart(cls, path: Path, key: bytes, keep: list[dict]) -> "Journal":
        """Start over from the verified records ``keep`` (the damaged file is kept beside, renamed)."""
        path = Path(path)
        if path.exists():
            os.replace(path, path.with_name(f"{path.name}.damaged-{int(time.time())}"))
        j = cls(path, key, [])
        for rec in keep:
            j.append(rec["kind"], rec.get("data") or {}, ts=rec.get("ts"), sync=False)
        os.fsync(j.fd)
        return j

    def append(self, kind: str, data: dict, *, ts: int | None = None, sync: bool = True) -> dict:
        rec = {"seq": self.seq + 1, "ts": int(ts if ts is not None else time.time() * 1000), "kind": kind,
               "data": data, "prev": self.prev}
        rec["mac"] = _mac(self.key, rec)
        os.write(self.fd, _canonical(rec) + b"\n")
        if sync:
            os.fsync(self.fd)
        self.seq, self.prev = rec["seq"], rec["mac"]
        return rec

    def close(self) -> None:
        try:
            os.fsync(self.fd)
            os.close(self.fd)
        except OSError:
            pass
