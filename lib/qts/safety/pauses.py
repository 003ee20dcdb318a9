"""Paused strategies: a strategy (by the name its decisions carry, or a registry entry id) that takes no new
entries. Its exits still run (a pause reduces risk; it never traps a position).

Pausing is a tightening: free, from the CLI (``qts strategy pause NAME``) or the dashboard (token). Resuming
lets the strategy take risk again, so it counts as a LOOSENING, like HALTED -> ACTIVE: it needs the human's PIN
in their own terminal (``qts strategy resume NAME``), which signs an approval of exactly that strategy at
exactly that version (action ``resume_strategy``).

Persistence: ``<state home>/safety/strategy_pauses.jsonl``, one JSON line per change
``{"version", "strategy", "paused", "ts", "reason", "approval"?}``. Every change is also an ``events`` row
(kind ``strategy_pause``), written after the file, and goes to the per-user anchor (outside the project,
safety/anchor.py). Readers replay the file and the events: a pause line always counts, a resume line only with
a valid PIN-signed approval (so one line appended by hand cannot resume); a strategy paused in ANY of the three
records is paused (a deleted or truncated file, a deleted events row, cannot resume it). A line that does not
parse is skipped; the other copies still hold it. A pause the anchor cannot record (inside Claude Code's sandbox
it is read-only) still holds through the two project copies; a resume the anchor cannot record is refused.
"""

from __future__ import annotations

import json
import re
import time

from ..fsutil import append_jsonl

FILENAME = "strategy_pauses.jsonl"
ACTION_RESUME_STRATEGY = "resume_strategy"
EVENT_KIND = "strategy_pause"
NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_BYTES = 4_000_000


class PauseError(ValueError):
    pass


def path(home):
    return home.safety_dir / FILENAME


def check_name(name) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise PauseError("strategy: a strategy name or registry entry id (letters, digits, _ . : -; 1-100 characters)")
    return name


def _valid(rec) -> bool:
    return (isinstance(rec, dict) and isinstance(rec.get("strategy"), str) and bool(NAME_RE.match(rec["strategy"]))
            and isinstance(rec.get("paused"), bool) and type(rec.get("version")) is int)


def _file_records(home) -> list[dict]:
    try:
        with open(path(home), "rb") as fh:
            raw = fh.read(MAX_BYTES)
    except OSError:
        return []
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if _valid(rec):
            out.append(rec)
    return out


def _event_records(store) -> list[dict]:
    if store is None:
        return []
    try:
        rows = store.query("SELECT data FROM events WHERE kind=? ORDER BY id", (EVENT_KIND,))
    except Exception:
        return []
    out = []
    for r in rows:
        try:
            rec = json.loads(r["data"])
        except (TypeError, ValueError):
            continue
        if _valid(rec):
            out.append(rec)
    return out


def _resume_signed(home, rec: dict, store) -> bool:
    approval = rec.get("approval")
    if not isinstance(approval, dict):
        return False
    try:
        from .grants import verify_approval

        payload = verify_approval(home, approval, ACTION_RESUME_STRATEGY, now=int(approval.get("issued_ts", 0)))
        if not payload or payload.get("strategy") != rec["strategy"] or payload.get("version") != rec["version"]:
            return False
        if store is not None:
            from .approve import key_was_ready

            return key_was_ready(store, home, approval)
        return True
    except Exception:
        return False


def _replay(home, records: list[dict], store) -> dict[str, dict]:
    state: dict[str, dict] = {}
    for rec in sorted(records, key=lambda r: r["version"]):
        name = rec["strategy"]
        if rec["paused"]:
            if name not in state:
                state[name] = {"since_ts": rec.get("ts"), "reason": str(rec.get("reason") or "")[:200],
                               "version": rec["version"]}
        elif name in state and _resume_signed(home, rec, store):
            del state[name]
    return state


def paused(home, store=None) -> dict[str, dict]:
    """{name: {since_ts, reason, ...}} of every paused strategy (file, database copy and per-user anchor: a
    strategy paused in any of them is paused)."""
    from . import anchor

    out = _replay(home, _event_records(store), store)
    for name, v in _replay(home, _file_records(home), store).items():
        out.setdefault(name, v)
    view = anchor.check(home)
    for name, v in (view.paused or {}).items():
        if NAME_RE.match(name):
            out.setdefault(name, {"since_ts": v.get("since_ts"), "reason": str(v.get("reason") or "")[:200],
                                  "version": None, "source": "per-user anchor"})
    return out


def is_paused(paused_map: dict, *names) -> str | None:
    """The first of ``names`` (strategy name, registry entry id) that is paused, else None."""
    for n in names:
        if n and n in paused_map:
            return n
    return None


def _next_version(home, store) -> int:
    recs = _file_records(home) + _event_records(store)
    return max((r["version"] for r in recs), default=0) + 1


def _write(home, store, rec: dict) -> None:
    home.safety_dir.mkdir(parents=True, exist_ok=True)
    append_jsonl(path(home), rec)
    if store is not None:
        what = "paused" if rec["paused"] else "resumed with the PIN"
        store.event(EVENT_KIND, f"strategy {rec['strategy']} {what}: {rec.get('reason') or ''}".rstrip(": "),
                    severity="warning", data=rec, ts=rec["ts"])


def pause(home, name: str, reason: str = "", store=None, now_ms: int | None = None) -> dict:
    """Pause ``name`` (free: a tightening). Returns {"changed", "strategy", "paused": {...}}."""
    name = check_name(name)
    if not isinstance(reason, str) or len(reason) > 200:
        raise PauseError("reason: text of at most 200 characters")
    cur = paused(home, store)
    if name in cur:
        return {"changed": False, "strategy": name, "paused": cur}
    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    rec = {"version": _next_version(home, store), "strategy": name, "paused": True, "ts": ts,
           "reason": reason or "paused"}
    _write(home, store, rec)
    from . import anchor

    anchor.try_record(home, "pause", ts, strategy=name, paused=True, reason=rec["reason"])
    return {"changed": True, "strategy": name, "paused": paused(home, store)}


def resume(home, name: str, signing_key, store=None, now_ms: int | None = None, reason: str = "") -> dict:
    """Resume ``name``: a loosening, so ``signing_key`` (unlocked with the PIN) signs it. PermissionError
    without it."""
    name = check_name(name)
    cur = paused(home, store)
    if name not in cur:
        return {"changed": False, "strategy": name, "paused": cur}
    if signing_key is None:
        raise PermissionError(f"resuming {name} lets it take new entries again: it needs the PIN "
                              f"(qts strategy resume {name}, in your own terminal)")
    from .grants import sign_approval

    ts = int(time.time() * 1000) if now_ms is None else int(now_ms)
    version = _next_version(home, store)
    approval = sign_approval(home, signing_key, ACTION_RESUME_STRATEGY, {"strategy": name, "version": version}, now=ts)
    rec = {"version": version, "strategy": name, "paused": False, "ts": ts, "reason": reason or "resumed with the PIN",
           "approval": approval}
    if not _resume_signed(home, rec, store):
        raise PermissionError(f"{name}: the PIN approval does not verify; it stays paused")
    from . import anchor

    try:  # the anchor first: if it cannot record the resume, every reader keeps the strategy paused anyway
        anchor.record(home, "pause", ts, strategy=name, paused=False, signed=True)
    except anchor.AnchorError as e:
        raise PermissionError(f"{e}: {name} stays paused") from None
    _write(home, store, rec)
    after = paused(home, store)
    if name in after:
        raise PermissionError(f"{name}: the PIN approval did not verify; it stays paused")
    return {"changed": True, "strategy": name, "paused": after}
