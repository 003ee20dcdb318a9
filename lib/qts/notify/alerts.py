"""Operator alerts: the conditions a human must hear about, each with its level, raised where it happens.

========================  ==========  ============================================================
alert                     level       raised by
========================  ==========  ============================================================
drawdown throttle         warning     the risk layer shrinking an entry (RISK_DRAWDOWN_REDUCE)
strategy demoted          warning     registry supervision demoting a live strategy
stale data feed           warning     the loop, when a symbol's newest closed candle is 2+ bars old
refusals piling up        warning     the gate, QTS_ALERT_REFUSALS refusals within 10 minutes
order error               warning     a gate refusal GATE_ERROR / BROKER_ERROR (critical when live)
drawdown halt             critical    a gate refusal RISK_DRAWDOWN_HALT
daily loss limit hit      critical    a gate refusal RISK_DAILY_LOSS
kill switch               critical    notify.on_kill_switch (safety/kill_switch.py, the agent)
loop crashed              critical    the loop's runner, when a cycle raised
agent alert               critical    the trading agent's own alerts (a failed cycle, books rebuilt...)
agent down                critical    :func:`check_agent` (qts dashboard's watcher): heartbeat stopped
reconciliation mismatch   critical    the live broker's reconcile finding database != exchange
========================  ==========  ============================================================

Every function returns at once and never raises: the notifier only queues (sending happens on its
threads), and any error here is logged and swallowed. Each alert has a cooldown per subject (one
"stale feed ETH/USDT" per 30 minutes, not one per cycle); the sinks' token buckets apply on top.
Alerts of replays and the synthetic market follow QTS_NOTIFY_REPLAY like trades do.
"""

from __future__ import annotations

import collections
import logging
import threading
import time

from .core import Event

log = logging.getLogger("qts.notify")
COOLDOWN_S = {"warning": 1800.0, "critical": 300.0}
REFUSAL_WINDOW_S = 600.0
_lock = threading.Lock()
_last: dict[tuple, float] = {}
_refusals: dict[str, collections.deque] = {}
# refusals that are the consequence of a condition already alerted (or by design): not "piling up"
_QUIET_CODES = {"KILL_SWITCH", "DUPLICATE", "ORDER_WORKING"}


def reset() -> None:
    """Forget cooldowns and refusal counts (tests; a new process starts clean anyway)."""
    with _lock:
        _last.clear()
        _refusals.clear()


def alert(home, kind: str, title: str, text: str = "", severity: str = "warning", data: dict | None = None,
          subject: str = "", source: str | None = None, cooldown_s: float | None = None) -> int:
    """Queue one alert unless the same (kind, subject) was alerted within its cooldown. Returns the number
    of sinks that accepted it."""
    try:
        from . import _is_replay, get_notifier

        n = get_notifier(home)
        if n is None or (source is not None and _is_replay(source) and not n.send_replays):
            return 0
        key = (str(home.root), kind, subject)
        now = time.monotonic()
        wait = COOLDOWN_S.get(severity, 1800.0) if cooldown_s is None else cooldown_s
        with _lock:
            if key in _last and now - _last[key] < wait:
                return 0
            _last[key] = now
        return n.notify(Event(kind, title, text, severity, {**(data or {}), "alert": kind,
                                                              **({"subject": subject} if subject else {})}))
    except Exception as e:  # never let an alert break the caller (the caller may be placing an order)
        log.warning("alert %s: %s: %s", kind, e.__class__.__name__, e)
        return 0


def on_refusal(home, code: str, message: str, mode: str = "paper", source: str | None = None,
               symbol: str | None = None) -> None:
    """The gate refused an order."""
    try:
        if code == "RISK_DAILY_LOSS":
            alert(home, "daily_loss", f"{mode.upper()}: daily loss limit hit", message, "critical",
                  {"mode": mode, "code": code, "symbol": symbol}, subject=mode, source=source)
        elif code in ("GATE_ERROR", "BROKER_ERROR"):  # the system failing, not a limit doing its job
            alert(home, "order_error", f"{mode.upper()}: order failed ({code})", message,
                  "critical" if mode == "live" else "warning", {"mode": mode, "code": code, "symbol": symbol},
                  subject=f"{mode}:{code}", source=source)
        elif code == "RISK_DRAWDOWN_HALT":
            alert(home, "drawdown_halt", f"{mode.upper()}: drawdown halt, entries stopped", message, "critical",
                  {"mode": mode, "code": code, "symbol": symbol}, subject=mode, source=source)
        if code in _QUIET_CODES:
            return
        limit = _refusal_limit(home)
        now = time.monotonic()
        with _lock:
            q = _refusals.setdefault(str(home.root), collections.deque())
            q.append((now, code))
            while q and now - q[0][0] > REFUSAL_WINDOW_S:
                q.popleft()
            recent = list(q)
        if len(recent) >= limit:
            codes = collections.Counter(c for _, c in recent)
            alert(home, "refusals", f"{mode.upper()}: {len(recent)} orders refused in 10 minutes",
                  ", ".join(f"{c} x{k}" for c, k in codes.most_common()),
                  "warning", {"mode": mode, "count": len(recent), "codes": dict(codes)}, subject=mode, source=source)
    except Exception as e:
        log.warning("on_refusal: %s: %s", e.__class__.__name__, e)


def _refusal_limit(home) -> int:
    from . import _env

    try:
        return max(1, int(_env(home).get("QTS_ALERT_REFUSALS", 5)))
    except ValueError:
        return 5


def on_drawdown_throttle(home, note: str, mode: str = "paper", source: str | None = None,
                         symbol: str | None = None) -> None:
    alert(home, "drawdown_throttle", f"{mode.upper()}: drawdown throttle, entries reduced", note, "warning",
          {"mode": mode, "symbol": symbol}, subject=mode, source=source)


def on_stale_feed(home, symbol: str, age_ms: int, timeframe_ms: int, source: str | None = None) -> None:
    bars = age_ms / timeframe_ms
    alert(home, "stale_feed", f"Stale data feed: {symbol}",
          f"the newest closed candle of {symbol} closed {bars:.1f} bars ago (source {source}); "
          "decisions on it wait for fresh data", "warning",
          {"symbol": symbol, "age_ms": age_ms, "timeframe_ms": timeframe_ms, "source": source},
          subject=symbol, source=source)


def on_loop_crashed(home, error: str, mode: str = "paper", source: str | None = None) -> None:
    alert(home, "loop_crashed", f"{mode.upper()} trading loop crashed", error + "\nNo further cycles run until it is "
          "restarted (`qts run`); `qts status` shows the reason.", "critical", {"mode": mode, "error": error},
          subject=mode, source=source)


def on_demoted(home, entry_id: str, frm: str, reason: str) -> None:
    alert(home, "demoted", f"Strategy demoted: {entry_id} ({frm} \u2192 paper)", reason, "warning",
          {"entry_id": entry_id, "from": frm, "reason": reason}, subject=entry_id)


def on_agent_alert(home, message: str) -> None:
    alert(home, "agent", "Trading agent alert", message, "critical", {"message": message}, subject=message[:80])


def on_reconcile_mismatch(home, discrepancies: list) -> None:
    alert(home, "reconcile", f"Reconciliation mismatch: {len(discrepancies)} difference(s) with the exchange",
          "; ".join(f"{d.get('kind')} {d.get('symbol', '')}".strip() for d in discrepancies[:10]), "critical",
          {"discrepancies": discrepancies[:50]}, subject="live")


def check_agent(home) -> bool | None:
    """The trading agent's status file says running (or starting) but its heartbeat stopped: the agent died
    without shutting down (killed, crashed, the machine slept). Alerts critical (cooldown 5 min). Returns
    True when it is down, False when alive or cleanly stopped, None when no agent ever ran here.
    Called by the long-running processes that watch (``qts dashboard``'s watcher, each dashboard poll)."""
    try:
        from ..agent.paths import AgentPaths
        from ..agent.protocol import agent_alive, read_status

        paths = AgentPaths.for_home(home.root)
        st = read_status(paths)
        if st is None:
            return None
        if st.get("state") not in ("running", "starting"):
            return False
        if agent_alive(paths, st):
            return False
        try:
            age = time.time() - float(st.get("heartbeat", 0))
        except (TypeError, ValueError):
            age = float("nan")
        alert(home, "agent_down", "Trading agent DOWN",
              f"its status says {st.get('state')} but the last heartbeat is {age:.0f} s old (pid {st.get('pid')}): "
              "live orders are not being placed or watched. The human restarts it in their own terminal: "
              "`qts agent start` (PIN).", "critical", {"pid": st.get("pid"), "heartbeat_age_s": age},
              subject="agent")
        return True
    except Exception as e:
        log.warning("check_agent: %s: %s", e.__class__.__name__, e)
        return None
