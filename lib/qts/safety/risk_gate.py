"""The gate's risk layer: build a portfolio snapshot from the store and the feed, then ask the
risk manager. Entries may be shrunk (with the reasons noted on the verdict) or refused.

The risk profile comes from ``safety/risk_profile.json``. A profile LOOSER than the defaults
(tightened by the settings) counts only with a PIN-signed approval of its exact record hash;
without one the defaults apply. A damaged file also falls back to the defaults (risk_profile.py).
"""

from __future__ import annotations

import time

from .risk import PortfolioSnapshot, RiskManager
from .risk_profile import default_profile, is_loosening, load_profile, stricter_profile

PROFILE_APPROVAL = "raise_risk_limit"
_cache: dict = {}


def _stamp(path):
    try:
        st = path.stat()
        return st.st_mtime_ns, st.st_size, st.st_ino
    except OSError:
        return None


def effective_profile(gate):
    if getattr(gate, "authority", None) is not None:
        prof = gate.authority.risk_profile()  # the agent's in-memory profile: files only tighten it
        if prof is not None:
            return prof
    home = gate.store.home
    path = home.safety_dir / "risk_profile.json"
    # the cache holds only while every file the verdict depends on is unchanged: the profile, its
    # approval, the PIN record that verifies it and the used-nonces file (its epoch voids approvals)
    from .grants import used_nonces_path
    from .pin import pin_path

    key = tuple((str(p), _stamp(p)) for p in (path, home.safety_dir / "risk_profile.approval.json",
                                              pin_path(home), used_nonces_path(home)))
    if _cache.get("key") == key and _cache.get("settings") is gate.settings:
        return _cache["profile"]
    base = default_profile()
    if gate.settings is not None:
        base = base.tightened_by_settings(gate.settings)
    loaded = load_profile(home, log=lambda kind, msg, data=None: gate.store.event("risk", msg, "warning", data),
                          settings=gate.settings)
    profile = loaded.profile
    if loaded.source == "default":
        profile = _last_recorded(gate, base) or profile
    elif loaded.source == "anchor":  # the per-user anchor's copy: a database copy may only tighten it
        recorded = _last_recorded(gate, base)
        if recorded is not None:
            profile = stricter_profile(recorded, profile)
    if loaded.source in ("file", "file+anchor") and is_loosening(base, profile) and not _approved(home, loaded.record_hash, gate.store):
        gate.store.event("risk", "risk profile looser than the defaults without a PIN approval: defaults apply",
                         "warning", {"loosened": is_loosening(base, profile)})
        profile = base
    _cache.update(key=key, settings=gate.settings, profile=profile)
    return profile


def _last_recorded(gate, base):
    """The profile file is missing or damaged: the last profile saved (recorded in the events table)
    still counts if it is at least as strict as the defaults, or was approved with the PIN. So
    deleting a profile the human TIGHTENED does not bring the looser defaults back."""
    import json

    from .risk_profile import validate_profile

    try:
        row = gate.store.one("SELECT data FROM events WHERE json_extract(data, '$.profile') IS NOT NULL AND "
                             "json_extract(data, '$.hash') IS NOT NULL ORDER BY id DESC LIMIT 1")
        if not row:
            return None
        data = json.loads(row["data"])
        candidate = validate_profile(data["profile"])
        if is_loosening(base, candidate) and not _approved(gate.store.home, data["hash"], gate.store):
            return None
        gate.store.event("risk", f"risk profile file missing or damaged: the last saved profile (v{data.get('version')}) "
                                 "stays in force", "warning", {"hash": data["hash"]})
        return candidate
    except Exception:
        return None


def _approved(home, record_hash, store=None) -> bool:
    import json

    try:
        from .approve import key_was_ready
        from .grants import verify_approval

        approval = json.loads((home.safety_dir / "risk_profile.approval.json").read_text())
        # a standing approval of one exact profile: checked as of when it was signed, by a key that
        # was past its cool-down then (a replaced PIN record cannot approve at once)
        payload = verify_approval(home, approval, PROFILE_APPROVAL, now=int(approval.get("issued_ts", 0)))
        return (bool(payload) and payload.get("hash") == record_hash
                and store is not None and key_was_ready(store, home, approval))
    except Exception:
        return False


def build_snapshot(gate, intent, full: bool = True) -> PortfolioSnapshot:
    store, broker, feed = gate.store, gate.broker, gate.feed
    mode = broker.mode
    now = feed.now_ms()
    authority = getattr(gate, "authority", None)
    # in the trading agent, what is held is what the exchange says (the books only lend the entry price)
    held = authority.positions(broker) if authority is not None else broker.positions()
    prices = {s: feed.quote(s).price for s in set(held) | {intent.symbol}}
    positions = {s: {"amount": p["amount"], "price": prices[s], "avg_entry": p["avg_entry"]} for s, p in held.items()}
    cash = authority.cash() if authority is not None else broker.cash()
    equity = cash + sum(p["amount"] * prices[s] for s, p in held.items())
    if not full:
        return PortfolioSnapshot(equity, cash, equity, equity, now, positions=positions, prices=prices)
    peak = store.scalar("SELECT MAX(equity) FROM equity_snapshots WHERE mode=?", (mode,)) or equity
    day0 = now - now % 86_400_000
    day_start = store.scalar("SELECT equity FROM equity_snapshots WHERE mode=? AND ts>=? ORDER BY ts LIMIT 1",
                             (mode, day0)) or equity
    open_notional: dict[str, float] = {}
    for o in broker.open_orders():
        if o["side"] == "buy":
            px = o["price"] or prices.get(o["symbol"]) or feed.quote(o["symbol"]).price
            open_notional[o["symbol"]] = open_notional.get(o["symbol"], 0.0) + (o["amount"] - o["filled"]) * px
    closed = [{"symbol": r["symbol"], "exit_ts": r["exit_ts"], "pnl": r["pnl"], "return": r["return_pct"] / 100,
               "exit_reason": r["exit_reason"] or ""}
              for r in store.query("SELECT * FROM closed_trades WHERE mode=? AND exit_ts>=? ORDER BY exit_ts",
                                   (mode, now - 7 * 86_400_000))]
    stamps = [r[0] for r in store.execute("SELECT created_ts FROM orders WHERE mode=? AND created_ts>=?",
                                          (mode, now - 120_000)).fetchall()]
    candles = {}
    for s in set(held) | set(open_notional) | {intent.symbol}:
        try:
            c = feed.candles(s, 150)
            candles[s] = {"high": c.high, "low": c.low, "close": c.close}
        except Exception:
            pass  # no candles: the manager refuses entries it cannot put a stop on
    stats = {}
    if intent.strategy:
        rows = store.query("SELECT pnl FROM closed_trades WHERE mode='paper' AND strategy=?", (intent.strategy,))
        wins = [r["pnl"] for r in rows if r["pnl"] > 0]
        losses = [-r["pnl"] for r in rows if r["pnl"] <= 0]
        if rows and wins and losses:
            stats[intent.strategy] = {"win_rate": len(wins) / len(rows),
                                      "payoff_ratio": (sum(wins) / len(wins)) / (sum(losses) / len(losses)),
                                      "n_trades": len(rows)}
    return PortfolioSnapshot(equity, cash, max(peak, equity), day_start, now, positions=positions,
                             open_order_notional=open_notional, closed_trades=closed, order_timestamps=stamps,
                             candles=candles, strategy_stats=stats, prices=prices)


def apply_risk(gate, intent):
    from dataclasses import replace

    from ..verdicts import Refuse

    profile = effective_profile(gate)
    snap = build_snapshot(gate, intent, full=intent.side == "buy")
    d = RiskManager(profile).assess(intent, snap)
    # what the sizing saw and answered, for the decision record (engine/replay.py re-runs it from this)
    gate.last_risk = {"profile": profile, "snapshot": snap, "intent": intent, "decision": d}
    if not d.allowed:
        raise Refuse(d.code, d.message)
    for note in d.adjustments:
        gate.note(note)
        if note.startswith("RISK_DRAWDOWN_REDUCE"):
            from ..notify.alerts import on_drawdown_throttle  # queued; never blocks or raises

            on_drawdown_throttle(gate.store.home, note, gate.mode, getattr(gate.feed, "source", None), intent.symbol)
    if intent.side == "buy":
        out = replace(intent, amount=d.amount, stop_loss=d.stop_loss, take_profit=d.take_profit)
        from .liquidity import check as check_liquidity

        check_liquidity(gate, out, profile)  # a market too thin (24 h volume, spread, depth): refused, typed LIQUIDITY
        return out
    return replace(intent, amount=d.amount) if d.amount and d.amount != intent.amount else intent


def now_ms() -> int:
    return int(time.time() * 1000)
