"""The kill switch, end to end, for when everything else is broken. Standard library only.

1. The flag, first: a file in the state home, written atomically (milliseconds; no virtualenv needed).
2. The paper loop, if one runs, gets SIGTERM.
3. Live: the trading agent is told (it also sees the flag by itself) and answers with its report:
   every open order on its markets cancelled (its own and others'), every base balance sold, and
   "flat" only when the exchange confirms. When live trading is configured but no agent answers, the
   report says UNVERIFIED and points to the exchange's own close-all; it never asks for the PIN.
4. Paper: the paper account is flattened too (only when it holds anything: that part needs the
   library's heavy imports, through ``paper_flatten``).

Exit code 0 only when everything is confirmed flat; 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

from . import protocol
from .paths import AgentPaths

EXCHANGE_CLOSE_ALL = ("open the exchange's own app or website and cancel all open orders and sell the positions "
                      "there (Binance: Orders > Open Orders > Cancel All; then sell from Wallet > Spot)")


def _env_file_says_live(home_root) -> bool:
    try:
        for line in open(os.path.join(str(home_root), ".env"), encoding="utf-8", errors="replace"):
            k, _, v = line.strip().removeprefix("export ").partition("=")
            if k.strip() == "PAPER_TRADING" and v.strip().strip("'\"").lower() in ("0", "false", "no", "off"):
                return True
    except OSError:
        pass
    return False


def live_configured(home_root, paths: AgentPaths, env=None) -> bool:
    env = os.environ if env is None else env
    return (str(env.get("PAPER_TRADING", "")).strip().lower() in ("0", "false", "no", "off")
            or _env_file_says_live(home_root) or paths.state.exists())


def paper_exposure(db_path) -> bool | None:
    """Does the paper account hold a position or an open order? None when the database cannot say."""
    if not os.path.exists(db_path):
        return False
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=2)
        try:
            pos = conn.execute("SELECT COUNT(*) FROM positions WHERE mode='paper' AND amount > 0").fetchone()[0]
            opn = conn.execute("SELECT COUNT(*) FROM orders WHERE mode='paper' AND status IN "
                               "('intent','sent','open','partially_filled')").fetchone()[0]
        finally:
            conn.close()
        return bool(pos or opn)
    except sqlite3.Error:
        return None


def _record_in_database(db_path: str, reason: str, out: dict) -> None:
    """The engagement in the events table too (sqlite3, standard library): deleting the flag alone then
    does not release the paper side. Best effort: the flag is what counts first."""
    if not os.path.exists(db_path):
        return
    try:
        conn = sqlite3.connect(db_path, timeout=2)
        try:
            with conn:
                conn.execute("INSERT INTO events (ts, kind, severity, message, data) VALUES (?,?,?,?,?)",
                             (int(time.time() * 1000), "kill_switch", "critical", f"engaged: {reason}",
                              json.dumps({"action": "engaged", "reason": reason})))
        finally:
            conn.close()
    except sqlite3.Error as e:
        out["database_error"] = f"{e.__class__.__name__}: {e}"


def tell_agent(home, reason: str, env=None, agent_timeout_s: float = 60.0) -> dict:
    """The live side of the kill switch: ask the running trading agent to engage and flatten at the exchange,
    and say whether that is verified. Shared by :func:`run` (hooks/kill_switch.sh, `qts kill-switch`) and
    the monitor's POST /kill-switch. Never raises."""
    try:
        paths = AgentPaths.for_home(home.root)
        live = {"configured": live_configured(home.root, paths, env)}
        if protocol.agent_alive(paths):
            try:
                ans = protocol.call(paths, "engage", {"reason": reason, "timeout_s": agent_timeout_s},
                                    timeout_s=agent_timeout_s + 5)
                rep = ans.get("data") or {}
                live.update({"agent": True, "verified": bool(rep.get("verified")), "flat": bool(rep.get("flat")),
                             "report": rep, "message": ans.get("message", ""), "transport": ans.get("transport")})
            except Exception as e:  # noqa: BLE001
                live.update({"agent": False, "verified": False, "flat": False,
                             "message": f"the trading agent did not answer ({e.__class__.__name__}: {e})"})
        else:
            live.update({"agent": False, "verified": not live["configured"], "flat": not live["configured"]})
            if live["configured"]:
                live["message"] = ("UNVERIFIED: no trading agent is running, so nothing at the exchange was checked or "
                                   "closed. The flag is set: no live order can go out. To close positions now, "
                                   + EXCHANGE_CLOSE_ALL + ".")
        return live
    except Exception as e:  # noqa: BLE001 - the flag is already set; say what is unknown
        return {"configured": True, "agent": False, "verified": False, "flat": False,
                "message": f"the trading agent could not be asked ({e.__class__.__name__}: {e})"}


def run(home_root, reason: str = "manual", paper_flatten=None, env=None, agent_timeout_s: float = 60.0) -> dict:
    """Engage and flatten everything. ``paper_flatten()`` -> dict with cancelled/closed/failed/flat."""
    from ..paths import StateHome
    from ..safety import kill_switch as ks

    t0 = time.perf_counter()
    home = StateHome(home_root)
    out: dict = {"reason": reason, "flag": str(home.kill_flag)}
    try:
        home.ensure()
        step = ks.engage(home, reason, notify=False)  # the notification goes out at the end
        out["flag_ms"] = round(step["flag_ms"], 2)
        out["flag_set"] = True
    except Exception as e:  # noqa: BLE001 - say so, and carry on: the agent is told directly too
        out["flag_set"], out["flag_error"] = False, f"{e.__class__.__name__}: {e}"
    _record_in_database(str(home.db_path), reason, out)
    try:
        out["loop"] = ks.stop_loop(home)
    except Exception as e:  # noqa: BLE001
        out["loop"] = {"pid": None, "stopped": False, "error": f"{e.__class__.__name__}: {e}"}
    out["halted_ms"] = round((time.perf_counter() - t0) * 1000, 2)

    live = tell_agent(home, reason, env, agent_timeout_s)
    out["live"] = live

    paper = {"exposure": paper_exposure(str(home.db_path))}
    if paper["exposure"] is False:
        paper.update({"flat": True, "cancelled": [], "closed": [], "failed": []})
    elif paper_flatten is None:
        paper.update({"flat": False, "failed": [{"paper": "needs the virtualenv: run qts kill-switch"}]})
    else:
        try:
            paper.update(paper_flatten())
        except Exception as e:  # noqa: BLE001
            paper.update({"flat": False, "failed": [{"paper": f"{e.__class__.__name__}: {str(e)[:200]}"}]})
    out["paper"] = paper
    out["flat"] = bool(live["flat"] and live["verified"] and paper.get("flat"))
    out["ms"] = round((time.perf_counter() - t0) * 1000, 1)
    try:  # off the critical path: everything is done; the notifier reports it
        from ..notify import on_kill_switch

        on_kill_switch(home, "engaged", reason)
        on_kill_switch(home, "flatten", data={"flat": out["flat"], "live": live.get("message") or
                                              (live.get("report") or {}).get("summary"), "paper_flat": paper.get("flat")})
    except Exception:  # noqa: BLE001 - a notification never fails the kill switch
        pass
    return out


def render(out: dict) -> str:
    lines = []
    if out.get("flag_set"):
        lines.append(f"KILL SWITCH ENGAGED  flag set in {out.get('flag_ms', 0):.1f} ms: {out['flag']}")
    else:
        lines.append(f"KILL SWITCH: the flag could NOT be written ({out.get('flag_error')}); the agent was told directly")
    lp = out.get("loop") or {}
    lines.append(f"  paper loop: {'stopped pid ' + str(lp['pid']) if lp.get('pid') else 'none running'}"
                 + ("" if lp.get("stopped", True) else "  (STILL RUNNING: its orders are refused by the gate)"))
    live = out.get("live") or {}
    if live.get("agent"):
        rep = live.get("report") or {}
        lines.append(f"  live: {rep.get('summary') or live.get('message')}")
        if live.get("transport") == "spool":
            lines.append("    (answered through the spool folder, which anything that can write the project can write: "
                         "confirm at the exchange or with `qts agent account` from your own shell)")
        for c in rep.get("cancelled_foreign", []):
            lines.append(f"    cancelled an order the agent did not place: {c}")
        for c in rep.get("closed", []):
            lines.append(f"    closed {c['symbol']} {c['amount']:.8g} @ {c['price'] or 0:.8g}")
        for f in rep.get("left", []):
            lines.append(f"    LEFT AT THE EXCHANGE: {f}")
        if not live.get("flat"):
            lines.append("    -> run the kill switch again to retry, or " + EXCHANGE_CLOSE_ALL)
    elif live.get("configured"):
        lines.append(f"  live: {live.get('message')}")
    else:
        lines.append("  live: not configured (paper only)")
    paper = out.get("paper") or {}
    for c in paper.get("cancelled", []):
        lines.append(f"  paper: cancelled {c}")
    for c in paper.get("closed", []):
        lines.append(f"  paper: closed {c['symbol']} {c['amount']:.6g} @ {c['price']:.2f}")
    for f in paper.get("failed", []):
        lines.append(f"  paper: NOT DONE: {f}")
    lines.append("  flat." if out.get("flat") else
                 ("  UNVERIFIED: see above." if live.get("configured") and not live.get("agent") else
                  "  NOT confirmed flat: see above."))
    lines.append("  Resetting needs the PIN, in your own terminal: qts agent approve reset-kill-switch "
                 "(live) or qts kill-switch reset (paper)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """``python3 -S hooks/_hook.py kill_switch [--reason R] [--json]``: stdlib only; the paper flatten runs
    the qts CLI (heavy imports) only when the paper account holds something."""
    import subprocess
    import sys

    reason = argv[argv.index("--reason") + 1] if "--reason" in argv[:-1] else "manual"
    as_json = "--json" in argv
    from ..paths import StateHome, plugin_root

    home = StateHome.resolve()

    def paper_flatten():
        qts = os.path.join(str(plugin_root()), "hooks", "_qts.sh")
        p = subprocess.run([qts, "kill-switch", "engage", "--paper-only", "--json", "--reason", reason],
                           capture_output=True, text=True, timeout=120)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {"flat": False, "failed": [{"paper": (p.stderr or p.stdout).strip()[-300:]}]}
    out = run(home.root, reason, paper_flatten)
    if as_json:
        sys.stdout.write(json.dumps(out, default=str) + "\n")
    else:
        sys.stdout.write(render(out) + "\n")
    return 0 if out["flat"] else 1
