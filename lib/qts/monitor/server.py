"""A small HTTP endpoint for the long-running loop (standard library only).

Routes:

- ``GET /health``     200 with the loop's state when it is running and cycling; 503 when it is dead,
                      halted, crashed, stopped, stale (no cycle for 3 intervals), the kill switch is
                      engaged or trading is HALTED. The body (JSON) says why.
- ``GET /metrics``    Prometheus text exposition format 0.0.4.
- ``GET /positions``  open positions marked at the last decision price (JSON).
- ``GET /status``     everything ``qts status --json`` shows.
- ``GET /liquidity?symbol=BTC/USDT[&amount=0.5]``  what ``qts market liquidity --json`` shows (the liquidity
                      gate's numbers, limits and verdict: :func:`qts.safety.liquidity_report.report`) from the loop's
                      feed, or standalone the exchange. It reaches the exchange, so it needs the bearer token
                      below (401/403 without it); a reading that cannot be taken is 502 naming why.
- ``POST /kill-switch`` engages the kill switch (flag + event, :func:`qts.safety.kill_switch.engage`),
                      calls ``on_kill`` (the loop passes its stop event's ``set``; standalone, the loop
                      process is sent SIGTERM like ``qts kill-switch`` does), then flattens paper
                      positions through the gate, the CLI's code path, or in live mode asks the trading
                      agent to flatten at the exchange (agent/kill.tell_agent, what hooks/kill_switch.sh
                      sends), unless the body says ``{"flatten": false}``. Needs ``Authorization: Bearer <QTS_MONITOR_TOKEN>``; with
                      no token configured (or one shorter than 16 characters) every state-changing
                      request is refused (403). Ten bad tokens within a minute lock POSTs for a minute.

Binds 127.0.0.1 by default (port 8765, ``QTS_MONITOR_PORT``); a non-loopback address is refused
unless ``allow_remote`` (``QTS_MONITOR_ALLOW_REMOTE=1``). Runs in a daemon thread:
``server = start_monitor(home, port)`` ... ``server.stop()``.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger("qts.monitor")
DEFAULT_PORT = 8765
MIN_TOKEN_LEN = 16
MAX_BODY = 16_384
CONTENT_TYPE_PROM = "text/plain; version=0.0.4; charset=utf-8"


class MonitorError(ValueError):
    pass


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:  # a name: every address it resolves to must be loopback
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


# -- what the routes answer --------------------------------------------------------------------------------

def health(home, store, now_s: float | None = None) -> tuple[int, dict]:
    from ..engine.status_file import read_status
    from ..reports.status import _breaker
    from ..safety import kill_switch

    now_s = now_s if now_s is not None else time.time()
    st = read_status(home)
    state = st.get("state", "not running")
    reasons = []
    if state != "running":
        reasons.append(f"loop {state}" + (f": {st['reason']}" if st.get("reason") else "")
                       + (f": {st['error']}" if st.get("error") else ""))
    age = (now_s - st["updated"]) if st.get("updated") else None
    interval_s = 60 * (st.get("interval_min") or 5)
    stale = state == "running" and age is not None and age > max(3 * interval_s, 120)
    if stale:
        reasons.append(f"loop stale: no cycle for {age:.0f}s")
    ks = kill_switch.status(home, store)
    if ks.engaged:
        reasons.append(f"kill switch engaged: {ks.reason}")
    br = _breaker(home, int(now_s * 1000), store)
    if br["trading_state"] == "HALTED":
        reasons.append(f"trading HALTED: {br['reason']}")
    body = {"status": "ok" if not reasons else "unhealthy", "reasons": reasons, "loop": {
        "state": state, "pid": st.get("pid"), "cycles": st.get("cycles"), "last_cycle_ts": st.get("last_cycle_ts"),
        "next_cycle_ts": st.get("next_cycle_ts"), "status_age_s": age, "mode": st.get("mode"), "source": st.get("source")},
        "kill_switch": {"engaged": ks.engaged, "reason": ks.reason},
        "breaker": {k: br[k] for k in ("state", "trading_state", "reason", "live_allowed")}}
    return (200 if not reasons else 503), body


def _esc(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _val(v) -> str:
    if v is None:
        return "NaN"
    if isinstance(v, bool):
        return "1" if v else "0"
    f = float(v)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    return repr(f) if not f.is_integer() or abs(f) >= 1e15 else str(int(f))


class _Prom:
    def __init__(self):
        self.lines: list[str] = []

    def add(self, name: str, kind: str, help_: str, samples) -> None:
        """``samples``: a value, or [(labels dict, value)]."""
        if not isinstance(samples, list):
            samples = [({}, samples)]
        self.lines.append(f"# HELP {name} {help_}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, v in samples:
            lab = ",".join(f'{k}="{_esc(x)}"' for k, x in labels.items())
            self.lines.append(f"{name}{{{lab}}} {_val(v)}" if lab else f"{name} {_val(v)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


BREAKER_CODE = {"closed": 0, "half_open": 1, "open": 2}
TRADING_CODE = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


def metrics_text(home, store, now_s: float | None = None) -> str:
    from ..reports.status import collect_status

    now_s = now_s if now_s is not None else time.time()
    now_ms = int(now_s * 1000)
    st = collect_status(home, now_ms=now_ms, decisions=0, store=store)
    mode = st["mode"]
    m = {"mode": mode}
    p = _Prom()
    p.add("qts_up", "gauge", "1 while the monitor answers.", 1)
    lo = st["loop"]
    running = lo.get("state") == "running" and not lo.get("stale")
    p.add("qts_loop_running", "gauge", "1 when the trading loop is running and cycling (not stale).", running)
    p.add("qts_loop_cycles", "gauge", "Cycles run by the current loop process.", lo.get("cycles") or 0)
    p.add("qts_last_cycle_age_seconds", "gauge", "Wall-clock seconds since the loop last finished a cycle.",
          lo.get("updated_age_s"))
    p.add("qts_equity", "gauge", "Account equity in the quote currency (cash + positions at the last prices).",
          [(m, st.get("equity"))])
    p.add("qts_cash", "gauge", "Free cash in the quote currency.", [(m, st.get("cash"))])
    p.add("qts_positions_value", "gauge", "Value of open positions at the last recorded prices.",
          [(m, st.get("positions_value"))])
    p.add("qts_unrealized_pnl", "gauge", "Unrealized P&L of open positions.", [(m, st.get("unrealized_pnl"))])
    p.add("qts_open_positions", "gauge", "Number of open positions.", [(m, len(st.get("positions") or []))])
    pos = st.get("positions") or []
    if pos:
        p.add("qts_position_amount", "gauge", "Position size in base units.",
              [({**m, "symbol": x["symbol"]}, x["amount"]) for x in pos])
        p.add("qts_position_value", "gauge", "Position value in the quote currency.",
              [({**m, "symbol": x["symbol"]}, x["value"]) for x in pos])
        p.add("qts_position_unrealized_pnl", "gauge", "Unrealized P&L per position.",
              [({**m, "symbol": x["symbol"]}, x["unrealized_pnl"]) for x in pos])
    p.add("qts_open_orders", "gauge", "Orders open at the broker.", [(m, st.get("open_orders") or 0)])
    fills = store.scalar("SELECT COUNT(*) FROM fills WHERE mode=?", (mode,)) or 0
    p.add("qts_fills_total", "counter", "Fills recorded.", [(m, fills)])
    closed = store.scalar("SELECT COUNT(*) FROM closed_trades WHERE mode=?", (mode,)) or 0
    p.add("qts_closed_trades_total", "counter", "Round trips closed.", [(m, closed)])
    fees = store.scalar("SELECT COALESCE(SUM(fee), 0) FROM fills WHERE mode=?", (mode,)) or 0.0
    p.add("qts_fees_total", "counter", "Fees paid, quote currency.", [(m, fees)])
    refusals = store.scalar("SELECT COUNT(*) FROM events WHERE kind='gate'") or 0
    p.add("qts_gate_refusals_total", "counter", "Orders the gate refused.", refusals)
    by_code = store.query("SELECT COALESCE(json_extract(data, '$.code'), 'unknown') AS code, COUNT(*) AS n FROM events "
                          "WHERE kind='gate' GROUP BY 1 ORDER BY 1")
    p.add("qts_gate_refusals_by_reason_total", "counter", "Orders the gate refused, by reason code.",
          [({"reason": str(r["code"])}, r["n"]) for r in by_code] or [({"reason": "none"}, 0)])
    br = st["breaker"]
    p.add("qts_breaker_state", "gauge", "Circuit breaker: 0 closed, 1 half_open, 2 open.",
          BREAKER_CODE.get(br["state"], 2))
    p.add("qts_breaker_info", "gauge", "Circuit breaker state as labels (value 1).",
          [({"state": br["state"], "trading_state": br["trading_state"]}, 1)])
    p.add("qts_trading_state", "gauge", "Trading state: 0 ACTIVE, 1 REDUCING, 2 HALTED.",
          TRADING_CODE.get(br["trading_state"], 2))
    p.add("qts_breaker_trips", "gauge", "Breaker trips on record.", br.get("trips") or 0)
    p.add("qts_live_allowed", "gauge", "1 when the breaker allows live orders.", br["live_allowed"])
    p.add("qts_kill_switch_engaged", "gauge", "1 while the kill switch is engaged.", st["kill_switch"]["engaged"])
    t = st.get("today") or {}
    if t.get("pnl") is not None:
        p.add("qts_daily_pnl", "gauge", "P&L since the first equity snapshot of the UTC day.", [(m, t["pnl"])])
        p.add("qts_daily_loss_limit_used_ratio", "gauge", "Today's loss as a fraction of the daily loss limit.",
              [(m, (t.get("limit_used_pct") or 0.0) / 100)])
    dd = st.get("drawdown") or {}
    if dd:
        p.add("qts_drawdown_ratio", "gauge", "Drawdown from the equity peak (fraction).", [(m, dd["drawdown_pct"] / 100)])
        p.add("qts_drawdown_halt_ratio", "gauge", "Drawdown that halts entries (fraction).", [(m, dd["halt_pct"] / 100)])
    since = now_ms - 300_000
    lat = sorted(r["value"] for r in store.query("SELECT value FROM metrics WHERE name='api_latency_ms' AND ts>=?",
                                                 (since,)))
    if lat:
        import math

        p95 = lat[min(len(lat) - 1, math.ceil(0.95 * len(lat)) - 1)]
        p.add("qts_api_latency_p95_seconds", "gauge", "Exchange API latency, 95th percentile over the last 5 minutes.",
              p95 / 1000)
        p.add("qts_api_latency_samples", "gauge", "API latency samples in the last 5 minutes.", len(lat))
    errs = store.scalar("SELECT COUNT(*) FROM metrics WHERE name='api_error' AND ts>=?", (since,))
    if lat or errs:
        p.add("qts_api_errors_5m", "gauge", "API errors in the last 5 minutes.", errs or 0)
    _strategy_metrics(p, home, store, m)
    from ..safety import pauses

    paused = pauses.paused(home, store)
    p.add("qts_strategies_paused", "gauge", "Strategies paused (no new entries; qts strategy resume NAME with the PIN).",
          len(paused))
    return p.text()


def _strategy_metrics(p: "_Prom", home, store, m: dict) -> None:
    """Predicted (strategy registry) vs realized per strategy and metric, and P&L per strategy."""
    from .registry_view import registry_view  # performance() over the history, cached 30 s

    try:
        reg = registry_view(home, store, m["mode"])
    except Exception as e:
        log.warning("strategy metrics: %s: %s", e.__class__.__name__, e)
        return
    pairs = [(row["strategy"], c) for row in reg["predicted_vs_realized"] for c in row.get("comparison") or []]
    if pairs:
        p.add("qts_strategy_predicted", "gauge", "What the strategy registry predicted, per strategy and metric.",
              [({**m, "strategy": s, "metric": c["metric"]}, c["expected"]) for s, c in pairs])
        p.add("qts_strategy_realized", "gauge", "The same metric realized (whole history of this mode).",
              [({**m, "strategy": s, "metric": c["metric"]}, c["realized"]) for s, c in pairs])
    if reg["realized"]:
        p.add("qts_strategy_pnl", "gauge", "Mark-to-market P&L per strategy after fees (whole history).",
              [({**m, "strategy": g["strategy"]}, g["pnl"]) for g in reg["realized"]])


# -- the server --------------------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    server_version = "qts-monitor/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = 15  # an idle keep-alive connection does not hold a thread forever

    def log_message(self, fmt, *args):  # request lines only (never headers: no token in any log)
        log.debug("%s %s", self.address_string(), fmt % args)

    @property
    def mon(self) -> "MonitorServer":
        return self.server.monitor  # type: ignore[attr-defined]

    def _send(self, code: int, body, ctype: str = "application/json", extra: dict | None = None) -> None:
        raw = body if isinstance(body, bytes) else (body if isinstance(body, str) else
                                                     json.dumps(body, indent=1, default=str)).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(raw)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/health":
                code, body = health(self.mon.home, self.mon.store)
                return self._send(code, body)
            if path == "/metrics":
                return self._send(200, metrics_text(self.mon.home, self.mon.store), CONTENT_TYPE_PROM)
            if path == "/positions":
                from ..reports.status import collect_status

                st = collect_status(self.mon.home, decisions=0, store=self.mon.store)
                return self._send(200, {"mode": st["mode"], "equity": st.get("equity"), "cash": st.get("cash"),
                                        "positions": st.get("positions") or [], "open_orders": st.get("open_orders")})
            if path == "/status":
                from ..reports.status import collect_status

                return self._send(200, collect_status(self.mon.home, store=self.mon.store))
            if path == "/liquidity":
                return self._liquidity()
            if path == "/":
                return self._send(200, {"routes": ["GET /health", "GET /metrics", "GET /positions", "GET /status",
                                                   "GET /liquidity", "POST /kill-switch"]})
            if path == "/kill-switch":
                return self._send(405, {"error": "use POST"}, extra={"Allow": "POST"})
            return self._send(404, {"error": "not found"})
        except Exception as e:
            log.warning("monitor %s failed: %s: %s", path, e.__class__.__name__, e)
            return self._send(500, {"error": f"{e.__class__.__name__}"})

    def _liquidity(self):
        from urllib.parse import parse_qs

        ok, code, why = self.mon.authorize(self.headers.get("Authorization"))
        if not ok:
            extra = {"WWW-Authenticate": 'Bearer realm="qts"'} if code == 401 else None
            return self._send(code, {"error": why}, extra=extra)
        q = parse_qs(self.path.partition("?")[2], keep_blank_values=True)
        symbol = (q.get("symbol") or [""])[-1].strip().upper()
        if "/" not in symbol or len(symbol) > 40:
            return self._send(400, {"error": f"symbol: expected a market like BTC/USDT, got {symbol[:40]!r}"})
        amount = None
        if q.get("amount"):
            try:
                amount = float(q["amount"][-1])
            except ValueError:
                amount = None
            if amount is None or not (amount > 0 and amount < float("inf")):
                return self._send(400, {"error": "amount: a positive number of base units"})
        code, body = self.mon.liquidity(symbol, amount)
        return self._send(code, body)

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length else 0
        except ValueError:
            return self._send(400, {"error": "bad Content-Length"})
        if n < 0 or n > MAX_BODY:
            self.close_connection = True
            return self._send(413, {"error": "body too large"})
        raw = self.rfile.read(n) if n else b""
        if path != "/kill-switch":
            return self._send(404, {"error": "not found"})
        ok, code, why = self.mon.authorize(self.headers.get("Authorization"))
        if not ok:
            extra = {"WWW-Authenticate": 'Bearer realm="qts"'} if code == 401 else None
            return self._send(code, {"error": why}, extra=extra)
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return self._send(400, {"error": "body: expected JSON"})
        if not isinstance(body, dict):
            return self._send(400, {"error": "body: expected a JSON object"})
        reason = body.get("reason", "monitor endpoint")
        if not isinstance(reason, str) or len(reason) > 200:
            return self._send(400, {"error": "reason: text of at most 200 characters"})
        flatten = body.get("flatten", True)
        if not isinstance(flatten, bool):
            return self._send(400, {"error": "flatten: true or false"})
        try:
            out = self.mon.kill(reason, flatten)
        except Exception as e:
            log.error("kill switch via monitor failed: %s: %s", e.__class__.__name__, e)
            return self._send(500, {"error": f"{e.__class__.__name__}: {e}", "engaged": self.mon.engaged()})
        return self._send(200, out)

    def do_PUT(self):
        self._send(405, {"error": "method not allowed"})

    do_DELETE = do_PATCH = do_PUT


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MonitorServer:
    def __init__(self, home, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                 allow_remote: bool = False, on_kill=None, store=None, feed=None):
        if not allow_remote and not is_loopback(host):
            raise MonitorError(f"refusing to bind {host}: not a loopback address (pass allow_remote / "
                               "QTS_MONITOR_ALLOW_REMOTE=1 to expose the monitor, and put TLS in front of it)")
        if not (0 <= int(port) <= 65535):
            raise MonitorError(f"port {port}: must be 0..65535")
        self.home, self.host, self.on_kill = home, host, on_kill
        self.feed = feed  # the loop's feed (GET /liquidity reads it); standalone: the exchange, made on demand
        self._feed_lock = threading.Lock()
        self._token = token or None
        self.token_problem = None
        if self._token is None:
            self.token_problem = "QTS_MONITOR_TOKEN is not set: state-changing requests are refused"
        elif len(self._token) < MIN_TOKEN_LEN:
            self.token_problem = f"QTS_MONITOR_TOKEN is shorter than {MIN_TOKEN_LEN} characters: refused"
            self._token = None
        self._own_store = store is None
        if store is None:
            from ..store import Store

            store = Store.open(home)
        self.store = store
        self._fails: list[float] = []
        self._kill_lock = threading.Lock()
        server_cls = type("_Srv", (_Server,), {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        try:
            self.httpd = server_cls((host, int(port)), _Handler)
        except OSError as e:
            if self._own_store:
                self.store.close()
            raise MonitorError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
        self.httpd.monitor = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="qts-monitor", daemon=True)

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def start(self) -> "MonitorServer":
        self.thread.start()
        log.info("monitor listening on %s", self.url)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        try:
            self.httpd.shutdown()
        finally:
            self.httpd.server_close()
            self.thread.join(timeout)
            if self._own_store:
                self.store.close()

    # -- GET /liquidity ------------------------------------------------------------------------------
    def liquidity(self, symbol: str, amount: float | None) -> tuple[int, dict]:
        from ..config import ConfigError, load_settings
        from ..safety.liquidity_report import report

        try:
            settings = load_settings(home=getattr(self.home, "root", self.home))
        except ConfigError as e:
            return 503, {"error": f"configuration: {e}"}
        with self._feed_lock:  # one reading at a time (the feed's client is not shared across threads)
            try:
                if self.feed is None:
                    from ..engine.session import make_feed

                    self.feed = make_feed(settings, "live-data")
                return 200, report(settings, self.feed, symbol, amount)
            except Exception as e:  # noqa: BLE001 - no reading is an answer naming why, never a pass
                return 502, {"error": f"cannot read liquidity of {symbol}: {e.__class__.__name__}: {str(e)[:200]}",
                             "allowed": False}

    # -- POST /kill-switch ----------------------------------------------------------------------------
    def authorize(self, header: str | None) -> tuple[bool, int, str]:
        if self._token is None:
            return False, 403, self.token_problem or "state-changing requests are disabled"
        now = time.monotonic()
        self._fails = [t for t in self._fails if now - t < 60]
        if len(self._fails) >= 10:
            return False, 429, "too many failed attempts; try again in a minute"
        scheme, _, given = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            self._fails.append(now)
            return False, 401, "missing or wrong bearer token"
        return True, 200, ""

    def engaged(self) -> bool:
        from ..safety import kill_switch

        return kill_switch.status(self.home, self.store).engaged

    def kill(self, reason: str, flatten: bool = True) -> dict:
        from ..safety import kill_switch

        with self._kill_lock:
            why = f"monitor: {reason}"
            step = kill_switch.engage(self.home, why, store=self.store)
            out = {"engaged": True, "flag": str(self.home.kill_flag), "recorded": step["recorded"],
                   "flag_ms": round(step["flag_ms"], 2)}
            try:
                if self.on_kill is not None:
                    self.on_kill()
                    out["loop"] = "stop requested"
                else:
                    out["loop"] = kill_switch.stop_loop(self.home)
            except Exception as e:
                out["loop_error"] = f"{e.__class__.__name__}: {e}"
            if flatten:
                out.update(self._flatten(why))
            return out

    def _flatten(self, why: str = "monitor: kill switch") -> dict:
        """The CLI's code path (qts kill-switch engage): paper gate + broker at the stored prices."""
        from ..config import ConfigError, load_settings
        from ..engine.session_tools import flatten_paper

        try:
            settings = load_settings(home=self.home.root)
        except ConfigError as e:
            return {"flat": False, "failed": [{"flatten": f"configuration: {e}"}]}
        if not settings.PAPER_TRADING:
            # live positions are the trading agent's: the same request hooks/kill_switch.sh and `qts kill-switch`
            # send (agent/kill.py), verified at the exchange by the agent
            from ..agent.kill import tell_agent

            live = tell_agent(self.home, why)
            flat = bool(live.get("flat") and live.get("verified"))
            return {"flat": flat, "live": live, "cancelled": [], "closed": [],
                    "failed": [] if flat else [{"flatten": live.get("message") or "the trading agent did not "
                                                          "confirm flat at the exchange"}]}
        out = flatten_paper(settings, self.store, retries=2, backoff_s=0.05, label="flatten (monitor)")
        res = {"cancelled": out["cancelled"], "closed": out["closed"], "failed": out["failed"],
               "flatten_ms": out["ms"], "remaining_positions": out["remaining_positions"], "flat": out["flat"]}
        try:
            from .. import notify

            notify.on_kill_switch(self.home, "flatten", data={"cancelled": out["cancelled"], "closed": out["closed"],
                                                               "failed": out["failed"]})
        except Exception:
            pass
        return res


def start_monitor(home, port: int | None = None, host: str | None = None, token: str | None = None,
                  allow_remote: bool | None = None, on_kill=None, environ=None, feed=None) -> MonitorServer:
    """Start the endpoint in a daemon thread and return the server (``.port``, ``.url``, ``.stop()``).
    Unset arguments come from QTS_MONITOR_PORT (default 8765), QTS_MONITOR_HOST (127.0.0.1),
    QTS_MONITOR_TOKEN and QTS_MONITOR_ALLOW_REMOTE."""
    env = os.environ if environ is None else environ
    if port is None:
        raw = env.get("QTS_MONITOR_PORT", "")
        try:
            port = int(raw) if raw else DEFAULT_PORT
        except ValueError:
            raise MonitorError(f"QTS_MONITOR_PORT: expected a port number, got {raw!r}") from None
    host = host or env.get("QTS_MONITOR_HOST") or "127.0.0.1"
    if token is None:
        token = env.get("QTS_MONITOR_TOKEN") or None
    if allow_remote is None:
        allow_remote = env.get("QTS_MONITOR_ALLOW_REMOTE", "").strip().lower() in ("1", "true", "yes", "on")
    return MonitorServer(home, host, port, token, allow_remote, on_kill, feed=feed).start()
