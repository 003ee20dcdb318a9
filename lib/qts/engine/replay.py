"""Deterministic replay of recorded decisions.

When the loop decides, it records under ``inputs.replay`` what the decision needs to be re-run exactly:

* the candles the strategy saw: window bounds, count, timeframe, the feed's ``source`` and a sha256 of
  their content; the candles themselves go to the ``candles_seen`` table (one row per candle, shared by
  the overlapping windows of successive cycles);
* the strategy: name, parameters and a hash of its code (its module, the base class, the indicators);
* the loop's own inputs: position held, price, the allocation a full position may use, the stop loss /
  take profit the protective exit compared the last close with;
* the account state before the decision: cash and positions;
* when the order reached the risk layer: the intent it was given, the portfolio snapshot it sized on
  (candles by reference, as above), the risk profile by hash (its body in ``replay_blobs``) and what it
  answered (allowed, code, amount, stop loss, take profit).

:func:`verify` re-runs each recorded decision from those inputs alone (the strategy on the stored candles,
the loop's intent rule, the risk manager on the recorded snapshot and profile) and reports, field by field,
every decision whose re-run differs from the record, or whose stored inputs no longer match their hashes.
Nothing here touches a broker, the gate or the network.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field

import numpy as np

from ..fsutil import dumps

RISK_CANDLES = 150  # bars of each symbol the risk layer reads for ATR and correlation (risk_gate.build_snapshot)
_REL = 1e-9


# -- hashing --------------------------------------------------------------------------------------------------

def candles_hash(c) -> str:
    """sha256 over the timeframe and the columns (ts as int64, prices and volume as float64)."""
    h = hashlib.sha256(str(int(c.timeframe_ms)).encode())
    h.update(np.ascontiguousarray(c.ts, dtype=np.int64).tobytes())
    for col in (c.open, c.high, c.low, c.close, c.volume):
        h.update(np.ascontiguousarray(col, dtype=np.float64).tobytes())
    return h.hexdigest()


def hlc_hash(high, low, close) -> str:
    h = hashlib.sha256()
    for col in (high, low, close):
        h.update(np.ascontiguousarray(col, dtype=np.float64).tobytes())
    return h.hexdigest()


_code_hashes: dict[type, str] = {}


def strategy_code_hash(strategy_cls) -> str:
    """sha256 of the source files the strategy's decision runs through."""
    if strategy_cls not in _code_hashes:
        from ..strategies import base, indicators

        h = hashlib.sha256()
        user_sha = getattr(strategy_cls, "__qts_source_sha256__", None)  # a user file: the bytes it was compiled from
        for mod in (inspect.getmodule(strategy_cls), base, indicators):
            if user_sha and mod is inspect.getmodule(strategy_cls):
                h.update(f"user-file:{user_sha}".encode())
                continue
            try:
                h.update(inspect.getsource(mod).encode())
            except (OSError, TypeError):
                h.update(repr(mod).encode())
        _code_hashes[strategy_cls] = h.hexdigest()
    return _code_hashes[strategy_cls]


def profile_body(profile) -> tuple[str, str]:
    body = dumps(profile.model_dump())
    return hashlib.sha256(body.encode()).hexdigest(), body


# -- recording (called by the loop) ---------------------------------------------------------------------------

class Recorder:
    """Collects, during a cycle, the candle rows and profile bodies its decisions refer to; :meth:`flush`
    writes them inside the cycle's transaction (with the decisions), :meth:`committed` after it.

    The loop keeps one recorder for its life: it remembers, per symbol, the contiguous range of candle
    times already in the table (committed), so a cycle writes only the candles that are new to it (one
    or two per symbol), not its whole window again."""

    def __init__(self, store, source: str):
        self.store, self.source = store, source
        self._stored: dict[tuple, tuple[int, int]] = {}   # (symbol, tf) -> ts range in the table (committed)
        self._seen: dict[tuple, tuple[int, int]] = {}     # the same, with this cycle's queued rows
        self._rows: list[tuple] = []
        self._blobs: dict[str, tuple[str, str]] = {}
        self._known_blobs: set[str] = set()
        self.identity = None

    @classmethod
    def for_loop(cls, loop) -> "Recorder":
        """The loop's recorder; a new one when the feed or the database (replaced on disk) changed."""
        r = getattr(loop, "_recorder", None)
        ident = loop.store.identity()
        if r is None or r.source != loop.feed.source or r.store is not loop.store or r.identity != ident:
            r = cls(loop.store, loop.feed.source)
            r.identity = ident
            loop._recorder = r
        return r

    def account(self, broker) -> dict:
        try:
            return {"cash": broker.cash(), "positions": {s: p["amount"] for s, p in broker.positions().items()}}
        except Exception as e:  # the record must never break a cycle
            return {"error": f"{e.__class__.__name__}: {e}"}

    def record(self, symbol: str, strat, candles, *, held: float, price: float, allocation: float, protect,
               account: dict, feed, risk: dict | None) -> dict:
        """A decision's ``inputs.replay``. Never raises: a failure is recorded (``error``) and the decision is
        then reported by :func:`verify` as not replayable, with the reason."""
        try:
            return {"candles": self.window(symbol, candles), "held": held, "price": price, "allocation": allocation,
                    "params": strat.params.model_dump(), "code_hash": strategy_code_hash(type(strat)),
                    "stop_loss": protect[0], "take_profit": protect[1], "account_before": account,
                    "risk": self.risk(feed, risk) if risk else None}
        except Exception as e:
            return {"error": f"{e.__class__.__name__}: {e}"}

    def window(self, symbol: str, c) -> dict:
        """Queue the candles' rows; return the reference a decision records."""
        n = len(c)
        ref = {"source": self.source, "symbol": symbol, "tf": int(c.timeframe_ms), "n": n,
               "first_ts": int(c.ts[0]) if n else None, "last_ts": int(c.ts[-1]) if n else None,
               "hash": candles_hash(c)}
        if n:
            key = (symbol, int(c.timeframe_ms))
            lo, hi = self._seen.get(key, (None, None))
            first, last, tf = int(c.ts[0]), int(c.ts[-1]), int(c.timeframe_ms)
            if lo is not None and (first > hi + tf or last < lo - tf):
                lo = hi = None  # not touching the range: the union would have a hole; start a new range
            for i in range(n):
                t = int(c.ts[i])
                if lo is not None and lo <= t <= hi:
                    continue  # already queued or stored by this process (windows are contiguous)
                self._rows.append((self.source, symbol, int(c.timeframe_ms), t, float(c.open[i]),
                                   float(c.high[i]), float(c.low[i]), float(c.close[i]), float(c.volume[i])))
            self._seen[key] = (first, last) if lo is None else (min(lo, first), max(hi, last))
        return ref

    def risk(self, feed, capture: dict) -> dict:
        """The risk layer's inputs and answer (``gate.last_risk``) as a record."""
        profile, snap, intent, d = capture["profile"], capture["snapshot"], capture["intent"], capture["decision"]
        phash, body = profile_body(profile)
        if phash not in self._known_blobs:
            self._blobs[phash] = ("risk_profile", body)
        candles = {}
        for s, arrs in snap.candles.items():
            c = feed.candles(s, RISK_CANDLES)  # the same clock, the same window the risk layer read
            ref = self.window(s, c)
            ref["hlc_hash"] = hlc_hash(arrs.high, arrs.low, arrs.close)
            candles[s] = ref
        snapshot = {"equity": snap.equity, "cash": snap.cash, "peak_equity": snap.peak_equity,
                    "day_start_equity": snap.day_start_equity, "now_ms": snap.now_ms,
                    "positions": {s: {"amount": p.amount, "price": p.price, "avg_entry": p.avg_entry}
                                  for s, p in snap.positions.items()},
                    "open_order_notional": dict(snap.open_order_notional),
                    "closed_trades": [{"symbol": t.symbol, "exit_ts": t.exit_ts, "pnl": t.pnl, "return": t.ret,
                                       "exit_reason": t.exit_reason, "strategy": t.strategy}
                                      for t in snap.closed_trades],
                    "order_timestamps": list(snap.order_timestamps),
                    "closes": {s: [float(x) for x in v] for s, v in snap.closes.items()},
                    "strategy_stats": {k: {"win_rate": v.win_rate, "payoff_ratio": v.payoff_ratio,
                                           "n_trades": v.n_trades} for k, v in snap.strategy_stats.items()},
                    "prices": dict(snap.prices)}
        return {"profile_hash": phash, "profile_version": self._profile_version(phash),
                "intent": intent.to_dict(), "snapshot": snapshot, "candles": candles,
                "out": _risk_out(d)}

    def _profile_version(self, phash: str):
        """The version of safety/risk_profile.json when its profile is the one in force; "default" otherwise
        (the defaults tightened by the settings, or the last saved profile standing in for a damaged file)."""
        try:
            rec = json.loads((self.store.home.safety_dir / "risk_profile.json").read_text())
            if hashlib.sha256(dumps(rec["profile"]).encode()).hexdigest() == phash:
                return rec["version"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        return "default"

    def flush(self) -> None:
        """Inside the caller's transaction."""
        if self._rows:
            with self.store._lock:
                self.store.conn.executemany("INSERT OR IGNORE INTO candles_seen VALUES (?,?,?,?,?,?,?,?,?)",
                                            self._rows)
        for h, (kind, body) in self._blobs.items():
            self.store.execute("INSERT OR IGNORE INTO replay_blobs (hash, kind, body) VALUES (?,?,?)", (h, kind, body))

    def committed(self) -> None:
        """The cycle's transaction committed: what was queued is in the table."""
        self._stored = dict(self._seen)
        self._known_blobs.update(self._blobs)
        self._rows, self._blobs = [], {}

    def rolled_back(self) -> None:
        self._seen = dict(self._stored)
        self._rows, self._blobs = [], {}


def _risk_out(d) -> dict:
    return {"allowed": bool(d.allowed), "code": d.code, "amount": float(d.amount or 0.0),
            "stop_loss": d.stop_loss, "take_profit": d.take_profit}


# -- verification ---------------------------------------------------------------------------------------------

@dataclass
class Mismatch:
    decision_id: int
    ts: int
    symbol: str
    strategy: str
    fields: list[dict] = field(default_factory=list)  # {field, recorded, replayed}

    def to_dict(self) -> dict:
        return {"decision_id": self.decision_id, "ts": self.ts, "symbol": self.symbol, "strategy": self.strategy,
                "fields": self.fields}


@dataclass
class ReplayReport:
    checked: int = 0
    verified: int = 0
    unreplayable: list[dict] = field(default_factory=list)  # decisions recorded without replay inputs
    mismatches: list[Mismatch] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checked": self.checked, "verified": self.verified,
                "unreplayable": len(self.unreplayable), "unreplayable_first": self.unreplayable[:20], "mismatches": [m.to_dict() for m in self.mismatches],
                "elapsed_s": round(self.elapsed_s, 4),
                "per_second": round(self.checked / self.elapsed_s, 1) if self.elapsed_s > 0 else None}


class _Loader:
    def __init__(self, store):
        self.store = store
        self._blobs: dict[str, str | None] = {}

    def candles(self, ref: dict):
        from ..market.candles import Candles

        if not ref.get("n"):
            return Candles.from_rows(np.empty((0, 6)), ref.get("tf") or 300_000)
        rows = self.store.execute(
            "SELECT ts, open, high, low, close, volume FROM candles_seen WHERE source=? AND symbol=? AND "
            "timeframe_ms=? AND ts BETWEEN ? AND ? ORDER BY ts",
            (ref["source"], ref["symbol"], ref["tf"], ref["first_ts"], ref["last_ts"])).fetchall()
        return Candles.from_rows([tuple(r) for r in rows], ref["tf"])

    def blob(self, h: str) -> str | None:
        if h not in self._blobs:
            row = self.store.one("SELECT body FROM replay_blobs WHERE hash=?", (h,))
            self._blobs[h] = row["body"] if row else None
        return self._blobs[h]


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            return a is b
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return a == b or abs(a - b) <= _REL * max(abs(a), abs(b))
    return a == b


def verify(store, since_ms: int | None = None, mode: str | None = None, limit: int | None = None,
           profile_override=None) -> ReplayReport:
    """Re-run the recorded decisions (optionally from ``since_ms``, of one ``mode``) and report differences.

    ``profile_override``: size every recorded order with this risk profile instead of the recorded one
    (a what-if: which decisions a different limit would have changed); the profile hash is then not checked.
    """
    t0 = time.perf_counter()
    rep = ReplayReport()
    sql = "SELECT id, ts, mode, symbol, strategy, inputs, outputs, reason_codes FROM decisions WHERE 1=1"
    args: list = []
    if since_ms is not None:
        sql += " AND ts>=?"
        args.append(int(since_ms))
    if mode:
        sql += " AND mode=?"
        args.append(mode)
    sql += " ORDER BY id"
    if limit:
        sql += " LIMIT ?"
        args.append(int(limit))
    loader = _Loader(store)
    strategies: dict = {}
    for row in store.execute(sql, args).fetchall():
        try:
            inputs = json.loads(row["inputs"])
        except ValueError:
            inputs = {}
        rec = inputs.get("replay") if isinstance(inputs, dict) else None
        if not isinstance(rec, dict) or rec.get("error"):
            why = f"recording failed: {rec['error']}" if isinstance(rec, dict) else "recorded without replay inputs"
            rep.unreplayable.append({"decision_id": row["id"], "why": why})
            continue
        rep.checked += 1
        diffs = _replay_one(row, inputs, rec, loader, strategies, profile_override)
        if diffs:
            rep.mismatches.append(Mismatch(row["id"], row["ts"], row["symbol"], row["strategy"], diffs))
        else:
            rep.verified += 1
    rep.elapsed_s = time.perf_counter() - t0
    return rep


def _replay_one(row, inputs: dict, rec: dict, loader: _Loader, strategies: dict, profile_override) -> list[dict]:
    from ..broker.models import OrderIntent
    from ..strategies import make

    diffs: list[dict] = []

    def diff(name, recorded, replayed):
        if not _same(recorded, replayed):
            diffs.append({"field": name, "recorded": recorded, "replayed": replayed})

    outputs = json.loads(row["outputs"])
    codes = json.loads(row["reason_codes"])

    # 1. the candles the strategy saw
    ref = rec["candles"]
    c = loader.candles(ref)
    diff("candles.count", ref["n"], len(c))
    diff("candles.hash", ref["hash"], candles_hash(c))

    # 2. the strategy on those candles
    key = (row["strategy"], dumps(rec["params"]))
    if key not in strategies:
        strategies[key] = make(row["strategy"], rec["params"])
    strat = strategies[key]
    diff("strategy.code_hash", rec["code_hash"], strategy_code_hash(type(strat)))
    held = float(rec["held"])
    target, info = strat.decide(c, 1.0 if held > 0 else 0.0)
    if held > 0 and len(c):  # the loop's protective exit, on the stop / take profit it compared with
        close = float(c.close[-1])
        stop, take = rec.get("stop_loss"), rec.get("take_profit")
        exit_reason = ("STOP_LOSS" if stop and close <= stop else "TAKE_PROFIT" if take and close >= take else None)
        if exit_reason:
            target, info = 0.0, {**info, "reason": exit_reason}
    diff("target", outputs.get("target"), target)
    diff("reason", codes[0] if codes else None, info.get("reason", "HOLD"))
    recorded_ind = inputs.get("indicators") or {}
    for k in sorted(set(recorded_ind) | {k for k in info if k != "reason"}):
        if k in ("have", "need") and info.get("reason") == "WARMUP":
            continue
        diff(f"indicators.{k}", recorded_ind.get(k), info.get(k))

    # 3. the loop's intent rule (paper and replay; a live entry also depends on the registry's ramp)
    recorded_intent = outputs.get("intent")
    if "ORDER_WORKING" not in codes and row["mode"] != "live":
        price, alloc = float(rec["price"]), float(rec["allocation"])
        if target <= 0 < held:
            side, amount = "sell", held
        elif target > 0 and held <= 0 and "STRATEGY_PAUSED" not in codes:
            side, amount = "buy", alloc * target / price
        else:
            side, amount = None, None
        diff("intent.side", (recorded_intent or {}).get("side"), side)
        diff("intent.amount", (recorded_intent or {}).get("amount"), amount)

    # 4. the risk layer's sizing, on the recorded snapshot and profile
    risk = rec.get("risk")
    if risk:
        from ..safety.risk import PortfolioSnapshot, RiskManager
        from ..safety.risk_profile import validate_profile

        if profile_override is not None:
            profile = profile_override
        else:
            body = loader.blob(risk["profile_hash"])
            if body is None:
                diffs.append({"field": "risk.profile_hash", "recorded": risk["profile_hash"], "replayed": None})
                return diffs
            diff("risk.profile_hash", risk["profile_hash"], hashlib.sha256(body.encode()).hexdigest())
            profile = validate_profile(json.loads(body))
        snap_d = dict(risk["snapshot"])
        snap_candles = {}
        for s, cref in risk["candles"].items():
            cc = loader.candles(cref)
            diff(f"risk.candles.{s}.hash", cref["hlc_hash"], hlc_hash(cc.high, cc.low, cc.close))
            snap_candles[s] = {"high": cc.high, "low": cc.low, "close": cc.close}
        snap = PortfolioSnapshot(**snap_d, candles=snap_candles)
        d = RiskManager(profile).assess(OrderIntent(**risk["intent"]), snap)
        got = _risk_out(d)
        for k, v in risk["out"].items():
            diff(f"risk.{k}", v, got[k])
    return diffs
