"""`qts dashboard`: one self-updating page on 127.0.0.1 over the monitor server (standard library only).

Routes (on top of the monitor's /health, /metrics, /positions, /status, POST /kill-switch):

- ``GET /`` and ``GET /dashboard``  the page: no data in it, no external resource. It reads the token from
  the URL fragment (``#token=...``: a fragment never reaches the server or its logs), keeps it in the
  tab's sessionStorage, and polls ``/dashboard/data`` every 2 s with ``Authorization: Bearer``.
- ``GET /dashboard/data``  (token) equity and drawdown, positions with their stops, the last decisions with
  reason codes, recent orders and refusals, breaker / trading state / kill switch, registry strategies with
  predicted vs realized, recent alerts.
- ``POST /halt``, ``POST /reduce``  (token) trading state HALTED / REDUCING, only as a tightening (REDUCING
  after HALTED is refused, 409, with the terminal command). ``POST /kill-switch`` (token) is the monitor's own. Nothing on the page loosens: it shows the terminal commands for that (PIN).
- ``POST /lower-limit`` ``{"field", "value"}`` (token) one risk-profile field to a STRICTER value, checked on the
  server against the effective profile by the profile's own rules (monitor/controls.py); anything else is 409
  with the terminal command.
- ``POST /pause`` ``{"strategy"}`` (token) the strategy takes no new entries from its next cycle
  (safety/pauses.py); resuming is a loosening: ``qts strategy resume NAME`` with the PIN.

The same routes are served on the loop's own monitor port (``qts run --monitor-port N``:
:func:`with_dashboard`), so one port shows the running loop.

Every dashboard route checks the Host header (127.0.0.1 / localhost / [::1] at the server's port), so a
web page elsewhere cannot reach it through DNS rebinding; the token is a header, never a cookie, so a
cross-site form cannot send it.
"""

from __future__ import annotations

import json
import time

from .registry_view import registry_view
from .server import MonitorServer, _Handler, log

LOOSEN_COMMANDS = [
    ("reset the kill switch", "qts kill-switch reset"),
    ("resume trading (HALTED/REDUCING -> ACTIVE)", "qts breaker state ACTIVE"),
    ("raise a risk limit", "qts risk set FIELD=VALUE"),
    ("resume a paused strategy", "qts strategy resume NAME"),
    ("go live / promote a strategy", "qts agent start  /  qts promote ID --to live-ramp"),
]


def dashboard_data(home, store, decisions: int = 20, rows: int = 20) -> dict:
    """Everything the page shows, JSON-ready, read from the database (and the registry file)."""
    from ..reports.status import collect_status

    st = collect_status(home, decisions=decisions, store=store)
    mode = st["mode"]
    out = {k: st.get(k) for k in ("generated_ts", "mode", "state", "cycles", "last_cycle_ts", "next_cycle_ts", "source",
                                  "equity", "cash", "positions_value", "unrealized_pnl", "initial_cash", "today",
                                  "drawdown", "breaker", "kill_switch", "decisions", "synthetic", "open_orders", "fills",
                                  "risk_profile")}
    snaps = store.query("SELECT ts, equity FROM equity_snapshots WHERE mode=? ORDER BY ts DESC, id DESC LIMIT 500",
                        (mode,))[::-1]
    out["equity_series"] = [[s["ts"], s["equity"]] for s in snaps]
    out["snapshots"] = store.scalar("SELECT COUNT(*) FROM equity_snapshots WHERE mode=?", (mode,)) or 0
    out["decision_count"] = store.scalar("SELECT COUNT(*) FROM decisions WHERE mode=?", (mode,)) or 0
    positions = []
    for p in st.get("positions") or []:
        stop = store.one("SELECT o.stop_loss, o.take_profit FROM orders o JOIN positions p ON p.mode=o.mode AND "
                         "p.symbol=o.symbol WHERE o.mode=? AND o.symbol=? AND o.side='buy' AND o.filled>0 AND "
                         "o.created_ts>=p.opened_ts ORDER BY o.id DESC LIMIT 1", (mode, p["symbol"]))
        positions.append({**p, "stop_loss": stop["stop_loss"] if stop else None,
                          "take_profit": stop["take_profit"] if stop else None})
    out["positions"] = positions
    out["orders"] = store.query("SELECT created_ts AS ts, symbol, side, type, amount, filled, avg_price, fee, status, "
                                "strategy, reason FROM orders WHERE mode=? ORDER BY id DESC LIMIT ?", (mode, rows))
    refusals = []
    for r in store.query("SELECT ts, message, data FROM events WHERE kind='gate' ORDER BY id DESC LIMIT ?", (rows,)):
        try:
            d = json.loads(r["data"])
        except ValueError:
            d = {}
        intent = d.get("intent") or {}
        refusals.append({"ts": r["ts"], "code": d.get("code"), "symbol": intent.get("symbol"),
                         "side": intent.get("side"), "message": d.get("message") or r["message"]})
    out["refusals"] = refusals
    out["refusal_count"] = store.scalar("SELECT COUNT(*) FROM events WHERE kind='gate'") or 0
    out["alerts"] = store.query("SELECT ts, json_extract(data, '$.alert') AS alert, json_extract(data, '$.severity') "
                                "AS severity, message FROM events WHERE kind='notify' AND json_extract(data, '$.alert') "
                                "IS NOT NULL ORDER BY id DESC LIMIT ?", (rows,))
    out["registry"] = registry_view(home, store, mode)
    from ..notify.alerts import check_agent

    out["agent_down"] = check_agent(home)  # (alerts when the agent's heartbeat stopped; cooldown 5 min)
    out["loosen"] = [{"what": w, "command": c} for w, c in LOOSEN_COMMANDS]
    from ..safety import pauses
    from .controls import limits_view

    out["paused"] = [{"strategy": k, **v} for k, v in sorted(pauses.paused(home, store).items())]
    out["limits"] = limits_view(home)
    names = {s["strategy"] for s in out["registry"]["strategies"] if s.get("strategy")}
    names |= {s["id"] for s in out["registry"]["strategies"] if s.get("id")}
    names |= {r["strategy"] for r in store.query("SELECT DISTINCT strategy FROM decisions WHERE +mode=? AND id > "
                                                 "(SELECT COALESCE(MAX(id), 0) - 5000 FROM decisions)", (mode,))
              if r["strategy"]}
    out["strategy_names"] = sorted(names)
    return out


DASHBOARD_POSTS = ("/halt", "/reduce", "/lower-limit", "/pause")


class DashboardHandler(_Handler):
    server_version = "qts-dashboard/1"

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        port = self.mon.port
        return host in {f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"}

    def do_GET(self):
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        if path in ("/", "/dashboard", "/dashboard/data"):
            if not self._host_ok() and path == "/" and getattr(self.mon, "monitor_routes_any_host", False):
                return super().do_GET()  # the loop's monitor, reached by another name: its own route list
            if not self._host_ok():
                return self._send(421, {"error": "wrong Host: open the dashboard at http://127.0.0.1:PORT/"})
            if path == "/dashboard/data":
                ok, code, why = self.mon.authorize(self.headers.get("Authorization"))
                if not ok:
                    return self._send(code, {"error": why})
                try:
                    return self._send(200, dashboard_data(self.mon.home, self.mon.store))
                except Exception as e:
                    log.warning("dashboard data failed: %s: %s", e.__class__.__name__, e)
                    return self._send(500, {"error": e.__class__.__name__})
            return self._send(200, PAGE.encode("utf-8"), "text/html; charset=utf-8",
                              extra={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                                     "Referrer-Policy": "no-referrer"})
        return super().do_GET()

    def do_POST(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        if path not in DASHBOARD_POSTS and getattr(self.mon, "monitor_routes_any_host", False):
            return super().do_POST()  # the loop's monitor: its POST /kill-switch as before (token, any Host)
        if not self._host_ok():
            return self._send(421, {"error": "wrong Host"})
        target = {"/halt": "HALTED", "/reduce": "REDUCING"}.get(path)
        control = {"/lower-limit": "lower_limit", "/pause": "pause_strategy"}.get(path)
        if target is None and control is None:
            return super().do_POST()
        length = self.headers.get("Content-Length")
        try:
            n = int(length) if length else 0
        except ValueError:
            return self._send(400, {"error": "bad Content-Length"})
        if n < 0 or n > 16_384:
            self.close_connection = True
            return self._send(413, {"error": "body too large"})
        raw = self.rfile.read(n) if n else b""
        ok, code, why = self.mon.authorize(self.headers.get("Authorization"))
        if not ok:
            return self._send(code, {"error": why})
        if control is not None:
            return self._control(control, raw)
        try:
            from ..safety.breaker import Breaker

            st = Breaker(self.mon.home, self.mon.store).set_trading_state(
                target, int(time.time() * 1000), reason=f"dashboard: {target}")
        except PermissionError as e:  # REDUCING after HALTED loosens: not from a web page
            return self._send(409, {"error": str(e), "changed": False,
                                    "command": f"qts breaker state {target}  (in your own terminal, with the PIN)"})
        except Exception as e:  # fail closed: say it did not happen
            log.error("%s via dashboard failed: %s: %s", target, e.__class__.__name__, e)
            return self._send(500, {"error": f"{e.__class__.__name__}: {e}", "changed": False})
        return self._send(200, {"changed": st.trading_state == target, "trading_state": st.trading_state,
                                "agent": _tell_agent(self.mon.home, "halt" if target == "HALTED" else "reduce"),
                                "undo": "qts breaker state ACTIVE  (in your own terminal, with the PIN)"})


    def _control(self, name: str, raw: bytes):
        from . import controls

        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return self._send(400, {"error": "body: expected JSON", "changed": False})
        if not isinstance(body, dict):
            return self._send(400, {"error": "body: expected a JSON object", "changed": False})
        try:
            with self.mon.control_lock:  # one change at a time: check and save are not interleaved
                code, out = getattr(controls, name)(self.mon.home, self.mon.store, body)
        except Exception as e:  # fail closed: say it did not happen
            log.error("%s via dashboard failed: %s: %s", name, e.__class__.__name__, e)
            return self._send(500, {"error": f"{e.__class__.__name__}: {e}", "changed": False})
        return self._send(code, out)


def _tell_agent(home, op: str) -> str:
    """The running trading agent keeps its policy in memory: a tightening is sent to it too (like
    `qts breaker state HALTED` does). Returns what happened, for the page."""
    try:
        from ..agent import protocol
        from ..agent.paths import AgentPaths

        paths = AgentPaths.for_home(home.root)
        if not protocol.agent_alive(paths):
            return "no trading agent running"
        ans = protocol.call(paths, op, {"reason": "dashboard"}, timeout_s=15)
        return str((ans.get("data") or {}).get("changed") or ans.get("message") or "told")
    except Exception as e:
        return f"not told ({e.__class__.__name__}: {e}); run `qts agent {op if op == 'halt' else 'reduce'}`"


def with_dashboard(srv: MonitorServer, keep_monitor_routes: bool = False) -> MonitorServer:
    """Serve the dashboard routes on an existing monitor server too (the loop's ``--monitor-port``). The
    dashboard answers only to a loopback Host header, so a monitor exposed with allow_remote does not expose it;
    with ``keep_monitor_routes`` the monitor's own routes (POST /kill-switch, GET /) answer any Host as before."""
    import threading

    srv.monitor_routes_any_host = keep_monitor_routes
    srv.control_lock = getattr(srv, "control_lock", None) or threading.Lock()
    srv.httpd.RequestHandlerClass = DashboardHandler
    return srv


def start_dashboard(home, port: int = 8766, host: str = "127.0.0.1", token: str | None = None) -> MonitorServer:
    """The monitor server with the dashboard routes, started in a daemon thread (``.url``, ``.stop()``)."""
    srv = MonitorServer(home, host, port, token, allow_remote=False)
    return with_dashboard(srv).start()


def dashboard_token(environ=None) -> tuple[str, bool]:
    """(token, made up): QTS_MONITOR_TOKEN when it is long enough, else one made up for this run."""
    import os
    import secrets

    from .server import MIN_TOKEN_LEN

    env = os.environ if environ is None else environ
    token = env.get("QTS_MONITOR_TOKEN") or ""
    if len(token) >= MIN_TOKEN_LEN:
        return token, False
    return secrets.token_urlsafe(24), True


CSP = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"

PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>qts dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1b1f24}
header{background:#1b1f24;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:center;flex-wrap:wrap}
header b{font-size:16px}.pill{padding:2px 8px;border-radius:10px;background:#3a414a}
.bad{background:#b42318!important;color:#fff}.warn{background:#b54708!important;color:#fff}.ok{background:#067647!important;color:#fff}
main{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:14px;padding:14px}
section{background:#fff;border:1px solid #d0d5dd;border-radius:6px;padding:10px 12px}
h2{font-size:14px;margin:0 0 8px}table{border-collapse:collapse;width:100%;font-size:12.5px}
td,th{padding:3px 6px;border-bottom:1px solid #eaecf0;text-align:right;white-space:nowrap}
td:first-child,th:first-child{text-align:left}.big{font-size:22px;font-weight:600}
button{padding:6px 10px;border-radius:4px;border:1px solid #b42318;background:#fff;color:#b42318;cursor:pointer;margin-right:6px}
code{background:#eef;padding:1px 4px;border-radius:3px}#msg{color:#b42318}.muted{color:#667085}
</style></head><body>
<header><b>qts</b><span id="mode" class="pill">-</span><span id="synthetic" class="pill warn" hidden>SYNTHETIC market</span>
<span>loop <span id="loop" class="pill">-</span></span><span>kill switch <span id="ks" class="pill">-</span></span>
<span>breaker <span id="breaker" class="pill">-</span></span><span>trading <span id="trading" class="pill">-</span></span>
<span class="muted">last cycle <span id="last_cycle">-</span> UTC · updated <span id="updated">-</span></span></header>
<div id="msg"></div>
<main>
<section><h2>Equity</h2><div class="big" id="equity">-</div>
<div>cash <span id="cash">-</span> · drawdown <span id="dd">-</span> (reduce at <span id="dd_reduce">-</span>, halt at <span id="dd_halt">-</span>) · today <span id="today">-</span></div>
<svg id="chart" width="100%" height="120" viewBox="0 0 600 120" preserveAspectRatio="none"><path id="eqpath" fill="none" stroke="#175cd3" stroke-width="1.5"/></svg>
<div class="muted"><span id="snapshots">0</span> snapshots · <span id="decision_count">0</span> decisions · <span id="refusal_count">0</span> refusals</div></section>
<section><h2>Positions</h2><table id="positions"></table></section>
<section><h2>Last decisions</h2><table id="decisions"></table></section>
<section><h2>Recent orders</h2><table id="orders"></table></section>
<section><h2>Refusals</h2><table id="refusals"></table></section>
<section><h2>Strategies (registry): predicted vs realized</h2><table id="registry"></table></section>
<section><h2>Alerts</h2><table id="alerts"></table></section>
<section><h2>Controls</h2>
<p>Tighten (needs the dashboard token):</p>
<button id="btn_kill" type="button">Engage kill switch</button><button id="btn_halt" type="button">Halt trading</button><button id="btn_reduce" type="button">Reduce only</button>
<p>Lower a limit (only a stricter value is accepted; the server checks it):
<select id="limit_field"></select> <span class="muted">now <span id="limit_now">-</span>, stricter is <span id="limit_dir">-</span></span>
<input id="limit_value" size="10" aria-label="new value"> <button id="btn_lower" type="button">Lower limit</button></p>
<p>Pause a strategy (no new entries; exits still run):
<select id="pause_name"></select> <button id="btn_pause" type="button">Pause</button>
<span class="muted">paused: <span id="paused">none</span></span></p>
<p id="ctl_result" class="muted"></p>
<p>Loosening is never done from here. In your own terminal (the PIN is asked there):</p><table id="loosen"></table>
</section>
</main>
<script>
"use strict";
(function () {
  const every = Number(new URLSearchParams(location.search).get("every")) || 2000;
  const m = /token=([^&]+)/.exec(location.hash);
  if (m) { sessionStorage.setItem("qts_token", decodeURIComponent(m[1])); history.replaceState(null, "", location.pathname + location.search); }
  const token = () => sessionStorage.getItem("qts_token") || "";
  const $ = (id) => document.getElementById(id);
  const money = (v) => v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US", {minimumFractionDigits: 2, maximumFractionDigits: 2});
  const pct = (v) => v === null || v === undefined ? "-" : Number(v).toFixed(2) + "%";
  const num = (v) => v === null || v === undefined ? "-" : Number(v).toPrecision(6);
  const iso = (ms) => ms ? new Date(ms).toISOString().slice(0, 16).replace("T", " ") : "-";
  const pill = (el, text, cls) => { el.textContent = text; el.className = "pill " + (cls || ""); };
  function table(id, head, rows) {
    const t = $(id); t.textContent = "";
    const tr = t.insertRow(); head.forEach((h) => { const th = document.createElement("th"); th.textContent = h; tr.appendChild(th); });
    if (!rows.length) { const r = t.insertRow(); const c = r.insertCell(); c.colSpan = head.length; c.textContent = "none"; c.className = "muted"; }
    rows.forEach((row) => { const r = t.insertRow(); row.forEach((v) => { r.insertCell().textContent = v === null || v === undefined ? "-" : String(v); }); });
  }
  function chart(series) {
    if (series.length < 2) { $("eqpath").setAttribute("d", ""); return; }
    const ys = series.map((p) => p[1]); const lo = Math.min(...ys), hi = Math.max(...ys); const span = hi - lo || 1;
    $("eqpath").setAttribute("d", series.map((p, i) => (i ? "L" : "M") + (600 * i / (series.length - 1)).toFixed(1) + " " + (115 - 110 * (p[1] - lo) / span).toFixed(1)).join(" "));
  }
  function render(d) {
    window.qtsData = d;
    pill($("mode"), (d.mode || "-").toUpperCase(), d.mode === "live" ? "bad" : "");
    $("synthetic").hidden = !d.synthetic;
    pill($("loop"), d.state || "-", d.state === "running" ? "ok" : "warn");
    const ks = d.kill_switch || {}; pill($("ks"), ks.engaged ? "ENGAGED" : "clear", ks.engaged ? "bad" : "ok");
    const b = d.breaker || {}; pill($("breaker"), b.state || "-", b.state === "closed" ? "ok" : "warn");
    pill($("trading"), b.trading_state || "-", b.trading_state === "ACTIVE" ? "ok" : b.trading_state === "HALTED" ? "bad" : "warn");
    $("last_cycle").textContent = iso(d.last_cycle_ts); $("updated").textContent = new Date().toISOString().slice(11, 19);
    $("equity").textContent = money(d.equity); $("cash").textContent = money(d.cash);
    const dd = d.drawdown || {}; $("dd").textContent = pct(dd.drawdown_pct); $("dd_reduce").textContent = pct(dd.reduce_pct); $("dd_halt").textContent = pct(dd.halt_pct);
    const t = d.today || {}; $("today").textContent = t.pnl === null || t.pnl === undefined ? "-" : money(t.pnl) + " (limit " + pct(t.limit_pct) + ")";
    $("snapshots").textContent = d.snapshots; $("decision_count").textContent = d.decision_count; $("refusal_count").textContent = d.refusal_count;
    chart(d.equity_series || []);
    table("positions", ["symbol", "amount", "entry", "mark", "unrealized", "stop loss", "take profit"],
      (d.positions || []).map((p) => [p.symbol, num(p.amount), money(p.avg_entry), money(p.mark), money(p.unrealized_pnl), money(p.stop_loss), money(p.take_profit)]));
    table("decisions", ["time", "symbol", "strategy", "price", "target", "reason codes"],
      (d.decisions || []).map((x) => [iso(x.ts), x.symbol, x.strategy, money(x.price), x.target, (x.reason_codes || []).join(" ")]));
    table("orders", ["time", "symbol", "side", "filled", "price", "fee", "status", "reason"],
      (d.orders || []).map((o) => [iso(o.ts), o.symbol, o.side, num(o.filled), money(o.avg_price), money(o.fee), o.status, o.reason]));
    table("refusals", ["time", "symbol", "side", "code", "why"],
      (d.refusals || []).map((r) => [iso(r.ts), r.symbol, r.side, r.code, (r.message || "").slice(0, 90)]));
    const reg = d.registry || {}; const rows = [];
    (reg.predicted_vs_realized || []).forEach((p) => {
      if (!p.comparison || !p.comparison.length) rows.push([p.strategy, p.registry_status || "-", p.status, "", ""]);
      else p.comparison.forEach((c) => rows.push([p.strategy, p.registry_status || "-", c.metric, num(c.expected), num(c.realized)]));
    });
    table("registry", ["strategy", "stage", "metric", "predicted", "realized"], rows);
    table("alerts", ["time", "alert", "level", "message"], (d.alerts || []).map((a) => [iso(a.ts), a.alert, a.severity, (a.message || "").slice(0, 90)]));
    table("loosen", ["to", "run"], (d.loosen || []).map((l) => [l.what, l.command]));
    fill("limit_field", ((d.limits || {}).fields || []).map((f) => f.field));
    showLimit();
    fill("pause_name", d.strategy_names || []);
    $("paused").textContent = (d.paused || []).map((p) => p.strategy).join(", ") || "none";
  }
  function fill(id, names) {  // keep the operator's choice across refreshes
    const sel = $(id); if (Array.from(sel.options).map((o) => o.value).join("\n") === names.join("\n")) return;
    const keep = sel.value; sel.textContent = "";
    names.forEach((n) => { const o = document.createElement("option"); o.value = n; o.textContent = n; sel.appendChild(o); });
    if (names.includes(keep)) sel.value = keep;
  }
  function showLimit() {
    const f = (((window.qtsData || {}).limits || {}).fields || []).find((x) => x.field === $("limit_field").value) || {};
    $("limit_now").textContent = f.value === undefined ? "-" : String(f.value); $("limit_dir").textContent = f.stricter || "-";
  }
  async function poll() {
    try {
      const r = await fetch("/dashboard/data", {headers: {"Authorization": "Bearer " + token()}, cache: "no-store"});
      if (r.status === 401 || r.status === 403) { $("msg").textContent = "Token missing or wrong: open the URL `qts dashboard` printed (it ends in #token=...)."; return; }
      if (!r.ok) { $("msg").textContent = "data: HTTP " + r.status; return; }
      $("msg").textContent = ""; render(await r.json());
    } catch (e) { $("msg").textContent = "dashboard server unreachable: " + e.message; }
    finally { setTimeout(poll, every); }
  }
  async function act(path, what, body) {
    if (!window.confirm(what + "?")) return;
    try {
      const r = await fetch(path, {method: "POST", headers: {"Authorization": "Bearer " + token(), "Content-Type": "application/json"}, body: JSON.stringify(body || {})});
      const j = await r.json(); $("ctl_result").textContent = what + ": " + (r.ok ? "done" : "refused (" + (j.error || r.status) + ")" + (j.command ? " -- in your terminal: " + j.command : ""));
    } catch (e) { $("ctl_result").textContent = what + ": failed: " + e.message; }
  }
  $("btn_kill").addEventListener("click", () => act("/kill-switch", "Engage the kill switch", {reason: "dashboard", flatten: true}));
  $("btn_halt").addEventListener("click", () => act("/halt", "Halt trading"));
  $("btn_reduce").addEventListener("click", () => act("/reduce", "Reduce only"));
  $("limit_field").addEventListener("change", showLimit);
  $("btn_lower").addEventListener("click", () => {
    const raw = $("limit_value").value.trim(); const n = Number(raw);
    act("/lower-limit", "Set " + $("limit_field").value + " to " + raw, {field: $("limit_field").value, value: raw !== "" && !isNaN(n) ? n : raw});
  });
  $("btn_pause").addEventListener("click", () => act("/pause", "Pause " + $("pause_name").value, {strategy: $("pause_name").value}));
  poll();
})();
</script></body></html>
"""
