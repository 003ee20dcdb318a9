"""The trading agent: the one process that places live orders.

It holds what the human unlocked with the PIN (the exchange keys, the PIN's public key as its trust
anchor, the journal's key) in memory only, and serves order intents from the spool folder in the
project (the sandboxed assistant's channel) and from a Unix socket (the human's own shell).

* ONE worker thread owns the database, the broker and the exchange client: every order, cancel,
  flatten and loop cycle runs there, in turn. A request is checked and sent with nothing in between.
* Client order ids come from the decision: a caller's id is mapped to ``qtsa<hash(account, id)>``; the
  loop's from (strategy, symbol, side, candle); the kill switch's ``qtsk...``. The same decision asked
  twice, by whichever process, is one order: the second asker gets the first answer.
* Tightening (engage, halt, reduce, trip, revoke, lower) is taken from anyone and applied at once.
  Loosening needs a PIN signature over a challenge (challenge.py).
* The journal (outside the project) records every policy change and every order sent, hash-chained
  and authenticated. The status file beside it is what ``qts agent status`` reads.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import queue
import socket
import stat
import struct
import threading
import time
import traceback
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import protocol
from .authority import Authority
from .challenge import ChallengeBook, ChallengeError
from .paths import AgentPaths
from .policy import Policy, PolicyError

RESERVED_PREFIXES = ("qtsa", "qtsk", "qtsl", "qtsp", "qtsc")
COID_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:/-")
ORDER_FIELDS = {"symbol", "side", "amount", "type", "price", "client_order_id", "reason", "strategy"}


class AgentError(RuntimeError):
    """Refused before any order: the message names the field or the reason."""


def account_id(exchange_id: str, api_key: str) -> str:
    return f"{exchange_id}:{hashlib.sha256(api_key.encode()).hexdigest()[:12]}"


def map_client_order_id(account: str, caller_id: str) -> str:
    """The exchange-side id of a caller's decision: stable for (account, caller id), 32 characters."""
    return "qtsa" + hashlib.sha256(f"{account}|{caller_id}".encode()).hexdigest()[:28]


@dataclass
class Origin:
    transport: str            # "spool" | "socket" | "internal"
    uid: int | None = None
    pid: int | None = None

    def trusted_user(self, allow_uid0: bool = False) -> bool:
        """The agent's own user, never root (the agent itself refuses to start as root: in-process tests,
        which run as root here, pass ``allow_uid0``)."""
        if self.transport == "internal":
            return True
        return self.uid is not None and self.uid == os.getuid() and (self.uid != 0 or allow_uid0)


@dataclass
class AgentConfig:
    settings: object
    paths: AgentPaths
    exchange: object                     # a ccxt exchange with the keys attached
    public_key: bytes
    key_fingerprint: str
    journal: object                      # journal.Journal
    policy: Policy
    account: str
    instance: str
    code_hash: str
    store: object
    run_loop: bool = True
    confined: bool = False
    exchange_url: str | None = None
    notes: list = field(default_factory=list)
    sent: dict = field(default_factory=dict)   # coid -> result, from the journal
    sent_intents: dict = field(default_factory=dict)  # coid -> what was sent (the journal's "sending" records)
    quote: str = "USDT"
    client: object = None                # an ExchangeClient (tests pass a fast one)
    say: object = print                  # the agent's terminal
    allow_uid0: bool = False             # in-process tests only (the real agent refuses to start as root)


def _journaling_broker():
    from ..broker.live import LiveBroker

    class JournalingBroker(LiveBroker):
        """The live broker, writing every order into the agent's journal before it leaves: after a crash
        mid-order the exchange's order is one the journal knows, not a sign of a rolled-back journal. (No
        fsync: a power cut that loses the line makes the next start see an unknown order and start HALTED,
        the safe side; kill -9 loses nothing, the page cache keeps it.)"""

        journal = None
        sent_intents: dict = {}

        def place(self, intent, client_order_id):
            rec = {"coid": client_order_id, "symbol": intent.symbol, "side": intent.side, "type": intent.type,
                   "amount": intent.amount, "price": intent.price, "source": intent.source,
                   "strategy": intent.strategy, "ts": int(time.time() * 1000)}
            if intent.type == "stop_loss_limit":
                rec["stop_loss"] = intent.stop_loss
            self.journal.append("sending", rec, sync=False)
            self.sent_intents[client_order_id] = rec
            return super().place(intent, client_order_id)

    return JournalingBroker


class TradingAgent:
    def __init__(self, cfg: AgentConfig):
        from ..broker.exchange_client import ExchangeClient
        from ..gate import Gate
        from ..market.ccxt_feed import CcxtFeed
        from ..safety.risk_profile import load_profile
        from .exchange_view import ExchangeView

        self.cfg = cfg
        self.settings, self.paths, self.store = cfg.settings, cfg.paths, cfg.store
        self.say = cfg.say
        self.symbols = tuple(cfg.settings.SYMBOLS)
        self.client = cfg.client or ExchangeClient(cfg.exchange, cfg.store)
        self.view = ExchangeView(self.client, self.symbols, cfg.quote)
        self.feed = CcxtFeed(cfg.exchange, self.symbols, cfg.settings.TRADE_INTERVAL)
        JournalingBroker = _journaling_broker()
        self.sent_intents: dict[str, dict] = dict(cfg.sent_intents or {})
        self.broker = JournalingBroker(cfg.store, self.feed, cfg.exchange, client=self.client, quote_currency=cfg.quote)
        self.broker.journal, self.broker.sent_intents = cfg.journal, self.sent_intents
        profile = load_profile(cfg.store.home, settings=cfg.settings).profile
        self.authority = Authority(self.view, cfg.policy, risk_profile=profile, kill_flag=cfg.store.home.kill_flag,
                                   on_change=self._on_policy_change)
        self.gate_lock = threading.RLock()
        self.gate = Gate(cfg.store, self.feed, self.broker, settings=cfg.settings, authority=self.authority,
                         lock=self.gate_lock)
        self.gate.sync_logs = False  # see Gate.sync_logs: the journal and the exchange are the agent's record
        cfg.store.fsync_journal = False  # see store/journal.py append_trade
        self.challenges = ChallengeBook(cfg.instance, str(cfg.paths.home_root), cfg.account, cfg.public_key)
        self.sent: dict[str, dict] = dict(cfg.sent)
        self.events: collections.deque = collections.deque(maxlen=30)
        self.stopping = threading.Event()
        self.stop_reason = ""
        self._tasks: queue.Queue = queue.Queue()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="agent-req")
        self._threads: list[threading.Thread] = []
        self._sock: socket.socket | None = None
        self._sock_ino: int | None = None
        self.started = time.time()
        self.last_flatten: dict | None = None
        self._recent_flattens: list[dict] = []
        self.loop = None
        self._status_lock = threading.Lock()
        self._flatten_pending = threading.Event()
        self.worker_ident: int | None = None
        self._db_id = cfg.store.identity()
        self._kill_seen = cfg.policy.kill_switch
        self._rebuilding = False

    # -- journal and alerts ----------------------------------------------------------------------
    def _on_policy_change(self, policy: Policy, what: str, data: dict) -> None:
        self.cfg.journal.append("policy", {"policy": policy.to_dict(), "what": what, **data})
        self._event("policy", what)
        try:  # readers see a change at once, not at the next heartbeat
            self.write_status()
        except OSError:
            pass
        if policy.kill_switch and not self._kill_seen:  # just engaged: flatten (once; a retry is a new engage)
            self._flatten_pending.set()
        self._kill_seen = policy.kill_switch

    def _event(self, kind: str, message: str, severity: str = "info") -> None:
        self.events.append({"ts": int(time.time() * 1000), "kind": kind, "message": message, "severity": severity})
        try:
            self.say(f"[agent {time.strftime('%H:%M:%S')}] {message}")
        except Exception:  # noqa: BLE001 - the terminal may be gone; the journal and status still say it
            pass

    def alert(self, message: str) -> None:
        self.cfg.journal.append("alert", {"message": message})
        self._event("alert", "ALERT: " + message, "critical")
        from ..notify.alerts import on_agent_alert  # queued; never blocks or raises

        on_agent_alert(self.store.home, message)

    # -- the worker: the one thread that touches the database and the exchange ---------------------------
    def run_task(self, fn, timeout_s: float = 60.0):
        if threading.get_ident() == self.worker_ident:
            return fn()
        fut: Future = Future()
        self._tasks.put((fn, fut))
        return fut.result(timeout=timeout_s)

    def _worker(self) -> None:
        self.worker_ident = threading.get_ident()
        while True:
            try:
                item = self._tasks.get(timeout=0.05)
            except queue.Empty:
                if self._flatten_pending.is_set():
                    self._flatten_pending.clear()
                    self._safe(self.flatten)
                if self.stopping.is_set() and self._tasks.empty():
                    return
                continue
            if item is None:
                return
            fn, fut = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - the caller gets it; the worker lives on
                fut.set_exception(e)

    def _safe(self, fn):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            self.alert(f"{getattr(fn, '__name__', 'task')} failed: {e.__class__.__name__}: {str(e)[:200]}")
            return None

    # -- requests ------------------------------------------------------------------------------
    def handle(self, req: dict, origin: Origin) -> dict:
        """Answer one request. Never raises: every failure is an answer with ``ok: false`` and a code."""
        rid = req.get("id", "0" * 16)
        try:
            op = req.get("op")
            params = req.get("params") or {}
            if op not in protocol.ALL_OPS:
                raise AgentError(f"op: unknown {op!r}; allowed: {', '.join(protocol.ALL_OPS)}")
            if not isinstance(params, dict):
                raise AgentError("params: must be an object")
            if op not in protocol.TIGHTEN_OPS and op not in ("ping", "status") and not origin.trusted_user(self.cfg.allow_uid0):
                # tightening is taken from anyone; everything else only from this user, never from root
                return self._answer(rid, False, "FOREIGN_USER", f"refused: {op} from uid {origin.uid} (the agent runs as "
                                                                f"uid {os.getuid()}; root is never accepted)")
            data = getattr(self, f"_op_{op}")(params, origin)
            ok = bool(data.pop("_ok", True)) if isinstance(data, dict) else True
            code = data.pop("_code", "OK") if isinstance(data, dict) else "OK"
            msg = data.pop("_message", "") if isinstance(data, dict) else ""
            return self._answer(rid, ok, code, msg, data)
        except (AgentError, PolicyError, ChallengeError) as e:
            return self._answer(rid, False, "REFUSED", str(e))
        except Exception as e:  # noqa: BLE001 - fail closed: an error is a refusal with its reason
            self.store_error(e)
            return self._answer(rid, False, "AGENT_ERROR", f"{e.__class__.__name__}: {str(e)[:300]}")

    def store_error(self, e: Exception) -> None:
        self.events.append({"ts": int(time.time() * 1000), "kind": "error", "message": f"{e.__class__.__name__}: {e}",
                            "severity": "error", "trace": traceback.format_exc(limit=4)})

    @staticmethod
    def _answer(rid, ok, code, message, data=None) -> dict:
        return {"v": protocol.VERSION, "id": rid, "ok": ok, "code": code, "message": message, "data": data or {}}

    # read-only
    def _op_ping(self, params, origin):
        return {"pong": True, "instance": self.cfg.instance}

    def _op_status(self, params, origin):
        return self.status()

    def _op_account(self, params, origin):
        def work():
            bal = self.view.balances(fresh=True)
            assets = sorted({s.split("/")[0] for s in self.symbols} | {self.cfg.quote})
            orders = []
            for s in self.symbols:
                for o in self.client.call("fetch_open_orders", s):
                    orders.append({"symbol": s, "id": o.get("id"), "client_order_id": o.get("clientOrderId"),
                                   "side": o.get("side"), "type": o.get("type"), "amount": o.get("amount"),
                                   "filled": o.get("filled"), "price": o.get("price"),
                                   "ours": str(o.get("clientOrderId") or "").startswith("qts")})
            fills = []
            for s in self.symbols:
                for t in sorted(self.view._load_fills(s, fresh=True).values(), key=lambda t: t.get("timestamp") or 0):
                    fills.append({"symbol": s, "id": t.get("id"), "side": t.get("side"), "amount": t.get("amount"),
                                  "price": t.get("price"), "ts": t.get("timestamp")})
            return {"mode": "live", "exchange": self.cfg.exchange.id, "account": self.cfg.account,
                    "balances": {a: bal.get(a, 0.0) for a in assets}, "open_orders": orders, "fills_today": fills,
                    "day_spend": self.view.day_spend(), "day_pnl": self.view.day_pnl()}
        return self.run_task(work)

    def _op_challenge(self, params, origin):
        action, p = params.get("action"), params.get("params") or {}
        ch = self.challenges.issue(str(action), p, self.authority.policy.hash())
        return {"challenge": ch.to_dict(), "policy_summary": self.authority.policy.summary()}

    # tightening
    def _tighten(self, op, params, origin):
        with self.authority.lock:
            pol, what = self.authority.tighten(op, {k: v for k, v in params.items() if k != "wait"})
        return {"changed": what, "policy": pol.summary()}

    def _op_halt(self, params, origin):
        return self._tighten("halt", params, origin)

    def _op_reduce(self, params, origin):
        return self._tighten("reduce", params, origin)

    def _op_trip(self, params, origin):
        return self._tighten("trip", params, origin)

    def _op_revoke(self, params, origin):
        return self._tighten("revoke", params, origin)

    def _op_lower(self, params, origin):
        return self._tighten("lower", params, origin)

    def _op_engage(self, params, origin):
        reason = str(params.get("reason") or "kill switch")[:200]
        before = [f for f in self._recent_flattens if f.get("at", 0) > time.time() - 120]
        self.authority.tighten("engage", {"reason": reason})  # at once, before anything that can fail
        self._flatten_pending.clear()
        rep = dict(self.run_task(self.flatten, timeout_s=float(params.get("timeout_s", 60))))
        # the flag file alone may have started a flatten a moment ago: the report says everything done
        before += [f for f in self._recent_flattens[:-1] if f not in before and f.get("at", 0) > time.time() - 120]
        for f in before:
            for k in ("cancelled", "cancelled_foreign", "closed"):
                rep[k] = list(f.get(k, [])) + list(rep.get(k, []))
        if before:
            rep["summary"] = rep["summary"].split(":")[0] + (
                f": {len(rep['cancelled'])} orders cancelled, {len(rep['cancelled_foreign'])} foreign orders "
                f"cancelled, {len(rep['closed'])} positions closed" if rep.get("flat") else ":" + rep["summary"].split(":", 1)[1])
        return {**rep, "_ok": bool(rep.get("flat")), "_code": "FLAT" if rep.get("flat") else "NOT_FLAT",
                "_message": rep.get("summary", "")}

    def _op_cancel(self, params, origin):
        cid = params.get("client_order_id")
        if not isinstance(cid, str) or not cid:
            raise AgentError("client_order_id: required")
        coid = cid if cid.startswith(RESERVED_PREFIXES) else map_client_order_id(self.cfg.account, cid)

        def work():
            return {"cancelled": self.broker.cancel(coid, "cancel request")}
        return self.run_task(work)

    # trading
    def _op_order(self, params, origin):
        from ..broker.models import OrderIntent

        extra = set(params) - ORDER_FIELDS
        if extra:
            raise AgentError(f"{sorted(extra)[0]}: not an order field; allowed: {', '.join(sorted(ORDER_FIELDS))}")
        caller_id = params.get("client_order_id")
        if not (isinstance(caller_id, str) and 1 <= len(caller_id) <= 64 and set(caller_id) <= COID_CHARS):
            raise AgentError("client_order_id: required, 1-64 characters of letters, digits and _.:/- "
                             "(the same id asked twice is one order)")
        if caller_id.startswith(RESERVED_PREFIXES):
            raise AgentError(f"client_order_id: ids starting with {', '.join(RESERVED_PREFIXES)} are the agent's own")
        amount = params.get("amount")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise AgentError(f"amount: a number is required, got {amount!r}")
        price = params.get("price")
        if price is not None and (isinstance(price, bool) or not isinstance(price, (int, float))):
            raise AgentError(f"price: a number is required, got {price!r}")
        coid = map_client_order_id(self.cfg.account, caller_id)
        try:
            intent = OrderIntent(str(params.get("symbol", "")).upper(), str(params.get("side", "")), float(amount),
                                 type=str(params.get("type") or "market"),
                                 price=float(price) if price is not None else None,
                                 strategy=str(params["strategy"])[:64] if params.get("strategy") else None,
                                 reason=str(params.get("reason") or "manual order")[:200],
                                 source=f"agent:{origin.transport}", client_order_id=coid)
        except ValueError as e:
            raise AgentError(str(e)) from None

        def work():
            if coid in self.sent:  # the same decision again: its answer, as the books know it now
                known = self.broker.result(coid).to_dict() if self.store.one(
                    "SELECT 1 FROM orders WHERE client_order_id=?", (coid,)) else self.sent[coid]
                return {**known, "duplicate": True, "caller_id": caller_id}
            res = self.gate.submit(intent)
            out = {**res.to_dict(), "caller_id": caller_id}
            if res.filled:  # the position changed: its stop on the exchange follows (placed, resized or cancelled)
                self.sync_protective_stops("order", (intent.symbol,))
            if res.accepted or res.reason_code in ("EXCHANGE_REJECTED", "BROKER_ERROR") or \
                    self.store.one("SELECT 1 FROM orders WHERE client_order_id=?", (coid,)):
                # it reached the broker: this decision is spent, whatever the outcome
                self.sent[coid] = out
                self.cfg.journal.append("order", {"coid": coid, "caller_id": caller_id, "symbol": intent.symbol,
                                                  "side": intent.side, "type": intent.type, "amount": intent.amount,
                                                  "price": intent.price, "status": res.status, "filled": res.filled,
                                                  "avg_price": res.avg_price, "source": intent.source},
                                        sync=False)
            return out
        try:
            out = self.run_task(work)
        except TimeoutError:
            # still queued or at the exchange: the decision is not lost, and asking again is safe (same id)
            return {"_ok": False, "_code": "PENDING", "caller_id": caller_id, "client_order_id": coid,
                    "_message": "the agent is still working on this order; ask again with the same client order id "
                                "to get its outcome (it is never placed twice)"}
        return {**out, "_ok": bool(out.get("accepted")), "_code": out.get("reason_code") or out.get("status", "").upper(),
                "_message": out.get("message", "")}

    # loosening
    def _op_loosen(self, params, origin):
        with self.authority.lock:
            ch = self.challenges.redeem(params, self.authority.policy.hash())
            action, p = ch.action, ch.params
            self.cfg.journal.append("loosen_signed", {"action": action, "params": p, "nonce": ch.nonce,
                                                      "signature": params.get("signature"),
                                                      "expires_ts": params.get("expires_ts")})
            if action == "approve_order":
                cid = str(p.get("client_order_id", ""))
                coid = cid if cid.startswith(RESERVED_PREFIXES) else map_client_order_id(self.cfg.account, cid)
                mx = p.get("max_notional")
                if isinstance(mx, bool) or not isinstance(mx, (int, float)) or not mx > 0:
                    raise AgentError("max_notional: a positive number is required")
                self.authority.approve_order(coid, float(mx))
                self._event("policy", f"order {cid} approved up to {mx:g} USD (PIN, single use, 15 min)")
                return {"approved": cid}
            if action == "stop":
                self.request_stop("stopped with the PIN")
                return {"stopping": True}
            if action == "risk_profile":
                return self._loosen_risk_profile(p)
            new, what = self.authority.policy.loosen(action, p, int(time.time() * 1000))
            self.authority.set_policy(new, what, {"action": action, "params": p})
            return {"changed": what, "policy": new.summary()}

    def _loosen_risk_profile(self, p: dict) -> dict:
        from ..safety.risk_profile import validate_profile

        cur = self.authority.risk_profile().model_dump()
        cur.update(p)
        prof = validate_profile(cur)
        self.authority.set_risk_profile(prof)
        self.cfg.journal.append("risk_profile", {"profile": prof.model_dump()})
        self._event("policy", f"risk profile changed with the PIN: {', '.join(sorted(p))}")
        return {"changed": sorted(p)}

    # -- the kill switch, from the exchange's own view -----------------------------------------------
    def flatten(self) -> dict:
        from .flatten import flatten_account

        with self.gate_lock:
            rep = flatten_account(self)
        rep["at"] = time.time()
        self._recent_flattens = [f for f in self._recent_flattens if f["at"] > time.time() - 120][-4:]
        self._recent_flattens.append(rep)
        self.last_flatten = rep
        self.cfg.journal.append("flatten", rep)
        self._event("kill_switch", rep["summary"], "critical")
        return rep

    # -- housekeeping ----------------------------------------------------------------------------
    def status(self) -> dict:
        pol = self.authority.policy
        bal = {}
        try:
            cached = self.view._balance
            if cached:
                bal = {a: v for a, v in cached[1].items() if a == self.cfg.quote or f"{a}/{self.cfg.quote}" in self.symbols}
        except Exception:  # noqa: BLE001
            pass
        return {"state": "stopping" if self.stopping.is_set() else "running", "pid": os.getpid(), "uid": os.getuid(),
                "instance": self.cfg.instance, "started": self.started, "heartbeat": time.time(),
                "home": str(self.paths.home_root), "home_id": self.paths.id, "account": self.cfg.account,
                "exchange": self.cfg.exchange.id, "exchange_url": self.cfg.exchange_url, "symbols": list(self.symbols),
                "code_hash": self.cfg.code_hash, "key_fingerprint": self.cfg.key_fingerprint,
                "policy": pol.to_dict(), "policy_hash": pol.hash(), "policy_summary": pol.summary(),
                "confined": self.cfg.confined, "notes": list(self.cfg.notes), "loop": bool(self.cfg.run_loop),
                "balances": bal, "orders_sent": len(self.sent), "events": list(self.events)[-15:],
                "last_flatten": self.last_flatten, "socket": str(self.paths.socket), "spool": str(self.paths.spool)}

    def write_status(self, state: str | None = None) -> None:
        from ..fsutil import write_atomic

        st = self.status()
        if state:
            st["state"] = state
        with self._status_lock:
            write_atomic(self.paths.status_file, protocol.dumps(st), mode=0o644)

    def _housekeeping(self) -> None:
        last_status = last_ino = last_profile = last_refresh = 0.0
        while not self.stopping.is_set():
            now = time.monotonic()
            try:
                self.authority.kill_switch()  # a flag file that appeared engages (and queues the flatten)
                if now - last_status >= 0.5:
                    self.write_status()
                    last_status = now
                if now - last_ino >= 1.0:
                    self._check_socket()
                    if self.store.identity() != self._db_id and not self._rebuilding:
                        self._rebuilding = True
                        self._tasks.put((lambda: self._safe(self.rebuild_books), Future()))
                    last_ino = now
                if now - last_profile >= 5.0:
                    self._adopt_tighter_profile()
                    last_profile = now
                if now - last_refresh >= 5.0 and self._tasks.empty():
                    self._tasks.put((lambda: self.view.balances(fresh=True), Future()))
                    self._tasks.put((lambda: self._safe(self.check_health), Future()))
                    last_refresh = now
            except Exception as e:  # noqa: BLE001 - housekeeping must go on
                self.store_error(e)
            self.stopping.wait(0.1)

    def check_health(self) -> list[str]:
        """The breaker, fed by the exchange client's own latency and error metrics (and position-size
        breaches): problems TRIP the agent's breaker in memory (a tightening; resuming needs the PIN). The
        day's loss has its own cap from the exchange's fills (authority.py)."""
        from ..safety.breaker import Breaker

        if self.authority.policy.breaker_open:
            return []
        self.client.flush_metrics()
        b = Breaker(self.store.home, self.store)
        m = dict(b.measure(int(time.time() * 1000)), daily_pnl_pct=None)
        problems = b.problems(m)
        if problems:
            self.authority.tighten("trip", {"reason": "; ".join(problems)})
            self.alert(f"breaker tripped: {'; '.join(problems)}: live entries stop until you resume with the PIN")
        return problems

    def rebuild_books(self) -> dict:
        """The project's database was deleted or replaced (the assistant can do either): open it again and
        rebuild the live books from the journal's list of orders sent and the exchange's own answers.
        Nothing the agent ENFORCES ever came from it."""
        from ..broker.live import PROTECTIVE_STOP

        try:
            self.alert("the project's database was deleted or replaced: rebuilding the live books from the "
                       "journal and the exchange")
            self.store.reopen()
            self._db_id = self.store.identity()
            cutoff = int(time.time() * 1000) - 7 * 86_400_000
            for coid, d in sorted(self.sent_intents.items(), key=lambda kv: kv[1].get("ts", 0)):
                if int(d.get("ts", 0)) < cutoff or self.store.one("SELECT 1 FROM orders WHERE client_order_id=?", (coid,)):
                    continue
                ts = int(d.get("ts") or time.time() * 1000)
                stop = d["type"] == "stop_loss_limit"  # a protective stop's row: type limit, reason PROTECTIVE_STOP
                with self.store.tx():
                    self.store.insert("orders", {
                        "client_order_id": coid, "mode": "live", "symbol": d["symbol"], "side": d["side"],
                        "type": "limit" if stop else d["type"], "amount": d["amount"],
                        "price": d.get("price") if d["type"] in ("limit", "stop_loss_limit") else None,
                        "status": "sent", "strategy": d.get("strategy"),
                        "reason": PROTECTIVE_STOP if stop else "rebuilt from the agent's journal",
                        "stop_loss": d.get("stop_loss") if stop else None,
                        "created_ts": ts, "updated_ts": ts})
                    self.broker.ledger.history(coid, "sent", ts, "rebuilt from the agent's journal")
            rep = self.broker.reconcile()
            self._event("books", f"live books rebuilt: {rep.get('orders_checked')} orders resolved, "
                                 f"{rep.get('fills_adopted')} fills adopted")
            return rep
        finally:
            self._rebuilding = False

    def _adopt_tighter_profile(self) -> None:
        """A risk profile the assistant (or anyone) saved in the project counts only if it is no looser
        than the one in force; looser needs the PIN (`qts agent approve risk ...`)."""
        from ..safety.risk_profile import is_loosening, load_profile

        lp = load_profile(self.store.home, settings=self.settings)
        cur = self.authority.risk_profile()
        if lp.source == "file" and cur is not None and lp.profile != cur:
            looser = is_loosening(cur, lp.profile)
            if not looser:
                self.authority.set_risk_profile(lp.profile)
                self.cfg.journal.append("risk_profile", {"profile": lp.profile.model_dump(), "from": "file (tighter)"})
                self._event("policy", "tighter risk profile adopted from the project")

    # -- transports ------------------------------------------------------------------------------
    def _spool(self) -> None:
        inbox, outbox = self.paths.spool_in, self.paths.spool_out
        seen_mtime, checked = None, 0.0
        while not self.stopping.is_set():
            try:
                now = time.monotonic()
                if now - checked >= 1.0:  # the folders exist, and are folders (a link would redirect answers)
                    for d in (inbox, outbox):
                        if os.path.islink(d):
                            self.alert(f"{d} was replaced by a symbolic link: removed")
                            os.unlink(d)
                        d.mkdir(parents=True, exist_ok=True)
                    checked, seen_mtime = now, None
                mtime = os.stat(inbox).st_mtime_ns  # a new file changes the folder's mtime: no listing otherwise
                # (mtimes are coarse: a file added within the same tick as the last listing shows no change,
                # so a folder touched in the last 50 ms is listed again)
                if mtime != seen_mtime or time.time_ns() - mtime < 50_000_000:
                    seen_mtime = mtime
                    with os.scandir(inbox) as it:
                        names = [e.name for e in it if e.name.endswith(".json") and not e.name.startswith(".")]
                    for name in names:
                        self._spool_take(inbox / name, outbox)
            except FileNotFoundError:
                checked = 0.0
            except Exception as e:  # noqa: BLE001
                self.store_error(e)
            self.stopping.wait(0.005)

    def _spool_take(self, path, outbox) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            try:
                os.unlink(path)  # a link or something unreadable: not a request
            except OSError:
                pass
            return
        try:
            st = os.fstat(fd)
            raw = os.read(fd, protocol.MAX_MESSAGE + 1) if stat.S_ISREG(st.st_mode) else b""
        finally:
            os.close(fd)
        try:
            os.unlink(path)
        except OSError:
            return  # someone else took it
        try:
            req = protocol.parse(raw)
        except Exception:  # noqa: BLE001 - garbage in the spool: nothing to answer
            return
        origin = Origin("spool", uid=st.st_uid)

        def serve():
            ans = self.handle(req, origin)
            self._spool_answer(outbox, req["id"], ans)
        self._pool.submit(serve)

    @staticmethod
    def _spool_answer(outbox, rid: str, ans: dict) -> None:
        tmp = outbox / f".{rid}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, protocol.dumps(ans))
        finally:
            os.close(fd)
        os.replace(tmp, outbox / f"{rid}.json")

    def _bind_socket(self) -> None:
        path = self.paths.socket
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path.parent, 0o700)
        if path.exists() or path.is_symlink():
            try:  # a live agent answers; a stale socket file does not
                with protocol.SocketClient(self.paths, timeout_s=0.5) as c:
                    c.call(protocol.request("ping"))
                raise AgentError(f"another agent is listening on {path}")
            except (OSError, ConnectionError, ValueError):
                os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            s.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        s.listen(16)
        s.settimeout(0.2)
        self._sock, self._sock_ino = s, os.lstat(path).st_ino

    def _check_socket(self) -> None:
        """The socket path must still be ours: a squatter who replaced it would hear the human's requests."""
        if self._sock is None:
            return
        try:
            ino = os.lstat(self.paths.socket).st_ino
        except FileNotFoundError:
            ino = None
        if ino != self._sock_ino:
            self.alert(f"the socket {self.paths.socket} is no longer the agent's (replaced or removed): trading "
                       "HALTED; check who did it, then restart the agent")
            self.authority.tighten("halt", {"reason": "socket path replaced"})
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _serve_socket(self) -> None:
        while not self.stopping.is_set():
            s = self._sock
            if s is None:
                self.stopping.wait(0.2)
                continue
            try:
                conn, _ = s.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self._serve_conn, args=(conn,), daemon=True, name="agent-conn").start()

    def _serve_conn(self, conn: socket.socket) -> None:
        try:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, uid, _gid = struct.unpack("3i", creds)
        except (OSError, AttributeError):
            pid, uid = None, None
        origin = Origin("socket", uid=uid, pid=pid)
        conn.settimeout(300)
        buf = b""
        try:
            while not self.stopping.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                if len(buf) > protocol.MAX_MESSAGE:
                    return
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    try:
                        req = protocol.parse(line)
                    except Exception as e:  # noqa: BLE001
                        conn.sendall(protocol.dumps(self._answer("0" * 16, False, "BAD_REQUEST", str(e)[:200])) + b"\n")
                        continue
                    conn.sendall(protocol.dumps(self.handle(req, origin)) + b"\n")
        except OSError:
            return
        finally:
            conn.close()

    # -- the live loop ---------------------------------------------------------------------------
    def _run_loop(self) -> None:
        from ..engine.loop import TradingLoop
        from ..engine.roster import live_strategies

        # the registry's live-ramp / live strategies on their symbols (code checked); STRATEGY elsewhere
        strategies, notes = live_strategies(self.settings, self.symbols)
        for note in notes:
            self.store.event("roster", f"live loop: {note}", severity="warning")
        self.loop = TradingLoop(self.settings, self.store, self.feed, self.broker, self.gate, strategies)
        interval = self.settings.TRADE_INTERVAL * 60_000
        while not self.stopping.is_set():
            if self.feed.wait_next_cycle(interval, self.stopping) is None or self.stopping.is_set():
                return
            pol = self.authority.policy
            if pol.kill_switch or pol.trading_state == "HALTED":
                continue
            try:
                rep = self.run_task(self.loop.cycle, timeout_s=600)
                self.cfg.journal.append("cycle", {"ts": rep.ts, "orders": len(rep.orders), "refusals": len(rep.refusals)},
                                        sync=False)
                self.run_task(lambda: self.sync_protective_stops("cycle"), timeout_s=120)
            except Exception as e:  # noqa: BLE001 - one bad cycle must not end live supervision
                self.alert(f"loop cycle failed: {e.__class__.__name__}: {str(e)[:200]}")

    def sync_protective_stops(self, when: str, symbols=None) -> list:
        """Every position's stop resting on the exchange (broker/protective.py), through the gate; never raises."""
        from ..broker import protective

        try:
            if symbols is None:
                acts = protective.sync_all(self.gate, self.broker, self.symbols)
            else:
                acts = [protective.sync(self.gate, self.broker, s) for s in symbols]
        except Exception as e:  # noqa: BLE001 - reported; the next cycle tries again
            self.alert(f"protective stops ({when}) failed: {e.__class__.__name__}: {str(e)[:200]}")
            return []
        changed = [a.to_dict() for a in acts if a.action in ("placed", "cancelled", "refused")]
        if changed:
            self.cfg.journal.append("protective_stops", {"when": when, "actions": changed}, sync=False)
            self._event("protective_stop", f"protective stops ({when}): " + "; ".join(
                f"{a['symbol']} {a['action']}" for a in changed))
        return acts

    # -- life ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Reconcile, bind the socket, start the threads. Raises before any thread runs on failure."""
        from ..store.journal import sync_trades

        sync_trades(self.store)  # a fill committed but not yet in trades.jsonl when the last run died
        self.broker.reconcile()
        self.view.balances(fresh=True)
        self.sync_protective_stops("start")  # a position without its stop gets one; a stop without one goes
        self.paths.spool_in.mkdir(parents=True, exist_ok=True)
        self.paths.spool_out.mkdir(parents=True, exist_ok=True)
        try:
            self._bind_socket()
        except OSError as e:
            self.cfg.notes.append(f"no Unix socket ({e.__class__.__name__}): the spool folder is the only channel")
        for target, name in ((self._worker, "agent-worker"), (self._spool, "agent-spool"),
                             (self._serve_socket, "agent-socket"), (self._housekeeping, "agent-housekeeping")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        if self.cfg.run_loop:
            t = threading.Thread(target=self._run_loop, name="agent-loop", daemon=True)
            t.start()
            self._threads.append(t)
        self.write_status()

    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self.stopping.set()

    def wait(self) -> None:
        while not self.stopping.wait(0.5):
            pass

    def shutdown(self) -> None:
        self.stopping.set()
        for t in self._threads:
            t.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            try:
                self._sock.close()
                if os.lstat(self.paths.socket).st_ino == self._sock_ino:
                    os.unlink(self.paths.socket)
            except OSError:
                pass
        self.cfg.journal.append("stop", {"reason": self.stop_reason or "stopped"})
        try:
            self.write_status("stopped")
        except OSError:
            pass
        self.cfg.journal.close()
