"""Kill switch: stop everything at once, from any shell.

Engaging is cheap and needs nothing: (1) a durable flag file, written atomically, and an event in
the database; (2) the loop process is sent SIGTERM; (3) every open order is cancelled and every
position closed with market orders through the gate (the only orders it lets through while
engaged), with retries; (4) a report of what was done and what could not be. Running it again is
safe and retries whatever is left (an unreachable exchange leaves the flag set).

Fail safe: the switch counts as engaged if the flag file exists (whatever it holds, even garbage or
unreadable) OR the database's last kill-switch record is an engagement. Deleting the flag therefore
does not release it. A flag set alone (the hook's standard-library first step, or with the database
unavailable) is recorded in the database by the next status check that has it. Only a reset signed with the PIN (a verified approval recorded in the events
table) releases it.
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


@dataclass
class KillStatus:
    engaged: bool
    reason: str
    since_ts: int | None = None
    source: str = ""  # "flag", "database", "flag+database"


def status(home: StateHome, store=None) -> KillStatus:
    """Never raises: anything it cannot read counts as engaged."""
    flag = home.kill_flag
    flag_state = None
    try:
        if os.path.lexists(flag):
            try:
                info = json.loads(flag.read_text(encoding="utf-8"))
                flag_state = KillStatus(True, str(info.get("reason", "engaged")), info.get("ts"), "flag")
            except (OSError, ValueError, AttributeError):
                flag_state = KillStatus(True, "flag file present (unreadable contents)", None, "flag")
    except Exception:
        return KillStatus(True, "cannot inspect the kill-switch flag", None, "flag")
    if store is None:
        return flag_state or KillStatus(False, "clear")
    try:
        row = store.one("SELECT id, ts, data FROM events WHERE kind='kill_switch' "
                        "AND json_extract(data, '$.action') IN ('engaged', 'reset') ORDER BY id DESC LIMIT 1")
    except Exception:
        return flag_state or KillStatus(True, "cannot read kill-switch records from the database", None, "database")
    data = json.loads(row["data"]) if row is not None else {}
    if data.get("action") == "engaged":
        if flag_state:
            flag_state.source = "flag+database"
            return flag_state
        return KillStatus(True, f"{data.get('reason', 'engaged')} (flag file missing; the database still "
                                "records the engagement)", row["ts"], "database")
    if flag_state:
        # engaged by the flag alone (the hook's standard-library first step, or the database was
        # unavailable): record it now, so that deleting the flag later does not release the switch
        _record_flag(store, flag_state)
        return flag_state
    if row is None:
        return KillStatus(False, "clear")
    if not _reset_is_valid(home, store, row, data):
        return KillStatus(True, "the last reset record is not signed with the PIN", row["ts"], "database")
    return KillStatus(False, "clear")


def _record_flag(store, flag_state: KillStatus) -> None:
    try:
        ts = flag_state.since_ts if isinstance(flag_state.since_ts, int) else int(time.time() * 1000)
        store.event("kill_switch", f"engaged: {flag_state.reason} (recorded from the flag file)", severity="critical",
                    data={"action": "engaged", "reason": flag_state.reason, "from_flag": True}, ts=ts)
        flag_state.source = "flag+database"
    except Exception:
        pass  # the flag still engages; the next check tries again


def _reset_is_valid(home: StateHome, store, row, data) -> bool:
    try:
        from .grants import verify_approval

        from .approve import key_was_ready

        approval = data.get("approval") or {}
        payload = verify_approval(home, approval, RESET_ACTION, now=row["ts"])
        if not payload or not key_was_ready(store, home, approval):
            return False
        last_engage = store.scalar("SELECT MAX(id) FROM events WHERE kind='kill_switch' "
                                   "AND json_extract(data, '$.action')='engaged'")
        return int(payload.get("engaged_event_id", -1)) >= int(last_engage or 0)
    except Exception:
        return False


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
    if notify:
        from ..notify import on_kill_switch

        on_kill_switch(home, "engaged", reason)
    return {"flag_ms": flag_ms, "recorded": recorded, "ts": ts}


def stop_loop(home: StateHome, timeout_s: float = 5.0) -> dict:
    """SIGTERM the loop process (if any) and wait for it to exit."""
    from ..engine.runner import pid_alive, read_pid

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


def reset(home: StateHome, store, signing_key, now_ms: int | None = None) -> None:
    """Release the switch with a PIN-unlocked signing key: the flag goes, then a signed reset event."""
    from .grants import sign_approval

    ts = now_ms if now_ms is not None else int(time.time() * 1000)
    status(home, store)  # a flag-only engagement is recorded first, so the reset below covers it
    last_engage = store.scalar("SELECT MAX(id) FROM events WHERE kind='kill_switch' "
                               "AND json_extract(data, '$.action')='engaged'") or 0
    approval = sign_approval(home, signing_key, RESET_ACTION, {"engaged_event_id": int(last_engage)},
                             ttl_s=300, now=ts)
    # the flag goes BEFORE the reset is recorded: while both exist a concurrent check would record the
    # flag as a new engagement; a crash in between leaves the database saying "engaged" (safe)
    try:
        home.kill_flag.unlink()
    except FileNotFoundError:
        pass
    store.event("kill_switch", "reset with the PIN", severity="warning",
                data={"action": "reset", "approval": approval}, ts=ts)
    from ..notify import on_kill_switch

    on_kill_switch(home, "reset", "reset with the PIN")
