"""Kill switch: stop everything at once, from any shell.

Engaging is cheap and needs nothing: (1) a durable flag file, written atomically, and an event in
the database; (2) the loop process is sent SIGTERM; (3) every open order is cancelled and every
position closed with market orders through the gate (the only orders it lets through while
engaged), with retries; (4) a report of what was done and what could not be. Running it again is
safe and retries whatever is left (an unreachable exchange leaves the flag set).

Fail safe: the switch counts as engaged if the flag file exists (whatever it holds, even garbage or
unreadable) OR the database's last kill-switch record is an engagement OR the per-user anchor (anchor.py,
outside the project) records one or finds the state home deleted, rolled back or re-created. Deleting the
flag, the database or the whole state home therefore does not release it. A flag set alone (the hook's
standard-library first step, or with the database unavailable) is recorded in the database by the next
status check that has it. Only a reset with the PIN releases it: :func:`reset` refuses a key still in its
cool-down up front, signs the reset, and records it in the anchor, the one record every reader trusts for
a reset. :func:`status` is THE reading: the gate, the CLI, ``qts status`` and the hooks all call it
(standard library only on the hooks' path).
"""

from __future__ import annotations

import json
import os
import signal
import time
import zlib
from dataclasses import dataclass, field

from ..fsutil import write_atomic
from ..paths import StateHome

RESET_ACTION = "kill_switch_reset"
FLAG_MAX_BYTES = 64_000


@dataclass
class KillStatus:
    engaged: bool
    reason: str
    since_ts: int | None = None
    source: str = ""  # "flag", "database", "flag+database"


def _db_last(home: StateHome, store) -> tuple[dict | None, int, str | None]:
    """(last engaged/reset record, id of the last engagement, error). With no ``store`` the database is
    read directly, read-only, with the standard library (the hooks' path); a missing database has no records."""
    q_last = ("SELECT id, ts, data FROM events WHERE kind='kill_switch' AND json_extract(data, '$.action') "
              "IN ('engaged', 'reset') ORDER BY id DESC LIMIT 1")
    q_eng = "SELECT MAX(id) FROM events WHERE kind='kill_switch' AND json_extract(data, '$.action')='engaged'"
    try:
        if store is not None:
            row = store.one(q_last)
            last = None if row is None else {"id": row["id"], "ts": row["ts"], "data": row["data"]}
            eng = store.scalar(q_eng)
        else:
            if not os.path.lexists(home.db_path):
                return None, 0, None
            from ..fsutil import sqlite_file_problem

            problem = sqlite_file_problem(home.db_path)  # SQLite reads a truncated file's surviving pages as if whole
            if problem:
                return None, 0, f"{home.db_path}: {problem}"
            import sqlite3

            conn = sqlite3.connect(f"file:{home.db_path}?mode=ro", uri=True, timeout=2)
            try:
                row = conn.execute(q_last).fetchone()
                eng = conn.execute(q_eng).fetchone()[0]
            finally:
                conn.close()
            last = None if row is None else {"id": row[0], "ts": row[1], "data": row[2]}
        if last is not None:
            data = json.loads(last["data"])
            last["data"] = data if isinstance(data, dict) else {}
        return last, int(eng or 0), None
    except Exception as e:  # noqa: BLE001 - a damaged database: the caller decides with the anchor
        return None, 0, f"{home.db_path}: {e.__class__.__name__}: {str(e)[:120]}"


def status(home: StateHome, store=None) -> KillStatus:
    """THE kill-switch reading: the gate, the CLI, ``qts status`` and the hooks all call this. Never raises:
    anything it cannot read counts as engaged. Engaged when ANY of these says so: the per-user anchor (a
    deleted, rolled-back or re-created state home, or an engagement it recorded), the flag file (whatever it
    holds), the database's last kill-switch record. A reset counts only when the anchor confirms it (the
    reset path checks the PIN and records the reset there, out of the sandboxed assistant's reach).
    Standard library only: with no ``store`` the database is read directly."""
    try:
        return _status(home, store)
    except Exception as e:  # noqa: BLE001
        return KillStatus(True, f"the kill switch could not be read ({e.__class__.__name__}: {e})", None, "error")


def _status(home: StateHome, store) -> KillStatus:
    from . import anchor

    view = anchor.check(home)
    if view.problem:
        return KillStatus(True, f"{view.problem}; {anchor.RESET_HINT}", view.kill_since, "anchor")
    if store is not None and not view.known and os.path.isdir(home.root):
        # the library opened this state home: from now on the anchor remembers it (refused inside the
        # sandbox, harmlessly: the home then stays unknown, a fresh install)
        if _register(home, store) is None:
            view = anchor.check(home)
    flag = home.kill_flag
    flag_state = None
    try:
        if os.path.lexists(flag):
            try:
                with open(flag, "rb") as fh:  # bounded: a planted 1 GB flag must not stall every hook
                    raw = fh.read(FLAG_MAX_BYTES + 1)
                if len(raw) > FLAG_MAX_BYTES:
                    raise ValueError("oversized")
                info = json.loads(raw.decode("utf-8"))
                ts = info.get("ts")
                flag_state = KillStatus(True, str(info.get("reason", "engaged"))[:500],
                                        ts if isinstance(ts, int) and not isinstance(ts, bool) else None, "flag")
            except (OSError, ValueError, AttributeError):
                flag_state = KillStatus(True, f"flag file {flag} present (unreadable contents)", None, "flag")
    except Exception:
        return KillStatus(True, f"cannot inspect the kill-switch flag {flag}", None, "flag")
    last, last_engaged_id, db_error = _db_last(home, store)
    if flag_state:
        if store is not None and db_error is None and (last is None or last["data"].get("action") != "engaged"):
            # engaged by the flag alone (the hook's standard-library first step, or the database was
            # unavailable): record it now, so that deleting the flag later does not release the switch
            _record_flag(store, flag_state)
        return flag_state
    if view.kill_engaged:
        return KillStatus(True, f"{view.kill_reason or 'engaged'} (the flag file {flag} is missing; the per-user "
                                f"anchor {view.path} records the engagement)", view.kill_since, "anchor")
    if db_error is not None:
        if view.known:  # the flag and the anchor suffice: the anchor holds every engagement made outside the sandbox
            return KillStatus(False, f"clear (per the flag and the per-user anchor; the database is unreadable: "
                                     f"{db_error})", None, "anchor")
        return KillStatus(True, f"cannot read kill-switch records from the database ({db_error})", None, "database")
    if last is None:
        return KillStatus(False, "clear")
    data = last["data"]
    if data.get("action") == "engaged":
        return KillStatus(True, f"{data.get('reason', 'engaged')} (flag file missing; the database still "
                                "records the engagement)", last["ts"], "database")
    approval = data.get("approval") if isinstance(data.get("approval"), dict) else {}
    if not (view.known and view.reset_nonce and approval.get("nonce") == view.reset_nonce
            and isinstance(view.reset_covers, int) and last_engaged_id <= view.reset_covers):
        return KillStatus(True, "the last reset record is not signed with the PIN (the per-user anchor does not "
                                "confirm it, or it does not cover the last engagement); " + anchor.RESET_HINT,
                          last["ts"], "database")
    return KillStatus(False, "clear")


def _register(home: StateHome, store) -> str | None:
    """The anchor meets a state home: it takes over what the home already proves. A reset recorded before
    the anchor existed counts when its PIN signature verifies (the check this module made before the anchor
    confirmed resets), and the saved risk profile, when intact, becomes the anchor's last profile. Only with
    the library's full imports (a ``store``): the hooks never register."""
    from . import anchor

    try:
        kw = {}
        last, last_engaged_id, err = _db_last(home, store)
        if err is None and last is not None and last["data"].get("action") == "reset" \
                and _legacy_reset_valid(home, store, last, last_engaged_id):
            kw = {"nonce": last["data"]["approval"]["nonce"], "covers": int(last_engaged_id)}
        err = anchor.try_record(home, "register", **kw)
        if err is None:
            from .risk_profile import load_profile

            lp = load_profile(home)
            if lp.source == "file":
                anchor.try_record(home, "profile", version=lp.version, hash=lp.record_hash,
                                  profile=lp.profile.model_dump())
        return err
    except Exception as e:  # noqa: BLE001 - the anchor stays as it was; readers fail closed on their own
        return str(e)


def _legacy_reset_valid(home: StateHome, store, last: dict, last_engaged_id: int) -> bool:
    try:
        from .approve import key_was_ready
        from .grants import verify_approval

        approval = last["data"].get("approval") or {}
        payload = verify_approval(home, approval, RESET_ACTION, now=last["ts"])
        return bool(payload and key_was_ready(store, home, approval)
                    and int(payload.get("engaged_event_id", -1)) >= int(last_engaged_id))
    except Exception:  # noqa: BLE001
        return False


def _record_flag(store, flag_state: KillStatus) -> None:
    try:
        ts = flag_state.since_ts if isinstance(flag_state.since_ts, int) else int(time.time() * 1000)
        store.event("kill_switch", f"engaged: {flag_state.reason} (recorded from the flag file)", severity="critical",
                    data={"action": "engaged", "reason": flag_state.reason, "from_flag": True}, ts=ts)
        flag_state.source = "flag+database"
    except Exception:
        pass  # the flag still engages; the next check tries again


def engage(home: StateHome, reason: str, store=None, now_ms: int | None = None, notify: bool = True) -> dict:
    """Set the flag (first, always) and record the event. Returns timings in ms. ``notify=False``: the
    caller sends the notification itself, later (the flag must not wait for the notifier's import)."""
    t0 = time.perf_counter()
    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    home.safety_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(home.kill_flag, json.dumps({"ts": ts, "reason": reason, "pid": os.getpid()}))
    flag_ms = (time.perf_counter() - t0) * 1000
    recorded = False
    if store is not None:
        try:
            store.event("kill_switch", f"engaged: {reason}", severity="critical",
                        data={"action": "engaged", "reason": reason}, ts=ts)
            recorded = True
        except Exception:
            pass  # the flag alone is enough
    from . import anchor

    anchor_error = anchor.try_record(home, "engaged", ts, reason=reason)  # refused inside the sandbox: the flag holds
    if notify:
        from ..notify import on_kill_switch

        on_kill_switch(home, "engaged", reason)
    return {"flag_ms": flag_ms, "recorded": recorded, "ts": ts, "anchor_error": anchor_error}


def stop_loop(home: StateHome, timeout_s: float = 5.0) -> dict:
    """SIGTERM the loop process (if any) and wait for it to exit."""
    from ..engine.status_file import pid_alive, read_pid

    t0 = time.perf_counter()
    pid = read_pid(home)
    if not pid or pid == os.getpid():
        return {"pid": None, "stopped": True, "ms": 0.0}
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return {"pid": pid, "stopped": True, "ms": 0.0}
    deadline = time.time() + timeout_s
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.005)
    return {"pid": pid, "stopped": not pid_alive(pid), "ms": (time.perf_counter() - t0) * 1000}


@dataclass
class FlattenReport:
    cancelled: list = field(default_factory=list)
    closed: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    ms: float = 0.0

    @property
    def flat(self) -> bool:
        return not self.failed


def flatten(gate, broker, retries: int = 3, backoff_s: float = 0.2) -> FlattenReport:
    """Cancel every open order, then close every position through the gate's flatten path (the only
    orders an engaged switch lets through), retrying failures. In-process, for the PAPER account: the
    live account is flattened by the trading agent, from the exchange's own view (agent/flatten.py)."""
    t0 = time.perf_counter()
    rep = FlattenReport()
    for o in broker.open_orders():
        for attempt in range(retries):
            try:
                if broker.cancel(o["client_order_id"], "kill switch"):
                    rep.cancelled.append(o["client_order_id"])
                break
            except Exception as e:
                if attempt == retries - 1:
                    rep.failed.append({"cancel": o["client_order_id"], "error": f"{e.__class__.__name__}: {e}"})
                else:
                    time.sleep(backoff_s * 2 ** attempt)
    for sym, p in broker.positions().items():
        last_error = None
        for attempt in range(retries):
            held = broker.position_amount(sym)
            rules = broker.feed.rules(sym)
            amount = rules.amount_to_precision(held)
            if amount <= 0:
                break
            coid = f"qtsk{int(time.time() * 1000):x}{attempt}{zlib.crc32(sym.encode()):08x}"
            res = gate.submit_flatten(sym, amount, client_order_id=coid)
            if res.accepted and res.status == "filled":
                rep.closed.append({"symbol": sym, "amount": res.filled, "price": res.avg_price})
                last_error = None
                break
            last_error = f"{res.reason_code}: {res.message}" if not res.accepted else f"order {res.status}"
            time.sleep(backoff_s * 2 ** attempt)
        if last_error:
            rep.failed.append({"close": sym, "error": last_error})
    rep.ms = (time.perf_counter() - t0) * 1000
    return rep


class ResetRefused(RuntimeError):
    """The reset cannot happen now; the message says why and what to do. The switch stays engaged."""


def reset_readiness(home: StateHome, store, signing_key, now_ms: int | None = None) -> str | None:
    """Why a reset signed with ``signing_key`` would not count now, or None. A PIN key first seen less than
    the cool-down ago (pin.DEFAULT_COOLDOWN_S) may be one the assistant planted by replacing the PIN record:
    a reset loosens trading, so it waits like every other loosening; this says until when."""
    from .approve import key_first_seen
    from .pin import pin_ready_since

    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    seen = key_first_seen(store, home, now=ts)
    ready = pin_ready_since(home, seen, now=ts)
    if ready.ready:
        return None
    first = seen.get(signing_key.fingerprint)
    ends = ts + int(ready.remaining_s * 1000)
    return (f"the PIN key {signing_key.fingerprint[:12]}... is new (first seen "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime((first or ts) / 1000))}): a reset signed with it counts "
            f"only after its cool-down, which ends at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(ends / 1000))} "
            f"(in {int(ready.remaining_s // 60) + 1} min); run `qts kill-switch reset` again then. If you did not just "
            "set a new PIN (`qts approve set-pin`), someone replaced your PIN record: leave the switch engaged and "
            "check `qts approve status`.")


def reset(home: StateHome, store, signing_key, now_ms: int | None = None) -> None:
    """Release the switch with a PIN-unlocked signing key: the flag goes, then a signed reset event, then
    the per-user anchor records the reset (the one record every reader trusts for it). Raises
    :class:`ResetRefused` (nothing changed) when the key is still in its cool-down, or when the anchor cannot
    be written (the switch then stays engaged for every reader)."""
    from . import anchor
    from .grants import sign_approval

    from .grants import _check_key

    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    _check_key(home, signing_key)  # ValueError: not this home's PIN key
    why = reset_readiness(home, store, signing_key, ts)
    if why:
        raise ResetRefused(why)
    status(home, store)  # a flag-only engagement is recorded first, so the reset below covers it
    seen = anchor.check(home).engagements
    last_engage = store.scalar("SELECT MAX(id) FROM events WHERE kind='kill_switch' "
                               "AND json_extract(data, '$.action')='engaged'") or 0
    approval = sign_approval(home, signing_key, RESET_ACTION, {"engaged_event_id": int(last_engage)},
                             ttl_s=300, now=ts)
    # the flag goes BEFORE the reset is recorded: while both exist a concurrent check would record the
    # flag as a new engagement; a crash in between leaves the database and the anchor saying "engaged" (safe)
    try:
        home.kill_flag.unlink()
    except FileNotFoundError:
        pass
    store.event("kill_switch", "reset with the PIN", severity="warning",
                data={"action": "reset", "approval": approval}, ts=ts)
    try:
        anchor.record(home, "reset", ts, nonce=approval["nonce"], covers=int(last_engage), seen_engagements=seen)
    except anchor.AnchorError as e:
        raise ResetRefused(f"{e}; the kill switch stays engaged") from None
    from ..notify import on_kill_switch

    on_kill_switch(home, "reset", "reset with the PIN")
