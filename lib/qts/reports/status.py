"""``qts status``: one look at everything a trader checks before trusting the loop.

:func:`collect_status` reads the state home: the loop's status file, the breaker file,
the kill switch (flag and database), the risk profile, and the database (cash, positions, equity
snapshots, decisions). Open positions are marked at the last price the loop recorded for each
symbol (the latest decision's ``inputs.price``), the same prices the kill switch flattens at.

"Today" is the UTC day of the latest equity snapshot (in a replay that is the simulated clock), and
the day's starting equity and the peak are defined exactly as the gate's risk layer defines them
(first snapshot of the day; highest snapshot ever), so the limits shown are the limits enforced.
:func:`render_status` turns the dict into terminal tables; ``--json`` prints the dict itself.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

DAY_MS = 86_400_000


# -- small formatting helpers shared by the report modules -------------------------------------------

def iso(ts_ms, seconds: bool = False) -> str:
    if ts_ms is None:
        return "-"
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).strftime(fmt)


def money(v, signed: bool = False, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:+,.{nd}f}" if signed else f"{v:,.{nd}f}"


def pct(v, signed: bool = True, nd: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:+.{nd}f}%" if signed else f"{v:.{nd}f}%"


def num(v, nd: int = 6) -> str:
    if v is None:
        return "-"
    return f"{v:.{nd}g}"


def ago(seconds) -> str:
    if seconds is None:
        return "-"
    s = abs(seconds)
    out = f"{s:.0f}s" if s < 120 else f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h" if s < 172800 else f"{s / 86400:.1f}d"
    return out + (" ago" if seconds >= 0 else " from now")


def table(headers: list[str], rows: list[list], align: str | None = None, indent: int = 2) -> str:
    """A plain-text table. ``align``: one char per column, 'l' or 'r' (default: text left, numbers right)."""
    cells = [[("" if c is None else str(c)) for c in r] for r in rows]
    if align is None:
        align = "".join("r" if rows and all(isinstance(r[i], (int, float)) or _numeric(str(r[i]))
                                            for r in rows) else "l" for i in range(len(headers)))
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(vals):
        parts = [(v.rjust(w) if a == "r" else v.ljust(w)) for v, w, a in zip(vals, widths, align)]
        return " " * indent + "  ".join(parts).rstrip()

    out = [line(headers), " " * indent + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def _numeric(s: str) -> bool:
    s = s.replace(",", "").replace("%", "").replace("+", "").strip()
    if s in ("", "-"):
        return True
    try:
        float(s.split(" ")[0])
        return True
    except ValueError:
        return False


# -- data -----------------------------------------------------------------------------------------------

def last_prices(store, mode: str) -> dict[str, dict]:
    """{symbol: {"price", "ts"}} from each symbol's latest decision."""
    out = {}
    rows = store.query("SELECT symbol, ts, json_extract(inputs, '$.price') AS price FROM decisions WHERE id IN "
                       "(SELECT MAX(id) FROM decisions WHERE mode=? GROUP BY symbol)", (mode,))
    for r in rows:
        try:
            p = float(r["price"])
        except (TypeError, ValueError):
            continue
        if p > 0:
            out[r["symbol"]] = {"price": p, "ts": r["ts"]}
    return out


def marked_positions(store, mode: str, prices: dict | None = None) -> list[dict]:
    """Open positions with their mark (last decision price; the entry price when none is recorded)."""
    prices = prices if prices is not None else last_prices(store, mode)
    out = []
    for p in store.query("SELECT * FROM positions WHERE mode=? AND amount>0 ORDER BY symbol", (mode,)):
        mk = prices.get(p["symbol"])
        mark = mk["price"] if mk else p["avg_entry"]
        value = p["amount"] * mark
        cost = p["amount"] * p["avg_entry"]
        unreal = value - cost
        out.append({"symbol": p["symbol"], "amount": p["amount"], "avg_entry": p["avg_entry"], "mark": mark,
                    "mark_ts": mk["ts"] if mk else None, "mark_source": "last decision" if mk else "entry (no price)",
                    "value": value, "unrealized_pnl": unreal,
                    "unrealized_pct": 100 * unreal / cost if cost > 0 else None,
                    "realized_pnl": p["realized_pnl"], "fees": p["fees"], "strategy": p["strategy"],
                    "opened_ts": p["opened_ts"]})
    return out


def _settings_or_none(home):
    from ..config import ConfigError, load_settings

    try:
        return load_settings(home=home.root), None
    except ConfigError as e:
        return None, str(e)


def _loop(home, now_s: float) -> dict:
    from ..engine.status_file import read_status

    st = read_status(home)
    out = {k: st.get(k) for k in ("state", "pid", "mode", "source", "cycles", "last_cycle_ts", "next_cycle_ts",
                                  "interval_min", "started", "updated", "reason", "error")}
    out["updated_age_s"] = (now_s - st["updated"]) if st.get("updated") else None
    out["stale"] = False
    if out["state"] == "running" and out["updated_age_s"] is not None:
        interval_s = 60 * (out.get("interval_min") or 5)
        # a live loop writes its status every cycle; 3 missed cycles means it is stuck
        out["stale"] = out["updated_age_s"] > max(3 * interval_s, 120)
    return out


def _breaker(home, now_ms: int, store=None) -> dict:
    """The state the gate would see, without recording anything (Breaker.status() records an unreadable
    state as a trip): the file, checked against its copy in the events table when there is a database."""
    from ..safety.breaker import Breaker, load

    b = load(home, now_ms)
    if store is not None:
        try:
            brk = Breaker(home, store)
            if not b.readable and not home.breaker_file.exists():
                b.trading_state = brk._stricter(b.trading_state, brk._last_recorded_trading_state())
            check = getattr(brk, "_check_against_database", None)
            if check is not None:
                check(b, now_ms)
        except Exception:
            pass  # what the file says, already fail-safe
    return {"state": b.state, "trading_state": b.trading_state, "since_ts": b.since_ts, "reason": b.reason,
            "trips": b.trips, "readable": b.readable, "live_allowed": b.live_allowed}


def collect_status(home, settings=None, now_ms: int | None = None, decisions: int = 12, store=None) -> dict:
    """Everything ``qts status`` shows, as a JSON-ready dict. Reads only (except that the kill switch's
    own status check records a flag-only engagement in the database, by design)."""
    from ..safety import kill_switch
    from ..safety.risk_profile import load_profile

    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    config_error = None
    if settings is None:
        settings, config_error = _settings_or_none(home)
    loop = _loop(home, now_ms / 1000)
    mode = loop.get("mode") or ("paper" if settings is None or settings.PAPER_TRADING else "live")
    out: dict = {
        "generated_ts": now_ms, "home": str(home.root), "mode": mode,
        "configured_mode": None if settings is None else ("paper" if settings.PAPER_TRADING else "live"),
        "config_error": config_error, "loop": loop, "breaker": _breaker(home, now_ms),  # (again below, with the db)
    }
    # the loop's own fields at the top level too (what `qts status --json` always printed)
    out.update({k: loop.get(k) for k in ("state", "pid", "cycles", "reason", "last_cycle_ts", "next_cycle_ts",
                                         "source")})
    lp = load_profile(home, settings=settings)
    prof = lp.profile
    out["risk_profile"] = {"version": lp.version, "source": lp.source, "problem": lp.problem}
    from .first_run import account_note, breaker_note, paper_account_open

    # a new state home explains itself: the breaker's starting OPEN, and the paper account not opened yet
    out["paper_account_open"] = paper_account_open(home)
    out["first_run"] = [n for n in (breaker_note(home, now_ms),
                                    account_note(home, settings.INITIAL_CASH if settings else None)
                                    if mode == "paper" else None) if n]
    own = store is None
    if own and not home.db_path.exists():
        ks = kill_switch.status(home, None)
        out["kill_switch"] = {"engaged": ks.engaged, "reason": ks.reason, "since_ts": ks.since_ts, "source": ks.source}
        out.update(database=None, equity=None, cash=None, positions=[], open_orders=0, today=None, drawdown=None,
                   decisions=[], synthetic=False)
        return out
    if own:
        from ..store import Store

        store = Store.open(home)
    try:
        out["breaker"] = _breaker(home, now_ms, store)
        ks = kill_switch.status(home, store)
        out["kill_switch"] = {"engaged": ks.engaged, "reason": ks.reason, "since_ts": ks.since_ts, "source": ks.source}
        out["database"] = str(home.db_path)
        prices = last_prices(store, mode)
        positions = marked_positions(store, mode, prices)
        cash = store.scalar("SELECT COALESCE(SUM(free), 0) FROM balances WHERE mode=?", (mode,)) or 0.0
        pos_value = sum(p["value"] for p in positions)
        equity = cash + pos_value
        out.update(cash=cash, positions_value=pos_value, equity=equity,
                   unrealized_pnl=sum(p["unrealized_pnl"] for p in positions), positions=positions,
                   marks={s: v for s, v in prices.items()})
        out["initial_cash"] = store.scalar("SELECT json_extract(data, '$.initial_cash') FROM events "
                                           "WHERE kind='account' ORDER BY id DESC LIMIT 1")
        out["open_orders"] = store.scalar(
            "SELECT COUNT(*) FROM orders WHERE mode=? AND status IN ('intent','sent','open','partially_filled')",
            (mode,)) or 0
        out["fills"] = store.scalar("SELECT COUNT(*) FROM fills WHERE mode=?", (mode,)) or 0
        last = store.one("SELECT * FROM equity_snapshots WHERE mode=? ORDER BY ts DESC, id DESC LIMIT 1", (mode,))
        out["last_snapshot"] = last
        clock = last["ts"] if last else now_ms
        out["clock_ts"] = clock
        # today: the gate's definition (risk_gate.build_snapshot): first snapshot of the UTC day
        day0 = clock - clock % DAY_MS
        day_start = store.scalar("SELECT equity FROM equity_snapshots WHERE mode=? AND ts>=? ORDER BY ts LIMIT 1",
                                 (mode, day0))
        limit_pct = prof.daily_loss_limit_pct
        if day_start:
            pnl = equity - day_start
            loss_pct = max(0.0, -100 * pnl / day_start)
            out["today"] = {"day_start_ts": day0, "day_start_equity": day_start, "pnl": pnl,
                            "pnl_pct": 100 * pnl / day_start, "limit_pct": limit_pct,
                            "limit_amount": day_start * limit_pct / 100, "limit_used_pct": 100 * loss_pct / limit_pct,
                            "state": "halted" if loss_pct >= limit_pct else "ok"}
        else:
            out["today"] = {"day_start_ts": day0, "day_start_equity": None, "pnl": None, "pnl_pct": None,
                            "limit_pct": limit_pct, "limit_amount": None, "limit_used_pct": None, "state": "no data"}
        peak = store.scalar("SELECT MAX(equity) FROM equity_snapshots WHERE mode=?", (mode,))
        peak = max(peak or equity, equity)
        dd = 100 * (peak - equity) / peak if peak > 0 else 0.0
        out["drawdown"] = {"peak_equity": peak, "drawdown_pct": dd, "drawdown": peak - equity,
                           "reduce_pct": prof.drawdown_reduce_pct, "reduce_mult": prof.drawdown_reduce_mult,
                           "halt_pct": prof.drawdown_halt_pct,
                           "state": ("halted" if dd >= prof.drawdown_halt_pct else
                                     "reducing" if dd >= prof.drawdown_reduce_pct else "ok")}
        # +mode: walk the table newest first and stop at the LIMIT (the (mode, ts) index would sort every row)
        rows = store.query("SELECT ts, symbol, strategy, inputs, outputs, reason_codes FROM decisions WHERE +mode=? "
                           "ORDER BY id DESC LIMIT ?", (mode, decisions))
        decs = []
        synthetic = False
        for r in rows:
            try:
                inp, outp, codes = json.loads(r["inputs"]), json.loads(r["outputs"]), json.loads(r["reason_codes"])
            except ValueError:
                inp, outp, codes = {}, {}, []
            synthetic = synthetic or str(inp.get("source", "")).startswith("synthetic")
            res = outp.get("result") or {}
            decs.append({"ts": r["ts"], "symbol": r["symbol"], "strategy": r["strategy"], "price": inp.get("price"),
                         "held": inp.get("held"), "target": outp.get("target"), "reason_codes": codes,
                         "order_status": res.get("status"), "client_order_id": res.get("client_order_id")})
        out["decisions"] = decs
        out["synthetic"] = synthetic
        out["recent_events"] = store.query(
            "SELECT ts, kind, severity, message FROM events WHERE kind IN ('breaker','kill_switch','gate','error','risk') "
            "ORDER BY id DESC LIMIT 5")
    finally:
        if own:
            store.close()
    return out


# -- rendering ------------------------------------------------------------------------------------------

def _bar(used_pct, width: int = 20) -> str:
    if used_pct is None:
        return ""
    n = max(0, min(width, round(width * used_pct / 100)))
    return "[" + "#" * n + "." * (width - n) + f"] {used_pct:.0f}% of limit"


def _wrap(text: str, first: str, width: int = 110) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=" " * len(first))


def render_status(d: dict) -> str:
    L = []
    L.append(f"QTS status  {iso(d['generated_ts'])} UTC   state home {d['home']}")
    if d.get("config_error"):
        L.append(f"  ! configuration: {d['config_error']}")
    mode = d["mode"].upper()
    extra = ""
    if d.get("configured_mode") and d["configured_mode"] != d["mode"]:
        extra = f"   (configured: {d['configured_mode']}; the loop runs {d['mode']})"
    if d.get("synthetic"):
        extra += "   SYNTHETIC market data (generated prices)"
    L.append(f"  mode          {mode}{extra}")
    lo = d["loop"]
    state = lo.get("state") or "not running"
    line = f"  loop          {state.upper()}"
    if lo.get("stale"):
        line += " (STALE: no cycle for " + ago(lo.get("updated_age_s")).replace(" ago", "") + ")"
    if lo.get("pid") and state in ("running", "dead"):
        line += f"   pid {lo['pid']}"
    if lo.get("reason") and state != "running":
        line += f"   ({lo['reason']})"
    if lo.get("error"):
        line += f"   error: {lo['error']}"
    L.append(line)
    if lo.get("last_cycle_ts"):
        L.append(f"                last cycle {iso(lo['last_cycle_ts'])}   next {iso(lo.get('next_cycle_ts'))}   "
                 f"cycles {lo.get('cycles')}   status written {ago(lo.get('updated_age_s'))}"
                 + (f"   source {lo['source']}" if lo.get("source") else ""))
    b = d["breaker"]
    L.append(f"  breaker       {b['state'].upper()}   trading {b['trading_state']}   live "
             f"{'allowed' if b['live_allowed'] else 'refused'}   since {iso(b['since_ts'])}: {b['reason']}")
    ks = d["kill_switch"]
    L.append(f"  kill switch   {'ENGAGED' if ks['engaged'] else 'clear'}"
             + (f" since {iso(ks['since_ts'])}: {ks['reason']}" if ks["engaged"] else ""))
    rp = d["risk_profile"]
    L.append(f"  risk profile  v{rp['version']} ({rp['source']}" + (f": {rp['problem']}" if rp.get("problem") else "") + ")")
    for i, note in enumerate(d.get("first_run") or []):
        L.extend(_wrap(note, ("  new here      " if i == 0 else "                ")))
    if d.get("database") is None:
        L.append("  database      none yet (run `qts once` or `qts run` to start paper trading)")
        return "\n".join(L)
    if d.get("mode") == "paper" and d.get("paper_account_open") is False:
        L.append("  equity        no paper account yet (see above): nothing to value")
        return "\n".join(L)
    L.append(f"  equity        {money(d['equity'])}   cash {money(d['cash'])}   positions {money(d['positions_value'])}"
             f"   unrealized {money(d['unrealized_pnl'], True)}   open orders {d['open_orders']}")
    if d.get("initial_cash"):
        L.append(f"                {pct(100 * (d['equity'] - d['initial_cash']) / d['initial_cash'])} since the account "
                 f"opened with {money(d['initial_cash'])}")
    t = d["today"]
    if t and t.get("pnl") is not None:
        L.append(f"  today         {money(t['pnl'], True)} ({pct(t['pnl_pct'])}) since {iso(t['day_start_ts'])}   "
                 f"daily loss limit -{t['limit_pct']:g}% (-{money(t['limit_amount'])})   "
                 f"{_bar(t['limit_used_pct'])}" + ("   ENTRIES HALTED" if t["state"] == "halted" else ""))
    else:
        L.append(f"  today         no equity recorded today   daily loss limit -{t['limit_pct']:g}%")
    dd = d["drawdown"]
    L.append(f"  drawdown      {dd['drawdown_pct']:.2f}% ({money(-dd['drawdown'])}) from peak {money(dd['peak_equity'])}   "
             f"reduce at {dd['reduce_pct']:g}% (x{dd['reduce_mult']:g} size)   halt at {dd['halt_pct']:g}%   "
             f"-> {dd['state'].upper()}")
    L.append("")
    if d["positions"]:
        L.append("Open positions (marked at the last recorded decision price)")
        L.append(table(["symbol", "amount", "entry", "mark", "marked at", "value", "unrealized", "%", "opened"],
                       [[p["symbol"], num(p["amount"]), money(p["avg_entry"]), money(p["mark"]), iso(p["mark_ts"]),
                         money(p["value"]), money(p["unrealized_pnl"], True), pct(p["unrealized_pct"]),
                         iso(p["opened_ts"])] for p in d["positions"]], align="lrrrlrrrl"))
    else:
        L.append("Open positions: none")
    L.append("")
    if d["decisions"]:
        L.append(f"Last {len(d['decisions'])} decisions")
        L.append(table(["time", "symbol", "strategy", "price", "held", "target", "reason codes"],
                       [[iso(x["ts"]), x["symbol"], x["strategy"], money(x["price"]) if x["price"] else "-",
                         num(x["held"]), "-" if x["target"] is None else f"{x['target']:g}",
                         " ".join(x["reason_codes"])] for x in d["decisions"]], align="lllrrrl"))
    else:
        L.append("Decisions: none recorded yet")
    if d.get("recent_events"):
        L.append("")
        L.append("Recent safety events")
        for e in d["recent_events"]:
            L.append(f"  {iso(e['ts'])}  {e['severity']:8} {e['kind']:11} {e['message'][:110]}")
    return "\n".join(L)
