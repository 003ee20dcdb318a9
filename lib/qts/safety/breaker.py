"""Circuit breaker: a persisted state machine that takes live trading down to paper.

States: ``closed`` (normal) -> ``open`` (tripped: live orders refused, the system carries on in
paper; any live grant is revoked) -> after ``cooldown_s`` ``half_open`` (still paper, on probation)
-> after ``probation_s`` with healthy checks ``closed``. Going back to LIVE always needs a fresh PIN
grant: the old one was revoked when the breaker opened.

Fed by: API latency p95 over a window against a threshold, API error rate, position-size breaches
and P&L (daily loss) thresholds, from rows in the metrics and events tables.

Trading states, in NautilusTrader's spirit, set by hand: ``ACTIVE``; ``REDUCING`` (only orders that
reduce exposure); ``HALTED`` (nothing but kill-switch flattening). Restricting is free; loosening
(HALTED/REDUCING -> ACTIVE) needs a PIN-signed approval.

Persistence: ``logs/circuit_breaker.json`` holds JSON lines, one per transition, each carrying the
full new state; the last valid line is the state. Fail safe: a missing, empty or unreadable file
reads as OPEN ("state unreadable"), with the cool-down counted from when that was first noticed.
Every transition also goes to the events table (after the file, so the file is never legitimately
behind it): a file whose last valid line is OLDER than the newest breaker event (truncated, torn,
rolled back) or disagrees with it reads as open, with the stricter of the two trading states.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from ..fsutil import append_jsonl
from ..paths import StateHome

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
ACTIVE, REDUCING, HALTED = "ACTIVE", "REDUCING", "HALTED"
STRICTNESS = {ACTIVE: 0, REDUCING: 1, HALTED: 2}


@dataclass(frozen=True)
class BreakerConfig:
    latency_p95_ms: float = 2_000.0
    latency_window_s: int = 300
    min_samples: int = 5
    error_rate: float = 0.25          # fraction of API calls failing in the window
    daily_loss_pct: float = 5.0       # trips the breaker (the risk layer also refuses entries)
    cooldown_s: int = 900
    probation_s: int = 900


@dataclass
class BreakerState:
    state: str = OPEN
    trading_state: str = ACTIVE
    since_ts: int = 0
    reason: str = "no breaker state yet"
    trips: int = 0
    version: int = 0
    readable: bool = True
    extra: dict = field(default_factory=dict)

    @property
    def live_allowed(self) -> bool:
        return self.state == CLOSED and self.readable


def _valid(rec: dict) -> bool:
    return (rec.get("state") in (CLOSED, OPEN, HALF_OPEN) and rec.get("trading_state") in STRICTNESS
            and isinstance(rec.get("since_ts"), int))


LOOSEN_ACTION = "loosen_trading_state"


def _loosening_signed(home: StateHome, rec: dict, store=None) -> bool:
    """A line that loosens the trading state counts only with a PIN-signed approval of exactly that
    target at exactly that version (so one appended line cannot turn HALTED into ACTIVE)."""
    approval = rec.get("approval")
    if not isinstance(approval, dict):
        return False
    try:
        from .grants import verify_approval

        payload = verify_approval(home, approval, LOOSEN_ACTION, now=int(approval.get("issued_ts", 0)))
        if not payload or payload.get("target") != rec["trading_state"] or payload.get("version") != rec.get("version"):
            return False
        if store is not None:
            from .approve import key_was_ready

            return key_was_ready(store, home, approval)
        return True
    except Exception:
        return False


def _effective_trading_state(home: StateHome, records: list[dict], store=None) -> str:
    state = records[0]["trading_state"] if records else ACTIVE
    for rec in records[1:]:
        t = rec["trading_state"]
        if STRICTNESS[t] >= STRICTNESS[state] or _loosening_signed(home, rec, store):
            state = t
    return state


def load(home: StateHome, now_ms: int, store=None) -> BreakerState:
    """The breaker state from its file, made at least as strict as the per-user anchor says: a deleted,
    rolled-back or re-created state home reads as HALTED (with the reason), and a trading state the anchor
    recorded counts when it is stricter than the file's."""
    st = _load_file(home, now_ms, store)
    from . import anchor

    view = anchor.check(home)
    if view.problem:
        st.trading_state, st.reason = HALTED, f"{view.problem}; {anchor.RESET_HINT}"
    elif view.known and STRICTNESS[view.trading_state] > STRICTNESS.get(st.trading_state, 2):
        st.trading_state = view.trading_state
        st.reason = f"{st.reason}; trading {view.trading_state} per the per-user anchor ({view.trading_reason})"
    return st


def _load_file(home: StateHome, now_ms: int, store=None) -> BreakerState:
    path = home.breaker_file
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return BreakerState(OPEN, ACTIVE, now_ms, f"breaker state {path} missing: reads as open (paper only)",
                            readable=False)
    except (OSError, UnicodeDecodeError) as e:
        what = "a folder is in its place" if isinstance(e, IsADirectoryError) else e.__class__.__name__
        return BreakerState(OPEN, HALTED, now_ms, f"breaker state {path} unreadable ({what}): reads as open and halted",
                            readable=False)
    torn = False
    valid = []
    for line in lines:
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and _valid(r):
            valid.append(r)
    for i, line in enumerate(reversed([x for x in lines if x.strip()])):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict) and _valid(rec):
            st = BreakerState(rec["state"], _effective_trading_state(home, valid, store), rec["since_ts"],
                              str(rec.get("reason", "")), int(rec.get("trips", 0)), int(rec.get("version", 0)))
            if torn:  # the newest transition is unreadable: it may have been a trip, so read as open
                st.state, st.since_ts, st.readable = OPEN, now_ms, False
                st.reason = f"last breaker transition in {path} unreadable (torn write): reads as open"
            return st
        torn = True
    return BreakerState(OPEN, HALTED if lines else ACTIVE, now_ms,
                        f"breaker state {path} corrupt: reads as open" + (" and halted" if lines else ""), readable=False)


class Breaker:
    def __init__(self, home: StateHome, store=None, config: BreakerConfig | None = None, on_trip=None):
        self.home, self.store = home, store
        self.config = config or BreakerConfig()
        self.on_trip = on_trip  # e.g. revoke the live grant, notify

    def status(self, now_ms: int) -> BreakerState:
        """The current state. Never raises: what cannot be read or recorded reads as open."""
        st = load(self.home, now_ms, self.store)
        if not st.readable and not self.home.breaker_file.exists():
            st.trading_state = self._stricter(st.trading_state, self._last_recorded_trading_state())
        self._check_against_database(st, now_ms)
        if not st.readable:
            # record what we saw, so the cool-down runs from now and the event is on file
            try:
                st = self._transition(st, OPEN, f"{st.reason}", now_ms, trading_state=st.trading_state, trip=True)
            except Exception:
                st.state = OPEN  # cannot even record it (a directory in its place?): still open, unrecorded
        return st

    def _check_against_database(self, st: BreakerState, now_ms: int) -> None:
        """Every transition is also an event; the file is written first, so it is never legitimately
        BEHIND the newest event. If it is (truncated, torn, rolled back, edited in place), the newest
        transition it lost may have been a trip or a halt: read as open, with the stricter trading state."""
        if self.store is None:
            return
        try:
            row = self.store.one("SELECT data FROM events WHERE kind='breaker' ORDER BY id DESC LIMIT 1")
            rec = json.loads(row["data"]) if row else None
        except Exception:
            return
        if not isinstance(rec, dict) or type(rec.get("version")) is not int or rec["version"] < st.version:
            return
        db_ts = rec.get("trading_state") if rec.get("trading_state") in STRICTNESS else HALTED
        if rec["version"] == st.version and rec.get("state") == st.state and db_ts == st.trading_state:
            return  # the file and its copy agree
        if STRICTNESS[db_ts] > STRICTNESS[st.trading_state]:
            st.trading_state = db_ts
        if st.readable:
            st.reason = "breaker state file disagrees with its database record (truncated or edited): reads as open"
        st.state, st.since_ts, st.readable, st.version = OPEN, now_ms, False, rec["version"]

    def _transition(self, prev: BreakerState, state: str, reason: str, now_ms: int,
                    trading_state: str | None = None, trip: bool = False, approval: dict | None = None) -> BreakerState:
        new = BreakerState(state, trading_state or prev.trading_state, now_ms, reason,
                           prev.trips + (1 if trip else 0), prev.version + 1)
        rec = {k: v for k, v in asdict(new).items() if k not in ("readable", "extra")}
        rec["from"] = prev.state if prev.readable else "unreadable"
        if approval is not None:
            rec["approval"] = approval
        append_jsonl(self.home.breaker_file, rec)
        if self.store is not None:
            try:
                self.store.event("breaker", f"{rec['from']} -> {state}: {reason}",
                                 severity="warning" if state != CLOSED else "info", data=rec, ts=now_ms)
            except Exception:
                pass  # the file is the record of truth; a locked DB must not stop a trip
        from ..notify import on_breaker

        on_breaker(self.home, rec)
        if trip and self.on_trip:
            self.on_trip(new)
        return new

    @staticmethod
    def _stricter(a: str, b: str | None) -> str:
        return b if b in STRICTNESS and STRICTNESS[b] > STRICTNESS.get(a, 2) else a

    def _last_recorded_trading_state(self) -> str | None:
        """A deleted file must not loosen a manual REDUCING/HALTED: the events table has a copy."""
        if self.store is None:
            return None
        try:
            row = self.store.one("SELECT data FROM events WHERE kind='breaker' ORDER BY id DESC LIMIT 1")
            ts = json.loads(row["data"]).get("trading_state") if row else None
        except Exception:
            return HALTED
        return ts if ts in STRICTNESS else None

    def trip(self, reason: str, now_ms: int) -> BreakerState:
        prev = load(self.home, now_ms, self.store)
        return self._transition(prev, OPEN, reason, now_ms, trip=True)

    def set_trading_state(self, target: str, now_ms: int, signing_key=None, reason: str = "") -> BreakerState:
        """Restricting is free; loosening needs ``signing_key`` (unlocked with the PIN): the new line
        then carries a signed approval of exactly this target and version, which load() checks."""
        if target not in STRICTNESS:
            raise ValueError(f"trading state: one of {', '.join(STRICTNESS)}")
        prev = self.status(now_ms)
        approval = None
        if STRICTNESS[target] < STRICTNESS[prev.trading_state]:
            if signing_key is None:
                raise PermissionError(f"{prev.trading_state} -> {target} loosens trading: it needs the PIN")
            from .grants import sign_approval

            approval = sign_approval(self.home, signing_key, LOOSEN_ACTION,
                                     {"target": target, "version": prev.version + 1}, now=now_ms)
        st = self._transition(prev, prev.state, reason or f"trading state {target}", now_ms, trading_state=target,
                              approval=approval)
        from . import anchor

        if approval is None:  # a tightening: inside the sandbox the anchor is out of reach, the file holds it
            anchor.try_record(self.home, "trading", now_ms, state=target, reason=st.reason)
        else:  # the PIN-signed loosening must reach the anchor, or every reader stays at the stricter state
            try:
                anchor.record(self.home, "trading", now_ms, state=target, reason=st.reason, signed=True)
            except anchor.AnchorError as e:
                raise PermissionError(f"{e}: trading stays {prev.trading_state}") from None
        return st

    # -- the check fed by metrics -----------------------------------------------------------------
    def measure(self, now_ms: int) -> dict:
        """Window statistics from the metrics table (api_latency_ms, api_error) and today's P&L."""
        out = {"latency_p95_ms": None, "samples": 0, "error_rate": None, "daily_pnl_pct": None}
        if self.store is None:
            return out
        since = now_ms - self.config.latency_window_s * 1000
        lat = sorted(r["value"] for r in self.store.query(
            "SELECT value FROM metrics WHERE name='api_latency_ms' AND ts>=?", (since,)))
        errs = self.store.scalar("SELECT COUNT(*) FROM metrics WHERE name='api_error' AND ts>=?", (since,)) or 0
        out["samples"] = len(lat)
        if lat:
            out["latency_p95_ms"] = lat[min(len(lat) - 1, math.ceil(0.95 * len(lat)) - 1)]
        calls = len(lat) + errs
        out["calls"] = calls
        if calls:
            out["error_rate"] = errs / calls
        day0 = now_ms - now_ms % 86_400_000
        first = self.store.one("SELECT equity FROM equity_snapshots WHERE ts>=? ORDER BY ts LIMIT 1", (day0,))
        last = self.store.one("SELECT equity FROM equity_snapshots ORDER BY ts DESC LIMIT 1")
        if first and last and first["equity"] > 0:
            out["daily_pnl_pct"] = 100 * (last["equity"] - first["equity"]) / first["equity"]
        breaches = self.store.scalar("SELECT COUNT(*) FROM events WHERE kind='position_breach' AND ts>=?", (since,))
        out["position_breaches"] = breaches or 0
        return out

    def problems(self, m: dict) -> list[str]:
        c, out = self.config, []
        if m["samples"] >= c.min_samples and m["latency_p95_ms"] is not None and m["latency_p95_ms"] > c.latency_p95_ms:
            out.append(f"API latency p95 {m['latency_p95_ms']:.0f} ms > {c.latency_p95_ms:.0f} ms")
        # judged over every call in the window, failed ones included (a total outage has no latency samples)
        calls = m.get("calls", m["samples"])
        if m["error_rate"] is not None and calls >= c.min_samples and m["error_rate"] > c.error_rate:
            out.append(f"API error rate {100 * m['error_rate']:.0f}% > {100 * c.error_rate:.0f}%")
        if m["daily_pnl_pct"] is not None and m["daily_pnl_pct"] <= -c.daily_loss_pct:
            out.append(f"daily P&L {m['daily_pnl_pct']:.2f}% at or past -{c.daily_loss_pct}%")
        if m.get("position_breaches"):
            out.append(f"{m['position_breaches']} position-size breach(es)")
        return out

    def check(self, now_ms: int) -> BreakerState:
        """One evaluation: trip on problems; move open -> half_open -> closed as time and health allow."""
        st = self.status(now_ms)
        issues = self.problems(self.measure(now_ms))
        if issues:
            if st.state != OPEN:
                return self._transition(st, OPEN, "; ".join(issues), now_ms, trip=True)
            return st
        age_s = (now_ms - st.since_ts) / 1000
        if st.state == OPEN and age_s >= self.config.cooldown_s:
            return self._transition(st, HALF_OPEN, "cool-down over; probation in paper", now_ms)
        if st.state == HALF_OPEN and age_s >= self.config.probation_s:
            return self._transition(st, CLOSED, "healthy through probation; live needs a fresh PIN grant", now_ms)
        return st
